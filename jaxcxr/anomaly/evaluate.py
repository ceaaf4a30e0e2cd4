"""Evaluation of the anomaly methods on labelled radiographs: ROC AUCs with intervals, thresholds, ensembles.

* `evaluate_anomaly`: any method's scorer (`AbstractAnomalyScorer`) on a test set, the
  decision threshold chosen on separate data.
* `auc_with_interval`, `by_view`: ROC AUC with its DeLong interval, overall and per view.
* `rank_average`: the ensemble score of several methods.
* `save_score_file`, `read_score_file`, `ensemble_score_files`: an evaluation's per-image scores
  on disk (`jaxcxr evaluate anomaly --scores FILE`), and the rank-average ensemble of such files
  of the same images (`jaxcxr evaluate anomaly-ensemble`).
* `source_only_baseline`: what the images' source alone gives away on a two-archive task.

This module imports scikit-learn and scipy (through `jaxcxr.metrics`), which `jaxcxr.anomaly`
loads on first use of these names, not on import.
"""

from __future__ import annotations

import os
import pathlib
import time
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from jaxcxr import data, io, metrics
from jaxcxr.anomaly.scorer import AbstractAnomalyScorer

__all__ = [
    "auc_with_interval",
    "by_view",
    "ensemble_score_files",
    "evaluate_anomaly",
    "rank_average",
    "read_score_file",
    "save_score_file",
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


# ----------------------------------------------------------------------------- score files


def save_score_file(path: str | os.PathLike, evaluation: Mapping[str, Any], test: data.CXRDataset,
                    threshold_data: data.CXRDataset | None = None) -> pathlib.Path:
  """Writes the per-image scores of an `evaluate_anomaly` result as an npz archive (atomically).

  The archive holds "scores", "labels", "patient_id", "residual" (float16, for figures without
  a new search), "component_<name>" per component, "view" when the data have views, and with
  threshold data "threshold_scores", "threshold_labels", "threshold_patient_id" and
  "threshold_component_<name>": what `ensemble_score_files` reads.

  Args:
    path: the npz file to write.
    evaluation: the result of `evaluate_anomaly(scorer, test, threshold_data=...)`.
    test, threshold_data: the image sets it scored.

  Returns:
    The path written.
  """
  arrays = {"scores": evaluation["scores"], "labels": evaluation["labels"], "patient_id": test.patient_id.astype(str),
            "residual": np.asarray(evaluation["residual"], np.float16),
            **{f"component_{k}": v for k, v in evaluation["component_scores"].items()}}
  views = data.views(test)
  if views is not None:
    arrays["view"] = views
  threshold_scores = evaluation.get("threshold_scores")
  if threshold_scores is not None:
    arrays.update({"threshold_scores": threshold_scores["scores"], "threshold_labels": threshold_scores["labels"],
                   "threshold_patient_id": threshold_data.patient_id.astype(str),
                   **{f"threshold_component_{k}": v for k, v in threshold_scores["component_scores"].items()}})
  return io.save_npz(path, arrays)


def read_score_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The arrays of a score file (`save_score_file`, `jaxcxr evaluate anomaly --scores FILE`).

  Raises:
    jaxcxr.data.DataError: an unreadable file, not an npz archive, or one without `scores` and `labels`.
  """
  try:
    with open(path, "rb") as file:      # ours to close: np.load leaks its own handle on a corrupt zip
      f = np.load(file, allow_pickle=False)
      if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError("a single array, not an npz archive")
      with f:
        arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise data.DataError(f"{path}: not a readable score file ({e}); write it with `evaluate anomaly --scores FILE`"
                         ) from None
  if "scores" not in arrays or "labels" not in arrays:
    raise data.DataError(f"{path}: no `scores`/`labels` arrays; write it with `evaluate anomaly --scores FILE`")
  return arrays


def ensemble_score_files(paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
  """The rank-average ensemble (`rank_average`) of score files of the same images, beside each member's figure.

  Each part the files hold (the test images and, when every file has them, the threshold data)
  gets the ensemble's ROC AUC with its DeLong interval and each member's.

  Args:
    paths: two or more score files (`read_score_file`) of the same split of the same data.

  Returns:
    {"files": [path, ...], "test": {"n", "n_abnormal", "roc_auc", "roc_auc_ci95", "members":
    {path: {"roc_auc", "roc_auc_ci95"}}}, and "threshold_data" alike when every file has it}.

  Raises:
    ValueError: fewer than two files.
    jaxcxr.data.DataError: an unreadable file, or files whose images differ (labels, patients or counts).
  """
  if len(paths) < 2:
    raise ValueError("give at least two score files (from `evaluate anomaly --scores FILE`)")
  names = [str(p) for p in paths]
  loaded = [read_score_file(p) for p in paths]
  result: dict[str, Any] = {"files": names}
  for part, prefix in (("test", ""), ("threshold_data", "threshold_")):
    if not all(f"{prefix}scores" in f for f in loaded):
      continue
    first = loaded[0]
    for name, f in zip(names[1:], loaded[1:]):
      same = all(np.array_equal(f[f"{prefix}{k}"], first[f"{prefix}{k}"]) for k in ("labels", "patient_id")
                 if f"{prefix}{k}" in f and f"{prefix}{k}" in first)
      if not same or len(f[f"{prefix}scores"]) != len(first[f"{prefix}scores"]):
        raise data.DataError(f"{name}: its images differ from {names[0]}'s (labels or patients); score the same "
                             "split of the same data")
    y = first[f"{prefix}labels"]
    ensemble = rank_average([f[f"{prefix}scores"] for f in loaded])
    result[part] = {"n": int(len(y)), "n_abnormal": int(y.sum()), **auc_with_interval(ensemble, y),
                    "members": {name: auc_with_interval(f[f"{prefix}scores"], y) for name, f in zip(names, loaded)}}
  return result
