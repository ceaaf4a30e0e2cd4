"""Latent-filtered sampling on device: judge each latent z, then generate and post-score only the accepted ones.

`sample_valid_latent` (one compiled call per round: draw a pool of latents, classify, select
with static shapes, generate and post-score only the accepted ones; the host loop is
`jaxcxr.sampling.run_rounds`), `warm_up_latent`, `default_round_sizes`, and `NudgeConfig`
(latent nudging up the classifier's logit on the latent's own norm shell). Without a
pre-filter both delegate to the unfiltered sampler of `jaxcxr.sampling` (`sample_valid`,
`warm_up_sampler`); the names say which sampler is which.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcxr import sampling, scoring
from jaxcxr.models.latent import LatentClassifier
from jaxcxr.prefilter.prefilters import Prefilter

__all__ = [
    "NudgeConfig",
    "TRACE_COUNTS",
    "default_round_sizes",
    "sample_valid_latent",
    "warm_up_latent",
]


@dataclasses.dataclass(frozen=True)
class NudgeConfig:
  """Latent nudging: move each pooled z up the pre-filter's logit before filtering and generating.

  Each step: z <- z + step_size * g / |g| with g = d logit / dz, then z <- z * |z_0| / |z|,
  so every latent keeps its original norm (it stays on its shell of the Gaussian:
  |z| ~ chi(latent_dim), ~11.3 for 128) and only turns towards the classifier's
  "valid" side. With logistic regression g is the weight vector for every z, so
  the latents rotate towards one direction: expect less diversity.
  """

  # Gradient steps per latent (static: one compile per value).
  steps: int = 3
  # Distance moved per step along the unit gradient, in z units (traced: changing it does not recompile).
  step_size: float = 0.5

  def __post_init__(self):
    if self.steps < 1:
      raise ValueError(f"NudgeConfig.steps must be >= 1, got {self.steps}")
    if not self.step_size > 0:
      raise ValueError(f"NudgeConfig.step_size must be positive, got {self.step_size}")


# Number of traces (compilations) of `_filter_generate_and_score`, for the no-recompile tests.
TRACE_COUNTS: dict[str, int] = {"filter_generate_and_score": 0}


def _nudge(model: LatentClassifier, z: jax.Array, steps: int, step_size: jax.Array) -> jax.Array:
  """`steps` normalised gradient steps up model's logit, each projected back onto |z| = |z_0|. (B, D) -> (B, D)."""
  radius = jnp.linalg.norm(z, axis=-1, keepdims=True)                      # (B, 1)
  grad = jax.grad(lambda x: model(x).sum())                                # per-latent: inference mode
  for _ in range(steps):
    g = grad(z)
    z = z + step_size * g / jnp.maximum(jnp.linalg.norm(g, axis=-1, keepdims=True), 1e-12)
    z = z * radius / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  return z


@functools.partial(jax.jit, static_argnames=("models", "config", "pool_size", "accept_size", "nudge_steps",
                                             "batch_sharding"))
def _filter_generate_and_score(models, states, calibration, key, start, need, cond, threshold, nudge_step_size, *,
                               config, pool_size, accept_size, nudge_steps, batch_sharding):
  """One round of filtered sampling in one compiled call (shapes static in every round).

  models/states: (U-Net, classifier, generator, latent classifier). Latent indices
  start .. start+pool_size-1 give z (`latents`), optionally nudged, then logits;
  accepted = logit >= threshold. The first `accept_size` accepted latents in index
  order fill the slots (`sampling.select_accepted`); they are generated and post-scored
  in order until `need` valid images are found (`sampling.finish_slots`), padding slots
  never. Without a pre-filter, rounds are `jaxcxr.sampling`'s unfiltered ones.
  """
  TRACE_COUNTS["filter_generate_and_score"] += 1          # runs at trace time only
  latent_dim = nnx.merge(models[2], states[2]).config.latent_dim
  index = start + jnp.arange(pool_size, dtype=jnp.int32)                                 # (P,)
  z = scoring.latents_at(key, index, latent_dim)                                         # (P, D)
  latent_model = nnx.merge(models[3], states[3])
  if nudge_steps:
    z = _nudge(latent_model, z, nudge_steps, nudge_step_size)
  logits = latent_model(z)                                                               # (P,)
  accepted = logits >= threshold
  chosen, n_accepted = sampling.select_accepted(accepted, accept_size)
  z_chosen = z[chosen]
  if batch_sharding is not None:
    z_chosen = jax.lax.with_sharding_constraint(z_chosen, batch_sharding)
  out, slot_used, finished, computed = sampling.finish_slots(
      lambda z, cond: scoring.generate_and_score_batch(models, states, calibration, z, cond, config, keep_maps=False),
      z_chosen, cond, limit=jnp.minimum(n_accepted, accept_size), need=need)
  return {"images": out["images"], "z": z_chosen, "index": index[chosen],
          "logit": logits[chosen], "scores": out["scores"], "valid": out["valid"], "slot_used": slot_used,
          "consumed": sampling.consumed_latents(chosen, n_accepted, finished, jnp.int32(pool_size)),
          "computed": computed, "judged": jnp.int32(pool_size)}


