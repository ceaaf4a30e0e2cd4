"""Self-supervised training of the CXR encoder (`jaxcxr.models.cxr_encoder`) on every development radiograph.

Data (`development_data`): every image of the four development archives (both NIH archives,
the COVID-19 archive, the OpenI normals) except the patients any shipped model or evaluation
holds out for testing (`held_out_patients`); no labels. Two linear-probe tasks on the NIH
archives, pneumonia (no finding vs pneumonia) and sex, use the classifiers' own patient splits:
fitted on the training patients, scored on the validation patients.

Methods (`CXREncoderTrainConfig.method`), each on two augmented views of every image of the
batch, through the encoder and an MLP projector:

* "simclr": NT-Xent (Chen et al. 2020), the 2B-way softmax over cosine similarities / temperature;
* "vicreg": invariance (MSE between the views) + variance (hinge on each dimension's standard
  deviation) + covariance (squared off-diagonal covariances) (Bardes et al. 2022);
* "byol": a predictor on the online branch regresses the other view's projection by an EMA
  target network, 2 - 2 cos (Grill et al. 2020; constant EMA decay).

Augmentation (`augment_views`, in the jitted step, per image): a random resized crop of
modest scale (area 0.6-1, aspect 0.8-1.25) with a small rotation and translation (bilinear,
black fill), gamma, contrast and brightness jitter, a random Gaussian blur and Gaussian noise.
Never a horizontal flip: a radiograph's left and right are not interchangeable.

Step: the training images (uint8, resized once on the host to the encoder's resolution) live on
the device; step t draws its images (without replacement) and views from
`jax.random.fold_in(key, t)` inside the jitted function, so the trajectory is a pure function
of (config, data, seed, step) and a killed run resumes exactly (`loop.run_training_loop`). The
learning rate warms up linearly and is then constant: it never depends on `steps`, so a run can
be extended session after session.

Outputs (`train_cxr_encoder`): `checkpoints/STEP/`, `metrics.jsonl`, `probes.jsonl` (linear-probe
validation AUCs every `eval_every` steps) and `encoder/`, the inference checkpoint, rewritten at
each probe and at the end. Command line: `jaxcxr train encoder --help` (`python -m
jaxcxr.train.cxr_encoder ARGS` runs the same command). The configs, `METHODS` and the presets are
`jaxcxr.config.cxr_encoder`'s, re-exported here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxcxr import data as data_lib
from jaxcxr import io as io_lib
from jaxcxr import metrics as metrics_lib
from jaxcxr.config.cxr_encoder import (METHODS, PRESETS, CXRAugmentConfig, CXREncoderTrainConfig, cxr_encoder_cpu,
                                      cxr_encoder_tiny)
from jaxcxr.models.cxr_encoder import CXREncoder, embed_images, prepare_images
from jaxcxr.program import Program
from jaxcxr.provenance import provenance
from jaxcxr.train.loop import (KEY_IMPL, compile_steps, data_metadata, device_name, host_copy, jit_init,
                               loop_summary, run_training_loop, without_loop_fields)

__all__ = [
    "CXRAugmentConfig",
    "CXREncoderTrainConfig",
    "DevelopmentData",
    "METHODS",
    "PRESETS",
    "ProbeTask",
    "Projector",
    "apply_views",
    "augment_views",
    "byol_loss",
    "cxr_encoder_cpu",
    "cxr_encoder_tiny",
    "archives_in",
    "development_data",
    "draw_views",
    "encoder_of",
    "held_out_patients",
    "init_train_state",
    "linear_probe",
    "make_train_step",
    "nt_xent_loss",
    "probe_encoder",
    "projector_of",
    "train_cxr_encoder",
    "train_step",
    "train_step_program",
    "vicreg_loss",
]

TrainState = dict[str, Any]

# =============================================================================
# Data
# =============================================================================

NIH_ARCHIVES = ("nih_cxr14_subset_256.npz", "nih_cxr14_extra_256.npz")
COVID_ARCHIVE = "covid_v7lungs_256.npz"
OPENI_ARCHIVE = "openist_normal_lungs_256.npz"
# The OpenI archive has no patient ids (its `patient_id` is the file stem): split by image with this seed.
OPENI_SPLIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class ProbeTask:
  """A labelled task of the linear probes: training and validation patients' images and 0/1 targets."""

  name: str
  train_images: np.ndarray
  train_y: np.ndarray
  train_patients: np.ndarray
  val_images: np.ndarray
  val_y: np.ndarray
  val_patients: np.ndarray


@dataclasses.dataclass(frozen=True)
class DevelopmentData:
  """What `development_data` returns: the pretraining images, the probe tasks and a JSON description."""

  pretrain: data_lib.CXRDataset
  probes: tuple[ProbeTask, ...]
  description: dict[str, Any]


