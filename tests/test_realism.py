"""Tests for jaxcxr.realism: the two-sample tests detect what they should and nothing else."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.feature import hog

from jaxcxr import data, realism


def jittered(images, n, *, seed, size=None, noise=2.0):
  """n distinct uint8 variants of real images: a random image, shifted by up to 6 pixels, plus pixel noise."""
  rng = np.random.default_rng(seed)
  if size is not None:
    images = data.resize_uint8(images, size)
  pick = rng.integers(0, len(images), n)
  shifts = rng.integers(-6, 7, (n, 2))
  out = np.stack([np.roll(images[i], tuple(s), axis=(0, 1)) for i, s in zip(pick, shifts)]).astype(np.float64)
  return np.clip(np.round(out + rng.normal(0.0, noise, out.shape)), 0, 255).astype(np.uint8)


def checkerboard(images, amplitude):
  """Images plus a +-amplitude pixel checkerboard (the sub-pixel up-sampling artefact)."""
  h, w = images.shape[1:]
  board = np.where((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0, amplitude, -amplitude)
  return np.clip(images.astype(np.int32) + board, 0, 255).astype(np.uint8)


def blurred(images, sigma):
  return np.stack([np.round(ndimage.gaussian_filter(im.astype(np.float64), sigma)) for im in images]).astype(np.uint8)


@pytest.fixture(scope="module")
def real_images(nih_path):
  return data.load(nih_path).images


def test_two_sample_auc_is_chance_for_one_distribution_and_high_for_two():
  rng = np.random.default_rng(0)
  same = [realism.two_sample_auc(rng.normal(size=(64, 50)), rng.normal(size=(64, 50)), seed=s) for s in range(3)]
  assert all(abs(a - 0.5) < 0.2 for a in same), same
  assert abs(np.mean(same) - 0.5) < 0.15, same
  shifted = realism.two_sample_auc(rng.normal(size=(64, 50)), rng.normal(0.5, 1.0, size=(64, 50)))
  assert shifted > 0.9


def test_two_sample_auc_on_radiographs_finds_a_checkerboard_only_where_there_is_one(real_images):
  first = jittered(real_images, 64, seed=1, size=128)
  second = jittered(real_images, 64, seed=2, size=128)
  reference = realism.two_sample_auc(realism.detail_features(first), realism.detail_features(second))
  artefact = realism.two_sample_auc(realism.detail_features(first), realism.detail_features(checkerboard(second, 3)))
  assert abs(reference - 0.5) < 0.2
  assert artefact > 0.9


def test_two_sample_auc_needs_32_rows_per_set():
  rng = np.random.default_rng(0)
  with pytest.raises(data.DataError, match=r"20 images in the second set; need at least 32 \(the PCA dimension\)"):
    realism.two_sample_auc(rng.normal(size=(40, 8)), rng.normal(size=(20, 8)))
  with pytest.raises(data.DataError, match="same D"):
    realism.two_sample_auc(rng.normal(size=(40, 8)), rng.normal(size=(40, 9)))


def test_feature_shapes_and_detail_histograms(real_images):
  images = real_images[:6]
  pixels = realism.pixel_features(images)
  assert pixels.shape == (6, 64 * 64) and 0.0 <= pixels.min() and pixels.max() <= 1.0
  hog_one = hog(data.resize_uint8(images[:1], 128)[0] / 255.0, orientations=9, pixels_per_cell=(16, 16),
                cells_per_block=(2, 2))
  features = realism.hog_features(images)
  assert features.shape == (6, 1764) == (6, hog_one.size)
  np.testing.assert_allclose(features[0], hog_one, rtol=1e-5, atol=1e-6)

  detail = realism.detail_features(images)
  assert detail.shape == (6, 64)
  np.testing.assert_allclose(detail[:, :32].sum(axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(detail[:, 32:].sum(axis=1), 1.0, rtol=1e-5)
  soft = realism.detail_features(blurred(images, 2.0))
  # blur moves gradient mass to the lowest bins and narrows the residual around 0
  assert (soft[:, :4].sum(axis=1) > detail[:, :4].sum(axis=1)).all()
  assert (soft[:, 32 + 15: 32 + 17].sum(axis=1) > detail[:, 32 + 15: 32 + 17].sum(axis=1)).all()


def test_high_frequency_share_rises_with_a_checkerboard_and_falls_with_blur(real_images):
  images = real_images[:8]
  share = realism.high_frequency_share(images)
  assert 0.0 < share < 1.0
  assert realism.high_frequency_share(checkerboard(images, 3)) > 1.2 * share   # a faint +-3 grey-level board
  assert realism.high_frequency_share(blurred(images, 1.5)) < 0.6 * share
  assert realism.high_frequency_share(np.full((2, 16, 16), 7, np.uint8)) == 0.0   # no power at all


def test_pca_frechet_zero_for_a_set_against_itself_and_larger_for_a_shifted_set(real_images):
  space = realism.PcaFrechet(jittered(real_images, 48, seed=3, size=64))
  sample = jittered(real_images, 40, seed=4, size=64)
  assert space.distance(sample, sample) < 1e-6
  other = jittered(real_images, 40, seed=5, size=64)
  # whitened coordinates of 40 images in 32 dimensions: a large sampling term even for one distribution
  reference = space.distance(sample, other)
  assert reference > 0
  brighter = np.clip(other.astype(np.int32) + 80, 0, 255).astype(np.uint8)
  assert space.distance(sample, brighter) > 1.5 * reference
  assert space.distance(sample, 255 - other) > 5 * reference        # inverted display
  with pytest.raises(data.DataError, match=r"20 training normal images; need more than 32 \(the PCA dimension\)"):
    realism.PcaFrechet(real_images[:20])
  with pytest.raises(data.DataError, match="fewer than 32 directions"):
    realism.PcaFrechet(np.concatenate([real_images, real_images]))   # 24 distinct images


def test_realism_report_refuses_unequal_or_small_sets(real_images):
  small = data.resize_uint8(real_images[:20], 32)
  with pytest.raises(data.DataError, match="equal"):
    realism.realism_report(small, small[:10], small, real_images)
  with pytest.raises(data.DataError, match=r"20 images per set; need at least 32 \(the PCA dimension\)"):
    realism.realism_report(small, small, small, real_images)
