"""f-AnoGAN encoder: image (NHWC, [-1, 1]) -> latent z of a trained generator (Schlegl et al. 2019).

Mirrors the izi_f encoder of the reference code (tSchlegl/f-AnoGAN,
`z_encoding_izif.py`): the critic's architecture (a 3x3 input convolution, one
residual down-sampling block per halving of the side down to 4x4, a linear layer
from the flattened 4x4 map to z), here with our discriminator's blocks
(`models.discriminator.DownBlock` layout: convolution at H, 2x2 average pool,
convolution at H/2; skip = pool + 1x1 convolution) and GroupNorm pre-activations
in place of the reference's BatchNorm, so an image's code never depends on the
other images of its batch.

The output layer is linear (no bound on z). The paper bounds z with tanh for a
generator trained on uniform z in [-1, 1]; our generator draws z from N(0, I), and
the reference code's default (`Z_REG_TYPE = None`) is this linear output.

Parameter names: `stem`, `blocks[i]` (`norm1`, `conv1`, `norm2`, `conv2`, `skip`),
`out_norm`, `output`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr.config import EncoderConfig
from jaxcxr.models.layers import Conv, GroupNorm, avg_pool2


class EncoderBlock(nnx.Module):
  """Pre-activation residual down-sampling block, (B, H, W, c_in) -> (B, H/2, W/2, c_out), NHWC."""

  def __init__(self, c_in: int, c_out: int, config: EncoderConfig, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(config.dtype)
    self.norm1 = GroupNorm(c_in, min(config.norm_groups, c_in), dtype=dtype)
    self.conv1 = Conv(c_in, c_in, 3, dtype=dtype, rngs=rngs)
    self.norm2 = GroupNorm(c_in, min(config.norm_groups, c_in), dtype=dtype)
    self.conv2 = Conv(c_in, c_out, 3, dtype=dtype, rngs=rngs)
    self.skip = Conv(c_in, c_out, 1, use_bias=False, dtype=dtype, rngs=rngs)
    self.negative_slope = config.negative_slope

  def __call__(self, x: jax.Array) -> jax.Array:
    act = lambda t: jax.nn.leaky_relu(t, self.negative_slope)
    h = avg_pool2(self.conv1(act(self.norm1(x))))
    h = self.conv2(act(self.norm2(h)))
    return h + self.skip(avg_pool2(x))


class Encoder(nnx.Module):
  """izi_f encoder E: NHWC images in [-1, 1] -> latents z, so that G(E(x)) reconstructs x.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> e = Encoder(EncoderConfig(resolution=32, base_channels=4, max_channels=8, norm_groups=2),
    ...             rngs=nnx.Rngs(0))
    >>> e(jnp.zeros((2, 32, 32, 1))).shape
    (2, 128)
  """

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
    self.config = config
    dtype = jnp.dtype(config.dtype)
    channels = config.channels
    self.stem = Conv(1, channels[0], 3, dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([EncoderBlock(c_in, c_out, config, rngs=rngs)
                            for c_in, c_out in zip(channels[:-1], channels[1:])])
    c = channels[-1]
    self.out_norm = GroupNorm(c, min(config.norm_groups, c), dtype=dtype)
    self.output = nnx.Linear(4 * 4 * c, config.latent_dim, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Encodes images.

    Args:
      x: float (B, resolution, resolution, 1), NHWC, in generator space [-1, 1].

    Returns:
      float32 (B, latent_dim): z, unbounded (linear output; the generator's prior is N(0, I)).

    Raises:
      ValueError: images of another shape, naming the expected and the given shapes.
    """
    r = self.config.resolution
    if x.ndim != 4 or x.shape[1:] != (r, r, 1):
      raise ValueError(f"Encoder: expected images of shape (B, {r}, {r}, 1), got {x.shape}")
    h = self.stem(x)
    for block in self.blocks:
      h = block(h)
    h = jax.nn.leaky_relu(self.out_norm(h), self.config.negative_slope)      # (B, 4, 4, C)
    return self.output(h.reshape(h.shape[0], -1).astype(jnp.float32))


def load_encoder(directory) -> Encoder:
  """Loads an encoder saved by `jaxcxr.train.fanogan.train_fanogan` (or `checkpoints.save_model`).

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing, corrupt or mismatched checkpoint.
  """
  model, _, _ = checkpoints.load_model(directory, lambda c: Encoder(c, rngs=nnx.Rngs(0)), EncoderConfig)
  return model
