"""Which sampler runs: post-filtering alone, a latent pre-filter, or the cascade pre-filter; shipped or given.

`resolve_sampler` turns what a caller asks for (a threshold strategy or none, what the
pre-filter should judge, a given pre-filter, a saved one or a latent dataset to fit one on)
into a `Sampler`: the chosen pre-filter bound to a post-filter, a generator and a group. A
`Sampler` compiles its round (`warm_up`), samples exactly k valid images within the default
limits of `jaxcxr.sampling` (`sample`), and shows how its pre-filter judges fresh latents
(`judge`). `jaxcxr sample`, `jaxcxr demo` and the notebooks choose their sampler here.

The rules, in order:

1. Nothing asked for (no strategy, no pre-filter, no latent dataset): post-filtering alone
   (`jaxcxr.sampling.sample_valid`).
2. A given `CascadePrefilter`; or, with nothing given and `prefilter_input` "auto" or "base",
   the generator's shipped cascade pre-filter (`cascade.shipped_cascade_prefilter`, found by
   the generator's model id): the cascade sampler (`cascade.sample_valid_cascade`), which
   judges each latent by the generator's cheap base image. "base" without one is refused.
3. Otherwise a latent pre-filter (`sampler.sample_valid_latent`), which judges z alone: a
   given `Prefilter` or the folder of a saved one (set), one fitted now on a latent dataset
   at the post-filter's level, or the shipped one of the generator, level and group.

A latent pre-filter must have learned this generator's latents (model id) and this
post-filter's validity (`prefilters.check_prefilter_scorer`); a cascade one, this generator's
base images.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxcxr import checkpoints, sampling
from jaxcxr.models import generator as generator_lib
from jaxcxr.prefilter import cascade as cascade_lib
from jaxcxr.prefilter.dataset import load_latent_dataset, records_at_scorer_level
from jaxcxr.prefilter.prefilters import (Prefilter, check_prefilter_scorer, fit_prefilter, load_prefilter,
                                         shipped_prefilter)
from jaxcxr.prefilter.sampler import sample_valid_latent, warm_up_latent
from jaxcxr.prefilter.thresholds import STRATEGIES

__all__ = ["KINDS", "PREFILTER_INPUTS", "Sampler", "resolve_sampler"]

# What `resolve_sampler`'s `prefilter_input` asks the pre-filter to judge: "base" the cascade generator's base
# image, "z" the latent alone, "auto" the base image when the generator has a shipped cascade pre-filter.
PREFILTER_INPUTS: tuple[str, ...] = ("auto", "z", "base")
# The three samplers, by what runs before the post-filter: nothing, a latent pre-filter, the cascade pre-filter.
KINDS: tuple[str, ...] = ("none", "latent", "cascade")


@dataclasses.dataclass(frozen=True)
class Sampler:
  """A chosen sampler: a pre-filter (or none) in front of a post-filter, for one generator and group.

  Build it with `resolve_sampler`. Every sampler returns the dict `jaxcxr.sampling.run_rounds`
  documents, and all three give the first k valid images of accepted latent indices.

  Attributes:
    scorer: the post-filter `jaxcxr.scoring.Scorer` (its level is the one the pre-filter must know).
    generator: the `Generator`.
    group: the age-sex group sampled.
    prefilter: a `CascadePrefilter`, a `Prefilter`, or None (post-filtering alone).
    strategy: the threshold strategy of a cascade pre-filter (a latent one carries its own).
    label: 0 normal / 1 abnormal condition.
    pool_size: latents drawn per round (None: the sampler's default for the pre-filter's acceptance).
    accept_size: images finished per round (None: the post-filter's batch size).
    source: where the pre-filter came from: its folder, "given" or "fitted" (None without one).
  """

  scorer: Any
  generator: Any
  group: str
  prefilter: cascade_lib.CascadePrefilter | Prefilter | None = None
  strategy: str | None = None
  label: int = 0
  pool_size: int | None = None
  accept_size: int | None = None
  source: str | None = None

  @property
  def kind(self) -> str:
    """"none", "latent" or "cascade" (`KINDS`)."""
    if self.prefilter is None:
      return "none"
    return "cascade" if isinstance(self.prefilter, cascade_lib.CascadePrefilter) else "latent"

  @property
  def threshold(self) -> float | None:
    """The acceptance threshold: on log P(valid) (cascade, at the post-filter's level), on the logit (latent)."""
    if self.kind == "cascade":
      return self.prefilter.threshold(self.scorer.strictness_name, self.strategy)
    return None if self.prefilter is None else self.prefilter.threshold

  def summary(self) -> dict[str, Any] | None:
    """JSON-ready description of the pre-filter (None without one); "input" says what it judges, "z" or "base"."""
    if self.kind == "none":
      return None
    if self.kind == "latent":
      return self.prefilter.summary()
    level = self.prefilter.report.get("levels", {}).get(self.scorer.strictness_name, {})
    return {"input": "base", "checkpoint": self.source if self.source not in ("given", None) else None,
            "strategy": self.strategy, "threshold": self.threshold, "test_roc_auc": level.get("roc_auc_test")}

  @property
  def round_size(self) -> int:
    """Slots per round (the most images a round generates): accept_size, else the post-filter's batch size."""
    return self.accept_size if self.accept_size is not None else self.scorer.config.batch_size

  def warm_up(self, key: jax.Array) -> float:
    """Compiles the sampler's round; returns its seconds (one call that needs no image: the compilation).

    Raises:
      ValueError: bad sizes, a label the generator lacks, a pre-filter that does not fit the generator.
      jaxcxr.data.DataError: unknown group.
    """
    options = {"label": self.label, "pool_size": self.pool_size, "accept_size": self.accept_size}
    if self.kind == "none":
      return sampling.warm_up_sampler(self.scorer, self.generator, key, self.group, label=self.label,
                                      batch_size=self.accept_size)
    if self.kind == "latent":
      return warm_up_latent(self.scorer, self.generator, self.prefilter, key, self.group, **options)
    return cascade_lib.warm_up_cascade(self.scorer, self.generator, self.prefilter, key, self.group,
                                       strategy=self.strategy, **options)

  def sample(self, key: jax.Array, k: int, *, max_generated: int | None = None, max_rounds: int | None = None,
             progress: bool = False, journal: sampling.SampleJournal | None = None) -> dict[str, Any]:
    """Exactly `k` post-filter-valid images (fewer when a limit is hit first).

    Args:
      key: PRNG key of the latents (latent i is `models.generator.latents(key, i)`).
      k: valid images wanted (>= 0).
      max_generated: give up once this many images were generated (default
        `jaxcxr.sampling.default_max_generated(k)`).
      max_rounds: give up after this many rounds (default `jaxcxr.sampling.default_max_rounds`
        of max_generated and the round size: a pre-filter that accepts nothing stops too).
      progress: one line per round on stderr.
      journal: a `jaxcxr.sampling.SampleJournal`: save the progress after each round, resume a saved one.

    Returns:
      `jaxcxr.sampling.run_rounds`'s dict.

    Raises:
      ValueError: k < 0, bad limits or sizes, a label the generator lacks.
      jaxcxr.data.DataError: unknown group.
    """
    if max_generated is None:
      max_generated = sampling.default_max_generated(k)
    if max_rounds is None:
      max_rounds = sampling.default_max_rounds(max_generated, self.round_size)
    limits = {"max_generated": max_generated, "max_rounds": max_rounds, "progress": progress, "journal": journal}
    if self.kind == "none":
      return sampling.sample_valid(self.scorer, self.generator, key, k, self.group, label=self.label,
                                   batch_size=self.accept_size, **limits)
    sizes = {"label": self.label, "pool_size": self.pool_size, "accept_size": self.accept_size}
    if self.kind == "latent":
      return sample_valid_latent(self.scorer, self.generator, self.prefilter, key, k, self.group, **sizes, **limits)
    return cascade_lib.sample_valid_cascade(self.scorer, self.generator, self.prefilter, key, k, self.group,
                                            strategy=self.strategy, **sizes, **limits)

  def judge(self, key: jax.Array, n: int, *, batch_size: int | None = None) -> dict[str, np.ndarray]:
    """The pre-filter's verdict on latents 0..n-1 of `key`, each one finished: what its ROC curve is measured on.

    Args:
      key: PRNG key of the latents.
      n: latents (>= 1).
      batch_size: latents per compiled call (default the post-filter's batch size).

    Returns:
      {"images": uint8 (n, G, G) every latent's image, "score": float32 (n,) the pre-filter's
      score (cascade: log P(valid) of the base image at the post-filter's level; latent: the
      classifier's logit), "accepted": bool (n,) score >= threshold, "index": int32 (n,)}.

    Raises:
      ValueError: no pre-filter (nothing judges), n < 1 or batch_size < 1.
    """
    batch_size = batch_size if batch_size is not None else self.scorer.config.batch_size
    if self.kind == "none":
      raise ValueError("Sampler.judge: this sampler has no pre-filter; every latent is finished")
    if self.kind == "cascade":
      out = cascade_lib.judge_latents_cascade(self.scorer, self.generator, self.prefilter, key, n, self.group,
                                              label=self.label, batch_size=batch_size)
      score, index, images = out["log_p"], out["index"], out["images"]
    else:
      if not isinstance(n, int) or n < 1:
        raise ValueError(f"Sampler.judge: n must be an integer >= 1, got {n!r}")
      index = np.arange(n, dtype=np.int32)
      z = generator_lib.latents(key, 0, n, self.generator.config.latent_dim)
      score = np.asarray(self.prefilter.logits(z), np.float32)
      images = generator_lib.sample_images(self.generator, key, n, self.group, label=self.label,
                                           batch_size=batch_size)
    return {"images": images, "score": score, "accepted": score >= np.float32(self.threshold), "index": index}


def resolve_sampler(scorer, generator, group: str, *, strategy: str | None = None,
                    prefilter: cascade_lib.CascadePrefilter | Prefilter | str | os.PathLike | None = None,
                    prefilter_input: str = "auto", latents: str | os.PathLike | Mapping[str, Any] | None = None,
                    latent_model: str = "logreg", generator_dir: str | os.PathLike | None = None, label: int = 0,
                    seed: int = 0, pool_size: int | None = None, accept_size: int | None = None,
                    log: Callable[[str], None] | None = None) -> Sampler:
  """The sampler to run for a request (the rules are in the module docstring).

  Args:
    scorer: the post-filter `jaxcxr.scoring.Scorer`, at the level to sample at.
    generator: the `Generator`.
    group: the age-sex group.
    strategy: threshold strategy (`STRATEGIES`); None with nothing else asked for means no
      pre-filter. A latent pre-filter set needs it; a cascade one defaults to "youden".
    prefilter: a `CascadePrefilter` or `Prefilter` to use, or the folder of a saved latent pre-filter
      (or pre-filter set, `prefilters.save_prefilter_set`).
    prefilter_input: `PREFILTER_INPUTS`: "auto" (default), "z" or "base"; what a shipped pre-filter judges.
    latents: a latent dataset (npz path or records of `dataset.load_latent_dataset`) to fit a
      latent pre-filter on now, at the post-filter's level; needs `strategy`.
    latent_model: the latent classifier preset when fitting (`jaxcxr.config.LATENT_PRESETS`).
    generator_dir: the generator's checkpoint folder: its model id finds the shipped pre-filters
      and is checked against the pre-filter's. Without it nothing shipped is looked up.
    label: 0 normal / 1 abnormal; pre-filters are fitted on normal images (label 0).
    seed: seed of a pre-filter fitted now.
    pool_size: latents per round (default: the sampler's, from the pre-filter's acceptance).
    accept_size: images finished per round (default the post-filter's batch size).
    log: optional callable(str) for a line saying which pre-filter was loaded or fitted.

  Returns:
    A `Sampler`.

  Raises:
    ValueError: an unknown strategy or input, contradictory requests, nothing shipped where
      something shipped was asked for, a pre-filter of another group, generator or post-filter,
      a level or strategy the cascade pre-filter has no threshold for.
    jaxcxr.checkpoints.CheckpointError: a missing or corrupt pre-filter or generator folder.
    jaxcxr.data.DataError: an unreadable latent dataset, or one that cannot be fitted.
  """
  log = log or (lambda message: None)
  sizes = {"label": label, "pool_size": pool_size, "accept_size": accept_size}
  if strategy is not None and strategy not in STRATEGIES:
    raise ValueError(f"unknown threshold strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
  if prefilter_input not in PREFILTER_INPUTS:
    raise ValueError(f"prefilter_input must be one of {', '.join(PREFILTER_INPUTS)}, got {prefilter_input!r}")
  if strategy is None and prefilter is None and latents is None:
    return Sampler(scorer, generator, group, **sizes)
  if label != 0:
    raise ValueError(f"pre-filters are fitted on latent datasets of normal images (label 0), got label={label}")
  if prefilter is not None and latents is not None:
    raise ValueError("give either latents (fit a pre-filter now) or prefilter (a given or saved one), not both")
  if latents is not None and strategy is None:
    raise ValueError("latents needs a strategy (the threshold strategy to fit with)")
  generator_id = checkpoints.model_id(generator_dir) if generator_dir is not None else None
  if isinstance(prefilter, cascade_lib.CascadePrefilter):
    if prefilter_input == "z":
      raise ValueError("a cascade pre-filter judges base images, not z; drop prefilter_input='z'")
    return _cascade_sampler(scorer, generator, group, prefilter, strategy or "youden", "given", generator_id,
                            generator_dir, sizes)
  if prefilter is None and latents is None and prefilter_input != "z" and generator_id is not None:
    path = cascade_lib.shipped_cascade_prefilter(generator_id)
    if path is not None:
      log(f"loading shipped cascade pre-filter {path} ({strategy} at {scorer.strictness_name})")
      return _cascade_sampler(scorer, generator, group, cascade_lib.load_cascade_prefilter(path), strategy, str(path),
                              generator_id, generator_dir, sizes)
  if prefilter_input == "base":
    if prefilter is None and latents is None:
      raise ValueError(f"no shipped cascade pre-filter for {generator_dir}; use --prefilter-input z")
    raise ValueError("--prefilter-input base uses the shipped cascade pre-filter; --latents and --prefilter-dir give "
                     "latent (z) pre-filters")
  pf, source = _latent_prefilter(scorer, group, strategy, prefilter, latents, latent_model, generator_id,
                                 generator_dir, seed, log)
  if pf.generator_id is not None and generator_id is not None and pf.generator_id != generator_id:
    raise ValueError(f"the pre-filter was fitted on latents of generator {pf.generator_id}, but {generator_dir} is "
                     f"{generator_id}; rebuild the latent dataset with `jaxcxr latents build`")
  check_prefilter_scorer(pf, scorer)
  return Sampler(scorer, generator, group, pf, pf.strategy, source=source, **sizes)


def _cascade_sampler(scorer, generator, group, cas, strategy, source, generator_id, generator_dir, sizes) -> Sampler:
  """A cascade `Sampler`, after checking the pre-filter's generator and its threshold at the scorer's level."""
  if cas.generator_id is not None and generator_id is not None and cas.generator_id != generator_id:
    raise ValueError(f"the cascade pre-filter learned the base images of generator {cas.generator_id}, but "
                     f"{generator_dir} is {generator_id}")
  cas.threshold(scorer.strictness_name, strategy)    # ValueError naming the levels and strategies it has
  return Sampler(scorer, generator, group, cas, strategy, source=source, **sizes)


def _latent_prefilter(scorer, group, strategy, prefilter, latents, latent_model, generator_id, generator_dir, seed,
                      log) -> tuple[Prefilter, str]:
  """The latent pre-filter of rule 3 and where it came from (its folder, "given" or "fitted")."""
  if isinstance(prefilter, Prefilter):
    pf, source = prefilter, "given"
  elif prefilter is not None:
    log(f"loading pre-filter {prefilter}")
    pf, source = load_prefilter(prefilter, strategy), str(prefilter)
  elif latents is not None:
    records = load_latent_dataset(latents) if isinstance(latents, (str, os.PathLike)) else latents
    records = records_at_scorer_level(records, scorer)     # learn validity at the level the post-filter runs at
    log(f"fitting the {latent_model} pre-filter of {group} (threshold: {strategy} on the validation part)")
    return fit_prefilter(records, group, strategy, latent_model, seed=seed, on_empty="error"), "fitted"
  else:
    shipped = shipped_prefilter(generator_id, scorer.strictness_name, group) if generator_id is not None else None
    if shipped is None:
      raise ValueError(f"no shipped pre-filter of {group} at strictness {scorer.strictness_name} for "
                       f"{generator_dir}; pass --latents F.npz (fit one now) or --prefilter-dir DIR")
    log(f"loading shipped pre-filter {shipped} ({strategy})")
    pf, source = load_prefilter(shipped, strategy), str(shipped)
  if pf.group != group:
    raise ValueError(f"{source}: a pre-filter of group {pf.group}, not {group}")
  return pf, source
