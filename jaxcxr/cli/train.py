"""`jaxcxr train MODEL` for every model the project ships, and `jaxcxr cascade`.

One handler per model: each parses its options, takes the data the model's card names (the
default `--data` of docs/cli.md), calls its trainer once and formats the summary. Presets come
from `jaxcxr.config.FAMILIES`. `train prefilter` and `train cascade-prefilter` are the
commands `latents fit` and `latents cascade` under a second name (their handlers live in
`jaxcxr.cli.latents`). `--resume` continues a run folder's last training checkpoint where the
trainer keeps them; the others refuse it and say why.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from typing import Any

from flax import nnx

from jaxcxr import checkpoints, data, evaluation_sets, io
from jaxcxr import config as config_lib
from jaxcxr.anomaly import SHIPPED_FEATURE_STAGE, patchcore
from jaxcxr.cli import inputs
from jaxcxr.cli.common import COVID_DATA, GAN_DATA, NIH_DATA, UsageError, log
from jaxcxr.models import discriminator as discriminator_lib
from jaxcxr.models import generator as generator_lib
from jaxcxr.models.unet import load_unet, predict_masks
from jaxcxr.models.upsampler import Upsampler, load_upsampler
from jaxcxr.train import classifier as classifier_trainer
from jaxcxr.train import cxr_encoder as encoder_trainer
from jaxcxr.train import encoder_classifier
from jaxcxr.train import fanogan as fanogan_trainer
from jaxcxr.train import gan as gan_trainer
from jaxcxr.train import healthygan as healthygan_trainer
from jaxcxr.train import segmentation as unet_trainer
from jaxcxr.train import upsampler as upsampler_trainer

__all__ = ["HANDLERS"]


def _progress(args: argparse.Namespace) -> bool:
  return sys.stderr.isatty() or args.progress


def _result(args: argparse.Namespace, summary: dict[str, Any], **extra: Any) -> dict[str, Any]:
  """The command's JSON result: the preset, `extra`, then the trainer's summary (numpy values as builtins)."""
  return io.to_json_safe({"preset": args.preset, **extra, **summary})


# ----------------------------------------------------------------------------- generators


def run_gan(args: argparse.Namespace) -> dict[str, Any]:
  """`train gan`: a preset of the conditional GAN on the development images."""
  config = inputs.train_preset("gan", args.preset, args.steps)
  ds = inputs.development_images(args.data, args.split)
  summary = gan_trainer.train_gan(ds, config, args.out, resume=args.resume, seed=args.seed,
                                  progress=_progress(args), init_from=args.init_from)
  return {"preset": args.preset, "split": args.split, **summary}


def run_upsampler(args: argparse.Namespace) -> dict[str, Any]:
  """`train upsampler`: the super-resolution stage of a cascade generator (optionally on its base GAN's images)."""
  config = inputs.train_preset("upsampler", args.preset, args.steps)
  if config.generated_fraction and not args.base_gan:
    raise UsageError(f"--preset {args.preset} trains on the base GAN's own images: give --base-gan")
  base = init = None
  if args.base_gan:
    base = generator_lib.load_generator(checkpoints.model_folder(args.base_gan, "generator"))
  if args.init_from:
    path = pathlib.Path(args.init_from)
    init = (generator_lib.load_generator(path / "generator").upsampler if (path / "generator").is_dir()
            else load_upsampler(path))
    if init is None:
      raise UsageError(f"--init-from {path}: its generator has no upsampler (not a cascade)")
  train = inputs.development_images(args.data, args.split)
  validation = inputs.development_images(args.data, "train", "val") if args.split == "train" else None
  summary = upsampler_trainer.train_upsampler(train, config, args.out, validation=validation, resume=args.resume,
                                              seed=args.seed, progress=_progress(args), base=base, init_from=init)
  return {"preset": args.preset, "split": args.split, **summary}


def human_gan(r: dict[str, Any]) -> str:
  """`train gan`'s result in a line."""
  return (f"trained {r['preset']} to step {r['steps']} in {r['seconds']:.0f} s "
          f"({r['images_per_second']:.1f} img/s); generator: {r['generator']}")


def human_upsampler(r: dict[str, Any]) -> str:
  """`train upsampler`'s result in a line or two."""
  line = f"trained {r['preset']} to step {r['steps']} in {r['seconds']:.0f} s; upsampler: {r['upsampler']}"
  if "validation_l1" in r:
    line += f"\nvalidation L1 {r['validation_l1']:.4f} (bilinear {r['validation_l1_bilinear']:.4f})"
  return line


def run_cascade(args: argparse.Namespace) -> dict[str, Any]:
  """`cascade`: join a low-resolution GAN and an upsampler into one generator (and keep the GAN's discriminator)."""
  gan = pathlib.Path(args.gan)
  base = generator_lib.load_generator(gan / "generator")
  if base.config.upsampler is not None:
    raise UsageError(f"{gan}/generator is already a cascade ({base.config.resolution}x{base.config.resolution})")
  if args.upsampler == "bilinear":
    stage = Upsampler(config_lib.UpsamplerConfig(scale=args.scale), rngs=nnx.Rngs(0))   # zero detail: bilinear
    up_meta = {"upsampler": f"bilinear x{args.scale} (untrained stage)"}
  else:
    stage = load_upsampler(args.upsampler)
    up_meta = {"upsampler": str(args.upsampler), "upsampler_metadata": checkpoints.read_metadata(args.upsampler)}
  cascade = generator_lib.make_cascade(base, stage)
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


def human_cascade(r: dict[str, Any]) -> str:
  """`cascade`'s result in a line."""
  return f"cascade {r['base_resolution']} -> {r['resolution']}: {r['generator']}"


# ----------------------------------------------------------------------------- post-filter models


def run_unet(args: argparse.Namespace) -> dict[str, Any]:
  """`train unet`: the lung U-Net on an archive with lung masks (its own patient split, `SegTrainConfig`)."""
  config = inputs.train_preset("unet", args.preset, args.steps)
  path = inputs.data_paths(args.data, COVID_DATA)
  log(f"loading {path}")
  summary = unet_trainer.train_unet(data.load(path), config, args.out, resume=args.resume, seed=args.seed,
                                    progress=_progress(args))
  return _result(args, summary)


def human_unet(r: dict[str, Any]) -> str:
  """`train unet`'s result in a line."""
  val = f"validation Dice {r['val']['dice_mean']:.4f} (step {r['selected_step']})" if r.get("val") else "no validation"
  return f"trained {r['preset']} to step {r['steps']} in {r['seconds']:.0f} s; {val}; U-Net: {r['unet']}"


def run_classifier(args: argparse.Namespace) -> dict[str, Any]:
  """`train classifier`: the abnormal or sex classifier, model selection on its own validation patients."""
  config = dataclasses.replace(inputs.train_preset("classifier", args.preset, args.steps), task=args.task)
  if args.pretrained:
    config = dataclasses.replace(config, pretrained=str(checkpoints.model_folder(args.pretrained, "classifier")))
  if isinstance(config.model, config_lib.EncoderClassifierConfig) and not config.pretrained:
    raise UsageError(f"--preset {args.preset} fine-tunes a probe on the CXR encoder: pass --pretrained DIR, a "
                     "classifier of `jaxcxr train encoder-classifier`")
  paths = inputs.data_paths(args.data, *GAN_DATA)
  log(f"loading {paths}")
  ds = evaluation_sets.classifier_images(data.load(paths), args.task)
  summary = classifier_trainer.train_classifier(ds, config, args.out, resume=args.resume, seed=args.seed,
                                                progress=_progress(args), report_test=args.report_test)
  return _result(args, summary, task=args.task)


def human_classifier(r: dict[str, Any]) -> str:
  """`train classifier`'s result in a line."""
  return (f"trained the {r['task']} classifier ({r['preset']}) to step {r['steps']} in {r['seconds']:.0f} s; best "
          f"validation ROC AUC {r['best_val_auc']:.4f} at step {r['best_step']}; classifier: {r['classifier']}")


def run_ensemble(args: argparse.Namespace) -> dict[str, Any]:
  """`train ensemble`: join trained classifiers of one task and split into a soft-vote ensemble (no preset)."""
  if args.resume:
    raise UsageError("train ensemble keeps no training checkpoints (it fits only the pixel voter, in seconds): "
                     "run it again without --resume (--overwrite replaces OUT/classifier)")
  if len(args.members) < 2:
    raise UsageError(f"--members: an ensemble needs at least two classifiers, got {len(args.members)}")
  if args.pixel_size < 0:
    raise UsageError(f"--pixel-size must be 0 (no pixel voter) or positive, got {args.pixel_size}")
  members = [checkpoints.model_folder(m, "classifier") for m in args.members]
  for member in members:
    task = checkpoints.read_metadata(member).get("task")
    if task != args.task:
      raise UsageError(f"--members: {member} is a {task} classifier, not {args.task}")
  out = pathlib.Path(args.out)
  if (out / "classifier").exists() and not args.overwrite:
    raise FileExistsError(f"{out / 'classifier'}: exists; pass --overwrite to replace it")
  paths = inputs.data_paths(args.data, *GAN_DATA)
  log(f"loading {paths}")
  ds = evaluation_sets.classifier_images(data.load(paths), args.task)
  try:
    summary = classifier_trainer.assemble_ensemble(members, ds, out, pixel_size=args.pixel_size)
  except ValueError as e:   # members of other tasks, architectures, splits or data; a pixel size they do not take
    raise UsageError(str(e)) from e
  return io.to_json_safe({"task": args.task, "members": [str(m) for m in members], **summary})


def human_ensemble(r: dict[str, Any]) -> str:
  """`train ensemble`'s result in a line."""
  return (f"{len(r['members'])}-member {r['task']} ensemble: validation ROC AUC {r['val']['roc_auc']:.4f}; "
          f"classifier: {r['classifier']}")


def run_encoder_classifier(args: argparse.Namespace) -> dict[str, Any]:
  """`train encoder-classifier`: a linear probe on the CXR encoder, saved as a classifier."""
  out = pathlib.Path(args.out)
  if (out / "classifier").exists() and not args.overwrite:
    raise FileExistsError(f"{out / 'classifier'}: exists; pass --overwrite to replace it")
  encoder = inputs.checkpoint(args.encoder, checkpoints.SHIPPED_ENCODERS, "encoder")
  paths = inputs.data_paths(args.data, *GAN_DATA)
  log(f"loading {paths} and the encoder {encoder}")
  ds = evaluation_sets.classifier_images(data.load(paths), args.task)
  summary = encoder_classifier.fit_encoder_classifier(encoder, ds, args.task, out, log=log)
  return io.to_json_safe({"task": args.task, "encoder": str(encoder), **summary})


def human_encoder_classifier(r: dict[str, Any]) -> str:
  """`train encoder-classifier`'s result in a line."""
  return (f"{r['task']} probe on {r['encoder']} ({r['n_train']} training images, C = {r['C']:g}): validation ROC "
          f"AUC {r['val']['roc_auc']:.4f} on {r['n_val']} images; classifier: {r['classifier']}")


# ----------------------------------------------------------------------------- anomaly models


def run_fanogan(args: argparse.Namespace) -> dict[str, Any]:
  """`train fanogan`: the f-AnoGAN encoder against a frozen normal-only GAN, on its GAN's training normals."""
  config = inputs.train_preset("fanogan", args.preset, args.steps)
  if args.feature_weight is not None:
    try:
      config = dataclasses.replace(config, feature_weight=args.feature_weight)
    except ValueError as e:
      raise UsageError(f"--feature-weight {args.feature_weight}: {e}") from e
  gan = pathlib.Path(args.gan) if args.gan else next(iter(checkpoints.shipped_normal_gans()), None)
  if gan is None:
    raise UsageError(f"no shipped normal-only GAN under {checkpoints.checkpoints_root()}; pass --gan DIR "
                     "(a folder with generator/ and discriminator/)")
  if not (gan / "generator").is_dir() or not (gan / "discriminator").is_dir():
    raise UsageError(f"--gan {gan}: expected a normal-only GAN folder with generator/ and discriminator/ "
                     "(`jaxcxr train gan`'s OUT, or checkpoints/gan_256_normal)")
  g_meta, d_meta = (checkpoints.read_metadata(gan / kind) for kind in ("generator", "discriminator"))
  try:
    fanogan_trainer.check_gan(config, config_lib.from_dict(config_lib.GeneratorConfig, g_meta["config"]),
                              config_lib.from_dict(config_lib.DiscriminatorConfig, d_meta["config"]), f"--gan {gan}")
  except ValueError as e:
    raise UsageError(f"{e} (--preset {args.preset})") from e
  if args.feature_stage is not None and args.feature_encoder is None:
    raise UsageError("--feature-stage sets the stage of --feature-encoder's feature term; no --feature-encoder given")
  feature_stage = args.feature_stage or SHIPPED_FEATURE_STAGE
  if args.feature_encoder is not None and not pathlib.Path(args.feature_encoder).is_dir():
    raise UsageError(f"--feature-encoder {args.feature_encoder}: no such folder; expected a CXR encoder checkpoint "
                     "(checkpoints/encoder_cxr/encoder)")
  ds = inputs.development_images(args.data, args.split)
  summary = fanogan_trainer.train_fanogan(ds, gan, config, args.out, resume=args.resume, seed=args.seed,
                                          progress=_progress(args), feature_encoder=args.feature_encoder,
                                          feature_stage=feature_stage)
  return _result(args, summary, split=args.split, gan=str(gan), feature_weight=config.feature_weight,
                 feature_encoder=args.feature_encoder,
                 feature_stage=feature_stage if args.feature_encoder else None)


def human_fanogan(r: dict[str, Any]) -> str:
  """`train fanogan`'s result in a line."""
  return (f"trained {r['preset']} against {r['gan']} to step {r['steps']} in {r['seconds']:.0f} s on "
          f"{r['n_images']} normal images; encoder: {r['encoder']}")


def run_healthygan(args: argparse.Namespace) -> dict[str, Any]:
  """`train healthygan`: HealthyGAN on the pneumonia task's training patients (those `evaluate anomaly` holds out)."""
  config = inputs.train_preset("healthygan", args.preset, args.steps)
  paths = inputs.data_paths(args.data, *GAN_DATA)
  log(f"loading {paths}")
  ds = evaluation_sets.anomaly_task(data.load(paths)).part(args.split)
  which = "all patients" if args.split == "all" else "the standard split's train patients"
  log(f"{which} of the pneumonia task: {len(ds)} images ({int((ds.label == 0).sum())} normal)")
  summary = healthygan_trainer.train_healthygan(ds, config, args.out, resume=args.resume, seed=args.seed,
                                                progress=_progress(args))
  return _result(args, summary, split=args.split)


def human_healthygan(r: dict[str, Any]) -> str:
  """`train healthygan`'s result in a line."""
  return (f"trained {r['preset']} to step {r['steps']} in {r['seconds']:.0f} s on {r['n_mixed']} images "
          f"({r['n_normal']} normal); translator: {r['translator']}")


def run_patchcore(args: argparse.Namespace) -> dict[str, Any]:
  """`train patchcore`: a PatchCore memory bank of the CXR encoder's patch features of the pneumonia task's normals."""
  if args.resume:
    raise UsageError("train patchcore keeps no training checkpoints (it builds the memory bank in one pass): run it "
                     "again without --resume (--overwrite replaces OUT)")
  if not 0.0 < args.coreset_fraction <= 1.0:
    raise UsageError(f"--coreset-fraction must be in (0, 1], got {args.coreset_fraction}")
  stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
  out = pathlib.Path(args.out)
  if (out / "patchcore.json").exists() and not args.overwrite:
    raise FileExistsError(f"{out / 'patchcore.json'}: exists; pass --overwrite to replace it")
  encoder_dir = inputs.checkpoint(args.encoder, checkpoints.SHIPPED_ENCODERS, "encoder")
  paths = inputs.data_paths(args.data, *GAN_DATA)
  log(f"loading {paths}")
  normals = evaluation_sets.anomaly_task(data.load(paths)).part(args.split).select(label=0)
  which = "all patients" if args.split == "all" else "the standard split's train patients"
  log(f"memory bank of {len(normals)} normal images ({which} of the pneumonia task), encoder {encoder_dir}")
  masks, unet_dir = None, None
  if args.lung_mask:
    unet_dir = inputs.checkpoint(args.unet, checkpoints.SHIPPED_UNETS, "unet")
    log(f"lung patches only: masks from {unet_dir}")
    masks = predict_masks(load_unet(unet_dir), normals.images)
  metadata = {"data": [pathlib.Path(p).name for p in paths.split(",")], "split": args.split, "task": "pneumonia",
              "n_normal_images": len(normals),
              "unet_model_id": None if unet_dir is None else checkpoints.model_id(unet_dir)}
  try:
    model = patchcore.fit_encoder_patchcore(out, encoder_dir, normals.images, stages=stages,
                                            normalise_exposure=args.exposure, masks=masks,
                                            coreset_fraction=args.coreset_fraction, seed=args.seed, metadata=metadata)
  except ValueError as e:
    raise UsageError(str(e)) from e
  return io.to_json_safe({"patchcore": str(out), "encoder": str(encoder_dir), "stages": list(stages),
                          "exposure": args.exposure, "lung_mask": args.lung_mask, "grid": list(model.grid),
                          "memory_bank": list(model.memory_bank.shape), **model.settings})


def human_patchcore(r: dict[str, Any]) -> str:
  """`train patchcore`'s result in a line."""
  where = "lung patches" if r["lung_mask"] else "all patches"
  return (f"PatchCore memory bank {r['memory_bank'][0]} x {r['memory_bank'][1]} ({r['coreset_fraction']:g} of the "
          f"{where} of {r['n_images']} normal images, {'+'.join(r['stages'])} on a {r['grid'][0]}x{r['grid'][1]} "
          f"grid{', exposure-normalised' if r['exposure'] else ''}): {r['patchcore']}")


# ----------------------------------------------------------------------------- self-supervised encoder


def run_encoder(args: argparse.Namespace) -> dict[str, Any]:
  """`train encoder`: the self-supervised CXR encoder on every development archive of a folder (test patients out)."""
  config = inputs.train_preset("cxr_encoder", args.preset, args.steps, args.method)
  folder = pathlib.Path(args.data) if args.data else data.default_data_path(NIH_DATA).parent
  dev = encoder_trainer.development_data(**encoder_trainer.archives_in(folder))
  log(f"pretraining on {dev.description['pretrain_images']} images of {', '.join(dev.description['archives'])} "
      "(every test patient held out)")
  summary = encoder_trainer.train_cxr_encoder(dev.pretrain, config, args.out, probes=dev.probes,
                                              description=dev.description, resume=args.resume, seed=args.seed,
                                              progress=_progress(args))
  return _result(args, summary, method=args.method)


def human_encoder(r: dict[str, Any]) -> str:
  """`train encoder`'s result in a line or two."""
  line = (f"trained {r['preset']} ({r['method']}) to step {r['steps']} in {r['seconds']:.0f} s; "
          f"encoder: {r['encoder']}")
  probes = r.get("probes") or {}
  aucs = [f"{name} {p['roc_auc']:.3f}" for name, p in probes.items() if isinstance(p, dict) and "roc_auc" in p]
  return line + (f"\nlinear probes at step {probes['step']}: validation ROC AUC {', '.join(aucs)}" if aucs else "")


# Subcommand name: (handler, human formatter). `train prefilter` and `train cascade-prefilter` run
# `jaxcxr.cli.latents.HANDLERS["fit"]` and `["cascade"]`.
HANDLERS = {"gan": (run_gan, human_gan), "upsampler": (run_upsampler, human_upsampler),
            "unet": (run_unet, human_unet), "classifier": (run_classifier, human_classifier),
            "ensemble": (run_ensemble, human_ensemble),
            "encoder-classifier": (run_encoder_classifier, human_encoder_classifier),
            "fanogan": (run_fanogan, human_fanogan),
            "healthygan": (run_healthygan, human_healthygan), "patchcore": (run_patchcore, human_patchcore),
            "encoder": (run_encoder, human_encoder),
            "cascade": (run_cascade, human_cascade)}
