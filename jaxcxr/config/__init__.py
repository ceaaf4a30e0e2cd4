"""Frozen config dataclasses of every model and trainer, their constants, and the named presets.

Configs are plain frozen dataclasses with a one-line comment above each field: they hash,
so they serve as jit static arguments, and they round-trip through JSON with `to_dict` /
`from_dict`; checkpoints store them next to the weights (with the class name) and loaders
rebuild them from the config class. This package imports no model, trainer, jax or flax
code: models and trainers import it, never the reverse.

One module per family; this face re-exports every name, so `from jaxcxr.config import X`
works for all of them:

* `serialization`: `to_dict`, `from_dict`.
* `common`: `DTYPES`, `check_loop_fields`, `AugmentConfig`, `LIGHT_AUGMENT`, `KNOWN_CONDITIONS`,
  `AGE_CENTER`, `AGE_SCALE`, `RESOLUTIONS`, `stage_channels`, `Family`.
* `upsampler`: `UpsamplerConfig`, `UpsamplerTrainConfig` (the super-resolution stage of a cascade).
* `gan`: `UPSAMPLINGS`, `GeneratorConfig`, `DiscriminatorConfig`, `GanTrainConfig`.
* `unet`: `NUM_CLASSES`, `UNetConfig`, `SEG_AUGMENT`, `SegTrainConfig`.
* `classifier`: `INPUT_MODES`, `TASKS`, `IMBALANCE`, `ClassifierConfig`, `ClassifierEnsembleConfig`,
  `EncoderClassifierConfig`, `ClassifierTrainConfig`.
* `fanogan`: `EncoderConfig`, `FanoganTrainConfig`.
* `healthygan`: `TranslatorConfig`, `CriticConfig`, `HealthyganTrainConfig`.
* `prefilter`: `LatentClassifierConfig` and `LATENT_PRESETS`; `PREDICTED_MEASURES`,
  `ScorePredictorConfig`, `score_predictor_64` and `score_predictor_128`; `CascadePrefilterTrainConfig` (the cascade
  pre-filter's fit).
* `cxr_encoder`: `CXREncoderConfig`, `CXRAugmentConfig`, `METHODS`, `CXREncoderTrainConfig` (the
  self-supervised chest X-ray encoder).
* `registry`: `FAMILIES` (family name -> `Family(config_type, presets, help)`), `PRESETS` (every
  training preset by name, joined from the families' own `PRESETS`) and `presets_for(config_type)`.

Presets are functions whose docstrings give the run command and the expected result; each
training preset is callable without arguments.

Not here: the runtime options of one function stay next to it, since they parametrise a
call rather than build a model or a training run: `jaxcxr.scoring.ScoringConfig` and
`jaxcxr.scoring.Calibration`, `jaxcxr.anomaly.LatentSearchConfig`, `jaxcxr.prefilter.NudgeConfig`.

Example:
  >>> from jaxcxr import config
  >>> cfg = config.PRESETS["gan_tiny"]()
  >>> config.from_dict(config.GanTrainConfig, config.to_dict(cfg)) == cfg
  True
"""

from __future__ import annotations

from jaxcxr.config.classifier import (IMBALANCE, INPUT_MODES, TASKS, ClassifierConfig, ClassifierEnsembleConfig,
                                      ClassifierTrainConfig, EncoderClassifierConfig, classifier_64_cpu,
                                      classifier_96_cpu, classifier_128_cpu, classifier_256, classifier_encoder_cpu,
                                      classifier_tiny)
from jaxcxr.config.common import (AGE_CENTER, AGE_SCALE, DTYPES, KNOWN_CONDITIONS, LIGHT_AUGMENT, RESOLUTIONS,
                                  AugmentConfig, Family, check_loop_fields, stage_channels)
from jaxcxr.config.cxr_encoder import (METHODS, CXRAugmentConfig, CXREncoderConfig, CXREncoderTrainConfig,
                                       cxr_encoder_cpu, cxr_encoder_tiny)
from jaxcxr.config.fanogan import EncoderConfig, FanoganTrainConfig, fanogan_64_cpu, fanogan_128_cpu, fanogan_tiny
from jaxcxr.config.gan import (UPSAMPLINGS, DiscriminatorConfig, GanTrainConfig, GeneratorConfig, gan_64_cpu,
                               gan_64_normal_cpu, gan_64_resize_cpu, gan_64_resize_normal_cpu, gan_64_wide_cpu,
                               gan_128, gan_128_resize_cpu, gan_128_resize_normal_bcr_cpu,
                               gan_128_resize_normal_bcr_cutout_cpu, gan_128_resize_normal_cpu,
                               gan_128_resize_normal_no_cutout_cpu, gan_256, gan_256_single_cpu, gan_tiny)
