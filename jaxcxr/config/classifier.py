"""Configs of the binary classifier, of classifier ensembles and of classifier training; their presets.

`INPUT_MODES`, `TASKS`, `IMBALANCE`, `ClassifierConfig` (`jaxcxr.models.classifier`),
`ClassifierEnsembleConfig` (`jaxcxr.models.ensemble`), `EncoderClassifierConfig`
(`jaxcxr.models.encoder_classifier`: a linear probe on the CXR encoder), `ClassifierTrainConfig`
(`jaxcxr.train.classifier`) and the presets (`PRESETS`): `classifier_tiny`, `classifier_64_cpu`,
`classifier_96_cpu`, `classifier_128_cpu`, `classifier_256`, `classifier_encoder_cpu` (fine-tuning
a probe on the CXR encoder); each but `classifier_tiny` takes the task ("abnormal" by default).
"""

from __future__ import annotations

import dataclasses

from jaxcxr.config.common import DTYPES, AugmentConfig, Family, check_choice
from jaxcxr.config.cxr_encoder import CXREncoderConfig, cxr_encoder_cpu

__all__ = ["FAMILY", "IMBALANCE", "INPUT_MODES", "POOLED_STAGES", "PRESETS", "TASKS", "ClassifierConfig",
           "ClassifierEnsembleConfig", "ClassifierTrainConfig", "EncoderClassifierConfig", "classifier_128_cpu",
           "classifier_256", "classifier_64_cpu", "classifier_96_cpu", "classifier_encoder_cpu", "classifier_tiny"]


# Inputs of the classifier (`ClassifierConfig.input_mode`).
INPUT_MODES: tuple[str, ...] = ("full", "halves")
# Tasks of the classifier (`ClassifierTrainConfig.task`).
TASKS: tuple[str, ...] = ("abnormal", "sex")
# Class-imbalance handling of classifier training (`ClassifierTrainConfig.imbalance`; the latent
# classifiers' choices are `jaxcxr.prefilter.IMBALANCE`).
IMBALANCE: tuple[str, ...] = ("none", "weighted_bce", "focal", "oversample")
# The CXR encoder's stages whose patch features an `EncoderClassifierConfig` pools by default, and
# `jaxcxr.encoder_probes` probes (the first stage is too local to pool well).
POOLED_STAGES: tuple[str, ...] = ("stage2", "stage3", "stage4")


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
    check_choice("ClassifierConfig.input_mode", self.input_mode, INPUT_MODES)
    check_choice("ClassifierConfig.dtype", self.dtype, DTYPES)
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
class ClassifierEnsembleConfig:
  """A soft vote of `members` classifiers of one architecture and a pixel logistic regression.

  The ensemble's logit is the mean of its voters' logits: each member network's, and the
  pixel model's (a linear function of the input's `pixel_size` x `pixel_size` block
  means), when `pixel_size` > 0.
  """

  # The architecture every member shares (one resolution, so their feature maps align for Grad-CAM).
  member: ClassifierConfig = ClassifierConfig()
  # Number of member networks (trained with different seeds).
  members: int = 3
  # Side of the block-mean image of the pixel logistic regression; 0: no pixel voter. It must be
  # a multiple of the members' feature-map side and divide their input side.
  pixel_size: int = 32
  # Compute dtype of the members' convolutions ("float32" or "bfloat16").
  dtype: str = "float32"

  def __post_init__(self):
    check_choice("ClassifierEnsembleConfig.dtype", self.dtype, DTYPES)
    if self.members < 1:
      raise ValueError(f"ClassifierEnsembleConfig.members: expected at least 1, got {self.members}")
    r = self.member.resolution
    if self.pixel_size < 0 or (self.pixel_size and r % self.pixel_size):
      raise ValueError(f"ClassifierEnsembleConfig.pixel_size={self.pixel_size}: expected 0 or a divisor of the "
                       f"members' input side {r}")

  @property
  def resolution(self) -> int:
    return self.member.resolution


@dataclasses.dataclass(frozen=True)
class EncoderClassifierConfig:
  """A linear probe on the CXR encoder's pooled stage features, as a classifier.

  The logit is a linear function of the mean and the maximum over positions of each stage in
  `pooled_stages` (`jaxcxr.models.encoder_classifier.pooled_features`); the encoder's
  weights are those it was pretrained with (the probe does not change them).
  """

  # The encoder's architecture (its input side is the classifier's).
  encoder: CXREncoderConfig = CXREncoderConfig()
  # The stages whose features are pooled, in the encoder's order; the first is the feature map Grad-CAM weighs.
  pooled_stages: tuple[str, ...] = POOLED_STAGES
  # Compute dtype of the encoder's convolutions ("float32" or "bfloat16").
  dtype: str = "float32"

  def __post_init__(self):
    check_choice("EncoderClassifierConfig.dtype", self.dtype, DTYPES)
    known = [f"stage{s + 1}" for s in range(len(self.encoder.channels))]
    if not self.pooled_stages or any(s not in known for s in self.pooled_stages) or \
        list(self.pooled_stages) != sorted(set(self.pooled_stages), key=known.index):
      raise ValueError(f"EncoderClassifierConfig.pooled_stages={self.pooled_stages}: expected distinct stages of "
                       f"the encoder, in its order, from {known}")

  @property
  def resolution(self) -> int:
    return self.encoder.resolution

  @property
  def features(self) -> int:
    """Number of pooled features: a mean and a maximum per channel of each pooled stage."""
    return 2 * sum(self.encoder.channels[int(s[len("stage"):]) - 1] for s in self.pooled_stages)


