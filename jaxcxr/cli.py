"""The `jaxcxr` command (DESIGN.md section 8: the command-line contract).

Every command prints human-readable progress to stderr; with `--json` it prints one
JSON object on stdout. Bad input (missing files, wrong shapes, unknown names) ends
with one line `jaxcxr: error: ...` on stderr and exit status 2, never a traceback.
This file only parses arguments and formats output; the work lives in the library.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import sys
import time
import zipfile
from typing import Any, Callable

import numpy as np

EXIT_USAGE = 2


class UsageError(Exception):
  """Bad arguments or input the user can fix; reported without a traceback."""


class _Parser(argparse.ArgumentParser):
  """argparse whose errors (and its subcommands', which inherit the class) are one `jaxcxr: error:` line, exit 2."""

  def error(self, message: str):
    self.exit(EXIT_USAGE, f"jaxcxr: error: {message} (see `{self.prog} --help`)\n")


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def _emit(result: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], str]) -> None:
  if as_json:
    print(json.dumps(result), flush=True)
  else:
    print(human(result), flush=True)


def _data_path(arg: str | None, default_name: str) -> pathlib.Path:
  from jaxcxr import data  # pylint: disable=g-import-not-at-top

  return pathlib.Path(arg) if arg else data.default_data_path(default_name)


def _data_paths(arg: str | None, *default_names: str) -> str:
  """`--data` as given (one path, or comma-separated paths for `data.load`), else the default files joined by commas."""
  from jaxcxr import data  # pylint: disable=g-import-not-at-top

  return arg if arg else ",".join(str(data.default_data_path(name)) for name in default_names)


# ----------------------------------------------------------------------------- data stats


def cmd_data_stats(args: argparse.Namespace) -> dict[str, Any]:
  from jaxcxr import data, io  # pylint: disable=g-import-not-at-top

  path = _data_path(args.data, "nih_cxr14_subset_256.npz")
  _log(f"loading {path}")
  ds = data.load(path)
  groups = ds.groups
  label_names = {0: "normal", 1: "abnormal", -1: "unknown"}
  per_group = {}
  for g, name in enumerate(data.GROUPS):
    in_group = groups == g
    per_group[name] = {label_names[v]: int(np.sum(in_group & (ds.label == v))) for v in (0, 1)}
    per_group[name]["total"] = int(in_group.sum())
  result: dict[str, Any] = {
      "file": str(path),
      "n": len(ds),
      "n_patients": int(np.unique(ds.patient_id).size),
      "labels": {label_names[int(v)]: int(np.sum(ds.label == v)) for v in np.unique(ds.label)},
      "sex": {str(s): int(np.sum(ds.sex == s)) for s in np.unique(ds.sex)},
      "age": {"min": int(ds.age[ds.age >= 0].min()) if (ds.age >= 0).any() else None,
              "median": float(np.median(ds.age[ds.age >= 0])) if (ds.age >= 0).any() else None,
              "unknown": int(np.sum(ds.age < 0))},
      "groups": per_group,
      "outside_groups": int(np.sum(groups < 0)),
      "has_lung_masks": ds.lung_masks is not None,
      "images": {},
  }
  if args.out:
    out = io.prepare_output_dir(args.out, overwrite=args.overwrite)
    for v in np.unique(ds.label):
      pixels = ds.images[ds.label == v].astype(np.float64)
      mean, std = pixels.mean(axis=0), pixels.std(axis=0)
      name = label_names[int(v)]
      std_scale = float(max(std.max(), 1e-12))
      io.save_png(out / f"mean_{name}.png", np.round(mean).astype(np.uint8))
      # The std image is stretched to the full 8-bit range; `std_max` gives the scale.
      io.save_png(out / f"std_{name}.png", np.round(std / std_scale * 255).astype(np.uint8))
      result["images"][name] = {"mean": str(out / f"mean_{name}.png"), "std": str(out / f"std_{name}.png"),
                                "std_max": std_scale}
    _log(f"wrote mean/std images to {out}")
  return result


def _human_stats(r: dict[str, Any]) -> str:
  lines = [f"{r['file']}: {r['n']} images, {r['n_patients']} patients",
           "labels: " + ", ".join(f"{k} {v}" for k, v in r["labels"].items()),
           "sex: " + ", ".join(f"{k} {v}" for k, v in r["sex"].items()),
           f"{'group':8s} {'normal':>7s} {'abnormal':>9s} {'total':>6s}"]
  for name, c in r["groups"].items():
    lines.append(f"{name:8s} {c['normal']:7d} {c['abnormal']:9d} {c['total']:6d}")
  lines.append(f"outside the six groups: {r['outside_groups']}")
  for name, paths in r["images"].items():
    lines.append(f"{name}: {paths['mean']}, {paths['std']}")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- data dedup


def cmd_data_dedup(args: argparse.Namespace) -> dict[str, Any]:
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  from jaxcxr import data, imaging  # pylint: disable=g-import-not-at-top

  path = _data_path(args.data, "nih_cxr14_subset_256.npz")
  if args.max_distance < 0:
    raise UsageError(f"--max-distance must be >= 0, got {args.max_distance}")
  _log(f"loading {path}")
  ds = data.load(path)
  hash_fn = getattr(imaging, f"{args.hash}_hash")
  batch = 256
  hashes = []
  for start in tqdm(range(0, len(ds), batch), desc=f"{args.hash} hash", unit="batch", file=sys.stderr,
                    disable=not sys.stderr.isatty()):
    hashes.append(np.asarray(hash_fn(data.to_unit(ds.images[start:start + batch]))))
  hashes = np.concatenate(hashes)
  pairs = imaging.find_near_duplicates(hashes, max_distance=args.max_distance)
  distances = (np.asarray(imaging.hamming_distances(hashes[pairs[:, 0]], hashes[pairs[:, 1]])).diagonal()
               if len(pairs) else np.zeros(0, np.int32))
  ssim = (np.asarray(imaging.ssim(data.to_unit(ds.images[pairs[:, 0]]), data.to_unit(ds.images[pairs[:, 1]])))
          if len(pairs) else np.zeros(0))
  source = ds.extra.get("source_id")
  rows = []
  for (i, j), dist, s in zip(pairs.tolist(), distances.tolist(), ssim.tolist()):
    row = {"i": i, "j": j, "distance": int(dist), "ssim": float(s),
           "same_patient": bool(ds.patient_id[i] == ds.patient_id[j])}
    if source is not None:
      row["source_i"], row["source_j"] = str(source[i]), str(source[j])
    rows.append(row)
  return {"file": str(path), "n": len(ds), "hash": args.hash, "max_distance": args.max_distance,
          "n_pairs": len(rows), "pairs": rows}


def _human_dedup(r: dict[str, Any]) -> str:
  lines = [f"{r['file']}: {r['n']} images, {r['n_pairs']} near-duplicate pair(s) "
           f"({r['hash']} hash, Hamming distance <= {r['max_distance']})"]
  for p in r["pairs"]:
    names = f" {p.get('source_i', '')} {p.get('source_j', '')}" if "source_i" in p else ""
    lines.append(f"  {p['i']:6d} {p['j']:6d}  distance {p['distance']:2d}  ssim {p['ssim']:.3f}"
                 f"{'  same patient' if p['same_patient'] else ''}{names}")
  return "\n".join(lines)


HASH_NAMES = ("average", "difference", "perceptual", "wavelet")


# ----------------------------------------------------------------------------- train gan


def _train_preset(name: str, steps: int | None, config_type: type, what: str):
  """The preset `name` of one family (PRESETS holds every family's), with `--steps` applied."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  from jaxcxr import config as config_lib  # pylint: disable=g-import-not-at-top

  presets = {n: make for n, make in config_lib.PRESETS.items() if isinstance(make(), config_type)}
  if name not in presets:
    raise UsageError(f"unknown preset {name!r} for {what}; expected one of {', '.join(presets)}")
  config = presets[name]()
  if steps is not None:
    if steps <= 0 or steps % config.steps_per_call:
      raise UsageError(f"--steps must be a positive multiple of steps_per_call={config.steps_per_call}, got {steps}")
    config = dataclasses.replace(config, steps=steps)
  return config


def cmd_train_gan(args: argparse.Namespace) -> dict[str, Any]:
  from jaxcxr import config as config_lib  # pylint: disable=g-import-not-at-top
  from jaxcxr.train import gan  # pylint: disable=g-import-not-at-top

  config = _train_preset(args.preset, args.steps, config_lib.GanTrainConfig, "a GAN")
  ds = _development_images(args.data, args.split)
  summary = gan.train_gan(ds, config, args.out, resume=args.resume, seed=args.seed,
                          progress=sys.stderr.isatty() or args.progress, init_from=args.init_from)
  return {"preset": args.preset, "split": args.split, **summary}


# The NIH development archives the generators train on (and `evaluate gan` tests against).
GAN_DATA = ("nih_cxr14_subset_256.npz", "nih_cxr14_extra_256.npz")


def _development_images(arg: str | None, split: str, part: str = "train"):
  """The images a generator-family model trains on: `--data` (default both NIH archives), the standard
  split's `part` patients unless split == "all", abnormal meaning pneumonia (`data.keep_abnormal_finding`)."""
  from jaxcxr import data  # pylint: disable=g-import-not-at-top

  path = _data_paths(arg, *GAN_DATA)
  _log(f"loading {path}")
  ds = data.load(path)
  if split == "train":
    ds = ds.subset(data.standard_split(ds)[part])
  kept = data.keep_abnormal_finding(ds)
  which = "all patients" if split == "all" else f"the standard split's {part} patients"
  _log(f"{which}: {len(kept)} images ({len(ds) - len(kept)} abnormal images without pneumonia left out: "
       "the label means pneumonia)")
  return kept


def _generator_dir(path: str) -> pathlib.Path:
  """A generator checkpoint folder, or a model folder holding one as `generator/`."""
  path = pathlib.Path(path)
  return path / "generator" if (path / "generator").is_dir() else path


def cmd_train_upsampler(args: argparse.Namespace) -> dict[str, Any]:
  from jaxcxr import config as config_lib  # pylint: disable=g-import-not-at-top
  from jaxcxr.train import upsampler  # pylint: disable=g-import-not-at-top

  from jaxcxr.models import generator as generator_lib  # pylint: disable=g-import-not-at-top

  config = _train_preset(args.preset, args.steps, config_lib.UpsamplerTrainConfig, "an upsampler")
  if config.generated_fraction and not args.base_gan:
    raise UsageError(f"--preset {args.preset} trains on the base GAN's own images: give --base-gan")
  base = init = None
  if args.base_gan:
    base = generator_lib.load_generator(_generator_dir(args.base_gan))
  if args.init_from:
    path = pathlib.Path(args.init_from)
    init = (generator_lib.load_generator(path / "generator").upsampler if (path / "generator").is_dir()
            else upsampler.load_upsampler(path))
    if init is None:
      raise UsageError(f"--init-from {path}: its generator has no upsampler (not a cascade)")
  train = _development_images(args.data, args.split)
  validation = _development_images(args.data, "train", "val") if args.split == "train" else None
  summary = upsampler.train_upsampler(train, config, args.out, validation=validation, resume=args.resume,
                                      seed=args.seed, progress=sys.stderr.isatty() or args.progress,
                                      base=base, init_from=init)
  return {"preset": args.preset, "split": args.split, **summary}


def _human_train_upsampler(r: dict[str, Any]) -> str:
  line = f"trained {r['preset']} to step {r['steps']} in {r['seconds']:.0f} s; upsampler: {r['upsampler']}"
  if "validation_l1" in r:
    line += f"\nvalidation L1 {r['validation_l1']:.4f} (bilinear {r['validation_l1_bilinear']:.4f})"
  return line


