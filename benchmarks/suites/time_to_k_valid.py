"""Time to K post-filter-valid 256x256 images at the strict level, without and with the shipped cascade pre-filter.

jaxcxr only (no twin: the pre-filter is this library's). Group `GROUP`, strictness "strict",
the shipped models at the CLI's default batch (32). Records, in this order (the two
variants' runs alternate, so that a change of the machine's load hits both):

* `inprocess_<variant>_k<K>` (variant `unfiltered` / `prefiltered`): the library's samplers
  (`sampling.sample_valid`, `prefilter.cascade.sample_valid_cascade`) in this process.
  `compile_s` is the warm-up (a call needing no image: the round's compilation, no
  persistent cache in this process); `median_s` the rounds' wall time to K valid images,
  over `repeats` keys (seed 1, 2, ...). With the counters of `jaxcxr.sampling.run_rounds`
  (pooled over the repeats), the pool and slot sizes, and on the pre-filtered record the
  judge's cost: `judge_s_per_latent` (the same compiled round asked for its accepted
  latents and no image: base images plus predictor) and `judge_share` (judged latents x
  that cost / the rounds' time).
* `cold_sample_k<K>_<variant>`: `jaxcxr sample --group GROUP --n K --strictness strict
  [--prefilter youden] --seed 1 --json` in a fresh process (`python -m jaxcxr`, this
  checkout's code) with an empty compilation cache (`$JAXCXR_COMPILATION_CACHE` a new
  temporary folder per variant): cold start, with the CLI's phases (`timings`).
* `cli_<variant>_k<K>`: the same command with seeds 1, 2, ..., each a fresh process with the
  cache the cold run filled. `median_s` is the process's wall time; `sample_median_s` the
  rounds' (the CLI's "seconds"), `phases_median_s` its `timings` and
  `process_other_median_s` the rest of the wall time (interpreter, imports, output).
* `cold_demo`: `jaxcxr demo --json` (its defaults: 8 valid 38_44f images at strict, with
  and without the pre-filter, ROC, f-AnoGAN, report), fresh process, empty cache, with its
  step `timings`.

Every pre-filtered record carries `speedup_time` (unfiltered median_s / pre-filtered),
`speedup_generated` (ratio of generated images per valid one, pooled over the same keys)
and `speedup_ratio` = speedup_time / speedup_generated (issue 27's target: >= 0.85 from
K = 32 on); the CLI one also `sampling_speedup_time` and `sampling_speedup_ratio` on the
rounds' time alone. CPU seconds (`cpu_median_s`: the sampler's process time in process, the
child's user + system time from the CLI) give `cpu_speedup_time` and `cpu_speedup_ratio`:
on a CPU shared with other jobs they move less than the wall time. K = 32 on a CPU (the
CLI's unfiltered runs take half a minute each), 32 and 64 on an accelerator. A GPU dry run
(`--gpu-dry-run`) runs the in-process records with K divided as its batches are
(`Bench.size`) and skips the fresh processes: they would not take its GPU code paths.

Needs the shipped models (a cascade and its pre-filter): `--quick` records every measurement
as skipped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import jax

from benchmarks import measure

SUITE = "time_to_k_valid"
GROUP = "58_64f"
STRICTNESS = "strict"
STRATEGY = "youden"
VARIANTS = ("unfiltered", "prefiltered")
CLI_BATCH = 32          # the post-filter's batch of `jaxcxr sample` without --batch-size (the calibration's)
ROOT = pathlib.Path(__file__).resolve().parents[2]


def _ks(bench) -> tuple[int, ...]:
  """The K measured: 32 on a CPU; 32 and 64 on an accelerator (a dry run: divided, duplicates dropped)."""
  return tuple(sorted({bench.size(32), bench.size(64)})) if bench.gpu else (32,)


def _process_names(ks: tuple[int, ...]) -> list[str]:
  """The records of the fresh `jaxcxr` processes for these K: warm CLI runs, cold starts, the cold demo."""
  return ([f"cli_{v}_k{k}" for k in ks for v in VARIANTS] + [f"cold_sample_k{k}_{v}" for k in ks for v in VARIANTS]
          + ["cold_demo"])


def _skip(bench, names: list[str], reason: str) -> None:
  for name in names:
    bench.emit(measure.skipped(bench.ctx, suite=SUITE, name=name, peer="jaxcxr", reason=reason))


def run(bench) -> None:
  if bench.quick:
    _skip(bench, [f"inprocess_{v}_k32" for v in VARIANTS] + _process_names((32,)),
          "needs the shipped cascade and its pre-filter (not in --quick)")
    return
  for k in _ks(bench):
    _in_process(bench, k)
  if bench.dry_run:
    _skip(bench, _process_names(_ks(bench)), "GPU dry run: a fresh jaxcxr process would not take the GPU code paths")
    return
  for k in _ks(bench):
    _cli(bench, k)
  if bench.out_of_time():
    _skip(bench, ["cold_demo"], "time budget spent")
  else:
    _cold_demo(bench)


def _speedups(base: dict[str, Any], pre: dict[str, Any], time_key: str = "median_s",
              prefix: str = "") -> dict[str, Any]:
  """The pre-filtered record's {prefix}speedup_time and, with the generated-per-valid speed-up, their ratio."""
  out: dict[str, Any] = {f"{prefix}speedup_time": round(base[time_key] / pre[time_key], 3)}
  if base.get("generated_per_valid") and pre.get("generated_per_valid"):
    out["speedup_generated"] = round(base["generated_per_valid"] / pre["generated_per_valid"], 3)
    out[f"{prefix}speedup_ratio"] = round(out[f"{prefix}speedup_time"] / out["speedup_generated"], 3)
  return out


