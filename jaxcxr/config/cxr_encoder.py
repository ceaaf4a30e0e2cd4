"""Configs of the self-supervised chest X-ray encoder and its training, and their presets.

`CXREncoderConfig` (the network, `jaxcxr.models.cxr_encoder.CXREncoder`), `CXRAugmentConfig` (its
random views), `CXREncoderTrainConfig` (`jaxcxr.train.cxr_encoder.train_cxr_encoder`; `METHODS`,
the self-supervised objectives) and the presets (`PRESETS`): `cxr_encoder_tiny`,
`cxr_encoder_cpu`, each taking the method (default "vicreg"). `jaxcxr train encoder` runs them.

Checkpoints store these configs by class name and field: a run saved before they moved here
(from `jaxcxr.train.cxr_encoder` and `jaxcxr.models.cxr_encoder`) resumes and loads unchanged.
"""

from __future__ import annotations

import dataclasses

from jaxcxr.config.common import Family, check_loop_fields

__all__ = ["FAMILY", "METHODS", "PRESETS", "CXRAugmentConfig", "CXREncoderConfig", "CXREncoderTrainConfig",
           "cxr_encoder_cpu", "cxr_encoder_tiny"]


@dataclasses.dataclass(frozen=True)
class CXREncoderConfig:
  """The CXR encoder: (resolution, resolution, 1) radiograph in [-1, 1] -> (channels[-1],) embedding."""

  # Input side in pixels; archive images (256x256) are resized to it with LANCZOS
  # (`jaxcxr.models.cxr_encoder.prepare_images`).
  resolution: int = 128
  # Side of the space-to-depth patch of the stem.
  patch: int = 4
  # Channels per stage; each stage after the first halves the side. The embedding has channels[-1] values.
  channels: tuple[int, ...] = (32, 64, 128, 256)
  # Residual blocks per stage (0 allowed: the stage is its patch merging only).
  blocks: tuple[int, ...] = (1, 2, 2, 1)
  # Groups of the GroupNorm layers (capped by the channel count).
  norm_groups: int = 8
  # Compute dtype of the convolutions ("float32" or "bfloat16"); parameters and outputs stay float32.
  dtype: str = "float32"

  def __post_init__(self):
    if not self.channels or len(self.channels) != len(self.blocks):
      raise ValueError(f"CXREncoderConfig: channels {self.channels} and blocks {self.blocks} need one entry per "
                       "stage (at least one stage)")
    if min(self.channels) <= 0 or min(self.blocks) < 0:
      raise ValueError(f"CXREncoderConfig: expected positive channels and non-negative blocks, got "
                       f"{self.channels} and {self.blocks}")
    if self.patch <= 0 or self.norm_groups <= 0:
      raise ValueError(f"CXREncoderConfig: patch and norm_groups must be positive, got {self.patch} and "
                       f"{self.norm_groups}")
    grid = self.patch * 2 ** (len(self.channels) - 1)
    if self.resolution <= 0 or self.resolution % grid:
      raise ValueError(f"CXREncoderConfig.resolution={self.resolution}: expected a positive multiple of "
                       f"patch * 2**(stages - 1) = {grid}")
    for c in self.channels:
      if c % min(self.norm_groups, c):
        raise ValueError(f"CXREncoderConfig: {c} channels are not divisible into {self.norm_groups} groups")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"CXREncoderConfig.dtype: expected 'float32' or 'bfloat16', got {self.dtype!r}")

  @property
  def embedding_dim(self) -> int:
    """Size of the global embedding (the last stage's channels)."""
    return self.channels[-1]

  def feature_shapes(self) -> dict[str, tuple[int, int, int]]:
    """{"stage1": (h, w, C1), ...}: the shape of each stage's patch features for one image."""
    side = self.resolution // self.patch
    shapes = {}
    for s, c in enumerate(self.channels):
      shapes[f"stage{s + 1}"] = (side, side, c)
      side //= 2
    return shapes


# The self-supervised objectives (`CXREncoderTrainConfig.method`).
METHODS: tuple[str, ...] = ("simclr", "vicreg", "byol")


