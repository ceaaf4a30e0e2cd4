"""Trivial baselines a judge must beat: image statistics and pixel logistic regression, with a paired test.

A classifier or an anomaly score that does no better than the brightness of the image
reads exposure, not the lungs. Every evaluation reports, on the same images, the
strongest of these baselines beside its own ROC AUC, with DeLong's paired test and per
radiographic view:

* Image statistics (`image_statistics`): the mean, the standard deviation and the
  percentiles `STATISTIC_PERCENTILES` (5, 25, 50, 75, 95) of the grey levels of
  (a) the whole image, (b) its centre (`centre_box`: the middle half of the rows and of
  the columns, a quarter of the area) and (c) the lungs, when lung masks are given
  (uint8 labels 0/1/2 or bool; any label > 0 is lung). Percentiles are read from the
  histogram as in `jaxcxr.exposure.histogram_quantiles` (continuous, each uint8 level
  spread over [v - 0.5, v + 0.5)).
* "statistic": each statistic alone is a one-number detector. Its sign is fitted on the
  training images (the sign that gives a training ROC AUC >= 0.5), and the statistic with
  the highest training AUC is the baseline: chosen on training images, never on the
  evaluated ones.
* "statistics_logreg": L2 logistic regression on all the statistics, standardised, with a
  fixed C = 1 (14 or 21 features against hundreds of images need little regularisation).
* "pixel_logreg": logistic regression on `pixel_size` x `pixel_size` block means of the
  image (32x32 by default), standardised, with C chosen by 5-fold cross-validated AUC on
  the training images, folds grouped by patient (`fit_pixel_logreg`).

`fit_baselines` fits them on training images; `evaluate_baselines` reports each one's AUC
(and every single statistic's) on other images; `compare_to_baselines` does both and tests
a method's scores against the strongest baseline (`compare_scores`);
`compare_with_training_patients` is the evaluations' call on datasets (views, patients and lung
masks from the data). Everything runs on the
host (numpy, scikit-learn), and every report is plain JSON-serialisable data;
`format_comparison` gives the line a CLI prints.

A lung segmenter's trivial baseline is a mask that learns nothing: `morphological_lung_labels`
(`jaxcxr.imaging.lung_mask_morphological`, split at the image's vertical midline into the
patient's right and left lung), compared by `compare_segmentation` on the same images with a
bootstrap over patients of the per-image Dice difference.

The strongest baseline of a comparison is the one with the highest AUC on the evaluated
images themselves: a maximum over three fitted models, which favours the baseline, so a
method reported above it is above each of them. The single statistic inside the
"statistic" baseline is chosen on the training images only (a maximum over 14 or 21
statistics on the evaluated images would be optimistic).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.stats
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from jaxcxr import data, imaging, metrics
from jaxcxr.data import DataError
from jaxcxr.exposure import histogram_quantiles, masked_histograms

__all__ = [
    "BASELINES",
    "CENTRE_FRACTION",
    "STATISTICS",
    "STATISTIC_PERCENTILES",
    "Baselines",
    "PixelLogreg",
    "centre_box",
    "compare_scores",
    "compare_segmentation",
    "compare_to_baselines",
    "compare_with_training_patients",
    "evaluate_baselines",
    "fit_baselines",
    "fit_pixel_logreg",
    "format_comparison",
    "grouped_logreg",
    "image_statistics",
    "morphological_lung_labels",
    "statistic_names",
]

STATISTIC_PERCENTILES: tuple[int, ...] = (5, 25, 50, 75, 95)
STATISTICS: tuple[str, ...] = ("mean", "std", *(f"p{p}" for p in STATISTIC_PERCENTILES))
# The centre region: the middle CENTRE_FRACTION of the rows and of the columns.
CENTRE_FRACTION = 0.5
# Fewer lung pixels than this in an image means its mask is empty (e.g. a failed prediction).
MIN_LUNG_PIXELS = 64
# Report keys of the baselines and what each one is.
BASELINES: dict[str, str] = {
    "statistic": "the strongest single image statistic (chosen and signed on the training images)",
    "statistics_logreg": "logistic regression on all image statistics (standardised, C = 1)",
    "pixel_logreg": "logistic regression on block-mean pixels (standardised, C by grouped CV)",
}
STATISTICS_LOGREG_C = 1.0


# ----------------------------------------------------------------------------- image statistics


def centre_box(height: int, width: int, fraction: float = CENTRE_FRACTION) -> tuple[slice, slice]:
  """(rows, columns) of the central box: the middle `fraction` of the rows and of the columns."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"centre_box: fraction must be in (0, 1], got {fraction}")
  dh, dw = round(height * (1.0 - fraction) / 2.0), round(width * (1.0 - fraction) / 2.0)
  return slice(dh, height - dh), slice(dw, width - dw)


