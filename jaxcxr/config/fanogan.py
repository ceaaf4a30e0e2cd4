"""Configs of the f-AnoGAN encoder and its training against a frozen GAN, and their presets.

`EncoderConfig` (`jaxcxr.models.fanogan`), `FanoganTrainConfig` (`jaxcxr.train.fanogan`) and
the presets (`PRESETS`): `fanogan_tiny`, `fanogan_64_cpu`, `fanogan_128_cpu`.
"""

from __future__ import annotations

import dataclasses

from jaxcxr.config.common import (DTYPES, LIGHT_AUGMENT, RESOLUTIONS, AugmentConfig, Family, check_choice,
                                  check_loop_fields, stage_channels)

__all__ = ["FAMILY", "PRESETS", "EncoderConfig", "FanoganTrainConfig", "fanogan_128_cpu", "fanogan_64_cpu",
           "fanogan_tiny"]


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """f-AnoGAN encoder: (H, W, 1) image in [-1, 1] -> latent z (the generator's latent space)."""

  # Input side in pixels (32, 64, 128 or 256); the generator's resolution, or a cascade's base resolution.
  resolution: int = 64
  # Size of z; must equal the generator's latent_dim.
  latent_dim: int = 128
  # Channels at the input resolution; doubled per halving of the side, capped at max_channels.
  base_channels: int = 32
  # Channel cap of the low-resolution stages.
  max_channels: int = 256
  # Groups of the GroupNorm layers (batch-independent; capped by the channel count).
  norm_groups: int = 8
  # Slope of the leaky ReLUs.
  negative_slope: float = 0.2
  # Compute dtype of convolutions ("float32" or "bfloat16"); parameters and z stay float32.
  dtype: str = "float32"

  def __post_init__(self):
    check_choice("EncoderConfig.resolution", self.resolution, RESOLUTIONS)
    if self.latent_dim <= 0 or self.base_channels <= 0 or self.max_channels < self.base_channels:
      raise ValueError(f"EncoderConfig: bad sizes latent_dim={self.latent_dim}, "
                       f"base_channels={self.base_channels}, max_channels={self.max_channels}")
    if self.norm_groups <= 0:
      raise ValueError(f"EncoderConfig.norm_groups: expected a positive integer, got {self.norm_groups}")
    check_choice("EncoderConfig.dtype", self.dtype, DTYPES)

  @property
  def channels(self) -> tuple[int, ...]:
    """Channels per stage, input resolution first, 4x4 last."""
    return stage_channels(self.resolution, self.base_channels, self.max_channels)[::-1]


@dataclasses.dataclass(frozen=True)
class FanoganTrainConfig:
  """Training of the f-AnoGAN encoder (izi_f) against a frozen GAN."""

  # The encoder (its resolution and latent_dim must equal the generator's).
  encoder: EncoderConfig = EncoderConfig()
  # Images per step.
  batch_size: int = 32
  # Total optimisation steps.
  steps: int = 2000
  # Steps per jitted call, run with lax.scan (host sync, progress and checkpoints between calls).
  steps_per_call: int = 20
  # Adam learning rate (the reference: RMSProp at 5e-5).
  learning_rate: float = 1e-4
  # Adam beta1.
  adam_b1: float = 0.9
  # Adam beta2.
  adam_b2: float = 0.999
  # kappa, the weight of the discriminator-feature term (the paper: 1).
  feature_weight: float = 1.0
  # Per-image augmentation of the training images (data.augment); None = none (the reference).
  augment: AugmentConfig | None = LIGHT_AUGMENT
  # Compute dtype of E, G and D during training ("float32" or "bfloat16"); params and losses stay float32.
  compute_dtype: str = "float32"
  # Write a reconstruction grid (fixed training images over their reconstructions) every this many
  # steps; 0 = never.
  sample_every: int = 500
  # Images in the reconstruction grid.
  samples: int = 8
  # Save a training checkpoint every this many steps (and at the end).
  checkpoint_every: int = 500
  # Training checkpoints kept.
  max_to_keep: int = 3

  def __post_init__(self):
    check_loop_fields(self, "FanoganTrainConfig")
    check_choice("FanoganTrainConfig.compute_dtype", self.compute_dtype, DTYPES)
    if not self.learning_rate > 0 or not self.feature_weight >= 0:
      raise ValueError(f"FanoganTrainConfig: expected learning_rate > 0 and feature_weight >= 0, got "
                       f"{self.learning_rate}, {self.feature_weight}")

  @property
  def resolution(self) -> int:
    return self.encoder.resolution


