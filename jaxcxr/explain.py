"""Grad-CAM heatmaps of the classifier (Selvaraju et al. 2017) and colour overlays.

For a class score y (the logit for target 1, minus the logit for target 0) and the
last convolutional feature map A (B, h, w, C) of `Classifier.features`:

  alpha_c = mean_{i,j} dy/dA_{ij}^c,        CAM_{ij} = ReLU(n * sum_c alpha_c A_{ij}^c),

with n = h * w positions (per half in "halves" mode, where each half of the map
has its own weights, because the head pools and weighs the two halves
separately). The factor n changes no heatmap; it puts the raw map in logit
units: with this head (global average pooling + linear), the spatial mean of
n * sum_c alpha_c A^c over a segment equals that segment's contribution to the
logit, so `raw_max` is comparable across resolutions. (For such a head Grad-CAM
equals CAM of Zhou et al. 2016.)

The raw map is upsampled bilinearly to the input size (in "halves" mode to the
cropped region, each half separately; the cropped top rows get 0) and divided by
its per-image maximum. A map that is zero everywhere (no positive evidence, e.g.
a blank image) stays zero: no NaN.

Gradients are taken per image by differentiating the *sum* of the batch's scores:
the classifier uses GroupNorm, so every image's score depends on its own features
only, and d(sum)/dA_b = dy_b/dA_b. Everything runs in one jitted function of the
split model state (docs/conventions.md), in fixed-size padded batches.
"""

from __future__ import annotations

import functools
import os
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from jaxcxr import io as io_lib
from jaxcxr.batching import map_batches
from jaxcxr.models.classifier import prepare_images

__all__ = ["GradCam", "grad_cam", "grad_cam_pure", "lung_evidence", "lung_share", "max_heat", "overlay_heatmap"]


class GradCam(NamedTuple):
  """Result of `grad_cam`.

  Attributes:
    heatmap: float32 numpy (B, R, R) in [0, 1], R the model resolution; each map
      divided by its own maximum (all zeros when the raw map is zero).
    raw_max: float32 numpy (B,) >= 0, the maximum of the raw (unnormalised,
      feature-resolution) map in logit units: how strong the strongest region's
      evidence for the target class is. This, not the max of `heatmap` (always 1
      or 0), is what a max-heat score should use.
  """

  heatmap: np.ndarray
  raw_max: np.ndarray


def _segment_cams(feature_map: jax.Array, grads: jax.Array, num_segments: int) -> list[jax.Array]:
  """Raw Grad-CAM maps (B, h, w_s) per segment (before the ReLU), in logit units."""
  h, w = feature_map.shape[1:3]
  ws = w // num_segments
  cams = []
  for s in range(num_segments):
    a = feature_map[:, :, s * ws:(s + 1) * ws]                      # (B, h, ws, C)
    alpha = grads[:, :, s * ws:(s + 1) * ws].mean(axis=(1, 2))     # (B, C)
    cams.append(jnp.einsum("bhwc,bc->bhw", a, alpha) * (h * ws))
  return cams


