"""Configs of the learned super-resolution stage of a cascade generator, and its training presets.

`UpsamplerConfig` (the stage, `jaxcxr.models.upsampler.Upsampler`; a cascade generator's
`GeneratorConfig.upsampler`), `UpsamplerTrainConfig` (`jaxcxr.train.upsampler`) and the
presets `upsampler_tiny`, `upsampler_x2_cpu` and `upsampler_x2_adversarial_cpu` (for a 128x128
base), `upsampler_x4_cpu`, `upsampler_x4_noiseless_cpu`, `upsampler_x4_generated_cpu` (`PRESETS`).
"""

from __future__ import annotations

import dataclasses
import math

from jaxcxr.config.common import DTYPES, Family, check_choice, check_loop_fields

__all__ = ["FAMILY", "PRESETS", "UpsamplerConfig", "UpsamplerTrainConfig", "upsampler_tiny",
           "upsampler_x2_adversarial_cpu", "upsampler_x2_cpu", "upsampler_x4_cpu", "upsampler_x4_generated_cpu",
           "upsampler_x4_noiseless_cpu"]


@dataclasses.dataclass(frozen=True)
class UpsamplerConfig:
  """Learned super-resolution stage: (h, w, 1) image in [-1, 1] -> (scale*h, scale*w, 1), NHWC.

  Residual: the output is the bilinear up-sampling of the input plus a learned detail
  image. Trained on real radiographs (`jaxcxr.train.upsampler`); in a cascade generator
  (`GeneratorConfig.upsampler`) it turns the low-resolution GAN's image into the output.
  """

  # Up-sampling factor (2 or 4): one bilinear-2x + convolutions stage per doubling.
  scale: int = 4
  # Channels of the convolutions at the input resolution.
  input_channels: int = 32
  # Residual blocks (two 3x3 convolutions each) at the input resolution.
  input_blocks: int = 2
  # Channels of each doubling stage, first (lowest) stage first; len = log2(scale).
  stage_channels: tuple[int, ...] = (24, 16)
  # Per-pixel Gaussian noise added in every doubling stage with a learned per-channel strength
  # (StyleGAN's noise inputs): the source of texture the low-resolution image does not fix.
  noise: bool = True
  # Compute dtype of convolutions ("float32" or "bfloat16"); parameters stay float32.
  dtype: str = "float32"

  def __post_init__(self):
    check_choice("UpsamplerConfig.scale", self.scale, (2, 4))
    if len(self.stage_channels) != int(math.log2(self.scale)) or min(self.stage_channels) <= 0:
      raise ValueError(f"UpsamplerConfig.stage_channels: expected {int(math.log2(self.scale))} positive "
                       f"channel counts for scale {self.scale}, got {self.stage_channels}")
    if self.input_channels <= 0 or self.input_blocks < 0:
      raise ValueError(f"UpsamplerConfig: bad sizes input_channels={self.input_channels}, "
                       f"input_blocks={self.input_blocks}")
    check_choice("UpsamplerConfig.dtype", self.dtype, DTYPES)


