"""Round trips of `jaxcxr.checkpoints` on real disk (MT checkpointing_nnx_roundtrip_test style, no mocks)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr.checkpoints import CheckpointError, TrainCheckpointer


@dataclasses.dataclass(frozen=True)
class TinyConfig:
  """Config of `TinyNet`."""

  # Input features.
  in_features: int = 3
  # Hidden width.
  hidden: int = 8
  # Dropout rate (gives the model RNG state, which checkpoints leave out).
  dropout: float = 0.5
  # Tuple field, to check that tuples survive the JSON round trip.
  tags: tuple[str, ...] = ("a", "b")


@dataclasses.dataclass(frozen=True)
class OtherConfig:
  """A different config type with the same fields as `TinyConfig`."""

  in_features: int = 3
  hidden: int = 8
  dropout: float = 0.5
  tags: tuple[str, ...] = ("a", "b")


class TinyNet(nnx.Module):
  """Linear -> BatchNorm -> Dropout -> Linear; features last."""

  def __init__(self, config: TinyConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.lin = nnx.Linear(config.in_features, config.hidden, rngs=rngs)
    self.bn = nnx.BatchNorm(config.hidden, momentum=0.5, rngs=rngs)
    self.drop = nnx.Dropout(config.dropout, rngs=rngs)
    self.out = nnx.Linear(config.hidden, 1, rngs=rngs)

  def __call__(self, x):  # (B, in_features) -> (B, 1)
    return self.out(self.drop(self.bn(self.lin(x))))


def make_tiny(config: TinyConfig) -> TinyNet:
  return TinyNet(config, rngs=nnx.Rngs(0, dropout=1))


def trained_model(config: TinyConfig = TinyConfig()) -> TinyNet:
  """A model whose every saved leaf differs from a fresh `make_tiny(config)`."""
  # One jit instead of ~40 eagerly compiled ops: seconds faster on a loaded CPU.
  return _jit_trained_model(config)


def _trained_model(config: TinyConfig) -> TinyNet:
  model = TinyNet(config, rngs=nnx.Rngs(7, dropout=3))
  # Rows must differ: batch norm centres identical rows to zero and leaves the
  # running stats at their init values, so a restore that dropped the batch
  # stats would go unnoticed.
  x = jnp.arange(4 * config.in_features, dtype=jnp.float32).reshape(4, config.in_features) ** 1.5
  model(x)  # train mode: updates bn.mean / bn.var.
  # Non-trivial bias and scale too (they start at 0 and 1).
  model.bn.bias[...] = model.bn.bias[...] + 0.25
  model.bn.scale[...] = model.bn.scale[...] * 1.5
  model.lin.bias[...] = model.lin.bias[...] - 0.5
  model.out.bias[...] = model.out.bias[...] + 2.0
  return model


_jit_trained_model = jax.jit(_trained_model, static_argnums=0)


def leaves_with_paths(state):
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(state)[0]}


def assert_trees_equal(actual, expected):
  a, e = leaves_with_paths(actual), leaves_with_paths(expected)
  assert a.keys() == e.keys()
  for name in e:
    assert a[name].dtype == e[name].dtype, name
    np.testing.assert_array_equal(a[name], e[name], err_msg=name)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """One saved checkpoint shared by the read-only tests (saving costs ~0.1 s)."""
  model = trained_model()
  path = checkpoints.save_model(
      tmp_path_factory.mktemp("ckpt") / "tiny", model, TinyConfig(),
      metadata={"data_sha256": "ab" * 32, "metrics": {"auc": np.float32(0.75)}, "steps": 12})
  return path, model


def test_round_trip_every_leaf_config_and_metadata(saved):
  path, model = saved
  loaded, config, meta = checkpoints.load_model(path, make_tiny, TinyConfig)

  saved_state = nnx.state(model, nnx.Not(nnx.RngState))
  assert_trees_equal(nnx.state(loaded, nnx.Not(nnx.RngState)), saved_state)
  # The test would be vacuous if the fresh model already had these values.
  fresh = leaves_with_paths(nnx.state(make_tiny(TinyConfig()), nnx.Not(nnx.RngState)))
  for name, value in leaves_with_paths(saved_state).items():
    assert not np.array_equal(fresh[name], value), name
  assert set(leaves_with_paths(nnx.state(model, nnx.BatchStat))) == {"['bn']['mean'].value", "['bn']['var'].value"}

  assert config == TinyConfig() and isinstance(config.tags, tuple)
  assert meta["model"] == "TinyNet" and meta["config_type"] == "TinyConfig"
  assert meta["jaxcxr_version"] and re.match(r"\d{4}-\d\d-\d\dT", meta["created"])
  assert meta["data_sha256"] == "ab" * 32 and meta["metrics"] == {"auc": 0.75} and meta["steps"] == 12
  assert "config" not in meta

  # The loaded model runs in eval and in train mode (RNG state rebuilt by the factory).
  x = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3)
  np.testing.assert_array_equal(nnx.view(loaded, use_running_average=True, deterministic=True)(x),
                                nnx.view(model, use_running_average=True, deterministic=True)(x))
  assert loaded(x).shape == (2, 1)


def test_read_metadata_without_arrays(saved):
  path, _ = saved
  meta = checkpoints.read_metadata(path)
  assert meta["config"] == {"in_features": 3, "hidden": 8, "dropout": 0.5, "tags": ["a", "b"]}
  assert meta["model"] == "TinyNet" and meta["steps"] == 12


def test_no_temporary_directories_left(saved):
  path, _ = saved
  assert [p.name for p in path.parent.iterdir()] == ["tiny"]


def test_existing_directory_needs_overwrite(tmp_path):
  path = tmp_path / "m"
  checkpoints.save_model(path, trained_model(), TinyConfig(), metadata={"steps": 1})
  with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*already exists"):
    checkpoints.save_model(path, make_tiny(TinyConfig()), TinyConfig())
  assert checkpoints.read_metadata(path)["steps"] == 1

  new_model = make_tiny(TinyConfig(hidden=4))
  checkpoints.save_model(path, new_model, TinyConfig(hidden=4), metadata={"steps": 2}, overwrite=True)
  loaded, config, meta = checkpoints.load_model(path, make_tiny, TinyConfig)
  assert config.hidden == 4 and meta["steps"] == 2
  assert_trees_equal(nnx.state(loaded, nnx.Not(nnx.RngState)), nnx.state(new_model, nnx.Not(nnx.RngState)))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_overwrite_refuses_a_directory_that_is_not_a_checkpoint(tmp_path):
  (tmp_path / "keep.txt").write_text("precious")
  with pytest.raises(CheckpointError, match="not a jaxcxr model checkpoint; refusing"):
    checkpoints.save_model(tmp_path, make_tiny(TinyConfig()), TinyConfig(), overwrite=True)
  assert (tmp_path / "keep.txt").read_text() == "precious"


def test_reserved_metadata_key_rejected(tmp_path):
  with pytest.raises(ValueError, match="reserved"):
    checkpoints.save_model(tmp_path / "m", make_tiny(TinyConfig()), TinyConfig(), metadata={"model": "x"})
  assert not (tmp_path / "m").exists()


def test_missing_directory(tmp_path):
  path = tmp_path / "nope"
  with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*does not exist"):
    checkpoints.load_model(path, make_tiny, TinyConfig)
  with pytest.raises(CheckpointError, match=re.escape(str(path))):
    checkpoints.read_metadata(path)


def test_not_a_checkpoint(tmp_path):
  (tmp_path / "weights.npz").write_bytes(b"x")
  with pytest.raises(CheckpointError, match=re.escape(str(tmp_path)) + ".*not a jaxcxr model checkpoint"):
    checkpoints.load_model(tmp_path, make_tiny, TinyConfig)


def array_data_files(path):
  # Small arrays live in the top-level OCDBT data files (state/d/); larger ones
  # under state/ocdbt.process_0/d/.
  files = sorted(p for p in (path / "state").rglob("*") if p.is_file() and p.parent.name == "d")
  assert files
  return files


def test_truncated_array_file(tmp_path):
  path = checkpoints.save_model(tmp_path / "m", trained_model(), TinyConfig())
  for p in array_data_files(path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
  checkpoints.read_metadata(path)  # JSON is intact ...
  with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*corrupt.*'state/(.*/)?d/\\w+' has \\d+ bytes"):
    checkpoints.load_model(path, make_tiny, TinyConfig)  # ... arrays are not.


def test_bit_flipped_array_file(tmp_path):
  # A 64x256 kernel goes to its own data file, where orbax 0.12.8 restores a
  # flipped bit silently with a wrong value; only the manifest catches it.
  config = TinyConfig(in_features=64, hidden=256)
  path = checkpoints.save_model(tmp_path / "m", make_tiny(config), config)
  target = max(array_data_files(path), key=lambda p: p.stat().st_size)
  assert target.stat().st_size > 64 * 256 * 4 // 2
  data = bytearray(target.read_bytes())
  data[len(data) // 2] ^= 0x01
  target.write_bytes(bytes(data))
  with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*corrupt.*does not match its SHA-256"):
    checkpoints.load_model(path, make_tiny, TinyConfig)


def test_missing_array_file(tmp_path):
  path = checkpoints.save_model(tmp_path / "m", trained_model(), TinyConfig())
  array_data_files(path)[0].unlink()
  with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*corrupt.*is missing"):
    checkpoints.load_model(path, make_tiny, TinyConfig)


def test_garbled_array_metadata_behind_valid_manifest(tmp_path):
  # Corruption that happened before the manifest was written (or a hand-edited
  # manifest) reaches orbax; its JSON error must still become a CheckpointError.
  path = checkpoints.save_model(tmp_path / "m", trained_model(), TinyConfig())
  garbage = b"\x00garbage{"
  (path / "state" / "_METADATA").write_bytes(garbage)
  manifest = json.loads((path / "jaxcxr_manifest.json").read_text())
  manifest["files"]["state/_METADATA"] = {"size": len(garbage), "sha256": hashlib.sha256(garbage).hexdigest()}
  (path / "jaxcxr_manifest.json").write_text(json.dumps(manifest))
  with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*cannot read the saved arrays"):
    checkpoints.load_model(path, make_tiny, TinyConfig)


def test_garbled_manifest(tmp_path):
  path = checkpoints.save_model(tmp_path / "m", trained_model(), TinyConfig())
  (path / "jaxcxr_manifest.json").write_text("{\"files\": [")
  with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*cannot read jaxcxr_manifest.json"):
    checkpoints.load_model(path, make_tiny, TinyConfig)


@pytest.mark.parametrize("item", ["config", "metadata"])
def test_garbled_json(tmp_path, item):
  path = checkpoints.save_model(tmp_path / "m", trained_model(), TinyConfig())
  files = [p for p in (path / item).iterdir() if p.is_file() and p.name != "commit_success.txt"]
  assert len(files) == 1
  files[0].write_text('{"hidden": 8, "in_feat')
  with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*JSON"):
    checkpoints.load_model(path, make_tiny, TinyConfig)
  with pytest.raises(CheckpointError, match=re.escape(str(path))):
    checkpoints.read_metadata(path)


def test_shape_mismatch_names_leaf(tmp_path):
  path = checkpoints.save_model(tmp_path / "m", trained_model(), TinyConfig(hidden=8))
  with pytest.raises(CheckpointError, match=re.escape(str(path)) + r".*'bn/bias/value'.*\(8,\).*\(16,\)"):
    checkpoints.load_model(path, lambda c: make_tiny(dataclasses.replace(c, hidden=16)), TinyConfig)


def test_edited_config_json_mismatch(tmp_path):
  path = checkpoints.save_model(tmp_path / "m", trained_model(), TinyConfig(hidden=8))
  config_file = path / "config" / "metadata"  # orbax JsonSave's file name.
  assert json.loads(config_file.read_text())["hidden"] == 8
  config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "hidden": 16}))
  with pytest.raises(CheckpointError, match=r"leaf '.*' has shape .*\(8,?.*\).*\(16,?.*\)"):
    checkpoints.load_model(path, make_tiny, TinyConfig)


def test_structure_mismatch_names_leaf(tmp_path):
  class Bigger(TinyNet):

    def __init__(self, config, *, rngs):
      super().__init__(config, rngs=rngs)
      self.extra = nnx.Linear(2, 2, rngs=rngs)

  path = checkpoints.save_model(tmp_path / "m", trained_model(), TinyConfig())
  with pytest.raises(CheckpointError, match=r"leaf 'extra/.*' .* checkpoint lacks"):
    checkpoints.load_model(path, lambda c: Bigger(c, rngs=nnx.Rngs(0)), TinyConfig)


def test_wrong_config_type(saved):
  path, _ = saved
  with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*'TinyConfig'.*'OtherConfig'"):
    checkpoints.load_model(path, lambda c: make_tiny(TinyConfig(**dataclasses.asdict(c))), OtherConfig)


# --------------------------------------------------------------------------- #
# TrainCheckpointer.
# --------------------------------------------------------------------------- #


def train_state(step: int):
  state = _train_arrays(jnp.asarray(step, dtype=jnp.int32))
  state["ema"] = np.full((2,), step, dtype=np.float32)  # a numpy leaf too.
  return state


@jax.jit
def _train_arrays(step):
  model = _trained_model(TinyConfig())
  params = nnx.state(model, nnx.Param)
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1) * step.astype(p.dtype), params)
  _, opt_state = tx.update(grads, opt_state, params)  # non-zero mu, nu, count.
  return {
      "model": nnx.state(model, nnx.Not(nnx.RngState)),
      "opt": opt_state,
      "step": step,
      "key": jax.random.fold_in(jax.random.key(42), step),
      "keys": jax.random.split(jax.random.key(5, impl="rbg"), 2),
  }


def test_train_checkpointer_round_trip_and_restart(tmp_path):
  directory = tmp_path / "train"
  states = {s: train_state(s) for s in (1, 2, 3)}
  with TrainCheckpointer(directory, max_to_keep=2) as ckpt:
    assert ckpt.latest_step() is None
    for step, state in states.items():
      assert ckpt.save(step, state, config=TinyConfig(), metadata={"loss": np.float32(1.0 / step)})
    ckpt.wait_until_finished()
    assert ckpt.latest_step() == 3 and ckpt.all_steps() == [2, 3]

    abstract = jax.eval_shape(lambda: train_state(0))
    restored = ckpt.restore(abstract)
    assert jax.tree.structure(restored) == jax.tree.structure(states[3])
    assert isinstance(restored["opt"][0], optax.ScaleByAdamState)
    assert int(restored["opt"][0].count) == 1
    assert restored["key"].dtype == states[3]["key"].dtype
    assert restored["keys"].dtype == states[3]["keys"].dtype  # rbg keys stay rbg.
    assert_trees_equal(jax.tree.map(_unwrap_key, restored), jax.tree.map(_unwrap_key, states[3]))
    # The restored key draws the same numbers.
    np.testing.assert_array_equal(jax.random.normal(restored["key"], (3,)), jax.random.normal(states[3]["key"], (3,)))

    older = ckpt.restore(abstract, step=2)
    assert_trees_equal(jax.tree.map(_unwrap_key, older), jax.tree.map(_unwrap_key, states[2]))
    with pytest.raises(CheckpointError, match=re.escape(str(directory)) + ".*step 1"):
      ckpt.restore(abstract, step=1)  # deleted by max_to_keep.

  # A restarted process sees the same steps.
  with TrainCheckpointer(directory, max_to_keep=2) as ckpt:
    assert ckpt.latest_step() == 3
    meta = ckpt.read_metadata()
    assert meta["step"] == 3 and meta["loss"] == pytest.approx(1 / 3) and meta["config"]["hidden"] == 8
    assert meta["config_type"] == "TinyConfig"
    restored = ckpt.restore(jax.eval_shape(lambda: train_state(0)))
    assert_trees_equal(jax.tree.map(_unwrap_key, restored), jax.tree.map(_unwrap_key, states[3]))


def _unwrap_key(x):
  return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def test_train_checkpointer_ignores_incomplete_tmp_step(tmp_path):
  directory = tmp_path / "train"
  state = {"w": jnp.arange(3.0), "key": jax.random.key(1)}
  with TrainCheckpointer(directory) as ckpt:
    ckpt.save(1, state)
  # What a kill during an orbax save of step 2 leaves behind (orbax 0.12 names
  # it STEP.orbax-checkpoint-tmp, older versions add a -TIMESTAMP suffix).
  for name in ("2.orbax-checkpoint-tmp", "3.orbax-checkpoint-tmp-1712345678"):
    (directory / name / "state").mkdir(parents=True)
    (directory / name / "state" / "_METADATA").write_text("{")
  with TrainCheckpointer(directory) as ckpt:
    assert ckpt.latest_step() == 1 and ckpt.all_steps() == [1]
    restored = ckpt.restore(jax.eval_shape(lambda: state))
    np.testing.assert_array_equal(restored["w"], state["w"])
    np.testing.assert_array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(state["key"]))
    # The resumed run saves step 2 again: orbax replaces the unfinished folder, then renames it into place.
    ckpt.save(2, {**state, "w": state["w"] + 1})
  with TrainCheckpointer(directory) as ckpt:
    assert ckpt.all_steps() == [1, 2] and not (directory / "2.orbax-checkpoint-tmp").exists()
    np.testing.assert_array_equal(ckpt.restore(jax.eval_shape(lambda: state))["w"], state["w"] + 1)


def test_train_checkpointer_mismatch_and_empty(tmp_path):
  with TrainCheckpointer(tmp_path / "empty") as ckpt:
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "empty")) + ".*no training checkpoints"):
      ckpt.restore({"w": jax.ShapeDtypeStruct((3,), jnp.float32)})

  with TrainCheckpointer(tmp_path / "t") as ckpt:
    ckpt.save(5, {"w": jnp.zeros((3,)), "b": jnp.zeros((2,))})
    with pytest.raises(CheckpointError, match=r"leaf 'w' has shape \(3,\) in the checkpoint but \(4,\)"):
      ckpt.restore({"w": jax.ShapeDtypeStruct((4,), jnp.float32), "b": jax.ShapeDtypeStruct((2,), jnp.float32)})
    with pytest.raises(CheckpointError, match=r"checkpoint has leaf 'b'"):
      ckpt.restore({"w": jax.ShapeDtypeStruct((3,), jnp.float32)})


def test_train_checkpointer_save_interval(tmp_path):
  with TrainCheckpointer(tmp_path / "t", save_interval_steps=2) as ckpt:
    assert [ckpt.save(s, {"w": jnp.full((2,), s)}) for s in (0, 1, 2, 3)] == [True, False, True, False]
    assert ckpt.save(5, {"w": jnp.full((2,), 5)}, force=True)
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [0, 2, 5]


def test_train_checkpointer_close_waits(tmp_path):
  ckpt = TrainCheckpointer(tmp_path / "t")
  ckpt.save(1, {"w": jnp.ones((64, 64))})
  ckpt.close()
  assert not [p for p in (tmp_path / "t").iterdir() if "tmp" in p.name]
  with TrainCheckpointer(tmp_path / "t") as reopened:
    assert reopened.latest_step() == 1
  with pytest.raises(CheckpointError, match="closed"):
    ckpt.save(2, {"w": jnp.ones((64, 64))})


def test_train_checkpointer_checks_its_manifest_before_restoring(tmp_path):
  state = {"w": jnp.arange(3000.0), "step": jnp.int32(2)}
  with TrainCheckpointer(tmp_path / "t") as ckpt:
    ckpt.save(2, state)
  step_dir = tmp_path / "t" / "2"
  manifest = json.loads((step_dir / "jaxcxr_manifest.json").read_text())
  assert manifest["format"] == "jaxcxr.train/1" and any(name.startswith("state/") for name in manifest["files"])
  data_files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  target = max(data_files, key=lambda p: p.stat().st_size)
  flipped = bytearray(target.read_bytes())
  flipped[len(flipped) // 2] ^= 0x01                  # orbax alone would restore a wrong value silently
  target.write_bytes(bytes(flipped))
  with TrainCheckpointer(tmp_path / "t") as ckpt:
    with pytest.raises(CheckpointError, match=re.escape(str(step_dir)) + ".*does not match its SHA-256: expected"):
      ckpt.restore(jax.eval_shape(lambda: state))
  for p in data_files:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
  with TrainCheckpointer(tmp_path / "t") as ckpt:
    with pytest.raises(CheckpointError, match=re.escape(str(step_dir)) + r".*has \d+ bytes, expected \d+"):
      ckpt.restore(jax.eval_shape(lambda: state))
  # A step without a manifest (killed between orbax's commit and the manifest, or an older jaxcxr) restores unchecked.
  with TrainCheckpointer(tmp_path / "u") as ckpt:
    ckpt.save(4, state)
  (tmp_path / "u" / "4" / "jaxcxr_manifest.json").unlink()
  with TrainCheckpointer(tmp_path / "u") as ckpt:
    np.testing.assert_array_equal(ckpt.restore(jax.eval_shape(lambda: state))["w"], state["w"])


# ----------------------------------------------------------------------------- through the command line


def _corrupt_truncate(path):
  for p in array_data_files(path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _corrupt_flip(path):
  target = max(array_data_files(path), key=lambda p: p.stat().st_size)
  data = bytearray(target.read_bytes())
  data[len(data) // 2] ^= 0x01
  target.write_bytes(bytes(data))


def _corrupt_config(path):
  # A config that does not match the saved weights (wider blocks than were trained).
  config_file = path / "config" / "metadata"
  config = json.loads(config_file.read_text())
  config["base_channels"] *= 2
  config_file.write_text(json.dumps(config))


@pytest.mark.parametrize("corrupt, expected", [
    (_corrupt_truncate, r"checkpoint is corrupt, file 'state/\S+' has \d+ bytes, expected \d+"),
    (_corrupt_flip, r"checkpoint is corrupt, file 'state/\S+' does not match its SHA-256: expected [0-9a-f]{64} "
                    r"\(from jaxcxr_manifest.json\), found [0-9a-f]{64}"),
    (lambda p: array_data_files(p)[0].unlink(), r"checkpoint is corrupt, array file 'state/\S+' is missing"),
    (lambda p: (p / "jaxcxr_manifest.json").unlink(), r"not a jaxcxr model checkpoint, missing \['jaxcxr_manifest"),
    (_corrupt_config, r"leaf '\S+' has shape \(\d+,?\d*\) in the checkpoint but \(\d+,?\d*\) in the Generator built "
                      r"from the config"),
])
def test_cli_reports_a_corrupt_checkpoint_in_one_line(tmp_path, capsys, corrupt, expected):
  from jaxcxr import cli  # pylint: disable=g-import-not-at-top
  from jaxcxr.config import gan_tiny  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.generator import Generator  # pylint: disable=g-import-not-at-top

  generator = Generator(gan_tiny(32).generator, rngs=nnx.Rngs(0))
  path = checkpoints.save_model(tmp_path / "generator", generator, generator.config)
  corrupt(path)
  code = cli.main(["sample", "--group", "38_44f", "--n", "1", "--unfiltered", "--checkpoint", str(path), "--out",
                   str(tmp_path / "out")])
  captured = capsys.readouterr()
  errors = [line for line in captured.err.splitlines() if line.startswith("jaxcxr: error:")]
  assert code == 2 and captured.out == "" and "Traceback" not in captured.err and len(errors) == 1, captured.err
  assert re.match("jaxcxr: error: " + re.escape(str(path)) + ": " + expected, errors[0]), errors[0]


def test_cli_refuses_to_resume_a_checkpoint_of_another_run(tmp_path, capsys):
  from jaxcxr import cli  # pylint: disable=g-import-not-at-top

  fixture = pathlib.Path(__file__).parent / "data" / "nih_fixture.npz"
  with TrainCheckpointer(tmp_path / "run" / "checkpoints") as ckpt:      # written for 5 training images, not 24
    ckpt.save(2, {"step": jnp.int32(2)}, metadata={"n_images": 5})
  code = cli.main(["train", "upsampler", "--data", str(fixture), "--preset", "upsampler_tiny", "--split", "all",
                   "--out", str(tmp_path / "run"), "--resume"])
  captured = capsys.readouterr()
  errors = [line for line in captured.err.splitlines() if line.startswith("jaxcxr: error:")]
  assert code == 2 and "Traceback" not in captured.err and len(errors) == 1, captured.err
  assert errors[0].startswith(f"jaxcxr: error: {tmp_path / 'run' / 'checkpoints'}: cannot resume")
  assert "'n_images': (5, 24)" in errors[0] and "expected the run's own inputs" in errors[0]


def test_model_folder_names_its_kind_subfolder(tmp_path):
  from jaxcxr.config import gan_tiny  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.generator import Generator  # pylint: disable=g-import-not-at-top

  generator = Generator(gan_tiny(32).generator, rngs=nnx.Rngs(0))
  inner = checkpoints.save_model(tmp_path / "gan" / "generator", generator, generator.config)
  assert checkpoints.model_folder(tmp_path / "gan", "generator") == inner
  assert checkpoints.model_folder(inner, "generator") == inner                  # a checkpoint names itself
  assert checkpoints.model_folder(tmp_path / "gan", "encoder") == tmp_path / "gan"   # no such kind: as given
  assert checkpoints.model_folder(tmp_path / "missing", "generator") == tmp_path / "missing"