def fanogan_tiny(resolution: int = 32) -> FanoganTrainConfig:
  """A few channels at 32x32 for unit tests; learns nothing useful.

      python -c "from jaxcxr import config; print(config.fanogan_tiny())"

  No augmentation: `data.augment` adds about a third to the step's compile time on a CPU
  (its own tests cover it). Expected: the 2-step train call compiles in 15-30 s on a
  busy 2-core CPU.
  """
  return FanoganTrainConfig(
      encoder=EncoderConfig(resolution=resolution, base_channels=4, max_channels=8, norm_groups=2),
      batch_size=4, steps=4, steps_per_call=2, learning_rate=1e-3, augment=None, sample_every=0, samples=2,
      checkpoint_every=2, max_to_keep=2)


def fanogan_64_cpu() -> FanoganTrainConfig:
  """64x64 encoder for the CPU-trained normal-only GAN (`gan_64_normal_cpu`).

      jaxcxr train fanogan --preset fanogan_64_cpu --gan checkpoints/gan_64_normal \\
        --data $JAXCXR_DATA/nih_cxr14_subset_256.npz --out runs/fanogan_64

  Encoder channels (8, 16, 32, 64, 128) from 64x64 to 4x4, as the GAN's discriminator
  (0.42M parameters, 0.26M of them in the linear layer to z). Measured against the
  shipped `gan_64` (same G and D sizes) on the 274 normal train images of the NIH subset,
  on this project's shared 2-core CPU (load ~5): 24 s of compile, then 0.8-1.9 s per
  step of batch 16 (mean 1.1 s), so 2,000 steps take 30-40 minutes; the image loss fell
  from 0.128 to 0.085 in the first 60 steps.
  """
  return FanoganTrainConfig(
      encoder=EncoderConfig(resolution=64, base_channels=8, max_channels=128, norm_groups=4),
      batch_size=16, steps=2000, steps_per_call=20, learning_rate=1e-4, sample_every=500, samples=8,
      checkpoint_every=200)


def fanogan_128_cpu() -> FanoganTrainConfig:
  """128x128 encoder for a cascade whose base image is 128x128 (`gan_256_normal` v3).

      jaxcxr train fanogan --preset fanogan_128_cpu --gan checkpoints/gan_256_normal \\
        --data "$JAXCXR_DATA/nih_cxr14_subset_256.npz,$JAXCXR_DATA/nih_cxr14_extra_256.npz" --out runs/fanogan_128

  `fanogan_64_cpu` with one more stage at the input (channels 8, 16, 32, 64, 128, 128 from
  128x128 to 4x4): the same recipe at the base resolution of the 128 -> 256 cascade.
  """
  return dataclasses.replace(fanogan_64_cpu(), encoder=EncoderConfig(resolution=128, base_channels=8,
                                                                     max_channels=128, norm_groups=4))


# The f-AnoGAN encoder training presets by name, each callable without arguments.
PRESETS = {
    "fanogan_tiny": fanogan_tiny,
    "fanogan_64_cpu": fanogan_64_cpu,
    "fanogan_128_cpu": fanogan_128_cpu,
}

FAMILY = Family(FanoganTrainConfig, PRESETS, "the f-AnoGAN encoder, trained against a frozen normal-only GAN")