def cmd_cascade(args: argparse.Namespace) -> dict[str, Any]:
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from jaxcxr import checkpoints, io  # pylint: disable=g-import-not-at-top
  from jaxcxr.config import UpsamplerConfig  # pylint: disable=g-import-not-at-top
  from jaxcxr.models import discriminator as discriminator_lib  # pylint: disable=g-import-not-at-top
  from jaxcxr.models import generator as generator_lib  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.upsampler import Upsampler  # pylint: disable=g-import-not-at-top
  from jaxcxr.train.upsampler import load_upsampler  # pylint: disable=g-import-not-at-top

  gan = pathlib.Path(args.gan)
  base = generator_lib.load_generator(gan / "generator")
  if base.config.upsampler is not None:
    raise UsageError(f"{gan}/generator is already a cascade ({base.config.resolution}x{base.config.resolution})")
  if args.upsampler == "bilinear":
    upsampler = Upsampler(UpsamplerConfig(scale=args.scale), rngs=nnx.Rngs(0))   # zero detail: bilinear
    up_meta = {"upsampler": f"bilinear x{args.scale} (untrained stage)"}
  else:
    upsampler = load_upsampler(args.upsampler)
    up_meta = {"upsampler": str(args.upsampler), "upsampler_metadata": checkpoints.read_metadata(args.upsampler)}
  cascade = generator_lib.make_cascade(base, upsampler)
  # The cascade's discriminator is its base GAN's (it average-pools the output to its resolution); read
  # before anything is written, so that a missing or corrupt one leaves no half-written --out.
  discriminator = discriminator_lib.load_discriminator(gan / "discriminator")
  out = io.prepare_output_dir(args.out, overwrite=args.overwrite)
  gan_meta = checkpoints.read_metadata(gan / "generator")
  gan_meta = {k: v for k, v in gan_meta.items() if k not in ("format", "jaxcxr_version", "model", "config_type",
                                                             "created", "config")}
  g_path = checkpoints.save_model(out / "generator", cascade, cascade.config,
                                  metadata={"base": {"path": str(gan), **gan_meta}, **up_meta}, overwrite=True)
  d_path = checkpoints.save_model(out / "discriminator", discriminator, discriminator.config,
                                  metadata={"base": str(gan)}, overwrite=True)
  return {"generator": str(g_path), "discriminator": str(d_path), "resolution": cascade.config.resolution,
          "base_resolution": cascade.config.base_resolution}


def _human_train(r: dict[str, Any]) -> str:
  return (f"trained {r['preset']} to step {r['steps']} in {r['seconds']:.0f} s "
          f"({r['images_per_second']:.1f} img/s); generator: {r['generator']}")


# ----------------------------------------------------------------------------- sample


def _shipped_or(arg: str | None, *names: str) -> pathlib.Path:
  from jaxcxr import checkpoints  # pylint: disable=g-import-not-at-top

  return pathlib.Path(arg) if arg else checkpoints.shipped_checkpoint(*names)


def _load_scorer(args: argparse.Namespace):
  from jaxcxr import scoring  # pylint: disable=g-import-not-at-top

  directory = getattr(args, "scoring", None) or scoring.shipped_scoring()
  strictness = getattr(args, "strictness", "standard")
  _log(f"loading scorer {directory} (U-Net, classifier, calibration) at strictness {strictness}")
  if getattr(args, "batch_size", None) is not None and args.batch_size <= 0:
    raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
  changes = {"batch_size": args.batch_size} if getattr(args, "batch_size", None) else {}
  if getattr(args, "bf16", False):
    changes["dtype"] = "bfloat16"
  try:
    return scoring.load_scorer(directory, strictness=strictness, **changes)
  except ValueError as e:
    raise UsageError(f"--strictness: {e}") from e


def _run_record(args: argparse.Namespace, **ids: Any) -> dict[str, Any]:
  """What a command's output depends on: its arguments (less --out, --overwrite, --json, --progress) and `ids`."""
  skip = {"out", "overwrite", "json", "progress", "run", "human"}
  return {**{k: v for k, v in sorted(vars(args).items()) if k not in skip and not callable(v)}, **ids}


def cmd_sample(args: argparse.Namespace) -> dict[str, Any]:
  from jaxcxr import checkpoints, data, io  # pylint: disable=g-import-not-at-top
  from jaxcxr.models import generator as generator_lib  # pylint: disable=g-import-not-at-top

  data.parse_group(args.group)
  if args.n <= 0:
    raise UsageError(f"--n must be positive, got {args.n}")
  if args.max_generated is not None and args.max_generated <= 0:
    raise UsageError(f"--max-generated must be positive, got {args.max_generated}")
  if args.batch_size is not None and args.batch_size <= 0:
    raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
  prefiltered = _uses_prefilter(args)
  directory = _shipped_or(args.checkpoint, *checkpoints.SHIPPED_GENERATORS)
  _log(f"loading generator {directory}")
  generator = generator_lib.load_generator(directory)
  # A run killed at any moment leaves its record, the kept images and its progress in --out; the
  # same command then resumes it and ends with the uninterrupted run's images.
  run = _run_record(args, generator_id=checkpoints.model_id(directory),
                    latents_sha256=data.file_sha256(args.latents) if args.latents and os.path.isfile(args.latents)
                    else None)
  existed = pathlib.Path(args.out).exists()
  out, saved = io.open_run_dir(args.out, run, overwrite=args.overwrite)
  if saved is not None and saved.get("complete"):
    _log(f"{out}: holds the complete output of this same command; nothing to do")
    return saved["result"]
  if saved is not None:
    _log(f"{out}: resuming the interrupted run of this same command")
  try:
    return _sample_into(args, out, generator, directory, prefiltered)
  except Exception:
    # Bad input found before any image was written: leave no trace of this run.
    if saved is None and [p.name for p in out.iterdir()] == [io.RUN_RECORD]:
      (out / io.RUN_RECORD).unlink()
      if not existed:
        out.rmdir()
    raise


def _sample_into(args: argparse.Namespace, out: pathlib.Path, generator, directory: pathlib.Path,
                 prefiltered: bool) -> dict[str, Any]:
  """`sample`'s work once its output folder is open: sample, write the PNGs round by round, report."""
  import jax  # pylint: disable=g-import-not-at-top

  from jaxcxr import io, sampling  # pylint: disable=g-import-not-at-top
  from jaxcxr.models import generator as generator_lib  # pylint: disable=g-import-not-at-top

  journal = sampling.SampleJournal(out, args.group)
  key = jax.random.key(args.seed)
  result: dict[str, Any] = {"group": args.group, "label": args.label, "checkpoint": str(directory),
                            "resolution": generator.config.resolution, "filtered": not args.unfiltered}
  if args.unfiltered:
    start = time.perf_counter()
    images = generator_lib.sample_images(generator, key, args.n, args.group, label=args.label)
    seconds = time.perf_counter() - start
    result.update(n_generated=len(images), n_valid=None, valid_rate=None, seconds=seconds)
    for i, image in enumerate(images):
      io.save_png(journal.image_path(i), image)
  elif prefiltered:
    images = _sample_prefiltered(args, generator, directory, key, result, journal=journal)["images"]
  else:
    images = _sample_post_filtered(args, generator, key, result, journal=journal)["images"]
  files = [str(journal.image_path(i)) for i in range(len(images))]   # written by the journal, round by round
  result.update(out=str(out), files=files)
  journal.finish()
  io.finish_run_dir(out, result)
  return result


def _human_sample(r: dict[str, Any]) -> str:
  if not r["filtered"]:
    return (f"{r['n_generated']} {r['group']} images ({r['resolution']}x{r['resolution']}, unfiltered) in "
            f"{r['seconds']:.2f} s -> {r['out']}")
  return (f"{r['n_valid']} valid {r['group']} images of {r['n_generated']} generated (valid rate "
          f"{r['valid_rate']:.3f}) in {r['seconds']:.2f} s -> {r['out']}")


# ----------------------------------------------------------------------------- scoring


def cmd_score(args: argparse.Namespace) -> dict[str, Any]:
  from jaxcxr import data, scoring  # pylint: disable=g-import-not-at-top

  path = _data_paths(args.data, "nih_cxr14_subset_256.npz")
  _log(f"loading {path}")
  ds = data.load(path)
  scorer = _load_scorer(args)
  try:
    result = scorer.score(ds.images, progress=True)
  except ValueError as e:
    raise UsageError(f"{path}: {e}") from e
  out: dict[str, Any] = {"n": len(ds), "n_valid": int(result.valid.sum()),
                         "valid_rate": float(result.valid.mean()) if len(ds) else 0.0,
                         "strictness": scorer.strictness_name, "strictness_q": scorer.strictness}
  out.update({name: [round(float(v), 6) for v in result.scores[name]] for name in scoring.SCORE_NAMES})
  out["valid"] = [bool(v) for v in result.valid]
  out["features"] = {name: [round(float(v), 6) for v in result.features[:, i]]
                     for i, name in enumerate(scoring.FEATURE_NAMES)}
  if ds.label is not None and (ds.label >= 0).any():
    out["valid_rate_by_label"] = {name: float(result.valid[ds.label == v].mean())
                                  for v, name in ((0, "normal"), (1, "abnormal")) if (ds.label == v).any()}
  return out


def _human_score(r: dict[str, Any]) -> str:
  from jaxcxr import scoring  # pylint: disable=g-import-not-at-top

  lines = [f"{r['n_valid']} of {r['n']} images valid ({r['valid_rate']:.3f})"]
  for name, rate in r.get("valid_rate_by_label", {}).items():
    lines.append(f"  valid rate of {name} images: {rate:.3f}")
  for name in scoring.SCORE_NAMES:
    v = np.asarray(r[name])
    if v.size:
      lines.append(f"  {name:17s} median {np.median(v):+.3f}, > 0 for {np.mean(v > 0):.3f}")
  return "\n".join(lines)


def cmd_calibrate(args: argparse.Namespace) -> dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top

  from jaxcxr import checkpoints, data, scoring  # pylint: disable=g-import-not-at-top
  from jaxcxr.models import generator as generator_lib  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.classifier import load_classifier  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.unet import load_unet  # pylint: disable=g-import-not-at-top
  from jaxcxr.train.loop import data_metadata  # pylint: disable=g-import-not-at-top

  if not 0.0 <= args.strict_valid_rate < 1.0 or args.strict_n_per_group <= 0:
    raise UsageError(f"--strict-valid-rate must be in [0, 1) and --strict-n-per-group positive, got "
                     f"{args.strict_valid_rate} and {args.strict_n_per_group}")
  if args.batch_size <= 0:
    raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
  generator, generator_dir = None, None
  if args.strict_valid_rate > 0:   # a missing or broken generator is found before the calibration's work
    generator_dir = _shipped_or(args.generator, *checkpoints.SHIPPED_GENERATORS)
    generator = generator_lib.load_generator(generator_dir)
  root = checkpoints.checkpoints_root()
  unet_dir = _shipped_or(args.unet, *checkpoints.SHIPPED_UNETS)
  classifier_dir = _shipped_or(args.classifier, *checkpoints.SHIPPED_CLASSIFIERS["abnormal"])
  paths = _data_paths(args.data, *GAN_DATA)
  _log(f"loading {paths}, {unet_dir}, {classifier_dir}")
  ds = data.load(paths)
  if ds.label is None:
    raise UsageError(f"{paths}: calibration needs normal/abnormal labels")
  train = ds.subset(data.standard_split(ds)["train"])
  normals = train.images[train.label == 0]
  _log(f"calibrating on {len(normals)} normal images of the standard split's train patients")

  def named(p: pathlib.Path) -> str:
    p = p.resolve()
    return p.relative_to(root.resolve()).as_posix() if p.is_relative_to(root.resolve()) else str(p)

  provenance = {"unet": named(unet_dir), "unet_id": checkpoints.model_id(unet_dir),
                "classifier": named(classifier_dir), "classifier_id": checkpoints.model_id(classifier_dir),
                "data": ",".join(pathlib.Path(p).name for p in paths.split(",")),
                "data_sha256": data_metadata(ds).get("data_sha256"),
                "split": "standard_split train, label 0"}
  try:
    scorer = scoring.calibrate(load_unet(unet_dir), load_classifier(classifier_dir), normals,
                               scoring.ScoringConfig(batch_size=args.batch_size), provenance=provenance,
                               progress=True)
  except ValueError as e:
    raise UsageError(f"{paths}: {e}") from e
  result: dict[str, Any] = {"out": str(args.out), "n": len(normals)}
  if args.strict_valid_rate > 0:
    _log(f"strict level: {args.strict_n_per_group} samples per group of {generator_dir}")
    measures = []
    for i, group in enumerate(data.GROUPS):
      scored = scorer.generate_and_score(generator, jax.random.key(args.seed + i), args.strict_n_per_group, group,
                                         keep_images=False, progress=True)
      measures.append(scored.result.measures)
    measures = {k: np.concatenate([m[k] for m in measures]) for k in measures[0]}
    q = scoring.strictness_for_valid_rate(scorer, measures, args.strict_valid_rate)
    scorer = scorer.with_level("strict", q)
    scorer.provenance.update(strict={"generator": named(generator_dir), "generator_id": checkpoints.model_id(
        generator_dir), "n_samples": int(len(measures["shape"])), "seed": args.seed,
                                     "target_valid_rate": args.strict_valid_rate})
    result["generated_valid_rate"] = {name: float(scorer.valid_at(measures, name).mean()) for name in scorer.levels}
  scorer.save(args.out)
  result.update(levels=scorer.levels,
                thresholds={name: {n: float(getattr(scorer.at_strictness(name).calibration, n))
                                   for n in scoring.THRESHOLD_NAMES} for name in scorer.levels})
  return result


