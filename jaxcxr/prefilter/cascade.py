"""Cascade pre-filter: judge each latent by its generator's cheap base image, finish only the promising ones.

A latent pre-filter sees only z; at the strict level its ROC AUC is 0.50-0.72 (the shipped
generators, `checkpoints/prefilters_gan_256/MODEL_CARD.md`) and no threshold on it reaches a 3x
speed-up without costing diversity. A cascade generator (`GeneratorConfig.upsampler`) first
makes a base image, a fraction of the cost of the full image plus its post-filter scoring
(about 1/50 for a 64x64 base), and its noiseless upsampler makes the output a function of that
base image. So each round here:

1. draws a pool of latents and, a few at a time and in order, makes their base images (cheap)
   and predicts the post-filter's raw measures from each (`ScorePredictor`), and from them
   log P(valid) at the level the post-filter runs at (`log_valid_probability`), until enough
   latents clear the threshold (`jaxcxr.batching.in_chunks_until`);
2. upsamples and post-scores the first of those accepted latents, in order, until the valid
   images still needed are found (`jaxcxr.sampling.finish_slots`; static shapes, as
   `jaxcxr.prefilter.sampler`).

How many accepted latents a round gathers: `accept_size`, or in the last rounds the valid
images still needed over the pre-filter's validation precision (what they are expected to
yield), so that the last round neither judges nor finishes latents the run will not use.

Every accepted image is still post-scored: the cascade pre-filter only decides what is worth
finishing, never what is valid. `CascadePrefilter` is the predictor with one threshold per
(strictness level, strategy), chosen on validation latents; `fit_cascade_prefilter` builds it
from a latent dataset, `load_cascade_prefilter` / `shipped_cascade_prefilter` read it, and
`sample_valid_cascade` samples with it through `jaxcxr.sampling.run_rounds`;
`judge_latents_cascade` finishes every latent of a key and returns each one's log P(valid)
beside its image (what the pre-filter's ROC curve is measured on).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr import io as io_lib
from jaxcxr import metrics as metrics_lib
from jaxcxr import sampling, scoring
from jaxcxr import data as data_lib
from jaxcxr.batching import default_chunk, in_chunks_until, map_batches
from jaxcxr.data import DataError
from jaxcxr.models.condition import group_condition_batch
from jaxcxr.config import ScorePredictorConfig
from jaxcxr.models.score_predictor import ScorePredictor
from jaxcxr.prefilter.dataset import scorer_id as scorer_id_of
from jaxcxr.prefilter.thresholds import STRATEGIES, select_threshold, threshold_report
from jaxcxr.train import score_predictor as trainer

__all__ = [
    "CASCADE_SCORES",
    "CascadePrefilter",
    "JUDGE_CPU_CHUNK",
    "TRACE_COUNTS",
    "fit_cascade_prefilter",
    "judge_latents_cascade",
    "load_cascade_prefilter",
    "log_valid_probability",
    "log_valid_probabilities",
    "sample_valid_cascade",
    "shipped_cascade_prefilter",
]

_FORMAT = "jaxcxr.cascade-prefilter/1"

# The measure each score is built from (`scoring.score_from_measures`): its prediction error is the score's.
CASCADE_SCORES: dict[str, str] = {"score_shape": "shape", "score_abnormal": "abnormal_logit",
                                  "score_maxheat": "maxheat", "score_symmetry": "symmetry",
                                  "score_left2right": "log_ratio"}

# Number of traces (compilations) of `_cascade_round`, for the no-recompile checks.
TRACE_COUNTS: dict[str, int] = {"cascade_round": 0}

# Latents judged per chunk of a round on one CPU device (elsewhere: `accept_size` per chunk). The 64x64 base
# image and the predictor of `gan_256` v2's cascade, 384 latents on one core: 1.69-1.70 ms per latent in chunks of 2-8,
# 1.72-1.78 in chunks of 16-32, 2.50 in one batch (`python -m benchmarks.time_to_k_phases`,
# benchmarks/results/time_to_k_phases_cpu.json).
JUDGE_CPU_CHUNK = 8


def log_valid_probability(predictor: ScorePredictor, base: jax.Array, calibration) -> jax.Array:
  """log P(valid) of base images at a calibration: sum over the five scores of log Phi(score / sigma).

  Each predicted score comes from the predicted measures through
  `jaxcxr.scoring.score_from_measures` (lungs taken as present); sigma is the residual
  standard deviation of the measure it is built from (`CASCADE_SCORES`). The errors are
  taken as independent: the value ranks images well and is a rough probability.

  Args:
    predictor: a fitted `ScorePredictor` predicting every measure of `CASCADE_SCORES`.
    base: float (B, R, R, 1) base images in [-1, 1].
    calibration: a `jaxcxr.scoring.Calibration` (the level the post-filter runs at).

  Returns:
    float32 (B,).
  """
  measures = predictor.measures(base)
  ones = jnp.ones_like(measures["shape"])
  scores, _ = scoring.score_from_measures({**measures, "area_right": ones, "area_left": ones}, calibration)
  sigma = {name: predictor.residual_std[...][i] for i, name in enumerate(predictor.config.measures)}
  return sum(jax.scipy.stats.norm.logcdf(scores[k] / sigma[m]) for k, m in CASCADE_SCORES.items())


def _quantize(base: jax.Array) -> jax.Array:
  """Base images rounded to the uint8 levels the predictor was trained on, back in [-1, 1]."""
  return jnp.round((jnp.clip(base, -1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0


# ----------------------------------------------------------------------------- the fitted pre-filter


@dataclasses.dataclass
class CascadePrefilter:
  """A base-image score predictor with thresholds on log P(valid), per strictness level and strategy.

  Attributes:
    predictor: the fitted `ScorePredictor`.
    thresholds: {level name: {strategy: threshold on log P(valid)}}, chosen on validation latents.
    generator_id: `checkpoints.model_id` of the cascade generator whose base images it learned.
    scorer_id: the post-filter models (`prefilter.scorer_id`) that measured its training images.
    report: JSON-ready record: data, split sizes, fit history, and per level the validation
      and test ROC AUC and per strategy the validation and test `threshold_report`s.
  """

  predictor: ScorePredictor
  thresholds: Mapping[str, Mapping[str, float]]
  generator_id: str | None = None
  scorer_id: str | None = None
  report: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def threshold(self, level: str, strategy: str) -> float:
    """The threshold of a level name and a strategy; ValueError names the ones it has."""
    if level not in self.thresholds:
      raise ValueError(f"this cascade pre-filter has thresholds for the levels {sorted(self.thresholds)}, not "
                       f"{level!r}")
    if strategy not in self.thresholds[level]:
      raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(self.thresholds[level])}")
    return float(self.thresholds[level][strategy])

  def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
    """Writes the predictor (`checkpoints.save_model`) with the thresholds and report in its metadata."""
    meta = {"cascade_prefilter_format": _FORMAT, "thresholds": {k: dict(v) for k, v in self.thresholds.items()},
            "generator_id": self.generator_id, "scorer_id": self.scorer_id,
            "report": io_lib.to_json_safe(dict(self.report))}
    return checkpoints.save_model(directory, self.predictor, self.predictor.config, metadata=meta,
                                  overwrite=overwrite)


def load_cascade_prefilter(directory: str | os.PathLike) -> CascadePrefilter:
  """A `CascadePrefilter` written by `CascadePrefilter.save`.

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing or unreadable checkpoint, or one that is not a
      cascade pre-filter.
  """
  predictor, _, meta = checkpoints.load_model(directory, lambda c: ScorePredictor(c, rngs=nnx.Rngs(0)),
                                              ScorePredictorConfig)
  if meta.get("cascade_prefilter_format") != _FORMAT:
    raise checkpoints.CheckpointError(f"{directory}: not a cascade pre-filter (format "
                                      f"{meta.get('cascade_prefilter_format')!r}, expected {_FORMAT!r})")
  return CascadePrefilter(predictor, meta["thresholds"], meta.get("generator_id"), meta.get("scorer_id"),
                          meta.get("report") or {})


def shipped_cascade_prefilter(generator_id: str) -> pathlib.Path | None:
  """The shipped cascade pre-filter of a generator (by `checkpoints.model_id`), or None."""
  root = checkpoints.checkpoints_root()
  for name in checkpoints.SHIPPED_CASCADE_PREFILTERS:
    path = root / name
    if (path / "jaxcxr_manifest.json").exists():
      meta = checkpoints.read_metadata(path)
      if meta.get("generator_id") == generator_id:
        return path
  return None


def fit_cascade_prefilter(records: Mapping[str, Any], base: np.ndarray, scorer, predictor_config, *,
                          levels: Sequence[str] = ("standard", "strict"), split_seed: int = 0,
                          log=None, **fit_options) -> CascadePrefilter:
  """Fits the predictor on 60% of the latents (per group), thresholds on 20%, reports on the last 20%.

  Args:
    records: a latent dataset of the cascade generator with "measures" (`build_latent_dataset`).
    base: uint8 (N, R, R) base images of its latents (`train.score_predictor.base_images`).
    scorer: the `jaxcxr.scoring.Scorer` that measured the records (any level).
    predictor_config: the `ScorePredictorConfig`.
    levels: the strictness levels to choose thresholds for.
    split_seed: seed of the per-group split.
    log: optional callable(str).
    **fit_options: passed to `train.score_predictor.fit_score_predictor` (steps, ...).

  Raises:
    jaxcxr.data.DataError: records without measures, or measured by other models than the scorer's.
  """
  log = log or (lambda message: None)
  if "measures" not in records:
    raise DataError("the latent dataset holds no raw measures; rebuild it with `jaxcxr latents build`")
  expected, stored = scorer_id_of(scorer), records.get("scorer_id")
  if expected and stored and expected != stored:
    raise DataError(f"the latent dataset was measured by post-filter models {stored}, not the scorer's {expected}")
  parts = trainer.split_indices(records["group"], seed=split_seed)
  log(f"fitting the score predictor on {parts['train'].size} base images, {parts['validation'].size} for "
      "validation")
  predictor, history = trainer.fit_score_predictor(base, records["measures"], predictor_config,
                                                   train=parts["train"], validation=parts["validation"],
                                                   **fit_options)
  log_p = np.stack([log_valid_probabilities(predictor, base, scorer._calibration_at(level)[1])  # pylint: disable=protected-access
                    for level in levels])
  thresholds: dict[str, dict[str, float]] = {}
  per_level: dict[str, Any] = {}
  for li, level in enumerate(levels):
    _, valid = scorer.scores_at(records["measures"], level)
    y = valid.astype(np.int64)
    val, test = parts["validation"], parts["test"]
    thresholds[level], strategies = {}, {}
    for strategy in STRATEGIES:
      t = select_threshold(y[val], log_p[li, val], strategy)
      thresholds[level][strategy] = float(t)
      strategies[strategy] = {"validation": threshold_report(y[val], log_p[li, val], t),
                              "test": threshold_report(y[test], log_p[li, test], t)}
    per_level[level] = {"base_rate_test": float(y[test].mean()),
                        "roc_auc_validation": float(metrics_lib.compute_roc_auc(log_p[li, val], y[val])),
                        "roc_auc_test": float(metrics_lib.compute_roc_auc(log_p[li, test], y[test])),
                        "roc_auc_test_ci95": metrics_lib.roc_auc_interval(log_p[li, test], y[test]),
                        "strategies": strategies}
    log(f"{level}: test ROC AUC {per_level[level]['roc_auc_test']:.3f} (base rate "
        f"{per_level[level]['base_rate_test']:.3f})")
  report = {"n": int(len(records["z"])), "parts": {k: int(v.size) for k, v in parts.items()},
            "split_seed": split_seed, "history": history, "levels": per_level}
  return CascadePrefilter(predictor, thresholds, records.get("generator_id"), stored or expected, report)


def log_valid_probabilities(predictor: ScorePredictor, base: np.ndarray, calibration, *,
                            batch_size: int = 500) -> np.ndarray:
  """`log_valid_probability` of uint8 (N, R, R) base images on the host: float32 (N,), in padded batches."""
  graphdef, state = nnx.split(predictor)
  calibration = jax.tree.map(jnp.asarray, calibration)
  return map_batches(lambda x: _log_p_uint8(graphdef, state, x, calibration), base, batch_size)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _log_p_uint8(graphdef, state, images, calibration):
  return log_valid_probability(nnx.merge(graphdef, state), data_lib.to_signed(images)[..., None], calibration)


# ----------------------------------------------------------------------------- sampling


def _base_and_log_p(generator, predictor: ScorePredictor, z: jax.Array, cond: jax.Array, calibration):
  """Base images (B, r, r, 1) in [-1, 1] of latents z (B, D) and their log P(valid) (B,), read from the uint8 levels."""
  base = generator.base_image(z, cond)
  return base, log_valid_probability(predictor, _quantize(base), calibration)


@functools.partial(jax.jit, static_argnames=("models", "config", "pool_size", "accept_size", "batch_sharding"))
def _cascade_round(models, states, calibration, key, start, want, need, pool_cond, threshold, *, config, pool_size,
                   accept_size, batch_sharding):
  """One round of cascade-filtered sampling in one compiled call (shapes static in every round).

  models/states: (U-Net, classifier, cascade generator, score predictor). Latent indices
  start .. start+pool_size-1 give z; their base images and log P(valid) are computed in
  chunks, in order, until `want` (<= accept_size) of them are accepted (log P(valid) >=
  threshold). The first `want` accepted in index order fill the slots and are upsampled and
  post-scored in order until `need` valid images are found; padding slots, when fewer were
  accepted, are never computed.
  """
  TRACE_COUNTS["cascade_round"] += 1          # runs at trace time only
  generator = nnx.merge(models[2], states[2])
  predictor = nnx.merge(models[3], states[3])
  index = start + jnp.arange(pool_size, dtype=jnp.int32)                                 # (P,)
  z = scoring.latents_at(key, index, generator.config.latent_dim)                         # (P, D)

  def judge(z, cond):
    base, log_p = _base_and_log_p(generator, predictor, z, cond, calibration)             # (c, r, r, 1), (c,)
    return {"base": base, "log_p": log_p}

  pool, judged = in_chunks_until(judge, z, pool_cond, chunk=JUDGE_CPU_CHUNK if default_chunk() else accept_size,
                                 limit=pool_size, target=want,
                                 count=lambda out, _: (out["log_p"] >= threshold).sum())
  accepted = (jnp.arange(pool_size, dtype=jnp.int32) < judged) & (pool["log_p"] >= threshold)
  chosen, n_accepted = sampling.select_accepted(accepted, accept_size)
  z_chosen, base_chosen = z[chosen], pool["base"][chosen]
  if batch_sharding is not None:
    base_chosen = jax.lax.with_sharding_constraint(base_chosen, batch_sharding)

  def finish(base, z):
    x = jnp.clip((generator.upsample(base, z) + 1.0) * 0.5, 0.0, 1.0)                      # (c, G, G, 1)
    out = scoring.score_batch(models[:2], states[:2], calibration, x, config, False)
    return {"images": jnp.round(x[..., 0] * 255.0).astype(jnp.uint8), "scores": out["scores"], "valid": out["valid"]}

  out, slot_used, finished, computed = sampling.finish_slots(
      finish, base_chosen, z_chosen, limit=jnp.minimum(jnp.minimum(n_accepted, want), accept_size), need=need)
  return {"images": out["images"], "z": z_chosen, "index": index[chosen], "log_p": pool["log_p"][chosen],
          "scores": out["scores"], "valid": out["valid"], "slot_used": slot_used,
          "consumed": sampling.consumed_latents(chosen, n_accepted, finished, judged), "computed": computed,
          "judged": judged}


def _check_cascade(generator, prefilter: CascadePrefilter, label: int, caller: str) -> None:
  """Raises ValueError unless the generator is a cascade whose base images the predictor reads, conditioned on label."""
  sampling.check_label(generator, label)
  cfg = generator.config
  if cfg.upsampler is None:
    raise ValueError(f"{caller}: the generator is not a cascade (no upsampler)")
  if prefilter.predictor.config.resolution != cfg.base_resolution:
    raise ValueError(f"{caller}: the predictor reads {prefilter.predictor.config.resolution}px base images, the "
                     f"generator makes {cfg.base_resolution}px ones")


class _CascadeRound:
  """Everything constant across rounds of `sample_valid_cascade`, split once; `__call__(start, need)` runs one round."""

  def __init__(self, scorer, generator, prefilter: CascadePrefilter, key, group: str, label: int, strategy: str,
               pool_size: int, accept_size: int):
    _check_cascade(generator, prefilter, label, "sample_valid_cascade")
    cfg = generator.config
    if not 1 <= accept_size <= pool_size:
      raise ValueError(f"sample_valid_cascade: need 1 <= accept_size <= pool_size, got {accept_size} and "
                       f"{pool_size}")
    level = scorer.strictness_name
    threshold = prefilter.threshold(level, strategy)
    inputs = sampling.round_inputs(scorer, generator, key, group, label, accept_size)
    p_def, p_state = nnx.split(prefilter.predictor)
    self.models = (*inputs["models"], p_def)
    self.states = (*inputs["states"], scorer.replicate(p_state))
    self.calibration, self.batch_sharding, self.key = inputs["calibration"], inputs["batch_sharding"], key
    self.pool_cond = jnp.asarray(group_condition_batch(group, pool_size, label, conditions=cfg.conditions))
    self.threshold = jnp.float32(threshold)
    self.accept_size = accept_size
    validation = prefilter.report.get("levels", {}).get(level, {}).get("strategies", {}).get(strategy, {})
    self.precision = (validation.get("validation") or {}).get("precision")
    self.static = {"config": scorer.config, "pool_size": pool_size, "accept_size": accept_size}

  def want(self, need: int) -> int:
    """Accepted latents a round gathers: accept_size, or fewer when they are expected to yield the `need` left.

    ceil(need / the pre-filter's validation precision) at its level and strategy (accept_size
    when that is unknown or 0); 0 when nothing is needed. Too few only costs another round.
    """
    if need <= 0:
      return 0
    if not self.precision:
      return self.accept_size
    return min(self.accept_size, math.ceil(need / self.precision))

  def __call__(self, start: int, need: int, *, want: int | None = None) -> dict[str, Any]:
    """One round from latent `start` for `need` valid images (`want` overrides `self.want(need)`)."""
    want = self.want(need) if want is None else want
    return _cascade_round(self.models, self.states, self.calibration, self.key, jnp.int32(start), jnp.int32(want),
                          jnp.int32(need), self.pool_cond, self.threshold, batch_sharding=self.batch_sharding,
                          **self.static)


def default_cascade_round_sizes(scorer, prefilter: CascadePrefilter, strategy: str, pool_size: int | None,
                                accept_size: int | None) -> tuple[int, int]:
  """accept_size = the scorer's batch; pool_size = accept_size x ceil(2 / validation acceptance), at most 32x."""
  accept_size = accept_size if accept_size is not None else scorer.config.batch_size
  if pool_size is None:
    level = prefilter.report.get("levels", {}).get(scorer.strictness_name, {})
    report = level.get("strategies", {}).get(strategy, {}).get("validation", {})
    pool_size = sampling.pool_size_for(accept_size, report.get("acceptance_rate"))
  return pool_size, accept_size


