"""How jaxcxr's generate-and-score and AnoGAN search scale from 1 to 2 real CPU cores.

    python -m benchmarks.core_scaling [--cores 1,2] [--suite NAME ...] [--quick] [--repeats N] [--steps N]
        [--out [PATH]]

For each core count c, one `python -m benchmarks.run --no-twins --json` process (the suites'
own jaxcxr measurements, no PyTorch twin) runs pinned to the first c cores this process may use
(`os.sched_setaffinity` before it starts, so XLA sizes its thread pools to c). Every record
gets `cores` (also measured by the child: `jaxcxr.batching.usable_cores`) and `scaling`: the median
time of the same suite, name, dtype and batch on the fewest cores over this one (2.0 = twice
as fast on two cores as on one). The default suites are generate_and_score and anogan at their
CPU batch sizes; `--quick` runs their tiny models (the schema check, not a measurement).

Run it on a quiet machine: another process on one of the cores makes the two-core figure a
measurement of the contention.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

from benchmarks import run as run_lib
from jaxcxr import io as io_lib

DEFAULT_SUITES = ("generate_and_score", "anogan")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def parse_cores(text: str) -> list[int]:
  """"1,2" -> [1, 2]: distinct positive core counts, ascending; ValueError otherwise."""
  try:
    counts = sorted({int(part) for part in text.split(",") if part.strip()})
  except ValueError as e:
    raise ValueError(f"--cores: expected comma-separated core counts such as 1,2, got {text!r}") from e
  if not counts or counts[0] < 1:
    raise ValueError(f"--cores: expected positive core counts such as 1,2, got {text!r}")
  return counts


def add_scaling(records: list[dict[str, Any]]) -> None:
  """Adds `scaling` to every timed record: the median time on the fewest cores over its own.

  Records are paired by suite, name, dtype and batch; a record without a partner on the
  fewest cores (or a skipped one) gets none.
  """
  timed = [r for r in records if "skipped" not in r]
  if not timed:
    return
  fewest = min(r["cores"] for r in timed)
  base = {(r["suite"], r["name"], r["dtype"], r["batch"]): r for r in timed if r["cores"] == fewest}
  for r in timed:
    ref = base.get((r["suite"], r["name"], r["dtype"], r["batch"]))
    if ref is not None:
      r["scaling"] = round(ref["median_s"] / r["median_s"], 3)


def measure_on(cores: list[int], argv: list[str], log) -> list[dict[str, Any]]:
  """`python -m benchmarks.run *argv --json` pinned to `cores`; its records, each with `cores` set."""
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "benchmarks.run", *argv, "--json"], cwd=ROOT, env=env,
                        capture_output=True, text=True, check=False,
                        preexec_fn=lambda: os.sched_setaffinity(0, cores))
  if proc.returncode != 0:
    raise RuntimeError(f"benchmarks.run on cores {cores} exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
  records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
  for r in records:
    if r.get("cores") != len(cores):
      raise RuntimeError(f"the child pinned to {cores} reports {r.get('cores')} usable cores")
  log(f"cores {cores}: {len(records)} records in {time.perf_counter() - start:.1f} s")
  return records


def table(records: list[dict[str, Any]]) -> str:
  """Markdown: one row per timed record, with its cores, throughput and scaling."""
  rows = ["| suite | name | dtype | batch | cores | throughput | median_s | scaling |",
          "|---|---|---|---|---|---|---|---|"]
  for r in records:
    if "skipped" not in r:
      rows.append(f"| {r['suite']} | {r['name']} | {r['dtype']} | {r['batch']} | {r['cores']} | "
                  f"{r['throughput']:.4g} {r['throughput_unit']} | {r['median_s']:.4g} | {r.get('scaling', '')} |")
  return "\n".join(rows)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.core_scaling", description=__doc__.split("\n\n")[0])
  parser.add_argument("--cores", default="1,2", help="core counts to pin to (default 1,2)")
  parser.add_argument("--suite", action="append", choices=run_lib.SUITES,
                      help=f"a suite (repeatable; default {', '.join(DEFAULT_SUITES)})")
  parser.add_argument("--quick", action="store_true", help="tiny random models: checks the records, measures nothing")
  parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (benchmarks.run's default)")
  parser.add_argument("--steps", type=int, default=None, help="AnoGAN steps (benchmarks.run's default)")
  parser.add_argument("--out", nargs="?", const="", default=None,
                      help="write the records (default path: benchmarks/results/<date>_cpu_core_scaling[_quick].jsonl)")
  args = parser.parse_args(argv)
  try:
    counts = parse_cores(args.cores)
  except ValueError as e:
    parser.error(str(e))
  allowed = sorted(os.sched_getaffinity(0))
  if counts[-1] > len(allowed):
    parser.error(f"--cores {args.cores}: this process may use {len(allowed)} core(s) ({allowed})")
  child = [arg for suite in (args.suite or DEFAULT_SUITES) for arg in ("--suite", suite)] + ["--no-twins"]
  child += ["--quick"] * args.quick
  child += [] if args.repeats is None else ["--repeats", str(args.repeats)]
  child += [] if args.steps is None else ["--steps", str(args.steps)]

  log = lambda msg: print(msg, file=sys.stderr, flush=True)
  records = []
  for count in counts:
    records += measure_on(allowed[:count], child, log)
  add_scaling(records)
  print(table(records))
  if args.out is not None:
    date = time.strftime("%Y-%m-%d", time.gmtime())
    out = pathlib.Path(args.out) if args.out else (
        run_lib.RESULTS / f"{date}_cpu_core_scaling{'_quick' if args.quick else ''}.jsonl")
    io_lib.save_json_lines(out, records)
    log(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
