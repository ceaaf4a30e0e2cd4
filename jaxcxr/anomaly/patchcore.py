"""PatchCore (Roth et al., CVPR 2022): a memory bank of normal patch features, scored by nearest-neighbour distance.

A feature-space anomaly detector with no generator: the locally aggregated mid-level patch
features of training normals (3x3 average pooling of a network's feature map) form a memory
bank, subsampled by a greedy k-center coreset (`coreset_indices`, on a random Gaussian
projection of the features). A query patch's anomaly is the Euclidean distance to its
nearest memory-bank patch; the image score is the largest patch score (inside the lungs when
lung masks are given); the per-pixel map is the patch scores upsampled bilinearly to the
image and blurred with a Gaussian (sigma 4 pixels, as the paper).

* `fit_patchcore`: the memory bank of training normals (`PatchCore`).
* `fit_encoder_patchcore`: the same on the CXR encoder's features, written to a folder that
  `load_patchcore` reads with no further argument (`jaxcxr train patchcore`).
* `PatchCore.score`: (image scores (N,), maps (N, H, W)); jitted per batch over `map_batches`.
* `coreset_indices`: the greedy k-center coreset in JAX.
* `save_patchcore` / `load_patchcore`: the bank as a folder (`memory_bank.npz`, `patchcore.json`);
  a bank built on the CXR encoder records its extractor (`encoder_extractor`), so `load_patchcore`
  rebuilds the `features_fn` itself.
* `cxr_encoder_features`, `unet_encoder_features`: `features_fn`s from the self-supervised CXR
  encoder (`jaxcxr.models.cxr_encoder`) and from the lung U-Net's encoder.
* `encoder_extractor`, `extractor_features`: the CXR encoder's `features_fn` as JSON-serialisable
  data (encoder checkpoint and model id, stages, optional exposure reference) and back.
* `PatchcoreScorer`: the method for `jaxcxr.anomaly.evaluate_anomaly`.

The image score is the plain maximum over patches. The paper reweights it by the softmax of
the distances from the nearest bank patch to its own neighbours in the bank; anomalib's
implementation does the same with one neighbour by default. The reweighting needs a second
kNN search in the bank per image and only rescales the maximum; it is left out (not measured
here), so the score is the distance a map shows at its peak.

References:
  Roth, Pemula, Zepeda, Schölkopf, Brox, Gehler: Towards total recall in industrial anomaly
  detection. CVPR 2022.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcxr import checkpoints, data, exposure, io
from jaxcxr.anomaly.scorer import AbstractAnomalyScorer
from jaxcxr.batching import map_batches
from jaxcxr.models.cxr_encoder import image_features, load_cxr_encoder
from jaxcxr.models.unet import predict_masks

__all__ = [
    "PatchCore",
    "PatchcoreScorer",
    "aggregate_patches",
    "coreset_indices",
    "cxr_encoder_features",
    "encoder_extractor",
    "extractor_features",
    "fit_encoder_patchcore",
    "fit_patchcore",
    "load_patchcore",
    "nearest_distances",
    "save_patchcore",
    "unet_encoder_features",
]

FeaturesFn = Callable[[np.ndarray], np.ndarray]

_FORMAT = "jaxcxr-patchcore-1"


# ----------------------------------------------------------------------------- building blocks


def aggregate_patches(features: jax.Array) -> jax.Array:
  """Local aggregation of patch features: 3x3 average over the neighbours inside the grid (stride 1).

  Args:
    features: float (N, h, w, C).

  Returns:
    float32 (N, h, w, C); at the borders the mean of the neighbours that exist.
  """
  x = jnp.asarray(features, jnp.float32)
  window, strides = (1, 3, 3, 1), (1, 1, 1, 1)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, "SAME")
  count = jax.lax.reduce_window(jnp.ones((1,) + x.shape[1:3] + (1,), jnp.float32), 0.0, jax.lax.add, window,
                                strides, "SAME")
  return total / count


_aggregate = jax.jit(aggregate_patches)


@functools.partial(jax.jit, static_argnames=("n",))
def _greedy_k_center(points: jax.Array, first: jax.Array, n: int) -> jax.Array:
  """Greedy k-center on (P, d) points from index `first`: each step takes the point farthest from those taken."""

  def step(i, carry):
    chosen, nearest = carry
    last = points[chosen[i - 1]]
    nearest = jnp.minimum(nearest, jnp.sum(jnp.square(points - last[None, :]), axis=1))
    return chosen.at[i].set(jnp.argmax(nearest).astype(jnp.int32)), nearest

  chosen = jnp.zeros((n,), jnp.int32).at[0].set(first)
  nearest = jnp.full((points.shape[0],), jnp.inf, jnp.float32)
  chosen, _ = jax.lax.fori_loop(1, n, step, (chosen, nearest))
  return chosen


def coreset_indices(features, n: int, key: jax.Array, *, projection_dim: int | None = 128) -> np.ndarray:
  """Greedy k-center coreset (Sener & Savarese 2018, as PatchCore): n rows that cover the features.

  The first row is drawn at random (from `key`); each next one is the row farthest from the
  rows already chosen, so the largest distance of any row to its nearest chosen row (the
  covering radius) is at most twice the optimum. Distances are computed on a random Gaussian
  projection to `projection_dim` dimensions (Johnson-Lindenstrauss: distances kept up to a
  small factor), one `lax.fori_loop` of n steps of O(P * projection_dim) each.

  Args:
    features: float (P, C) rows.
    n: rows to choose, 1 <= n <= P.
    key: a `jax.random` key (first row and projection).
    projection_dim: dimensions of the projection; None, or at least C, uses the features as they are.

  Returns:
    int32 (n,) distinct row indices in the order chosen.

  Raises:
    ValueError: features that are not a non-empty finite (P, C) array, n outside [1, P], or
      projection_dim < 1.
  """
  features = jnp.asarray(features, jnp.float32)
  if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
    raise ValueError(f"coreset_indices: expected non-empty features (P, C), got shape {features.shape}")
  if not 1 <= n <= features.shape[0]:
    raise ValueError(f"coreset_indices: n must be in [1, {features.shape[0]}], got {n}")
  if projection_dim is not None and projection_dim < 1:
    raise ValueError(f"coreset_indices: projection_dim must be >= 1 or None, got {projection_dim}")
  if not bool(jnp.isfinite(features).all()):
    raise ValueError("coreset_indices: the features contain NaN or inf")
  first_key, projection_key = jax.random.split(key)
  points = features
  if projection_dim is not None and projection_dim < features.shape[1]:
    matrix = jax.random.normal(projection_key, (features.shape[1], projection_dim)) / math.sqrt(projection_dim)
    points = features @ matrix
  first = jax.random.randint(first_key, (), 0, features.shape[0], jnp.int32)
  return np.asarray(_greedy_k_center(points, first, int(n)))


def nearest_distances(queries: jax.Array, bank: jax.Array, bank_valid: jax.Array, *, chunk: int) -> jax.Array:
  """Euclidean distance of each query row to its nearest valid bank row (inside a trace).

  The nearest row is found with |q|^2 - 2 q.b + |b|^2 over bank chunks of `chunk` rows
  (`lax.scan`, so memory stays at (Q, chunk)); its distance is then recomputed exactly as
  |q - b|, so a query equal to a bank row scores exactly 0.

  Args:
    queries: float32 (Q, C).
    bank: float32 (M, C), M a multiple of `chunk` (padded rows marked invalid).
    bank_valid: bool (M,).
    chunk: bank rows per step.

  Returns:
    float32 (Q,).
  """
  q_norm = jnp.sum(jnp.square(queries), axis=1)
  blocks = bank.reshape(-1, chunk, bank.shape[1])
  valid = bank_valid.reshape(-1, chunk)
  offsets = jnp.arange(blocks.shape[0], dtype=jnp.int32) * chunk

  def step(carry, block):
    best, best_index = carry
    rows, ok, offset = block
    d2 = q_norm[:, None] - 2.0 * queries @ rows.T + jnp.sum(jnp.square(rows), axis=1)[None, :]
    d2 = jnp.where(ok[None, :], d2, jnp.inf)
    local = jnp.argmin(d2, axis=1)
    value = jnp.take_along_axis(d2, local[:, None], axis=1)[:, 0]
    better = value < best
    return (jnp.where(better, value, best), jnp.where(better, local.astype(jnp.int32) + offset, best_index)), None

  init = (jnp.full((queries.shape[0],), jnp.inf, jnp.float32), jnp.zeros((queries.shape[0],), jnp.int32))
  (_, index), _ = jax.lax.scan(step, init, (blocks, valid, offsets))
  return jnp.sqrt(jnp.sum(jnp.square(queries - bank[index]), axis=1))


def _gaussian_blur(maps: jax.Array, sigma: float) -> jax.Array:
  """Separable Gaussian blur of (N, H, W) maps, truncated at 4 sigma, edges reflected."""
  if sigma <= 0:
    return maps
  radius = int(math.ceil(4 * sigma))
  taps = jnp.exp(-0.5 * jnp.square(jnp.arange(-radius, radius + 1, dtype=jnp.float32) / sigma))
  taps = taps / taps.sum()
  x = jnp.pad(maps, ((0, 0), (radius, radius), (radius, radius)), mode="reflect")
  x = jax.vmap(jax.vmap(lambda row: jnp.convolve(row, taps, mode="valid")))(x)                  # along W
  x = jax.vmap(jax.vmap(lambda col: jnp.convolve(col, taps, mode="valid"), in_axes=1, out_axes=1))(x)  # along H
  return x


def _grid_mask(masks: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
  """Lung label maps (N, H, W) -> bool (N, h, w): the patches whose area is more than half lung."""
  lung = jnp.asarray(masks > 0, jnp.float32)
  return np.asarray(jax.image.resize(lung, (lung.shape[0], *grid), "linear")) > 0.5


def _check_masks(masks, images: np.ndarray, what: str) -> np.ndarray:
  masks = np.asarray(masks)
  if masks.shape != images.shape:
    raise ValueError(f"{what}: expected masks of the images' shape {images.shape}, got {masks.shape}")
  if masks.dtype.kind not in "biu" or not np.isin(masks, (0, 1, 2)).all():
    raise ValueError(f"{what}: masks must be integer label maps with values 0, 1, 2 (`predict_masks`), got "
                     f"{masks.dtype} values {np.unique(masks)[:6].tolist()}")
  return masks


def _check_images(images, what: str) -> np.ndarray:
  images = images.images if isinstance(images, data.CXRDataset) else images
  if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
    raise ValueError(f"{what}: expected uint8 images (N, H, W) or a CXRDataset, got "
                     f"{getattr(images, 'dtype', type(images).__name__)} {np.shape(images)}")
  return images


def _patch_features(features_fn: FeaturesFn, images: np.ndarray, what: str) -> np.ndarray:
  """features_fn(images), checked, then locally aggregated: float32 (N, h, w, C)."""
  features = np.asarray(features_fn(images))
  if features.ndim != 4 or features.shape[0] != len(images) or features.dtype.kind != "f":
    raise ValueError(f"{what}: features_fn must return float (N={len(images)}, h, w, C) patch features, got "
                     f"{features.dtype} {features.shape}")
  if not np.isfinite(features).all():
    raise ValueError(f"{what}: the patch features contain NaN or inf")
  return map_batches(_aggregate, features, 64)


# ----------------------------------------------------------------------------- the detector


@functools.partial(jax.jit, static_argnames=("chunk", "out_hw", "sigma"))
def _score_batch(bank, bank_valid, features, lung, pixels, *, chunk: int, out_hw: tuple[int, int], sigma: float):
  """One batch -> (image score (B,), map float32 (B, H, W)).

  features: aggregated (B, h, w, C); lung: bool (B, h, w) lung patches; pixels: bool (B, H, W) lung pixels.
  """
  b, h, w, c = features.shape
  patch = nearest_distances(features.reshape(b * h * w, c), bank, bank_valid, chunk=chunk).reshape(b, h, w)
  has_lung = lung.any(axis=(1, 2))
  inside = jnp.where(has_lung[:, None, None], lung, True)      # no lung patch: the whole image counts
  score = jnp.max(jnp.where(inside, patch, -jnp.inf), axis=(1, 2))
  maps = _gaussian_blur(jax.image.resize(jnp.where(inside, patch, 0.0), (b, *out_hw), "linear"), sigma)
  return score, jnp.where(jnp.where(has_lung[:, None, None], pixels, True), maps, 0.0)


@dataclasses.dataclass
class PatchCore:
  """A fitted PatchCore detector: the memory bank and how it was built.

  Attributes:
    features_fn: uint8 images (N, H, W) -> float (N, h, w, C) patch features (not saved: give it
      again to `load_patchcore`).
    memory_bank: float32 (M, C) aggregated patch features of training normals (the coreset).
    grid: (h, w), the feature grid the bank was built on; queries must give the same.
    settings: {"coreset_fraction", "projection_dim", "seed", "n_images", "n_patches", "masked",
      "blur_sigma", "chunk", "batch_size"} plus anything the caller adds (e.g. the feature extractor).
  """

  features_fn: FeaturesFn
  memory_bank: np.ndarray
  grid: tuple[int, int]
  settings: dict

  def _padded_bank(self) -> tuple[jax.Array, jax.Array, int]:
    m = len(self.memory_bank)
    chunk = int(min(self.settings.get("chunk", 1024), m))
    padded = -(-m // chunk) * chunk
    bank = np.zeros((padded, self.memory_bank.shape[1]), np.float32)
    bank[:m] = self.memory_bank
    return jnp.asarray(bank), jnp.asarray(np.arange(padded) < m), chunk

  def score(self, images, masks=None, *, batch_size: int | None = None,
            progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly scores and maps of query radiographs.

    Args:
      images: uint8 (N, H, W) radiographs (or a `data.CXRDataset`).
      masks: optional uint8 (N, H, W) lung label maps (`predict_masks`): only lung patches (more
        than half lung) count for the image score and the map, and the map is 0 outside the lung
        pixels. An image without a lung patch is scored and mapped over all its patches.
      batch_size: images per jitted call (default the `batch_size` setting, 16).
      progress: show a tqdm bar.

    Returns:
      (image scores float32 (N,): the largest patch distance; maps float32 (N, H, W): the patch
      distances upsampled bilinearly and blurred (sigma `blur_sigma` pixels)).

    Raises:
      ValueError: images that are not uint8 (N, H, W), masks of another shape, features of
        another grid or channel count than the bank, batch_size <= 0.
    """
    images = _check_images(images, "PatchCore.score")
    batch_size = int(batch_size or self.settings.get("batch_size", 16))
    if batch_size <= 0:
      raise ValueError(f"PatchCore.score: batch_size must be positive, got {batch_size}")
    features = _patch_features(self.features_fn, images, "PatchCore.score")
    if features.shape[1:] != (*self.grid, self.memory_bank.shape[1]):
      raise ValueError(f"PatchCore.score: features of shape {features.shape[1:]} do not match the memory bank's "
                       f"grid {self.grid} and {self.memory_bank.shape[1]} channels")
    if masks is None:
      lung, pixels = np.ones(features.shape[:3], bool), np.ones(images.shape, bool)
    else:
      masks = _check_masks(masks, images, "PatchCore.score")
      lung, pixels = _grid_mask(masks, self.grid), masks > 0
    bank, valid, chunk = self._padded_bank()
    out_hw, sigma = tuple(images.shape[1:]), float(self.settings.get("blur_sigma", 4.0))
    out = map_batches(lambda b: _score_batch(bank, valid, b["features"], b["lung"], b["pixels"], chunk=chunk,
                                             out_hw=out_hw, sigma=sigma),
                      {"features": features, "lung": lung, "pixels": pixels}, batch_size, desc="PatchCore",
                      progress=progress)
    return out[0].astype(np.float32), out[1].astype(np.float32)


