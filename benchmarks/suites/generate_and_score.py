"""Generate and post-filter: z -> 256x256 image -> lung U-Net, classifier, Grad-CAM, five scores.

jaxcxr: `Scorer.generate_and_score_program`, the one compiled call every sampler runs per
batch (latents of the sample indices, the cascade generator, the U-Net, the classifier
with its Grad-CAM, the symmetry features and scores). Twin: `twins.TorchGenerateAndScore`
loaded with the same weights and calibration, eager (and `torch.compile` with
`--torch-compile`). FLOPs per image come from XLA's cost analysis of the call at batch 1
(larger batches run in chunks, a loop whose body XLA costs once).
"""

from __future__ import annotations

import itertools

import jax
import numpy as np

from benchmarks import measure, torch_peer
from jaxcxr.models.condition import group_condition_batch

SUITE = "generate_and_score"
GROUP = "58_64f"
CPU_BATCHES, GPU_BATCHES = [1, 8, 32, 64], [1, 64, 256, 1024]


def _flops_per_image(m, scorer, key) -> float | None:
  """XLA's cost of one image: the call at batch 1, where nothing is chunked."""
  program = scorer.with_config(batch_size=1).generate_and_score_program(m.generator, key, GROUP)
  return measure.cost_flops(program.fn.lower(*program.args))


def _measure(bench, m, scorer, b: int, dtype: str, flops_per_image: float | None) -> float | None:
  """Times the compiled call at batch b and emits its record; returns the FLOPs per image (for the next batches)."""
  key = jax.random.key(0)
  counter = itertools.count()
  # Fresh sample indices every run (different latents, same shapes).
  make_args = lambda: scorer.generate_and_score_program(m.generator, key, GROUP, start=b * next(counter)).args
  program = scorer.generate_and_score_program(m.generator, key, GROUP)
  timing, compiled = measure.time_compiled(program.fn, make_args, repeats=bench.repeats)
  if b == 1:   # chunked calls (`batching.in_chunks`) loop over chunks, and XLA costs a loop body once
    flops_per_image = measure.cost_flops(compiled)
  elif flops_per_image is None:
    flops_per_image = _flops_per_image(m, scorer, key)
  bench.emit(measure.record(bench.ctx, suite=SUITE, name="generate_and_score", peer="jaxcxr", dtype=dtype,
                            batch=b, timing=timing, items=b, unit="images/s", resolution=m.generator.config.resolution,
                            **measure.roofline(flops_per_image, b / timing.median_s, bench.peak)))
  return flops_per_image


def run(bench) -> None:
  m = bench.models()
  dtypes = ["float32"] + (["bfloat16"] if bench.torch_bf16 else [])
  for dtype in dtypes:
    flops_per_image = None
    for b in bench.batches(cpu=CPU_BATCHES, gpu=GPU_BATCHES):
      if bench.out_of_time():
        return
      scorer = m.scorer.with_config(batch_size=b, dtype=dtype)
      cond = np.repeat(group_condition_batch(GROUP, 1, 0, conditions=m.generator.config.conditions), b, axis=0)
      with bench.guard(SUITE, "generate_and_score", "jaxcxr", dtype=dtype, batch=b):
        flops_per_image = _measure(bench, m, scorer, b, dtype, flops_per_image)
      torch_peer.generate_and_score(bench, m, scorer, cond, b, dtype, SUITE)
