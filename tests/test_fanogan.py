"""Tests for f-AnoGAN: the encoder, its training against a frozen GAN, and `anomaly.fanogan_scores`.

Compiles dominate on a CPU, so the tests share three: the jitted init, the 2-step
training call of `fanogan_tiny` (the one-call test, the learning test and the
kill-and-resume runs use the same shapes: 12 training images) and the scoring
pass at batch 4 (plus batch 1 for "alone"). The GAN is a random tiny normal-only
pair (conditions sex and age) with numpy-filled weights (`test_anomaly._random_model`:
no initialiser compiles); the encoder's properties do not depend on a trained GAN.
"""

# pylint: disable=protected-access
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcxr import anomaly, checkpoints, config, data
from jaxcxr.config import CXREncoderConfig
from jaxcxr.models import Discriminator, Generator
from jaxcxr.models.cxr_encoder import CXREncoder
from jaxcxr.models.fanogan import Encoder, load_encoder
from jaxcxr.train import fanogan
from test_anomaly import _random_model, generate

TINY_GAN = config.gan_tiny(32, conditions=("sex", "age"))
TINY = config.fanogan_tiny()
N_TRAIN = 12     # normal images of the fixture: every training array has this length (one compile)


def random_gan(resolution: int = 32, seed: int = 0):
  cfg = config.gan_tiny(resolution, conditions=("sex", "age"))
  generator = _random_model(Generator, cfg.generator, seed)
  discriminator = nnx.view(_random_model(Discriminator, cfg.discriminator, seed + 1), use_running_average=True)
  return generator, discriminator


def save_gan(directory, generator, discriminator):
  checkpoints.save_model(directory / "generator", generator, generator.config)
  checkpoints.save_model(directory / "discriminator", discriminator, discriminator.config)
  return directory


def host_copy(tree):
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


@pytest.fixture(scope="module")
def nih(nih_path):
  return data.load(nih_path)


@pytest.fixture(scope="module")
def gan():
  return random_gan()


@pytest.fixture(scope="module")
def gan_dir(gan, tmp_path_factory):
  return save_gan(tmp_path_factory.mktemp("gan"), *gan)


@pytest.fixture(scope="module")
def frozen(gan):
  return {"g": nnx.to_pure_dict(nnx.state(gan[0])), "f": nnx.to_pure_dict(nnx.state(gan[1]))}


@pytest.fixture(scope="module")
def train_call(gan):
  return fanogan.make_train_step(TINY, gan[0].config, anomaly.fanogan.features_graphdef(gan[1], TINY.compute_dtype))