def _task_split(dataset: data_lib.CXRDataset, task: str) -> dict[str, np.ndarray]:
  """The classifier trainer's patient split for `task` (image indices into `dataset`).

  As `jaxcxr.train.classifier` splits: images with a target, `split_by_patient` stratified by the
  target, the standard fractions and seed.
  """
  from jaxcxr.train.classifier import task_labels  # pylint: disable=g-import-not-at-top

  keep, y = task_labels(dataset, task)
  kept = np.flatnonzero(keep)
  parts = data_lib.split_by_patient(dataset.patient_id[kept], data_lib.STANDARD_SPLIT, stratify=y[kept],
                                    seed=data_lib.STANDARD_SPLIT_SEED)
  return {name: kept[idx] for name, idx in parts.items()}


def held_out_patients(dataset: data_lib.CXRDataset, family: str) -> np.ndarray:
  """Every patient of `dataset` that some shipped model or evaluation holds out as a test patient.

  The project splits by patient in several ways, all with the standard fractions (0.7, 0.15,
  0.15) and seed 0; the union of their test parts is held out, so no image of a test patient
  of any of them is pretrained on:

  * "nih" (`dataset` = both NIH archives, `data.load` of subset then extra):
    `data.standard_split` of both archives, of both with abnormal meaning pneumonia
    (`data.keep_abnormal_finding`), of the subset archive alone and of the subset with
    abnormal meaning pneumonia (generators, f-AnoGAN, HealthyGAN, `evaluate classifier` and
    `evaluate anomaly`), and the classifier trainer's task splits (abnormal, stratified by label;
    sex, stratified by sex) of the same four sets (the shipped classifiers);
  * "covid": `data.standard_split` of the archive (the U-Net's split) and of its images with
    known sex and age (`evaluate anomaly --abnormal covid`);
  * "openi": no patient ids; the 15% test part of `split_by_patient` over the image ids
    (`OPENI_SPLIT_SEED`).

  Returns:
    sorted unique patient ids (str).

  Raises:
    ValueError: an unknown family.
  """
  test = lambda ds, idx: ds.patient_id[idx]
  held: list[np.ndarray] = []
  if family == "nih":
    archive = np.asarray(dataset.extra.get("archive", np.zeros(len(dataset), np.int16)))
    subset_only = dataset.subset(archive == 0)
    for ds in (dataset, data_lib.keep_abnormal_finding(dataset), subset_only,
               data_lib.keep_abnormal_finding(subset_only)):
      held.append(test(ds, data_lib.standard_split(ds)["test"]))
      for task in ("abnormal", "sex"):
        held.append(test(ds, _task_split(ds, task)["test"]))
  elif family == "covid":
    known = dataset.subset(np.isin(dataset.sex, ["M", "F"]) & (dataset.age >= 0))
    for ds in (dataset, known):
      held.append(test(ds, data_lib.standard_split(ds)["test"]))
  elif family == "openi":
    held.append(test(dataset, data_lib.split_by_patient(dataset.patient_id, data_lib.STANDARD_SPLIT,
                                                        seed=OPENI_SPLIT_SEED)["test"]))
  else:
    raise ValueError(f"held_out_patients: family must be 'nih', 'covid' or 'openi', got {family!r}")
  return np.unique(np.concatenate(held).astype(str)) if held else np.zeros(0, str)


def _probe_task(name: str, dataset: data_lib.CXRDataset, task: str) -> ProbeTask:
  from jaxcxr.train.classifier import task_labels  # pylint: disable=g-import-not-at-top

  _, y = task_labels(dataset, task)
  parts = _task_split(dataset, task)
  train, val = parts["train"], parts["val"]
  return ProbeTask(name=name, train_images=dataset.images[train], train_y=y[train],
                   train_patients=dataset.patient_id[train], val_images=dataset.images[val], val_y=y[val],
                   val_patients=dataset.patient_id[val])


