"""The training loop and the helpers that the five trainers of `jaxcxr.train` share.

Every trainer follows one pattern. The training images (uint8, resized once on the host)
live on the device; step t draws its batch and its randomness from
`jax.random.fold_in(key, t)` inside the jitted step, so the trajectory is a pure function
of (config, data, seed, step). `steps_per_call` steps run in one jitted call over a donated
train state (`compile_steps`), a plain dict of arrays with an int32 "step".

`run_training_loop` does everything between those calls: training checkpoints
(`out_dir/checkpoints/STEP/`, `checkpoints.TrainCheckpointer`), resume, the tqdm bar,
`out_dir/metrics.jsonl`, timing and the check for non-finite metrics. A trainer adds its
own work through hooks: `on_call` after each call (sample grids; validation with model
selection, whose result the hook keeps in the state so that it is checkpointed with it),
`checkpoint_metadata` and `on_resume` for JSON facts that a resumed run needs back (a
validation history). A checkpoint holds the whole state, the hooks' results included, so a
run killed at any moment resumes from its last checkpoint and ends exactly as an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxcxr import checkpoints
from jaxcxr import config as config_lib
from jaxcxr import data as data_lib
from jaxcxr import io as io_lib

__all__ = [
    "KEY_IMPL",
    "LoopResult",
    "append_metrics",
    "arrays_sha256",
    "compile_steps",
    "copy_weights",
    "data_metadata",
    "device_name",
    "host_copy",
    "jit_init",
    "loop_summary",
    "run_training_loop",
    "without_loop_fields",
]

# PRNG of initialisation and training of the GAN-type trainers (gan, fanogan, healthygan). "rbg"
# (XLA's RngBitGenerator) compiles several times faster on a CPU than threefry's unrolled hash;
# streams are reproducible on one backend.
KEY_IMPL = "rbg"

# Loop-only fields (whichever a config has) and their normalised values (see `without_loop_fields`);
# None stands for steps_per_call.
_LOOP_FIELDS = {"steps": None, "checkpoint_every": None, "max_to_keep": 1, "sample_every": 0, "samples": 1,
                "samples_per_group": 1, "eval_every": None, "eval_batch_size": 1}


# ----------------------------------------------------------------------------- small helpers


def device_name() -> str:
  """"platform:device kind" of the first device (e.g. "cpu:cpu"), for the metadata of a trained model."""
  device = jax.devices()[0]
  return f"{device.platform}:{getattr(device, 'device_kind', '')}"


def host_copy(tree):
  """Host numpy copies of a pytree's arrays (never views of device buffers that a donation may free)."""
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def append_metrics(path: pathlib.Path, step: int, metrics: Mapping[str, Any], rate: str | None) -> None:
  """Appends one JSON line, atomically: the step reached and the metrics averaged over the call.

  Lines of later steps (written by a run killed after its last checkpoint) are dropped in
  the same write, so a resumed run's log reads as an uninterrupted one's. `rate` (images
  per second, as shown in the progress bar) is added when given.
  """
  record = {"step": step, **{k: float(np.mean(v)) for k, v in metrics.items()}}
  if rate is not None:
    record["images_per_second"] = float(rate)
  io_lib.append_json_line(path, record, keep=lambda r: isinstance(r, dict) and r.get("step", 0) < step)


def _trim_metrics(path: pathlib.Path, step: int) -> None:
  """Drops the lines after `step` (a run killed after its last checkpoint wrote them), atomically."""
  if path.exists():
    lines = io_lib.read_json_lines(path)
    kept = [r for r in lines if isinstance(r, dict) and r.get("step", 0) <= step]
    if len(kept) != len(lines) or path.read_bytes()[-1:] not in (b"", b"\n"):
      io_lib.save_json_lines(path, kept)


