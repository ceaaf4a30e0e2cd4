"""HealthyGAN translator and critic: one-directional translation of any radiograph to a healthy one.

Mirrors the official HealthyGAN code (Siddiquee et al. 2022, mahfuzmohammad/HealthyGAN,
`model.py`), itself Fixed-Point GAN's / StarGAN's networks:

* `Translator` (their `Generator`): a 7x7 stem, `num_down` stride-2 down-samplings,
  `num_res_blocks` residual blocks, `num_down` up-samplings, a 7x7 output
  convolution to two channels: the content image c (tanh) and the mask m. The
  translation is `out = c * m + x * (1 - m)` (`blend`), so pixels where m = 0 pass
  through unchanged. Differences from the original: GroupNorm (one group per
  channel by default, i.e. instance norm with an affine, as theirs, but never
  running statistics); down-sampling is space-to-depth + 3x3 convolution (a
  learnable stride-2 layer with a 6x6 receptive field, theirs is a 4x4 stride-2
  convolution) and up-sampling is a 3x3 convolution + depth-to-space (sub-pixel, ICNR
  init as the generator's: XLA's transposed convolution is slow); the mask is
  sigmoid(l), theirs (tanh(l) + 1) / 2 = sigmoid(2 l) (the factor 2 is absorbed by
  the output layer's weights); single-channel images.
* `Critic` (their PatchGAN `Discriminator`): `num_down` (3x3 convolution, leaky
  ReLU 0.01, 2x2 average pool) stages, then a 3x3 convolution to one channel: a
  map of patch scores (WGAN critic values, no normalisation, as WGAN-GP needs).
  Theirs uses 4x4 stride-2 convolutions.

Parameter names: Translator `stem` (`conv`, `norm`), `down[i]` (`conv`, `norm`),
`res[i]` (`conv1`, `conv2`, each `conv`, `norm`), `up[i]` (a convolution), `up_norm[i]`,
`output`; Critic `layers[i]`, `output`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr.config import CriticConfig, TranslatorConfig
from jaxcxr.models.generator import _icnr  # pylint: disable=protected-access  (the generator's ICNR init)
from jaxcxr.models.layers import Conv, GroupNorm, avg_pool2, depth_to_space


def space_to_depth(x: jax.Array, block: int = 2) -> jax.Array:
  """(B, H, W, C) -> (B, H/b, W/b, b*b*C); the inverse of `layers.depth_to_space`."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // block, block, w // block, block, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // block, w // block, block * block * c)


def blend(content: jax.Array, mask: jax.Array, x: jax.Array) -> jax.Array:
  """The translation out = content * mask + x * (1 - mask); x exactly where mask == 0.

  Args:
    content: float32 (B, H, W, 1) in [-1, 1].
    mask: float32 (B, H, W, 1) in [0, 1].
    x: float32 (B, H, W, 1) in [-1, 1], the input image.

  Returns:
    float32 (B, H, W, 1) in [-1, 1] (a convex combination of two images in [-1, 1]).
  """
  return content * mask + x * (1.0 - mask)


