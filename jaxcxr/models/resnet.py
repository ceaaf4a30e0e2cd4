"""ResNet-18-like binary classifier network for chest radiographs (NHWC, [0, 1] -> one logit).

Mirrors torchvision's `resnet18` (He et al. 2016) with one input channel, a
configurable number of basic blocks and channels per stage, GroupNorm instead of
BatchNorm and a single-logit head. Parameter names map to torchvision's as:
`conv1 -> stem_conv`, `bn1 -> stem_norm`, `layer{i+1}[j] -> stages[i][j]`
(`conv1`, `bn1 -> norm1`, `conv2`, `bn2 -> norm2`, `downsample.0 -> skip_conv`,
`downsample.1 -> skip_norm`), `fc -> linear`. Padding is symmetric (k // 2), as in
torchvision, not TensorFlow's asymmetric "SAME" for stride 2.

Normalisation is GroupNorm (Wu & He 2018), not BatchNorm, because:
* the data are small (hundreds of images, CPU batches of 16-32): GroupNorm's
  accuracy does not depend on the batch size, BatchNorm's degrades with small batches;
* there is no train/eval difference: validation AUC during training, inference and
  Grad-CAM see the same function, every image's output depends on that image only
  (so Grad-CAM can take per-image gradients of a summed score), and no running
  statistics need warming up, checkpointing or freezing (frozen stages in transfer
  learning stay truly frozen);
* the state is parameters only, which keeps the train state and resume simple.
The model therefore has no `nnx.view(model, use_running_average=True)` switch to make.

Input variants (`ClassifierConfig.input_mode`):
* "full": the whole image through the backbone, global average pooling, linear head.
* "halves" (the original study): the top `crop_rows` rows (neck, shoulders) are
  cropped, the image is cut into its left and right halves, the right half is
  mirrored so that both look like a left half (patient's right lung), both go through
  the shared backbone, and the head concatenates the two pooled feature vectors.
  `features` returns the two maps side by side (the right one mirrored back), so the
  feature map is spatially aligned with the cropped image (for Grad-CAM).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcxr.config import ClassifierConfig

__all__ = ["BasicBlock", "Classifier"]

_HE = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")  # torchvision's kaiming_normal_(fan_out)


def _groups(channels: int, groups: int) -> int:
  return min(groups, channels)


def _conv(c_in: int, c_out: int, kernel: int, stride: int, dtype, rngs: nnx.Rngs) -> nnx.Conv:
  pad = kernel // 2
  return nnx.Conv(c_in, c_out, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                  use_bias=False, dtype=dtype, kernel_init=_HE, rngs=rngs)


def _norm(channels: int, groups: int, rngs: nnx.Rngs, *, zero_scale: bool = False) -> nnx.GroupNorm:
  # Statistics and output in float32 whatever the conv compute dtype (bf16 variances are too coarse).
  return nnx.GroupNorm(channels, num_groups=_groups(channels, groups), epsilon=1e-5, dtype=jnp.float32,
                       scale_init=nnx.initializers.zeros if zero_scale else nnx.initializers.ones, rngs=rngs)


class BasicBlock(nnx.Module):
  """ResNet basic block: two 3x3 convolutions with a residual, (B, H, W, c_in) -> (B, H/s, W/s, c_out), NHWC."""

  def __init__(self, c_in: int, c_out: int, stride: int, *, groups: int, zero_init: bool, dtype,
               rngs: nnx.Rngs):
    self.conv1 = _conv(c_in, c_out, 3, stride, dtype, rngs)
    self.norm1 = _norm(c_out, groups, rngs)
    self.conv2 = _conv(c_out, c_out, 3, 1, dtype, rngs)
    self.norm2 = _norm(c_out, groups, rngs, zero_scale=zero_init)
    if stride != 1 or c_in != c_out:
      self.skip_conv = _conv(c_in, c_out, 1, stride, dtype, rngs)
      self.skip_norm = _norm(c_out, groups, rngs)
    else:
      self.skip_conv = self.skip_norm = None

  def __call__(self, x: jax.Array) -> jax.Array:
    h = jax.nn.relu(self.norm1(self.conv1(x)))
    h = self.norm2(self.conv2(h))
    skip = x if self.skip_conv is None else self.skip_norm(self.skip_conv(x))
    return jax.nn.relu(h + skip)


class Classifier(nnx.Module):
  """ResNet-18-like binary classifier, NHWC images in [0, 1] -> one logit per image.

  `__call__(x) == head(features(x))`. Parameters are float32; with
  `config.dtype="bfloat16"` the convolutions compute in bfloat16 while norms,
  residual sums, the feature map and the head stay float32.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from jaxcxr.config import ClassifierConfig
    >>> cfg = ClassifierConfig(resolution=64, stages=(1, 1), channels=(4, 8))
    >>> model = Classifier(cfg, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 64, 64, 1))).shape
    (2,)
    >>> model.features(jnp.zeros((2, 64, 64, 1))).shape
    (2, 8, 8, 8)
  """

  def __init__(self, config: ClassifierConfig, *, rngs: nnx.Rngs):
    # Parameters are drawn with the classic (non-partitionable) threefry: with jax 0.10.2 on CPU,
    # XLA takes 2-10 s to compile each partitionable-threefry `normal` of a new shape (measured
    # 24 s for the 128x128 preset's init, 3.7 s this way). Initial values differ, semantics do not.
    with jax.threefry_partitionable(False):
      self._build(config, rngs)

  def _build(self, config: ClassifierConfig, rngs: nnx.Rngs):
    self.config = config
    dtype = jnp.dtype(config.dtype)
    c0 = config.channels[0]
    self.stem_conv = _conv(1, c0, config.stem_kernel, config.stem_stride, dtype, rngs)
    self.stem_norm = _norm(c0, config.norm_groups, rngs)
    stages = []
    c_in = c0
    for i, (blocks, c_out) in enumerate(zip(config.stages, config.channels)):
      stage = []
      for j in range(blocks):
        stride = 2 if (i > 0 and j == 0) else 1
        stage.append(BasicBlock(c_in, c_out, stride, groups=config.norm_groups,
                                zero_init=config.zero_init_residual, dtype=dtype, rngs=rngs))
        c_in = c_out
      stages.append(nnx.List(stage))
    self.stages = nnx.List(stages)
    self.linear = nnx.Linear(c_in * self.num_segments, 1, rngs=rngs)

  @property
  def num_segments(self) -> int:
    """Feature maps side by side in `features`: 2 in "halves" mode (left, right), else 1."""
    return 2 if self.config.input_mode == "halves" else 1

  @property
  def crop_rows(self) -> int:
    """Rows cropped from the top of the input before the backbone (0 in "full" mode)."""
    return self.config.crop_rows

  def _backbone(self, x: jax.Array) -> jax.Array:
    h = jax.nn.relu(self.stem_norm(self.stem_conv(x)))
    if self.config.stem_pool:
      h = nnx.max_pool(h, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage in self.stages:
      for block in stage:
        h = block(h)
    return h.astype(jnp.float32)

  def features(self, x: jax.Array) -> jax.Array:
    """Last convolutional feature map (after the final ReLU), the map Grad-CAM uses.

    Args:
      x: float (B, R, R, 1), NHWC, in [0, 1], R = config.resolution.

    Returns:
      float32 (B, h, w, C), C = config.channels[-1]. In "full" mode it covers the
      whole image; in "halves" mode it covers the image without its top `crop_rows`
      rows, left-half features in columns [0, w/2) and right-half features (mirrored
      back into image orientation) in [w/2, w).
    """
    r = self.config.resolution
    if x.ndim != 4 or x.shape[1:] != (r, r, 1):
      raise ValueError(f"Classifier: expected images of shape (B, {r}, {r}, 1), got {x.shape}")
    if self.config.input_mode == "full":
      return self._backbone(x)
    b = x.shape[0]
    x = x[:, self.crop_rows:]
    left, right = x[:, :, : r // 2], x[:, :, r // 2:][:, :, ::-1]   # right half mirrored
    f = self._backbone(jnp.concatenate([left, right], axis=0))      # (2B, h, w, C)
    return jnp.concatenate([f[:b], f[b:][:, :, ::-1]], axis=2)      # (B, h, 2w, C)

  def head(self, feature_map: jax.Array) -> jax.Array:
    """Global average pooling (per half in "halves" mode, concatenated) and the linear layer.

    Args:
      feature_map: float32 (B, h, w, C) from `features`.

    Returns:
      float32 (B,) logits (> 0 means class 1: abnormal, or female for the sex task).
    """
    w = feature_map.shape[2] // self.num_segments
    pooled = jnp.concatenate([feature_map[:, :, s * w:(s + 1) * w].mean(axis=(1, 2))
                              for s in range(self.num_segments)], axis=-1)   # (B, S*C)
    return self.linear(pooled)[:, 0]

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits, `head(features(x))`.

    Args:
      x: float (B, R, R, 1), NHWC, in [0, 1].

    Returns:
      float32 (B,) logits.
    """
    return self.head(self.features(x))