def arrays_sha256(arrays) -> str:
  """sha256 hex digest of a pytree's (or a sequence's) arrays, in order: an input a resumed run must be given again."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(arrays):
    digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return digest.hexdigest()


def copy_weights(saved, fresh, what: str):
  """`saved` (a parameter tree) as fresh device copies with `fresh`'s dtypes, for a warm start.

  Each call makes new buffers, so one saved tree can start two entries of a donated state
  (weights and their EMA).

  Raises:
    ValueError: `saved` does not have `fresh`'s tree structure and shapes (`what` names it).
  """
  shapes = lambda tree: jax.tree.map(lambda x: tuple(np.shape(x)), tree)
  if shapes(saved) != shapes(fresh):
    raise ValueError(f"{what} does not match the preset's model (other widths or layers)")
  return jax.tree.map(lambda s, f: jnp.array(s, f.dtype, copy=True), saved, fresh)


def data_metadata(dataset: data_lib.CXRDataset) -> dict[str, Any]:
  """{"data_source", and "data_sha256" when the source is a file}: the provenance saved with a model."""
  meta: dict[str, Any] = {"data_source": dataset.source}
  files = [pathlib.Path(p) for p in dataset.source.split(",")] if dataset.source else []
  if files and all(f.is_file() for f in files):   # archives joined by data.concatenate: one digest each
    meta["data_sha256"] = ",".join(data_lib.file_sha256(f) for f in files)
  return meta


# ----------------------------------------------------------------------------- configs


def without_loop_fields(config, **fields):
  """The config with its loop-only fields normalised: what a compiled step depends on (its cache key).

  Normalised where the config has them: steps, checkpoint_every and eval_every to
  steps_per_call; max_to_keep, samples, samples_per_group and eval_batch_size to 1;
  sample_every to 0. `jaxcxr.config.check_loop_fields` checks the same fields.

  Args:
    config: a frozen train-config dataclass.
    **fields: the trainer's own loop-only fields and their normalised values, or a kept value
      where the step depends on a field (e.g. `steps=config.steps` when the learning-rate
      schedule ends at `steps`).
  """
  k = config.steps_per_call
  normal = {name: k if value is None else value for name, value in _LOOP_FIELDS.items() if hasattr(config, name)}
  return dataclasses.replace(config, **{**normal, **fields})


# ----------------------------------------------------------------------------- compiled functions


def jit_init(init_fn: Callable[[jax.Array, Any], Any], config, seed: int):
  """`init_fn(root_key, config)` in one jitted call, the root key `jax.random.key(seed, impl=KEY_IMPL)`.

  Eager initialisation dispatches, and on a CPU compiles, every initialiser separately.
  The jitted function is cached per (init_fn, config): pass a module-level function and the
  config without its loop-only fields. The state is committed to the first device, as the
  training loop commits it (`run_training_loop`): a training call compiled for a fresh state
  serves the loop's calls too.
  """
  return jax.device_put(_jit_init(init_fn, config)(np.uint32(seed)), jax.devices()[0])


@functools.lru_cache(maxsize=16)
def _jit_init(init_fn, config):
  return jax.jit(lambda seed: init_fn(jax.random.key(seed, impl=KEY_IMPL), config))


def compile_steps(step_fn: Callable[..., tuple[Any, Any]], steps_per_call: int, unroll: int = 1,
                  static: tuple = ()) -> Callable[..., tuple[Any, Any]]:
  """Jitted `steps_per_call` calls of `step_fn` in one `lax.scan`, the train state donated.

  XLA:CPU runs convolutions inside a rolled while loop many times slower (jax-ml/jax#12868;
  about 15x for the classifier and the U-Net), so CPU configs unroll fully: with
  `unroll >= steps_per_call` the call is straight-line code without a while loop (even for
  one step per call, where `lax.scan(unroll=1)` would keep a loop of one trip). Compile time
  grows with the steps unrolled.

  Args:
    step_fn: `step_fn(state, *args, *static) -> (state, metrics)`, one training step; a
      module-level function (it is part of the cache key).
    steps_per_call: steps per call.
    unroll: steps per iteration of the rolled loop (`lax.scan`'s `unroll`); `steps_per_call`
      (or more) unrolls fully.
    static: trailing arguments of `step_fn` fixed at compile time (hashable: configs).

  Returns:
    `fn(state, *args) -> (state, metrics)`, metrics stacked over the steps: each
    (steps_per_call,). Cached per (step_fn, steps_per_call, unroll, static).
  """
  return _compile_steps(step_fn, steps_per_call, 0 if unroll >= steps_per_call else unroll, tuple(static))


@functools.lru_cache(maxsize=16)
def _compile_steps(step_fn, steps_per_call, unroll, static):
  def call(state, *args):
    return jax.lax.scan(lambda s, _: step_fn(s, *args, *static), state, None, length=steps_per_call,
                        unroll=unroll)

  return jax.jit(call, donate_argnums=0)


# ----------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class LoopResult:
  """What `run_training_loop` hands back to a trainer."""

  # The final train state (device arrays; the host entries as host arrays).
  state: Any
  # The step reached, and the step this run started from (> 0 when resumed).
  step: int
  start_step: int
  # Wall time of this run (s), and the training time of earlier runs of the same checkpoint folder.
  seconds: float
  previous_seconds: float
  # First call minus a steady one (compilation), and the steady time per step; NaN without steady calls.
  compile_seconds: float
  seconds_per_step: float
  # Metrics averaged over the last call; empty when the run made no call (resumed at its end).
  final: dict[str, float]
  # Metrics of the last call, host arrays (steps_per_call,); empty when the run made no call.
  last_metrics: dict[str, np.ndarray]


def run_training_loop(*, name: str, config, state: dict[str, Any], train_call: Callable, args: tuple,
                      out_dir: pathlib.Path, resume: bool, progress: bool,
                      postfix: Callable[[dict, dict], dict[str, str]],
                      run_metadata: Mapping[str, Any] | None = None,
                      checkpoint_metadata: Callable[[dict], Mapping[str, Any]] | None = None,
                      on_resume: Callable[[dict], None] | None = None,
                      on_call: Callable[[int, dict], dict | None] | None = None,
                      host_entries: tuple[str, ...] = (), stop_at: int | None = None) -> LoopResult:
  """Runs `train_call(state, *args)` until `config.steps`, with checkpoints, resume, tqdm and metrics.jsonl.

  Writes `out_dir/checkpoints/STEP/` (the whole state, the config, `run_metadata`,
  `checkpoint_metadata(state)`, the training seconds so far and the last call's mean
  metrics; every `config.checkpoint_every` steps and at the end) and one line per call to
  `out_dir/metrics.jsonl` (`append_metrics`). With `resume`, continues from the latest
  checkpoint, which must have been written with the same `run_metadata` (the same data,
  the same frozen models, the seed) and the same config apart from its loop-only fields
  (steps may grow); the lines of `metrics.jsonl` after that checkpoint (a killed run's) are
  dropped, so the log, the state and the result read as an uninterrupted run's.

  After each call: the metrics are checked, `on_call` runs, the progress bar and the
  metrics line are written, then the checkpoint when one is due.

  Args:
    name: progress-bar label and the name in error messages.
    config: a train config with steps, steps_per_call, checkpoint_every, max_to_keep, batch_size.
    state: the initial state, a dict of arrays with an int32 "step" (its structure is also the
      restore target).
    train_call: jitted `(train state, *args) -> (train state, metrics)`, the train state
      donated, metrics (steps_per_call,) each (`compile_steps`).
    args: the other arguments of `train_call` (device arrays).
    out_dir: the run folder (created if needed).
    resume: continue from the latest checkpoint in `out_dir` (start afresh if none).
    progress: show a tqdm bar on stderr.
    postfix: (metrics of the call as host arrays, state) -> tqdm postfix entries; the loop adds
      "img/s".
    run_metadata: JSON-serialisable facts saved with each checkpoint and checked on resume.
    checkpoint_metadata: state -> more JSON-serialisable facts saved with each checkpoint, not
      checked (e.g. a validation history, the seed).
    on_resume: called with the metadata of the checkpoint resumed from (everything saved with it)
      before the first call, e.g. to take back what `checkpoint_metadata` saved.
    on_call: called as `on_call(step, state)` after each call; returns the state to continue
      with (which the next checkpoint saves), or None to keep it. Sample grids, validation.
    host_entries: top-level entries of `state` kept out of `train_call` (host arrays that
      `on_call` maintains, e.g. the best parameters so far); checkpointed and restored with
      the rest.
    stop_at: stop after this step (a multiple of steps_per_call, at most `config.steps`) and
      checkpoint it, to continue later with `resume`; None runs to `config.steps`.

  Returns:
    A `LoopResult`.

  Raises:
    FileExistsError: `out_dir` holds checkpoints and `resume` is False.
    jaxcxr.checkpoints.CheckpointMismatchError: (a ValueError) resuming a checkpoint written for other
      `run_metadata`, another config or another steps_per_call.
    jaxcxr.checkpoints.CheckpointError: a checkpoint that cannot be read (named by path).
    FloatingPointError: non-finite metrics.
  """
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  ckpt_dir = out_dir / "checkpoints"
  end = config.steps if stop_at is None else min(int(stop_at), config.steps)
  wall_start = time.perf_counter()
  # JSON round trip: the values compare as they read back (tuples as lists).
  run_metadata = json.loads(json.dumps(dict(run_metadata or {})))
  with checkpoints.TrainCheckpointer(ckpt_dir, max_to_keep=config.max_to_keep) as ckpt:
    latest = ckpt.latest_step()
    if latest is not None and not resume:
      raise FileExistsError(f"{ckpt_dir}: holds training checkpoints (latest step {latest}); pass --resume "
                            "(resume=True) to continue, or choose another output folder")
    previous_seconds = 0.0
    if resume and latest is not None:
      saved = ckpt.read_metadata()
      # Entries an older checkpoint lacks (added to run_metadata since) are not compared.
      changed = {k: (saved.get(k), v) for k, v in run_metadata.items() if k in saved and saved[k] != v}
      changed.update(_config_changes(saved.get("config"), config))
      if changed:
        raise checkpoints.CheckpointMismatchError(
            f"{ckpt_dir}: cannot resume, the checkpoint was written for other inputs (saved, now): {changed}; "
            "expected the run's own inputs (choose another output folder for a new run)")
      state = ckpt.restore(jax.eval_shape(lambda: state))
      state = {**state, **host_copy({k: state[k] for k in host_entries})}
      previous_seconds = float(saved.get("train_seconds", 0.0))
      if on_resume is not None:
        on_resume(saved)
    state = _committed(state, host_entries, args)
    start = int(state["step"])
    if start % config.steps_per_call:
      raise checkpoints.CheckpointMismatchError(
          f"{ckpt_dir}: checkpoint step {start} is not a multiple of steps_per_call={config.steps_per_call}")
    step, metrics_host = start, None
    if resume and latest is not None and isinstance(saved.get("last_metrics"), dict):
      # The last call's metrics, for a run resumed at its end (it makes no call).
      metrics_host = {k: np.asarray(v["values"], v["dtype"]) for k, v in saved["last_metrics"].items()}
    _trim_metrics(out_dir / "metrics.jsonl", start)
    first_call_seconds, timed_steps, timed_seconds = 0.0, 0, 0.0
    bar = tqdm(total=config.steps, initial=start, disable=not progress, file=sys.stderr, unit="step",
               dynamic_ncols=True, desc=name)

    def checkpoint(step: int):
      meta = {**run_metadata, **(checkpoint_metadata(state) if checkpoint_metadata else {}),
              "train_seconds": previous_seconds + time.perf_counter() - wall_start,
              **({k: float(np.mean(v)) for k, v in metrics_host.items()} if metrics_host else {}),
              "last_metrics": {k: {"dtype": str(np.asarray(v).dtype), "values": np.asarray(v).tolist()}
                               for k, v in (metrics_host or {}).items()}}
      # Host copies: the save is asynchronous and the next call donates the device buffers.
      ckpt.save(step, host_copy(state), config=config, metadata=meta, force=True)

    try:
      while step < end:
        t0 = time.perf_counter()
        train_state, metrics = train_call({k: v for k, v in state.items() if k not in host_entries}, *args)
        state = {**train_state, **{k: state[k] for k in host_entries}}
        metrics_host = jax.device_get(metrics)
        elapsed = time.perf_counter() - t0
        if step == start:
          first_call_seconds = elapsed  # compile + one call
        else:
          timed_steps += config.steps_per_call
          timed_seconds += elapsed
        step += config.steps_per_call
        if not all(np.isfinite(v).all() for v in metrics_host.values()):
          raise FloatingPointError(f"{name} training diverged at step {step}: non-finite metrics "
                                   f"{ {k: np.asarray(v).tolist() for k, v in metrics_host.items()} }")
        if on_call is not None:
          updated = on_call(step, state)
          state = state if updated is None else updated
        bar.update(config.steps_per_call)
        post = postfix(metrics_host, state)
        if timed_seconds:
          post["img/s"] = f"{config.batch_size * timed_steps / timed_seconds:.1f}"
        bar.set_postfix(post, refresh=False)
        append_metrics(out_dir / "metrics.jsonl", step, metrics_host, post.get("img/s"))
        if step % config.checkpoint_every == 0 or step == end:
          checkpoint(step)
    finally:
      bar.close()
    if step == end and ckpt.latest_step() != step:
      checkpoint(step)  # resumed at the end
    ckpt.wait_until_finished()
  per_step = timed_seconds / timed_steps if timed_steps else float("nan")
  return LoopResult(
      state=state, step=step, start_step=start, seconds=time.perf_counter() - wall_start,
      previous_seconds=previous_seconds,
      compile_seconds=first_call_seconds - per_step * config.steps_per_call if timed_steps else first_call_seconds,
      seconds_per_step=per_step,
      final={k: float(np.mean(v)) for k, v in (metrics_host or {}).items()},
      last_metrics=dict(metrics_host or {}))


def _committed(state: dict[str, Any], host_entries: tuple[str, ...], args: tuple) -> dict[str, Any]:
  """The train state's device entries committed to one device: the arguments' (the first device without any).

  A jitted call is compiled for its arguments' shardings as well as their shapes. A fresh
  state mixes uncommitted arrays (host values, initialiser outputs) with committed ones,
  while the call's outputs, the next call's state, are all committed: without this, a run
  compiled its training program twice (the second call, and again after a resume), 15-24 s
  each for the tiny test GAN on one CPU core.
  """
  devices = [next(iter(leaf.devices())) for leaf in jax.tree.leaves(args)
             if isinstance(leaf, jax.Array) and len(leaf.devices()) == 1]
  device = devices[0] if devices else jax.devices()[0]
  train = jax.device_put({k: v for k, v in state.items() if k not in host_entries}, device)
  return {**train, **{k: state[k] for k in host_entries}}


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(value, dict):
    return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
  return {prefix[:-1]: value}


def _config_changes(saved: Any, config) -> dict[str, tuple[Any, Any]]:
  """{"config.FIELD": (saved, now)} for the fields of `config` a resumed run may not change.

  The loop-only fields (steps, steps_per_call, checkpoint and sample intervals, evaluation
  batch size) may change: a run is extended with more steps. Everything else (models,
  optimizer, batch size, data handling) must be as saved, or the resumed run would continue
  another run's state under other settings.
  """
  if not isinstance(saved, dict):
    return {}
  try:   # fields added to the config since the checkpoint was written read as their defaults (`from_dict`)
    saved = json.loads(json.dumps(config_lib.to_dict(config_lib.from_dict(type(config), saved))))
  except ValueError:
    pass   # a field removed since, or a config no longer valid: compared as saved
  now = json.loads(json.dumps(config_lib.to_dict(config)))
  free = {*_LOOP_FIELDS, "steps_per_call"}
  saved_flat = _flat({k: v for k, v in saved.items() if k not in free})
  now_flat = _flat({k: v for k, v in now.items() if k not in free})
  return {f"config.{k}": (saved_flat.get(k), now_flat.get(k)) for k in sorted(set(saved_flat) | set(now_flat))
          if saved_flat.get(k) != now_flat.get(k)}


def loop_summary(loop: LoopResult, config) -> dict[str, Any]:
  """The timing part of a trainer's return value: {"steps", "start_step", "seconds" (this run),
  "compile_seconds", "seconds_per_step", "images_per_second", "final" (metrics of the last call)}."""
  return {"steps": loop.step, "start_step": loop.start_step, "seconds": loop.seconds,
          "compile_seconds": loop.compile_seconds, "seconds_per_step": loop.seconds_per_step,
          "images_per_second": config.batch_size / loop.seconds_per_step if loop.seconds_per_step > 0
                               else float("nan"),
          "final": loop.final}
