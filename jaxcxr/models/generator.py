"""Conditional generator: latent z and (sex, age, label) -> chest radiograph in [-1, 1], NHWC.

A BigGAN-style residual generator without batch statistics: every block is
pre-activation GroupNorm + FiLM (scale and shift from the latent and the condition
embedding, i.e. BigGAN's conditional BatchNorm with GroupNorm in place of batch
statistics), so one image never depends on the others of its batch.

Up-sampling (`GeneratorConfig.upsampling`): "resize" is bilinear 2x then a 3x3
convolution: every output pixel comes from the same weights, so the up-sampling has no
per-phase kernels to drift apart; "subpixel" is a 3x3 convolution to 4c channels then
depth-to-space, ICNR-initialised (the 64x64 GANs of sessions 1-3; its four phases
drift apart in training, the checkerboard their samples show). With random weights,
`imaging.checkerboard_strength` is about 0.1 for "resize" and 0.9 for "subpixel" (tested).

A cascade (`GeneratorConfig.upsampler`): the blocks make a low-resolution image
(`base_image`, trained as a GAN at that size) and a learned super-resolution stage
(`models.upsampler.Upsampler`, trained on real radiographs) makes the output, its noise
a function of z. One module, one jitted call: sampling, scoring, latent datasets and
AnoGAN use it as any generator.

Parameter names: `cond_embed`, `input` (z -> 4x4 map), `blocks[i]` (`norm1`,
`film1`, `conv1`, `norm2`, `film2`, `conv2`, `skip`), `out_norm`, `out_film`, `out_conv`,
and in a cascade `upsampler`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr.batching import map_batches
from jaxcxr.config import GeneratorConfig
from jaxcxr.data import signed_to_uint8
from jaxcxr.models.condition import group_condition_batch
from jaxcxr.models.layers import Conv, GroupNorm, depth_to_space, upsample2
from jaxcxr.models.upsampler import Upsampler


def _icnr(base_init, block: int = 2):
  """ICNR initialiser: the block*block sub-pixel phases share one kernel (Aitken et al. 2017)."""

  def init(key, shape, dtype=jnp.float32):
    sub = base_init(key, shape[:-1] + (shape[-1] // (block * block),), dtype)
    return jnp.tile(sub, (1,) * (len(shape) - 1) + (block * block,))

  return init


class FiLM(nnx.Module):
  """Per-channel scale (1 + gamma) and shift beta from a style vector w; starts as the identity."""

  def __init__(self, w_dim: int, channels: int, *, dtype, rngs: nnx.Rngs):
    self.proj = nnx.Linear(w_dim, 2 * channels, kernel_init=nnx.initializers.zeros_init(),
                           dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
    gamma, beta = jnp.split(self.proj(w).astype(x.dtype), 2, axis=-1)  # (B, C) each
    return x * (1.0 + gamma[:, None, None, :]) + beta[:, None, None, :]


class UpBlock(nnx.Module):
  """Residual up-sampling block: (B, H, W, c_in) -> (B, 2H, 2W, c_out), NHWC.

  `upsampling="subpixel"`: conv to 4 c_out at H, then depth-to-space (ICNR-initialised).
  `upsampling="resize"`: bilinear 2x, then conv to c_out at 2H (the same FLOPs); the skip
  is a 1x1 conv then bilinear 2x (they commute, and the conv is cheaper at H).
  """

  def __init__(self, c_in: int, c_out: int, w_dim: int, groups: int, upsampling: str, *, dtype,
               rngs: nnx.Rngs):
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    phases = 4 if upsampling == "subpixel" else 1
    up_init = _icnr(init) if upsampling == "subpixel" else init
    self.upsampling = upsampling
    self.norm1 = GroupNorm(c_in, min(groups, c_in), dtype=dtype)
    self.film1 = FiLM(w_dim, c_in, dtype=dtype, rngs=rngs)
    self.conv1 = Conv(c_in, phases * c_out, 3, kernel_init=up_init, dtype=dtype, rngs=rngs)
    self.norm2 = GroupNorm(c_out, min(groups, c_out), dtype=dtype)
    self.film2 = FiLM(w_dim, c_out, dtype=dtype, rngs=rngs)
    self.conv2 = Conv(c_out, c_out, 3, kernel_init=init, dtype=dtype, rngs=rngs)
    self.skip = Conv(c_in, phases * c_out, 1, kernel_init=up_init, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
    h = jax.nn.relu(self.film1(self.norm1(x), w))
    if self.upsampling == "subpixel":
      h = depth_to_space(self.conv1(h))               # (B, 2H, 2W, c_out)
      skip = depth_to_space(self.skip(x))
    else:
      h = self.conv1(upsample2(h))
      skip = upsample2(self.skip(x))
    h = jax.nn.relu(self.film2(self.norm2(h), w))
    return self.conv2(h) + skip


def _noise_from_latents(z: jax.Array, shapes: list[tuple[int, ...]]) -> list[jax.Array]:
  """Per-sample N(0, 1) noise maps that are a pure function of each latent (no gradient).

  A 32-bit hash of the latent's bits seeds each sample's key, so a sample's noise does not
  depend on its batch, and an AnoGAN search sees the noise of the latent it is at.
  """
  bits = jax.lax.bitcast_convert_type(jax.lax.stop_gradient(z).astype(jnp.float32), jnp.uint32)  # (B, D)
  mult = jnp.uint32(0x9E3779B1) + 2 * jnp.arange(z.shape[-1], dtype=jnp.uint32)
  h = jnp.sum(bits * mult[None, :], axis=-1, dtype=jnp.uint32)               # (B,), wraps mod 2**32
  h = h ^ (h >> 16)
  keys = jax.vmap(lambda v: jax.random.fold_in(jax.random.key(0), v))(h)
  return [jax.vmap(lambda k, s=shape: jax.random.normal(jax.random.fold_in(k, i), s[1:]))(keys)
          for i, shape in enumerate(shapes)]


class Generator(nnx.Module):
  """Conditional generator (z, cond) -> image, NHWC, float32 in [-1, 1].

  Examples:
    >>> from flax import nnx
    >>> import jax, jax.numpy as jnp
    >>> from jaxcxr.config import GeneratorConfig
