"""Two-sample realism tests of generated radiographs against real ones (numpy, scikit-image, scikit-learn).

Each figure compares generated images with a real set A, next to the same figure
for a second, patient-disjoint real set B against A (the real-vs-real reference:
what sampling noise alone gives at this sample size):

* Classifier two-sample tests (Lopez-Paz & Oquab 2017): a linear classifier tries
  to tell the two sets apart in a fixed feature space; its cross-validated ROC AUC
  is 0.5 for indistinguishable sets and 1 for separable ones. Three feature
  spaces: pixels (64x64), HOG (128x128; edges and shapes), and "detail"
  histograms of gradient magnitude and high-pass residual (128x128; sharpness,
  noise and texture, where GAN artefacts live).
* A Fréchet distance in a PCA space of real training normals (32 whitened
  components of 64x64 pixels): a fixed feature space that belongs to no GAN.
* The share of spectral power above half the Nyquist frequency: a checkerboard
  artefact pushes the generated/real ratio above 1, blur pushes it below 1.

Diversity and coverage, in the same whitened PCA space (`diversity_report`):

* Mean pairwise distance of generated images against that of real images (per
  age-sex group and overall): a generator that collapses onto a few modes draws
  images closer to each other than real images are (ratio below 1).
* Improved precision and recall (Kynkäänniemi et al. 2019, k-nearest-neighbour
  radii): precision is the share of generated images inside the real images'
  manifold (realism), recall the share of real images inside the generated
  images' manifold (coverage: what a mode-dropping generator loses).
* The share of real images whose nearest generated image is closer than their
  nearest other real image (about 1/2 for a generator that covers the real
  distribution, near 0 for one that misses it).

Inputs are uint8 image stacks (N, H, W), radiographic display (lungs dark), at any
size; each function resizes with `data.resize_uint8` (PIL LANCZOS) where it needs
a fixed size. No jax here: everything runs on the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import distance as scipy_distance
from skimage.feature import hog
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from jaxcxr import data, metrics

# Components of the PCA inside the two-sample tests and of the PCA Fréchet space;
# every set must have at least this many images.
PCA_DIM = 32
PIXEL_SIZE = 64
HOG_SIZE = 128
DETAIL_SIZE = 128
DETAIL_BINS = 32
GRADIENT_RANGE = (0.0, 0.2)
RESIDUAL_RANGE = (-0.1, 0.1)
# Radial frequency (cycles/pixel) above which power counts as high-frequency: half the Nyquist 0.5.
HIGH_FREQUENCY = 0.25
CV_FOLDS = 5
# BLAS threads of the PCAs and fits. Their matrices are small (a few hundred rows): one
# thread is as fast on an idle machine and 10-40x faster on a busy one, where OpenBLAS
# threads contend with other jobs (measured on this project's 2-core CPU during training).
BLAS_THREADS = 1


def _unit(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 (N, H, W) -> float32 (N, size, size) in [0, 1]."""
  return data.resize_uint8(images, size).astype(np.float32) / 255.0


# ----------------------------------------------------------------------------- features


def pixel_features(images: np.ndarray) -> np.ndarray:
  """Pixels of uint8 (N, H, W) images resized to 64x64, in [0, 1], flattened. float32 (N, 4096)."""
  x = _unit(images, PIXEL_SIZE)
  return x.reshape(x.shape[0], -1)


def hog_features(images: np.ndarray) -> np.ndarray:
  """Histograms of oriented gradients of uint8 (N, H, W) images resized to 128x128.

  `skimage.feature.hog` of the [0, 1] image with 9 orientations, 16x16-pixel cells,
  2x2-cell blocks and L2-Hys block normalisation: 7 x 7 blocks x 4 cells x 9 bins.

  Returns:
    float32 (N, 1764).
  """
  x = _unit(images, HOG_SIZE)
  return np.stack([hog(im, orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2))
                   for im in x]).astype(np.float32)