def _check_round(generator, prefilter: Prefilter | None, group: str, label: int, pool_size: int, accept_size: int,
                 nudge: NudgeConfig | None) -> None:
  """The argument checks of `sample_valid_latent` and `warm_up_latent`, with or without a pre-filter (ValueError)."""
  g_cfg = generator.config
  sampling.check_label(generator, label)
  if prefilter is not None:
    if prefilter.latent_dim != g_cfg.latent_dim:
      raise ValueError(f"sample_valid_latent: the pre-filter takes latents of size {prefilter.latent_dim}, the "
                       f"generator draws {g_cfg.latent_dim}")
    if prefilter.group != group:
      raise ValueError(f"sample_valid_latent: the pre-filter was fitted for group {prefilter.group!r}, not {group!r}")
  if nudge is not None and (prefilter is None or prefilter.accepts_all):
    raise ValueError("sample_valid_latent: nudging needs a trained pre-filter (its logit is what is climbed)")
  if not 1 <= accept_size <= pool_size:
    raise ValueError(f"sample_valid_latent: need 1 <= accept_size <= pool_size, got {accept_size} and {pool_size}")


class _RoundCaller:
  """Everything constant across rounds of `sample_valid_latent`, split once; `__call__(start, need)` runs one round."""

  def __init__(self, scorer, generator, prefilter: Prefilter, key, group: str, label: int, pool_size: int,
               accept_size: int, nudge: NudgeConfig | None):
    _check_round(generator, prefilter, group, label, pool_size, accept_size, nudge)
    inputs = sampling.round_inputs(scorer, generator, key, group, label, accept_size)
    view = nnx.view(prefilter.classifier, use_running_average=True, raise_if_not_found=False)
    l_def, l_state = nnx.split(view)
    self.models = (*inputs["models"], l_def)
    self.states = (*inputs["states"], scorer.replicate(l_state))
    self.calibration = inputs["calibration"]
    self.batch_sharding = inputs["batch_sharding"]
    self.cond = inputs["cond"]
    self.key = key
    self.threshold = jnp.float32(prefilter.threshold)
    self.step_size = jnp.float32(nudge.step_size if nudge else 0.0)
    self.static = {"config": scorer.config, "pool_size": pool_size, "accept_size": accept_size,
                   "nudge_steps": nudge.steps if nudge else 0}

  def __call__(self, start: int, need: int) -> dict[str, Any]:
    return _filter_generate_and_score(self.models, self.states, self.calibration, self.key, jnp.int32(start),
                                      jnp.int32(need), self.cond, self.threshold, self.step_size,
                                      batch_sharding=self.batch_sharding, **self.static)


def default_round_sizes(scorer, prefilter, pool_size, accept_size) -> tuple[int, int]:
  """Round sizes: accept_size = the scorer's batch; pool_size = accept_size x ceil(2 / acceptance), at most 32x.

  The acceptance rate is the pre-filter's on its validation latents, so a pool usually
  holds twice the accepted latents a round needs: a larger pool costs latent draws
  and classifier passes (measured on CPU: a 32x pool made a round of 32 images 1.6x
  slower at 90% acceptance) without generating more.
  """
  accept_size = accept_size if accept_size is not None else scorer.config.batch_size
  if pool_size is None:
    if prefilter is None:
      pool_size = accept_size
    else:
      pool_size = sampling.pool_size_for(accept_size,
                                         (prefilter.report.get("validation") or {}).get("acceptance_rate"))
  return pool_size, accept_size


def warm_up_latent(scorer, generator, prefilter: Prefilter | None, key: jax.Array, group: str, *, label: int = 0,
                   pool_size: int | None = None, accept_size: int | None = None,
                   nudge: NudgeConfig | None = None) -> float:
  """Compiles `sample_valid_latent`'s round; returns its seconds (a call that needs nothing: the compilation).

  Without a pre-filter it compiles the unfiltered round (`jaxcxr.sampling.warm_up_sampler`).
  """
  pool_size, accept_size = default_round_sizes(scorer, prefilter, pool_size, accept_size)
  if prefilter is None:
    _check_round(generator, None, group, label, pool_size, accept_size, nudge)
    return sampling.warm_up_sampler(scorer, generator, key, group, label=label, batch_size=accept_size)
  caller = _RoundCaller(scorer, generator, prefilter, key, group, label, pool_size, accept_size, nudge)
  t0 = time.perf_counter()
  jax.block_until_ready(caller(0, 0))
  return time.perf_counter() - t0


