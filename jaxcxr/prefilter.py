"""Pre-filter: predict from a generator latent z alone whether its image will be valid.

Mirrors the original CXR-GAN study's pre-filter: per age-sex group, classifiers on
z (logistic regression, MLPs, kNN, SVMs, trees, a random forest) are compared with
stratified 3-fold cross-validation (ROC AUC and precision), then a threshold
strategy turns the chosen model's scores into an accept/reject rule, so that bad
latents are never generated and scored.

Sections:
* Latent datasets: `save_latent_dataset` / `load_latent_dataset` (compressed npz,
  validated, written atomically), `latent_targets`.
* Thresholds: `select_threshold` (the DESIGN.md section 5 contract names in
  `STRATEGIES`), `threshold_report`.
* Flax latent classifiers (`jaxcxr.models.latent`): `fit_latent_classifier` (one
  jitted `lax.scan` of optax steps per call, train state donated),
  `predict_latent` (`jax.jit` over the `nnx.split` state, DESIGN.md section 10),
  and `FlaxLatentEstimator`, their scikit-learn face.
* Model zoo and cross-validation: `latent_model_zoo`, `cross_validate_latent`,
  `results_table`.
* Exploratory views: `latent_score_correlations`, `embed_extremes`.
* Figures (matplotlib, written atomically): `save_roc_pr_curves`,
  `save_confusion_matrix`, `save_correlation_heatmap`, `save_extremes_scatter`.
* Building latent datasets: `build_latent_dataset` (through the post-filter's
  `Scorer.generate_and_score`), `latent_dataset_summary`.
* One-command report: `select_models`, `write_latent_report` (CV table, views,
  each group's best model's ROC/PR and confusion).
* Fitted pre-filters: `Prefilter` (classifier + logit threshold + strategy +
  group), `fit_prefilter` (train / validation / test protocol), `load_prefilter`.
* Filtered sampling on device: `sample_valid` (one compiled call per round: draw a
  pool of latents, classify, select with static shapes, generate and post-score
  only the accepted ones), `warm_up_sampler`, and `NudgeConfig` (latent nudging up
  the classifier's logit on the latent's own norm shell).

Conventions: a latent is accepted (predicted valid) when its score >= threshold;
labels are 1 = valid (or "the score is > 0"). Ragged work (thresholds, folds,
tables) runs on the host in numpy.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
import pathlib
import time
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.special
from flax import nnx
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from jaxcxr import metrics as metrics_lib
from jaxcxr import scoring
from jaxcxr.config import LATENT_PRESETS, LatentClassifierConfig
from jaxcxr.data import GROUPS, DataError
from jaxcxr import io as io_lib
from jaxcxr.io import write_bytes_atomic
from jaxcxr.plots import save_figure
from jaxcxr.models.condition import group_condition_batch
from jaxcxr.models.latent import LatentClassifier
from jaxcxr.scoring import SCORE_NAMES  # the five post-filter scores, each > 0 meaning good
from jaxcxr.train.classifier import focal_loss, weighted_bce

__all__ = [
    "MEASURE_NAMES",
    "default_round_sizes",
    "check_prefilter_scorer",
    "records_at_scorer_level",
    "records_at_strictness",
    "scorer_id",
    "save_prefilter_set",
    "shipped_prefilter",
    "DEFAULT_REPORT_MODELS",
    "FAMILY_MODELS",
    "FEATURE_DIM",
    "FOCAL_GAMMA",
    "FlaxLatentEstimator",
    "IMBALANCE",
    "LATENT_DIM",
    "MAX_PRECISION_MIN_TPR",
    "NudgeConfig",
    "ON_EMPTY",
    "Prefilter",
    "SCORE_NAMES",
    "STRATEGIES",
    "TARGETS",
    "build_latent_dataset",
    "cross_validate_latent",
    "embed_extremes",
    "fit_latent_classifier",
    "fit_prefilter",
    "latent_dataset_summary",
    "latent_model_zoo",
    "latent_score_correlations",
    "latent_targets",
    "load_latent_dataset",
    "load_prefilter",
    "predict_latent",
    "results_table",
    "sample_valid",
    "save_confusion_matrix",
    "save_correlation_heatmap",
    "save_extremes_scatter",
    "save_latent_dataset",
    "save_roc_pr_curves",
    "select_models",
    "select_threshold",
    "threshold_report",
    "validate_latent_records",
    "warm_up_sampler",
    "write_latent_report",
]

# Width of the generator latent z.
LATENT_DIM = 128
# Number of symmetry features per record (DESIGN.md section 3).
FEATURE_DIM = 6
# Raw post-filter measures a latent dataset may store (`jaxcxr.scoring.ScoreResult.measures`).
MEASURE_NAMES = ("shape", "symmetry", "log_ratio", "abnormal_logit", "maxheat", "area_right", "area_left")
# Threshold strategies (DESIGN.md section 5 contract names).
STRATEGIES: tuple[str, ...] = ("youden", "2tpr-fpr", "tpr-2fpr", "tpr@0.95", "max_precision")
# Smallest TPR (fraction of positives kept) a `max_precision` threshold may have.
MAX_PRECISION_MIN_TPR = 0.1
# Class-imbalance handling of `fit_latent_classifier`.
IMBALANCE: tuple[str, ...] = ("class_weights", "focal", "none")
# Focusing exponent gamma of the "focal" loss (Lin et al. 2017's default).
FOCAL_GAMMA = 2.0
# Cross-validation targets: `valid`, each score (label: score > 0), and "valid_by_scores"
# (one model per score, each thresholded at TPR 0.95, valid = all five pass).
TARGETS: tuple[str, ...] = ("valid", *SCORE_NAMES, "valid_by_scores")


# ============================================================================ latent datasets


def _fail(source: str, message: str) -> DataError:
  return DataError(f"{source}: {message}")


def validate_latent_records(records: Mapping[str, Any], *, source: str = "records",
                            latent_dim: int = LATENT_DIM) -> dict[str, Any]:
  """Checks a latent dataset and returns it with canonical dtypes.

  Args:
    records: mapping with
      "z": float (N, latent_dim) latents, finite;
      "group": (N,) group names, each in `jaxcxr.data.GROUPS`;
      "scores": mapping of exactly the five `SCORE_NAMES` to float (N,) arrays
        (NaN/inf are kept: `NaN > 0` is False, so such a record fails that score);
      "features": float (N, 6) symmetry features;
      "valid": (N,) bool (or 0/1);
      "generator_id": str, the generator checkpoint's id;
      optionally "scorer_id": str, "UNET_ID/CLASSIFIER_ID" of the post-filter's models
        (`checkpoints.model_id`), whose measures these are;
      optionally "strictness": str, the post-filter level "scores" and "valid" are at;
      optionally "measures": mapping of the raw post-filter measures
        (`ScoreResult.measures`: shape, symmetry, log_ratio, abnormal_logit, maxheat,
        area_right, area_left) to float (N,) arrays, from which validity at any
        strictness follows (`Scorer.valid_at`) without generating again.
    source: name used in error messages (the file name when loading).
    latent_dim: expected width of z.

  Returns:
    A new dict with the same keys: z float32, group fixed-width unicode, scores
    float32 (in `SCORE_NAMES` order), features float32, valid bool, generator_id str.

  Raises:
    jaxcxr.data.DataError: a missing or unknown key, a wrong shape or dtype, an
      unknown group, or non-finite latents; the message names `source` and what
      was expected.
  """
  if not isinstance(records, Mapping):
    raise _fail(source, f"expected a mapping of latent records, got {type(records).__name__}")
  expected = {"z", "group", "scores", "features", "valid", "generator_id"}
  missing, unknown = sorted(expected - set(records)), sorted(set(records) - expected - {"measures", "scorer_id", "strictness"})
  if missing or unknown:
    raise _fail(source, f"expected keys {sorted(expected)}; missing {missing}, unknown {unknown}")
  z = np.asarray(records["z"])
  if z.ndim != 2 or z.shape[1] != latent_dim:
    raise _fail(source, f"z: expected shape (N, {latent_dim}), got {z.shape}")
  if not np.issubdtype(z.dtype, np.floating):
    raise _fail(source, f"z: expected floats, got dtype {z.dtype}")
  if not np.all(np.isfinite(z)):
    raise _fail(source, "z: expected finite latents, found NaN or inf")
  n = z.shape[0]

  def column(name: str, value: Any, *, floats: bool = False) -> np.ndarray:
    value = np.asarray(value)
    if value.shape != (n,):
      raise _fail(source, f"{name}: expected shape ({n},), got {value.shape}")
    if floats and not np.issubdtype(value.dtype, np.floating):
      raise _fail(source, f"{name}: expected floats, got dtype {value.dtype}")
    return value

  group = column("group", records["group"])
  if group.dtype.kind == "O" and all(isinstance(g, str) for g in group.tolist()):
    group = group.astype(str)                                         # e.g. a list of Python str via pandas
  if group.dtype.kind != "U":
    raise _fail(source, f"group: expected strings, got dtype {group.dtype}")
  bad = sorted(set(np.unique(group).tolist()) - set(GROUPS))
  if bad:
    raise _fail(source, f"group: unknown group(s) {bad[:5]}; expected one of {', '.join(GROUPS)}")
  scores = records["scores"]
  if not isinstance(scores, Mapping) or set(scores) != set(SCORE_NAMES):
    got = sorted(scores) if isinstance(scores, Mapping) else type(scores).__name__
    raise _fail(source, f"scores: expected exactly {list(SCORE_NAMES)}, got {got}")
  scores = {name: column(name, scores[name], floats=True).astype(np.float32) for name in SCORE_NAMES}
  features = np.asarray(records["features"])
  if features.shape != (n, FEATURE_DIM) or not np.issubdtype(features.dtype, np.floating):
    raise _fail(source, f"features: expected floats of shape ({n}, {FEATURE_DIM}), got {features.dtype} "
                f"{features.shape}")
  valid = column("valid", records["valid"])
  if valid.dtype != bool:
    if not np.all(np.isin(valid, (0, 1))):
      raise _fail(source, f"valid: expected bools (or 0/1), got dtype {valid.dtype}")
    valid = valid.astype(bool)
  generator_id = np.asarray(records["generator_id"])
  if generator_id.shape != () or generator_id.dtype.kind != "U":
    raise _fail(source, f"generator_id: expected one string, got {generator_id.dtype} {generator_id.shape}")
  out = {
      "z": z.astype(np.float32),
      "group": group,
      "scores": scores,
      "features": features.astype(np.float32),
      "valid": valid,
      "generator_id": str(generator_id),
  }
  if "measures" in records:
    measures = records["measures"]
    if not isinstance(measures, Mapping) or set(measures) != set(MEASURE_NAMES):
      got = sorted(measures) if isinstance(measures, Mapping) else type(measures).__name__
      raise _fail(source, f"measures: expected exactly {list(MEASURE_NAMES)}, got {got}")
    out["measures"] = {name: column(name, measures[name], floats=True).astype(np.float32) for name in MEASURE_NAMES}
  for name in ("scorer_id", "strictness"):
    if name in records:
      value = np.asarray(records[name])
      if value.shape != () or value.dtype.kind != "U":
        raise _fail(source, f"{name}: expected one string, got {value.dtype} {value.shape}")
      out[name] = str(value)
  return out


def scorer_id(scorer: Any) -> str | None:
  """"UNET_ID/CLASSIFIER_ID" of a scorer's models from its provenance, or None when it does not name them."""
  unet, classifier = scorer.provenance.get("unet_id"), scorer.provenance.get("classifier_id")
  return f"{unet}/{classifier}" if unet and classifier else None


def records_at_strictness(records: Mapping[str, Any], scorer: Any, strictness: str | float) -> dict[str, Any]:
  """The records with scores and `valid` at another strictness of `scorer`, from their stored measures.

  Args:
    records: a latent dataset with "measures" (`build_latent_dataset` stores them).
    scorer: the `jaxcxr.scoring.Scorer` (the same models) that measured them.
    strictness: a level name ("standard", "strict") or a fraction q (`Scorer.at_strictness`).

  Raises:
    jaxcxr.data.DataError: records without measures, or measured by other models than the scorer's.
    ValueError: an unknown strictness.
  """
  if "measures" not in records:
    raise DataError("this latent dataset holds no raw measures (built before strictness levels); rebuild it with "
                    "`jaxcxr latents build` to rescore it at another strictness")
  expected, stored = scorer_id(scorer), records.get("scorer_id")
  if expected and stored and expected != stored:
    raise DataError(f"the latent dataset was measured by post-filter models {stored}, not the scorer's {expected}; "
                    "rebuild it with this scorer")
  scores, valid = scorer.scores_at(records["measures"], strictness)
  return {**records, "scores": scores, "valid": valid, "strictness": scorer.at_strictness(strictness).strictness_name}


def records_at_scorer_level(records: Mapping[str, Any], scorer: Any) -> Mapping[str, Any]:
  """The records labelled at the level `scorer` runs at: rescored from their measures when their level
  differs; records without measures (built before strictness levels) are returned as built."""
  if "measures" in records and records.get("strictness") != scorer.strictness_name:
    return records_at_strictness(records, scorer, scorer.strictness)
  return records


