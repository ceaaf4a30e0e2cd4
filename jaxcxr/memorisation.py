"""Memorisation audit of a generator: how close its images come to the images it trained on.

For every generated image, the distance to its nearest training image; beside it,
the same distance for real test images (patients outside the training set): how
close a radiograph of a new patient comes to the training set by chance. A
generator that reproduces its training images puts many of its images closer
than nearly every test image. The audit reports both distributions (quantiles),
the share of generated images closer than the 5th percentile of the test images'
distances (about 5% for a generator that draws new patients, 1 for one that
copies), and the closest generated/training pairs, to look at
(`save_closest_pairs`).

Spaces:

* "pixels": 64x64 (PIL LANCZOS), each image standardised to zero mean and unit
  variance over its pixels, so that a change of brightness or contrast does not
  hide a copy. The distance is the root-mean-square difference of the
  standardised images, sqrt(2 (1 - r)) with r the Pearson correlation of their
  pixels: 0 for the same image up to brightness and contrast, about 1.41 for
  uncorrelated ones, at most 2.
* "features": any embedding, given as a callable from uint8 images to (N, D)
  features (e.g. a chest-X-ray encoder); the Euclidean distance of its outputs
  (normalise inside the callable for a cosine-like distance).

Images cross the API as uint8 (N, H, W), radiographic display. Numpy on the host.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from jaxcxr import data, plots

__all__ = ["NearestTraining", "audit", "nearest_neighbours", "save_closest_pairs", "standardised_pixels",
           "PIXEL_SIZE", "REFERENCE_QUANTILE", "N_PAIRS"]

PIXEL_SIZE = 64
# The test images' quantile below which a generated image counts as closer to the training set than chance.
REFERENCE_QUANTILE = 0.05
# Closest generated/training pairs listed in the summary and drawn by `save_closest_pairs`.
N_PAIRS = 8
QUANTILES = {"min": 0.0, "q01": 0.01, "q05": 0.05, "q25": 0.25, "median": 0.5, "q75": 0.75, "q95": 0.95,
             "max": 1.0}
# BLAS threads of the distance matmuls (small matrices on a shared CPU, as in `jaxcxr.realism`).
BLAS_THREADS = 1

Features = Callable[[np.ndarray], np.ndarray]


def _check_images(name: str, images: Any) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 3 or len(images) == 0 or 0 in images.shape[1:]:
    raise data.DataError(f"memorisation audit: expected {name} as uint8 images (N, H, W) with N > 0, got "
                         f"{images.dtype} {images.shape}")
  return images


def _check_points(name: str, points: Any, n: int | None = None) -> np.ndarray:
  x = np.asarray(points)
  if x.dtype.kind not in "iuf" or x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
    raise data.DataError(f"memorisation audit: expected {name} as real (N, D) arrays with N, D > 0, got "
                         f"{x.dtype} {x.shape}")
  if n is not None and x.shape[0] != n:
    raise data.DataError(f"memorisation audit: {x.shape[0]} rows of {name} for {n} images; expected one per image")
  x = x.astype(np.float64)
  if not np.isfinite(x).all():
    raise data.DataError(f"memorisation audit: {name} contain NaN or inf")
  return x


def standardised_pixels(images: np.ndarray, *, size: int = PIXEL_SIZE) -> np.ndarray:
  """uint8 (N, H, W) images resized to size x size, each standardised over its pixels. float64 (N, size * size).

  Each row has mean 0 and (population) standard deviation 1; a constant image becomes
  a row of zeros.

  Raises:
    jaxcxr.data.DataError: not uint8 (N, H, W) with N > 0.
  """
  images = _check_images("images", images)
  x = data.resize_uint8(images, size).reshape(len(images), -1).astype(np.float64)
  x -= x.mean(axis=1, keepdims=True)
  std = x.std(axis=1, keepdims=True)
  return np.divide(x, std, out=np.zeros_like(x), where=std > 0)


def nearest_neighbours(queries: Any, references: Any, *, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """Euclidean nearest reference of each query: distances float64 (N,) and indices int64 (N,).

  The nearest reference is found through the Gram expansion
  ||q - r||^2 = ||q||^2 + ||r||^2 - 2 q.r, one matmul per batch of queries; the
  distance to it is then recomputed directly, so an exact copy gives exactly 0.
  Ties go to the lowest reference index.

  Args:
    queries: real (N, D), finite.
    references: real (M, D), finite, the same D.
    batch_size: queries per matmul (bounds memory to batch_size x M).

  Raises:
    jaxcxr.data.DataError: empty sets, other widths, NaN or inf, batch_size < 1.
  """
  q = _check_points("queries", queries)
  r = _check_points("references", references)
  if q.shape[1] != r.shape[1]:
    raise data.DataError(f"memorisation audit: queries of shape {q.shape} and references of shape {r.shape}; "
                         "expected the same D")
  if batch_size < 1:
    raise data.DataError(f"memorisation audit: batch_size must be >= 1, got {batch_size}")
  r_norms = np.einsum("md,md->m", r, r)
  index = np.empty(len(q), np.int64)
  with threadpool_limits(BLAS_THREADS, user_api="blas"):
    for start in range(0, len(q), batch_size):
      block = q[start: start + batch_size]
      squared = r_norms[None, :] - 2.0 * block @ r.T                   # + ||q||^2, constant per row
      index[start: start + len(block)] = np.argmin(squared, axis=1)
  distance = np.sqrt(np.einsum("nd,nd->n", q - r[index], q - r[index]))
  return distance, index


@dataclasses.dataclass(frozen=True)
class NearestTraining:
  """Nearest-training-image distances of generated and of test images, in one space.

  Attributes:
    space: the space's name ("pixels", "features").
    generated_distance: float64 (G,) distance of each generated image to its nearest training image.
    generated_index: int64 (G,) index of that training image.
    test_distance: float64 (T,) the same for each real test image.
    test_index: int64 (T,) index of the test image's nearest training image.
    n_training: number of training images searched.
  """
  space: str
  generated_distance: np.ndarray
  generated_index: np.ndarray
  test_distance: np.ndarray
  test_index: np.ndarray
  n_training: int

  @property
  def threshold(self) -> float:
    """The 5th percentile of the test images' distances (`np.quantile`, linear interpolation)."""
    return float(np.quantile(self.test_distance, REFERENCE_QUANTILE))

  @property
  def share(self) -> float:
    """Share of generated images strictly closer to a training image than `threshold` (target <= 0.05)."""
    return float(np.mean(self.generated_distance < self.threshold))

  def closest_pairs(self, n: int = N_PAIRS) -> list[tuple[int, int, float]]:
    """The n generated images closest to a training image, nearest first.

    Returns:
      [(generated index, training index, distance)] of length min(n, G).
    """
    order = np.argsort(self.generated_distance, kind="stable")[:n]
    return [(int(i), int(self.generated_index[i]), float(self.generated_distance[i])) for i in order]

  def summary(self) -> dict[str, Any]:
    """JSON-ready figures: counts, quantiles of both distributions, threshold, share and the closest pairs."""
    def quantiles(x: np.ndarray) -> dict[str, float]:
      return {name: float(np.quantile(x, q)) for name, q in QUANTILES.items()} | {"mean": float(np.mean(x))}

    return {"n_generated": int(len(self.generated_distance)), "n_test": int(len(self.test_distance)),
            "n_training": int(self.n_training), "generated": quantiles(self.generated_distance),
            "test": quantiles(self.test_distance), "threshold": self.threshold,
            "share_below_threshold": self.share,
            "closest_pairs": [{"generated": i, "training": j, "distance": d} for i, j, d in self.closest_pairs()]}


