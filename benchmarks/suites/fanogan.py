"""f-AnoGAN (izi_f) scoring: encoder -> z -> generator -> residual and discriminator-feature loss.

jaxcxr: `fanogan.score_program`, the compiled call of `fanogan_scores` for one batch
(uint8 images in, score, losses, residual and reconstruction out). Twin: `twins` encoder, generator and
discriminator features with the same weights and formula.
"""

from __future__ import annotations

import numpy as np

from benchmarks import measure, torch_peer
from jaxcxr.anomaly import fanogan
from jaxcxr.models import make_condition

SUITE = "fanogan"
CPU_BATCHES, GPU_BATCHES = [1, 16, 64], [1, 64, 512]


def run(bench) -> None:
  m = bench.models()
  e, g, d = m.encoder, m.normal_generator, m.normal_discriminator
  r = e.config.resolution
  rng = np.random.default_rng(0)
  for b in bench.batches(cpu=CPU_BATCHES, gpu=GPU_BATCHES):
    if bench.out_of_time():
      return
    images = rng.integers(0, 256, (b, r, r), dtype=np.uint8)
    cond = make_condition(rng.choice(["M", "F"], b), rng.integers(18, 80, b), conditions=g.config.conditions)
    with bench.guard(SUITE, "score", "jaxcxr", dtype="float32", batch=b):
      program = fanogan.score_program(e, g, d, images, cond)
      timing, compiled = measure.time_compiled(program.fn, program.fresh_args, repeats=bench.repeats)
      flops = measure.cost_flops(compiled)
      bench.emit(measure.record(bench.ctx, suite=SUITE, name="score", peer="jaxcxr", dtype="float32", batch=b,
                                timing=timing, items=b, unit="images/s", resolution=r,
                                **measure.roofline(None if flops is None else flops / b, b / timing.median_s,
                                                   bench.peak)))
    torch_peer.fanogan(bench, m, images, cond, SUITE)