def development_data(nih: Sequence[str | os.PathLike], covid: str | os.PathLike | None = None,
                     openi: str | os.PathLike | None = None) -> DevelopmentData:
  """The pretraining images of every archive given (test patients held out) and the NIH probe tasks.

  Args:
    nih: the NIH archives in the shared npz format, subset first (e.g. `NIH_ARCHIVES` in the data folder).
    covid: the COVID-19 archive, or None.
    openi: the OpenI normal archive, or None.

  Returns:
    `DevelopmentData`: `pretrain` (every image of every given archive whose patient is not in
    `held_out_patients`; no labels used), `probes` ("pneumonia": NIH no finding vs pneumonia,
    the abnormal classifiers' split with abnormal meaning pneumonia; "sex": female vs male, the
    sex classifiers' split), and `description` (per archive: images, patients, held-out
    patients and images, the rule).

  Raises:
    jaxcxr.data.DataError: unreadable archives, or no NIH archive.
  """
  nih = [nih] if isinstance(nih, (str, os.PathLike)) else list(nih)
  if not nih:
    raise data_lib.DataError("development_data: no NIH archive given (the probes need its labels)")
  families = [("nih", data_lib.load(nih))]
  if covid is not None:
    families.append(("covid", data_lib.load(covid)))
  if openi is not None:
    families.append(("openi", data_lib.load(openi)))
  kept, description = [], {"rule": "every image except the test patients of every split the project uses "
                                   "(held_out_patients)", "archives": {}}
  for family, ds in families:
    held = held_out_patients(ds, family)
    keep = ~np.isin(ds.patient_id.astype(str), held)
    kept.append(ds.subset(keep))
    description["archives"][family] = {
        "source": ds.source, "images": len(ds), "patients": int(len(np.unique(ds.patient_id))),
        "held_out_patients": int(len(held)), "held_out_images": int((~keep).sum()),
        "pretrain_images": int(keep.sum())}
  pretrain = data_lib.concatenate(kept) if len(kept) > 1 else kept[0]
  description["pretrain_images"] = len(pretrain)
  nih_ds = families[0][1]
  probes = (_probe_task("pneumonia", data_lib.keep_abnormal_finding(nih_ds), "abnormal"),
            _probe_task("sex", nih_ds, "sex"))
  description["probes"] = {p.name: {"n_train": int(len(p.train_y)), "n_val": int(len(p.val_y)),
                                    "val_positives": int(p.val_y.sum())} for p in probes}
  return DevelopmentData(pretrain=pretrain, probes=probes, description=description)


def archives_in(folder: str | os.PathLike) -> dict[str, Any]:
  """{"nih": [paths], "covid": path or None, "openi": path or None}: the development archives in `folder`.

  Raises:
    jaxcxr.data.DataError: the folder lacks the NIH subset archive.
  """
  folder = pathlib.Path(folder)
  nih = [folder / name for name in NIH_ARCHIVES if (folder / name).is_file()]
  if not nih or nih[0].name != NIH_ARCHIVES[0]:
    raise data_lib.DataError(f"{folder}: no {NIH_ARCHIVES[0]} (expected the shared data folder)")
  optional = lambda name: folder / name if (folder / name).is_file() else None
  return {"nih": nih, "covid": optional(COVID_ARCHIVE), "openi": optional(OPENI_ARCHIVE)}


# =============================================================================
# Augmentation
# =============================================================================


def _blur(image: jax.Array, sigma: jax.Array, radius: int) -> jax.Array:
  """Separable Gaussian blur of (H, W) with a traced sigma, edges replicated (shifted sums, no convolve)."""
  t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  kernel = jnp.exp(-0.5 * jnp.square(t / jnp.maximum(sigma, 1e-3)))
  kernel = kernel / kernel.sum()
  h, w = image.shape
  padded = jnp.pad(image, radius, mode="edge")
  rows = sum(kernel[i] * padded[i: i + h, :] for i in range(2 * radius + 1))
  return sum(kernel[i] * rows[:, i: i + w] for i in range(2 * radius + 1))


def _view_draws(key: jax.Array, r: int, config: CXRAugmentConfig) -> dict[str, jax.Array]:
  """The random parameters of one view of an (r, r) image (see `draw_views`)."""
  k = jax.random.split(key, 12)
  draws = {"area": jax.random.uniform(k[0], minval=config.crop_area[0], maxval=config.crop_area[1]),
           "log_aspect": jax.random.uniform(k[1], minval=math.log(config.crop_aspect[0]),
                                            maxval=math.log(config.crop_aspect[1])),
           "position": jax.random.uniform(k[2], (2,)),
           "shift": config.translation * jax.random.uniform(k[3], (2,), minval=-1.0, maxval=1.0),
           "angle": math.radians(config.rotation_deg) * jax.random.uniform(k[4], minval=-1.0, maxval=1.0),
           "log_gamma": math.log(config.gamma) * jax.random.uniform(k[5], minval=-1.0, maxval=1.0),
           "contrast": 1.0 + config.contrast * jax.random.uniform(k[6], minval=-1.0, maxval=1.0),
           "brightness": config.brightness * jax.random.uniform(k[7], minval=-1.0, maxval=1.0)}
  if config.blur_prob > 0:
    draws["blur_sigma"] = jax.random.uniform(k[8], minval=config.blur_sigma[0], maxval=config.blur_sigma[1])
    draws["blur"] = jax.random.uniform(k[9]) < config.blur_prob
  if config.noise > 0:
    draws["noise"] = config.noise * jax.random.uniform(k[10]) * jax.random.normal(k[11], (r, r))
  return draws


