"""Checkpoints: inference weights with their config, and resumable training state.

This is the only module of jaxcxr that imports orbax (docs/conventions.md), so a
move to the orbax v1 API touches this file and `tests/test_checkpoints.py` only.

Two formats:

* **Model checkpoints** (`save_model` / `load_model` / `read_metadata`) hold what
  inference needs: the `nnx.state` of a model without RNG and optimizer state
  (so `nnx.Param`, `nnx.BatchStat` and any other variable), the config as JSON
  and a metadata JSON. This follows equinox's "serialisation with
  hyperparameters" and the FX checkpointing guide: restore reads the config,
  builds the abstract model with `nnx.eval_shape`, restores into its abstract
  state and merges. Nothing is unpickled and no code is read from disk
  (docs/conventions.md). Layout, as written by orbax's composite handler::

    directory/
      _CHECKPOINT_METADATA
      state/       # orbax StandardSave of the variable tree
      config/      # JsonSave of `config.to_dict(config)`
      metadata/    # JsonSave of {"format", "jaxcxr_version", "model",
                   #   "config_type", "created", ...user metadata}
      jaxcxr_manifest.json  # size and SHA-256 of every file under state/

  The manifest is checked before arrays are restored, so truncated or
  bit-flipped array files are reported by name instead of as a tensorstore
  traceback (or, for a bit flip inside a large array, not at all).

* **Training checkpoints** (`TrainCheckpointer`) wrap `ocp.CheckpointManager`:
  numbered step directories holding any pytree of arrays (model state,
  optax state, step counter, PRNG keys) plus optional config/metadata JSON,
  and the same manifest, written once orbax has committed the step and
  checked before a restore (a step without one, from a kill between the two
  or from an older jaxcxr, restores unchecked).

Atomicity. `save_model` writes into a hidden temporary sibling
(``.NAME.tmp-XXXX``) and renames it into place, so a kill leaves either no
`directory` or a complete one. `TrainCheckpointer` relies on orbax, which
writes ``STEP.orbax-checkpoint-tmp*`` directories and renames them when
complete; `latest_step()` ignores such leftovers.

PRNG keys. `TrainCheckpointer` stores new-style typed keys (`jax.random.key`)
as their raw `jax.random.key_data` (uint32) and, on restore, re-wraps every
leaf whose abstract dtype is a key dtype with the implementation named by that
dtype. Callers can therefore keep typed keys in the state pytree. Orbax 0.12.8
also handles typed keys itself, but doing it here keeps the on-disk format
plain arrays and independent of orbax's key support. Model checkpoints never
contain keys: RNG state is rebuilt by the model factory on load.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import pathlib
import shutil
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jax
import numpy as np
from flax import nnx

import jaxcxr
from jaxcxr import config as config_lib
from jaxcxr.data import file_sha256
from jaxcxr.io import write_bytes_atomic

ConfigT = TypeVar("ConfigT")
PyTree = Any


class _Orbax:
  """`orbax.checkpoint`, imported on first use of one of its names: a measured heavy boundary.

  Every model module imports this one for its loader; orbax would add 0.57 s to `import
  jaxcxr.models.generator` (4.35 s against 3.78 s, 2-core machine, median of 5), which building or
  running a model never needs. The first save or restore pays it.
  """

  def __getattr__(self, name: str) -> Any:
    return getattr(importlib.import_module("orbax.checkpoint"), name)


ocp = _Orbax()

# Variables that a model checkpoint leaves out: RNG streams are re-created by
# the model factory, optimizer state belongs in a training checkpoint.
_NOT_SAVED = nnx.Any(nnx.RngState, nnx.OptState)
_SAVED = nnx.Not(_NOT_SAVED)

_MODEL_FORMAT = "jaxcxr.model/1"
_TRAIN_FORMAT = "jaxcxr.train/1"
_ITEMS = ("state", "config", "metadata")
_MANIFEST = "jaxcxr_manifest.json"
_RESERVED_METADATA = ("format", "jaxcxr_version", "model", "config_type", "created")


class CheckpointError(Exception):
  """A checkpoint is missing, is not a jaxcxr checkpoint, is corrupt or does not fit the model.

  The message always names the checkpoint path and what is wrong.
  """


class CheckpointMismatchError(CheckpointError, ValueError):
  """A readable training checkpoint that was written for another run (other data, frozen models or
  steps per call), so resuming from it would not continue the same run. Also a ValueError."""


# --------------------------------------------------------------------------- #
# Small helpers.
# --------------------------------------------------------------------------- #


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _json_default(value: Any) -> Any:
  # Metrics are often numpy/jax scalars or small arrays; store them as builtins.
  if isinstance(value, (np.generic, np.ndarray, jax.Array)):
    return np.asarray(value).tolist()
  if isinstance(value, pathlib.PurePath):
    return str(value)
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _to_json(value: Any, what: str) -> Any:
  """Returns `value` as JSON builtins (numpy scalars converted), or raises ValueError."""
  try:
    return json.loads(json.dumps(value, default=_json_default, allow_nan=True))
  except (TypeError, ValueError) as e:
    raise ValueError(f"{what} is not JSON serialisable: {e}") from None


def _build_metadata(kind: str, config: Any, metadata: Mapping[str, Any] | None, **extra: Any) -> dict[str, Any]:
  user = dict(metadata or {})
  clash = sorted(set(user) & set(_RESERVED_METADATA))
  if clash:
    raise ValueError(f"metadata keys {clash} are reserved and set by jaxcxr.checkpoints")
  meta = {
      "format": kind,
      "jaxcxr_version": jaxcxr.__version__,
      **extra,
      "config_type": None if config is None else type(config).__name__,
      "created": _now(),
  }
  meta.update(user)
  return _to_json(meta, "metadata")


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _path_str(path: tuple[Any, ...]) -> str:
  return "/".join(_key_name(k) for k in path) or "<root>"


def _fsync_dir(path: pathlib.Path) -> None:
  # Makes a rename durable; best effort (not every filesystem allows it).
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  # tensorstore appends its whole JSON spec to the message; the file and the byte counts come before it.
  line = text[0].split(" [tensorstore_spec=")[0] if text else ""
  return f"{type(e).__name__}: {line}"


def _check_against_saved(path: pathlib.Path, saved_tree: Any, target: PyTree, what: str) -> None:
  """Compares the saved array metadata tree with the restore target, leaf by leaf.

  Orbax's own errors name neither the leaf nor, for structure changes, the
  shapes; this check runs first so the error says e.g. "leaf 'lin/kernel/value'
  has shape (3, 8) in the checkpoint but (3, 16) in the model".

  Raises:
    CheckpointError: on the first missing, extra or differently shaped/typed leaf.
  """
  saved = {
      _path_str(p): leaf
      for p, leaf in jax.tree_util.tree_flatten_with_path(saved_tree)[0]
  }
  wanted = [(_path_str(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(target)[0]]
  for name, leaf in wanted:
    if name not in saved:
      raise CheckpointError(
          f"{path}: {what} has leaf '{name}' (shape {tuple(np.shape(leaf))}) that the checkpoint "
          f"lacks; the checkpoint has {len(saved)} leaves, the {what} {len(wanted)}")
    stored = saved[name]
    stored_shape = getattr(stored, "shape", None)
    want_shape = tuple(np.shape(leaf))
    if stored_shape is not None and tuple(stored_shape) != want_shape:
      raise CheckpointError(
          f"{path}: leaf '{name}' has shape {tuple(stored_shape)} in the checkpoint but "
          f"{want_shape} in the {what}")
    stored_dtype = getattr(stored, "dtype", None)
    want_dtype = getattr(leaf, "dtype", None)
    if stored_dtype is not None and want_dtype is not None and np.dtype(stored_dtype) != np.dtype(want_dtype):
      raise CheckpointError(
          f"{path}: leaf '{name}' has dtype {np.dtype(stored_dtype)} in the checkpoint but "
          f"{np.dtype(want_dtype)} in the {what}")
  extra = sorted(set(saved) - {name for name, _ in wanted})
  if extra:
    raise CheckpointError(
        f"{path}: checkpoint has leaf '{extra[0]}' (shape {getattr(saved[extra[0]], 'shape', '?')}) "
        f"that the {what} lacks ({len(extra)} extra leaves in all)")


# --------------------------------------------------------------------------- #
# Model checkpoints.
# --------------------------------------------------------------------------- #


def _is_model_checkpoint(path: pathlib.Path) -> bool:
  return all((path / name).is_file() for name in ("_CHECKPOINT_METADATA", _MANIFEST)) and all(
      (path / item).is_dir() for item in _ITEMS)


def _write_manifest(path: pathlib.Path, kind: str = _MODEL_FORMAT) -> None:
  """Writes size and SHA-256 of every file under `path/state` to the manifest, atomically."""
  files = {
      p.relative_to(path).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
      for p in sorted((path / "state").rglob("*")) if p.is_file()
  }
  write_bytes_atomic(path / _MANIFEST,
                     json.dumps({"format": kind, "files": files}, indent=1, sort_keys=True).encode("utf-8"))


def _verify_manifest(path: pathlib.Path) -> None:
  """Checks the array files against the manifest written at save time.

  Orbax/tensorstore do not notice every corruption: with orbax 0.12.8 a single
  flipped bit in the data file of a 256x256 float32 array restores without
  error and with a wrong value. When they do notice, the failing restore
  leaves tensorstore callbacks behind that later hit a closed asyncio loop
  ("Event loop is closed", printed as an unraisable exception). Checking sizes
  and hashes first catches corrupt files deterministically and names them.

  Raises:
    CheckpointError: unreadable manifest, or a missing, extra or changed file.
  """
  try:
    manifest = json.loads((path / _MANIFEST).read_text(encoding="utf-8"))
    expected = manifest["files"]
    if not isinstance(expected, dict):
      raise TypeError("'files' is not an object")
  except (OSError, ValueError, TypeError, KeyError) as e:
    raise CheckpointError(f"{path}: cannot read {_MANIFEST} ({_first_line(e)})") from e
  present = {p.relative_to(path).as_posix(): p for p in (path / "state").rglob("*") if p.is_file()}
  for name in sorted(set(expected) | set(present)):
    if name not in present:
      raise CheckpointError(f"{path}: checkpoint is corrupt, array file '{name}' is missing")
    if name not in expected:
      raise CheckpointError(f"{path}: checkpoint is corrupt, unexpected file '{name}' (not in {_MANIFEST})")
    entry = expected[name]
    size = present[name].stat().st_size
    if size != entry.get("size"):
      raise CheckpointError(
          f"{path}: checkpoint is corrupt, file '{name}' has {size} bytes, expected {entry.get('size')}")
    digest = file_sha256(present[name])
    if digest != entry.get("sha256"):
      raise CheckpointError(f"{path}: checkpoint is corrupt, file '{name}' does not match its SHA-256: expected "
                            f"{entry.get('sha256')} (from {_MANIFEST}), found {digest}")


def _require_model_checkpoint(path: pathlib.Path) -> None:
  if not path.exists():
    raise CheckpointError(f"{path}: checkpoint directory does not exist")
  if not path.is_dir():
    raise CheckpointError(f"{path}: expected a checkpoint directory, found a file")
  if not _is_model_checkpoint(path):
    missing = [name for name in ("_CHECKPOINT_METADATA", _MANIFEST, *(f"{i}/" for i in _ITEMS))
               if not (path / name.rstrip("/")).exists()]
    hint = ""
    if any(p.name.isdigit() for p in path.iterdir()):
      hint = " (it looks like a TrainCheckpointer directory; use TrainCheckpointer.restore)"
    raise CheckpointError(f"{path}: not a jaxcxr model checkpoint, missing {missing}{hint}")


def _composite_checkpointer() -> ocp.Checkpointer:
  # Synchronous: save() returns once everything is on disk and committed.
  # Handlers are named so that `metadata()` can describe the `state` item.
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler(
      state=ocp.StandardCheckpointHandler(),
      config=ocp.JsonCheckpointHandler(),
      metadata=ocp.JsonCheckpointHandler(),
  ))


def save_model(
    directory: str | os.PathLike[str],
    model: nnx.Module,
    config: Any,
    *,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
  """Saves a model's inference weights, its config and metadata, atomically.

  Stored: `nnx.state(model)` without RNG and optimizer state (params, batch
  statistics and any other variable), `config_lib.to_dict(config)` as JSON and
  a metadata JSON with `format`, `jaxcxr_version`, `model` (the class name),
  `config_type`, `created` (UTC ISO time) and the user `metadata` (e.g.
  `data_sha256`, `metrics`, `steps`; numpy scalars become JSON numbers).

  Everything is written to a hidden temporary sibling and renamed into place,
  so a kill never leaves a half-written `directory` (only hidden ``.NAME.*``
  leftovers, safe to delete). The call is synchronous: every file is written
  and committed when it returns.

  Args:
    directory: checkpoint directory to create. Parents are created.
    model: the NNX module to save.
    config: the frozen config dataclass the model was built from.
    metadata: extra JSON-serialisable entries; the reserved keys listed above
      may not be used.
    overwrite: replace an existing checkpoint. The old one is renamed away
      (to ``.NAME.old-XXXX``), the new one renamed in, then the old one
      deleted; a kill between the two renames leaves the old checkpoint in
      that hidden sibling. Only a directory that is a jaxcxr model checkpoint
      is ever replaced, so a typo cannot delete an unrelated directory.

  Returns:
    The absolute checkpoint path.

  Raises:
    CheckpointError: `directory` exists and `overwrite` is False, or it exists
      and is not a jaxcxr model checkpoint.
    ValueError: metadata uses a reserved key or is not JSON serialisable.

  Examples:
    >>> path = save_model(tmp / "g", generator, cfg, metadata={"steps": 1000})  # doctest: +SKIP
    >>> generator, cfg, meta = load_model(path, make_generator, GeneratorConfig)  # doctest: +SKIP
  """
  path = pathlib.Path(directory).absolute()
  if path.exists() or path.is_symlink():
    if not overwrite:
      raise CheckpointError(f"{path}: already exists; pass overwrite=True to replace it")
    if not path.is_dir() or not _is_model_checkpoint(path):
      raise CheckpointError(f"{path}: exists and is not a jaxcxr model checkpoint; refusing to overwrite it")
  config_json = _to_json(config_lib.to_dict(config), "config")
  meta = _build_metadata(_MODEL_FORMAT, config, metadata, model=type(model).__name__)
  state = nnx.state(model, _SAVED)

  path.parent.mkdir(parents=True, exist_ok=True)
  tag = uuid.uuid4().hex[:8]
  tmp = path.with_name(f".{path.name}.tmp-{tag}")
  try:
    with _composite_checkpointer() as ckptr:
      ckptr.save(
          tmp,
          args=ocp.args.Composite(
              state=ocp.args.StandardSave(state),
              config=ocp.args.JsonSave(config_json),
              metadata=ocp.args.JsonSave(meta),
          ),
      )
    _write_manifest(tmp)
    if path.exists() or path.is_symlink():
      old = path.with_name(f".{path.name}.old-{tag}")
      os.rename(path, old)
      os.rename(tmp, path)
      _fsync_dir(path.parent)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, path)
      _fsync_dir(path.parent)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
  return path


def _read_json_items(path: pathlib.Path) -> tuple[dict[str, Any], dict[str, Any]]:
  """Returns (metadata, config dict) of a model checkpoint; validates the format."""
  _require_model_checkpoint(path)
  try:
    with _composite_checkpointer() as ckptr:
      items = ckptr.restore(
          path, args=ocp.args.Composite(config=ocp.args.JsonRestore(), metadata=ocp.args.JsonRestore()))
  except Exception as e:  # orbax/json raise many types; report them all by path.
    raise CheckpointError(f"{path}: cannot read config/metadata JSON ({_first_line(e)})") from e
  meta, config = items["metadata"], items["config"]
  if not isinstance(meta, dict) or meta.get("format") != _MODEL_FORMAT:
    raise CheckpointError(
        f"{path}: metadata is not a jaxcxr model checkpoint's (expected format {_MODEL_FORMAT!r})")
  if not isinstance(config, dict):
    raise CheckpointError(f"{path}: config JSON is a {type(config).__name__}, expected an object")
  return meta, config


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
  """Returns a model checkpoint's metadata with its config dict, without loading arrays.

  For model cards and CLI listings.

  Args:
    directory: a directory written by `save_model`.

  Returns:
    The metadata dict (`format`, `jaxcxr_version`, `model`, `config_type`,
    `created` and the user entries) plus `"config"`: the config as a dict.

  Raises:
    CheckpointError: missing directory, not a model checkpoint, or unreadable JSON.
  """
  path = pathlib.Path(directory).absolute()
  meta, config = _read_json_items(path)
  return {**meta, "config": config}


def load_model(
    directory: str | os.PathLike[str],
    model_factory: Callable[[ConfigT], nnx.Module],
    config_type: type[ConfigT],
) -> tuple[nnx.Module, ConfigT, dict[str, Any]]:
  """Loads a model saved by `save_model`.

  Steps (FX checkpointing guide): read the config JSON into `config_type`,
  build the abstract model with `nnx.eval_shape(lambda: model_factory(config))`,
  check the saved leaves against the abstract state, restore into it and merge.
  Variables that are not saved (RNG streams, e.g. for dropout) come from
  `model_factory`: they are computed under `jax.jit`, so the parameter
  initialisers are traced but never run.

  Args:
    directory: a directory written by `save_model`.
    model_factory: builds the model from a config, e.g.
      `lambda cfg: Generator(cfg, rngs=nnx.Rngs(0))`.
    config_type: the frozen config dataclass type the checkpoint must hold.

  Returns:
    `(model, config, metadata)`; metadata as in `read_metadata` without the
    `"config"` entry.

  Raises:
    CheckpointError: naming the path, when the directory is missing, is not a
      model checkpoint, has corrupt JSON or array files, holds a different
      config type, or its leaves differ from the model's (the first differing
      leaf and both shapes are named).
  """
  path = pathlib.Path(directory).absolute()
  meta, config_dict = _read_json_items(path)
  if meta.get("config_type") != config_type.__name__:
    raise CheckpointError(
        f"{path}: checkpoint holds a {meta.get('config_type')!r} config, not {config_type.__name__!r}")
  try:
    config = config_lib.from_dict(config_type, config_dict)
  except (ValueError, TypeError) as e:
    raise CheckpointError(f"{path}: config does not fit {config_type.__name__}: {e}") from e

  _verify_manifest(path)
  abstract_model = nnx.eval_shape(lambda: model_factory(config))
  graphdef, abstract_state, abstract_rest = nnx.split(abstract_model, _SAVED, ...)
  try:
    with _composite_checkpointer() as ckptr:
      saved_tree = ckptr.metadata(path).item_metadata["state"].tree
      _check_against_saved(path, saved_tree, abstract_state, f"{type(abstract_model).__name__} built from the config")
      restored = ckptr.restore(
          path, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))["state"]
  except CheckpointError:
    raise
  except Exception as e:  # tensorstore/orbax errors for truncated or garbled files.
    raise CheckpointError(f"{path}: cannot read the saved arrays ({_first_line(e)})") from e

  if jax.tree_util.tree_leaves(abstract_rest):
    rest = jax.jit(lambda: nnx.state(model_factory(config), _NOT_SAVED))()
  else:
    rest = abstract_rest
  model = nnx.merge(graphdef, restored, rest)
  return model, config, meta


# --------------------------------------------------------------------------- #
# Training checkpoints.
# --------------------------------------------------------------------------- #


def _is_key(leaf: Any) -> bool:
  dtype = getattr(leaf, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _keys_to_data(tree: PyTree) -> PyTree:
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract_keys_to_data(tree: PyTree) -> PyTree:
  return jax.tree.map(lambda x: jax.eval_shape(jax.random.key_data, x) if _is_key(x) else x, tree)


def _key_impl_name(abstract_key: Any) -> str:
  # `jax.random.key_impl` needs an array, not a ShapeDtypeStruct: ask it while tracing.
  names: list[str] = []

  def probe(k):
    names.append(str(jax.random.key_impl(k)))
    return k

  jax.eval_shape(probe, jax.ShapeDtypeStruct(abstract_key.shape, abstract_key.dtype))
  return names[0]


def _data_to_keys(tree: PyTree, abstract: PyTree) -> PyTree:
  return jax.tree.map(
      lambda x, a: jax.random.wrap_key_data(x, impl=_key_impl_name(a)) if _is_key(a) else x, tree, abstract)


class TrainCheckpointer:
  """Full training-state checkpoints for resumable training (orbax CheckpointManager).

  Each step is a directory `directory/STEP/` with items `state` (any pytree of
  jax/numpy arrays: model state, optax state, step counter, PRNG keys),
  and, when given, `config` and `metadata` JSON. Saves are asynchronous
  (orbax writes in a background thread after copying arrays to host);
  `wait_until_finished()` blocks until they are committed and `close()` calls
  it. Use as a context manager::

    with TrainCheckpointer(workdir / "ckpt", max_to_keep=3) as ckpt:
      if (step := ckpt.latest_step()) is not None:
        state = ckpt.restore(jax.eval_shape(lambda: state))
      ...
      ckpt.save(step, state, config=cfg, metadata={"loss": loss})

  Typed PRNG keys in `state` are stored as `jax.random.key_data` and re-wrapped
  on restore where the abstract state has a key dtype.
  """

  def __init__(self, directory: str | os.PathLike[str], *, max_to_keep: int = 3, save_interval_steps: int = 1):
    """Opens (creating if needed) a checkpoint directory.

    Args:
      directory: root directory of the numbered step directories.
      max_to_keep: number of most recent steps kept; older ones are deleted.
      save_interval_steps: `save` skips steps that are not a multiple of this
        unless `force=True`.
    """
    self.directory = pathlib.Path(directory).absolute()
    if self.directory.exists() and not self.directory.is_dir():
      raise CheckpointError(f"{self.directory}: expected a checkpoint directory, found a file")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        save_interval_steps=save_interval_steps,
        create=True,
        enable_async_checkpointing=True,
    )
    # Explicit handlers so item metadata and partial restores work in a fresh
    # process too (otherwise orbax logs "Item ... could not be restored").
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=options,
        item_handlers={
            "state": ocp.StandardCheckpointHandler(),
            "config": ocp.JsonCheckpointHandler(),
            "metadata": ocp.JsonCheckpointHandler(),
        },
    )
    self._closed = False
    self._without_manifest: list[int] = []   # saved steps whose manifest is written once committed

  def _write_manifests(self) -> None:
    """Waits for pending saves, then writes the manifest of each step saved since the last call."""
    self._manager.wait_until_finished()
    for step in self._without_manifest:
      where = self.directory / str(step)
      if (where / "state").is_dir():    # not yet removed by max_to_keep
        _write_manifest(where, _TRAIN_FORMAT)
    self._without_manifest = []

  def latest_step(self) -> int | None:
    """Returns the newest committed step, or None. Unfinished (tmp) step directories are ignored."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Returns the committed steps, oldest first."""
    return sorted(self._manager.all_steps())

  def save(
      self,
      step: int,
      state: PyTree,
      *,
      config: Any = None,
      metadata: Mapping[str, Any] | None = None,
      force: bool = False,
  ) -> bool:
    """Starts saving `state` as `step` (asynchronously).

    Args:
      step: training step; steps must increase.
      state: pytree of jax/numpy arrays; typed PRNG keys are allowed.
      config: optional config dataclass, stored as JSON with its type name in
        the metadata.
      metadata: optional JSON-serialisable dict (e.g. metrics).
      force: save even if `step` is not a multiple of `save_interval_steps`.

    Returns:
      True if a save was started; False if orbax skipped the step (interval,
      or the step already exists).
    """
    self._check_open()
    self._write_manifests()
    items = {"state": ocp.args.StandardSave(_keys_to_data(state))}
    if config is not None:
      items["config"] = ocp.args.JsonSave(_to_json(config_lib.to_dict(config), "config"))
    items["metadata"] = ocp.args.JsonSave(_build_metadata(_TRAIN_FORMAT, config, metadata, step=int(step)))
    started = bool(self._manager.save(int(step), args=ocp.args.Composite(**items), force=force))
    if started:
      self._without_manifest.append(int(step))
    return started

  def _resolve_step(self, step: int | None) -> int:
    steps = self.all_steps()
    if step is None:
      if not steps:
        raise CheckpointError(f"{self.directory}: no training checkpoints to restore")
      return steps[-1]
    if step not in steps:
      raise CheckpointError(f"{self.directory}: no checkpoint for step {step} (available: {steps})")
    return step

  def restore(self, abstract_state: PyTree, step: int | None = None) -> PyTree:
    """Restores a step into the structure of `abstract_state`.

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct` (e.g. from
        `jax.eval_shape`) or arrays with the shapes, dtypes (and shardings)
        wanted; typed key leaves get typed keys back.
      step: the step to restore; the latest when None.

    Returns:
      The restored pytree with the structure of `abstract_state`.

    Raises:
      CheckpointError: no checkpoint (for that step), corrupt files, or leaves
        that differ from `abstract_state` (the first one is named).
    """
    self._check_open()
    self.wait_until_finished()
    step = self._resolve_step(step)
    target = _abstract_keys_to_data(abstract_state)
    where = self.directory / str(step)
    if (where / _MANIFEST).is_file():
      _verify_manifest(where)
    try:
      saved_tree = self._manager.item_metadata(step)["state"].tree
      _check_against_saved(where, saved_tree, target, "abstract state")
      restored = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    except CheckpointError:
      raise
    except Exception as e:  # tensorstore/orbax errors for truncated or garbled files.
      raise CheckpointError(f"{where}: cannot restore step {step} ({_first_line(e)})") from e
    return _data_to_keys(restored, abstract_state)

  def read_metadata(self, step: int | None = None) -> dict[str, Any]:
    """Returns the metadata JSON of a step (latest by default), plus `"config"` if one was saved."""
    self._check_open()
    self.wait_until_finished()
    step = self._resolve_step(step)
    try:
      meta = dict(self._manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))["metadata"])
      if (self.directory / str(step) / "config").is_dir():
        meta["config"] = self._manager.restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    except Exception as e:
      raise CheckpointError(f"{self.directory / str(step)}: cannot read metadata ({_first_line(e)})") from e
    return meta

  def wait_until_finished(self) -> None:
    """Blocks until pending asynchronous saves are committed (and their manifests written)."""
    self._write_manifests()

  def close(self) -> None:
    """Waits for pending saves, then releases orbax's resources. Idempotent."""
    if self._closed:
      return
    try:
      self._write_manifests()
    finally:
      self._manager.close()
      self._closed = True

  def _check_open(self) -> None:
    if self._closed:
      raise CheckpointError(f"{self.directory}: TrainCheckpointer is closed")

  def __enter__(self) -> TrainCheckpointer:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()