def _human_calibrate(r: dict[str, Any]) -> str:
  lines = [f"calibrated on {r['n']} normal images -> {r['out']}"]
  for name, q in r["levels"].items():
    rate = r.get("generated_valid_rate", {}).get(name)
    lines.append(f"  {name} (q = {q:.4g}{f', generated valid rate {rate:.3f}' if rate is not None else ''}): "
                 + ", ".join(f"{k} {v:.4g}" for k, v in r["thresholds"][name].items()))
  return "\n".join(lines)


def cmd_report_scoring(args: argparse.Namespace) -> dict[str, Any]:
  from jaxcxr import checkpoints, data, reports  # pylint: disable=g-import-not-at-top
  from jaxcxr.models import generator as generator_lib  # pylint: disable=g-import-not-at-top

  if args.n_per_group <= 0:
    raise UsageError(f"--n-per-group must be positive, got {args.n_per_group}")
  if args.covid and not pathlib.Path(args.covid).is_file():
    raise UsageError(f"--covid {args.covid}: no such file")
  directory = _shipped_or(args.checkpoint, *checkpoints.SHIPPED_GENERATORS)
  path = _data_paths(args.data, *GAN_DATA)
  _log(f"loading {path} and generator {directory}")
  ds = data.keep_abnormal_finding(data.load(path))   # abnormal = pneumonia, as the classifier's
  generator = generator_lib.load_generator(directory)
  scorer = _load_scorer(args)
  covid_image = None
  covid = pathlib.Path(args.covid) if args.covid else (
      pathlib.Path(os.environ["JAXCXR_DATA"]) / "covid_v7lungs_256.npz" if os.environ.get("JAXCXR_DATA") else None)
  if covid is not None and covid.exists():
    covid_ds = data.load(covid)
    covid_image = covid_ds.images[data.standard_split(covid_ds)[args.split][0] if args.split != "all" else 0]
  elif args.covid:
    raise UsageError(f"--covid {args.covid}: no such file")
  report = reports.scoring_report(scorer, generator, ds, args.out, n_per_group=args.n_per_group, split=args.split,
                                  seed=args.seed, covid_image=covid_image, progress=True)
  return {"out": str(args.out), "generator": str(directory), **report}


def _human_report(r: dict[str, Any]) -> str:
  real = r["real"]["valid_rate_by_label"]
  lines = [f"report -> {r['out']}/report.md",
           f"real {r['split']} images valid: normal {real['normal']:.3f}, abnormal {real['abnormal']:.3f}",
           f"generated valid: {r['generated']['valid_rate']:.3f}"]
  lines += [f"  {g}: {v['valid_rate']:.3f}" for g, v in r["generated"]["groups"].items()]
  return "\n".join(lines)


# ----------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
  from jaxcxr import data, demo  # pylint: disable=g-import-not-at-top

  if args.group not in data.GROUPS:
    raise UsageError(f"--group: unknown group {args.group!r}; expected one of {', '.join(data.GROUPS)}")
  if args.n < 1:
    raise UsageError(f"--n must be >= 1, got {args.n}")
  out = pathlib.Path(args.out)
  if out.exists() and not out.is_dir():
    raise UsageError(f"--out {out}: exists and is not a folder")
  if (out / demo.REPORT_NAME).exists() and not args.overwrite:
    raise UsageError(f"{out / demo.REPORT_NAME} exists; pass --overwrite to replace it")
  config = demo.DemoConfig(group=args.group, n=args.n, seed=args.seed, strictness=args.strictness)
  _log(f"demo: {args.n} valid {args.group} images at {args.strictness}, with and without the pre-filter -> "
       f"{out / demo.REPORT_NAME}")
  return demo.run_demo(out, config, overwrite=args.overwrite, log=_log)


def _human_demo(r: dict[str, Any]) -> str:
  pre, plain = r["samplers"]["prefiltered"], r["samplers"]["unfiltered"]
  speed = r["speedup"]
  ratio = lambda v: "n/a" if v is None else f"{v:.2f}x"
  return "\n".join([
      f"report -> {r['report']} ({r['report_bytes'] / 1e6:.1f} MB, one self-contained HTML file)",
      f"{r['counts']['kept']} valid {r['group']} images kept ({r['strictness']} post-filter)",
      f"  with the pre-filter:    {pre['generated_per_valid']:.2f} generated per valid, {pre['seconds']:.2f} s",
      f"  without the pre-filter: {plain['generated_per_valid']:.2f} generated per valid, {plain['seconds']:.2f} s",
      f"  speed-up: {ratio(speed['generated_per_valid'])} generated per valid, {ratio(speed['wall_time'])} wall time",
      f"pre-filter ROC AUC on {r['prefilter_roc']['n']} fresh samples: "
      + ("n/a (one class)" if r["prefilter_roc"]["roc_auc"] is None else f"{r['prefilter_roc']['roc_auc']:.3f}"),
      f"total {r['seconds']:.1f} s"])


# ----------------------------------------------------------------------------- evaluate models


def _standard_subset(ds, split: str):
  from jaxcxr import data  # pylint: disable=g-import-not-at-top

  if split == "all":
    return ds
  return ds.subset(data.standard_split(ds)[split])


def cmd_evaluate_anomaly(args: argparse.Namespace) -> dict[str, Any]:
  import dataclasses  # pylint: disable=g-import-not-at-top

  from jaxcxr import anomaly, checkpoints, data, io, reports  # pylint: disable=g-import-not-at-top

  if args.method != "anogan" and (args.steps is not None or args.restarts != 1 or args.base_image):
    raise UsageError("--steps, --restarts and --base-image set the AnoGAN search; f-AnoGAN and HealthyGAN score in "
                     "one pass")
  if args.restarts < 1:
    raise UsageError(f"--restarts must be >= 1, got {args.restarts}")
  if args.batch_size <= 0:
    raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
  root = checkpoints.checkpoints_root()
  if args.method == "anogan":
    from jaxcxr.models import load_discriminator, load_generator  # pylint: disable=g-import-not-at-top

    gan = pathlib.Path(args.checkpoint) if args.checkpoint else next(iter(checkpoints.shipped_normal_gans()), None)
    if gan is None:
      raise UsageError(f"no shipped normal-only GAN under {root}; pass --checkpoint DIR (generator/, discriminator/)")
    _log(f"loading normal-only GAN {gan}")
    config = anomaly.LatentSearchConfig(restarts=args.restarts, base_image=args.base_image)
    if args.steps is not None:
      if args.steps <= 0:
        raise UsageError(f"--steps must be positive, got {args.steps}")
      config = dataclasses.replace(config, steps=args.steps)
    scorer = anomaly.AnoganScorer(load_generator(gan / "generator"), load_discriminator(gan / "discriminator"),
                                  config, seed=args.seed, batch_size=args.batch_size)
    source = str(gan)
  elif args.method == "fanogan":
    directory = _shipped_or(args.checkpoint, *checkpoints.SHIPPED_FANOGAN_ENCODERS)
    _log(f"loading f-AnoGAN encoder {directory} and its GAN")
    scorer = anomaly.FanoganScorer(*anomaly.load_fanogan(directory), batch_size=args.batch_size)
    source = str(directory)
  else:
    from jaxcxr.models.translator import load_translator  # pylint: disable=g-import-not-at-top

    directory = _shipped_or(args.checkpoint, *checkpoints.SHIPPED_HEALTHYGAN_TRANSLATORS)
    _log(f"loading HealthyGAN translator {directory}")
    scorer = anomaly.HealthyganScorer(load_translator(directory), batch_size=args.batch_size)
    source = str(directory)
  if args.lung_mask:
    from jaxcxr.models.unet import load_unet  # pylint: disable=g-import-not-at-top

    unet_dir = _shipped_or(None, *checkpoints.SHIPPED_UNETS)
    _log(f"scoring the residual inside the lungs of {unet_dir}")
    scorer = anomaly.LungMaskedScorer(scorer, load_unet(unet_dir))
  path = _data_paths(args.data, *GAN_DATA)
  _log(f"loading {path}")
  ds = data.keep_abnormal_finding(data.load(path))    # abnormal means pneumonia (the extra archive: any finding)
  if args.abnormal == "covid":
    # Second task: NIH normals against the COVID-19 archive's images (each archive split by its own patients).
    covid_path = _data_path(args.covid_data, "covid_v7lungs_256.npz")
    _log(f"loading {covid_path}")
    covid = data.load(covid_path)
    # The normal GAN behind AnoGAN and f-AnoGAN is conditioned on sex and age: every method scores the same
    # images, those whose sex and age are known.
    known = np.isin(covid.sex, ["M", "F"]) & (covid.age >= 0)
    covid_dropped = int((~known).sum())
    covid = covid.subset(known)
    pick = lambda split: data.concatenate([_standard_subset(ds, split).select(label=0),
                                           _standard_subset(covid, split).select(label=1)])
    path = f"{path},{covid_path}"
  else:
    pick = lambda split: _standard_subset(ds, split)
  test = pick(args.split)
  threshold_data = pick("val") if args.split == "test" else None
  try:
    result = anomaly.evaluate_anomaly(scorer, test, threshold_data=threshold_data, progress=True)
  except ValueError as e:
    raise UsageError(f"{path}: {e}") from e
  scores, residual, labels = result.pop("scores"), result.pop("residual"), result.pop("labels")
  component_scores, threshold_scores = result.pop("component_scores"), result.pop("threshold_scores", None)
  if args.scores:
    arrays = {"scores": scores, "labels": labels, "patient_id": test.patient_id.astype(str),
              "residual": np.asarray(residual, np.float16),          # for figures without a new search
              **{f"component_{k}": v for k, v in component_scores.items()}}
    views = data.views(test)
    if views is not None:
      arrays["view"] = views
    if threshold_scores is not None:
      arrays.update({"threshold_scores": threshold_scores["scores"], "threshold_labels": threshold_scores["labels"],
                     "threshold_patient_id": threshold_data.patient_id.astype(str),
                     **{f"threshold_component_{k}": v for k, v in threshold_scores["component_scores"].items()}})
    result["scores_file"] = str(io.save_npz(args.scores, arrays))
  if args.out:
    out = pathlib.Path(args.out)
    overlay = reports.save_residual_overlays(test.images, residual, labels,
                                             scores, out / f"residuals_{args.method}.png",
                                             title=f"{args.method}: ROC AUC {result['roc_auc']:.3f}")
    result["overlays"] = str(overlay)
  if args.abnormal == "covid":
    result["covid_dropped_unknown_sex_or_age"] = covid_dropped
    if args.split in ("val", "test"):
      # The figure's reference: what the archives' look alone gives (trained on the training patients).
      result["source_only_baseline"] = anomaly.source_only_baseline(pick("train"), test)
  result.update(split=args.split, checkpoint=source, data=str(path), lung_mask=args.lung_mask, abnormal=args.abnormal)
  if args.method == "anogan":
    result.update(steps=config.steps, restarts=config.restarts, base_image=config.base_image)
  return result


def cmd_evaluate_anomaly_cv(args: argparse.Namespace) -> dict[str, Any]:
  from jaxcxr import checkpoints, data  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.unet import load_unet  # pylint: disable=g-import-not-at-top
  from jaxcxr.train.anomaly_cv import cross_validate_anomaly  # pylint: disable=g-import-not-at-top

  if args.batch_size <= 0:
    raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
  root = checkpoints.checkpoints_root()
  gan = None
  if args.method == "fanogan":
    gan = pathlib.Path(args.gan) if args.gan else next(iter(checkpoints.shipped_normal_gans()), None)
    if gan is None:
      raise UsageError(f"no shipped normal-only GAN under {root}; pass --gan DIR (generator/, discriminator/)")
  path = _data_paths(args.data, *GAN_DATA)
  _log(f"loading {path}")
  ds = data.keep_abnormal_finding(data.load(path))
  split = data.standard_split(ds)
  dev = ds.subset(np.sort(np.concatenate([split["train"], split["val"]])))   # never the test patients
  unet = load_unet(_shipped_or(None, *checkpoints.SHIPPED_UNETS)) if args.lung_mask else None
  _log(f"{args.folds} folds x {args.repeats} repeats over {len(dev)} development images; "
       f"progress one line per fold")
  try:
    report = cross_validate_anomaly(args.method, dev, args.out, folds=args.folds, repeats=args.repeats,
                                    steps=args.steps, gan_dir=gan, unet=unet, seed=args.seed,
                                    batch_size=args.batch_size)
  except (ValueError, data.DataError) as e:
    raise UsageError(str(e)) from e
  return report