def fit_patchcore(features_fn: FeaturesFn, normal_images, *, coreset_fraction: float = 0.1,
                  projection_dim: int | None = 128, seed: int = 0, masks=None, blur_sigma: float = 4.0,
                  chunk: int = 1024, batch_size: int = 16) -> PatchCore:
  """Builds a PatchCore memory bank from training normals.

  Args:
    features_fn: uint8 images (N, H, W) -> float (N, h, w, C) patch features (e.g.
      `cxr_encoder_features`, `unet_encoder_features`); aggregated here (`aggregate_patches`).
    normal_images: uint8 (N, H, W) normal radiographs (or a `data.CXRDataset` of them).
    coreset_fraction: the share of patches kept, in (0, 1]; 1 keeps every patch (no coreset).
    projection_dim: dimensions of the coreset's random projection (`coreset_indices`).
    seed: the coreset's random key.
    masks: optional uint8 (N, H, W) lung label maps: only lung patches enter the bank.
    blur_sigma: the maps' Gaussian blur in image pixels (0: none).
    chunk: bank rows per nearest-neighbour step (memory (queries, chunk) at scoring).
    batch_size: images per jitted scoring call.

  Returns:
    The `PatchCore`.

  Raises:
    ValueError: no image or no (lung) patch, images that are not uint8 (N, H, W), coreset_fraction
      outside (0, 1], masks of another shape, features that are not (N, h, w, C) or not finite,
      chunk or batch_size < 1, a negative blur_sigma.
  """
  if not 0.0 < coreset_fraction <= 1.0:      # also refuses NaN
    raise ValueError(f"fit_patchcore: coreset_fraction must be in (0, 1], got {coreset_fraction!r}")
  if chunk < 1 or batch_size < 1 or not blur_sigma >= 0:
    raise ValueError(f"fit_patchcore: expected chunk >= 1, batch_size >= 1 and blur_sigma >= 0, got {chunk}, "
                     f"{batch_size} and {blur_sigma}")
  images = _check_images(normal_images, "fit_patchcore")
  if len(images) == 0:
    raise ValueError("fit_patchcore: no normal image: the memory bank would be empty")
  features = _patch_features(features_fn, images, "fit_patchcore")
  grid = tuple(int(s) for s in features.shape[1:3])
  if masks is not None:
    patches = features[_grid_mask(_check_masks(masks, images, "fit_patchcore"), grid)]
  else:
    patches = features.reshape(-1, features.shape[-1])
  if len(patches) == 0:
    raise ValueError("fit_patchcore: no lung patch in the training images: the memory bank would be empty")
  n = max(1, int(round(coreset_fraction * len(patches))))
  if n < len(patches):
    patches = patches[coreset_indices(patches, n, jax.random.key(seed), projection_dim=projection_dim)]
  settings = {"coreset_fraction": float(coreset_fraction), "projection_dim": projection_dim, "seed": int(seed),
              "n_images": int(len(images)), "n_patches": int(features.shape[0] * grid[0] * grid[1]),
              "masked": masks is not None, "blur_sigma": float(blur_sigma), "chunk": int(chunk),
              "batch_size": int(batch_size)}
  return PatchCore(features_fn, np.ascontiguousarray(patches, np.float32), grid, settings)