def _histograms(values: np.ndarray, value_range: tuple[float, float], bins: int) -> np.ndarray:
  """Per-row histograms of (N, ...) values over `value_range`, outliers clipped into the end bins, summing to 1."""
  lo, hi = value_range
  n = values.shape[0]
  index = np.clip(np.floor((values.reshape(n, -1) - lo) / (hi - lo) * bins), 0, bins - 1).astype(np.int64)
  counts = np.bincount((index + bins * np.arange(n)[:, None]).ravel(), minlength=n * bins).reshape(n, bins)
  return counts / index.shape[1]


def detail_features(images: np.ndarray) -> np.ndarray:
  """Fine-detail statistics of uint8 (N, H, W) images resized to 128x128 (x in [0, 1]).

  The concatenation of two 32-bin histograms, each normalised to sum 1 (values
  outside the range go to the end bins):
  * the gradient magnitude sqrt(gy^2 + gx^2) (`np.gradient` central differences)
    over [0, 0.2]: edge sharpness;
  * the high-pass residual x - gaussian_filter(x, sigma=1) over [-0.1, 0.1]:
    noise and texture (a checkerboard widens it, blur narrows it).

  Returns:
    float32 (N, 64).
  """
  x = _unit(images, DETAIL_SIZE).astype(np.float64)
  gy, gx = np.gradient(x, axis=(1, 2))
  magnitude = np.sqrt(gy ** 2 + gx ** 2)
  residual = x - ndimage.gaussian_filter(x, sigma=(0.0, 1.0, 1.0))
  return np.concatenate([_histograms(magnitude, GRADIENT_RANGE, DETAIL_BINS),
                         _histograms(residual, RESIDUAL_RANGE, DETAIL_BINS)], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------- two-sample tests


def two_sample_auc(features_a: np.ndarray, features_b: np.ndarray, *, seed: int = 0) -> float:
  """Classifier two-sample test: cross-validated ROC AUC of telling set b from set a.

  Labels 0 for a, 1 for b; the pipeline StandardScaler -> PCA(32) ->
  LogisticRegression(C=0.1) is fitted per fold of a 5-fold stratified, shuffled
  split, and the out-of-fold decision values of all folds are pooled into one AUC.
  0.5 = indistinguishable, 1 = separable (below 0.5 is chance too).

  Args:
    features_a: (Na, D) features of the first set (e.g. real images), Na >= 32.
    features_b: (Nb, D) features of the second set (e.g. generated images), Nb >= 32.
    seed: seed of the fold shuffle and of the PCA.

  Returns:
    The ROC AUC as a Python float in [0, 1].

  Raises:
    jaxcxr.data.DataError: a set with fewer than 32 rows (the PCA dimension), or
      feature sets of different widths.
  """
  features_a = np.asarray(features_a, np.float64)
  features_b = np.asarray(features_b, np.float64)
  if features_a.ndim != 2 or features_b.ndim != 2 or features_a.shape[1] != features_b.shape[1]:
    raise data.DataError(f"two-sample test: feature sets of shapes {features_a.shape} and {features_b.shape}; "
                         "expected (N, D) with the same D")
  for name, f in (("first", features_a), ("second", features_b)):
    if f.shape[0] < PCA_DIM:
      raise data.DataError(f"two-sample test: {f.shape[0]} images in the {name} set; need at least {PCA_DIM} "
                           "(the PCA dimension)")
  x = np.concatenate([features_a, features_b])
  y = np.concatenate([np.zeros(len(features_a), np.int64), np.ones(len(features_b), np.int64)])
  # With >= 32 rows per set every training fold has >= 51 rows, so 32 components always fit.
  model = make_pipeline(StandardScaler(), PCA(n_components=min(PCA_DIM, x.shape[1]), random_state=seed),
                        LogisticRegression(C=0.1, max_iter=5000))
  folds = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=seed)
  with threadpool_limits(BLAS_THREADS, user_api="blas"):
    scores = cross_val_predict(model, x, y, cv=folds, method="decision_function")
  return float(roc_auc_score(y, scores))


