"""`jaxcxr latents build|table|fit|cascade`: the latent pre-filter's datasets, model table and fitted filters.

`latents build` makes a latent dataset with the post-filter, `latents table` compares latent
classifiers on it, `latents fit` saves one group's pre-filter, `latents cascade` fits the cascade
pre-filter, and `sample --prefilter` uses one (`jaxcxr.prefilter.choice.resolve_sampler`).
Latent datasets are built for normal images (label 0), so pre-filters exist for label 0 only.

`jaxcxr train prefilter` and `jaxcxr train cascade-prefilter` are `latents fit` and `latents
cascade` under the name of the training commands: the same options and these same handlers
(the `train` names also take `--resume`, which they refuse, saying why).
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import time
from typing import Any

import jax
import numpy as np

from jaxcxr import checkpoints, data, io, prefilter, provenance
from jaxcxr import config as config_lib
from jaxcxr.cli import inputs
from jaxcxr.cli.common import UsageError, log, run_record
from jaxcxr.models import generator as generator_lib
from jaxcxr.prefilter import cascade
from jaxcxr.train import score_predictor

__all__ = ["HANDLERS"]


def _parse_groups(arg: str | None) -> tuple[str, ...]:
  """`--groups`: "all" (default) or comma-separated group names."""
  if arg is None or arg.strip() == "all":
    return data.GROUPS
  names = tuple(g.strip() for g in arg.split(",") if g.strip())
  for name in names:
    data.parse_group(name)
  if not names:
    raise UsageError("--groups: expected 'all' or comma-separated group names")
  return names


def run_build(args: argparse.Namespace) -> dict[str, Any]:
  """`latents build`: generate and post-score --n-per-group latents per group (a latent dataset)."""
  if args.n_per_group <= 0:
    raise UsageError(f"--n-per-group must be positive, got {args.n_per_group}")
  groups = _parse_groups(args.groups)
  out = pathlib.Path(args.out)
  directory = inputs.generator_checkpoint(args.checkpoint)
  work = inputs.work_dir(out, run_record(args, generator_id=checkpoints.model_id(directory)), args.overwrite,
                         "partial")
  with inputs.drop_unused(work):
    log(f"loading generator {directory}")
    generator = generator_lib.load_generator(directory)
    generator_id = checkpoints.model_id(directory)
    scorer = inputs.load_scorer(args)
    log(f"generating and scoring {args.n_per_group} latents per group for {', '.join(groups)}")
    start = time.perf_counter()
    records = prefilter.build_latent_dataset(scorer, generator, jax.random.key(args.seed), args.n_per_group,
                                             generator_id=generator_id, groups=groups,
                                             progress=sys.stderr.isatty(), parts_dir=work,
                                             chunk_size=8 * scorer.config.batch_size)
  seconds = time.perf_counter() - start
  prefilter.save_latent_dataset(out, records)
  shutil.rmtree(work, ignore_errors=True)
  log(f"wrote {out}")
  return {"out": str(out), "checkpoint": str(directory), "seed": args.seed, "n_per_group": args.n_per_group,
          "strictness": scorer.strictness_name, "seconds": seconds, **prefilter.latent_dataset_summary(records)}


def human_build(r: dict[str, Any]) -> str:
  """`latents build`'s result: counts and valid rates per group."""
  lines = [f"{r['n']} latents ({r['n_valid']} valid, rate {r['valid_rate']:.4f}) in {r['seconds']:.1f} s -> "
           f"{r['out']} (generator {r['generator_id']})", f"{'group':8s} {'n':>7s} {'valid':>7s} {'rate':>7s}"]
  lines += [f"{g:8s} {c['n']:7d} {c['n_valid']:7d} {c['valid_rate']:7.4f}" for g, c in r["groups"].items()]
  return "\n".join(lines)


def _records_at_strictness_arg(args: argparse.Namespace, records):
  """The latent records rescored at `--strictness` (from their measures), or as built without it."""
  if args.strictness is None:
    return records
  try:
    return prefilter.records_at_strictness(records, inputs.load_scorer(args), args.strictness)
  except ValueError as e:
    raise UsageError(f"--strictness: {e}") from e


def run_table(args: argparse.Namespace) -> dict[str, Any]:
  """`latents table`: cross-validated latent classifiers per group, with figures."""
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
                                         n_folds=args.folds, seed=args.seed, extremes_k=args.extremes_k, log=log)
  return {"data": str(args.data), "out": str(out), "generator_id": records["generator_id"],
          "strictness": args.strictness or "as built", "valid_rate": float(np.mean(records["valid"])),
          "models": list(models),
          "targets": list(targets), "strategies": list(strategies), "n_folds": args.folds,
          "table": str(out / "table.md"),
          "best": io.to_json_safe(report["best"]),
          "files": report["files"]}


