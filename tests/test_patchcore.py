"""PatchCore: the memory bank, the k-center coreset, nearest-neighbour scores and maps, lung masks, save/load."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx

from jaxcxr import checkpoints, data
from jaxcxr.anomaly import evaluate_anomaly
from jaxcxr.anomaly.patchcore import (PatchcoreScorer, coreset_indices, cxr_encoder_features, encoder_extractor,
                                      fit_encoder_patchcore, fit_patchcore, load_patchcore, save_patchcore,
                                      unet_encoder_features)
from jaxcxr.models.cxr_encoder import CXREncoder, CXREncoderConfig

TINY_ENCODER = CXREncoderConfig(resolution=32, patch=4, channels=(8, 16, 32), blocks=(1, 1, 1), norm_groups=4)

P = 4   # pixels per patch side of the test extractor


def pixel_patches(images: np.ndarray) -> np.ndarray:
  """A known feature extractor: each P x P block of pixels (in [0, 1]) is one patch's feature vector."""
  x = np.asarray(images, np.float32) / 255.0
  n, h, w = x.shape
  return x.reshape(n, h // P, P, w // P, P).transpose(0, 1, 3, 2, 4).reshape(n, h // P, w // P, P * P)


def normals(n=6, side=32, seed=0) -> np.ndarray:
  """Mid-grey images with a little noise."""
  rng = np.random.default_rng(seed)
  return np.clip(120 + rng.normal(0, 4, (n, side, side)), 0, 255).astype(np.uint8)


def save_tiny_encoder(directory, seed=0, overwrite=False):
  """A randomly initialised 32 px CXR encoder saved as a checkpoint (stage2: 4x4x16, stage3: 2x2x32)."""
  return checkpoints.save_model(directory, CXREncoder(TINY_ENCODER, rngs=nnx.Rngs(seed)), TINY_ENCODER,
                                overwrite=overwrite)


def covering_radius(points: np.ndarray, chosen: np.ndarray) -> float:
  d = np.linalg.norm(points[:, None, :] - points[chosen][None, :, :], axis=-1)
  return float(d.min(axis=1).max())


def test_training_image_scores_exactly_zero_with_the_full_bank():
  train = normals()
  model = fit_patchcore(pixel_patches, train, coreset_fraction=1.0)
  assert model.memory_bank.shape == (6 * 8 * 8, P * P)
  scores, maps = model.score(train[:2])
  assert maps.shape == (2, 32, 32)
  np.testing.assert_array_equal(scores, 0.0)
  np.testing.assert_array_equal(maps, 0.0)
  other, _ = model.score(normals(2, seed=1))
  assert (other > 0).all()


def test_coreset_picks_one_point_per_cluster_first():
  rng = np.random.default_rng(0)
  centres = rng.normal(0, 100, (5, 64))
  cluster = np.repeat(np.arange(5), 30)
  points = centres[cluster] + rng.normal(0, 0.1, (150, 64))
  for projection_dim in (None, 16):
    for seed in range(3):
      chosen = coreset_indices(points, 5, jax.random.key(seed), projection_dim=projection_dim)
      assert sorted(cluster[chosen].tolist()) == [0, 1, 2, 3, 4]
  chosen = coreset_indices(points, 40, jax.random.key(0))
  assert len(set(chosen.tolist())) == 40


def test_coreset_covers_better_than_random_subsampling():
  rng = np.random.default_rng(1)
  points = np.concatenate([rng.normal(0, 1, (300, 8)), rng.normal(6, 3, (100, 8))]).astype(np.float32)
  chosen = coreset_indices(points, 20, jax.random.key(0), projection_dim=4)
  random_radius = max(covering_radius(points, np.random.default_rng(s).choice(400, 20, replace=False))
                      for s in range(5))
  best_random = min(covering_radius(points, np.random.default_rng(s).choice(400, 20, replace=False))
                    for s in range(5))
  assert covering_radius(points, chosen) < best_random <= random_radius


def test_foreign_patch_gets_the_maximum_of_the_map():
  model = fit_patchcore(pixel_patches, normals(), coreset_fraction=0.5, blur_sigma=1.0)
  query = normals(1, seed=3)
  query[0, 12:16, 20:24] = 255                       # patch (3, 5) of the 8 x 8 grid
  scores, maps = model.score(query)
  y, x = np.unravel_index(np.argmax(maps[0]), maps[0].shape)
  assert 12 <= y < 16 and 20 <= x < 24
  clean, _ = model.score(normals(1, seed=3))
  assert scores[0] > 5 * clean[0]


def test_lung_masks_exclude_patches_outside_the_lungs():
  train = normals()
  masks = np.zeros(train.shape, np.uint8)
  masks[:, :, :16] = 1                               # lung = the left half
  model = fit_patchcore(pixel_patches, train, coreset_fraction=1.0, masks=masks)
  assert len(model.memory_bank) == 6 * 8 * 4
  query = normals(1, seed=3)
  query[0, 12:16, 20:24] = 255                       # outside the lungs
  clean, _ = model.score(normals(1, seed=3), masks[:1])
  masked, maps = model.score(query, masks[:1])
  unmasked, _ = model.score(query)
  np.testing.assert_allclose(masked, clean, rtol=1e-6)
  assert unmasked[0] > 5 * masked[0]
  assert maps[0, :, 16:].max() == 0.0 and maps[0, :, :16].max() > 0.0
  inside = query.copy()
  inside[0, 12:16, 4:8] = 255                        # inside the lungs
  assert model.score(inside, masks[:1])[0][0] > 5 * masked[0]


def test_save_load_round_trip_gives_identical_scores(tmp_path):
  model = fit_patchcore(pixel_patches, normals(), coreset_fraction=0.3, seed=2)
  save_patchcore(tmp_path / "pc", model, metadata={"features": "pixels"})
  loaded = load_patchcore(tmp_path / "pc", pixel_patches)
  query = normals(3, seed=5)
  np.testing.assert_array_equal(loaded.memory_bank, model.memory_bank)
  for a, b in zip(model.score(query), loaded.score(query)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="not a PatchCore folder"):
    load_patchcore(tmp_path / "missing", pixel_patches)


def test_bad_inputs_raise():
  train = normals()
  with pytest.raises(ValueError, match="empty"):
    fit_patchcore(pixel_patches, train[:0])
  with pytest.raises(ValueError, match="empty"):
    fit_patchcore(pixel_patches, train, masks=np.zeros(train.shape, np.uint8))
  for fraction in (0.0, -0.1, 1.5, float("nan")):
    with pytest.raises(ValueError, match="coreset_fraction"):
      fit_patchcore(pixel_patches, train, coreset_fraction=fraction)
  with pytest.raises(ValueError, match="masks"):
    fit_patchcore(pixel_patches, train, masks=np.ones((6, 16, 16), np.uint8))
  with pytest.raises(ValueError, match="uint8"):
    fit_patchcore(pixel_patches, train.astype(np.float32))
  with pytest.raises(ValueError, match="features_fn"):
    fit_patchcore(lambda x: pixel_patches(x)[..., 0], train)
  model = fit_patchcore(pixel_patches, train, coreset_fraction=0.5)
  with pytest.raises(ValueError, match="do not match"):
    model.score(normals(2, side=16))
  with pytest.raises(ValueError, match="masks"):
    model.score(train[:2], np.ones((2, 32, 16), np.uint8))
  with pytest.raises(ValueError, match="n must be"):
    coreset_indices(np.zeros((4, 2)), 5, jax.random.key(0))
  with pytest.raises(ValueError, match="non-empty"):
    coreset_indices(np.zeros((0, 2)), 1, jax.random.key(0))


def test_scorer_in_evaluate_anomaly():
  train = normals()
  model = fit_patchcore(pixel_patches, train, coreset_fraction=0.5)
  images = normals(8, seed=7)
  label = np.array([0, 1] * 4, np.int8)
  images[label == 1, 8:16, 8:16] = 250
  test = data.CXRDataset(images=images, label=label, sex=np.array(["M"] * 8), age=np.full(8, 40, np.int16),
                         patient_id=np.array([f"p{i}" for i in range(8)]))
  report = evaluate_anomaly(PatchcoreScorer(model, batch_size=3), test)
  assert report["method"] == "patchcore" and report["roc_auc"] == 1.0
  assert report["residual"].shape == (8, 32, 32)


def test_feature_extractors_give_patch_grids():
  from jaxcxr.config import UNetConfig
  from jaxcxr.models.unet import UNet

  images = normals(3, side=64)
  encoder = CXREncoder(CXREncoderConfig(resolution=32, patch=4, channels=(8, 16, 32), blocks=(1, 1, 1),
                                        norm_groups=4), rngs=nnx.Rngs(0))
  features = cxr_encoder_features(encoder, ("stage2", "stage3"))(images)
  assert features.shape == (3, 4, 4, 48) and np.isfinite(features).all()
  unet = UNet(UNetConfig(resolution=32, channels=(4, 8, 16), norm_groups=2), rngs=nnx.Rngs(0))
  features = unet_encoder_features(unet, (1, 2))(images)
  assert features.shape == (3, 16, 16, 24) and np.isfinite(features).all()
  model = fit_patchcore(unet_encoder_features(unet, (1, 2)), images, coreset_fraction=0.5)
  scores, maps = model.score(images)
  assert maps.shape == (3, 64, 64) and (scores >= 0).all()
  with pytest.raises(ValueError, match="levels"):
    unet_encoder_features(unet, (3,))


def test_encoder_bank_reloads_its_extractor_from_the_folder(tmp_path):
  encoder_dir = save_tiny_encoder(tmp_path / "encoder")
  train, plain = normals(6, side=64), normals(3, side=64, seed=9)
  query = plain.copy()
  query[0, 20:40, 20:40] = 250
  loaded = {}
  for normalise in (False, True):
    out = tmp_path / f"bank{int(normalise)}"
    model = fit_encoder_patchcore(out, encoder_dir, train, stages=("stage2", "stage3"), normalise_exposure=normalise,
                                  coreset_fraction=0.5, metadata={"data": "fixture"})
    loaded[normalise] = load_patchcore(out)                 # no features_fn: rebuilt from the folder's record
    assert loaded[normalise].grid == (4, 4) and loaded[normalise].memory_bank.shape == (48, 48)
    for a, b in zip(model.score(query), loaded[normalise].score(query)):
      np.testing.assert_array_equal(a, b)
    record = json.loads((out / "patchcore.json").read_text())["metadata"]
    assert record["data"] == "fixture" and (record["extractor"]["exposure"] is not None) == normalise
  # Exposure normalisation is applied to the queries: a brighter copy of an image scores nearly as the image itself.
  brighter = (plain + 40).astype(np.uint8)                 # mid-grey noise: no clipping
  shift = lambda bank: np.abs(bank.score(brighter)[0] - bank.score(plain)[0]).max()
  assert shift(loaded[True]) < 0.05 * shift(loaded[False])


def test_encoder_bank_refuses_another_encoder_and_bad_stages(tmp_path):
  encoder_dir = save_tiny_encoder(tmp_path / "encoder")
  fit_encoder_patchcore(tmp_path / "bank", encoder_dir, normals(4, side=32), stages=("stage3",), coreset_fraction=1.0)
  save_tiny_encoder(tmp_path / "encoder", seed=1, overwrite=True)     # other weights at the recorded path
  with pytest.raises(checkpoints.CheckpointError, match="rebuild the bank"):
    load_patchcore(tmp_path / "bank")
  with pytest.raises(ValueError, match="stages"):
    fit_encoder_patchcore(tmp_path / "b2", encoder_dir, normals(4, side=32), stages=("stage7",))
  with pytest.raises(ValueError, match="stage names"):
    encoder_extractor(encoder_dir, ("embedding",))
  save_patchcore(tmp_path / "plain", fit_patchcore(pixel_patches, normals()))
  with pytest.raises(ValueError, match="records no feature extractor"):
    load_patchcore(tmp_path / "plain")