def statistic_names(lungs: bool) -> list[str]:
  """The names of `image_statistics`' columns, e.g. "mean (image)", "p95 (centre)", "std (lungs)"."""
  regions = ("image", "centre", "lungs") if lungs else ("image", "centre")
  return [f"{s} ({r})" for r in regions for s in STATISTICS]


def _histogram_statistics(counts: np.ndarray) -> np.ndarray:
  """(N, 256) grey-level counts -> float64 (N, len(STATISTICS)) in the order of `STATISTICS`."""
  levels = np.arange(counts.shape[1], dtype=np.float64)
  total = counts.sum(axis=1).astype(np.float64)
  mean = counts @ levels / total
  var = counts @ levels ** 2 / total - mean ** 2
  pct = histogram_quantiles(counts, np.asarray(STATISTIC_PERCENTILES) / 100.0)
  return np.concatenate([mean[:, None], np.sqrt(np.maximum(var, 0.0))[:, None], pct], axis=1)


def _check_images(images: Any, what: str) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  if images.dtype != np.uint8 or images.ndim != 3 or images.shape[0] == 0:
    raise DataError(f"{what}: expected uint8 images of shape (N, H, W) with N > 0, got {images.dtype} "
                    f"{images.shape}")
  return images


def image_statistics(images: Any, masks: Any | None = None) -> np.ndarray:
  """Mean, standard deviation and percentiles of the whole image, its centre and (with masks) its lungs.

  Args:
    images: uint8 (N, H, W), radiographic display.
    masks: lung masks (N, H, W), uint8 labels 0/1/2 or bool, or None.

  Returns:
    float64 (N, F), F = 14 without masks and 21 with; columns named by `statistic_names`.

  Raises:
    jaxcxr.data.DataError: images not uint8 (N, H, W), masks of another shape, or a mask with
      fewer than `MIN_LUNG_PIXELS` lung pixels.

  Examples:
    >>> images = np.full((2, 8, 8), 10, np.uint8)
    >>> images[1] = 200
    >>> image_statistics(images)[:, 0]
    array([ 10., 200.])
  """
  images = _check_images(images, "image_statistics: images")
  rows, cols = centre_box(*images.shape[1:])
  parts = [_histogram_statistics(masked_histograms(images)),
           _histogram_statistics(masked_histograms(np.ascontiguousarray(images[:, rows, cols])))]
  if masks is not None:
    masks = np.asarray(masks)
    if masks.ndim == 4 and masks.shape[-1] == 1:
      masks = masks[..., 0]
    if masks.shape != images.shape:
      raise DataError(f"image_statistics: masks of shape {masks.shape}; expected {images.shape}")
    if masks.dtype != bool and not np.issubdtype(masks.dtype, np.integer):
      raise DataError(f"image_statistics: masks of dtype {masks.dtype}; expected bool or integer labels")
    counts = masked_histograms(images, masks > 0)
    empty = np.flatnonzero(counts.sum(axis=1) < MIN_LUNG_PIXELS)
    if empty.size:
      raise DataError(f"image_statistics: {empty.size} lung mask(s) (e.g. index {empty[:5].tolist()}) have fewer "
                      f"than {MIN_LUNG_PIXELS} lung pixels; check the masks or leave them out")
    parts.append(_histogram_statistics(counts))
  return np.concatenate(parts, axis=1)


# ----------------------------------------------------------------------------- pixel logistic regression


def _pixel_features(images: np.ndarray, size: int = 32) -> np.ndarray:
  """uint8 (N, H, W) -> float32 (N, size*size): area averages over size x size blocks, in [0, 1]."""
  images = np.asarray(images)
  n, h, w = images.shape
  if h % size == 0 and w % size == 0:
    pooled = images.reshape(n, size, h // size, size, w // size).mean(axis=(2, 4), dtype=np.float64)
  else:
    pooled = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BOX), np.float64) for im in images])
  return (pooled / 255.0).reshape(n, -1).astype(np.float32)


