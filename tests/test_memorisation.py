"""Tests for jaxcxr.memorisation: copies are found, chance closeness is not, bad input is refused."""

import numpy as np
import pytest
from PIL import Image

from jaxcxr import data, memorisation


def jittered(images, n, *, seed, noise=2.0):
  """n distinct uint8 variants of real images: a random image, shifted by 2 to 6 pixels each way, plus pixel noise."""
  rng = np.random.default_rng(seed)
  pick = rng.integers(0, len(images), n)
  shifts = rng.integers(2, 7, (n, 2)) * rng.choice([-1, 1], (n, 2))
  out = np.stack([np.roll(images[i], tuple(s), axis=(0, 1)) for i, s in zip(pick, shifts)]).astype(np.float64)
  return np.clip(np.round(out + rng.normal(0.0, noise, out.shape)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def real_images(nih_path):
  return data.load(nih_path).images


def marked(values):
  """4x4 uint8 images whose first pixel carries a value (the rest black): points for a 1-D feature space."""
  images = np.zeros((len(values), 4, 4), np.uint8)
  images[:, 0, 0] = values
  return images


def first_pixel(images):
  return images[:, 0, :1].astype(np.float64)


def test_exact_copies_of_training_images_have_distance_0_and_share_1(real_images):
  training = real_images
  order = np.random.default_rng(0).permutation(len(training))
  test = jittered(real_images, 40, seed=1)
  result = memorisation.audit(training[order], training, test)["pixels"]
  np.testing.assert_array_equal(result.generated_distance, 0.0)
  np.testing.assert_array_equal(result.generated_index, order)
  assert result.threshold > 0 and result.share == 1.0
  summary = result.summary()
  assert summary["share_below_threshold"] == 1.0 and summary["generated"]["max"] == 0.0
  assert summary["n_generated"] == summary["n_training"] == len(training) and summary["n_test"] == 40
  assert len(summary["closest_pairs"]) == 8 and all(p["distance"] == 0.0 for p in summary["closest_pairs"])
  # A shifted, noisy variant is another image in pixels: clearly above 0.
  assert result.test_distance.min() > 0.05


def test_a_copy_at_another_brightness_and_contrast_is_still_found(real_images):
  training = real_images
  darker = np.round(0.6 * training[:5].astype(np.float64) + 30).astype(np.uint8)
  result = memorisation.audit(darker, training, jittered(real_images, 20, seed=2))["pixels"]
  np.testing.assert_array_equal(result.generated_index, np.arange(5))
  assert result.generated_distance.max() < 0.04 and result.test_distance.min() > 0.1   # uint8 rounding only


def test_threshold_and_share_on_a_hand_built_feature_space():
  training = marked([0, 100, 200])
  test = marked(np.arange(101, 121))               # distances 1, 2, ..., 20 to training image 1
  generated = marked([100, 101, 102, 150])          # distances 0, 1, 2, 50 (a tie: 100 and 200)
  result = memorisation.audit(generated, training, test, features=first_pixel)
  features = result["features"]
  np.testing.assert_array_equal(features.test_distance, np.arange(1, 21))
  np.testing.assert_array_equal(features.generated_distance, [0, 1, 2, 50])
  np.testing.assert_array_equal(features.generated_index, [1, 1, 1, 1])       # ties go to the lowest index
  assert features.threshold == pytest.approx(1 + 0.05 * 19)                   # linear interpolation: 1.95
  assert features.share == 0.5                                                # 0 and 1 are below 1.95, 2 is not
  assert [pair[:2] for pair in features.closest_pairs(3)] == [(0, 1), (1, 1), (2, 1)]
  summary = features.summary()
  assert summary["test"]["min"] == 1 and summary["test"]["max"] == 20 and summary["test"]["median"] == 10.5
  assert set(result) == {"pixels", "features"}


def test_share_is_near_5_percent_for_images_from_the_training_distribution():
  # Generated and test points drawn from the distribution of the training points: by construction a
  # generated point falls below the test points' 5th percentile about 5% of the time.
  rng = np.random.default_rng(0)
  training, test, generated = (rng.normal(size=(n, 8)) for n in (600, 400, 2000))
  g_dist, g_index = memorisation.nearest_neighbours(generated, training)
  t_dist, t_index = memorisation.nearest_neighbours(test, training)
  result = memorisation.NearestTraining("features", g_dist, g_index, t_dist, t_index, len(training))
  assert 0.03 < result.share < 0.08, result.share
  # The batched search equals a brute-force one.
  brute = np.linalg.norm(generated[:50, None, :] - training[None, :, :], axis=2)
  np.testing.assert_array_equal(g_index[:50], brute.argmin(axis=1))
  np.testing.assert_allclose(g_dist[:50], brute.min(axis=1), rtol=1e-12)
  d, i = memorisation.nearest_neighbours(generated[:50], training, batch_size=7)
  np.testing.assert_array_equal(i, g_index[:50])


def test_standardised_pixels_ignore_brightness_and_contrast(real_images):
  x = memorisation.standardised_pixels(real_images[:3])
  assert x.shape == (3, 64 * 64)
  np.testing.assert_allclose(x.mean(axis=1), 0.0, atol=1e-12)
  np.testing.assert_allclose(x.std(axis=1), 1.0, rtol=1e-12)
  np.testing.assert_array_equal(memorisation.standardised_pixels(np.full((1, 8, 8), 9, np.uint8)), 0.0)


def test_closest_pairs_figure_shows_each_generated_image_beside_its_training_match(real_images, tmp_path):
  training = real_images
  generated = np.concatenate([jittered(real_images, 10, seed=3), training[[4, 7]]])
  result = memorisation.audit(generated, training, jittered(real_images, 20, seed=4))["pixels"]
  path = memorisation.save_closest_pairs(result, generated, training, tmp_path / "pairs.png")
  grid = np.asarray(Image.open(path).convert("L"))
  side, pad = training.shape[1], 2
  assert grid.shape == (4 * (side + pad) + pad, 4 * (side + pad) + pad)      # 8 pairs, two per row
  # The two exact copies come first; tiles below the caption band hold the images themselves.
  first, match = result.closest_pairs(1)[0][:2]
  assert first in (10, 11) and match == (4 if first == 10 else 7)
  np.testing.assert_array_equal(grid[pad + 20: pad + side, pad: pad + side], generated[first][20:])
  np.testing.assert_array_equal(grid[pad + 20: pad + side, 2 * pad + side: 2 * pad + 2 * side], training[match][20:])


def test_bad_inputs_are_refused(real_images, tmp_path):
  images = real_images[:4]
  with pytest.raises(data.DataError, match="generated as uint8 images"):
    memorisation.audit(images[:0], images, images)
  with pytest.raises(data.DataError, match="test as uint8 images"):
    memorisation.audit(images, images, images.astype(np.float32))
  with pytest.raises(data.DataError, match="NaN or inf"):
    memorisation.audit(images, images, images, features=lambda x: np.full((len(x), 2), np.nan))
  with pytest.raises(data.DataError, match="3 rows of features of the generated images for 4 images"):
    memorisation.audit(images, images, images, features=lambda x: np.zeros((3, 2)))
  with pytest.raises(data.DataError, match="the same D"):
    memorisation.audit(images, images[:3], images, features=lambda x: np.zeros((len(x), len(x))))
  with pytest.raises(data.DataError, match="the same D"):
    memorisation.nearest_neighbours(np.zeros((2, 3)), np.zeros((2, 4)))
  with pytest.raises(data.DataError, match="NaN or inf"):
    memorisation.nearest_neighbours(np.array([[np.nan]]), np.zeros((2, 1)))
  result = memorisation.audit(images, images, images)["pixels"]
  with pytest.raises(data.DataError, match="for an audit of 4 and 4"):
    memorisation.save_closest_pairs(result, images[:3], images, tmp_path / "x.png")