def _view(image: jax.Array, draws: dict[str, jax.Array], config: CXRAugmentConfig) -> jax.Array:
  """One view of one uint8 (R, R) image with its draws (`_view_draws`): float32 (R, R) in [0, 1]."""
  r = image.shape[0]
  crop_w = jnp.minimum(jnp.sqrt(draws["area"] * jnp.exp(draws["log_aspect"])), 1.0)      # fractions of the side
  crop_h = jnp.minimum(jnp.sqrt(draws["area"] / jnp.exp(draws["log_aspect"])), 1.0)
  centre = (jnp.stack([crop_h, crop_w]) / 2 + draws["position"] * (1 - jnp.stack([crop_h, crop_w]))
            + draws["shift"])
  # Output pixel (i, j) -> its offset from the view's centre in output fractions, scaled to the crop, rotated.
  u = (jnp.arange(r, dtype=jnp.float32) + 0.5) / r - 0.5
  oy, ox = jnp.meshgrid(u * crop_h, u * crop_w, indexing="ij")
  cos, sin = jnp.cos(draws["angle"]), jnp.sin(draws["angle"])
  src_y = (centre[0] + cos * oy - sin * ox) * r - 0.5
  src_x = (centre[1] + sin * oy + cos * ox) * r - 0.5
  x = jax.scipy.ndimage.map_coordinates(image.astype(jnp.float32) / 255.0, [src_y, src_x], order=1,
                                        mode="constant", cval=0.0)
  x = jnp.power(jnp.clip(x, 0.0, 1.0), jnp.exp(draws["log_gamma"]))
  mean = x.mean()
  x = (x - mean) * draws["contrast"] + mean + draws["brightness"]
  if config.blur_prob > 0:
    radius = max(1, math.ceil(2 * config.blur_sigma[1]))
    x = jnp.where(draws["blur"], _blur(x, draws["blur_sigma"], radius), x)
  if config.noise > 0:
    x = x + draws["noise"]
  return jnp.clip(x, 0.0, 1.0)


def draw_views(key: jax.Array, batch: int, resolution: int, config: CXRAugmentConfig = CXRAugmentConfig()
               ) -> dict[str, jax.Array]:
  """The random parameters of `augment_views(key, images, config)` for `batch` images of side `resolution`.

  Per image (a leading batch axis on each): "area" (the crop's area fraction), "log_aspect"
  (log width / height), "position" (2,) (where the crop lies inside the image, U[0, 1) per
  axis), "shift" (2,) (the extra translation, fractions of the side), "angle" (radians),
  "log_gamma", "contrast" (the factor), "brightness" (the shift); with `blur_prob` > 0
  "blur_sigma" and "blur" (bool, whether to blur); with `noise` > 0 "noise" (R, R), the
  additive noise field. `apply_views` turns them into the views.

  Args:
    key: PRNG key of the batch (one split per image).
    batch, resolution: the images' count and side.
    config: ranges (static).
  """
  return jax.vmap(lambda k: _view_draws(k, resolution, config))(jax.random.split(key, batch))


def apply_views(images: jax.Array, draws: dict[str, jax.Array], config: CXRAugmentConfig = CXRAugmentConfig()
                ) -> jax.Array:
  """The views of uint8 (B, R, R) images with given draws (`draw_views`): float32 (B, R, R, 1) in [-1, 1]."""
  views = jax.vmap(lambda x, d: _view(x, d, config))(images, draws)
  return (views * 2.0 - 1.0)[..., None]


def augment_views(key: jax.Array, images: jax.Array, config: CXRAugmentConfig = CXRAugmentConfig()) -> jax.Array:
  """One random view per image, jit-able: uint8 (B, R, R) -> float32 (B, R, R, 1) in [-1, 1] (encoder space).

  Per image: random resized crop (area, aspect) placed at random inside the image, shifted by
  up to `translation`, rotated about its centre, resampled bilinearly to R x R (black outside
  the image); then gamma, contrast about the view's mean, brightness, with probability
  `blur_prob` a Gaussian blur, and noise; clipped to [0, 1]. No flip. The same as
  `apply_views(images, draw_views(key, B, R, config), config)`.

  Args:
    key: PRNG key of the batch (one split per image).
    images: uint8 (B, R, R).
    config: ranges (static).

  Raises:
    ValueError: images that are not (B, R, R).
  """
  if not hasattr(images, "ndim") or images.ndim != 3 or images.shape[1] != images.shape[2]:
    raise ValueError(f"augment_views: expected square images (B, R, R), got {getattr(images, 'shape', images)}")
  return apply_views(images, draw_views(key, images.shape[0], images.shape[1], config), config)