class PixelLogreg:
  """A fitted pixel logistic regression (`fit_pixel_logreg`): `predict_proba(images)` -> (N,) p(class 1)."""

  def __init__(self, search, size: int):
    self._search = search
    self.size = size
    self.C = float(search.best_params_["logisticregression__C"])

  def predict_proba(self, images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) radiographs -> float (N,) probabilities of class 1."""
    return self._search.predict_proba(_pixel_features(images, self.size))[:, 1]


def fit_pixel_logreg(train_ds: data.CXRDataset, y: np.ndarray, size: int = 32) -> PixelLogreg:
  """Logistic regression on size x size pixel block means, L2 strength C by grouped 5-fold CV.

  Features: block means of the image (size * size values), standardised.
  L2-penalised logistic regression (liblinear, fast when features outnumber
  images; it penalises the intercept too, harmless on standardised features). The
  L2 strength C is chosen from 1e-4..10 by 5-fold cross-validated AUC on the
  training images, folds grouped by patient and stratified (scikit-learn
  `StratifiedGroupKFold`).

  Args:
    train_ds: training images with patient ids.
    y: (N,) binary targets of `train_ds`.
    size: side of the pooled image.

  Raises:
    jaxcxr.data.DataError: fewer than 2 images of a class.
  """
  return PixelLogreg(grouped_logreg(_pixel_features(train_ds.images, size), y, train_ds.patient_id,
                                    "the pixel baseline"), size)


def grouped_logreg(x: np.ndarray, y: Any, groups: np.ndarray, what: str):
  """Standardise + L2 logistic regression (liblinear), C from 1e-4..10 by grouped stratified 5-fold CV AUC.

  Returns the fitted `GridSearchCV` (its best pipeline refitted on all of x).
  """
  y = np.asarray(y)
  folds = int(min(5, np.bincount(y, minlength=2).min()))
  if folds < 2:
    raise DataError(f"{what} needs at least 2 training images of each class")
  search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(solver="liblinear", max_iter=1000)),
                        {"logisticregression__C": np.logspace(-4, 1, 11)},
                        cv=StratifiedGroupKFold(folds), scoring="roc_auc")
  return search.fit(x, y, groups=groups)


# ----------------------------------------------------------------------------- fitting


def _check_labels(labels: Any, n: int | None, what: str) -> np.ndarray:
  """int64 (N,) 0/1 labels with at least 2 of each class; ValueError otherwise."""
  y = np.asarray(labels)
  if y.ndim != 1:
    raise ValueError(f"{what}: expected labels of shape (N,), got {y.shape}")
  if n is not None and y.shape[0] != n:
    raise ValueError(f"{what}: {y.shape[0]} labels for {n} images/scores; expected one label each")
  if y.dtype.kind not in "biu" or not np.isin(y, (0, 1)).all():
    raise ValueError(f"{what}: labels must be 0 (negative) or 1 (positive), got values {np.unique(y)[:5].tolist()}")
  counts = np.bincount(y.astype(np.int64), minlength=2)
  if counts.min() < 2:
    raise ValueError(f"{what}: {counts[0]} negative and {counts[1]} positive label(s); a ROC AUC and its DeLong "
                     "interval need at least 2 of each class")
  return y.astype(np.int64)


def _check_scores(scores: Any, n: int, what: str) -> np.ndarray:
  s = np.asarray(scores)
  if s.ndim != 1 or s.shape[0] != n:
    raise ValueError(f"{what}: expected scores of shape ({n},) (one per image), got {s.shape}")
  if s.dtype.kind not in "biuf":
    raise ValueError(f"{what}: expected real scores, got dtype {s.dtype}")
  s = s.astype(np.float64)
  bad = np.flatnonzero(~np.isfinite(s))
  if bad.size:
    raise ValueError(f"{what}: {bad.size} score(s) are NaN or infinite (e.g. index {bad[:5].tolist()})")
  return s


@dataclasses.dataclass
class Baselines:
  """The trivial baselines, fitted on training images (`fit_baselines`).

  Attributes:
    names: the image statistics' names (`statistic_names`).
    signs: +1 or -1 per statistic: the sign with training AUC >= 0.5.
    train_roc_auc: each signed statistic's training ROC AUC (>= 0.5).
    best: index of the statistic with the highest training AUC (the "statistic" baseline).
    lungs: whether the statistics include the lungs (masks needed to score).
    statistics_logreg: the fitted scikit-learn pipeline on all statistics.
    pixel_logreg: the fitted `PixelLogreg`, or None.
    n_train, n_train_positive: the training images.
  """

  names: list[str]
  signs: np.ndarray
  train_roc_auc: np.ndarray
  best: int
  lungs: bool
  statistics_logreg: Any
  pixel_logreg: Any
  n_train: int
  n_train_positive: int

  @property
  def statistic(self) -> str:
    """The chosen statistic as read: e.g. "mean (centre)" or "-std (image)" (lower values positive)."""
    return ("" if self.signs[self.best] > 0 else "-") + self.names[self.best]

  def statistic_scores(self, images: Any, masks: Any | None = None) -> np.ndarray:
    """Every signed statistic of `images`: float64 (N, F), higher = more positive."""
    return self._features(images, masks) * self.signs[None, :]

  def _features(self, images: Any, masks: Any | None) -> np.ndarray:
    if self.lungs and masks is None:
      raise DataError("these baselines were fitted with lung statistics; pass the images' lung masks")
    if not self.lungs and masks is not None:
      raise DataError("these baselines were fitted without lung masks; pass masks to fit_baselines too, or none here")
    return image_statistics(images, masks)

  def scores(self, images: Any, masks: Any | None = None) -> dict[str, np.ndarray]:
    """Each baseline's scores of `images` (float64 (N,), higher = more positive), keyed as `BASELINES`."""
    features = self._features(images, masks)
    out = {"statistic": features[:, self.best] * self.signs[self.best],
           "statistics_logreg": self.statistics_logreg.predict_proba(features)[:, 1]}
    if self.pixel_logreg is not None:
      out["pixel_logreg"] = self.pixel_logreg.predict_proba(_check_images(images, "images"))
    return out

  def descriptions(self) -> dict[str, str]:
    """Each baseline's short name for reports, keyed as `scores`: "-p25 (image)", "statistics logreg",
    "pixel logreg 32x32"."""
    out = {"statistic": self.statistic, "statistics_logreg": "statistics logreg"}
    if self.pixel_logreg is not None:
      out["pixel_logreg"] = f"pixel logreg {self.pixel_logreg.size}x{self.pixel_logreg.size}"
    return out

  def describe(self) -> dict[str, Any]:
    """What was fitted, as JSON-serialisable data (for a report or a model card)."""
    order = np.argsort(-self.train_roc_auc, kind="stable")
    out = {"n_train": self.n_train, "n_train_positive": self.n_train_positive, "statistic": self.statistic,
           "statistic_train_roc_auc": float(self.train_roc_auc[self.best]),
           "statistics_train_roc_auc": {self.names[i]: float(self.train_roc_auc[i]) for i in order},
           "signs": {n: int(s) for n, s in zip(self.names, self.signs)},
           "centre": f"the middle {CENTRE_FRACTION:g} of the rows and of the columns",
           "statistics_logreg_C": STATISTICS_LOGREG_C}
    if self.pixel_logreg is not None:
      out.update(pixel_size=int(self.pixel_logreg.size), pixel_logreg_C=float(self.pixel_logreg.C))
    return out


