"""Configs of the HealthyGAN translator and critic and of their training, and their presets.

`TranslatorConfig` and `CriticConfig` (`jaxcxr.models.healthygan`), `HealthyganTrainConfig`
(`jaxcxr.train.healthygan`) and the presets (`PRESETS`): `healthygan_tiny`, `healthygan_64_cpu`,
`healthygan_128_cpu`.
"""

from __future__ import annotations

import dataclasses

from jaxcxr.config.common import (DTYPES, LIGHT_AUGMENT, RESOLUTIONS, AugmentConfig, Family, check_choice,
                                  check_loop_fields)

__all__ = ["FAMILY", "PRESETS", "CriticConfig", "HealthyganTrainConfig", "TranslatorConfig", "healthygan_128_cpu",
           "healthygan_64_cpu", "healthygan_tiny"]


def _check_patch_levels(name: str, resolution: int, num_down: int, dtype: str) -> None:
  check_choice(f"{name}.resolution", resolution, RESOLUTIONS)
  if num_down < 1 or resolution % (2 ** num_down) or resolution // (2 ** num_down) < 2:
    raise ValueError(f"{name}.num_down: expected 1 <= num_down with resolution / 2**num_down >= 2, got "
                     f"num_down={num_down} at resolution {resolution}")
  check_choice(f"{name}.dtype", dtype, DTYPES)


@dataclasses.dataclass(frozen=True)
class TranslatorConfig:
  """HealthyGAN translator: (H, W, 1) image in [-1, 1] -> content in [-1, 1] and mask in [0, 1]."""

  # Image side in pixels (32, 64, 128 or 256).
  resolution: int = 64
  # Channels of the stem (the original: 64); doubled per down-sampling, capped at max_channels.
  base_channels: int = 32
  # Channel cap of the bottleneck.
  max_channels: int = 256
  # Stride-2 down-samplings before the residual blocks (and up-samplings after them); the original: 2.
  num_down: int = 2
  # Residual blocks at the bottleneck resolution (the original: 6).
  num_res_blocks: int = 6
  # Kernel size of the stem and output convolutions (the original: 7).
  outer_kernel_size: int = 7
  # GroupNorm groups; None = one group per channel (instance norm with an affine, as the original).
  norm_groups: int | None = None
  # Compute dtype of convolutions ("float32" or "bfloat16"); parameters and outputs stay float32.
  dtype: str = "float32"

  def __post_init__(self):
    _check_patch_levels("TranslatorConfig", self.resolution, self.num_down, self.dtype)
    if self.base_channels <= 0 or self.max_channels < self.base_channels or self.num_res_blocks < 0:
      raise ValueError(f"TranslatorConfig: bad sizes base_channels={self.base_channels}, "
                       f"max_channels={self.max_channels}, num_res_blocks={self.num_res_blocks}")
    if self.outer_kernel_size < 1 or self.outer_kernel_size % 2 == 0:
      raise ValueError(f"TranslatorConfig.outer_kernel_size: expected an odd size, got {self.outer_kernel_size}")
    if self.norm_groups is not None and self.norm_groups <= 0:
      raise ValueError(f"TranslatorConfig.norm_groups: expected None or a positive integer, got {self.norm_groups}")

  @property
  def channels(self) -> tuple[int, ...]:
    """Channels per resolution level, full resolution first, bottleneck last."""
    return tuple(min(self.max_channels, self.base_channels * 2 ** i) for i in range(self.num_down + 1))


@dataclasses.dataclass(frozen=True)
class CriticConfig:
  """HealthyGAN critic (WGAN-GP, PatchGAN): (H, W, 1) image in [-1, 1] -> patch scores."""

  # Image side in pixels (32, 64, 128 or 256).
  resolution: int = 64
  # Channels of the first stage (the original: 64); doubled per stage, capped at max_channels.
  base_channels: int = 32
  # Channel cap.
  max_channels: int = 512
  # Down-sampling stages; the patch map is (resolution / 2**num_down)^2 (the original: 6 at 128 -> 2x2).
  num_down: int = 4
  # Slope of the leaky ReLUs (the original: 0.01).
  negative_slope: float = 0.01
  # Compute dtype of convolutions ("float32" or "bfloat16"); parameters and scores stay float32.
  dtype: str = "float32"

  def __post_init__(self):
    _check_patch_levels("CriticConfig", self.resolution, self.num_down, self.dtype)
    if self.base_channels <= 0 or self.max_channels < self.base_channels:
      raise ValueError(f"CriticConfig: bad sizes base_channels={self.base_channels}, "
                       f"max_channels={self.max_channels}")

  @property
  def channels(self) -> tuple[int, ...]:
    """Output channels of each stage."""
    return tuple(min(self.max_channels, self.base_channels * 2 ** i) for i in range(self.num_down))


