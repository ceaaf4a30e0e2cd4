"""Learned super-resolution stage of a cascade generator: low-resolution radiograph -> scale x larger.

The stage adds detail to the bilinear up-sampling of its input (residual learning):

    y = clip(upsample(x) + detail(x, noise), -1, 1)

`detail` is a small convolutional network without normalisation (as in ESRGAN):
`input_blocks` residual blocks at the input resolution, then one stage per doubling
(bilinear 2x, a 3x3 convolution, per-pixel noise with a learned per-channel strength,
a second 3x3 convolution), then a 3x3 convolution to one channel. Bilinear-then-convolve
up-sampling makes every output pixel with the same weights: no checkerboard.

It is trained on real radiographs (`jaxcxr.train.upsampler`): real images down-sampled
to the input size are the inputs, the originals the targets. Inside a cascade
(`GeneratorConfig.upsampler`) its noise comes from the latent, so a sample stays a pure
function of (weights, z, condition).

Parameter names: `stem`, `blocks[i]` (`conv1`, `conv2`), `stages[i]` (`conv1`,
`noise_strength`, `conv2`), `out`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr.config import UpsamplerConfig
from jaxcxr.models.layers import Conv, upsample2

__all__ = ["Upsampler", "load_upsampler"]

_NEGATIVE_SLOPE = 0.2


def _act(x: jax.Array) -> jax.Array:
  return jax.nn.leaky_relu(x, _NEGATIVE_SLOPE)


class _ResidualBlock(nnx.Module):
  """x + conv(act(conv(act(x)))) at constant size, NHWC."""

  def __init__(self, channels: int, *, dtype, rngs: nnx.Rngs):
    self.conv1 = Conv(channels, channels, 3, dtype=dtype, rngs=rngs)
    self.conv2 = Conv(channels, channels, 3, kernel_init=nnx.initializers.zeros_init(), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x + self.conv2(_act(self.conv1(_act(x))))


class _Stage(nnx.Module):
  """Bilinear 2x, conv, noise, conv: (B, H, W, c_in) -> (B, 2H, 2W, c_out)."""

  def __init__(self, c_in: int, c_out: int, noise: bool, *, dtype, rngs: nnx.Rngs):
    self.conv1 = Conv(c_in, c_out, 3, dtype=dtype, rngs=rngs)
    self.noise_strength = nnx.Param(jnp.zeros((c_out,), jnp.float32)) if noise else None
    self.conv2 = Conv(c_out, c_out, 3, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, noise: jax.Array | None) -> jax.Array:
    h = self.conv1(upsample2(x))
    if self.noise_strength is not None:
      h = h + (noise * self.noise_strength[...].reshape(1, 1, 1, -1)).astype(h.dtype)
    return _act(self.conv2(_act(h)))


class Upsampler(nnx.Module):
  """Super-resolution stage, NHWC images in [-1, 1] -> `scale` x larger images in [-1, 1].

  Examples:
    >>> from flax import nnx
    >>> import jax, jax.numpy as jnp
    >>> from jaxcxr.config import UpsamplerConfig
    >>> up = Upsampler(UpsamplerConfig(scale=2, input_channels=4, input_blocks=1, stage_channels=(4,)),
    ...                rngs=nnx.Rngs(0))
    >>> up(jnp.zeros((2, 8, 8, 1)), jax.random.key(0)).shape
    (2, 16, 16, 1)
  """

  def __init__(self, config: UpsamplerConfig, *, rngs: nnx.Rngs):
    self.config = config
    dtype = jnp.dtype(config.dtype)
    c = config.input_channels
    self.stem = Conv(1, c, 3, dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([_ResidualBlock(c, dtype=dtype, rngs=rngs) for _ in range(config.input_blocks)])
    channels = (c,) + tuple(config.stage_channels)
    self.stages = nnx.List([_Stage(c_in, c_out, config.noise, dtype=dtype, rngs=rngs)
                            for c_in, c_out in zip(channels[:-1], channels[1:])])
    # Zero output layer: the untrained stage is exactly bilinear up-sampling.
    self.out = Conv(channels[-1], 1, 3, kernel_init=nnx.initializers.zeros_init(), dtype=dtype, rngs=rngs)

  def noise_shapes(self, batch: int, side: int) -> list[tuple[int, ...]]:
    """Shapes of the per-stage noise maps for a (batch, side, side, 1) input."""
    return [(batch, side * 2 ** (i + 1), side * 2 ** (i + 1), 1) for i in range(len(self.stages))]

  def __call__(self, x: jax.Array, noise: jax.Array | list[jax.Array]) -> jax.Array:
    """Up-samples images.

    Args:
      x: float (B, h, w, 1), NHWC, in [-1, 1].
      noise: a PRNG key (fresh N(0, 1) noise per stage) or a list of per-stage noise maps
        of `noise_shapes` (a cascade generator derives them from the latent); entries may be
        None when the stage has no noise inputs (`config.noise=False`).

    Returns:
      float32 (B, scale*h, scale*w, 1) in [-1, 1].

    Raises:
      ValueError: x not of shape (B, h, w, 1).
    """
    if x.ndim != 4 or x.shape[-1] != 1:
      raise ValueError(f"Upsampler: expected images of shape (B, h, w, 1), got {x.shape}")
    b, side = x.shape[0], x.shape[1]
    if not isinstance(noise, (list, tuple)):
      if not self.config.noise:
        noise = [None] * len(self.stages)
      else:
        keys = jax.random.split(noise, len(self.stages))
        noise = [jax.random.normal(k, s) for k, s in zip(keys, self.noise_shapes(b, side))]
    if self.config.noise and any(n is None for n in noise):
      raise ValueError("Upsampler: this stage has noise inputs; pass a key or noise maps, not None")
    base = x.astype(jnp.float32)
    h = self.stem(base)
    for block in self.blocks:
      h = block(h)
    for stage, n in zip(self.stages, noise):
      h = stage(h, n)
      base = upsample2(base)
    return jnp.clip(base + self.out(h).astype(jnp.float32), -1.0, 1.0)


def load_upsampler(directory) -> Upsampler:
  """Loads an upsampler saved by `jaxcxr.train.upsampler.train_upsampler` (or `checkpoints.save_model`).

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing, corrupt or mismatched checkpoint.
  """
  model, _, _ = checkpoints.load_model(directory, lambda c: Upsampler(c, rngs=nnx.Rngs(0)), UpsamplerConfig)
  return model
