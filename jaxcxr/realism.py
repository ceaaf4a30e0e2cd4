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

Inputs are uint8 image stacks (N, H, W), radiographic display (lungs dark), at any
size; each function resizes with `data.resize_uint8` (PIL LANCZOS) where it needs
a fixed size. No jax here: everything runs on the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
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


# ----------------------------------------------------------------------------- report


FEATURES = {"pixels": pixel_features, "hog": hog_features, "detail": detail_features}


def realism_report(generated: np.ndarray, real_a: np.ndarray, real_b: np.ndarray, train_normals: np.ndarray, *,
                   seed: int = 0) -> dict[str, Any]:
  """Every realism figure of generated images against real set A, with real set B against A as reference.

  Args:
    generated: uint8 (n, R, R) generated images (e.g. conditioned on set B's metadata).
    real_a: uint8 (n, R, R) real images; the set both comparisons are made against.
    real_b: uint8 (n, R, R) real images of other patients than A: the real-vs-real reference.
    train_normals: uint8 (M, H, W) real normal training images (M > 32) that fit the PCA
      Fréchet space; disjoint from A and B.
    seed: seed of the cross-validation folds and the PCAs.

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
  pca_frechet = PcaFrechet(train_normals, seed=seed)   # checks the training normals before the slow work
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
