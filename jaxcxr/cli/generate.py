"""`jaxcxr sample` and `jaxcxr demo`: the whole sample path, from options to PNGs or the demo's report.

`sample` checks its options, loads the generator (a generator checkpoint or the model folder
holding one as `generator/`), opens its run folder (a killed run resumes there) and asks
`jaxcxr.prefilter.choice.resolve_sampler` which sampler runs: post-filtering alone, a latent
pre-filter or the cascade one, shipped, saved or fitted now. `--unfiltered` keeps every
generated image instead. Its result carries `timings`, the seconds of each phase of the run
(`SAMPLE_PHASES`); what the process spent before them (interpreter, imports) is the rest of
its wall time. `demo` runs `jaxcxr.demo.run_demo`, whose samplers come from the
same function.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time
from typing import Any

import jax

from jaxcxr import checkpoints, data, demo, io, sampling
from jaxcxr.cli import inputs
from jaxcxr.cli.common import UsageError, log, run_record
from jaxcxr.models import generator as generator_lib
from jaxcxr.prefilter import choice
from jaxcxr.prefilter.thresholds import STRATEGIES

__all__ = ["HANDLERS", "SAMPLE_PHASES"]

# The counters of a run kept in `sample`'s result: every sampler's, and those only a pre-filtered run reports.
_COUNTS = ("n_valid", "n_generated", "n_valid_seen", "n_latents_drawn", "seconds", "round_seconds", "valid_rate",
           "n_rounds", "n_slots")
_PREFILTERED_COUNTS = ("acceptance_rate", "n_judged", "pool_size", "accept_size")
# The phases of `sample` timed in its result's "timings" (seconds): load the generator; load the post-filter;
# choose (and load or fit) the pre-filter; compile the round (or load it from the compilation cache); sample (the
# rounds, writing the PNGs as they come: the result's "seconds"); close the run folder. Unfiltered runs have the
# first, "sample" and "finish" only.
SAMPLE_PHASES = ("load_generator", "load_scorer", "resolve_sampler", "compile", "sample", "finish")


def _check_prefilter_args(args: argparse.Namespace) -> None:
  """Refuses contradictory pre-filter options of `sample` before anything is loaded."""
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


def run_sample(args: argparse.Namespace) -> dict[str, Any]:
  """`sample`: --n valid images of --group (every generated one with --unfiltered) as PNGs in --out."""
  data.parse_group(args.group)
  if args.n <= 0:
    raise UsageError(f"--n must be positive, got {args.n}")
  if args.max_generated is not None and args.max_generated <= 0:
    raise UsageError(f"--max-generated must be positive, got {args.max_generated}")
  if args.batch_size is not None and args.batch_size <= 0:
    raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
  _check_prefilter_args(args)
  directory = inputs.generator_checkpoint(args.checkpoint)
  log(f"loading generator {directory}")
  t0 = time.perf_counter()
  generator = generator_lib.load_generator(directory)
  timings = {"load_generator": time.perf_counter() - t0}
  # A run killed at any moment leaves its record, the kept images and its progress in --out; the
  # same command then resumes it and ends with the uninterrupted run's images.
  run = run_record(args, generator_id=checkpoints.model_id(directory),
                   latents_sha256=data.file_sha256(args.latents) if args.latents and os.path.isfile(args.latents)
                   else None)
  existed = pathlib.Path(args.out).exists()
  out, saved = io.open_run_dir(args.out, run, overwrite=args.overwrite)
  if saved is not None and saved.get("complete"):
    log(f"{out}: holds the complete output of this same command; nothing to do")
    return saved["result"]
  if saved is not None:
    log(f"{out}: resuming the interrupted run of this same command")
  try:
    return _sample_into(args, out, generator, directory, timings)
  except Exception:
    # Bad input found before any image was written: leave no trace of this run.
    if saved is None and [p.name for p in out.iterdir()] == [io.RUN_RECORD]:
      (out / io.RUN_RECORD).unlink()
      if not existed:
        out.rmdir()
    raise


def _sample_into(args: argparse.Namespace, out: pathlib.Path, generator, directory: pathlib.Path,
                 timings: dict[str, float]) -> dict[str, Any]:
  """`sample`'s work once its output folder is open: sample, write the PNGs round by round, report (with `timings`)."""
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
      journal.save_image(i, image)
    n_images = len(images)
    timings["sample"] = time.perf_counter() - start
  else:
    n_images = _sample_valid(args, generator, directory, key, result, journal, timings)
  t0 = time.perf_counter()
  files = [str(journal.image_path(i)) for i in range(n_images)]   # written by the journal, round by round
  result.update(out=str(out), files=files, timings=timings)
  journal.finish()
  io.finish_run_dir(out, result)
  timings["finish"] = time.perf_counter() - t0      # the saved result lacks it; the printed one has it
  return result