# =============================================================================
# Losses and heads
# =============================================================================


def _normalize(z: jax.Array) -> jax.Array:
  return z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), 1e-12))


def nt_xent_loss(z1: jax.Array, z2: jax.Array, temperature: float) -> jax.Array:
  """SimCLR's NT-Xent loss of two views' projections, averaged over the 2B anchors.

  For anchor i of the 2B projections (cosine similarity s, temperature t) and its other view p(i):
  -log(exp(s_ip / t) / sum_{k != i} exp(s_ik / t)).

  Args:
    z1, z2: float (B, d), the projections of the two views of the same B images (row i with row i).
    temperature: t > 0.

  Returns:
    float32 scalar. For identical views of B orthonormal projections, log(1 + (2B - 2) exp(-1 / t)).
  """
  b = z1.shape[0]
  z = _normalize(jnp.concatenate([z1, z2]).astype(jnp.float32))
  sim = (z @ z.T) / temperature
  sim = jnp.where(jnp.eye(2 * b, dtype=bool), -jnp.inf, sim)
  positive = jnp.concatenate([jnp.arange(b) + b, jnp.arange(b)])
  return jnp.mean(jax.nn.logsumexp(sim, axis=1) - sim[jnp.arange(2 * b), positive])


def vicreg_loss(z1: jax.Array, z2: jax.Array, weights: tuple[float, float, float] = (25.0, 25.0, 1.0)
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """VICReg's loss of two views' projections: lambda * invariance + mu * variance + nu * covariance.

  invariance = mean squared difference of z1 and z2; variance = the mean over the two views of
  mean_j relu(1 - sqrt(var_j + 1e-4)) (var over the batch, ddof 1); covariance = sum over the two
  views of the squared off-diagonal entries of the covariance matrix (ddof 1) divided by d.

  Args:
    z1, z2: float (B, d), B >= 2.
    weights: (lambda, mu, nu).

  Returns:
    (float32 loss, {"invariance", "variance", "covariance"}).
  """
  z1, z2 = z1.astype(jnp.float32), z2.astype(jnp.float32)
  n, d = z1.shape

  def variance(z):
    return jnp.mean(jax.nn.relu(1.0 - jnp.sqrt(jnp.var(z, axis=0, ddof=1) + 1e-4)))

  def covariance(z):
    zc = z - z.mean(axis=0, keepdims=True)
    cov = zc.T @ zc / (n - 1)
    return (jnp.sum(jnp.square(cov)) - jnp.sum(jnp.square(jnp.diagonal(cov)))) / d

  parts = {"invariance": jnp.mean(jnp.square(z1 - z2)), "variance": (variance(z1) + variance(z2)) / 2,
           "covariance": covariance(z1) + covariance(z2)}
  lam, mu, nu = weights
  return lam * parts["invariance"] + mu * parts["variance"] + nu * parts["covariance"], parts


def byol_loss(p: jax.Array, target: jax.Array) -> jax.Array:
  """BYOL's regression loss, mean over rows of 2 - 2 cos(p, target) (target not differentiated)."""
  target = jax.lax.stop_gradient(target)
  return jnp.mean(2.0 - 2.0 * jnp.sum(_normalize(p.astype(jnp.float32)) * _normalize(target.astype(jnp.float32)),
                                      axis=-1))


class Projector(nnx.Module):
  """MLP head of the training objective: (Linear, LayerNorm, ReLU) per hidden width, then a Linear output."""

  def __init__(self, d_in: int, widths: tuple[int, ...], *, rngs: nnx.Rngs):
    dims = (d_in,) + tuple(widths)
    self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-2], dims[1:-1])])
    self.norms = nnx.List([nnx.LayerNorm(b, rngs=rngs) for b in dims[1:-1]])
    self.out = nnx.Linear(dims[-2], dims[-1], rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    for linear, norm in zip(self.hidden, self.norms):
      x = jax.nn.relu(norm(linear(x)))
    return self.out(x)


# =============================================================================
# State and step
# =============================================================================


def _heads(config: CXREncoderTrainConfig, rngs: nnx.Rngs) -> dict[str, nnx.Module]:
  heads = {"projector": Projector(config.encoder.embedding_dim, config.projector, rngs=rngs)}
  if config.method == "byol":
    heads["predictor"] = Projector(config.projector[-1], (config.predictor_hidden, config.projector[-1]), rngs=rngs)
  return heads


@functools.lru_cache(maxsize=8)
def _graphdefs(config: CXREncoderTrainConfig) -> dict[str, Any]:
  models = nnx.eval_shape(lambda: {"encoder": CXREncoder(config.encoder, rngs=nnx.Rngs(0)),
                                   **_heads(config, nnx.Rngs(0))})
  return {name: nnx.graphdef(m) for name, m in models.items()}


def _optimizer(config: CXREncoderTrainConfig) -> optax.GradientTransformation:
  # Linear warm-up, then constant: the schedule never depends on `steps` (runs are extended).
  schedule = optax.linear_schedule(0.0, config.learning_rate, max(config.warmup_steps, 1))
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: str(getattr(path[-1], "key", path[-1])) == "kernel", params)
  parts = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip > 0 else []
  parts.append(optax.adamw(schedule, weight_decay=config.weight_decay, mask=decay_mask))
  return optax.chain(*parts)


