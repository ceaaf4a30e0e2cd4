"""Training of the base-image `ScorePredictor` (the cascade pre-filter's model) from a latent dataset.

The training pairs come for free: a latent dataset (`jaxcxr.prefilter.build_latent_dataset`)
stores each latent's group and the post-filter's raw measures of its image, and
`base_images` regenerates the cascade's cheap first stage from the stored z. The fit is
plain regression of the standardised measures (mean squared error, AdamW, cosine decay),
keeping the step with the lowest validation error; the residual standard deviation of the
validation errors is stored in the model for `jaxcxr.prefilter.cascade.log_valid_probability`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxcxr import data as data_lib
from jaxcxr.batching import map_batches
from jaxcxr.config import ScorePredictorConfig
from jaxcxr.data import GROUPS
from jaxcxr.models.condition import group_condition_batch
from jaxcxr.models.generator import Generator
from jaxcxr.models.score_predictor import ScorePredictor
from jaxcxr.train.loop import arrays_sha256, host_copy, run_training_loop

__all__ = ["base_images", "fit_score_predictor", "split_indices"]


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _base_uint8(graphdef, state, z, cond):
  x = nnx.merge(graphdef, state).base_image(z, cond)[..., 0]
  return data_lib.signed_to_uint8(x)


def base_images(generator: Generator, z: Any, groups: Sequence[str], *, label: int = 0,
                batch_size: int = 250) -> np.ndarray:
  """The cascade's base images of latents: uint8 (N, base_resolution, base_resolution).

  Args:
    generator: a cascade `Generator` (with an upsampler).
    z: float (N, latent_dim) latents.
    groups: (N,) age-sex group of each latent (its condition).
    label: the label condition, when the generator has one.
    batch_size: latents per compiled call (the last call is padded).

  Raises:
    ValueError: a generator without an upsampler, or mismatched lengths.
  """
  if generator.config.upsampler is None:
    raise ValueError("base_images: the generator is not a cascade (no upsampler): its output is its base image")
  z = np.asarray(z, np.float32)
  groups = np.asarray(groups).astype(str)
  if z.ndim != 2 or groups.shape != (z.shape[0],):
    raise ValueError(f"base_images: expected z (N, D) and N groups, got {z.shape} and {groups.shape}")
  cond = np.zeros((z.shape[0], len(generator.config.conditions)), np.float32)
  for group in np.unique(groups):
    member = groups == group
    cond[member] = group_condition_batch(str(group), int(member.sum()), label,
                                         conditions=generator.config.conditions)
  graphdef, state = nnx.split(generator)
  return map_batches(lambda b: _base_uint8(graphdef, state, b["z"], b["cond"]), {"z": z, "cond": cond}, batch_size)


def split_indices(groups: Sequence[str], fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
                  seed: int = 0) -> dict[str, np.ndarray]:
  """Train / validation / test indices, each group split in these fractions (sorted int64 arrays)."""
  if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
    raise ValueError(f"split_indices: expected three positive fractions summing to 1, got {fractions}")
  groups = np.asarray(groups).astype(str)
  rng = np.random.default_rng(seed)
  parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
  for group in [g for g in GROUPS if g in set(groups)] + sorted(set(groups) - set(GROUPS)):
    index = rng.permutation(np.flatnonzero(groups == group))
    a = int(round(fractions[0] * index.size))
    b = a + int(round(fractions[1] * index.size))
    for name, chunk in zip(parts, (index[:a], index[a:b], index[b:])):
      parts[name].append(chunk)
  return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def _signed(images: jax.Array) -> jax.Array:
  return data_lib.to_signed(images)[..., None]


@functools.partial(jax.jit, static_argnames=("graphdef", "tx", "steps", "batch_size"), donate_argnums=(1, 2))
def _train_steps(graphdef, params, opt_state, rest, images, targets, key, *, tx, steps, batch_size):
  """`steps` AdamW steps on random batches; returns (params, opt_state, mean loss)."""

  def step(carry, k):
    params, opt_state = carry
    index = jax.random.randint(k, (batch_size,), 0, images.shape[0])
    x, y = _signed(images[index]), targets[index]

    def loss_fn(p):
      return jnp.mean(jnp.square(nnx.merge(graphdef, p, rest)(x) - y))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), jax.random.split(key, steps))
  return params, opt_state, losses.mean()


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _predict(graphdef, params, rest, images):
  return nnx.merge(graphdef, params, rest)(_signed(images))


def _predict_all(graphdef, params, rest, images: np.ndarray, batch: int = 500) -> np.ndarray:
  return map_batches(lambda x: _predict(graphdef, params, rest, x), images, batch)


@dataclasses.dataclass(frozen=True)
class FitLoopConfig:
  """The loop fields `run_training_loop` reads, for `fit_score_predictor` (one call per validation pass)."""

  steps: int
  steps_per_call: int
  checkpoint_every: int
  batch_size: int
  max_to_keep: int = 1


def fit_score_predictor(images: Any, measures: Mapping[str, Any], config: ScorePredictorConfig, *,
                        train: np.ndarray, validation: np.ndarray, steps: int = 3000, batch_size: int = 64,
                        learning_rate: float = 2e-3, weight_decay: float = 1e-4, eval_every: int = 250,
                        seed: int = 0, progress: bool = True, out_dir: str | os.PathLike | None = None,
                        resume: bool = False) -> tuple[ScorePredictor, dict[str, Any]]:
  """Fits a `ScorePredictor` to base images and their measures; keeps the best validation step.

  Trains on the shared loop (`loop.run_training_loop`, one call per validation pass): with
  `out_dir`, the whole state (weights, optimizer, key, the best weights so far and the
  validation history) is checkpointed after every pass, and a fit killed at any moment
  continues with `resume=True` and returns what an uninterrupted one returns. Without
  `out_dir` the loop runs in a temporary folder.

  Args:
    images: uint8 (N, R, R) base images (`base_images`).
    measures: {name: (N,)} raw measures of the full images (a latent dataset's "measures"),
      holding every name of `config.measures`.
    config: the model.
    train, validation: index arrays into the N records (`split_indices`).
    steps: AdamW steps (a multiple of `eval_every`).
    batch_size: images per step.
    learning_rate: peak rate of the cosine schedule.
    weight_decay: AdamW decay.
    eval_every: steps between validation passes.
    seed: initial weights and batches.
    progress: a line per validation pass on stderr.
    out_dir: the run folder (`checkpoints/`, `metrics.jsonl`), or None for a temporary one.
    resume: continue from the latest checkpoint in `out_dir` (start afresh if none).

  Returns:
    (model with `mean`, `std` and `residual_std` set, history {"step", "train_loss", "val_loss"
    (standardised MSE), "best_step", "val_r2" {name: R^2 at the best step; NaN for a measure constant
    on validation}, "seconds"}).

  Raises:
    ValueError: missing measures, non-finite targets, bad shapes or sizes.
    FileExistsError: `out_dir` holds checkpoints and `resume` is False.
    jaxcxr.checkpoints.CheckpointMismatchError: resuming a fit of other data or settings.
  """
  images = np.asarray(images)
  r = config.resolution
  if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (r, r):
    raise ValueError(f"fit_score_predictor: expected uint8 base images (N, {r}, {r}), got {images.dtype} "
                     f"{images.shape}")
  missing = [m for m in config.measures if m not in measures]
  if missing:
    raise ValueError(f"fit_score_predictor: measures {missing} missing (have {sorted(measures)})")
  y = np.stack([np.asarray(measures[m], np.float64) for m in config.measures], axis=1)
  if y.shape[0] != images.shape[0] or not np.all(np.isfinite(y[np.concatenate([train, validation])])):
    raise ValueError(f"fit_score_predictor: {y.shape[0]} measure rows for {images.shape[0]} images, or non-finite "
                     "training or validation targets")
  if steps <= 0 or eval_every <= 0 or steps % eval_every:
    raise ValueError(f"fit_score_predictor: steps ({steps}) must be a positive multiple of eval_every "
                     f"({eval_every})")
  if len(train) == 0 or len(validation) == 0:
    raise ValueError("fit_score_predictor: empty train or validation part")
  mean, std = y[train].mean(axis=0), y[train].std(axis=0) + 1e-8
  targets = ((y - mean) / std).astype(np.float32)

  model = ScorePredictor(config, rngs=nnx.Rngs(seed))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  schedule = optax.cosine_decay_schedule(learning_rate, steps)
  tx = optax.adamw(schedule, weight_decay=weight_decay)
  train_images, train_targets = jnp.asarray(images[train]), jnp.asarray(targets[train])
  val_images, val_targets = images[validation], targets[validation]
  history: dict[str, Any] = {"step": [], "train_loss": [], "val_loss": []}
  state = {"step": jnp.zeros((), jnp.int32), "key": jax.random.key_data(jax.random.key(seed)), "params": params,
           "opt_state": tx.init(params), "best": host_copy(params)}

  last_loss: list[Any] = [None]       # the train loss of the last call, for its validation line

  def train_call(state, images, targets):
    # The key is split before each pass's scan, as the fit has always done.
    key, sub = jax.random.split(jax.random.wrap_key_data(state["key"]))
    params, opt_state, loss = _train_steps(graphdef, state["params"], state["opt_state"], rest, images, targets,
                                           sub, tx=tx, steps=eval_every, batch_size=batch_size)
    last_loss[0] = loss
    return ({"step": state["step"] + eval_every, "key": jax.random.key_data(key), "params": params,
             "opt_state": opt_state}, {"loss": loss})

  def validate(done: int, state):
    loss = float(last_loss[0])
    val_loss = float(np.mean(np.square(_predict_all(graphdef, state["params"], rest, val_images) - val_targets)))
    improved = val_loss < min(history["val_loss"], default=np.inf)
    history["step"].append(done)
    history["train_loss"].append(loss)
    history["val_loss"].append(val_loss)
    if progress:
      print(f"score predictor: step {done}/{steps}, train {loss:.4f}, validation {val_loss:.4f}",
            file=sys.stderr, flush=True)
    return {**state, "best": host_copy(state["params"])} if improved else None

  def resumed(meta):
    history.update({k: list(meta["history"][k]) for k in ("step", "train_loss", "val_loss")})

  digest = arrays_sha256([images, targets, np.asarray(train), np.asarray(validation)])
  loop_config = FitLoopConfig(steps=steps, steps_per_call=eval_every, checkpoint_every=eval_every,
                              batch_size=batch_size)
  with tempfile.TemporaryDirectory(prefix="jaxcxr-score-predictor-") as scratch:
    loop = run_training_loop(
        name="score predictor", config=loop_config, state=state, train_call=train_call,
        args=(train_images, train_targets), out_dir=pathlib.Path(out_dir if out_dir is not None else scratch),
        resume=resume, progress=False, postfix=lambda m, _: {"loss": f"{float(np.mean(m['loss'])):.4f}"},
        run_metadata={"predictor": type(config).__name__, "predictor_config": dataclasses.asdict(config), "seed": seed,
                      "learning_rate": learning_rate, "weight_decay": weight_decay, "data_sha256": digest},
        checkpoint_metadata=lambda _: {"history": history}, on_resume=resumed, on_call=validate,
        host_entries=("best",))
  best_params, best_step, best_loss = loop.state["best"], 0, np.inf
  for done, val_loss in zip(history["step"], history["val_loss"]):   # the first pass of the lowest loss
    if val_loss < best_loss:
      best_step, best_loss = done, val_loss
  model = nnx.merge(graphdef, best_params, rest)
  errors = (_predict_all(graphdef, best_params, rest, val_images) - val_targets) * std          # measure units
  model.mean[...] = jnp.asarray(mean, jnp.float32)
  model.std[...] = jnp.asarray(std, jnp.float32)
  model.residual_std[...] = jnp.asarray(errors.std(axis=0), jnp.float32)
  variance = y[validation].var(axis=0)
  history.update(best_step=best_step, seconds=loop.previous_seconds + loop.seconds,
                 val_r2={m: (float(1.0 - np.mean(np.square(errors[:, i])) / variance[i]) if variance[i] > 0
                             else float("nan")) for i, m in enumerate(config.measures)})
  return model, history
