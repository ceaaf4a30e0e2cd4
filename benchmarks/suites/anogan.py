"""AnoGAN latent search: `steps` Adam steps on z per image, batched in one compiled `lax.scan`.

jaxcxr: `anomaly._search_jit` (what `search_latents` runs), lowered and compiled ahead of
time; a timed run covers every step of B images. On the shipped models it searches the
normal-only cascade's 64x64 base image (`LatentSearchConfig(base_image=True)`, the
setting of `jaxcxr evaluate anomaly --method anogan --base-image`). Twins, with the same
weights, loss and Adam: the batched PyTorch search (eager; `torch.compile` with
`--torch-compile`) and the reference code's per-image loop (one image at a time, timed on
a few images for a few steps and scaled linearly to `steps`, marked `extrapolated`).

Both run `steps + 1` loss-and-gradient evaluations (the last one only gives the final
loss) and `steps` Adam updates.
FLOPs: XLA counts a scan body once, so one step (value_and_grad of the loss for B
images) is costed as its own function and multiplied by `steps + 1`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import measure, torch_peer
from jaxcxr import anomaly
from jaxcxr.models import make_condition

SUITE = "anogan"


def queries(generator, config, n: int):
  """uint8 (n, R, R) query images at the search resolution and their condition rows."""
  rng = np.random.default_rng(0)
  r = anomaly.search_resolution(generator, config)
  images = rng.integers(0, 256, (n, r, r), dtype=np.uint8)
  cond = make_condition(rng.choice(["M", "F"], n), rng.integers(18, 80, n), conditions=generator.config.conditions)
  return images, cond


def step_flops(generator, discriminator, config, images, cond) -> float | None:
  """FLOPs of one search step (value and gradient of the loss) for these B images."""
  g_def, d_def = anomaly._graphdefs(dataclasses.replace(generator.config, dtype=config.dtype),  # pylint: disable=protected-access
                                    dataclasses.replace(discriminator.config, dtype=config.dtype))
  x = anomaly._as_signed_images(images, anomaly.search_resolution(generator, config))  # pylint: disable=protected-access
  z = jnp.zeros((x.shape[0], generator.config.latent_dim), jnp.float32)

  def loss_and_grad(g_state, d_state, x, c, z):
    g, d = nnx.merge(g_def, g_state), nnx.merge(d_def, d_state)
    render = g.base_image if config.base_image else g
    fx = d.features(x)

    def total(z):
      fake = render(z, c)
      losses = ((1 - config.feature_weight) * jnp.abs(x - fake).mean(axis=(1, 2, 3))
                + config.feature_weight * jnp.abs(fx - d.features(fake)).mean(axis=(1, 2, 3)))
      return losses.sum()

    return jax.value_and_grad(total)(z)

  return measure.function_flops(loss_and_grad, nnx.state(generator), nnx.state(discriminator), x,
                                jnp.asarray(cond), z)


def run(bench) -> None:
  m = bench.models()
  steps = bench.steps or (5 if bench.quick else 100)
  g, d = m.normal_generator, m.normal_discriminator
  dtypes = ["float32"] + (["bfloat16"] if bench.torch_bf16 else [])
  all_batches = bench.batches(cpu=[1, 8, 64], gpu=[1, 64, 256])
  for dtype in dtypes:
    config = anomaly.LatentSearchConfig(steps=steps, base_image=m.anogan_base_image, dtype=dtype)
    images, cond = queries(g, config, max(all_batches))
    for b in all_batches:
      if bench.out_of_time():
        return
      key = jax.random.key(0)
      make_args = lambda: anomaly._prepare(g, d, images[:b], cond[:b], key, config, 0, None)[0]  # pylint: disable=protected-access
      _, static = anomaly._prepare(g, d, images[:1], cond[:1], key, config, 0, None)  # pylint: disable=protected-access
      timing, _ = measure.time_compiled(anomaly._search_jit, make_args, repeats=bench.repeats,  # pylint: disable=protected-access
                                        static_argnums=(0, 1), static=static)
      flops = step_flops(g, d, config, images[:b], cond[:b])
      per_image = None if flops is None else flops / b * (steps + 1)
      bench.emit(measure.record(bench.ctx, suite=SUITE, name="search", peer="jaxcxr", dtype=dtype, batch=b,
                                timing=timing, items=b, unit="images/s", steps=steps,
                                base_image=config.base_image, resolution=images.shape[1],
                                ms_per_step=round(1e3 * timing.median_s / steps, 3),
                                **measure.roofline(per_image, b / timing.median_s, bench.peak)))
      torch_peer.anogan_batched(bench, m, config, images[:b], cond[:b], SUITE)
    torch_peer.anogan_per_image(bench, m, config, images, cond, SUITE)