def _human_evaluate_anomaly_cv(r: dict[str, Any]) -> str:
  lines = [f"{r['method']}: {r['folds']}-fold x {r['repeats']} patient-level CV over {r['n']} development images "
           f"({r['n_abnormal']} abnormal), {r['steps']} training steps per fold"]
  for name, s in r["summary"].items():
    if s["mean"] is not None:
      lines.append(f"  {name}: ROC AUC mean {s['mean']:.3f} (SD {s['sd']:.3f}, {s['min']:.3f}-{s['max']:.3f}, "
                   f"{s['n_folds']} folds)")
  return "\n".join(lines)


def cmd_evaluate_anomaly_ensemble(args: argparse.Namespace) -> dict[str, Any]:
  from jaxcxr import anomaly  # pylint: disable=g-import-not-at-top

  if len(args.scores) < 2:
    raise UsageError("give at least two score files (from `evaluate anomaly --scores FILE`)")
  loaded = []
  for path in args.scores:
    try:
      with open(path, "rb") as file:      # ours to close: np.load leaks its own handle on a corrupt zip
        f = np.load(file, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
          raise ValueError("a single array, not an npz archive")
        with f:
          loaded.append({k: f[k] for k in f.files})
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise UsageError(f"{path}: not a readable score file ({e}); write it with `evaluate anomaly --scores FILE`"
                       ) from None
    if "scores" not in loaded[-1] or "labels" not in loaded[-1]:
      raise UsageError(f"{path}: no `scores`/`labels` arrays; write it with `evaluate anomaly --scores FILE`")
  result = {"files": list(args.scores)}
  for part, prefix in (("test", ""), ("threshold_data", "threshold_")):
    if not all(f"{prefix}scores" in f for f in loaded):
      continue
    first = loaded[0]
    for path, f in zip(args.scores[1:], loaded[1:]):
      same = all(np.array_equal(f[f"{prefix}{k}"], first[f"{prefix}{k}"]) for k in ("labels", "patient_id")
                 if f"{prefix}{k}" in f and f"{prefix}{k}" in first)
      if not same or len(f[f"{prefix}scores"]) != len(first[f"{prefix}scores"]):
        raise UsageError(f"{path}: its images differ from {args.scores[0]}'s (labels or patients); score the same "
                         "split of the same data")
    y = first[f"{prefix}labels"]
    ensemble = anomaly.rank_average([f[f"{prefix}scores"] for f in loaded])
    result[part] = {"n": int(len(y)), "n_abnormal": int(y.sum()), **anomaly.auc_with_interval(ensemble, y),
                    "members": {path: anomaly.auc_with_interval(f[f"{prefix}scores"], y)
                                for path, f in zip(args.scores, loaded)}}
  return result


def _human_evaluate_anomaly_ensemble(r: dict[str, Any]) -> str:
  lines = []
  for part in ("threshold_data", "test"):
    if part in r:
      p = r[part]
      lines.append(f"rank-average ensemble on {part} ({p['n']} images, {p['n_abnormal']} abnormal): ROC AUC "
                   f"{p['roc_auc']:.4f}{_ci_text(p['roc_auc_ci95'])}")
      lines += [f"  {name}: {m['roc_auc']:.4f}{_ci_text(m['roc_auc_ci95'])}" for name, m in p["members"].items()]
  return "\n".join(lines)


def _ci_text(ci) -> str:
  return f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""


def _human_evaluate_anomaly(r: dict[str, Any]) -> str:
  lines = [f"{r['method']} on {r['n']} images ({r['split']}: {r['n_normal']} normal, {r['n_abnormal']} abnormal): "
           f"ROC AUC {r['roc_auc']:.4f}{_ci_text(r.get('roc_auc_ci95'))}, precision {r['precision']:.3f}, "
           f"recall {r['recall']:.3f}, specificity {r['specificity']:.3f}, F1 {r['f1']:.3f} "
           f"(threshold from {r['threshold_from']}); "
           f"{r['seconds_per_image'] * 1e3:.1f} ms per image"]
  for name, c in (r.get("components") or {}).items():
    auc = "n/a" if c["roc_auc"] is None else f"{c['roc_auc']:.4f}"
    lines.append(f"  {name} alone: ROC AUC {auc}{_ci_text(c.get('roc_auc_ci95'))}")
  if "source_only_baseline" in r:
    b = r["source_only_baseline"]
    lines.append(f"  source-only baseline ({b['method']}): ROC AUC {b['roc_auc']:.4f}{_ci_text(b['roc_auc_ci95'])}")
  for view, c in (r.get("by_view") or {}).items():
    auc = "n/a" if c["roc_auc"] is None else f"{c['roc_auc']:.4f}"
    lines.append(f"  {view} view ({c['n']} images, {c['n_abnormal']} abnormal): ROC AUC {auc}"
                 f"{_ci_text(c.get('roc_auc_ci95'))}")
  return "\n".join(lines)


def cmd_evaluate_segmentation(args: argparse.Namespace) -> dict[str, Any]:
  from jaxcxr import checkpoints, data  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.unet import load_unet  # pylint: disable=g-import-not-at-top
  from jaxcxr.train.segmentation import evaluate_segmentation  # pylint: disable=g-import-not-at-top

  directory = _shipped_or(args.checkpoint, *checkpoints.SHIPPED_UNETS)
  path = _data_path(args.data, "covid_v7lungs_256.npz")
  _log(f"loading {path} and {directory}")
  ds = data.load(path)
  metadata = checkpoints.read_metadata(directory)
  saved = metadata.get("split") or {}
  if (args.split in ("val", "test") and f"{args.split}_patients" in saved
      and metadata.get("data_sha256") == data.file_sha256(path)):
    # The U-Net's own patient split, saved with it (its test patients were never used for a choice).
    ds = ds.subset(np.isin(ds.patient_id, np.asarray(saved[f"{args.split}_patients"])))
    split_from = "the checkpoint's own patient split"
  else:
    ds, split_from = _standard_subset(ds, args.split), "data.standard_split"
  model = load_unet(directory)
  result = evaluate_segmentation(model, ds, per_image=True)
  per_image = result.pop("dice_per_image", None)
  if args.out and per_image is not None:
    from jaxcxr import reports  # pylint: disable=g-import-not-at-top
    from jaxcxr.models.unet import predict_masks  # pylint: disable=g-import-not-at-top

    out = pathlib.Path(args.out)
    predicted = predict_masks(model, ds.images)
    result["worst_overlays"] = str(reports.save_segmentation_overlays(
        ds.images, predicted, ds.lung_masks, np.asarray(per_image), out / "worst_overlays.png",
        title=f"{directory.name if directory.name != 'unet' else directory.parent.name}: the 8 {args.split} images "
              "of lowest Dice", names=ds.patient_id))
  return {**result, "split": args.split, "split_from": split_from, "checkpoint": str(directory)}


def _human_evaluate_segmentation(r: dict[str, Any]) -> str:
  ci = lambda k: f" [{r[k][0]:.4f}, {r[k][1]:.4f}]" if k in r else ""
  return (f"{r['n']} images ({r['split']}, {r['split_from']}): Dice mean {r['dice_mean']:.4f}{ci('dice_mean_ci95')} "
          f"(right {r['dice_right']:.4f}{ci('dice_right_ci95')}, left {r['dice_left']:.4f}{ci('dice_left_ci95')}), "
          f"IoU {r['iou_mean']:.4f}")


def cmd_evaluate_classifier(args: argparse.Namespace) -> dict[str, Any]:
  from jaxcxr import checkpoints, data, metrics  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.classifier import load_classifier, predict_proba  # pylint: disable=g-import-not-at-top
  from jaxcxr.train.classifier import evaluate_classifier, fit_pixel_logreg, task_labels  # pylint: disable=g-import-not-at-top
  from jaxcxr.train.loop import data_metadata  # pylint: disable=g-import-not-at-top

  directory = _shipped_or(args.checkpoint, *checkpoints.SHIPPED_CLASSIFIERS[args.task])
  metadata = checkpoints.read_metadata(directory)
  if metadata.get("task") not in (None, args.task):
    raise UsageError(f"{directory}: a {metadata['task']} classifier, not {args.task}")
  paths = _data_paths(args.data, *GAN_DATA)
  _log(f"loading {paths} and {directory}")
  full = data.load(paths)
  if args.task == "abnormal":
    full = data.keep_abnormal_finding(full)   # abnormal means pneumonia, as the classifiers were trained
  digest = data_metadata(full).get("data_sha256")   # the digest train_classifier saved for the same files
  saved = metadata.get("split") or {}
  own = args.split != "all" and args.split in saved and metadata.get("data_sha256") == digest
  if own:
    # The classifier's own patient split (the sex classifier's is stratified by sex, not by label).
    ds, split_from = full.subset(np.asarray(saved[args.split], np.int64)), "the checkpoint's own patient split"
  else:
    ds, split_from = _standard_subset(full, args.split), "data.standard_split"
  threshold = float(metadata.get("threshold", 0.5))
  model = load_classifier(directory)
  result = evaluate_classifier(model, ds, args.task, threshold=threshold)
  result.update(task=args.task, split=args.split, split_from=split_from, checkpoint=str(directory))
  keep, y = task_labels(ds, args.task)
  ds, y = ds.subset(keep), y[keep]
  if args.baseline:
    if not own:
      raise UsageError("--baseline needs --split val or test and the data the classifier was trained on (its own "
                       "patient split names the training patients of the baseline)")
    train = full.subset(np.asarray(saved["train"], np.int64))
    train_keep, train_y = task_labels(train, args.task)
    _log(f"pixel logistic-regression baseline on the same {int(train_keep.sum())} training images")
    baseline = fit_pixel_logreg(train.subset(train_keep), train_y[train_keep])
    prob_b = baseline.predict_proba(ds.images)
    prob_a = predict_proba(model, ds.images)
    result["baseline"] = {"model": "pixel logistic regression (32x32 block means, C by grouped CV)",
                          "C": baseline.C, "roc_auc": metrics.compute_roc_auc(prob_b, y),
                          "roc_auc_ci95": metrics.roc_auc_interval(prob_b, y),
                          "paired_delong": metrics.compare_roc_auc(prob_a, prob_b, y)}
  if args.out:
    from jaxcxr import explain, reports  # pylint: disable=g-import-not-at-top

    positives = np.flatnonzero(y == 1)
    if positives.size:
      prob = predict_proba(model, ds.images[positives])
      # 8 positives spread evenly over the classifier's ranking (not its 8 most confident).
      ranks = np.argsort(prob)[np.unique(np.linspace(0, positives.size - 1, 8).round().astype(int))]
      picks = positives[ranks]
      cam = explain.grad_cam(model, ds.images[picks])
      what = "pneumonia" if args.task == "abnormal" else "female"
      result["gradcam_overlays"] = str(reports.save_gradcam_overlays(
          ds.images[picks], cam.heatmap, prob[ranks],
          pathlib.Path(args.out) / "gradcam_overlays.png", names=ds.patient_id[picks],
          title=f"Grad-CAM ({what}) on 8 {args.split} {what} images, spread over the classifier's ranking"))
  return result


def _human_evaluate_classifier(r: dict[str, Any]) -> str:
  auc = "n/a (one class)" if r["roc_auc"] is None else f"{r['roc_auc']:.4f}{_ci_text(r.get('roc_auc_ci95'))}"
  line = (f"{r['task']} classifier on {r['n']} images ({r['split']}, {r.get('split_from', 'data.standard_split')}): "
          f"ROC AUC {auc}, accuracy {r['accuracy']:.4f}")
  if "baseline" in r:
    b, test = r["baseline"], r["baseline"]["paired_delong"]
    line += (f"\n  baseline {b['model']}: ROC AUC {b['roc_auc']:.4f}{_ci_text(b['roc_auc_ci95'])}; "
             f"difference {test['difference']:+.4f}, DeLong paired p = {test['p_value']:.3g}")
  for view, value in (r.get("roc_auc_by_view") or {}).items():
    line += f"\n  {view}: ROC AUC {'n/a' if value is None else f'{value:.4f}'} (n={r['n_by_view'][view]})"
  return line


# ----------------------------------------------------------------------------- evaluate gan


def cmd_evaluate_gan(args: argparse.Namespace) -> dict[str, Any]:
  from jaxcxr import checkpoints, data, quality  # pylint: disable=g-import-not-at-top
  from jaxcxr.models import discriminator as discriminator_lib  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.classifier import load_classifier  # pylint: disable=g-import-not-at-top
  from jaxcxr.models import generator as generator_lib  # pylint: disable=g-import-not-at-top

  if args.n_per_group <= 0:
    raise UsageError(f"--n-per-group must be positive, got {args.n_per_group}")
  root = pathlib.Path(args.checkpoint) if args.checkpoint else checkpoints.shipped_checkpoint(
      *checkpoints.SHIPPED_GENERATORS).parent
  path = _data_paths(args.data, *GAN_DATA)
  _log(f"loading {root}/generator, {root}/discriminator and {path}")
  dataset = data.load(path)
  split = data.standard_split(dataset)
  normals = {part: dataset.subset(split[part]).select(label=0) for part in ("train", "test")}
  _log(f"realism figures against {len(normals['test'])} normal test images, PCA space of "
       f"{len(normals['train'])} normal training images (standard patient split)")
  generator = generator_lib.load_generator(root / "generator")
  discriminator = discriminator_lib.load_discriminator(root / "discriminator")
  classifiers = {}
  shipped = checkpoints.SHIPPED_CLASSIFIERS
  for role, arg, names in (("sex_classifier", args.sex_classifier, shipped["sex"]),
                           ("feature_classifier", args.feature_classifier, shipped["abnormal"])):
    if args.no_classifiers:
      continue
    try:
      directory = _shipped_or(arg, *names)
    except checkpoints.CheckpointError:
      _log(f"no shipped {role.replace('_', ' ')}: its figures are left out")
      continue
    _log(f"loading {role.replace('_', ' ')} {directory}")
    classifiers[role] = load_classifier(directory)
  result = quality.evaluate_gan(generator, discriminator, dataset, seed=args.seed, n_per_group=args.n_per_group,
                                test_normals=normals["test"], train_normals=normals["train"], **classifiers)
  return {"checkpoint": str(root), "data": str(path), **result}


def _human_evaluate_gan(r: dict[str, Any]) -> str:
  lines = [f"FD generated vs real {r['fd_generated_vs_real']:.4g}, real vs real {r['fd_real_vs_real']:.4g} "
           f"(ratio {r['fd_ratio']:.2f}); Sinkhorn {r['sinkhorn_generated_vs_real']:.4g} vs "
           f"{r['sinkhorn_real_vs_real']:.4g}; sex agreement {r['sex_agreement_generated']:.2f}"]
  if "fd_classifier_ratio" in r:
    lines.append(f"FD in classifier features: {r['fd_classifier_generated_vs_real']:.4g} vs real-real "
                 f"{r['fd_classifier_real_vs_real']:.4g} (ratio {r['fd_classifier_ratio']:.2f})")
  if "sex_classifier_agreement_generated" in r:
    lines.append(f"sex classifier agreement: generated {r['sex_classifier_agreement_generated']:.2f}, "
                 f"real {r['sex_classifier_accuracy_real']:.2f}")
  for name, g in r["groups"].items():
    lines.append(f"  {name}: female fraction {g['female_fraction']:.2f}, predicted age {g['mean_predicted_age']:.1f}")
  if "realism" in r:
    lines.extend(_realism_table(r["realism"]))
  return "\n".join(lines)


def _realism_table(realism: dict[str, Any]) -> list[str]:
  """Rows of `evaluate gan`'s realism figures: figure, generated vs real, real vs real."""
  rows = [(f"two-sample AUC, {label}", f"{realism[f'two_sample_auc_{key}']['generated_vs_real']:.3f}",
           f"{realism[f'two_sample_auc_{key}']['real_vs_real']:.3f}", "")
          for key, label in (("pixels", "pixels"), ("hog", "HOG"), ("detail", "detail"))]
  fd = realism["pca_frechet"]
  rows.append(("PCA Frechet", f"{fd['generated_vs_real']:.4g}", f"{fd['real_vs_real']:.4g}",
               f"ratio {fd['ratio']:.2f}"))
  hf = realism["high_frequency_share"]
  rows.append(("high-frequency ratio", f"{hf['ratio']:.3f}", f"{hf['real_vs_real_ratio']:.3f}",
               f"real share {hf['real_a']:.4f}"))
  lines = [f"realism figures ({realism['n_per_set']} images per set; AUC 0.5 = indistinguishable, ratios 1 = real):",
           f"  {'figure':<22}{'generated vs real':>19}{'real vs real':>14}"]
  lines += [f"  {name:<22}{gen:>19}{ref:>14}  {note}".rstrip() for name, gen, ref, note in rows]
  return lines


# ----------------------------------------------------------------------------- latents
#
# The latent pre-filter (DESIGN.md sections 4-6): `latents build` makes a latent dataset with the
# post-filter, `latents table` compares latent classifiers on it, `latents fit` saves one group's
# pre-filter, and `sample --prefilter` uses one. Latent datasets are built for normal images
# (label 0), so pre-filters exist for label 0 only.


def _parse_groups(arg: str | None) -> tuple[str, ...]:
  from jaxcxr import data  # pylint: disable=g-import-not-at-top

  if arg is None or arg.strip() == "all":
    return data.GROUPS
  names = tuple(g.strip() for g in arg.split(",") if g.strip())
  for name in names:
    data.parse_group(name)
  if not names:
    raise UsageError("--groups: expected 'all' or comma-separated group names")
  return names


def _work_dir(out: pathlib.Path, run: dict[str, Any], overwrite: bool, suffix: str) -> pathlib.Path:
  """The hidden sibling folder `.OUT.SUFFIX` where a command that writes `out` keeps its work so far.

  It holds the run's record (`io.open_run_dir`): the same command run again after a kill finds
  it and continues from what is there, even if the kill came after `out` was written (the
  command then writes the same `out` again); a folder of other arguments is emptied. The
  command removes it once `out` is written.

  Raises:
    FileExistsError: `out` exists, is not this run's, and `overwrite` is False.
  """
  from jaxcxr import io  # pylint: disable=g-import-not-at-top

  work = out.with_name(f".{out.name}.{suffix}")
  resumed = work.is_dir() and io.open_run_dir(work, run, overwrite=True)[1] is not None
  if out.exists() and not overwrite and not resumed:
    raise FileExistsError(f"{out}: exists; pass --overwrite to replace it")
  io.open_run_dir(work, run, overwrite=True)
  if resumed:
    _log(f"{work}: resuming the interrupted run of this same command")
  return work


@contextlib.contextmanager
def _drop_unused(work: pathlib.Path):
  """Removes a `_work_dir` that holds nothing but its record when the block fails (bad input, no work done)."""
  from jaxcxr import io  # pylint: disable=g-import-not-at-top

  try:
    yield
  except Exception:
    if work.is_dir() and [p.name for p in work.iterdir()] == [io.RUN_RECORD]:
      (work / io.RUN_RECORD).unlink()
      work.rmdir()
    raise


def cmd_latents_build(args: argparse.Namespace) -> dict[str, Any]:
  import shutil  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  from jaxcxr import checkpoints, prefilter  # pylint: disable=g-import-not-at-top
  from jaxcxr.models import generator as generator_lib  # pylint: disable=g-import-not-at-top

  if args.n_per_group <= 0:
    raise UsageError(f"--n-per-group must be positive, got {args.n_per_group}")
  groups = _parse_groups(args.groups)
  out = pathlib.Path(args.out)
  directory = _shipped_or(args.checkpoint, *checkpoints.SHIPPED_GENERATORS)
  work = _work_dir(out, _run_record(args, generator_id=checkpoints.model_id(directory)), args.overwrite, "partial")
  with _drop_unused(work):
    _log(f"loading generator {directory}")
    generator = generator_lib.load_generator(directory)
    generator_id = checkpoints.model_id(directory)
    scorer = _load_scorer(args)
    _log(f"generating and scoring {args.n_per_group} latents per group for {', '.join(groups)}")
    start = time.perf_counter()
    records = prefilter.build_latent_dataset(scorer, generator, jax.random.key(args.seed), args.n_per_group,
                                             generator_id=generator_id, groups=groups,
                                             progress=sys.stderr.isatty(), parts_dir=work,
                                             chunk_size=8 * scorer.config.batch_size)
  seconds = time.perf_counter() - start
  prefilter.save_latent_dataset(out, records)
  shutil.rmtree(work, ignore_errors=True)
  _log(f"wrote {out}")
  return {"out": str(out), "checkpoint": str(directory), "seed": args.seed, "n_per_group": args.n_per_group,
          "strictness": scorer.strictness_name, "seconds": seconds, **prefilter.latent_dataset_summary(records)}


def _human_latents_build(r: dict[str, Any]) -> str:
  lines = [f"{r['n']} latents ({r['n_valid']} valid, rate {r['valid_rate']:.4f}) in {r['seconds']:.1f} s -> "
           f"{r['out']} (generator {r['generator_id']})", f"{'group':8s} {'n':>7s} {'valid':>7s} {'rate':>7s}"]
  lines += [f"{g:8s} {c['n']:7d} {c['n_valid']:7d} {c['valid_rate']:7.4f}" for g, c in r["groups"].items()]
  return "\n".join(lines)


def _records_at_strictness_arg(args: argparse.Namespace, records):
  """The latent records rescored at `--strictness` (from their measures), or as built without it."""
  from jaxcxr import prefilter  # pylint: disable=g-import-not-at-top

  if args.strictness is None:
    return records
  try:
    return prefilter.records_at_strictness(records, _load_scorer(args), args.strictness)
  except ValueError as e:
    raise UsageError(f"--strictness: {e}") from e


def cmd_latents_table(args: argparse.Namespace) -> dict[str, Any]:
  from jaxcxr import io, prefilter  # pylint: disable=g-import-not-at-top

  records = prefilter.load_latent_dataset(args.data)
  records = _records_at_strictness_arg(args, records)
  targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
  try:
    models = prefilter.select_models(args.models, seed=args.seed)
    unknown = [t for t in targets if t not in prefilter.TARGETS]
    if unknown or not targets:
      raise ValueError(f"unknown target(s) {unknown}; expected some of {', '.join(prefilter.TARGETS)}")
    strategies = (prefilter.STRATEGIES if args.strategy.strip() == "all"
                  else tuple(s.strip() for s in args.strategy.split(",") if s.strip()))
    unknown = [s for s in strategies if s not in prefilter.STRATEGIES]
    if unknown or not strategies:
      raise ValueError(f"unknown strategy {unknown or args.strategy!r}; expected 'all' or some of "
                       f"{', '.join(prefilter.STRATEGIES)}")
    if args.folds < 2:
      raise ValueError(f"--folds must be >= 2, got {args.folds}")
  except ValueError as e:
    raise UsageError(str(e)) from e
  out = io.prepare_output_dir(args.out, overwrite=args.overwrite)
  report = prefilter.write_latent_report(records, out, models=models, targets=targets, strategy=strategies,
                                         n_folds=args.folds, seed=args.seed, extremes_k=args.extremes_k, log=_log)
  return {"data": str(args.data), "out": str(out), "generator_id": records["generator_id"],
          "strictness": args.strictness or "as built", "valid_rate": float(np.mean(records["valid"])),
          "models": list(models),
          "targets": list(targets), "strategies": list(strategies), "n_folds": args.folds,
          "table": str(out / "table.md"),
          "best": io.to_json_safe(report["best"]),
          "files": report["files"]}


def _human_latents_table(r: dict[str, Any]) -> str:
  lines = [f"{len(r['models'])} model(s), targets {', '.join(r['targets'])}, {r['n_folds']}-fold CV -> {r['table']}"]
  for group, b in r["best"].items():
    auc = "n/a" if b["roc_auc"] is None else f"{b['roc_auc']:.3f}"
    lines.append(f"  {group}: best {b['model']} (ROC AUC {auc}), out-of-fold at {r['strategies'][0]}: precision "
                 f"{b['precision']:.3f} vs base rate {b['base_rate']:.3f}, TPR {b['tpr']:.3f}, FPR {b['fpr']:.3f}")
  return "\n".join(lines)


def _prefilter_summary(pf) -> dict[str, Any]:
  from jaxcxr import io  # pylint: disable=g-import-not-at-top

  return {"input": "z", "group": pf.group, "strategy": pf.strategy, "model": pf.model_preset,
          "accepts_all": pf.accepts_all,
          "threshold": None if pf.accepts_all else pf.threshold, "generator_id": pf.generator_id,
          "report": io.to_json_safe(dict(pf.report))}


def _fit_prefilter_or_usage(records, group: str, strategy: str, model: str, seed: int, on_empty: str):
  from jaxcxr import prefilter  # pylint: disable=g-import-not-at-top

  _log(f"fitting the {model} pre-filter of {group} (threshold: {strategy} on the validation part)")
  try:
    return prefilter.fit_prefilter(records, group, strategy, model, seed=seed, on_empty=on_empty)
  except ValueError as e:
    raise UsageError(str(e)) from e


def cmd_latents_fit(args: argparse.Namespace) -> dict[str, Any]:
  from jaxcxr import data, prefilter  # pylint: disable=g-import-not-at-top

  data.parse_group(args.group)
  records = prefilter.load_latent_dataset(args.data)
  records = _records_at_strictness_arg(args, records)
  on_empty = "accept_all" if args.accept_all_if_empty else "error"
  if args.strategy == "all":   # one classifier, every threshold strategy: a pre-filter set
    fitted = [_fit_prefilter_or_usage(records, args.group, strategy, args.model, args.seed, on_empty)
              for strategy in prefilter.STRATEGIES]
    out = prefilter.save_prefilter_set(args.out, fitted, overwrite=args.overwrite)
    return {"out": str(out), "data": str(args.data),
            "strategies": {pf.strategy: _prefilter_summary(pf) for pf in fitted}}
  pf = _fit_prefilter_or_usage(records, args.group, args.strategy, args.model, args.seed, on_empty)
  out = pf.save(args.out, overwrite=args.overwrite)
  return {"out": str(out), "data": str(args.data), **_prefilter_summary(pf)}


def _human_latents_fit(r: dict[str, Any]) -> str:
  if "strategies" in r:
    return "\n".join(_human_latents_fit({**summary, "out": r["out"]}) for summary in r["strategies"].values())
  rep = r["report"]
  if r["accepts_all"]:
    return f"{r['group']}: accept-all fallback ({rep.get('reason')}) -> {r['out']}"
  test = rep.get("test") or {}
  return (f"{r['group']}: {r['model']} pre-filter, {r['strategy']} threshold {r['threshold']:.4g} (logit) -> "
          f"{r['out']}; test: TPR {test.get('tpr', float('nan')):.3f}, FPR {test.get('fpr', float('nan')):.3f}, "
          f"precision {test.get('precision', float('nan')):.3f} vs {rep.get('precision_unfiltered_test') or 0:.3f} "
          f"unfiltered (predicted speed-up {rep.get('predicted_speedup') or float('nan'):.2f})")


def cmd_latents_cascade(args: argparse.Namespace) -> dict[str, Any]:
  import shutil  # pylint: disable=g-import-not-at-top

  from jaxcxr import checkpoints, config, data, prefilter, provenance  # pylint: disable=g-import-not-at-top
  from jaxcxr.models import generator as generator_lib  # pylint: disable=g-import-not-at-top
  from jaxcxr.prefilter import cascade  # pylint: disable=g-import-not-at-top
  from jaxcxr.train import score_predictor  # pylint: disable=g-import-not-at-top

  if args.steps <= 0 or args.steps % 250:
    raise UsageError(f"--steps must be a positive multiple of 250, got {args.steps}")
  records = prefilter.load_latent_dataset(args.data)
  directory = _shipped_or(args.checkpoint, *checkpoints.SHIPPED_GENERATORS)
  generator = generator_lib.load_generator(directory)
  generator_id = checkpoints.model_id(directory)
  if generator.config.upsampler is None:
    raise UsageError(f"{directory} is not a cascade generator (no upsampler): it has no cheap base image")
  if records["generator_id"] != generator_id:
    raise UsageError(f"{args.data} was built with generator {records['generator_id']}, but {directory} is "
                     f"{generator_id}; rebuild it with `jaxcxr latents build`")
  scorer = _load_scorer(args)
  levels = tuple(level.strip() for level in args.levels.split(",") if level.strip())
  try:
    for level in levels:
      scorer.at_strictness(level)
  except ValueError as e:
    raise UsageError(f"--levels: {e}") from e
  # The predictor's training checkpoints live in a hidden sibling of --out: the same command run
  # again after a kill resumes the fit and ends with the uninterrupted run's pre-filter.
  out = pathlib.Path(args.out)
  work = _work_dir(out, _run_record(args, generator_id=generator_id, data_sha256=data.file_sha256(args.data)),
                   args.overwrite, "train")
  _log(f"making {len(records['z'])} base images with {directory}")
  base = score_predictor.base_images(generator, records["z"], records["group"])
  try:
    with _drop_unused(work):
      fitted = cascade.fit_cascade_prefilter(records, base, scorer, config.score_predictor_64(), levels=levels,
                                             steps=args.steps, seed=args.seed, log=_log, out_dir=work / "fit",
                                             resume=True)
  except ValueError as e:
    raise UsageError(str(e)) from e
  fitted.report["provenance"] = provenance.provenance(args.data, {"seed": args.seed,
                                                                  "split_seed": fitted.report["split_seed"]})
  out = fitted.save(out, overwrite=True)     # `_work_dir` refused an existing --out that is not this run's
  shutil.rmtree(work, ignore_errors=True)
  levels_report = {level: {k: v for k, v in r.items() if k != "strategies"}
                   for level, r in fitted.report["levels"].items()}
  return {"out": str(out), "data": str(args.data), "generator": str(directory), "levels": levels_report,
          "thresholds": fitted.thresholds, "val_r2": fitted.report["history"]["val_r2"],
          "provenance": fitted.report["provenance"]}


def _human_latents_cascade(r: dict[str, Any]) -> str:
  lines = [f"cascade pre-filter -> {r['out']}"]
  for level, rep in r["levels"].items():
    lines.append(f"  {level}: test ROC AUC {rep['roc_auc_test']:.3f} (base rate {rep['base_rate_test']:.3f})")
  return "\n".join(lines)


def _uses_prefilter(args: argparse.Namespace) -> bool:
  """Checks the pre-filter options of `sample`; True when sampling should go through a pre-filter."""
  from jaxcxr.prefilter.thresholds import STRATEGIES  # pylint: disable=g-import-not-at-top

  if args.prefilter is not None and args.prefilter not in STRATEGIES:
    raise UsageError(f"--prefilter: unknown threshold strategy {args.prefilter!r}; expected one of "
                     f"{', '.join(STRATEGIES)}")
  wanted = args.prefilter is not None or args.prefilter_dir is not None or args.latents is not None
  if wanted and args.unfiltered:
    raise UsageError("--unfiltered cannot be combined with --prefilter/--prefilter-dir/--latents")
  if wanted and args.label != 0:
    raise UsageError("pre-filters are fitted on latent datasets of normal images (label 0); drop --label 1")
  if args.prefilter_dir is not None and args.latents is not None:
    raise UsageError("give either --latents F.npz (fit a pre-filter now) or --prefilter-dir DIR (a saved one)")
  if args.latents is not None and args.prefilter is None:
    raise UsageError("--latents needs --prefilter STRATEGY (the threshold strategy to fit with)")
  return wanted


def _sample_post_filtered(args: argparse.Namespace, generator, key, result: dict[str, Any], *,
                          journal=None) -> dict[str, Any]:
  """`sample` without a pre-filter: generate batches, keep the valid images (post-filter only)."""
  from jaxcxr import sampling  # pylint: disable=g-import-not-at-top

  scorer = _load_scorer(args)
  result["compile_seconds"] = sampling.warm_up_sampler(scorer, generator, key, args.group, label=args.label)
  max_generated = args.max_generated if args.max_generated is not None else max(1000, 200 * args.n)
  found = sampling.sample_valid(scorer, generator, key, args.n, args.group, label=args.label,
                                max_generated=max_generated, progress=True, journal=journal)
  result.update({k: found[k] for k in ("n_valid", "n_generated", "seconds", "valid_rate")},
                strictness=scorer.strictness_name)
  result["sample_index"] = [int(i) for i in found["index"]]
  if found["n_valid"] < args.n:
    _log(f"warning: only {found['n_valid']} of {args.n} valid images within --max-generated {max_generated}")
  return found


def _sample_prefiltered(args: argparse.Namespace, generator, generator_dir: pathlib.Path, key,
                        result: dict[str, Any], *, journal=None) -> dict[str, Any]:
  """`sample --prefilter`: fits (--latents) or loads (--prefilter-dir) the group's pre-filter, then samples."""
  from jaxcxr import checkpoints, prefilter  # pylint: disable=g-import-not-at-top

  scorer = _load_scorer(args)
  if args.prefilter_input != "z" and args.prefilter_dir is None and args.latents is None:
    from jaxcxr.prefilter import cascade  # pylint: disable=g-import-not-at-top

    path = cascade.shipped_cascade_prefilter(checkpoints.model_id(generator_dir))
    if path is not None:
      return _sample_cascade(args, scorer, generator, cascade.load_cascade_prefilter(path), path, key, result,
                             journal=journal)
    if args.prefilter_input == "base":
      raise UsageError(f"no shipped cascade pre-filter for {generator_dir}; use --prefilter-input z")
  elif args.prefilter_input == "base":
    raise UsageError("--prefilter-input base uses the shipped cascade pre-filter; --latents and --prefilter-dir "
                     "give latent (z) pre-filters")
  if args.prefilter_dir is not None:
    _log(f"loading pre-filter {args.prefilter_dir}")
    pf = prefilter.load_prefilter(args.prefilter_dir, args.prefilter)
    if pf.group != args.group:
      raise UsageError(f"{args.prefilter_dir}: a pre-filter of group {pf.group}, not {args.group}")
  elif args.latents is not None:
    # learn validity at the level the post-filter will run at
    records = prefilter.records_at_scorer_level(prefilter.load_latent_dataset(args.latents), scorer)
    pf = _fit_prefilter_or_usage(records, args.group, args.prefilter, args.prefilter_model, args.seed, "error")
  else:
    shipped = prefilter.shipped_prefilter(checkpoints.model_id(generator_dir), args.strictness, args.group)
    if shipped is None:
      raise UsageError(f"no shipped pre-filter of {args.group} at strictness {args.strictness} for "
                       f"{generator_dir}; pass --latents F.npz (fit one now) or --prefilter-dir DIR")
    _log(f"loading shipped pre-filter {shipped} ({args.prefilter})")
    pf = prefilter.load_prefilter(shipped, args.prefilter)
  generator_id = checkpoints.model_id(generator_dir)
  if pf.generator_id is not None and pf.generator_id != generator_id:
    raise UsageError(f"the pre-filter was fitted on latents of generator {pf.generator_id}, but {generator_dir} is "
                     f"{generator_id}; rebuild the latent dataset with `jaxcxr latents build`")
  try:
    prefilter.check_prefilter_scorer(pf, scorer)
  except ValueError as e:
    raise UsageError(str(e)) from e
  options = {"pool_size": args.pool_size, "accept_size": args.accept_size}
  return _run_sampler(
      args, scorer, result, _prefilter_summary(pf),
      warm_up=lambda: prefilter.warm_up_sampler(scorer, generator, pf, key, args.group, **options),
      sample=lambda limit, rounds: prefilter.sample_valid(scorer, generator, pf, key, args.n, args.group,
                                                          max_generated=limit, max_rounds=rounds, progress=True,
                                                          journal=journal,
                                                          **options))


def _run_sampler(args: argparse.Namespace, scorer, result: dict[str, Any], summary: dict[str, Any], *, warm_up,
                 sample) -> dict[str, Any]:
  """The pre-filtered `sample` run of either pre-filter: compile, sample to --n within --max-generated, report.

  warm_up() -> compile seconds; sample(max_generated, max_rounds) -> the samplers' result dict.
  """
  try:
    compile_seconds = warm_up()
  except ValueError as e:
    raise UsageError(str(e)) from e
  max_generated = args.max_generated if args.max_generated is not None else max(1000, 200 * args.n)
  # Each round computes accept-size images (padding slots too), so rounds are bounded like generated images.
  max_rounds = -(-max_generated // (args.accept_size or scorer.config.batch_size))
  found = sample(max_generated, max_rounds)
  keys = ("n_valid", "n_generated", "seconds", "valid_rate", "n_latents_drawn", "acceptance_rate", "n_rounds",
          "n_slots", "pool_size", "accept_size")
  result.update({k: found[k] for k in keys}, compile_seconds=compile_seconds, prefilter=summary,
                strictness=scorer.strictness_name)
  result["sample_index"] = [int(i) for i in found["index"]]
  if found["n_valid"] < args.n:
    _log(f"warning: only {found['n_valid']} of {args.n} valid images within --max-generated {max_generated}")
  return found


def _sample_cascade(args: argparse.Namespace, scorer, generator, cas, path, key,
                    result: dict[str, Any], *, journal=None) -> dict[str, Any]:
  """`sample --prefilter STRATEGY` with the generator's shipped cascade (base-image) pre-filter."""
  from jaxcxr.prefilter import cascade  # pylint: disable=g-import-not-at-top

  _log(f"loading shipped cascade pre-filter {path} ({args.prefilter} at {scorer.strictness_name})")
  options = {"strategy": args.prefilter, "pool_size": args.pool_size, "accept_size": args.accept_size}
  level = cas.report.get("levels", {}).get(scorer.strictness_name, {})
  try:
    threshold = cas.threshold(scorer.strictness_name, args.prefilter)
  except ValueError as e:
    raise UsageError(str(e)) from e
  summary = {"input": "base", "checkpoint": str(path), "strategy": args.prefilter, "threshold": threshold,
             "test_roc_auc": level.get("roc_auc_test")}
  return _run_sampler(
      args, scorer, result, summary,
      warm_up=lambda: cascade.warm_up_cascade(scorer, generator, cas, key, args.group, **options),
      sample=lambda limit, rounds: cascade.sample_valid_cascade(scorer, generator, cas, key, args.n, args.group,
                                                                max_generated=limit, max_rounds=rounds,
                                                                progress=True, journal=journal, **options))


def _add_prefilter_args(sample: argparse.ArgumentParser) -> None:
  """`sample`'s pre-filter options: --prefilter STRATEGY with --latents F.npz, or --prefilter-dir DIR."""
  sample.add_argument("--prefilter", metavar="STRATEGY", default=None,
                      help="pre-filter latents before generating; threshold strategy (youden, 2tpr-fpr, tpr-2fpr, "
                           "tpr@0.95, max_precision); with --latents F.npz it is fitted now for --group, otherwise "
                           "the shipped pre-filter of the generator at --strictness is used")
  sample.add_argument("--latents", metavar="F.npz", default=None,
                      help="latent dataset (`jaxcxr latents build`) to fit the --prefilter on (train/validation/"
                           "test split of the group's latents)")
  sample.add_argument("--prefilter-model", default="logreg",
                      help="latent classifier preset when fitting: logreg (default), mlp1..mlp4, deep")
  sample.add_argument("--prefilter-dir", default=None,
                      help="a pre-filter saved by `jaxcxr latents fit` (instead of --latents)")
  sample.add_argument("--prefilter-input", choices=("auto", "z", "base"), default="auto",
                      help="what the shipped pre-filter judges: 'base' = the cascade generator's cheap base image "
                           "(`jaxcxr.prefilter.cascade`), 'z' = the latent alone; 'auto' (default) takes 'base' when "
                           "the generator has a shipped cascade pre-filter, else 'z'. --latents and --prefilter-dir "
                           "are latent (z) pre-filters")
  sample.add_argument("--pool-size", type=int, default=None,
                      help="latents drawn per compiled round (default: accept size x ceil(2 / the pre-filter's acceptance), at most 32x)")
  sample.add_argument("--accept-size", type=int, default=None,
                      help="accepted latents generated and scored per round (default the batch size)")


def _add_latents_parsers(commands) -> None:
  latents_parser = commands.add_parser("latents", help="latent pre-filter: datasets, model table, fitted filters")
  latents_commands = latents_parser.add_subparsers(dest="latents_command", required=True, metavar="SUBCOMMAND")

  build = latents_commands.add_parser("build", help="generate and post-score latents per group (a latent dataset)")
  build.add_argument("--n-per-group", type=int, required=True, help="latents per age-sex group")
  build.add_argument("--out", required=True, help="the npz file to write")
  build.add_argument("--checkpoint", help="generator checkpoint folder (default: the shipped one)")
  build.add_argument("--groups", default="all", help="'all' (default) or comma-separated group names")
  build.add_argument("--seed", type=int, default=0, help="group g uses fold_in(key(seed), g)")
  build.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
  _add_scorer_args(build)
  _add_json_arg(build)
  build.set_defaults(run=cmd_latents_build, human=_human_latents_build)

  table = latents_commands.add_parser("table", help="cross-validated latent classifiers per group, with figures")
  table.add_argument("--data", required=True, help="latent dataset npz (`jaxcxr latents build`)")
  table.add_argument("--out", required=True, help="report folder (table.md, rows.json, PNGs)")
  table.add_argument("--models", default=None,
                     help="comma-separated model names of the zoo, 'families' (one per family, 11), or 'all' "
                          "(default: logreg_C1, logreg_l1, knn_10, tree_d5, forest, flax_logreg, flax_mlp2)")
  table.add_argument("--targets", default="valid", help="comma-separated: valid, score names, valid_by_scores")
  table.add_argument("--strategy", default="youden",
                     help="threshold strategy of the precision column; comma-separated or 'all' for one table "
                          "each, from the same fits (curves use the first)")
  table.add_argument("--folds", type=int, default=3)
  table.add_argument("--extremes-k", type=int, default=100, help="latents per side in the best/worst PCA views")
  table.add_argument("--seed", type=int, default=0)
  table.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
  table.add_argument("--strictness", default=None,
                     help="rescore the records at this post-filter level (standard, strict or a fraction Q) from "
                          "their stored measures; default: as built")
  table.add_argument("--scoring", help="calibration folder of --strictness (default: the shipped one)")
  _add_json_arg(table)
  table.set_defaults(run=cmd_latents_table, human=_human_latents_table)

  fit = latents_commands.add_parser("fit", help="fit and save one group's pre-filter (threshold on validation)")
  fit.add_argument("--data", required=True, help="latent dataset npz (`jaxcxr latents build`)")
  fit.add_argument("--group", required=True, help="one of 18_24m 18_24f 38_44m 38_44f 58_64m 58_64f")
  fit.add_argument("--strategy", default="youden",
                   help="threshold strategy (default youden), or 'all': one classifier with every strategy's "
                        "threshold, saved as one pre-filter set")
  fit.add_argument("--model", default="logreg", help="latent classifier preset: logreg, mlp1..mlp4, deep")
  fit.add_argument("--out", required=True, help="pre-filter checkpoint folder")
  fit.add_argument("--seed", type=int, default=0)
  fit.add_argument("--accept-all-if-empty", action="store_true",
                   help="save an accept-everything pre-filter for a group with < 2 valid latents instead of failing")
  fit.add_argument("--overwrite", action="store_true", help="replace an existing pre-filter folder")
  fit.add_argument("--strictness", default=None,
                   help="learn validity at this post-filter level (standard, strict or Q), rescored from the "
                        "records' measures; default: as built")
  fit.add_argument("--scoring", help="calibration folder of --strictness (default: the shipped one)")
  _add_json_arg(fit)
  fit.set_defaults(run=cmd_latents_fit, human=_human_latents_fit)

  cas = latents_commands.add_parser(
      "cascade", help="fit a cascade pre-filter: post-filter measures predicted from the generator's base images")
  cas.add_argument("--data", required=True, help="latent dataset npz of the cascade generator, with measures")
  cas.add_argument("--out", required=True, help="cascade pre-filter checkpoint folder")
  cas.add_argument("--checkpoint", help="cascade generator folder (default: the shipped one)")
  cas.add_argument("--levels", default="standard,strict", help="strictness levels to choose thresholds for")
  cas.add_argument("--steps", type=int, default=3000, help="AdamW steps of the score predictor (multiple of 250)")
  cas.add_argument("--seed", type=int, default=0)
  cas.add_argument("--scoring", help="calibration folder that measured the records (default: the shipped one)")
  cas.add_argument("--overwrite", action="store_true", help="replace an existing folder")
  cas.set_defaults(strictness="standard")
  _add_json_arg(cas)
  cas.set_defaults(run=cmd_latents_cascade, human=_human_latents_cascade)


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="jaxcxr", description=__doc__.splitlines()[0])
  parser.add_argument("--version", action="version", version=_version())
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  data_parser = commands.add_parser("data", help="dataset tools")
  data_commands = data_parser.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

  stats = data_commands.add_parser("stats", help="counts per group and label; mean/std images per class")
  _add_data_arg(stats)
  stats.add_argument("--out", help="folder for mean/std PNG images per class (not written if omitted)")
  stats.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
  _add_json_arg(stats)
  stats.set_defaults(run=cmd_data_stats, human=_human_stats)

  dedup = data_commands.add_parser("dedup", help="near-duplicate pairs by perceptual hash")
  _add_data_arg(dedup)
  dedup.add_argument("--hash", choices=HASH_NAMES, default="perceptual", help="hash function (default perceptual)")
  dedup.add_argument("--max-distance", type=int, default=5, help="largest Hamming distance of a pair (default 5)")
  _add_json_arg(dedup)
  dedup.set_defaults(run=cmd_data_dedup, human=_human_dedup)

  train_parser = commands.add_parser("train", help="train a model")
  train_commands = train_parser.add_subparsers(dest="train_command", required=True, metavar="MODEL")
  train_gan = train_commands.add_parser("gan", help="the conditional chest X-ray GAN")
  train_gan.add_argument("--data", help="npz archive(s), comma-separated (default: $JAXCXR_DATA/"
                                        f"{',$JAXCXR_DATA/'.join(GAN_DATA)})")
  train_gan.add_argument("--preset", required=True,
                         help="gan_64_resize_cpu, gan_64_resize_normal_cpu (the bases of the 256x256 cascades), "
                              "gan_64_cpu, gan_64_normal_cpu, gan_64_wide_cpu, gan_256_single_cpu, gan_128, gan_256, "
                              "gan_tiny")
  train_gan.add_argument("--init-from", help="a trained GAN folder (generator/, discriminator/; a cascade's "
                                            "upsampler is left out) whose weights start the run")
  _add_run_args(train_gan)
  train_gan.set_defaults(run=cmd_train_gan, human=_human_train)

  train_up = train_commands.add_parser("upsampler", help="the super-resolution stage of a cascade generator")
  train_up.add_argument("--data", help="npz archive(s), comma-separated (default: $JAXCXR_DATA/"
                                       f"{',$JAXCXR_DATA/'.join(GAN_DATA)})")
  train_up.add_argument("--preset", default="upsampler_x4_noiseless_cpu",
                        help="upsampler_x4_noiseless_cpu (default; gan_256's), upsampler_x4_generated_cpu, "
                             "upsampler_x4_cpu, upsampler_tiny")
  train_up.add_argument("--base-gan", help="GAN or cascade folder whose images make part of each batch "
                                          "(presets with generated inputs, e.g. upsampler_x4_generated_cpu)")
  train_up.add_argument("--init-from", help="a trained stage (`train upsampler`'s OUT/upsampler) or a cascade "
                                           "folder whose upsampler starts the run")
  _add_run_args(train_up)
  train_up.set_defaults(run=cmd_train_upsampler, human=_human_train_upsampler)

  cascade = commands.add_parser("cascade", help="join a low-resolution GAN and an upsampler into one generator")
  cascade.add_argument("--gan", required=True, help="GAN folder with generator/ and discriminator/")
  cascade.add_argument("--upsampler", required=True,
                       help="upsampler checkpoint (`train upsampler`'s OUT/upsampler), or 'bilinear'")
  cascade.add_argument("--scale", type=int, default=4, choices=(2, 4), help="scale of 'bilinear' (default 4)")
  cascade.add_argument("--out", required=True, help="folder to write generator/ and discriminator/ into")
  cascade.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
  _add_json_arg(cascade)
  cascade.set_defaults(run=cmd_cascade, human=lambda r: f"cascade {r['base_resolution']} -> {r['resolution']}: "
                                                        f"{r['generator']}")

  evaluate_parser = commands.add_parser("evaluate", help="quality figures of a trained model")
  evaluate_commands = evaluate_parser.add_subparsers(dest="evaluate_command", required=True, metavar="MODEL")
  evaluate_gan = evaluate_commands.add_parser("gan", help="realism figures vs real normals, FD, conditioning probes")
  evaluate_gan.add_argument("--data", help="npz archive(s), comma-separated (default: $JAXCXR_DATA/"
                                           f"{',$JAXCXR_DATA/'.join(GAN_DATA)}); the realism figures use the "
                                           "normal images of the standard split's test and train patients")
  evaluate_gan.add_argument("--checkpoint", help="folder with generator/ and discriminator/ (default: the shipped GAN)")
  evaluate_gan.add_argument("--seed", type=int, default=0)
  evaluate_gan.add_argument("--n-per-group", type=int, default=64, help="generated images per group for the probes")
  evaluate_gan.add_argument("--sex-classifier", help="sex classifier for the conditioning check (default: shipped)")
  evaluate_gan.add_argument("--feature-classifier",
                            help="classifier whose features give a GAN-independent FD (default: shipped abnormal)")
  evaluate_gan.add_argument("--no-classifiers", action="store_true", help="D features and pixel probes only")
  _add_json_arg(evaluate_gan)
  evaluate_gan.set_defaults(run=cmd_evaluate_gan, human=_human_evaluate_gan)

  anomaly_ensemble = evaluate_commands.add_parser(
      "anomaly-ensemble", help="rank-average ensemble of anomaly scores saved by `evaluate anomaly --scores`")
  anomaly_ensemble.add_argument("scores", nargs="+", help="score files (npz) of the same split, one per method")
  _add_json_arg(anomaly_ensemble)
  anomaly_ensemble.set_defaults(run=cmd_evaluate_anomaly_ensemble, human=_human_evaluate_anomaly_ensemble)

  anomaly_cv = evaluate_commands.add_parser(
      "anomaly-cv", help="repeated patient-level cross-validation of f-AnoGAN or HealthyGAN (retrained per fold)")
  anomaly_cv.add_argument("--method", choices=("fanogan", "healthygan"), required=True)
  _add_data_arg(anomaly_cv)
  anomaly_cv.add_argument("--out", required=True, help="folder for each fold's model and scores (a rerun resumes)")
  anomaly_cv.add_argument("--folds", type=int, default=5)
  anomaly_cv.add_argument("--repeats", type=int, default=2)
  anomaly_cv.add_argument("--steps", type=int, help="training steps per fold (default: the CPU preset's)")
  anomaly_cv.add_argument("--gan", help="normal-only GAN folder for f-AnoGAN (default: the shipped one)")
  anomaly_cv.add_argument("--lung-mask", action="store_true", help="also score the residual inside the lungs")
  anomaly_cv.add_argument("--batch-size", type=int, default=64)
  anomaly_cv.add_argument("--seed", type=int, default=0)
  _add_json_arg(anomaly_cv)
  anomaly_cv.set_defaults(run=cmd_evaluate_anomaly_cv, human=_human_evaluate_anomaly_cv)

  evaluate_segmentation = evaluate_commands.add_parser("segmentation", help="lung Dice / IoU of the U-Net")
  _add_data_arg(evaluate_segmentation)
  evaluate_segmentation.add_argument("--checkpoint", help="U-Net checkpoint folder (default: the shipped one)")
  evaluate_segmentation.add_argument("--out", help="folder for worst_overlays.png (the 8 images of lowest Dice)")
  _add_split_arg(evaluate_segmentation)
  _add_json_arg(evaluate_segmentation)
  evaluate_segmentation.set_defaults(run=cmd_evaluate_segmentation, human=_human_evaluate_segmentation)

  evaluate_anomaly = evaluate_commands.add_parser("anomaly", help="normal vs abnormal by an anomaly score")
  evaluate_anomaly.add_argument("--method", choices=("anogan", "fanogan", "healthygan"), required=True)
  _add_data_arg(evaluate_anomaly)
  evaluate_anomaly.add_argument("--steps", type=int, help="AnoGAN search steps (default 500)")
  evaluate_anomaly.add_argument("--checkpoint", help="normal GAN folder (anogan), encoder (fanogan) or translator "
                                "(healthygan) checkpoint; default: the shipped one")
  evaluate_anomaly.add_argument("--batch-size", type=int, default=64)
  evaluate_anomaly.add_argument("--seed", type=int, default=0, help="AnoGAN random starts")
  evaluate_anomaly.add_argument("--restarts", type=int, default=1, help="AnoGAN random starts per image (best kept)")
  evaluate_anomaly.add_argument("--lung-mask", action="store_true",
                                help="score the residual inside the lungs only (the shipped U-Net's mask): image "
                                     "frames and borders then count for nothing")
  evaluate_anomaly.add_argument("--base-image", action="store_true",
                                help="AnoGAN: search a cascade's base image (64x64 for gan_256_normal) instead of "
                                     "its output")
  evaluate_anomaly.add_argument("--abnormal", choices=("pneumonia", "covid"), default="pneumonia",
                                help="abnormal images: NIH pneumonias (default), or the COVID-19 archive against NIH "
                                     "normals (a second task; source alone separates those archives)")
  evaluate_anomaly.add_argument("--covid-data", help="COVID-19 archive for --abnormal covid "
                                                     "(default covid_v7lungs_256.npz in the data folder)")
  evaluate_anomaly.add_argument("--scores", help="npz file for the per-image scores and residual maps (and the "
                                                 "threshold data's scores), e.g. for `evaluate anomaly-ensemble`")
  evaluate_anomaly.add_argument("--out", help="folder for the residual-map overlays PNG")
  _add_split_arg(evaluate_anomaly)
  evaluate_anomaly.set_defaults(split="test")
  _add_json_arg(evaluate_anomaly)
  evaluate_anomaly.set_defaults(run=cmd_evaluate_anomaly, human=_human_evaluate_anomaly)

  evaluate_classifier = evaluate_commands.add_parser("classifier", help="ROC AUC / accuracy of a classifier")
  evaluate_classifier.add_argument("--task", choices=("abnormal", "sex"), required=True)
  _add_data_arg(evaluate_classifier)
  evaluate_classifier.add_argument("--checkpoint", help="classifier checkpoint folder (default: the shipped one)")
  evaluate_classifier.add_argument("--baseline", action="store_true",
                                   help="also fit the pixel logistic-regression baseline on the classifier's training "
                                        "patients and compare the two AUCs (DeLong's paired test)")
  evaluate_classifier.add_argument("--out", help="folder for gradcam_overlays.png (8 positive images)")
  _add_split_arg(evaluate_classifier)
  _add_json_arg(evaluate_classifier)
  evaluate_classifier.set_defaults(run=cmd_evaluate_classifier, human=_human_evaluate_classifier)

  sample = commands.add_parser("sample", help="generate valid radiographs of one age-sex group (post-filtered)")
  sample.add_argument("--group", required=True, help="one of 18_24m 18_24f 38_44m 38_44f 58_64m 58_64f")
  sample.add_argument("--n", type=int, required=True, help="number of valid images to keep")
  sample.add_argument("--out", required=True, help="output folder for the PNGs")
  sample.add_argument("--label", type=int, choices=(0, 1), default=0, help="0 normal (default), 1 abnormal")
  sample.add_argument("--seed", type=int, default=0)
  sample.add_argument("--checkpoint", help="generator checkpoint folder (default: the shipped one)")
  sample.add_argument("--unfiltered", action="store_true", help="keep every generated image (no post-filter)")
  sample.add_argument("--max-generated", type=int, default=None,
                      help="give up after this many generated images (default max(1000, 200 n))")
  _add_scorer_args(sample)
  _add_prefilter_args(sample)
  sample.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
  _add_json_arg(sample)
  sample.set_defaults(run=cmd_sample, human=_human_sample)

  demo = commands.add_parser("demo", help="the whole pipeline on the shipped models, as one self-contained HTML "
                                          "report (about a minute on a CPU)")
  demo.add_argument("--group", default="38_44f", help="age-sex group (default 38_44f): one of 18_24m 18_24f 38_44m "
                                                      "38_44f 58_64m 58_64f")
  demo.add_argument("--n", type=int, default=8,
                    help="valid images to keep, with and without the pre-filter (default 8)")
  demo.add_argument("--out", default="jaxcxr_demo", help="folder for report.html (default jaxcxr_demo)")
  demo.add_argument("--seed", type=int, default=0)
  demo.add_argument("--strictness", choices=("standard", "strict"), default="standard",
                    help="post-filter level (default standard); at strict few images pass and the pre-filter pays off")
  demo.add_argument("--overwrite", action="store_true", help="replace an existing report.html in --out")
  _add_json_arg(demo)
  demo.set_defaults(run=cmd_demo, human=_human_demo)

  score = commands.add_parser("score", help="post-filter scores and validity of every image of a data file")
  _add_data_arg(score)
  _add_scorer_args(score)
  _add_json_arg(score)
  score.set_defaults(run=cmd_score, human=_human_score)

  report_parser = commands.add_parser("report", help="figures and tables of a component")
  report_commands = report_parser.add_subparsers(dest="report_command", required=True, metavar="COMPONENT")
  report_scoring = report_commands.add_parser("scoring", help="post-filter: valid rates, score histograms, examples")
  _add_data_arg(report_scoring)
  report_scoring.add_argument("--out", required=True, help="report folder (report.md, report.json, PNGs)")
  report_scoring.add_argument("--checkpoint", help="generator checkpoint folder (default: the shipped one)")
  report_scoring.add_argument("--n-per-group", type=int, default=64, help="generated samples per group")
  report_scoring.add_argument("--seed", type=int, default=0)
  _add_split_arg(report_scoring)
  report_scoring.set_defaults(split="test")
  report_scoring.add_argument("--covid", help="COVID-19 archive whose first image of --split joins the "
                              "non-radiograph check (default: $JAXCXR_DATA/covid_v7lungs_256.npz when present)")
  _add_scorer_args(report_scoring)
  _add_json_arg(report_scoring)
  report_scoring.set_defaults(run=cmd_report_scoring, human=_human_report)

  calibrate = commands.add_parser("calibrate", help="calibrate the post-filter scores on real normal images")
  _add_data_arg(calibrate)
  calibrate.add_argument("--out", required=True,
                         help="folder for calibration.json, atlas.npz and reference_measures.npz")
  calibrate.add_argument("--unet", help="U-Net checkpoint folder (default: the shipped one)")
  calibrate.add_argument("--classifier", help="abnormal classifier checkpoint folder (default: the shipped one)")
  calibrate.add_argument("--batch-size", type=int, default=32)
  calibrate.add_argument("--generator", help="generator whose valid rate sets the strict level (default: shipped)")
  calibrate.add_argument("--strict-valid-rate", type=float, default=0.05,
                         help="the strict level is where the generator keeps this fraction (default 0.05; 0: no "
                              "strict level)")
  calibrate.add_argument("--strict-n-per-group", type=int, default=128,
                         help="samples per age-sex group that set the strict level (default 128)")
  calibrate.add_argument("--seed", type=int, default=0, help="seed of the strict level's samples")
  _add_json_arg(calibrate)
  calibrate.set_defaults(run=cmd_calibrate, human=_human_calibrate)

  _add_latents_parsers(commands)
  return parser


def _add_run_args(parser: argparse.ArgumentParser) -> None:
  """The options `train gan` and `train upsampler` share: steps, run folder, resume, split, seed, progress, json."""
  parser.add_argument("--steps", type=int, help="override the preset's number of steps")
  parser.add_argument("--out", required=True, help="run folder (checkpoints, sample grids, final weights)")
  parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
  parser.add_argument("--split", choices=("train", "all"), default="train",
                      help="images to train on: the standard split's train patients (default) or all")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
  _add_json_arg(parser)


def _add_data_arg(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--data", help="npz archive or folder of PNG/DICOM (default: $JAXCXR_DATA/<standard file>)")


def _add_split_arg(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--split", choices=("all", "train", "val", "test"), default="all",
                      help="images to evaluate: all (default) or a part of the standard patient split")


def _add_scorer_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--scoring", help="calibration folder (default: the shipped checkpoints/scoring_256)")
  parser.add_argument("--strictness", default="standard",
                      help="post-filter level: standard (about 5%% of real normals fail each score), strict (the "
                           "shipped generator keeps about 5%%, as in the original study), or a fraction Q in "
                           "[0.01, 0.9] of real normals failing each score (default standard)")
  parser.add_argument("--batch-size", type=int, default=None, help="images per compiled call (default 32)")
  parser.add_argument("--bf16", action="store_true", help="compute in bfloat16 (parameters and scores stay fp32)")


def _add_json_arg(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _version() -> str:
  from jaxcxr import __version__  # pylint: disable=g-import-not-at-top

  return f"jaxcxr {__version__}"


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  try:
    args = parser.parse_args(argv)
  except SystemExit as e:       # --help, --version, or a usage error already reported in one line
    return e.code if isinstance(e.code, int) else EXIT_USAGE
  from jaxcxr.checkpoints import CheckpointError  # pylint: disable=g-import-not-at-top
  from jaxcxr.data import DataError  # pylint: disable=g-import-not-at-top

  from jaxcxr.compilation_cache import enable_compilation_cache  # pylint: disable=g-import-not-at-top

  enable_compilation_cache()     # $JAXCXR_COMPILATION_CACHE: a folder, or "off"
  start = time.perf_counter()
  try:
    result = args.run(args)
  except (UsageError, DataError, CheckpointError, FileExistsError, FileNotFoundError) as e:
    print(f"jaxcxr: error: {e}", file=sys.stderr)
    return EXIT_USAGE
  _log(f"done in {time.perf_counter() - start:.1f} s")
  _emit(result, args.json, args.human)
  return 0


if __name__ == "__main__":
  sys.exit(main())
