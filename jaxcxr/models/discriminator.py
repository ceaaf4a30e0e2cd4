"""Projection discriminator with spectral norm: image (NHWC, [-1, 1]) and condition -> logit.

BigGAN/SNGAN-style residual down-sampling blocks (Miyato & Koyama 2018): every
convolution and linear layer is spectrally normalised, and the condition enters by
projection, logit = psi(h) + <embed(cond), h>, with h the spatially summed final
features. `features(x)` returns the final 4x4 feature map before any conditioning,
the intermediate layer used for AnoGAN feature matching (Schlegl et al. 2017).

Spectral norm is our own `layers.SpectralConv` rather than `nnx.SpectralNorm`:
the latter writes the normalised weight back into the wrapped layer's parameter
on every call (so repeated calls keep dividing it, and inference changes the
weights). Here the parameter is never modified; one power-iteration step from the
stored vector `u` (an `nnx.BatchStat`) runs on every call, and `u` is written
back only in training mode. Inference, `nnx.view(d, use_running_average=True)`,
is therefore a pure, deterministic function of the weights and `u`.

Parameter names: `stem`, `blocks[i]` (`conv1`, `conv2`, `skip`), `linear` (psi),
`embed` (the projection embedding of the condition); each with `kernel`, `bias`, `u`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr.config import DiscriminatorConfig
from jaxcxr.models.layers import SpectralConv, avg_pool2


class DownBlock(nnx.Module):
  """Residual down-sampling block, (B, H, W, c_in) -> (B, H/2, W/2, c_out), NHWC.

  conv3x3 (c_in -> c_in) at H, 2x2 average pool, conv3x3 (c_in -> c_out) at H/2
  (as StyleGAN2's D block puts the channel increase after the down-sampling):
  a quarter of the FLOPs of BigGAN's block, which convolves twice at H with c_out.
  Skip: pool, then a 1x1 convolution.
  """

  def __init__(self, c_in: int, c_out: int, negative_slope: float, *, dtype, rngs: nnx.Rngs):
    self.conv1 = SpectralConv(c_in, c_in, 3, dtype=dtype, rngs=rngs)
    self.conv2 = SpectralConv(c_in, c_out, 3, dtype=dtype, rngs=rngs)
    self.skip = SpectralConv(c_in, c_out, 1, use_bias=False, dtype=dtype, rngs=rngs)
    self.negative_slope = negative_slope

  def __call__(self, x: jax.Array) -> jax.Array:
    act = lambda t: jax.nn.leaky_relu(t, self.negative_slope)
    h = avg_pool2(act(self.conv1(act(x))))
    return self.conv2(h) + self.skip(avg_pool2(x))


class Discriminator(nnx.Module):
  """Conditional projection discriminator, NHWC images in [-1, 1] -> logits.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from jaxcxr.config import DiscriminatorConfig
    >>> d = Discriminator(DiscriminatorConfig(resolution=32, base_channels=4, max_channels=8),
    ...                   rngs=nnx.Rngs(0))
    >>> d(jnp.zeros((2, 32, 32, 1)), jnp.zeros((2, 3))).shape
    (2,)
    >>> d.features(jnp.zeros((2, 32, 32, 1))).shape
    (2, 4, 4, 8)
  """

  def __init__(self, config: DiscriminatorConfig, *, rngs: nnx.Rngs):
    self.config = config
    dtype = jnp.dtype(config.dtype)
    channels = config.channels
    self.stem = SpectralConv(1, channels[0], 3, dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([
        DownBlock(c_in, c_out, config.negative_slope, dtype=dtype, rngs=rngs)
        for c_in, c_out in zip(channels[:-1], channels[1:])
    ])
    self.linear = SpectralConv(channels[-1], 1, None, rngs=rngs)
    self.embed = SpectralConv(len(config.conditions), channels[-1], None, use_bias=False, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    """Final feature map, independent of the condition (AnoGAN feature matching).

    Args:
      x: float (B, S, S, 1), NHWC, in [-1, 1], with S = resolution * 2**k: images larger
        than the discriminator's resolution (a cascade generator's output, whose
        discriminator is its low-resolution GAN's) are 2x2-average-pooled k times first.

    Returns:
      float32 (B, 4, 4, C) with C = config.channels[-1] (after the last leaky ReLU).
    """
    r = self.config.resolution
    side = x.shape[1] if x.ndim == 4 else 0
    if x.ndim != 4 or x.shape[2:] != (side, 1) or side < r or side % r or (side // r) & (side // r - 1):
      raise ValueError(f"Discriminator: expected images of shape (B, {r}, {r}, 1) (or a power-of-2 multiple "
                       f"of {r} pixels a side), got {x.shape}")
    while x.shape[1] > r:
      x = avg_pool2(x)
    h = self.stem(x)
    for block in self.blocks:
      h = block(h)
    return jax.nn.leaky_relu(h, self.config.negative_slope).astype(jnp.float32)

  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    """Real/fake logits with projection conditioning: psi(h) + <embed(cond), h>.

    Args:
      x: float (B, resolution, resolution, 1), NHWC, in [-1, 1].
      cond: float32 (B, len(conditions)), as for the generator.

    Returns:
      float32 (B,) logits (> 0 means "real").
    """
    if cond.shape != (x.shape[0], len(self.config.conditions)):
      raise ValueError(f"Discriminator: expected cond of shape ({x.shape[0]}, {len(self.config.conditions)}) "
                       f"for conditions {self.config.conditions}, got {cond.shape}")
    h = self.features(x).sum(axis=(1, 2))                          # (B, C)
    return self.linear(h)[:, 0] + jnp.sum(self.embed(cond.astype(jnp.float32)) * h, axis=-1)


def load_discriminator(directory) -> Discriminator:
  """Loads a discriminator saved by `jaxcxr.train.gan.train_gan`, in inference mode.

  Inference mode (`nnx.view(d, use_running_average=True)`) freezes the
  spectral-norm power-iteration vectors, so `d(x, cond)` and `d.features(x)` are
  deterministic and never change the model.

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing, corrupt or mismatched checkpoint.
  """
  model, _, _ = checkpoints.load_model(directory, lambda c: Discriminator(c, rngs=nnx.Rngs(0)),
                                       DiscriminatorConfig)
  return nnx.view(model, use_running_average=True)