class PcaFrechet:
  """Fréchet distance in a fixed PCA space of real training normals.

  64x64 pixels in [0, 1], flattened, projected on the 32 leading principal
  components of the training normals and whitened (unit variance per component
  over the training normals), so that every direction of normal anatomical
  variation counts equally and the space belongs to no GAN.

  Attributes:
    pca: the fitted `sklearn.decomposition.PCA` (32 components, whiten=True).
  """

  def __init__(self, train_normals: np.ndarray, *, seed: int = 0):
    """Fits the PCA.

    Args:
      train_normals: uint8 (N, H, W) real normal training images, N > 32.
      seed: seed of the PCA solver.

    Raises:
      jaxcxr.data.DataError: 32 or fewer images, or images spanning fewer than 32
        directions (e.g. duplicates), which whitening cannot scale.
    """
    n = len(train_normals)
    if n <= PCA_DIM:
      raise data.DataError(f"PCA Fréchet: {n} training normal images; need more than {PCA_DIM} "
                           "(the PCA dimension)")
    with threadpool_limits(BLAS_THREADS, user_api="blas"):
      self.pca = PCA(n_components=PCA_DIM, whiten=True, random_state=seed).fit(pixel_features(train_normals))
    variance = self.pca.explained_variance_
    if not variance[-1] > 1e-9 * variance[0]:
      raise data.DataError(f"PCA Fréchet: the {n} training normal images span fewer than {PCA_DIM} directions "
                           "(duplicates?); whitening needs 32")

  def transform(self, images: np.ndarray) -> np.ndarray:
    """Whitened PCA coordinates of uint8 (N, H, W) images. float64 (N, 32)."""
    with threadpool_limits(BLAS_THREADS, user_api="blas"):
      return self.pca.transform(pixel_features(images)).astype(np.float64)

  def distance(self, images_a: np.ndarray, images_b: np.ndarray) -> float:
    """`metrics.frechet_distance` between two uint8 (N, H, W) sets (N >= 2 each) in the whitened PCA space."""
    return metrics.frechet_distance(self.transform(images_a), self.transform(images_b))


# ----------------------------------------------------------------------------- spectrum


def high_frequency_share(images: np.ndarray, *, batch_size: int = 64) -> float:
  """Mean share of spectral power above half the Nyquist frequency.

  Per image, at its native size: x in [0, 1] minus its mean, power |FFT2(x)|^2,
  and the share of the non-DC power at radial frequency sqrt(fx^2 + fy^2) > 0.25
  cycles/pixel (`np.fft.fftfreq`). A constant image counts as share 0.

  Args:
    images: uint8 (N, H, W).
    batch_size: images per FFT call (bounds memory).

  Returns:
    The mean share over images, a Python float in [0, 1].
  """
  images = np.asarray(images)
  if images.ndim != 3 or len(images) == 0 or images.dtype != np.uint8:
    raise data.DataError(f"high-frequency share: expected uint8 images of shape (N, H, W) with N > 0, got "
                         f"{images.dtype} {images.shape}")
  h, w = images.shape[1:]
  radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
  high, non_dc = radius > HIGH_FREQUENCY, radius > 0
  shares = []
  for start in range(0, len(images), batch_size):
    x = images[start: start + batch_size].astype(np.float64) / 255.0
    x -= x.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(x)) ** 2                               # (B, H, W)
    total = power[:, non_dc].sum(axis=1)
    shares.append(np.where(total > 0, power[:, high].sum(axis=1) / np.maximum(total, 1e-300), 0.0))
  return float(np.mean(np.concatenate(shares)))


# ----------------------------------------------------------------------------- diversity and coverage


# k of the k-nearest-neighbour radii of improved precision and recall (the paper's default is 3).
PR_NEIGHBOURS = 3


def _points(name: str, points: Any, min_rows: int) -> np.ndarray:
  """`points` as float64 (N, D); DataError unless a finite real (N, D) array with N >= min_rows, D >= 1."""
  x = np.asarray(points)
  if x.dtype.kind not in "iuf" or x.ndim != 2 or x.shape[1] < 1:
    raise data.DataError(f"{name}: expected real points of shape (N, D), got {x.dtype} {x.shape}")
  if x.shape[0] < min_rows:
    raise data.DataError(f"{name}: {x.shape[0]} points; need at least {min_rows}")
  x = x.astype(np.float64)
  if not np.isfinite(x).all():
    raise data.DataError(f"{name}: the points contain NaN or inf")
  return x


