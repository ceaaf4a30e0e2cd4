"""Tests for the conditional GAN: models, conditions, the train step, the loop, resume, sampling.

One tiny config (`config.gan_tiny`, 32x32, 4-8 channels) is shared by every
training test, so the jitted step compiles once per session (`make_train_step`
caches by config).
"""

import dataclasses
import functools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcxr import checkpoints, config, data
from jaxcxr.models import (Discriminator, Generator, group_condition_batch, load_discriminator, load_generator,
                           make_condition, sample_images)
from jaxcxr.models.graph import abstract_graphdef
from jaxcxr.train import gan

from conftest import jit_call

TINY = config.gan_tiny()


def _tiny_models(resolution=32, conditions=config.KNOWN_CONDITIONS):
  cfg = config.gan_tiny(resolution, conditions=conditions)
  return cfg.generator, cfg.discriminator


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, z, cond):
  """Generator forward over the split state; one module-level function so tests share compiles."""
  return nnx.merge(graphdef, state)(z, cond)


def _graphdef(cls, config):
  return nnx.graphdef(nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0))))


@pytest.fixture(scope="module")
def nih(nih_path):
  return data.load(nih_path)


@pytest.fixture(scope="module")
def tiny_state():
  """Initial weights of TINY, on the host. The jitted init is shared with the training tests
  (eager NNX initialisation would compile every initialiser op separately: slow on a CPU)."""
  return jax.tree.map(lambda x: np.array(x, copy=True), gan.init_train_state(TINY, seed=0))


@pytest.fixture
def generator(tiny_state):
  return nnx.merge(_graphdef(Generator, TINY.generator), tiny_state["g"])


@pytest.fixture
def discriminator(tiny_state):
  return nnx.merge(_graphdef(Discriminator, TINY.discriminator), tiny_state["d"], tiny_state["d_stats"])


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize("resolution, conditions, g_channels", [
    (32, ("sex", "age", "label"), (8, 8, 8, 4)),
    (64, ("sex", "age", "label"), (8, 8, 8, 8, 4)),
    (128, ("sex", "age"), (8, 8, 8, 8, 8, 4)),
    (256, ("sex", "age", "label"), (8, 8, 8, 8, 8, 8, 4)),
])
def test_shapes(resolution, conditions, g_channels):
  g_cfg, d_cfg = _tiny_models(resolution, conditions)
  assert g_cfg.channels == g_channels and d_cfg.channels == g_channels[::-1]
  g = nnx.eval_shape(lambda: Generator(g_cfg, rngs=nnx.Rngs(0)))
  d = nnx.eval_shape(lambda: Discriminator(d_cfg, rngs=nnx.Rngs(0)))
  z = jax.ShapeDtypeStruct((3, 128), jnp.float32)
  cond = jax.ShapeDtypeStruct((3, len(conditions)), jnp.float32)
  images = nnx.eval_shape(lambda g, z, c: g(z, c), g, z, cond)
  assert (images.shape, images.dtype) == ((3, resolution, resolution, 1), jnp.float32)
  logits = nnx.eval_shape(lambda d, x, c: d(x, c), d, images, cond)
  assert (logits.shape, logits.dtype) == ((3,), jnp.float32)
  assert nnx.eval_shape(lambda d, x: d.features(x), d, images).shape == (3, 4, 4, g_channels[0])


def test_generator_forward_range_and_bf16(generator, getkey):
  z = jax.random.normal(getkey(), (3, 128))
  cond = jnp.asarray(make_condition(["M", "F", "F"], [20, 40, 80], [0, 1, 1]))
  graphdef, state = nnx.split(generator)
  x = _forward(graphdef, state, z, cond)
  # The parameter tree does not depend on the compute dtype: fp32 weights run in bf16.
  x16 = _forward(_graphdef(Generator, dataclasses.replace(TINY.generator, dtype="bfloat16")), state, z, cond)
  assert x.shape == (3, 32, 32, 1) and x16.dtype == jnp.float32
  assert float(jnp.abs(x).max()) <= 1.0 and float(x.std()) > 0.05
  assert float(jnp.abs(x - x16).max()) < 0.1


