"""Tests of the trainers' shared loop (`jaxcxr.train.loop`) on a toy train step (no network: compiles in a second).

The five trainers' own tests cover the loop with real models; these pin its contract: the
compiled multi-step call (unrolled without a while loop), the state a hook returns being
checkpointed and resumed, JSON metadata taken back on resume, stop_at, and the errors.
"""

import dataclasses
import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcxr import checkpoints, config
from jaxcxr.train import loop


# A train config in miniature: the loop's fields, those of sample grids and validation, and one field of the step.
TOY_FIELDS = {"batch_size": 2, "steps": 6, "steps_per_call": 2, "checkpoint_every": 2, "max_to_keep": 2,
              "eval_every": 4, "sample_every": 0, "samples": 1, "decay": 0.5}
ToyConfig = dataclasses.make_dataclass("ToyConfig", [(k, type(v), v) for k, v in TOY_FIELDS.items()], frozen=True)
TOY = ToyConfig()


def toy_step(state, data, config):
  """w <- decay * w + mean(data) + noise drawn from fold_in(key, step): a pure function of (state, data)."""
  key = jax.random.fold_in(jax.random.wrap_key_data(state["key"], impl=loop.KEY_IMPL), state["step"])
  w = config.decay * state["w"] + data.mean() + 0.1 * jax.random.normal(key, state["w"].shape)
  return {**state, "step": state["step"] + 1, "w": w}, {"w_mean": w.mean(), "w_max": w.max()}


def toy_init(root, config):
  del config
  return {"step": jnp.zeros((), jnp.int32), "key": jax.random.key_data(jax.random.fold_in(root, 1)),
          "w": jax.random.normal(jax.random.fold_in(root, 2), (3,))}


def toy_conv_step(state, kernel):
  x = jax.lax.conv_general_dilated(state["x"], kernel, (1, 1), "SAME")
  return {"x": 0.5 * x}, {"mean": x.mean()}


def _host(tree):
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def test_compile_steps_unrolls_without_a_while_loop_and_donates():
  kernel = jnp.ones((1, 1, 3, 3)) / 9.0
  state = lambda: {"x": jnp.arange(64.0).reshape(1, 1, 8, 8)}
  rolled = loop.compile_steps(toy_conv_step, 3)
  unrolled = loop.compile_steps(toy_conv_step, 3, unroll=3)
  assert loop.compile_steps(toy_conv_step, 3, unroll=3) is unrolled            # cached
  assert "while" in rolled.lower(state(), kernel).as_text()
  assert "while" not in unrolled.lower(state(), kernel).as_text()
  # One step per call: lax.scan(unroll=1) would keep a loop of one trip; compile_steps does not.
  assert "while" not in loop.compile_steps(toy_conv_step, 1).lower(state(), kernel).as_text()
  first = state()
  a, metrics_a = rolled(first, kernel)
  assert first["x"].is_deleted()                                                  # the state is donated
  b, metrics_b = unrolled(state(), kernel)
  np.testing.assert_allclose(a["x"], b["x"], rtol=1e-6)
  assert metrics_a["mean"].shape == (3,)
  np.testing.assert_allclose(metrics_a["mean"], metrics_b["mean"], rtol=1e-6)


def test_config_helpers():
  normal = loop.without_loop_fields(TOY, decay=0.25)
  assert (normal.steps, normal.checkpoint_every, normal.eval_every, normal.max_to_keep, normal.sample_every,
          normal.samples, normal.decay) == (2, 2, 2, 1, 0, 1, 0.25)
  assert loop.without_loop_fields(dataclasses.replace(TOY, steps=60, max_to_keep=5)) == loop.without_loop_fields(TOY)
  config.check_loop_fields(TOY, "ToyConfig")
  with pytest.raises(ValueError, match=r"ToyConfig.eval_every=3: expected a non-negative multiple"):
    config.check_loop_fields(dataclasses.replace(TOY, eval_every=3), "ToyConfig")
  with pytest.raises(ValueError, match=r"ToyConfig.max_to_keep: expected a positive integer"):
    config.check_loop_fields(dataclasses.replace(TOY, max_to_keep=0), "ToyConfig")
  state = loop.jit_init(toy_init, TOY, 3)
  jax.tree.map(np.testing.assert_array_equal, _host(state), _host(loop.jit_init(toy_init, TOY, 3)))
  assert not np.array_equal(state["w"], loop.jit_init(toy_init, TOY, 4)["w"])