def _counters(runs: list[dict[str, Any]]) -> dict[str, Any]:
  """The counters of `run_rounds` results (or the CLI's), pooled over the runs."""
  total = lambda name: sum(int(r.get(name) or 0) for r in runs)
  generated, valid = total("n_generated"), total("n_valid_seen")
  return {"generated_per_valid": round(generated / valid, 4) if valid else None, "n_generated": generated,
          "n_valid_seen": valid or None, "n_latents_drawn": total("n_latents_drawn"), "n_judged": total("n_judged"),
          "n_rounds": total("n_rounds"), "n_slots": total("n_slots"),
          "pool_size": runs[0].get("pool_size"), "accept_size": runs[0].get("accept_size")}


# ----------------------------------------------------------------------------- in this process


def _in_process(bench, k: int) -> None:
  import jaxcxr  # pylint: disable=g-import-not-at-top
  from jaxcxr import sampling  # pylint: disable=g-import-not-at-top
  from jaxcxr.prefilter import cascade  # pylint: disable=g-import-not-at-top

  names = {v: f"inprocess_{v}_k{k}" for v in VARIANTS}
  if bench.out_of_time():
    _skip(bench, list(names.values()), "time budget spent")
    return
  pre = jaxcxr.load_pretrained(strictness=STRICTNESS)
  generator, scorer, cas = pre.generator, pre.scorer, pre.cascade_prefilter
  max_generated = sampling.default_max_generated(k)
  warm_up = {"unfiltered": lambda key: sampling.warm_up_sampler(scorer, generator, key, GROUP),
             "prefiltered": lambda key: cascade.warm_up_cascade(scorer, generator, cas, key, GROUP, strategy=STRATEGY)}
  sample = {"unfiltered": lambda key: sampling.sample_valid(scorer, generator, key, k, GROUP,
                                                            max_generated=max_generated),
            "prefiltered": lambda key: cascade.sample_valid_cascade(scorer, generator, cas, key, k, GROUP,
                                                                    strategy=STRATEGY, max_generated=max_generated)}
  compile_s = {v: warm_up[v](jax.random.key(0)) for v in VARIANTS}
  runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
  for i in range(bench.repeats):          # the variants in turn, so that a change of the machine's load hits both
    for v in VARIANTS:
      cpu = time.process_time()
      runs[v].append(sample[v](jax.random.key(1 + i)))
      runs[v][-1]["cpu_seconds"] = time.process_time() - cpu
  results = {}
  for v in VARIANTS:
    times = sorted(r["seconds"] for r in runs[v])
    timing = measure.Timing(compile_s[v], statistics.median(times), times[0], bench.repeats)
    results[v] = measure.record(
        bench.ctx, suite=SUITE, name=names[v], peer="jaxcxr", dtype=scorer.config.dtype,
        batch=scorer.config.batch_size, timing=timing, items=k, unit="valid images/s", k=k, group=GROUP,
        strictness=scorer.strictness_name,
        round_seconds_median=round(statistics.median(r["round_seconds"] for r in runs[v]), 4),
        cpu_median_s=round(statistics.median(r["cpu_seconds"] for r in runs[v]), 4), **_counters(runs[v]))
  rec = results["prefiltered"]
  rec.update(_judge_cost(scorer, generator, cas, rec["pool_size"], rec["accept_size"]))
  rec["judge_share"] = round(rec["n_judged"] / bench.repeats * rec["judge_s_per_latent"] / rec["median_s"], 4)
  rec.update(_speedups(results["unfiltered"], rec))
  rec.update(_speedups(results["unfiltered"], rec, "cpu_median_s", "cpu_"))
  for r in results.values():
    bench.emit(r)


