"""The self-supervised CXR encoder: model outputs, losses, views, training, resume, probes, held-out patients."""

import dataclasses
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcxr import checkpoints, data, encoder_probes, io
from jaxcxr.models.cxr_encoder import (CXREncoder, CXREncoderConfig, embed_images, image_features, load_cxr_encoder,
                                       space_to_depth)
from jaxcxr.models.layers import depth_to_space
from jaxcxr.train import cxr_encoder as ce


# The augmentation as one compiled call (run eagerly, each of its operations compiles on its own).
augment_views = jax.jit(ce.augment_views, static_argnames="config")

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
TINY = ce.cxr_encoder_tiny().encoder
# Views equal to the image: no crop, rotation, shift, intensity change, blur or noise.
IDENTITY = ce.CXRAugmentConfig(crop_area=(1.0, 1.0), crop_aspect=(1.0, 1.0), rotation_deg=0.0, translation=0.0,
                               gamma=1.0, contrast=0.0, brightness=0.0, blur_prob=0.0, noise=0.0)


@pytest.fixture(scope="module")
def nih(nih_path):
  return data.load(nih_path)


# ----------------------------------------------------------------------------- model


def test_embeddings_and_patch_features_have_their_shapes_and_dtypes(nih):
  encoder = CXREncoder(TINY, rngs=nnx.Rngs(0))
  out = encoder.features(jnp.zeros((3, 32, 32, 1)))   # eager: the dict keeps its order (jit sorts the keys)
  assert list(out) == ["stage1", "stage2", "embedding"]
  assert {k: v.shape for k, v in out.items()} == {"stage1": (3, 8, 8, 8), "stage2": (3, 4, 4, 16),
                                                  "embedding": (3, 16)}
  assert all(v.dtype == jnp.float32 for v in out.values())
  assert TINY.feature_shapes() == {"stage1": (8, 8, 8), "stage2": (4, 4, 16)} and TINY.embedding_dim == 16
  # uint8 archive images (256x256) are resized to the encoder's resolution.
  emb = embed_images(encoder, nih.images[:5], batch_size=2)
  assert emb.shape == (5, 16) and emb.dtype == np.float32 and np.isfinite(emb).all()
  feats = image_features(encoder, nih.images[:5], ("stage2", "embedding"), batch_size=4)
  assert feats["stage2"].shape == (5, 4, 4, 16)
  np.testing.assert_allclose(feats["embedding"], emb, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="unknown output"):
    image_features(encoder, nih.images[:2], ("stage9",))
  with pytest.raises(ValueError, match=r"expected images of shape \(B, 32, 32, 1\)"):
    encoder(jnp.zeros((2, 64, 64, 1)))


def test_an_image_embeds_alike_alone_and_in_a_batch(nih):
  encoder = CXREncoder(TINY, rngs=nnx.Rngs(1))
  together = embed_images(encoder, nih.images[:6], batch_size=6)
  alone = np.concatenate([embed_images(encoder, nih.images[i: i + 1], batch_size=1) for i in range(6)])
  np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)
  assert np.abs(together[0] - together[1]).max() > 1e-4   # different images, different embeddings


def test_space_to_depth_inverts_depth_to_space(getkey):
  x = jax.random.normal(getkey(), (2, 8, 12, 3))
  np.testing.assert_array_equal(depth_to_space(space_to_depth(x, 2), 2), x)
  assert space_to_depth(x, 4).shape == (2, 2, 3, 48)


def test_config_validation():
  with pytest.raises(ValueError, match="multiple of"):
    CXREncoderConfig(resolution=100)
  with pytest.raises(ValueError, match="one entry per"):
    CXREncoderConfig(channels=(8, 16), blocks=(1,))
  with pytest.raises(ValueError, match="method"):
    ce.CXREncoderTrainConfig(method="mae")
  with pytest.raises(ValueError, match="crop_area"):
    ce.CXRAugmentConfig(crop_area=(0.5, 1.2))
  with pytest.raises(ValueError, match="eval_every"):
    dataclasses.replace(ce.cxr_encoder_tiny(), steps_per_call=2, eval_every=3)