def _sample_valid(args: argparse.Namespace, generator, directory: pathlib.Path, key, result: dict[str, Any],
                  journal: sampling.SampleJournal, timings: dict[str, float]) -> int:
  """Post-filtered sampling through the sampler `resolve_sampler` chooses; fills `result` and `timings`, returns the
  images kept."""
  t0 = time.perf_counter()
  scorer = inputs.load_scorer(args)
  timings["load_scorer"] = time.perf_counter() - t0
  try:
    t0 = time.perf_counter()
    sampler = choice.resolve_sampler(
        scorer, generator, args.group, strategy=args.prefilter, prefilter=args.prefilter_dir,
        prefilter_input=args.prefilter_input, latents=args.latents, latent_model=args.prefilter_model,
        generator_dir=directory, label=args.label, seed=args.seed, pool_size=args.pool_size,
        accept_size=args.accept_size, log=log)
    timings["resolve_sampler"] = time.perf_counter() - t0
    compile_seconds = timings["compile"] = sampler.warm_up(key)
  except ValueError as e:
    raise UsageError(str(e)) from e
  max_generated = args.max_generated if args.max_generated is not None else sampling.default_max_generated(args.n)
  t0 = time.perf_counter()
  found = sampler.sample(key, args.n, max_generated=max_generated, progress=True, journal=journal)
  timings["sample"] = time.perf_counter() - t0
  if sampler.kind == "none":
    result.update(compile_seconds=compile_seconds, **{k: found[k] for k in _COUNTS})
  else:
    result.update({k: found[k] for k in _COUNTS + _PREFILTERED_COUNTS}, compile_seconds=compile_seconds,
                  prefilter=io.to_json_safe(sampler.summary()))
  result.update(strictness=scorer.strictness_name, sample_index=[int(i) for i in found["index"]])
  if found["n_valid"] < args.n:
    log(f"warning: only {found['n_valid']} of {args.n} valid images within --max-generated {max_generated}")
  return int(found["n_valid"])


def human_sample(r: dict[str, Any]) -> str:
  """`sample`'s result in a line."""
  if not r["filtered"]:
    return (f"{r['n_generated']} {r['group']} images ({r['resolution']}x{r['resolution']}, unfiltered) in "
            f"{r['seconds']:.2f} s -> {r['out']}")
  return (f"{r['n_valid']} valid {r['group']} images of {r['n_generated']} generated (valid rate "
          f"{r['valid_rate']:.3f}) in {r['seconds']:.2f} s -> {r['out']}")


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
  """`demo`: the whole pipeline on the shipped models as one self-contained HTML report (`jaxcxr.demo.run_demo`)."""
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
  log(f"demo: {args.n} valid {args.group} images at {args.strictness}, with and without the pre-filter -> "
      f"{out / demo.REPORT_NAME}")
  return demo.run_demo(out, config, overwrite=args.overwrite, log=log)


def human_demo(r: dict[str, Any]) -> str:
  """`demo`'s result: the report, the headline, both samplers, the pre-filter's ROC AUC."""
  pre, plain = r["samplers"]["prefiltered"], r["samplers"]["unfiltered"]
  speed = r["speedup"]
  ratio = lambda v: "n/a" if v is None else f"{v:.2f}x"
  return "\n".join([
      f"report -> {r['report']} ({r['report_bytes'] / 1e6:.1f} MB, one self-contained HTML file)",
      demo.headline(r),
      f"{r['counts']['kept']} valid {r['group']} images kept ({r['strictness']} post-filter)",
      f"  with the pre-filter:    {pre['generated_per_valid']:.2f} generated per valid, {pre['seconds']:.2f} s",
      f"  without the pre-filter: {plain['generated_per_valid']:.2f} generated per valid, {plain['seconds']:.2f} s",
      f"  speed-up: {ratio(speed['generated_per_valid'])} generated per valid, {ratio(speed['wall_time'])} wall time",
      f"pre-filter ROC AUC on {r['prefilter_roc']['n']} fresh samples: "
      + ("n/a (one class)" if r["prefilter_roc"]["roc_auc"] is None else f"{r['prefilter_roc']['roc_auc']:.3f}"),
      f"total {r['seconds']:.1f} s"])


# Command name: (handler, human formatter).
HANDLERS = {"sample": (run_sample, human_sample), "demo": (run_demo, human_demo)}