def save_latent_dataset(path: str | os.PathLike, records: Mapping[str, Any], *,
                        latent_dim: int = LATENT_DIM) -> pathlib.Path:
  """Validates and writes a latent dataset as a compressed npz, atomically.

  The npz holds flat arrays: "z" float32 (N, latent_dim), "group" fixed-width
  unicode (N,), one float32 (N,) array per score name, "features" float32 (N, 6),
  "valid" bool (N,), "generator_id" a 0-d unicode array. No pickled objects.

  Args:
    path: the file to write (written exactly there, no suffix added); parent
      folders are created.
    records: as `validate_latent_records`.
    latent_dim: expected width of z.

  Returns:
    The path written.

  Raises:
    jaxcxr.data.DataError: as `validate_latent_records` (nothing is written).
  """
  records = validate_latent_records(records, source=str(path), latent_dim=latent_dim)
  arrays = {"z": records["z"], "group": records["group"], **records["scores"],
            "features": records["features"], "valid": records["valid"],
            "generator_id": np.asarray(records["generator_id"], dtype=str),
            **{f"measure_{k}": v for k, v in records.get("measures", {}).items()},
            **{name: np.asarray(records[name], dtype=str) for name in ("scorer_id", "strictness") if name in records}}
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  return write_bytes_atomic(path, buffer.getvalue())


def load_latent_dataset(path: str | os.PathLike, *, latent_dim: int = LATENT_DIM) -> dict[str, Any]:
  """Reads a latent dataset written by `save_latent_dataset` (`allow_pickle=False`).

  Args:
    path: the npz file.
    latent_dim: expected width of z.

  Returns:
    The records as `validate_latent_records` returns them.

  Raises:
    jaxcxr.data.DataError: the file is missing or not an npz, holds object arrays,
      misses keys, or fails `validate_latent_records`; the message names the file.
  """
  source = str(path)
  keys = ("z", "group", *SCORE_NAMES, "features", "valid", "generator_id")
  try:
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
      raise _fail(source, "expected an npz archive of a latent dataset, got a single .npy array")
    with loaded as npz:
      missing = [k for k in keys if k not in npz.files]
      if missing:
        raise _fail(source, f"not a latent dataset: missing array(s) {missing}; expected {list(keys)}")
      arrays = {k: npz[k] for k in keys}
      measures = {k: npz[f"measure_{k}"] for k in MEASURE_NAMES if f"measure_{k}" in npz.files}
      tags = {name: npz[name] for name in ("scorer_id", "strictness") if name in npz.files}
  except DataError:
    raise
  except FileNotFoundError:
    raise _fail(source, "no such file") from None
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise _fail(source, f"not a readable npz latent dataset without pickled objects ({e})") from None
  records = {"z": arrays["z"], "group": arrays["group"], "scores": {k: arrays[k] for k in SCORE_NAMES},
             "features": arrays["features"], "valid": arrays["valid"], "generator_id": arrays["generator_id"]}
  if measures:
    records["measures"] = measures
  records.update(tags)
  return validate_latent_records(records, source=source, latent_dim=latent_dim)


