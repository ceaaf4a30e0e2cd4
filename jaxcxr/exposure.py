"""Exposure and contrast normalisation of radiographs: histogram standardisation to a reference.

A radiograph's grey levels depend on the exposure, the detector and the display window as
much as on the patient. A judge that reads brightness reads those. This module maps each
image's grey levels onto a reference learned from training normals, so that brightness
and contrast carry (nearly) no information across images:

* Landmarks: the percentiles `PERCENTILES` (1, 10, 20, ..., 90, 99) of an image's grey
  levels inside a region (Nyúl & Udupa's decile landmarks with the 1st and 99th
  percentiles as the ends). Percentiles of uint8 images are read from the histogram with
  each grey level v spread uniformly over [v - 0.5, v + 0.5), so landmarks are strictly
  increasing real numbers and the quantile function is continuous.
* Reference (`fit_reference`): the mean of the training images' landmarks, i.e. the
  quantile function of the images' 1-D Wasserstein barycentre.
* Mapping (`normalise`): per image, the piecewise-linear function through (image landmark,
  reference landmark) pairs, anchored at the ends of the grey range (black stays black,
  white stays white: `transfer`), applied to every pixel (also outside the region), rounded
  and clipped to uint8. It is strictly increasing on [0, 255] before rounding, so the
  ranking of grey levels within an image is kept.

Regions:
* "body" (no masks): the pixels brighter than `lo + body_fraction * (hi - lo)`, lo and hi
  the image's 0.5th and 99.5th percentiles and `body_fraction` 0.05 by default. This drops
  the zero padding and the air outside the patient but keeps the lungs: measured on the
  masked development archives, it leaves out no lung pixel in the median image and under 5%
  of the lungs in 99% of the images. (Otsu's threshold is no use here: it splits the
  lungs from the mediastinum and leaves out 60-70% of the lungs.)
* "lungs" (masks given, uint8 labels 0/1/2 or bool; any label > 0 counts): inside the lung
  mask, e.g. the archives' masks or the lung U-Net's predictions.
* "image": every pixel.

Numpy on the host: a 256x256 batch of 64 normalises in a few tens of milliseconds
(a histogram and a 256-entry lookup table per image), deterministic, no compilation.
The reference is plain data (`ExposureReference.to_dict` / `from_dict`), so a model card
can record it.

Reference:
  L. G. Nyúl, J. K. Udupa, X. Zhang, "New variants of a method of MRI scale
  standardization", IEEE TMI 19(2):143-150, 2000.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxcxr.data import CXRDataset, DataError

__all__ = [
    "BODY_FRACTION",
    "MIN_REGION_PIXELS",
    "PERCENTILES",
    "REGIONS",
    "ExposureReference",
    "fit_reference",
    "histogram_quantiles",
    "landmarks",
    "lookup_tables",
    "masked_histograms",
    "normalise",
    "normalise_like_training",
    "region_histograms",
    "transfer",
]

PERCENTILES: tuple[float, ...] = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)
BODY_FRACTION = 0.05
REGIONS = ("body", "lungs", "image")
# A region with fewer pixels than this (e.g. an empty predicted lung mask) has no landmarks.
MIN_REGION_PIXELS = 64
# Images per chunk: bounds the int64 index arrays of the histograms (64 x 256 x 256 x 8 bytes = 32 MiB).
_CHUNK = 64
_LEVELS = 256


# ----------------------------------------------------------------------------- histograms


def _check_images(images: Any, what: str = "images") -> np.ndarray:
  """uint8 (N, H, W) (a trailing channel of 1 dropped); DataError otherwise."""
  images = np.asarray(images)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  if images.dtype != np.uint8:
    raise DataError(f"{what}: expected uint8 images (radiographic display, [0, 255]), got {images.dtype}")
  if images.ndim != 3 or images.shape[0] == 0 or min(images.shape[1:]) == 0:
    raise DataError(f"{what}: expected a non-empty stack of shape (N, H, W), got {images.shape}")
  return images


def _check_masks(masks: Any, shape: tuple[int, ...], what: str = "masks") -> np.ndarray:
  """bool (N, H, W): the pixels with a label > 0; DataError for another shape or a non-integer dtype."""
  masks = np.asarray(masks)
  if masks.ndim == 4 and masks.shape[-1] == 1:
    masks = masks[..., 0]
  if masks.shape != shape:
    raise DataError(f"{what}: shape {masks.shape}; expected {shape} (one mask per image, same size)")
  if masks.dtype != bool and not np.issubdtype(masks.dtype, np.integer):
    raise DataError(f"{what}: dtype {masks.dtype}; expected bool or integer labels (0 background, 1/2 lungs)")
  return masks > 0


def masked_histograms(images: Any, keep: Any | None = None) -> np.ndarray:
  """Grey-level counts of each uint8 image, over the pixels where `keep` is True (all pixels without it).

  Args:
    images: uint8 (N, H, W).
    keep: bool (N, H, W) or (H, W) (one region for every image), or None.

  Returns:
    int64 (N, 256): counts[i, v] = number of kept pixels of image i with value v.

  Raises:
    jaxcxr.data.DataError: images not uint8 (N, H, W), or `keep` of another shape.
  """
  images = _check_images(images)
  n = images.shape[0]
  if keep is not None:
    keep = np.asarray(keep, bool)
    if keep.shape == images.shape[1:]:
      keep = np.broadcast_to(keep, images.shape)
    if keep.shape != images.shape:
      raise DataError(f"masked_histograms: keep has shape {keep.shape}; expected {images.shape} or "
                      f"{images.shape[1:]}")
  counts = np.empty((n, _LEVELS), np.int64)
  for start in range(0, n, _CHUNK):
    chunk = images[start: start + _CHUNK]
    index = chunk.reshape(len(chunk), -1).astype(np.int64) + _LEVELS * np.arange(len(chunk))[:, None]
    if keep is not None:
      index = index[keep[start: start + _CHUNK].reshape(len(chunk), -1)]
    counts[start: start + len(chunk)] = np.bincount(index.ravel(), minlength=_LEVELS * len(chunk)).reshape(
        len(chunk), _LEVELS)
  return counts


def histogram_quantiles(counts: Any, q: Any) -> np.ndarray:
  """Continuous quantiles of grey-level histograms, each level v spread uniformly over [v - 0.5, v + 0.5).

  The quantile function is continuous and strictly increasing in q, so landmarks at
  distinct q never tie (np.percentile's methods tie on flat stretches of a uint8 image).

  Args:
    counts: (N, 256) non-negative counts (e.g. `masked_histograms`), each row with a positive total.
    q: quantiles in [0, 1], shape (Q,).

  Returns:
    float64 (N, Q) in [-0.5, 255.5].

  Raises:
    ValueError: a row without counts, negative counts, or q outside [0, 1].
  """
  counts = np.asarray(counts, np.float64)
  q = np.atleast_1d(np.asarray(q, np.float64))
  if counts.ndim != 2 or counts.shape[1] != _LEVELS:
    raise ValueError(f"histogram_quantiles: expected counts of shape (N, {_LEVELS}), got {counts.shape}")
  if q.ndim != 1 or not np.all((q >= 0) & (q <= 1)):
    raise ValueError(f"histogram_quantiles: quantiles must lie in [0, 1], got {q}")
  if (counts < 0).any():
    raise ValueError("histogram_quantiles: negative counts")
  totals = counts.sum(axis=1)
  if (totals <= 0).any():
    raise ValueError(f"histogram_quantiles: {int((totals <= 0).sum())} histogram(s) without any pixel")
  cdf = np.cumsum(counts, axis=1)                                   # (N, 256)
  target = q[None, :] * totals[:, None]                             # (N, Q)
  # The first level whose cumulative count reaches the target (a level with a positive count).
  level = np.sum(cdf[:, None, :] < target[:, :, None], axis=2)      # (N, Q)
  level = np.minimum(level, _LEVELS - 1)
  below = np.where(level > 0, np.take_along_axis(cdf, np.maximum(level - 1, 0), axis=1), 0.0)
  inside = np.take_along_axis(counts, level, axis=1)
  # q = 0 lands on a level before the first counted one; move it up to the first counted level.
  empty = inside <= 0
  if empty.any():
    first = np.argmax(counts > 0, axis=1)[:, None] * np.ones_like(level)
    level = np.where(empty, first, level)
    below = np.where(empty, 0.0, below)
    inside = np.take_along_axis(counts, level, axis=1)
  return level - 0.5 + (target - below) / inside


def _body_threshold(whole: np.ndarray, body_fraction: float) -> np.ndarray:
  """float64 (N,): lo + body_fraction (hi - lo), lo/hi the 0.5th/99.5th percentiles of each image's histogram."""
  lo, hi = histogram_quantiles(whole, [0.005, 0.995]).T
  return lo + body_fraction * (hi - lo)


def region_histograms(images: Any, masks: Any | None = None, *, region: str = "body",
                      body_fraction: float = BODY_FRACTION) -> np.ndarray:
  """Grey-level histograms of each image's body, lungs or whole image (see the module docstring).

  Args:
    images: uint8 (N, H, W).
    masks: lung masks (N, H, W), uint8 labels or bool; required for region "lungs", refused otherwise.
    region: "body", "lungs" or "image".
    body_fraction: the body threshold's place between the image's 0.5th and 99.5th percentiles.

  Returns:
    int64 (N, 256).

  Raises:
    jaxcxr.data.DataError: bad images or masks, an unknown region, masks missing for "lungs" or
      given for another region, or a region of fewer than `MIN_REGION_PIXELS` pixels in some image.
  """
  images = _check_images(images)
  if region not in REGIONS:
    raise DataError(f"unknown region {region!r}; expected one of {', '.join(REGIONS)}")
  if (region == "lungs") != (masks is not None):
    raise DataError("region 'lungs' needs lung masks" if masks is None else
                    f"lung masks were given for region {region!r}; use region='lungs' to normalise inside them")
  if not 0.0 <= body_fraction < 1.0:
    raise DataError(f"body_fraction must be in [0, 1), got {body_fraction}")
  if region == "lungs":
    counts = masked_histograms(images, _check_masks(masks, images.shape))
  else:
    counts = masked_histograms(images)
    if region == "body":
      threshold = _body_threshold(counts, body_fraction)
      counts = np.where(np.arange(_LEVELS)[None, :] > threshold[:, None], counts, 0)
  small = np.flatnonzero(counts.sum(axis=1) < MIN_REGION_PIXELS)
  if small.size:
    raise DataError(f"the {region} region of {small.size} image(s) (e.g. index {small[:5].tolist()}) has fewer than "
                    f"{MIN_REGION_PIXELS} pixels (an empty lung mask?); check the masks or use another region")
  return counts


def landmarks(images: Any, masks: Any | None = None, *, region: str = "body",
              percentiles: Sequence[float] = PERCENTILES, body_fraction: float = BODY_FRACTION) -> np.ndarray:
  """Each image's landmark grey levels: the `percentiles` of its region (continuous, strictly increasing).

  Returns:
    float64 (N, len(percentiles)).

  Raises:
    jaxcxr.data.DataError: as `region_histograms`, or percentiles not strictly increasing in [0, 100].
  """
  percentiles = _check_percentiles(percentiles)
  counts = region_histograms(images, masks, region=region, body_fraction=body_fraction)
  return histogram_quantiles(counts, np.asarray(percentiles) / 100.0)


def _check_percentiles(percentiles: Sequence[float]) -> tuple[float, ...]:
  p = np.asarray(percentiles, np.float64)
  if p.ndim != 1 or p.size < 2 or not np.all(np.diff(p) > 0) or p[0] < 0 or p[-1] > 100:
    raise DataError(f"percentiles must be at least 2 strictly increasing values in [0, 100], got {percentiles}")
  return tuple(float(v) for v in p)


# ----------------------------------------------------------------------------- reference


@dataclasses.dataclass(frozen=True)
class ExposureReference:
  """The grey levels a normalised image's region is mapped to (`fit_reference`).

  Attributes:
    landmarks: the reference grey level at each percentile (strictly increasing).
    percentiles: the landmark percentiles in [0, 100].
    region: "body", "lungs" or "image": where landmarks are read.
    body_fraction: the body threshold (see the module docstring), used with region "body".
    n_images: how many images the reference was learned from.
  """

  landmarks: tuple[float, ...]
  percentiles: tuple[float, ...] = PERCENTILES
  region: str = "body"
  body_fraction: float = BODY_FRACTION
  n_images: int = 0

  def __post_init__(self):
    object.__setattr__(self, "percentiles", _check_percentiles(self.percentiles))
    lm = np.asarray(self.landmarks, np.float64)
    if (lm.shape != (len(self.percentiles),) or not np.all(np.isfinite(lm)) or not np.all(np.diff(lm) > 0)
        or lm[0] <= -0.5 or lm[-1] >= 255.5):
      raise DataError(f"ExposureReference: landmarks must be {len(self.percentiles)} strictly increasing grey "
                      f"levels (one per percentile) inside (-0.5, 255.5), got {self.landmarks}")
    if self.region not in REGIONS:
      raise DataError(f"ExposureReference: unknown region {self.region!r}; expected one of {', '.join(REGIONS)}")
    if not 0.0 <= self.body_fraction < 1.0:
      raise DataError(f"ExposureReference: body_fraction must be in [0, 1), got {self.body_fraction}")
    object.__setattr__(self, "landmarks", tuple(float(v) for v in lm))

  def to_dict(self) -> dict[str, Any]:
    """A JSON-serialisable record (e.g. for a model card); `from_dict` reads it back."""
    return {"method": "histogram standardisation (piecewise-linear landmark matching)",
            "landmarks": list(self.landmarks), "percentiles": list(self.percentiles), "region": self.region,
            "body_fraction": self.body_fraction, "n_images": self.n_images}

  @classmethod
  def from_dict(cls, record: dict[str, Any]) -> ExposureReference:
    """The reference a `to_dict` record describes.

    Raises:
      jaxcxr.data.DataError: a record without landmarks, or with invalid values.
    """
    if not isinstance(record, dict) or "landmarks" not in record:
      raise DataError(f"ExposureReference.from_dict: expected a dict with 'landmarks', got {record!r:.200}")
    return cls(landmarks=tuple(record["landmarks"]), percentiles=tuple(record.get("percentiles", PERCENTILES)),
               region=record.get("region", "body"), body_fraction=float(record.get("body_fraction", BODY_FRACTION)),
               n_images=int(record.get("n_images", 0)))


def fit_reference(images: Any, masks: Any | None = None, *, region: str | None = None,
                  percentiles: Sequence[float] = PERCENTILES,
                  body_fraction: float = BODY_FRACTION) -> ExposureReference:
  """The reference landmarks of a set of images (e.g. the training normals): the mean of their landmarks.

  Args:
    images: uint8 (N, H, W).
    masks: lung masks (N, H, W) (uint8 labels or bool): landmarks are read inside the lungs.
    region: "body", "lungs" or "image"; by default "lungs" with masks, else "body".
    percentiles: the landmark percentiles.
    body_fraction: the body threshold (region "body").

  Returns:
    An `ExposureReference`.

  Raises:
    jaxcxr.data.DataError: as `region_histograms`.

  Examples:
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(20, 236, (4, 32, 32)).astype(np.uint8)
    >>> reference = fit_reference(images)
    >>> normalise(images, reference).shape
    (4, 32, 32)
  """
  region = ("lungs" if masks is not None else "body") if region is None else region
  percentiles = _check_percentiles(percentiles)
  lm = landmarks(images, masks, region=region, percentiles=percentiles, body_fraction=body_fraction)
  return ExposureReference(landmarks=tuple(lm.mean(axis=0)), percentiles=percentiles, region=region,
                           body_fraction=body_fraction, n_images=int(lm.shape[0]))


# ----------------------------------------------------------------------------- mapping


def transfer(values: Any, source: Any, target: Any, *, ends: tuple[float, float] = (-0.5, 255.5)) -> np.ndarray:
  """The piecewise-linear map through (source[k], target[k]), anchored at the grey range's ends.

  Below the first landmark it runs linearly from (ends[0], ends[0]), above the last to
  (ends[1], ends[1]), and beyond the ends it continues with the end segments' slopes: black
  stays black and white stays white, whatever the exposure.

  Args:
    values: grey levels (any shape).
    source: (K,) strictly increasing landmarks of the image, K >= 1, strictly inside `ends`.
    target: (K,) strictly increasing reference landmarks, strictly inside `ends`.
    ends: the grey range's ends, (-0.5, 255.5) for uint8 levels spread over [v - 0.5, v + 0.5).

  Returns:
    float64, the shape of `values`: target[k] exactly at source[k], strictly increasing in `values`.

  Raises:
    ValueError: landmarks of different lengths, none, not strictly increasing, or not inside `ends`.
  """
  values = np.asarray(values, np.float64)
  source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
  if source.ndim != 1 or source.shape != target.shape or source.size < 1:
    raise ValueError(f"transfer: expected source and target landmarks of one shape (K,), K >= 1, got "
                     f"{source.shape} and {target.shape}")
  lo, hi = float(ends[0]), float(ends[1])
  xp, fp = np.concatenate([[lo], source, [hi]]), np.concatenate([[lo], target, [hi]])
  if not (np.all(np.diff(xp) > 0) and np.all(np.diff(fp) > 0)):
    raise ValueError(f"transfer: landmarks must be strictly increasing and strictly inside {ends}")
  out = np.interp(values, xp, fp)
  low_slope = (fp[1] - fp[0]) / (xp[1] - xp[0])
  high_slope = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
  out = np.where(values < lo, lo + (values - lo) * low_slope, out)
  return np.where(values > hi, hi + (values - hi) * high_slope, out)


def _region_of(reference: ExposureReference, masks: Any | None) -> None:
  if reference.region == "lungs" and masks is None:
    raise DataError("the exposure reference was fitted inside the lungs; pass the images' lung masks")
  if reference.region != "lungs" and masks is not None:
    raise DataError(f"the exposure reference was fitted on the {reference.region} region, not the lungs; "
                    "normalise without masks, or fit the reference with masks")


def lookup_tables(images: Any, reference: ExposureReference, masks: Any | None = None) -> np.ndarray:
  """Each image's grey-level map to the reference: float64 (N, 256), entry v the new value of level v.

  Before rounding and clipping (`normalise` applies them): strictly increasing, and equal to
  the reference landmarks at the image's own landmarks.

  Raises:
    jaxcxr.data.DataError: as `region_histograms`; masks missing for a lung reference or given for another.
  """
  if not isinstance(reference, ExposureReference):
    raise DataError(f"expected an ExposureReference (fit_reference), got {type(reference).__name__}")
  _region_of(reference, masks)
  lm = landmarks(images, masks, region=reference.region, percentiles=reference.percentiles,
                 body_fraction=reference.body_fraction)
  levels = np.arange(_LEVELS, dtype=np.float64)
  return np.stack([transfer(levels, row, reference.landmarks) for row in lm])


def normalise(images: Any, reference: ExposureReference, masks: Any | None = None) -> np.ndarray:
  """Maps each image's grey levels onto the reference (`lookup_tables`, rounded, clipped to [0, 255]).

  Args:
    images: uint8 (N, H, W) or (N, H, W, 1).
    reference: from `fit_reference`.
    masks: the images' lung masks, exactly when the reference was fitted inside the lungs.

  Returns:
    uint8 images of the input's shape.

  Raises:
    jaxcxr.data.DataError: as `lookup_tables`.
  """
  shape = np.shape(images)
  images = _check_images(images)
  tables = np.clip(np.round(lookup_tables(images, reference, masks)), 0, 255).astype(np.uint8)
  out = np.take_along_axis(tables, images.reshape(len(images), -1).astype(np.intp), axis=1)
  return out.reshape(shape)


def normalise_like_training(train: CXRDataset, datasets: Sequence[CXRDataset], *, region: str,
                            lung_masks: Callable[[np.ndarray], np.ndarray] | None = None
                            ) -> tuple[ExposureReference, list[CXRDataset]]:
  """Every image of `datasets` (and `train`) mapped onto the reference of `train`'s normal images.

  How an evaluation measures what exposure does to a judge: the reference is fitted on the
  training patients' normals (label 0; all of `train` if it has none labelled), so no evaluated
  image shapes it, and the same mapping is applied to the training patients (for the trivial
  baselines fitted there) and to every evaluated set.

  Args:
    train: the training patients' images.
    datasets: the sets to normalise with the same reference (e.g. the evaluated part, the threshold part).
    region: "body", "lungs" or "image" (see the module docstring).
    lung_masks: images -> lung label maps (e.g. `jaxcxr.pretrained.lung_masker()`); needed for "lungs".

  Returns:
    (reference, [normalised train] + [each normalised dataset]); lung masks, labels and metadata unchanged.

  Raises:
    jaxcxr.data.DataError: an unknown region, "lungs" without `lung_masks`, or images as `normalise` refuses.
  """
  if region not in REGIONS:
    raise DataError(f"unknown exposure region {region!r}; expected one of {', '.join(REGIONS)}")
  if region == "lungs" and lung_masks is None:
    raise DataError("exposure normalisation inside the lungs needs a lung masker (e.g. the lung U-Net)")
  masks_of = (lambda images: np.asarray(lung_masks(images))) if region == "lungs" else (lambda images: None)
  normals = np.asarray(train.label) == 0
  reference_images = train.images[normals] if normals.any() else train.images
  reference = fit_reference(reference_images, masks_of(reference_images), region=region)
  out = [dataclasses.replace(ds, images=normalise(ds.images, reference, masks_of(ds.images)))
         for ds in (train, *datasets)]
  return reference, out