def warm_up_cascade(scorer, generator, prefilter: CascadePrefilter, key: jax.Array, group: str, *,
                    strategy: str = "youden", label: int = 0, pool_size: int | None = None,
                    accept_size: int | None = None) -> float:
  """Compiles `sample_valid_cascade`'s round; returns its seconds (a call that needs nothing: the compilation)."""
  pool_size, accept_size = default_cascade_round_sizes(scorer, prefilter, strategy, pool_size, accept_size)
  caller = _CascadeRound(scorer, generator, prefilter, key, group, label, strategy, pool_size, accept_size)
  t0 = time.perf_counter()
  jax.block_until_ready(caller(0, 0))
  return time.perf_counter() - t0


def sample_valid_cascade(scorer, generator, prefilter: CascadePrefilter, key: jax.Array, k: int, group: str, *,
                         strategy: str = "youden", label: int = 0, pool_size: int | None = None,
                         accept_size: int | None = None, max_rounds: int = 10_000,
                         max_generated: int | None = None, progress: bool = False,
                         journal: sampling.SampleJournal | None = None) -> dict[str, Any]:
  """Cascade-filtered sampling: exactly `k` post-filter-valid images; unpromising base images never finished.

  As `jaxcxr.prefilter.sample_valid_latent`, but each round judges its pool of latents by their
  base images (`log_valid_probability` at the level `scorer` runs at, against the
  pre-filter's `strategy` threshold for that level) instead of by z, in chunks and in order
  until it has the accepted latents it wants (the module docstring). "n_generated" counts
  finished (upsampled and post-scored) images; every judged latent ("n_judged") also cost a
  base image and a predictor pass, which the wall time includes. The images are the first
  `k` accepted and valid latent indices, whatever the pool and accept sizes.

  Args:
    scorer: the `jaxcxr.scoring.Scorer` (post-filter), at a level the pre-filter has thresholds for.
    generator: the cascade `Generator` whose base images the pre-filter learned.
    prefilter: a `CascadePrefilter`.
    key: PRNG key of the latents.
    k: valid images wanted (>= 0).
    group: age-sex group.
    strategy: which of the level's thresholds (`STRATEGIES`).
    label: 0 normal / 1 abnormal condition.
    pool_size: latents a round may judge (default accept_size x ceil(2 / validation acceptance), at most 32x;
      judging stops once the round has its accepted latents, so a larger pool costs no judging).
    accept_size: images finished per round (default the scorer's batch size).
    max_rounds, max_generated, progress, journal: as `jaxcxr.sampling.run_rounds`.

  Returns:
    `jaxcxr.sampling.run_rounds`'s dict.

  Raises:
    ValueError: k < 0, bad sizes, a generator that is not a cascade or does not fit the
      predictor, a level or strategy without a threshold, a label the generator lacks.
    jaxcxr.data.DataError: unknown group.
  """
  sampling.check_limits(k, max_rounds, max_generated)
  pool_size, accept_size = default_cascade_round_sizes(scorer, prefilter, strategy, pool_size, accept_size)
  caller = _CascadeRound(scorer, generator, prefilter, key, group, label, strategy, pool_size, accept_size)
  return sampling.run_rounds(caller, k, group, resolution=generator.config.resolution,
                             latent_dim=generator.config.latent_dim, pool_size=pool_size, accept_size=accept_size,
                             max_rounds=max_rounds, max_generated=max_generated, progress=progress, journal=journal)