def grad_cam_pure(model: nnx.Module, x: jax.Array, sign: float = 1.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Grad-CAM of a batch inside a traced function: one forward pass gives the logits and the maps.

  Args:
    model: a merged classifier (see `grad_cam`).
    x: float (B, R, R, 1), NHWC, in [0, 1], R = model.config.resolution.
    sign: +1 explains the logit (class 1), -1 minus the logit (class 0).

  Returns:
    (heatmap float32 (B, R, R) in [0, 1], raw_max float32 (B,) >= 0 in logit units,
    logits float32 (B,)).
  """
  resolution = model.config.resolution
  num_segments = getattr(model, "num_segments", 1)
  crop = getattr(model, "crop_rows", 0)
  feature_map = model.features(x).astype(jnp.float32)            # (B, h, w, C)
  logits, vjp = jax.vjp(model.head, feature_map)
  (grads,) = vjp(jnp.full_like(logits, sign))
  cams = [jax.nn.relu(c) for c in _segment_cams(feature_map, grads, num_segments)]
  raw = jnp.concatenate(cams, axis=2)                              # (B, h, w)
  b = x.shape[0]
  region_w = resolution // num_segments
  up = jnp.concatenate([jax.image.resize(c, (b, resolution - crop, region_w), "linear") for c in cams], axis=2)
  up = jnp.pad(jax.nn.relu(up), ((0, 0), (crop, 0), (0, resolution - num_segments * region_w)))
  peak = up.max(axis=(1, 2), keepdims=True)
  heatmap = jnp.where(peak > 0, up / jnp.where(peak > 0, peak, 1.0), 0.0)
  return jnp.clip(heatmap, 0.0, 1.0), raw.max(axis=(1, 2)), logits.astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _grad_cam_batch(graphdef, state, x, sign: float):
  heatmap, raw_max, _ = grad_cam_pure(nnx.merge(graphdef, state), x, sign)
  return heatmap, raw_max


def grad_cam(model: nnx.Module, images: Any, *, target: int = 1, batch_size: int = 32) -> GradCam:
  """Grad-CAM heatmaps of a classifier for class `target`, batched and jitted.

  Args:
    model: a `jaxcxr.models.classifier.Classifier` (or any module with `config.resolution`,
      `features(x) -> (B, h, w, C)`, `head(feature_map) -> (B,)` and optionally
      `num_segments`, `crop_rows`), in inference mode.
    images: uint8 (N, H, W) at any size (resized with LANCZOS), or float (N, R, R, 1)
      in [0, 1], NHWC (see `jaxcxr.models.classifier.prepare_images`).
    target: 1 explains the logit (evidence for class 1, e.g. abnormal); 0 explains
      minus the logit (evidence for class 0).
    batch_size: images per jitted call (the last batch is padded).

  Returns:
    `GradCam(heatmap, raw_max)`: heatmap float32 (N, R, R) in [0, 1], raw_max float32 (N,).

  Examples:
    The shipped abnormal classifier (the post-filter's, `jaxcxr.load_pretrained().scorer.classifier`)
    on two radiograph-sized images:

    >>> import numpy as np
    >>> import jaxcxr
    >>> classifier = jaxcxr.load_pretrained().scorer.classifier
    >>> images = np.random.default_rng(0).integers(0, 256, (2, 256, 256), dtype=np.uint8)
    >>> cam = grad_cam(classifier, images, batch_size=2)
    >>> r = classifier.config.resolution
    >>> cam.heatmap.shape == (2, r, r), cam.heatmap.dtype, cam.raw_max.shape
    (True, dtype('float32'), (2,))
    >>> bool(((cam.heatmap >= 0) & (cam.heatmap <= 1)).all())
    True
    >>> overlay_heatmap(images[0], cam.heatmap[0], "cam0.png")  # doctest: +SKIP

  References:
    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017.
  """
  if target not in (0, 1):
    raise ValueError(f"target: expected 0 or 1, got {target!r}")
  graphdef, state = nnx.split(model)
  sign = 1.0 if target == 1 else -1.0
  heatmap, raw_max = map_batches(lambda x: _grad_cam_batch(graphdef, state, x, sign),
                                 prepare_images(images, model.config.resolution), batch_size)
  return GradCam(heatmap.astype(np.float32), raw_max.astype(np.float32))


def max_heat(heatmaps: Any) -> np.ndarray:
  """Per-image maximum of heatmaps (B, H, W) -> float32 (B,).

  Meaningful on unnormalised maps; of `GradCam.heatmap` it is 1 (or 0 for an
  empty map), so a max-heat score should use `GradCam.raw_max` instead.
  """
  heatmaps = np.asarray(heatmaps)
  if heatmaps.dtype.kind not in "biuf" or heatmaps.ndim != 3:
    raise ValueError(f"heatmaps: expected real maps of shape (B, H, W), got {heatmaps.dtype} {heatmaps.shape}")
  heatmaps = heatmaps.astype(np.float32)
  if not np.isfinite(heatmaps).all():
    raise ValueError("heatmaps contain NaN or inf")
  return heatmaps.max(axis=(1, 2)) if heatmaps.size else np.zeros((heatmaps.shape[0],), np.float32)


def lung_share(heatmaps: Any, lung_masks: Any) -> np.ndarray:
  """The share of each heatmap's mass that falls inside the lungs: sum(h * lungs) / sum(h).

  Masks at another resolution than the maps are resized (bilinear, as area fractions), so a
  96x96 Grad-CAM map and a 256x256 U-Net mask compare pixel for pixel. The same formula with a
  constant map gives the lungs' share of the image: the figure a map that ignores the lungs
  would reach by chance.

  Args:
    heatmaps: non-negative real maps (B, H, W).
    lung_masks: (B, h, w) labels (any value > 0 is lung) or bool.

  Returns:
    float64 (B,) in [0, 1]; NaN for an all-zero map.

  Raises:
    ValueError: shapes that do not pair up, negative or non-finite maps.
  """
  heatmaps = np.asarray(heatmaps, np.float64)
  masks = np.asarray(lung_masks)
  if heatmaps.ndim != 3 or masks.ndim != 3 or len(heatmaps) != len(masks):
    raise ValueError(f"lung_share: expected maps (B, H, W) and masks (B, h, w) of one batch, got {heatmaps.shape} "
                     f"and {masks.shape}")
  if not np.isfinite(heatmaps).all() or (heatmaps < 0).any():
    raise ValueError("lung_share: heatmaps must be finite and non-negative")
  lungs = (masks > 0).astype(np.float32)
  if lungs.shape[1:] != heatmaps.shape[1:]:
    lungs = np.asarray(jax.image.resize(lungs, (len(lungs), *heatmaps.shape[1:]), "linear"), np.float64)
  total = heatmaps.sum(axis=(1, 2))
  inside = (heatmaps * np.clip(lungs, 0.0, 1.0)).sum(axis=(1, 2))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


def lung_evidence(model: nnx.Module, images: Any, lung_masks: Any, *, target: int = 1, seed: int = 0,
                  bootstrap: int = 2000) -> dict[str, Any]:
  """How much of a classifier's Grad-CAM evidence lies over the lungs, beside the lungs' share of the image.

  Args:
    model: a classifier (or ensemble) `grad_cam` accepts.
    images: the radiographs (e.g. the true positives of a pneumonia classifier), uint8 (N, H, W).
    lung_masks: their lung masks (N, H, W), e.g. the lung U-Net's predictions.
    target: the class whose evidence is mapped.
    seed, bootstrap: the percentile bootstrap over images of the mean share's 95% interval.

  Returns:
    {"n", "mean", "ci95", "median" (of `lung_share` over images with a non-empty map), "chance"
    (the mean lungs' share of the map's area: what a map blind to the lungs reaches), "n_empty_maps"}.

  Raises:
    ValueError: no images, or as `lung_share`.
  """
  if len(images) == 0:
    raise ValueError("lung_evidence: no images")
  heat = grad_cam(model, images, target=target).heatmap
  share = lung_share(heat, lung_masks)
  chance = lung_share(np.ones_like(heat), lung_masks)
  kept = share[np.isfinite(share)]
  rng = np.random.default_rng(seed)
  means = kept[rng.integers(0, len(kept), (bootstrap, len(kept)))].mean(axis=1) if len(kept) else np.array([np.nan])
  return {"n": int(len(share)), "mean": float(np.mean(kept)) if len(kept) else None,
          "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))] if len(kept) else None,
          "median": float(np.median(kept)) if len(kept) else None, "chance": float(np.nanmean(chance)),
          "n_empty_maps": int(len(share) - len(kept))}


def overlay_heatmap(image_uint8: np.ndarray, heatmap: np.ndarray, path: str | os.PathLike, *,
                    alpha: float = 0.5, cmap: str = "jet") -> pathlib.Path:
  """Writes a colour PNG of a radiograph with a heatmap blended over it (atomic write).

  The heatmap is resized bilinearly to the image size and coloured with a
  matplotlib colormap; each pixel blends as (1 - alpha * h) * gray + alpha * h * colour(h),
  so cold regions show the radiograph unchanged and hot ones the colour.

  Args:
    image_uint8: uint8 (H, W) or (H, W, 1) grayscale radiograph.
    heatmap: float (h, w) in [0, 1] (e.g. `grad_cam(...).heatmap[i]`).
    path: output PNG path.
    alpha: opacity of the colour at heat 1.
    cmap: matplotlib colormap name.

  Returns:
    The written path.

  Raises:
    ValueError: an image that is not uint8 (H, W), a heatmap that is not a finite real (h, w) map,
      alpha outside [0, 1] or an unknown colormap.
  """
  # Deferred (a measured heavy boundary): matplotlib, for its colormaps only, 0.4 s after `import jaxcxr.explain`
  # (2-core machine, median of 3).
  import matplotlib  # pylint: disable=g-import-not-at-top

  image = np.asarray(image_uint8)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim != 2 or image.dtype != np.uint8:
    raise ValueError(f"image_uint8: expected uint8 (H, W), got {image.dtype} {image.shape}")
  heat = np.asarray(heatmap)
  if heat.dtype.kind not in "biuf" or heat.ndim != 2 or heat.size == 0:
    raise ValueError(f"heatmap: expected a real (h, w) map, got {heat.dtype} {heat.shape}")
  heat = heat.astype(np.float32)
  if not 0.0 <= alpha <= 1.0:   # also refuses NaN
    raise ValueError(f"alpha: expected an opacity in [0, 1], got {alpha!r}")
  if cmap not in matplotlib.colormaps:
    raise ValueError(f"cmap: unknown matplotlib colormap {cmap!r} (e.g. 'jet', 'inferno')")
  if not np.isfinite(heat).all():
    raise ValueError("heatmap contains NaN or inf")
  if heat.shape != image.shape:
    heat = np.asarray(Image.fromarray(heat).resize(image.shape[::-1], Image.BILINEAR), np.float32)
  heat = np.clip(heat, 0.0, 1.0)
  colour = matplotlib.colormaps[cmap](heat)[..., :3]                   # (H, W, 3) in [0, 1]
  gray = np.repeat(image[..., None].astype(np.float32) / 255.0, 3, axis=-1)
  weight = alpha * heat[..., None]
  out = (1.0 - weight) * gray + weight * colour
  return io_lib.save_png(path, np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8))