def human_table(r: dict[str, Any]) -> str:
  """`latents table`'s result: each group's best model and its out-of-fold figures."""
  lines = [f"{len(r['models'])} model(s), targets {', '.join(r['targets'])}, {r['n_folds']}-fold CV -> {r['table']}"]
  for group, b in r["best"].items():
    auc = "n/a" if b["roc_auc"] is None else f"{b['roc_auc']:.3f}"
    lines.append(f"  {group}: best {b['model']} (ROC AUC {auc}), out-of-fold at {r['strategies'][0]}: precision "
                 f"{b['precision']:.3f} vs base rate {b['base_rate']:.3f}, TPR {b['tpr']:.3f}, FPR {b['fpr']:.3f}")
  return "\n".join(lines)


def _fit_prefilter_or_usage(records, group: str, strategy: str, model: str, seed: int, on_empty: str,
                            steps: int | None):
  """`prefilter.fit_prefilter`, its ValueError a UsageError."""
  log(f"fitting the {model} pre-filter of {group} (threshold: {strategy} on the validation part)")
  try:
    return prefilter.fit_prefilter(records, group, strategy, model, seed=seed, on_empty=on_empty,
                                   **({} if steps is None else {"steps": steps}))
  except ValueError as e:
    raise UsageError(str(e)) from e


def _refuse_resume(args: argparse.Namespace, why: str) -> None:
  """`train prefilter|cascade-prefilter --resume`: refused with the reason (the `latents` names have no --resume)."""
  if getattr(args, "resume", False):
    raise UsageError(f"--resume: {why}")


def run_fit(args: argparse.Namespace) -> dict[str, Any]:
  """`latents fit` (`train prefilter`): fit and save one group's pre-filter (threshold on validation), or a set of
  every strategy."""
  _refuse_resume(args, "a latent pre-filter fits in seconds and keeps no training checkpoints; run the command "
                       "again without it (--overwrite replaces --out)")
  if args.steps is not None and args.steps <= 0:
    raise UsageError(f"--steps must be positive, got {args.steps}")
  data.parse_group(args.group)
  records = prefilter.load_latent_dataset(args.data)
  records = _records_at_strictness_arg(args, records)
  on_empty = "accept_all" if args.accept_all_if_empty else "error"
  if args.strategy == "all":   # one classifier, every threshold strategy: a pre-filter set
    fitted = [_fit_prefilter_or_usage(records, args.group, strategy, args.model, args.seed, on_empty, args.steps)
              for strategy in prefilter.STRATEGIES]
    out = prefilter.save_prefilter_set(args.out, fitted, overwrite=args.overwrite)
    return {"out": str(out), "data": str(args.data),
            "strategies": {pf.strategy: pf.summary() for pf in fitted}}
  pf = _fit_prefilter_or_usage(records, args.group, args.strategy, args.model, args.seed, on_empty, args.steps)
  out = pf.save(args.out, overwrite=args.overwrite)
  return {"out": str(out), "data": str(args.data), **pf.summary()}


def human_fit(r: dict[str, Any]) -> str:
  """`latents fit`'s result: the threshold and test figures of each pre-filter saved."""
  if "strategies" in r:
    return "\n".join(human_fit({**summary, "out": r["out"]}) for summary in r["strategies"].values())
  rep = r["report"]
  if r["accepts_all"]:
    return f"{r['group']}: accept-all fallback ({rep.get('reason')}) -> {r['out']}"
  test = rep.get("test") or {}
  return (f"{r['group']}: {r['model']} pre-filter, {r['strategy']} threshold {r['threshold']:.4g} (logit) -> "
          f"{r['out']}; test: TPR {test.get('tpr', float('nan')):.3f}, FPR {test.get('fpr', float('nan')):.3f}, "
          f"precision {test.get('precision', float('nan')):.3f} vs {rep.get('precision_unfiltered_test') or 0:.3f} "
          f"unfiltered (predicted speed-up {rep.get('predicted_speedup') or float('nan'):.2f})")