def fit_baselines(images: Any, labels: Any, *, masks: Any | None = None, patients: Any | None = None,
                  pixel_size: int | None = 32) -> Baselines:
  """Fits the trivial baselines on training images and labels (1 = positive: abnormal, female, ...).

  Args:
    images: uint8 (N, H, W) training images.
    labels: (N,) 0/1 training labels, at least 2 of each class.
    masks: lung masks (N, H, W) of the training images, for the lung statistics (then needed to score).
    patients: (N,) patient ids, to group the pixel baseline's cross-validation folds by patient;
      without them each image counts as its own patient.
    pixel_size: side of the pixel baseline's block-mean image; None for no pixel baseline.

  Returns:
    A `Baselines`.

  Raises:
    jaxcxr.data.DataError: bad images or masks, or a class with too few images for the pixel CV.
    ValueError: labels of another length, not 0/1, or with fewer than 2 of a class.
  """
  images = _check_images(images, "fit_baselines: images")
  y = _check_labels(labels, images.shape[0], "fit_baselines")
  features = image_statistics(images, masks)
  names = statistic_names(masks is not None)
  auc = np.array([metrics.compute_roc_auc(f, y) for f in features.T])
  signs = np.where(auc >= 0.5, 1, -1)
  signed_auc = np.where(signs > 0, auc, 1.0 - auc)
  logreg = make_pipeline(StandardScaler(), LogisticRegression(C=STATISTICS_LOGREG_C, max_iter=5000))
  logreg.fit(features, y)
  pixel = None
  if pixel_size is not None:
    pixel = _fit_pixel(images, y, patients, pixel_size)
  return Baselines(names=names, signs=signs, train_roc_auc=signed_auc, best=int(np.argmax(signed_auc)),
                   lungs=masks is not None, statistics_logreg=logreg, pixel_logreg=pixel,
                   n_train=int(y.size), n_train_positive=int(y.sum()))