def init_train_state(config: CXREncoderTrainConfig, seed: int = 0) -> TrainState:
  """Fresh state {"step", "key", "params": {"encoder", "projector"[, "predictor"]}, "opt"[, "target"]}."""
  return jit_init(_init, without_loop_fields(config), seed)


def _init(root: jax.Array, config: CXREncoderTrainConfig) -> TrainState:
  encoder = CXREncoder(config.encoder, rngs=nnx.Rngs(jax.random.fold_in(root, 1)))
  heads = _heads(config, nnx.Rngs(jax.random.fold_in(root, 2)))
  params = {"encoder": nnx.to_pure_dict(nnx.state(encoder, nnx.Param)),
            **{name: nnx.to_pure_dict(nnx.state(m, nnx.Param)) for name, m in heads.items()}}
  state = {"step": jnp.zeros((), jnp.int32), "key": jax.random.key_data(jax.random.fold_in(root, 3)),
           "params": params, "opt": _optimizer(config).init(params)}
  if config.method == "byol":
    state["target"] = jax.tree.map(jnp.copy, {k: params[k] for k in ("encoder", "projector")})
  return state


def _embed_and_project(defs, params, x):
  h = nnx.merge(defs["encoder"], params["encoder"])(x)
  return h, nnx.merge(defs["projector"], params["projector"])(h)