def _same_width(name: str, a: np.ndarray, b: np.ndarray) -> None:
  if a.shape[1] != b.shape[1]:
    raise data.DataError(f"{name}: point sets of shapes {a.shape} and {b.shape}; expected the same D")


def mean_pairwise_distance(points: Any) -> float:
  """Mean Euclidean distance over the distinct pairs of rows, in float64 on the host.

    MPD = 2 / (N (N - 1)) * sum_{i < j} ||x_i - x_j||_2

  (the formula of `metrics.mean_pairwise_distance`, exact for the small sets here).

  Args:
    points: real (N, D), N >= 2, finite.

  Returns:
    The mean pairwise distance, a Python float (0 for N identical rows).

  Raises:
    jaxcxr.data.DataError: not a finite real (N, D) array with N >= 2.
  """
  x = _points("mean pairwise distance", points, 2)
  return float(np.mean(scipy_distance.pdist(x)))


def precision_recall(real: Any, generated: Any, *, k: int = PR_NEIGHBOURS) -> dict[str, float]:
  """Improved precision and recall of generated points against real points (Kynkäänniemi et al. 2019).

  Each set S is approximated by the union of balls around its points, each of
  radius the distance to the point's k-th nearest other point of S:

    r_k(x; S) = distance from x to its k-th nearest neighbour among the other points of S
    inside(y; S) = 1 if ||y - x|| <= r_k(x; S) for some x in S, else 0
    precision = mean over generated g of inside(g; real)        (realism)
    recall    = mean over real r of inside(r; generated)        (coverage)

  A set against itself has precision = recall = 1 (each point lies in its own
  ball). Both depend on the set sizes and the dimension: read them next to the
  same figures of a second real set of the same size.

  Args:
    real: real (Nr, D) points, Nr > k, finite.
    generated: real (Ng, D) points, Ng > k, finite.
    k: the neighbour rank of the radii, >= 1.

  Returns:
    {"precision": float, "recall": float} in [0, 1].

  Raises:
    jaxcxr.data.DataError: k < 1, sets with k or fewer rows, of different widths, or with NaN or inf.
  """
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise data.DataError(f"precision/recall: k must be a positive integer, got {k!r}")
  real = _points("precision/recall, real set", real, k + 1)
  generated = _points("precision/recall, generated set", generated, k + 1)
  _same_width("precision/recall", real, generated)
  cross = scipy_distance.cdist(generated, real)                          # (Ng, Nr)

  def radii(x: np.ndarray) -> np.ndarray:
    # Row i sorted: index 0 is x_i itself (distance 0), index k its k-th nearest other point.
    return np.sort(scipy_distance.cdist(x, x), axis=1)[:, k]

  precision = np.mean((cross <= radii(real)[None, :]).any(axis=1))
  recall = np.mean((cross <= radii(generated)[:, None]).any(axis=0))
  return {"precision": float(precision), "recall": float(recall)}


def nearest_neighbour_share(real: Any, generated: Any) -> float:
  """Share of real points whose nearest generated point is closer than their nearest other real point.

    share = mean over real r of [ min_g ||r - g|| < min_{r' in real, r' != r} ||r - r'|| ]

  For a generated set drawn from the real distribution, of the real set's size N,
  each real point's nearest neighbour among the other 2N - 1 points is generated
  with probability N / (2N - 1), about 1/2; a generator that misses part of the
  real distribution lowers it, one that copies the real points raises it to 1.

  Args:
    real: real (Nr, D) points, Nr >= 2, finite.
    generated: real (Ng, D) points, Ng >= 1, finite.

  Returns:
    The share, a Python float in [0, 1].

  Raises:
    jaxcxr.data.DataError: fewer than 2 real or no generated points, sets of different widths, NaN or inf.
  """
  real = _points("nearest-neighbour share, real set", real, 2)
  generated = _points("nearest-neighbour share, generated set", generated, 1)
  _same_width("nearest-neighbour share", real, generated)
  to_real = scipy_distance.cdist(real, real)
  np.fill_diagonal(to_real, np.inf)
  to_generated = scipy_distance.cdist(real, generated).min(axis=1)
  return float(np.mean(to_generated < to_real.min(axis=1)))