@dataclasses.dataclass(frozen=True)
class HealthyganTrainConfig:
  """HealthyGAN training: networks, loss weights (the original's defaults), optimiser and loop."""

  # The translator G.
  translator: TranslatorConfig = TranslatorConfig()
  # The critic D.
  critic: CriticConfig = CriticConfig()
  # Images per batch (each step draws mixed and normal batches of this size; the original: 16).
  batch_size: int = 16
  # Total steps (translator updates; each preceded by n_critic critic updates).
  steps: int = 2000
  # Steps per jitted call, run with lax.scan.
  steps_per_call: int = 10
  # Critic updates per translator update (the original: 2).
  n_critic: int = 2
  # Adam learning rate of the translator (the original: 1e-4).
  translator_learning_rate: float = 1e-4
  # Adam learning rate of the critic (the original: 1e-4).
  critic_learning_rate: float = 1e-4
  # Adam beta1 (the original: 0.5).
  adam_b1: float = 0.5
  # Adam beta2 (the original: 0.999).
  adam_b2: float = 0.999
  # Fraction of the steps after which both learning rates decay linearly to 0 (the original: 0.5);
  # 1.0 keeps them constant.
  lr_decay_start: float = 0.5
  # WGAN-GP gradient-penalty weight (the original: 10).
  gp_weight: float = 10.0
  # Identity loss weight, mean |x_b - c(x_b)| on normal images (the original's lambda_id: 1).
  id_weight: float = 1.0
  # Weight of mean |(x_a - c(x_a)) (1 - m(x_a))| on mixed images (the original's lambda_rec: 1).
  rec_weight: float = 1.0
  # Weight of the mask regulariser (the original's lambda_mask: 0.1).
  mask_weight: float = 0.1
  # Weight of mean(m)^2 inside the mask regulariser (the original's lambda_msmall: 1).
  mask_small_weight: float = 1.0
  # Weight of the push of m towards 0 or 1 inside the mask regulariser (the original's lambda_mzerone: 1).
  mask_binary_weight: float = 1.0
  # Per-image augmentation of both training sets (data.augment); None = none.
  augment: AugmentConfig | None = LIGHT_AUGMENT
  # Compute dtype of G and D during training ("float32" or "bfloat16"); params and losses stay float32.
  compute_dtype: str = "float32"
  # Write a translation grid (mixed inputs, contents, translations, masks) every this many steps; 0 = never.
  sample_every: int = 500
  # Images per row of the translation grid.
  samples: int = 8
  # Save a training checkpoint every this many steps (and at the end).
  checkpoint_every: int = 500
  # Training checkpoints kept.
  max_to_keep: int = 3

  def __post_init__(self):
    check_loop_fields(self, "HealthyganTrainConfig")
    if self.translator.resolution != self.critic.resolution:
      raise ValueError(f"HealthyganTrainConfig: translator resolution {self.translator.resolution} != critic "
                       f"resolution {self.critic.resolution}")
    check_choice("HealthyganTrainConfig.compute_dtype", self.compute_dtype, DTYPES)
    if self.n_critic <= 0:
      raise ValueError(f"HealthyganTrainConfig.n_critic: expected a positive integer, got {self.n_critic}")
    if not 0.0 <= self.lr_decay_start <= 1.0:
      raise ValueError(f"HealthyganTrainConfig.lr_decay_start: expected a value in [0, 1], got {self.lr_decay_start}")
    for name in ("translator_learning_rate", "critic_learning_rate"):
      if not getattr(self, name) > 0:
        raise ValueError(f"HealthyganTrainConfig.{name}: expected > 0, got {getattr(self, name)}")
    for name in ("gp_weight", "id_weight", "rec_weight", "mask_weight", "mask_small_weight", "mask_binary_weight"):
      if not getattr(self, name) >= 0:
        raise ValueError(f"HealthyganTrainConfig.{name}: expected >= 0, got {getattr(self, name)}")

  @property
  def resolution(self) -> int:
    return self.translator.resolution


def healthygan_tiny(resolution: int = 32) -> HealthyganTrainConfig:
  """A few channels at 32x32 for unit tests; learns nothing useful.

      python -c "from jaxcxr import config; print(config.healthygan_tiny())"

  No augmentation: `data.augment` adds about a third to the step's compile time on a CPU
  (its own tests cover it). Expected: the 2-step train call compiles in 20-35 s on a busy
  2-core CPU.
  """
  return HealthyganTrainConfig(
      translator=TranslatorConfig(resolution=resolution, base_channels=4, max_channels=8, num_down=1,
                                  num_res_blocks=1, outer_kernel_size=3),
      critic=CriticConfig(resolution=resolution, base_channels=4, max_channels=8, num_down=3),
      batch_size=4, steps=4, steps_per_call=2, translator_learning_rate=1e-3, critic_learning_rate=1e-3,
      augment=None, sample_every=0, samples=2, checkpoint_every=2, max_to_keep=2)


