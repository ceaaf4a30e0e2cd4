"""Configs and presets of the chest X-ray classifier (to be merged into `config.py`).

Frozen dataclasses, one per component (FX gemma `TransformerConfig` style): they
hash, so they serve as jit static arguments, and they round-trip through JSON with
`jaxcxr.config.to_dict` / `from_dict`. Presets are functions whose docstrings give
the run command and the expected result (big_vision configs style).
"""

from __future__ import annotations

import dataclasses

from jaxcxr.config import AugmentConfig

INPUT_MODES: tuple[str, ...] = ("full", "halves")
TASKS: tuple[str, ...] = ("abnormal", "sex")
IMBALANCE: tuple[str, ...] = ("none", "weighted_bce", "focal", "oversample")
DTYPES: tuple[str, ...] = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  """ResNet-18-like binary classifier: (H, W, 1) image in [0, 1] -> one logit."""

  # Input side in pixels; images are resized to resolution x resolution before the model.
  resolution: int = 128
  # "full": the whole image; "halves": left half and mirrored right half through the shared
  # backbone, top rows cropped, features concatenated before the head (the original study).
  input_mode: str = "full"
  # Fraction of the top rows (neck/shoulders) cropped in "halves" mode; ignored in "full" mode.
  crop_top: float = 0.2
  # Basic residual blocks per stage (ResNet-18: (2, 2, 2, 2)).
  stages: tuple[int, ...] = (2, 2, 2, 2)
  # Output channels per stage; the first stage keeps the resolution, later ones halve it.
  channels: tuple[int, ...] = (32, 64, 128, 256)
  # Kernel size of the stem convolution (ResNet: 7).
  stem_kernel: int = 7
  # Stride of the stem convolution (ResNet: 2).
  stem_stride: int = 2
  # 3x3 stride-2 max pooling after the stem (ResNet: True).
  stem_pool: bool = True
  # Groups of every GroupNorm layer (capped by, and must divide, the channel count).
  norm_groups: int = 8
  # Zero-initialise the last norm scale of each residual branch (Goyal et al. 2017): blocks start
  # as identities, which helps short trainings.
  zero_init_residual: bool = True
  # Compute dtype of convolutions ("float32" or "bfloat16"); params, norms and the head stay float32.
  dtype: str = "float32"

  def __post_init__(self):
    if self.input_mode not in INPUT_MODES:
      raise ValueError(f"ClassifierConfig.input_mode: expected one of {INPUT_MODES}, got {self.input_mode!r}")
    if self.dtype not in DTYPES:
      raise ValueError(f"ClassifierConfig.dtype: expected one of {DTYPES}, got {self.dtype!r}")
    if not self.stages or len(self.stages) != len(self.channels):
      raise ValueError(f"ClassifierConfig: stages {self.stages} and channels {self.channels} must be "
                       "non-empty and of equal length")
    if min(self.stages) < 1 or min(self.channels) < 1:
      raise ValueError(f"ClassifierConfig: stages {self.stages} and channels {self.channels} must be positive")
    if self.resolution < 8 or self.resolution % 2:
      raise ValueError(f"ClassifierConfig.resolution: expected an even side >= 8, got {self.resolution}")
    if not 0.0 <= self.crop_top < 0.9:
      raise ValueError(f"ClassifierConfig.crop_top: expected a fraction in [0, 0.9), got {self.crop_top}")
    if self.stem_kernel < 1 or self.stem_stride < 1 or self.norm_groups < 1:
      raise ValueError("ClassifierConfig: stem_kernel, stem_stride and norm_groups must be positive")
    for c in (self.channels[0], *self.channels):
      if c % min(self.norm_groups, c):
        raise ValueError(f"ClassifierConfig.norm_groups={self.norm_groups} does not divide {c} channels")

  @property
  def crop_rows(self) -> int:
    """Rows cropped from the top of the input (0 in "full" mode)."""
    return int(round(self.crop_top * self.resolution)) if self.input_mode == "halves" else 0


