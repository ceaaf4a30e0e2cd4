"""The post-filter's thresholds (`Calibration`), its strictness levels, and the five scores from raw measures.

At a strictness q a fraction q of the real normal calibration images fails each score (q / 2 on
each side for the area ratio); `thresholds_at` sets the thresholds from the stored raw measures,
and `score_from_measures` applies them. Definitions: `jaxcxr.scoring` and docs/scores.md.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["REFERENCE_MEASURES", "SCORE_NAMES", "STANDARD_STRICTNESS", "STRICTNESS_RANGE", "THRESHOLD_NAMES",
           "Calibration", "resolve_strictness", "score_from_measures", "thresholds_at"]

SCORE_NAMES = ("score_shape", "score_abnormal", "score_maxheat", "score_symmetry", "score_left2right")
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
