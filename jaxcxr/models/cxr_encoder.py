"""Self-supervised chest X-ray encoder: radiograph (NHWC, [-1, 1]) -> global embedding and patch features.

A small pre-activation ResNet built for CPU budgets and trained without labels
(`jaxcxr.train.cxr_encoder`). Layout, for a `resolution` R input and stage channels
C1..Cn:

* stem: `patch` x `patch` space-to-depth (R/p x R/p positions of p*p pixels, no pixel
  dropped), then a 3x3 convolution to C1 channels;
* stage s: (from the second stage on) patch merging, GroupNorm + 2x2 space-to-depth
  + 1x1 convolution to Cs (lossless down-sampling, as Swin's), then `blocks[s]`
  residual blocks (GroupNorm, SiLU, 3x3 convolution, twice) at that size;
* embedding: GroupNorm, SiLU and the global average over positions of the last stage,
  (B, Cn).

GroupNorm throughout (no batch statistics): an image's embedding never depends on the
other images of its batch, the model has parameters only, and there is no train/eval
switch. The stage outputs (the residual streams, before any normalisation) are the patch
features: with the defaults, R = 128, p = 4, they are 32x32x32, 16x16x64, 8x8x128 and
4x4x256, one feature vector per 4, 8, 16 and 32 input pixels (16, 32, 64 and 128 pixels
of the 256x256 archive image). `features` returns them all; a PatchCore memory bank
takes "stage2" and "stage3".

The config, `CXREncoderConfig`, is `jaxcxr.config.cxr_encoder`'s (re-exported here).

Parameter names: `stem`, `stages[s]` (`merge_norm`, `merge` for s > 0; `blocks[j]` with
`norm1`, `conv1`, `norm2`, `conv2`), `out_norm`.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr import data as data_lib
from jaxcxr.batching import map_batches
from jaxcxr.config.cxr_encoder import CXREncoderConfig
from jaxcxr.models.layers import Conv, GroupNorm

__all__ = ["CXREncoder", "CXREncoderConfig", "embed_images", "image_features", "load_cxr_encoder",
           "prepare_images", "space_to_depth"]


def space_to_depth(x: jax.Array, block: int) -> jax.Array:
  """(B, H, W, C) -> (B, H/b, W/b, b*b*C), channel index (dy * b + dx) * C + c (inverse of `depth_to_space`)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // block, block, w // block, block, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // block, w // block, block * block * c)


def _norm(channels: int, config: CXREncoderConfig) -> GroupNorm:
  return GroupNorm(channels, min(config.norm_groups, channels), dtype=jnp.dtype(config.dtype))


