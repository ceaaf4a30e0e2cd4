"""One entry point for every benchmark: jaxcxr against its PyTorch twins, in one process.

    python -m benchmarks.run [--suite NAME [--suite NAME ...]] [--quick] [--json] [--out [PATH]]
        [--torch-compile] [--torch-compile-backend NAME] [--torch-bf16] [--no-twins] [--steps N]
        [--repeats N] [--time-budget S] [--update-readme] [--gpu-dry-run]

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

A measurement that raises (an out-of-memory batch, a twin torch.compile cannot trace) becomes
a record with `skipped` ("failed: ...") and `failed: true`, its traceback goes to the log, and
the run goes on; the exit status is then 1 (0 when every measurement ran or was skipped for a
known reason).

`--gpu-dry-run` runs, on the CPU, every branch a GPU run takes (`DRY_RUN_DIVISOR`): the GPU
batch sizes divided by 64 (at least 1, duplicates dropped; with `--quick` the largest one
only, e.g. 1024 -> 16), K of time_to_k_valid likewise, the bfloat16 matmul peak, XLA's
convolutions and autodiff instead of the CPU custom VJP (`layers.conv_path("xla")`), no
in-call chunks (`batching.cpu_chunk(None)`), and torch.compile's `aot_eager` backend (dynamo
and AOTAutograd trace every twin as on a GPU; inductor's code generation, C++ here and Triton
there, is left out unless `--torch-compile-backend inductor`). Its records carry
`dry_run: true` and platform "cpu": they are not GPU numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import pathlib
import sys
import time
import traceback
from typing import Any, Callable, Iterator

from benchmarks import measure, models as models_lib, table
from jaxcxr import batching
from jaxcxr import io as io_lib
from jaxcxr.models import layers

RESULTS = pathlib.Path(__file__).parent / "results"
README = pathlib.Path(__file__).parent / "README.md"
# A GPU dry run divides the GPU sizes (batches, K) by this, at least 1: the GPU branches, at CPU cost.
DRY_RUN_DIVISOR = 64


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
  dry_run: bool = False             # the GPU branches on the CPU (`--gpu-dry-run`)
  twins: bool = True                # time the PyTorch twins (`--no-twins`: jaxcxr only)
  torch_compile_backend: str = "inductor"
  records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  _models: models_lib.Models | None = None

  @property
  def gpu(self) -> bool:
    """True where the suites take their GPU branches: on a GPU, and in a dry run of them on the CPU."""
    return self.ctx["platform"] == "gpu" or self.dry_run

  def size(self, n: int) -> int:
    """A GPU size (a batch, K) as this run uses it: divided by `DRY_RUN_DIVISOR` (at least 1) in a dry run."""
    return max(1, n // DRY_RUN_DIVISOR) if self.dry_run else n

  def models(self) -> models_lib.Models:
    if self._models is None:
      start = time.perf_counter()
      self._models = models_lib.tiny() if self.quick else models_lib.shipped()
      self.log(f"models: {self._models.source} ({time.perf_counter() - start:.1f} s)")
    return self._models

  def batches(self, cpu: list[int], gpu: list[int]) -> list[int]:
    """A suite's batch sizes: in a dry run the GPU ones scaled (`size`, duplicates dropped; with --quick the
    largest only), else [2] with --quick, else those of this platform."""
    if self.dry_run:
      sizes = list(dict.fromkeys(self.size(b) for b in gpu))
      return sizes[-1:] if self.quick else sizes
    if self.quick:
      return [2]
    return gpu if self.gpu else cpu

  def out_of_time(self) -> bool:
    """True once the run's time budget is spent (suites check it before each measurement)."""
    return self.deadline is not None and time.monotonic() > self.deadline

  @contextlib.contextmanager
  def guard(self, suite: str, name: str, peer: str, **extra) -> Iterator[None]:
    """Runs one measurement: an exception becomes a failed record (its traceback in the log), and the run goes on.

    A GPU session is short: a batch that runs out of memory or a twin that torch.compile
    cannot trace costs its own record only. `extra` (dtype, batch) goes into that record.
    """
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except  (recorded, and the exit status says so)
      self.log(traceback.format_exc())
      message = " ".join(str(e).split())[:300]
      self.emit(measure.skipped(self.ctx, suite=suite, name=name, peer=peer, failed=True,
                                reason=f"failed: {type(e).__name__}: {message}", **extra))

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
  dry = "_gpu_dry_run" if ctx.get("dry_run") else ""
  return RESULTS / f"{ctx['date']}_{device}{dry}{'_quick' if quick else ''}.jsonl"