def test_the_cpu_preset_fits_its_size_budget():
  encoder = nnx.eval_shape(lambda: CXREncoder(ce.cxr_encoder_cpu().encoder, rngs=nnx.Rngs(0)))
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(encoder, nnx.Param)))
  assert 1_000_000 <= n <= 5_000_000 and 4 * n < 50e6   # float32 inference weights under 50 MB


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_of_identical_orthonormal_views(temperature):
  b = 3
  z = jnp.eye(4)[:b] * 7.0   # cosine similarity ignores the scale
  expected = math.log(1 + (2 * b - 2) * math.exp(-1 / temperature))
  np.testing.assert_allclose(float(ce.nt_xent_loss(z, z, temperature)), expected, rtol=1e-5, atol=1e-6)
  # Views that disagree (each paired with another image's projection) cost more.
  assert float(ce.nt_xent_loss(z, jnp.roll(z, 1, axis=0), temperature)) > expected + 1.0


def test_vicreg_terms_in_hand_computed_cases():
  z = jnp.array([[1.0, -1.0], [-1.0, 1.0]])
  # Identical views: no invariance cost; per-dimension std sqrt(2) > 1: no variance cost; the covariance
  # matrix is [[2, -2], [-2, 2]], so each view's term is (4 + 4) / 2 = 4.
  loss, parts = ce.vicreg_loss(z, z, (25.0, 25.0, 1.0))
  np.testing.assert_allclose([parts["invariance"], parts["variance"], parts["covariance"]], [0.0, 0.0, 8.0],
                             atol=1e-6)
  np.testing.assert_allclose(float(loss), 8.0, rtol=1e-6)
  # Collapsed projections: std sqrt(1e-4) = 0.01 per dimension, variance term 0.99; invariance 1 when shifted.
  zeros = jnp.zeros((4, 3))
  loss, parts = ce.vicreg_loss(zeros, zeros + 1.0, (2.0, 3.0, 5.0))
  np.testing.assert_allclose([parts["invariance"], parts["variance"], parts["covariance"]], [1.0, 0.99, 0.0],
                             atol=1e-6)
  np.testing.assert_allclose(float(loss), 2.0 + 3.0 * 0.99, rtol=1e-6)


def test_byol_loss_of_aligned_and_opposite_predictions(getkey):
  t = jax.random.normal(getkey(), (5, 8))
  np.testing.assert_allclose(float(ce.byol_loss(3.0 * t, t)), 0.0, atol=1e-6)
  np.testing.assert_allclose(float(ce.byol_loss(-t, t)), 4.0, rtol=1e-6)


# ----------------------------------------------------------------------------- views


def test_views_keep_shape_and_range_and_vary_with_the_key(nih, getkey):
  images = jnp.asarray(data.resize_uint8(nih.images[:4], 64))
  a = augment_views(getkey(), images)
  b = augment_views(getkey(), images)
  assert a.shape == (4, 64, 64, 1) and a.dtype == jnp.float32
  assert float(a.min()) >= -1.0 and float(a.max()) <= 1.0
  assert float(jnp.abs(a - b).mean()) > 0.01
  key = getkey()
  np.testing.assert_array_equal(augment_views(key, images), augment_views(key, images))
  with pytest.raises(ValueError, match="square images"):
    augment_views(key, images[..., :32])


def test_view_draws_have_their_entries_and_shapes():
  # Traced only (jax.eval_shape): nothing compiles.
  shapes = jax.eval_shape(lambda k: ce.draw_views(k, 3, 16), jax.random.key(0))
  scalars = ("area", "log_aspect", "angle", "log_gamma", "contrast", "brightness", "blur_sigma", "blur")
  assert {k: v.shape for k, v in shapes.items()} == {**{k: (3,) for k in scalars}, "position": (3, 2), "shift": (3, 2),
                                                     "noise": (3, 16, 16)}
  assert shapes["blur"].dtype == jnp.bool_
  # Without blur and noise, no draws of them.
  assert set(jax.eval_shape(lambda k: ce.draw_views(k, 3, 16, IDENTITY), jax.random.key(0))) == (
      set(scalars) - {"blur_sigma", "blur"} | {"position", "shift"})


