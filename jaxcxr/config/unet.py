"""Configs of the lung-segmentation U-Net and its training, and the U-Net training presets.

`NUM_CLASSES`, `UNetConfig` (`jaxcxr.models.unet`), `SEG_AUGMENT`, `SegTrainConfig`
(`jaxcxr.train.segmentation`) and the presets (`PRESETS`): `unet_tiny`, `unet_128_cpu`,
`unet_256_cpu`, `unet_256`.
"""

from __future__ import annotations

import dataclasses

from jaxcxr.config.common import DTYPES, AugmentConfig, Family, check_choice, check_loop_fields

__all__ = ["FAMILY", "NUM_CLASSES", "PRESETS", "SEG_AUGMENT", "SegTrainConfig", "UNetConfig", "unet_128_cpu",
           "unet_256", "unet_256_cpu", "unet_tiny"]


# Classes of the lung masks: 0 background, 1 patient's right lung (image left), 2 patient's left lung.
NUM_CLASSES = 3


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """U-Net: (H, W, 1) radiograph in [0, 1] -> (H, W, num_classes) logits, NHWC."""

  # Side of the square input the network is trained and run at; a multiple of 2 ** (len(channels) - 1).
  resolution: int = 128
  # Channels per level, full resolution first; one 2x down-sampling (and up-sampling) between levels.
  channels: tuple[int, ...] = (16, 32, 64, 128, 256)
  # Input channels (1: grayscale radiograph).
  in_channels: int = 1
  # Output classes: 0 background, 1 patient's right lung (image left), 2 patient's left lung (image right).
  num_classes: int = NUM_CLASSES
  # Groups of the GroupNorm layers (capped by the channel count of each layer).
  norm_groups: int = 8
  # Compute dtype of the convolutions ("float32" or "bfloat16"); parameters and logits stay float32.
  dtype: str = "float32"

  def __post_init__(self):
    if len(self.channels) < 2 or min(self.channels) <= 0:
      raise ValueError(f"UNetConfig.channels: expected at least two positive counts, got {self.channels}")
    factor = 2 ** (len(self.channels) - 1)
    if self.resolution <= 0 or self.resolution % factor:
      raise ValueError(f"UNetConfig.resolution: expected a positive multiple of {factor} "
                       f"(2 ** (len(channels) - 1)), got {self.resolution}")
    if self.in_channels <= 0 or self.num_classes < 2 or self.norm_groups <= 0:
      raise ValueError(f"UNetConfig: bad sizes in_channels={self.in_channels}, num_classes={self.num_classes}, "
                       f"norm_groups={self.norm_groups}")
    check_choice("UNetConfig.dtype", self.dtype, DTYPES)

  @property
  def downsampling(self) -> int:
    """Total down-sampling factor of the encoder; input sides must be multiples of it."""
    return 2 ** (len(self.channels) - 1)


# Geometric and intensity augmentation for segmentation: somewhat stronger than the GAN default,
# no horizontal flip (it would move the heart; `data.augment` would swap the lung labels).
SEG_AUGMENT = AugmentConfig(rotation_deg=10.0, translation=0.06, scale=0.1, brightness=0.1, contrast=0.2,
                            blur_sigma=1.0, hflip_prob=0.0)