def latent_targets(records: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The label sources of `cross_validate_latent`: {"valid": (N,) bool, score name: (N,) float32}."""
  return {"valid": np.asarray(records["valid"]), **{k: np.asarray(v) for k, v in records["scores"].items()}}


# ============================================================================ thresholds


def _check_labels(y: Any, *, both_classes: bool) -> np.ndarray:
  """y as int64 0/1 (N,), N >= 1; ValueError for bad input."""
  y = np.asarray(y)
  if y.ndim != 1 or y.shape[0] == 0:
    raise ValueError(f"y must be a non-empty 1-D array of labels, got shape {y.shape}")
  if y.dtype != bool and not np.all(np.isin(y, (0, 1))):
    raise ValueError("y must contain only 0/1 (or bool) values")
  y = y.astype(np.int64)
  if both_classes and y.min() == y.max():
    raise ValueError(f"y has only one class ({int(y[0])}): positives and negatives are both needed")
  return y


def _check_labels_scores(y: Any, scores: Any, *, both_classes: bool) -> tuple[np.ndarray, np.ndarray]:
  """y as int64 0/1 (N,), scores as float64 (N,); ValueError for bad input."""
  y, scores = _check_labels(y, both_classes=both_classes), np.asarray(scores)
  if scores.shape != y.shape:
    raise ValueError(f"y and scores must have equal length, got shapes {y.shape} and {scores.shape}")
  scores = scores.astype(np.float64)
  if not np.all(np.isfinite(scores)):
    raise ValueError("scores contain NaN or inf")
  return y, scores


def _operating_points(y: np.ndarray, scores: np.ndarray):
  """Every threshold that changes the decision, in decreasing order, with its counts.

  Returns (thresholds float64 (T,), tp int64 (T,), fp int64 (T,), P, Q): at
  threshold t_i, tp_i = #{score >= t_i, y = 1} and fp_i = #{score >= t_i, y = 0}.
  Unlike `compute_roc_curve` (sklearn's `drop_intermediate=True`) no point is
  dropped, which `tpr@0.95` and `max_precision` need.
  """
  order = np.argsort(-scores, kind="stable")
  s, yy = scores[order], y[order]
  last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.shape[0] - 1]   # last index of each distinct score
  tp = np.cumsum(yy)[last]
  fp = last + 1 - tp
  p = int(y.sum())
  return s[last], tp, fp, p, int(y.shape[0]) - p


def _last_argmax(objective: np.ndarray) -> int:
  """Index of the maximum; among exact ties, the last (the smallest threshold, the largest TPR)."""
  return int(np.flatnonzero(objective == objective.max())[-1])


def select_threshold(y: Any, scores: Any, strategy: str, *, min_tpr: float = MAX_PRECISION_MIN_TPR) -> float:
  """Score threshold chosen by a named strategy; a sample is accepted when its score >= threshold.

  Candidates are the distinct score values (every threshold that changes the
  decision), so the result is always one of `scores`. With P positives, Q
  negatives, TP(t) and FP(t) the positives and negatives accepted at t,
  TPR = TP / P, FPR = FP / Q:

  * "youden": argmax TPR - FPR (Youden's J);
  * "2tpr-fpr": argmax 2 TPR - FPR (favours keeping positives);
  * "tpr-2fpr": argmax TPR - 2 FPR (favours rejecting negatives);
  * "tpr@0.95": the LARGEST threshold with TPR >= 0.95, i.e. the most selective
    rule that still keeps 95% of the valid latents (the ROC point where TPR first
    reaches 0.95, with the smallest FPR). DESIGN.md section 5 words it "smallest
    threshold with TPR >= 0.95"; read literally that is the minimum score, which
    accepts everything (TPR = FPR = 1) and filters nothing, so the intended
    operating point can only be this one;
  * "max_precision": argmax precision TP / (TP + FP) over the thresholds keeping
    TP >= max(1, ceil(min_tpr * P)) positives. Without that floor the top score
    alone (one accepted sample, precision 0 or 1) would usually win: a precision
    estimated from a handful of samples is noise, and a filter that keeps almost
    no valid latent narrows the samples. The default floor keeps >= 10% of the
    valid latents (~43 of the ~430 per group of the original 10k-per-group data).

  The three argmax objectives are compared exactly in integer arithmetic (e.g.
  Youden as TP Q - FP P). Ties go to the smallest tied threshold (the largest
  TPR): at an equal objective the filter keeps more valid latents, hence more
  diverse samples (DESIGN.md section 6 reports diversity next to the speed-up).

  Args:
    y: binary labels (N,) in {0, 1} or bool, both classes present.
    scores: finite scores (N,), higher = more likely valid (logits, probabilities
      or any monotone transform: the selected threshold is in the same units).
    strategy: one of `STRATEGIES`.
    min_tpr: the TPR floor of "max_precision" (ignored by the other strategies).

  Returns:
    The threshold as a Python float.

  Raises:
    ValueError: an unknown strategy (listing the valid ones), y with one class,
      bad shapes, non-binary y, non-finite scores, or min_tpr outside [0, 1].

  Examples:
    >>> y = np.array([0, 0, 1, 0, 1, 1])
    >>> s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    >>> select_threshold(y, s, "tpr-2fpr"), select_threshold(y, s, "tpr@0.95")
    (0.5, 0.3)
    >>> select_threshold(y, s, "youden")  # J = 2/3 at 0.5 and at 0.3: the tie goes to 0.3
    0.3

  References:
    Youden, "Index for rating diagnostic tests", Cancer 1950.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"unknown threshold strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
  if not 0.0 <= min_tpr <= 1.0:
    raise ValueError(f"min_tpr: expected a fraction in [0, 1], got {min_tpr}")
  y, scores = _check_labels_scores(y, scores, both_classes=True)
  thresholds, tp, fp, p, q = _operating_points(y, scores)
  if strategy == "youden":
    index = _last_argmax(tp * q - fp * p)
  elif strategy == "2tpr-fpr":
    index = _last_argmax(2 * tp * q - fp * p)
  elif strategy == "tpr-2fpr":
    index = _last_argmax(tp * q - 2 * fp * p)
  elif strategy == "tpr@0.95":
    index = int(np.flatnonzero(100 * tp >= 95 * p)[0])          # TPR >= 95/100, exactly
  else:  # max_precision
    need = max(1, math.ceil(min_tpr * p - 1e-9))
    eligible = np.flatnonzero(tp >= need)
    accepted = tp + fp
    precision = tp[eligible] / accepted[eligible]
    best = eligible[int(np.argmax(precision))]
    ties = eligible[tp[eligible] * accepted[best] == tp[best] * accepted[eligible]]   # exact cross-products
    index = int(ties[-1])
  return float(thresholds[index])


def threshold_report(y: Any, scores: Any, threshold: float) -> dict[str, Any]:
  """What a threshold does on labelled data: accepted = score >= threshold.

  Args:
    y: binary labels (N,) in {0, 1} or bool (one class is allowed; undefined
      ratios are 0.0, as in `compute_binary_report`).
    scores: finite scores (N,), in the threshold's units.
    threshold: the acceptance threshold.

  Returns:
    dict with "threshold" float, "n" int, "n_accepted" int, "acceptance_rate"
    (n_accepted / n), "tpr", "fpr", "precision" floats and "confusion" int64
    (2, 2) `[[tn, fp], [fn, tp]]` (rows: truth, columns: accepted).

  Raises:
    ValueError: bad shapes, non-binary y or non-finite scores.
  """
  y, scores = _check_labels_scores(y, scores, both_classes=False)
  accepted = (scores >= threshold).astype(np.int64)
  report = metrics_lib.compute_binary_report(accepted, y)
  n_accepted = int(accepted.sum())
  return {
      "threshold": float(threshold),
      "n": int(y.shape[0]),
      "n_accepted": n_accepted,
      "acceptance_rate": n_accepted / y.shape[0],
      "tpr": report["tpr"],
      "fpr": report["fpr"],
      "precision": report["precision"],
      "confusion": metrics_lib.compute_confusion(accepted, y),
  }


# ============================================================================ Flax latent classifiers


def _check_strategies(strategy: str | Sequence[str]) -> tuple[str, ...]:
  """A strategy name or several (no duplicates) -> a tuple of names of `STRATEGIES`; ValueError otherwise."""
  strategies = (strategy,) if isinstance(strategy, str) else tuple(strategy)
  unknown = [s for s in strategies if s not in STRATEGIES]
  if unknown or not strategies or len(set(strategies)) != len(strategies):
    raise ValueError(f"unknown, missing or repeated threshold strategy in {list(strategies)}; expected some of "
                     f"{', '.join(STRATEGIES)}")
  return strategies


def _check_latents(z: Any, latent_dim: int, name: str = "z") -> np.ndarray:
  z = np.asarray(z)
  if z.ndim != 2 or z.shape[1] != latent_dim:
    raise ValueError(f"{name}: expected latents of shape (B, {latent_dim}), got {z.shape}")
  if not np.issubdtype(z.dtype, np.floating) or not np.all(np.isfinite(z)):
    raise ValueError(f"{name}: expected finite float latents, got dtype {z.dtype}")
  return z.astype(np.float32)


def _bucket(n: int, minimum: int = 128) -> int:
  """Padded row count: the next power of two >= max(n, minimum), so few shapes ever compile.

  The minimum of 128 puts the inner and outer training parts of a ~100-latent group
  into one bucket (each new shape costs a 2-3 s compile on a small CPU).
  """
  return max(minimum, 1 << max(0, n - 1).bit_length())


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  return np.concatenate([x, np.zeros((rows - x.shape[0], *x.shape[1:]), x.dtype)]) if rows > x.shape[0] else x


@functools.lru_cache(maxsize=16)
def _graphdef(config: LatentClassifierConfig):
  return nnx.graphdef(nnx.eval_shape(lambda: LatentClassifier(config, rngs=nnx.Rngs(0))))


def _sgd_with_weight_decay(learning_rate, weight_decay) -> optax.GradientTransformation:
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: str(getattr(path[-1], "key", path[-1])) == "kernel", params)
  return optax.chain(optax.add_decayed_weights(weight_decay, mask=decay_mask),
                     optax.sgd(learning_rate, momentum=0.9, nesterov=True))


def _optimizer() -> optax.GradientTransformation:
  """Nesterov SGD with L2 weight decay on Dense kernels (not biases or BatchNorm scales).

  Not Adam: its per-coordinate step normalisation moves all 128 latent coordinates
  equally fast, so with a few hundred latents the noise coordinates grow as fast
  as the informative ones (measured: held-out ROC AUC 0.60 for Adam against 0.75
  for SGD and 0.76 for scikit-learn's logistic regression, 67 training latents).
  Gradient descent from zero follows the ridge path instead. The hyperparameters
  live in the optimiser state, so another learning rate or weight decay does not
  recompile.
  """
  return optax.inject_hyperparams(_sgd_with_weight_decay)(learning_rate=0.1, weight_decay=0.0)


@functools.lru_cache(maxsize=32)
def _make_fit_step(config: LatentClassifierConfig, imbalance: str, batch_size: int, steps_per_call: int):
  """Jitted `steps_per_call` optimisation steps in one `lax.scan`, train state donated (cached)."""
  graphdef = _graphdef(config)
  tx = _optimizer()

  def step(state, data):
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
    idx = jax.random.randint(key, (batch_size,), 0, data["n"])       # rows >= n are padding
    z, y = data["z"][idx], data["y"][idx]                             # (B, D), (B,)

    def loss_fn(params):
      model = nnx.merge(graphdef, params, state["batch_stats"])
      logits = model(z)                                               # (B,)
      if imbalance == "class_weights":
        loss = weighted_bce(logits, y, data["class_weights"])
      elif imbalance == "focal":
        loss = focal_loss(logits, y, gamma=FOCAL_GAMMA)
      else:
        loss = optax.sigmoid_binary_cross_entropy(logits, y.astype(jnp.float32))
      return loss.mean(), nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new = {"step": state["step"] + 1, "key": state["key"], "params": params, "batch_stats": batch_stats,
           "opt": opt}
    return new, loss

  def call(state, data):
    return jax.lax.scan(lambda s, _: step(s, data), state, None, length=steps_per_call)

  return jax.jit(call, donate_argnums=0)


def fit_latent_classifier(z: Any, y: Any, config: LatentClassifierConfig, *, imbalance: str = "class_weights",
                          steps: int = 1000, batch_size: int = 256, learning_rate: float = 0.05,
                          weight_decay: float = 1e-3, steps_per_call: int = 100,
                          seed: int = 0) -> LatentClassifier:
  """Trains a latent classifier with Nesterov SGD on minibatches drawn with replacement.

  Step t draws its batch from `jax.random.fold_in(key(seed), t)` inside one jitted
  function that runs `steps_per_call` steps in a `lax.scan` with the train state
  (params, BatchNorm statistics, optimiser state) donated. The training rows are
  padded to a power of two (indices are drawn below the true count), so folds of
  slightly different sizes reuse one compiled step per config.

  Losses (`imbalance`): "class_weights" is w_y BCE with w_c = N / (2 N_c) from `y`
  (each class weighs half of the loss); "focal" is the focal loss with gamma =
  `FOCAL_GAMMA` (Lin et al. 2017); "none" is plain BCE.

  Args:
    z: float (N, config.latent_dim) training latents.
    y: (N,) binary labels in {0, 1} or bool, both classes present.
    config: the classifier (see `jaxcxr.models.latent`).
    imbalance: one of `IMBALANCE`.
    steps: total optimisation steps, a multiple of min(steps_per_call, steps).
    batch_size: latents per step.
    learning_rate: SGD learning rate (constant; momentum 0.9, Nesterov).
    weight_decay: L2 weight decay on Dense kernels (added to the gradient).
    steps_per_call: steps per jitted call.
    seed: seeds the initialisation and the batches.

  Returns:
    The fitted `LatentClassifier` (in training mode; `predict_latent` switches its
    BatchNorms to their running averages).

  Raises:
    ValueError: z not (N, latent_dim) or not finite, y not binary or of one class,
      an unknown `imbalance`, or non-positive step/batch settings.
  """
  if imbalance not in IMBALANCE:
    raise ValueError(f"unknown imbalance {imbalance!r}; expected one of {', '.join(IMBALANCE)}")
  if steps <= 0 or batch_size <= 0 or steps_per_call <= 0 or learning_rate <= 0 or weight_decay < 0:
    raise ValueError("fit_latent_classifier: steps, batch_size, steps_per_call and learning_rate must be "
                     "positive, weight_decay non-negative")
  per_call = min(steps_per_call, steps)
  if steps % per_call:
    raise ValueError(f"fit_latent_classifier: steps={steps} is not a multiple of steps_per_call={per_call}")
  z = _check_latents(z, config.latent_dim)
  y = _check_labels(y, both_classes=True)
  if y.shape[0] != z.shape[0]:
    raise ValueError(f"fit_latent_classifier: {z.shape[0]} latents but {y.shape[0]} labels")
  n = z.shape[0]
  counts = np.bincount(y, minlength=2)
  rows = _bucket(n)
  data = {"z": jnp.asarray(_pad_rows(z, rows)), "y": jnp.asarray(_pad_rows(y.astype(np.int32), rows)),
          "n": jnp.int32(n), "class_weights": jnp.asarray(n / (2.0 * counts), jnp.float32)}

  root = jax.random.key(seed)
  model = LatentClassifier(config, rngs=nnx.Rngs(jax.random.fold_in(root, 1)))
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params, batch_stats = nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)
  opt = _optimizer().init(params)
  opt.hyperparams["learning_rate"] = jnp.asarray(learning_rate, jnp.float32)
  opt.hyperparams["weight_decay"] = jnp.asarray(weight_decay, jnp.float32)
  state = {"step": jnp.zeros((), jnp.int32), "key": jax.random.key_data(jax.random.fold_in(root, 2)),
           "params": params, "batch_stats": batch_stats, "opt": opt}
  fit_step = _make_fit_step(config, imbalance, batch_size, per_call)
  for _ in range(steps // per_call):
    state, _ = fit_step(state, data)
  return nnx.merge(graphdef, state["params"], state["batch_stats"])


@functools.partial(jax.jit, static_argnums=0)
def _latent_logits(graphdef, state, z):
  return nnx.merge(graphdef, state)(z)                                # (B,)


def _inference_logits(model: LatentClassifier, z: Any, chunk: int = 8192) -> np.ndarray:
  """float32 (N,) logits of the model in inference mode, in padded chunks (few compiled shapes)."""
  z = _check_latents(z, model.config.latent_dim)
  graphdef, state = nnx.split(nnx.view(model, use_running_average=True, raise_if_not_found=False))
  out = []
  for start in range(0, z.shape[0], chunk):
    block = z[start: start + chunk]
    logits = _latent_logits(graphdef, state, _pad_rows(block, _bucket(block.shape[0])))
    out.append(np.asarray(jax.device_get(logits))[: block.shape[0]])
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def predict_latent(model: LatentClassifier, z: Any) -> np.ndarray:
  """Probability that each latent's image is valid: sigmoid(logit), BatchNorm in inference mode.

  Runs `jax.jit` over the state from `nnx.split` of
  `nnx.view(model, use_running_average=True)` (DESIGN.md section 10: ~10x less
  per-call overhead than `nnx.jit` at small batches); rows are padded to a power
  of two (at least 128, at most 8192 per call), so a new batch size rarely compiles. Each
  latent's output depends on that latent only.

  Args:
    model: a `LatentClassifier` (e.g. from `fit_latent_classifier`).
    z: float (B, model.config.latent_dim) latents.

  Returns:
    float32 numpy (B,) probabilities in [0, 1]. For ranking, prefer the logits
    (`FlaxLatentEstimator.decision_function`): float32 probabilities saturate at 1.

  Raises:
    ValueError: z is not (B, latent_dim) or not finite.
  """
  return scipy.special.expit(_inference_logits(model, z)).astype(np.float32)


class FlaxLatentEstimator(ClassifierMixin, BaseEstimator):
  """scikit-learn face of a Flax latent classifier, so one CV loop handles every model.

  `fit(X, y)` runs `fit_latent_classifier`; `decision_function` gives logits,
  `predict_proba` (N, 2) probabilities, `predict` 0/1 at logit 0. Parameters are
  stored unchanged (scikit-learn convention), so `sklearn.base.clone` works.

  Args:
    config: the classifier config (default: logistic regression on 128-d z).
    imbalance, steps, batch_size, learning_rate, weight_decay, seed: as
      `fit_latent_classifier`.
  """

  def __init__(self, config: LatentClassifierConfig | None = None, *, imbalance: str = "class_weights",
               steps: int = 1000, batch_size: int = 256, learning_rate: float = 0.05,
               weight_decay: float = 1e-3, seed: int = 0):
    self.config = config
    self.imbalance = imbalance
    self.steps = steps
    self.batch_size = batch_size
    self.learning_rate = learning_rate
    self.weight_decay = weight_decay
    self.seed = seed

  def fit(self, X, y):  # pylint: disable=invalid-name  (scikit-learn's argument names)
    config = self.config or LatentClassifierConfig()
    self.model_ = fit_latent_classifier(X, y, config, imbalance=self.imbalance, steps=self.steps,
                                        batch_size=self.batch_size, learning_rate=self.learning_rate,
                                        weight_decay=self.weight_decay, seed=self.seed)
    self.classes_ = np.array([0, 1])
    return self

  def decision_function(self, X) -> np.ndarray:  # pylint: disable=invalid-name
    return _inference_logits(self.model_, X)

  def predict_proba(self, X) -> np.ndarray:  # pylint: disable=invalid-name
    p = predict_latent(self.model_, X).astype(np.float64)
    return np.stack([1.0 - p, p], axis=1)

  def predict(self, X) -> np.ndarray:  # pylint: disable=invalid-name
    return (self.decision_function(X) >= 0).astype(np.int64)


# ============================================================================ model zoo and cross-validation


def latent_model_zoo(*, seed: int = 0, flax: bool = True, flax_steps: int = 1000) -> dict[str, Any]:
  """The original study's model grid on z, by name (unfitted scikit-learn estimators).

  * "knn_1", "knn_3", "knn_10", "knn_30": StandardScaler + k-nearest neighbours
    (scores: the fraction of valid neighbours);
  * "svc_linear" (LinearSVC: liblinear's squared hinge, because libsvm's linear
    kernel scales quadratically with 10k latents), "svc_rbf", "svc_poly" (degree
    3): StandardScaler + SVM, scores from `decision_function` (no Platt scaling:
    ROC AUC and thresholds only need a ranking);
  * "logreg_C0.01", "logreg_C0.1", "logreg_C1", "logreg_C10" (L2) and
    "logreg_l1" (C = 1, L1, liblinear): StandardScaler + logistic regression;
  * "tree_d5", "tree_d10": decision trees of depth 5 and 10;
  * "forest": a random forest of 200 trees;
  * with `flax`: "flax_logreg", "flax_mlp1" ... "flax_mlp4", "flax_deep"
    (`FlaxLatentEstimator` over the `jaxcxr.models.latent` presets; z ~ N(0, I)
    needs no scaler).

  Every model that supports it uses balanced class weights (w_c = N / (2 N_c)):
  with ~4% valid latents the default decision otherwise almost never accepts,
  which leaves "precision at the default" undefined. ROC AUC barely depends on it.

  Args:
    seed: random_state of the stochastic models and seed of the Flax ones.
    flax: include the Flax models.
    flax_steps: optimisation steps of each Flax fit.

  Returns:
    dict name -> estimator, in the order above.
  """
  from sklearn.ensemble import RandomForestClassifier  # pylint: disable=g-import-not-at-top
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.neighbors import KNeighborsClassifier  # pylint: disable=g-import-not-at-top
  from sklearn.pipeline import make_pipeline  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
  from sklearn.svm import SVC, LinearSVC  # pylint: disable=g-import-not-at-top
  from sklearn.tree import DecisionTreeClassifier  # pylint: disable=g-import-not-at-top

  scaled = lambda estimator: make_pipeline(StandardScaler(), estimator)
  zoo: dict[str, Any] = {}
  for k in (1, 3, 10, 30):
    zoo[f"knn_{k}"] = scaled(KNeighborsClassifier(n_neighbors=k))
  zoo["svc_linear"] = scaled(LinearSVC(class_weight="balanced", random_state=seed))
  zoo["svc_rbf"] = scaled(SVC(kernel="rbf", class_weight="balanced", random_state=seed))
  zoo["svc_poly"] = scaled(SVC(kernel="poly", degree=3, class_weight="balanced", random_state=seed))
  for c, name in ((1e-2, "0.01"), (1e-1, "0.1"), (1.0, "1"), (1e1, "10")):
    zoo[f"logreg_C{name}"] = scaled(LogisticRegression(C=c, class_weight="balanced", max_iter=1000))
  zoo["logreg_l1"] = scaled(LogisticRegression(C=1.0, l1_ratio=1.0, solver="liblinear", class_weight="balanced",
                                               random_state=seed))
  for depth in (5, 10):
    zoo[f"tree_d{depth}"] = DecisionTreeClassifier(max_depth=depth, class_weight="balanced", random_state=seed)
  zoo["forest"] = RandomForestClassifier(n_estimators=200, class_weight="balanced", random_state=seed)
  if flax:
    for name, preset in LATENT_PRESETS.items():
      zoo[f"flax_{name}"] = FlaxLatentEstimator(preset(), steps=flax_steps, seed=seed)
  return zoo


def _model_scores(estimator: Any, z: np.ndarray) -> np.ndarray:
  """Ranking scores of a fitted binary classifier: decision_function, else P(class 1). float64 (N,)."""
  if hasattr(estimator, "decision_function"):
    return np.asarray(estimator.decision_function(z), np.float64)
  return np.asarray(estimator.predict_proba(z), np.float64)[:, 1]


def _target_label(y: Mapping[str, np.ndarray], target: str, n: int) -> np.ndarray:
  """int64 (N,) label of a target: "valid" as given, a score's label is score > 0."""
  if target == "valid_by_scores":
    missing = [k for k in SCORE_NAMES if k not in y]
    if missing:
      raise ValueError(f"target 'valid_by_scores' needs all five scores in y; missing {missing}")
    label = np.all([np.asarray(y[k]) > 0 for k in SCORE_NAMES], axis=0)
  elif target not in y:
    raise ValueError(f"target {target!r} not in y (keys {sorted(y)}); targets are among {', '.join(TARGETS)}")
  elif target == "valid":
    label = np.asarray(y["valid"])
    if label.dtype != bool and not np.all(np.isin(label, (0, 1))):
      raise ValueError("y['valid'] must be bool or 0/1")
  else:
    label = np.asarray(y[target]) > 0
  if label.shape != (n,):
    raise ValueError(f"target {target!r}: expected {n} labels, got shape {label.shape}")
  return label.astype(np.int64)


# Per-fold metrics averaged into a `cross_validate_latent` row.
_METRICS = ("roc_auc", "precision", "precision_default", "tpr", "acceptance")


def _precision(accepted: np.ndarray, y: np.ndarray) -> float:
  return metrics_lib.compute_binary_report(accepted.astype(np.int64), y)["precision"]


def _min_class_count(n_folds: int) -> int:
  """Fewest samples of a class a group needs: every outer training part then holds >= n_folds of it.

  StratifiedKFold spreads a class of c samples over the folds as evenly as possible,
  so the largest held-out share is ceil(c / k) and the smallest training part keeps
  c - ceil(c / k); the inner k folds that choose the threshold need k of each class.
  """
  count = n_folds
  while count - math.ceil(count / n_folds) < n_folds:
    count += 1
  return count


def _out_of_fold_scores(estimator, z: np.ndarray, y: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
  """Each latent's score from a clone fitted without it (inner stratified k folds). float64 (N,)."""
  from sklearn.model_selection import StratifiedKFold  # pylint: disable=g-import-not-at-top

  scores = np.empty(y.shape[0], np.float64)
  for train, test in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(z, y):
    scores[test] = _model_scores(clone(estimator).fit(z[train], y[train]), z[test])
  return scores


def _fold_metrics(estimator, z_tr, y_tr, z_te, y_te, strategies: Sequence[str], n_folds: int,
                  seed: int) -> dict[str, dict[str, float]]:
  """Held-out metrics of one outer fold, per threshold strategy: {strategy: {metric: value}}.

  The inner out-of-fold scores and the refit are shared by all strategies, so
  asking for all five costs what one does.
  """
  oof = _out_of_fold_scores(estimator, z_tr, y_tr, n_folds, seed)
  model = clone(estimator).fit(z_tr, y_tr)
  s_te = _model_scores(model, z_te)
  shared = {"roc_auc": metrics_lib.compute_roc_auc(s_te, y_te),
            "precision_default": _precision(np.asarray(model.predict(z_te)), y_te)}
  out = {}
  for strategy in strategies:
    accepted = s_te >= select_threshold(y_tr, oof, strategy)
    out[strategy] = {**shared, "precision": _precision(accepted, y_te), "tpr": float(accepted[y_te == 1].mean()),
                     "acceptance": float(accepted.mean())}
  return out


def _fold_metrics_by_scores(estimator, z_tr, z_te, y_te, score_labels_tr, n_folds: int,
                            seed: int) -> dict[str, float]:
  """One model per score, each thresholded at TPR 0.95 on the training folds; valid = all pass.

  Per score k, the threshold t_k is "tpr@0.95" on the out-of-fold scores of the
  training part and the model refitted on the whole part is applied to the
  held-out latents. The decision is exact: accepted when all five s_k >= t_k. For
  ROC AUC the five model scores are put on one scale, u_k = the fraction of the
  training positives of score k (out-of-fold) scoring at most as high, and a
  latent is ranked by min_k u_k (its weakest score). A score with fewer than
  n_folds training positives or negatives cannot be learned and filters nothing
  (always accepted, u_k = 1).
  """
  accepted = np.ones(z_te.shape[0], bool)
  weakest = np.ones(z_te.shape[0], np.float64)
  for labels in score_labels_tr:
    if min(int(labels.sum()), int((1 - labels).sum())) < n_folds:
      continue
    oof = _out_of_fold_scores(estimator, z_tr, labels, n_folds, seed)
    s_te = _model_scores(clone(estimator).fit(z_tr, labels), z_te)
    accepted &= s_te >= select_threshold(labels, oof, "tpr@0.95")
    positives = np.sort(oof[labels == 1])
    weakest = np.minimum(weakest, np.searchsorted(positives, s_te, side="right") / positives.shape[0])
  return {"roc_auc": metrics_lib.compute_roc_auc(weakest, y_te), "precision": _precision(accepted, y_te),
          "precision_default": float("nan"), "tpr": float(accepted[y_te == 1].mean()),
          "acceptance": float(accepted.mean())}


def cross_validate_latent(z: Any, y: Any, groups: Any, models: Mapping[str, Any], n_folds: int = 3, seed: int = 0,
                          targets: Sequence[str] = ("valid",), *, group_names: Sequence[str] | None = None,
                          strategy: str | Sequence[str] = "youden") -> list[dict[str, Any]]:
  """Stratified k-fold cross-validation of latent classifiers, per age-sex group and target.

  For each target, group and model: the group's records are split by
  `StratifiedKFold(n_folds, shuffle=True, random_state=seed)` (the same folds for
  every model), the model is fitted (a `sklearn.base.clone`) on the training folds
  and evaluated on the held-out fold; the row holds fold means and standard
  deviations. Metrics per fold:

  * "roc_auc" of the model's scores (`decision_function`, else P(valid));
  * "precision" of accepting score >= t, with its "tpr" and "acceptance" rate.
    t is chosen by `strategy` on out-of-fold scores of the training folds (inner
    stratified `n_folds`-fold CV, then a refit on all training folds, as
    scikit-learn's `TunedThresholdClassifierCV`): chosen on data the model did not
    see, reported on held-out data. Training-set scores would give over-selective
    thresholds for every model that memorises its training set (knn_1, deep trees,
    forests, and any model with 128 inputs and ~100 records). It costs
    `n_folds + 1` fits per fold;
  * "precision_default" of the model's own `predict` (e.g. probability 0.5).

  Targets (see `TARGETS`): "valid"; a score name, label = score > 0; and
  "valid_by_scores": one model per score, each thresholded by "tpr@0.95" (the same
  inner CV), a latent is predicted valid when all five accept, scored against
  label = all five scores > 0 (= valid by its definition); its precision is that of
  the all-pass rule, "precision_default" is NaN, and its ROC AUC ranks latents by
  their weakest score (see `_fold_metrics_by_scores`).

  Fallback for thin groups: a group whose positives (or negatives) for a target
  are too few for every training part to hold `n_folds` of them (5 for 3 folds)
  cannot be cross-validated this way (a held-out fold without positives has no
  ROC AUC; inner folds without positives pick no threshold), so it is skipped:
  one row per model with NaN metrics and the reason in "note" (e.g. a group with
  no valid latent at all). Asking for such a group explicitly in `group_names`
  is an error instead.

  Args:
    z: float (N, D) latents.
    y: labels: a mapping with "valid" (N,) bool and/or score names -> (N,) float
      scores (`latent_targets(records)` builds it), or a plain (N,) binary array,
      taken as "valid".
    groups: (N,) group name per latent.
    models: name -> unfitted scikit-learn-style estimator (`latent_model_zoo`).
    n_folds: folds (>= 2).
    seed: seed of the fold shuffling.
    targets: targets to evaluate, each in `TARGETS` and available from `y`.
    group_names: groups to evaluate (default: every group present, in
      `jaxcxr.data.GROUPS` order, then any others sorted).
    strategy: threshold strategy of "precision" (one of `STRATEGIES`), or several:
      one row per strategy, all from the same fits ("valid_by_scores" always
      uses "tpr@0.95" and has one row).

  Returns:
    One dict per (target, group, model[, strategy]), in that nesting order, with keys
    "model", "group", "target", "n", "n_pos", "base_rate" (n_pos / n),
    "roc_auc", "roc_auc_std", "precision", "precision_std", "precision_default",
    "tpr", "acceptance" (fold means unless "_std"), "strategy", "n_folds" and
    "note" ("" unless skipped).

  Raises:
    ValueError: mismatched lengths, an unknown target or strategy, n_folds < 2, a
      requested group absent from `groups` or with too few positives or negatives
      for a target.
  """
  from sklearn.model_selection import StratifiedKFold  # pylint: disable=g-import-not-at-top

  z = np.asarray(z)
  if z.ndim != 2:
    raise ValueError(f"z: expected latents of shape (N, D), got {z.shape}")
  z = _check_latents(z, z.shape[1])
  n = z.shape[0]
  groups = np.asarray(groups).astype(str)
  if groups.shape != (n,):
    raise ValueError(f"groups: expected ({n},) names, got shape {groups.shape}")
  if not isinstance(y, Mapping):
    y = {"valid": np.asarray(y)}
  unknown = [t for t in targets if t not in TARGETS]
  if unknown or not targets:
    raise ValueError(f"unknown target(s) {unknown}; expected some of {', '.join(TARGETS)}")
  strategies = _check_strategies(strategy)
  if n_folds < 2:
    raise ValueError(f"n_folds: expected >= 2, got {n_folds}")
  present = set(groups.tolist())
  explicit = group_names is not None
  if explicit:
    absent = [g for g in group_names if g not in present]
    if absent:
      raise ValueError(f"group(s) {absent} have no latents; present: {sorted(present)}")
    names = list(group_names)
  else:
    names = [g for g in GROUPS if g in present] + sorted(present - set(GROUPS))
  min_count = _min_class_count(n_folds)
  labels = {t: _target_label(y, t, n) for t in targets}
  score_labels = ([_target_label(y, k, n) for k in SCORE_NAMES] if "valid_by_scores" in targets else [])

  rows = []
  for target in targets:
    for group in names:
      member = groups == group
      zg, yg = z[member], labels[target][member]
      n_pos = int(yg.sum())
      base = {"group": group, "target": target, "n": int(yg.shape[0]), "n_pos": n_pos,
              "base_rate": n_pos / yg.shape[0], "n_folds": n_folds}
      row_strategies = ("tpr@0.95",) if target == "valid_by_scores" else strategies
      n_neg = base["n"] - n_pos
      if min(n_pos, n_neg) < min_count:
        note = (f"skipped: {n_pos} positives and {n_neg} negatives; each class needs >= {min_count} "
                f"for {n_folds} folds with {n_folds} inner folds")
        if explicit:
          raise ValueError(f"group {group!r}, target {target!r}: {note[len('skipped: '):]}")
        for name in models:
          for s in row_strategies:
            rows.append({"model": name, **base, "strategy": s, **{k: float("nan") for k in _METRICS},
                         "roc_auc_std": float("nan"), "precision_std": float("nan"), "note": note})
        continue
      folds = list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(zg, yg))
      for name, estimator in models.items():
        per_fold = []
        for train, test in folds:
          if target == "valid_by_scores":
            per_fold.append({"tpr@0.95": _fold_metrics_by_scores(
                estimator, zg[train], zg[test], yg[test], [s[member][train] for s in score_labels], n_folds, seed)})
          else:
            per_fold.append(_fold_metrics(estimator, zg[train], yg[train], zg[test], yg[test], strategies,
                                          n_folds, seed))
        for s in row_strategies:
          row = {"model": name, **base, "strategy": s}
          for key in _METRICS:
            row[key] = float(np.mean([m[s][key] for m in per_fold]))
          row["roc_auc_std"] = float(np.std([m[s]["roc_auc"] for m in per_fold]))
          row["precision_std"] = float(np.std([m[s]["precision"] for m in per_fold]))
          row["note"] = ""
          rows.append(row)
  return rows


def results_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """Markdown tables of `cross_validate_latent` rows: models x groups, one table per target and strategy.

  Each cell is "precision (lift) / ROC AUC": fold means, precision at the table's
  threshold strategy and its lift = precision / base rate (the pre-filter's
  predicted speed-up in generated images per valid one), as in the original
  study's table. A skipped group shows "skipped" and its reason is listed under
  the table.

  Args:
    rows: rows from `cross_validate_latent`.

  Returns:
    The markdown text.

  Raises:
    ValueError: no rows.
  """
  if not rows:
    raise ValueError("results_table: no rows")
  out = []
  for target, strategy in dict.fromkeys((r["target"], r["strategy"]) for r in rows):
    sub = [r for r in rows if r["target"] == target and r["strategy"] == strategy]
    models = list(dict.fromkeys(r["model"] for r in sub))
    groups = list(dict.fromkeys(r["group"] for r in sub))
    cell = {(r["model"], r["group"]): r for r in sub}
    folds = sorted({r["n_folds"] for r in sub})
    out.append(f"### {target}, threshold {strategy}\n")
    out.append(f"precision (lift = precision / base rate) / ROC AUC, mean over {', '.join(map(str, folds))} folds\n")
    out.append("| model | " + " | ".join(groups) + " |")
    out.append("|---|" + "---|" * len(groups))
    for model in models:
      cells = []
      for group in groups:
        r = cell.get((model, group))
        if r is None:
          cells.append("")
        elif r["note"]:
          cells.append("skipped")
        else:
          lift = r["precision"] / r["base_rate"] if r["base_rate"] > 0 else float("nan")
          cells.append(f"{r['precision']:.3f} ({lift:.2f}x) / {r['roc_auc']:.3f}")
      out.append(f"| {model} | " + " | ".join(cells) + " |")
    base = {r["group"]: r for r in sub}
    out.append("| *positives / n* | " + " | ".join(f"{base[g]['n_pos']} / {base[g]['n']}" for g in groups) + " |")
    notes = {(r["group"], r["note"]) for r in sub if r["note"]}
    if notes:
      out.append("")
      out.extend(f"- {g}: {note}" for g, note in sorted(notes))
    out.append("")
  return "\n".join(out)


# ============================================================================ exploratory views


def latent_score_correlations(z: Any, scores: Mapping[str, Any]) -> np.ndarray:
  """Pearson correlation between each score and each latent coordinate.

    r[k, d] = cov(s_k, z_d) / (std(s_k) std(z_d)),

  computed in float64; NaN where a score or a coordinate is constant.

  Args:
    z: float (N, D) latents, N >= 2.
    scores: name -> finite float (N,) scores; the rows follow its order.

  Returns:
    float64 (len(scores), D).

  Raises:
    ValueError: bad shapes, N < 2, or non-finite values.
  """
  z = np.asarray(z, np.float64)
  if z.ndim != 2 or z.shape[0] < 2:
    raise ValueError(f"z: expected (N, D) latents with N >= 2, got shape {z.shape}")
  s = np.stack([np.asarray(v, np.float64) for v in scores.values()]) if scores else np.zeros((0, z.shape[0]))
  if s.shape[1:] != (z.shape[0],):
    raise ValueError(f"scores: expected ({z.shape[0]},) arrays, got {[np.shape(v) for v in scores.values()]}")
  if not (np.all(np.isfinite(z)) and np.all(np.isfinite(s))):
    raise ValueError("latent_score_correlations: z and scores must be finite")
  zc, sc = z - z.mean(axis=0), s - s.mean(axis=1, keepdims=True)
  cov = sc @ zc                                                        # (K, D), times N
  norm = np.sqrt((sc ** 2).sum(axis=1))[:, None] * np.sqrt((zc ** 2).sum(axis=0))[None, :]
  return np.divide(cov, norm, out=np.full(cov.shape, np.nan), where=norm > 0)


def embed_extremes(z: Any, score: Any, k: int, *, seed: int = 0) -> dict[str, np.ndarray]:
  """2-D PCA of the k best and k worst latents by a score (UMAP is not a dependency).

  PCA (scikit-learn) is fitted on the 2k selected latents only, so the axes are
  the directions along which best and worst latents vary most; a clear split of
  the two clouds says the score is predictable from z.

  Args:
    z: float (N, D) latents, D >= 2.
    score: finite float (N,) score, higher = better.
    k: latents per side, 1 <= k and 2k <= N (ties broken by index).
    seed: PCA's random_state (its solver may be randomised).

  Returns:
    dict with "embedding" float64 (2k, 2), "index" int64 (2k,) rows of z (the k
    best in decreasing score, then the k worst in increasing score), "is_best"
    bool (2k,), "explained_variance_ratio" float64 (2,).

  Raises:
    ValueError: bad shapes, k out of range, or non-finite values.
  """
  from sklearn.decomposition import PCA  # pylint: disable=g-import-not-at-top

  z, score = np.asarray(z, np.float64), np.asarray(score, np.float64)
  if z.ndim != 2 or z.shape[1] < 2 or score.shape != (z.shape[0],):
    raise ValueError(f"embed_extremes: expected z (N, D >= 2) and score (N,), got {z.shape} and {score.shape}")
  if not 1 <= k <= z.shape[0] // 2:
    raise ValueError(f"embed_extremes: k must be in 1..{z.shape[0] // 2} (2k <= N = {z.shape[0]}), got {k}")
  if not (np.all(np.isfinite(z)) and np.all(np.isfinite(score))):
    raise ValueError("embed_extremes: z and score must be finite")
  order = np.argsort(-score, kind="stable")
  index = np.concatenate([order[:k], order[::-1][:k]]).astype(np.int64)   # best desc, worst asc
  pca = PCA(n_components=2, random_state=seed)
  embedding = pca.fit_transform(z[index])
  return {"embedding": embedding, "index": index, "is_best": np.arange(2 * k) < k,
          "explained_variance_ratio": np.asarray(pca.explained_variance_ratio_, np.float64)}


# ============================================================================ figures
#
# Candidates for `jaxcxr.plots` once it grows matplotlib helpers: they draw on a bare
# `matplotlib.figure.Figure` (no pyplot, no global backend switch; PNG through Agg) and
# write through `write_bytes_atomic`.


def _new_figure(width: float, height: float, ncols: int = 1):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
  return fig, fig.subplots(1, ncols, squeeze=False)[0]


def save_roc_pr_curves(curves: Mapping[str, tuple[Any, Any]], path: str | os.PathLike, *,
                       title: str = "") -> pathlib.Path:
  """ROC (left) and precision-recall (right) curves of several scorers in one PNG, written atomically.

  Args:
    curves: label -> (y (N,) binary with both classes, scores (N,)); the legend
      shows each ROC AUC.
    path: PNG file; parent folders are created.
    title: figure title.

  Returns:
    The path written.

  Raises:
    ValueError: no curves, or bad labels/scores (as `compute_roc_curve`).
  """
  if not curves:
    raise ValueError("save_roc_pr_curves: no curves")
  fig, (ax_roc, ax_pr) = _new_figure(10, 4.5, ncols=2)
  base_rates = []
  for label, (y, scores) in curves.items():
    fpr, tpr, _ = metrics_lib.compute_roc_curve(scores, y)
    precision, recall, _ = metrics_lib.compute_pr_curve(scores, y)
    auc = metrics_lib.compute_roc_auc(scores, y)
    ax_roc.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax_pr.plot(recall, precision, label=label, drawstyle="steps-post")
    base_rates.append(float(np.mean(np.asarray(y, np.float64))))
  ax_roc.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
  ax_roc.set(xlabel="FPR", ylabel="TPR", xlim=(0, 1), ylim=(0, 1.01), title="ROC")
  ax_roc.legend(loc="lower right", fontsize="small")
  for rate in sorted(set(base_rates)):
    ax_pr.axhline(rate, color="grey", linestyle=":", linewidth=1)
  ax_pr.set(xlabel="recall (TPR)", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01),
            title="precision-recall (dotted: base rate)")
  if title:
    fig.suptitle(title)
  return save_figure(fig, path)


def save_confusion_matrix(confusion: Any, path: str | os.PathLike, *, title: str = "",
                          labels: tuple[str, str] = ("invalid", "valid")) -> pathlib.Path:
  """A 2x2 confusion matrix `[[tn, fp], [fn, tp]]` (rows truth, columns prediction) as a PNG, atomically.

  Args:
    confusion: int (2, 2) counts, e.g. `threshold_report(...)["confusion"]`.
    path: PNG file; parent folders are created.
    title: axes title.
    labels: names of class 0 and class 1.

  Returns:
    The path written.

  Raises:
    ValueError: not a (2, 2) array of non-negative counts.
  """
  confusion = np.asarray(confusion)
  if confusion.shape != (2, 2) or np.any(confusion < 0):
    raise ValueError(f"save_confusion_matrix: expected (2, 2) non-negative counts, got {confusion}")
  fig, (ax,) = _new_figure(4, 3.6)
  total = max(int(confusion.sum()), 1)
  ax.imshow(confusion, cmap="Blues", vmin=0)
  for (i, j), count in np.ndenumerate(confusion):
    dark = count > confusion.max() / 2
    ax.text(j, i, f"{int(count)}\n{100 * count / total:.1f}%", ha="center", va="center",
            color="white" if dark else "black")
  ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=list(labels), yticklabels=list(labels),
         xlabel="predicted (accepted)", ylabel="true", title=title)
  return save_figure(fig, path)


