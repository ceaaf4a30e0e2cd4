"""Wall time to K post-filter-valid 256x256 images, with and without the shipped cascade pre-filter.

jaxcxr only (no twin: the pre-filter is this library's): `sampling.sample_valid` (every
latent generated and post-scored) and `prefilter.cascade.sample_valid_cascade` (the
64x64 base images judged first, only promising ones finished), each compiled first
(`compile_s` is the warm-up: compile plus one round), then timed over `repeats` keys.
`generated_per_valid` pools the repeats; the pre-filtered record carries
`speedup_time` and `speedup_generated` over the unfiltered one of the same run.

Needs the shipped models (a cascade and its pre-filter): `--quick` records it as skipped.
"""

from __future__ import annotations

import statistics

import jax

from benchmarks import measure

SUITE = "time_to_k_valid"
GROUP = "58_64f"
CPU_K, GPU_K = 16, 64     # valid images wanted, and the post-filter's batch


def run(bench) -> None:
  if bench.quick:
    bench.emit(measure.skipped(bench.ctx, suite=SUITE, name="prefiltered", peer="jaxcxr",
                               reason="needs the shipped cascade and its pre-filter (not in --quick)"))
    return
  import jaxcxr  # pylint: disable=g-import-not-at-top
  from jaxcxr import sampling  # pylint: disable=g-import-not-at-top
  from jaxcxr.prefilter import cascade  # pylint: disable=g-import-not-at-top

  k = bench.size(GPU_K) if bench.gpu else CPU_K       # a GPU dry run: GPU_K / DRY_RUN_DIVISOR
  pre = jaxcxr.load_pretrained(batch_size=k)
  generator, scorer, cas = pre.generator, pre.scorer, pre.cascade_prefilter
  variants = {
      "unfiltered": (lambda key: sampling.warm_up_sampler(scorer, generator, key, GROUP),
                     lambda key: sampling.sample_valid(scorer, generator, key, k, GROUP, max_generated=200 * k)),
      "prefiltered": (lambda key: cascade.warm_up_cascade(scorer, generator, cas, key, GROUP),
                      lambda key: cascade.sample_valid_cascade(scorer, generator, cas, key, k, GROUP,
                                                               max_generated=200 * k)),
  }
  results = {}
  for name, (warm_up, sample) in variants.items():
    compile_s = warm_up(jax.random.key(0))
    runs = [sample(jax.random.key(1 + i)) for i in range(bench.repeats)]
    times = sorted(r["seconds"] for r in runs)
    generated = sum(r["n_generated"] for r in runs)
    valid = sum(r["n_valid_seen"] for r in runs)
    timing = measure.Timing(compile_s, statistics.median(times), times[0], bench.repeats)
    results[name] = rec = measure.record(
        bench.ctx, suite=SUITE, name=name, peer="jaxcxr", dtype=scorer.config.dtype, batch=scorer.config.batch_size,
        timing=timing, items=k, unit="valid images/s", k=k, group=GROUP, strictness=scorer.strictness_name,
        generated_per_valid=round(generated / valid, 4) if valid else None,
        n_generated=generated, n_valid_seen=valid)
  base, pre_rec = results["unfiltered"], results["prefiltered"]
  pre_rec["speedup_time"] = round(base["median_s"] / pre_rec["median_s"], 3)
  if base["generated_per_valid"] and pre_rec["generated_per_valid"]:
    pre_rec["speedup_generated"] = round(base["generated_per_valid"] / pre_rec["generated_per_valid"], 3)
  for rec in results.values():
    bench.emit(rec)
