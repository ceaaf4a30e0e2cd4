"""AnoGAN latent search (Schlegl et al. 2017): the anomaly score of an image is how well a GAN trained on
normal images can reproduce it.

For a query x (NHWC, generator space [-1, 1]) and its condition c, the search
minimises over the latent z

    L(z) = (1 - l) * mean|x - G(z, c)| + l * mean|f(x) - f(G(z, c))|

with Adam, where f is `Discriminator.features` (the final 4x4 feature map, an
intermediate discriminator layer as in the original) and l = 0.1. The final loss
is the anomaly score and |x - G(z*, c)| the residual map.

Mirrors the reference AnoGAN procedure (500 Adam steps per image from a random z)
but runs it as one jitted `lax.scan` over the steps, with every (image, restart)
pair an independent problem of one stacked batch (DESIGN.md section 7): the loss
summed over problems has, per problem, exactly that problem's gradient, Adam is
element-wise, the generator uses GroupNorm (no batch statistics) and the
discriminator runs in inference mode, so an image's result never depends on the
other images of its batch. The search is a `jax.jit` of a pure function over the
`nnx.split` state of G and D (DESIGN.md section 10: much lower per-call overhead
than `nnx.jit`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcxr import data
from jaxcxr.batching import map_batches
from jaxcxr.config import DTYPES, DiscriminatorConfig, GeneratorConfig
from jaxcxr.models import condition as condition_lib
from jaxcxr.models import generator as generator_lib
from jaxcxr.models.discriminator import Discriminator, load_discriminator
from jaxcxr.models.encoder import Encoder, load_encoder
from jaxcxr.models.generator import Generator
from jaxcxr.models.translator import Translator, blend


@dataclasses.dataclass(frozen=True)
class LatentSearchConfig:
  """AnoGAN latent search: loss, optimiser, restarts and early stopping (defaults from Schlegl et al. 2017).

  Only `steps`, `restarts`, `early_stop_window` and `dtype` shape the compiled search; the
  other settings are traced scalars, so changing them does not recompile.
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
  # Search a cascade generator's base image (`Generator.base_image`, e.g. 64x64) instead of its
  # output: queries are resized to the base resolution. The normal anatomy of a normal-only
  # cascade lives in its base GAN (its upsampler learned detail from all radiographs), and each
  # step skips the upsampler: on the shipped gan_256_normal about 20x cheaper on a CPU.
  # Static (one compile per value). For a single-stage generator both are the same.
  base_image: bool = False

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
  """

  z: jax.Array
  score: jax.Array
  residual: jax.Array
  loss_trace: jax.Array
  steps_run: jax.Array
  restart_scores: jax.Array
  residual_score: jax.Array
  feature_score: jax.Array


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


def _check_pair(generator: Generator, discriminator: Discriminator) -> None:
  g, d = generator.config, discriminator.config
  if g.base_resolution != d.resolution or tuple(g.conditions) != tuple(d.conditions):
    raise ValueError(f"search_latents: generator (resolution {g.resolution}, conditions {g.conditions}) and "
                     f"discriminator (resolution {d.resolution}, conditions {d.conditions}) do not match")


# ----------------------------------------------------------------------------- search


@functools.lru_cache(maxsize=16)
def _graphdefs(g_config: GeneratorConfig, d_config: DiscriminatorConfig):
  """Graph definitions for the search: the configs' dtype, D in inference mode.

  Built from the configs (not taken from the given modules), so the compute dtype is the
  search's and the discriminator's spectral-norm vectors are read, never written, whatever
  mode the given module is in. The parameter trees are the same as the stored models'.
  """
  generator = nnx.eval_shape(lambda: Generator(g_config, rngs=nnx.Rngs(0)))
  discriminator = nnx.eval_shape(lambda: Discriminator(d_config, rngs=nnx.Rngs(0)))
  return nnx.graphdef(generator), nnx.graphdef(nnx.view(discriminator, use_running_average=True))


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
      ("early_stop_tol", tol), ("clip_latent", clip))}


def _search(g_graphdef, d_graphdef, g_state, d_state, images, cond, z0, hyper, *, steps: int, window: int,
            base: bool = False):
  """The whole search, one `lax.scan` over the steps (pure; jitted as `_search_jit`).

  Args:
    g_graphdef, d_graphdef: static graph definitions from `_graphdefs`.
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

  def total_loss(z):                                                 # (N, D) -> scalar, (N,)
    fake = render(z, c)                                              # (N, H, W, 1) float32
    pixel = jnp.abs(x - fake).mean(axis=(1, 2, 3))
    feature = jnp.abs(fx - discriminator.features(fake)).mean(axis=(1, 2, 3))
    losses = (1.0 - lam) * pixel + lam * feature
    # The sum, not the mean: each problem's gradient is its own, whatever N is.
    return losses.sum(), losses

  tx = optax.adam(hyper["learning_rate"])

  def step(carry, t):
    z, opt_state, stopped, history, steps_run = carry
    # All problems at once: chunking them (`batching.in_chunks`) was 1.12x faster on one CPU core but
    # 1.4x slower on two (benchmarks/README.md), small 64x64 chunks leave the second core idle.
    (_, losses), grads = jax.value_and_grad(total_loss, has_aux=True)(z)
    # Early stopping: history[t % W] holds the loss of W steps ago (inf before step W, and a
    # tolerance of -inf disables it: neither ever stops a problem).
    stopped = stopped | (history[t % window] - losses < hyper["early_stop_tol"])
    history = history.at[t % window].set(losses)
    # optax's Adam mixes a Python float with an int32 count: fine under standard promotion, an
    # error under strict promotion (a trace-time setting).
    with jax.numpy_dtype_promotion("standard"):
      updates, new_opt_state = tx.update(grads, opt_state, z)
    new_z = jnp.clip(optax.apply_updates(z, updates), -hyper["clip_latent"], hyper["clip_latent"])
    # A stopped problem keeps its z and its Adam moments; shapes stay static. The extra last
    # iteration (t == steps) only evaluates the final loss.
    active = ~stopped & (t < steps)
    z = jnp.where(active[:, None], new_z, z)
    opt_state = _mask_tree(active, new_opt_state, opt_state)
    return (z, opt_state, stopped, history, steps_run + active.astype(jnp.int32)), losses

  z = z0.reshape(n, d)
  history = jnp.full((window, n), jnp.inf, jnp.float32)
  carry = (z, tx.init(z), jnp.zeros((n,), bool), history, jnp.zeros((n,), jnp.int32))
  # steps + 1 iterations: the last one's loss is L(z_final), so the final loss needs no second
  # copy of the G + D graph to compile (one wasted gradient in steps + 1).
  (z, _, _, _, steps_run), trace = jax.lax.scan(step, carry, jnp.arange(steps + 1, dtype=jnp.int32))
  final = trace[steps].reshape(b, r)                                 # (B, R)
  best = jnp.argmin(final, axis=1)                                   # (B,); ties -> lowest restart

  def pick(a, batch_axis=0):
    """The best restart of each image: a (..., B, R, ...) with B at batch_axis -> R dropped."""
    index = jnp.expand_dims(best, tuple(i for i in range(a.ndim) if i != batch_axis))
    return jnp.squeeze(jnp.take_along_axis(a, index, axis=batch_axis + 1), batch_axis + 1)

  z3 = z.reshape(b, r, d)
  z_best = pick(z3)
  best_fake = render(z_best, cond)
  result = LatentSearchResult(
      z=z_best,
      score=pick(final),
      residual=jnp.abs(images - best_fake),
      loss_trace=pick(trace[:steps].reshape(steps, b, r), batch_axis=1),
      steps_run=pick(steps_run.reshape(b, r)),
      restart_scores=final,
      residual_score=jnp.abs(images - best_fake).mean(axis=(1, 2, 3)),
      feature_score=jnp.abs(discriminator.features(images) - discriminator.features(best_fake)).mean(axis=(1, 2, 3)))
  return z3, trace[:steps].reshape(steps, b, r), result


