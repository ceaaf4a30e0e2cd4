"""HealthyGAN training (Siddiquee et al. 2022): translate any radiograph to a healthy-looking one.

Two training sets, both from the images given (pass the standard split's train
patients): "mixed" = every image, labels NOT used (the original's unannotated
mix of healthy and diseased images), "normal" = the images with label 0 (the
original's known-healthy set). The translator G maps x to a content image c and a
mask m, and its output is out = c * m + x * (1 - m) (`models.healthygan.blend`).
Per step (the original's solver.py, `train`), with x_a a mixed batch, x_b a normal one:

* `n_critic` critic updates (WGAN-GP), each on fresh batches:
  L_D = -mean D(x_b) + mean D(out(x_a)) + gp_weight * mean_i (||grad_x D(x_hat_i)||_2 - 1)^2,
  x_hat = alpha x_b + (1 - alpha) out(x_a), alpha ~ U(0, 1) per image, D(x) the mean of
  the critic's patch scores of image x.
* one translator update on the last critic step's batches:
  L_G = -mean D(out(x_a))                       adversarial, mixed images
        - mean D(out(x_b))                      adversarial, normal images
        + id_weight * mean |x_b - c(x_b)|       identity: a normal image's content is itself
        + rec_weight * mean |(x_a - c(x_a)) * (1 - m(x_a))|
                                                "reconstruction": outside its mask the content
                                                equals the input (the original's
                                                |x_a - (x_a m + c (1 - m))|, the same term)
        + mask_weight * (R(m(x_a)) + R(m(x_b))) / 2,
  R(m) = mask_small_weight * mean(m)^2 + mask_binary_weight * (mean 1 / (|m - 1/2| + 0.01) - 1 / 0.51)
  (the original's `mask_small_criterion_square` and `mask_zero_one_criterion`: a small mask,
  pushed towards 0 or 1).
* Adam (beta1 0.5, beta2 0.999, 1e-4 for both by default; `config.healthygan_64_cpu` trains its
  smaller critic at 4e-4, see there), learning rates constant and then decaying linearly
  to 0 over the last (1 - lr_decay_start) of the steps (the original: the last 100k of
  200k iterations).

Deviations from the original: the gradient penalty acts on D(x), the per-image mean of
the patch scores that the loss uses; the original penalises the gradient of their sum
(autograd.grad with ones over the patch map), which leaves the loss's critic only
1/P-Lipschitz for P patches (P = 4 with a 2x2 map, as the original and
`healthygan_64_cpu`; 16 with a 4x4 map). Measured on the fixture radiographs (tiny
critic, 300 Adam steps at 1e-3): with the sum, the critic could not tell clean images
from the same images plus noise of std 0.3 (mean D gap -0.08); with the mean, the gap
was 6.7; and on the real data the sum version rated the translations above the real
normal images for most of a 200-step run. A step here is n_critic critic updates + one
translator update (the original counts critic updates as iterations: its 200k iterations
are 100k translator updates); light augmentation (small rotations, shifts, zoom,
intensity; `data.augment`) instead of the original's random horizontal flip (a flip
moves the heart to the other side); the networks' differences are listed in
`models.healthygan`. The anomaly score is `anomaly.healthygan_scores`: mean |x - out|.

Loop and resume as every trainer: `loop.run_training_loop`.
"""

from __future__ import annotations

import dataclasses
import functools
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
from jaxcxr import provenance as provenance_lib
from jaxcxr.config import HealthyganTrainConfig
from jaxcxr.models.graph import abstract_graphdef
from jaxcxr.models.healthygan import Critic, Translator, blend
from jaxcxr.train.fanogan import training_batch
from jaxcxr.train.loop import (KEY_IMPL, compile_steps, data_metadata, device_name, jit_init, loop_summary,
                               run_training_loop, without_loop_fields)

TrainState = dict[str, Any]


# ----------------------------------------------------------------------------- state and step


def _optimizers(config: HealthyganTrainConfig):
  adam = lambda lr: optax.adam(lr, b1=config.adam_b1, b2=config.adam_b2)
  return adam(config.translator_learning_rate), adam(config.critic_learning_rate)


def init_train_state(config: HealthyganTrainConfig, seed: int = 0) -> TrainState:
  """Fresh training state: {"step", "key" (raw rbg key data), "t", "c" (translator and critic
  params, pure dicts), "t_opt", "c_opt" (Adam states)}, built in one jitted call."""
  return jit_init(_init, without_loop_fields(config), seed)