def fit_encoder_patchcore(directory: str | os.PathLike, encoder_dir: str | os.PathLike, normal_images, *,
                          stages: tuple[str, ...] = ("stage1",), normalise_exposure: bool = False,
                          masks=None, coreset_fraction: float = 0.01, seed: int = 0,
                          metadata: dict | None = None) -> PatchCore:
  """PatchCore on the CXR encoder's patch features of training normals, written to `directory`.

  Args:
    directory: the folder to write (`save_patchcore`); `load_patchcore(directory)` rebuilds the
      extractor from its record.
    encoder_dir: the CXR encoder checkpoint (e.g. `checkpoints/encoder_cxr/encoder`).
    normal_images: uint8 (N, H, W) normal training radiographs (or a `data.CXRDataset` of them).
    stages: the encoder stages concatenated on the finest grid (`cxr_encoder_features`).
    normalise_exposure: map every image (these and the queries) to an exposure reference fitted
      on these images (`jaxcxr.exposure.fit_reference`, region "body") before the encoder.
    masks: optional lung label maps of the images: only lung patches enter the bank.
    coreset_fraction, seed: as `fit_patchcore`.

    The defaults (stage1, coreset fraction 0.01, no exposure normalisation; with lung masks) are
    the setting chosen on the pneumonia task's validation patients with the shipped encoder
    (`checkpoints/patchcore_encoder_cxr/MODEL_CARD.md`).
    metadata: JSON-serialisable entries stored beside the extractor's record (e.g. the data).

  Returns:
    The fitted `PatchCore`.

  Raises:
    ValueError: as `fit_patchcore` and `extractor_features`.
    jaxcxr.checkpoints.CheckpointError: encoder_dir is not a model checkpoint.
  """
  images = _check_images(normal_images, "fit_encoder_patchcore")
  reference = exposure.fit_reference(images) if normalise_exposure and len(images) else None
  record = encoder_extractor(encoder_dir, stages, reference)
  model = fit_patchcore(extractor_features(record), images, coreset_fraction=coreset_fraction, seed=seed, masks=masks)
  save_patchcore(directory, model, metadata={**(metadata or {}), "extractor": record})
  return model