# One compile per (graph definitions, shapes, steps, window); the other settings are traced.
_search_jit = jax.jit(_search, static_argnames=("g_graphdef", "d_graphdef", "steps", "window", "base"),
                      donate_argnames=("z0",))


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


def _prepare(generator, discriminator, images, cond, key, config, first_index, shard_batch):
  """Validated, placed arguments of `_search_jit` (the benchmark lowers it with these)."""
  _check_pair(generator, discriminator)
  g_cfg = generator.config
  x = _as_signed_images(images, search_resolution(generator, config))
  c = _check_cond(cond, x.shape[0], tuple(g_cfg.conditions))
  g_graphdef, d_graphdef = _graphdefs(dataclasses.replace(g_cfg, dtype=config.dtype),
                                      dataclasses.replace(discriminator.config, dtype=config.dtype))
  g_state, d_state = nnx.state(generator), nnx.state(discriminator)
  z0 = initial_latents(key, x.shape[0], g_cfg.latent_dim, restarts=config.restarts, first_index=first_index)
  shardings = _batch_sharding(x.shape[0], shard_batch)
  if shardings is not None:
    batch, replicated = shardings
    x, c, z0 = jax.device_put((x, c, z0), batch)
    g_state, d_state, hyper = jax.device_put((g_state, d_state, _hyperparameters(config)), replicated)
  else:
    hyper = _hyperparameters(config)
  args = (g_graphdef, d_graphdef, g_state, d_state, x, c, z0, hyper)
  return args, {"steps": config.steps, "window": config.early_stop_window, "base": config.base_image}


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
    >>> r = search_resolution(generator, config)   # the 64x64 base image of the 256x256 cascade
    >>> images = np.random.default_rng(0).integers(0, 256, (2, r, r), dtype=np.uint8)
    >>> cond = make_condition(["F", "M"], [60, 40], conditions=generator.config.conditions)
    >>> res = search_latents(generator, discriminator, images, cond, jax.random.key(0), config)
    >>> res.score.shape, res.residual.shape, res.loss_trace.shape, res.z.shape
    ((2,), (2, 64, 64, 1), (3, 2), (2, 128))

  References:
    Schlegl, Seeböck, Waldstein, Schmidt-Erfurth, Langs: Unsupervised anomaly detection
    with generative adversarial networks to guide marker discovery. IPMI 2017.
  """
  args, kwargs = _prepare(generator, discriminator, images, cond, key, config, first_index, shard_batch)
  _, _, result = _search_jit(*args, **kwargs)
  return result


# ----------------------------------------------------------------------------- datasets


def anogan_scores(generator: Generator, discriminator: Discriminator, images, cond, key: jax.Array,
                  config: LatentSearchConfig = LatentSearchConfig(), *, batch_size: int = 64,
                  progress: bool = True) -> AnomalyScores:
  """AnoGAN scores of a whole dataset, searched in fixed-size batches on the host loop.

  Images of another size than the searched resolution (`search_resolution`) are resized to it with
  `data.resize_uint8` (PIL LANCZOS, the whole image: resized, never cropped), e.g.
  the shared 256x256 archives for a 64x64 GAN. The last batch is padded with copies
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


