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


def test_mean_pairwise_distance_known_values_and_identical_images(real_images):
  assert realism.mean_pairwise_distance([[0.0, 0.0], [3.0, 4.0]]) == 5.0
  assert realism.mean_pairwise_distance([[0.0], [1.0], [3.0]]) == pytest.approx((1 + 3 + 2) / 3)
  space = realism.PcaFrechet(jittered(real_images, 48, seed=3, size=64))
  same = np.repeat(real_images[:1], 5, axis=0)
  assert realism.mean_pairwise_distance(space.transform(same)) == 0.0
  for bad, message in (([[1.0, 2.0]], "1 points; need at least 2"), (np.zeros((0, 3)), "0 points"),
                       ([[0.0, np.nan], [1.0, 2.0]], "NaN or inf"), (np.zeros(4), "shape")):
    with pytest.raises(data.DataError, match=message):
      realism.mean_pairwise_distance(bad)


def test_precision_recall_of_a_set_against_itself_is_1_and_hand_built_values():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(40, 5))
  assert realism.precision_recall(points, points) == {"precision": 1.0, "recall": 1.0}
  # Real points 0, 1, 2, 3 (k = 1 radii all 1); generated 0.5, 0.7, 10, 10.2 (radii all 0.2):
  # two generated points fall within 1 of a real point, no real point within 0.2 of a generated one.
  real = np.array([[0.0], [1.0], [2.0], [3.0]])
  generated = np.array([[0.5], [0.7], [10.0], [10.2]])
  assert realism.precision_recall(real, generated, k=1) == {"precision": 0.5, "recall": 0.0}
  # Mode dropping: a generator that draws one of two real clusters keeps precision and loses recall.
  real = np.concatenate([rng.normal(size=(50, 2)), rng.normal(size=(50, 2)) + 20.0])
  one_mode = rng.normal(size=(100, 2))
  pr = realism.precision_recall(real, one_mode)
  assert pr["precision"] > 0.9 and 0.4 < pr["recall"] <= 0.5


def test_precision_recall_and_nearest_neighbour_share_refuse_bad_input():
  points = np.zeros((5, 3))
  for call, message in ((lambda: realism.precision_recall(points, points[:3]), "3 points; need at least 4"),
                        (lambda: realism.precision_recall(points, np.zeros((5, 2))), "same D"),
                        (lambda: realism.precision_recall(points, points, k=0), "positive integer"),
                        (lambda: realism.precision_recall(np.full((5, 3), np.nan), points), "NaN or inf"),
                        (lambda: realism.nearest_neighbour_share(points, points[:0]), "0 points"),
                        (lambda: realism.nearest_neighbour_share(points[:1], points), "1 points; need at least 2"),
                        (lambda: realism.nearest_neighbour_share(points, np.zeros((2, 4))), "same D")):
    with pytest.raises(data.DataError, match=message):
      call()


def test_nearest_neighbour_share_copies_far_sets_and_one_distribution():
  rng = np.random.default_rng(0)
  real = rng.normal(size=(60, 4))
  assert realism.nearest_neighbour_share(real, real) == 1.0                 # every real point has a copy
  assert realism.nearest_neighbour_share(real, real + 100.0) == 0.0
  # Hand-built: real 0, 10, 11; generated 1 is nearer 0 (1 < 10), not nearer 10 or 11 (9, 10 > 1).
  assert realism.nearest_neighbour_share([[0.0], [10.0], [11.0]], [[1.0]]) == pytest.approx(1 / 3)
  shares = [realism.nearest_neighbour_share(rng.normal(size=(200, 4)), rng.normal(size=(200, 4))) for _ in range(3)]
  assert all(0.35 < s < 0.65 for s in shares) and 0.44 < np.mean(shares) < 0.56, shares   # about 200 / 399


def test_diversity_report_of_identical_generated_images_is_0(real_images):
  space = realism.PcaFrechet(jittered(real_images, 48, seed=3, size=64))
  real_a, real_b = jittered(real_images, 12, seed=6, size=64), jittered(real_images, 12, seed=7, size=64)
  collapsed = np.repeat(real_images[:1], 12, axis=0)
  groups = {"18_24m": collapsed[:6], "18_24f": real_a[:6], "38_44m": real_a[:1]}
  r = realism.diversity_report(space, collapsed, real_a, real_b, generated_groups=groups,
                               real_groups={"18_24m": real_b, "18_24f": real_a[:6]})
  assert r["overall"]["generated"] == 0.0 and r["overall"]["ratio"] == 0.0
  assert r["overall"]["real_a"] > 0 and 0.7 < r["overall"]["real_vs_real_ratio"] < 1.4
  assert r["groups"]["18_24m"]["generated"] == 0.0 and r["groups"]["18_24m"]["ratio"] == 0.0
  assert r["groups"]["18_24f"]["ratio"] == 1.0                              # the same images on both sides
  assert r["groups"]["38_44m"] == {"n_generated": 1, "n_real": 0, "generated": None, "real": None, "ratio": None}
  assert r["mean_group_ratio"] == 0.5
  # all 12 collapsed images sit on one point: at most one real point falls within its zero radius
  assert r["precision_recall"]["generated_vs_real"]["recall"] == 0.0
  assert r["nearest_neighbour_share"]["generated_vs_real"] < 0.2
  with pytest.raises(data.DataError, match="equal counts"):
    realism.diversity_report(space, collapsed[:10], real_a, real_b)
  with pytest.raises(data.DataError, match="needs real_groups"):
    realism.diversity_report(space, collapsed, real_a, real_b, generated_groups=groups)
