"""Tests for HealthyGAN: translator and critic, the training step and loop, `anomaly.healthygan_scores`.

Compiles dominate on a CPU, so the tests share: the jitted init, the 2-step
training call of `healthygan_tiny` (the one-call test and the kill-and-resume runs
train on the fixture: 24 mixed and 12 normal images, one compile) and the scoring
pass at batch 4 (plus batch 1 for "alone").

No test that training makes normal images change less: measured on the tiny
config (30-100 steps, six seeds), the change of normal images fell for some seeds
and grew for others (the mask regulariser's push of m towards 0 or 1 and the
adversarial terms dominate the first steps; even the identity loss rose for two
seeds of six), so such a test would be neither honest nor robust at this size.
"""

# pylint: disable=protected-access
import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcxr import anomaly, checkpoints, config, data
from jaxcxr.models.healthygan import Critic, Translator, blend, load_translator, space_to_depth
from jaxcxr.models.layers import depth_to_space
from jaxcxr.train import healthygan

TINY = config.healthygan_tiny()


def host_copy(tree):
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


@pytest.fixture(scope="module")
def nih(nih_path):
  return data.load(nih_path)


@pytest.fixture(scope="module")
def graphdef():
  return nnx.graphdef(nnx.eval_shape(lambda: Translator(TINY.translator, rngs=nnx.Rngs(0))))


@pytest.fixture(scope="module")
def initial_state():
  """Initial weights of TINY on the host (the jitted init, shared with the training tests)."""
  return host_copy(healthygan.init_train_state(TINY, seed=0))


@pytest.fixture(scope="module")
def train_call():
  return healthygan.make_train_step(TINY)


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, x):
  translator = nnx.merge(graphdef, state)
  content, mask = translator(x)
  return content, mask, translator.translate(x)


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize("resolution, num_down, t_channels, critic_down, patches", [
    (32, 1, (4, 8), 3, 4),
    (64, 2, (4, 8, 8), 4, 4),
    (256, 3, (4, 8, 8, 8), 6, 4),
])
def test_shapes(resolution, num_down, t_channels, critic_down, patches):
  t_cfg = config.TranslatorConfig(resolution=resolution, base_channels=4, max_channels=8, num_down=num_down,
                           num_res_blocks=2)
  c_cfg = config.CriticConfig(resolution=resolution, base_channels=4, max_channels=8, num_down=critic_down)
  assert t_cfg.channels == t_channels
  x = jax.ShapeDtypeStruct((3, resolution, resolution, 1), jnp.float32)
  translator = nnx.eval_shape(lambda: Translator(t_cfg, rngs=nnx.Rngs(0)))
  content, mask = nnx.eval_shape(lambda t, x: t(x), translator, x)
  out = nnx.eval_shape(lambda t, x: t.translate(x), translator, x)
  for a in (content, mask, out):
    assert (a.shape, a.dtype) == ((3, resolution, resolution, 1), jnp.float32)
  critic = nnx.eval_shape(lambda: Critic(c_cfg, rngs=nnx.Rngs(0)))
  scores = nnx.eval_shape(lambda c, x: c(x), critic, x)
  assert (scores.shape, scores.dtype) == ((3, patches, patches), jnp.float32)
  with pytest.raises(ValueError, match=rf"\(B, {resolution}, {resolution}, 1\)"):
    translator(jnp.zeros((3, 16, 16, 1)))


def test_space_to_depth_inverts_depth_to_space(getkey):
  x = jax.random.normal(getkey(), (2, 8, 6, 3))
  np.testing.assert_array_equal(depth_to_space(space_to_depth(x)), x)


def test_ranges_and_blend(graphdef, initial_state, getkey):
  x = jax.random.uniform(getkey(), (3, 32, 32, 1), minval=-1.0, maxval=1.0)
  content, mask, out = _forward(graphdef, initial_state["t"], x)
  assert float(content.min()) >= -1.0 and float(content.max()) <= 1.0
  assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0 and float(mask.std()) > 0
  assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
  np.testing.assert_allclose(out, np.asarray(content) * mask + np.asarray(x) * (1 - np.asarray(mask)), atol=1e-6)
  # A hand-set mask: the output is exactly the input where m == 0 and exactly the content where m == 1.
  hand = (jax.random.uniform(getkey(), x.shape) < 0.5).astype(jnp.float32)
  blended = np.asarray(blend(content, hand, x))
  zero, one = np.asarray(hand) == 0, np.asarray(hand) == 1
  np.testing.assert_array_equal(blended[zero], np.asarray(x)[zero])
  np.testing.assert_array_equal(blended[one], np.asarray(content)[one])