@dataclasses.dataclass(frozen=True)
class ClassifierTrainConfig:
  """Training of the classifier: task, model, loss, optimiser, augmentation, split and loop."""

  # The classifier.
  model: ClassifierConfig = ClassifierConfig()
  # "abnormal" (label 1 = abnormal) or "sex" (1 = female; images with sex 'U' dropped).
  task: str = "abnormal"
  # Images per step.
  batch_size: int = 32
  # Total optimisation steps.
  steps: int = 600
  # Steps per jitted call, run with lax.scan (host sync, progress, evaluation and checkpoints between calls).
  steps_per_call: int = 10
  # lax.scan unroll factor. XLA:CPU runs convolutions inside a rolled while loop about 15x slower
  # (measured, jax 0.10.2: 12.4 s vs 0.81 s per step of classifier_128_cpu), so CPU presets unroll
  # fully (scan_unroll = steps_per_call) at the price of a longer compile; GPUs keep 1.
  scan_unroll: int = 1
  # Peak AdamW learning rate (linear warm-up, then cosine decay to 0 at `steps`).
  learning_rate: float = 1e-3
  # Linear warm-up steps of the learning rate.
  warmup_steps: int = 50
  # AdamW decoupled weight decay (applied to conv/dense kernels only, not to norms and biases).
  weight_decay: float = 1e-4
  # Global gradient-norm clip; 0 disables it.
  grad_clip: float = 1.0
  # Class imbalance handling: "none" (BCE), "weighted_bce" (class weights N / (2 N_c) from the
  # training labels), "focal" (Lin et al. 2017), "oversample" (both classes drawn equally often).
  imbalance: str = "none"
  # Focal loss exponent gamma of the modulating factor (1 - p_t)^gamma (gamma = 0 gives BCE).
  focal_gamma: float = 2.0
  # Focal loss weight of positives (negatives get 1 - alpha); None = no weighting.
  focal_alpha: float | None = None
  # Per-example augmentation inside the step (`jaxcxr.data.augment`); None disables it.
  augment: AugmentConfig | None = AugmentConfig()
  # Local jaxcxr classifier checkpoint (a `save_model` directory) whose backbone initialises this
  # one; the head is always re-initialised. None trains from scratch.
  pretrained: str | None = None
  # Early backbone parts kept frozen: k >= 1 freezes the stem and residual stages 1..k;
  # len(model.stages) trains the head only (linear probe). 0 trains everything.
  freeze_stages: int = 0
  # Patient-level train/val/test fractions (stratified on the task label).
  split: tuple[float, float, float] = (0.7, 0.15, 0.15)
  # Seed of the patient split (saved in the checkpoint metadata).
  split_seed: int = 0
  # Evaluate validation AUC every this many steps (and at the end); the best model is kept.
  eval_every: int = 100
  # Save a training checkpoint every this many steps (and at the end).
  checkpoint_every: int = 100
  # Training checkpoints kept.
  max_to_keep: int = 2
  # Batch size of validation/test inference.
  eval_batch_size: int = 64

  def __post_init__(self):
    if self.task not in TASKS:
      raise ValueError(f"ClassifierTrainConfig.task: expected one of {TASKS}, got {self.task!r}")
    if self.imbalance not in IMBALANCE:
      raise ValueError(f"ClassifierTrainConfig.imbalance: expected one of {IMBALANCE}, got {self.imbalance!r}")
    if self.focal_alpha is not None and not 0.0 < self.focal_alpha < 1.0:
      raise ValueError(f"ClassifierTrainConfig.focal_alpha: expected None or a value in (0, 1), "
                       f"got {self.focal_alpha}")
    if self.focal_gamma < 0:
      raise ValueError(f"ClassifierTrainConfig.focal_gamma: expected >= 0, got {self.focal_gamma}")
    if not 0 <= self.freeze_stages <= len(self.model.stages):
      raise ValueError(f"ClassifierTrainConfig.freeze_stages: expected 0..{len(self.model.stages)}, "
                       f"got {self.freeze_stages}")
    if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1.0) > 1e-6:
      raise ValueError(f"ClassifierTrainConfig.split: expected three fractions summing to 1, got {self.split}")
    for name in ("batch_size", "steps", "steps_per_call", "scan_unroll", "max_to_keep", "eval_batch_size"):
      if getattr(self, name) <= 0:
        raise ValueError(f"ClassifierTrainConfig.{name}: expected a positive integer, got {getattr(self, name)}")
    for name in ("steps", "eval_every", "checkpoint_every"):
      value = getattr(self, name)
      if value <= 0 or value % self.steps_per_call:
        raise ValueError(f"ClassifierTrainConfig.{name}={value}: expected a positive multiple of "
                         f"steps_per_call={self.steps_per_call}")
    if self.learning_rate <= 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.warmup_steps < 0:
      raise ValueError("ClassifierTrainConfig: learning_rate must be positive; weight_decay, grad_clip and "
                       "warmup_steps non-negative")

  @property
  def resolution(self) -> int:
    return self.model.resolution