def sample_valid_latent(scorer, generator, prefilter: Prefilter | None, key: jax.Array, k: int, group: str, *,
                        label: int = 0, pool_size: int | None = None, accept_size: int | None = None,
                        max_rounds: int = 10_000, max_generated: int | None = None,
                        nudge: NudgeConfig | None = None, progress: bool = False,
                        journal: sampling.SampleJournal | None = None) -> dict[str, Any]:
  """Latent-pre-filtered sampling: exactly `k` post-filter-valid images, rejected latents never generated.

  Each round is ONE compiled call (`_filter_generate_and_score`, same shapes every
  round, so it compiles once per configuration): draw the z of the next `pool_size`
  latent indices (`models.generator.latents(key, i)`, indices from a running
  counter so no z repeats), optionally nudge them (`nudge`), score them with the
  pre-filter's classifier, select the first `accept_size` accepted ones in index
  order with static shapes (`lax.top_k` on position, accepted first; padding slots
  when fewer were accepted are never generated), generate and post-score only those,
  in order, until the valid images still needed are found (`sampling.finish_slots`).
  The counter then moves past the latents considered: the whole pool, or, when
  accepted latents were left unfinished, up to the last generated one, so no
  accepted latent is skipped. Hence, without nudging, the generated latents are
  exactly the accepted indices in increasing order whatever the pool and accept
  sizes, and the returned images are the first `k` indices that are both accepted
  and valid. The host only collects valid images and stops at `k`.

  `prefilter=None` is the baseline (accept everything): plain post-filtering by
  `jaxcxr.sampling.sample_valid` (the next `accept_size` consecutive indices per round;
  pool_size = accept_size by default), the same images as a pre-filter that accepts every
  latent. The host loop of both is `jaxcxr.sampling.run_rounds`.

  Args:
    scorer: a `jaxcxr.scoring.Scorer` (post-filter).
    generator: the `Generator` whose latents the pre-filter was fitted on.
    prefilter: a `Prefilter` of `group`, or None.
    key: PRNG key of the latents.
    k: valid images wanted (>= 0).
    group: age-sex group.
    label: 0 normal / 1 abnormal condition.
    pool_size: latents drawn per round (default accept_size x ceil(2 / acceptance) with
      the pre-filter's validation acceptance rate, at most 32x; accept_size without a
      pre-filter): about twice the latents a round needs keeps the slots full.
    accept_size: images generated and scored per round (default the scorer's batch size).
    max_rounds: give up after this many rounds (a pre-filter that accepts nothing).
    max_generated: give up once this many images were generated (default no limit).
    nudge: `NudgeConfig` to climb the pre-filter's logit before filtering, or None.
    progress: one line per round on stderr.
    journal: a `jaxcxr.sampling.SampleJournal`: save the progress after each round, resume a saved one.

  Returns:
    {"images": uint8 (n_valid, G, G) valid images in index order, "z": float32 (n_valid,
    latent_dim) (nudged ones when nudging), "index" int (n_valid,) latent indices,
    "scores" {name: float32 (n_valid,)} (all > 0), "n_valid" (= k unless a limit was hit),
    "n_latents_drawn" (latents considered), "n_generated" (images generated: used
    slots, padding excluded; = the accepted latents among those drawn), "n_valid_seen"
    (valid among them, including any beyond k), "n_rounds", "seconds" (wall time,
    rounds only), "valid_rate" (n_valid_seen / n_generated), "acceptance_rate"
    (n_generated / n_latents_drawn), "generated_per_valid" (n_generated /
    n_valid_seen), "complete" (n_valid == k), "pool_size", "accept_size", "n_slots" (images
    computed: n_generated and at most one padding slot per round, in the last chunk on a CPU),
    "n_judged" (latents the classifier judged: n_rounds * pool_size), "round_seconds"
    (`jaxcxr.sampling.run_rounds`)}.

  Raises:
    ValueError: k < 0, bad sizes, a pre-filter of another group or latent size, nudging
      without a trained pre-filter, a label the generator lacks.
    jaxcxr.data.DataError: unknown group.
  """
  sampling.check_limits(k, max_rounds, max_generated)
  pool_size, accept_size = default_round_sizes(scorer, prefilter, pool_size, accept_size)
  if prefilter is None:
    _check_round(generator, None, group, label, pool_size, accept_size, nudge)
    found = sampling.sample_valid(scorer, generator, key, k, group, label=label, batch_size=accept_size,
                                  max_rounds=max_rounds, max_generated=max_generated, progress=progress,
                                  journal=journal)
    return {**found, "pool_size": pool_size}
  caller = _RoundCaller(scorer, generator, prefilter, key, group, label, pool_size, accept_size, nudge)
  return sampling.run_rounds(caller, k, group, resolution=generator.config.resolution,
                             latent_dim=generator.config.latent_dim, pool_size=pool_size, accept_size=accept_size,
                             max_rounds=max_rounds, max_generated=max_generated, progress=progress, journal=journal)
