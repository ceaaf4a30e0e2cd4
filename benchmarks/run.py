"""One entry point for every benchmark: jaxcxr against its PyTorch twins, in one process.

    python -m benchmarks.run [--suite NAME [--suite NAME ...]] [--quick] [--json] [--out [PATH]]
        [--torch-compile] [--torch-bf16] [--steps N] [--repeats N] [--time-budget S] [--update-readme]

Each measurement is one JSON record (`benchmarks.measure.record`): name, device, library
versions, dtype, batch, compile seconds kept apart from the steady state (median and
min over repeats, each ended by `block_until_ready`), throughput with its unit, the
roofline (FLOPs per item from XLA's cost analysis, achieved GFLOP/s and its share of a
matmul peak measured first in the same run) and, where a twin ran, the ratio of the
twin's median time to jaxcxr's (`ratio_vs_torch_eager`, `ratio_vs_torch_compile`;
> 1 means jaxcxr is faster).

Suites (`SUITES`): generate_and_score, anogan, fanogan, healthygan, train_step,
time_to_k_valid. `--quick` runs every suite on tiny random 32x32 models in under a
minute (the schema test in tests/test_benchmarks.py runs it); without it the suites
run the shipped checkpoints. PyTorch twins (`benchmarks.twins`) run when `torch` is
importable, else their records say "skipped".

With `--out` the records go to `benchmarks/results/<date>_<device>[_quick].jsonl` (or
PATH), rewritten after every record, so a run stopped by `--time-budget` or killed keeps
what it measured; `--update-readme` rewrites the results table in benchmarks/README.md.
Progress goes to stderr; `--json` prints the records on stdout, otherwise a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time
from typing import Any, Callable

from benchmarks import measure, models as models_lib, table
from jaxcxr import io as io_lib

RESULTS = pathlib.Path(__file__).parent / "results"
README = pathlib.Path(__file__).parent / "README.md"


@dataclasses.dataclass
class Bench:
  """What a suite needs: the settings, the context and peak of this run, the models, the records."""
  quick: bool
  repeats: int
  steps: int | None
  torch_compile: bool
  torch_bf16: bool
  ctx: dict[str, Any]
  peak: dict[str, Any]
  log: Callable[[str], None]
  out: pathlib.Path | None = None
  deadline: float | None = None     # time.monotonic() after which no new measurement starts
  records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  _models: models_lib.Models | None = None

  @property
  def gpu(self) -> bool:
    return self.ctx["platform"] == "gpu"

  def models(self) -> models_lib.Models:
    if self._models is None:
      start = time.perf_counter()
      self._models = models_lib.tiny() if self.quick else models_lib.shipped()
      self.log(f"models: {self._models.source} ({time.perf_counter() - start:.1f} s)")
    return self._models

  def batches(self, cpu: list[int], gpu: list[int]) -> list[int]:
    """A suite's batch sizes: [2] with --quick, else those of this platform."""
    if self.quick:
      return [2]
    return gpu if self.gpu else cpu

  def out_of_time(self) -> bool:
    """True once the run's time budget is spent (suites check it before each measurement)."""
    return self.deadline is not None and time.monotonic() > self.deadline

  def emit(self, rec: dict[str, Any]) -> None:
    """Keeps a record; with an output file, rewrites it at once (a run killed later loses nothing)."""
    self.records.append(rec)
    if self.out is not None:
      io_lib.save_json_lines(self.out, self.records)
    if "skipped" in rec:
      self.log(f"  {rec['suite']}/{rec['name']} {rec['peer']}: skipped ({rec['skipped']})")
    else:
      self.log(f"  {rec['suite']}/{rec['name']} {rec['peer']} {rec['dtype']} b={rec['batch']}: "
               f"{rec['throughput']:.4g} {rec['throughput_unit']} (median {rec['median_s']:.4g} s)")