class Trainer:
  """A trainer in miniature: model selection in the on_call hook (the best w, in the state) and a
  validation history in the checkpoint metadata, as train.classifier and train.segmentation do."""

  def __init__(self, config=TOY, data=np.arange(4.0, dtype=np.float32)):
    self.config, self.data = config, jnp.asarray(data)
    self.history, self.calls = [], 0

  def train_call(self, state, data):
    self.calls += 1
    return loop.compile_steps(toy_step, self.config.steps_per_call, static=(self.config,))(state, data)

  def select(self, step, state):
    if step % self.config.eval_every and step != self.config.steps:
      return None
    score = float(-np.abs(np.asarray(state["w"]) - 2.0).sum())
    self.history.append({"step": step, "score": score})
    if score > state["best"]["score"]:
      return {**state, "best": {"w": _host(state["w"]), "score": np.float32(score), "step": np.int32(step)}}
    return None

  def resumed(self, meta):
    self.history = list(meta["history"])

  def run(self, out_dir, *, resume=False, stop_at=None, train_call=None, run_metadata=None):
    state = loop.jit_init(toy_init, self.config, 0)
    state["best"] = {"w": _host(state["w"]), "score": np.float32(-np.inf), "step": np.int32(0)}
    return loop.run_training_loop(
        name="toy", config=self.config, state=state, train_call=train_call or self.train_call, args=(self.data,),
        out_dir=out_dir, resume=resume, progress=False, run_metadata=run_metadata or {"data": [0, 1, 2, 3]},
        checkpoint_metadata=lambda s: {"history": self.history, "best_step": int(s["best"]["step"])},
        on_resume=self.resumed, on_call=self.select, host_entries=("best",), stop_at=stop_at,
        postfix=lambda m, s: {"w": f"{m['w_mean'][-1]:.2f}", "best": f"{float(s['best']['score']):.2f}"})


def _restore(directory, step=None):
  abstract = jax.eval_shape(lambda: {**loop.jit_init(toy_init, TOY, 0),
                                     "best": {"w": np.zeros(3, np.float32), "score": np.float32(0),
                                              "step": np.int32(0)}})
  with checkpoints.TrainCheckpointer(directory / "checkpoints") as ckpt:
    return _host(ckpt.restore(abstract, step)), ckpt.read_metadata(step)


def test_a_field_added_since_the_checkpoint_blocks_a_resume_only_when_set():
  """A checkpoint written before `cr_weight` existed resumes under its default, not under another value."""
  cfg = config.gan_tiny()
  saved = json.loads(json.dumps(config.to_dict(cfg)))
  del saved["cr_weight"], saved["cr_augment"]
  saved["generator"].pop("dtype")                                # a nested field, at its default too
  assert loop._config_changes(saved, cfg) == {}                  # pylint: disable=protected-access
  assert loop._config_changes(saved, dataclasses.replace(cfg, cr_weight=1.0)) == {  # pylint: disable=protected-access
      "config.cr_weight": (0.0, 1.0)}                          # the saved run trained with the default
  saved["batch_size"] = 99                                       # a saved field still counts
  changes = loop._config_changes(saved, cfg)                     # pylint: disable=protected-access
  assert changes == {"config.batch_size": (99, cfg.batch_size)}


