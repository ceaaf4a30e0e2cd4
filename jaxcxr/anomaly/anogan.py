"""AnoGAN latent search (Schlegl et al. 2017): the anomaly score of an image is how well a GAN trained on
normal images can reproduce it.

For a query x (NHWC, generator space [-1, 1]) and its condition c, the search
minimises over the latent z

    L(z) = (1 - l) * mean|x - G(z, c)| + l * mean|f(x) - f(G(z, c))|

with Adam, where f is `Discriminator.features` (the final 4x4 feature map, an
intermediate discriminator layer as in the original) and l = 0.1; or, passed in the
discriminator's place, `EncoderFeatures`: one stage of a CXR encoder's patch features.
The final loss is the anomaly score and |x - G(z*, c)| the residual map. With
`LatentSearchConfig.intensity_affine`, G(z, c) stands for a * G(z, c) + b, a per-image
intensity affine fitted jointly with z in the same steps (the query's exposure and
contrast are then not counted as anomaly).

Mirrors the reference AnoGAN procedure (500 Adam steps per image from a random z)
but runs it as one jitted `lax.scan` over the steps, with every (image, restart)
pair an independent problem of one stacked batch: the loss summed over problems
has, per problem, exactly that problem's gradient, Adam is element-wise, the
generator uses GroupNorm (no batch statistics) and the discriminator runs in
inference mode, so an image's result never depends on the other images of its
batch. The search is a `jax.jit` of a pure function over the `nnx.split` state of
G and D (much lower per-call overhead than `nnx.jit`); `search_program` returns
that jitted function and its arguments, for lowering and timing.

The method's loader is `load_anogan` (a normal-only GAN folder); its scorer for
`jaxcxr.anomaly.evaluate_anomaly` is `AnoganScorer`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcxr import data
from jaxcxr.anomaly.scorer import AbstractAnomalyScorer
from jaxcxr.batching import map_batches
from jaxcxr.config import DTYPES
from jaxcxr.models import condition as condition_lib
from jaxcxr.models import generator as generator_lib
from jaxcxr.models.cxr_encoder import CXREncoder
from jaxcxr.models.discriminator import Discriminator, load_discriminator
from jaxcxr.models.generator import Generator, load_generator
from jaxcxr.models.graph import abstract_graphdef
from jaxcxr.program import Program

__all__ = [
    "SHIPPED_FEATURE_STAGE",
    "SHIPPED_SEARCH",
    "AnoganScorer",
    "AnomalyScores",
    "EncoderFeatures",
    "LatentSearchConfig",
    "LatentSearchResult",
    "anogan_scores",
    "check_pair",
    "initial_latents",
    "load_anogan",
    "search_latents",
    "search_program",
    "search_resolution",
    "shipped_search",
    "step_program",
]


@dataclasses.dataclass(frozen=True)
class LatentSearchConfig:
  """AnoGAN latent search: loss, optimiser, restarts and early stopping (defaults from Schlegl et al. 2017).

  Only `steps`, `restarts`, `early_stop_window`, `dtype` and `base_image` shape the compiled
  search; the other settings are traced scalars, so changing them does not recompile.
  """

  # Adam steps per problem (the original: 500).
  steps: int = 500
  # l in L = (1 - l) * mean|x - G(z)| + l * mean|f(x) - f(G(z))| (the original: 0.1).
  feature_weight: float = 0.1
  # Adam learning rate on z (unit-scale coordinates under the N(0, I) prior; Adam moves each by
  # about this much per step). Measured on the shipped gan_64 (8 normal fixture radiographs,
  # 500 steps): mean final loss 0.107 / 0.096 / 0.092 / 0.090 / 0.089 for 0.01 / 0.03 / 0.05 /
  # 0.1 / 0.2, with mean |z| 15 / 20 / 24 / 27 / 31 (the prior's is ~11 for 128 dims): 0.05 ends
  # within 4% of the largest rate's loss with z nearer the prior.
  learning_rate: float = 0.05
  # Random starts per image; the restart with the lowest final loss is kept. Restart 0 is the
  # same start whatever the number of restarts, so more restarts never give a worse score (up
  # to the float-level differences between batch sizes).
  restarts: int = 1
  # Early stopping: a problem's z is frozen (its updates masked, its Adam state kept) once its
  # loss fell by less than this (absolute, in loss units) over the last `early_stop_window`
  # steps. None runs every step for every problem.
  early_stop_tol: float | None = None
  # Steps over which the improvement is measured for early stopping.
  early_stop_window: int = 20
  # Compute dtype of G and D ("float32" or "bfloat16"); z, Adam state and losses stay float32.
  dtype: str = "float32"
  # Clip every coordinate of z to [-c, c] after each step (keeps z where the N(0, I) prior has
  # mass, e.g. c = 3); None leaves z unconstrained, as the original does.
  clip_latent: float | None = None
  # Search a cascade generator's base image (`Generator.base_image`, e.g. 128x128) instead of its
  # output: queries are resized to the base resolution. The normal anatomy of a normal-only
  # cascade lives in its base GAN (its upsampler learned detail from all radiographs), and each
  # step skips the upsampler (on gan_256_normal v2's 64x64 base, about 20x cheaper on a CPU).
  # Static (one compile per value). For a single-stage generator both are the same.
  base_image: bool = False
  # Fit a per-image intensity affine (a, b) jointly with z, by the same Adam steps from a = 1,
  # b = 0: the loss and the residual compare x with a * G(z) + b, so a query's exposure and
  # contrast (which the normal GAN reproduces only as far as its training images vary) are not
  # counted as anomaly. Traced: switching it does not recompile (off, the updates of a and b
  # are zero and the search is the plain one).
  intensity_affine: bool = False

  def __post_init__(self):
    if self.steps <= 0 or self.restarts <= 0 or self.early_stop_window <= 0:
      raise ValueError(f"LatentSearchConfig: expected positive steps, restarts and early_stop_window, got "
                       f"steps={self.steps}, restarts={self.restarts}, "
                       f"early_stop_window={self.early_stop_window}")
    if not 0.0 <= self.feature_weight <= 1.0:
      raise ValueError(f"LatentSearchConfig.feature_weight: expected a value in [0, 1], got {self.feature_weight}")
    if not self.learning_rate > 0:
      raise ValueError(f"LatentSearchConfig.learning_rate: expected > 0, got {self.learning_rate}")
    if self.early_stop_tol is not None and not self.early_stop_tol >= 0:
      raise ValueError(f"LatentSearchConfig.early_stop_tol: expected None or >= 0, got {self.early_stop_tol}")
    if self.clip_latent is not None and not self.clip_latent > 0:
      raise ValueError(f"LatentSearchConfig.clip_latent: expected None or > 0, got {self.clip_latent}")
    if self.dtype not in DTYPES:
      raise ValueError(f"LatentSearchConfig.dtype: expected one of {DTYPES}, got {self.dtype!r}")


# The feature term and the search `jaxcxr evaluate anomaly --method anogan` and
# `jaxcxr.pretrained.anomaly_scorer("anogan")` run unless told otherwise, chosen on the pneumonia
# task's validation patients with the residual scored inside the lungs
# (`evaluations/anogan_base_val.json`, `anogan_steps_val.json`, `anogan_v3_val.json`; commands in
# `evaluations/README.md`; the table is in `checkpoints/gan_256_normal/MODEL_CARD.md`): the
# cascade's base image; the feature term on the CXR encoder's stage 2 (`EncoderFeatures`) at
# weight 0.5, not the GAN discriminator's at the paper's 0.1 (0.706 against 0.675 at 300 steps
# on gan_256_normal v2, DeLong p = 0.025); one start; 80 steps. The AUC rises slowly with the
# steps (on v3: 0.696 / 0.704 / 0.724 at 50 / 80 / 100), and 80 is the most that meets the
# speed target of 2 s per image on one CPU core at batch 64: 1.8 s on gan_256_normal v3's
# 128x128 base (22.7 ms per image and step; `python -m benchmarks.run --suite anogan`, record
# `search_shipped`). The intensity affine, exposure-normalised queries, early stopping and a
# second start did not help.
SHIPPED_FEATURE_STAGE = "stage2"
SHIPPED_SEARCH = LatentSearchConfig(steps=80, feature_weight=0.5, base_image=True)


def shipped_search(feature_term: str = "encoder") -> LatentSearchConfig:
  """`SHIPPED_SEARCH` for a feature term: "encoder" as chosen, "discriminator" at the original's weight (0.1).

  Raises:
    ValueError: another feature term.
  """
  if feature_term == "encoder":
    return SHIPPED_SEARCH
  if feature_term == "discriminator":
    return dataclasses.replace(SHIPPED_SEARCH, feature_weight=LatentSearchConfig.feature_weight)
  raise ValueError(f"unknown feature_term {feature_term!r}; expected 'encoder' or 'discriminator'")


class LatentSearchResult(NamedTuple):
  """Per-image outcome of `search_latents` (jax arrays; sharded over the batch when the search was).

  Attributes:
    z: float32 (B, latent_dim), the best latent z* per image (final z of the best restart).
    score: float32 (B,), the anomaly score: the loss L(z*) of the best restart after the last
      step (higher = less like the normal training images).
    residual: float32 (B, H, W, 1), NHWC, |x - G(z*, c)| in signed image space, so in [0, 2].
    loss_trace: float32 (steps, B), the best restart's loss at each step, evaluated before that
      step's update (so `loss_trace[0]` is the loss of the initial z).
    steps_run: int32 (B,), updates the best restart actually applied (< steps when early
      stopping froze it; == steps when early stopping is off).
    restart_scores: float32 (B, R), the final loss of every restart (`score` is their
      minimum; restart 0 is the single-restart search). A wide spread flags local minima.
    residual_score: float32 (B,), mean|x - G(z*)|: the AnoGAN paper's residual score R(x).
    feature_score: float32 (B,), mean|f(x) - f(G(z*))|: its discrimination score D(x).
      `score` = (1 - l) * residual_score + l * feature_score.
    scale, offset: float32 (B,), the best restart's intensity affine (a, b): G(z*) above
      stands for a * G(z*) + b (1 and 0 unless `LatentSearchConfig.intensity_affine`).
  """

  z: jax.Array
  score: jax.Array
  residual: jax.Array
  loss_trace: jax.Array
  steps_run: jax.Array
  restart_scores: jax.Array
  residual_score: jax.Array
  feature_score: jax.Array
  scale: jax.Array
  offset: jax.Array


class AnomalyScores(NamedTuple):
  """Host results of `anogan_scores` for N images.

  Attributes:
    score: float32 (N,), the anomaly score per image (see `LatentSearchResult.score`).
    residual: float16 (N, R, R), |x - G(z*)| in signed image space [0, 2] at the searched
      resolution R (float16 halves the memory; about 3 significant digits).
    z: float32 (N, latent_dim), the best latent per image.
    steps_run: int32 (N,), updates applied to the best restart.
    residual_score: float32 (N,), mean|x - G(z*)| (the paper's residual score).
    feature_score: float32 (N,), mean|f(x) - f(G(z*))| (the paper's discrimination score).
  """

  score: np.ndarray
  residual: np.ndarray
  z: np.ndarray
  steps_run: np.ndarray
  residual_score: np.ndarray
  feature_score: np.ndarray


# ----------------------------------------------------------------------------- inputs


def _as_signed_images(images, resolution: int) -> jax.Array:
  """uint8 (B, R, R) / (B, R, R, 1) or float (B, R, R, 1) in [-1, 1] -> float32 (B, R, R, 1)."""
  shape = tuple(np.shape(images))
  dtype = np.dtype(getattr(images, "dtype", np.asarray(images).dtype))
  if dtype == np.uint8:
    if len(shape) == 3:
      shape = shape + (1,)
    if len(shape) != 4 or shape[1:] != (resolution, resolution, 1) or shape[0] == 0:
      raise ValueError(f"search_latents: expected uint8 images of shape (B, {resolution}, {resolution}) or "
                       f"(B, {resolution}, {resolution}, 1) with B >= 1, got {tuple(np.shape(images))}; resize "
                       f"with jaxcxr.data.resize_uint8 (or use anogan_scores, which does)")
    return data.to_signed(jnp.reshape(jnp.asarray(images), shape))
  if not np.issubdtype(dtype, np.floating):
    raise ValueError(f"search_latents: expected uint8 or float images, got dtype {dtype}")
  if len(shape) != 4 or shape[1:] != (resolution, resolution, 1) or shape[0] == 0:
    raise ValueError(f"search_latents: expected float images of shape (B, {resolution}, {resolution}, 1) "
                     f"(NHWC, generator space [-1, 1]) with B >= 1, got {shape}")
  x = jnp.asarray(images, jnp.float32)
  lo, hi = float(jnp.min(x)), float(jnp.max(x))     # NaN propagates through min/max
  if not (np.isfinite(lo) and np.isfinite(hi)):
    raise ValueError("search_latents: images contain non-finite pixels (NaN or inf)")
  if lo < -1.0 - 1e-3 or hi > 1.0 + 1e-3:
    raise ValueError(f"search_latents: expected float images in generator space [-1, 1], got values in "
                     f"[{lo:.4g}, {hi:.4g}] (convert uint8 with jaxcxr.data.to_signed)")
  return x


def _check_cond(cond, batch: int, conditions: tuple[str, ...]) -> jax.Array:
  shape = tuple(np.shape(cond))
  if shape != (batch, len(conditions)):
    raise ValueError(f"search_latents: expected cond of shape ({batch}, {len(conditions)}) for conditions "
                     f"{conditions} (see jaxcxr.models.make_condition), got {shape}")
  c = jnp.asarray(cond, jnp.float32)
  if not bool(jnp.all(jnp.isfinite(c))):
    raise ValueError("search_latents: cond contains non-finite values")
  return c


class EncoderFeatures(nnx.Module):
  """The feature term f on a CXR encoder's patch features, in the discriminator's place.

  The original AnoGAN matches an intermediate layer of its own discriminator, which learned
  what tells this GAN's images from real ones, not what a radiograph shows. This f is one
  stage of `models.CXREncoder`'s residual stream (self-supervised on every development
  image), so the search also matches the anatomy the encoder represents:

      generator, _ = load_anogan("checkpoints/gan_256_normal")
      f = EncoderFeatures(load_cxr_encoder("checkpoints/encoder_cxr/encoder"), "stage2")
      search_latents(generator, f, images, cond, key, LatentSearchConfig(base_image=True))

  `features(x)` resizes x (B, S, S, 1), [-1, 1], bilinearly to the encoder's input side
  (none for the 128x128 base image of `gan_256_normal` v3 and the shipped 128x128 encoder; a
  64x64 base image goes up 2x) and returns the stage with each
  position's channel vector scaled to unit length, float32 (B, h, w, C), as perceptual
  distances (LPIPS) compare deep features: the stages' raw residual streams differ between
  radiographs by 0.5 (stage1) to 3 (stage3) per element against 0.24 for the shipped
  discriminator's features, so unscaled they would outweigh the pixel term whatever l is.
  It has no conditions and no resolution of its own: any generator pairs with it.
  """

  def __init__(self, encoder: CXREncoder, stage: str = "stage2"):
    stages = [f"stage{i + 1}" for i in range(len(encoder.config.channels))]
    if stage not in stages:
      raise ValueError(f"EncoderFeatures: unknown stage {stage!r}; the encoder has {', '.join(stages)}")
    self.encoder = encoder
    self.stage = stage

  def features(self, x: jax.Array) -> jax.Array:
    r = self.encoder.config.resolution
    if x.shape[1:3] != (r, r):
      x = jax.image.resize(x.astype(jnp.float32), (x.shape[0], r, r, x.shape[3]), "bilinear")
    f = self.encoder.features(x)[self.stage]
    return f * jax.lax.rsqrt(jnp.square(f).sum(axis=-1, keepdims=True) + 1e-10)


def check_pair(generator: Generator, discriminator: Discriminator | EncoderFeatures,
               what: str = "search_latents") -> None:
  """Raises ValueError, naming `what`, unless D judges G's (base) images under G's conditions.

  An `EncoderFeatures` has no resolution or conditions: it pairs with any generator.
  """
  if isinstance(discriminator, EncoderFeatures):
    return
  g, d = generator.config, discriminator.config
  if g.base_resolution != d.resolution or tuple(g.conditions) != tuple(d.conditions):
    raise ValueError(f"{what}: generator (resolution {g.resolution}, conditions {g.conditions}) and "
                     f"discriminator (resolution {d.resolution}, conditions {d.conditions}) do not match")


# ----------------------------------------------------------------------------- search


@functools.partial(jax.jit, static_argnames=("batch_size", "latent_dim", "restarts"))
def _initial_latents(key, first_index, *, batch_size, latent_dim, restarts):
  return jnp.stack([generator_lib.latents(jax.random.fold_in(key, r), first_index, batch_size, latent_dim)
                    for r in range(restarts)], axis=1)


def initial_latents(key: jax.Array, batch_size: int, latent_dim: int, *, restarts: int = 1,
                    first_index: int = 0) -> jax.Array:
  """Random starts of the search: z[i, r] ~ N(0, I) from fold_in(fold_in(key, r), first_index + i).

  One key per (restart, image index), as `models.generator.latents`, so image i's starts
  do not depend on the batch it is searched in, and restart r does not depend on how many
  restarts are asked for.

  Returns:
    float32 (batch_size, restarts, latent_dim).

  Raises:
    ValueError: batch_size < 0, latent_dim < 1 or restarts < 1 (or not integers).
  """
  for name, value, least in (("batch_size", batch_size, 0), ("latent_dim", latent_dim, 1), ("restarts", restarts, 1)):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
      raise ValueError(f"initial_latents: {name} must be an integer >= {least}, got {value!r}")
  return _initial_latents(key, jnp.int32(first_index), batch_size=batch_size, latent_dim=latent_dim,
                          restarts=restarts)


def _mask_tree(active: jax.Array, new, old):
  """Per problem (leading axis of size N), the new leaf where active, else the old one."""
  n = active.shape[0]

  def pick(a, b):
    if a.ndim == 0 or a.shape[0] != n:
      return a                                     # shared leaves (Adam's step count)
    return jnp.where(active.reshape((n,) + (1,) * (a.ndim - 1)), a, b)

  return jax.tree.map(pick, new, old)


def _hyperparameters(config: LatentSearchConfig) -> dict[str, jax.Array]:
  """The settings that enter the search as traced float32 scalars (changing them never recompiles).

  Disabled options become neutral values: no early stopping is a tolerance of -inf (a loss
  change is never below it), no clipping a bound of +inf.
  """
  tol = -np.inf if config.early_stop_tol is None else config.early_stop_tol
  clip = np.inf if config.clip_latent is None else config.clip_latent
  return {name: jnp.float32(value) for name, value in (
      ("feature_weight", config.feature_weight), ("learning_rate", config.learning_rate),
      ("early_stop_tol", tol), ("clip_latent", clip), ("intensity_affine", float(config.intensity_affine)))}


def _affine(fake: jax.Array, scale: jax.Array, offset: jax.Array) -> jax.Array:
  """a * G + b per problem: fake (N, H, W, 1), scale and offset (N,)."""
  return scale[:, None, None, None] * fake + offset[:, None, None, None]


def _problem_losses(render, discriminator: Discriminator, x, fx, c, z, lam, scale=None, offset=None) -> jax.Array:
  """Per problem, L(z) = (1 - l) * mean|x - G(z, c)| + l * mean|f(x) - f(G(z, c))|: (N, D) -> (N,).

  `render` is G (or its base image), `fx` the precomputed features f(x), `lam` l; with `scale`
  and `offset` (N,), G stands for a * G + b (the intensity affine).
  """
  fake = render(z, c)                                                # (N, H, W, 1) float32
  if scale is not None:
    fake = _affine(fake, scale, offset)
  pixel = jnp.abs(x - fake).mean(axis=(1, 2, 3))
  feature = jnp.abs(fx - discriminator.features(fake)).mean(axis=(1, 2, 3))
  return (1.0 - lam) * pixel + lam * feature


def _search(g_graphdef, d_graphdef, g_state, d_state, images, cond, z0, hyper, *, steps: int, window: int,
            base: bool = False):
  """The whole search, one `lax.scan` over the steps (pure; jitted by `_search_fn`).

  Args:
    g_graphdef, d_graphdef: static graph definitions (`_search_inputs`).
    g_state, d_state: `nnx.state` of the generator and discriminator.
    images: float32 (B, H, W, 1), NHWC, [-1, 1].
    cond: float32 (B, C).
    z0: float32 (B, R, D) starts (donated: the final latents reuse its buffer).
    hyper: float32 scalars from `_hyperparameters`.
    steps: Adam steps (static: the scan runs steps + 1 iterations, the last one only
      evaluating the final loss).
    window: early-stopping window (static: the history buffer's length).
    base: search the generator's base image (static; `LatentSearchConfig.base_image`).

  Returns:
    (final latents (B, R, D) and loss traces (steps, B, R) of every restart,
     LatentSearchResult of the best restarts).
  """
  generator = nnx.merge(g_graphdef, g_state)
  discriminator = nnx.merge(d_graphdef, d_state)
  b, r, d = z0.shape
  n = b * r
  # Problem p = i * R + k is (image i, restart k): the batch axis stays the major one, so a
  # batch-sharded z0 (B, R, D) flattens to a batch-sharded (N, D) without moving data.
  x = jnp.repeat(images, r, axis=0)                                  # (N, H, W, 1)
  c = jnp.repeat(cond, r, axis=0)                                    # (N, C)
  fx = jnp.repeat(discriminator.features(images), r, axis=0)         # (N, 4, 4, F), once per image
  lam = hyper["feature_weight"]
  render = generator.base_image if base else generator

  def total_loss(params):                                            # (z (N, D), a (N,), b (N,)) -> scalar, (N,)
    z, scale, offset = params
    losses = _problem_losses(render, discriminator, x, fx, c, z, lam, scale, offset)
    # The sum, not the mean: each problem's gradient is its own, whatever N is.
    return losses.sum(), losses

  tx = optax.adam(hyper["learning_rate"])

  def step(carry, t):
    params, opt_state, stopped, history, steps_run = carry
    # All problems at once: chunking them (`batching.in_chunks`) was 1.12x faster on one CPU core but
    # 1.4x slower on two (benchmarks/README.md), small 64x64 chunks leave the second core idle.
    (_, losses), grads = jax.value_and_grad(total_loss, has_aux=True)(params)
    # Without the intensity affine its gradients are zero: Adam then leaves a = 1 and b = 0 exactly.
    grads = (grads[0], grads[1] * hyper["intensity_affine"], grads[2] * hyper["intensity_affine"])
    # Early stopping: history[t % W] holds the loss of W steps ago (inf before step W, and a
    # tolerance of -inf disables it: neither ever stops a problem).
    stopped = stopped | (history[t % window] - losses < hyper["early_stop_tol"])
    history = history.at[t % window].set(losses)
    # optax's Adam mixes a Python float with an int32 count: fine under standard promotion, an
    # error under strict promotion (a trace-time setting).
    with jax.numpy_dtype_promotion("standard"):
      updates, new_opt_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    new_params = (jnp.clip(new_params[0], -hyper["clip_latent"], hyper["clip_latent"]), *new_params[1:])
    # A stopped problem keeps its z, a, b and its Adam moments; shapes stay static. The extra last
    # iteration (t == steps) only evaluates the final loss.
    active = ~stopped & (t < steps)
    params = _mask_tree(active, new_params, params)
    opt_state = _mask_tree(active, new_opt_state, opt_state)
    return (params, opt_state, stopped, history, steps_run + active.astype(jnp.int32)), losses

  params = (z0.reshape(n, d), jnp.ones((n,), jnp.float32), jnp.zeros((n,), jnp.float32))
  history = jnp.full((window, n), jnp.inf, jnp.float32)
  carry = (params, tx.init(params), jnp.zeros((n,), bool), history, jnp.zeros((n,), jnp.int32))
  # steps + 1 iterations: the last one's loss is L(z_final), so the final loss needs no second
  # copy of the G + D graph to compile (one wasted gradient in steps + 1).
  ((z, scale, offset), _, _, _, steps_run), trace = jax.lax.scan(step, carry,
                                                                 jnp.arange(steps + 1, dtype=jnp.int32))
  final = trace[steps].reshape(b, r)                                 # (B, R)
  best = jnp.argmin(final, axis=1)                                   # (B,); ties -> lowest restart

  def pick(a, batch_axis=0):
    """The best restart of each image: a (..., B, R, ...) with B at batch_axis -> R dropped."""
    index = jnp.expand_dims(best, tuple(i for i in range(a.ndim) if i != batch_axis))
    return jnp.squeeze(jnp.take_along_axis(a, index, axis=batch_axis + 1), batch_axis + 1)

  z3 = z.reshape(b, r, d)
  z_best = pick(z3)
  scale_best, offset_best = pick(scale.reshape(b, r)), pick(offset.reshape(b, r))
  best_fake = _affine(render(z_best, cond), scale_best, offset_best)
  result = LatentSearchResult(
      z=z_best,
      score=pick(final),
      residual=jnp.abs(images - best_fake),
      loss_trace=pick(trace[:steps].reshape(steps, b, r), batch_axis=1),
      steps_run=pick(steps_run.reshape(b, r)),
      restart_scores=final,
      residual_score=jnp.abs(images - best_fake).mean(axis=(1, 2, 3)),
      feature_score=jnp.abs(discriminator.features(images) - discriminator.features(best_fake)).mean(axis=(1, 2, 3)),
      scale=scale_best, offset=offset_best)
  return z3, trace[:steps].reshape(steps, b, r), result


@functools.cache
def _search_fn(g_graphdef, d_graphdef, steps: int, window: int, base: bool):
  """The jitted search for these static settings (one object per settings, so one compile per shapes).

  Returns:
    `fn(g_state, d_state, images, cond, z0, hyper)` -> `_search`'s outputs; z0 (position 4) is
    donated. The other settings (learning rate, feature weight, tolerance, clipping) are traced.
  """

  def search(g_state, d_state, images, cond, z0, hyper):
    return _search(g_graphdef, d_graphdef, g_state, d_state, images, cond, z0, hyper, steps=steps, window=window,
                   base=base)

  return jax.jit(search, donate_argnums=4)


@functools.cache
def _step_fn(g_graphdef, d_graphdef, base: bool):
  """The jitted loss and gradient of one search step, one start per image (`step_program`)."""

  def step(g_state, d_state, images, cond, z, hyper):
    generator, discriminator = nnx.merge(g_graphdef, g_state), nnx.merge(d_graphdef, d_state)
    render = generator.base_image if base else generator
    fx = discriminator.features(images)
    total = lambda z: _problem_losses(render, discriminator, images, fx, cond, z, hyper["feature_weight"]).sum()
    return jax.value_and_grad(total)(z)

  return jax.jit(step)


def _batch_sharding(batch: int, shard_batch: bool | None) -> tuple[NamedSharding, NamedSharding] | None:
  """(batch-sharded, replicated) shardings over all devices, or None for a single-device search."""
  devices = jax.devices()
  divisible = batch % len(devices) == 0
  if shard_batch is None:
    shard_batch = len(devices) > 1 and divisible
  if not shard_batch:
    return None
  if not divisible:
    raise ValueError(f"search_latents: shard_batch=True needs a batch divisible by the {len(devices)} "
                     f"devices, got {batch} images")
  mesh = Mesh(np.asarray(devices), ("batch",))
  return NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())


def search_resolution(generator: Generator, config: LatentSearchConfig) -> int:
  """The side of the images the search compares: the base image's with `config.base_image`, else the output's."""
  return generator.config.base_resolution if config.base_image else generator.config.resolution


def _search_inputs(generator, discriminator, images, cond, config):
  """Checked inputs of a search: (graph definitions, states, images, cond).

  The graph definitions are built from the configs (not taken from the given modules), so
  the compute dtype is the search's and the discriminator runs in inference mode (its
  spectral-norm vectors are read, never written) whatever mode the given module is in; the
  parameter trees are the same as the stored models'.
  """
  check_pair(generator, discriminator)
  g_cfg = generator.config
  x = _as_signed_images(images, search_resolution(generator, config))
  c = _check_cond(cond, x.shape[0], tuple(g_cfg.conditions))
  if isinstance(discriminator, EncoderFeatures):   # no batch statistics; its own compute dtype
    d_graphdef = nnx.graphdef(discriminator)
  else:
    d_graphdef = abstract_graphdef(Discriminator, dataclasses.replace(discriminator.config, dtype=config.dtype),
                                   use_running_average=True)
  graphdefs = (abstract_graphdef(Generator, dataclasses.replace(g_cfg, dtype=config.dtype)), d_graphdef)
  return graphdefs, (nnx.state(generator), nnx.state(discriminator)), x, c


def search_program(generator: Generator, discriminator: Discriminator, images, cond, key: jax.Array,
                   config: LatentSearchConfig = LatentSearchConfig(), *, first_index: int = 0,
                   shard_batch: bool | None = None) -> Program:
  """The compiled AnoGAN search `search_latents` runs for these images, and its arguments.

  Arguments are checked and placed (sharded with `shard_batch`) exactly as `search_latents`
  does; `fn` is the library's own jitted search for `config`'s static settings, so its
  compile cache is the one `search_latents` uses.

  Args:
    generator, discriminator, images, cond, key, config, first_index, shard_batch: as
      `search_latents`.

  Returns:
    `Program(fn, args, donated=(4,))`: `fn(g_state, d_state, images, cond, z0, hyper)` ->
    (final latents (B, R, D) and loss traces (steps, B, R) of every restart R, the
    `LatentSearchResult` of the best restarts). The starts z0 (position 4) are donated: the
    final latents reuse their buffer.

  Raises:
    ValueError: as `search_latents`.

  Examples:
    >>> program = search_program(generator, discriminator, images, cond, jax.random.key(0))  # doctest: +SKIP
    >>> compiled = program.fn.lower(*program.args).compile()                                # doctest: +SKIP
    >>> z_all, traces, result = compiled(*program.fresh_args())                             # doctest: +SKIP
  """
  (g_graphdef, d_graphdef), (g_state, d_state), x, c = _search_inputs(generator, discriminator, images, cond, config)
  z0 = initial_latents(key, x.shape[0], generator.config.latent_dim, restarts=config.restarts,
                       first_index=first_index)
  shardings = _batch_sharding(x.shape[0], shard_batch)
  if shardings is not None:
    batch, replicated = shardings
    x, c, z0 = jax.device_put((x, c, z0), batch)
    g_state, d_state, hyper = jax.device_put((g_state, d_state, _hyperparameters(config)), replicated)
  else:
    hyper = _hyperparameters(config)
  fn = _search_fn(g_graphdef, d_graphdef, config.steps, config.early_stop_window, config.base_image)
  return Program(fn, (g_state, d_state, x, c, z0, hyper), donated=(4,))


def step_program(generator: Generator, discriminator: Discriminator, images, cond,
                 config: LatentSearchConfig = LatentSearchConfig()) -> Program:
  """One step of the search as its own compiled function: the loss and its gradient for z = 0, one start per image.

  The unit the search's cost is made of: XLA's cost analysis counts a `lax.scan` body once,
  so the FLOPs of a search of `steps` steps are about `steps + 1` times this program's.
  The function also computes the discriminator features f(x) of the queries, which the
  search computes once per call.

  Args:
    generator, discriminator, images, cond, config: as `search_latents`.

  Returns:
    `Program(fn, args)`: `fn(g_state, d_state, images, cond, z, hyper)` -> (the loss summed
    over the images, its gradient float32 (B, latent_dim)).

  Raises:
    ValueError: as `search_latents`.
  """
  (g_graphdef, d_graphdef), states, x, c = _search_inputs(generator, discriminator, images, cond, config)
  z = jnp.zeros((x.shape[0], generator.config.latent_dim), jnp.float32)
  return Program(_step_fn(g_graphdef, d_graphdef, config.base_image), (*states, x, c, z, _hyperparameters(config)))


def search_latents(generator: Generator, discriminator: Discriminator, images, cond, key: jax.Array,
                   config: LatentSearchConfig = LatentSearchConfig(), *, first_index: int = 0,
                   shard_batch: bool | None = None) -> LatentSearchResult:
  """AnoGAN latent search for a batch of images, one jitted `lax.scan` (Schlegl et al. 2017).

  Minimises, for every image i and restart r independently, with Adam on z,

      L_i(z) = (1 - l) * mean|x_i - G(z, c_i)| + l * mean|f(x_i) - f(G(z, c_i))|

  (l = `config.feature_weight`, f = `discriminator.features`, means over pixels and
  feature elements), and keeps per image the restart with the lowest final loss.
  Per-image results do not depend on the batch (see the module docstring); the
  first call for a model structure, batch size, `steps`, `restarts`,
  `early_stop_window` and `dtype` compiles; later calls reuse it (the learning rate,
  feature weight, tolerance and clipping are traced).

  When several devices are visible and the batch divides evenly (or with
  `shard_batch=True`), the batch axis is sharded over a one-axis mesh named
  "batch" and the weights replicated; the results equal a single-device search to
  float tolerance.

  Args:
    generator: a `Generator` trained on normal images (e.g. `load_generator`).
    discriminator: its `Discriminator`; always run in inference mode here (its
      spectral-norm vectors are read, never updated).
    images: (B, R, R, 1) float NHWC in generator space [-1, 1], or uint8 (B, R, R) /
      (B, R, R, 1) in [0, 255] (converted with `data.to_signed`), R the generator's
      resolution (its base resolution with `config.base_image`; `search_resolution`).
    cond: float32 (B, len(conditions)) condition rows, as the generator expects (see
      `models.make_condition`, `models.dataset_condition`).
    key: PRNG key of the random starts.
    config: the search settings.
    first_index: global index of images[0]: image i starts from
      `initial_latents(key, ..., first_index=first_index)[i]`, so a dataset searched in
      batches gets the same starts whatever the batch size.
    shard_batch: None shards when possible; False never; True requires it.

  Returns:
    `LatentSearchResult` (jax arrays): z (B, latent_dim), score (B,), residual
    (B, R, R, 1) in [0, 2], loss_trace (steps, B), steps_run (B,), restart_scores
    (B, restarts).

  Raises:
    ValueError: images of the wrong shape, resolution or range, non-finite pixels or
      conditions, a cond of the wrong width, mismatched G and D, or `shard_batch=True`
      with an indivisible batch.

  Examples:
    Three steps on the base images of the shipped normal-only GAN (`jaxcxr.load_pretrained`):

    >>> import jax, numpy as np
    >>> import jaxcxr
    >>> from jaxcxr.models import make_condition
    >>> generator, discriminator = jaxcxr.load_pretrained().normal_gan
    >>> config = LatentSearchConfig(steps=3, base_image=True)
    >>> r = search_resolution(generator, config)   # the 128x128 base image of the 256x256 cascade
    >>> images = np.random.default_rng(0).integers(0, 256, (2, r, r), dtype=np.uint8)
    >>> cond = make_condition(["F", "M"], [60, 40], conditions=generator.config.conditions)
    >>> res = search_latents(generator, discriminator, images, cond, jax.random.key(0), config)
    >>> res.score.shape, res.residual.shape, res.loss_trace.shape, res.z.shape
    ((2,), (2, 128, 128, 1), (3, 2), (2, 128))

  References:
    Schlegl, Seeböck, Waldstein, Schmidt-Erfurth, Langs: Unsupervised anomaly detection
    with generative adversarial networks to guide marker discovery. IPMI 2017.
  """
  program = search_program(generator, discriminator, images, cond, key, config, first_index=first_index,
                           shard_batch=shard_batch)
  _, _, result = program.fn(*program.args)
  return result


# ----------------------------------------------------------------------------- datasets


def anogan_scores(generator: Generator, discriminator: Discriminator, images, cond, key: jax.Array,
                  config: LatentSearchConfig = LatentSearchConfig(), *, batch_size: int = 64,
                  progress: bool = True) -> AnomalyScores:
  """AnoGAN scores of a whole dataset, searched in fixed-size batches on the host loop.

  Images of another size than the searched resolution (`search_resolution`) are resized to it with
  `data.resize_uint8` (PIL LANCZOS, the whole image: resized, never cropped), e.g.
  the shared 256x256 archives for a 128x128 base image. The last batch is padded with copies
  of its last image, so one compile serves every batch. Image i starts from the
  latents of global index i, so scores do not depend on `batch_size`.

  Args:
    generator, discriminator: the trained pair (see `search_latents`).
    images: a `data.CXRDataset`, or uint8 (N, H, W) square radiographs.
    cond: float32 (N, len(conditions)); None for a dataset takes
      `models.dataset_condition(dataset, conditions=generator.config.conditions)`.
    key: PRNG key of the random starts.
    config: the search settings.
    batch_size: images per jitted search (capped at N).
    progress: show a tqdm bar on stderr.

  Returns:
    `AnomalyScores` of numpy arrays: score float32 (N,), residual float16 (N, R, R) in
    [0, 2], z float32 (N, latent_dim), steps_run int32 (N,).

  Raises:
    ValueError: as `search_latents`; cond missing for an array, or of the wrong length.
    jaxcxr.data.DataError: images that are not uint8 (N, H, W); unknown metadata.
  """
  g_cfg = generator.config
  if isinstance(images, data.CXRDataset):
    if cond is None:
      cond = condition_lib.dataset_condition(images, conditions=g_cfg.conditions)
    images = images.images
  elif cond is None:
    raise ValueError("anogan_scores: cond is required for an image array (only a CXRDataset provides its own)")
  r = search_resolution(generator, config)
  images = data.resize_uint8(images, r)
  cond = np.asarray(cond, np.float32)
  n = len(images)
  if cond.shape != (n, len(g_cfg.conditions)):
    raise ValueError(f"anogan_scores: expected cond of shape ({n}, {len(g_cfg.conditions)}) for conditions "
                     f"{g_cfg.conditions}, got {cond.shape}")
  if batch_size <= 0:
    raise ValueError(f"anogan_scores: expected batch_size > 0, got {batch_size}")
  if n == 0:
    empty = np.zeros((0,), np.float32)
    return AnomalyScores(empty, np.zeros((0, r, r), np.float16), np.zeros((0, g_cfg.latent_dim), np.float32),
                         np.zeros((0,), np.int32), empty, empty)

  def search(batch):
    result = search_latents(generator, discriminator, batch["images"], batch["cond"], key, config,
                            first_index=int(batch["index"][0]))
    return AnomalyScores(result.score.astype(jnp.float32), result.residual[..., 0].astype(jnp.float16),
                         result.z.astype(jnp.float32), result.steps_run.astype(jnp.int32),
                         result.residual_score.astype(jnp.float32), result.feature_score.astype(jnp.float32))

  # Host batches (`put=np.asarray`): search_latents places (and shards) them itself.
  return map_batches(search, {"images": images, "cond": cond, "index": np.arange(n)}, batch_size, put=np.asarray,
                     desc="AnoGAN search", progress=progress)


# ----------------------------------------------------------------------------- loader and scorer


def load_anogan(gan_dir: str | os.PathLike) -> tuple[Generator, Discriminator]:
  """Loads the normal-only GAN the search inverts: `gan_dir/generator` and `gan_dir/discriminator`.

  Args:
    gan_dir: a GAN folder written by `train.gan.train_gan`, e.g. the shipped
      `checkpoints/gan_256_normal`.

  Returns:
    (generator, discriminator), checked to belong together (`check_pair`).

  Raises:
    jaxcxr.checkpoints.CheckpointError: a missing or unreadable checkpoint.
    ValueError: a discriminator of another resolution or other conditions than the generator's.
  """
  gan_dir = pathlib.Path(gan_dir)
  generator, discriminator = load_generator(gan_dir / "generator"), load_discriminator(gan_dir / "discriminator")
  check_pair(generator, discriminator, f"load_anogan({gan_dir})")
  return generator, discriminator


@dataclasses.dataclass
class AnoganScorer(AbstractAnomalyScorer):
  """AnoGAN latent search with a normal-only GAN."""

  generator: Generator
  discriminator: Discriminator | EncoderFeatures            # the feature term's f
  config: LatentSearchConfig = LatentSearchConfig()
  seed: int = 0
  batch_size: int = 64
  name: str = "anogan"

  def __call__(self, dataset, *, progress):
    out = anogan_scores(self.generator, self.discriminator, dataset, None, jax.random.key(self.seed), self.config,
                        batch_size=self.batch_size, progress=progress)
    return out.score, out.residual, {"residual_score": out.residual_score, "feature_score": out.feature_score}