def save_correlation_heatmap(correlations: Any, names: Sequence[str], path: str | os.PathLike, *,
                             title: str = "Pearson r(score, z_d)") -> pathlib.Path:
  """Heatmap of a (n_scores, D) correlation matrix (`latent_score_correlations`) as a PNG, atomically.

  Args:
    correlations: float (K, D) in [-1, 1]; NaN cells are left blank.
    names: K row names.
    path: PNG file; parent folders are created.
    title: axes title.

  Returns:
    The path written.

  Raises:
    ValueError: not 2-D, or len(names) != K.
  """
  correlations = np.asarray(correlations, np.float64)
  if correlations.ndim != 2 or correlations.shape[0] != len(names):
    raise ValueError(f"save_correlation_heatmap: expected ({len(names)}, D) correlations, got {correlations.shape}")
  limit = float(np.nanmax(np.abs(correlations))) if np.any(np.isfinite(correlations)) else 1.0
  fig, (ax,) = _new_figure(12, 1.2 + 0.45 * len(names))
  image = ax.imshow(np.ma.masked_invalid(correlations), cmap="RdBu_r", vmin=-limit, vmax=limit,
                    aspect="auto", interpolation="nearest")
  ax.set(yticks=range(len(names)), yticklabels=list(names), xlabel="latent coordinate d", title=title)
  fig.colorbar(image, ax=ax, fraction=0.03)
  return save_figure(fig, path)