@dataclasses.dataclass(frozen=True)
class CXRAugmentConfig:
  """Random views of a radiograph (`augment_views`); no horizontal flip, by design."""

  # Area of the random resized crop as a fraction of the image, uniform in [low, high].
  crop_area: tuple[float, float] = (0.6, 1.0)
  # Aspect ratio (width / height) of the crop, log-uniform in [low, high].
  crop_aspect: tuple[float, float] = (0.8, 1.25)
  # Max rotation in degrees (uniform in [-d, d]) about the crop's centre.
  rotation_deg: float = 8.0
  # Max shift of the crop's centre as a fraction of the side, on top of its random position (black fill).
  translation: float = 0.04
  # Gamma x ** g with log g uniform in [-log(gamma), log(gamma)], on [0, 1] pixels.
  gamma: float = 1.4
  # Max relative contrast change about the view's mean (factor uniform in [1-c, 1+c]).
  contrast: float = 0.25
  # Max brightness shift in units of the [0, 1] range.
  brightness: float = 0.08
  # Probability of a Gaussian blur, and its sigma range in pixels (at the encoder's resolution).
  blur_prob: float = 0.5
  blur_sigma: tuple[float, float] = (0.2, 1.2)
  # Max standard deviation of additive Gaussian noise ([0, 1] units), uniform in [0, this].
  noise: float = 0.03

  def __post_init__(self):
    for name in ("crop_area", "crop_aspect", "blur_sigma"):
      low, high = getattr(self, name)
      if not 0 < low <= high:
        raise ValueError(f"CXRAugmentConfig.{name}={getattr(self, name)}: expected 0 < low <= high")
    if self.crop_area[1] > 1:
      raise ValueError(f"CXRAugmentConfig.crop_area={self.crop_area}: the crop cannot exceed the image (<= 1)")
    if self.gamma < 1:
      raise ValueError(f"CXRAugmentConfig.gamma={self.gamma}: expected >= 1 (1 disables the gamma jitter)")
    for name in ("rotation_deg", "translation", "contrast", "brightness", "noise"):
      if getattr(self, name) < 0:
        raise ValueError(f"CXRAugmentConfig.{name}: expected >= 0, got {getattr(self, name)}")
    if not 0 <= self.blur_prob <= 1:
      raise ValueError(f"CXRAugmentConfig.blur_prob={self.blur_prob}: expected a probability")


