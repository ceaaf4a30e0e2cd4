"""Evaluation of the anomaly methods on labelled radiographs: ROC AUCs with intervals, thresholds, ensembles.

* `evaluate_anomaly`: any method's scorer (`AbstractAnomalyScorer`) on a test set, the
  decision threshold chosen on separate data.
* `auc_with_interval`, `by_view`: ROC AUC with its DeLong interval, overall and per view.
* `rank_average`: the ensemble score of several methods.
* `source_only_baseline`: what the images' source alone gives away on a two-archive task.

This module imports scikit-learn and scipy (through `jaxcxr.metrics`), which `jaxcxr.anomaly`
loads on first use of these names, not on import.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from jaxcxr import data, metrics
from jaxcxr.anomaly.scorer import AbstractAnomalyScorer

__all__ = [
    "auc_with_interval",
    "by_view",
    "evaluate_anomaly",
    "rank_average",
    "source_only_baseline",
]


def evaluate_anomaly(scorer: AbstractAnomalyScorer, test: data.CXRDataset, *,
                     threshold_data: data.CXRDataset | None = None, progress: bool = False) -> dict:
  """ROC AUC and the confusion figures of an anomaly score on labelled radiographs (1 = abnormal).

  The decision threshold (Youden's J) is chosen on `threshold_data` (e.g. the validation
  patients) and applied to `test`; without it, it is chosen on `test` itself (optimistic:
  the report says so). Seconds count the scoring of `test` only, compile included
  (the first batch compiles).

  Returns:
    {"method", "n", "n_normal", "n_abnormal", "roc_auc", "roc_auc_ci95" ([low, high], DeLong; None
    with fewer than 2 images of a class), "average_precision", "threshold", "threshold_from",
    "precision", "recall", "specificity", "f1", "accuracy", "seconds",
    "seconds_per_image", "components" {name: {"roc_auc", "roc_auc_ci95"}} (the score's terms,
    e.g. AnoGAN's residual and discrimination scores), with views in the data "by_view"
    {view: {"n", "n_abnormal", "roc_auc", "roc_auc_ci95"}}, "scores" (N,), "residual" float16
    (N, R, R), "labels" (N,), "component_scores" {name: (N,)}}. With `threshold_data` it also
    holds "threshold_data": that set's {"n", "n_normal", "n_abnormal", "roc_auc", "roc_auc_ci95",
    "components", "by_view"} (so that a setting is chosen on validation figures from the same
    run) and "threshold_scores" {"scores", "labels", "component_scores"}.

  Raises:
    jaxcxr.data.DataError: an image set that is not a `CXRDataset`, or without both labels.
  """
  for what, ds in (("test", test), ("threshold_data", threshold_data)):
    if ds is not None and not isinstance(ds, data.CXRDataset):
      raise data.DataError(f"evaluate_anomaly: {what} must be a jaxcxr.data.CXRDataset (data.load), got "
                           f"{type(ds).__name__}")

  def labelled(ds, what):
    if ds.label is None or not (np.isin(ds.label, [0, 1]).all() and len(np.unique(ds.label)) == 2):
      raise data.DataError(f"{ds.source or what}: anomaly evaluation needs normal (0) and abnormal (1) labels")
    return ds.label.astype(np.int32)

  y = labelled(test, "test images")
  threshold_from = "test (no separate threshold data: optimistic)"
  extra = {}
  if threshold_data is not None:
    y_thr = labelled(threshold_data, "threshold images")
    s_thr, _, c_thr = scorer(threshold_data, progress=progress)
    threshold_from = "threshold data (validation patients)"
    extra = {"threshold_data": _auc_report(s_thr, y_thr, c_thr, data.views(threshold_data)),
             "threshold_scores": {"scores": s_thr, "labels": y_thr, "component_scores": c_thr}}
  start = time.perf_counter()
  scores, residual, components = scorer(test, progress=progress)
  seconds = time.perf_counter() - start
  if threshold_data is None:
    s_thr, y_thr = scores, y
  fpr, tpr, thresholds = metrics.compute_roc_curve(s_thr, y_thr)
  threshold = float(thresholds[int(np.argmax(tpr - fpr))])
  report = metrics.compute_binary_report(scores >= threshold, y)
  return {"method": scorer.name, **_auc_report(scores, y, components, data.views(test)),
          "average_precision": float(average_precision_score(y, scores)),
          "threshold": threshold, "threshold_from": threshold_from,
          **{k: report[k] for k in ("precision", "recall", "specificity", "f1", "accuracy")},
          "seconds": float(seconds), "seconds_per_image": float(seconds / max(len(y), 1)),
          "scores": scores, "residual": residual, "labels": y, "component_scores": components, **extra}


def _auc_report(scores, y, components, views) -> dict:
  """Counts, ROC AUC with its DeLong interval, each component's AUC and, with views, the AUC per view."""
  return {"n": int(len(y)), "n_normal": int((y == 0).sum()), "n_abnormal": int(y.sum()),
          **auc_with_interval(scores, y),
          "components": {name: auc_with_interval(values, y) for name, values in components.items()},
          **({"by_view": by_view(scores, y, views)} if views is not None else {})}


