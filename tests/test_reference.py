"""Reference tests: jaxcxr's numerical building blocks against the libraries they mirror.

On the real NIH fixture radiographs (24 uint8 256x256 images): SSIM, PSNR, histogram
equalisation and CLAHE against scikit-image; the four perceptual hashes bit for bit
against the `imagehash` package, with near-duplicate pairs among the fixture images plus
modified copies; ROC AUC and the PR curve against scikit-learn; the Fréchet distance
against a `scipy.linalg.sqrtm` computation and Dice against numpy. Then hypothesis
property tests on random inputs. Optional libraries are imported with
`pytest.importorskip`, and the property tests skip without hypothesis.
"""

import io

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from scipy import ndimage

from jaxcxr import imaging, metrics

try:
  import hypothesis
  from hypothesis import strategies
except ImportError:  # the property tests below skip
  hypothesis = strategies = None


@pytest.fixture(scope="module")
def radiographs(nih_path):
  """The 24 fixture radiographs, uint8 (24, 256, 256)."""
  if not nih_path.exists():
    pytest.skip(f"test fixture {nih_path} is missing")
  with np.load(nih_path, allow_pickle=False) as data:
    return data["images"]


def _jpeg(image, quality):
  from PIL import Image  # pylint: disable=g-import-not-at-top

  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
  return np.asarray(Image.open(buffer))


def _modified_copies(images):
  """24 altered copies, uint8: moved 2 px + noise, brighter, blurred, JPEG at quality 30 (6 images each)."""
  rng = np.random.default_rng(0)
  as_uint8 = lambda v: np.clip(np.rint(v), 0, 255).astype(np.uint8)
  moved = np.pad(images[:6], ((0, 0), (2, 0), (0, 0)), mode="edge")[:, : images.shape[1]]
  return np.concatenate([
      as_uint8(moved + rng.normal(0, 5, moved.shape)),
      as_uint8(images[6:12] * 1.1 + 5),
      as_uint8(ndimage.gaussian_filter(images[12:18].astype(np.float64), (0, 1.5, 1.5))),
      np.stack([_jpeg(image, 30) for image in images[18:24]]),
  ])


# ----------------------------------------------------------------------------- scikit-image


def test_ssim_psnr_match_skimage_on_uint8_radiographs(radiographs):
  sk_metrics = pytest.importorskip("skimage.metrics")
  x = radiographs[:8]
  rng = np.random.default_rng(1)
  pairs = {
      "noisy": np.clip(np.rint(x + rng.normal(0, 8, x.shape)), 0, 255).astype(np.uint8),
      "jpeg": np.stack([_jpeg(image, 30) for image in x]),
      "different": np.roll(x, 1, axis=0),
  }
  for name, y in pairs.items():
    # skimage takes the data range of uint8 images from the dtype: 255.
    want = [sk_metrics.peak_signal_noise_ratio(a, b) for a, b in zip(x, y)]
    np.testing.assert_allclose(imaging.psnr(x, y), want, rtol=0, atol=1e-4, err_msg=name)
    want = [sk_metrics.structural_similarity(a, b) for a, b in zip(x, y)]
    np.testing.assert_allclose(imaging.ssim(x, y), want, rtol=0, atol=1e-4, err_msg=name)
    xf, yf = x / 255, y / 255
    want = [sk_metrics.structural_similarity(a, b, data_range=1.0) for a, b in zip(xf, yf)]
    np.testing.assert_allclose(imaging.ssim(xf, yf), want, rtol=0, atol=1e-4, err_msg=name)


def test_equalize_histogram_matches_skimage_on_radiographs(radiographs):
  exposure = pytest.importorskip("skimage.exposure")
  x = radiographs / 255
  want = np.stack([exposure.equalize_hist(image) for image in x])
  for images in (x.astype(np.float32), radiographs):
    got = np.asarray(imaging.equalize_histogram(images))
    # Bin-edge pixels may land in the neighbouring bin (float32 vs float64 edges).
    assert np.abs(got - want).mean() < 1e-4 and np.abs(got - want).max() < 1e-2