def _fit_pixel(images: np.ndarray, y: np.ndarray, patients: Any | None, size: int):
  """`fit_pixel_logreg` on bare arrays (the dataset it takes carries the patient ids)."""
  if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
    raise DataError(f"pixel_size must be a positive integer or None, got {size!r}")
  n = images.shape[0]
  pid = np.asarray([f"image{i}" for i in range(n)]) if patients is None else np.asarray(patients).astype(str)
  if pid.shape != (n,):
    raise ValueError(f"fit_baselines: patients of shape {pid.shape}; expected ({n},)")
  train = data.CXRDataset(images=images, label=y.astype(np.int8), sex=np.full(n, "U"), age=np.full(n, -1, np.int16),
                          patient_id=pid)
  return fit_pixel_logreg(train, y, size=int(size))


# ----------------------------------------------------------------------------- reports


def _auc_entry(scores: np.ndarray, y: np.ndarray, level: float) -> dict[str, Any]:
  ci = metrics.compute_roc_auc_ci(scores, y, level=level)
  return {"roc_auc": ci["roc_auc"], "roc_auc_ci95": [ci["low"], ci["high"]]}


def _enough(y: np.ndarray) -> bool:
  return min(int(y.sum()), int(y.size - y.sum())) >= 2


def _views(views: Any | None, n: int) -> np.ndarray | None:
  if views is None:
    return None
  v = np.asarray(views).astype(str)
  if v.shape != (n,):
    raise ValueError(f"views of shape {v.shape}; expected ({n},) (one per image, e.g. data.views(dataset))")
  return v


def evaluate_baselines(baselines: Baselines, images: Any, labels: Any, *, views: Any | None = None,
                       masks: Any | None = None, level: float = 0.95) -> dict[str, Any]:
  """Each fitted baseline's ROC AUC (DeLong interval) on other images, every single statistic's, and per view.

  Args:
    baselines: from `fit_baselines` (on other patients).
    images: uint8 (N, H, W).
    labels: (N,) 0/1, at least 2 of each class.
    views: (N,) radiographic views (e.g. `jaxcxr.data.views(dataset)`), or None.
    masks: lung masks, exactly when the baselines were fitted with them.
    level: confidence level of the intervals.

  Returns:
    {"n", "n_positive", "baselines" {name: {"roc_auc", "roc_auc_ci95", "description"}},
    "statistics" {name: {"roc_auc", "sign"}} (every signed statistic, in the order of the
    training AUC), "fitted" (`Baselines.describe`), and with views "by_view" {view: {"n",
    "n_positive", "baselines", "statistics"}} (AUCs None in a view with fewer than 2 images of a class).

  Raises:
    ValueError, jaxcxr.data.DataError: as `compare_to_baselines`.
  """
  return _evaluate(baselines, images, labels, views, masks, level)[0]


def _evaluate(baselines: Baselines, images: Any, labels: Any, views: Any | None, masks: Any | None,
              level: float) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """(`evaluate_baselines`' report, each baseline's scores of `images`)."""
  images = _check_images(images, "evaluate_baselines: images")
  y = _check_labels(labels, images.shape[0], "evaluate_baselines")
  v = _views(views, y.size)
  base = baselines.scores(images, masks)
  stats = baselines.statistic_scores(images, masks)
  order = np.argsort(-baselines.train_roc_auc, kind="stable")

  def report(keep: np.ndarray) -> dict[str, Any]:
    yk = y[keep]
    ok = _enough(yk)
    out = {"n": int(keep.sum()), "n_positive": int(yk.sum()), "baselines": {}, "statistics": {}}
    for name, s in base.items():
      entry = _auc_entry(s[keep], yk, level) if ok else {"roc_auc": None, "roc_auc_ci95": None}
      out["baselines"][name] = {**entry, "description": baselines.descriptions()[name]}
    for i in order:
      out["statistics"][baselines.names[i]] = {
          "roc_auc": metrics.compute_roc_auc(stats[keep, i], yk) if ok else None, "sign": int(baselines.signs[i])}
    return out

  result = report(np.ones(y.size, bool))
  result["fitted"] = baselines.describe()
  if v is not None:
    result["by_view"] = {view: report(v == view) for view in np.unique(v)}
  return result, base


