"""Conditional GAN training: a pure jitted multi-step function and a thin loop.

Losses (per step, one D update then one G update):

* D: non-saturating logistic loss, softplus(-D(A(x), c)) + softplus(D(A(G(z, c)), c)),
  with A the differentiable augmentation (DiffAugment, Zhao et al. 2020:
  translation, cutout, brightness/contrast) applied to reals and fakes alike,
  plus the R1 penalty gamma/2 * E||grad_x D(A(x), c)||^2 on augmented reals
  (Mescheder et al. 2018), lazily every `r1_every` steps with weight
  `r1_every * gamma` (StyleGAN2).
* G: non-saturating, softplus(-D(A(G(z, c')), c')), with c' the conditions of
  another random batch of real images (the data's joint condition distribution).
* EMA of the generator weights with decay min(ema_decay, (1+t)/(10+t)).

The whole data set (uint8, resized once on the host) lives on the device; step t
draws its batch indices, latents and augmentation from
`jax.random.fold_in(key, t)` inside the jitted function. So the trajectory is a
pure function of (config, data, seed, step), and resuming from a checkpoint is
exact. `steps_per_call` steps run in one `lax.scan`; the train state (a plain dict
of arrays, see `init_train_state`) is donated. The loop (checkpoints, resume, tqdm,
metrics.jsonl) is `loop.run_training_loop`, shared by all trainers.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr import data as data_lib
from jaxcxr import plots
from jaxcxr.config import GanTrainConfig
from jaxcxr.models.condition import make_condition
from jaxcxr.models.discriminator import Discriminator, load_discriminator
from jaxcxr.models.generator import Generator, load_generator, sample_images
from jaxcxr.models.graph import abstract_graphdef
from jaxcxr.program import Program
from jaxcxr.provenance import provenance
from jaxcxr.train.loop import (KEY_IMPL, compile_steps, copy_weights, data_metadata, device_name, jit_init,
                               loop_summary, run_training_loop, without_loop_fields)

__all__ = [
    "diff_augment",
    "init_train_state",
    "load_discriminator",
    "load_generator",
    "make_train_step",
    "prepare_data",
    "sample_images",
    "train_gan",
    "train_step",
]

TrainState = dict[str, Any]


# ----------------------------------------------------------------------------- augmentation


def diff_augment(key: jax.Array, images: jax.Array, config: GanTrainConfig) -> jax.Array:
  """DiffAugment for single-channel images; differentiable in `images`.

  "color": brightness + U(-0.5, 0.5) and contrast about the image mean x U(0.5, 1.5);
  "translation": integer shift up to `diffaug_translation` of the side, -1 (black) fill;
  "cutout": a square of side `diffaug_cutout` of the side set to 0, random centre.
  Each policy draws independent values per image.

  Args:
    key: PRNG key.
    images: float32 (B, H, W, 1), NHWC, in [-1, 1].
    config: which policies and their sizes (static).

  Returns:
    float32 (B, H, W, 1).
  """
  b, h, w, _ = images.shape
  k_bri, k_con, k_ty, k_tx, k_cy, k_cx = jax.random.split(key, 6)
  x = images
  if "color" in config.diffaug:
    x = x + (jax.random.uniform(k_bri, (b, 1, 1, 1)) - 0.5)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * (jax.random.uniform(k_con, (b, 1, 1, 1)) + 0.5) + mean
  if "translation" in config.diffaug:
    sy, sx = int(h * config.diffaug_translation + 0.5), int(w * config.diffaug_translation + 0.5)
    ty = jax.random.randint(k_ty, (b, 1), -sy, sy + 1)
    tx = jax.random.randint(k_tx, (b, 1), -sx, sx + 1)
    src_y = jnp.arange(h)[None, :] - ty                    # (B, H)
    src_x = jnp.arange(w)[None, :] - tx                    # (B, W)
    x = jnp.take_along_axis(x, jnp.clip(src_y, 0, h - 1)[:, :, None, None], axis=1)
    x = jnp.take_along_axis(x, jnp.clip(src_x, 0, w - 1)[:, None, :, None], axis=2)
    inside = (((src_y >= 0) & (src_y < h))[:, :, None, None] & ((src_x >= 0) & (src_x < w))[:, None, :, None])
    x = jnp.where(inside, x, -1.0)
  if "cutout" in config.diffaug:
    ch, cw = int(h * config.diffaug_cutout + 0.5), int(w * config.diffaug_cutout + 0.5)
    cy = jax.random.randint(k_cy, (b, 1), 0, h + (1 - ch % 2))
    cx = jax.random.randint(k_cx, (b, 1), 0, w + (1 - cw % 2))
    in_y = jnp.abs(jnp.arange(h)[None, :] - cy) < (ch + 1) // 2   # (B, H)
    in_x = jnp.abs(jnp.arange(w)[None, :] - cx) < (cw + 1) // 2   # (B, W)
    x = jnp.where(in_y[:, :, None, None] & in_x[:, None, :, None], 0.0, x)
  return x


# ----------------------------------------------------------------------------- state


def _maybe_augment(key: jax.Array, images: jax.Array, p: jax.Array, config: GanTrainConfig) -> jax.Array:
  """DiffAugment applied to each image with probability p (float32 scalar); the rest pass unchanged."""
  k_aug, k_pick = jax.random.split(key)
  augmented = diff_augment(k_aug, images, config)
  pick = jax.random.uniform(k_pick, (images.shape[0], 1, 1, 1)) < p
  return jnp.where(pick, augmented, images)


def _train_model_configs(config: GanTrainConfig):
  """Model configs with the training compute dtype (same parameter tree as the stored ones)."""
  return (dataclasses.replace(config.generator, dtype=config.compute_dtype),
          dataclasses.replace(config.discriminator, dtype=config.compute_dtype))


def _optimizers(config: GanTrainConfig) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  adam = lambda lr: optax.adam(lr, b1=config.adam_b1, b2=config.adam_b2)
  return adam(config.g_learning_rate), adam(config.d_learning_rate)


def init_train_state(config: GanTrainConfig, seed: int = 0) -> TrainState:
  """Fresh training state: a plain dict of arrays (checkpointable, donatable).

  Keys: "step" int32 (); "key" uint32 raw key data of the training key; "g",
  "g_ema" generator params; "d" discriminator params; "d_stats" its spectral-norm
  vectors; "g_opt", "d_opt" Adam states; "ada_p" float32 () augmentation probability.
  Params are pure dicts (`nnx.to_pure_dict`). Built in one jitted call (eager
  initialisation dispatches, and on a CPU compiles, every initialiser separately).
  """
  return jit_init(_init, without_loop_fields(config), seed)


def _init(root: jax.Array, config: GanTrainConfig) -> TrainState:
  generator = Generator(config.generator, rngs=nnx.Rngs(jax.random.fold_in(root, 1)))
  discriminator = Discriminator(config.discriminator, rngs=nnx.Rngs(jax.random.fold_in(root, 2)))
  g_params = nnx.to_pure_dict(nnx.state(generator, nnx.Param))
  d_params = nnx.to_pure_dict(nnx.state(discriminator, nnx.Param))
  d_stats = nnx.to_pure_dict(nnx.state(discriminator, nnx.BatchStat))
  g_tx, d_tx = _optimizers(config)
  return {
      "step": jnp.zeros((), jnp.int32),
      "key": jax.random.key_data(jax.random.fold_in(root, 3)),
      "g": g_params,
      "g_ema": jax.tree.map(jnp.copy, g_params),
      "d": d_params,
      "d_stats": d_stats,
      "g_opt": g_tx.init(g_params),
      "d_opt": d_tx.init(d_params),
      "ada_p": jnp.zeros((), jnp.float32) if config.ada_target is not None else jnp.ones((), jnp.float32),
  }


def _graphdefs(config: GanTrainConfig):
  """Graph definitions of G, D in training mode and D in inference mode, at the training compute dtype."""
  g_cfg, d_cfg = _train_model_configs(config)
  return (abstract_graphdef(Generator, g_cfg), abstract_graphdef(Discriminator, d_cfg),
          abstract_graphdef(Discriminator, d_cfg, use_running_average=True))


# ----------------------------------------------------------------------------- step


def train_step(state: TrainState, data: dict[str, jax.Array], config: GanTrainConfig
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One D update and one G update (pure; `make_train_step` jits and scans it).

  Args:
    state: from `init_train_state` (or a restored checkpoint).
    data: {"images": uint8 (N, R, R), "cond": float32 (N, len(conditions))}, on device
      (from `prepare_data`).
    config: the training config (static).

  Returns:
    (new state, metrics): scalars "d_loss" (logistic part), "g_loss", "r1" (the
    unweighted penalty; 0 on steps without R1), "d_real", "d_fake" (mean logits), "ada_p"
    (augmentation probability of the step).
  """
  g_graphdef, d_train, d_eval = _graphdefs(config)
  g_tx, d_tx = _optimizers(config)
  b = config.batch_size
  step = state["step"]
  key = jax.random.fold_in(jax.random.wrap_key_data(state["key"], impl=KEY_IMPL), step)
  k_real, k_z, k_aug_real, k_aug_fake, k_gcond, k_gz, k_gaug = jax.random.split(key, 7)
  n = data["images"].shape[0]

  idx = jax.random.randint(k_real, (b,), 0, n)
  reals = (data["images"][idx].astype(jnp.float32) / 127.5 - 1.0)[..., None]   # (B, R, R, 1)
  cond = data["cond"][idx]
  latent_dim = config.generator.latent_dim
  fakes = jax.lax.stop_gradient(nnx.merge(g_graphdef, state["g"])(jax.random.normal(k_z, (b, latent_dim)), cond))
  ada_p = state["ada_p"]
  reals_aug = _maybe_augment(k_aug_real, reals, ada_p, config)
  fakes_aug = _maybe_augment(k_aug_fake, fakes, ada_p, config)

  def r1_penalty(d_params, d_stats):
    discriminator = nnx.merge(d_eval, d_params, d_stats)
    grads = jax.grad(lambda x: discriminator(x, cond).sum())(reals_aug)
    return jnp.square(grads).sum(axis=(1, 2, 3)).mean()

  use_r1 = config.r1_gamma > 0
  lazy = config.r1_every > 1
  do_r1 = (step % config.r1_every) == 0

  d_inputs, d_cond = jnp.concatenate([reals_aug, fakes_aug]), jnp.concatenate([cond, cond])
  use_cr = config.cr_weight > 0
  if use_cr:   # bCR: the same images through `cr_augment`, every image, in the same call of D
    cr_config = dataclasses.replace(config, diffaug=config.cr_augment)
    d_inputs = jnp.concatenate([d_inputs, diff_augment(jax.random.fold_in(key, 7), d_inputs, cr_config)])
    d_cond = jnp.concatenate([d_cond, d_cond])

  def d_loss_fn(d_params):
    discriminator = nnx.merge(d_train, d_params, state["d_stats"])
    logits = discriminator(d_inputs, d_cond)
    d_stats = nnx.to_pure_dict(nnx.state(discriminator, nnx.BatchStat))
    d_real, d_fake = logits[:b], logits[b:2 * b]
    loss = jax.nn.softplus(-d_real).mean() + jax.nn.softplus(d_fake).mean()
    r1 = jnp.zeros((), jnp.float32)
    if use_r1:
      r1 = (jax.lax.cond(do_r1, r1_penalty, lambda *_: jnp.zeros((), jnp.float32), d_params, d_stats)
            if lazy else r1_penalty(d_params, d_stats))
    cr = jnp.square(logits[2 * b:] - logits[:2 * b]).mean() if use_cr else jnp.zeros((), jnp.float32)
    total = loss + (0.5 * config.r1_gamma * config.r1_every) * r1 + config.cr_weight * cr
    return total, (d_stats, loss, r1, cr, d_real.mean(), d_fake.mean(), jnp.sign(d_real).mean())

  (_, (d_stats, d_loss, r1, cr, d_real, d_fake, d_real_sign)), d_grads = jax.value_and_grad(
      d_loss_fn, has_aux=True)(state["d"])
  # optax's Adam computes decay**count with an int32 count: fine under standard promotion, an
  # error under the strict promotion our tests use. Promotion is a trace-time setting.
  with jax.numpy_dtype_promotion("standard"):
    d_updates, d_opt = d_tx.update(d_grads, state["d_opt"], state["d"])
  d_params = optax.apply_updates(state["d"], d_updates)

  gcond = data["cond"][jax.random.randint(k_gcond, (b,), 0, n)]
  gz = jax.random.normal(k_gz, (b, latent_dim))
  discriminator = nnx.merge(d_eval, d_params, d_stats)

  def g_loss_fn(g_params):
    images = nnx.merge(g_graphdef, g_params)(gz, gcond)
    return jax.nn.softplus(-discriminator(_maybe_augment(k_gaug, images, ada_p, config), gcond)).mean()

  g_loss, g_grads = jax.value_and_grad(g_loss_fn)(state["g"])
  with jax.numpy_dtype_promotion("standard"):
    g_updates, g_opt = g_tx.update(g_grads, state["g_opt"], state["g"])
  g_params = optax.apply_updates(state["g"], g_updates)

  t = step.astype(jnp.float32)
  beta = jnp.minimum(config.ema_decay, (1.0 + t) / (10.0 + t))
  g_ema = jax.tree.map(lambda e, p: beta * e + (1.0 - beta) * p, state["g_ema"], g_params)

  new_state = {"step": step + 1, "key": state["key"], "g": g_params, "g_ema": g_ema, "d": d_params,
               "d_stats": d_stats, "g_opt": g_opt, "d_opt": d_opt, "ada_p": ada_p}
  if config.ada_target is not None:  # ADA: r_t = E[sign D(real)] above the target means D overfits
    adjust = jnp.sign(d_real_sign - config.ada_target) * (b / config.ada_images)
    new_state["ada_p"] = jnp.clip(ada_p + adjust, 0.0, 1.0)
  metrics = {"d_loss": d_loss, "g_loss": g_loss, "r1": r1, "d_real": d_real, "d_fake": d_fake, "ada_p": ada_p}
  if use_cr:
    metrics["cr"] = cr
  return new_state, metrics


