"""Post-filter: lung symmetry features, the five scores, `valid`, and the fused generate-and-score call.

Everything numeric runs in one jitted function per batch:

  image (B, S, S, 1) in [0, 1]
    -> U-Net label map at `mask_size` (0 background, 1 patient's right lung = image
       left, 2 patient's left lung = image right)
    -> six symmetry features and the raw lung measures
    -> classifier logit and Grad-CAM max from one forward pass
    -> five scores, each > 0 meaning "good", and valid = all five > 0.

**Symmetry features** (the original post-filter): M = labels > 0, A = M[:, :, :W/2],
B = M[:, :, W/2:] mirrored. IoU(A, B); cosine <A, B> / (|A|_2 |B|_2); the squared
area-ratio deviation (|A| / (|A| + |B|) - 1/2)^2; then the same three after a k x k
dilation of each half (k = `ScoringConfig.dilation`). Empty masks give IoU 0, cosine 0
and deviation 1/4 (the worst values), never NaN.

**Scores**, with thresholds calibrated on real normal training images (`calibrate`) so
that about 5% of those images fail each score (2.5% on each side for the ratio):

* `score_shape` = min over the two lungs of the soft Dice between the lung and the mean
  lung of real normal images (the atlas), minus its 5th percentile.
* `score_symmetry` = Dice(right lung, mirrored left lung) minus its 5th percentile.
* `score_left2right` = the distance of log(area left / area right) inside the central
  95% range of real normal images (negative outside it); -1 when no lung is found.
* `score_abnormal` = 95th percentile of the normal-vs-abnormal classifier's logit on
  real normal images minus the image's logit (logit units).
* `score_maxheat` = 95th percentile of the Grad-CAM raw maximum (evidence for
  "abnormal" in logit units, `jaxcxr.explain`) minus the image's.

**Strictness.** The calibration also keeps each raw measure's values over the real
normal images, so the thresholds can be re-set at run time without refitting: at a
strictness q, a fraction q of those images fails each score (q / 2 on each side for
the ratio). Named levels live in the calibration: "standard" is q = 0.05 (the
percentiles above); "strict" is the q at which the shipped generator's valid rate is
about 5%, the original study's regime. `load_scorer(strictness=...)`,
`Scorer.at_strictness` and the command line's `--strictness` take a level name or a
number q in [0.01, 0.9].

Images of any square side are resized (never cropped) to each model's resolution;
non-square images are refused (pad them to a square first, as `jaxcxr.data.load_folder`
does). Every model here normalises per image (GroupNorm), so a score never depends on
the rest of its batch; with several devices the batch is sharded over them with
`jax.sharding` and the results equal the single-device ones.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import pathlib
import zipfile
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcxr import data as data_lib
from jaxcxr import io as io_lib
from jaxcxr.batching import default_chunk, in_chunks, map_batches
from jaxcxr.config import DTYPES
from jaxcxr.explain import grad_cam_pure
from jaxcxr.models.classifier import Classifier, load_classifier
from jaxcxr.models.condition import group_condition_batch
from jaxcxr.models.generator import Generator, latents
from jaxcxr.models.graph import abstract_graphdef
from jaxcxr.models.unet import UNet, as_unit_images, label_map, load_unet
from jaxcxr.program import Program

__all__ = [
    "FEATURE_NAMES",
    "SCORE_NAMES",
    "Calibration",
    "generate_and_score_batch",
    "latents_at",
    "score_batch",
    "split_with_dtype",
    "GenerationResult",
    "ScoreResult",
    "Scorer",
    "ScoringConfig",
    "calibrate",
    "calibrate_strict_level",
    "strictness_for_valid_rate",
    "fit_symmetry_postfilter",
    "load_scorer",
    "resolve_strictness",
    "shipped_scoring",
    "thresholds_at",
    "score_from_measures",
    "symmetry_features",
    "symmetry_postfilter_table",
]

SCORE_NAMES = ("score_shape", "score_abnormal", "score_maxheat", "score_symmetry", "score_left2right")
FEATURE_NAMES = ("iou", "cosine", "area_deviation", "iou_dilated", "cosine_dilated", "area_deviation_dilated")
CALIBRATION_FILE = "calibration.json"
ATLAS_FILE = "atlas.npz"
# The raw measures of the calibration images, for thresholds at any strictness (absent in old calibrations).
REFERENCE_FILE = "reference_measures.npz"
# Raw measures with a threshold, and the tail each one fails in: "low" (shape, symmetry), "high"
# (classifier logit, Grad-CAM maximum) or "both" (log area ratio, q / 2 each side).
REFERENCE_MEASURES = {"shape": "low", "symmetry": "low", "log_ratio": "both", "abnormal_logit": "high",
                      "maxheat": "high"}
# Fraction of real normal images failing each score at the "standard" level (the original calibration).
STANDARD_STRICTNESS = 0.05
# Numeric strictness range. Below 1%, thresholds reach the few real normals whose lungs the U-Net
# misses (symmetry 0 at the minimum), and pure noise would pass the shape score; at q = 1 the two
# bounds of the ratio would meet at its median.
STRICTNESS_RANGE = (0.01, 0.9)


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
  """How images are scored (not what the thresholds are: that is `Calibration`)."""

  # Side of the label maps that features and lung scores are computed at.
  mask_size: int = 256
  # Side k of the square dilation of each half-mask for the three dilated features.
  dilation: int = 5
  # Side of the mean-lung atlas of score_shape (mask_size must be a multiple of it).
  atlas_size: int = 64
  # Images per jitted call (static: one compile per size).
  batch_size: int = 32
  # Compute dtype of generator, U-Net and classifier ("float32" or "bfloat16"); parameters,
  # features and scores stay float32.
  dtype: str = "float32"

  def __post_init__(self):
    if self.mask_size < 2 or self.mask_size % 2:
      raise ValueError(f"ScoringConfig.mask_size must be even and >= 2, got {self.mask_size}")
    if self.dilation < 1 or self.dilation % 2 == 0:
      raise ValueError(f"ScoringConfig.dilation must be odd and >= 1, got {self.dilation}")
    if self.atlas_size < 1 or self.mask_size % self.atlas_size:
      raise ValueError(f"ScoringConfig.atlas_size={self.atlas_size} must divide mask_size={self.mask_size}")
    if self.batch_size < 1:
      raise ValueError(f"ScoringConfig.batch_size must be positive, got {self.batch_size}")
    if self.dtype not in DTYPES:
      raise ValueError(f"ScoringConfig.dtype: expected one of {DTYPES}, got {self.dtype!r}")


class Calibration(NamedTuple):
  """Thresholds from real normal training images (a pytree: it enters the jit as data).

  Attributes:
    atlas: float32 (2, A, A) in [0, 1]: mean right-lung and left-lung masks.
    shape_min: 5th percentile of the lung-shape agreement.
    symmetry_min: 5th percentile of Dice(right, mirrored left).
    log_ratio_min, log_ratio_max: 2.5th and 97.5th percentiles of log(area left / area right).
    abnormal_logit_max: 95th percentile of the abnormal classifier's logit.
    maxheat_max: 95th percentile of the Grad-CAM raw maximum (logit units).
  """

  atlas: Any
  shape_min: Any
  symmetry_min: Any
  log_ratio_min: Any
  log_ratio_max: Any
  abnormal_logit_max: Any
  maxheat_max: Any


THRESHOLD_NAMES = Calibration._fields[1:]


def thresholds_at(reference: dict[str, Any], atlas: Any, strictness: float) -> Calibration:
  """The calibration at which a fraction `strictness` of the reference images fails each score.

  Args:
    reference: {measure: float (N,)} raw measures of real normal images, for every
      measure in `REFERENCE_MEASURES`.
    atlas: float32 (2, A, A) mean lung masks.
    strictness: q in (0, 1): thresholds at the q-quantile of the "low" measures, the
      (1 - q)-quantile of the "high" ones and the q/2 and 1 - q/2 quantiles of the ratio
      (linear interpolation, as `np.percentile`; q = 0.05 gives the standard calibration).
  """
  q = float(strictness)
  if not 0.0 < q < 1.0:
    raise ValueError(f"thresholds_at: strictness must be a fraction in (0, 1), got {strictness!r}")
  missing = sorted(set(REFERENCE_MEASURES) - set(reference))
  if missing:
    raise ValueError(f"thresholds_at: reference measures lack {missing}; expected {sorted(REFERENCE_MEASURES)}")
  r = {name: np.asarray(reference[name], np.float64) for name in REFERENCE_MEASURES}
  if any(v.ndim != 1 or v.size == 0 or not np.isfinite(v).all() for v in r.values()):
    raise ValueError(f"thresholds_at: expected non-empty finite (N,) reference measures, got shapes "
                     f"{ {k: v.shape for k, v in r.items()} }")
  quantile = lambda name, p: np.float32(np.quantile(r[name], p))
  return Calibration(np.asarray(atlas, np.float32), shape_min=quantile("shape", q),
                     symmetry_min=quantile("symmetry", q), log_ratio_min=quantile("log_ratio", q / 2),
                     log_ratio_max=quantile("log_ratio", 1 - q / 2),
                     abnormal_logit_max=quantile("abnormal_logit", 1 - q), maxheat_max=quantile("maxheat", 1 - q))


def resolve_strictness(strictness: str | float, levels: dict[str, float]) -> float:
  """A strictness level name of `levels` ("standard", "strict") or a number q -> q, checked.

  Raises:
    ValueError: an unknown name, or a number outside `STRICTNESS_RANGE`, naming what is accepted.
  """
  lo, hi = STRICTNESS_RANGE
  accepted = f"a level ({', '.join(sorted(levels))}) or a fraction q in [{lo:g}, {hi:g}] of real normals failing each score"
  if isinstance(strictness, str):
    if strictness in levels:
      return float(levels[strictness])
    try:
      q = float(strictness)
    except ValueError:
      raise ValueError(f"strictness {strictness!r}: expected {accepted}") from None
  elif isinstance(strictness, (int, float, np.integer, np.floating)) and not isinstance(strictness, bool):
    q = float(strictness)
  else:
    raise ValueError(f"strictness {strictness!r}: expected {accepted}")
  if not lo <= q <= hi:   # also refuses NaN
    raise ValueError(f"strictness {strictness!r}: expected {accepted}")
  return q


class ScoreResult(NamedTuple):
  """Scores of N images, as host numpy arrays.

  Attributes:
    scores: {name: float32 (N,)} for the five `SCORE_NAMES` (> 0 is good).
    features: float32 (N, 6) symmetry features in `FEATURE_NAMES` order.
    valid: bool (N,), all five scores > 0.
    measures: {name: float32 (N,)} raw measures before calibration: shape, symmetry,
      log_ratio, abnormal_logit, maxheat, area_right, area_left (pixels at mask_size).
    masks: uint8 (N, mask_size, mask_size) label maps, or None unless asked for.
    heatmaps: float32 (N, R, R) Grad-CAM maps in [0, 1] (R the classifier side), or None.
  """

  scores: dict[str, np.ndarray]
  features: np.ndarray
  valid: np.ndarray
  measures: dict[str, np.ndarray]
  masks: np.ndarray | None = None
  heatmaps: np.ndarray | None = None


class GenerationResult(NamedTuple):
  """Output of `Scorer.generate_and_score`: `ScoreResult` fields plus what was generated.

  Attributes:
    images: uint8 (N, G, G) generated radiographs (G the generator side), or None.
    z: float32 (N, latent_dim) latents (sample i uses `models.generator.latents(key, i)`).
    result: the `ScoreResult` of the images.
  """

  images: np.ndarray | None
  z: np.ndarray
  result: ScoreResult


# ----------------------------------------------------------------------------- pure functions


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


def score_from_measures(measures: dict[str, jax.Array], calibration: Calibration) -> tuple[dict, jax.Array]:
  """The five scores (> 0 good) and `valid` from raw measures; works on jnp and numpy arrays.

  Returns:
    ({name: float32 (B,)} in `SCORE_NAMES`, bool (B,) valid).

  Raises:
    ValueError: measures missing one of those the scores need.
  """
  missing = sorted({"shape", "symmetry", "log_ratio", "abnormal_logit", "maxheat", "area_right", "area_left"}
                   - set(measures))
  if missing:
    raise ValueError(f"score_from_measures: the measures lack {missing}; pass a `ScoreResult.measures`")
  c = calibration
  lr = measures["log_ratio"]
  any_lung = (measures["area_right"] + measures["area_left"]) > 0
  scores = {
      "score_shape": measures["shape"] - c.shape_min,
      "score_abnormal": c.abnormal_logit_max - measures["abnormal_logit"],
      "score_maxheat": c.maxheat_max - measures["maxheat"],
      "score_symmetry": measures["symmetry"] - c.symmetry_min,
      "score_left2right": jnp.where(any_lung, jnp.minimum(lr - c.log_ratio_min, c.log_ratio_max - lr), -1.0),
  }
  scores = {k: jnp.asarray(v, jnp.float32) for k, v in scores.items()}
  valid = functools.reduce(jnp.logical_and, [v > 0 for v in scores.values()])
  return scores, valid


def _measure(unet: UNet, classifier: Classifier, atlas: jax.Array, x: jax.Array, config: ScoringConfig):
  """Images (B, S, S, 1) in [0, 1] -> labels, features, raw measures and the Grad-CAM map."""
  s = config.mask_size
  labels = label_map(unet, x[..., 0], (s, s))                               # (B, S, S) uint8
  r = classifier.config.resolution
  xc = x if x.shape[1] == r else jax.image.resize(x, (x.shape[0], r, r, 1), "linear", antialias=True)
  heatmap, maxheat, logit = grad_cam_pure(classifier, xc, 1.0)
  measures = lung_measures(labels, atlas)
  measures["abnormal_logit"] = logit
  measures["maxheat"] = maxheat
  return labels, symmetry_features(labels, config.dilation), measures, heatmap


def score_batch(models, states, calibration, x, config: ScoringConfig, keep_maps: bool):
  """The scoring of one batch inside a traced function (what `Scorer.score` jits).

  Args:
    models: (U-Net graphdef, classifier graphdef), static.
    states: (U-Net state, classifier state).
    calibration: a `Calibration` of arrays.
    x: float32 (B, S, S, 1), NHWC, in [0, 1].
    config: the `ScoringConfig` (static).
    keep_maps: also return "masks" and "heatmaps".

  Returns:
    {"scores": {name: (B,)}, "features": (B, 6), "valid": (B,), "measures": {...}} (+ maps).
  """
  return in_chunks(lambda x: _score_items(models, states, calibration, x, config, keep_maps), x,
                   chunk=default_chunk())


def _score_items(models, states, calibration, x, config: ScoringConfig, keep_maps: bool):
  """`score_batch` on every image at once (each image's result depends on that image only)."""
  unet = nnx.merge(models[0], states[0])
  classifier = nnx.merge(models[1], states[1])
  labels, features, measures, heatmap = _measure(unet, classifier, calibration.atlas, x, config)
  scores, valid = score_from_measures(measures, calibration)
  out = {"scores": scores, "features": features, "valid": valid, "measures": measures}
  if keep_maps:
    out["masks"], out["heatmaps"] = labels, heatmap
  return out


@functools.partial(jax.jit, static_argnames=("models", "config", "keep_maps"))
def _score_images(models, states, calibration, x, *, config, keep_maps):
  return score_batch(models, states, calibration, x.astype(jnp.float32), config, keep_maps)


def latents_at(key: jax.Array, index: jax.Array, latent_dim: int) -> jax.Array:
  """z of sample indices (B,) -> (B, latent_dim): `models.generator.latents(key, i)` per index, traceable."""
  return jax.vmap(lambda i: latents(key, i, 1, latent_dim)[0])(index)


def generate_and_score_batch(models, states, calibration, z, cond, config: ScoringConfig, keep_maps: bool,
                             keep_images: bool = True):
  """Generation plus post-filter scoring of one batch of latents inside a traced function.

  The core of every compiled sampling path (`Scorer.generate_and_score`, the unfiltered rounds
  of `jaxcxr.sampling.sample_valid` and the pre-filtered rounds of `jaxcxr.prefilter.sample_valid_latent`).

  Args:
    models: (U-Net graphdef, classifier graphdef, generator graphdef, ...), static.
    states: their states, in the same order.
    calibration: a `Calibration` of arrays.
    z: float32 (B, latent_dim) latents; cond: float32 (B, n_conditions) condition rows.
    config: the `ScoringConfig` (static).
    keep_maps: also return "masks" and "heatmaps".
    keep_images: also return "images", uint8 (B, G, G).

  Returns:
    `score_batch`'s dict plus "z" (and "images").
  """

  def items(z, cond):
    images = nnx.merge(models[2], states[2])(z, cond)                                # (B, G, G, 1) in [-1, 1]
    x = jnp.clip((images + 1.0) * 0.5, 0.0, 1.0)
    out = _score_items(models[:2], states[:2], calibration, x, config, keep_maps)
    out["z"] = z
    if keep_images:
      out["images"] = jnp.round(x[..., 0] * 255.0).astype(jnp.uint8)
    return out

  # A few images at a time on a CPU (`batching.in_chunks`): the same results, faster.
  return in_chunks(items, z, cond, chunk=default_chunk())


@functools.cache
def _generate_and_score_fn(models, config: ScoringConfig, keep_maps: bool, keep_images: bool):
  """The one compiled call for these graph definitions (U-Net, classifier, generator) and settings.

  Returns:
    `fn(states, calibration, key, index, cond)`: latents of samples `index`, generator, U-Net,
    classifier, Grad-CAM, scores (`generate_and_score_batch`'s outputs).
  """

  def generate_and_score(states, calibration, key, index, cond):
    z = latents_at(key, index, nnx.merge(models[2], states[2]).config.latent_dim)
    return generate_and_score_batch(models, states, calibration, z, cond, config, keep_maps, keep_images)

  return jax.jit(generate_and_score)


# ----------------------------------------------------------------------------- host side


def split_with_dtype(model: nnx.Module, dtype: str):
  """(graphdef, state) of `model` (with a `config.dtype`) computing in `dtype`; parameters are unchanged."""
  graphdef, state = nnx.split(model)
  if model.config.dtype == dtype:
    return graphdef, state
  return abstract_graphdef(type(model), dataclasses.replace(model.config, dtype=dtype)), state


def _device_mesh() -> Mesh | None:
  devices = jax.devices()
  return Mesh(np.asarray(devices), ("batch",)) if len(devices) > 1 else None


def _to_unit_square(images: Any) -> np.ndarray:
  """uint8 [0, 255] or float [0, 1] (N, S, S[, 1]) -> float32 (N, S, S, 1) in [0, 1], checked."""
  images = np.asarray(images)
  if images.ndim in (3, 4) and images.shape[0] == 0:
    return np.zeros(images.shape[:3] + (1,), np.float32)
  if images.ndim in (3, 4) and images.shape[1] != images.shape[2]:
    raise ValueError(f"score: expected square images, got {images.shape[1]}x{images.shape[2]}; pad them to a "
                     "centred square first (jaxcxr.data.load_folder does), they are never cropped")
  try:
    return as_unit_images(images)[..., None]
  except ValueError as e:
    raise ValueError(f"score: {e}") from e


def _replace_config(config: ScoringConfig, changes: dict[str, Any]) -> ScoringConfig:
  """`dataclasses.replace(config, **changes)`, ValueError (naming the fields) for an unknown field."""
  unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(ScoringConfig)})
  if unknown:
    raise ValueError(f"unknown ScoringConfig field(s) {unknown}; expected some of "
                     f"{[f.name for f in dataclasses.fields(ScoringConfig)]}")
  return dataclasses.replace(config, **changes)