class ResidualBlock(nnx.Module):
  """Pre-activation residual block at one size: x + conv2(silu(norm2(conv1(silu(norm1(x))))))."""

  def __init__(self, channels: int, config: CXREncoderConfig, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(config.dtype)
    self.norm1 = _norm(channels, config)
    self.conv1 = Conv(channels, channels, 3, dtype=dtype, rngs=rngs)
    self.norm2 = _norm(channels, config)
    # Zero-initialised last convolution: every block starts as the identity (a stable deep start).
    self.conv2 = Conv(channels, channels, 3, kernel_init=nnx.initializers.zeros, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv1(jax.nn.silu(self.norm1(x)))
    return x + self.conv2(jax.nn.silu(self.norm2(h)))


class Stage(nnx.Module):
  """Optional patch merging (GroupNorm, 2x2 space-to-depth, 1x1 convolution), then residual blocks."""

  def __init__(self, c_in: int | None, c_out: int, blocks: int, config: CXREncoderConfig, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(config.dtype)
    if c_in is None:
      self.merge_norm, self.merge = None, None
    else:
      self.merge_norm = _norm(c_in, config)
      self.merge = Conv(4 * c_in, c_out, 1, dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([ResidualBlock(c_out, config, rngs=rngs) for _ in range(blocks)])

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.merge is not None:
      x = self.merge(space_to_depth(self.merge_norm(x), 2))
    for block in self.blocks:
      x = block(x)
    return x


class CXREncoder(nnx.Module):
  """The CXR encoder: NHWC radiographs in [-1, 1] -> embeddings (B, D) and patch features.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> cfg = CXREncoderConfig(resolution=32, patch=4, channels=(8, 16), blocks=(1, 1), norm_groups=4)
    >>> e = CXREncoder(cfg, rngs=nnx.Rngs(0))
    >>> e(jnp.zeros((2, 32, 32, 1))).shape
    (2, 16)
    >>> {k: v.shape for k, v in e.features(jnp.zeros((2, 32, 32, 1))).items()}
    {'stage1': (2, 8, 8, 8), 'stage2': (2, 4, 4, 16), 'embedding': (2, 16)}
  """

  def __init__(self, config: CXREncoderConfig, *, rngs: nnx.Rngs):
    self.config = config
    c = config.channels
    self.stem = Conv(config.patch * config.patch, c[0], 3, dtype=jnp.dtype(config.dtype), rngs=rngs)
    self.stages = nnx.List([Stage(None if s == 0 else c[s - 1], c[s], config.blocks[s], config, rngs=rngs)
                            for s in range(len(c))])
    self.out_norm = _norm(c[-1], config)

  def _check(self, x: jax.Array) -> None:
    r = self.config.resolution
    if not hasattr(x, "ndim") or x.ndim != 4 or x.shape[1:] != (r, r, 1):
      raise ValueError(f"CXREncoder: expected images of shape (B, {r}, {r}, 1) in [-1, 1], got "
                       f"{getattr(x, 'shape', type(x).__name__)}")

  def features(self, x: jax.Array) -> dict[str, jax.Array]:
    """Every stage's patch features and the embedding.

    Args:
      x: float (B, R, R, 1), NHWC, in [-1, 1] (R = `config.resolution`).

    Returns:
      {"stage1": (B, R/p, R/p, C1), "stage2": (B, R/2p, R/2p, C2), ..., "embedding": (B, D)}, float32;
      the stage entries are the residual streams after each stage (un-normalised).

    Raises:
      ValueError: images of another shape.
    """
    self._check(x)
    h = self.stem(space_to_depth(x.astype(jnp.dtype(self.config.dtype)), self.config.patch))
    out = {}
    for s, stage in enumerate(self.stages):
      h = stage(h)
      out[f"stage{s + 1}"] = h.astype(jnp.float32)
    out["embedding"] = jax.nn.silu(self.out_norm(h)).astype(jnp.float32).mean(axis=(1, 2))
    return out

  def __call__(self, x: jax.Array) -> jax.Array:
    """The global embedding, float32 (B, D) (see `features`)."""
    return self.features(x)["embedding"]


# ----------------------------------------------------------------------------- inference helpers


def prepare_images(images: np.ndarray, resolution: int) -> np.ndarray:
  """uint8 (N, H, W) radiographs -> uint8 (N, resolution, resolution), LANCZOS as the archives were built.

  Raises:
    jaxcxr.data.DataError: not uint8 (N, H, W).
  """
  return data_lib.resize_uint8(np.asarray(images), resolution)


@functools.partial(jax.jit, static_argnames=("graphdef", "names"))
def _encode(graphdef, state, images_uint8, names):
  out = nnx.merge(graphdef, state).features(data_lib.to_signed(images_uint8)[..., None])
  return {k: out[k] for k in names}


def image_features(encoder: CXREncoder, images: np.ndarray, names: tuple[str, ...] = ("embedding",), *,
                   batch_size: int = 64) -> dict[str, np.ndarray]:
  """Chosen outputs of `CXREncoder.features` for uint8 radiographs, `batch_size` images per jitted call.

  Args:
    encoder: a `CXREncoder`.
    images: uint8 (N, H, W) radiographs at any square size (resized to the encoder's resolution).
    names: which outputs: "embedding" and/or "stage1", "stage2", ...
    batch_size: images per call (the last batch is padded; one compilation).

  Returns:
    {name: float32 host array (N, ...)}.

  Raises:
    ValueError: an unknown output name.
    jaxcxr.data.DataError: images that are not uint8 (N, H, W).
  """
  known = ("embedding", *encoder.config.feature_shapes())
  names = tuple(names)
  unknown = [n for n in names if n not in known]
  if unknown or not names:
    raise ValueError(f"image_features: unknown output(s) {unknown or names}; expected some of {known}")
  x = prepare_images(images, encoder.config.resolution)
  graphdef, state = nnx.split(encoder)
  return map_batches(lambda b: _encode(graphdef, state, b, names), x, batch_size)


def embed_images(encoder: CXREncoder, images: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
  """uint8 (N, H, W) radiographs -> float32 (N, D) global embeddings (jitted, batched).

  Examples:
    >>> from flax import nnx
    >>> cfg = CXREncoderConfig(resolution=32, patch=4, channels=(8, 16), blocks=(1, 1), norm_groups=4)
    >>> embed_images(CXREncoder(cfg, rngs=nnx.Rngs(0)), np.zeros((3, 64, 64), np.uint8)).shape
    (3, 16)
  """
  return image_features(encoder, images, ("embedding",), batch_size=batch_size)["embedding"]


def load_cxr_encoder(directory: str | os.PathLike) -> CXREncoder:
  """Loads an encoder saved by `jaxcxr.train.cxr_encoder.train_cxr_encoder` (or `checkpoints.save_model`).

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing, corrupt or mismatched checkpoint.
  """
  model, _, _ = checkpoints.load_model(directory, lambda c: CXREncoder(c, rngs=nnx.Rngs(0)), CXREncoderConfig)
  return model