def compare_scores(scores: Any, labels: Any, baseline_scores: Mapping[str, Any], *, views: Any | None = None,
                   descriptions: Mapping[str, str] | None = None, method: str = "method",
                   level: float = 0.95) -> dict[str, Any]:
  """A method's ROC AUC against baselines' on the same images: the strongest, with DeLong's paired test.

  Args:
    scores: (N,) the method's scores, higher = more positive.
    labels: (N,) 0/1, at least 2 of each class.
    baseline_scores: {name: (N,) scores} of the baselines on the same images.
    views: (N,) radiographic views, or None.
    descriptions: {name: text} shown for the baselines (default: the names).
    method: the method's name in the report.
    level: confidence level of the intervals.

  Returns:
    {"method" {"name", "roc_auc", "roc_auc_ci95"}, "n", "n_positive", "baselines" {name: {"roc_auc",
    "roc_auc_ci95", "description"}}, "strongest" (the name of the baseline with the highest AUC on
    these images), "paired_delong" {"baseline", "difference" (method - strongest), "difference_ci95",
    "se", "p_value" (two-sided)}} and, with views, "by_view" {view: the same for that view's images,
    the strongest chosen within the view; "method"'s AUC, "strongest" and "paired_delong" None in a
    view with fewer than 2 images of a class}.

  Raises:
    ValueError: scores or labels of another length, non-finite scores, labels not 0/1 or with fewer
      than 2 images of a class, no baselines, or a level outside (0, 1).
  """
  if not 0.0 < level < 1.0:
    raise ValueError(f"level must be in (0, 1), got {level}")
  y = _check_labels(labels, None, "compare_scores")
  s = _check_scores(scores, y.size, f"{method} scores")
  if not baseline_scores:
    raise ValueError("compare_scores: no baseline scores given")
  base = {name: _check_scores(b, y.size, f"baseline {name!r} scores") for name, b in baseline_scores.items()}
  descriptions = dict(descriptions or {})
  v = _views(views, y.size)
  z = float(scipy.stats.norm.ppf(0.5 + level / 2.0))

  def report(keep: np.ndarray) -> dict[str, Any]:
    yk = y[keep]
    out: dict[str, Any] = {"method": {"name": method}, "n": int(keep.sum()), "n_positive": int(yk.sum())}
    if not _enough(yk):
      out["method"].update(roc_auc=None, roc_auc_ci95=None)
      out.update(baselines={n: {"roc_auc": None, "roc_auc_ci95": None, "description": descriptions.get(n, n)}
                            for n in base}, strongest=None, paired_delong=None)
      return out
    out["method"].update(_auc_entry(s[keep], yk, level))
    out["baselines"] = {n: {**_auc_entry(b[keep], yk, level), "description": descriptions.get(n, n)}
                        for n, b in base.items()}
    strongest = max(out["baselines"], key=lambda n: out["baselines"][n]["roc_auc"])
    test = metrics.compare_roc_auc(s[keep], base[strongest][keep], yk)
    diff, se = test["difference"], test["se"]
    out["strongest"] = strongest
    out["paired_delong"] = {"baseline": strongest, "difference": diff,
                            "difference_ci95": [max(-1.0, diff - z * se), min(1.0, diff + z * se)],
                            "se": se, "p_value": test["p_value"]}
    return out

  result = report(np.ones(y.size, bool))
  if v is not None:
    result["by_view"] = {view: report(v == view) for view in np.unique(v)}
  return result


