"""Threshold strategies: turn a latent classifier's scores into an accept/reject rule.

`select_threshold` (the docs/scores.md contract names in `STRATEGIES`) and
`threshold_report` (what a threshold does on labelled data). A sample is accepted when its
score >= threshold; labels are 1 = valid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxcxr import metrics as metrics_lib

__all__ = [
    "MAX_PRECISION_MIN_TPR",
    "STRATEGIES",
    "select_threshold",
    "threshold_report",
]

# Threshold strategies (docs/scores.md contract names).
STRATEGIES: tuple[str, ...] = ("youden", "2tpr-fpr", "tpr-2fpr", "tpr@0.95", "max_precision")
# Smallest TPR (fraction of positives kept) a `max_precision` threshold may have.
MAX_PRECISION_MIN_TPR = 0.1


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
  if scores.dtype.kind not in "biuf":
    raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
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
    reaches 0.95, with the smallest FPR; the smallest such threshold would accept
    everything and filter nothing);
  * "max_precision": argmax precision TP / (TP + FP) over the thresholds keeping
    TP >= max(1, ceil(min_tpr * P)) positives. Without that floor the top score
    alone (one accepted sample, precision 0 or 1) would usually win: a precision
    estimated from a handful of samples is noise, and a filter that keeps almost
    no valid latent narrows the samples. The default floor keeps >= 10% of the
    valid latents (~43 of the ~430 per group of the original 10k-per-group data).

  The three argmax objectives are compared exactly in integer arithmetic (e.g.
  Youden as TP Q - FP P). Ties go to the smallest tied threshold (the largest
  TPR): at an equal objective the filter keeps more valid latents, hence more
  diverse samples (docs/scores.md reports diversity next to the speed-up).

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
    ValueError: bad shapes, non-binary y, non-finite scores or a threshold that is not a finite number.
  """
  y, scores = _check_labels_scores(y, scores, both_classes=False)
  if (not isinstance(threshold, (int, float, np.integer, np.floating)) or isinstance(threshold, bool)
      or not np.isfinite(threshold)):
    raise ValueError(f"threshold must be a finite number, got {threshold!r}")
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


def _check_strategies(strategy: str | Sequence[str]) -> tuple[str, ...]:
  """A strategy name or several (no duplicates) -> a tuple of names of `STRATEGIES`; ValueError otherwise."""
  strategies = (strategy,) if isinstance(strategy, str) else tuple(strategy)
  unknown = [s for s in strategies if s not in STRATEGIES]
  if unknown or not strategies or len(set(strategies)) != len(strategies):
    raise ValueError(f"unknown, missing or repeated threshold strategy in {list(strategies)}; expected some of "
                     f"{', '.join(STRATEGIES)}")
  return strategies