# --------------------------------------------------------------------------- #
# Shipped checkpoints.
# --------------------------------------------------------------------------- #

# Generators in order of preference (the first present is used by default).
SHIPPED_GENERATORS = ("gan_256/generator", "gan_128/generator", "gan_64/generator")
# Normal-only GANs (folders with generator/ and discriminator/) for anomaly detection, best first.
SHIPPED_NORMAL_GANS = ("gan_256_normal", "gan_64_normal")
# Classifiers per task, best first.
SHIPPED_CLASSIFIERS = {
    "abnormal": ("classifier_abnormal_256/classifier", "classifier_abnormal_ensemble_96/classifier",
                 "classifier_abnormal_128/classifier"),
    "sex": ("classifier_sex_256/classifier", "classifier_sex_ensemble_64/classifier", "classifier_sex_64/classifier"),
}
# U-Nets, best first.
SHIPPED_UNETS = ("unet_256/unet", "unet_128/unet")
# The self-supervised CXR encoder (`jaxcxr.models.cxr_encoder`).
SHIPPED_ENCODERS = ("encoder_cxr/encoder",)
# Post-filter calibrations (folders with calibration.json, naming their U-Net and classifier), best first.
SHIPPED_SCORING = ("scoring_256", "scoring_128")
# f-AnoGAN encoders and HealthyGAN translators, best first.
SHIPPED_FANOGAN_ENCODERS = ("fanogan_256/encoder", "fanogan_64/encoder")
SHIPPED_HEALTHYGAN_TRANSLATORS = ("healthygan_256/translator", "healthygan_64/translator")
# Cascade pre-filters (base-image score predictors with thresholds; each names its generator's id).
SHIPPED_CASCADE_PREFILTERS = ("cascade_prefilter_gan_256",)
# PatchCore memory banks (`jaxcxr.anomaly.patchcore`): folders with patchcore.json, not model checkpoints.
SHIPPED_PATCHCORE = ("patchcore_encoder_cxr",)