from jaxcxr.data import signed_to_uint8
    >>> g = Generator(GeneratorConfig(resolution=32, base_channels=4, max_channels=8,
    ...                               norm_groups=2), rngs=nnx.Rngs(0))
    >>> g(jnp.zeros((2, 128)), jnp.zeros((2, 3))).shape
    (2, 32, 32, 1)

  A cascade (`config.upsampler`) adds a learned super-resolution stage after the blocks;
  its parameters sit under `upsampler`, the blocks' are those of `config.base`'s generator.
  """

  def __init__(self, config: GeneratorConfig, *, rngs: nnx.Rngs):
    self.config = config
    dtype = jnp.dtype(config.dtype)
    channels = config.channels
    w_dim = config.latent_dim + config.cond_embed_dim
    self.cond_embed = nnx.Linear(len(config.conditions), config.cond_embed_dim, rngs=rngs)
    self.input = nnx.Linear(w_dim, 4 * 4 * channels[0], dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([
        UpBlock(c_in, c_out, w_dim, config.norm_groups, config.upsampling, dtype=dtype, rngs=rngs)
        for c_in, c_out in zip(channels[:-1], channels[1:])
    ])
    c = channels[-1]
    self.out_norm = GroupNorm(c, min(config.norm_groups, c), dtype=dtype)
    self.out_film = FiLM(w_dim, c, dtype=dtype, rngs=rngs)
    self.out_conv = Conv(c, 1, 3, dtype=dtype, rngs=rngs)
    self.upsampler = None if config.upsampler is None else Upsampler(config.upsampler, rngs=rngs)

  def __call__(self, z: jax.Array, cond: jax.Array) -> jax.Array:
    """Generates images.

    Args:
      z: float32 (B, latent_dim) latents, N(0, I).
      cond: float32 (B, len(conditions)): sex (0 male / 1 female), (age - 45) / 20,
        label (0 normal / 1 abnormal); see `jaxcxr.models.make_condition`.

    Returns:
      float32 (B, resolution, resolution, 1), NHWC, in [-1, 1]. With an upsampler (a cascade),
      the blocks' `base_image` up-sampled by it, its noise drawn from z.

    Raises:
      ValueError: z or cond of the wrong shape, naming the expected and the given shapes.
    """
    x = self.base_image(z, cond)
    if self.upsampler is None:
      return x
    return self.upsample(x, z)

  def upsample(self, base: jax.Array, z: jax.Array) -> jax.Array:
    """A cascade's output from its base images: `self(z, c) == self.upsample(self.base_image(z, c), z)`.

    Lets a caller look at the cheap base images first and finish only some of them (the
    cascade pre-filter). z gives the upsampler's noise when it has any.

    Raises:
      ValueError: the generator is not a cascade.
    """
    if self.upsampler is None:
      raise ValueError("Generator.upsample: this generator has no upsampler (not a cascade)")
    shapes = self.upsampler.noise_shapes(base.shape[0], base.shape[1])
    noise = _noise_from_latents(z, shapes) if self.upsampler.config.noise else [None] * len(shapes)
    return self.upsampler(base, noise)

  def base_image(self, z: jax.Array, cond: jax.Array) -> jax.Array:
    """The blocks' image, float32 (B, base_resolution, base_resolution, 1) in [-1, 1] (tanh)."""
    cfg = self.config
    if z.ndim != 2 or z.shape[-1] != cfg.latent_dim:
      raise ValueError(f"Generator: expected latents z of shape (B, {cfg.latent_dim}), got {z.shape}")
    if cond.shape != (z.shape[0], len(cfg.conditions)):
      raise ValueError(f"Generator: expected cond of shape ({z.shape[0]}, {len(cfg.conditions)}) "
                       f"for conditions {cfg.conditions}, got {cond.shape}")
    w = jnp.concatenate([z.astype(jnp.float32), self.cond_embed(cond.astype(jnp.float32))], axis=-1)
    x = self.input(w).reshape(z.shape[0], 4, 4, cfg.channels[0])  # (B, 4, 4, C0)
    for block in self.blocks:
      x = block(x, w)
    x = jax.nn.relu(self.out_film(self.out_norm(x), w))
    return jnp.tanh(self.out_conv(x).astype(jnp.float32))


