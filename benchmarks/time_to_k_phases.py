"""Where the time to K valid images goes: the parts of a sampling round, and `jaxcxr sample` run by run.

    python -m benchmarks.time_to_k_phases [--repeats N] [--k K] [--source NAME=DIR ...] [--skip-components]
        [--note TEXT] [--out FILE]

Two measurements, written as one JSON object (stdout, and FILE with --out):

* `components` (this checkout, in this process, the shipped models at strict): seconds per
  latent of the cascade pre-filter's judge (the 64x64 base image and the score predictor's
  log P(valid)) over a pool of 384 latents, in chunks of 2 to 32 and in one batch; seconds
  per image of the finishing (4x upsampler and post-filter) of 32 base images in chunks of
  `batching.CPU_CHUNK` and in one batch; seconds per image of an unfiltered round (the
  whole cascade and the post-filter, chunked); the compile seconds of both sampling rounds
  (no persistent cache in this process). Each part runs `--repeats` times, the parts
  interleaved, after an untimed call: median and minimum.
* `cli`: `jaxcxr sample --group 58_64f --n K --strictness strict [--prefilter youden]` (seed
  0, the command of issue 27), each run a fresh process, for each `--source` (default: this
  checkout; e.g. `--source before=/tmp/old` for the code of another commit, unpacked with its
  `checkpoints/`), runs interleaved across sources and variants, each source with its own
  compilation cache, empty for the first run of each variant (`cold`, which fills it) and
  warm for the `--repeats` timed ones: the process's wall time, the CLI's result (seconds,
  compile seconds, rounds, counters, its `timings` when the code has them) and the speed-ups
  per source on the warm runs (`speedup_time` on the wall time, `speedup_cpu` on the
  process's CPU seconds, `speedup_sampling` on the rounds' seconds, `speedup_generated`, and
  each time's ratio over the generated one: `time_ratio`, `cpu_ratio`, `sampling_ratio`).

The suite `time_to_k_valid` of `python -m benchmarks.run` records the same CLI figures, with
cold starts; this script is the analysis behind the round's design (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import measure
from benchmarks.suites import time_to_k_valid as suite

POOL = 384          # the shipped cascade pre-filter's default pool at strict (32 x ceil(2 / 0.173))
ACCEPT = 32         # the CLI's post-filter batch
JUDGE_CHUNKS = (2, 4, 8, 16, 32, None)
FINISH_CHUNKS = (2, None)


def _interleaved(calls: dict[str, Any], repeats: int) -> dict[str, dict[str, float]]:
  """Median and minimum wall seconds and median CPU seconds (this process's, every thread) of each call, `repeats`
  rounds of all of them in turn, after one untimed call each."""
  for fn in calls.values():
    jax.block_until_ready(fn())
  times: dict[str, list[float]] = {name: [] for name in calls}
  cpu: dict[str, list[float]] = {name: [] for name in calls}
  for _ in range(repeats):
    for name, fn in calls.items():
      t0, c0 = time.perf_counter(), time.process_time()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - t0)
      cpu[name].append(time.process_time() - c0)
  return {name: {"median_s": statistics.median(v), "min_s": min(v), "cpu_median_s": statistics.median(cpu[name])}
          for name, v in times.items()}


def components(repeats: int) -> dict[str, Any]:
  """The parts of a round, per latent or image (see the module docstring)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top

  import jaxcxr  # pylint: disable=g-import-not-at-top
  from jaxcxr import batching, sampling, scoring  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.condition import group_condition_batch  # pylint: disable=g-import-not-at-top
  from jaxcxr.prefilter import cascade  # pylint: disable=g-import-not-at-top

  pre = jaxcxr.load_pretrained(strictness=suite.STRICTNESS)
  generator, scorer, cas = pre.generator, pre.scorer, pre.cascade_prefilter
  key = jax.random.key(0)
  g_def, g_state = nnx.split(generator)
  p_def, p_state = nnx.split(cas.predictor)
  u_def, c_def = scorer.graphdefs
  u_state, c_state = scorer.states
  calibration = scorer.device_calibration
  cond = jnp.asarray(group_condition_batch(suite.GROUP, POOL, 0, conditions=generator.config.conditions))
  z = scoring.latents_at(key, jnp.arange(POOL, dtype=jnp.int32), generator.config.latent_dim)

  base_and_log_p = cascade._base_and_log_p  # pylint: disable=protected-access

  @functools.partial(jax.jit, static_argnames="chunk")
  def judge(g_state, p_state, z, cond, calibration, *, chunk):
    g, p = nnx.merge(g_def, g_state), nnx.merge(p_def, p_state)
    return batching.in_chunks(lambda z, c: base_and_log_p(g, p, z, c, calibration), z, cond, chunk=chunk)

  @functools.partial(jax.jit, static_argnames="chunk")
  def finish(g_state, u_state, c_state, base, z, calibration, *, chunk):
    g = nnx.merge(g_def, g_state)

    def items(base, z):
      x = jnp.clip((g.upsample(base, z) + 1.0) * 0.5, 0.0, 1.0)
      return scoring.score_batch((u_def, c_def), (u_state, c_state), calibration, x, scorer.config, False)["valid"]

    return batching.in_chunks(items, base, z, chunk=chunk)

  base, _ = judge(g_state, p_state, z, cond, calibration, chunk=8)
  base, z_a = base[:ACCEPT], z[:ACCEPT]
  rounds = {"unfiltered": sampling.UnfilteredRound(scorer, generator, key, suite.GROUP, 0, ACCEPT)}
  compile_s = {"unfiltered_round": sampling.warm_up_sampler(scorer, generator, key, suite.GROUP),
               "cascade_round": cascade.warm_up_cascade(scorer, generator, cas, key, suite.GROUP,
                                                        strategy=suite.STRATEGY)}
  calls = {f"judge_chunk_{c}": functools.partial(judge, g_state, p_state, z, cond, calibration, chunk=c)
           for c in JUDGE_CHUNKS}
  calls.update({f"finish_chunk_{c}": functools.partial(finish, g_state, u_state, c_state, base, z_a, calibration,
                                                       chunk=c) for c in FINISH_CHUNKS})
  calls["unfiltered_round"] = lambda: rounds["unfiltered"](ACCEPT, ACCEPT)   # needs every slot: all 32 generated
  timed = _interleaved(calls, repeats)
  per = lambda name, n: {k: round(v / n, 6) for k, v in timed[name].items()}
  return {"pool": POOL, "accept": ACCEPT, "cpu_chunk": batching.default_chunk(),
          "judge_s_per_latent": {str(c): per(f"judge_chunk_{c}", POOL) for c in JUDGE_CHUNKS},
          "finish_s_per_image": {str(c): per(f"finish_chunk_{c}", ACCEPT) for c in FINISH_CHUNKS},
          "unfiltered_round_s_per_image": per("unfiltered_round", ACCEPT),
          "round_compile_s": {k: round(v, 3) for k, v in compile_s.items()}}


_KEEP = ("seconds", "round_seconds", "compile_seconds", "n_valid", "n_generated", "n_valid_seen", "valid_rate",
         "n_rounds", "n_latents_drawn", "n_judged", "n_slots", "pool_size", "accept_size", "timings")


def _source_commit(root: pathlib.Path) -> str | None:
  proc = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
  return proc.stdout.strip() or None


def cli(sources: dict[str, pathlib.Path], k: int, repeats: int) -> dict[str, Any]:
  """`jaxcxr sample` of every source and variant, interleaved (see the module docstring)."""
  runs: dict[str, dict[str, list[dict[str, Any]]]] = {s: {v: [] for v in suite.VARIANTS} for s in sources}
  cold: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in sources}
  with tempfile.TemporaryDirectory(prefix="jaxcxr-time-to-k-") as tmp:
    tmp = pathlib.Path(tmp)
    for i in range(repeats + 1):                     # run 0 starts with an empty cache and fills it
      for name, root in sources.items():
        for variant in suite.VARIANTS:
          run = suite.jaxcxr_process(suite.sample_args(k, variant, 0, tmp / f"{name}_{variant}_{i}"),
                                     tmp / f"cache_{name}_{variant}", root)
          kept = {"wall_s": round(run.wall_s, 3), "cpu_s": round(run.cpu_s, 3),
                  **{f: run.result.get(f) for f in _KEEP}}
          if i:
            runs[name][variant].append(kept)
          else:
            cold[name][variant] = kept
  out: dict[str, Any] = {"command": "jaxcxr " + " ".join(suite.sample_args(k, "prefiltered", 0, pathlib.Path("OUT")))
                         + " --json (and the same without --prefilter youden)", "k": k, "sources": {}}
  for name, root in sources.items():
    median = lambda variant, field: statistics.median(r[field] for r in runs[name][variant])
    per_valid = lambda variant: (runs[name][variant][0]["n_generated"]
                                 / (runs[name][variant][0]["valid_rate"] * runs[name][variant][0]["n_generated"]))
    speedup = {"speedup_time": median("unfiltered", "wall_s") / median("prefiltered", "wall_s"),
               "speedup_cpu": median("unfiltered", "cpu_s") / median("prefiltered", "cpu_s"),
               "speedup_sampling": median("unfiltered", "seconds") / median("prefiltered", "seconds"),
               "speedup_generated": per_valid("unfiltered") / per_valid("prefiltered")}
    for which in ("time", "cpu", "sampling"):
      speedup[f"{which}_ratio"] = speedup[f"speedup_{which}"] / speedup["speedup_generated"]
    out["sources"][name] = {"root": str(root), "commit": _source_commit(root), "cold": cold[name], "runs": runs[name],
                            "median_wall_s": {v: median(v, "wall_s") for v in suite.VARIANTS},
                            "median_cpu_s": {v: median(v, "cpu_s") for v in suite.VARIANTS},
                            "median_seconds": {v: median(v, "seconds") for v in suite.VARIANTS},
                            **{key: round(value, 3) for key, value in speedup.items()}}
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.time_to_k_phases", description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=3, help="timed runs of each part and command (default 3)")
  parser.add_argument("--k", type=int, default=32, help="valid images per `jaxcxr sample` run (default 32)")
  parser.add_argument("--source", action="append", default=[], metavar="NAME=DIR",
                      help="a source tree whose `jaxcxr sample` to time (repeatable; default: this checkout)")
  parser.add_argument("--skip-components", action="store_true", help="only the command-line runs")
  parser.add_argument("--note", default="", help="free text kept in the output (e.g. the machine's load)")
  parser.add_argument("--out", help="also write the JSON object to this file")
  args = parser.parse_args(argv)
  if args.repeats < 1 or args.k < 1:
    parser.error("--repeats and --k must be >= 1")
  sources = {}
  for item in args.source or [f"this={suite.ROOT}"]:
    name, sep, root = item.partition("=")
    if not sep or not pathlib.Path(root).is_dir():
      parser.error(f"--source: expected NAME=DIR with an existing DIR, got {item!r}")
    sources[name] = pathlib.Path(root).resolve()
  argv = sys.argv[1:] if argv is None else argv
  record: dict[str, Any] = {"command": shlex.join(["python", "-m", "benchmarks.time_to_k_phases", *argv]),
                            "note": args.note, "context": measure.context()}
  if not args.skip_components:
    record["components"] = components(args.repeats)
    print(json.dumps(record["components"]), file=sys.stderr, flush=True)
  record["cli"] = cli(sources, args.k, args.repeats)
  text = json.dumps(record, indent=1)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n", encoding="utf-8")
  return 0


if __name__ == "__main__":
  sys.exit(main())