class _NormConv(nnx.Module):
  """Convolution without bias, then GroupNorm (the original's conv + InstanceNorm pairs), NHWC."""

  def __init__(self, c_in: int, c_out: int, kernel_size: int, groups: int | None, *, dtype, rngs: nnx.Rngs):
    self.conv = Conv(c_in, c_out, kernel_size, use_bias=False, dtype=dtype, rngs=rngs)
    self.norm = GroupNorm(c_out, c_out if groups is None else min(groups, c_out), dtype=dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.norm(self.conv(x))


class _ResBlock(nnx.Module):
  """x + norm(conv(relu(norm(conv(x))))), (B, H, W, C) -> (B, H, W, C)."""

  def __init__(self, c: int, groups: int | None, *, dtype, rngs: nnx.Rngs):
    self.conv1 = _NormConv(c, c, 3, groups, dtype=dtype, rngs=rngs)
    self.conv2 = _NormConv(c, c, 3, groups, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x + self.conv2(jax.nn.relu(self.conv1(x)))


class Translator(nnx.Module):
  """HealthyGAN translator G: NHWC image x in [-1, 1] -> (content, mask); `translate(x)` blends them.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> t = Translator(TranslatorConfig(resolution=32, base_channels=4, max_channels=8, num_res_blocks=1),
    ...                rngs=nnx.Rngs(0))
    >>> content, mask = t(jnp.zeros((2, 32, 32, 1)))
    >>> content.shape, mask.shape, t.translate(jnp.zeros((2, 32, 32, 1))).shape
    ((2, 32, 32, 1), (2, 32, 32, 1), (2, 32, 32, 1))
  """

  def __init__(self, config: TranslatorConfig, *, rngs: nnx.Rngs):
    self.config = config
    dtype = jnp.dtype(config.dtype)
    ch, groups, k = config.channels, config.norm_groups, config.outer_kernel_size
    self.stem = _NormConv(1, ch[0], k, groups, dtype=dtype, rngs=rngs)
    self.down = nnx.List([_NormConv(4 * c_in, c_out, 3, groups, dtype=dtype, rngs=rngs)
                          for c_in, c_out in zip(ch[:-1], ch[1:])])
    self.res = nnx.List([_ResBlock(ch[-1], groups, dtype=dtype, rngs=rngs)
                         for _ in range(config.num_res_blocks)])
    # Sub-pixel up-sampling: 3x3 convolution to 4 c_out channels, then depth-to-space, then the norm;
    # ICNR init (the four sub-pixel phases start equal: no checkerboard at initialisation).
    icnr = _icnr(nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"))
    self.up = nnx.List([Conv(c_in, 4 * c_out, 3, kernel_init=icnr, use_bias=False, dtype=dtype, rngs=rngs)
                        for c_in, c_out in zip(ch[:0:-1], ch[-2::-1])])
    self.up_norm = nnx.List([GroupNorm(c, c if groups is None else min(groups, c), dtype=dtype)
                             for c in ch[-2::-1]])
    self.output = Conv(ch[0], 2, k, use_bias=False, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Content image and mask of a batch.

    Args:
      x: float (B, resolution, resolution, 1), NHWC, in generator space [-1, 1].

    Returns:
      (content, mask): float32 (B, R, R, 1) each; content in [-1, 1] (tanh), mask in [0, 1]
      (sigmoid). Per image (no batch statistics).

    Raises:
      ValueError: images of another shape, naming the expected and the given shapes.
    """
    r = self.config.resolution
    if x.ndim != 4 or x.shape[1:] != (r, r, 1):
      raise ValueError(f"Translator: expected images of shape (B, {r}, {r}, 1), got {x.shape}")
    h = jax.nn.relu(self.stem(x))
    for layer in self.down:
      h = jax.nn.relu(layer(space_to_depth(h)))
    for block in self.res:
      h = block(h)
    for conv, norm in zip(self.up, self.up_norm):
      h = jax.nn.relu(norm(depth_to_space(conv(h))))                # (B, 2H, 2W, c_out)
    logits = self.output(h).astype(jnp.float32)                  # (B, R, R, 2)
    return jnp.tanh(logits[..., :1]), jax.nn.sigmoid(logits[..., 1:])

  def translate(self, x: jax.Array) -> jax.Array:
    """The healthy-looking translation `blend(content, mask, x)`, float32 (B, R, R, 1) in [-1, 1]."""
    content, mask = self(x)
    return blend(content, mask, x.astype(jnp.float32))


class Critic(nnx.Module):
  """HealthyGAN critic D: NHWC images in [-1, 1] -> patch scores (higher = more like a real normal image).

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> d = Critic(CriticConfig(resolution=32, base_channels=4, max_channels=8, num_down=3), rngs=nnx.Rngs(0))
    >>> d(jnp.zeros((2, 32, 32, 1))).shape
    (2, 4, 4)
  """

  def __init__(self, config: CriticConfig, *, rngs: nnx.Rngs):
    self.config = config
    dtype = jnp.dtype(config.dtype)
    ch = config.channels
    self.layers = nnx.List([Conv(c_in, c_out, 3, dtype=dtype, rngs=rngs)
                            for c_in, c_out in zip((1,) + ch[:-1], ch)])
    self.output = Conv(ch[-1], 1, 3, use_bias=False, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Patch scores.

    Args:
      x: float (B, resolution, resolution, 1), NHWC, in [-1, 1].

    Returns:
      float32 (B, P, P) with P = resolution / 2**num_down: unbounded WGAN critic values.
    """
    r = self.config.resolution
    if x.ndim != 4 or x.shape[1:] != (r, r, 1):
      raise ValueError(f"Critic: expected images of shape (B, {r}, {r}, 1), got {x.shape}")
    h = x
    for layer in self.layers:
      h = avg_pool2(jax.nn.leaky_relu(layer(h), self.config.negative_slope))
    return self.output(h)[..., 0].astype(jnp.float32)


def load_translator(directory) -> Translator:
  """Loads a translator saved by `jaxcxr.train.healthygan.train_healthygan` (or `checkpoints.save_model`).

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing, corrupt or mismatched checkpoint.
  """
  model, _, _ = checkpoints.load_model(directory, lambda c: Translator(c, rngs=nnx.Rngs(0)), TranslatorConfig)
  return model