# ---- f-AnoGAN and HealthyGAN scoring
#
# Both are one forward pass per image (no search): a `jax.jit` of a pure function over the
# `nnx.split` states (graph definitions static), run over a dataset in fixed-size batches, the
# last one padded with copies of its last image, so one compile serves every batch. Every
# network involved normalises per image (GroupNorm, D in inference mode), so scores do not
# depend on the batch.


class FanoganScores(NamedTuple):
  """Host results of `fanogan_scores` for N images.

  Attributes:
    score: float32 (N,), the izi_f anomaly score image_loss + kappa * feature_loss (higher = less
      like the normal training images).
    image_loss: float32 (N,), mean (x - G(E(x), c))^2 over the pixels, signed image space.
    feature_loss: float32 (N,), mean (f(x) - f(G(E(x), c)))^2 over the discriminator's final
      feature map f = `Discriminator.features`.
    residual: float16 (N, R, R), |x - G(E(x), c)| in signed image space, so in [0, 2].
    z: float32 (N, latent_dim), the encoder's code E(x).
    reconstruction: float16 (N, R, R), G(E(x), c) in signed image space [-1, 1].
  """

  score: np.ndarray
  image_loss: np.ndarray
  feature_loss: np.ndarray
  residual: np.ndarray
  z: np.ndarray
  reconstruction: np.ndarray


class HealthyganScores(NamedTuple):
  """Host results of `healthygan_scores` for N images.

  Attributes:
    score: float32 (N,), mean |x - out| over the pixels, out the healthy translation (signed
      image space; the original code divides by 2, a constant factor).
    residual: float16 (N, R, R), |x - out| in [0, 2].
    mask: float16 (N, R, R), the translator's mask m in [0, 1] (where it replaced the input).
  """

  score: np.ndarray
  residual: np.ndarray
  mask: np.ndarray


def _images_and_metadata(images, resolution: int, what: str):
  """(uint8 (N, R, R) images, the dataset or None) from a CXRDataset or a uint8 (N, H, W) array."""
  dataset = images if isinstance(images, data.CXRDataset) else None
  array = dataset.images if dataset is not None else images
  if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim not in (3, 4):
    raise ValueError(f"{what}: expected a CXRDataset or uint8 images (N, H, W), got "
                     f"{getattr(array, 'dtype', type(array).__name__)} {np.shape(array)}")
  return data.resize_uint8(array, resolution), dataset


def _check_batch_size(batch_size: int, what: str) -> None:
  if batch_size <= 0:
    raise ValueError(f"{what}: expected batch_size > 0, got {batch_size}")


@functools.lru_cache(maxsize=16)
def _fanogan_graphdefs(e_config, g_config: GeneratorConfig, d_config: DiscriminatorConfig):
  """Graph definitions of E, G and D (D in inference mode: its spectral-norm vectors are only read)."""
  encoder = nnx.eval_shape(lambda: Encoder(e_config, rngs=nnx.Rngs(0)))
  return (nnx.graphdef(encoder),) + _graphdefs(g_config, d_config)


def _fanogan_render(encoder: Encoder, generator: Generator):
  """G(z, c) at the encoder's resolution: a cascade's base image when the encoder works at its base resolution."""
  g = generator.config
  return generator.base_image if encoder.config.resolution != g.resolution else generator