@pytest.fixture(scope="module")
def encoder_graphdef():
  return nnx.graphdef(nnx.eval_shape(lambda: Encoder(TINY.encoder, rngs=nnx.Rngs(0))))


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("resolution, base, channels", [
    (32, 4, (4, 8, 16, 32)),
    (64, 8, (8, 16, 32, 64, 128)),
    (256, 16, (16, 32, 64, 128, 128, 128, 128)),
])
def test_encoder_shapes(resolution, base, channels):
  cfg = config.EncoderConfig(resolution=resolution, base_channels=base, max_channels=128, latent_dim=64)
  assert cfg.channels == channels
  encoder = nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(0)))
  z = nnx.eval_shape(lambda e, x: e(x), encoder, jax.ShapeDtypeStruct((3, resolution, resolution, 1), jnp.float32))
  assert (z.shape, z.dtype) == ((3, 64), jnp.float32)
  with pytest.raises(ValueError, match=rf"\(B, {resolution}, {resolution}, 1\)"):
    encoder(jnp.zeros((3, resolution // 2, resolution // 2, 1)))


def test_configs_round_trip_and_validate():
  for make in [make for name, make in config.PRESETS.items() if name.startswith("fanogan_")]:
    cfg = make()
    assert config.from_dict(config.FanoganTrainConfig, json.loads(json.dumps(config.to_dict(cfg)))) == cfg
  assert config.fanogan_64_cpu().augment == config.LIGHT_AUGMENT
  with pytest.raises(ValueError, match="resolution"):
    config.EncoderConfig(resolution=48)
  with pytest.raises(ValueError, match="multiple of steps_per_call"):
    dataclasses.replace(TINY, checkpoint_every=3)
  with pytest.raises(ValueError, match="compute_dtype"):
    dataclasses.replace(TINY, compute_dtype="float16")


def test_augmented_training_batch(getkey):
  # The tiny preset trains without augmentation (compile time); the batch function with it:
  images = np.random.default_rng(0).integers(0, 256, (5, 32, 32), dtype=np.uint8)
  batch = jax.jit(fanogan.training_batch, static_argnums=(2, 3))
  key = getkey()
  plain, idx = batch(key, {"images": images}, 6, None)
  augmented, idx2 = batch(key, {"images": images}, 6, config.LIGHT_AUGMENT)
  np.testing.assert_array_equal(idx, idx2)
  np.testing.assert_allclose(plain[..., 0], images[np.asarray(idx)] / 127.5 - 1.0, atol=1e-6)
  assert augmented.shape == (6, 32, 32, 1) and float(jnp.abs(augmented).max()) <= 1.0
  assert not np.allclose(plain, augmented)


# ----------------------------------------------------------------------------- training


def test_train_call_updates_encoder_and_leaves_gan_frozen(nih, gan, frozen, train_call):
  host, info = fanogan.prepare_data(nih, TINY, ("sex", "age"))
  assert info["n_images"] == N_TRAIN and host["images"].shape == (N_TRAIN, 32, 32)
  state = fanogan.init_train_state(TINY, seed=0)
  before, frozen_before = host_copy(state), host_copy(frozen)
  new_state, metrics = train_call(state, frozen, host)
  assert jax.tree.leaves(state)[0].is_deleted()              # the train state is donated ...
  assert not any(x.is_deleted() for x in jax.tree.leaves(frozen) if isinstance(x, jax.Array))   # ... the GAN not
  assert int(new_state["step"]) == TINY.steps_per_call
  for name, values in metrics.items():
    assert values.shape == (TINY.steps_per_call,) and np.isfinite(values).all(), name
  assert float(metrics["feature_loss"][0]) > 0 and float(metrics["image_loss"][0]) > 0
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before["e"]), jax.tree.leaves(new_state["e"]))]
  assert all(changed)
  # The GAN is bit-identical (its states were arguments, never outputs).
  jax.tree.map(np.testing.assert_array_equal, frozen_before, host_copy(frozen))


def test_encoder_learns_to_invert_the_generator(gan, frozen, train_call, encoder_graphdef):
  # Honest criterion: on images G made itself (quantised to uint8 like stored images), a few
  # dozen encoder steps lower the izi_f loss of those very images well below the random encoder's.
  generator, discriminator = gan
  rng = np.random.default_rng(5)
  cond = np.stack([rng.integers(0, 2, N_TRAIN), rng.uniform(-1.2, 1.0, N_TRAIN)], axis=1).astype(np.float32)
  z = rng.standard_normal((N_TRAIN, 128)).astype(np.float32)
  images = data.to_uint8(generate(generator, z, cond)[..., 0], signed=True)
  arrays = {"images": images, "cond": cond}
  state = fanogan.init_train_state(TINY, seed=1)

  def score(state):
    encoder = nnx.merge(encoder_graphdef, host_copy(state["e"]))
    return anomaly.fanogan_scores(encoder, generator, discriminator, images, cond, batch_size=4, progress=False)

  start = score(state)
  losses = []
  for _ in range(20):                                        # 40 steps, one compile
    state, metrics = train_call(state, frozen, arrays)
    losses.append(np.asarray(metrics["loss"]))
  end = score(state)
  # Measured over four seeds: the mean score falls to 0.48-0.54 of the start, the training loss
  # of the last calls to 0.53-0.61 of the first ones.
  assert end.score.mean() < 0.7 * start.score.mean(), (start.score.mean(), end.score.mean())
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2]), losses


