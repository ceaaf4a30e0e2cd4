"""Training of the super-resolution stage of a cascade generator, on real radiographs.

A step (pure, jitted, scanned by `loop.compile_steps`):

1. `batch_size` random crops of `crop` pixels from the full-size training images (no flips:
   a radiograph's left and right are not interchangeable);
2. their low-resolution inputs: LANCZOS down-sampling by `scale` (`jax.image.resize`,
   antialiased; the archives and the low-resolution GAN's training images were made with
   PIL's LANCZOS), then a random blend of a 3x3 binomial blur and random Gaussian noise
   (so the stage also accepts a GAN's slightly soft, slightly noisy images);
3. one update of the patch discriminator D (spectral norm, conditional on the bilinear
   up-sampling u of the input, pix2pix style), which judges the detail image
   (y - u) * disc_detail_gain: softplus(-D(real)) + softplus(D(fake)), averaged over its
   patch logits;
4. one update of the stage: l1_weight * |G(x) - real|_1 + adversarial_weight * softplus(-D(G(x))),
   then the EMA of its weights.

The trajectory is a pure function of (config, data, seed, step) (`jax.random.fold_in(key,
step)`), so a killed run resumes exactly (`loop.run_training_loop`). Writes `samples/`
(input | output | real at full size, fixed validation images) and, at the end, the EMA
weights as the inference checkpoint `upsampler/`.
"""

from __future__ import annotations

import functools
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxcxr import checkpoints, plots
from jaxcxr import data as data_lib
from jaxcxr.batching import map_batches
from jaxcxr.config import UpsamplerTrainConfig
from jaxcxr.models.graph import abstract_graphdef
from jaxcxr.models.layers import SpectralConv, avg_pool2, upsample2
from jaxcxr.models import condition as condition_lib
from jaxcxr.models.generator import Generator
from jaxcxr.models.upsampler import Upsampler, load_upsampler  # load_upsampler re-exported for its old callers
from jaxcxr.provenance import provenance
from jaxcxr.train.loop import (KEY_IMPL, arrays_sha256, compile_steps, copy_weights, data_metadata, device_name,
                               jit_init, loop_summary, run_training_loop, without_loop_fields)

__all__ = ["PatchDiscriminator", "degrade", "downsample", "init_train_state", "load_upsampler", "train_step",
           "train_upsampler", "upsample_images"]

TrainState = dict[str, Any]


class PatchDiscriminator(nnx.Module):
  """Conditional patch discriminator: (detail image, up-sampled input) -> patch logits.

  Spectrally normalised 3x3 convolutions with leaky ReLUs and a 2x average pool after each,
  then a 1x1 convolution to one logit per patch: (B, H, W, 1) x 2 -> (B, H / 2**n, W / 2**n).
  """

  def __init__(self, channels: tuple[int, ...], *, rngs: nnx.Rngs):
    c = (2,) + tuple(channels)
    self.convs = nnx.List([SpectralConv(a, b, 3, rngs=rngs) for a, b in zip(c[:-1], c[1:])])
    self.out = SpectralConv(c[-1], 1, 1, rngs=rngs)

  def __call__(self, image: jax.Array, context: jax.Array) -> jax.Array:
    h = jnp.concatenate([image, context], axis=-1)
    for conv in self.convs:
      h = avg_pool2(jax.nn.leaky_relu(conv(h), 0.2))
    return self.out(h)[..., 0]


# ----------------------------------------------------------------------------- inputs