def test_wrong_latent_size_names_expected_and_got():
  g = nnx.eval_shape(lambda: Generator(_tiny_models()[0], rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"\(B, 128\).*\(2, 64\)"):
    g(jnp.zeros((2, 64)), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match=r"cond of shape \(2, 3\).*\(2, 2\)"):
    g(jnp.zeros((2, 128)), jnp.zeros((2, 2)))


def test_conditions():
  cond = make_condition(["M", "f"], [45, 65], [0, 1])
  np.testing.assert_allclose(cond, [[0, 0, 0], [1, 1, 1]])
  assert make_condition(1, 25, conditions=("sex", "age")).tolist() == [[1.0, -1.0]]
  batch = group_condition_batch("58_64m", 3, label=1)
  np.testing.assert_allclose(batch, np.tile([[0.0, (61 - 45) / 20, 1.0]], (3, 1)))
  with pytest.raises(data.DataError, match="unknown group"):
    group_condition_batch("30_34m", 2)
  with pytest.raises(data.DataError, match="sex"):
    make_condition("U", 40)


def test_discriminator_spectral_norm_modes(discriminator, getkey):
  d = discriminator
  x = jax.random.uniform(getkey(), (3, 32, 32, 1), minval=-1.0, maxval=1.0)
  cond = jnp.asarray(make_condition(["M", "F", "F"], [20, 40, 60], [0, 1, 1]))
  call = jax.jit(_call_and_stats, static_argnums=0)

  eval_d = nnx.view(d, use_running_average=True)
  graphdef, params, stats = nnx.split(eval_d, nnx.Param, nnx.BatchStat)
  params, stats = nnx.to_pure_dict(params), nnx.to_pure_dict(stats)
  logits1, stats1, feats1 = call(graphdef, params, stats, x, cond)
  logits2, stats2, _ = call(graphdef, params, stats1, x, cond)
  # Inference mode: u frozen, outputs repeatable, weights untouched.
  np.testing.assert_array_equal(logits1, logits2)
  jax.tree.map(np.testing.assert_array_equal, stats, stats2)
  # Training mode moves u by one power-iteration step per call.
  train_graphdef = nnx.graphdef(d)
  _, stats_train, _ = call(train_graphdef, params, stats, x, cond)
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(stats_train)))
  # The logits depend on the condition (projection), the features (no condition input) do not.
  logits_other, _, feats_other = call(graphdef, params, stats, x, 1.0 - cond)
  assert not np.allclose(logits1, logits_other)
  np.testing.assert_array_equal(feats1, feats_other)
  assert feats1.shape == (3, 4, 4, 8)


def _call_and_stats(graphdef, params, stats, x, cond):
  d = nnx.merge(graphdef, params, stats)
  logits = d(x, cond)
  return logits, nnx.to_pure_dict(nnx.state(d, nnx.BatchStat)), d.features(x)


def test_generator_batch_independent_and_deterministic(generator, getkey):
  g = generator
  key = getkey()
  many = sample_images(g, key, 3, "38_44f")
  one = sample_images(g, key, 1, "38_44f")
  again = sample_images(g, key, 3, "38_44f", batch_size=2)   # 2 calls, the last one padded
  assert many.shape == (3, 32, 32) and many.dtype == np.uint8
  # uint8 rounding can move a pixel by one level between batch sizes, never more.
  assert np.abs(many[:1].astype(int) - one.astype(int)).max() <= 1
  assert np.abs(many.astype(int) - again.astype(int)).max() <= 1
  np.testing.assert_array_equal(many, sample_images(g, key, 3, "38_44f"))
  assert not np.array_equal(many, sample_images(g, getkey(), 3, "38_44f"))
  # Float level: image 0 alone equals image 0 of a batch.
  z = jax.random.normal(getkey(), (3, 128))
  cond = jnp.asarray(group_condition_batch("18_24m", 3))
  graphdef, state = nnx.split(g)
  np.testing.assert_allclose(_forward(graphdef, state, z[:1], cond[:1])[0], _forward(graphdef, state, z, cond)[0],
                             atol=1e-5)
  with pytest.raises(ValueError, match="not conditioned on the label"):
    sample_images(nnx.eval_shape(lambda: Generator(_tiny_models(conditions=("sex", "age"))[0], rngs=nnx.Rngs(0))),
                  key, 1, "18_24m", label=1)


# ----------------------------------------------------------------------------- data checks