def save_patchcore(directory: str | os.PathLike, model: PatchCore, *, metadata: dict | None = None) -> pathlib.Path:
  """Writes the memory bank (`memory_bank.npz`) and its settings (`patchcore.json`) to a folder, each atomically.

  Args:
    directory: the folder (created).
    model: a fitted `PatchCore`.
    metadata: JSON-serialisable entries stored beside the settings (e.g. the feature extractor).

  Returns:
    The folder.
  """
  directory = pathlib.Path(directory)
  io.save_npz(directory / "memory_bank.npz", {"memory_bank": model.memory_bank})
  io.save_json(directory / "patchcore.json", {"format": _FORMAT, "grid": list(model.grid),
                                              "settings": model.settings, "metadata": metadata or {}})
  return directory


def load_patchcore(directory: str | os.PathLike, features_fn: FeaturesFn | None = None) -> PatchCore:
  """Reads a folder written by `save_patchcore`.

  Args:
    directory: the folder.
    features_fn: the extractor the bank was built with; None rebuilds it from the folder's
      record (`metadata["extractor"]`, written for banks on the CXR encoder: `encoder_extractor`).

  Raises:
    ValueError: a missing or unreadable folder, another format, a bank that is not (M > 0, C),
      or no features_fn for a folder that records no extractor.
    jaxcxr.checkpoints.CheckpointError: a recorded encoder that is missing or has other weights.
  """
  directory = pathlib.Path(directory)
  try:
    info = json.loads((directory / "patchcore.json").read_text())
    with np.load(directory / "memory_bank.npz") as f:
      bank = np.asarray(f["memory_bank"], np.float32)
  except (OSError, KeyError, ValueError) as e:
    raise ValueError(f"load_patchcore: {directory} is not a PatchCore folder ({e})") from e
  if info.get("format") != _FORMAT or bank.ndim != 2 or len(bank) == 0:
    raise ValueError(f"load_patchcore: {directory}: format {info.get('format')!r}, bank shape {bank.shape}; "
                     f"expected {_FORMAT!r} and a non-empty (M, C) bank")
  if features_fn is None:
    record = (info.get("metadata") or {}).get("extractor")
    if record is None:
      raise ValueError(f"load_patchcore: {directory} records no feature extractor; pass the features_fn the bank "
                       "was built with")
    features_fn = extractor_features(record)
  return PatchCore(features_fn, bank, tuple(info["grid"]), dict(info["settings"]))