def save_extremes_scatter(embedding: Mapping[str, np.ndarray], path: str | os.PathLike, *,
                          title: str = "") -> pathlib.Path:
  """Scatter of `embed_extremes` output (best latents vs worst) as a PNG, atomically.

  Args:
    embedding: the dict `embed_extremes` returns.
    path: PNG file; parent folders are created.
    title: axes title (e.g. the score's name).

  Returns:
    The path written.
  """
  points, best = np.asarray(embedding["embedding"]), np.asarray(embedding["is_best"], bool)
  ratio = np.asarray(embedding["explained_variance_ratio"])
  fig, (ax,) = _new_figure(5, 4.5)
  ax.scatter(points[best, 0], points[best, 1], s=10, alpha=0.7, label=f"best {int(best.sum())}")
  ax.scatter(points[~best, 0], points[~best, 1], s=10, alpha=0.7, marker="x", label=f"worst {int((~best).sum())}")
  ax.set(xlabel=f"PC1 ({100 * ratio[0]:.1f}%)", ylabel=f"PC2 ({100 * ratio[1]:.1f}%)", title=title)
  ax.legend(fontsize="small")
  return save_figure(fig, path)


# ============================================================================ building latent datasets


def build_latent_dataset(scorer: Any, generator: Any, key: jax.Array, n_per_group: int, *, generator_id: str,
                         groups: Sequence[str] = GROUPS, label: int = 0, progress: bool = False) -> dict[str, Any]:
  """Generates and post-scores `n_per_group` latents per age-sex group: a latent dataset (DESIGN.md section 4).

  Group `g` (its index in `jaxcxr.data.GROUPS`) uses the key `jax.random.fold_in(key, g)`,
  and its record j holds z = `models.generator.latents(fold_in(key, g), j)`, so a
  group's records do not depend on which other groups or how many records are
  built (record j of a 100-per-group build is record j of a 10k-per-group build).
  Each batch is one compiled call of `Scorer.generate_and_score(..., keep_images=False)`.

  Args:
    scorer: a `jaxcxr.scoring.Scorer` (the post-filter that labels each latent).
    generator: a `jaxcxr.models.generator.Generator`.
    key: PRNG key of the latents.
    n_per_group: records per group (>= 1).
    generator_id: `checkpoints.model_id` of the generator's checkpoint (stored with the data).
    groups: group names to build, each in `GROUPS`.
    label: 0 normal / 1 abnormal condition (only for a label-conditioned generator).
    progress: tqdm bars on stderr.

  Returns:
    Records as `validate_latent_records` returns them: "z" float32 (N, latent_dim),
    "group" (N,) str, "scores" {name: float32 (N,)} (> 0 good), "features" float32
    (N, 6), "valid" bool (N,), "generator_id" str; N = n_per_group * len(groups),
    grouped in the order of `groups`.

  Raises:
    ValueError: n_per_group < 1 or no groups. jaxcxr.data.DataError: an unknown group.
  """
  if n_per_group < 1:
    raise ValueError(f"build_latent_dataset: n_per_group must be >= 1, got {n_per_group}")
  if not groups:
    raise ValueError("build_latent_dataset: no groups")
  parts = []
  for name in groups:
    if name not in GROUPS:
      raise DataError(f"unknown group {name!r}; expected one of {', '.join(GROUPS)}")
    group_key = jax.random.fold_in(key, GROUPS.index(name))
    out = scorer.generate_and_score(generator, group_key, n_per_group, name, label=label, keep_images=False,
                                    progress=progress)
    parts.append((name, out))
  records = {
      "z": np.concatenate([out.z for _, out in parts]),
      "group": np.concatenate([np.full(n_per_group, name) for name, _ in parts]),
      "scores": {k: np.concatenate([out.result.scores[k] for _, out in parts]) for k in SCORE_NAMES},
      "features": np.concatenate([out.result.features for _, out in parts]),
      "valid": np.concatenate([out.result.valid for _, out in parts]),
      "generator_id": str(generator_id),
      "measures": {k: np.concatenate([out.result.measures[k] for _, out in parts]) for k in MEASURE_NAMES},
  }
  if scorer_id(scorer):
    records["scorer_id"] = scorer_id(scorer)
  if hasattr(scorer, "strictness_name"):
    records["strictness"] = scorer.strictness_name
  return validate_latent_records(records, latent_dim=generator.config.latent_dim)


