"""What the three anomaly methods share: the scorer interface, their query images, lung-masked residuals.

* `AbstractAnomalyScorer`: what `jaxcxr.anomaly.evaluate_anomaly` needs of a method (each
  method module has one: `AnoganScorer`, `FanoganScorer`, `HealthyganScorer`).
* `lung_residual_scores`, `LungMaskedScorer`: any method's residual map scored inside the lungs.
* `query_images`, `check_batch_size`: the input checks of the one-pass methods (f-AnoGAN, HealthyGAN).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxcxr import data
from jaxcxr.models.unet import UNet, predict_masks

__all__ = [
    "METHODS",
    "AbstractAnomalyScorer",
    "LungMaskedScorer",
    "check_batch_size",
    "lung_residual_scores",
    "query_images",
]

# The anomaly methods, each a module of `jaxcxr.anomaly` of that name.
METHODS = ("anogan", "fanogan", "healthygan", "patchcore")


class AbstractAnomalyScorer:
  """What `evaluate_anomaly` needs of a method: per-image scores (higher = more abnormal) and residuals."""

  name: str

  def __call__(self, dataset: data.CXRDataset, *,
               progress: bool) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Returns (score float32 (N,), residual float16 (N, R, R) in [0, 2], {component name: (N,) score}).

    The components are the terms the score adds up (AnoGAN's residual and discrimination
    scores, f-AnoGAN's image and feature losses); `evaluate_anomaly` reports each one's AUC.
    """
    raise NotImplementedError


def query_images(images, resolution: int, what: str) -> tuple[np.ndarray, data.CXRDataset | None]:
  """The images a one-pass method scores, resized to its resolution (`data.resize_uint8`).

  Args:
    images: a `data.CXRDataset`, or uint8 (N, H, W) square radiographs.
    resolution: the method's side R.
    what: the caller's name, for the error message.

  Returns:
    (uint8 (N, R, R) images, the dataset or None).

  Raises:
    ValueError: images that are neither a dataset nor uint8 (N, H, W).
  """
  dataset = images if isinstance(images, data.CXRDataset) else None
  array = dataset.images if dataset is not None else images
  if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim not in (3, 4):
    raise ValueError(f"{what}: expected a CXRDataset or uint8 images (N, H, W), got "
                     f"{getattr(array, 'dtype', type(array).__name__)} {np.shape(array)}")
  return data.resize_uint8(array, resolution), dataset


def check_batch_size(batch_size: int, what: str) -> None:
  """Raises ValueError, naming `what`, unless batch_size > 0."""
  if batch_size <= 0:
    raise ValueError(f"{what}: expected batch_size > 0, got {batch_size}")


def lung_residual_scores(residual, masks) -> np.ndarray:
  """Mean squared residual inside the lungs, per image: the frame-blind anomaly score.

  A normal-only GAN (or an encoder, or a translator) also fails to reproduce what is no
  pathology at all: black borders, collimation edges, exposure. Measured on `fanogan_256`'s
  validation patients, those dominated the whole-image residual (ROC AUC 0.61); inside the
  lungs it reached 0.72.

  Args:
    residual: float (N, R, R) residual maps (|x - reconstruction|, any method).
    masks: uint8 (N, S, S) lung label maps of the same images (0 background; `predict_masks`),
      resized here to R x R (area fraction > 0.5 counts as lung).

  Returns:
    float32 (N,). An image without lung pixels scores its whole-image mean squared residual.

  Raises:
    ValueError: mismatched shapes, a non-finite residual, or masks that are not label maps (0, 1, 2).
  """
  residual, masks = np.asarray(residual), np.asarray(masks)
  if residual.dtype.kind not in "iuf" or residual.ndim != 3 or masks.ndim != 3 or residual.shape[0] != masks.shape[0]:
    raise ValueError(f"lung_residual_scores: expected residual (N, R, R) of real numbers and masks (N, S, S), got "
                     f"{residual.dtype} {residual.shape} and {masks.shape}")
  residual = residual.astype(np.float32)
  if not np.isfinite(residual).all():
    raise ValueError("lung_residual_scores: the residual contains NaN or inf")
  if masks.dtype.kind not in "biu" or not np.isin(masks, (0, 1, 2)).all():
    raise ValueError(f"lung_residual_scores: masks must be integer label maps with values 0, 1, 2 "
                     f"(`predict_masks`), got {masks.dtype} values {np.unique(masks)[:6].tolist()}")
  r = residual.shape[1]
  lung = np.asarray(jax.image.resize(jnp.asarray(masks > 0, jnp.float32), (masks.shape[0], r, r), "linear")) > 0.5
  square = residual ** 2
  inside = lung.sum(axis=(1, 2))
  masked = (square * lung).sum(axis=(1, 2)) / np.maximum(inside, 1)
  return np.where(inside > 0, masked, square.mean(axis=(1, 2))).astype(np.float32)


@dataclasses.dataclass
class LungMaskedScorer(AbstractAnomalyScorer):
  """Any method's residual, scored inside the lungs only (`lung_residual_scores`).

  The lungs come from a U-Net (e.g. the shipped `unet_256`) on the query images; the inner
  method's own score stays available as the component "unmasked".
  """

  inner: AbstractAnomalyScorer
  unet: UNet
  batch_size: int = 16

  @property
  def name(self) -> str:
    return f"{self.inner.name}_lungs"

  def __call__(self, dataset, *, progress):
    score, residual, components = self.inner(dataset, progress=progress)
    masks = predict_masks(self.unet, dataset.images, batch_size=self.batch_size)
    return lung_residual_scores(residual, masks), residual, {**components, "unmasked": score}