def test_mask_regularizer_and_lr_schedule():
  binary = jnp.asarray([0.0, 1.0, 1.0, 0.0]).reshape(1, 2, 2, 1)
  assert float(healthygan.mask_regularizer(binary, 0.0, 1.0)) == pytest.approx(0.0, abs=1e-5)
  assert float(healthygan.mask_regularizer(binary, 1.0, 0.0)) == pytest.approx(0.25)
  half = jnp.full((1, 2, 2, 1), 0.5)
  assert float(healthygan.mask_regularizer(half, 1.0, 1.0)) == pytest.approx(0.25 + 100.0 - 1.0 / 0.51, rel=1e-5)
  factor = lambda step: float(healthygan._lr_factor(jnp.int32(step), jnp.int32(100), 0.5))
  assert [factor(s) for s in (0, 50, 75, 100, 120)] == pytest.approx([1.0, 1.0, 0.5, 0.0, 0.0])
  assert float(healthygan._lr_factor(jnp.int32(99), jnp.int32(100), 1.0)) == 1.0   # no decay


def test_configs_round_trip_and_validate():
  for make in [make for name, make in config.PRESETS.items() if name.startswith("healthygan_")]:
    cfg = make()
    assert config.from_dict(config.HealthyganTrainConfig, json.loads(json.dumps(config.to_dict(cfg)))) == cfg
  with pytest.raises(ValueError, match="translator resolution 32 != critic resolution 64"):
    dataclasses.replace(TINY, critic=dataclasses.replace(TINY.critic, resolution=64, num_down=4))
  with pytest.raises(ValueError, match="num_down"):
    config.TranslatorConfig(resolution=32, num_down=5)
  with pytest.raises(ValueError, match="odd"):
    config.TranslatorConfig(outer_kernel_size=4)
  with pytest.raises(ValueError, match="n_critic"):
    dataclasses.replace(TINY, n_critic=0)
  with pytest.raises(ValueError, match="lr_decay_start"):
    dataclasses.replace(TINY, lr_decay_start=1.5)


# ----------------------------------------------------------------------------- training


def test_train_call_finite_and_updates(nih, initial_state, train_call):
  host, info = healthygan.prepare_data(nih, TINY)
  assert info == {"n_mixed": 24, "n_normal": 12}
  np.testing.assert_array_equal(host["normal"], host["mixed"][nih.label == 0])
  state = jax.tree.map(jnp.array, initial_state)
  new_state, metrics = train_call(state, host, jnp.int32(TINY.steps))
  assert jax.tree.leaves(state)[0].is_deleted()               # the train state is donated
  assert int(new_state["step"]) == TINY.steps_per_call
  for name, values in metrics.items():
    assert values.shape == (TINY.steps_per_call,) and np.isfinite(values).all(), name
  assert (metrics["gp"] > 0).all() and (metrics["identity"] > 0).all()
  assert 0 < float(metrics["mask_mean"][0]) < 1
  # Steps 0 and 1 of 4 with decay from step 2: full learning rate.
  np.testing.assert_array_equal(metrics["lr_factor"], [1.0, 1.0])
  for part in ("t", "c"):
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(initial_state[part]),
                                                         jax.tree.leaves(new_state[part])) if a.size > 1]
    assert all(changed), part


