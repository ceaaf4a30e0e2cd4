"""Configs of the pre-filter models: the latent classifiers and the base-image score predictor.

* `LatentClassifierConfig` (`jaxcxr.models.latent`, fitted by `jaxcxr.prefilter`) and its
  presets `LATENT_PRESETS` (`logreg`, `mlp1` .. `mlp4`, `deep`: the names that `jaxcxr latents
  fit --model` takes and that saved pre-filters record; each takes `latent_dim`), built from
  `latent_logreg`, `latent_mlp` and `latent_deep`.
* `PREDICTED_MEASURES`, `ScorePredictorConfig` (`jaxcxr.models.score_predictor`, the cascade
  pre-filter's) and `score_predictor_64`.
* `CascadePrefilterTrainConfig`, the fit of a cascade pre-filter (its score predictor and the
  AdamW run of `jaxcxr.train.score_predictor.fit_score_predictor`), and its training presets
  (`PRESETS`: `cascade_prefilter_tiny`, `cascade_prefilter_64`), the family
  "cascade_prefilter" of `jaxcxr.config.FAMILIES` (`jaxcxr train cascade-prefilter`).

The latent classifiers' presets and `score_predictor_64` build model configs, not training
runs: they are not in `jaxcxr.config.PRESETS`. A latent pre-filter's fit (`jaxcxr train
prefilter`, `jaxcxr.prefilter.fit_prefilter`) takes the name of a `LATENT_PRESETS` model.
"""

from __future__ import annotations

import dataclasses

from jaxcxr.config.common import Family, check_loop_fields

__all__ = ["FAMILY", "LATENT_PRESETS", "PREDICTED_MEASURES", "PRESETS", "CascadePrefilterTrainConfig",
           "LatentClassifierConfig", "ScorePredictorConfig", "cascade_prefilter_128", "cascade_prefilter_64",
           "cascade_prefilter_tiny", "latent_deep", "latent_logreg", "latent_mlp", "score_predictor_128",
           "score_predictor_64"]


@dataclasses.dataclass(frozen=True)
class LatentClassifierConfig:
  """Fully connected binary classifier on latents: (B, latent_dim) float32 -> (B,) logits."""

  # Width of the generator latent z (the model's input features).
  latent_dim: int = 128
  # Widths of the hidden Dense -> ReLU layers, input to output; () is logistic regression.
  hidden: tuple[int, ...] = ()
  # 0-based indices of the hidden layers followed by a BatchNorm (after their ReLU).
  batch_norm: tuple[int, ...] = ()
  # Momentum of the BatchNorm running averages (Keras' default 0.99).
  batch_norm_momentum: float = 0.99

  def __post_init__(self):
    if self.latent_dim <= 0:
      raise ValueError(f"LatentClassifierConfig.latent_dim: expected a positive width, got {self.latent_dim}")
    if any(w <= 0 for w in self.hidden):
      raise ValueError(f"LatentClassifierConfig.hidden: expected positive widths, got {self.hidden}")
    if len(set(self.batch_norm)) != len(self.batch_norm) or any(
        not 0 <= i < len(self.hidden) for i in self.batch_norm):
      raise ValueError(f"LatentClassifierConfig.batch_norm: expected distinct hidden-layer indices in "
                       f"0..{len(self.hidden) - 1}, got {self.batch_norm}")
    if not 0.0 <= self.batch_norm_momentum < 1.0:
      raise ValueError(f"LatentClassifierConfig.batch_norm_momentum: expected a value in [0, 1), "
                       f"got {self.batch_norm_momentum}")


def latent_logreg(latent_dim: int = 128) -> LatentClassifierConfig:
  """Logistic regression on z (latent_dim + 1 parameters): the original study's linear baseline.

      python -c "from jaxcxr import prefilter; print(prefilter.latent_model_zoo()['flax_logreg'])"

  Expected: the same ROC AUC as sklearn's logistic regression up to regularisation; the
  original study's pre-filter models reached 0.73-0.78 for `valid` per group.
  """
  return LatentClassifierConfig(latent_dim=latent_dim)