def compare_to_baselines(scores: Any, labels: Any, images: Any, train_images: Any, train_labels: Any,
                         views: Any | None = None, masks: Any | None = None, *, train_masks: Any | None = None,
                         train_patients: Any | None = None, pixel_size: int | None = 32, method: str = "method",
                         level: float = 0.95) -> dict[str, Any]:
  """A method's ROC AUC against the trivial baselines fitted on training images, on the same evaluated images.

  Args:
    scores: (N,) the method's scores of `images`, higher = more positive (abnormal, female, ...).
    labels: (N,) 0/1 labels of `images`, at least 2 of each class.
    images: uint8 (N, H, W): the evaluated images (e.g. validation or test patients).
    train_images: uint8 (M, H, W) images of other patients, to fit the baselines on.
    train_labels: (M,) 0/1 labels of `train_images`, at least 2 of each class.
    views: (N,) views of `images` (`jaxcxr.data.views`), for the report per view.
    masks: lung masks of `images` (uint8 labels or bool), for the lung statistics; needs `train_masks`.
    train_masks: lung masks of `train_images`; needs `masks`.
    train_patients: (M,) patient ids of `train_images`, to group the pixel baseline's CV folds.
    pixel_size: side of the pixel baseline's block-mean image; None for no pixel baseline.
    method: the method's name in the report.
    level: confidence level of the intervals.

  Returns:
    `compare_scores`' report plus "statistics" (every single statistic's AUC on `images`, in the
    order of its training AUC, with its sign), "fitted" (`Baselines.describe`), and per view each
    view's "statistics".

  Raises:
    ValueError: as `compare_scores`, or training labels of another length, not 0/1 or one class.
    jaxcxr.data.DataError: images not uint8 (N, H, W), masks given for one set only or of another shape.

  Examples:
    >>> rng = np.random.default_rng(0)
    >>> def images(y):  # positives are brighter
    ...   return (60 + 40 * y[:, None, None] + rng.integers(0, 30, (len(y), 16, 16))).astype(np.uint8)
    >>> y_train, y = np.repeat([0, 1], 20), np.repeat([0, 1], 10)
    >>> x = images(y)
    >>> report = compare_to_baselines(rng.random(20), y, x, images(y_train), y_train, pixel_size=None)
    >>> report["baselines"]["statistic"]["roc_auc"], report["paired_delong"]["difference"] < 0
    (1.0, True)
  """
  if (masks is None) != (train_masks is None):
    raise DataError("compare_to_baselines: lung masks are needed for both the evaluated and the training images "
                    "(or for neither)")
  images = _check_images(images, "compare_to_baselines: images")
  y = _check_labels(labels, images.shape[0], "compare_to_baselines: labels")
  _check_scores(scores, y.size, f"{method} scores")
  baselines = fit_baselines(train_images, train_labels, masks=train_masks, patients=train_patients,
                            pixel_size=pixel_size)
  evaluated, base = _evaluate(baselines, images, y, views, masks, level)
  result = compare_scores(scores, y, base, views=views, method=method, level=level,
                          descriptions=baselines.descriptions())
  result["statistics"] = evaluated["statistics"]
  result["fitted"] = evaluated["fitted"]
  for view, entry in result.get("by_view", {}).items():
    entry["statistics"] = evaluated["by_view"][view]["statistics"]
  return result


def compare_with_training_patients(scores: Any, labels: Any, evaluated: Any, train: Any, train_labels: Any, *,
                                   lung_masks: Callable[[np.ndarray], np.ndarray] | None = None,
                                   method: str = "method", pixel_size: int | None = 32,
                                   level: float = 0.95) -> dict[str, Any]:
  """`compare_to_baselines` on datasets: the evaluations' one call (views, patients and masks from the data).

  Args:
    scores: (N,) the method's scores of `evaluated`' images, higher = more positive.
    labels: (N,) 0/1 labels of `evaluated`' images.
    evaluated: the evaluated `jaxcxr.data.CXRDataset` (validation or test patients).
    train: a `CXRDataset` of other patients (the method's training patients), to fit the baselines on;
      its patient ids group the pixel baseline's cross-validation folds.
    train_labels: (M,) 0/1 labels of `train`' images.
    lung_masks: a function from uint8 (N, H, W) images to lung label maps (e.g. a U-Net's
      `predict_masks`), for the lung statistics; None for whole-image and centre statistics only.
    method, pixel_size, level: as `compare_to_baselines`.

  Returns:
    `compare_to_baselines`' report, per view by `jaxcxr.data.views(evaluated)` when the data has views,
    plus "lung_statistics" (whether the statistics include the lungs).

  Raises:
    ValueError, jaxcxr.data.DataError: as `compare_to_baselines`, or training patients that are also evaluated.
  """
  overlap = set(np.asarray(evaluated.patient_id).astype(str)) & set(np.asarray(train.patient_id).astype(str))
  if overlap:
    raise DataError(f"compare_with_training_patients: {len(overlap)} patient(s) are both evaluated and used to fit "
                    f"the baselines (e.g. {sorted(overlap)[:3]}); fit them on other patients")
  images, train_images = _check_images(evaluated.images, "evaluated images"), _check_images(train.images, "train")
  masks = train_masks = None
  if lung_masks is not None:
    masks, train_masks = np.asarray(lung_masks(images)), np.asarray(lung_masks(train_images))
  result = compare_to_baselines(scores, labels, images, train_images, train_labels, views=data.views(evaluated),
                                masks=masks, train_masks=train_masks, train_patients=train.patient_id,
                                pixel_size=pixel_size, method=method, level=level)
  result["lung_statistics"] = lung_masks is not None
  return result