def audit(generated: np.ndarray, training: np.ndarray, test: np.ndarray, *, features: Features | None = None
          ) -> dict[str, NearestTraining]:
  """Nearest-training-image distances of generated and of real test images, in pixels and optionally features.

  Args:
    generated: uint8 (G, H, W) generated images (unfiltered samples).
    training: uint8 (M, H', W') the images the generator trained on.
    test: uint8 (T, H'', W'') real images of patients outside the training set (the
      chance reference; its 5th percentile sets the threshold, so some tens of images
      are needed for a stable one).
    features: optional callable, uint8 (N, H, W) images -> real (N, D) features (one
      call per set, each set at its own size); adds the "features" space.

  Returns:
    {"pixels": NearestTraining} and, with `features`, {"features": NearestTraining}.

  Raises:
    jaxcxr.data.DataError: a set that is not uint8 (N, H, W) with N > 0; features with
      another row count than their images, different widths across sets, NaN or inf.
  """
  sets = {"generated": _check_images("generated", generated), "training": _check_images("training", training),
          "test": _check_images("test", test)}
  spaces: dict[str, Callable[[np.ndarray], np.ndarray]] = {"pixels": standardised_pixels}
  if features is not None:
    spaces["features"] = features
  result = {}
  for space, embed in spaces.items():
    points = {name: _check_points(f"{space} of the {name} images", embed(x), len(x)) for name, x in sets.items()}
    if space == "pixels":   # root-mean-square difference of the standardised images
      points = {name: x / np.sqrt(x.shape[1]) for name, x in points.items()}
    generated_distance, generated_index = nearest_neighbours(points["generated"], points["training"])
    test_distance, test_index = nearest_neighbours(points["test"], points["training"])
    result[space] = NearestTraining(space, generated_distance, generated_index, test_distance, test_index,
                                    len(sets["training"]))
  return result


def save_closest_pairs(result: NearestTraining, generated: np.ndarray, training: np.ndarray,
                       path: str | os.PathLike, *, n: int = N_PAIRS) -> pathlib.Path:
  """A PNG of the n closest generated/training pairs, each generated image left of its nearest training image.

  Four images per row (two pairs), at the generated images' size (training images are
  resized to it with PIL LANCZOS); captions give the indices and the distance.

  Args:
    result: the audit of one space (`audit(...)[space]`) of these generated and training images.
    generated: uint8 (G, H, W), the generated images the audit was run on.
    training: uint8 (M, H', W'), the training images the audit was run on.
    path: PNG file to write (atomically; parent folders are created).
    n: pairs to draw (at most G).

  Returns:
    The path written.

  Raises:
    jaxcxr.data.DataError: image sets whose counts do not match the audit, generated images that
      are not square, or n < 1.
  """
  generated = _check_images("generated", generated)
  training = _check_images("training", training)
  if len(generated) != len(result.generated_distance) or len(training) != result.n_training:
    raise data.DataError(f"closest pairs: {len(generated)} generated and {len(training)} training images for an "
                         f"audit of {len(result.generated_distance)} and {result.n_training}")
  if n < 1:
    raise data.DataError(f"closest pairs: n must be >= 1, got {n}")
  height, width = generated.shape[1:]
  if height != width:
    raise data.DataError(f"closest pairs: expected square generated images, got {height}x{width}")
  pairs = result.closest_pairs(n)
  matched = data.resize_uint8(training[[j for _, j, _ in pairs]], height)
  tiles, labels = [], []
  for (i, j, d), match in zip(pairs, matched):
    tiles += [generated[i], match]
    labels += [f"generated {i}: {result.space} distance {d:.3f}", f"training {j}"]
  return plots.save_image_grid(np.stack(tiles), path, nrow=4, labels=labels)