def latent_mlp(depth: int, latent_dim: int = 128) -> LatentClassifierConfig:
  """MLP with `depth` (1 to 4) hidden ReLU layers of widths 256, 128, 64, 32 (the first `depth`).

  Expected: the original study's pre-filter models reached ROC AUC 0.73-0.78 for
  `valid` per group (10k latents each); deeper nets need more steps.
  """
  if not 1 <= depth <= 4:
    raise ValueError(f"latent_mlp: expected depth 1..4, got {depth}")
  return LatentClassifierConfig(latent_dim=latent_dim, hidden=(256, 128, 64, 32)[:depth])


def latent_deep(latent_dim: int = 128) -> LatentClassifierConfig:
  """The original deep net 256-256-BN-128-128-BN-64-64-BN-32-32-16x6 (14 hidden layers, 3 BatchNorms).

  Expected: within the original study's 0.73-0.78 ROC AUC range of all its pre-filter
  models; kept for comparison with the shallow ones.
  """
  return LatentClassifierConfig(latent_dim=latent_dim,
                                hidden=(256, 256, 128, 128, 64, 64, 32, 32) + (16,) * 6,
                                batch_norm=(1, 3, 5))


# The latent classifiers by the names that `jaxcxr latents fit --model` takes and saved pre-filters
# record (`prefilter.Prefilter.model_preset`); each takes `latent_dim` (default 128).
LATENT_PRESETS = {
    "logreg": latent_logreg,
    "mlp1": lambda latent_dim=128: latent_mlp(1, latent_dim),
    "mlp2": lambda latent_dim=128: latent_mlp(2, latent_dim),
    "mlp3": lambda latent_dim=128: latent_mlp(3, latent_dim),
    "mlp4": lambda latent_dim=128: latent_mlp(4, latent_dim),
    "deep": latent_deep,
}


# The post-filter measures a `ScorePredictor` predicts: enough to rebuild the five scores at any
# strictness (`jaxcxr.scoring.score_from_measures`; the lung areas only decide "any lung").
PREDICTED_MEASURES: tuple[str, ...] = ("shape", "symmetry", "log_ratio", "abnormal_logit", "maxheat")


@dataclasses.dataclass(frozen=True)
class ScorePredictorConfig:
  """CNN from a cascade generator's base image to the post-filter's raw measures.

  (B, resolution, resolution, 1) in [-1, 1] -> (B, len(measures)): a 3x3 stem at full size, then
  per level 2x2 average pooling, a 3x3 convolution, GroupNorm and SiLU (then a 1x1 widening to
  the next level's channels), global mean pooling and a linear head. Predictions are in the
  measures' own units (the model keeps their training mean and standard deviation, and the
  residual standard deviation measured on validation latents).
  """

  # Side of the base image (the cascade's `GeneratorConfig.base_resolution`).
  resolution: int = 64
  # Channels per level (each level halves the side).
  channels: tuple[int, ...] = (16, 32, 64, 128)
  # GroupNorm groups (divides every width).
  norm_groups: int = 8
  # Predicted measures, in output order (names of `jaxcxr.scoring` measures).
  measures: tuple[str, ...] = PREDICTED_MEASURES

  def __post_init__(self):
    if self.resolution <= 0 or self.resolution % (2 ** len(self.channels)):
      raise ValueError(f"ScorePredictorConfig: resolution {self.resolution} must be a positive multiple of "
                       f"2**{len(self.channels)} (one halving per level)")
    if not self.channels or any(c <= 0 or c % self.norm_groups for c in self.channels):
      raise ValueError(f"ScorePredictorConfig.channels: expected positive widths divisible by norm_groups="
                       f"{self.norm_groups}, got {self.channels}")
    unknown = [m for m in self.measures if m not in PREDICTED_MEASURES]
    if unknown or not self.measures or len(set(self.measures)) != len(self.measures):
      raise ValueError(f"ScorePredictorConfig.measures: expected distinct names among {PREDICTED_MEASURES}, "
                       f"got {self.measures}")


def score_predictor_64() -> ScorePredictorConfig:
  """The base-image predictor of a 64 -> 256 cascade (`gan_256` v2, `gan_256_normal`; 0.1M parameters).

      python -c "from jaxcxr import config; print(config.score_predictor_64())"
  """
  return ScorePredictorConfig()