def test_kill_and_resume_is_exact(nih, gan_dir, tmp_path, monkeypatch):
  straight = fanogan.train_fanogan(nih, gan_dir, TINY, tmp_path / "a", progress=False)
  assert straight["steps"] == 4 and straight["start_step"] == 0 and straight["n_images"] == N_TRAIN
  log = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in log] == [2, 4] and all(np.isfinite(r["loss"]) for r in log)

  real = fanogan.make_train_step

  def killed_after_one_call(*args):
    fn, calls = real(*args), []

    def call(*call_args):
      if calls:
        raise KeyboardInterrupt
      calls.append(1)
      return fn(*call_args)

    return call

  monkeypatch.setattr(fanogan, "make_train_step", killed_after_one_call)
  with pytest.raises(KeyboardInterrupt):
    fanogan.train_fanogan(nih, gan_dir, TINY, tmp_path / "b", progress=False)
  monkeypatch.setattr(fanogan, "make_train_step", real)
  assert not (tmp_path / "b" / "encoder").exists()
  with pytest.raises(FileExistsError, match="resume"):
    fanogan.train_fanogan(nih, gan_dir, TINY, tmp_path / "b", progress=False)
  resumed = fanogan.train_fanogan(nih, gan_dir, TINY, tmp_path / "b", resume=True, progress=False)
  assert resumed["start_step"] == 2 and resumed["steps"] == 4

  abstract = jax.eval_shape(lambda: fanogan.init_train_state(TINY))
  with checkpoints.TrainCheckpointer(tmp_path / "a" / "checkpoints") as ca, \
       checkpoints.TrainCheckpointer(tmp_path / "b" / "checkpoints") as cb:
    state_a, state_b = ca.restore(abstract), cb.restore(abstract)
  jax.tree.map(np.testing.assert_array_equal, host_copy(state_a), host_copy(state_b))

  # The saved encoder: the final weights, with the GAN's ids and the data's hash.
  encoder = load_encoder(tmp_path / "b" / "encoder")
  jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(nnx.state(encoder)), host_copy(state_b["e"]))
  meta = checkpoints.read_metadata(tmp_path / "b" / "encoder")
  assert meta["steps"] == 4 and meta["data_sha256"] == data.file_sha256(nih.source)
  assert meta["generator_id"] == checkpoints.model_id(gan_dir / "generator")
  assert meta["discriminator_id"] == checkpoints.model_id(gan_dir / "discriminator")
  assert meta["feature_term"] == "discriminator"
  e, g, d = anomaly.load_fanogan(tmp_path / "b" / "encoder")          # the recorded GAN folder
  assert g.config == TINY_GAN.generator and d.config == TINY_GAN.discriminator and e.config == TINY.encoder