def source_only_baseline(train: data.CXRDataset, test: data.CXRDataset, *, size: int = 32, seed: int = 0) -> dict:
  """How well the images' source alone tells the classes apart: a pixel classifier's test ROC AUC.

  For a task whose two classes come from different archives (COVID-19 images from
  publications against NIH normals), borders, exposure and text separate them with no
  pathology involved. An anomaly score's AUC on such a task reads only next to this figure:
  a logistic regression on the raw pixels at `size` x `size`, trained on `train` with its
  labels (the classes' patients of the training split) and scored on `test`.

  Returns:
    {"method", "size", "n_train", "roc_auc", "roc_auc_ci95"}.

  Raises:
    jaxcxr.data.DataError: a set without both labels.
  """
  for ds, what in ((train, "training"), (test, "test")):
    if ds.label is None or len(np.unique(ds.label)) != 2:
      raise data.DataError(f"source_only_baseline: the {what} images need both labels")
  pixels = lambda ds: data.resize_uint8(ds.images, size).reshape(len(ds), -1).astype(np.float32) / 255.0
  model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000, random_state=seed))
  model.fit(pixels(train), train.label.astype(np.int32))
  prob = model.predict_proba(pixels(test))[:, 1]
  return {"method": f"logistic regression on {size}x{size} pixels", "size": size, "n_train": int(len(train)),
          **auc_with_interval(prob, test.label.astype(np.int32))}


def rank_average(scores) -> np.ndarray:
  """The ensemble score of several methods: each method's scores turned to ranks in [0, 1], averaged.

  Ranks make methods with different score scales (an L1 residual, a mask-weighted
  difference) count equally. Ties share their mean rank.

  Args:
    scores: (M, N) or a sequence of M arrays (N,): M methods' scores of the same N images.

  Returns:
    float64 (N,), higher = more abnormal.

  Raises:
    ValueError: fewer than one method, arrays of different lengths, or non-finite scores.
  """
  arrays = [np.asarray(s) for s in scores]
  if any(a.dtype.kind not in "biuf" for a in arrays):
    raise ValueError(f"rank_average: expected real scores, got dtypes {sorted({str(a.dtype) for a in arrays})}")
  arrays = [a.astype(np.float64) for a in arrays]
  if not arrays or len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
    raise ValueError(f"rank_average: expected M >= 1 score arrays of one length (N,), got shapes "
                     f"{[a.shape for a in arrays]}")
  if not all(np.isfinite(a).all() for a in arrays):
    raise ValueError("rank_average: scores must be finite (a NaN would take an arbitrary rank)")
  n = len(arrays[0])
  return np.mean([(rankdata(a) - 1) / max(n - 1, 1) for a in arrays], axis=0)


def auc_with_interval(scores, y) -> dict:
  """{"roc_auc", "roc_auc_ci95"} of scores (higher = abnormal) against labels; None without both classes."""
  scores, y = np.asarray(scores, np.float64), np.asarray(y)
  if len(np.unique(y)) < 2:
    return {"roc_auc": None, "roc_auc_ci95": None}
  return {"roc_auc": float(metrics.compute_roc_auc(scores, y)), "roc_auc_ci95": metrics.roc_auc_interval(scores, y)}


def by_view(scores, y, views) -> dict:
  """{view: {"n", "n_abnormal", "roc_auc", "roc_auc_ci95"}} of scores within each radiographic view.

  `views` as `data.views` gives them ("AP", "PA").
  """
  views, scores, y = np.asarray(views).astype(str), np.asarray(scores), np.asarray(y)
  if not views.ndim == scores.ndim == y.ndim == 1 or not len(views) == len(scores) == len(y):
    raise ValueError(f"by_view: expected scores, labels and views of one length (N,), got shapes {scores.shape}, "
                     f"{y.shape} and {views.shape}")
  return {v: {"n": int((views == v).sum()), "n_abnormal": int(y[views == v].sum()),
              **auc_with_interval(scores[views == v], y[views == v])} for v in np.unique(views)}