def test_kill_and_resume_is_exact(nih, tmp_path, monkeypatch):
  straight = healthygan.train_healthygan(nih, TINY, tmp_path / "a", progress=False)
  assert straight["steps"] == 4 and straight["n_mixed"] == 24 and straight["n_normal"] == 12
  log = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in log] == [2, 4] and log[1]["lr_factor"] == pytest.approx(0.75)

  real = healthygan.make_train_step

  def killed_after_one_call(cfg):
    fn, calls = real(cfg), []

    def call(*args):
      if calls:
        raise KeyboardInterrupt
      calls.append(1)
      return fn(*args)

    return call

  monkeypatch.setattr(healthygan, "make_train_step", killed_after_one_call)
  with pytest.raises(KeyboardInterrupt):
    healthygan.train_healthygan(nih, TINY, tmp_path / "b", progress=False)
  monkeypatch.setattr(healthygan, "make_train_step", real)
  assert not (tmp_path / "b" / "translator").exists()
  with pytest.raises(FileExistsError, match="resume"):
    healthygan.train_healthygan(nih, TINY, tmp_path / "b", progress=False)
  with pytest.raises(ValueError, match="cannot resume"):            # other data than the checkpoint's
    healthygan.train_healthygan(nih.subset(np.arange(20)), TINY, tmp_path / "b", resume=True, progress=False)
  resumed = healthygan.train_healthygan(nih, TINY, tmp_path / "b", resume=True, progress=False)
  assert resumed["start_step"] == 2 and resumed["steps"] == 4

  abstract = jax.eval_shape(lambda: healthygan.init_train_state(TINY))
  with checkpoints.TrainCheckpointer(tmp_path / "a" / "checkpoints") as ca, \
       checkpoints.TrainCheckpointer(tmp_path / "b" / "checkpoints") as cb:
    state_a, state_b = ca.restore(abstract), cb.restore(abstract)
  jax.tree.map(np.testing.assert_array_equal, host_copy(state_a), host_copy(state_b))

  translator = load_translator(tmp_path / "b" / "translator")
  jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(nnx.state(translator)), host_copy(state_b["t"]))
  meta = checkpoints.read_metadata(tmp_path / "b" / "translator")
  assert meta["steps"] == 4 and meta["n_normal"] == 12 and meta["data_sha256"] == data.file_sha256(nih.source)
  assert checkpoints.read_metadata(tmp_path / "b" / "critic")["config"]["num_down"] == TINY.critic.num_down


# ----------------------------------------------------------------------------- scoring


def test_scores_batch_independent(nih, graphdef, initial_state):
  translator = nnx.merge(graphdef, initial_state["t"])
  dataset = nih.subset(np.arange(6))
  scores = anomaly.healthygan_scores(translator, dataset, batch_size=4, progress=False)
  assert scores.score.shape == (6,) and scores.score.dtype == np.float32
  assert scores.residual.shape == scores.mask.shape == (6, 32, 32) and scores.mask.dtype == np.float16
  assert (scores.mask >= 0).all() and (scores.mask <= 1).all() and (scores.residual >= 0).all()
  np.testing.assert_allclose(scores.score, scores.residual.astype(np.float32).mean(axis=(1, 2)), rtol=2e-3)
  small = data.resize_uint8(dataset.images, 32)
  alone = anomaly.healthygan_scores(translator, small[:1], batch_size=4, progress=False)
  other = anomaly.healthygan_scores(translator, small[[5, 1, 2, 3]], batch_size=4, progress=False)
  np.testing.assert_allclose(alone.score[0], scores.score[0], rtol=1e-5)
  np.testing.assert_allclose(other.score[0], scores.score[5], rtol=1e-5)
  np.testing.assert_array_equal(other.mask[0], scores.mask[5])
  # The accessor gives the jitted call healthygan_scores ran for that batch (no new compile) and its arguments.
  program = anomaly.healthygan.score_program(translator, small[[5, 1, 2, 3]])
  compiled = program.fn._cache_size()
  out = program.fn(*program.args)
  assert program.fn._cache_size() == compiled
  for name, value in other._asdict().items():
    np.testing.assert_array_equal(np.asarray(out[name]), value)


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_error_before_compile(nih, tmp_path, monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("compiled before checking the data")

  monkeypatch.setattr(healthygan, "make_train_step", fail)
  monkeypatch.setattr(healthygan, "init_train_state", fail)
  run = lambda ds: healthygan.train_healthygan(ds, TINY, tmp_path / "run", progress=False)
  with pytest.raises(data.DataError, match="no images"):
    run(nih.subset(np.zeros(len(nih), bool)))
  with pytest.raises(data.DataError, match="no normal image"):
    run(nih.select(label=1))
  with pytest.raises(data.DataError, match="every image has label 0"):
    run(nih.select(label=0))
  assert not (tmp_path / "run").exists()
  translator = nnx.eval_shape(lambda: Translator(TINY.translator, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="uint8"):
    anomaly.healthygan_scores(translator, np.zeros((2, 32, 32), np.float32))
  with pytest.raises(ValueError, match="batch_size"):
    anomaly.healthygan_scores(translator, np.zeros((2, 32, 32), np.uint8), batch_size=0)
