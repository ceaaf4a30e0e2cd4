"""Tests for jaxcxr.imaging: skimage parity of metrics and contrast, hashes, duplicate filters, lung masks."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from skimage import exposure, metrics

from jaxcxr import imaging

NIH_FIXTURE = pathlib.Path(__file__).parent / "data" / "nih_fixture.npz"
HASHES = [imaging.average_hash, imaging.difference_hash, imaging.perceptual_hash, imaging.wavelet_hash]


def load_images(n=None):
  """Real 256x256 NIH radiographs from the test fixture, float32 (n, 256, 256) in [0, 1]."""
  if not NIH_FIXTURE.exists():
    pytest.skip(f"test fixture {NIH_FIXTURE} is missing")
  with np.load(NIH_FIXTURE, allow_pickle=False) as data:
    return data["images"][:n].astype(np.float32) / 255


def plant_duplicates(images, seed=0):
  """Copies moved 2 px down (edge-padded, no wrap-around) plus Gaussian noise (sigma 0.02), clipped."""
  rng = np.random.default_rng(seed)
  moved = np.pad(images, ((0, 0), (2, 0), (0, 0)), mode="edge")[:, : images.shape[1]]
  return np.clip(moved + rng.normal(0, 0.02, images.shape), 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("channel", [False, True], ids=["BHW", "BHW1"])
def test_ssim_psnr_match_skimage(channel):
  x = load_images(6)
  rng = np.random.default_rng(0)
  pairs = {
      "noisy": np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32),
      "blurred": ndimage.gaussian_filter(x, (0, 1.5, 1.5)),
      "different": np.roll(x, 1, axis=0),
  }
  for name, y in pairs.items():
    xs, ys = (x[..., None], y[..., None]) if channel else (x, y)
    for win_size in (7, 3):
      want = [metrics.structural_similarity(a, b, data_range=1.0, win_size=win_size) for a, b in zip(x, y)]
      got = imaging.ssim(xs, ys, win_size=win_size)
      assert got.shape == (6,) and got.dtype == jnp.float32
      np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=f"{name}, win_size={win_size}")
    want = [metrics.peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(x, y)]
    np.testing.assert_allclose(imaging.psnr(xs, ys), want, rtol=0, atol=1e-4, err_msg=name)


def test_metrics_data_range():
  x = load_images(2)
  y = np.roll(x, 1, axis=0)
  x255, y255 = x * 255, y * 255
  want = [metrics.structural_similarity(a, b, data_range=255.0) for a, b in zip(x255, y255)]
  np.testing.assert_allclose(imaging.ssim(x255, y255, data_range=255.0), want, rtol=0, atol=1e-4)
  want = [metrics.peak_signal_noise_ratio(a, b, data_range=255.0) for a, b in zip(x255, y255)]
  np.testing.assert_allclose(imaging.psnr(x255, y255, data_range=255.0), want, rtol=0, atol=1e-4)


def test_metrics_of_identical_images():
  x = load_images(3)
  np.testing.assert_allclose(imaging.ssim(x, x), 1.0, rtol=0, atol=1e-6)
  assert np.all(np.isposinf(imaging.psnr(x, x)))


def load_uint8(n=None):
  """The fixture radiographs as stored, uint8 (n, 256, 256)."""
  return np.rint(load_images(n) * 255).astype(np.uint8)


def test_metrics_of_uint8_images_default_to_data_range_255():
  # skimage takes the data range of uint8 images from their dtype (255); with the old fixed
  # default of 1.0 a uint8 pair came out ~30 dB too low.
  x = load_uint8(3)
  rng = np.random.default_rng(1)
  y = np.clip(x + rng.normal(0, 12, x.shape), 0, 255).astype(np.uint8)
  want_psnr = [metrics.peak_signal_noise_ratio(a, b) for a, b in zip(x, y)]
  want_ssim = [metrics.structural_similarity(a, b) for a, b in zip(x, y)]
  np.testing.assert_allclose(imaging.psnr(x, y), want_psnr, rtol=0, atol=1e-4)
  np.testing.assert_allclose(imaging.ssim(x, y), want_ssim, rtol=0, atol=1e-4)
  # Same figures as the float images in [0, 1] with their default range 1.
  np.testing.assert_allclose(imaging.psnr(x / 255, y / 255), want_psnr, rtol=0, atol=1e-3)
  np.testing.assert_allclose(imaging.ssim(x / 255, y / 255), want_ssim, rtol=0, atol=1e-4)
  # An explicit data_range still wins.
  np.testing.assert_allclose(imaging.psnr(x, y, data_range=255.0), want_psnr, rtol=0, atol=1e-4)


def test_metrics_default_data_range_under_jit():
  # The dtype (static under jit) picks the default; the value check is skipped on tracers.
  x = load_uint8(2)
  y = np.roll(x, 1, axis=0)
  want = [metrics.peak_signal_noise_ratio(a, b) for a, b in zip(x, y)]
  np.testing.assert_allclose(jax.jit(imaging.psnr)(x, y), want, rtol=0, atol=1e-4)
  np.testing.assert_allclose(jax.jit(imaging.ssim)(x, y), imaging.ssim(x, y), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: imaging.psnr(x, x.astype(np.float32) / 255), "both be uint8 or both be float"),
        (lambda x: imaging.ssim(x.astype(np.float32), x), "both be uint8 or both be float"),
        (lambda x: imaging.psnr(x, x, data_range=1.0), r"span \[.*\], more than data_range=1"),
        (lambda x: imaging.ssim(x.astype(np.float32), x.astype(np.float32)), "more than data_range=1"),
        (lambda x: imaging.psnr(x.astype(np.int32), x.astype(np.int32)), "pass data_range"),
        (lambda x: imaging.psnr(x, x, data_range=0.0), "data_range must be > 0"),
    ],
    ids=["uint8-float", "float-uint8", "uint8-range-1", "float-0-255-default", "int32-no-default", "zero-range"],
)
def test_metrics_refuse_ambiguous_inputs(call, match):
  with pytest.raises(ValueError, match=match):
    call(load_uint8(2))


# ----------------------------------------------------------------------------- hashes


@pytest.mark.parametrize("hash_fn", HASHES, ids=lambda f: f.__name__)
def test_hash_shapes_and_layouts(hash_fn):
  x = load_images(3)
  bits = hash_fn(x)
  assert bits.shape == (3, 64) and bits.dtype == jnp.bool_
  np.testing.assert_array_equal(hash_fn(x[..., None]), bits)
  assert hash_fn(x, hash_size=4).shape == (3, 16)
  # Bits are balanced around a mean or median, or compare neighbours: never constant on a radiograph.
  assert 0 < int(bits.sum()) < bits.size


@pytest.mark.parametrize("hash_fn", HASHES, ids=lambda f: f.__name__)
def test_planted_near_duplicates_are_found(hash_fn):
  # Six distinct radiographs, then a moved and noised copy of each: exactly the pairs (i, i + 6)
  # are within 5 bits. Observed: copies at 0-4 bits, distinct pairs at >= 10 (>= 16 for phash).
  x = load_images(6)
  hashes = hash_fn(np.concatenate([x, plant_duplicates(x)]))
  pairs = imaging.find_near_duplicates(hashes, max_distance=5)
  np.testing.assert_array_equal(pairs, [[i, i + 6] for i in range(6)])


def test_perceptual_hash_separates_all_fixture_images():
  # phash is the discriminating hash: the 24 fixture patients are >= 12 bits apart. The
  # coarser ahash, dhash and whash put some distinct patients 3-4 bits apart.
  x = load_images()
  pairs = imaging.find_near_duplicates(imaging.perceptual_hash(x), max_distance=5)
  assert pairs.shape == (0, 2)


def test_wavelet_hash_rejects_bad_sizes():
  x = load_images(1)
  with pytest.raises(ValueError, match="hash_size"):
    imaging.wavelet_hash(x, hash_size=6)
  with pytest.raises(ValueError, match="image_scale"):
    imaging.wavelet_hash(x, image_scale=4)


@pytest.mark.parametrize("hash_fn", HASHES, ids=lambda f: f.__name__)
def test_hashes_of_uniform_images_are_all_false(hash_fn):
  # Float comparisons of equal values against their mean or median used to give round-off bits.
  images = [np.full((1, 64, 48), v, np.float32) for v in (0.0, 0.3, 0.5, 2 / 3, 1.0)]
  images += [np.full((1, 64, 48), v, np.uint8) for v in (0, 1, 77, 254, 255)]
  for image in images:
    bits = np.asarray(hash_fn(image))
    assert bits.shape == (1, 64) and not bits.any(), (image.dtype, image.flat[0], bits.astype(int))


@pytest.mark.parametrize("hash_fn", HASHES, ids=lambda f: f.__name__)
def test_blank_images_are_found_as_duplicates(hash_fn):
  x = load_images(2)
  blanks = np.stack([np.full((256, 256), v, np.float32) for v in (0.0, 0.0, 0.5, 0.5, 1.0)])
  hashes = hash_fn(np.concatenate([blanks, x]))
  pairs = imaging.find_near_duplicates(hashes, max_distance=0)
  np.testing.assert_array_equal(pairs, [[i, j] for i in range(5) for j in range(i + 1, 5)])


@pytest.mark.parametrize("hash_fn", HASHES, ids=lambda f: f.__name__)
def test_hashes_of_uint8_and_unit_float_images_agree(hash_fn):
  x = load_uint8(4)
  bits = np.asarray(hash_fn(x))
  np.testing.assert_array_equal(hash_fn(x / 255), bits)
  np.testing.assert_array_equal(hash_fn((x / 255).astype(np.float32)[..., None]), bits)
  # Each image's bits do not depend on the rest of the batch.
  np.testing.assert_array_equal(hash_fn(x[2:3]), bits[2:3])


@pytest.mark.parametrize("hash_fn", HASHES, ids=lambda f: f.__name__)
def test_hashes_refuse_non_finite_pixels(hash_fn):
  # A NaN pixel used to hash like a black image.
  x = load_images(3)
  for bad in (np.nan, np.inf):
    y = x.copy()
    y[1, 100, 100] = bad
    with pytest.raises(ValueError, match=r"1 non-finite pixel\(s\) \(NaN or inf\) in image\(s\) \[1\]"):
      hash_fn(y)


@pytest.mark.parametrize(
    "images, match",
    [
        (np.full((1, 32, 32), 1.5, np.float32), r"float images must be in \[0, 1\], got values in \[1.5, 1.5\]"),
        (np.full((1, 32, 32), -0.1, np.float32), r"must be in \[0, 1\]"),
        (np.zeros((1, 32, 32), np.int32), "expected uint8 images or float images"),
        (np.zeros((1, 32, 32), bool), "expected uint8 images or float images"),
    ],
    ids=["above-1", "negative", "int32", "bool"],
)
def test_hashes_refuse_out_of_range_and_other_dtypes(images, match):
  for hash_fn in HASHES:
    with pytest.raises(ValueError, match=match):
      hash_fn(images)


def test_hashes_refuse_traced_input():
  with pytest.raises(ValueError, match="outside jax.jit"):
    jax.jit(imaging.average_hash)(np.zeros((1, 32, 32), np.float32))


# ----------------------------------------------------------------------------- distances and filters


def test_hamming_distances_known_values():
  a = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0]], bool)
  b = np.array([[0, 0, 0, 0], [1, 1, 0, 0]], bool)
  d = imaging.hamming_distances(a, b)
  assert d.dtype == jnp.int32
  np.testing.assert_array_equal(d, [[0, 2], [4, 2], [2, 2]])


@pytest.mark.parametrize("block_size", [1, 4, 7, 4096])
def test_find_near_duplicates_matches_brute_force(block_size):
  rng = np.random.default_rng(0)
  hashes = rng.random((30, 64)) < 0.5  # random pairs are ~32 bits apart
  for i, j, flips in [(3, 17, 0), (5, 29, 5), (17, 22, 2), (8, 9, 6)]:  # (8, 9) is just too far
    hashes[j] = hashes[i]
    hashes[j, rng.choice(64, flips, replace=False)] ^= True
  d = np.asarray(imaging.hamming_distances(hashes, hashes))
  want = np.argwhere(np.triu(d <= 5, k=1))
  got = imaging.find_near_duplicates(hashes, max_distance=5, block_size=block_size)
  assert got.dtype == np.int64
  np.testing.assert_array_equal(got, want)
  assert {tuple(p) for p in got} >= {(3, 17), (5, 29), (17, 22), (3, 22)}


def test_flag_neighbour_outliers_known_sequence():
  def bits(*on):
    h = np.zeros(16, bool)
    h[list(on)] = True
    return h

  everything = tuple(range(16))
  sequence = np.stack([
      bits(),  # first: its only neighbour is 1 bit away -> kept
      bits(0),  # 1 bit from the previous -> kept
      bits(*everything),  # 15 and 14 bits from its neighbours -> flagged
      bits(0, 1),  # far from the previous but 2 bits (not more) from the next -> kept
      bits(1, 2),
      bits(*everything),  # last: its only neighbour is 14 bits away -> flagged
  ])
  np.testing.assert_array_equal(
      imaging.flag_neighbour_outliers(sequence, max_distance=2), [False, False, True, False, False, True]
  )
  # A far first image is flagged, and a lone image never is.
  np.testing.assert_array_equal(imaging.flag_neighbour_outliers(sequence[2:4], max_distance=2), [True, True])
  np.testing.assert_array_equal(imaging.flag_neighbour_outliers(sequence[:1]), [False])


# ----------------------------------------------------------------------------- contrast


def test_equalize_histogram_matches_skimage():
  x = load_images(6)
  got = np.asarray(imaging.equalize_histogram(x))
  want = np.stack([exposure.equalize_hist(image) for image in x])
  assert got.dtype == np.float32 and got.min() >= 0 and got.max() <= 1
  # Pixels lying exactly on a bin edge can land in the neighbouring bin (float32 edges here,
  # float64 in numpy), moving one histogram count: observed mean |diff| ~4e-6, max ~4e-3.
  assert np.abs(got - want).mean() < 1e-4
  assert np.abs(got - want).max() < 1e-2


def test_equalize_histogram_layouts_and_batch_independence():
  x = load_images(3)
  batch = imaging.equalize_histogram(x)
  np.testing.assert_array_equal(imaging.equalize_histogram(x[:1])[0], batch[0])
  np.testing.assert_array_equal(imaging.equalize_histogram(x[..., None]), batch[..., None])
  constant = imaging.equalize_histogram(np.full((1, 8, 8), 0.3, np.float32))
  np.testing.assert_array_equal(constant, exposure.equalize_hist(np.full((8, 8), 0.3, np.float32))[None])


def test_clahe():
  x = load_images(2)
  out = imaging.clahe(jnp.asarray(x)[..., None], clip_limit=0.02)
  assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (2, 256, 256, 1)
  assert out.min() >= 0 and out.max() <= 1
  np.testing.assert_allclose(out[0, ..., 0], exposure.equalize_adapthist(x[0], clip_limit=0.02), atol=1e-6)
  blank = np.zeros((1, 32, 32), np.float32)
  np.testing.assert_array_equal(imaging.clahe(blank), blank)


def test_clahe_accepts_uint8():
  # uint8 used to reach skimage as float values in [0, 255] ("must be between -1 and 1").
  x = load_uint8(2)
  out = imaging.clahe(x, clip_limit=0.02)
  assert out.dtype == np.float32 and out.shape == x.shape and out.min() >= 0 and out.max() <= 1
  np.testing.assert_allclose(out[1], exposure.equalize_adapthist(x[1], clip_limit=0.02), atol=1e-6)
  np.testing.assert_array_equal(out, imaging.clahe(x.astype(np.float32) / 255, clip_limit=0.02))
  blank = np.full((1, 32, 32), 51, np.uint8)
  np.testing.assert_allclose(imaging.clahe(blank), np.full((1, 32, 32), 0.2, np.float32), rtol=1e-6)


@pytest.mark.parametrize(
    "images, match",
    [
        (np.full((1, 32, 32), 255.0, np.float32), r"float images must be in \[0, 1\], got values in \[255, 255\]"),
        (np.full((1, 32, 32), np.nan, np.float32), "NaN or inf"),
        (np.zeros((1, 32, 32), np.uint16), "expected uint8 images or float images"),
    ],
    ids=["float-0-255", "nan", "uint16"],
)
def test_clahe_refuses_other_ranges_with_advice(images, match):
  with pytest.raises(ValueError, match=match):
    imaging.clahe(images)


def test_equalize_histogram_of_uint8_is_that_of_the_unit_float_image():
  x = load_uint8(2)
  want = np.stack([exposure.equalize_hist(image / 255) for image in x])
  got = np.asarray(imaging.equalize_histogram(x))
  assert got.dtype == np.float32
  assert np.abs(got - want).max() < 1e-2 and np.abs(got - want).mean() < 1e-4


# ----------------------------------------------------------------------------- lung masks


def test_lung_mask_morphological_finds_two_lungs():
  x = load_images()
  masks = imaging.lung_mask_morphological(x[..., None])
  assert masks.shape == x.shape and masks.dtype == bool

  def plausible(mask):
    labels, count = ndimage.label(mask)
    if count != 2:
      return False
    area = np.bincount(labels.ravel())[1:] / mask.size
    column = [c for _, c in ndimage.center_of_mass(mask, labels, [1, 2])]
    return min(column) < 128 < max(column) and area.min() > 0.02 and 0.05 < area.sum() < 0.5

  ok = [plausible(m) for m in masks]
  # A heuristic: observed 23/24 (image 1's right lung merges with the dark air around it).
  assert ok[0] and sum(ok) >= 20, ok


def test_lung_mask_morphological_blank_images():
  masks = imaging.lung_mask_morphological(np.zeros((2, 64, 64), np.float32))
  assert masks.shape == (2, 64, 64) and not masks.any()
  assert not imaging.lung_mask_morphological(np.full((1, 64, 64), 0.5, np.float32)).any()


# ----------------------------------------------------------------------------- validation


def test_empty_batches():
  empty = np.zeros((0, 32, 32), np.float32)
  assert imaging.ssim(empty, empty).shape == (0,)
  for hash_fn in HASHES:
    assert hash_fn(empty).shape == (0, 64)
  assert imaging.find_near_duplicates(np.zeros((0, 64), bool)).shape == (0, 2)
  assert imaging.flag_neighbour_outliers(np.zeros((0, 64), bool)).shape == (0,)
  assert imaging.clahe(empty).shape == imaging.lung_mask_morphological(empty).shape == (0, 32, 32)



@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: imaging.ssim(np.zeros((2, 16, 16)), np.zeros((2, 16, 17))), "y: expected the shape of x"),
        (lambda: imaging.psnr(np.zeros((16, 16)), np.zeros((16, 16))), r"x: expected .*\(B, H, W\)"),
        (lambda: imaging.ssim(np.zeros((2, 16, 16)), np.zeros((2, 16, 16)), win_size=4), "win_size"),
        (lambda: imaging.perceptual_hash(np.zeros((2, 16, 16, 3))), "images: expected"),
        (lambda: imaging.equalize_histogram(np.zeros((16, 16))), "images: expected"),
        (lambda: imaging.clahe(np.zeros((16, 16))), "images: expected"),
        (lambda: imaging.lung_mask_morphological(np.zeros((1, 2, 16, 16))), "images: expected"),
        (lambda: imaging.hamming_distances(np.zeros((2, 64), bool), np.zeros((2, 16), bool)), "b: expected 64"),
        (lambda: imaging.find_near_duplicates(np.zeros(64, bool)), "hashes: expected"),
        (lambda: imaging.flag_neighbour_outliers(np.zeros((2, 2, 64), bool)), "hashes: expected"),
    ],
)
def test_bad_inputs_raise(call, match):
  with pytest.raises(ValueError, match=match):
    call()