def test_cxr_encoder_feature_term_is_trained_recorded_and_rebuilt(nih, gan, gan_dir, tmp_path):
  """`feature_encoder`: the loss compares the CXR encoder's stage; the record makes `load_fanogan` rebuild that f."""
  cxr = _random_model(CXREncoder, CXREncoderConfig(resolution=64, patch=4, channels=(8, 16), blocks=(1, 1),
                                                   norm_groups=4), 7)
  checkpoints.save_model(tmp_path / "cxr", cxr, cxr.config)
  cfg = dataclasses.replace(TINY, steps=2, feature_weight=3.0)
  summary = fanogan.train_fanogan(nih, gan_dir, cfg, tmp_path / "run", progress=False, feature_encoder=tmp_path / "cxr",
                                  feature_stage="stage1")
  assert summary["steps"] == 2
  meta = checkpoints.read_metadata(tmp_path / "run" / "encoder")
  assert meta["feature_term"] == "encoder" and meta["feature_stage"] == "stage1"
  assert meta["feature_encoder_id"] == checkpoints.model_id(tmp_path / "cxr")
  encoder, generator, f = anomaly.load_fanogan(tmp_path / "run" / "encoder")
  assert isinstance(f, anomaly.EncoderFeatures) and f.stage == "stage1"
  # The score is the izi_f loss with that f: its feature part is the mean squared difference of the unit
  # patch features of x and G(E(x)), not the discriminator's.
  images = data.resize_uint8(nih.images[:4], 32)
  cond = anomaly.normal_condition(nih.subset(np.arange(4)), ("sex", "age"))
  scores = anomaly.fanogan_scores(encoder, generator, f, images, cond, batch_size=4, progress=False)
  x = jnp.asarray(data.to_signed(images)[..., None])
  recon = jnp.asarray(scores.reconstruction, jnp.float32)[..., None]
  features = jax.jit(lambda m, v: m.features(v))
  expected = np.square(np.asarray(features(f, x)) - np.asarray(features(f, recon))).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(scores.feature_loss, expected, rtol=2e-2, atol=1e-5)   # float16 reconstruction
  np.testing.assert_allclose(scores.score, scores.image_loss + scores.feature_loss, rtol=1e-6)
  # The evaluation's scorer scores with the kappa the encoder was trained with.
  scorer = anomaly.FanoganScorer.from_checkpoint(tmp_path / "run" / "encoder", batch_size=4)
  assert scorer.feature_weight == 3.0 and isinstance(scorer.discriminator, anomaly.EncoderFeatures)
  score, _, parts = scorer(nih.subset(np.arange(4)), progress=False)
  np.testing.assert_allclose(score, parts["image_loss"] + 3.0 * parts["feature_loss"], rtol=1e-6)
  # Another CXR encoder in the recorded folder: one clear error, not a silently different f.
  checkpoints.save_model(tmp_path / "cxr", _random_model(CXREncoder, cxr.config, 8), cxr.config, overwrite=True)
  with pytest.raises(checkpoints.CheckpointError, match="not the CXR encoder"):
    anomaly.load_fanogan(tmp_path / "run" / "encoder")
  with pytest.raises(ValueError, match="unknown stage"):
    fanogan.train_fanogan(nih, gan_dir, cfg, tmp_path / "run2", progress=False, feature_encoder=tmp_path / "cxr",
                          feature_stage="stage9")


# ----------------------------------------------------------------------------- scoring