def fanogan_loss(encoder: Encoder, generator: Generator, discriminator: Discriminator, x: jax.Array, cond: jax.Array,
                 feature_weight) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Per-image izi_f loss of f-AnoGAN (Schlegl et al. 2019): the training loss and the anomaly score.

      L(x) = mean_pixels (x - G(E(x), c))^2 + kappa * mean_features (f(x) - f(G(E(x), c)))^2

  with f = `discriminator.features` (the final feature map, the reference code's
  `out_features`) and kappa = `feature_weight` (the paper: 1). An encoder at a cascade's base
  resolution reconstructs the base image (`Generator.base_image`).

  Args:
    encoder: an `models.encoder.Encoder`.
    generator, discriminator: the frozen GAN (D in inference mode).
    x: float32 (B, R, R, 1), NHWC, in [-1, 1].
    cond: float32 (B, len(conditions)).
    feature_weight: kappa (a float or a traced scalar).

  Returns:
    (loss (B,), {"image_loss" (B,), "feature_loss" (B,), "z" (B, latent_dim),
    "reconstruction" (B, R, R, 1) float32 in [-1, 1]}).
  """
  z = encoder(x)
  reconstruction = _fanogan_render(encoder, generator)(z, cond)
  image_loss = jnp.square(x - reconstruction).mean(axis=(1, 2, 3))
  feature_loss = jnp.square(discriminator.features(x) - discriminator.features(reconstruction)).mean(axis=(1, 2, 3))
  loss = image_loss + feature_weight * feature_loss
  return loss, {"image_loss": image_loss, "feature_loss": feature_loss, "z": z, "reconstruction": reconstruction}


@functools.partial(jax.jit, static_argnames=("graphdefs",))
def _fanogan_batch(graphdefs, states, images, cond, feature_weight):
  encoder, generator, discriminator = (nnx.merge(g, s) for g, s in zip(graphdefs, states))
  x = data.to_signed(images)[..., None]                                # (B, R, R, 1)
  score, parts = fanogan_loss(encoder, generator, discriminator, x, cond, feature_weight)
  return {"score": score, "image_loss": parts["image_loss"], "feature_loss": parts["feature_loss"],
          "residual": jnp.abs(x - parts["reconstruction"])[..., 0].astype(jnp.float16), "z": parts["z"],
          "reconstruction": parts["reconstruction"][..., 0].astype(jnp.float16)}


def _check_fanogan_models(encoder: Encoder, generator: Generator, discriminator: Discriminator) -> None:
  _check_pair(generator, discriminator)
  e, g = encoder.config, generator.config
  if e.resolution not in (g.resolution, g.base_resolution) or e.latent_dim != g.latent_dim:
    raise ValueError(f"fanogan_scores: encoder (resolution {e.resolution}, latent_dim {e.latent_dim}) does not "
                     f"match the generator (resolution {g.resolution}, base {g.base_resolution}, latent_dim "
                     f"{g.latent_dim})")


def normal_condition(dataset: data.CXRDataset, conditions: tuple[str, ...]) -> np.ndarray:
  """Conditions that ask a GAN for the normal version of each image: its sex and age, label 0.

  f-AnoGAN reconstructs every image as a normal one; for a GAN not conditioned on the label
  (the normal-only GAN) this is just the image's sex and age.

  Returns:
    float32 (N, len(conditions)).

  Raises:
    jaxcxr.data.DataError: unknown sex or age.
  """
  return condition_lib.make_condition(dataset.sex, dataset.age, 0, conditions=conditions)


def fanogan_scores(encoder: Encoder, generator: Generator, discriminator: Discriminator, images, cond=None, *,
                   feature_weight: float = 1.0, batch_size: int = 64, progress: bool = True) -> FanoganScores:
  """f-AnoGAN (izi_f) anomaly scores: one encoder pass and one reconstruction per image.

  The score is `fanogan_loss`, the loss the encoder was trained with, per image
  (the reference code's `anomaly_scoring` with `dual_iloss=True`). Images of another
  size than the models' are resized with `data.resize_uint8` (PIL LANCZOS, whole
  image). Batch-independent (GroupNorm encoder and generator, D in inference mode);
  one compile per model structure and batch size.

  Args:
    encoder: an `models.encoder.Encoder` trained against this GAN (`train.fanogan`).
    generator, discriminator: the frozen normal-only GAN; D's spectral-norm vectors are
      read, never updated.
    images: a `data.CXRDataset`, or uint8 (N, H, W) square radiographs.
    cond: float32 (N, len(conditions)); None for a dataset takes `normal_condition` (sex
      and age, label 0).
    feature_weight: kappa of the score (the paper: 1).
    batch_size: images per jitted call (capped at N; the last batch is padded).
    progress: show a tqdm bar on stderr.

  Returns:
    `FanoganScores` of numpy arrays (score, image_loss, feature_loss (N,), residual float16
    (N, R, R) in [0, 2], z (N, latent_dim)).

  Raises:
    ValueError: mismatched models, images that are not uint8 (N, H, W), cond missing for an
      array or of the wrong shape, non-finite cond, batch_size <= 0, a feature_weight that is
      negative or not finite.
    jaxcxr.data.DataError: unknown sex or age when cond comes from a dataset.

  References:
    Schlegl, Seeböck, Waldstein, Langs, Schmidt-Erfurth: f-AnoGAN: Fast unsupervised anomaly
    detection with generative adversarial networks. Medical Image Analysis 54, 2019.
  """
  _check_fanogan_models(encoder, generator, discriminator)
  _check_batch_size(batch_size, "fanogan_scores")
  if not 0.0 <= feature_weight < math.inf:   # also refuses NaN
    raise ValueError(f"fanogan_scores: feature_weight must be a finite number >= 0, got {feature_weight!r}")
  g_cfg = generator.config
  r = encoder.config.resolution
  images, dataset = _images_and_metadata(images, r, "fanogan_scores")
  if cond is None:
    if dataset is None:
      raise ValueError("fanogan_scores: cond is required for an image array (only a CXRDataset provides its own)")
    cond = normal_condition(dataset, tuple(g_cfg.conditions))
  n = len(images)
  cond = np.asarray(cond, np.float32)
  if cond.shape != (n, len(g_cfg.conditions)) or not np.isfinite(cond).all():
    raise ValueError(f"fanogan_scores: expected finite cond of shape ({n}, {len(g_cfg.conditions)}) for "
                     f"conditions {g_cfg.conditions}, got {cond.shape}")
  if n == 0:
    empty = np.zeros((0,), np.float32)
    return FanoganScores(empty, empty, empty, np.zeros((0, r, r), np.float16),
                         np.zeros((0, g_cfg.latent_dim), np.float32), np.zeros((0, r, r), np.float16))
  graphdefs = _fanogan_graphdefs(encoder.config, g_cfg, discriminator.config)
  states = (nnx.state(encoder), nnx.state(generator), nnx.state(discriminator))
  kappa = jnp.float32(feature_weight)
  out = map_batches(lambda b: _fanogan_batch(graphdefs, states, b["images"], b["cond"], kappa),
                    {"images": images, "cond": cond}, batch_size, desc="f-AnoGAN", progress=progress)
  return FanoganScores(**out)


@functools.lru_cache(maxsize=16)
def _translator_graphdef(config):
  return nnx.graphdef(nnx.eval_shape(lambda: Translator(config, rngs=nnx.Rngs(0))))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _healthygan_batch(graphdef, state, images):
  x = data.to_signed(images)[..., None]                                # (B, R, R, 1)
  content, mask = nnx.merge(graphdef, state)(x)
  residual = jnp.abs(x - blend(content, mask, x))
  return {"score": residual.mean(axis=(1, 2, 3)), "residual": residual[..., 0].astype(jnp.float16),
          "mask": mask[..., 0].astype(jnp.float16)}


def healthygan_scores(translator: Translator, images, *, batch_size: int = 64,
                      progress: bool = True) -> HealthyganScores:
  """HealthyGAN anomaly scores: how much the translation to a healthy image changes each image.

  score = mean |x - out| with out = content * m + x * (1 - m) the translator's output
  (the original's test-time score, without its constant division by 2). Images of
  another size than the translator's are resized with `data.resize_uint8`.
  Batch-independent (per-image normalisation); one compile per structure and batch size.

  Args:
    translator: a `models.translator.Translator` (e.g. `load_translator`).
    images: a `data.CXRDataset`, or uint8 (N, H, W) square radiographs.
    batch_size: images per jitted call (capped at N; the last batch is padded).
    progress: show a tqdm bar on stderr.

  Returns:
    `HealthyganScores` of numpy arrays: score float32 (N,), residual float16 (N, R, R) in
    [0, 2], mask float16 (N, R, R) in [0, 1].

  Raises:
    ValueError: images that are not uint8 (N, H, W); batch_size <= 0.

  References:
    Siddiquee, Shah, Wu, Chong, Schwedt, Li: HealthyGAN: Learning from unannotated medical
    images to detect anomalies associated with human disease. SASHIMI (MICCAI workshop), 2022.
  """
  _check_batch_size(batch_size, "healthygan_scores")
  cfg = translator.config
  images, _ = _images_and_metadata(images, cfg.resolution, "healthygan_scores")
  r = cfg.resolution
  if len(images) == 0:
    return HealthyganScores(np.zeros((0,), np.float32), np.zeros((0, r, r), np.float16),
                            np.zeros((0, r, r), np.float16))
  graphdef, state = _translator_graphdef(cfg), nnx.state(translator)
  out = map_batches(lambda b: _healthygan_batch(graphdef, state, b["images"]), {"images": images},
                    batch_size, desc="HealthyGAN", progress=progress)
  return HealthyganScores(**out)


def load_fanogan(encoder_dir, gan_dir=None) -> tuple[Encoder, Generator, Discriminator]:
  """Loads an f-AnoGAN encoder and the GAN it was trained against, checking they belong together.

  Args:
    encoder_dir: the encoder checkpoint written by `train.fanogan.train_fanogan`.
    gan_dir: folder with `generator/` and `discriminator/`; None takes the shipped normal GAN
      whose generator id the encoder recorded, else the folder recorded in its metadata.

  Returns:
    (encoder, generator, discriminator in inference mode).

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing checkpoints, or a GAN whose weights are not the
      ones the encoder was trained against (compared by `checkpoints.model_id`).
  """
  import pathlib  # pylint: disable=g-import-not-at-top

  from jaxcxr import checkpoints  # pylint: disable=g-import-not-at-top  (orbax is heavy)

  meta = checkpoints.read_metadata(encoder_dir)
  if gan_dir is None:
    # The shipped normal GAN whose generator the encoder learned (its recorded folder is where it was
    # trained, absolute, so another machine finds it by model id); else the recorded folder.
    gan_dir = next((d for d in checkpoints.shipped_normal_gans()
                    if checkpoints.model_id(d / "generator") == meta.get("generator_id")), meta.get("gan_dir", ""))
  gan_dir = pathlib.Path(gan_dir)
  for part in ("generator", "discriminator"):
    expected, found = meta.get(f"{part}_id"), checkpoints.model_id(gan_dir / part)
    if expected is not None and expected != found:
      raise checkpoints.CheckpointError(
          f"{gan_dir / part}: model id {found} is not the {part} the encoder {encoder_dir} was trained against "
          f"({expected})")
  return (load_encoder(encoder_dir), generator_lib.load_generator(gan_dir / "generator"),
          load_discriminator(gan_dir / "discriminator"))


# ---- evaluation of the three methods on labelled radiographs


METHODS = ("anogan", "fanogan", "healthygan")


class AbstractAnomalyScorer:
  """What `evaluate_anomaly` needs of a method: per-image scores (higher = more abnormal) and residuals."""

  name: str

  def __call__(self, dataset: data.CXRDataset, *,
               progress: bool) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Returns (score float32 (N,), residual float16 (N, R, R) in [0, 2], {component name: (N,) score}).

    The components are the terms the score adds up (AnoGAN's residual and discrimination
    scores, f-AnoGAN's image and feature losses); `evaluate_anomaly` reports each one's AUC.
    """
    raise NotImplementedError


@dataclasses.dataclass
class AnoganScorer(AbstractAnomalyScorer):
  """AnoGAN latent search with a normal-only GAN."""

  generator: Generator
  discriminator: Discriminator
  config: LatentSearchConfig = LatentSearchConfig()
  seed: int = 0
  batch_size: int = 64
  name: str = "anogan"

  def __call__(self, dataset, *, progress):
    out = anogan_scores(self.generator, self.discriminator, dataset, None, jax.random.key(self.seed), self.config,
                        batch_size=self.batch_size, progress=progress)
    return out.score, out.residual, {"residual_score": out.residual_score, "feature_score": out.feature_score}


@dataclasses.dataclass
class FanoganScorer(AbstractAnomalyScorer):
  """f-AnoGAN: one encoder pass and one reconstruction."""

  encoder: Encoder
  generator: Generator
  discriminator: Discriminator
  batch_size: int = 64
  name: str = "fanogan"

  def __call__(self, dataset, *, progress):
    out = fanogan_scores(self.encoder, self.generator, self.discriminator, dataset, batch_size=self.batch_size,
                         progress=progress)
    return out.score, out.residual, {"image_loss": out.image_loss, "feature_loss": out.feature_loss}


@dataclasses.dataclass
class HealthyganScorer(AbstractAnomalyScorer):
  """HealthyGAN: translation to a healthy image."""

  translator: Translator
  batch_size: int = 64
  name: str = "healthygan"

  def __call__(self, dataset, *, progress):
    out = healthygan_scores(self.translator, dataset, batch_size=self.batch_size, progress=progress)
    return out.score, out.residual, {}


def lung_residual_scores(residual, masks) -> np.ndarray:
  """Mean squared residual inside the lungs, per image: the frame-blind anomaly score.

  A normal-only GAN (or an encoder, or a translator) also fails to reproduce what is no
  pathology at all: black borders, collimation edges, exposure. Measured on `fanogan_256`'s
  validation patients, those dominated the whole-image residual (ROC AUC 0.61); inside the
  lungs it reached 0.72.

  Args:
    residual: float (N, R, R) residual maps (|x - reconstruction|, any method).
    masks: uint8 (N, S, S) lung label maps of the same images (0 background; `predict_masks`),
      resized here to R x R (area fraction > 0.5 counts as lung).

  Returns:
    float32 (N,). An image without lung pixels scores its whole-image mean squared residual.

  Raises:
    ValueError: mismatched shapes, a non-finite residual, or masks that are not label maps (0, 1, 2).
  """
  residual, masks = np.asarray(residual), np.asarray(masks)
  if residual.dtype.kind not in "iuf" or residual.ndim != 3 or masks.ndim != 3 or residual.shape[0] != masks.shape[0]:
    raise ValueError(f"lung_residual_scores: expected residual (N, R, R) of real numbers and masks (N, S, S), got "
                     f"{residual.dtype} {residual.shape} and {masks.shape}")
  residual = residual.astype(np.float32)
  if not np.isfinite(residual).all():
    raise ValueError("lung_residual_scores: the residual contains NaN or inf")
  if masks.dtype.kind not in "biu" or not np.isin(masks, (0, 1, 2)).all():
    raise ValueError(f"lung_residual_scores: masks must be integer label maps with values 0, 1, 2 "
                     f"(`predict_masks`), got {masks.dtype} values {np.unique(masks)[:6].tolist()}")
  r = residual.shape[1]
  lung = np.asarray(jax.image.resize(jnp.asarray(masks > 0, jnp.float32), (masks.shape[0], r, r), "linear")) > 0.5
  square = residual ** 2
  inside = lung.sum(axis=(1, 2))
  masked = (square * lung).sum(axis=(1, 2)) / np.maximum(inside, 1)
  return np.where(inside > 0, masked, square.mean(axis=(1, 2))).astype(np.float32)


@dataclasses.dataclass
class LungMaskedScorer(AbstractAnomalyScorer):
  """Any method's residual, scored inside the lungs only (`lung_residual_scores`).

  The lungs come from a U-Net (e.g. the shipped `unet_256`) on the query images; the inner
  method's own score stays available as the component "unmasked".
  """

  inner: AbstractAnomalyScorer
  unet: object
  batch_size: int = 16

  @property
  def name(self) -> str:
    return f"{self.inner.name}_lungs"

  def __call__(self, dataset, *, progress):
    from jaxcxr.models.unet import predict_masks  # pylint: disable=g-import-not-at-top

    score, residual, components = self.inner(dataset, progress=progress)
    masks = predict_masks(self.unet, dataset.images, batch_size=self.batch_size)
    return lung_residual_scores(residual, masks), residual, {**components, "unmasked": score}


def evaluate_anomaly(scorer: AbstractAnomalyScorer, test: data.CXRDataset, *,
                     threshold_data: data.CXRDataset | None = None, progress: bool = False) -> dict:
  """ROC AUC and the confusion figures of an anomaly score on labelled radiographs (1 = abnormal).

  The decision threshold (Youden's J) is chosen on `threshold_data` (e.g. the validation
  patients) and applied to `test`; without it, it is chosen on `test` itself (optimistic:
  the report says so). Seconds count the scoring of `test` only, compile included
  (the first batch compiles).

  Returns:
    {"method", "n", "n_normal", "n_abnormal", "roc_auc", "roc_auc_ci95" ([low, high], DeLong; None
    with fewer than 2 images of a class), "average_precision", "threshold", "threshold_from",
    "precision", "recall", "specificity", "f1", "accuracy", "seconds",
    "seconds_per_image", "components" {name: {"roc_auc", "roc_auc_ci95"}} (the score's terms,
    e.g. AnoGAN's residual and discrimination scores), with views in the data "by_view"
    {view: {"n", "n_abnormal", "roc_auc", "roc_auc_ci95"}}, "scores" (N,), "residual" float16
    (N, R, R), "labels" (N,), "component_scores" {name: (N,)}}. With `threshold_data` it also
    holds "threshold_data": that set's {"n", "n_normal", "n_abnormal", "roc_auc", "roc_auc_ci95",
    "components", "by_view"} (so that a setting is chosen on validation figures from the same
    run) and "threshold_scores" {"scores", "labels", "component_scores"}.

  Raises:
    jaxcxr.data.DataError: an image set that is not a `CXRDataset`, or without both labels.
  """
  import time  # pylint: disable=g-import-not-at-top

  from sklearn.metrics import average_precision_score  # pylint: disable=g-import-not-at-top

  from jaxcxr import metrics  # pylint: disable=g-import-not-at-top

  for what, ds in (("test", test), ("threshold_data", threshold_data)):
    if ds is not None and not isinstance(ds, data.CXRDataset):
      raise data.DataError(f"evaluate_anomaly: {what} must be a jaxcxr.data.CXRDataset (data.load), got "
                           f"{type(ds).__name__}")

  def labelled(ds, what):
    if ds.label is None or not (np.isin(ds.label, [0, 1]).all() and len(np.unique(ds.label)) == 2):
      raise data.DataError(f"{ds.source or what}: anomaly evaluation needs normal (0) and abnormal (1) labels")
    return ds.label.astype(np.int32)

  y = labelled(test, "test images")
  threshold_from = "test (no separate threshold data: optimistic)"
  extra = {}
  if threshold_data is not None:
    y_thr = labelled(threshold_data, "threshold images")
    s_thr, _, c_thr = scorer(threshold_data, progress=progress)
    threshold_from = "threshold data (validation patients)"
    extra = {"threshold_data": _auc_report(s_thr, y_thr, c_thr, data.views(threshold_data)),
             "threshold_scores": {"scores": s_thr, "labels": y_thr, "component_scores": c_thr}}
  start = time.perf_counter()
  scores, residual, components = scorer(test, progress=progress)
  seconds = time.perf_counter() - start
  if threshold_data is None:
    s_thr, y_thr = scores, y
  fpr, tpr, thresholds = metrics.compute_roc_curve(s_thr, y_thr)
  threshold = float(thresholds[int(np.argmax(tpr - fpr))])
  report = metrics.compute_binary_report(scores >= threshold, y)
  return {"method": scorer.name, **_auc_report(scores, y, components, data.views(test)),
          "average_precision": float(average_precision_score(y, scores)),
          "threshold": threshold, "threshold_from": threshold_from,
          **{k: report[k] for k in ("precision", "recall", "specificity", "f1", "accuracy")},
          "seconds": float(seconds), "seconds_per_image": float(seconds / max(len(y), 1)),
          "scores": scores, "residual": residual, "labels": y, "component_scores": components, **extra}


def _auc_report(scores, y, components, views) -> dict:
  """Counts, ROC AUC with its DeLong interval, each component's AUC and, with views, the AUC per view."""
  return {"n": int(len(y)), "n_normal": int((y == 0).sum()), "n_abnormal": int(y.sum()),
          **auc_with_interval(scores, y),
          "components": {name: auc_with_interval(values, y) for name, values in components.items()},
          **({"by_view": by_view(scores, y, views)} if views is not None else {})}


def source_only_baseline(train: data.CXRDataset, test: data.CXRDataset, *, size: int = 32, seed: int = 0) -> dict:
  """How well the images' source alone tells the classes apart: a pixel classifier's test ROC AUC.

  For a task whose two classes come from different archives (COVID-19 images from
  publications against NIH normals), borders, exposure and text separate them with no
  pathology involved. An anomaly score's AUC on such a task reads only next to this figure:
  a logistic regression on the raw pixels at `size` x `size`, trained on `train` with its
  labels (the classes' patients of the training split) and scored on `test`.

  Returns:
    {"method", "size", "n_train", "roc_auc", "roc_auc_ci95"}.

  Raises:
    jaxcxr.data.DataError: a set without both labels.
  """
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.pipeline import make_pipeline  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top

  for ds, what in ((train, "training"), (test, "test")):
    if ds.label is None or len(np.unique(ds.label)) != 2:
      raise data.DataError(f"source_only_baseline: the {what} images need both labels")
  pixels = lambda ds: data.resize_uint8(ds.images, size).reshape(len(ds), -1).astype(np.float32) / 255.0
  model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000, random_state=seed))
  model.fit(pixels(train), train.label.astype(np.int32))
  prob = model.predict_proba(pixels(test))[:, 1]
  return {"method": f"logistic regression on {size}x{size} pixels", "size": size, "n_train": int(len(train)),
          **auc_with_interval(prob, test.label.astype(np.int32))}