def _forbid_compile(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("compiled before checking the data")

  monkeypatch.setattr(gan, "make_train_step", fail)
  monkeypatch.setattr(gan, "init_train_state", fail)


def test_empty_dataset_error_before_compile(nih, tmp_path, monkeypatch):
  _forbid_compile(monkeypatch)
  with pytest.raises(data.DataError, match="no images"):
    gan.train_gan(nih.subset(np.zeros(len(nih), bool)), TINY, tmp_path / "run", progress=False)


def test_single_class_error_before_compile(nih, tmp_path, monkeypatch):
  _forbid_compile(monkeypatch)
  with pytest.raises(data.DataError, match="every image has label 1.*both"):
    gan.train_gan(nih.select(label=1), TINY, tmp_path / "run", progress=False)
  assert not (tmp_path / "run").exists()


def test_normal_only_gan_accepts_one_class(nih):
  cfg = dataclasses.replace(config.gan_tiny(conditions=("sex", "age")), normal_only=True)
  arrays, info = gan.prepare_data(nih, cfg)
  assert info["n_images"] == int((nih.label == 0).sum()) == arrays["images"].shape[0]
  assert arrays["images"].shape[1:] == (32, 32) and arrays["cond"].shape[1] == 2
  with pytest.raises(ValueError, match="normal_only"):
    dataclasses.replace(TINY, normal_only=True)


# ----------------------------------------------------------------------------- training


def test_train_call_finite_and_updates(nih):
  host, _ = gan.prepare_data(nih, TINY)
  # The trainer's compiled call on a fresh state, as `train_step_program` gives it (for benchmarks).
  program = gan.train_step_program(TINY, host, seed=0)
  assert program.fn is gan.make_train_step(TINY) and program.donated == (0,)
  state = program.args[0]
  jax.tree.map(np.testing.assert_array_equal, state, gan.init_train_state(TINY, seed=0))
  before = jax.tree.map(lambda x: np.array(x, copy=True), state)  # a copy: views would block donation
  new_state, metrics = program.fn(*program.args)
  assert jax.tree.leaves(state)[0].is_deleted()  # the train state is donated
  assert int(new_state["step"]) == TINY.steps_per_call
  for name, values in metrics.items():
    assert values.shape == (TINY.steps_per_call,) and np.isfinite(values).all(), name
  assert float(metrics["r1"][0]) > 0  # step 0 carries the lazy R1 penalty
  for part in ("g", "g_ema", "d", "d_stats"):
    # Every weight moves (EMA: most of them; a (1,)-shaped unit power-iteration vector cannot).
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before[part]),
                                                         jax.tree.leaves(new_state[part])) if a.size > 1]
    assert np.mean(changed) > (0.9 if part == "g_ema" else 0.999), part
  # ADA: p starts at 0 and moves by exactly batch/ada_images per step, up or down, within [0, 1].
  assert float(metrics["ada_p"][0]) == 0.0
  steps = np.diff(np.append(metrics["ada_p"], new_state["ada_p"]))
  unit = TINY.batch_size / TINY.ada_images
  assert np.all(np.isclose(np.abs(steps), unit) | np.isclose(steps, 0.0)), steps
  assert 0.0 <= float(new_state["ada_p"]) <= 1.0


def test_consistency_term_adds_to_the_discriminator_update_only(nih):
  """bCR: D's logistic loss and logits at step 0 are the plain step's, the term is positive, and D moves otherwise."""
  # T = cutout alone (a translation of 0.01 x 32 px rounds to none), ADA's p near 0: D judges the plain images.
  cfg = dataclasses.replace(TINY, cr_weight=10.0, diffaug_translation=0.01)
  host, _ = gan.prepare_data(nih, TINY)
  plain_state, plain = gan.make_train_step(TINY)(gan.init_train_state(TINY, seed=0), jax.device_put(host))
  state, metrics = gan.make_train_step(cfg)(gan.init_train_state(cfg, seed=0), jax.device_put(host))
  assert "cr" not in plain and np.all(np.asarray(metrics["cr"]) > 0), metrics["cr"]
  for name in ("d_loss", "d_real", "d_fake"):   # step 0: the same weights and the same real and fake images
    np.testing.assert_allclose(metrics[name][0], plain[name][0], rtol=1e-5, err_msg=name)
  moved = [not np.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(jax.tree.leaves(state["d"]),
                                                                       jax.tree.leaves(plain_state["d"]))]
  assert np.mean(moved) > 0.9
  with pytest.raises(ValueError, match="cr_weight"):
    dataclasses.replace(TINY, cr_weight=1.0, cr_augment=())
  with pytest.raises(ValueError, match="cr_augment"):
    dataclasses.replace(TINY, cr_augment=("flip",))