def test_identity_views_are_the_image(nih, getkey):
  images = jnp.asarray(data.resize_uint8(nih.images[:3], 64))
  views = augment_views(getkey(), images, IDENTITY)
  np.testing.assert_allclose(views[..., 0], images / 127.5 - 1.0, atol=1e-5)


def test_views_never_flip_left_and_right(getkey):
  # Bright image-left half, dark right half: a mirrored view would have its bright side on the right.
  image = np.zeros((1, 64, 64), np.uint8)
  image[:, :, :32] = 200
  image[:, :, 32:] = 40
  images = jnp.asarray(np.repeat(image, 4, axis=0))   # the shape of the test above: no new compilation
  for _ in range(16):
    views = augment_views(getkey(), images)[..., 0]
    left, right = views[:, :, :32].mean(axis=(1, 2)), views[:, :, 32:].mean(axis=(1, 2))
    assert bool((left > right).all())


# ----------------------------------------------------------------------------- training


def test_simclr_steps_lower_the_loss_on_a_fixed_batch(nih):
  cfg = dataclasses.replace(ce.cxr_encoder_tiny("simclr"), augment=IDENTITY, learning_rate=3e-3)
  images = jnp.asarray(data.resize_uint8(nih.images[:4], 32))   # batch 4 of 4 images: the same set every step
  state = ce.init_train_state(cfg)
  call = ce.make_train_step(cfg)
  losses = []
  for _ in range(12):
    state, metrics = call(state, images)
    losses.extend(np.asarray(metrics["loss"]).tolist())
  assert int(state["step"]) == 12
  assert losses[-1] < losses[0] - 0.05, losses


def test_byol_updates_its_target_by_ema(nih):
  cfg = ce.cxr_encoder_tiny("byol")
  images = jnp.asarray(data.resize_uint8(nih.images[:8], 32))
  state = ce.init_train_state(cfg)
  before = jax.tree.map(np.array, state)
  state, metrics = ce.make_train_step(cfg)(state, images)
  assert np.isfinite(metrics["loss"]).all() and set(state["params"]) == {"encoder", "projector", "predictor"}
  for t0, p1, t1 in zip(jax.tree.leaves(before["target"]), jax.tree.leaves({k: state["params"][k] for k in
                                                                             ("encoder", "projector")}),
                        jax.tree.leaves(state["target"])):
    np.testing.assert_allclose(t1, 0.99 * t0 + 0.01 * np.asarray(p1), rtol=1e-5, atol=1e-7)


def _sex_probe(nih):
  keep = np.isin(nih.sex, ["M", "F"])
  y = (nih.sex == "F").astype(np.int32)
  idx = np.flatnonzero(keep)
  return ce.ProbeTask(name="sex", train_images=nih.images[idx[:16]], train_y=y[idx[:16]],
                      train_patients=nih.patient_id[idx[:16]], val_images=nih.images[idx[16:]], val_y=y[idx[16:]],
                      val_patients=nih.patient_id[idx[16:]])


def test_training_resumes_exactly_and_saves_a_loadable_encoder(nih, tmp_path):
  cfg = dataclasses.replace(ce.cxr_encoder_tiny("vicreg"), eval_every=2)
  probes = (_sex_probe(nih),)
  whole = ce.train_cxr_encoder(nih, cfg, tmp_path / "a", probes=probes, progress=False)
  assert whole["steps"] == 4 and whole["probes"]["step"] == 4
  assert 0.0 <= whole["probes"]["sex"]["roc_auc"] <= 1.0 and len(whole["probes"]["sex"]["ci95"]) == 2
  half = ce.train_cxr_encoder(nih, cfg, tmp_path / "b", probes=probes, progress=False, stop_at=2)
  assert half["steps"] == 2
  # A killed run may have written a metrics line after its checkpoint: the resumed run drops it.
  io.append_json_line(tmp_path / "b" / "probes.jsonl", {"step": 99})
  resumed = ce.train_cxr_encoder(nih, cfg, tmp_path / "b", probes=probes, resume=True, progress=False)
  assert resumed["start_step"] == 2 and resumed["steps"] == 4
  a, b = load_cxr_encoder(whole["encoder"]), load_cxr_encoder(resumed["encoder"])
  for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b))):
    np.testing.assert_array_equal(x, y)
  drop_time = lambda rows: [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]
  assert drop_time(io.read_json_lines(tmp_path / "a" / "probes.jsonl")) == drop_time(
      io.read_json_lines(tmp_path / "b" / "probes.jsonl"))
  assert [r["step"] for r in io.read_json_lines(tmp_path / "b" / "probes.jsonl")] == [2, 4]
  strip = lambda rows: [{k: v for k, v in r.items() if k != "images_per_second"} for r in rows]
  assert strip(io.read_json_lines(tmp_path / "a" / "metrics.jsonl")) == strip(
      io.read_json_lines(tmp_path / "b" / "metrics.jsonl"))
  # The saved encoder is the trained one: it embeds as the state's parameters do, and its card facts are there.
  meta = checkpoints.read_metadata(whole["encoder"])
  assert meta["method"] == "vicreg" and meta["steps"] == 4 and meta["probe"]["step"] == 4
  np.testing.assert_allclose(embed_images(a, nih.images[:3]), embed_images(b, nih.images[:3]), rtol=0, atol=0)
  with pytest.raises(FileExistsError):
    ce.train_cxr_encoder(nih, cfg, tmp_path / "a", progress=False)