# ----------------------------------------------------------------------------- feature extractors


def _concat_on_grid(maps: list[np.ndarray]) -> np.ndarray:
  """Feature maps (N, h_i, w_i, C_i) -> (N, h, w, sum C_i) on the finest grid, coarser ones upsampled bilinearly."""
  h, w = max(m.shape[1] for m in maps), max(m.shape[2] for m in maps)
  out = [m if m.shape[1:3] == (h, w) else
         np.asarray(jax.image.resize(jnp.asarray(m), (m.shape[0], h, w, m.shape[3]), "linear")) for m in maps]
  return np.concatenate(out, axis=-1).astype(np.float32)


def cxr_encoder_features(encoder, names: tuple[str, ...] = ("stage2", "stage3"), *,
                         batch_size: int = 64) -> FeaturesFn:
  """A `features_fn` from the self-supervised CXR encoder: chosen stages, concatenated on the finest grid.

  Args:
    encoder: a `jaxcxr.models.cxr_encoder.CXREncoder`.
    names: stage outputs ("stage1", ...); with the default encoder (128 px) stage2 and stage3 are
      16x16x64 and 8x8x128, so the features are 16x16x192.
    batch_size: images per jitted encoder call.

  Returns:
    uint8 (N, H, W) -> float32 (N, h, w, C).
  """
  names = tuple(names)
  if not names or "embedding" in names:
    raise ValueError(f"cxr_encoder_features: expected stage names, got {names}")

  def features_fn(images: np.ndarray) -> np.ndarray:
    out = image_features(encoder, images, names, batch_size=batch_size)
    return _concat_on_grid([out[n] for n in names])

  return features_fn