def test_scores_are_the_izi_f_loss_and_batch_independent(nih, gan, encoder_graphdef):
  generator, discriminator = gan
  encoder = nnx.merge(encoder_graphdef, host_copy(fanogan.init_train_state(TINY, seed=2)["e"]))
  dataset = nih.subset(np.arange(6))
  scores = anomaly.fanogan_scores(encoder, generator, discriminator, dataset, batch_size=4, progress=False)
  assert scores.score.shape == (6,) and scores.z.shape == (6, 128)
  assert scores.residual.shape == (6, 32, 32) and scores.residual.dtype == np.float16
  np.testing.assert_allclose(scores.score, scores.image_loss + scores.feature_loss, rtol=1e-6)
  assert (scores.residual >= 0).all() and (scores.residual <= 2).all() and (scores.feature_loss > 0).all()
  # The label is not a condition of a normal-only GAN; abnormal images are reconstructed as normal.
  cond = anomaly.normal_condition(dataset, ("sex", "age"))
  np.testing.assert_array_equal(cond, anomaly.normal_condition(dataset, ("sex", "age", "label"))[:, :2])
  assert (anomaly.normal_condition(dataset, ("sex", "age", "label"))[:, 2] == 0).all()
  # Image 0 alone, and image 5 in another batch (first of a full batch, not last of a padded one).
  small = data.resize_uint8(dataset.images, 32)
  alone = anomaly.fanogan_scores(encoder, generator, discriminator, small[:1], cond[:1], batch_size=4, progress=False)
  other = anomaly.fanogan_scores(encoder, generator, discriminator, small[[5, 1, 2, 3]], cond[[5, 1, 2, 3]],
                                 batch_size=4, progress=False)
  np.testing.assert_allclose(alone.score[0], scores.score[0], rtol=1e-5)
  np.testing.assert_allclose(alone.z[0], scores.z[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(other.score[0], scores.score[5], rtol=1e-5)
  np.testing.assert_allclose(np.asarray(other.residual[0], np.float32), np.asarray(scores.residual[5], np.float32),
                             atol=2e-3)
  # The accessor gives the jitted call fanogan_scores ran for that batch (no new compile) and its arguments.
  program = anomaly.fanogan.score_program(encoder, generator, discriminator, small[[5, 1, 2, 3]], cond[[5, 1, 2, 3]])
  compiled = program.fn._cache_size()
  out = program.fn(*program.args)
  assert program.fn._cache_size() == compiled
  for name, value in other._asdict().items():
    np.testing.assert_array_equal(np.asarray(out[name]), value)
  with pytest.raises(ValueError, match="at least one image"):
    anomaly.fanogan.score_program(encoder, generator, discriminator, small[:0], cond[:0])


# ----------------------------------------------------------------------------- errors


def _forbid_compile(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("compiled before checking the inputs")

  monkeypatch.setattr(fanogan, "make_train_step", fail)
  monkeypatch.setattr(fanogan, "init_train_state", fail)


def test_bad_inputs_error_before_compile(nih, gan, gan_dir, tmp_path, monkeypatch):
  _forbid_compile(monkeypatch)
  run = lambda ds, cfg=TINY, where=gan_dir: fanogan.train_fanogan(ds, where, cfg, tmp_path / "run", progress=False)
  with pytest.raises(data.DataError, match="no images"):
    run(nih.subset(np.zeros(len(nih), bool)))
  with pytest.raises(data.DataError, match="no normal image"):
    run(nih.select(label=1))
  with pytest.raises(ValueError, match="works at 32x32 .base 32., the encoder config at 64x64"):
    run(nih, dataclasses.replace(TINY, encoder=dataclasses.replace(TINY.encoder, resolution=64)))
  with pytest.raises(ValueError, match="latent_dim"):
    run(nih, dataclasses.replace(TINY, encoder=dataclasses.replace(TINY.encoder, latent_dim=64)))
  other = save_gan(tmp_path / "gan64", *random_gan(64))             # a GAN checkpoint of another resolution
  with pytest.raises(ValueError, match="works at 64x64 .base 64., the encoder config at 32x32"):
    run(nih, where=other)
  with pytest.raises(checkpoints.CheckpointError):
    run(nih, where=tmp_path / "missing")
  assert not (tmp_path / "run").exists()

  # Scoring: mismatched models, images that are not uint8 (N, H, W), a missing or bad cond.
  generator, discriminator = gan
  encoder = nnx.eval_shape(lambda: Encoder(TINY.encoder, rngs=nnx.Rngs(0)))
  images = np.zeros((2, 32, 32), np.uint8)
  cond = np.zeros((2, 2), np.float32)
  with pytest.raises(ValueError, match="does not match the generator"):
    anomaly.fanogan_scores(nnx.eval_shape(lambda: Encoder(config.EncoderConfig(resolution=64), rngs=nnx.Rngs(0))),
                           generator, discriminator, images, cond)
  with pytest.raises(ValueError, match="uint8"):
    anomaly.fanogan_scores(encoder, generator, discriminator, images.astype(np.float32), cond)
  with pytest.raises(ValueError, match="cond is required"):
    anomaly.fanogan_scores(encoder, generator, discriminator, images)
  with pytest.raises(ValueError, match="cond of shape"):
    anomaly.fanogan_scores(encoder, generator, discriminator, images, cond[:, :1])
  with pytest.raises(checkpoints.CheckpointError, match="not the generator"):
    # An encoder checkpoint recording another GAN's ids.
    checkpoints.save_model(tmp_path / "enc", encoder_stub(), TINY.encoder,
                           metadata={"generator_id": "0" * 16, "gan_dir": str(gan_dir)})
    anomaly.load_fanogan(tmp_path / "enc")


def encoder_stub():
  """An encoder with concrete (zero) weights, without running the initialisers."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: Encoder(TINY.encoder, rngs=nnx.Rngs(0))))
  return nnx.merge(graphdef, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), state))
