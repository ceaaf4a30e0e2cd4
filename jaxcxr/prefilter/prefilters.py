"""Fitted pre-filters: a group's latent classifier with its logit threshold, fitted, saved and loaded.

`Prefilter` (classifier + logit threshold + strategy + group), `fit_prefilter` (train /
validation / test protocol), `Prefilter.save` / `save_prefilter_set` / `load_prefilter`
(checkpoints through `jaxcxr.checkpoints`), `shipped_prefilter` and
`check_prefilter_scorer`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import scipy.special
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr import io as io_lib
from jaxcxr import metrics as metrics_lib
from jaxcxr.config import LATENT_PRESETS, LatentClassifierConfig
from jaxcxr.models.latent import LatentClassifier
from jaxcxr.prefilter.classifiers import _inference_logits, fit_latent_classifier
from jaxcxr.prefilter.dataset import scorer_id, validate_latent_records
from jaxcxr.prefilter.thresholds import STRATEGIES, select_threshold, threshold_report

__all__ = [
    "ON_EMPTY",
    "Prefilter",
    "check_prefilter_scorer",
    "fit_prefilter",
    "load_prefilter",
    "save_prefilter_set",
    "shipped_prefilter",
]

# What `fit_prefilter` does with a group it cannot learn (too few valid or invalid latents).
ON_EMPTY: tuple[str, ...] = ("error", "accept_all")
_PREFILTER_FORMAT = "jaxcxr.prefilter/1"
_PREFILTER_SET_FORMAT = "jaxcxr.prefilter-set/1"


@dataclasses.dataclass(frozen=True)
class Prefilter:
  """A fitted latent pre-filter of one age-sex group: accept z when `classifier(z) >= threshold`.

  Attributes:
    classifier: the `LatentClassifier` (used in inference mode: BatchNorm running averages).
    threshold: acceptance threshold in LOGIT units (sigmoid(threshold) is the probability
      threshold; logits avoid float32 probabilities saturating at 1). -inf accepts every
      latent (the documented fallback for a group without enough valid latents).
    strategy: the `STRATEGIES` name that chose the threshold on validation latents.
    group: the age-sex group it was fitted for (the generator is conditional, so a
      latent's validity depends on the group).
    model_preset: the `jaxcxr.config.LATENT_PRESETS` name of the classifier.
    generator_id: `checkpoints.model_id` of the generator whose latents it learned.
    report: JSON-ready record of the fit: part sizes, validation and test
      `threshold_report`s, test ROC AUC, predicted speed-up (see `fit_prefilter`).
  """

  classifier: LatentClassifier
  threshold: float
  strategy: str
  group: str
  model_preset: str
  generator_id: str | None = None
  report: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def accepts_all(self) -> bool:
    """True for the fallback that accepts every latent (threshold -inf)."""
    return self.threshold == -math.inf

  @property
  def latent_dim(self) -> int:
    return self.classifier.config.latent_dim

  def logits(self, z: Any) -> np.ndarray:
    """float32 (B,) logits of latents z (B, latent_dim) on the host (`predict_latent`'s path)."""
    return _inference_logits(self.classifier, z)

  def accept(self, z: Any) -> np.ndarray:
    """bool (B,): which latents z (B, latent_dim) the pre-filter accepts."""
    return self.logits(z) >= np.float32(self.threshold)

  def summary(self) -> dict[str, Any]:
    """JSON-ready description: what it judges ("input": "z"), group, strategy, model, threshold, generator, record."""
    return {"input": "z", "group": self.group, "strategy": self.strategy, "model": self.model_preset,
            "accepts_all": self.accepts_all, "threshold": None if self.accepts_all else self.threshold,
            "generator_id": self.generator_id, "report": io_lib.to_json_safe(dict(self.report))}

  def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
    """Writes the classifier with `checkpoints.save_model`; threshold and record go in its metadata.

    Raises:
      jaxcxr.checkpoints.CheckpointError: `directory` exists and `overwrite` is False.
    """
    meta = {"prefilter_format": _PREFILTER_FORMAT,
            "threshold": None if self.accepts_all else float(self.threshold),
            "threshold_probability": None if self.accepts_all else float(scipy.special.expit(self.threshold)),
            "accepts_all": self.accepts_all, "strategy": self.strategy, "group": self.group,
            "model_preset": self.model_preset, "generator_id": self.generator_id,
            "report": io_lib.to_json_safe(dict(self.report))}
    return checkpoints.save_model(directory, self.classifier, self.classifier.config, metadata=meta,
                                  overwrite=overwrite)


def save_prefilter_set(directory: str | os.PathLike, prefilters: Sequence[Prefilter], *,
                       overwrite: bool = False) -> pathlib.Path:
  """Writes pre-filters that share one classifier and differ in threshold strategy, as one checkpoint.

  `fit_prefilter` with the same records, group, preset and seed fits the same classifier
  whatever the strategy, so the strategies of one group need one set of weights. The
  metadata holds each strategy's threshold and report; `load_prefilter(directory,
  strategy)` returns one of them.

  Raises:
    ValueError: no pre-filters, or pre-filters of different groups, generators or weights.
  """
  if not prefilters:
    raise ValueError("save_prefilter_set: no pre-filters")
  first = prefilters[0]
  weights = jax.tree.leaves(nnx.state(first.classifier, nnx.Param))
  for pf in prefilters[1:]:
    same = (pf.group, pf.generator_id, pf.model_preset) == (first.group, first.generator_id, first.model_preset)
    if not same or not all(np.array_equal(a, b) for a, b in zip(weights, jax.tree.leaves(
        nnx.state(pf.classifier, nnx.Param)))):
      raise ValueError(f"save_prefilter_set: the {pf.strategy} pre-filter has another group, generator or classifier "
                       f"than the {first.strategy} one")
  meta = {"prefilter_format": _PREFILTER_SET_FORMAT, "group": first.group, "model_preset": first.model_preset,
          "generator_id": first.generator_id,
          "strategies": {pf.strategy: {"threshold": None if pf.accepts_all else float(pf.threshold),
                                       "accepts_all": pf.accepts_all, "report": io_lib.to_json_safe(dict(pf.report))}
                         for pf in prefilters}}
  return checkpoints.save_model(directory, first.classifier, first.classifier.config, metadata=meta,
                                overwrite=overwrite)


def shipped_prefilter(generator_id: str, strictness: str, group: str) -> pathlib.Path | None:
  """The shipped pre-filter set `checkpoints/prefilters_*/STRICTNESS/GROUP` of a generator, or None.

  Shipped pre-filters are fitted per generator, post-filter level and group, with every
  threshold strategy (`save_prefilter_set`); the set whose metadata names `generator_id`
  is returned.
  """
  for candidate in sorted(checkpoints.checkpoints_root().glob(f"prefilters_*/{strictness}/{group}")):
    try:
      if checkpoints.read_metadata(candidate).get("generator_id") == generator_id:
        return candidate
    except checkpoints.CheckpointError:
      continue
  return None


def check_prefilter_scorer(pf: Prefilter, scorer: Any) -> None:
  """Refuses a pre-filter that learned another post-filter's validity (other models or another level).

  Raises:
    ValueError: naming both.
  """
  learned, level = pf.report.get("scorer_id"), pf.report.get("strictness")
  if learned and scorer_id(scorer) and learned != scorer_id(scorer):
    raise ValueError(f"the pre-filter learned the validity of post-filter models {learned}, not this scorer's "
                     f"{scorer_id(scorer)}; fit it on a latent dataset built with this scorer")
  if level and level != scorer.strictness_name:
    raise ValueError(f"the pre-filter learned validity at strictness {level!r}, but the post-filter runs at "
                     f"{scorer.strictness_name!r}; pass --strictness {level} or fit one at this level")


def load_prefilter(directory: str | os.PathLike, strategy: str | None = None) -> Prefilter:
  """Reads a pre-filter written by `Prefilter.save`, or one strategy of a `save_prefilter_set`.

  Args:
    directory: the checkpoint folder.
    strategy: which threshold of a pre-filter set (required for a set, checked for a single one).

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing or corrupt checkpoint, a model checkpoint
      that is not a pre-filter, or a strategy it does not hold (names the folder).
  """
  classifier, _, meta = checkpoints.load_model(directory, lambda c: LatentClassifier(c, rngs=nnx.Rngs(0)),
                                               LatentClassifierConfig)
  if meta.get("prefilter_format") == _PREFILTER_SET_FORMAT:
    held = meta.get("strategies") or {}
    if strategy not in held:
      raise checkpoints.CheckpointError(f"{directory}: a pre-filter set of strategies {sorted(held)}; name one of "
                                        f"them (got {strategy!r})")
    entry = held[strategy]
    threshold = -math.inf if entry.get("accepts_all") else float(entry["threshold"])
    return Prefilter(classifier=classifier, threshold=threshold, strategy=strategy, group=meta["group"],
                     model_preset=meta["model_preset"], generator_id=meta.get("generator_id"),
                     report=entry.get("report") or {})
  if strategy is not None and meta.get("strategy") != strategy:
    raise checkpoints.CheckpointError(f"{directory}: a {meta.get('strategy')} pre-filter, not {strategy}")
  if meta.get("prefilter_format") != _PREFILTER_FORMAT:
    raise checkpoints.CheckpointError(f"{directory}: a latent classifier checkpoint without pre-filter metadata "
                                      f"(expected prefilter_format {_PREFILTER_FORMAT!r})")
  threshold = -math.inf if meta.get("accepts_all") else float(meta["threshold"])
  return Prefilter(classifier=classifier, threshold=threshold, strategy=meta["strategy"], group=meta["group"],
                   model_preset=meta["model_preset"], generator_id=meta.get("generator_id"),
                   report=meta.get("report") or {})


def _stratified_parts(y: np.ndarray, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
  """Stratified train/validation/test indices (sorted int64 arrays).

  Per class of c members (shuffled with `seed`): validation gets round(f_val c), at
  least 1 when c >= 2; test gets round(f_test c), at least 1 when c >= 3; training
  the rest (at least 1 when c >= 1). So 2 valid latents already give one to train
  and one to choose the threshold on.
  """
  rng = np.random.default_rng(seed)
  parts: dict[str, list] = {"train": [], "val": [], "test": []}
  _, f_val, f_test = fractions
  for c in (0, 1):
    members = rng.permutation(np.flatnonzero(y == c))
    n = members.shape[0]
    n_val = min(max(1, round(f_val * n)), n - 1) if n >= 2 else 0
    n_test = min(max(1, round(f_test * n)), n - 1 - n_val) if n >= 3 else 0
    parts["val"].append(members[:n_val])
    parts["test"].append(members[n_val: n_val + n_test])
    parts["train"].append(members[n_val + n_test:])
  return {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}


def _report_json(report: Mapping[str, Any]) -> dict[str, Any]:
  return {k: (np.asarray(v).tolist() if k == "confusion" else v) for k, v in report.items()}


def fit_prefilter(records: Mapping[str, Any], group: str, strategy: str = "youden", model_preset: str = "logreg", *,
                  fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0, on_empty: str = "error",
                  imbalance: str = "class_weights", steps: int = 1000, batch_size: int = 256,
                  learning_rate: float = 0.05, weight_decay: float = 1e-3) -> Prefilter:
  """Fits a group's pre-filter: classifier on a training part, threshold on a validation part, report on a test part.

  Protocol (docs/scores.md: chosen on validation, reported on test): the
  group's records are split, stratified by `valid`, into train / validation / test
  (`fractions`, seeded). A Flax `LatentClassifier` (`model_preset`) is fitted on the
  training part (`fit_latent_classifier`); `strategy` picks the logit threshold on the
  validation part's logits (`select_threshold`); the test part gives the reported
  TPR, FPR, precision and confusion (`threshold_report`) and ROC AUC. The model is
  not refitted on train + validation, so the threshold belongs to the weights it
  was chosen for.

  Predicted speed-up (docs/scores.md): precision_filtered / precision_unfiltered,
  both on the test part (precision_unfiltered = the test part's valid rate);
  `physical_limit` = 1 / (the group's valid rate): the speed-up of a perfect filter.

  Empty groups: a group with fewer than 2 valid (or fewer than 2 invalid) latents
  has no positive (negative) in its training or validation part, so no classifier
  or threshold can be learned. `on_empty="error"` (default) raises; `on_empty=
  "accept_all"` returns the fallback pre-filter that accepts every latent
  (threshold -inf, an untrained zero-head classifier, `report["accept_all"]` with the
  reason), i.e. plain post-filtering.

  Args:
    records: a latent dataset (`load_latent_dataset` / `build_latent_dataset`).
    group: the age-sex group to fit.
    strategy: one of `STRATEGIES`.
    model_preset: one of `jaxcxr.config.LATENT_PRESETS` ("logreg", "mlp1" ...
      "mlp4", "deep").
    fractions: (train, validation, test) fractions, summing to 1.
    seed: seeds the split and the fit.
    on_empty: one of `ON_EMPTY`.
    imbalance, steps, batch_size, learning_rate, weight_decay: as `fit_latent_classifier`.

  Returns:
    The fitted `Prefilter` (its `report` holds "n", "n_valid", "base_rate", part sizes,
    "validation" and "test" threshold reports, "test_roc_auc",
    "precision_unfiltered_test", "precision_filtered_test", "predicted_speedup",
    "physical_limit").

  Raises:
    ValueError: an unknown strategy, preset or `on_empty`, bad fractions, a group with
      no records, or (with on_empty="error") too few valid or invalid latents.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"unknown threshold strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
  if model_preset not in LATENT_PRESETS:
    raise ValueError(f"unknown latent model preset {model_preset!r}; expected one of {', '.join(LATENT_PRESETS)}")
  if on_empty not in ON_EMPTY:
    raise ValueError(f"on_empty: expected one of {ON_EMPTY}, got {on_empty!r}")
  if len(fractions) != 3 or not all(f >= 0 for f in fractions) or not abs(sum(fractions) - 1.0) <= 1e-6:
    raise ValueError(f"fractions: expected (train, validation, test) >= 0 summing to 1, got {fractions}")
  if not isinstance(records, Mapping) or "z" not in records:
    validate_latent_records(records)          # raises, naming what is missing
  records = validate_latent_records(records, latent_dim=np.asarray(records["z"]).shape[-1])
  member = records["group"] == group
  if not member.any():
    present = sorted(set(records["group"].tolist()))
    raise ValueError(f"fit_prefilter: no latents of group {group!r} in the dataset; present: {present}")
  z, y = records["z"][member], records["valid"][member].astype(np.int64)
  latent_dim = z.shape[1]
  config = LATENT_PRESETS[model_preset](latent_dim)
  n, n_valid = int(y.shape[0]), int(y.sum())
  base = {"n": n, "n_valid": n_valid, "base_rate": n_valid / n,
          "physical_limit": (n / n_valid) if n_valid else None, "fractions": list(fractions), "seed": seed,
          # The post-filter whose validity it learned: its models and level (None for records without them).
          "scorer_id": records.get("scorer_id"), "strictness": records.get("strictness")}
  if min(n_valid, n - n_valid) < 2:
    reason = (f"group {group!r}: {n_valid} valid and {n - n_valid} invalid latents of {n}; a pre-filter needs "
              "at least 2 of each (one to train on, one to choose the threshold on)")
    if on_empty == "error":
      raise ValueError(f"fit_prefilter: {reason}; build a larger latent dataset, or pass on_empty='accept_all' "
                       "to sample this group without a pre-filter")
    classifier = LatentClassifier(config, rngs=nnx.Rngs(seed))
    return Prefilter(classifier, -math.inf, strategy, group, model_preset, records["generator_id"],
                     {**base, "accept_all": True, "reason": reason, "predicted_speedup": 1.0})
  parts = _stratified_parts(y, fractions, seed)
  train, val, test = parts["train"], parts["val"], parts["test"]
  model = fit_latent_classifier(z[train], y[train], config, imbalance=imbalance, steps=steps,
                                batch_size=batch_size, learning_rate=learning_rate, weight_decay=weight_decay,
                                seed=seed)
  val_logits = _inference_logits(model, z[val])
  threshold = select_threshold(y[val], val_logits, strategy)
  report = {**base, "accept_all": False, "n_train": int(train.size), "n_val": int(val.size),
            "n_test": int(test.size), "validation": _report_json(threshold_report(y[val], val_logits, threshold))}
  if test.size:
    test_logits = _inference_logits(model, z[test])
    test_report = _report_json(threshold_report(y[test], test_logits, threshold))
    both = 0 < y[test].sum() < test.size
    precision_unfiltered = float(y[test].mean())
    report.update(test=test_report,
                  test_roc_auc=metrics_lib.compute_roc_auc(test_logits, y[test]) if both else None,
                  precision_unfiltered_test=precision_unfiltered,
                  precision_filtered_test=test_report["precision"],
                  predicted_speedup=(test_report["precision"] / precision_unfiltered
                                     if precision_unfiltered > 0 else None))
  return Prefilter(model, float(threshold), strategy, group, model_preset, records["generator_id"], report)
