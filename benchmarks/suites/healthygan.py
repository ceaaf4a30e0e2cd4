"""HealthyGAN scoring: the translator's healthy version of each image, score = mean |x - output|.

jaxcxr: `anomaly._healthygan_batch`, the compiled call of `healthygan_scores`. Twin: the
`twins` translator with the same weights and the same blend and score.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import measure, torch_peer
from jaxcxr import anomaly

SUITE = "healthygan"


def run(bench) -> None:
  m = bench.models()
  t = m.translator
  r = t.config.resolution
  graphdef, state = anomaly._translator_graphdef(t.config), nnx.state(t)  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  for b in bench.batches(cpu=[1, 16, 64], gpu=[1, 64, 512]):
    if bench.out_of_time():
      return
    images = rng.integers(0, 256, (b, r, r), dtype=np.uint8)
    make_args = lambda: (graphdef, state, jnp.asarray(images))
    timing, compiled = measure.time_compiled(anomaly._healthygan_batch, make_args, repeats=bench.repeats,  # pylint: disable=protected-access
                                             static_argnums=(0,))
    flops = measure.cost_flops(compiled)
    bench.emit(measure.record(bench.ctx, suite=SUITE, name="score", peer="jaxcxr", dtype="float32", batch=b,
                              timing=timing, items=b, unit="images/s", resolution=r,
                              **measure.roofline(None if flops is None else flops / b, b / timing.median_s,
                                                 bench.peak)))
    torch_peer.healthygan(bench, m, images, SUITE)