def train_step(state: TrainState, images: jax.Array, config: CXREncoderTrainConfig
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update of the encoder and its heads on two views of `batch_size` images (pure).

  Args:
    state: from `init_train_state`.
    images: uint8 (N, R, R) training images at the encoder's resolution, on device.
    config: static.

  Returns:
    (new state, metrics): "loss"; "invariance", "variance", "covariance" (vicreg); and
    "embedding_std", the standard deviation over the batch of the L2-normalised embeddings,
    averaged over dimensions (about 1 / sqrt(D) when spread out, 0 at collapse).
  """
  defs = _graphdefs(config)
  tx = _optimizer(config)
  b = config.batch_size
  key = jax.random.fold_in(jax.random.wrap_key_data(state["key"], impl=KEY_IMPL), state["step"])
  k_idx, k_a, k_b = jax.random.split(key, 3)
  idx = jax.random.permutation(k_idx, images.shape[0])[:b]
  batch = images[idx]
  views = jnp.concatenate([augment_views(k_a, batch, config.augment), augment_views(k_b, batch, config.augment)])

  def loss_fn(params):
    h, z = _embed_and_project(defs, params, views)
    extra = {}
    if config.method == "simclr":
      loss = nt_xent_loss(z[:b], z[b:], config.temperature)
    elif config.method == "vicreg":
      loss, extra = vicreg_loss(z[:b], z[b:], config.vicreg_weights)
    else:
      p = nnx.merge(defs["predictor"], params["predictor"])(z)
      _, t = _embed_and_project(defs, state["target"], views)
      loss = byol_loss(p[:b], t[b:]) + byol_loss(p[b:], t[:b])
    spread = jnp.mean(jnp.std(_normalize(jax.lax.stop_gradient(h)), axis=0))
    return loss, {**extra, "embedding_std": spread}

  (loss, extra), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
  with jax.numpy_dtype_promotion("standard"):
    updates, opt = tx.update(grads, state["opt"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  new_state = {**state, "step": state["step"] + 1, "params": params, "opt": opt}
  if config.method == "byol":
    tau = config.target_decay
    new_state["target"] = jax.tree.map(lambda t, p: tau * t + (1.0 - tau) * p, state["target"],
                                       {k: params[k] for k in ("encoder", "projector")})
  return new_state, {"loss": loss, **extra}


def make_train_step(config: CXREncoderTrainConfig):
  """Jitted `steps_per_call` steps in one `lax.scan` (state donated, fully unrolled), cached per config."""
  return compile_steps(train_step, config.steps_per_call, unroll=config.steps_per_call,
                       static=(without_loop_fields(config),))


def train_step_program(config: CXREncoderTrainConfig, images: jax.Array, *, seed: int = 0) -> Program:
  """The compiled training call `train_cxr_encoder` makes, and its arguments on a fresh state.

  Args:
    config: the training config.
    images: the training images the step draws its batches from, uint8 (N, R, R) at the
      encoder's resolution (as `prepare_images` makes them; placed on the device here, as the
      trainer places them).
    seed: seed of the fresh state (`init_train_state`).

  Returns:
    `Program(fn, args, donated=(0,))`: `fn(state, images)` = `make_train_step(config)`, which runs
    `config.steps_per_call` steps and returns (state, metrics stacked over the steps). The
    state (position 0) is donated: call again with `fresh_args()`.
  """
  return Program(make_train_step(config), (init_train_state(config, seed), jax.device_put(images)), donated=(0,))


def encoder_of(state: TrainState, config: CXREncoderTrainConfig) -> CXREncoder:
  """The encoder of a train state (host copies of its parameters)."""
  return nnx.merge(_graphdefs(config)["encoder"], host_copy(state["params"]["encoder"]))


def projector_of(state: TrainState, config: CXREncoderTrainConfig) -> Projector:
  """The projector of a train state (host copies of its parameters)."""
  return nnx.merge(_graphdefs(config)["projector"], host_copy(state["params"]["projector"]))


# =============================================================================
# Linear probes
# =============================================================================


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, train_groups: np.ndarray, val_x: np.ndarray,
                 val_y: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
  """Logistic regression on frozen features, fitted on training patients, scored on validation patients.

  Standardised features, L2 logistic regression (lbfgs, deterministic); the strength C from
  1e-4..10 by 5-fold cross-validated ROC AUC on the training images, folds grouped by patient
  and stratified (`StratifiedGroupKFold`), then refitted on all of them.

  Args:
    train_x, val_x: float (N, D) features.
    train_y, val_y: 0/1 targets.
    train_groups: patient id of each training image.

  Returns:
    ({"roc_auc", "ci95": [low, high] (DeLong), "C", "n_train", "n_val"}, validation probabilities).

  Raises:
    jaxcxr.data.DataError: fewer than 2 images of a class in the training or validation part.
  """
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold  # pylint: disable=g-import-not-at-top
  from sklearn.pipeline import make_pipeline  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top

  train_y, val_y = np.asarray(train_y).astype(np.int64), np.asarray(val_y).astype(np.int64)
  folds = int(min(5, np.bincount(train_y, minlength=2).min()))
  if folds < 2 or np.bincount(val_y, minlength=2).min() < 2:
    raise data_lib.DataError("linear_probe needs at least 2 training and 2 validation images of each class")
  search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
                        {"logisticregression__C": np.logspace(-4, 1, 11)}, cv=StratifiedGroupKFold(folds),
                        scoring="roc_auc")
  search.fit(np.asarray(train_x, np.float64), train_y, groups=np.asarray(train_groups).astype(str))
  prob = search.predict_proba(np.asarray(val_x, np.float64))[:, 1]
  ci = metrics_lib.compute_roc_auc_ci(prob, val_y)
  return {"roc_auc": ci["roc_auc"], "ci95": [ci["low"], ci["high"]],
          "C": float(search.best_params_["logisticregression__C"]), "n_train": int(len(train_y)),
          "n_val": int(len(val_y))}, prob


def probe_encoder(encoder: CXREncoder, tasks: Sequence[ProbeTask], *, batch_size: int = 64) -> dict[str, Any]:
  """`linear_probe` of the encoder's global embedding for each task: {task name: result}."""
  out = {}
  for task in tasks:
    train_x = embed_images(encoder, task.train_images, batch_size=batch_size)
    val_x = embed_images(encoder, task.val_images, batch_size=batch_size)
    out[task.name], _ = linear_probe(train_x, task.train_y, task.train_patients, val_x, task.val_y)
  return out


# =============================================================================
# Loop
# =============================================================================


def _save_encoder(out_dir: pathlib.Path, encoder: CXREncoder, config: CXREncoderTrainConfig, step: int,
                  metadata: dict[str, Any]) -> pathlib.Path:
  from jaxcxr import checkpoints  # pylint: disable=g-import-not-at-top  (orbax is heavy)

  return checkpoints.save_model(out_dir / "encoder", encoder, config.encoder,
                                metadata={**metadata, "steps": step, "method": config.method,
                                          "train_config": json.loads(json.dumps(dataclasses.asdict(config)))},
                                overwrite=True)