def latent_dataset_summary(records: Mapping[str, Any]) -> dict[str, Any]:
  """Counts and valid rates: {"n", "n_valid", "valid_rate", "generator_id", "groups": {name: {...}}}."""
  group, valid = np.asarray(records["group"]), np.asarray(records["valid"], bool)
  per_group = {}
  for name in [g for g in GROUPS if g in set(group.tolist())]:
    member = group == name
    per_group[name] = {"n": int(member.sum()), "n_valid": int(valid[member].sum()),
                       "valid_rate": float(valid[member].mean())}
  return {"n": int(valid.shape[0]), "n_valid": int(valid.sum()),
          "valid_rate": float(valid.mean()) if valid.size else 0.0,
          "generator_id": str(records["generator_id"]), "groups": per_group}


# ============================================================================ one-command report


# A fast subset of `latent_model_zoo` (the full zoo with SVMs and deep Flax nets is slow on a CPU).
DEFAULT_REPORT_MODELS: tuple[str, ...] = ("logreg_C1", "logreg_l1", "knn_10", "tree_d5", "forest", "flax_logreg",
                                          "flax_mlp2")

# One model per family of the zoo, the original study's 11-family table: L2 and L1 logistic
# regression, linear, RBF and polynomial SVMs, k-NN, a decision tree, a random forest, and the
# Flax logistic regression, MLP and deep net.
FAMILY_MODELS: tuple[str, ...] = ("logreg_C1", "logreg_l1", "svc_linear", "svc_rbf", "svc_poly", "knn_10", "tree_d5",
                                  "forest", "flax_logreg", "flax_mlp2", "flax_deep")


def select_models(names: str | Sequence[str] | None = None, *, seed: int = 0) -> dict[str, Any]:
  """Estimators of `latent_model_zoo` by name: None -> `DEFAULT_REPORT_MODELS`, "families" -> `FAMILY_MODELS`,
  "all" -> the whole zoo.

  Args:
    names: a comma-separated string or a sequence of zoo names, "families", "all", or None.
    seed: as `latent_model_zoo`.

  Raises:
    ValueError: an unknown name (listing the known ones) or an empty selection.
  """
  zoo = latent_model_zoo(seed=seed)
  if names is None:
    names = DEFAULT_REPORT_MODELS
  if isinstance(names, str):
    if names.strip() == "all":
      return zoo
    if names.strip() == "families":
      return {n: zoo[n] for n in FAMILY_MODELS}
    names = [n.strip() for n in names.split(",") if n.strip()]
  names = list(names)
  unknown = [n for n in names if n not in zoo]
  if unknown or not names:
    raise ValueError(f"unknown latent model(s) {unknown}; expected some of {', '.join(zoo)} (or 'all')")
  return {n: zoo[n] for n in names}