def _result(out: dict) -> ScoreResult:
  return ScoreResult(scores=out["scores"], features=out["features"], valid=out["valid"], measures=out["measures"],
                     masks=out.get("masks"), heatmaps=out.get("heatmaps"))


class Scorer:
  """The post-filter: a U-Net, an abnormal classifier and their calibration.

  Build it with `load_scorer()` (shipped checkpoints) or from models and `calibrate`.
  Model states are split once; each batch is one call of a jitted pure function
  (the split-state path has a lower per-call overhead than `nnx.jit`).

  Examples:
    >>> scorer = load_scorer()                                  # doctest: +SKIP
    >>> result = scorer.score(dataset.images)                   # doctest: +SKIP
    >>> result.valid.mean(), result.scores["score_symmetry"][:3]  # doctest: +SKIP
  """

  def __init__(self, unet: UNet, classifier: Classifier, calibration: Calibration,
               config: ScoringConfig = ScoringConfig(), *, provenance: dict | None = None,
               reference: dict[str, Any] | None = None, levels: dict[str, float] | None = None,
               strictness: float = STANDARD_STRICTNESS):
    """Args: the models, the thresholds, the config; `provenance` (saved with the calibration);
    `reference` (raw measures of the calibration images, `REFERENCE_MEASURES`; None: fixed
    thresholds), `levels` (named strictness levels, "standard" always included) and the
    `strictness` q that `calibration` corresponds to."""
    atlas = np.asarray(calibration.atlas, np.float32)
    if atlas.shape != (2, config.atlas_size, config.atlas_size):
      raise ValueError(f"Scorer: calibration atlas has shape {atlas.shape}, the config expects "
                       f"(2, {config.atlas_size}, {config.atlas_size})")
    self.config = config
    self.unet = unet
    self.classifier = classifier
    self.calibration = Calibration(atlas, *(np.float32(getattr(calibration, n)) for n in THRESHOLD_NAMES))
    self.provenance = dict(provenance or {})
    if reference is not None:
      missing = set(REFERENCE_MEASURES) - set(reference)
      if missing:
        raise ValueError(f"Scorer: reference measures lack {sorted(missing)}")
      reference = {name: np.asarray(reference[name], np.float32) for name in REFERENCE_MEASURES}
    self.reference = reference
    self.levels = {"standard": STANDARD_STRICTNESS, **(levels or {})}
    self.strictness = float(strictness)
    u_def, u_state = split_with_dtype(unet, config.dtype)
    c_def, c_state = split_with_dtype(classifier, config.dtype)
    # What the jitted functions take (public for pipelines that fuse more work into the same call,
    # e.g. `sampling.sample_valid`, `prefilter.sample_valid_latent`): static graphdefs, device-resident states and
    # calibration.
    self.graphdefs = (u_def, c_def)
    self.mesh = _device_mesh()
    self.states = self.replicate((u_state, c_state))
    self.device_calibration = self.replicate(jax.tree.map(jnp.asarray, self.calibration))

  def replicate(self, tree):
    """Puts a pytree on every device (a no-op with one device)."""
    if self.mesh is None:
      return tree
    return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

  def _shard(self, array: np.ndarray) -> jax.Array:
    """Puts a batch on the devices, split along its first axis when several devices divide it."""
    if self.mesh is None or array.shape[0] % self.mesh.size:
      return jnp.asarray(array)
    return jax.device_put(array, NamedSharding(self.mesh, PartitionSpec("batch")))

  def with_config(self, **changes) -> Scorer:
    """A scorer with the same models and calibration and a changed config (e.g. dtype="bfloat16")."""
    return Scorer(self.unet, self.classifier, self.calibration, _replace_config(self.config, changes),
                  provenance=self.provenance, reference=self.reference, levels=self.levels,
                  strictness=self.strictness)

  @property
  def strictness_name(self) -> str:
    """The level name of the current strictness ("standard", "strict"), or the number q as text."""
    names = [name for name, q in self.levels.items() if np.isclose(q, self.strictness)]
    return names[0] if names else f"{self.strictness:g}"

  def at_strictness(self, strictness: str | float) -> Scorer:
    """The same scorer with thresholds at another strictness (no refit, no recompilation).

    Args:
      strictness: a level of `self.levels` ("standard", "strict") or a fraction q in
        `STRICTNESS_RANGE` of real normal calibration images that fail each score.

    Raises:
      ValueError: an unknown level or a q out of range; or a calibration without reference
        measures (made before strictness levels existed) asked for anything but its own thresholds.
    """
    q, calibration = self._calibration_at(strictness)
    if calibration is self.calibration:
      return self
    scorer = copy.copy(self)
    scorer.calibration = calibration
    scorer.device_calibration = self.replicate(jax.tree.map(jnp.asarray, calibration))
    scorer.strictness = q
    return scorer

  def _calibration_at(self, strictness: str | float) -> tuple[float, Calibration]:
    """(q, host thresholds) at a strictness; `self.calibration` itself at the current one. Raises as `at_strictness`."""
    q = resolve_strictness(strictness, self.levels)
    if np.isclose(q, self.strictness):
      return self.strictness, self.calibration
    if self.reference is None:
      raise ValueError(f"strictness {strictness!r}: this calibration stores fixed thresholds only (no reference "
                       "measures); run `jaxcxr calibrate` again to get strictness levels")
    return q, thresholds_at(self.reference, self.calibration.atlas, q)

  def with_level(self, name: str, strictness: float) -> Scorer:
    """The same scorer with one more named strictness level (e.g. "strict"), saved by `save`."""
    if name == "standard" or not name.isidentifier():
      raise ValueError(f"with_level: expected a new level name (not 'standard'), got {name!r}")
    q = resolve_strictness(float(strictness), {})
    scorer = copy.copy(self)
    scorer.levels = {**self.levels, name: q}
    return scorer

  def scores_at(self, measures: dict[str, Any], strictness: str | float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(scores {name: (N,)}, valid bool (N,)) of scored images (their `ScoreResult.measures`) at another
    strictness, on the host (no device work: bisections and reports call it many times)."""
    measures = {k: np.asarray(v) for k, v in measures.items()}
    if len({v.shape for v in measures.values()}) > 1 or any(v.ndim != 1 for v in measures.values()):
      shapes = {k: v.shape for k, v in measures.items()}
      raise ValueError(f"scores_at: expected measures of one shape (N,), got {shapes}")
    scores, valid = score_from_measures(measures, self._calibration_at(strictness)[1])
    return {k: np.asarray(v, np.float32) for k, v in scores.items()}, np.asarray(valid, bool)

  def valid_at(self, measures: dict[str, Any], strictness: str | float) -> np.ndarray:
    """bool (N,) validity of scored images (their `ScoreResult.measures`) at another strictness, on the host."""
    return self.scores_at(measures, strictness)[1]

  def score(self, images: Any, *, keep_maps: bool = False, progress: bool = False) -> ScoreResult:
    """Scores real or generated radiographs.

    Args:
      images: uint8 [0, 255] or float [0, 1] images (N, S, S) or (N, S, S, 1), NHWC, any
        square side S (resized to each model's side, never cropped).
      keep_maps: also return the label maps and Grad-CAM maps (memory: ~80 kB per image).
      progress: show a tqdm bar on stderr.

    Returns:
      `ScoreResult` with N rows.

    Raises:
      ValueError: non-square, wrongly typed, non-finite or out-of-range images.
    """
    out = map_batches(lambda x: _score_images(self.graphdefs, self.states, self.device_calibration, x,
                                              config=self.config, keep_maps=keep_maps),
                      _to_unit_square(images), self.config.batch_size, fixed_shape=True, put=self._shard,
                      desc="score", progress=progress)
    return _result(out)

  def generate_and_score(self, generator: Generator, key: jax.Array, n: int, group: str, *, label: int = 0,
                         start: int = 0, keep_images: bool = True, keep_maps: bool = False,
                         progress: bool = False) -> GenerationResult:
    """Generates samples start .. start+n-1 of a group and scores them, one compiled call per batch.

    Sample i uses latent `models.generator.latents(key, i)` (so it does not depend on n,
    the batch size or the number of devices) and the group's condition row.

    Args:
      generator: a `Generator` (its compute dtype is set from the config too).
      key: PRNG key of the latents.
      n: number of samples.
      group: one of `data.GROUPS`.
      label: 0 normal / 1 abnormal (only for a label-conditioned generator).
      start: index of the first sample.
      keep_images: return the uint8 images.
      keep_maps: also return label maps and Grad-CAM maps.
      progress: tqdm bar on stderr.

    Returns:
      `GenerationResult`.

    Raises:
      jaxcxr.data.DataError: unknown group. ValueError: n or start not an integer >= 0, or a label the
        generator lacks.

    Examples:
      Every image, valid or not, with its scores (`jaxcxr.sample_valid` keeps the valid ones):

      >>> import jax, jaxcxr
      >>> pre = jaxcxr.load_pretrained(batch_size=4)                                          # doctest: +SKIP
      >>> out = pre.scorer.generate_and_score(pre.generator, jax.random.key(0), 8, "58_64f")  # doctest: +SKIP
      >>> out.images.shape, out.result.valid.mean(), out.result.scores["score_shape"]         # doctest: +SKIP
    """
    for name, value in (("n", n), ("start", start)):
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"generate_and_score: {name} must be an integer >= 0, got {value!r}")
    fn, states, cond = self._generation(generator, group, label, keep_images, keep_maps)
    out = map_batches(lambda index: fn(states, self.device_calibration, key, index, cond),
                      np.arange(start, start + n, dtype=np.int32), self.config.batch_size, fixed_shape=True,
                      put=self._shard, desc=f"generate {group}", progress=progress)
    return GenerationResult(out.get("images"), out["z"], _result(out))

  def generate_and_score_program(self, generator: Generator, key: jax.Array, group: str, *, label: int = 0,
                                 start: int = 0, keep_images: bool = True, keep_maps: bool = False) -> Program:
    """The compiled call `generate_and_score` makes for one batch, and its arguments.

    The batch is samples start .. start + `config.batch_size` - 1, placed (and sharded) as
    `generate_and_score` places them; `fn` is the library's own jitted call, so its compile
    cache is the one `generate_and_score` uses.

    Args:
      generator, key, group, label, start, keep_images, keep_maps: as `generate_and_score`.

    Returns:
      `Program(fn, args)`: `fn(states, calibration, key, index, cond)` with the states of
      the U-Net, the classifier and the generator, `device_calibration`, int32 sample
      indices (B,) and the condition rows (B, C) -> the batch's outputs: "z", "scores",
      "features", "valid", "measures", with `keep_images` "images" and with `keep_maps`
      "masks", "heatmaps".

    Raises:
      jaxcxr.data.DataError: unknown group. ValueError: start not an integer >= 0, or a label
        the generator lacks.

    Examples:
      >>> program = scorer.generate_and_score_program(generator, jax.random.key(0), "58_64f")  # doctest: +SKIP
      >>> compiled = program.fn.lower(*program.args).compile()                                 # doctest: +SKIP
    """
    if not isinstance(start, (int, np.integer)) or isinstance(start, bool) or start < 0:
      raise ValueError(f"generate_and_score_program: start must be an integer >= 0, got {start!r}")
    fn, states, cond = self._generation(generator, group, label, keep_images, keep_maps)
    index = self._shard(np.arange(start, start + self.config.batch_size, dtype=np.int32))
    return Program(fn, (states, self.device_calibration, key, index, cond))

  def _generation(self, generator: Generator, group: str, label: int, keep_images: bool, keep_maps: bool):
    """(the jitted call, the placed model states, the placed condition rows of one batch) of `generate_and_score`."""
    cfg = generator.config
    if "label" not in cfg.conditions and label != 0:
      raise ValueError(f"generate_and_score: this generator is not conditioned on the label; got label={label}")
    cond_row = group_condition_batch(group, 1, label, conditions=cfg.conditions)
    g_def, g_state = split_with_dtype(generator, self.config.dtype)
    fn = _generate_and_score_fn((*self.graphdefs, g_def), self.config, keep_maps, keep_images)
    states = (*self.states, self.replicate(g_state))
    cond = self._shard(np.repeat(cond_row, self.config.batch_size, axis=0))
    return fn, states, cond

  def save(self, directory: str | os.PathLike) -> pathlib.Path:
    """Writes the calibration (`calibration.json`: config, thresholds at the current strictness,
    the strictness levels, provenance; `atlas.npz`; `reference_measures.npz`).

    The models stay in their own checkpoints; `provenance` names them and holds their
    `checkpoints.model_id`, which `load_scorer` checks.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    io_lib.save_npz(directory / ATLAS_FILE, {"atlas": np.asarray(self.calibration.atlas, np.float32)}, compressed=True)
    if self.reference is not None:
      io_lib.save_npz(directory / REFERENCE_FILE, self.reference, compressed=True)
    payload = {"config": dataclasses.asdict(self.config),
               "thresholds": {n: float(getattr(self.calibration, n)) for n in THRESHOLD_NAMES},
               "strictness": self.strictness,
               "levels": self.levels,
               "provenance": self.provenance}
    io_lib.save_json(directory / CALIBRATION_FILE, payload)
    return directory


# ----------------------------------------------------------------------------- calibration


def calibrate(unet: UNet, classifier: Classifier, normal_images: Any, config: ScoringConfig = ScoringConfig(), *,
              provenance: dict | None = None, progress: bool = False) -> Scorer:
  """Builds a `Scorer` whose thresholds come from real normal (training) images.

  The atlas is the mean predicted right- and left-lung mask of the images; then each
  threshold is the percentile named in `Calibration` of the raw measure over them.

  Args:
    unet, classifier: the models.
    normal_images: uint8 or [0, 1] float images (N, S, S) of real normal radiographs, N >= 20.
    config: scoring config.
    provenance: free-form record saved with the calibration (data file, split, model ids).
    progress: tqdm bars.

  Returns:
    A calibrated `Scorer`.

  Raises:
    ValueError: fewer than 20 images, or images of a bad form.
  """
  shape = np.shape(normal_images)
  if len(shape) not in (3, 4):
    raise ValueError(f"calibrate: expected images (N, S, S) or (N, S, S, 1), got shape {shape}")
  n = shape[0]
  if n < 20:
    raise ValueError(f"calibrate: need at least 20 real normal images for percentiles, got {n}")
  a = config.atlas_size
  flat_atlas = Calibration(np.full((2, a, a), 0.5, np.float32), *(np.float32(0.0) for _ in THRESHOLD_NAMES))
  first = Scorer(unet, classifier, flat_atlas, config).score(normal_images, keep_maps=True, progress=progress)
  s = config.mask_size
  masks = first.masks
  atlas = np.stack([(masks == c).reshape(n, a, s // a, a, s // a).mean(axis=(0, 2, 4)) for c in (1, 2)])
  shape = np.asarray(lung_measures(jnp.asarray(masks), jnp.asarray(atlas, jnp.float32))["shape"])
  reference = {name: np.asarray(first.measures[name], np.float32) for name in REFERENCE_MEASURES}
  reference["shape"] = shape.astype(np.float32)   # against the atlas just made, not the flat one
  calibration = thresholds_at(reference, atlas, STANDARD_STRICTNESS)
  provenance = {**(provenance or {}), "n_calibration_images": int(n)}
  return Scorer(unet, classifier, calibration, config, provenance=provenance, reference=reference)


def strictness_for_valid_rate(scorer: Scorer, measures: dict[str, Any], valid_rate: float) -> float:
  """The strictness q at which a fraction `valid_rate` of scored images stays valid (bisection).

  The valid rate falls monotonically as q grows (every threshold tightens), so 40 halvings
  of `STRICTNESS_RANGE` find q to within 1e-12; a rate out of reach returns the range end.

  Args:
    scorer: a calibrated scorer with reference measures.
    measures: `ScoreResult.measures` of the images (e.g. generated ones) at any strictness.
    valid_rate: the target fraction of valid images, in (0, 1).
  """
  if not 0.0 < valid_rate < 1.0:
    raise ValueError(f"strictness_for_valid_rate: valid_rate must be in (0, 1), got {valid_rate}")
  if scorer.reference is None:
    raise ValueError("strictness_for_valid_rate: the scorer's calibration has no reference measures")
  lo, hi = STRICTNESS_RANGE
  rate = lambda q: float(scorer.valid_at(measures, q).mean())
  if rate(lo) <= valid_rate:
    return lo
  if rate(hi) >= valid_rate:
    return hi
  for _ in range(40):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if rate(mid) > valid_rate else (lo, mid)
  return hi


def calibrate_strict_level(scorer: Scorer, generator: Generator, valid_rate: float, *, n_per_group: int = 128,
                           seed: int = 0, name: str = "strict", provenance: dict[str, Any] | None = None,
                           progress: bool = False) -> tuple[Scorer, dict[str, Any]]:
  """Adds the level `name` at which `generator` keeps a fraction `valid_rate` of its images.

  Group i of `jaxcxr.data.GROUPS` gives samples 0 .. n_per_group-1 of `jax.random.key(seed + i)`
  (`Scorer.generate_and_score`); their pooled measures set the level's strictness q
  (`strictness_for_valid_rate`). The level is recorded in the scorer's provenance under
  `name` (n_samples, seed, target_valid_rate, and `provenance`, e.g. the generator's folder
  and model id), so that `Scorer.save` keeps how it was set.

  Args:
    scorer: a calibrated scorer with reference measures (`calibrate`).
    generator: the generator whose valid rate the level fixes.
    valid_rate: the fraction of generated images that stays valid at the level, in (0, 1).
    n_per_group: samples per age-sex group (> 0).
    seed: group i uses `jax.random.key(seed + i)`.
    name: the level's name (not "standard").
    provenance: more about the level to record (JSON-ready), e.g. {"generator": ..., "generator_id": ...}.
    progress: tqdm bars.

  Returns:
    (the scorer with the level added, {"strictness": q, "n_samples": pooled samples,
    "generated_valid_rate": {level: fraction of the samples valid at each level of the new scorer}}).

  Raises:
    ValueError: valid_rate outside (0, 1), n_per_group < 1, a scorer without reference measures, a bad name.
  """
  if not isinstance(n_per_group, (int, np.integer)) or isinstance(n_per_group, bool) or n_per_group < 1:
    raise ValueError(f"calibrate_strict_level: n_per_group must be an integer >= 1, got {n_per_group!r}")
  if not 0.0 < valid_rate < 1.0:
    raise ValueError(f"calibrate_strict_level: valid_rate must be in (0, 1), got {valid_rate}")
  parts = [scorer.generate_and_score(generator, jax.random.key(seed + i), n_per_group, group, keep_images=False,
                                     progress=progress).result.measures for i, group in enumerate(data_lib.GROUPS)]
  measures = {k: np.concatenate([m[k] for m in parts]) for k in parts[0]}
  q = strictness_for_valid_rate(scorer, measures, valid_rate)
  leveled = scorer.with_level(name, q)
  n = int(len(measures["shape"]))
  leveled.provenance = {**leveled.provenance, name: {**(provenance or {}), "n_samples": n, "seed": seed,
                                                     "target_valid_rate": valid_rate}}
  rates = {level: float(leveled.valid_at(measures, level).mean()) for level in leveled.levels}
  return leveled, {"strictness": q, "n_samples": n, "generated_valid_rate": rates}


def shipped_scoring() -> pathlib.Path:
  """The first shipped calibration folder of `checkpoints.SHIPPED_SCORING` present.

  Raises:
    jaxcxr.checkpoints.CheckpointError: none is there.
  """
  # jaxcxr.checkpoints imports orbax: about 0.8 s (`python -X importtime`) that scoring never needs otherwise.
  from jaxcxr import checkpoints  # pylint: disable=g-import-not-at-top

  root = checkpoints.checkpoints_root()
  for name in checkpoints.SHIPPED_SCORING:
    if (root / name / CALIBRATION_FILE).is_file():
      return root / name
  raise checkpoints.CheckpointError(f"{root}: no shipped scoring calibration among "
                                    f"{', '.join(checkpoints.SHIPPED_SCORING)}; pass --scoring DIR or run "
                                    "`jaxcxr calibrate`")


def _read_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
  """The arrays of an npz file (no pickles); the handle is ours to close, as np.load leaks its own on a bad zip."""
  with open(path, "rb") as file, np.load(file, allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


def load_scorer(directory: str | os.PathLike | None = None, *, unet_dir: str | os.PathLike | None = None,
                classifier_dir: str | os.PathLike | None = None, strictness: str | float = "standard",
                **config_changes) -> Scorer:
  """Loads a calibrated scorer: calibration from `directory`, models from the checkpoints it names.

  Args:
    directory: a folder written by `Scorer.save`; default the shipped calibration
      (`checkpoints.SHIPPED_SCORING`, the first present).
    strictness: a level of the calibration ("standard", "strict") or a fraction q of real
      normal calibration images failing each score (`Scorer.at_strictness`).
    unet_dir, classifier_dir: override the model checkpoints named in the calibration
      (their `model_id` must still match: thresholds are only valid for those weights).
    **config_changes: ScoringConfig fields to change, e.g. batch_size=64, dtype="bfloat16"
      (mask_size, dilation and atlas_size are fixed by the calibration).

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing or unreadable calibration, or models whose
      ids differ from those it was calibrated with.
  """
  from jaxcxr import checkpoints  # pylint: disable=g-import-not-at-top

  directory = pathlib.Path(directory) if directory is not None else shipped_scoring()
  try:
    payload = json.loads((directory / CALIBRATION_FILE).read_text(encoding="utf-8"))
    atlas = np.asarray(_read_npz(directory / ATLAS_FILE)["atlas"], np.float32)
    reference = None
    if (directory / REFERENCE_FILE).exists():
      arrays = _read_npz(directory / REFERENCE_FILE)
      reference = {name: np.asarray(arrays[name], np.float32) for name in REFERENCE_MEASURES}
    config = ScoringConfig(**payload["config"])
    thresholds = [np.float32(payload["thresholds"][name]) for name in THRESHOLD_NAMES]
    provenance = payload.get("provenance", {})
    for role, override in (("unet", unet_dir), ("classifier", classifier_dir)):
      if not isinstance(provenance, dict) or (override is None and not isinstance(provenance.get(role), str)):
        raise KeyError(f"provenance.{role}: the {role} checkpoint it was calibrated with")
    levels = {name: float(q) for name, q in payload.get("levels", {}).items()}
    saved_strictness = float(payload.get("strictness", STANDARD_STRICTNESS))
  except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
    raise checkpoints.CheckpointError(f"{directory}: not a readable scoring calibration ({e})") from e
  fixed = {"mask_size", "dilation", "atlas_size"} & set(config_changes)
  if fixed:
    raise ValueError(f"load_scorer: {sorted(fixed)} are fixed by the calibration and cannot be changed")
  config = _replace_config(config, config_changes)
  models = {}
  for role, override, loader in (("unet", unet_dir, load_unet), ("classifier", classifier_dir, load_classifier)):
    path = pathlib.Path(override) if override is not None else checkpoints.checkpoints_root() / provenance[role]
    expected = provenance.get(f"{role}_id")
    if expected is not None and checkpoints.model_id(path) != expected:
      raise checkpoints.CheckpointError(f"{path}: {role} weights differ from those {directory} was calibrated "
                                        f"with (model id {checkpoints.model_id(path)} != {expected}); re-run "
                                        "calibration")
    models[role] = loader(path)
  try:
    scorer = Scorer(models["unet"], models["classifier"], Calibration(atlas, *thresholds), config,
                    provenance=provenance, reference=reference, levels=levels, strictness=saved_strictness)
  except ValueError as e:          # the calibration's parts do not fit together
    raise checkpoints.CheckpointError(f"{directory}: not a consistent scoring calibration ({e})") from e
  return scorer.at_strictness(strictness)


# ----------------------------------------------------------------------------- the original post-filter


def fit_symmetry_postfilter(features: Any, y: Any, *, n_folds: int = 3, seed: int = 0) -> list[dict[str, Any]]:
  """The original post-filter: a decision tree and a logistic regression on the six symmetry features.

  Each model's hyper-parameters are chosen by `n_folds`-fold stratified cross-validation
  (scikit-learn `GridSearchCV`, ROC AUC): tree depth 1-6 and minimum leaf size; logistic
  regression C from 1e-3 to 1e3 on standardised features. The reported figures are
  the cross-validated scores of the chosen setting (mean and std over folds).

  Args:
    features: float (N, 6) in `FEATURE_NAMES` order (e.g. `ScoreResult.features`).
    y: binary (N,) targets, e.g. `ScoreResult.valid` or labels a user supplies.
    n_folds: folds of the cross-validation.
    seed: seed of the fold assignment.

  Returns:
    One row per model: {"model", "params", "roc_auc", "roc_auc_std", "accuracy",
    "accuracy_std", "n", "n_positive", "estimator" (refitted on all data)}.

  Raises:
    ValueError: wrong feature shape, non-finite features, non-binary y, n_folds < 2, or fewer than
      `n_folds` examples of a class.
  """
  # scikit-learn: about 5 s (`python -X importtime`), for this fit only.
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.model_selection import GridSearchCV, StratifiedKFold  # pylint: disable=g-import-not-at-top
  from sklearn.pipeline import make_pipeline  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
  from sklearn.tree import DecisionTreeClassifier  # pylint: disable=g-import-not-at-top

  x, y = np.asarray(features), np.asarray(y)
  if x.dtype.kind not in "biuf" or x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES) or y.shape != x.shape[:1]:
    raise ValueError(f"fit_symmetry_postfilter: expected real features (N, {len(FEATURE_NAMES)}) and y (N,), got "
                     f"{x.dtype} {x.shape} and {y.shape}")
  if not np.isfinite(x.astype(np.float64)).all():
    raise ValueError("fit_symmetry_postfilter: features contain NaN or inf")
  if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
    raise ValueError("fit_symmetry_postfilter: y must hold binary labels (bool or 0/1)")
  if not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
    raise ValueError(f"fit_symmetry_postfilter: n_folds must be an integer >= 2, got {n_folds!r}")
  x, y = x.astype(np.float64), y.astype(bool)
  counts = (int((~y).sum()), int(y.sum()))
  if min(counts) < n_folds:
    raise ValueError(f"fit_symmetry_postfilter: need at least {n_folds} examples of each class, got "
                     f"{counts[0]} negative and {counts[1]} positive")
  folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
  grids = {
      "decision_tree": (DecisionTreeClassifier(random_state=seed),
                        {"max_depth": [1, 2, 3, 4, 5, 6], "min_samples_leaf": [1, 5, 20]}),
      "logistic_regression": (make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                              {"logisticregression__C": [1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3]}),
  }
  rows = []
  for name, (estimator, grid) in grids.items():
    search = GridSearchCV(estimator, grid, scoring={"roc_auc": "roc_auc", "accuracy": "accuracy"},
                          refit="roc_auc", cv=folds)
    search.fit(x, y)
    i = search.best_index_
    cv = search.cv_results_
    rows.append({"model": name, "params": {k.split("__")[-1]: v for k, v in search.best_params_.items()},
                 "roc_auc": float(cv["mean_test_roc_auc"][i]), "roc_auc_std": float(cv["std_test_roc_auc"][i]),
                 "accuracy": float(cv["mean_test_accuracy"][i]), "accuracy_std": float(cv["std_test_accuracy"][i]),
                 "n": int(len(y)), "n_positive": counts[1], "estimator": search.best_estimator_})
  return rows


def symmetry_postfilter_table(rows: list[dict[str, Any]], title: str = "") -> str:
  """Markdown table of `fit_symmetry_postfilter` rows."""
  lines = [f"**{title}**", ""] if title else []
  lines += ["| model | chosen parameters | ROC AUC (3-fold CV) | accuracy | n (positive) |", "|---|---|---|---|---|"]
  for r in rows:
    params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
    lines.append(f"| {r['model']} | {params} | {r['roc_auc']:.3f} +- {r['roc_auc_std']:.3f} | "
                 f"{r['accuracy']:.3f} +- {r['accuracy_std']:.3f} | {r['n']} ({r['n_positive']}) |")
  return "\n".join(lines)