def _switches(dry_run: bool) -> contextlib.ExitStack:
  """The dry run's CPU-to-GPU switches, entered: XLA's convolutions and autodiff, no in-call chunks."""
  stack = contextlib.ExitStack()
  if dry_run:
    stack.enter_context(layers.conv_path("xla"))
    stack.enter_context(batching.cpu_chunk(None))
  return stack


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
  parser.add_argument("--suite", action="append", choices=SUITES, help="a suite to run (repeatable; default all)")
  parser.add_argument("--quick", action="store_true", help="tiny random models, few repeats: under a minute")
  parser.add_argument("--json", action="store_true", help="print the records as JSON lines on stdout")
  parser.add_argument("--out", nargs="?", const="", default=None,
                      help="write the records as JSON lines (default path: benchmarks/results/<date>_<device>.jsonl)")
  parser.add_argument("--torch-compile", action="store_true", help="also time the twins under torch.compile")
  parser.add_argument("--torch-compile-backend", default=None,
                      help="torch.compile's backend (default inductor; aot_eager in a --gpu-dry-run)")
  parser.add_argument("--torch-bf16", action="store_true", help="also time bfloat16 (jaxcxr and twins)")
  parser.add_argument("--no-twins", action="store_true", help="jaxcxr only: no PyTorch twin runs or is recorded")
  parser.add_argument("--steps", type=int, default=None, help="AnoGAN steps (default 5 quick, 100 full)")
  parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 2 quick, 3)")
  parser.add_argument("--update-readme", action="store_true", help="rewrite the table in benchmarks/README.md")
  parser.add_argument("--time-budget", type=float, default=None,
                      help="seconds after which no new measurement starts (the rest is recorded as skipped)")
  parser.add_argument("--gpu-dry-run", action="store_true",
                      help=f"on the CPU, every branch a GPU run takes (GPU batch sizes / {DRY_RUN_DIVISOR}, XLA "
                           "convolutions, no in-call chunks): records marked dry_run, not GPU numbers")
  args = parser.parse_args(argv)
  if args.steps is not None and args.steps < 1:
    parser.error(f"--steps must be >= 1, got {args.steps}")
  if args.time_budget is not None and args.time_budget <= 0:
    parser.error(f"--time-budget must be > 0, got {args.time_budget}")
  if args.repeats is not None and args.repeats < 1:
    parser.error(f"--repeats must be >= 1, got {args.repeats}")
  if args.gpu_dry_run and args.update_readme:
    parser.error("--gpu-dry-run records are not GPU numbers: they never go into benchmarks/README.md")

  log = lambda msg: print(msg, file=sys.stderr, flush=True)
  ctx = measure.context()
  if args.gpu_dry_run and ctx["platform"] != "cpu":
    parser.error(f"--gpu-dry-run runs on the CPU (JAX_PLATFORMS=cpu); this process's devices are {ctx['platform']}")
  with _switches(args.gpu_dry_run):
    ctx.update(dry_run=args.gpu_dry_run, conv_path=layers.conv_path_in_use(), in_call_chunk=batching.default_chunk())
    if args.gpu_dry_run:
      ctx["dry_run_divisor"] = DRY_RUN_DIVISOR
    return _run(args, ctx, log)


def _run(args: argparse.Namespace, ctx: dict[str, Any], log: Callable[[str], None]) -> int:
  """The measurements of a parsed command line in context `ctx`; returns the exit status."""
  log(f"benchmarks on {ctx['device']} ({ctx['platform']}, {ctx['cpu']}, {ctx['cpu_count']} cores), "
      f"jax {ctx['jax']}, torch {ctx['torch']}" + (" -- GPU DRY RUN on the CPU" if ctx["dry_run"] else ""))
  out = None if args.out is None else (pathlib.Path(args.out) if args.out else default_out(ctx, args.quick))
  deadline = None if args.time_budget is None else time.monotonic() + args.time_budget
  backend = args.torch_compile_backend or ("aot_eager" if args.gpu_dry_run else "inductor")
  bench = Bench(quick=args.quick, repeats=args.repeats or (2 if args.quick else 3), steps=args.steps,
                torch_compile=args.torch_compile, torch_bf16=args.torch_bf16, ctx=ctx, peak={}, log=log,
                out=out, deadline=deadline, dry_run=args.gpu_dry_run, twins=not args.no_twins,
                torch_compile_backend=backend)
  # The roofline's ceiling: bfloat16 on a GPU (8192^2), float32 on a CPU (2048^2); 512^2 quick and in a dry run.
  bench.peak = measure.matmul_peak("bfloat16" if bench.gpu else "float32",
                                   n=512 if args.quick or bench.dry_run else (8192 if bench.gpu else 2048))
  log(f"matmul peak: {bench.peak['peak_gflops']} GFLOP/s ({bench.peak['peak_dtype']}, {bench.peak['peak_matrix']}^2)")
  suites = _suites()
  start = time.perf_counter()
  for name in args.suite or SUITES:
    if bench.out_of_time():
      bench.emit(measure.skipped(ctx, suite=name, name="*", peer="*", reason="time budget spent"))
      continue
    t = time.perf_counter()
    log(f"suite {name}")
    with bench.guard(name, "*", "*"):
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
  failed = [r for r in bench.records if r.get("failed")]
  if failed:
    log(f"{len(failed)} measurement(s) failed: " + "; ".join(f"{r['suite']}/{r['name']} {r['peer']}" for r in failed))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