@dataclasses.dataclass(frozen=True)
class UpsamplerTrainConfig:
  """Training of the super-resolution stage on real radiographs (`jaxcxr.train.upsampler`).

  Each step takes random crops of `crop` pixels from full-size (256x256) training
  images, makes their low-resolution inputs (LANCZOS-like down-sampling by `scale`, then a
  random mild blur and noise, so that the stage also accepts a GAN's imperfect images)
  and trains the stage with L1 to the crop plus a conditional patch discriminator's
  non-saturating loss (the crop judged next to the up-sampled input, pix2pix style).
  """

  # The stage.
  upsampler: UpsamplerConfig = UpsamplerConfig()
  # Channels of the patch discriminator, one 2x average-pool after each; logits at crop / 2**len.
  disc_channels: tuple[int, ...] = (16, 32, 64)
  # Side of the training crops (full-resolution pixels); a multiple of 8 * scale.
  crop: int = 128
  # Crops per step.
  batch_size: int = 8
  # Total steps (one D and one upsampler update each).
  steps: int = 3000
  # Steps per jitted call.
  steps_per_call: int = 10
  # Adam learning rates (beta1 0.5, beta2 0.99).
  learning_rate: float = 2e-4
  d_learning_rate: float = 2e-4
  # Weight of the L1 loss to the real crop (in [-1, 1] units) against the adversarial loss's 1.
  l1_weight: float = 10.0
  # Weight of the adversarial loss (0: a purely supervised, L1 stage).
  adversarial_weight: float = 1.0
  # D judges the detail image (crop - bilinear up-sampling of the input) times this gain, next to
  # the up-sampled input. Detail is small (about 0.02 in [-1, 1] units); a spectrally normalised
  # (1-Lipschitz) D fed it at gain 1 stayed at chance (loss 2 ln 2) for 1,100 steps.
  disc_detail_gain: float = 10.0
  # Largest blend of a 3x3 binomial blur into the low-resolution input (uniform in [0, this]).
  degrade_blur: float = 0.5
  # Largest standard deviation of the Gaussian noise added to the input (uniform in [0, this]).
  degrade_noise: float = 0.02
  # EMA decay of the stage's weights (with a (1+t)/(10+t) warm-up); the EMA weights are shipped.
  ema_decay: float = 0.995
  # Share of each batch whose inputs are crops of a base GAN's own images (no target: the stage
  # learns to draw on the images it will finish, judged by D against real crops); 0 = real only.
  generated_fraction: float = 0.0
  # Weight of L1 between the down-sampled output and a generated input (keeps the stage faithful).
  consistency_weight: float = 10.0
  # Write a sample grid (input, output, real) every this many steps; 0 = only at the end.
  sample_every: int = 500
  # Save a training checkpoint every this many steps (and at the end).
  checkpoint_every: int = 200
  # Training checkpoints kept.
  max_to_keep: int = 2

  def __post_init__(self):
    check_loop_fields(self, "UpsamplerTrainConfig")
    multiple = 8 * self.upsampler.scale
    if self.crop % multiple or self.crop > 256:
      raise ValueError(f"UpsamplerTrainConfig.crop={self.crop}: expected a multiple of {multiple} up to 256")
    if not self.disc_channels or min(self.disc_channels) <= 0 or self.crop % 2 ** len(self.disc_channels):
      raise ValueError(f"UpsamplerTrainConfig.disc_channels={self.disc_channels}: expected positive channels, "
                       f"one 2x pool each dividing crop={self.crop}")
    for name in ("l1_weight", "adversarial_weight", "disc_detail_gain", "degrade_blur", "degrade_noise",
                 "consistency_weight"):
      if getattr(self, name) < 0:
        raise ValueError(f"UpsamplerTrainConfig.{name}: expected >= 0, got {getattr(self, name)}")
    if not 0.0 <= self.generated_fraction < 1.0:
      raise ValueError(f"UpsamplerTrainConfig.generated_fraction={self.generated_fraction}: expected in [0, 1) "
                       "(at least one real crop per batch keeps the L1 anchor)")


def upsampler_tiny() -> UpsamplerTrainConfig:
  """A 2x stage with a few channels for unit tests; learns nothing useful."""
  return UpsamplerTrainConfig(
      upsampler=UpsamplerConfig(scale=2, input_channels=4, input_blocks=1, stage_channels=(4,)),
      disc_channels=(4, 8), crop=32, batch_size=2, steps=4, steps_per_call=2, sample_every=0,
      checkpoint_every=2, max_to_keep=2)