def score_predictor_128() -> ScorePredictorConfig:
  """The base-image predictor of a 128 -> 256 cascade: `score_predictor_64` with one more level in front.

  A first level of 8 channels takes the 128x128 base image to 64x64, then `score_predictor_64`'s
  four levels follow: about 1.3x its multiply-adds per image, where the same four levels at
  128x128 would cost 4x.
  """
  return ScorePredictorConfig(resolution=128, channels=(8, 16, 32, 64, 128))


@dataclasses.dataclass(frozen=True)
class CascadePrefilterTrainConfig:
  """The fit of a cascade pre-filter: its score predictor and the AdamW run that fits it.

  `jaxcxr.prefilter.cascade.fit_cascade_prefilter` passes these to
  `jaxcxr.train.score_predictor.fit_score_predictor`: one call of the training loop runs
  `steps_per_call` steps, then a validation pass and a training checkpoint; the step of the
  lowest validation error is kept.
  """

  # The base-image score predictor.
  predictor: ScorePredictorConfig = ScorePredictorConfig()
  # AdamW steps in all.
  steps: int = 3000
  # Steps between validation passes (each followed by a training checkpoint).
  steps_per_call: int = 250
  # Base images per step.
  batch_size: int = 64
  # Peak learning rate of the cosine decay to 0 at `steps`.
  learning_rate: float = 2e-3
  # AdamW weight decay.
  weight_decay: float = 1e-4

  def __post_init__(self):
    check_loop_fields(self, "CascadePrefilterTrainConfig")
    if self.learning_rate <= 0 or self.weight_decay < 0:
      raise ValueError(f"CascadePrefilterTrainConfig: expected learning_rate > 0 and weight_decay >= 0, got "
                       f"{self.learning_rate} and {self.weight_decay}")


def cascade_prefilter_tiny() -> CascadePrefilterTrainConfig:
  """A 2-level predictor of 32x32 base images (a tiny cascade's) for unit tests; learns nothing useful.

      jaxcxr train cascade-prefilter --preset cascade_prefilter_tiny --data L.npz --checkpoint CASCADE \
        --out runs/cascade_prefilter_tiny
  """
  return CascadePrefilterTrainConfig(predictor=ScorePredictorConfig(resolution=32, channels=(4, 8), norm_groups=2),
                                     steps=20, steps_per_call=10, batch_size=16)


def cascade_prefilter_64() -> CascadePrefilterTrainConfig:
  """The cascade pre-filter's fit for a 64x64 base (`gan_256` v2's): `score_predictor_64`, 3,000 steps of batch 64.

      jaxcxr train cascade-prefilter --preset cascade_prefilter_64 --data L.npz --checkpoint checkpoints/gan_256 \
        --out runs/cascade_prefilter_gan_256

  `L.npz` is a latent dataset of the cascade generator with its measures (`jaxcxr latents
  build`). A validation pass every 250 steps; thresholds per strictness level and strategy
  on the validation latents (`checkpoints/cascade_prefilter_gan_256/MODEL_CARD.md`).
  """
  return CascadePrefilterTrainConfig(predictor=score_predictor_64())


def cascade_prefilter_128() -> CascadePrefilterTrainConfig:
  """The shipped cascade pre-filter's fit (`gan_256` v3, 128 -> 256): `score_predictor_128`, else as `_64`.

      jaxcxr train cascade-prefilter --preset cascade_prefilter_128 --data L.npz --checkpoint checkpoints/gan_256 \
        --out runs/cascade_prefilter_gan_256
  """
  return CascadePrefilterTrainConfig(predictor=score_predictor_128())


# The cascade pre-filter training presets by name, each callable without arguments.
PRESETS = {
    "cascade_prefilter_tiny": cascade_prefilter_tiny,
    "cascade_prefilter_64": cascade_prefilter_64,
    "cascade_prefilter_128": cascade_prefilter_128,
}

FAMILY = Family(CascadePrefilterTrainConfig, PRESETS,
                "the cascade pre-filter: post-filter measures predicted from a cascade generator's base images")