def rank_average(scores) -> np.ndarray:
  """The ensemble score of several methods: each method's scores turned to ranks in [0, 1], averaged.

  Ranks make methods with different score scales (an L1 residual, a mask-weighted
  difference) count equally. Ties share their mean rank.

  Args:
    scores: (M, N) or a sequence of M arrays (N,): M methods' scores of the same N images.

  Returns:
    float64 (N,), higher = more abnormal.

  Raises:
    ValueError: fewer than one method, arrays of different lengths, or non-finite scores.
  """
  from scipy.stats import rankdata  # pylint: disable=g-import-not-at-top

  arrays = [np.asarray(s) for s in scores]
  if any(a.dtype.kind not in "biuf" for a in arrays):
    raise ValueError(f"rank_average: expected real scores, got dtypes {sorted({str(a.dtype) for a in arrays})}")
  arrays = [a.astype(np.float64) for a in arrays]
  if not arrays or len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
    raise ValueError(f"rank_average: expected M >= 1 score arrays of one length (N,), got shapes "
                     f"{[a.shape for a in arrays]}")
  if not all(np.isfinite(a).all() for a in arrays):
    raise ValueError("rank_average: scores must be finite (a NaN would take an arbitrary rank)")
  n = len(arrays[0])
  return np.mean([(rankdata(a) - 1) / max(n - 1, 1) for a in arrays], axis=0)