@dataclasses.dataclass(frozen=True)
class CXREncoderTrainConfig:
  """Self-supervised training of the CXR encoder (`jaxcxr.train.cxr_encoder.train_cxr_encoder`)."""

  # The encoder.
  encoder: CXREncoderConfig = CXREncoderConfig()
  # "simclr", "vicreg" or "byol".
  method: str = "vicreg"
  # Views of each image.
  augment: CXRAugmentConfig = CXRAugmentConfig()
  # Widths of the projector MLP after the embedding: hidden layers (Linear, LayerNorm, ReLU), then the output.
  projector: tuple[int, ...] = (1024, 1024)
  # BYOL's predictor: hidden width (its output has the projector's width).
  predictor_hidden: int = 512
  # NT-Xent temperature (simclr).
  temperature: float = 0.2
  # VICReg weights of the invariance, variance and covariance terms.
  vicreg_weights: tuple[float, float, float] = (25.0, 25.0, 1.0)
  # BYOL's EMA decay of the target network (constant).
  target_decay: float = 0.99
  # Images per step (two views each).
  batch_size: int = 32
  # AdamW: peak learning rate (linear warm-up over warmup_steps, then constant), weight decay on kernels.
  learning_rate: float = 1e-3
  warmup_steps: int = 100
  weight_decay: float = 1e-4
  # Global-norm gradient clipping (0: off).
  grad_clip: float = 3.0
  # Total steps.
  steps: int = 1000
  # Steps per jitted call (fully unrolled on a CPU).
  steps_per_call: int = 2
  # Linear probes on the validation patients (and an `encoder/` checkpoint) every this many steps; 0: at the end only.
  eval_every: int = 0
  # Images per call of the probes' embedding.
  eval_batch_size: int = 64
  # Save a training checkpoint every this many steps (and at the end).
  checkpoint_every: int = 50
  # Training checkpoints kept.
  max_to_keep: int = 2

  def __post_init__(self):
    check_loop_fields(self, "CXREncoderTrainConfig")
    if self.method not in METHODS:
      raise ValueError(f"CXREncoderTrainConfig.method: expected one of {METHODS}, got {self.method!r}")
    if not self.projector or min(self.projector) <= 0 or self.predictor_hidden <= 0:
      raise ValueError(f"CXREncoderTrainConfig: projector {self.projector} and predictor_hidden "
                       f"{self.predictor_hidden} need positive widths")
    if self.method == "simclr" and self.batch_size < 2:
      raise ValueError("CXREncoderTrainConfig.batch_size: NT-Xent needs at least 2 images per step")
    if self.method == "vicreg" and self.batch_size < 2:
      raise ValueError("CXREncoderTrainConfig.batch_size: VICReg's variance needs at least 2 images per step")
    if self.temperature <= 0 or not 0 <= self.target_decay < 1:
      raise ValueError(f"CXREncoderTrainConfig: temperature {self.temperature} must be > 0 and target_decay "
                       f"{self.target_decay} in [0, 1)")
    if len(self.vicreg_weights) != 3 or min(self.vicreg_weights) < 0:
      raise ValueError(f"CXREncoderTrainConfig.vicreg_weights={self.vicreg_weights}: expected three weights >= 0")
    if self.learning_rate <= 0 or self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
      raise ValueError("CXREncoderTrainConfig: expected learning_rate > 0 and warmup_steps, weight_decay, "
                       "grad_clip >= 0")
    if self.eval_batch_size <= 0:
      raise ValueError(f"CXREncoderTrainConfig.eval_batch_size: expected > 0, got {self.eval_batch_size}")


# Projector widths per method (the methods' papers' shapes, scaled to a CPU): VICReg's wide expander,
# SimCLR's and BYOL's narrow output.
_PROJECTORS = {"simclr": (512, 128), "vicreg": (1024, 1024), "byol": (512, 128)}


def cxr_encoder_tiny(method: str = "vicreg") -> CXREncoderTrainConfig:
  """A 32x32 encoder with a few channels for unit tests; learns nothing useful.

      jaxcxr train encoder --preset cxr_encoder_tiny --data $JAXCXR_DATA --out runs/encoder_tiny
  """
  return CXREncoderTrainConfig(
      encoder=CXREncoderConfig(resolution=32, patch=4, channels=(8, 16), blocks=(1, 1), norm_groups=4),
      method=method, projector=(32, 16), predictor_hidden=16, batch_size=4, steps=4, steps_per_call=1,
      warmup_steps=2, checkpoint_every=2, max_to_keep=2, eval_batch_size=8)


def cxr_encoder_cpu(method: str = "vicreg") -> CXREncoderTrainConfig:
  """The CXR encoder on 2 CPU cores: 128x128 input, stages of 32-64-128-256 channels, about 3.3M parameters.

      jaxcxr train encoder --preset cxr_encoder_cpu --method vicreg --data $JAXCXR_DATA \
        --out runs/encoder_cxr --steps 200000

  Batch 32 images (64 views), AdamW 1e-3 after 100 warm-up steps, then constant; a
  training checkpoint every 50 steps (1-4 minutes on a shared 2-core CPU) and linear
  probes every 300 steps.
  """
  return CXREncoderTrainConfig(
      encoder=CXREncoderConfig(resolution=128, patch=4, channels=(32, 64, 128, 256), blocks=(0, 2, 2, 2)),
      method=method, projector=_PROJECTORS[method], steps=200_000, steps_per_call=2, checkpoint_every=50,
      eval_every=300)


# The CXR encoder training presets by name, each callable without arguments (the method defaults to "vicreg").
PRESETS = {"cxr_encoder_tiny": cxr_encoder_tiny, "cxr_encoder_cpu": cxr_encoder_cpu}

FAMILY = Family(CXREncoderTrainConfig, PRESETS,
                "the self-supervised chest X-ray encoder (SimCLR, VICReg or BYOL; no labels)")