def _judge_cost(scorer, generator, cas, pool_size: int, accept_size: int) -> dict[str, Any]:
  """Seconds per judged latent (base image + predictor) of the pre-filtered round: the round asked for a full set of
  accepted latents and no image, from three starts."""
  from jaxcxr.prefilter import cascade  # pylint: disable=g-import-not-at-top

  round_type = cascade._CascadeRound  # pylint: disable=protected-access
  caller = round_type(scorer, generator, cas, jax.random.key(1), GROUP, 0, STRATEGY, pool_size, accept_size)
  jax.block_until_ready(caller(0, 0, want=accept_size))
  seconds, judged = 0.0, 0
  for start in (0, pool_size, 2 * pool_size):
    t0 = time.perf_counter()
    out = jax.device_get(caller(start, 0, want=accept_size))
    seconds += time.perf_counter() - t0
    judged += int(out["judged"])
  return {"judge_s_per_latent": round(seconds / judged, 6), "judge_latents_timed": judged}


# ----------------------------------------------------------------------------- from the command line


@dataclasses.dataclass(frozen=True)
class ProcessRun:
  """One `jaxcxr` command in its own process: its JSON result, wall seconds and CPU seconds (user + system)."""
  result: dict[str, Any]
  wall_s: float
  cpu_s: float


