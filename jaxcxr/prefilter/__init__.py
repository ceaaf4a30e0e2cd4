"""Pre-filter: predict from a generator latent z alone whether its image will be valid.

Mirrors the original CXR-GAN study's pre-filter: per age-sex group, classifiers on
z (logistic regression, MLPs, kNN, SVMs, trees, a random forest) are compared with
stratified 3-fold cross-validation (ROC AUC and precision), then a threshold
strategy turns the chosen model's scores into an accept/reject rule, so that bad
latents are never generated and scored.

Submodules (every public name is re-exported here, e.g. `prefilter.fit_prefilter`):
* `dataset`: latent datasets, `save_latent_dataset` / `load_latent_dataset` (compressed
  npz, validated, written atomically), `latent_targets`, `build_latent_dataset` (through
  the post-filter's `Scorer.generate_and_score`), `latent_dataset_summary`, rescoring at
  another strictness (`records_at_strictness`, `records_at_scorer_level`).
* `thresholds`: `select_threshold` (the docs/scores.md contract names in
  `STRATEGIES`), `threshold_report`.
* `classifiers`: Flax latent classifiers (`jaxcxr.models.latent`): `fit_latent_classifier`
  (one jitted `lax.scan` of optax steps per call, train state donated), `predict_latent`
  (`jax.jit` over the `nnx.split` state, docs/conventions.md), and `FlaxLatentEstimator`,
  their scikit-learn face; the model zoo `latent_model_zoo` and `select_models`.
* `crossval`: cross-validation and report: `cross_validate_latent`, `results_table`, the
  exploratory views `latent_score_correlations` and `embed_extremes`, and
  `write_latent_report` (CV table, views, each group's best model's ROC/PR and confusion).
* `prefilters`: fitted pre-filters: `Prefilter` (classifier + logit threshold + strategy +
  group), `fit_prefilter` (train / validation / test protocol), `load_prefilter`,
  `save_prefilter_set`, `shipped_prefilter`, `check_prefilter_scorer`.
* `sampler`: latent-filtered sampling on device: `sample_valid_latent` (one compiled call per
  round: draw a pool of latents, classify, select with static shapes, generate and post-score
  only the accepted ones), `warm_up_latent`, and `NudgeConfig` (latent nudging up the
  classifier's logit on the latent's own norm shell). Unfiltered sampling is `jaxcxr.sampling`.
* `cascade` (not re-exported; `from jaxcxr.prefilter import cascade`): the cascade
  pre-filter, which judges a latent by its cascade generator's cheap base image instead of
  by z: `CascadePrefilter`, `fit_cascade_prefilter`, `sample_valid_cascade`.

The figures (matplotlib, written atomically) live in `jaxcxr.plots` and are re-exported
here: `save_roc_pr_curves`, `save_confusion_matrix`, `save_correlation_heatmap`,
`save_extremes_scatter`.

Conventions: a latent is accepted (predicted valid) when its score >= threshold;
labels are 1 = valid (or "the score is > 0"). Ragged work (thresholds, folds,
tables) runs on the host in numpy.
"""

from __future__ import annotations

from jaxcxr.plots import save_confusion_matrix, save_correlation_heatmap, save_extremes_scatter, save_roc_pr_curves
from jaxcxr.prefilter.classifiers import (DEFAULT_REPORT_MODELS, FAMILY_MODELS, FOCAL_GAMMA, IMBALANCE,
                                          FlaxLatentEstimator, fit_latent_classifier, latent_model_zoo,
                                          predict_latent, select_models)
from jaxcxr.prefilter.crossval import (TARGETS, cross_validate_latent, embed_extremes, latent_score_correlations,
                                       results_table, write_latent_report)
from jaxcxr.prefilter.dataset import (FEATURE_DIM, LATENT_DIM, MEASURE_NAMES, build_latent_dataset,
                                      latent_dataset_summary, latent_targets, load_latent_dataset,
                                      records_at_scorer_level, records_at_strictness, save_latent_dataset, scorer_id,
                                      validate_latent_records)
from jaxcxr.prefilter.prefilters import (ON_EMPTY, Prefilter, check_prefilter_scorer, fit_prefilter, load_prefilter,
                                         save_prefilter_set, shipped_prefilter)
from jaxcxr.prefilter.sampler import (TRACE_COUNTS, NudgeConfig, default_round_sizes, sample_valid_latent,
                                     warm_up_latent)
from jaxcxr.prefilter.thresholds import MAX_PRECISION_MIN_TPR, STRATEGIES, select_threshold, threshold_report
from jaxcxr.scoring import SCORE_NAMES  # the five post-filter scores, each > 0 meaning good

__all__ = [
    "MEASURE_NAMES",
    "default_round_sizes",
    "check_prefilter_scorer",
    "records_at_scorer_level",
    "records_at_strictness",
    "scorer_id",
    "save_prefilter_set",
    "shipped_prefilter",
    "DEFAULT_REPORT_MODELS",
    "FAMILY_MODELS",
    "FEATURE_DIM",
    "FOCAL_GAMMA",
    "FlaxLatentEstimator",
    "IMBALANCE",
    "LATENT_DIM",
    "MAX_PRECISION_MIN_TPR",
    "NudgeConfig",
    "ON_EMPTY",
    "Prefilter",
    "SCORE_NAMES",
    "STRATEGIES",
    "TARGETS",
    "TRACE_COUNTS",
    "build_latent_dataset",
    "cross_validate_latent",
    "embed_extremes",
    "fit_latent_classifier",
    "fit_prefilter",
    "latent_dataset_summary",
    "latent_model_zoo",
    "latent_score_correlations",
    "latent_targets",
    "load_latent_dataset",
    "load_prefilter",
    "predict_latent",
    "results_table",
    "sample_valid_latent",
    "save_confusion_matrix",
    "save_correlation_heatmap",
    "save_extremes_scatter",
    "save_latent_dataset",
    "save_roc_pr_curves",
    "select_models",
    "select_threshold",
    "threshold_report",
    "validate_latent_records",
    "warm_up_latent",
    "write_latent_report",
]