@pytest.mark.parametrize("kwargs", [dict(clip_limit=0.01), dict(clip_limit=0.03, kernel_size=32)], ids=str)
def test_clahe_matches_skimage_equalize_adapthist(radiographs, kwargs):
  exposure = pytest.importorskip("skimage.exposure")
  x = radiographs[:4]
  want = np.stack([exposure.equalize_adapthist(image, **kwargs) for image in x])
  np.testing.assert_allclose(imaging.clahe(x, **kwargs), want, rtol=0, atol=1e-6)
  np.testing.assert_allclose(imaging.clahe(x / 255, **kwargs), want, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- imagehash

HASH_PAIRS = [
    ("average_hash", "average_hash", {}),
    ("average_hash", "average_hash", dict(hash_size=16)),
    ("difference_hash", "dhash", {}),
    ("perceptual_hash", "phash", {}),
    ("perceptual_hash", "phash", dict(hash_size=6, highfreq_factor=3)),
    ("wavelet_hash", "whash", {}),
    ("wavelet_hash", "whash", dict(hash_size=4, image_scale=64)),
]


def _imagehash_bits(name, images, kwargs):
  imagehash = pytest.importorskip("imagehash")
  from PIL import Image  # pylint: disable=g-import-not-at-top

  fn = getattr(imagehash, name)
  return np.stack([fn(Image.fromarray(image), **kwargs).hash.ravel() for image in images])


def _brute_force_pairs(bits, max_distance):
  distances = (bits[:, None, :] != bits[None, :, :]).sum(-1)
  return np.argwhere(np.triu(distances <= max_distance, k=1))


@pytest.mark.parametrize("ours, theirs, kwargs", HASH_PAIRS, ids=lambda v: str(v) if isinstance(v, dict) else v)
def test_hashes_match_imagehash_bit_for_bit(radiographs, ours, theirs, kwargs):
  images = np.concatenate([radiographs, _modified_copies(radiographs)])
  want = _imagehash_bits(theirs, images, kwargs)
  fn = getattr(imaging, ours)
  np.testing.assert_array_equal(fn(images, **kwargs), want)
  np.testing.assert_array_equal(fn((images / 255).astype(np.float32), **kwargs), want)


@pytest.mark.parametrize("ours, theirs", [("average_hash", "average_hash"), ("difference_hash", "dhash"),
                                          ("perceptual_hash", "phash"), ("wavelet_hash", "whash")])
def test_near_duplicate_pairs_match_imagehash(radiographs, ours, theirs):
  copies = _modified_copies(radiographs)
  images = np.concatenate([radiographs, copies])
  want = _brute_force_pairs(_imagehash_bits(theirs, images, {}), 5)
  got = imaging.find_near_duplicates(getattr(imaging, ours)(images), max_distance=5)
  np.testing.assert_array_equal(got, want)
  # Each copy of image i (index 24 + i) is found as a duplicate of its original.
  found = {tuple(p) for p in got.tolist()}
  assert {(i, 24 + i) for i in range(24)} <= found, sorted({(i, 24 + i) for i in range(24)} - found)


# ----------------------------------------------------------------------------- scikit-learn


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_and_pr_curve_match_sklearn(seed):
  sk = pytest.importorskip("sklearn.metrics")
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, 300)
  y_pred = np.round(y * 0.7 + rng.normal(0, 0.8, 300), 1)  # informative, with many ties
  assert metrics.compute_roc_auc(y_pred, y) == pytest.approx(sk.roc_auc_score(y, y_pred), abs=1e-12)
  for got, want in zip(metrics.compute_pr_curve(y_pred, y), sk.precision_recall_curve(y, y_pred)):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- scipy and numpy


def _fd_sqrtm(a, b):
  """pytorch-fid's formula with scipy.linalg.sqrtm, float64."""
  mu_a, mu_b = a.mean(0), b.mean(0)
  sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b).real
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2 * covmean))


def test_frechet_distance_matches_scipy_sqrtm(radiographs):
  rng = np.random.default_rng(3)
  a = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12))
  b = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) + 0.5
  assert metrics.frechet_distance(a, b) == pytest.approx(_fd_sqrtm(a, b), rel=1e-8)
  # Radiograph features: 4x4 block means of the fixture (24 images, 16 features) vs their blurred copies.
  feats = lambda x: x.reshape(len(x), 4, 64, 4, 64).mean(axis=(2, 4)).reshape(len(x), 16)
  blurred = ndimage.gaussian_filter(radiographs.astype(np.float64), (0, 6, 6))
  fa, fb = feats(radiographs.astype(np.float64)), feats(blurred)
  assert metrics.frechet_distance(fa, fb) == pytest.approx(_fd_sqrtm(fa, fb), rel=1e-6)