def make_train_step(config: GanTrainConfig) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Jitted `steps_per_call` training steps in one `lax.scan`, train state donated.

  The result is cached per config (ignoring loop-only fields: steps, sampling,
  checkpointing), so a resumed run in the same process does not recompile.

  Returns:
    `fn(state, data) -> (state, metrics)`, metrics stacked over the steps: each (steps_per_call,).
  """
  return compile_steps(train_step, config.steps_per_call, static=(without_loop_fields(config),))



def train_step_program(config: GanTrainConfig, data: dict, *, seed: int = 0) -> Program:
  """The compiled training call `train_gan` makes, and its arguments on a fresh state.

  Args:
    config: the training config.
    data: the training arrays the step draws its batches from, {"images": uint8 (N, R, R),
      "cond": float32 (N, C)} as from `prepare_data` (placed on the device here, as the
      trainer places them).
    seed: seed of the fresh state (`init_train_state`).

  Returns:
    `Program(fn, args, donated=(0,))`: `fn(state, data)` = `make_train_step(config)`, which runs
    `config.steps_per_call` steps and returns (state, metrics stacked over the steps). The
    state (position 0) is donated: call again with `fresh_args()`.
  """
  return Program(make_train_step(config), (init_train_state(config, seed), jax.device_put(data)), donated=(0,))


# ----------------------------------------------------------------------------- data


def prepare_data(dataset: data_lib.CXRDataset, config: GanTrainConfig) -> tuple[dict[str, np.ndarray], dict]:
  """Checks a dataset for GAN training and builds the host arrays the step needs.

  Keeps the normal images only when `config.normal_only`; drops images whose
  sex, age (or label, when it is a condition) is unknown; resizes the rest to
  the training resolution with PIL LANCZOS.

  Returns:
    ({"images": uint8 (N, R, R), "cond": float32 (N, len(conditions))}, info dict with
    "n_images", "n_dropped", "n_per_label").

  Raises:
    jaxcxr.data.DataError: empty dataset, no usable image, or a single label when
      "label" is a condition (the generator could not learn what the label means).
  """
  source = dataset.source or "dataset"
  if len(dataset) == 0:
    raise data_lib.DataError(f"{source}: no images to train the GAN on")
  conditions = config.conditions
  if config.normal_only:
    dataset = dataset.select(label=0)
    if len(dataset) == 0:
      raise data_lib.DataError(f"{source}: normal_only=True but no image has label 0 (normal)")
  known = np.isin(dataset.sex, ["M", "F"]) & (dataset.age >= 0)
  if "label" in conditions:
    known &= np.isin(dataset.label, [0, 1])
  n_dropped = int((~known).sum())
  dataset = dataset.subset(known)
  if len(dataset) == 0:
    raise data_lib.DataError(f"{source}: no image has known sex and age"
                             f"{' and label' if 'label' in conditions else ''}; the conditional GAN needs them")
  if "label" in conditions:
    labels = np.unique(dataset.label)
    if len(labels) < 2:
      raise data_lib.DataError(
          f"{source}: every image has label {int(labels[0])}; a GAN conditioned on the label needs both "
          "normal (0) and abnormal (1) images (for a normal-only GAN use conditions=('sex', 'age') and "
          "normal_only=True)")
  images = data_lib.resize_uint8(dataset.images, config.resolution)
  cond = make_condition(dataset.sex, dataset.age, dataset.label, conditions=conditions)
  info = {"n_images": len(dataset), "n_dropped": n_dropped,
          "n_per_label": {int(v): int((dataset.label == v).sum()) for v in np.unique(dataset.label)}}
  return {"images": images, "cond": cond}, info


# ----------------------------------------------------------------------------- loop


def _sample_grid(config: GanTrainConfig, g_ema, key: jax.Array) -> tuple[np.ndarray, list[str]]:
  generator = nnx.merge(abstract_graphdef(Generator, config.generator), g_ema)
  n = config.samples_per_group
  images = [sample_images(generator, key, n, group, label=0, batch_size=n) for group in data_lib.GROUPS]
  labels = [group if i == 0 else "" for group in data_lib.GROUPS for i in range(n)]
  return np.concatenate(images), labels


def warm_start(state: TrainState, directory: str | os.PathLike, conditions: tuple[str, ...] | None = None
               ) -> TrainState:
  """`state` with the weights of a trained GAN folder (`generator/`, `discriminator/`): G, its EMA and D.

  The folder may hold a cascade (its upsampler's weights are left out: this trainer trains
  the low-resolution blocks). The optimiser states, step and ADA probability stay fresh, so
  a warm-started run is a new run that begins from those weights.

  A GAN conditioned on the label can start a normal-only one (`conditions` without "label"):
  the label's row of G's condition embedding and of D's projection is dropped. A normal
  image has label 0, so that row added nothing to G's normal images: the warm-started G
  draws exactly the normal images of the saved one (D's spectral norm is taken over one
  row fewer, and its training adapts it).

  Args:
    conditions: the new run's conditions (None: the saved GAN's).

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing or damaged checkpoint.
    ValueError: the saved weights do not have the shapes of this config's models, or the
      conditions differ other than by a dropped label.
  """
  directory = pathlib.Path(directory)
  g_model = load_generator(directory / "generator")
  g = nnx.to_pure_dict(nnx.state(g_model, nnx.Param))
  g.pop("upsampler", None)
  d_model = load_discriminator(directory / "discriminator")
  d = nnx.to_pure_dict(nnx.state(d_model, nnx.Param))
  d_stats = nnx.to_pure_dict(nnx.state(d_model, nnx.BatchStat))
  saved = tuple(g_model.config.conditions)
  if conditions is not None and tuple(conditions) != saved:
    if "label" not in saved or tuple(c for c in saved if c != "label") != tuple(conditions):
      raise ValueError(f"{directory}: a GAN conditioned on {saved} can start one conditioned on {tuple(conditions)} "
                       "only by dropping 'label' (a normal-only run)")
    keep = np.array([i for i, c in enumerate(saved) if c != "label"])
    g["cond_embed"]["kernel"] = np.asarray(g["cond_embed"]["kernel"])[keep]
    d["embed"]["kernel"] = np.asarray(d["embed"]["kernel"])[keep]
  return {**state, "g": copy_weights(g, state["g"], f"{directory}: the saved generator"),
          "g_ema": copy_weights(g, state["g_ema"], f"{directory}: the saved generator"),
          "d": copy_weights(d, state["d"], f"{directory}: the saved discriminator"),
          "d_stats": copy_weights(d_stats, state["d_stats"], f"{directory}: the saved discriminator statistics")}


def train_gan(dataset: data_lib.CXRDataset, config: GanTrainConfig, out_dir: str | os.PathLike, *,
              resume: bool = False, seed: int = 0, progress: bool = True,
              init_from: str | os.PathLike | None = None) -> dict[str, Any]:
  """Trains the conditional GAN, with progress, sample grids, checkpoints and resume.

  Writes under `out_dir`: `checkpoints/STEP/` (training state every
  `checkpoint_every` steps and at the end), `metrics.jsonl` (losses per call),
  `samples/step_XXXXXX.png` (EMA generator, six groups x `samples_per_group`, normal
  label, fixed latents) every `sample_every` steps, and at the end the inference
  checkpoints `generator/` (EMA weights) and `discriminator/` (`checkpoints.save_model`).
  A run killed at any moment continues from its last checkpoint with `resume=True`, and
  the result is the same as an uninterrupted run (`loop.run_training_loop`).

  Args:
    dataset: training images with sex, age and label (see `prepare_data`).
    config: the training config, e.g. `jaxcxr.config.gan_64_cpu()`.
    out_dir: output folder.
    resume: continue from the latest checkpoint in `out_dir` (start afresh if none).
      The checkpoint must be of this run: the same seed, data and config (loop fields aside).
    seed: seed of the initial weights and of the training randomness.
    progress: show a tqdm bar on stderr.
    init_from: a trained GAN folder whose weights start the run (`warm_start`); a resumed
      run continues from its own checkpoint instead, and does not read the folder (it may be
      gone), though the run still records it and needs the same `init_from` to resume.

  Returns:
    {"steps", "start_step", "seconds", "compile_seconds", "images_per_second",
    "seconds_per_step", "final" (losses averaged over the last call; "r1" over its steps
    with the penalty), "n_images", "n_dropped", "out_dir", "generator", "discriminator"}.

  Raises:
    jaxcxr.data.DataError: unusable data (before any compilation).
    FileExistsError: `out_dir` holds checkpoints and `resume` is False.
  """
  host_data, info = prepare_data(dataset, config)
  out_dir = pathlib.Path(out_dir)
  state = init_train_state(config, seed)
  if init_from is not None:
    with checkpoints.TrainCheckpointer(out_dir / "checkpoints") as ckpt:
      resuming = resume and ckpt.latest_step() is not None
    if not resuming:   # a resumed run reads only its own checkpoint
      state = warm_start(state, init_from, config.generator.conditions)
  sample_key = jax.random.key(0)  # the same latents in every grid of every run

  def write_samples(step: int, state: TrainState):
    if config.sample_every and step % config.sample_every == 0:
      images, labels = _sample_grid(config, state["g_ema"], sample_key)
      plots.save_image_grid(images, out_dir / "samples" / f"step_{step:06d}.png", nrow=config.samples_per_group,
                            labels=labels)

  loop = run_training_loop(
      name="GAN", config=config, state=state, train_call=make_train_step(config), args=(jax.device_put(host_data),),
      out_dir=out_dir, resume=resume, progress=progress,
      run_metadata={"seed": seed, "n_images": info["n_images"],
                    "data_sha256": data_metadata(dataset).get("data_sha256"),
                    **({"init_from": str(init_from)} if init_from is not None else {})},
      on_call=write_samples,
      postfix=lambda m, _: {"d": f"{m['d_loss'][-1]:.3f}", "g": f"{m['g_loss'][-1]:.3f}",
                            "p": f"{m['ada_p'][-1]:.2f}"})

  step, state, final = loop.step, loop.state, dict(loop.final)
  # R1 is 0 on the steps without the lazy penalty: its mean over the steps that computed it.
  r1_steps = [s for s in range(step - config.steps_per_call, step) if s % config.r1_every == 0]
  if loop.last_metrics and r1_steps:
    final["r1"] = float(np.mean([loop.last_metrics["r1"][s - step + config.steps_per_call] for s in r1_steps]))
  metadata = {
      "steps": step,
      "train_seconds": loop.previous_seconds + loop.seconds,
      "device": device_name(),
      "seed": seed,
      "n_images": info["n_images"],
      "final_losses": final,
      **({"init_from": str(init_from)} if init_from is not None else {}),
      **data_metadata(dataset),
      "provenance": provenance(dataset.source, {"seed": seed}),
  }
  g_ema = nnx.merge(abstract_graphdef(Generator, config.generator), state["g_ema"])
  discriminator = nnx.merge(abstract_graphdef(Discriminator, config.discriminator), state["d"], state["d_stats"])
  g_path = checkpoints.save_model(out_dir / "generator", g_ema, config.generator,
                                  metadata={**metadata, "weights": "ema"}, overwrite=True)
  d_path = checkpoints.save_model(out_dir / "discriminator", discriminator, config.discriminator,
                                  metadata=metadata, overwrite=True)
  return {
      **loop_summary(loop, config),
      "final": final,
      "n_images": info["n_images"],
      "n_dropped": info["n_dropped"],
      "out_dir": str(out_dir),
      "generator": str(g_path),
      "discriminator": str(d_path),
      "provenance": metadata["provenance"],
  }