def test_save_and_load_round_trip(nih, tmp_path):
  encoder = CXREncoder(TINY, rngs=nnx.Rngs(3))
  path = checkpoints.save_model(tmp_path / "enc", encoder, TINY, metadata={"steps": 0})
  loaded = load_cxr_encoder(path)
  assert loaded.config == TINY
  np.testing.assert_array_equal(embed_images(encoder, nih.images[:4]), embed_images(loaded, nih.images[:4]))
  with pytest.raises(checkpoints.CheckpointError):
    load_cxr_encoder(tmp_path / "missing")


def test_training_rejects_too_few_images(nih, tmp_path):
  with pytest.raises(data.DataError, match="fewer than one batch"):
    ce.train_cxr_encoder(nih.subset(range(2)), ce.cxr_encoder_tiny(), tmp_path / "x", progress=False)


# ----------------------------------------------------------------------------- probes and data


def test_linear_probe_separates_separable_features_and_needs_both_classes():
  rng = np.random.default_rng(0)
  y = np.tile([0, 1], 30)
  x = rng.standard_normal((60, 5)) + 3.0 * y[:, None]
  result, prob = ce.linear_probe(x[:40], y[:40], np.arange(40).astype(str), x[40:], y[40:])
  assert result["roc_auc"] == 1.0 and result["n_train"] == 40 and result["n_val"] == 20 and prob.shape == (20,)
  shuffled, _ = ce.linear_probe(rng.standard_normal((40, 5)), y[:40], np.arange(40).astype(str),
                                rng.standard_normal((20, 5)), y[40:])
  assert shuffled["ci95"][0] < 0.5 < shuffled["ci95"][1]   # noise features: chance inside the interval
  with pytest.raises(data.DataError, match="2 training and 2 validation"):
    ce.linear_probe(x[:40], np.zeros(40, int), np.arange(40).astype(str), x[40:], y[40:])


def test_pretraining_holds_out_the_test_patients_of_the_fixtures(nih_path, covid_path):
  dev = ce.development_data([nih_path], covid=covid_path)
  nih, covid = data.load(nih_path), data.load(covid_path)
  pre = dev.pretrain
  assert set(np.unique(pre.extra["archive"])) <= {0, 1} and len(pre) < len(nih) + len(covid)
  nih_pre = set(pre.patient_id[pre.extra["archive"] == 0])
  covid_pre = set(pre.patient_id[pre.extra["archive"] == 1])
  assert nih_pre.isdisjoint(nih.patient_id[data.standard_split(nih)["test"]])
  assert covid_pre.isdisjoint(covid.patient_id[data.standard_split(covid)["test"]])
  assert nih_pre | set(ce.held_out_patients(nih, "nih")) == set(nih.patient_id)
  assert dev.description["archives"]["nih"]["pretrain_images"] == len(nih_pre)
  assert [p.name for p in dev.probes] == ["pneumonia", "sex"]
  for p in dev.probes:   # the probes' validation patients are not their training patients
    assert len(p.train_y) == len(p.train_images) > 0 and len(p.val_y) == len(p.val_patients) > 0
    assert set(p.train_patients).isdisjoint(p.val_patients)
  with pytest.raises(ValueError, match="family"):
    ce.held_out_patients(nih, "mimic")


