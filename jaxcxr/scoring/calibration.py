"""Fitting the post-filter: thresholds from real normal images, and the strict level from a generator's samples.

`calibrate` makes the atlas and the standard-level thresholds (5% of real normal training images
fail each score); `calibrate_strict_level` adds the level at which a generator keeps a chosen
fraction of its samples (`strictness_for_valid_rate`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcxr import data as data_lib
from jaxcxr.models.classifier import Classifier
from jaxcxr.models.generator import Generator
from jaxcxr.models.unet import UNet
from jaxcxr.scoring.features import lung_measures
from jaxcxr.scoring.pipeline import ScoringConfig
from jaxcxr.scoring.scorer import Scorer
from jaxcxr.scoring.thresholds import (REFERENCE_MEASURES, STANDARD_STRICTNESS, STRICTNESS_RANGE, THRESHOLD_NAMES,
                                       Calibration, thresholds_at)

__all__ = ["calibrate", "calibrate_strict_level", "strictness_for_valid_rate"]


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