# ----------------------------------------------------------------------------- inference


def latents(key: jax.Array, start: jax.Array, count: int, latent_dim: int) -> jax.Array:
  """Latents of samples start .. start+count-1: z_i = N(0, I) drawn from fold_in(key, i).

  One key per sample index, so sample i is the same whatever n and batch size
  are asked for. float32 (count, latent_dim).
  """
  index = start + jnp.arange(count, dtype=jnp.int32)
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (latent_dim,)))(index)


@functools.partial(jax.jit, static_argnames=("graphdef", "batch_size"))
def _generate_uint8(graphdef, state, key, start, cond, *, batch_size):
  generator = nnx.merge(graphdef, state)
  z = latents(key, start, batch_size, generator.config.latent_dim)
  images = generator(z, cond)[..., 0]                               # (B, H, W) in [-1, 1]
  return signed_to_uint8(images)


def sample_images(generator: Generator, key: jax.Array, n: int, group: str, *, label: int = 0,
                  batch_size: int = 64) -> np.ndarray:
  """Generates `n` radiographs of an age-sex group (its mid-age) and a label.

  Batch-independent and deterministic: sample i depends only on (weights, key, i,
  group, label), through `latents`. Runs `jax.jit` over the split state (one
  compile per generator structure and batch size; the last batch is padded).

  Args:
    generator: a `Generator` (e.g. from `load_generator`).
    key: PRNG key (`jax.random.key`).
    n: number of images.
    group: one of `data.GROUPS`, e.g. "38_44f".
    label: 0 normal / 1 abnormal; must be 0 for a generator not conditioned on the label.
    batch_size: images per jitted call (capped at n).

  Returns:
    uint8 (n, H, W), radiographic display.

  Raises:
    jaxcxr.data.DataError: unknown group.
    ValueError: n < 0, batch_size <= 0, or a label the generator is not conditioned on.
  """
  cfg = generator.config
  if n < 0 or batch_size <= 0:
    raise ValueError(f"sample_images: expected n >= 0 and batch_size > 0, got n={n}, batch_size={batch_size}")
  if "label" not in cfg.conditions and label != 0:
    raise ValueError(f"sample_images: this generator is not conditioned on the label (conditions "
                     f"{cfg.conditions}); it makes normal images only, got label={label}")
  cond = group_condition_batch(group, n, label, conditions=cfg.conditions)
  graphdef, state = nnx.split(generator)
  return map_batches(lambda b: _generate_uint8(graphdef, state, key, b["index"][0], b["cond"],
                                               batch_size=b["cond"].shape[0]),
                     {"cond": cond, "index": np.arange(n, dtype=np.int32)}, batch_size)


def load_generator(directory) -> Generator:
  """Loads a generator saved by `jaxcxr.train.gan.train_gan` (or `checkpoints.save_model`).

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing, corrupt or mismatched checkpoint.
  """
  model, _, _ = checkpoints.load_model(directory, lambda c: Generator(c, rngs=nnx.Rngs(0)), GeneratorConfig)
  return model


def make_cascade(base: Generator, upsampler: Upsampler) -> Generator:
  """The cascade generator of a trained low-resolution generator and a trained upsampler.

  The result's parameters are the base's plus the upsampler's (under `upsampler`); no
  weight is copied into a new layout, so `make_cascade(g, u).base_image == g`.

  Raises:
    ValueError: the base already has an upsampler.
  """
  config = base.config.with_upsampler(upsampler.config)
  abstract = nnx.eval_shape(lambda: Generator(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  pure = nnx.to_pure_dict(nnx.state(base))
  pure["upsampler"] = nnx.to_pure_dict(nnx.state(upsampler))
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)
