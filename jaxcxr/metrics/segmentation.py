"""Segmentation overlap from integer label maps (B, H, W), jitted: Dice, IoU and pixel accuracy."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcxr.metrics.checks import check_real

__all__ = ["compute_dice", "compute_iou", "compute_pixel_accuracy"]


def _check_label_maps(y_pred: Any, y: Any) -> tuple[jax.Array, jax.Array]:
  y_pred, y = (v if isinstance(v, jax.Array) else check_real(name, v) for name, v in (("y_pred", y_pred), ("y", y)))
  y_pred, y = jnp.asarray(y_pred), jnp.asarray(y)
  if y_pred.ndim != 3 or y_pred.shape != y.shape:
    raise ValueError(
        f"y_pred and y must be integer label maps of equal shape (B, H, W), got "
        f"{y_pred.shape} and {y.shape}")
  for name, v in (("y_pred", y_pred), ("y", y)):
    if not (jnp.issubdtype(v.dtype, jnp.integer) or v.dtype == jnp.bool_):
      raise ValueError(f"{name} must be an integer label map, got dtype {v.dtype}")
  return y_pred.astype(jnp.int32), y.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _overlap_counts(y_pred, y, *, num_classes):
  classes = jnp.arange(1, num_classes, dtype=jnp.int32).reshape(1, 1, 1, -1)  # foreground only
  p = (y_pred[..., None] == classes).astype(jnp.float32)  # (B, H, W, K-1)
  t = (y[..., None] == classes).astype(jnp.float32)
  inter = jnp.sum(p * t, axis=(1, 2))  # (B, K-1)
  return inter, jnp.sum(p, axis=(1, 2)), jnp.sum(t, axis=(1, 2))


def _check_num_classes(num_classes: int) -> int:
  if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 2:
    raise ValueError(f"num_classes must be an integer >= 2 (background + one class), got {num_classes!r}")
  return int(num_classes)


def _check_label_range(y_pred: jax.Array, y: jax.Array, num_classes: int) -> None:
  """Raises ValueError if a label lies outside [0, num_classes) (it would silently count as no class).

  Checked on concrete arrays only (two scalars come to the host); traced inputs are not checked.
  """
  for name, v in (("y_pred", y_pred), ("y", y)):
    if isinstance(v, jax.core.Tracer) or v.size == 0:
      continue
    lo, hi = (int(m) for m in _label_extremes(v))
    if lo < 0 or hi >= num_classes:
      values = np.unique(np.asarray(v))
      bad = values[(values < 0) | (values >= num_classes)]
      raise ValueError(
          f"{name} has label values {bad[:10].tolist()}{' ...' if bad.size > 10 else ''} outside [0, {num_classes}) "
          f"(num_classes={num_classes}); map them to classes in range, or raise num_classes to cover them")


@jax.jit
def _label_extremes(v: jax.Array) -> tuple[jax.Array, jax.Array]:
  return v.min(), v.max()


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _dice(y_pred, y, *, num_classes):
  inter, size_p, size_t = _overlap_counts(y_pred, y, num_classes=num_classes)
  den = size_p + size_t
  return jnp.where(den > 0, 2.0 * inter / jnp.where(den > 0, den, 1.0), 1.0)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _iou(y_pred, y, *, num_classes):
  inter, size_p, size_t = _overlap_counts(y_pred, y, num_classes=num_classes)
  union = size_p + size_t - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 1.0)


def compute_dice(y_pred: Any, y: Any, *, num_classes: int) -> jax.Array:
  """Per-image, per-foreground-class Dice from integer label maps.

  For image b and class c in 1..K-1, with P = {y_pred == c} and T = {y == c}:

    Dice[b, c-1] = 2 |P n T| / (|P| + |T|),

  defined as 1.0 when both are empty and 0.0 when only one is (never NaN).
  Class 0 (background) is not reported.

  Args:
    y_pred: predicted label maps (B, H, W), integer in [0, num_classes) (jnp or numpy).
    y: target label maps (B, H, W), integer in [0, num_classes).
    num_classes: K, including background (static; e.g. 3 for background,
      right lung, left lung).

  Returns:
    float32 jax array (B, num_classes - 1).

  Raises:
    ValueError: shapes differ or are not (B, H, W), non-integer dtype,
      `num_classes < 2`, or (concrete inputs) a label outside [0, num_classes),
      which would otherwise count as no class at all.

  Examples:
    >>> m = np.zeros((1, 4, 4), np.int32); m[0, :2, :2] = 1
    >>> compute_dice(m, m, num_classes=3).tolist()  # class 2 empty in both
    [[1.0, 1.0]]

  References:
    Dice, "Measures of the amount of ecologic association between species",
    Ecology 1945; MONAI `compute_dice`.
  """
  y_pred, y = _check_label_maps(y_pred, y)
  num_classes = _check_num_classes(num_classes)
  _check_label_range(y_pred, y, num_classes)
  return _dice(y_pred, y, num_classes=num_classes)


def compute_iou(y_pred: Any, y: Any, *, num_classes: int) -> jax.Array:
  """Per-image, per-foreground-class intersection over union (Jaccard index).

    IoU[b, c-1] = |P n T| / |P u T|,   P = {y_pred == c}, T = {y == c},

  1.0 when both are empty, 0.0 when only one is. Note IoU = Dice / (2 - Dice).

  Args:
    y_pred: predicted label maps (B, H, W), integer in [0, num_classes) (jnp or numpy).
    y: target label maps (B, H, W), integer in [0, num_classes).
    num_classes: K, including background (static).

  Returns:
    float32 jax array (B, num_classes - 1).

  Raises:
    ValueError: as `compute_dice`.

  Examples:
    >>> a = np.zeros((1, 4, 4), np.int32); a[0, :2, :] = 1  # 8 pixels
    >>> b = np.zeros((1, 4, 4), np.int32); b[0, 1:3, :] = 1  # 8 pixels, 4 shared
    >>> round(float(compute_iou(a, b, num_classes=2)[0, 0]), 4)
    0.3333
  """
  y_pred, y = _check_label_maps(y_pred, y)
  num_classes = _check_num_classes(num_classes)
  _check_label_range(y_pred, y, num_classes)
  return _iou(y_pred, y, num_classes=num_classes)


@jax.jit
def _pixel_accuracy(y_pred, y):
  return jnp.mean((y_pred == y).astype(jnp.float32), axis=(1, 2))


def compute_pixel_accuracy(y_pred: Any, y: Any) -> jax.Array:
  """Fraction of pixels whose label matches, per image: mean_{h,w} [y_pred == y].

  Args:
    y_pred: predicted label maps (B, H, W), integer (jnp or numpy).
    y: target label maps (B, H, W), integer.

  Returns:
    float32 jax array (B,).

  Raises:
    ValueError: as `compute_dice`.
  """
  y_pred, y = _check_label_maps(y_pred, y)
  return _pixel_accuracy(y_pred, y)