def _init(root: jax.Array, config: HealthyganTrainConfig) -> TrainState:
  translator = Translator(config.translator, rngs=nnx.Rngs(jax.random.fold_in(root, 1)))
  critic = Critic(config.critic, rngs=nnx.Rngs(jax.random.fold_in(root, 2)))
  t_params = nnx.to_pure_dict(nnx.state(translator, nnx.Param))
  c_params = nnx.to_pure_dict(nnx.state(critic, nnx.Param))
  t_tx, c_tx = _optimizers(config)
  return {"step": jnp.zeros((), jnp.int32), "key": jax.random.key_data(jax.random.fold_in(root, 3)),
          "t": t_params, "c": c_params, "t_opt": t_tx.init(t_params), "c_opt": c_tx.init(c_params)}


def _graphdefs(config: HealthyganTrainConfig):
  """Graph definitions of G and D (at `dtype`)."""
  dtype = config.compute_dtype
  return (abstract_graphdef(Translator, dataclasses.replace(config.translator, dtype=dtype)),
          abstract_graphdef(Critic, dataclasses.replace(config.critic, dtype=dtype)))


def mask_regularizer(mask: jax.Array, small_weight, binary_weight) -> jax.Array:
  """The original's mask loss: small_weight * mean(m)^2 + binary_weight * (mean 1/(|m - 1/2| + 0.01) - 1/0.51).

  Args:
    mask: float32 (B, H, W, 1) in [0, 1].

  Returns:
    float32 scalar; the binary term is 0 for a mask of exact 0s and 1s.
  """
  small = jnp.square(mask.mean())
  binary = (1.0 / (jnp.abs(mask - 0.5) + 0.01)).mean() - 1.0 / 0.51
  return small_weight * small + binary_weight * binary


def _lr_factor(step: jax.Array, total_steps: jax.Array, decay_start: float) -> jax.Array:
  """1 until decay_start * total, then linear to 0 at total (float32 scalar)."""
  start = decay_start * total_steps.astype(jnp.float32)
  span = jnp.maximum(total_steps.astype(jnp.float32) - start, 1.0)
  return jnp.clip((total_steps.astype(jnp.float32) - step.astype(jnp.float32)) / span, 0.0, 1.0)


def _scaled_update(tx, grads, opt_state, params, factor):
  # Adam's update is proportional to its learning rate, so scaling it is the scheduled rate.
  with jax.numpy_dtype_promotion("standard"):   # optax mixes a Python float with an int32 count
    updates, opt_state = tx.update(grads, opt_state, params)
  updates = jax.tree.map(lambda u: u * factor, updates)
  return optax.apply_updates(params, updates), opt_state


