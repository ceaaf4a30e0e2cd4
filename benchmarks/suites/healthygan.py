"""HealthyGAN scoring: the translator's healthy version of each image, score = mean |x - output|.

jaxcxr: `healthygan.score_program`, the compiled call of `healthygan_scores`. Twin: the
`twins` translator with the same weights and the same blend and score.
"""

from __future__ import annotations

import numpy as np

from benchmarks import measure, torch_peer
from jaxcxr.anomaly import healthygan

SUITE = "healthygan"
CPU_BATCHES, GPU_BATCHES = [1, 16, 64], [1, 64, 512]


def run(bench) -> None:
  m = bench.models()
  t = m.translator
  r = t.config.resolution
  rng = np.random.default_rng(0)
  for b in bench.batches(cpu=CPU_BATCHES, gpu=GPU_BATCHES):
    if bench.out_of_time():
      return
    images = rng.integers(0, 256, (b, r, r), dtype=np.uint8)
    with bench.guard(SUITE, "score", "jaxcxr", dtype="float32", batch=b):
      program = healthygan.score_program(t, images)
      timing, compiled = measure.time_compiled(program.fn, program.fresh_args, repeats=bench.repeats)
      flops = measure.cost_flops(compiled)
      bench.emit(measure.record(bench.ctx, suite=SUITE, name="score", peer="jaxcxr", dtype="float32", batch=b,
                                timing=timing, items=b, unit="images/s", resolution=r,
                                **measure.roofline(None if flops is None else flops / b, b / timing.median_s,
                                                   bench.peak)))
    torch_peer.healthygan(bench, m, images, SUITE)