def upsampler_x4_noiseless_cpu() -> UpsamplerTrainConfig:
  """`upsampler_x4_cpu` without noise inputs: a deterministic function of the low-resolution image.

  With noise inputs and the detail-judging D, the stage drew per-pixel grain after 600 steps
  (real radiographs at 256x256 have almost none); without them it can only add detail that
  follows the image.
  """
  return dataclasses.replace(upsampler_x4_cpu(), upsampler=UpsamplerConfig(noise=False))


def upsampler_x4_generated_cpu() -> UpsamplerTrainConfig:
  """`upsampler_x4_noiseless_cpu` with half of each batch made of the base GAN's own images.

      jaxcxr train upsampler --preset upsampler_x4_generated_cpu --base-gan checkpoints/gan_256 \
        --init-from checkpoints/gan_256 --out runs/upsampler_x4_generated

  Those inputs have no real target: the stage is judged by the patch discriminator against
  real crops and kept faithful to its input by L1 between its down-sampled output and the
  input, so it learns to finish the images it will finish in a cascade, not only
  down-sampled real ones.
  """
  return dataclasses.replace(upsampler_x4_noiseless_cpu(), generated_fraction=0.5, steps=20000)


def upsampler_x4_cpu() -> UpsamplerTrainConfig:
  """4x super-resolution stage (64 -> 256) trained on real radiographs on 2 CPU cores.

      jaxcxr train upsampler --data nih_cxr14_subset_256.npz,nih_cxr14_extra_256.npz \
        --preset upsampler_x4_cpu --out runs/upsampler_x4

  Input blocks at 64x64 with 32 channels, stages of 24 (128x128) and 16 (256x256)
  channels, about 40k parameters; trained on 128x128 crops, batch 8.
  """
  return UpsamplerTrainConfig(steps=3000, steps_per_call=10, sample_every=500, checkpoint_every=200)


def upsampler_x2_cpu() -> UpsamplerTrainConfig:
  """2x stage (128 -> 256) for a 128x128 base GAN (`gan_128_resize_cpu`), on real radiographs, 2 CPU cores.

      jaxcxr train upsampler --preset upsampler_x2_cpu --out runs/upsampler_x2   # data: both NIH archives

  Input blocks at 128x128 with 24 channels, one 16-channel stage at 256x256, no noise inputs
  (as `upsampler_x4_noiseless_cpu`: with them the stage drew grain real films do not have);
  128x128 crops, batch 8.
  """
  return dataclasses.replace(upsampler_x4_cpu(), steps=6000,
                             upsampler=UpsamplerConfig(scale=2, input_channels=24, stage_channels=(16,), noise=False))


def upsampler_x2_adversarial_cpu() -> UpsamplerTrainConfig:
  """`upsampler_x2_cpu` with the adversarial loss weighted up against L1, an ablation arm.

      jaxcxr train upsampler --preset upsampler_x2_adversarial_cpu --out runs/upsampler_x2_adv

  The patch discriminator of `upsampler_x2_cpu` stayed at chance for its 6,000 steps (loss 1.383
  against 2 ln 2 = 1.386) and the stage ended as close to the real crop as bilinear up-sampling:
  L1 at weight 10 held the stage at the conditional mean. Here L1 weighs 1 and D sees the detail
  image at gain 30.
  """
  return dataclasses.replace(upsampler_x2_cpu(), l1_weight=1.0, disc_detail_gain=30.0)


# The upsampler training presets by name, each callable without arguments.
PRESETS = {
    "upsampler_tiny": upsampler_tiny,
    "upsampler_x4_cpu": upsampler_x4_cpu,
    "upsampler_x2_cpu": upsampler_x2_cpu,
    "upsampler_x2_adversarial_cpu": upsampler_x2_adversarial_cpu,
    "upsampler_x4_generated_cpu": upsampler_x4_generated_cpu,
    "upsampler_x4_noiseless_cpu": upsampler_x4_noiseless_cpu,
}

FAMILY = Family(UpsamplerTrainConfig, PRESETS, "the super-resolution stage of a cascade generator")
