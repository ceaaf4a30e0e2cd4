"""Anomaly scoring of real radiographs with models of normal anatomy: AnoGAN, f-AnoGAN, HealthyGAN.

Each method is a module of its name, holding its scoring, its loader and its scorer for
`evaluate_anomaly` (its model lives in `jaxcxr.models.<method>`, its trainer in
`jaxcxr.train.<method>`, AnoGAN's GAN in `jaxcxr.models.generator` / `discriminator`):

* `anogan`: the AnoGAN latent search (`search_latents`, `anogan_scores`; `load_anogan`).
* `fanogan`: f-AnoGAN, an encoder inverting the GAN (`fanogan_scores`; `load_fanogan`).
* `healthygan`: HealthyGAN, translation to a healthy image (`healthygan_scores`; `load_translator`).
* `patchcore`: PatchCore, a memory bank of normal patch features scored by nearest-neighbour
  distance (`fit_patchcore`, `PatchCore.score`; `load_patchcore`; on the CXR encoder,
  `fit_encoder_patchcore`, the shipped `checkpoints/patchcore_encoder_cxr`).
* `scorer`: the scorer interface and lung-masked residual scores, shared by the three.
* `evaluate`: ROC AUCs, thresholds and ensembles on labelled radiographs, and score files.

The compiled pipelines have public accessors returning a `jaxcxr.program.Program` (the
jitted function and the arguments of one call), for lowering and timing:
`anogan.search_program`, `anogan.step_program`, `fanogan.score_program`,
`healthygan.score_program`.

The names of `evaluate` are imported on first use (PEP 562): it imports scikit-learn and
scipy, 2.8 s after `import jaxcxr.anomaly` (2-core machine, median of 3), which scoring never needs.
"""

from __future__ import annotations

import importlib as _importlib

from jaxcxr.anomaly.anogan import (SHIPPED_FEATURE_STAGE, SHIPPED_SEARCH, AnoganScorer, AnomalyScores,
                                   EncoderFeatures, LatentSearchConfig, LatentSearchResult, anogan_scores,
                                   initial_latents, load_anogan, search_latents, search_resolution,
                                   shipped_search)
from jaxcxr.anomaly.fanogan import (FanoganScorer, FanoganScores, fanogan_loss, fanogan_scores, load_fanogan,
                                    normal_condition)
from jaxcxr.anomaly.healthygan import HealthyganScorer, HealthyganScores, healthygan_scores, load_translator
from jaxcxr.anomaly.patchcore import (PatchCore, PatchcoreScorer, coreset_indices, cxr_encoder_features,
                                      fit_encoder_patchcore, fit_patchcore, load_patchcore, save_patchcore,
                                      unet_encoder_features)
from jaxcxr.anomaly.scorer import METHODS, AbstractAnomalyScorer, LungMaskedScorer, lung_residual_scores

# Public name of `evaluate`: imported on first access by `__getattr__`.
_LAZY = ("auc_with_interval", "by_view", "ensemble_score_files", "evaluate_anomaly", "rank_average",
         "read_score_file", "save_score_file", "source_only_baseline")

__all__ = [
    "METHODS",
    "SHIPPED_FEATURE_STAGE",
    "SHIPPED_SEARCH",
    "AbstractAnomalyScorer",
    "AnoganScorer",
    "AnomalyScores",
    "EncoderFeatures",
    "FanoganScorer",
    "FanoganScores",
    "HealthyganScorer",
    "HealthyganScores",
    "LatentSearchConfig",
    "LatentSearchResult",
    "LungMaskedScorer",
    "PatchCore",
    "PatchcoreScorer",
    "anogan_scores",
    "coreset_indices",
    "cxr_encoder_features",
    "fanogan_loss",
    "fanogan_scores",
    "fit_encoder_patchcore",
    "fit_patchcore",
    "healthygan_scores",
    "initial_latents",
    "load_anogan",
    "load_fanogan",
    "load_patchcore",
    "load_translator",
    "lung_residual_scores",
    "normal_condition",
    "save_patchcore",
    "search_latents",
    "search_resolution",
    "shipped_search",
    "unet_encoder_features",
    *_LAZY,
]


def __getattr__(name: str):
  """Imports `jaxcxr.anomaly.evaluate` on first access to one of its names (PEP 562) and caches the name here."""
  if name not in _LAZY:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(_importlib.import_module("jaxcxr.anomaly.evaluate"), name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted({*globals(), *_LAZY})