def train_step(state: TrainState, data: dict[str, jax.Array], total_steps: jax.Array,
               config: HealthyganTrainConfig) -> tuple[TrainState, dict[str, jax.Array]]:
  """n_critic critic updates then one translator update (pure; `make_train_step` jits and scans it).

  Args:
    state: from `init_train_state` (or a restored checkpoint).
    data: {"mixed": uint8 (Nm, R, R), "normal": uint8 (Nn, R, R)} on device.
    total_steps: int32 scalar, the run's total steps (for the learning-rate decay; traced, so
      runs of any length share one compile).
    config: static.

  Returns:
    (new state, metrics): scalars "critic_loss" (-D(real) + D(fake), last critic update),
    "gp", "d_real", "d_fake", "adv", "adv_id", "identity", "rec", "mask_loss", "mask_mean"
    (mean m on mixed images), "lr_factor".
  """
  t_graphdef, c_graphdef = _graphdefs(config)
  t_tx, c_tx = _optimizers(config)
  b = config.batch_size
  step = state["step"]
  key = jax.random.fold_in(jax.random.wrap_key_data(state["key"], impl=KEY_IMPL), step)
  factor = _lr_factor(step, total_steps, config.lr_decay_start)
  translator = nnx.merge(t_graphdef, state["t"])

  def critic_update(carry, k):
    c_params, c_opt = carry
    k_a, k_b, k_alpha = jax.random.split(k, 3)
    xa, _ = training_batch(k_a, data, b, config.augment, "mixed")
    xb, _ = training_batch(k_b, data, b, config.augment, "normal")
    fake = jax.lax.stop_gradient(translator.translate(xa))
    alpha = jax.random.uniform(k_alpha, (b, 1, 1, 1))
    x_hat = alpha * xb + (1.0 - alpha) * fake

    def loss_fn(params):
      critic = nnx.merge(c_graphdef, params)
      value = lambda x: critic(x).mean(axis=(1, 2))                           # (B,): D(x), patch mean
      d_real, d_fake = value(xb).mean(), value(fake).mean()
      # The penalty constrains the same scalar critic the loss uses (see the module docstring).
      grads = jax.grad(lambda x: value(x).sum())(x_hat)                       # (B, R, R, 1)
      norm = jnp.sqrt(jnp.square(grads).sum(axis=(1, 2, 3)) + 1e-12)
      gp = jnp.square(norm - 1.0).mean()
      wasserstein = d_fake - d_real
      return wasserstein + config.gp_weight * gp, (wasserstein, gp, d_real, d_fake)

    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(c_params)
    c_params, c_opt = _scaled_update(c_tx, grads, c_opt, c_params, factor)
    return (c_params, c_opt), (aux, xa, xb)

  (c_params, c_opt), ((wasserstein, gp, d_real, d_fake), xas, xbs) = jax.lax.scan(
      critic_update, (state["c"], state["c_opt"]), jax.random.split(key, config.n_critic))
  xa, xb = xas[-1], xbs[-1]                                 # the last critic step's batches
  critic = nnx.merge(c_graphdef, c_params)

  def t_loss_fn(params):
    g = nnx.merge(t_graphdef, params)
    ca, ma = g(xa)
    cb, mb = g(xb)
    adv = -critic(blend(ca, ma, xa)).mean()
    adv_id = -critic(blend(cb, mb, xb)).mean()
    identity = jnp.abs(xb - cb).mean()
    rec = jnp.abs((xa - ca) * (1.0 - ma)).mean()
    mask_loss = 0.5 * (mask_regularizer(ma, config.mask_small_weight, config.mask_binary_weight)
                       + mask_regularizer(mb, config.mask_small_weight, config.mask_binary_weight))
    total = (adv + adv_id + config.id_weight * identity + config.rec_weight * rec
             + config.mask_weight * mask_loss)
    return total, {"adv": adv, "adv_id": adv_id, "identity": identity, "rec": rec, "mask_loss": mask_loss,
                   "mask_mean": ma.mean()}

  (_, t_metrics), t_grads = jax.value_and_grad(t_loss_fn, has_aux=True)(state["t"])
  t_params, t_opt = _scaled_update(t_tx, t_grads, state["t_opt"], state["t"], factor)
  new_state = {"step": step + 1, "key": state["key"], "t": t_params, "c": c_params, "t_opt": t_opt, "c_opt": c_opt}
  metrics = {"critic_loss": wasserstein[-1], "gp": gp[-1], "d_real": d_real[-1], "d_fake": d_fake[-1],
             **t_metrics, "lr_factor": factor}
  return new_state, metrics


def make_train_step(config: HealthyganTrainConfig) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
  """Jitted `steps_per_call` steps in one `lax.scan`, train state donated; cached per config (loop fields aside).

  Returns:
    `fn(state, data, total_steps) -> (state, metrics)`, metrics stacked: each (steps_per_call,).
  """
  return compile_steps(train_step, config.steps_per_call, static=(without_loop_fields(config),))


# ----------------------------------------------------------------------------- data


def prepare_data(dataset: data_lib.CXRDataset, config: HealthyganTrainConfig) -> tuple[dict[str, np.ndarray], dict]:
  """The mixed set (every image, labels unused) and the normal set (label 0), resized.

  Pass the standard split's train part (`data.standard_split(ds)["train"]`): this function
  trains on whatever it is given. Images of unknown label (-1) join the mixed set only.

  Returns:
    ({"mixed": uint8 (Nm, R, R), "normal": uint8 (Nn, R, R)}, {"n_mixed", "n_normal"}).

  Raises:
    jaxcxr.data.DataError: no images; no normal image; or every image normal (the mixed set
      would equal the normal set, and HealthyGAN would have nothing to translate).
  """
  source = dataset.source or "dataset"
  if len(dataset) == 0:
    raise data_lib.DataError(f"{source}: no images to train HealthyGAN on")
  normal = dataset.label == 0
  if not normal.any():
    raise data_lib.DataError(f"{source}: no normal image (label 0) among {len(dataset)}; HealthyGAN needs a set "
                             "of known-normal images next to the unannotated mix")
  if normal.all():
    raise data_lib.DataError(f"{source}: every image has label 0 (normal), so the mixed set equals the normal "
                             "set; HealthyGAN needs unannotated images that include abnormal ones")
  mixed = data_lib.resize_uint8(dataset.images, config.resolution)
  return {"mixed": mixed, "normal": mixed[normal]}, {"n_mixed": len(dataset), "n_normal": int(normal.sum())}