def train_cxr_encoder(dataset: data_lib.CXRDataset, config: CXREncoderTrainConfig, out_dir: str | os.PathLike, *,
                      probes: Sequence[ProbeTask] = (), description: dict[str, Any] | None = None,
                      resume: bool = False, seed: int = 0, progress: bool = True,
                      stop_at: int | None = None) -> dict[str, Any]:
  """Trains the CXR encoder without labels; linear probes on validation patients follow its progress.

  Writes under `out_dir`: `checkpoints/STEP/` (the whole train state, every `checkpoint_every`
  steps and at the end), `metrics.jsonl` (losses per call), `probes.jsonl` (one line per probe:
  step, training seconds so far, each task's validation AUC and DeLong interval) and `encoder/`
  (`checkpoints.save_model`: the encoder's inference weights, its probe and the data's
  provenance in its metadata), written at each probe and when the run ends or stops between
  probes (then "probe" is None and "last_probe" the latest). A run killed at any moment
  continues from its last checkpoint with `resume=True` and ends as an uninterrupted one.

  Args:
    dataset: the pretraining images (uint8 256x256 or any square size; labels unused), e.g.
      `development_data(...).pretrain`.
    config: e.g. `cxr_encoder_cpu("vicreg")`.
    out_dir: output folder.
    probes: labelled tasks for the linear probes (`development_data(...).probes`); none: no probes.
    description: JSON facts about the data saved with the encoder (`development_data(...).description`).
    resume: continue from the latest checkpoint in `out_dir`.
    seed: seed of the initial weights and of the training randomness.
    progress: tqdm bar on stderr.
    stop_at: stop after this step (a multiple of steps_per_call) with a checkpoint; None runs to `config.steps`.

  Returns:
    {"steps", "start_step", "seconds", "compile_seconds", "seconds_per_step", "images_per_second",
    "final", "probes" (the latest), "encoder" (path), "out_dir", "provenance"}.

  Raises:
    jaxcxr.data.DataError: fewer images than one batch, or images that are not square uint8.
    FileExistsError: `out_dir` holds checkpoints and `resume` is False.
  """
  if len(dataset) < config.batch_size:
    raise data_lib.DataError(f"{dataset.source or 'dataset'}: {len(dataset)} image(s), fewer than one batch of "
                             f"{config.batch_size}")
  images = prepare_images(dataset.images, config.encoder.resolution)
  out_dir = pathlib.Path(out_dir)
  probes = tuple(probes)
  history: list[dict[str, Any]] = []
  wall_start = time.perf_counter()
  previous = {"train_seconds": 0.0}
  metadata = {"seed": seed, "n_images": len(dataset), "device": device_name(), **data_metadata(dataset),
              "data": description or {}, "provenance": provenance(dataset.source, {"seed": seed})}

  def probe(step: int, state: TrainState) -> None:
    due = config.eval_every and step % config.eval_every == 0
    if not (due or step == config.steps):
      return None
    encoder = encoder_of(state, config)
    record = {"step": step, "train_seconds": previous["train_seconds"] + time.perf_counter() - wall_start}
    if probes:
      record.update(probe_encoder(encoder, probes, batch_size=config.eval_batch_size))
    history.append(record)
    io_lib.save_json_lines(out_dir / "probes.jsonl", history)
    _save_encoder(out_dir, encoder, config, step, {**metadata, "probe": record})
    return None

  def on_resume(saved: dict[str, Any]) -> None:
    previous["train_seconds"] = float(saved.get("train_seconds", 0.0))
    history[:] = [r for r in saved.get("probes", []) if isinstance(r, dict)]
    io_lib.save_json_lines(out_dir / "probes.jsonl", history)   # drops a killed run's later lines

  def postfix(m, _):
    post = {"loss": f"{float(np.mean(m['loss'])):.3f}", "std": f"{float(np.mean(m['embedding_std'])):.3f}"}
    for task in probes:
      if history and task.name in history[-1]:
        post[task.name] = f"{history[-1][task.name]['roc_auc']:.3f}"
    return post

  loop = run_training_loop(
      name=f"encoder:{config.method}", config=config, state=init_train_state(config, seed),
      train_call=make_train_step(config), args=(jax.device_put(images),), out_dir=out_dir, resume=resume,
      progress=progress, stop_at=stop_at,
      run_metadata={"seed": seed, "n_images": len(dataset), "data_sha256": data_metadata(dataset).get("data_sha256")},
      checkpoint_metadata=lambda _: {"probes": list(history)}, on_resume=on_resume, on_call=probe, postfix=postfix)
  if loop.step == config.steps and (not history or history[-1]["step"] != loop.step):
    probe(loop.step, loop.state)    # a run resumed at its end, written before the final probe
  path = out_dir / "encoder"
  if not history or history[-1]["step"] != loop.step:   # stopped between probes: the encoder of this step
    path = _save_encoder(out_dir, encoder_of(loop.state, config), config, loop.step,
                         {**metadata, "probe": None, "last_probe": history[-1] if history else None})
  return {**loop_summary(loop, config), "probes": history[-1] if history else None, "encoder": str(path.absolute()),
          "out_dir": str(out_dir), "provenance": metadata["provenance"]}

