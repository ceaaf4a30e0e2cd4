"""Symmetry features and raw lung measures of U-Net label maps (pure jnp, traceable).

Label maps: 0 background, 1 the patient's right lung (image left), 2 the patient's left lung
(image right). Definitions: `jaxcxr.scoring` and docs/scores.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["FEATURE_NAMES", "lung_measures", "symmetry_features"]

FEATURE_NAMES = ("iou", "cosine", "area_deviation", "iou_dilated", "cosine_dilated", "area_deviation_dilated")


def _check_dilation(k) -> int:
  """k as an int; ValueError unless k is a positive odd integer (a bool is not one)."""
  if not isinstance(k, (int, np.integer)) or isinstance(k, (bool, np.bool_)) or k < 1 or k % 2 == 0:
    raise ValueError(f"dilation must be a positive odd integer, got {k!r}")
  return int(k)


def _dilate(masks: jax.Array, k: int) -> jax.Array:
  """k x k binary dilation of float {0, 1} masks (B, H, W), zero padding; k a positive odd integer."""
  k = _check_dilation(k)
  if k == 1:
    return masks
  return jax.lax.reduce_window(masks, 0.0, jax.lax.max, (1, k, k), (1, 1, 1), "SAME")


def _half_features(a: jax.Array, b: jax.Array) -> jax.Array:
  """IoU, cosine and squared area-ratio deviation of float {0, 1} masks (B, H, W) -> (B, 3)."""
  area_a, area_b = a.sum(axis=(1, 2)), b.sum(axis=(1, 2))
  inter = (a * b).sum(axis=(1, 2))
  union = area_a + area_b - inter
  iou = jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 0.0)
  norm = jnp.sqrt(area_a * area_b)                    # |A|_2 |B|_2 for binary masks
  cosine = jnp.where(norm > 0, inter / jnp.maximum(norm, 1e-12), 0.0)
  total = area_a + area_b
  deviation = jnp.square(jnp.where(total > 0, area_a / jnp.maximum(total, 1.0), 0.0) - 0.5)
  return jnp.stack([iou, cosine, deviation], axis=-1)


def symmetry_features(labels: jax.Array, dilation: int = 5) -> jax.Array:
  """The six symmetry features of the original post-filter.

  Args:
    labels: integer label maps (B, H, W) (any lung label > 0), W even.
    dilation: odd side k of the square dilation for the last three features, a positive
      odd Python or numpy integer (1: no dilation).

  Returns:
    float32 (B, 6) in `FEATURE_NAMES` order: IoU, cosine, (|A|/(|A|+|B|) - 1/2)^2, and
    the same after dilation. A mirror-symmetric mask gives (1, 1, 0, 1, 1, 0).

  Raises:
    ValueError: for labels that are not integer (B, H, W) with even W, or a dilation that is
      not a positive odd integer.
  """
  dilation = _check_dilation(dilation)
  if not isinstance(labels, jax.Array):
    labels = np.asarray(labels)
  if labels.dtype != bool and not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"symmetry_features: expected integer label maps, got dtype {labels.dtype}")
  w = labels.shape[-1] if labels.ndim else 0
  if labels.ndim != 3 or w % 2:
    raise ValueError(f"symmetry_features: expected label maps (B, H, W) with even W, got {labels.shape}")
  m = (labels > 0).astype(jnp.float32)
  a, b = m[:, :, : w // 2], m[:, :, w // 2:][:, :, ::-1]
  raw = _half_features(a, b)
  dilated = _half_features(_dilate(a, dilation), _dilate(b, dilation))
  return jnp.concatenate([raw, dilated], axis=-1)


def _soft_dice(m: jax.Array, p: jax.Array) -> jax.Array:
  """2 <m, p> / (sum m + sum p) over (H, W) for (B, H, W) maps against an atlas (H, W); 0 when both empty."""
  inter = (m * p[None]).sum(axis=(1, 2))
  total = m.sum(axis=(1, 2)) + p.sum()
  return jnp.where(total > 0, 2.0 * inter / jnp.maximum(total, 1e-12), 0.0)


def lung_measures(labels: jax.Array, atlas: jax.Array) -> dict[str, jax.Array]:
  """Raw lung measures of label maps (B, S, S) against an atlas (2, A, A); float32 (B,) each.

  Returns {"shape", "symmetry", "log_ratio", "area_right", "area_left"}: shape = min over
  lungs of the soft Dice with the atlas (at the atlas side, masks average-pooled);
  symmetry = Dice(right lung, mirrored left lung); log_ratio = log((left + 1) / (right + 1))
  with areas in pixels.
  """
  b, s, _ = labels.shape
  a = atlas.shape[-1]
  right = (labels == 1).astype(jnp.float32)
  left = (labels == 2).astype(jnp.float32)
  pool = lambda m: m.reshape(b, a, s // a, a, s // a).mean(axis=(2, 4))   # (B, A, A)
  shape = jnp.minimum(_soft_dice(pool(right), atlas[0]), _soft_dice(pool(left), atlas[1]))
  area_right, area_left = right.sum(axis=(1, 2)), left.sum(axis=(1, 2))
  mirrored = left[:, :, ::-1]
  total = area_right + area_left
  symmetry = jnp.where(total > 0, 2.0 * (right * mirrored).sum(axis=(1, 2)) / jnp.maximum(total, 1.0), 0.0)
  log_ratio = jnp.log((area_left + 1.0) / (area_right + 1.0))
  return {"shape": shape, "symmetry": symmetry, "log_ratio": log_ratio,
          "area_right": area_right, "area_left": area_left}