def auc_with_interval(scores, y) -> dict:
  """{"roc_auc", "roc_auc_ci95"} of scores (higher = abnormal) against labels; None without both classes."""
  from jaxcxr import metrics  # pylint: disable=g-import-not-at-top

  scores, y = np.asarray(scores, np.float64), np.asarray(y)
  if len(np.unique(y)) < 2:
    return {"roc_auc": None, "roc_auc_ci95": None}
  return {"roc_auc": float(metrics.compute_roc_auc(scores, y)), "roc_auc_ci95": metrics.roc_auc_interval(scores, y)}


def by_view(scores, y, views) -> dict:
  """{view: {"n", "n_abnormal", "roc_auc", "roc_auc_ci95"}} of scores within each radiographic view.

  `views` as `data.views` gives them ("AP", "PA").
  """
  views, scores, y = np.asarray(views).astype(str), np.asarray(scores), np.asarray(y)
  if not views.ndim == scores.ndim == y.ndim == 1 or not len(views) == len(scores) == len(y):
    raise ValueError(f"by_view: expected scores, labels and views of one length (N,), got shapes {scores.shape}, "
                     f"{y.shape} and {views.shape}")
  return {v: {"n": int((views == v).sum()), "n_abnormal": int(y[views == v].sum()),
              **auc_with_interval(scores[views == v], y[views == v])} for v in np.unique(views)}
