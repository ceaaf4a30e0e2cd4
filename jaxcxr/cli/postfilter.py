"""`jaxcxr score`, `jaxcxr calibrate` and `jaxcxr report scoring`: the post-filter's scores, thresholds and report."""

from __future__ import annotations

import argparse
import os
import pathlib
from typing import Any

import numpy as np

from jaxcxr import checkpoints, data, evaluation_sets, reports, scoring
from jaxcxr.cli import inputs
from jaxcxr.cli.common import COVID_DATA, GAN_DATA, NIH_DATA, UsageError, log
from jaxcxr.models import generator as generator_lib
from jaxcxr.models.classifier import load_classifier
from jaxcxr.models.unet import load_unet
from jaxcxr.train.loop import data_metadata

__all__ = ["HANDLERS"]


def run_score(args: argparse.Namespace) -> dict[str, Any]:
  """`score`: the five post-filter scores, the features and the verdict of every image of --data."""
  path = inputs.data_paths(args.data, NIH_DATA)
  log(f"loading {path}")
  ds = data.load(path)
  scorer = inputs.load_scorer(args)
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


def human_score(r: dict[str, Any]) -> str:
  """`score`'s result: valid counts, and each score's median and pass rate."""
  lines = [f"{r['n_valid']} of {r['n']} images valid ({r['valid_rate']:.3f})"]
  for name, rate in r.get("valid_rate_by_label", {}).items():
    lines.append(f"  valid rate of {name} images: {rate:.3f}")
  for name in scoring.SCORE_NAMES:
    v = np.asarray(r[name])
    if v.size:
      lines.append(f"  {name:17s} median {np.median(v):+.3f}, > 0 for {np.mean(v > 0):.3f}")
  return "\n".join(lines)


def run_calibrate(args: argparse.Namespace) -> dict[str, Any]:
  """`calibrate`: thresholds from the standard split's real normal training images, and the strict level."""
  if not 0.0 <= args.strict_valid_rate < 1.0 or args.strict_n_per_group <= 0:
    raise UsageError(f"--strict-valid-rate must be in [0, 1) and --strict-n-per-group positive, got "
                     f"{args.strict_valid_rate} and {args.strict_n_per_group}")
  if args.batch_size <= 0:
    raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
  generator, generator_dir = None, None
  if args.strict_valid_rate > 0:   # a missing or broken generator is found before the calibration's work
    generator_dir = inputs.generator_checkpoint(args.generator)
    generator = generator_lib.load_generator(generator_dir)
  root = checkpoints.checkpoints_root()
  unet_dir = inputs.checkpoint(args.unet, checkpoints.SHIPPED_UNETS, "unet")
  classifier_dir = inputs.checkpoint(args.classifier, checkpoints.SHIPPED_CLASSIFIERS["abnormal"], "classifier")
  paths = inputs.data_paths(args.data, *GAN_DATA)
  log(f"loading {paths}, {unet_dir}, {classifier_dir}")
  ds = data.load(paths)
  normals = evaluation_sets.calibration_normals(ds)
  log(f"calibrating on {len(normals)} normal images of the standard split's train patients")

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
    log(f"strict level: {args.strict_n_per_group} samples per group of {generator_dir}")
    scorer, strict = scoring.calibrate_strict_level(
        scorer, generator, args.strict_valid_rate, n_per_group=args.strict_n_per_group, seed=args.seed,
        provenance={"generator": named(generator_dir), "generator_id": checkpoints.model_id(generator_dir)},
        progress=True)
    result["generated_valid_rate"] = strict["generated_valid_rate"]
  scorer.save(args.out)
  result.update(levels=scorer.levels,
                thresholds={name: {n: float(getattr(scorer.at_strictness(name).calibration, n))
                                   for n in scoring.THRESHOLD_NAMES} for name in scorer.levels})
  return result


def human_calibrate(r: dict[str, Any]) -> str:
  """`calibrate`'s result: each level's q, generated valid rate and thresholds."""
  lines = [f"calibrated on {r['n']} normal images -> {r['out']}"]
  for name, q in r["levels"].items():
    rate = r.get("generated_valid_rate", {}).get(name)
    lines.append(f"  {name} (q = {q:.4g}{f', generated valid rate {rate:.3f}' if rate is not None else ''}): "
                 + ", ".join(f"{k} {v:.4g}" for k, v in r["thresholds"][name].items()))
  return "\n".join(lines)


def run_report(args: argparse.Namespace) -> dict[str, Any]:
  """`report scoring`: valid rates of real and generated images, histograms, examples (`reports.scoring_report`)."""
  if args.n_per_group <= 0:
    raise UsageError(f"--n-per-group must be positive, got {args.n_per_group}")
  if args.covid and not pathlib.Path(args.covid).is_file():
    raise UsageError(f"--covid {args.covid}: no such file")
  directory = inputs.generator_checkpoint(args.checkpoint)
  path = inputs.data_paths(args.data, *GAN_DATA)
  log(f"loading {path} and generator {directory}")
  ds = data.keep_abnormal_finding(data.load(path))   # abnormal = pneumonia, as the classifier's
  generator = generator_lib.load_generator(directory)
  scorer = inputs.load_scorer(args)
  covid_image = None
  covid = pathlib.Path(args.covid) if args.covid else (
      pathlib.Path(os.environ["JAXCXR_DATA"]) / COVID_DATA if os.environ.get("JAXCXR_DATA") else None)
  if covid is not None and covid.exists():
    covid_image = evaluation_sets.standard_subset(data.load(covid), args.split).images[0]
  elif args.covid:
    raise UsageError(f"--covid {args.covid}: no such file")
  report = reports.scoring_report(scorer, generator, ds, args.out, n_per_group=args.n_per_group, split=args.split,
                                  seed=args.seed, covid_image=covid_image, progress=True)
  return {"out": str(args.out), "generator": str(directory), **report}


def human_report(r: dict[str, Any]) -> str:
  """`report scoring`'s result: where the report is, real and generated valid rates."""
  real = r["real"]["valid_rate_by_label"]
  lines = [f"report -> {r['out']}/report.md",
           f"real {r['split']} images valid: normal {real['normal']:.3f}, abnormal {real['abnormal']:.3f}",
           f"generated valid: {r['generated']['valid_rate']:.3f}"]
  lines += [f"  {g}: {v['valid_rate']:.3f}" for g, v in r["generated"]["groups"].items()]
  return "\n".join(lines)


# Command name: (handler, human formatter).
HANDLERS = {"score": (run_score, human_score), "calibrate": (run_calibrate, human_calibrate),
            "scoring": (run_report, human_report)}