def _suites() -> dict[str, Callable[[Bench], None]]:
  from benchmarks.suites import anogan, fanogan, generate_and_score, healthygan, time_to_k_valid, train_step  # pylint: disable=g-import-not-at-top
  return {"generate_and_score": generate_and_score.run, "anogan": anogan.run, "fanogan": fanogan.run,
          "healthygan": healthygan.run, "train_step": train_step.run, "time_to_k_valid": time_to_k_valid.run}


SUITES = ("generate_and_score", "anogan", "fanogan", "healthygan", "train_step", "time_to_k_valid")


def default_out(ctx: dict[str, Any], quick: bool) -> pathlib.Path:
  device = ctx["device"].lower().replace(" ", "_")
  return RESULTS / f"{ctx['date']}_{device}{'_quick' if quick else ''}.jsonl"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
  parser.add_argument("--suite", action="append", choices=SUITES, help="a suite to run (repeatable; default all)")
  parser.add_argument("--quick", action="store_true", help="tiny random models, few repeats: under a minute")
  parser.add_argument("--json", action="store_true", help="print the records as JSON lines on stdout")
  parser.add_argument("--out", nargs="?", const="", default=None,
                      help="write the records as JSON lines (default path: benchmarks/results/<date>_<device>.jsonl)")
  parser.add_argument("--torch-compile", action="store_true", help="also time the twins under torch.compile")
  parser.add_argument("--torch-bf16", action="store_true", help="also time bfloat16 (jaxcxr and twins)")
  parser.add_argument("--steps", type=int, default=None, help="AnoGAN steps (default 20 quick, 100 full)")
  parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 2 quick, 3)")
  parser.add_argument("--update-readme", action="store_true", help="rewrite the table in benchmarks/README.md")
  parser.add_argument("--time-budget", type=float, default=None,
                      help="seconds after which no new measurement starts (the rest is recorded as skipped)")
  args = parser.parse_args(argv)
  if args.steps is not None and args.steps < 1:
    parser.error(f"--steps must be >= 1, got {args.steps}")
  if args.time_budget is not None and args.time_budget <= 0:
    parser.error(f"--time-budget must be > 0, got {args.time_budget}")
  if args.repeats is not None and args.repeats < 1:
    parser.error(f"--repeats must be >= 1, got {args.repeats}")

  log = lambda msg: print(msg, file=sys.stderr, flush=True)
  ctx = measure.context()
  log(f"benchmarks on {ctx['device']} ({ctx['platform']}, {ctx['cpu']}, {ctx['cpu_count']} cores), "
      f"jax {ctx['jax']}, torch {ctx['torch']}")
  peak = measure.matmul_peak("bfloat16" if ctx["platform"] == "gpu" else "float32",
                             n=512 if args.quick else (8192 if ctx["platform"] == "gpu" else 2048))
  log(f"matmul peak: {peak['peak_gflops']} GFLOP/s ({peak['peak_dtype']}, {peak['peak_matrix']}^2)")
  out = None if args.out is None else (pathlib.Path(args.out) if args.out else default_out(ctx, args.quick))
  deadline = None if args.time_budget is None else time.monotonic() + args.time_budget
  bench = Bench(quick=args.quick, repeats=args.repeats or (2 if args.quick else 3), steps=args.steps,
                torch_compile=args.torch_compile, torch_bf16=args.torch_bf16, ctx=ctx, peak=peak, log=log,
                out=out, deadline=deadline)
  suites = _suites()
  start = time.perf_counter()
  for name in args.suite or SUITES:
    if bench.out_of_time():
      bench.emit(measure.skipped(ctx, suite=name, name="*", peer="*", reason="time budget spent"))
      continue
    t = time.perf_counter()
    log(f"suite {name}")
    suites[name](bench)
    log(f"suite {name}: {time.perf_counter() - t:.1f} s")
  measure.add_ratios(bench.records)
  log(f"all suites: {time.perf_counter() - start:.1f} s")

  if args.json:
    for rec in bench.records:
      print(json.dumps(rec), flush=True)
  else:
    print(table.markdown(bench.records))
  if out is not None:
    io_lib.save_json_lines(out, bench.records)
    log(f"wrote {out}")
  if args.update_readme:
    table.update_readme(README, bench.records)
    log(f"updated {README}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
