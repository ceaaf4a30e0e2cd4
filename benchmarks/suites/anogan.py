"""AnoGAN latent search: `steps` Adam steps on z per image, batched in one compiled `lax.scan`.

jaxcxr: `anogan.search_program` (the jitted search `search_latents` runs, with its
arguments), lowered and compiled ahead of time; a timed run covers every step of B
images. On the shipped models it searches the normal-only cascade's 64x64 base image
(`LatentSearchConfig(base_image=True)`, the setting of `jaxcxr evaluate anomaly --method
anogan --base-image`). Twins, with the same weights, loss and Adam: the batched PyTorch
search (eager; `torch.compile` with `--torch-compile`) and the reference code's per-image
loop (one image at a time, timed on a few images for a few steps and scaled linearly to
`steps`, marked `extrapolated`).

A last record, `search_shipped`, times the search `jaxcxr evaluate anomaly --method anogan` runs
by default (`anogan.SHIPPED_SEARCH`: its steps, the feature term on the CXR encoder's stage 2,
`anogan.EncoderFeatures`) at the largest batch: the seconds one image costs as users run it.
It has no twin.

Both run `steps + 1` loss-and-gradient evaluations (the last one only gives the final
loss) and `steps` Adam updates.
FLOPs: XLA counts a scan body once, so one step (`anogan.step_program`: the loss and its
gradient for B images) is costed as its own function and multiplied by `steps + 1`.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from benchmarks import measure, torch_peer
from jaxcxr.anomaly import anogan
from jaxcxr.models import make_condition

SUITE = "anogan"
CPU_BATCHES, GPU_BATCHES = [1, 8, 64], [1, 64, 256]


def queries(generator, config, n: int):
  """uint8 (n, R, R) query images at the search resolution and their condition rows."""
  rng = np.random.default_rng(0)
  r = anogan.search_resolution(generator, config)
  images = rng.integers(0, 256, (n, r, r), dtype=np.uint8)
  cond = make_condition(rng.choice(["M", "F"], n), rng.integers(18, 80, n), conditions=generator.config.conditions)
  return images, cond


def step_flops(generator, discriminator, config, images, cond) -> float | None:
  """FLOPs of one search step (value and gradient of the loss) for these B images."""
  program = anogan.step_program(generator, discriminator, images, cond, config)
  return measure.cost_flops(program.fn.lower(*program.args))


def _measure(bench, g, d, config, images, cond, name: str = "search") -> None:
  """Times the compiled search of these B images and emits its record."""
  b, steps = len(images), config.steps
  program = anogan.search_program(g, d, images, cond, jax.random.key(0), config)
  # Fresh copies of the donated starts for every run.
  timing, _ = measure.time_compiled(program.fn, program.fresh_args, repeats=bench.repeats)
  flops = step_flops(g, d, config, images, cond)
  per_image = None if flops is None else flops / b * (steps + 1)
  bench.emit(measure.record(bench.ctx, suite=SUITE, name=name, peer="jaxcxr", dtype=config.dtype, batch=b,
                            timing=timing, items=b, unit="images/s", steps=steps, base_image=config.base_image,
                            resolution=images.shape[1], ms_per_step=round(1e3 * timing.median_s / steps, 3),
                            feature_weight=config.feature_weight, feature_term=type(d).__name__,
                            seconds_per_image=round(timing.median_s / b, 4),
                            **measure.roofline(per_image, b / timing.median_s, bench.peak)))


def run(bench) -> None:
  m = bench.models()
  steps = bench.steps or (5 if bench.quick else 100)
  g, d = m.normal_generator, m.normal_discriminator
  dtypes = ["float32"] + (["bfloat16"] if bench.torch_bf16 else [])
  all_batches = bench.batches(cpu=CPU_BATCHES, gpu=GPU_BATCHES)
  for dtype in dtypes:
    config = anogan.LatentSearchConfig(steps=steps, base_image=m.anogan_base_image, dtype=dtype)
    images, cond = queries(g, config, max(all_batches))
    for b in all_batches:
      if bench.out_of_time():
        return
      with bench.guard(SUITE, "search", "jaxcxr", dtype=dtype, batch=b):
        _measure(bench, g, d, config, images[:b], cond[:b])
      torch_peer.anogan_batched(bench, m, config, images[:b], cond[:b], SUITE)
    torch_peer.anogan_per_image(bench, m, config, images, cond, SUITE)
  # The default search as users run it: its own steps (unless --steps), the encoder's feature term.
  shipped = dataclasses.replace(anogan.SHIPPED_SEARCH, base_image=m.anogan_base_image,
                                steps=bench.steps or (5 if bench.quick else anogan.SHIPPED_SEARCH.steps))
  features = anogan.EncoderFeatures(m.cxr_encoder, anogan.SHIPPED_FEATURE_STAGE)
  b = max(all_batches)
  if not bench.out_of_time():
    images, cond = queries(g, shipped, b)
    with bench.guard(SUITE, "search_shipped", "jaxcxr", dtype=shipped.dtype, batch=b):
      _measure(bench, g, features, shipped, images, cond, name="search_shipped")