# The package a non-editable install (`pip install .`, a wheel) carries the default models in: the source
# folder `checkpoints/` under this name (setup.py), holding only the folders below (pyproject.toml's package
# data, figures left out). They are what `load_pretrained()` and `jaxcxr demo` use: the generator, the
# post-filter (its calibration, U-Net and abnormal classifier), the cascade pre-filter, the normal-only GAN,
# f-AnoGAN and HealthyGAN. The older models come with the source checkout only.
MODELS_PACKAGE = "jaxcxr_models"
INSTALLED_MODELS = ("gan_256", "scoring_256", "unet_256", "classifier_abnormal_ensemble_96",
                    "cascade_prefilter_gan_256", "gan_256_normal", "fanogan_256", "healthygan_256")


def source_checkpoints() -> pathlib.Path:
  """The `checkpoints/` folder of the source checkout jaxcxr runs from (absent in a non-editable install)."""
  return pathlib.Path(__file__).resolve().parents[1] / "checkpoints"


def installed_models() -> pathlib.Path | None:
  """The folder of the installed `jaxcxr_models` package (the default models), or None where it is not installed."""
  spec = importlib.util.find_spec(MODELS_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    return None
  return pathlib.Path(next(iter(spec.submodule_search_locations))).resolve()


def checkpoints_root() -> pathlib.Path:
  """`$JAXCXR_CHECKPOINTS`, else the source checkout's `checkpoints/`, else the installed `jaxcxr_models`.

  An editable install and a source checkout find every shipped model; a non-editable
  install finds the default models of `INSTALLED_MODELS`. Where none is there, the source
  checkout's folder is returned (the errors of the callers name it).
  """
  env = os.environ.get("JAXCXR_CHECKPOINTS")
  if env:
    return pathlib.Path(env)
  source = source_checkpoints()
  if source.is_dir():
    return source
  installed = installed_models()
  return installed if installed is not None else source


def missing_reason(root: str | os.PathLike[str]) -> str:
  """Why a shipped model may be missing under `root`: a sentence naming what to do, for error messages."""
  root = pathlib.Path(root)
  installed = installed_models()
  if installed is not None and root.resolve() == installed:
    return (f"the installed package {MODELS_PACKAGE} holds the default models only ({', '.join(INSTALLED_MODELS)}); "
            "the older ones come with the source checkout (install it with pip install -e, or set "
            "JAXCXR_CHECKPOINTS to its checkpoints folder)")
  return "pass --checkpoint DIR or set JAXCXR_CHECKPOINTS"


def shipped_normal_gans() -> list[pathlib.Path]:
  """The shipped normal-only GAN folders (each with `generator/` and `discriminator/`) present, best first."""
  root = checkpoints_root()
  return [root / name for name in SHIPPED_NORMAL_GANS if (root / name / "generator").exists()]


def shipped_checkpoint(*names: str) -> pathlib.Path:
  """The first of `names` present under `checkpoints_root()`, as a model checkpoint folder.

  A shipped model folder holds the inference weights either directly or in a
  sub-folder named after its kind (e.g. `gan_64/generator`); pass that path.

  Raises:
    CheckpointError: none of them is there (names the folder searched).
  """
  root = checkpoints_root()
  for name in names:
    if _is_model_checkpoint(root / name):
      return root / name
  raise CheckpointError(f"{root}: no shipped checkpoint among {', '.join(names)}; {missing_reason(root)}")


def model_folder(directory: str | os.PathLike[str], kind: str) -> pathlib.Path:
  """The model checkpoint a folder names: the folder itself, or its `kind/` sub-folder when only that is one.

  A shipped model is named by its folder (`checkpoints/gan_256_normal`), which holds the
  inference weights in a sub-folder named after their kind (`generator/`, beside
  `discriminator/`, cards and figures). Every command that takes a generator (or encoder,
  translator, ...) checkpoint accepts either path.

  Args:
    directory: a model checkpoint, or a folder holding one as `kind/`.
    kind: the sub-folder name, e.g. "generator".

  Returns:
    `directory/kind` when `directory` is not a model checkpoint and `directory/kind` is one;
    else `directory` (a missing or corrupt one is reported by the loader that reads it).
  """
  path = pathlib.Path(directory)
  if not _is_model_checkpoint(path) and _is_model_checkpoint(path / kind):
    return path / kind
  return path


def model_id(directory: str | os.PathLike[str]) -> str:
  """A short id of a model checkpoint's weights: the first 16 hex digits of its manifest's SHA-256.

  The manifest lists the SHA-256 of every array file, so two checkpoints share an id
  exactly when their weights are byte-identical. Records derived from a model (score
  calibrations, latent datasets) store it to detect a later mismatch.

  Raises:
    CheckpointError: `directory` is not a model checkpoint.
  """
  path = pathlib.Path(directory)
  _require_model_checkpoint(path)
  return file_sha256(path / _MANIFEST)[:16]