def test_hook_state_is_checkpointed_and_a_killed_run_resumes_exactly(tmp_path):
  straight_trainer = Trainer()
  straight = straight_trainer.run(tmp_path / "a")
  assert (straight.step, straight.start_step, straight_trainer.calls) == (6, 0, 3)
  assert [h["step"] for h in straight_trainer.history] == [4, 6]
  assert set(straight.final) == {"w_mean", "w_max"} and straight.last_metrics["w_mean"].shape == (2,)
  log = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in log] == [2, 4, 6]
  # The checkpoint holds the state the hook returned, and the metadata its history.
  state_a, meta_a = _restore(tmp_path / "a")
  assert int(state_a["best"]["step"]) == int(straight.state["best"]["step"]) > 0
  assert meta_a["history"] == straight_trainer.history and meta_a["data"] == [0, 1, 2, 3]

  # A run killed in its third call (after the checkpoint of step 4), resumed by a fresh trainer.
  killed_trainer = Trainer()

  def killed(state, data):
    if killed_trainer.calls == 2:
      raise KeyboardInterrupt
    return killed_trainer.train_call(state, data)

  with pytest.raises(KeyboardInterrupt):
    killed_trainer.run(tmp_path / "b", train_call=killed)
  state_b4, _ = _restore(tmp_path / "b", 4)
  assert int(state_b4["best"]["step"]) == 4                    # the hook's state at step 4, checkpointed
  with pytest.raises(FileExistsError, match="resume"):
    Trainer().run(tmp_path / "b")
  with pytest.raises(ValueError, match="cannot resume.*data"):
    Trainer().run(tmp_path / "b", resume=True, run_metadata={"data": [9]})
  resumed_trainer = Trainer()
  resumed = resumed_trainer.run(tmp_path / "b", resume=True)
  assert (resumed.step, resumed.start_step, resumed_trainer.calls) == (6, 4, 1)
  assert resumed_trainer.history == straight_trainer.history
  jax.tree.map(np.testing.assert_array_equal, _host(resumed.state), _host(straight.state))
  state_b, meta_b = _restore(tmp_path / "b")
  jax.tree.map(np.testing.assert_array_equal, state_b, state_a)
  assert meta_b["history"] == meta_a["history"]

  # Resumed at the end: no call, the same state, and the last call's metrics from the checkpoint.
  again = Trainer().run(tmp_path / "b", resume=True)
  assert again.step == again.start_step == 6 and again.final == straight.final
  jax.tree.map(np.testing.assert_array_equal, again.last_metrics, straight.last_metrics)
  jax.tree.map(np.testing.assert_array_equal, _host(again.state), _host(straight.state))


def test_stop_at_and_non_finite_metrics(tmp_path):
  trainer = Trainer()
  partial = trainer.run(tmp_path / "c", stop_at=2)
  assert partial.step == 2 and trainer.calls == 1
  with checkpoints.TrainCheckpointer(tmp_path / "c" / "checkpoints") as ckpt:
    assert ckpt.all_steps() == [2]
  assert Trainer().run(tmp_path / "c", resume=True).step == 6
  with pytest.raises(FloatingPointError, match="toy training diverged at step 2"):
    Trainer(data=np.array([np.nan, 1.0], np.float32)).run(tmp_path / "d")


def test_copy_weights_makes_fresh_buffers_of_the_fresh_dtypes_and_checks_shapes():
  saved = {"w": np.arange(6, dtype=np.float64).reshape(2, 3), "b": np.ones(3, np.float32)}
  fresh = {"w": jnp.zeros((2, 3), jnp.float32), "b": jnp.zeros(3, jnp.float32)}
  a, b = loop.copy_weights(saved, fresh, "x"), loop.copy_weights(saved, fresh, "x")
  np.testing.assert_array_equal(a["w"], saved["w"])
  assert a["w"].dtype == jnp.float32 and a["w"].unsafe_buffer_pointer() != b["w"].unsafe_buffer_pointer()
  with pytest.raises(ValueError, match="the thing does not match"):
    loop.copy_weights({"w": saved["w"].T, "b": saved["b"]}, fresh, "the thing")


def test_arrays_sha256_is_the_digest_of_the_concatenated_bytes():
  arrays = [np.arange(5, dtype=np.int32), np.ones((2, 2), np.float32)]
  expected = hashlib.sha256(arrays[0].tobytes() + arrays[1].tobytes()).hexdigest()
  assert loop.arrays_sha256(arrays) == expected
  assert loop.arrays_sha256(arrays[::-1]) != expected