def encoder_extractor(encoder_dir: str | os.PathLike, stages: tuple[str, ...] = ("stage2", "stage3"),
                      reference: exposure.ExposureReference | None = None) -> dict:
  """The CXR encoder's `features_fn` as a JSON record (for `save_patchcore`'s metadata "extractor").

  Args:
    encoder_dir: the encoder checkpoint (e.g. `checkpoints/encoder_cxr/encoder`); stored relative to
      the checkpoints root when it lies under it, so the record survives a move of the checkout.
    stages: the encoder's stage outputs, concatenated on the finest grid (`cxr_encoder_features`).
    reference: an exposure reference (`jaxcxr.exposure.fit_reference`) the images are normalised
      to before the encoder, or None for the raw images.

  Returns:
    {"kind": "cxr_encoder", "checkpoint", "model_id", "stages", "exposure" (the reference's
    `to_dict`, or None)}.

  Raises:
    jaxcxr.checkpoints.CheckpointError: encoder_dir is not a model checkpoint.
    ValueError: no stage, or "embedding" among them.
  """
  stages = tuple(stages)
  if not stages or "embedding" in stages:
    raise ValueError(f"encoder_extractor: expected stage names, got {stages}")
  directory = pathlib.Path(encoder_dir).resolve()
  model_id = checkpoints.model_id(directory)
  root = checkpoints.checkpoints_root().resolve()
  where = directory.relative_to(root).as_posix() if directory.is_relative_to(root) else str(directory)
  return {"kind": "cxr_encoder", "checkpoint": where, "model_id": model_id, "stages": list(stages),
          "exposure": None if reference is None else reference.to_dict()}