@functools.partial(jax.jit, static_argnames=("models",))
def _finish_and_judge(models, states, calibration, z, cond):
  """Every latent of a batch finished (uint8 (B, G, G)) beside its log P(valid) (B,): a round without selection."""
  generator, predictor = nnx.merge(models[0], states[0]), nnx.merge(models[1], states[1])
  base, log_p = _base_and_log_p(generator, predictor, z, cond, calibration)
  return {"images": data_lib.signed_to_uint8(generator.upsample(base, z))[..., 0], "log_p": log_p}


def judge_latents_cascade(scorer, generator, prefilter: CascadePrefilter, key: jax.Array, n: int, group: str, *,
                          label: int = 0, batch_size: int | None = None) -> dict[str, np.ndarray]:
  """Latents 0..n-1 of `key`, every one finished, with the pre-filter's log P(valid) of each.

  What a round of `sample_valid_cascade` computes before it selects, for all n latents (latent i
  is `models.generator.latents(key, i)`, as in every sampler): the pre-filter's ROC curve is
  measured on these, with the post-filter's verdict on the images as the truth.

  Args:
    scorer: the `jaxcxr.scoring.Scorer` whose level (`strictness_name`) log P(valid) is computed at,
      and whose dtype the generator computes in.
    generator: the cascade `Generator` whose base images the pre-filter learned.
    prefilter: a `CascadePrefilter`.
    key: PRNG key of the latents.
    n: latents (>= 1).
    group: age-sex group.
    label: 0 normal / 1 abnormal condition.
    batch_size: latents per compiled call (default the scorer's batch size; every call has this shape).

  Returns:
    {"images": uint8 (n, G, G), "log_p": float32 (n,), "index": int32 (n,) latent indices}; a
    latent is accepted at a level and strategy when log_p >= `prefilter.threshold(level, strategy)`.

  Raises:
    ValueError: n < 1, batch_size < 1, a generator that is not a cascade or does not fit the
      predictor, a label the generator lacks.
    jaxcxr.data.DataError: unknown group.
  """
  batch_size = batch_size if batch_size is not None else scorer.config.batch_size
  if not isinstance(n, int) or n < 1 or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"judge_latents_cascade: need n >= 1 and batch_size >= 1, got {n!r} and {batch_size!r}")
  _check_cascade(generator, prefilter, label, "judge_latents_cascade")
  cfg = generator.config
  g_def, g_state = scoring.split_with_dtype(generator, scorer.config.dtype)
  p_def, p_state = nnx.split(prefilter.predictor)
  calibration = scorer.device_calibration
  index = np.arange(n, dtype=np.int32)
  z = np.asarray(scoring.latents_at(key, jnp.asarray(index), cfg.latent_dim))
  cond = group_condition_batch(group, n, label, conditions=cfg.conditions)
  states = (scorer.replicate(g_state), scorer.replicate(p_state))
  out = map_batches(lambda b: _finish_and_judge((g_def, p_def), states, calibration, b["z"], b["cond"]),
                    {"z": z, "cond": cond}, batch_size, fixed_shape=True)
  return {"images": out["images"], "log_p": np.asarray(out["log_p"], np.float32), "index": index}