@pytest.mark.skipif(not (SHARED / "nih_cxr14_subset_256.npz").is_file(), reason="needs ../shared/data")
def test_no_test_patient_of_a_shipped_model_is_pretrained_on():
  repo = pathlib.Path(__file__).resolve().parents[1]
  dev = ce.development_data(**ce.archives_in(SHARED))
  pre = dev.pretrain
  archive = pre.extra["archive"]
  nih_pre, covid_pre = set(pre.patient_id[archive <= 1]), set(pre.patient_id[archive == 2])
  full = data.load([SHARED / n for n in ce.NIH_ARCHIVES])
  for name, filtered in [("classifier_abnormal_ensemble_96", True), ("classifier_sex_ensemble_64", False)]:
    meta = checkpoints.read_metadata(repo / "checkpoints" / name / "classifier")
    ds = data.keep_abnormal_finding(full) if filtered else full
    test = set(ds.patient_id[np.asarray(meta["split"]["test"], np.int64)])
    assert test and nih_pre.isdisjoint(test), name
  unet = checkpoints.read_metadata(repo / "checkpoints" / "unet_256" / "unet")
  assert covid_pre.isdisjoint(map(str, unet["split"]["test_patients"]))
  assert nih_pre.isdisjoint(full.patient_id[data.standard_split(full)["test"]])
  assert dev.description["pretrain_images"] == len(pre) > 1000


def _probe_task(nih):
  """A probe task on the fixture: sex, first 16 images for training, last 8 for validation (other patients)."""
  y = (nih.sex == "F").astype(np.int64)
  return ce.ProbeTask(name="sex", train_images=nih.images[:16], train_y=y[:16], train_patients=nih.patient_id[:16],
                      val_images=nih.images[16:], val_y=y[16:], val_patients=nih.patient_id[16:])


def test_pooled_stage_features_are_means_then_maxima_of_the_stages(nih):
  cfg = CXREncoderConfig(resolution=32, patch=4, channels=(8, 16, 16), blocks=(1, 1, 1), norm_groups=4)
  encoder = CXREncoder(cfg, rngs=nnx.Rngs(0))
  pooled = encoder_probes.pooled_stage_features(encoder, nih.images[:3])
  maps = image_features(encoder, nih.images[:3], ("stage2", "stage3"))
  expected = np.concatenate([maps["stage2"].mean((1, 2)), maps["stage2"].max((1, 2)), maps["stage3"].mean((1, 2)),
                             maps["stage3"].max((1, 2))], axis=1)
  # The same features by another route (the classifier's [0, 1] inputs, then signed): float32 rounding only.
  np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-5)


def test_evaluate_encoder_reports_each_probe_beside_the_baselines(nih):
  task = _probe_task(nih)
  assert min(np.bincount(task.val_y, minlength=2)) >= 2 and min(np.bincount(task.train_y, minlength=2)) >= 2
  cfg = CXREncoderConfig(resolution=32, patch=4, channels=(8, 16, 16), blocks=(1, 1, 1), norm_groups=4)
  result = encoder_probes.evaluate_encoder(CXREncoder(cfg, rngs=nnx.Rngs(0)), [task])["sex"]
  assert result["n_val"] == 8 and set(result["probes"]) == {"embedding", "pooled_stages"}
  assert result["probes"]["embedding"]["dimensions"] == 16 and result["probes"]["pooled_stages"]["dimensions"] == 64
  for probe in result["probes"].values():
    comparison = probe["vs_baselines"]
    assert comparison["method"]["roc_auc"] == pytest.approx(probe["roc_auc"])
    assert comparison["strongest"] == result["strongest_baseline"]
  assert set(result["baselines"]) == {"statistic", "statistics_logreg", "pixel_logreg"}
  with pytest.raises(ValueError, match="unknown feature set"):
    encoder_probes.evaluate_encoder(CXREncoder(cfg, rngs=nnx.Rngs(0)), [task], feature_sets=("pixels",))