@dataclasses.dataclass(frozen=True)
class ClassifierTrainConfig:
  """Training of the classifier: task, model, loss, optimiser, augmentation, split and loop."""

  # The classifier: the ResNet (`ClassifierConfig`), or a probe on the CXR encoder
  # (`EncoderClassifierConfig`), fine-tuned from a saved one (`pretrained`).
  model: ClassifierConfig | EncoderClassifierConfig = ClassifierConfig()
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
  # Mixup (Zhang et al. 2018): each batch is blended with a shuffled copy of itself with a weight
  # lam ~ Beta(mixup_alpha, mixup_alpha), and the loss is the same blend of the two labels' losses.
  # 0 disables it.
  mixup_alpha: float = 0.0
  # Local jaxcxr classifier checkpoint (a `save_model` directory) that initialises this one: a
  # ResNet takes its backbone (the head is re-initialised); an encoder classifier takes it whole,
  # encoder and probe head (`jaxcxr train encoder-classifier`'s output; required for one). None
  # trains a ResNet from scratch.
  pretrained: str | None = None
  # Early backbone parts kept frozen: k >= 1 freezes the stem and stages 1..k (of the ResNet, or
  # of the encoder); all stages trains the head only. 0 trains everything.
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
    check_choice("ClassifierTrainConfig.task", self.task, TASKS)
    check_choice("ClassifierTrainConfig.imbalance", self.imbalance, IMBALANCE)
    if self.focal_alpha is not None and not 0.0 < self.focal_alpha < 1.0:
      raise ValueError(f"ClassifierTrainConfig.focal_alpha: expected None or a value in (0, 1), "
                       f"got {self.focal_alpha}")
    if self.focal_gamma < 0:
      raise ValueError(f"ClassifierTrainConfig.focal_gamma: expected >= 0, got {self.focal_gamma}")
    stages = len(self.model.encoder.channels if isinstance(self.model, EncoderClassifierConfig) else self.model.stages)
    if not 0 <= self.freeze_stages <= stages:
      raise ValueError(f"ClassifierTrainConfig.freeze_stages: expected 0..{stages}, got {self.freeze_stages}")
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
    if self.mixup_alpha < 0:
      raise ValueError(f"ClassifierTrainConfig.mixup_alpha: expected >= 0 (0 disables mixup), got {self.mixup_alpha}")

  @property
  def resolution(self) -> int:
    return self.model.resolution


def classifier_tiny(resolution: int = 16, *, input_mode: str = "full", imbalance: str = "none",
                    augment: bool = False) -> ClassifierTrainConfig:
  """One tiny stage (a stride-2 3x3 stem and one 4-channel block) at 16x16 for unit tests; learns nothing.

      python -c "from jaxcxr import config; print(config.classifier_tiny())"

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

      jaxcxr train classifier --task abnormal --preset classifier_128_cpu \\
        --data $JAXCXR_DATA/nih_cxr14_subset_256.npz --report-test --out runs/cls128

  Expected: 500 steps of batch 32 with augmentation, about 1 s/step on 2 CPU cores
  (measured 0.93-1.19 s/step on a shared 2-core machine) after about a minute of
  compile (the 5-step scan is unrolled, see `scan_unroll`): about 16,000 augmented
  images, some 29 epochs of the ~560-image training part of the NIH subset. Measured
  (shipped `classifier_abnormal_128`): validation AUC 0.878, test 0.858 for abnormal;
  for sex, validation 0.718 (replaced by `classifier_64_cpu`). The pixel
  logistic-regression baseline (`pixel_logreg_baseline`, trained on train + validation)
  reaches 0.895 abnormal and 0.831 sex on the same test parts. Channels (32, 64, 128, 256)
  cost about 4x the time per step.
  """
  model = ClassifierConfig(resolution=128, stages=(2, 2, 2, 2), channels=(16, 32, 64, 128))
  return ClassifierTrainConfig(model=model, task=task, batch_size=32, steps=500, steps_per_call=5, scan_unroll=5,
                               learning_rate=2e-3, warmup_steps=25, eval_every=50, checkpoint_every=100)