def downsample(images: jax.Array, scale: int) -> jax.Array:
  """Antialiased LANCZOS down-sampling by `scale`, float (B, H, W, 1) -> (B, H/scale, W/scale, 1)."""
  b, h, w, c = images.shape
  return jax.image.resize(images, (b, h // scale, w // scale, c), "lanczos3", antialias=True)


def degrade(key: jax.Array, images: jax.Array, config: UpsamplerTrainConfig) -> jax.Array:
  """Random mild blur (blend with a 3x3 binomial blur) and Gaussian noise per image, [-1, 1] kept."""
  b = images.shape[0]
  k_blur, k_sigma, k_noise = jax.random.split(key, 3)
  kernel = jnp.outer(jnp.array([1.0, 2.0, 1.0]), jnp.array([1.0, 2.0, 1.0])) / 16.0
  padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  blurred = jax.lax.conv_general_dilated(padded, kernel[:, :, None, None], (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
  alpha = jax.random.uniform(k_blur, (b, 1, 1, 1)) * config.degrade_blur
  sigma = jax.random.uniform(k_sigma, (b, 1, 1, 1)) * config.degrade_noise
  x = (1.0 - alpha) * images + alpha * blurred + sigma * jax.random.normal(k_noise, images.shape)
  return jnp.clip(x, -1.0, 1.0)


def _crops(key: jax.Array, images: jax.Array, batch: int, crop: int, align: int) -> jax.Array:
  """Random crops (B, crop, crop, 1) in [-1, 1] of uint8 (N, R, R) images, corners on an `align` grid."""
  k_idx, k_y, k_x = jax.random.split(key, 3)
  n, r = images.shape[0], images.shape[1]
  idx = jax.random.randint(k_idx, (batch,), 0, n)
  cells = (r - crop) // align + 1
  ys = jax.random.randint(k_y, (batch,), 0, cells) * align
  xs = jax.random.randint(k_x, (batch,), 0, cells) * align
  take = lambda i, y, x: jax.lax.dynamic_slice(images[i], (y, x), (crop, crop))
  return (jax.vmap(take)(idx, ys, xs).astype(jnp.float32) / 127.5 - 1.0)[..., None]


# ----------------------------------------------------------------------------- state


def _optimizers(config: UpsamplerTrainConfig):
  return (optax.adam(config.learning_rate, b1=0.5, b2=0.99), optax.adam(config.d_learning_rate, b1=0.5, b2=0.99))


def init_train_state(config: UpsamplerTrainConfig, seed: int = 0) -> TrainState:
  """Fresh state: {"step", "key", "g", "g_ema", "g_opt", "d", "d_stats", "d_opt"} (plain dicts of arrays)."""
  return jit_init(_init, without_loop_fields(config), seed)


def _init(root: jax.Array, config: UpsamplerTrainConfig) -> TrainState:
  upsampler = Upsampler(config.upsampler, rngs=nnx.Rngs(jax.random.fold_in(root, 1)))
  disc = PatchDiscriminator(config.disc_channels, rngs=nnx.Rngs(jax.random.fold_in(root, 2)))
  g = nnx.to_pure_dict(nnx.state(upsampler, nnx.Param))
  d = nnx.to_pure_dict(nnx.state(disc, nnx.Param))
  g_tx, d_tx = _optimizers(config)
  return {"step": jnp.zeros((), jnp.int32), "key": jax.random.key_data(jax.random.fold_in(root, 3)),
          "g": g, "g_ema": jax.tree.map(jnp.copy, g), "g_opt": g_tx.init(g),
          "d": d, "d_stats": nnx.to_pure_dict(nnx.state(disc, nnx.BatchStat)), "d_opt": d_tx.init(d)}


def _graphdefs(config: UpsamplerTrainConfig):
  """Graph definitions of the stage, D in training mode and D in inference mode."""
  return (abstract_graphdef(Upsampler, config.upsampler), abstract_graphdef(PatchDiscriminator, config.disc_channels),
          abstract_graphdef(PatchDiscriminator, config.disc_channels, use_running_average=True))


# ----------------------------------------------------------------------------- step


def _generated_crops(key: jax.Array, base: dict[str, Any], conds: jax.Array, batch: int, side: int,
                     base_def) -> jax.Array:
  """`batch` random crops (B, side, side, 1) of the base GAN's images, conditioned on random rows of `conds`."""
  k_idx, k_z, k_y, k_x = jax.random.split(key, 4)
  generator = nnx.merge(base_def, base)
  cond = conds[jax.random.randint(k_idx, (batch,), 0, conds.shape[0])]
  z = jax.random.normal(k_z, (batch, generator.config.latent_dim))
  images = jax.lax.stop_gradient(generator.base_image(z, cond))   # (B, R, R, 1)
  cells = images.shape[1] - side + 1
  ys = jax.random.randint(k_y, (batch,), 0, cells)
  xs = jax.random.randint(k_x, (batch,), 0, cells)
  take = lambda im, y, x: jax.lax.dynamic_slice(im, (y, x, 0), (side, side, 1))
  return jax.vmap(take)(images, ys, xs)


def train_step(state: TrainState, images: jax.Array, config: UpsamplerTrainConfig
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One D update and one stage update on real crops only (pure; `generated_step` with no base)."""
  return generated_step(state, images, None, None, config, None)


def generated_step(state: TrainState, images: jax.Array, base: dict[str, Any] | None, conds: jax.Array | None,
                   config: UpsamplerTrainConfig, base_def) -> tuple[TrainState, dict[str, jax.Array]]:
  """One D update and one stage update (pure).

  Args:
    state: from `init_train_state`.
    images: uint8 (N, 256, 256) full-size training images, on device.
    base, conds: with `config.generated_fraction` > 0, the base GAN's parameters (pure
      dict) and the condition vectors to draw from (M, n_conditions): that share of each
      batch takes crops of the base GAN's own images as inputs, with no target; its loss is
      `consistency_weight` x L1 between the output's down-sampling and the input, next to
      the adversarial loss. Otherwise None.
    config: static.
    base_def: the base generator's graphdef (static), or None.

  Returns:
    (new state, metrics): "d_loss", "g_adv", "l1" (to the real crop), "l1_bilinear" (the
    bilinear up-sampling's L1, the floor the stage must beat), "d_real", "d_fake" (mean
    logits), and with generated inputs "consistency" (L1 of the down-sampled output to them).
  """
  g_def, d_train, d_eval = _graphdefs(config)
  g_tx, d_tx = _optimizers(config)
  scale = config.upsampler.scale
  key = jax.random.fold_in(jax.random.wrap_key_data(state["key"], impl=KEY_IMPL), state["step"])
  k_crop, k_degrade, k_noise = jax.random.split(key, 3)
  b = config.batch_size
  n_gen = int(round(b * config.generated_fraction))
  n_pair = b - n_gen
  real = _crops(k_crop, images, b, config.crop, scale)                          # (B, C, C, 1)
  low_real = degrade(k_degrade, downsample(real, scale), config)
  upsample = lambda x: functools.reduce(lambda h, _: upsample2(h), range(int(np.log2(scale))), x)
  real_context = upsample(low_real)
  if n_gen:
    low_gen = _generated_crops(jax.random.fold_in(key, 7), base, conds, n_gen, config.crop // scale, base_def)
    low = jnp.concatenate([low_real[:n_pair], low_gen])
    context = jnp.concatenate([real_context[:n_pair], upsample(low_gen)])
  else:
    low, context = low_real, real_context
  fake = nnx.merge(g_def, state["g"])(low, k_noise)

  detail = lambda x, c: (x - c) * config.disc_detail_gain   # what D judges, next to the context

  def d_loss_fn(d_params):
    disc = nnx.merge(d_train, d_params, state["d_stats"])
    logits = disc(jnp.concatenate([detail(real, real_context), detail(jax.lax.stop_gradient(fake), context)]),
                  jnp.concatenate([real_context, context]))
    loss = jax.nn.softplus(-logits[:b]).mean() + jax.nn.softplus(logits[b:]).mean()
    return loss, (nnx.to_pure_dict(nnx.state(disc, nnx.BatchStat)), logits[:b].mean(), logits[b:].mean())

  (d_loss, (d_stats, d_real, d_fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state["d"])
  with jax.numpy_dtype_promotion("standard"):
    d_updates, d_opt = d_tx.update(d_grads, state["d_opt"], state["d"])
  d_params = optax.apply_updates(state["d"], d_updates)
  disc = nnx.merge(d_eval, d_params, d_stats)

  def g_loss_fn(g_params):
    out = nnx.merge(g_def, g_params)(low, k_noise)
    l1 = jnp.abs(out[:n_pair] - real[:n_pair]).mean()
    adv = jax.nn.softplus(-disc(detail(out, context), context)).mean()
    loss = config.l1_weight * l1 + config.adversarial_weight * adv
    consistency = jnp.zeros(())
    if n_gen:
      consistency = jnp.abs(downsample(out[n_pair:], scale) - low[n_pair:]).mean()
      loss = loss + config.consistency_weight * consistency
    return loss, (l1, adv, consistency)

  (_, (l1, g_adv, consistency)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state["g"])
  with jax.numpy_dtype_promotion("standard"):
    g_updates, g_opt = g_tx.update(g_grads, state["g_opt"], state["g"])
  g_params = optax.apply_updates(state["g"], g_updates)
  t = state["step"].astype(jnp.float32)
  beta = jnp.minimum(config.ema_decay, (1.0 + t) / (10.0 + t))
  g_ema = jax.tree.map(lambda e, p: beta * e + (1.0 - beta) * p, state["g_ema"], g_params)
  new_state = {**state, "step": state["step"] + 1, "g": g_params, "g_ema": g_ema, "g_opt": g_opt,
               "d": d_params, "d_stats": d_stats, "d_opt": d_opt}
  metrics = {"d_loss": d_loss, "g_adv": g_adv, "l1": l1,
             "l1_bilinear": jnp.abs(real_context[:n_pair] - real[:n_pair]).mean(),
             "d_real": d_real, "d_fake": d_fake}
  if n_gen:
    metrics["consistency"] = consistency
  return new_state, metrics


def make_train_step(config: UpsamplerTrainConfig, base_def=None):
  """Jitted `steps_per_call` steps in one `lax.scan` (state donated), cached per config.

  Without generated inputs the call is `fn(state, images)`; with them (`base_def`, the base
  generator's graphdef) `fn(state, images, base_params, conds)`.
  """
  if config.generated_fraction:
    if base_def is None:
      raise ValueError("UpsamplerTrainConfig.generated_fraction > 0 needs the base GAN's graphdef")
    return compile_steps(generated_step, config.steps_per_call, static=(without_loop_fields(config), base_def))
  return compile_steps(train_step, config.steps_per_call, static=(without_loop_fields(config),))


# ----------------------------------------------------------------------------- inference


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _upsample_uint8(graphdef, state, images, key):
  y = nnx.merge(graphdef, state)(data_lib.to_signed(images)[..., None], key)[..., 0]
  return data_lib.signed_to_uint8(y)


def upsample_images(upsampler: Upsampler, images_uint8: np.ndarray, *, seed: int = 0,
                    batch_size: int = 16) -> np.ndarray:
  """uint8 (N, h, w) -> uint8 (N, scale*h, scale*w) through the stage, `batch_size` images per jitted call."""
  graphdef, state = nnx.split(upsampler)
  key = jax.random.key(seed)
  return map_batches(lambda x: _upsample_uint8(graphdef, state, x, key), np.asarray(images_uint8), batch_size)


def _bilinear(images_uint8: np.ndarray, side: int) -> np.ndarray:
  """The reference the stage must beat: bilinear up-sampling of uint8 (N, h, w) to side x side, float32."""
  x = jnp.asarray(images_uint8, jnp.float32)
  return np.asarray(jax.image.resize(x, (x.shape[0], side, side), "linear"))


# ----------------------------------------------------------------------------- loop


def warm_start(state: TrainState, upsampler: Upsampler) -> TrainState:
  """`state` with a trained stage's weights as its stage and EMA (optimisers, D and step stay fresh).

  Raises:
    ValueError: the stage's weights do not have the shapes of the config's stage.
  """
  saved = nnx.to_pure_dict(nnx.state(upsampler, nnx.Param))
  what = "warm start: the given upsampler"
  return {**state, "g": copy_weights(saved, state["g"], what), "g_ema": copy_weights(saved, state["g_ema"], what)}


def _base_conditions(dataset: data_lib.CXRDataset, base: Generator) -> np.ndarray:
  """Condition vectors of the training images with known metadata, for the base GAN's generated inputs."""
  conditions = base.config.conditions
  known = np.isin(dataset.sex, ["M", "F"]) & (dataset.age >= 0)
  if "label" in conditions:
    known &= np.isin(dataset.label, [0, 1])
  if not known.any():
    raise data_lib.DataError(f"{dataset.source}: no training image with sex and age to condition the base GAN on")
  return condition_lib.make_condition(dataset.sex[known], dataset.age[known], dataset.label[known],
                                      conditions=conditions)


def train_upsampler(dataset: data_lib.CXRDataset, config: UpsamplerTrainConfig, out_dir: str | os.PathLike, *,
                    validation: data_lib.CXRDataset | None = None, resume: bool = False, seed: int = 0,
                    progress: bool = True, base: Generator | None = None,
                    init_from: Upsampler | None = None) -> dict[str, Any]:
  """Trains the super-resolution stage on full-size real radiographs.

  Writes under `out_dir`: `checkpoints/STEP/` (resumable training state), `metrics.jsonl`,
  `samples/step_XXXXXX.png` (rows of: bilinear up-sampling of the down-sampled image | the
  stage's output | the real image, for up to 4 validation images, else training images) and
  at the end the EMA weights as `upsampler/` (`checkpoints.save_model`).

  Args:
    dataset: training images (any labels; uint8 256x256).
    config: e.g. `jaxcxr.config.upsampler_x4_cpu()`.
    out_dir: output folder.
    validation: images for the sample grids and the final validation L1 (patients not in
      `dataset`); None uses the first training images for the grids and skips the L1.
    resume: continue from the latest checkpoint in `out_dir`.
    seed: seed of the initial weights and of the training randomness.
    progress: tqdm bar on stderr.
    base: the low-resolution GAN whose images make `config.generated_fraction` of each batch
      (needed then; its blocks are used, a cascade's own upsampler is ignored). The sample
      grids then also show its images finished by the stage (`samples/generated_STEP.png`).
    init_from: a trained stage whose weights start the run (a resumed run continues from
      its own checkpoint instead).

  Returns:
    {"steps", "seconds", "seconds_per_step", "final", "validation_l1", "validation_l1_bilinear",
    "upsampler" (path), ...}.

  Raises:
    jaxcxr.data.DataError: no images, or images not 256x256.
    ValueError: `config.generated_fraction` > 0 without a `base`, or a base whose resolution
      is not 256 / scale.
  """
  if len(dataset) == 0:
    raise data_lib.DataError(f"{dataset.source or 'dataset'}: no images to train the upsampler on")
  if dataset.images.shape[1:] != (data_lib.IMAGE_SIZE, data_lib.IMAGE_SIZE):
    raise data_lib.DataError(f"{dataset.source}: expected 256x256 images, got {dataset.images.shape[1:]}")
  out_dir = pathlib.Path(out_dir)
  scale = config.upsampler.scale
  shown = (validation if validation is not None and len(validation) else dataset).images[:4]
  shown_low = data_lib.resize_uint8(shown, shown.shape[1] // scale)
  inference_def = abstract_graphdef(Upsampler, config.upsampler)
  args: tuple = (jax.device_put(dataset.images),)
  base_def = base_params = None
  if config.generated_fraction:
    if base is None:
      raise ValueError(f"generated_fraction={config.generated_fraction} needs the base GAN (`base`)")
    if base.config.base_resolution * scale != dataset.images.shape[1]:
      raise ValueError(f"the base GAN makes {base.config.base_resolution}x{base.config.base_resolution} images; "
                       f"a x{scale} stage needs {dataset.images.shape[1] // scale}")
    base_config = base.config.base
    base_def = abstract_graphdef(Generator, base_config)
    base_params = nnx.to_pure_dict(nnx.state(base))
    base_params.pop("upsampler", None)
    args = args + (jax.device_put(base_params), jax.device_put(_base_conditions(dataset, base)))
    shown_cond = condition_lib.make_condition(["M", "F", "M", "F"], [20, 40, 60, 40], 0,
                                              conditions=base_config.conditions)
    shown_base = nnx.merge(base_def, base_params).base_image(
        jax.random.normal(jax.random.key(0), (4, base_config.latent_dim)), jnp.asarray(shown_cond))
    shown_generated = data_lib.signed_to_uint8(shown_base[..., 0])
  state = init_train_state(config, seed)
  if init_from is not None:
    state = warm_start(state, init_from)

  def write_samples(step: int, state: TrainState):
    if config.sample_every and step % config.sample_every == 0 or step == config.steps:
      up = nnx.merge(inference_def, state["g_ema"])
      out = upsample_images(up, shown_low)
      bilinear = np.round(np.clip(_bilinear(shown_low, shown.shape[1]), 0, 255)).astype(np.uint8)
      rows = np.concatenate([np.stack([b, o, r]) for b, o, r in zip(bilinear, out, shown)])
      plots.save_image_grid(rows, out_dir / "samples" / f"step_{step:06d}.png", nrow=3,
                            labels=["bilinear", "stage", "real"] + [""] * (len(rows) - 3))
      if base_def is not None:
        low = np.asarray(shown_generated)
        out = upsample_images(up, low)
        bilinear = np.round(np.clip(_bilinear(low, out.shape[1]), 0, 255)).astype(np.uint8)
        rows = np.concatenate([np.stack([b, o]) for b, o in zip(bilinear, out)])
        plots.save_image_grid(rows, out_dir / "samples" / f"generated_{step:06d}.png", nrow=2,
                              labels=["bilinear (GAN)", "stage"] + [""] * (len(rows) - 2))

  loop = run_training_loop(
      name="upsampler", config=config, state=state, train_call=make_train_step(config, base_def),
      args=args, out_dir=out_dir, resume=resume, progress=progress,
      run_metadata={"n_images": len(dataset), "seed": seed,
                    "data_sha256": data_metadata(dataset).get("data_sha256"),
                    **({"base_sha256": arrays_sha256(base_params)} if base_params is not None else {}),
                    **({"init_from_sha256": arrays_sha256(nnx.to_pure_dict(nnx.state(init_from)))}
                       if init_from is not None else {})},
      on_call=write_samples,
      postfix=lambda m, _: {"l1": f"{m['l1'][-1]:.4f}", "bil": f"{m['l1_bilinear'][-1]:.4f}",
                            "d": f"{m['d_loss'][-1]:.3f}"})
  upsampler = nnx.merge(inference_def, loop.state["g_ema"])
  result = {**loop_summary(loop, config)}
  if validation is not None and len(validation):
    real = validation.images
    low = data_lib.resize_uint8(real, real.shape[1] // scale)
    out = upsample_images(upsampler, low)
    bilinear = _bilinear(low, real.shape[1])
    result["validation_l1"] = float(np.mean(np.abs(out.astype(np.float32) - real)) / 127.5)
    result["validation_l1_bilinear"] = float(np.mean(np.abs(bilinear - real)) / 127.5)
  metadata = {"steps": loop.step, "train_seconds": loop.previous_seconds + loop.seconds, "device": device_name(),
              "seed": seed, "n_images": len(dataset), "final_losses": loop.final, **data_metadata(dataset),
              "provenance": provenance(dataset.source, {"seed": seed}),
              **{k: result[k] for k in ("validation_l1", "validation_l1_bilinear") if k in result}}
  path = checkpoints.save_model(out_dir / "upsampler", upsampler, config.upsampler,
                                metadata={**metadata, "weights": "ema"}, overwrite=True)
  return {**result, "out_dir": str(out_dir), "upsampler": str(path), "provenance": metadata["provenance"]}