@dataclasses.dataclass(frozen=True)
class SegTrainConfig:
  """Training of the lung U-Net: model, loss, optimiser, augmentation, split and the loop."""

  # The network.
  unet: UNetConfig = UNetConfig()
  # Images per step, drawn without replacement from the training split.
  batch_size: int = 8
  # Total optimisation steps.
  steps: int = 1000
  # Steps per jitted call, run with lax.scan (host sync, progress, validation and checkpoints between calls).
  steps_per_call: int = 10
  # Unroll the steps of a call into straight-line code instead of a lax.scan loop. XLA:CPU runs
  # convolutions inside loop bodies many times slower (jax-ml/jax#12868; 13x for this U-Net), so CPU
  # presets set it with a small steps_per_call; compile time grows with steps_per_call.
  unroll: bool = False
  # Peak AdamW learning rate.
  learning_rate: float = 1e-3
  # Linear warm-up steps from 0 to the peak learning rate.
  warmup_steps: int = 50
  # Cosine decay to 0 ends at this step; 0 = `steps` (set it explicitly to extend a run without changing it).
  lr_decay_steps: int = 0
  # AdamW decoupled weight decay.
  weight_decay: float = 1e-4
  # Gradient clipping by global norm; 0 disables.
  grad_clip: float = 1.0
  # Weight of the soft-Dice term (mean over the two lung classes) added to the pixel cross-entropy.
  dice_weight: float = 1.0
  # Augmentation of each training batch (masks warped with the images); None disables it.
  augment: AugmentConfig | None = SEG_AUGMENT
  # Patient-level train/val/test fractions (`data.split_by_patient`).
  split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
  # Seed of the patient split (kept apart from the training seed so the split is stable across runs).
  split_seed: int = 0
  # Validation Dice every this many steps (multiple of steps_per_call); the best step is kept. 0 = end only.
  eval_every: int = 100
  # Images per jitted call in validation and test.
  eval_batch_size: int = 16
  # Save a training checkpoint every this many steps (and at the end); a multiple of steps_per_call.
  checkpoint_every: int = 100
  # Training checkpoints kept.
  max_to_keep: int = 2

  def __post_init__(self):
    check_loop_fields(self, "SegTrainConfig")
    if self.eval_batch_size <= 0:
      raise ValueError(f"SegTrainConfig.eval_batch_size: expected a positive integer, got {self.eval_batch_size}")
    for name in ("learning_rate", "weight_decay", "grad_clip", "dice_weight", "warmup_steps", "lr_decay_steps"):
      if getattr(self, name) < 0:
        raise ValueError(f"SegTrainConfig.{name}: expected >= 0, got {getattr(self, name)}")
    fractions = tuple(self.split_fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6 or fractions[0] == 0:
      raise ValueError(f"SegTrainConfig.split_fractions: expected three non-negative numbers summing to 1 "
                       f"with a non-empty training part, got {self.split_fractions}")
    if self.decay_steps <= self.warmup_steps:
      raise ValueError(f"SegTrainConfig: the learning-rate decay ends at step {self.decay_steps}, not after the "
                       f"{self.warmup_steps} warm-up steps; raise steps or lr_decay_steps")

  @property
  def resolution(self) -> int:
    return self.unet.resolution

  @property
  def decay_steps(self) -> int:
    """Step at which the cosine learning-rate decay reaches 0."""
    return self.lr_decay_steps or self.steps


def unet_tiny(resolution: int = 64) -> SegTrainConfig:
  """A few channels at 64x64 for unit tests.

      python -c "from jaxcxr import config; print(config.unet_tiny())"

  Expected: a train step compiles in about 13 s on a busy 2-core CPU (4 s of it the
  augmentation) and runs in 0.07 s; 30 steps on two images raise the Dice of the lungs (either
  side) from 0.05-0.49 to 0.80-0.92 over 5 seeds (overfitting, not learning); it tells the right
  lung from the left in about half of them. The learning rate is nearly constant (`lr_decay_steps`
  1000), so runs of different `steps` share one compiled step. No gradient clip: the test suite
  compiles at XLA:CPU -O0 (tests/conftest.py), which gets the clipped step wrong (NaN gradients
  from the second step); `tests/test_twins.py::test_unet_train_step` checks the clipped step at -O2.
  """
  return SegTrainConfig(
      unet=UNetConfig(resolution=resolution, channels=(8, 16, 32), norm_groups=4),
      batch_size=2, steps=8, steps_per_call=1, unroll=True, learning_rate=1e-2, warmup_steps=0,
      lr_decay_steps=1000, grad_clip=0.0, eval_every=4, eval_batch_size=4, checkpoint_every=4, max_to_keep=2)


def unet_128_cpu() -> SegTrainConfig:
  """128x128 lung U-Net (8..128 channels, 0.49M parameters) sized to train on 2 CPU cores in ~15 minutes.

      jaxcxr train unet --preset unet_128_cpu --out runs/unet128   # data: $JAXCXR_DATA/covid_v7lungs_256.npz

  Expected: 800 steps of batch 8 on the 70% training patients of covid_v7lungs (240
  images of 144 patients): measured 0.93-0.97 s/step on 2 cores shared with other jobs
  (load ~3.4), 24 s compile, 9 s initialisation, 2 s per validation pass, so about 14
  minutes in all. Validation Dice (at 256x256): not yet measured (aim: about 0.9; COVID
  opacities blur some borders). One unrolled step per call: XLA:CPU convolutions inside a
  lax.scan loop were 13x slower for this network.
  """
  return SegTrainConfig(
      unet=UNetConfig(resolution=128, channels=(8, 16, 32, 64, 128), norm_groups=8),
      batch_size=8, steps=800, steps_per_call=1, unroll=True, learning_rate=2e-3, warmup_steps=40,
      eval_every=100, eval_batch_size=16, checkpoint_every=100)


def unet_256_cpu() -> SegTrainConfig:
  """256x256 lung U-Net (8..256 channels over six levels, 1.9M parameters) sized for one CPU core.

      jaxcxr train unet --preset unet_256_cpu --out runs/unet256   # data: $JAXCXR_DATA/covid_v7lungs_256.npz

  Expected: 1,500 steps of batch 8 on the 70% training patients of covid_v7lungs (240
  images): measured 1.53 s/step on one core of the project's 2-core machine, 10 s
  compile, 39 minutes in all. The sixth level (256 channels at 8x8) adds little compute
  and doubles the receptive field, which a 256x256 input needs to see both lungs.
  Measured (shipped `unet_256`): validation Dice 0.958 (best at step 1,100), test 0.958.
  """
  return SegTrainConfig(
      unet=UNetConfig(resolution=256, channels=(8, 16, 32, 64, 128, 256), norm_groups=8),
      batch_size=8, steps=1500, steps_per_call=1, unroll=True, learning_rate=2e-3, warmup_steps=50,
      eval_every=100, eval_batch_size=16, checkpoint_every=100)


def unet_256() -> SegTrainConfig:
  """256x256 lung U-Net (32..512 channels, 7.8M parameters, bfloat16 compute) for a GPU.

      jaxcxr train unet --preset unet_256 --out runs/unet256   # data: $JAXCXR_DATA/covid_v7lungs_256.npz

  Expected: 6,000 steps of batch 32 in under 10 minutes on one H100 (an estimate from
  ~13 U-Net training steps/s at batch 64 in fp32; not yet measured here);
  validation Dice above that of `unet_128_cpu`.
  """
  return SegTrainConfig(
      unet=UNetConfig(resolution=256, channels=(32, 64, 128, 256, 512), norm_groups=8, dtype="bfloat16"),
      batch_size=32, steps=6000, steps_per_call=100, learning_rate=1e-3, warmup_steps=200,
      eval_every=500, eval_batch_size=64, checkpoint_every=1000)


# The U-Net training presets by name, each callable without arguments.
PRESETS = {
    "unet_tiny": unet_tiny,
    "unet_128_cpu": unet_128_cpu,
    "unet_256_cpu": unet_256_cpu,
    "unet_256": unet_256,
}

FAMILY = Family(SegTrainConfig, PRESETS, "the lung-segmentation U-Net")