def diversity_report(space: PcaFrechet, generated: np.ndarray, real_a: np.ndarray, real_b: np.ndarray, *,
                     generated_groups: Mapping[str, np.ndarray] | None = None,
                     real_groups: Mapping[str, np.ndarray] | None = None, k: int = PR_NEIGHBOURS
                     ) -> dict[str, Any]:
  """Diversity and coverage of generated images in the whitened PCA space of `space`.

  Everything is measured on `space.transform` coordinates (32 whitened principal
  components of 64x64 pixels of real training normals), as the PCA Fréchet distance:

  * "overall": `mean_pairwise_distance` of the generated set, of real set A and of
    real set B; "ratio" = generated / A (1 = as diverse as real, below 1 = collapse),
    "real_vs_real_ratio" = B / A (what sampling noise alone gives).
  * "groups" (with `generated_groups`): per age-sex group, the mean pairwise distance
    of the group's generated images against that of the group's real images
    (`real_groups`) and their ratio; None where either side has fewer than 2 images.
  * "precision_recall": `precision_recall` with real set A, for the generated set and
    (reference) for real set B, each with k-NN radii of rank `k`.
  * "nearest_neighbour_share": `nearest_neighbour_share` with real set A, for the
    generated set and (reference) for real set B.

  Args:
    space: a fitted `PcaFrechet` (real training normals).
    generated: uint8 (n, H, W) generated images (e.g. conditioned on set B's sex and age).
    real_a, real_b: uint8 (n, H, W) real images of two patient-disjoint sets, as in `realism_report`.
    generated_groups: optional group name -> uint8 (m, H, W) generated images of that group.
    real_groups: group name -> uint8 real images of that group; needed with `generated_groups`
      (a group missing here counts as 0 real images).
    k: neighbour rank of the precision/recall radii.

  Returns:
    {"k", "overall": {"generated", "real_a", "real_b", "ratio", "real_vs_real_ratio"},
     "precision_recall": {"generated_vs_real": {"precision", "recall"}, "real_vs_real": {...}},
     "nearest_neighbour_share": {"generated_vs_real", "real_vs_real"}}, and with
    `generated_groups` "groups": {name: {"n_generated", "n_real", "generated", "real", "ratio"}} and
    "mean_group_ratio" (mean over the groups with a ratio, None if none).

  Raises:
    jaxcxr.data.DataError: sets of different sizes, k or fewer images per set, images that are not
      uint8 (N, H, W), or `generated_groups` without `real_groups`.
  """
  sets = {"generated": np.asarray(generated), "real_a": np.asarray(real_a), "real_b": np.asarray(real_b)}
  counts = {name: len(x) for name, x in sets.items()}
  if len(set(counts.values())) != 1:
    raise data.DataError(f"diversity report: sets of {counts} images; expected equal counts")
  if generated_groups is not None and real_groups is None:
    raise data.DataError("diversity report: generated_groups needs real_groups (the real images of each group)")
  coords = {name: space.transform(x) for name, x in sets.items()}
  mpd = {name: mean_pairwise_distance(c) for name, c in coords.items()}
  result: dict[str, Any] = {"k": int(k), "overall": {
      **mpd, "ratio": mpd["generated"] / max(mpd["real_a"], 1e-12),
      "real_vs_real_ratio": mpd["real_b"] / max(mpd["real_a"], 1e-12)}}
  result["precision_recall"] = {
      "generated_vs_real": precision_recall(coords["real_a"], coords["generated"], k=k),
      "real_vs_real": precision_recall(coords["real_a"], coords["real_b"], k=k)}
  result["nearest_neighbour_share"] = {
      "generated_vs_real": nearest_neighbour_share(coords["real_a"], coords["generated"]),
      "real_vs_real": nearest_neighbour_share(coords["real_a"], coords["real_b"])}
  if generated_groups is not None:
    groups = {}
    for name, images in generated_groups.items():
      real = real_groups.get(name)
      row: dict[str, Any] = {"n_generated": len(images), "n_real": 0 if real is None else len(real),
                             "generated": None, "real": None, "ratio": None}
      if row["n_generated"] >= 2:
        row["generated"] = mean_pairwise_distance(space.transform(images))
      if row["n_real"] >= 2:
        row["real"] = mean_pairwise_distance(space.transform(real))
      if row["generated"] is not None and row["real"] is not None:
        row["ratio"] = row["generated"] / max(row["real"], 1e-12)
      groups[name] = row
    ratios = [row["ratio"] for row in groups.values() if row["ratio"] is not None]
    result["groups"] = groups
    result["mean_group_ratio"] = float(np.mean(ratios)) if ratios else None
  return result