def classifier_64_cpu(task: str = "abnormal") -> ClassifierTrainConfig:
  """The `classifier_128_cpu` network at 64x64 for 2,000 steps: 2 CPU cores, ~5 (abnormal) to ~11 (sex) minutes.

      jaxcxr train classifier --task sex --preset classifier_64_cpu --data $JAXCXR_DATA/nih_cxr14_subset_256.npz \\
        --report-test --out runs/cls64

  Expected: 0.12-0.30 s/step on a shared 2-core machine (64x64 is 8x cheaper per step than
  128x128 here, more than the 4x in pixels). Measured validation AUC: sex 0.829 (best at step
  1,800; the shipped `classifier_sex_64`, test 0.781), abnormal 0.915 (best at step 1,100; not
  significantly better than `classifier_abnormal_128` on validation, DeLong p = 0.20, so not
  shipped). Both memorise the 555 training images (final training loss < 0.1).
  """
  return dataclasses.replace(classifier_128_cpu(task), model=ClassifierConfig(resolution=64, stages=(2, 2, 2, 2),
                                                                              channels=(16, 32, 64, 128)),
                             steps=2000, warmup_steps=50, eval_every=100, checkpoint_every=200)


def classifier_96_cpu(task: str = "abnormal") -> ClassifierTrainConfig:
  """The `classifier_128_cpu` network at 96x96 for 1,200 steps: about 4 minutes on one CPU core.

      jaxcxr train classifier --task abnormal --preset classifier_96_cpu --out runs/cls96   # data: both NIH archives

  Expected: about 200 images/s on one core of the project's 2-core machine (1,200 steps in
  206-244 s). The members of the shipped `classifier_abnormal_ensemble_96`; measured
  validation AUC 0.873 and 0.869 for seeds 0 and 1 on both NIH archives (pneumonia as
  abnormal), best steps 400 and 900. The feature map is 3x3.
  """
  return dataclasses.replace(classifier_64_cpu(task), model=ClassifierConfig(resolution=96, stages=(2, 2, 2, 2),
                                                                             channels=(16, 32, 64, 128)),
                             steps=1200, eval_every=100, checkpoint_every=200)


def classifier_256(task: str = "abnormal") -> ClassifierTrainConfig:
  """ResNet-18 (channels 64..512) at 256x256 for a GPU.

      jaxcxr train classifier --task abnormal --preset classifier_256 --data $JAXCXR_DATA/nih_cxr14_subset_256.npz \\
        --report-test --out runs/cls256

  Expected: 3,000 steps of batch 64 in bfloat16 within a few minutes on one H100;
  abnormal test AUC above the 128x128 CPU model's.
  """
  model = ClassifierConfig(resolution=256, stages=(2, 2, 2, 2), channels=(64, 128, 256, 512),
                           norm_groups=32, dtype="bfloat16")
  return ClassifierTrainConfig(model=model, task=task, batch_size=64, steps=3000, steps_per_call=100,
                               learning_rate=1e-3, warmup_steps=100, eval_every=200, checkpoint_every=500)


def classifier_encoder_cpu(task: str = "abnormal") -> ClassifierTrainConfig:
  """Fine-tuning of a probe on the CXR encoder (`cxr_encoder_cpu`'s layout), 600 steps on one CPU core.

      jaxcxr train encoder-classifier --task sex --out runs/probe_sex
      jaxcxr train classifier --task sex --preset classifier_encoder_cpu --pretrained runs/probe_sex/classifier \
        --out runs/classifier_sex_encoder_ft

  The encoder and its probe head (`--pretrained`, required) train together with AdamW at a low
  peak rate (1e-4, the rate at which `scripts/encoder_finetune.py` raised the sex validation AUC
  from the probe's 0.83 to 0.88 in 200 steps; pneumonia overfitted there), batch 32, the
  classifier trainer's augmentation, and the step kept by validation AUC every 50 steps. About
  1.4 s per step on one core of the 2-core machine (measured with the script).
  """
  model = EncoderClassifierConfig(encoder=cxr_encoder_cpu().encoder)
  return ClassifierTrainConfig(model=model, task=task, batch_size=32, steps=600, steps_per_call=2, scan_unroll=2,
                               learning_rate=1e-4, warmup_steps=25, eval_every=50, checkpoint_every=100)


# The classifier training presets by name, each callable without arguments.
PRESETS = {
    "classifier_tiny": classifier_tiny,
    "classifier_64_cpu": classifier_64_cpu,
    "classifier_96_cpu": classifier_96_cpu,
    "classifier_encoder_cpu": classifier_encoder_cpu,
    "classifier_128_cpu": classifier_128_cpu,
    "classifier_256": classifier_256,
}

FAMILY = Family(ClassifierTrainConfig, PRESETS, "the abnormal or sex classifier (a ResNet-18-like network)")