def classifier_tiny(resolution: int = 16, *, input_mode: str = "full", imbalance: str = "none",
                    augment: bool = False) -> ClassifierTrainConfig:
  """One tiny stage (a stride-2 3x3 stem and one 4-channel block) at 16x16 for unit tests; learns nothing.

      python -c "from jaxcxr import classifier_config as c; print(c.classifier_tiny())"

  Expected: one train call of 2 steps compiles in a few seconds on a CPU and gives a finite loss.
  Kept to one stage because XLA's CPU compile time of the backward pass grows with every conv.
  """
  model = ClassifierConfig(resolution=resolution, input_mode=input_mode, stages=(1,), channels=(4,),
                           stem_kernel=3, stem_stride=2, stem_pool=False, norm_groups=2)
  return ClassifierTrainConfig(model=model, batch_size=4, steps=4, steps_per_call=2, warmup_steps=0,
                               imbalance=imbalance, augment=AugmentConfig() if augment else None,
                               eval_every=2, checkpoint_every=2, eval_batch_size=4)


def classifier_128_cpu(task: str = "abnormal") -> ClassifierTrainConfig:
  """ResNet-18-shaped classifier (channels 16..128, 0.70M params) at 128x128 for 2 CPU cores, ~10 minutes.

      python -c "from jaxcxr import data; from jaxcxr.classifier_config import classifier_128_cpu; \\
        from jaxcxr.train.classifier import train_classifier; \\
        print(train_classifier(data.load('nih_cxr14_subset_256.npz'), classifier_128_cpu(), 'runs/cls128'))"

  Expected: 500 steps of batch 32 with augmentation, about 1 s/step on 2 CPU cores
  (measured 0.93-1.19 s/step on a shared 2-core machine) after about a minute of
  compile (the 5-step scan is unrolled, see `scan_unroll`): about 16,000 augmented
  images, some 29 epochs of the ~560-image training part of the NIH subset. Test AUC
  for abnormal should clearly beat the pixel logistic-regression baseline
  (`pixel_logreg_baseline`: 0.89 abnormal, 0.83 sex on the same test part). Channels (32, 64, 128, 256) cost about 4x the
  time per step.
  """
  model = ClassifierConfig(resolution=128, stages=(2, 2, 2, 2), channels=(16, 32, 64, 128))
  return ClassifierTrainConfig(model=model, task=task, batch_size=32, steps=500, steps_per_call=5, scan_unroll=5,
                               learning_rate=2e-3, warmup_steps=25, eval_every=50, checkpoint_every=100)


def classifier_256(task: str = "abnormal") -> ClassifierTrainConfig:
  """ResNet-18 (channels 64..512) at 256x256 for a GPU.

      python -c "from jaxcxr import data; from jaxcxr.classifier_config import classifier_256; \\
        from jaxcxr.train.classifier import train_classifier; \\
        print(train_classifier(data.load('nih_cxr14_subset_256.npz'), classifier_256(), 'runs/cls256'))"

  Expected: 3,000 steps of batch 64 in bfloat16 within a few minutes on one H100;
  abnormal test AUC above the 128x128 CPU model's.
  """
  model = ClassifierConfig(resolution=256, stages=(2, 2, 2, 2), channels=(64, 128, 256, 512),
                           norm_groups=32, dtype="bfloat16")
  return ClassifierTrainConfig(model=model, task=task, batch_size=64, steps=3000, steps_per_call=100,
                               learning_rate=1e-3, warmup_steps=100, eval_every=200, checkpoint_every=500)


PRESETS = {
    "classifier_tiny": classifier_tiny,
    "classifier_128_cpu": classifier_128_cpu,
    "classifier_256": classifier_256,
}