def run_cascade(args: argparse.Namespace) -> dict[str, Any]:
  """`latents cascade` (`train cascade-prefilter`): fit a cascade pre-filter (post-filter measures predicted from
  the base images), a preset of `jaxcxr.config.CascadePrefilterTrainConfig`."""
  _refuse_resume(args, "the cascade pre-filter's fit resumes by itself: run the same command again without it")
  fit = inputs.train_preset("cascade_prefilter", args.preset, args.steps) if args.preset else None
  records = prefilter.load_latent_dataset(args.data)
  directory = inputs.generator_checkpoint(args.checkpoint)
  generator = generator_lib.load_generator(directory)
  generator_id = checkpoints.model_id(directory)
  if generator.config.upsampler is None:
    raise UsageError(f"{directory} is not a cascade generator (no upsampler): it has no cheap base image")
  side = generator.config.base_resolution
  if fit is None:   # the default follows the base images (and is recorded in the run's arguments)
    args.preset = f"cascade_prefilter_{side}"
    if args.preset not in config_lib.FAMILIES["cascade_prefilter"].presets:
      raise UsageError(f"no cascade pre-filter preset reads {side}x{side} base images (the default would be "
                       f"{args.preset}); name one with --preset")
    fit = inputs.train_preset("cascade_prefilter", args.preset, args.steps)
  if fit.predictor.resolution != side:
    raise UsageError(f"--preset {args.preset} predicts from {fit.predictor.resolution}x{fit.predictor.resolution} "
                     f"base images, but {directory} makes {side}x{side} ones")
  if records["generator_id"] != generator_id:
    raise UsageError(f"{args.data} was built with generator {records['generator_id']}, but {directory} is "
                     f"{generator_id}; rebuild it with `jaxcxr latents build`")
  scorer = inputs.load_scorer(args)
  levels = tuple(level.strip() for level in args.levels.split(",") if level.strip())
  try:
    for level in levels:
      scorer.at_strictness(level)
  except ValueError as e:
    raise UsageError(f"--levels: {e}") from e
  # The predictor's training checkpoints live in a hidden sibling of --out: the same command run
  # again after a kill resumes the fit and ends with the uninterrupted run's pre-filter. The run's
  # record leaves out the command's name (and `train`'s refused --resume), so that under either name
  # the same arguments continue the same fit.
  out = pathlib.Path(args.out)
  named = argparse.Namespace(**{k: v for k, v in vars(args).items()
                                if k not in ("command", "latents_command", "train_command", "resume")})
  work = inputs.work_dir(out, run_record(named, generator_id=generator_id, data_sha256=data.file_sha256(args.data)),
                         args.overwrite, "train")
  log(f"making {len(records['z'])} base images with {directory}")
  base = score_predictor.base_images(generator, records["z"], records["group"])
  try:
    with inputs.drop_unused(work):
      fitted = cascade.fit_cascade_prefilter(records, base, scorer, fit.predictor, levels=levels, steps=fit.steps,
                                             eval_every=fit.steps_per_call, batch_size=fit.batch_size,
                                             learning_rate=fit.learning_rate, weight_decay=fit.weight_decay,
                                             seed=args.seed, log=log, out_dir=work / "fit", resume=True)
  except ValueError as e:
    raise UsageError(str(e)) from e
  fitted.report["provenance"] = provenance.provenance(args.data, {"seed": args.seed,
                                                                  "split_seed": fitted.report["split_seed"]})
  out = fitted.save(out, overwrite=True)     # `_work_dir` refused an existing --out that is not this run's
  shutil.rmtree(work, ignore_errors=True)
  levels_report = {level: {k: v for k, v in r.items() if k != "strategies"}
                   for level, r in fitted.report["levels"].items()}
  return {"out": str(out), "data": str(args.data), "generator": str(directory), "preset": args.preset,
          "steps": fit.steps, "levels": levels_report,
          "thresholds": fitted.thresholds, "val_r2": fitted.report["history"]["val_r2"],
          "provenance": fitted.report["provenance"]}


def human_cascade(r: dict[str, Any]) -> str:
  """`latents cascade`'s result: the test ROC AUC at each level."""
  lines = [f"cascade pre-filter -> {r['out']}"]
  for level, rep in r["levels"].items():
    lines.append(f"  {level}: test ROC AUC {rep['roc_auc_test']:.3f} (base rate {rep['base_rate_test']:.3f})")
  return "\n".join(lines)


# Subcommand name: (handler, human formatter).
HANDLERS = {"build": (run_build, human_build), "table": (run_table, human_table), "fit": (run_fit, human_fit),
            "cascade": (run_cascade, human_cascade)}
