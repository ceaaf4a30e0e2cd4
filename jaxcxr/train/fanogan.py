"""f-AnoGAN encoder training (izi_f, Schlegl et al. 2019) against a frozen normal-only GAN.

The encoder E learns to invert the generator on normal training images:

    L = mean_pixels (x - G(E(x), c))^2 + kappa * mean_features (f(x) - f(G(E(x), c)))^2

with f the discriminator's final feature map (`Discriminator.features`, the
reference's `out_features`), kappa = 1 and MSE as in the paper and the reference
code (tSchlegl/f-AnoGAN `z_encoding_izif.py`, `loss_type='MSE'`). With
`feature_encoder`, f is a stage of the self-supervised CXR encoder instead
(`anomaly.EncoderFeatures`, AnoGAN's default feature term): it matches what a
radiograph shows, not what tells this GAN's images from real ones. G and f are
frozen: their states are arguments of the jitted step, never updated, never
donated, and D runs in inference mode (its spectral-norm vectors are only read).
The condition c of an image is its sex and age (label 0 when the GAN is
conditioned on the label: every image is reconstructed as a normal one).

Deviations from the reference: Adam (the reference uses RMSProp, lr 5e-5), light
per-image augmentation of the training images (rotation, shift, zoom, brightness,
contrast; `data.augment`; the reference has none), GroupNorm in E (the reference:
BatchNorm), a linear z output (the reference's default `Z_REG_TYPE = None`; the
paper's tanh is for a uniform-z generator, ours draws z ~ N(0, I)).

As every trainer (`train.loop`): the whole training set (uint8, resized once on the
host) lives on the device; step t draws its batch and augmentation from
`jax.random.fold_in(key, t)` inside the jitted function, `steps_per_call` steps run
in one `lax.scan` over a donated train state, and `loop.run_training_loop` does the
checkpoints, resume, tqdm and metrics.jsonl, so a resumed run is exact.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from collections.abc import Callable, Mapping
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
from jaxcxr.anomaly.anogan import SHIPPED_FEATURE_STAGE, EncoderFeatures
from jaxcxr.anomaly.fanogan import fanogan_loss, features_graphdef, normal_condition
from jaxcxr.config import AugmentConfig, DiscriminatorConfig, FanoganTrainConfig, GeneratorConfig
from jaxcxr.models.cxr_encoder import load_cxr_encoder
from jaxcxr.models.discriminator import load_discriminator
from jaxcxr.models.fanogan import Encoder
from jaxcxr.models.generator import Generator, load_generator
from jaxcxr.models.graph import abstract_graphdef
from jaxcxr.train.loop import (KEY_IMPL, compile_steps, data_metadata, device_name, jit_init, loop_summary,
                               run_training_loop, without_loop_fields)

TrainState = dict[str, Any]

# ----------------------------------------------------------------------------- state and step


def _optimizer(config: FanoganTrainConfig) -> optax.GradientTransformation:
  return optax.adam(config.learning_rate, b1=config.adam_b1, b2=config.adam_b2)


def init_train_state(config: FanoganTrainConfig, seed: int = 0) -> TrainState:
  """Fresh training state: {"step" int32 (), "key" raw rbg key data, "e" encoder params, "e_opt" Adam state}.

  Built in one jitted call (eager initialisation compiles every initialiser op on a CPU).
  """
  return jit_init(_init, without_loop_fields(config), seed)


def _init(root: jax.Array, config: FanoganTrainConfig) -> TrainState:
  encoder = Encoder(config.encoder, rngs=nnx.Rngs(jax.random.fold_in(root, 1)))
  params = nnx.to_pure_dict(nnx.state(encoder, nnx.Param))
  return {"step": jnp.zeros((), jnp.int32), "key": jax.random.key_data(jax.random.fold_in(root, 2)),
          "e": params, "e_opt": _optimizer(config).init(params)}


def _graphdefs(config: FanoganTrainConfig, g_config: GeneratorConfig):
  """Graph definitions of E and G at the training compute dtype."""
  at_dtype = functools.partial(dataclasses.replace, dtype=config.compute_dtype)
  return abstract_graphdef(Encoder, at_dtype(config.encoder)), abstract_graphdef(Generator, at_dtype(g_config))


def training_batch(key: jax.Array, data: Mapping[str, jax.Array], batch_size: int,
                   augment: AugmentConfig | None, name: str = "images") -> tuple[jax.Array, jax.Array]:
  """A random batch (with replacement) of stored uint8 images, augmented, in signed space.

  Args:
    key: PRNG key of the batch.
    data: device arrays; data[name] uint8 (N, R, R).
    batch_size: images drawn.
    augment: per-image augmentation, or None.
    name: which entry of `data` to draw from.

  Returns:
    (float32 (B, R, R, 1) NHWC images in [-1, 1], int32 (B,) the drawn indices).
  """
  k_idx, k_aug = jax.random.split(key)
  idx = jax.random.randint(k_idx, (batch_size,), 0, data[name].shape[0])
  x = data_lib.to_unit(data[name][idx])[..., None]                     # (B, R, R, 1) in [0, 1]
  if augment is not None:
    x = data_lib.augment(k_aug, x, augment)
  return data_lib.unit_to_signed(x), idx


def train_step(state: TrainState, frozen: dict, data: dict[str, jax.Array], config: FanoganTrainConfig,
               g_config: GeneratorConfig, f_graphdef) -> tuple[TrainState, dict[str, jax.Array]]:
  """One encoder update (pure; `make_train_step` jits and scans it).

  Args:
    state: from `init_train_state` (or a restored checkpoint).
    frozen: {"g": generator state (`nnx.to_pure_dict`), "f": the feature term's state}, never updated.
    data: {"images": uint8 (N, R, R), "cond": float32 (N, len(conditions))} on device.
    config, g_config: static.
    f_graphdef: static, the feature term's graph definition (`anomaly.fanogan.features_graphdef`).

  Returns:
    (new state, metrics): scalars "loss", "image_loss", "feature_loss" (batch means) and
    "z_rms" (root mean square of E(x); about 1 for codes where G's N(0, I) prior has mass).
  """
  e_graphdef, g_graphdef = _graphdefs(config, g_config)
  generator = nnx.merge(g_graphdef, frozen["g"])
  discriminator = nnx.merge(f_graphdef, frozen["f"])
  key = jax.random.fold_in(jax.random.wrap_key_data(state["key"], impl=KEY_IMPL), state["step"])
  x, idx = training_batch(key, data, config.batch_size, config.augment)
  cond = data["cond"][idx]

  def loss_fn(params):
    losses, parts = fanogan_loss(nnx.merge(e_graphdef, params), generator, discriminator, x, cond,
                                 config.feature_weight)
    return losses.mean(), parts

  (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["e"])
  # optax's Adam mixes a Python float with an int32 count: an error under strict dtype promotion.
  with jax.numpy_dtype_promotion("standard"):
    updates, opt_state = _optimizer(config).update(grads, state["e_opt"], state["e"])
  new_state = {"step": state["step"] + 1, "key": state["key"], "e": optax.apply_updates(state["e"], updates),
               "e_opt": opt_state}
  metrics = {"loss": loss, "image_loss": parts["image_loss"].mean(), "feature_loss": parts["feature_loss"].mean(),
             "z_rms": jnp.sqrt(jnp.square(parts["z"]).mean())}
  return new_state, metrics


def make_train_step(config: FanoganTrainConfig, g_config: GeneratorConfig, f_graphdef
                    ) -> Callable[[TrainState, dict, dict], tuple[TrainState, dict]]:
  """Jitted `steps_per_call` encoder steps in one `lax.scan`; the train state is donated, G and f are not.

  Cached per (config without its loop-only fields, G config, the feature term's graph definition).

  Returns:
    `fn(state, frozen, data) -> (state, metrics)`, metrics stacked over the steps: each (steps_per_call,).
  """
  return compile_steps(train_step, config.steps_per_call,
                       static=(without_loop_fields(config), g_config, f_graphdef))


# ----------------------------------------------------------------------------- data


def check_gan(config: FanoganTrainConfig, g_config: GeneratorConfig, d_config: DiscriminatorConfig,
              where: str = "GAN") -> None:
  """Raises ValueError, naming `where`, when the encoder config does not fit the GAN."""
  e = config.encoder
  if g_config.base_resolution != d_config.resolution or tuple(g_config.conditions) != tuple(d_config.conditions):
    raise ValueError(f"{where}: generator (resolution {g_config.resolution}, conditions {g_config.conditions}) and "
                     f"discriminator (resolution {d_config.resolution}, conditions {d_config.conditions}) "
                     "do not match")
  if e.resolution not in (g_config.resolution, g_config.base_resolution):
    raise ValueError(f"{where}: the GAN works at {g_config.resolution}x{g_config.resolution} (base "
                     f"{g_config.base_resolution}), the encoder config at {e.resolution}x{e.resolution}; use an "
                     "encoder of the GAN's output or base resolution")
  if e.latent_dim != g_config.latent_dim:
    raise ValueError(f"{where}: the generator's latent_dim is {g_config.latent_dim}, the encoder's {e.latent_dim}")


def prepare_data(dataset: data_lib.CXRDataset, config: FanoganTrainConfig,
                 conditions: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict]:
  """The normal images (label 0) with known sex and age, resized, and their normal conditions.

  Pass the standard split's train part (`data.standard_split(ds)["train"]`): this function
  trains on whatever it is given.

  Returns:
    ({"images": uint8 (N, R, R), "cond": float32 (N, len(conditions))}, info with
    "n_images", "n_dropped" (unknown sex or age), "n_abnormal_ignored").

  Raises:
    jaxcxr.data.DataError: no images, no normal image, or no normal image with known sex and age.
  """
  source = dataset.source or "dataset"
  if len(dataset) == 0:
    raise data_lib.DataError(f"{source}: no images to train the f-AnoGAN encoder on")
  normal = dataset.select(label=0)
  if len(normal) == 0:
    raise data_lib.DataError(f"{source}: no normal image (label 0) among {len(dataset)}; the f-AnoGAN encoder "
                             "trains on normal images only")
  known = np.isin(normal.sex, ["M", "F"]) & (normal.age >= 0)
  if not known.any():
    raise data_lib.DataError(f"{source}: no normal image has known sex and age; the conditional GAN needs them")
  normal = normal.subset(known)
  info = {"n_images": len(normal), "n_dropped": int((~known).sum()),
          "n_abnormal_ignored": int((dataset.label != 0).sum())}
  arrays = {"images": data_lib.resize_uint8(normal.images, config.resolution),
            "cond": normal_condition(normal, tuple(conditions))}
  return arrays, info


# ----------------------------------------------------------------------------- loop


@functools.partial(jax.jit, static_argnames=("graphdefs",))
def _reconstruct(graphdefs, states, images, cond):
  encoder, generator, features = (nnx.merge(g, s) for g, s in zip(graphdefs, states))
  x = data_lib.to_signed(images)[..., None]
  _, parts = fanogan_loss(encoder, generator, features, x, cond, 1.0)
  return parts["reconstruction"][..., 0]


def feature_term(feature_encoder: str | os.PathLike | None, feature_stage: str, discriminator):
  """The feature term f of the loss and the facts that identify it (recorded with the run and the encoder).

  Returns:
    (f: `discriminator`, or `EncoderFeatures(load_cxr_encoder(feature_encoder), feature_stage)`,
    {"feature_term": "discriminator"} or {"feature_term": "encoder", "feature_encoder_id",
    "feature_encoder_dir" (absolute), "feature_stage"}).

  Raises:
    jaxcxr.checkpoints.CheckpointError: a missing or corrupt CXR encoder.
    ValueError: a stage the encoder does not have.
  """
  if feature_encoder is None:
    return discriminator, {"feature_term": "discriminator"}
  path = pathlib.Path(feature_encoder)
  features = EncoderFeatures(load_cxr_encoder(path), feature_stage)
  return features, {"feature_term": "encoder", "feature_encoder_id": checkpoints.model_id(path),
                    "feature_encoder_dir": str(path.absolute()), "feature_stage": feature_stage}


def train_fanogan(dataset: data_lib.CXRDataset, gan_dir: str | os.PathLike, config: FanoganTrainConfig,
                  out_dir: str | os.PathLike, *, resume: bool = False, seed: int = 0,
                  progress: bool = True, feature_encoder: str | os.PathLike | None = None,
                  feature_stage: str = SHIPPED_FEATURE_STAGE) -> dict[str, Any]:
  """Trains the f-AnoGAN encoder against a frozen GAN, with progress, checkpoints and resume.

  Trains on the normal images (label 0) of `dataset`; pass the standard split's train
  patients, `ds.subset(data.standard_split(ds)["train"])`. Writes under `out_dir`:
  `checkpoints/STEP/`, `metrics.jsonl`, `samples/step_XXXXXX.png` (every `sample_every`
  steps: fixed training images, top row, over their reconstructions G(E(x))), and at the
  end the encoder `encoder/` (`checkpoints.save_model`; metadata: the GAN's folder and
  model ids, the feature term (`feature_term`), steps, seconds, data source and sha256, final
  losses). A run killed at any
  moment continues with `resume=True` and ends as an uninterrupted one would.

  Args:
    dataset: images with label, sex and age.
    gan_dir: folder with the normal-only GAN's `generator/` and `discriminator/` (as written
      by `train.gan.train_gan`, e.g. `checkpoints/gan_64_normal`).
    config: e.g. `jaxcxr.config.fanogan_64_cpu()`.
    out_dir: output folder.
    resume: continue from the latest checkpoint in `out_dir`.
    seed: seed of the initial weights and the training randomness.
    progress: show a tqdm bar on stderr.
    feature_encoder: a CXR encoder checkpoint (`models.CXREncoder`): the loss's feature term f
      is its `feature_stage` (`anomaly.EncoderFeatures`); None (default) is the paper's
      discriminator features. `anomaly.load_fanogan` rebuilds the same f from the record.
    feature_stage: the CXR encoder's stage ("stage1", ...; default AnoGAN's, "stage2").

  Returns:
    {"steps", "start_step", "seconds", "compile_seconds", "seconds_per_step",
    "images_per_second", "final" (metrics of the last call), "n_images", "n_dropped", "out_dir",
    "encoder"}.

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing or unreadable GAN or CXR encoder checkpoints.
    ValueError: an encoder config that does not fit the GAN, or an unknown feature stage
      (before any compilation).
    jaxcxr.data.DataError: unusable data (before any compilation).
    FileExistsError: `out_dir` holds checkpoints and `resume` is False.
  """
  gan_dir = pathlib.Path(gan_dir)
  generator = load_generator(gan_dir / "generator")
  discriminator = load_discriminator(gan_dir / "discriminator")
  check_gan(config, generator.config, discriminator.config, str(gan_dir))
  features, feature_facts = feature_term(feature_encoder, feature_stage, discriminator)
  host_data, info = prepare_data(dataset, config, tuple(generator.config.conditions))
  out_dir = pathlib.Path(out_dir)
  provenance = {"generator_id": checkpoints.model_id(gan_dir / "generator"),
                "discriminator_id": checkpoints.model_id(gan_dir / "discriminator"),
                **{k: v for k, v in feature_facts.items() if k != "feature_encoder_dir"},
                **data_metadata(dataset), "n_images": info["n_images"]}

  state = init_train_state(config, seed)
  frozen = {"g": nnx.to_pure_dict(nnx.state(generator)), "f": nnx.to_pure_dict(nnx.state(features))}
  g_cfg = generator.config
  f_graphdef = features_graphdef(features, config.compute_dtype)
  n_grid = min(config.samples, info["n_images"])
  float32_graphdefs = (*_graphdefs(dataclasses.replace(config, compute_dtype="float32"), g_cfg),
                       features_graphdef(features, "float32"))

  def write_grid(step: int, state: TrainState):
    if not config.sample_every or step % config.sample_every:
      return
    images = host_data["images"][:n_grid]
    recon = _reconstruct(float32_graphdefs, (state["e"], frozen["g"], frozen["f"]), images,
                         host_data["cond"][:n_grid])
    grid = np.concatenate([images, data_lib.to_uint8(recon, signed=True)])
    plots.save_image_grid(grid, out_dir / "samples" / f"step_{step:06d}.png", nrow=n_grid)

  loop = run_training_loop(
      name="f-AnoGAN", config=config, state=state, train_call=make_train_step(config, g_cfg, f_graphdef),
      args=(frozen, jax.device_put(host_data)), out_dir=out_dir, resume=resume,
      run_metadata={**provenance, "seed": seed},
      progress=progress, on_call=write_grid,
      postfix=lambda m, _: {"loss": f"{m['loss'][-1]:.4f}", "img": f"{m['image_loss'][-1]:.4f}",
                            "z_rms": f"{m['z_rms'][-1]:.2f}"})

  encoder = nnx.merge(float32_graphdefs[0], loop.state["e"])
  metadata = {**provenance, **feature_facts, "gan_dir": str(gan_dir.absolute()), "seed": seed, "steps": loop.step,
              "train_seconds": loop.previous_seconds + loop.seconds,
              "device": device_name(), "final_losses": loop.final, "feature_weight": config.feature_weight,
              "provenance": provenance_lib.provenance(dataset.source, {"seed": seed})}
  path = checkpoints.save_model(out_dir / "encoder", encoder, config.encoder, metadata=metadata, overwrite=True)
  return {**loop_summary(loop, config), "n_images": info["n_images"], "n_dropped": info["n_dropped"],
          "out_dir": str(out_dir), "encoder": str(path), "provenance": metadata["provenance"]}