def _cross_validated_decisions(estimator, z: np.ndarray, y: np.ndarray, strategy: str, n_folds: int,
                               seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Out-of-fold scores and accept decisions with the folds and threshold protocol of `cross_validate_latent`.

  Returns (scores float64 (N,), accepted bool (N,)): each latent is scored by a model
  fitted on the other folds, and accepted when its score >= the threshold chosen by
  `strategy` on inner out-of-fold scores of those folds.
  """
  from sklearn.model_selection import StratifiedKFold  # pylint: disable=g-import-not-at-top

  scores = np.empty(y.shape[0], np.float64)
  accepted = np.zeros(y.shape[0], bool)
  for train, test in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(z, y):
    threshold = select_threshold(y[train], _out_of_fold_scores(estimator, z[train], y[train], n_folds, seed),
                                 strategy)
    scores[test] = _model_scores(clone(estimator).fit(z[train], y[train]), z[test])
    accepted[test] = scores[test] >= threshold
  return scores, accepted


def write_latent_report(records: Mapping[str, Any], out_dir: str | os.PathLike, *,
                        models: Mapping[str, Any] | None = None, targets: Sequence[str] = ("valid",),
                        strategy: str | Sequence[str] = "youden", n_folds: int = 3, seed: int = 0,
                        extremes_k: int = 100, log: Any = None) -> dict[str, Any]:
  """The pre-filter study in one call: CV table, exploratory views, and curves of each group's best model.

  Writes into `out_dir` (created; files written atomically):

  * `table.md`: `results_table` of `cross_validate_latent` per group (stratified
    `n_folds`-fold CV; thresholds chosen on inner out-of-fold scores, precision on the
    held-out fold);
  * `rows.json`: those rows (NaN as null);
  * `correlations_all.png` and `correlations_<group>.png`: Pearson r of each score
    with each latent coordinate (`latent_score_correlations`);
  * `extremes_<score>.png`: 2-D PCA of the `extremes_k` best and worst latents per
    score, all groups pooled (`embed_extremes`);
  * `roc_pr_<group>.png` and `confusion_<group>.png` for the model with the best mean
    ROC AUC in the group, on the first target that is not "valid_by_scores": out-of-fold
    scores (same folds) and the confusion of out-of-fold accept decisions, each
    fold's threshold chosen by `strategy` on its training folds only.

  Args:
    records: a latent dataset (`load_latent_dataset`).
    out_dir: output folder.
    models: name -> unfitted estimator (default `select_models()`).
    targets: CV targets (see `TARGETS`).
    strategy: threshold strategy (`STRATEGIES`) or several (one table each, from
      the same fits); the curves and confusion matrices use the first.
    n_folds: CV folds.
    seed: fold shuffling and model seeds.
    extremes_k: latents per side of the extremes views (capped at N // 2).
    log: optional callable(str) for progress lines.

  Returns:
    {"rows": CV rows, "best": {group: {"model", "roc_auc", "confusion", "tpr", "fpr",
    "precision"}}, "files": [paths written]}.

  Raises:
    ValueError / jaxcxr.data.DataError: bad records, unknown targets, strategy or models.
  """
  from jaxcxr import io as io_lib  # pylint: disable=g-import-not-at-top

  log = log or (lambda message: None)
  records = validate_latent_records(records, latent_dim=np.asarray(records["z"]).shape[-1])
  strategies = _check_strategies(strategy)
  unknown = [t for t in targets if t not in TARGETS]
  if unknown or not targets:
    raise ValueError(f"unknown target(s) {unknown}; expected some of {', '.join(TARGETS)}")
  models = dict(models) if models is not None else select_models(seed=seed)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  z, groups, y = records["z"], records["group"], latent_targets(records)
  files: list[str] = []

  log(f"cross-validating {len(models)} model(s) x {len(set(groups.tolist()))} group(s), targets {list(targets)}")
  rows = cross_validate_latent(z, y, groups, models, n_folds=n_folds, seed=seed, targets=targets,
                               strategy=strategies)
  files.append(str(write_bytes_atomic(out / "table.md", results_table(rows).encode())))
  files.append(str(io_lib.save_json(out / "rows.json", io_lib.to_json_safe(rows))))

  log("exploratory views: correlations and extremes")
  present = [g for g in GROUPS if g in set(groups.tolist())]
  score_matrix = np.stack([records["scores"][k] for k in SCORE_NAMES])          # (5, N)
  finite = np.all(np.isfinite(score_matrix), axis=0)
  for name, member in [("all", np.ones(z.shape[0], bool))] + [(g, groups == g) for g in present]:
    keep = member & finite
    if keep.sum() < 2:
      continue
    r = latent_score_correlations(z[keep], {k: records["scores"][k][keep] for k in SCORE_NAMES})
    files.append(str(save_correlation_heatmap(r, SCORE_NAMES, out / f"correlations_{name}.png",
                                              title=f"Pearson r(score, z_d), {name} (n={int(keep.sum())})")))
  k = min(extremes_k, int(finite.sum()) // 2)
  if k >= 1:
    for score in SCORE_NAMES:
      view = embed_extremes(z[finite], records["scores"][score][finite], k, seed=seed)
      files.append(str(save_extremes_scatter(view, out / f"extremes_{score}.png",
                                             title=f"{score}: best vs worst {k} latents")))

  best: dict[str, Any] = {}
  primary = next((t for t in targets if t != "valid_by_scores"), None)
  if primary is not None:
    labels = _target_label(y, primary, z.shape[0])
    for group in present:
      scored = [r for r in rows if r["target"] == primary and r["group"] == group and not r["note"]
                and r["strategy"] == strategies[0]]
      if not scored:
        continue
      top = max(scored, key=lambda r: r["roc_auc"])
      member = groups == group
      log(f"{group}: best model {top['model']} (ROC AUC {top['roc_auc']:.3f}); out-of-fold curves")
      oof, accepted = _cross_validated_decisions(models[top["model"]], z[member], labels[member], strategies[0],
                                                 n_folds, seed)
      confusion = metrics_lib.compute_confusion(accepted.astype(np.int64), labels[member])
      report = metrics_lib.compute_binary_report(accepted.astype(np.int64), labels[member])
      files.append(str(save_roc_pr_curves({top["model"]: (labels[member], oof)}, out / f"roc_pr_{group}.png",
                                          title=f"{group}, target {primary}, out-of-fold")))
      files.append(str(save_confusion_matrix(confusion, out / f"confusion_{group}.png",
                                             title=f"{group}: {top['model']} at {strategies[0]}, out-of-fold")))
      best[group] = {"model": top["model"], "target": primary, "roc_auc": top["roc_auc"],
                     "confusion": confusion.tolist(), "tpr": report["tpr"], "fpr": report["fpr"],
                     "precision": report["precision"], "base_rate": float(labels[member].mean())}
  return {"rows": rows, "best": best, "files": files}


# ============================================================================ fitted pre-filters


# What `fit_prefilter` does with a group it cannot learn (too few valid or invalid latents).
ON_EMPTY: tuple[str, ...] = ("error", "accept_all")
_PREFILTER_FORMAT = "jaxcxr.prefilter/1"
_PREFILTER_SET_FORMAT = "jaxcxr.prefilter-set/1"


@dataclasses.dataclass(frozen=True)
class Prefilter:
  """A fitted latent pre-filter of one age-sex group: accept z when `classifier(z) >= threshold`.

  Attributes:
    classifier: the `LatentClassifier` (used in inference mode: BatchNorm running averages).
    threshold: acceptance threshold in LOGIT units (sigmoid(threshold) is the probability
      threshold; logits avoid float32 probabilities saturating at 1). -inf accepts every
      latent (the documented fallback for a group without enough valid latents).
    strategy: the `STRATEGIES` name that chose the threshold on validation latents.
    group: the age-sex group it was fitted for (the generator is conditional, so a
      latent's validity depends on the group).
    model_preset: the `jaxcxr.config.LATENT_PRESETS` name of the classifier.
    generator_id: `checkpoints.model_id` of the generator whose latents it learned.
    report: JSON-ready record of the fit: part sizes, validation and test
      `threshold_report`s, test ROC AUC, predicted speed-up (see `fit_prefilter`).
  """

  classifier: LatentClassifier
  threshold: float
  strategy: str
  group: str
  model_preset: str
  generator_id: str | None = None
  report: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def accepts_all(self) -> bool:
    """True for the fallback that accepts every latent (threshold -inf)."""
    return self.threshold == -math.inf

  @property
  def latent_dim(self) -> int:
    return self.classifier.config.latent_dim

  def logits(self, z: Any) -> np.ndarray:
    """float32 (B,) logits of latents z (B, latent_dim) on the host (`predict_latent`'s path)."""
    return _inference_logits(self.classifier, z)

  def accept(self, z: Any) -> np.ndarray:
    """bool (B,): which latents z (B, latent_dim) the pre-filter accepts."""
    return self.logits(z) >= np.float32(self.threshold)

  def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
    """Writes the classifier with `checkpoints.save_model`; threshold and record go in its metadata.

    Raises:
      jaxcxr.checkpoints.CheckpointError: `directory` exists and `overwrite` is False.
    """
    from jaxcxr import checkpoints  # pylint: disable=g-import-not-at-top  (orbax is heavy)

    meta = {"prefilter_format": _PREFILTER_FORMAT,
            "threshold": None if self.accepts_all else float(self.threshold),
            "threshold_probability": None if self.accepts_all else float(scipy.special.expit(self.threshold)),
            "accepts_all": self.accepts_all, "strategy": self.strategy, "group": self.group,
            "model_preset": self.model_preset, "generator_id": self.generator_id,
            "report": io_lib.to_json_safe(dict(self.report))}
    return checkpoints.save_model(directory, self.classifier, self.classifier.config, metadata=meta,
                                  overwrite=overwrite)


def save_prefilter_set(directory: str | os.PathLike, prefilters: Sequence[Prefilter], *,
                       overwrite: bool = False) -> pathlib.Path:
  """Writes pre-filters that share one classifier and differ in threshold strategy, as one checkpoint.

  `fit_prefilter` with the same records, group, preset and seed fits the same classifier
  whatever the strategy, so the strategies of one group need one set of weights. The
  metadata holds each strategy's threshold and report; `load_prefilter(directory,
  strategy)` returns one of them.

  Raises:
    ValueError: no pre-filters, or pre-filters of different groups, generators or weights.
  """
  from jaxcxr import checkpoints  # pylint: disable=g-import-not-at-top

  if not prefilters:
    raise ValueError("save_prefilter_set: no pre-filters")
  first = prefilters[0]
  weights = jax.tree.leaves(nnx.state(first.classifier, nnx.Param))
  for pf in prefilters[1:]:
    same = (pf.group, pf.generator_id, pf.model_preset) == (first.group, first.generator_id, first.model_preset)
    if not same or not all(np.array_equal(a, b) for a, b in zip(weights, jax.tree.leaves(
        nnx.state(pf.classifier, nnx.Param)))):
      raise ValueError(f"save_prefilter_set: the {pf.strategy} pre-filter has another group, generator or classifier "
                       f"than the {first.strategy} one")
  meta = {"prefilter_format": _PREFILTER_SET_FORMAT, "group": first.group, "model_preset": first.model_preset,
          "generator_id": first.generator_id,
          "strategies": {pf.strategy: {"threshold": None if pf.accepts_all else float(pf.threshold),
                                       "accepts_all": pf.accepts_all, "report": io_lib.to_json_safe(dict(pf.report))}
                         for pf in prefilters}}
  return checkpoints.save_model(directory, first.classifier, first.classifier.config, metadata=meta,
                                overwrite=overwrite)


def shipped_prefilter(generator_id: str, strictness: str, group: str) -> pathlib.Path | None:
  """The shipped pre-filter set `checkpoints/prefilters_*/STRICTNESS/GROUP` of a generator, or None.

  Shipped pre-filters are fitted per generator, post-filter level and group, with every
  threshold strategy (`save_prefilter_set`); the set whose metadata names `generator_id`
  is returned.
  """
  from jaxcxr import checkpoints  # pylint: disable=g-import-not-at-top

  for candidate in sorted(checkpoints.checkpoints_root().glob(f"prefilters_*/{strictness}/{group}")):
    try:
      if checkpoints.read_metadata(candidate).get("generator_id") == generator_id:
        return candidate
    except checkpoints.CheckpointError:
      continue
  return None


def check_prefilter_scorer(pf: Prefilter, scorer: Any) -> None:
  """Refuses a pre-filter that learned another post-filter's validity (other models or another level).

  Raises:
    ValueError: naming both.
  """
  learned, level = pf.report.get("scorer_id"), pf.report.get("strictness")
  if learned and scorer_id(scorer) and learned != scorer_id(scorer):
    raise ValueError(f"the pre-filter learned the validity of post-filter models {learned}, not this scorer's "
                     f"{scorer_id(scorer)}; fit it on a latent dataset built with this scorer")
  if level and level != scorer.strictness_name:
    raise ValueError(f"the pre-filter learned validity at strictness {level!r}, but the post-filter runs at "
                     f"{scorer.strictness_name!r}; pass --strictness {level} or fit one at this level")


def load_prefilter(directory: str | os.PathLike, strategy: str | None = None) -> Prefilter:
  """Reads a pre-filter written by `Prefilter.save`, or one strategy of a `save_prefilter_set`.

  Args:
    directory: the checkpoint folder.
    strategy: which threshold of a pre-filter set (required for a set, checked for a single one).

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing or corrupt checkpoint, a model checkpoint
      that is not a pre-filter, or a strategy it does not hold (names the folder).
  """
  from jaxcxr import checkpoints  # pylint: disable=g-import-not-at-top

  classifier, _, meta = checkpoints.load_model(directory, lambda c: LatentClassifier(c, rngs=nnx.Rngs(0)),
                                               LatentClassifierConfig)
  if meta.get("prefilter_format") == _PREFILTER_SET_FORMAT:
    held = meta.get("strategies") or {}
    if strategy not in held:
      raise checkpoints.CheckpointError(f"{directory}: a pre-filter set of strategies {sorted(held)}; name one of "
                                        f"them (got {strategy!r})")
    entry = held[strategy]
    threshold = -math.inf if entry.get("accepts_all") else float(entry["threshold"])
    return Prefilter(classifier=classifier, threshold=threshold, strategy=strategy, group=meta["group"],
                     model_preset=meta["model_preset"], generator_id=meta.get("generator_id"),
                     report=entry.get("report") or {})
  if strategy is not None and meta.get("strategy") != strategy:
    raise checkpoints.CheckpointError(f"{directory}: a {meta.get('strategy')} pre-filter, not {strategy}")
  if meta.get("prefilter_format") != _PREFILTER_FORMAT:
    raise checkpoints.CheckpointError(f"{directory}: a latent classifier checkpoint without pre-filter metadata "
                                      f"(expected prefilter_format {_PREFILTER_FORMAT!r})")
  threshold = -math.inf if meta.get("accepts_all") else float(meta["threshold"])
  return Prefilter(classifier=classifier, threshold=threshold, strategy=meta["strategy"], group=meta["group"],
                   model_preset=meta["model_preset"], generator_id=meta.get("generator_id"),
                   report=meta.get("report") or {})


def _stratified_parts(y: np.ndarray, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
  """Stratified train/validation/test indices (sorted int64 arrays).

  Per class of c members (shuffled with `seed`): validation gets round(f_val c), at
  least 1 when c >= 2; test gets round(f_test c), at least 1 when c >= 3; training
  the rest (at least 1 when c >= 1). So 2 valid latents already give one to train
  and one to choose the threshold on.
  """
  rng = np.random.default_rng(seed)
  parts: dict[str, list] = {"train": [], "val": [], "test": []}
  _, f_val, f_test = fractions
  for c in (0, 1):
    members = rng.permutation(np.flatnonzero(y == c))
    n = members.shape[0]
    n_val = min(max(1, round(f_val * n)), n - 1) if n >= 2 else 0
    n_test = min(max(1, round(f_test * n)), n - 1 - n_val) if n >= 3 else 0
    parts["val"].append(members[:n_val])
    parts["test"].append(members[n_val: n_val + n_test])
    parts["train"].append(members[n_val + n_test:])
  return {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}


def _report_json(report: Mapping[str, Any]) -> dict[str, Any]:
  return {k: (np.asarray(v).tolist() if k == "confusion" else v) for k, v in report.items()}


def fit_prefilter(records: Mapping[str, Any], group: str, strategy: str = "youden", model_preset: str = "logreg", *,
                  fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0, on_empty: str = "error",
                  imbalance: str = "class_weights", steps: int = 1000, batch_size: int = 256,
                  learning_rate: float = 0.05, weight_decay: float = 1e-3) -> Prefilter:
  """Fits a group's pre-filter: classifier on a training part, threshold on a validation part, report on a test part.

  Protocol (DESIGN.md section 5: chosen on validation, reported on test): the
  group's records are split, stratified by `valid`, into train / validation / test
  (`fractions`, seeded). A Flax `LatentClassifier` (`model_preset`) is fitted on the
  training part (`fit_latent_classifier`); `strategy` picks the logit threshold on the
  validation part's logits (`select_threshold`); the test part gives the reported
  TPR, FPR, precision and confusion (`threshold_report`) and ROC AUC. The model is
  not refitted on train + validation, so the threshold belongs to the weights it
  was chosen for.

  Predicted speed-up (DESIGN.md section 6): precision_filtered / precision_unfiltered,
  both on the test part (precision_unfiltered = the test part's valid rate);
  `physical_limit` = 1 / (the group's valid rate): the speed-up of a perfect filter.

  Empty groups: a group with fewer than 2 valid (or fewer than 2 invalid) latents
  has no positive (negative) in its training or validation part, so no classifier
  or threshold can be learned. `on_empty="error"` (default) raises; `on_empty=
  "accept_all"` returns the fallback pre-filter that accepts every latent
  (threshold -inf, an untrained zero-head classifier, `report["accept_all"]` with the
  reason), i.e. plain post-filtering.

  Args:
    records: a latent dataset (`load_latent_dataset` / `build_latent_dataset`).
    group: the age-sex group to fit.
    strategy: one of `STRATEGIES`.
    model_preset: one of `jaxcxr.config.LATENT_PRESETS` ("logreg", "mlp1" ...
      "mlp4", "deep").
    fractions: (train, validation, test) fractions, summing to 1.
    seed: seeds the split and the fit.
    on_empty: one of `ON_EMPTY`.
    imbalance, steps, batch_size, learning_rate, weight_decay: as `fit_latent_classifier`.

  Returns:
    The fitted `Prefilter` (its `report` holds "n", "n_valid", "base_rate", part sizes,
    "validation" and "test" threshold reports, "test_roc_auc",
    "precision_unfiltered_test", "precision_filtered_test", "predicted_speedup",
    "physical_limit").

  Raises:
    ValueError: an unknown strategy, preset or `on_empty`, bad fractions, a group with
      no records, or (with on_empty="error") too few valid or invalid latents.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"unknown threshold strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
  if model_preset not in LATENT_PRESETS:
    raise ValueError(f"unknown latent model preset {model_preset!r}; expected one of {', '.join(LATENT_PRESETS)}")
  if on_empty not in ON_EMPTY:
    raise ValueError(f"on_empty: expected one of {ON_EMPTY}, got {on_empty!r}")
  if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
    raise ValueError(f"fractions: expected (train, validation, test) >= 0 summing to 1, got {fractions}")
  records = validate_latent_records(records, latent_dim=np.asarray(records["z"]).shape[-1])
  member = records["group"] == group
  if not member.any():
    present = sorted(set(records["group"].tolist()))
    raise ValueError(f"fit_prefilter: no latents of group {group!r} in the dataset; present: {present}")
  z, y = records["z"][member], records["valid"][member].astype(np.int64)
  latent_dim = z.shape[1]
  config = LATENT_PRESETS[model_preset](latent_dim)
  n, n_valid = int(y.shape[0]), int(y.sum())
  base = {"n": n, "n_valid": n_valid, "base_rate": n_valid / n,
          "physical_limit": (n / n_valid) if n_valid else None, "fractions": list(fractions), "seed": seed,
          # The post-filter whose validity it learned: its models and level (None for records without them).
          "scorer_id": records.get("scorer_id"), "strictness": records.get("strictness")}
  if min(n_valid, n - n_valid) < 2:
    reason = (f"group {group!r}: {n_valid} valid and {n - n_valid} invalid latents of {n}; a pre-filter needs "
              "at least 2 of each (one to train on, one to choose the threshold on)")
    if on_empty == "error":
      raise ValueError(f"fit_prefilter: {reason}; build a larger latent dataset, or pass on_empty='accept_all' "
                       "to sample this group without a pre-filter")
    classifier = LatentClassifier(config, rngs=nnx.Rngs(seed))
    return Prefilter(classifier, -math.inf, strategy, group, model_preset, records["generator_id"],
                     {**base, "accept_all": True, "reason": reason, "predicted_speedup": 1.0})
  parts = _stratified_parts(y, fractions, seed)
  train, val, test = parts["train"], parts["val"], parts["test"]
  model = fit_latent_classifier(z[train], y[train], config, imbalance=imbalance, steps=steps,
                                batch_size=batch_size, learning_rate=learning_rate, weight_decay=weight_decay,
                                seed=seed)
  val_logits = _inference_logits(model, z[val])
  threshold = select_threshold(y[val], val_logits, strategy)
  report = {**base, "accept_all": False, "n_train": int(train.size), "n_val": int(val.size),
            "n_test": int(test.size), "validation": _report_json(threshold_report(y[val], val_logits, threshold))}
  if test.size:
    test_logits = _inference_logits(model, z[test])
    test_report = _report_json(threshold_report(y[test], test_logits, threshold))
    both = 0 < y[test].sum() < test.size
    precision_unfiltered = float(y[test].mean())
    report.update(test=test_report,
                  test_roc_auc=metrics_lib.compute_roc_auc(test_logits, y[test]) if both else None,
                  precision_unfiltered_test=precision_unfiltered,
                  precision_filtered_test=test_report["precision"],
                  predicted_speedup=(test_report["precision"] / precision_unfiltered
                                     if precision_unfiltered > 0 else None))
  return Prefilter(model, float(threshold), strategy, group, model_preset, records["generator_id"], report)


# ============================================================================ filtered sampling on device


@dataclasses.dataclass(frozen=True)
class NudgeConfig:
  """Latent nudging: move each pooled z up the pre-filter's logit before filtering and generating.

  Each step: z <- z + step_size * g / |g| with g = d logit / dz, then z <- z * |z_0| / |z|,
  so every latent keeps its original norm (it stays on its shell of the Gaussian:
  |z| ~ chi(latent_dim), ~11.3 for 128) and only turns towards the classifier's
  "valid" side. With logistic regression g is the weight vector for every z, so
  the latents rotate towards one direction: expect less diversity.
  """

  # Gradient steps per latent (static: one compile per value).
  steps: int = 3
  # Distance moved per step along the unit gradient, in z units (traced: changing it does not recompile).
  step_size: float = 0.5

  def __post_init__(self):
    if self.steps < 1:
      raise ValueError(f"NudgeConfig.steps must be >= 1, got {self.steps}")
    if not self.step_size > 0:
      raise ValueError(f"NudgeConfig.step_size must be positive, got {self.step_size}")


# Number of traces (compilations) of `_filter_generate_and_score`, for the no-recompile tests.
TRACE_COUNTS: dict[str, int] = {"filter_generate_and_score": 0}


def _nudge(model: LatentClassifier, z: jax.Array, steps: int, step_size: jax.Array) -> jax.Array:
  """`steps` normalised gradient steps up model's logit, each projected back onto |z| = |z_0|. (B, D) -> (B, D)."""
  radius = jnp.linalg.norm(z, axis=-1, keepdims=True)                      # (B, 1)
  grad = jax.grad(lambda x: model(x).sum())                                # per-latent: inference mode
  for _ in range(steps):
    g = grad(z)
    z = z + step_size * g / jnp.maximum(jnp.linalg.norm(g, axis=-1, keepdims=True), 1e-12)
    z = z * radius / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  return z


@functools.partial(jax.jit, static_argnames=("models", "config", "pool_size", "accept_size", "nudge_steps",
                                             "batch_sharding"))
def _filter_generate_and_score(models, states, calibration, key, start, cond, threshold, nudge_step_size, *,
                               config, pool_size, accept_size, nudge_steps, batch_sharding):
  """One round of filtered sampling in one compiled call (shapes static in every round).

  models/states: (U-Net, classifier, generator, latent classifier or None). Latent
  indices start .. start+pool_size-1 give z (`latents`), optionally nudged, then
  logits; accepted = logit >= threshold (all, without a latent classifier). The first
  `accept_size` accepted latents in index order fill the generated slots
  (`lax.top_k` of -(position, + pool_size if rejected)); a pool with fewer fills
  the rest with rejected latents whose slots are masked out.
  """
  TRACE_COUNTS["filter_generate_and_score"] += 1          # runs at trace time only
  latent_dim = nnx.merge(models[2], states[2]).config.latent_dim
  index = start + jnp.arange(pool_size, dtype=jnp.int32)                                 # (P,)
  z = scoring.latents_at(key, index, latent_dim)                                         # (P, D)
  if models[3] is None:
    logits = jnp.zeros((pool_size,), jnp.float32)
    accepted = jnp.ones((pool_size,), bool)
  else:
    latent_model = nnx.merge(models[3], states[3])
    if nudge_steps:
      z = _nudge(latent_model, z, nudge_steps, nudge_step_size)
    logits = latent_model(z)                                                             # (P,)
    accepted = logits >= threshold
  position = jnp.arange(pool_size, dtype=jnp.int32)
  rank = jnp.where(accepted, position, pool_size + position)         # accepted first, each kind in index order
  _, chosen = jax.lax.top_k(-rank, accept_size)                      # (A,) positions, ascending rank
  slot_used = accepted[chosen]                                        # (A,) False = padding slot
  n_accepted = accepted.sum()
  # Latents consumed this round: the whole pool, unless more were accepted than slots; then up to and
  # including the last one generated, so the next round starts at the first accepted latent left over.
  consumed = jnp.where(n_accepted > accept_size, chosen[accept_size - 1] + 1, pool_size)
  z_chosen = z[chosen]
  if batch_sharding is not None:
    z_chosen = jax.lax.with_sharding_constraint(z_chosen, batch_sharding)
  out = scoring.generate_and_score_batch(models, states, calibration, z_chosen, cond, config, keep_maps=False)
  return {"images": out["images"], "z": z_chosen, "index": index[chosen],
          "logit": logits[chosen], "scores": out["scores"], "valid": out["valid"] & slot_used,
          "slot_used": slot_used, "consumed": consumed.astype(jnp.int32)}


class _RoundCaller:
  """Everything constant across rounds of `sample_valid`, split once; `__call__(start)` runs one round."""

  def __init__(self, scorer, generator, prefilter: Prefilter | None, key, group: str, label: int, pool_size: int,
               accept_size: int, nudge: NudgeConfig | None):
    g_cfg = generator.config
    if "label" not in g_cfg.conditions and label != 0:
      raise ValueError(f"sample_valid: this generator is not conditioned on the label; got label={label}")
    if prefilter is not None:
      if prefilter.latent_dim != g_cfg.latent_dim:
        raise ValueError(f"sample_valid: the pre-filter takes latents of size {prefilter.latent_dim}, the "
                         f"generator draws {g_cfg.latent_dim}")
      if prefilter.group != group:
        raise ValueError(f"sample_valid: the pre-filter was fitted for group {prefilter.group!r}, not {group!r}")
    if nudge is not None and (prefilter is None or prefilter.accepts_all):
      raise ValueError("sample_valid: nudging needs a trained pre-filter (its logit is what is climbed)")
    if not 1 <= accept_size <= pool_size:
      raise ValueError(f"sample_valid: need 1 <= accept_size <= pool_size, got {accept_size} and {pool_size}")
    g_def, g_state = scoring.split_with_dtype(generator, scorer.config.dtype)
    if prefilter is None:
      l_def = l_state = None
      threshold = 0.0
    else:
      view = nnx.view(prefilter.classifier, use_running_average=True, raise_if_not_found=False)
      l_def, l_state = nnx.split(view)
      threshold = prefilter.threshold
    self.models = (*scorer.graphdefs, g_def, l_def)
    self.states = (*scorer.states, scorer.replicate(g_state), scorer.replicate(l_state))
    self.calibration = scorer.device_calibration
    mesh = scorer.mesh
    self.batch_sharding = (None if mesh is None or accept_size % mesh.size else
                           jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch")))
    self.cond = jnp.asarray(group_condition_batch(group, accept_size, label, conditions=g_cfg.conditions))
    self.key = key
    self.threshold = jnp.float32(threshold)
    self.step_size = jnp.float32(nudge.step_size if nudge else 0.0)
    self.static = {"config": scorer.config, "pool_size": pool_size, "accept_size": accept_size,
                   "nudge_steps": nudge.steps if nudge else 0}

  def __call__(self, start: int) -> dict[str, Any]:
    return _filter_generate_and_score(self.models, self.states, self.calibration, self.key, jnp.int32(start),
                                      self.cond, self.threshold, self.step_size,
                                      batch_sharding=self.batch_sharding, **self.static)


def default_round_sizes(scorer, prefilter, pool_size, accept_size) -> tuple[int, int]:
  """Round sizes: accept_size = the scorer's batch; pool_size = accept_size x ceil(2 / acceptance), at most 32x.

  The acceptance rate is the pre-filter's on its validation latents, so a pool usually
  holds twice the accepted latents a round needs: a larger pool costs latent draws
  and classifier passes (measured on CPU: a 32x pool made a round of 32 images 1.6x
  slower at 90% acceptance) without generating more.
  """
  accept_size = accept_size if accept_size is not None else scorer.config.batch_size
  if pool_size is None:
    if prefilter is None:
      pool_size = accept_size
    else:
      acceptance = (prefilter.report.get("validation") or {}).get("acceptance_rate") or 1.0 / 32
      pool_size = accept_size * min(32, max(1, math.ceil(2.0 / max(acceptance, 1.0 / 32))))
  return pool_size, accept_size


def warm_up_sampler(scorer, generator, prefilter: Prefilter | None, key: jax.Array, group: str, *, label: int = 0,
                    pool_size: int | None = None, accept_size: int | None = None,
                    nudge: NudgeConfig | None = None) -> float:
  """Compiles `sample_valid`'s round (one call, result discarded); returns its seconds (compile + one round)."""
  pool_size, accept_size = default_round_sizes(scorer, prefilter, pool_size, accept_size)
  caller = _RoundCaller(scorer, generator, prefilter, key, group, label, pool_size, accept_size, nudge)
  t0 = time.perf_counter()
  jax.block_until_ready(caller(0))
  return time.perf_counter() - t0


def sample_valid(scorer, generator, prefilter: Prefilter | None, key: jax.Array, k: int, group: str, *,
                 label: int = 0, pool_size: int | None = None, accept_size: int | None = None,
                 max_rounds: int = 10_000, max_generated: int | None = None, nudge: NudgeConfig | None = None,
                 progress: bool = False) -> dict[str, Any]:
  """Pre-filtered sampling: exactly `k` post-filter-valid images, rejected latents never generated.

  Each round is ONE compiled call (`_filter_generate_and_score`, same shapes every
  round, so it compiles once per configuration): draw the z of the next `pool_size`
  latent indices (`models.generator.latents(key, i)`, indices from a running
  counter so no z repeats), optionally nudge them (`nudge`), score them with the
  pre-filter's classifier, select the first `accept_size` accepted ones in index
  order with static shapes (`lax.top_k` on position, accepted first; a mask marks
  padding slots when fewer were accepted), generate and post-score only those.
  The counter then moves past the latents considered: the whole pool, or, when
  more than `accept_size` were accepted, up to the last generated one, so no
  accepted latent is skipped. Hence, without nudging, the generated latents are
  exactly the accepted indices in increasing order whatever the pool and accept
  sizes, and the returned images are the first `k` indices that are both accepted
  and valid. The host only collects valid images and stops at `k`.

  `prefilter=None` is the baseline (accept everything, pool_size = accept_size by
  default): plain post-filtering through the same compiled path.

  Args:
    scorer: a `jaxcxr.scoring.Scorer` (post-filter).
    generator: the `Generator` whose latents the pre-filter was fitted on.
    prefilter: a `Prefilter` of `group`, or None.
    key: PRNG key of the latents.
    k: valid images wanted (>= 0).
    group: age-sex group.
    label: 0 normal / 1 abnormal condition.
    pool_size: latents drawn per round (default accept_size x ceil(2 / acceptance) with
      the pre-filter's validation acceptance rate, at most 32x; accept_size without a
      pre-filter): about twice the latents a round needs keeps the slots full.
    accept_size: images generated and scored per round (default the scorer's batch size).
    max_rounds: give up after this many rounds (a pre-filter that accepts nothing).
    max_generated: give up once this many images were generated (default no limit).
    nudge: `NudgeConfig` to climb the pre-filter's logit before filtering, or None.
    progress: one line per round on stderr.

  Returns:
    {"images": uint8 (n_valid, G, G) valid images in index order, "z": float32 (n_valid,
    latent_dim) (nudged ones when nudging), "index" int (n_valid,) latent indices,
    "scores" {name: float32 (n_valid,)} (all > 0), "n_valid" (= k unless a limit was hit),
    "n_latents_drawn" (latents considered), "n_generated" (images generated: used
    slots, padding excluded; = the accepted latents among those drawn), "n_valid_seen"
    (valid among them, including any beyond k), "n_rounds", "seconds" (wall time,
    rounds only), "valid_rate" (n_valid_seen / n_generated), "acceptance_rate"
    (n_generated / n_latents_drawn), "generated_per_valid" (n_generated /
    n_valid_seen), "complete" (n_valid == k), "pool_size", "accept_size", "n_slots" (images
    computed: n_rounds * accept_size, padding slots included; they cost time, not validity)}.

  Raises:
    ValueError: k < 0, bad sizes, a pre-filter of another group or latent size, nudging
      without a trained pre-filter, a label the generator lacks.
    jaxcxr.data.DataError: unknown group.
  """
  if k < 0:
    raise ValueError(f"sample_valid: k must be >= 0, got {k}")
  if max_rounds < 1:
    raise ValueError(f"sample_valid: max_rounds must be >= 1, got {max_rounds}")
  pool_size, accept_size = default_round_sizes(scorer, prefilter, pool_size, accept_size)
  caller = _RoundCaller(scorer, generator, prefilter, key, group, label, pool_size, accept_size, nudge)
  t0 = time.perf_counter()
  kept: list[dict] = []
  n_kept = n_drawn = n_generated = n_valid_seen = rounds = 0
  while n_kept < k and rounds < max_rounds and (max_generated is None or n_generated < max_generated):
    out = jax.device_get(caller(n_drawn))
    rounds += 1
    n_drawn += int(out["consumed"])
    n_generated += int(out["slot_used"].sum())
    valid = np.flatnonzero(out["valid"])
    n_valid_seen += valid.size
    take = valid[: k - n_kept]
    kept.append({"images": out["images"][take], "z": out["z"][take], "index": out["index"][take],
                 "scores": {name: v[take] for name, v in out["scores"].items()}})
    n_kept += take.size
    if progress:
      import sys  # pylint: disable=g-import-not-at-top

      print(f"sample {group}: round {rounds}, {n_kept}/{k} valid, {n_generated} generated of {n_drawn} latents "
            f"drawn", file=sys.stderr, flush=True)
  seconds = time.perf_counter() - t0
  side = generator.config.resolution
  merged = (jax.tree.map(lambda *parts: np.concatenate(parts), *kept) if kept else
            {"images": np.zeros((0, side, side), np.uint8),
             "z": np.zeros((0, generator.config.latent_dim), np.float32), "index": np.zeros((0,), np.int32),
             "scores": {name: np.zeros((0,), np.float32) for name in SCORE_NAMES}})
  return {**merged, "n_valid": int(n_kept), "n_latents_drawn": int(n_drawn), "n_generated": int(n_generated),
          "n_valid_seen": int(n_valid_seen), "n_rounds": rounds,
          "seconds": float(seconds), "valid_rate": n_valid_seen / n_generated if n_generated else 0.0,
          "acceptance_rate": n_generated / n_drawn if n_drawn else 0.0,
          "generated_per_valid": n_generated / n_valid_seen if n_valid_seen else float("inf"),
          "complete": n_kept == k, "pool_size": pool_size, "accept_size": accept_size,
          "n_slots": rounds * accept_size}