def healthygan_64_cpu() -> HealthyganTrainConfig:
  """64x64 HealthyGAN sized for 2 CPU cores.

      jaxcxr train healthygan --preset healthygan_64_cpu --data $JAXCXR_DATA/nih_cxr14_subset_256.npz \\
        --out runs/healthygan_64

  Translator channels (8, 16, 32, 64): three down-samplings to 8x8 and 4 residual blocks
  there, 7x7 outer kernels (the original: 64 channels, two down-samplings, 6 blocks, at
  128x128), 0.49M parameters, about 53 MMAC per image. Critic (16, 32, 64, 128, 256) to a
  2x2 patch map (the original's map is 2x2 too), 0.39M parameters, trained at 4x the
  translator's learning rate (two time-scale update rule; the original: equal rates with
  a critic far larger than its translator). Measured on the 555 train images (274 normal)
  of the NIH subset, on this project's shared 2-core CPU (load ~5), 200-step runs:

  * a 25k-parameter critic (8, 16, 32, 64) to a 4x4 map at the original's 1e-4: the
    translator won (mean D 7.0 on translations vs 2.3 on real normals at step 200, mask
    mean 0.87, identity loss rising 0.49 -> 0.79, blank bright translations; validation
    ROC AUC 0.25);
  * this preset: the critic ahead from step 40 (D gap 3-6, penalty ~0.05), identity loss
    0.50 -> 0.32, mask mean 0.63 -> 0.52, chest-like translations; validation ROC AUC 0.73
    (105 images) after 200 steps. About 56 s of compile, then 1.8 s per step (two critic
    updates with gradient penalty, one translator update, batches of 16), so 2,000 steps
    take about an hour on that machine.
  """
  return HealthyganTrainConfig(
      translator=TranslatorConfig(resolution=64, base_channels=8, max_channels=64, num_down=3,
                                  num_res_blocks=4, outer_kernel_size=7),
      critic=CriticConfig(resolution=64, base_channels=16, max_channels=256, num_down=5),
      critic_learning_rate=4e-4, batch_size=16, steps=2000, steps_per_call=10, sample_every=200, samples=8,
      checkpoint_every=200)


def healthygan_128_cpu() -> HealthyganTrainConfig:
  """`healthygan_64_cpu` one resolution up, 128x128, the original's resolution.

      jaxcxr train healthygan --preset healthygan_128_cpu --data $JAXCXR_DATA/nih_cxr14_subset_256.npz \
        --out runs/healthygan_128

  The 64x64 translator's validation ROC AUC inside the lungs stayed at 0.61-0.74 over 4,800
  steps with no trend (`training_state/healthygan_64_long`): longer training did not help, so
  this preset asks whether resolution does. One more down-sampling keeps the 8x8 bottleneck
  (translator channels (8, 16, 32, 64, 64), 4 residual blocks) and one more critic stage keeps
  the 2x2 patch map (critic (16, 32, 64, 128, 256, 256)). About four times the 64x64 step's
  work per image.

  Measured (session 19, both NIH archives' pneumonia-task training patients, seed 0; curve of
  `scripts/healthygan_curve.py --preset healthygan_128_cpu` in `evaluations/healthygan_128_*`):
  validation ROC AUC inside the lungs 0.710 / 0.581 / 0.589 / 0.639 at steps 200-800, against
  0.715 / 0.681 / 0.702 / 0.717 for `healthygan_64_cpu` at the same steps
  (`training_state/healthygan_64_long/curve.jsonl`), at 4.4 images/s against about 9 on a
  shared core. Not better at equal steps, slower per step: stopped at step 800.
  """
  base = healthygan_64_cpu()
  return dataclasses.replace(
      base, translator=dataclasses.replace(base.translator, resolution=128, num_down=4),
      critic=dataclasses.replace(base.critic, resolution=128, num_down=6))


# The HealthyGAN training presets by name, each callable without arguments.
PRESETS = {
    "healthygan_tiny": healthygan_tiny,
    "healthygan_64_cpu": healthygan_64_cpu,
    "healthygan_128_cpu": healthygan_128_cpu,
}

FAMILY = Family(HealthyganTrainConfig, PRESETS, "the HealthyGAN translator and critic (anomaly maps)")
