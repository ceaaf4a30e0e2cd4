"""Lung-segmentation U-Net: radiograph in [0, 1] -> per-pixel logits of 3 classes, NHWC.

Classes: 0 background, 1 patient's right lung (image left), 2 patient's left lung
(image right), as in the shared archives' `lung_masks`.

The architecture is the U-Net of Ronneberger et al. (2015) with GroupNorm:

* encoder level i: two (3x3 conv -> GroupNorm -> ReLU) at `channels[i]`, then a
  2x2 max-pool before the next level;
* decoder level i: a 2x2 stride-2 "up-conv" to `channels[i]`, concatenation with
  the encoder features of the same level, two (3x3 conv -> GroupNorm -> ReLU);
* head: 1x1 conv to `num_classes` logits (float32).

Up-sampling is sub-pixel: a 1x1 convolution to 4c channels followed by
depth-to-space, which is exactly the kernel-2 stride-2 transposed convolution of
the original U-Net, but without XLA's slow transposed convolution
(docs/conventions.md).

Why GroupNorm rather than BatchNorm: each image is normalised with its own
statistics, so a prediction never depends on the rest of its batch and training
and inference compute the same function (no running averages, no train/eval
switch, no mismatch after training on small CPU batches of 8). As the model has no
mode-dependent layer, `nnx.view(model, use_running_average=True)` is not needed.

Parameter names: `encoder[i]` and `decoder[i]` (`ConvBlock`: `conv1`, `norm1`,
`conv2`, `norm2`), `up[i]` (`conv`, the sub-pixel up-conv into decoder level i),
`head`. Kernels are float32 (`param_dtype`); `config.dtype` sets the compute dtype.

References:
  O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for
  Biomedical Image Segmentation", MICCAI 2015. Y. Wu, K. He, "Group
  Normalization", ECCV 2018. W. Shi et al., "Real-Time Single Image and Video
  Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network",
  CVPR 2016.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr.batching import map_batches
from jaxcxr.config import UNetConfig
from jaxcxr.models.layers import GroupNorm, depth_to_space



def _fan_in_normal(scale: float):
  """Kernel initialiser N(0, scale / fan_in), fan_in = prod(shape[:-1]) (He for scale 2, LeCun for 1).

  Drawn as a flat vector whose length is rounded up to a power of 4, then cut and
  reshaped: with jax 0.10's default partitionable threefry, XLA:CPU took about 6 s to
  compile a random draw of a 4-D shape and 0.4 s for a 1-D one, once per shape, so
  building a small U-Net eagerly took over a minute on a busy CPU. Power-of-4 lengths
  share a few compiled draws across all layers (at most 4x more numbers drawn).
  """

  def init(key, shape, dtype=jnp.float32):
    fan_in = int(np.prod(shape[:-1]))
    size = int(np.prod(shape))
    length = 4 ** -(-max(size - 1, 1).bit_length() // 2)  # smallest power of 4 >= size
    draw = jax.random.normal(key, (length,), jnp.float32)[:size]
    return (draw * np.float32(np.sqrt(scale / fan_in))).reshape(shape).astype(dtype)

  return init


_HE = _fan_in_normal(2.0)
_LECUN = _fan_in_normal(1.0)


def _max_pool2(x: jax.Array) -> jax.Array:
  """2x2 max-pool with stride 2, NHWC (sides are even by construction)."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _group_norm(channels: int, groups: int, *, dtype) -> GroupNorm:
  """GroupNorm with the largest divisor of `channels` not above the requested groups."""
  groups = min(groups, channels)
  while channels % groups:
    groups -= 1
  return GroupNorm(channels, groups, dtype=dtype)