def test_adaptive_augmentation_probability_extremes(getkey):
  images = jax.random.uniform(getkey(), (6, 32, 32, 1), minval=-1.0, maxval=1.0)
  key = getkey()
  np.testing.assert_array_equal(gan._maybe_augment(key, images, jnp.float32(0.0), TINY), images)
  k_aug, _ = jax.random.split(key)
  np.testing.assert_array_equal(gan._maybe_augment(key, images, jnp.float32(1.0), TINY),
                                gan.diff_augment(k_aug, images, TINY))


def test_kill_and_resume_is_exact(nih, tmp_path, monkeypatch):
  cfg = dataclasses.replace(TINY, sample_every=2)
  # Both runs start from a saved GAN (`--init-from`), whose folder is gone when the killed run resumes.
  fresh = gan.init_train_state(cfg, 5)
  start = tmp_path / "start"
  checkpoints.save_model(start / "generator", nnx.merge(abstract_graphdef(Generator, cfg.generator), fresh["g"]),
                         cfg.generator)
  checkpoints.save_model(start / "discriminator", nnx.merge(abstract_graphdef(Discriminator, cfg.discriminator),
                                                            fresh["d"], fresh["d_stats"]), cfg.discriminator)
  programs = gan.make_train_step(cfg)._cache_size()   # pylint: disable=protected-access  (other tests' calls)
  straight = gan.train_gan(nih, cfg, tmp_path / "a", progress=False, init_from=start)
  assert straight["steps"] == 4 and straight["start_step"] == 0
  assert sorted(p.name for p in (tmp_path / "a" / "samples").iterdir()) == ["step_000002.png", "step_000004.png"]
  log = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in log] == [2, 4] and all(np.isfinite(r["g_loss"]) for r in log)

  # Kill the second run after its first call (and checkpoint), then resume it in fresh objects.
  real = gan.make_train_step

  def killed_after_one_call(config):
    fn, calls = real(config), []

    def call(state, arrays):
      if calls:
        raise KeyboardInterrupt
      calls.append(1)
      return fn(state, arrays)

    return call

  monkeypatch.setattr(gan, "make_train_step", killed_after_one_call)
  with pytest.raises(KeyboardInterrupt):
    gan.train_gan(nih, cfg, tmp_path / "b", progress=False, init_from=start)
  monkeypatch.setattr(gan, "make_train_step", real)
  assert not (tmp_path / "b" / "generator").exists()
  with pytest.raises(FileExistsError, match="resume"):
    gan.train_gan(nih, cfg, tmp_path / "b", progress=False, init_from=start)
  shutil.rmtree(start)   # a resumed run reads only its own checkpoint
  resumed = gan.train_gan(nih, cfg, tmp_path / "b", resume=True, progress=False, init_from=start)
  assert resumed["start_step"] == 2 and resumed["steps"] == 4
  # At most one more compiled training program for the fresh start, the calls after it and the resumed run: the
  # loop commits the state to the device, so the arguments' shardings never change between calls.
  assert gan.make_train_step(cfg)._cache_size() <= programs + 1   # pylint: disable=protected-access

  abstract = jax.eval_shape(lambda: gan.init_train_state(cfg))
  with checkpoints.TrainCheckpointer(tmp_path / "a" / "checkpoints") as ca, \
       checkpoints.TrainCheckpointer(tmp_path / "b" / "checkpoints") as cb:
    assert ca.latest_step() == cb.latest_step() == 4
    state_a, state_b = ca.restore(abstract), cb.restore(abstract)
  for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)

  # The inference checkpoints: EMA generator and discriminator, with metadata.
  generator = load_generator(tmp_path / "b" / "generator")
  discriminator = load_discriminator(tmp_path / "b" / "discriminator")
  meta = checkpoints.read_metadata(tmp_path / "b" / "generator")
  assert meta["steps"] == 4 and meta["data_sha256"] == data.file_sha256(nih.source)
  key = jax.random.key(3)
  reference = nnx.merge(nnx.graphdef(generator), state_b["g_ema"])
  np.testing.assert_array_equal(sample_images(generator, key, 2, "58_64f"), sample_images(reference, key, 2, "58_64f"))
  for part, model in (("g_ema", generator), ("d", discriminator), ("d_stats", discriminator)):
    saved = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat if part == "d_stats" else nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, saved, state_b[part])
  features = nnx.eval_shape(lambda d, x: d.features(x), discriminator, jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32))
  assert features.shape == (1, 4, 4, 8)