def extractor_features(record: dict, *, batch_size: int = 64) -> FeaturesFn:
  """The `features_fn` an `encoder_extractor` record describes: encoder loaded and checked by model id.

  Raises:
    ValueError: a record of another kind, or stages the encoder does not have.
    jaxcxr.checkpoints.CheckpointError: the encoder is missing, or its weights are not the recorded ones.
    jaxcxr.data.DataError: an invalid exposure reference.
  """
  if not isinstance(record, dict) or record.get("kind") != "cxr_encoder":
    raise ValueError(f"extractor_features: expected a record of encoder_extractor, got {record!r:.200}")
  path = pathlib.Path(record["checkpoint"])
  directory = path if path.is_absolute() else checkpoints.checkpoints_root() / path
  found = checkpoints.model_id(directory)
  if found != record["model_id"]:
    raise checkpoints.CheckpointError(f"{directory}: encoder weights {found}, but the memory bank was built on "
                                      f"{record['model_id']}; rebuild the bank (`jaxcxr train patchcore`)")
  encoder = load_cxr_encoder(directory)
  stages = tuple(record["stages"])
  known = tuple(encoder.config.feature_shapes())
  if not stages or not set(stages) <= set(known):
    raise ValueError(f"extractor_features: stages {stages}; the encoder has {known}")
  features_fn = cxr_encoder_features(encoder, stages, batch_size=batch_size)
  if record.get("exposure") is None:
    return features_fn
  reference = exposure.ExposureReference.from_dict(record["exposure"])
  return lambda images: features_fn(exposure.normalise(images, reference))


