"""Tests for jaxcxr.exposure: exact quantiles, landmark matching, monotonicity, exposure invariance, errors."""

import json

import numpy as np
import pytest

from jaxcxr import data, exposure
from jaxcxr.data import DataError


def _anatomy(size=64, seed=0):
  """A synthetic radiograph in [0, 1]: smooth shading, two dark 'lungs', a bright 'spine', zero border."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
  image = 0.55 + 0.25 * yy - 0.1 * np.cos(3 * xx)
  for cx in (0.3, 0.7):
    image -= 0.35 * np.exp(-(((xx - cx) / 0.12) ** 2 + ((yy - 0.5) / 0.25) ** 2))
  image += 0.25 * np.exp(-((xx - 0.5) / 0.05) ** 2)
  image += 0.02 * rng.standard_normal(image.shape)
  image = np.clip(image, 0.05, 1.0)
  border = size // 8
  image[:border], image[-border:], image[:, :border], image[:, -border:] = 0, 0, 0, 0
  return image


def _expose(image, gamma, gain=1.0):
  """uint8 display of a [0, 1] image under a monotone exposure curve (0 stays 0)."""
  return np.clip(np.round(255 * gain * image ** gamma), 0, 255).astype(np.uint8)


def test_histogram_quantiles_exact_cases():
  counts = np.zeros((2, 256), np.int64)
  counts[0, 100] = 40                      # one level: spread over [99.5, 100.5)
  counts[1, 0] = counts[1, 10] = 50        # two levels, half the pixels each
  q = exposure.histogram_quantiles(counts, [0.0, 0.25, 0.5, 0.75, 1.0])
  np.testing.assert_allclose(q[0], [99.5, 99.75, 100.0, 100.25, 100.5])
  np.testing.assert_allclose(q[1], [-0.5, 0.0, 0.5, 10.0, 10.5])


def test_histogram_quantiles_near_numpy_and_strictly_increasing():
  rng = np.random.default_rng(1)
  images = rng.integers(40, 60, (3, 32, 32)).astype(np.uint8)   # few levels: many ties
  q = np.linspace(0.01, 0.99, 23)
  got = exposure.histogram_quantiles(exposure.masked_histograms(images), q)
  want = np.stack([np.percentile(im, 100 * q) for im in images])
  assert np.abs(got - want).max() <= 1.0
  assert (np.diff(got, axis=1) > 0).all()


def test_masked_histograms_counts_only_kept_pixels():
  images = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
  keep = np.zeros((4, 4), bool)
  keep[1:3, 1:3] = True
  counts = exposure.masked_histograms(images, keep)
  assert counts.sum() == 4 and set(np.flatnonzero(counts[0])) == {5, 6, 9, 10}


def test_landmarks_map_exactly_onto_the_reference():
  images = np.stack([_expose(_anatomy(seed=s), g) for s, g in enumerate((0.6, 0.9, 1.3, 1.8))])
  reference = exposure.fit_reference(images[:2])
  lm = exposure.landmarks(images[2:])
  for row in lm:
    np.testing.assert_allclose(exposure.transfer(row, row, reference.landmarks), reference.landmarks, rtol=0,
                               atol=1e-9)
  # Whole-image region (no body threshold to move): the normalised images' measured landmarks sit on the reference.
  reference = exposure.fit_reference(images[:2], region="image")
  out = exposure.normalise(images[2:], reference)
  measured = exposure.landmarks(out, region="image")
  assert np.abs(measured - np.asarray(reference.landmarks)).max() <= 1.0


def test_mapping_is_monotone_and_keeps_pixel_order():
  images = np.stack([_expose(_anatomy(seed=s), g) for s, g in enumerate((0.5, 1.0, 2.0))])
  reference = exposure.fit_reference(images)
  tables = exposure.lookup_tables(images, reference)
  assert (np.diff(tables, axis=1) > 0).all()
  out = exposure.normalise(images, reference)
  for image, mapped in zip(images, out):
    order = np.argsort(image.ravel(), kind="stable")
    assert (np.diff(mapped.ravel()[order].astype(int)) >= 0).all()


def test_two_exposures_of_one_image_become_nearly_equal():
  anatomy = _anatomy(seed=3)
  dark, bright = _expose(anatomy, 1.6, 0.8), _expose(anatomy, 0.6, 1.0)
  raw_gap = np.abs(dark.astype(float) - bright.astype(float)).mean()
  others = np.stack([_expose(_anatomy(seed=s), 1.0) for s in range(4, 8)])
  reference = exposure.fit_reference(others)
  a, b = exposure.normalise(np.stack([dark, bright]), reference).astype(float)
  assert raw_gap > 30
  assert np.abs(a - b).mean() < 2.0, np.abs(a - b).mean()


def test_body_region_leaves_out_zero_padding_and_keeps_dark_lungs():
  image = _expose(_anatomy(seed=4), 1.0)[None]
  counts = exposure.region_histograms(image)
  assert counts[0, 0] == 0
  assert counts.sum() == (image > 0).sum()


def test_batched_equals_one_at_a_time_and_shape_kept():
  images = np.stack([_expose(_anatomy(seed=s), g) for s, g in enumerate((0.7, 1.0, 1.4))])
  reference = exposure.fit_reference(images)
  batch = exposure.normalise(images[..., None], reference)
  assert batch.shape == (3, 64, 64, 1) and batch.dtype == np.uint8
  for i in range(3):
    np.testing.assert_array_equal(exposure.normalise(images[i:i + 1], reference)[0], batch[i, ..., 0])


def test_reference_round_trips_through_json():
  images = np.stack([_expose(_anatomy(seed=s), 1.0) for s in range(3)])
  reference = exposure.fit_reference(images)
  again = exposure.ExposureReference.from_dict(json.loads(json.dumps(reference.to_dict())))
  assert again == reference and again.n_images == 3
  np.testing.assert_array_equal(exposure.normalise(images, again), exposure.normalise(images, reference))


def test_lung_region_on_real_masks(covid_path):
  ds = data.load(covid_path)
  reference = exposure.fit_reference(ds.images[:4], ds.lung_masks[:4])
  assert reference.region == "lungs"
  out = exposure.normalise(ds.images[4:], reference, ds.lung_masks[4:])
  measured = exposure.landmarks(out, ds.lung_masks[4:], region="lungs")
  before = exposure.landmarks(ds.images[4:], ds.lung_masks[4:], region="lungs")
  error = np.abs(measured - np.asarray(reference.landmarks))
  assert error.max() <= 1.0, error.max()
  assert np.abs(before - np.asarray(reference.landmarks)).max() > 5 * error.max()


def test_bad_inputs_raise():
  images = np.stack([_expose(_anatomy(seed=s), 1.0) for s in range(2)])
  reference = exposure.fit_reference(images)
  masks = np.zeros(images.shape, np.uint8)
  masks[:, 20:40, 10:30] = 1
  with pytest.raises(DataError, match="uint8"):
    exposure.fit_reference(images.astype(np.float32))
  with pytest.raises(DataError, match="shape"):
    exposure.fit_reference(images[0])
  with pytest.raises(DataError, match="not the lungs"):
    exposure.normalise(images, reference, masks)
  lungs = exposure.fit_reference(images, masks)
  with pytest.raises(DataError, match="lung masks"):
    exposure.normalise(images, lungs)
  with pytest.raises(DataError, match="shape"):
    exposure.normalise(images, lungs, masks[:, :10])
  empty = masks.copy()
  empty[1] = 0
  with pytest.raises(DataError, match=r"index \[1\]\) has fewer than 64 pixels"):
    exposure.normalise(images, lungs, empty)
  with pytest.raises(DataError, match="unknown region"):
    exposure.fit_reference(images, region="chest")
  with pytest.raises(DataError, match="strictly increasing"):
    exposure.ExposureReference(landmarks=(10.0, 5.0), percentiles=(10.0, 90.0))
  with pytest.raises(DataError, match="inside"):
    exposure.ExposureReference(landmarks=(10.0, 300.0), percentiles=(10.0, 90.0))
  with pytest.raises(DataError, match="ExposureReference"):
    exposure.normalise(images, reference.to_dict())
  with pytest.raises(ValueError, match="without any pixel"):
    exposure.histogram_quantiles(np.zeros((1, 256)), [0.5])


def test_normalise_like_training_uses_the_training_normals_only(nih_path):
  ds = data.load(nih_path)
  train, evaluated = ds.subset(np.arange(12)), ds.subset(np.arange(12, 24))
  reference, (train_out, evaluated_out) = exposure.normalise_like_training(train, [evaluated], region="body")
  normals = train.images[train.label == 0]
  assert 0 < len(normals) < len(train) and reference.n_images == len(normals)
  assert reference == exposure.fit_reference(normals, region="body")
  assert np.array_equal(evaluated_out.images, exposure.normalise(evaluated.images, reference))
  assert np.array_equal(train_out.images, exposure.normalise(train.images, reference))
  assert not np.array_equal(evaluated_out.images, evaluated.images)
  assert np.array_equal(evaluated_out.label, evaluated.label) and np.array_equal(evaluated_out.patient_id,
                                                                                evaluated.patient_id)
  # Inside the lungs, the masker's masks decide the landmarks of every image.
  box = np.zeros(ds.images.shape[1:], np.uint8)
  box[64:192, 40:216] = 1
  masker = lambda images: np.broadcast_to(box, images.shape)
  reference, (_, lungs_out) = exposure.normalise_like_training(train, [evaluated], region="lungs", lung_masks=masker)
  assert reference.region == "lungs"
  assert np.array_equal(lungs_out.images, exposure.normalise(evaluated.images, reference, masker(evaluated.images)))
  with pytest.raises(DataError, match="lung masker"):
    exposure.normalise_like_training(train, [evaluated], region="lungs")
  with pytest.raises(DataError, match="unknown exposure region"):
    exposure.normalise_like_training(train, [evaluated], region="centre")


def test_cli_exposure_needs_training_patients_and_records_the_reference(capsys, nih_path):
  from jaxcxr import cli  # pylint: disable=g-import-not-at-top

  argv = ["evaluate", "classifier", "--task", "sex", "--data", str(nih_path), "--exposure", "body"]
  assert cli.main(argv + ["--split", "train"]) == 2
  assert "--exposure body needs --split val or test" in capsys.readouterr().err
  assert cli.main(argv + ["--split", "test", "--no-baselines", "--json"]) == 0
  result = json.loads(capsys.readouterr().out)
  assert result["exposure"] == "body" and result["exposure_reference"]["region"] == "body"
  assert result["exposure_reference"]["n_images"] > 0