def test_configs_round_trip_and_validate():
  for make in [make for name, make in config.PRESETS.items() if name.startswith("gan_")]:
    cfg = make()
    assert config.from_dict(config.GanTrainConfig, json.loads(json.dumps(config.to_dict(cfg)))) == cfg
  with pytest.raises(ValueError, match="resolution"):
    config.GeneratorConfig(resolution=48)
  with pytest.raises(ValueError, match="conditions"):
    dataclasses.replace(TINY, generator=dataclasses.replace(TINY.generator, conditions=("sex", "age")))
  with pytest.raises(ValueError, match="multiple of steps_per_call"):
    dataclasses.replace(TINY, checkpoint_every=3)


def test_warm_start_takes_a_saved_gan_and_refuses_another_shape(tmp_path):
  cfg = config.gan_tiny()
  generator = Generator(cfg.generator, rngs=nnx.Rngs(7))
  discriminator = Discriminator(cfg.discriminator, rngs=nnx.Rngs(8))
  checkpoints.save_model(tmp_path / "gan" / "generator", generator, cfg.generator)
  checkpoints.save_model(tmp_path / "gan" / "discriminator", discriminator, cfg.discriminator)
  fresh = gan.init_train_state(cfg)
  state = gan.warm_start(fresh, tmp_path / "gan")
  expected = {"g": nnx.to_pure_dict(nnx.state(generator, nnx.Param)),
              "g_ema": nnx.to_pure_dict(nnx.state(generator, nnx.Param)),
              "d": nnx.to_pure_dict(nnx.state(discriminator, nnx.Param)),
              "d_stats": nnx.to_pure_dict(nnx.state(discriminator, nnx.BatchStat))}
  for part, tree in expected.items():
    for x, y in zip(jax.tree.leaves(state[part]), jax.tree.leaves(tree)):
      np.testing.assert_array_equal(x, y)
  assert int(state["step"]) == 0   # optimisers and step stay fresh
  wider = dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, max_channels=2 * cfg.generator.max_channels))
  with pytest.raises(ValueError, match="saved generator does not match"):
    gan.warm_start(gan.init_train_state(wider), tmp_path / "gan")


def test_warm_start_of_a_normal_only_gan_drops_the_label_and_keeps_the_normal_images(tmp_path, getkey):
  cfg = config.gan_tiny()
  assert "label" in cfg.generator.conditions
  generator = Generator(cfg.generator, rngs=nnx.Rngs(7))
  checkpoints.save_model(tmp_path / "gan" / "generator", generator, cfg.generator)
  checkpoints.save_model(tmp_path / "gan" / "discriminator", Discriminator(cfg.discriminator, rngs=nnx.Rngs(8)),
                         cfg.discriminator)
  normal = dataclasses.replace(cfg, normal_only=True,
                               **{part: dataclasses.replace(getattr(cfg, part), conditions=("sex", "age"))
                                  for part in ("generator", "discriminator")})
  state = gan.warm_start(gan.init_train_state(normal), tmp_path / "gan", normal.generator.conditions)
  warm = nnx.merge(abstract_graphdef(Generator, normal.generator), state["g_ema"])
  z = jax.random.normal(getkey(), (4, cfg.generator.latent_dim))
  sex, age = np.array([0, 1, 0, 1]), np.array([20, 40, 60, 30])
  expected = jit_call(generator, z, make_condition(sex, age, 0))
  np.testing.assert_allclose(jit_call(warm, z, make_condition(sex, age, conditions=("sex", "age"))), expected,
                             atol=1e-5)
  assert not np.allclose(jit_call(generator, z, make_condition(sex, age, 1)), expected, atol=1e-3)  # label mattered
  without_sex = dataclasses.replace(cfg, **{part: dataclasses.replace(getattr(cfg, part), conditions=("age", "label"))
                                           for part in ("generator", "discriminator")})
  with pytest.raises(ValueError, match="only by dropping 'label'"):
    gan.warm_start(gan.init_train_state(without_sex), tmp_path / "gan", without_sex.generator.conditions)