@functools.partial(jax.jit, static_argnames=("graphdef", "levels"))
def _unet_levels(graphdef, state, images_uint8, levels):
  """The U-Net encoder's outputs at `levels` for uint8 (B, R, R) images."""
  unet = nnx.merge(graphdef, state)
  h = (data.to_unit(images_uint8)[..., None] * 2.0 - 1.0).astype(jnp.dtype(unet.config.dtype))
  out = {}
  for i, block in enumerate(unet.encoder):
    if i > max(levels):
      break
    if i:
      h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    h = block(h)
    if i in levels:
      out[i] = h.astype(jnp.float32)
  return out


def unet_encoder_features(unet, levels: tuple[int, ...] = (2, 3), *, batch_size: int = 16) -> FeaturesFn:
  """A `features_fn` from a lung U-Net's encoder (supervised features): chosen levels, on the finest grid.

  Level i is the encoder block after i max-poolings (side R / 2**i at the U-Net's resolution R;
  images are resized to R with `data.resize_uint8`).

  Args:
    unet: a `jaxcxr.models.unet.UNet` (e.g. the shipped `unet_256`).
    levels: encoder levels, each in [0, len(channels)).
    batch_size: images per jitted call.

  Returns:
    uint8 (N, H, W) -> float32 (N, h, w, C).

  Raises:
    ValueError: an unknown level.
  """
  levels = tuple(sorted(set(levels)))
  if not levels or levels[0] < 0 or levels[-1] >= len(unet.config.channels):
    raise ValueError(f"unet_encoder_features: levels must be in [0, {len(unet.config.channels)}), got {levels}")
  graphdef, state = nnx.split(unet)

  def features_fn(images: np.ndarray) -> np.ndarray:
    x = data.resize_uint8(np.asarray(images), unet.config.resolution)
    out = map_batches(lambda b: _unet_levels(graphdef, state, b, levels), x, batch_size)
    return _concat_on_grid([out[i] for i in levels])

  return features_fn


# ----------------------------------------------------------------------------- scorer


@dataclasses.dataclass
class PatchcoreScorer(AbstractAnomalyScorer):
  """PatchCore for `evaluate_anomaly`: the largest patch distance, inside the lungs when a U-Net is given.

  The residual is the PatchCore map (float16 (N, H, W), nearest-neighbour feature distances,
  not bounded by 2 as the image residuals of the GAN methods); there are no components.
  """

  patchcore: PatchCore
  unet: object | None = None
  batch_size: int = 16
  name: str = "patchcore"

  def __call__(self, dataset, *, progress):
    masks = None
    if self.unet is not None:
      masks = predict_masks(self.unet, dataset.images, batch_size=self.batch_size)
    score, maps = self.patchcore.score(dataset.images, masks, batch_size=self.batch_size, progress=progress)
    return score, maps.astype(np.float16), {}