# ----------------------------------------------------------------------------- text


def _number(x: float | None, digits: int = 3) -> str:
  return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _interval(ci: Sequence[float] | None) -> str:
  return "" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def _line(report: Mapping[str, Any]) -> str:
  m = report["method"]
  if report.get("paired_delong") is None:
    return f"AUC n/a (n = {report['n']}, {report['n_positive']} positive: too few of a class)"
  test, b = report["paired_delong"], report["baselines"][report["strongest"]]
  p = test["p_value"]
  return (f"AUC {_number(m['roc_auc'])}{_interval(m['roc_auc_ci95'])} vs {b['description']} "
          f"{_number(b['roc_auc'])}{_interval(b['roc_auc_ci95'])}: {test['difference']:+.3f}"
          f"{_interval(test['difference_ci95'])}, p = {p:.2g}")


def format_comparison(report: Mapping[str, Any], *, by_view: bool = False) -> str:
  """The comparison as text: one line, or with `by_view` that line and one indented line per view.

  Example: "AUC 0.789 [0.73, 0.85] vs mean (centre) 0.746 [0.68, 0.81]: +0.043 [-0.02, 0.11], p = 0.21"
  (the strongest baseline's short name; "-std (image)" reads: a lower standard deviation is positive).
  """
  text = _line(report)
  if by_view:
    for view, entry in (report.get("by_view") or {}).items():
      text += f"\n  {view} (n = {entry['n']}): {_line(entry)}"
  return text


# ----------------------------------------------------------------------------- segmentation


SEGMENTATION_BASELINE = ("morphological lung mask (imaging.lung_mask_morphological), split at the vertical "
                         "midline into right (image left, 1) and left (2) lung")


def morphological_lung_labels(images: Any) -> np.ndarray:
  """The trivial lung segmentation: uint8 (N, H, W) labels, 1 = lung in the image's left half, 2 = in its right half."""
  lungs = imaging.lung_mask_morphological(images)
  left = np.arange(lungs.shape[2])[None, None, :] < lungs.shape[2] // 2
  return np.where(lungs, np.where(left, 1, 2), 0).astype(np.uint8)


def compare_segmentation(dice_per_image: Any, images: Any, masks: Any, patients: Any, *,
                         level: float = 0.95) -> dict[str, Any]:
  """A segmenter's per-image Dice against the morphological baseline's on the same images.

  Args:
    dice_per_image: float (N, 2): the segmenter's Dice per image, right and left lung (as
      `train.segmentation.segmentation_scores(per_image=True)` gives).
    images: the (N, H, W) radiographs it segmented.
    masks: their target label maps (N, H, W), 0 background, 1 right lung, 2 left lung.
    patients: (N,) patient ids, the bootstrap's clusters.
    level: the intervals' confidence level.

  Returns:
    {"baseline" (what it is), "dice_mean", "dice_mean_ci95" (the baseline's, bootstrap over
    patients), "difference" (the segmenter's mean Dice minus the baseline's), "difference_ci95"
    (bootstrap over patients of the per-image differences)}.

  Raises:
    ValueError: inputs of different lengths or shapes.
  """
  dice = np.asarray(dice_per_image, np.float64)
  masks = np.asarray(masks)
  if dice.ndim != 2 or dice.shape[0] != masks.shape[0] or masks.shape[0] != len(np.asarray(patients)):
    raise ValueError(f"compare_segmentation: {dice.shape[0]} Dice rows, {masks.shape[0]} masks and "
                     f"{len(np.asarray(patients))} patient ids; expected one of each per image")
  labels = morphological_lung_labels(images)
  if labels.shape != masks.shape:
    raise ValueError(f"compare_segmentation: images {labels.shape} and masks {masks.shape} differ in shape")
  base = np.asarray(metrics.compute_dice(labels, masks, num_classes=3), np.float64)[:, :dice.shape[1]]
  per_image, base_per_image = dice.mean(axis=1), base.mean(axis=1)
  return {"baseline": SEGMENTATION_BASELINE, "dice_mean": float(base_per_image.mean()),
          "dice_mean_ci95": metrics.cluster_bootstrap_ci(base_per_image, patients, level=level),
          "difference": float(per_image.mean() - base_per_image.mean()),
          "difference_ci95": metrics.cluster_bootstrap_ci(per_image - base_per_image, patients, level=level)}