# ----------------------------------------------------------------------------- report


FEATURES = {"pixels": pixel_features, "hog": hog_features, "detail": detail_features}


def realism_report(generated: np.ndarray, real_a: np.ndarray, real_b: np.ndarray, train_normals: np.ndarray, *,
                   seed: int = 0, space: PcaFrechet | None = None) -> dict[str, Any]:
  """Every realism figure of generated images against real set A, with real set B against A as reference.

  Args:
    generated: uint8 (n, R, R) generated images (e.g. conditioned on set B's metadata).
    real_a: uint8 (n, R, R) real images; the set both comparisons are made against.
    real_b: uint8 (n, R, R) real images of other patients than A: the real-vs-real reference.
    train_normals: uint8 (M, H, W) real normal training images (M > 32) that fit the PCA
      Fréchet space; disjoint from A and B.
    seed: seed of the cross-validation folds and the PCAs.
    space: the PCA Fréchet space, if already fitted on `train_normals` (e.g. shared with
      `diversity_report`); None fits it here.

  Returns:
    {"n_per_set": n,
     "two_sample_auc_pixels" / "_hog" / "_detail": {"generated_vs_real", "real_vs_real"},
     "pca_frechet": {"generated_vs_real", "real_vs_real", "ratio"},
     "high_frequency_share": {"generated", "real_a", "real_b", "ratio" (generated / real_a),
                              "real_vs_real_ratio" (real_b / real_a)}}.

  Raises:
    jaxcxr.data.DataError: sets of different sizes or image sizes, fewer than 32 images per
      set, or too few training normals (see `PcaFrechet`).
  """
  sets = {"generated": np.asarray(generated), "real_a": np.asarray(real_a), "real_b": np.asarray(real_b)}
  shapes = {name: x.shape for name, x in sets.items()}
  if len({s for s in shapes.values()}) != 1 or len(shapes["real_a"]) != 3:
    raise data.DataError(f"realism report: sets of shapes {shapes}; expected equal (n, R, R) stacks "
                         "(equal counts at one resolution)")
  n = shapes["real_a"][0]
  if n < PCA_DIM:
    raise data.DataError(f"realism report: {n} images per set; need at least {PCA_DIM} (the PCA dimension)")
  # fitting checks the training normals before the slow work
  pca_frechet = PcaFrechet(train_normals, seed=seed) if space is None else space
  result: dict[str, Any] = {"n_per_set": int(n)}
  for name, extract in FEATURES.items():
    f = {k: extract(x) for k, x in sets.items()}
    result[f"two_sample_auc_{name}"] = {
        "generated_vs_real": two_sample_auc(f["real_a"], f["generated"], seed=seed),
        "real_vs_real": two_sample_auc(f["real_a"], f["real_b"], seed=seed)}
  coords = {k: pca_frechet.transform(x) for k, x in sets.items()}
  gen_fd = metrics.frechet_distance(coords["generated"], coords["real_a"])
  real_fd = metrics.frechet_distance(coords["real_b"], coords["real_a"])
  result["pca_frechet"] = {"generated_vs_real": gen_fd, "real_vs_real": real_fd, "ratio": gen_fd / max(real_fd, 1e-12)}
  share = {k: high_frequency_share(x) for k, x in sets.items()}
  result["high_frequency_share"] = {**share, "ratio": share["generated"] / max(share["real_a"], 1e-12),
                                    "real_vs_real_ratio": share["real_b"] / max(share["real_a"], 1e-12)}
  return result