def test_dice_iou_match_numpy_on_lung_masks(radiographs):
  x = radiographs[:8] / 255
  masks = imaging.lung_mask_morphological(x)
  half = np.arange(256)[None, None, :] >= 128
  y = np.where(masks, np.where(half, 2, 1), 0).astype(np.int32)   # image-left lung 1, image-right 2
  moved_masks = imaging.lung_mask_morphological(np.roll(x, (6, -4), axis=(1, 2)))
  y_pred = np.where(moved_masks, np.where(half, 2, 1), 0).astype(np.int32)
  dice = np.asarray(metrics.compute_dice(y_pred, y, num_classes=3))
  iou = np.asarray(metrics.compute_iou(y_pred, y, num_classes=3))
  for b in range(len(x)):
    for c in (1, 2):
      p, t = y_pred[b] == c, y[b] == c
      den = p.sum() + t.sum()
      assert dice[b, c - 1] == pytest.approx(2 * (p & t).sum() / den if den else 1.0, rel=1e-6)
      union = (p | t).sum()
      assert iou[b, c - 1] == pytest.approx((p & t).sum() / union if union else 1.0, rel=1e-6)
  assert 0.5 < dice.mean() < 1  # real overlaps, neither trivial nor disjoint


# ----------------------------------------------------------------------------- hypothesis properties


def _property(make_strategies):
  """`hypothesis.given(*make_strategies(strategies))` with few examples (jit compiles are slow); skip without it."""
  if hypothesis is None:
    return pytest.mark.skip(reason="needs hypothesis")
  settings = hypothesis.settings(max_examples=20, deadline=None, database=None)
  return lambda fn: settings(hypothesis.given(*make_strategies(strategies))(fn))


@_property(lambda st: (st.integers(0, 2**32 - 1), st.sampled_from(["uint8", "float32"])))
def test_property_ssim_and_psnr_of_identical_images(seed, dtype):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (2, 16, 16)).astype(np.uint8)
  x = x if dtype == "uint8" else (x / 255 * rng.random()).astype(np.float32)
  np.testing.assert_allclose(imaging.ssim(x, x), 1.0, rtol=0, atol=1e-5)
  assert np.all(np.isposinf(imaging.psnr(x, x)))
  other = x.astype(np.float32) / 255 if dtype == "uint8" else np.rint(x * 255).astype(np.uint8)
  with pytest.raises(ValueError, match="both be uint8 or both be float"):
    imaging.psnr(x, other)


@_property(lambda st: (st.one_of(st.integers(0, 255), st.floats(0.0, 1.0)), st.integers(4, 80), st.integers(4, 80)))
def test_property_hashes_of_uniform_images_are_all_false(value, height, width):
  image = np.full((1, height, width), value, np.uint8 if isinstance(value, int) else np.float32)
  for fn in (imaging.average_hash, imaging.difference_hash, imaging.perceptual_hash, imaging.wavelet_hash):
    assert not np.asarray(fn(image)).any(), fn.__name__


@_property(lambda st: (st.integers(0, 2**32 - 1), st.integers(2, 5)))
def test_property_dice_of_identical_label_maps_is_one(seed, num_classes):
  y = np.random.default_rng(seed).integers(0, num_classes, (2, 8, 8)).astype(np.int32)
  np.testing.assert_array_equal(metrics.compute_dice(y, y, num_classes=num_classes), 1.0)
  np.testing.assert_array_equal(metrics.compute_iou(y, y, num_classes=num_classes), 1.0)


@_property(lambda st: (st.integers(0, 2**32 - 1), st.integers(2, 5), st.one_of(st.integers(-300, -1),
                                                                                  st.integers(0, 300))))
def test_property_dice_refuses_out_of_range_labels(seed, num_classes, offset):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, num_classes, (2, 8, 8)).astype(np.int32)
  bad = offset if offset < 0 else num_classes + offset
  y_pred = y.copy()
  y_pred[rng.integers(2), rng.integers(8), rng.integers(8)] = bad
  with pytest.raises(ValueError, match=rf"y_pred has label values \[{bad}\] outside \[0, {num_classes}\)"):
    metrics.compute_dice(y_pred, y, num_classes=num_classes)
  with pytest.raises(ValueError, match=rf"y has label values \[{bad}\]"):
    metrics.compute_iou(jnp.asarray(y), jnp.asarray(y_pred), num_classes=num_classes)