from jaxcxr.config.healthygan import (CriticConfig, HealthyganTrainConfig, TranslatorConfig, healthygan_64_cpu,
                                      healthygan_128_cpu, healthygan_tiny)
from jaxcxr.config.prefilter import (LATENT_PRESETS, PREDICTED_MEASURES, CascadePrefilterTrainConfig,
                                     LatentClassifierConfig, ScorePredictorConfig, cascade_prefilter_64,
                                     cascade_prefilter_128, cascade_prefilter_tiny, latent_deep, latent_logreg,
                                     latent_mlp, score_predictor_64, score_predictor_128)
from jaxcxr.config.registry import FAMILIES, PRESETS, presets_for
from jaxcxr.config.serialization import from_dict, to_dict
from jaxcxr.config.unet import (NUM_CLASSES, SEG_AUGMENT, SegTrainConfig, UNetConfig, unet_128_cpu, unet_256,
                                unet_256_cpu, unet_tiny)
from jaxcxr.config.upsampler import (UpsamplerConfig, UpsamplerTrainConfig, upsampler_tiny,
                                     upsampler_x2_adversarial_cpu, upsampler_x2_cpu, upsampler_x4_cpu,
                                     upsampler_x4_generated_cpu, upsampler_x4_noiseless_cpu)

__all__ = [
    # serialisation and shared pieces
    "to_dict", "from_dict", "DTYPES", "check_loop_fields", "AugmentConfig", "LIGHT_AUGMENT", "KNOWN_CONDITIONS",
    "AGE_CENTER", "AGE_SCALE", "RESOLUTIONS", "stage_channels",
    # registry
    "FAMILIES", "Family", "PRESETS", "presets_for",
    # super-resolution stage
    "UpsamplerConfig", "UpsamplerTrainConfig", "upsampler_tiny", "upsampler_x2_cpu", "upsampler_x2_adversarial_cpu",
    "upsampler_x4_cpu",
    "upsampler_x4_generated_cpu", "upsampler_x4_noiseless_cpu",
    # GAN
    "UPSAMPLINGS", "GeneratorConfig", "DiscriminatorConfig", "GanTrainConfig", "gan_tiny", "gan_64_cpu",
    "gan_64_normal_cpu", "gan_128", "gan_256", "gan_64_resize_cpu", "gan_64_resize_normal_cpu", "gan_64_wide_cpu",
    "gan_256_single_cpu", "gan_128_resize_cpu", "gan_128_resize_normal_cpu", "gan_128_resize_normal_no_cutout_cpu",
    "gan_128_resize_normal_bcr_cpu", "gan_128_resize_normal_bcr_cutout_cpu",
    # U-Net
    "NUM_CLASSES", "UNetConfig", "SEG_AUGMENT", "SegTrainConfig", "unet_tiny", "unet_128_cpu", "unet_256_cpu",
    "unet_256",
    # classifier
    "INPUT_MODES", "TASKS", "IMBALANCE", "ClassifierConfig", "ClassifierEnsembleConfig", "ClassifierTrainConfig",
    "EncoderClassifierConfig",
    "classifier_tiny", "classifier_64_cpu", "classifier_96_cpu", "classifier_128_cpu", "classifier_256",
    "classifier_encoder_cpu",
    # f-AnoGAN encoder
    "EncoderConfig", "FanoganTrainConfig", "fanogan_tiny", "fanogan_64_cpu", "fanogan_128_cpu",
    # HealthyGAN
    "TranslatorConfig", "CriticConfig", "HealthyganTrainConfig", "healthygan_tiny", "healthygan_64_cpu",
    "healthygan_128_cpu",
    # pre-filter models
    "LatentClassifierConfig", "latent_logreg", "latent_mlp", "latent_deep", "LATENT_PRESETS", "PREDICTED_MEASURES",
    "ScorePredictorConfig", "score_predictor_64", "score_predictor_128", "CascadePrefilterTrainConfig",
    "cascade_prefilter_tiny", "cascade_prefilter_64", "cascade_prefilter_128",
    # self-supervised CXR encoder
    "METHODS", "CXREncoderConfig", "CXRAugmentConfig", "CXREncoderTrainConfig", "cxr_encoder_tiny", "cxr_encoder_cpu",
]