class ConvBlock(nnx.Module):
  """Two (3x3 conv -> GroupNorm -> ReLU): (B, H, W, c_in) -> (B, H, W, c_out), NHWC."""

  def __init__(self, c_in: int, c_out: int, groups: int, *, dtype, rngs: nnx.Rngs):
    # No conv bias: the GroupNorm shift that follows makes it redundant.
    self.conv1 = nnx.Conv(c_in, c_out, (3, 3), use_bias=False, kernel_init=_HE, dtype=dtype, rngs=rngs)
    self.norm1 = _group_norm(c_out, groups, dtype=dtype)
    self.conv2 = nnx.Conv(c_out, c_out, (3, 3), use_bias=False, kernel_init=_HE, dtype=dtype, rngs=rngs)
    self.norm2 = _group_norm(c_out, groups, dtype=dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jax.nn.relu(self.norm1(self.conv1(x)))
    return jax.nn.relu(self.norm2(self.conv2(x)))


class UpConv(nnx.Module):
  """2x2 stride-2 up-conv as sub-pixel conv: (B, H, W, c_in) -> (B, 2H, 2W, c_out), NHWC."""

  def __init__(self, c_in: int, c_out: int, *, dtype, rngs: nnx.Rngs):
    self.conv = nnx.Conv(c_in, 4 * c_out, (1, 1), kernel_init=_LECUN, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return depth_to_space(self.conv(x))


class UNet(nnx.Module):
  """U-Net lung segmenter: (B, H, W, 1) in [0, 1] -> (B, H, W, num_classes) float32 logits, NHWC.

  Fully convolutional: H and W may be any multiples of `config.downsampling`;
  `config.resolution` is the side the network is trained at, which
  `predict_masks` (module function) resizes inputs to.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from jaxcxr.config import UNetConfig
    >>> from jaxcxr.models.unet import UNet
    >>> unet = UNet(UNetConfig(resolution=32, channels=(4, 8, 16), norm_groups=2), rngs=nnx.Rngs(0))
    >>> unet(jnp.zeros((2, 32, 32, 1))).shape
    (2, 32, 32, 3)
    >>> unet.predict_masks(jnp.zeros((2, 32, 32, 1))).shape
    (2, 32, 32)
  """

  def __init__(self, config: UNetConfig, *, rngs: nnx.Rngs):
    self.config = config
    dtype = jnp.dtype(config.dtype)
    ch, groups = config.channels, config.norm_groups
    self.encoder = nnx.List([
        ConvBlock(c_in, c_out, groups, dtype=dtype, rngs=rngs)
        for c_in, c_out in zip((config.in_channels,) + ch[:-1], ch)
    ])
    # up[i] and decoder[i] produce level i (i = 0 .. L-2) from level i + 1.
    self.up = nnx.List([UpConv(ch[i + 1], ch[i], dtype=dtype, rngs=rngs) for i in range(len(ch) - 1)])
    self.decoder = nnx.List([ConvBlock(2 * ch[i], ch[i], groups, dtype=dtype, rngs=rngs)
                             for i in range(len(ch) - 1)])
    self.head = nnx.Conv(ch[0], config.num_classes, (1, 1), kernel_init=_LECUN, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Per-pixel class logits.

    Args:
      x: float (B, H, W, in_channels), NHWC, in [0, 1]; H and W multiples of
        `config.downsampling`.

    Returns:
      float32 (B, H, W, num_classes) logits (0 background, 1 patient's right
      lung = image left, 2 patient's left lung = image right).

    Raises:
      ValueError: wrong rank, channel count, or sides not divisible, naming the shape.
    """
    cfg = self.config
    f = cfg.downsampling
    if x.ndim != 4 or x.shape[-1] != cfg.in_channels or x.shape[1] % f or x.shape[2] % f:
      raise ValueError(f"UNet: expected input (B, H, W, {cfg.in_channels}) with H and W multiples of {f}, "
                       f"got {x.shape}")
    h = (x.astype(jnp.float32) * 2.0 - 1.0).astype(jnp.dtype(cfg.dtype))  # centre [0, 1] on 0
    skips = []
    for i, block in enumerate(self.encoder):
      if i:
        h = _max_pool2(h)
      h = block(h)
      skips.append(h)                                   # level i: (B, H/2^i, W/2^i, ch[i])
    for i in reversed(range(len(self.decoder))):
      h = self.up[i](h)
      h = self.decoder[i](jnp.concatenate([h, skips[i]], axis=-1))
    return self.head(h).astype(jnp.float32)

  def predict_masks(self, x: jax.Array) -> jax.Array:
    """Label maps at the input resolution: argmax of the logits. int32 (B, H, W). Input as `__call__`."""
    return jnp.argmax(self(x), axis=-1).astype(jnp.int32)


def count_params(model: nnx.Module) -> int:
  """Number of trainable parameters (`nnx.Param` elements)."""
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param))))


# ----------------------------------------------------------------------------- inference


def resize_images(images: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Resizes float images (B, H, W, C), NHWC, to (B, *size, C): bilinear, antialiased when shrinking.

  The one resampling used for training data and for inference, so both see the same
  pixels. Aspect ratio is not kept: a non-square input is stretched.
  """
  b, _, _, c = images.shape
  return jax.image.resize(images.astype(jnp.float32), (b, size[0], size[1], c), "linear", antialias=True)


def label_map(model: UNet, images: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
  """Lung label map inside a traced function (what `predict_masks` runs per batch).

  Args:
    model: a merged `UNet`.
    images: float (B, H, W) in [0, 1] at any size (resized to the model's side and back).
    out_hw: static output size.

  Returns:
    uint8 (B, *out_hw): 0 background, 1 patient's right lung, 2 patient's left lung.
  """
  r = model.config.resolution
  x = resize_images(images[..., None], (r, r))                   # (B, R, R, 1)
  logits = model(x).astype(jnp.float32)                          # (B, R, R, K)
  if (r, r) != tuple(out_hw):
    logits = jax.image.resize(logits, (logits.shape[0], out_hw[0], out_hw[1], logits.shape[-1]), "linear",
                              antialias=False)
  return jnp.argmax(logits, axis=-1).astype(jnp.uint8)


@functools.partial(jax.jit, static_argnames=("graphdef", "out_hw"))
def _predict_labels(graphdef, state, images: jax.Array, *, out_hw: tuple[int, int]) -> jax.Array:
  """(B, H, W) float [0, 1] -> uint8 labels (B, *out_hw): resize to the model side, logits, back, argmax."""
  return label_map(nnx.merge(graphdef, state), images, out_hw)


def as_unit_images(images) -> np.ndarray:
  """uint8 [0, 255] or float [0, 1] images (N, H, W) or (N, H, W, 1) -> host float32 (N, H, W) in [0, 1].

  Raises:
    ValueError: other shapes or dtypes, or floats outside [0, 1] (e.g. generator space [-1, 1]).
  """
  images = np.asarray(images)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  if images.ndim != 3 or min(images.shape) == 0:
    raise ValueError(f"expected images of shape (N, H, W) or (N, H, W, 1), got {images.shape}")
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f"expected uint8 [0, 255] or float [0, 1] images, got dtype {images.dtype}")
  images = images.astype(np.float32)
  if not np.isfinite(images).all():
    raise ValueError("float images contain NaN or inf")
  if images.min() < -1e-3 or images.max() > 1.0 + 1e-3:
    raise ValueError(f"float images must be in [0, 1] (U-Net space), got range "
                     f"[{np.nanmin(images):.3g}, {np.nanmax(images):.3g}]; convert generator images with "
                     "jaxcxr.data.signed_to_unit")
  return np.clip(images, 0.0, 1.0)


def predict_masks(model: UNet, images, batch_size: int = 16) -> np.ndarray:
  """Lung label maps for a set of radiographs, at the size of the input.

  Inputs of any size are **resized** (never cropped) to the model's square
  `config.resolution` with antialiased bilinear resampling; the logits are resized
  back to the input's (H, W) bilinearly before the argmax. A non-square input is
  therefore stretched to a square and back: pad it to a centred square first
  (as `jaxcxr.data.load_folder` does) to keep the lungs' proportions.

  Batch-independent: GroupNorm normalises each image on its own and the last
  batch is padded, so a mask never depends on the other images. Runs `jax.jit`
  over the split state (one compile per model structure, input size and batch size).

  Args:
    model: a `UNet` (e.g. from `load_unet`).
    images: uint8 [0, 255] or float [0, 1] radiographs (N, H, W) or (N, H, W, 1), NHWC.
    batch_size: images per jitted call (capped at N).

  Returns:
    uint8 (N, H, W): 0 background, 1 patient's right lung (image left), 2 patient's left lung.

  Raises:
    ValueError: bad shape, dtype or value range, or batch_size <= 0.
  """
  if batch_size <= 0:
    raise ValueError(f"predict_masks: batch_size must be positive, got {batch_size}")
  unit = as_unit_images(images)
  _, h, w = unit.shape
  graphdef, state = nnx.split(model)
  return map_batches(lambda x: _predict_labels(graphdef, state, x, out_hw=(h, w)), unit, batch_size)


def load_unet(directory: str | os.PathLike) -> UNet:
  """Loads a U-Net saved by `jaxcxr.train.segmentation.train_unet` (or `checkpoints.save_model`).

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing, corrupt or mismatched checkpoint.
  """
  model, _, _ = checkpoints.load_model(directory, lambda c: UNet(c, rngs=nnx.Rngs(0)), UNetConfig)
  return model