def jaxcxr_process(args: list[str], cache: pathlib.Path, root: pathlib.Path = ROOT) -> ProcessRun:
  """Runs `python -m jaxcxr ARGS --json` in a fresh process (the code of `root`, the given compilation cache).

  The CPU seconds come from the finished child's resource usage: on a CPU shared with other
  jobs they move less than the wall time.

  Raises:
    RuntimeError: the command failed (with the end of its stderr).
  """
  env = {**os.environ, "PYTHONPATH": str(root), "JAXCXR_COMPILATION_CACHE": str(cache)}
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  t0 = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "jaxcxr", *args, "--json"], cwd=root, env=env, capture_output=True,
                        text=True, check=False)
  wall = time.perf_counter() - t0
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if proc.returncode != 0:
    raise RuntimeError(f"jaxcxr {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
  cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
  return ProcessRun(json.loads(proc.stdout.strip().splitlines()[-1]), wall, cpu)


def sample_args(k: int, variant: str, seed: int, out: pathlib.Path) -> list[str]:
  """`jaxcxr sample`'s arguments for K valid images of GROUP at STRICTNESS, with the pre-filter or without."""
  args = ["sample", "--group", GROUP, "--n", str(k), "--strictness", STRICTNESS, "--seed", str(seed), "--out", str(out)]
  return args + (["--prefilter", STRATEGY] if variant == "prefiltered" else [])


def _phases(run: ProcessRun) -> dict[str, Any]:
  timings = run.result.get("timings") or {}
  return {"phases_s": {k: round(v, 3) for k, v in timings.items()},
          "process_other_s": round(run.wall_s - sum(timings.values()), 3), "cpu_s": round(run.cpu_s, 3)}


def _cli(bench, k: int) -> None:
  names = {v: f"cli_{v}_k{k}" for v in VARIANTS}
  if bench.out_of_time():
    _skip(bench, [f"cold_sample_k{k}_{v}" for v in VARIANTS] + list(names.values()), "time budget spent")
    return
  commands = {v: "jaxcxr " + " ".join(sample_args(k, v, 1, pathlib.Path("OUT"))) + " --json" for v in VARIANTS}
  warm: dict[str, list[ProcessRun]] = {v: [] for v in VARIANTS}
  with tempfile.TemporaryDirectory(prefix="jaxcxr-time-to-k-") as tmp:
    tmp = pathlib.Path(tmp)
    for v in VARIANTS:
      # Cold start: an empty compilation cache (one per variant), which this first run fills for the warm runs.
      cold = jaxcxr_process(sample_args(k, v, 1, tmp / f"cold_{v}"), tmp / f"cache_{v}")
      bench.emit(measure.record(
          bench.ctx, suite=SUITE, name=f"cold_sample_k{k}_{v}", peer="jaxcxr", dtype="float32", batch=CLI_BATCH,
          timing=measure.Timing(cold.result["compile_seconds"], cold.wall_s, cold.wall_s, 1), items=k,
          unit="valid images/s", k=k, group=GROUP, strictness=STRICTNESS, command=commands[v],
          compilation_cache="empty", sample_s=round(cold.result["seconds"], 4), **_phases(cold)))
    for i in range(bench.repeats):        # the variants in turn, so that a change of the machine's load hits both
      for v in VARIANTS:
        warm[v].append(jaxcxr_process(sample_args(k, v, 1 + i, tmp / f"warm_{v}_{i}"), tmp / f"cache_{v}"))
  results = {}
  for v in VARIANTS:
    walls = sorted(r.wall_s for r in warm[v])
    phases = [_phases(r) for r in warm[v]]
    median = lambda values: statistics.median(list(values))
    results[v] = measure.record(
        bench.ctx, suite=SUITE, name=names[v], peer="jaxcxr", dtype="float32", batch=CLI_BATCH,
        timing=measure.Timing(median(r.result["compile_seconds"] for r in warm[v]), median(walls), walls[0],
                              bench.repeats),
        items=k, unit="valid images/s", k=k, group=GROUP, strictness=STRICTNESS, command=commands[v],
        compilation_cache="warm", sample_median_s=round(median(r.result["seconds"] for r in warm[v]), 4),
        cpu_median_s=round(median(r.cpu_s for r in warm[v]), 3),
        phases_median_s={p: round(median(x["phases_s"].get(p, 0.0) for x in phases), 3) for p in phases[0]["phases_s"]},
        process_other_median_s=round(median(x["process_other_s"] for x in phases), 3),
        **_counters([r.result for r in warm[v]]))
  rec = results["prefiltered"]
  rec.update(_speedups(results["unfiltered"], rec))
  rec.update(_speedups(results["unfiltered"], rec, "sample_median_s", "sampling_"))
  rec.update(_speedups(results["unfiltered"], rec, "cpu_median_s", "cpu_"))
  for r in results.values():
    bench.emit(r)


def _cold_demo(bench) -> None:
  with tempfile.TemporaryDirectory(prefix="jaxcxr-time-to-k-") as tmp:
    tmp = pathlib.Path(tmp)
    run = jaxcxr_process(["demo", "--out", str(tmp / "demo")], tmp / "cache")
  result = run.result
  compile_s = sum(v for step, v in result["timings"].items() if step.startswith("compile"))
  bench.emit(measure.record(
      bench.ctx, suite=SUITE, name="cold_demo", peer="jaxcxr", dtype="float32", batch=8,
      timing=measure.Timing(compile_s, run.wall_s, run.wall_s, 1), items=result["n"], unit="valid images/s",
      k=result["n"], group=result["group"], strictness=result["strictness"], command="jaxcxr demo --out OUT --json",
      compilation_cache="empty", phases_s={k: round(v, 3) for k, v in result["timings"].items()},
      process_other_s=round(run.wall_s - result["seconds"], 3), cpu_s=round(run.cpu_s, 3),
      demo_seconds=round(result["seconds"], 3), speedup=result.get("speedup")))