# ----------------------------------------------------------------------------- loop


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _translate(graphdef, state, images):
  x = data_lib.to_signed(images)[..., None]
  content, mask = nnx.merge(graphdef, state)(x)
  return content[..., 0], blend(content, mask, x)[..., 0], mask[..., 0]


def train_healthygan(dataset: data_lib.CXRDataset, config: HealthyganTrainConfig, out_dir: str | os.PathLike, *,
                     resume: bool = False, seed: int = 0, progress: bool = True) -> dict[str, Any]:
  """Trains HealthyGAN, with progress, checkpoints and resume.

  Mixed set = every image of `dataset` (labels unused), normal set = its label-0 images;
  pass the standard split's train patients, `ds.subset(data.standard_split(ds)["train"])`.
  Writes under `out_dir`: `checkpoints/STEP/`, `metrics.jsonl`, `samples/step_XXXXXX.png`
  (every `sample_every` steps: rows of fixed mixed inputs, contents, translations, masks),
  and at the end `translator/` and `critic/` (`checkpoints.save_model`; metadata: steps,
  seconds, data source and sha256, set sizes, final losses). A killed run continues with
  `resume=True` and ends as an uninterrupted one would.

  Args:
    dataset: images with labels (0 normal; anything else counts as unannotated).
    config: e.g. `jaxcxr.config.healthygan_64_cpu()`.
    out_dir: output folder.
    resume: continue from the latest checkpoint in `out_dir`.
    seed: seed of the initial weights and the training randomness.
    progress: show a tqdm bar on stderr.

  Returns:
    {"steps", "start_step", "seconds", "compile_seconds", "seconds_per_step",
    "images_per_second" (mixed images per second), "final", "n_mixed", "n_normal", "out_dir",
    "translator", "critic"}.

  Raises:
    jaxcxr.data.DataError: unusable data (before any compilation).
    FileExistsError: `out_dir` holds checkpoints and `resume` is False.
  """
  host_data, info = prepare_data(dataset, config)
  out_dir = pathlib.Path(out_dir)
  provenance = {**data_metadata(dataset), **info}
  state = init_train_state(config, seed)
  float32 = dataclasses.replace(config, compute_dtype="float32")
  t_graphdef, c_graphdef = _graphdefs(float32)
  n_grid = min(config.samples, info["n_mixed"])

  def write_grid(step: int, state: TrainState):
    if not config.sample_every or step % config.sample_every:
      return
    images = host_data["mixed"][:n_grid]
    content, out, mask = _translate(t_graphdef, state["t"], images)
    rows = [images, data_lib.to_uint8(content, signed=True), data_lib.to_uint8(out, signed=True),
            data_lib.to_uint8(mask)]
    plots.save_image_grid(np.concatenate(rows), out_dir / "samples" / f"step_{step:06d}.png", nrow=n_grid)

  loop = run_training_loop(
      name="HealthyGAN", config=config, state=state, train_call=make_train_step(config),
      args=(jax.device_put(host_data), jnp.int32(config.steps)), out_dir=out_dir, resume=resume,
      run_metadata={**provenance, "seed": seed}, progress=progress, on_call=write_grid,
      postfix=lambda m, _: {"d": f"{m['critic_loss'][-1]:.3f}", "id": f"{m['identity'][-1]:.3f}",
                            "m": f"{m['mask_mean'][-1]:.2f}"})

  metadata = {**provenance, "seed": seed, "steps": loop.step, "train_seconds": loop.previous_seconds + loop.seconds,
              "device": device_name(), "final_losses": loop.final,
              "provenance": provenance_lib.provenance(dataset.source, {"seed": seed})}
  t_path = checkpoints.save_model(out_dir / "translator", nnx.merge(t_graphdef, loop.state["t"]), config.translator,
                                  metadata=metadata, overwrite=True)
  c_path = checkpoints.save_model(out_dir / "critic", nnx.merge(c_graphdef, loop.state["c"]), config.critic,
                                  metadata=metadata, overwrite=True)
  return {**loop_summary(loop, config), **info, "out_dir": str(out_dir), "translator": str(t_path),
          "critic": str(c_path), "provenance": metadata["provenance"]}
