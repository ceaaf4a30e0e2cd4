"""Frozen config dataclasses of every model and trainer, their constants, and the named presets.

One module for all configs (DESIGN.md section 1, STYLE.md section 4). Configs are plain
frozen dataclasses (FX gemma `TransformerConfig` style) with a one-line comment above
each field: they hash, so they serve as jit static arguments, and they round-trip
through JSON with `to_dict` / `from_dict`; checkpoints store them next to the weights and
loaders rebuild them from the config class. This module imports no model, trainer, jax
or flax code: models and trainers import it, never the reverse.

Sections, in order:

* serialisation: `to_dict`, `from_dict`.
* shared: `DTYPES`, `check_loop_fields` (the loop fields of every train config),
  `AugmentConfig` (per-example augmentation, `jaxcxr.data.augment`), `LIGHT_AUGMENT`.
* GAN: `KNOWN_CONDITIONS`, `AGE_CENTER`, `AGE_SCALE`, `RESOLUTIONS`, `stage_channels`, `UPSAMPLINGS`,
  `UpsamplerConfig`, `GeneratorConfig`, `DiscriminatorConfig`, `GanTrainConfig` (`jaxcxr.train.gan`),
  `UpsamplerTrainConfig` (`jaxcxr.train.upsampler`: the super-resolution stage of a cascade).
* U-Net: `NUM_CLASSES`, `UNetConfig`, `SEG_AUGMENT`, `SegTrainConfig` (`jaxcxr.train.segmentation`).
* classifier: `INPUT_MODES`, `TASKS`, `IMBALANCE`, `ClassifierConfig`, `ClassifierTrainConfig`
  (`jaxcxr.train.classifier`).
* f-AnoGAN encoder: `EncoderConfig`, `FanoganTrainConfig` (`jaxcxr.train.fanogan`).
* HealthyGAN translator and critic: `TranslatorConfig`, `CriticConfig`, `HealthyganTrainConfig`
  (`jaxcxr.train.healthygan`).
* latent classifier (the pre-filter's): `LatentClassifierConfig` (`jaxcxr.prefilter`).
* registry: `PRESETS`.

Presets are functions whose docstrings give the run command and the expected result
(big_vision configs style). `PRESETS` maps each training preset's name to its function
(callable without arguments): `gan_tiny`, `gan_64_cpu`, `gan_64_normal_cpu`, `gan_64_resize_cpu`,
`gan_64_resize_normal_cpu` (the bases of the shipped 256x256 cascades), `gan_64_wide_cpu`,
`gan_256_single_cpu` (ablation arms), `gan_128`, `gan_256`;
`upsampler_tiny`, `upsampler_x4_cpu`, `upsampler_x4_noiseless_cpu`; `unet_tiny`, `unet_128_cpu`, `unet_256`; `classifier_tiny`,
`classifier_64_cpu`, `classifier_128_cpu`, `classifier_256`; `fanogan_tiny`, `fanogan_64_cpu`;
`healthygan_tiny`, `healthygan_64_cpu`. The latent classifiers have their own registry,
`LATENT_PRESETS` (`logreg`, `mlp1` .. `mlp4`, `deep`: the names that `jaxcxr latents fit
--model` takes and that saved pre-filters record; each takes `latent_dim`), built from
`latent_logreg`, `latent_mlp` and `latent_deep`.

Not here: the runtime options of one function stay next to it, since they parametrise a
call rather than build a model or a training run: `jaxcxr.scoring.ScoringConfig` and
`jaxcxr.scoring.Calibration`, `jaxcxr.anomaly.LatentSearchConfig`,
`jaxcxr.prefilter.NudgeConfig`.

Example:
  >>> from jaxcxr import config
  >>> cfg = config.PRESETS["gan_tiny"]()
  >>> config.from_dict(config.GanTrainConfig, config.to_dict(cfg)) == cfg
  True
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


# ----------------------------------------------------------------------------- serialisation


def to_dict(config: Any) -> dict[str, Any]:
  """Converts a (nested) config dataclass to JSON-ready builtins (tuples become lists)."""
  if not dataclasses.is_dataclass(config) or isinstance(config, type):
    raise TypeError(f"expected a config dataclass instance, got {type(config).__name__}")

  def convert(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
      return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
      return [convert(v) for v in value]
    return value

  return convert(config)


def from_dict(config_type: type[T], data: dict[str, Any]) -> T:
  """Builds `config_type` from `to_dict` output; nested dataclasses and tuples are restored.

  Raises:
    ValueError: for unknown or missing fields, naming them.
  """
  if not isinstance(data, dict):
    raise ValueError(f"{config_type.__name__}: expected a JSON object, got {type(data).__name__}")
  hints = typing.get_type_hints(config_type)
  names = {f.name for f in dataclasses.fields(config_type)}
  unknown = sorted(set(data) - names)
  if unknown:
    raise ValueError(f"{config_type.__name__}: unknown field(s) {unknown}")
  kwargs = {}
  for name, value in data.items():
    kwargs[name] = _restore(hints[name], value)
  try:
    return config_type(**kwargs)
  except TypeError as e:
    raise ValueError(f"{config_type.__name__}: {e}") from None


def _restore(hint: Any, value: Any) -> Any:
  origin = typing.get_origin(hint)
  if origin in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if value is None:
      return None
    return _restore(args[0], value) if len(args) == 1 else value
  if dataclasses.is_dataclass(hint):
    return from_dict(hint, value)
  if origin is tuple and isinstance(value, list):
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_restore(args[0], v) for v in value)
    return tuple(_restore(a, v) for a, v in zip(args, value))
  return value


# ----------------------------------------------------------------------------- shared


# Compute dtypes of every model ("float32" or "bfloat16"); parameters stay float32.
DTYPES: tuple[str, ...] = ("float32", "bfloat16")


def check_loop_fields(config, name: str) -> None:
  """Checks the loop fields of a train config (those it has among the usual ones).

  Positive integers: batch_size, steps, steps_per_call, checkpoint_every, max_to_keep,
  samples, samples_per_group. Non-negative multiples of steps_per_call: steps,
  checkpoint_every, sample_every, eval_every.

  Raises:
    ValueError: naming `name` and the field.
  """
  for field in ("batch_size", "steps", "steps_per_call", "checkpoint_every", "max_to_keep", "samples",
                "samples_per_group"):
    if hasattr(config, field) and getattr(config, field) <= 0:
      raise ValueError(f"{name}.{field}: expected a positive integer, got {getattr(config, field)}")
  for field in ("steps", "checkpoint_every", "sample_every", "eval_every"):
    value = getattr(config, field, 0)
    if value < 0 or value % config.steps_per_call:
      raise ValueError(f"{name}.{field}={value}: expected a non-negative multiple of "
                       f"steps_per_call={config.steps_per_call}")


def _check_choice(field: str, value: Any, choices: tuple[Any, ...]) -> None:
  """Raises ValueError naming `field` and the choices unless `value` is one of `choices`."""
  if value not in choices:
    raise ValueError(f"{field}: expected one of {choices}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Per-example random augmentation (see `jaxcxr.data.augment`). Ranges are symmetric."""

  # Max rotation in degrees (uniform in [-d, d]).
  rotation_deg: float = 5.0
  # Max translation as a fraction of the image side.
  translation: float = 0.04
  # Max relative zoom (scale uniform in [1-s, 1+s]).
  scale: float = 0.05
  # Max brightness shift, in units of the [0, 1] range.
  brightness: float = 0.05
  # Max relative contrast change (factor uniform in [1-c, 1+c]).
  contrast: float = 0.1
  # Max Gaussian blur sigma in pixels (sigma uniform in [0, b]); 0 disables blur.
  blur_sigma: float = 0.8
  # Probability of a horizontal flip. Off by default: a flip moves the heart to the other side.
  hflip_prob: float = 0.0


# Light augmentation of the training images (f-AnoGAN encoder, HealthyGAN): small geometry and
# intensity changes, no blur, no flip.
LIGHT_AUGMENT = AugmentConfig(rotation_deg=3.0, translation=0.03, scale=0.03, brightness=0.03, contrast=0.05,
                              blur_sigma=0.0, hflip_prob=0.0)


# ----------------------------------------------------------------------------- GAN


# Conditioning inputs the models know, in the order they appear in a condition vector.
KNOWN_CONDITIONS: tuple[str, ...] = ("sex", "age", "label")
# Age normalisation of the `age` condition: (age - AGE_CENTER) / AGE_SCALE.
AGE_CENTER = 45.0
AGE_SCALE = 20.0
# Image sides of the GAN-family models (generator, discriminator, f-AnoGAN encoder, HealthyGAN).
RESOLUTIONS: tuple[int, ...] = (32, 64, 128, 256)


def _check_common(name: str, resolution: int, conditions: tuple[str, ...], dtype: str) -> None:
  _check_choice(f"{name}.resolution", resolution, RESOLUTIONS)
  if not conditions or len(set(conditions)) != len(conditions) or not set(conditions) <= set(KNOWN_CONDITIONS):
    raise ValueError(f"{name}.conditions: expected distinct names from {KNOWN_CONDITIONS}, got {conditions}")
  if tuple(c for c in KNOWN_CONDITIONS if c in conditions) != tuple(conditions):
    raise ValueError(f"{name}.conditions: expected the order {KNOWN_CONDITIONS}, got {conditions}")
  _check_choice(f"{name}.dtype", dtype, DTYPES)


def stage_channels(resolution: int, base_channels: int, max_channels: int) -> tuple[int, ...]:
  """Channels per stage from 4x4 up to `resolution`: min(max, base * resolution / side)."""
  n = int(math.log2(resolution // 4))
  return tuple(min(max_channels, base_channels * 2 ** (n - i)) for i in range(n + 1))


# Up-sampling of the generator's blocks: "subpixel" (3x3 conv to 4c channels + depth-to-space; the
# 64x64 GANs of sessions 1-3: each of the four output phases has its own kernel, which drift apart
# into a checkerboard) or "resize" (bilinear 2x, then a 3x3 conv: every output pixel is made by the
# same weights; tests/test_cascade.py measures the 2x2 pattern of both with random weights).
UPSAMPLINGS: tuple[str, ...] = ("subpixel", "resize")


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
    _check_choice("UpsamplerConfig.scale", self.scale, (2, 4))
    if len(self.stage_channels) != int(math.log2(self.scale)) or min(self.stage_channels) <= 0:
      raise ValueError(f"UpsamplerConfig.stage_channels: expected {int(math.log2(self.scale))} positive "
                       f"channel counts for scale {self.scale}, got {self.stage_channels}")
    if self.input_channels <= 0 or self.input_blocks < 0:
      raise ValueError(f"UpsamplerConfig: bad sizes input_channels={self.input_channels}, "
                       f"input_blocks={self.input_blocks}")
    _check_choice("UpsamplerConfig.dtype", self.dtype, DTYPES)


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
  """Conditional generator: latent z and (sex, age, label) -> (H, W, 1) image in [-1, 1]."""

  # Output side in pixels (32, 64, 128 or 256); 4x4 start, one sub-pixel block per doubling.
  resolution: int = 64
  # Size of the latent vector z.
  latent_dim: int = 128
  # Channels at the output resolution; doubled per halving of the side, capped at max_channels.
  base_channels: int = 32
  # Channel cap of the low-resolution stages.
  max_channels: int = 256
  # Conditioning inputs, in this order; ("sex", "age") for a normal-only GAN.
  conditions: tuple[str, ...] = KNOWN_CONDITIONS
  # Width of the learned embedding of the condition vector.
  cond_embed_dim: int = 32
  # Groups of the GroupNorm layers (batch-independent; capped by the channel count).
  norm_groups: int = 8
  # Compute dtype of convolutions ("float32" or "bfloat16"); parameters stay float32.
  dtype: str = "float32"
  # Up-sampling of the blocks, one of UPSAMPLINGS.
  upsampling: str = "subpixel"
  # A learned super-resolution stage after the blocks (a cascade): the blocks then make
  # resolution / upsampler.scale pixels, and the stage the rest. None: single stage.
  upsampler: UpsamplerConfig | None = None

  def __post_init__(self):
    _check_common("GeneratorConfig", self.resolution, self.conditions, self.dtype)
    if self.latent_dim <= 0 or self.base_channels <= 0 or self.max_channels < self.base_channels:
      raise ValueError(f"GeneratorConfig: bad sizes latent_dim={self.latent_dim}, "
                       f"base_channels={self.base_channels}, max_channels={self.max_channels}")
    _check_choice("GeneratorConfig.upsampling", self.upsampling, UPSAMPLINGS)
    if self.upsampler is not None and self.base_resolution not in RESOLUTIONS:
      raise ValueError(f"GeneratorConfig: resolution {self.resolution} with a x{self.upsampler.scale} "
                       f"upsampler leaves a {self.base_resolution}x{self.base_resolution} base; expected "
                       f"one of {RESOLUTIONS}")

  @property
  def base_resolution(self) -> int:
    """Side of the image the blocks make: `resolution`, or resolution / scale with an upsampler."""
    return self.resolution if self.upsampler is None else self.resolution // self.upsampler.scale

  @property
  def base(self) -> GeneratorConfig:
    """The config of the blocks alone (the low-resolution GAN of a cascade)."""
    return dataclasses.replace(self, resolution=self.base_resolution, upsampler=None)

  def with_upsampler(self, upsampler: UpsamplerConfig) -> GeneratorConfig:
    """The cascade of this (single-stage) generator followed by `upsampler`."""
    if self.upsampler is not None:
      raise ValueError("GeneratorConfig.with_upsampler: this generator already has an upsampler")
    return dataclasses.replace(self, resolution=self.resolution * upsampler.scale, upsampler=upsampler)

  @property
  def channels(self) -> tuple[int, ...]:
    """Channels per stage of the blocks, 4x4 first."""
    return stage_channels(self.base_resolution, self.base_channels, self.max_channels)


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
  """Projection discriminator with spectral norm: (H, W, 1) image and condition -> logit."""

  # Input side in pixels (32, 64, 128 or 256); one residual down block per halving to 4x4.
  resolution: int = 64
  # Channels at the input resolution; doubled per halving of the side, capped at max_channels.
  base_channels: int = 32
  # Channel cap of the low-resolution stages.
  max_channels: int = 256
  # Conditioning inputs (must match the generator's).
  conditions: tuple[str, ...] = KNOWN_CONDITIONS
  # Slope of the leaky ReLUs.
  negative_slope: float = 0.2
  # Compute dtype of convolutions ("float32" or "bfloat16"); parameters stay float32.
  dtype: str = "float32"

  def __post_init__(self):
    _check_common("DiscriminatorConfig", self.resolution, self.conditions, self.dtype)
    if self.base_channels <= 0 or self.max_channels < self.base_channels:
      raise ValueError(f"DiscriminatorConfig: bad sizes base_channels={self.base_channels}, "
                       f"max_channels={self.max_channels}")

  @property
  def channels(self) -> tuple[int, ...]:
    """Channels per stage, input resolution first, 4x4 last."""
    return stage_channels(self.resolution, self.base_channels, self.max_channels)[::-1]


@dataclasses.dataclass(frozen=True)
class GanTrainConfig:
  """Training of the conditional GAN: models, losses, optimisers, augmentation and the loop."""

  # The generator.
  generator: GeneratorConfig = GeneratorConfig()
  # The discriminator.
  discriminator: DiscriminatorConfig = DiscriminatorConfig()
  # Images per step (D and G each see one batch).
  batch_size: int = 32
  # Total optimisation steps (one D and one G update each).
  steps: int = 3000
  # Steps per jitted call, run with lax.scan (host sync, progress and checkpoints between calls).
  steps_per_call: int = 10
  # Adam learning rate of the generator.
  g_learning_rate: float = 2e-4
  # Adam learning rate of the discriminator.
  d_learning_rate: float = 2e-4
  # Adam beta1 (0 as in StyleGAN2/BigGAN: momentum hurts adversarial games).
  adam_b1: float = 0.0
  # Adam beta2.
  adam_b2: float = 0.99
  # R1 penalty weight gamma: gamma/2 * E||grad_x D(x)||^2 on (augmented) reals.
  r1_gamma: float = 1.0
  # Lazy R1: penalty every k steps with weight k * gamma (StyleGAN2); 1 = every step.
  r1_every: int = 4
  # EMA decay of the generator weights (with a (1+t)/(10+t) warm-up).
  ema_decay: float = 0.999
  # DiffAugment policies applied to reals and fakes before D: "translation", "cutout", "color".
  diffaug: tuple[str, ...] = ("translation", "cutout", "color")
  # Max translation as a fraction of the side.
  diffaug_translation: float = 0.125
  # Cutout square side as a fraction of the side.
  diffaug_cutout: float = 0.5
  # Adaptive augmentation (Karras et al. 2020, ADA): each image is augmented with probability
  # p, raised when D overfits (E[sign D(real)] > ada_target) and lowered otherwise. None: always
  # augment (p = 1, plain DiffAugment). Measured on gan_64_cpu: with p = 1, D stayed at chance
  # (loss 2 ln 2) for all of a 1,200-step run, even against fixed blurry fakes.
  ada_target: float | None = 0.6
  # Images over which p can move from 0 to 1 (StyleGAN2-ADA uses 500k; our runs see ~30k).
  ada_images: int = 5000
  # Compute dtype of G and D during training ("float32" or "bfloat16"); params and losses stay float32.
  compute_dtype: str = "float32"
  # Train on normal images (label 0) only; needs "label" absent from the conditions (AnoGAN use).
  normal_only: bool = False
  # Write a sample grid (six groups, normal label) every this many steps; 0 = only at the end.
  sample_every: int = 500
  # Samples per group in the grid.
  samples_per_group: int = 8
  # Save a training checkpoint every this many steps (and at the end).
  checkpoint_every: int = 500
  # Training checkpoints kept.
  max_to_keep: int = 3

  def __post_init__(self):
    g, d = self.generator, self.discriminator
    if g.resolution != d.resolution:
      raise ValueError(f"GanTrainConfig: generator resolution {g.resolution} != discriminator "
                       f"resolution {d.resolution}")
    if g.conditions != d.conditions:
      raise ValueError(f"GanTrainConfig: generator conditions {g.conditions} != discriminator "
                       f"conditions {d.conditions}")
    if self.normal_only and "label" in g.conditions:
      raise ValueError("GanTrainConfig: normal_only=True trains on one label, so 'label' cannot be a "
                       "condition; use conditions=('sex', 'age')")
    _check_choice("GanTrainConfig.compute_dtype", self.compute_dtype, DTYPES)
    unknown = set(self.diffaug) - {"translation", "cutout", "color"}
    if unknown:
      raise ValueError(f"GanTrainConfig.diffaug: unknown policies {sorted(unknown)}; "
                       "expected 'translation', 'cutout', 'color'")
    if self.ada_target is not None and not 0.0 < self.ada_target < 1.0:
      raise ValueError(f"GanTrainConfig.ada_target: expected None or a value in (0, 1), got {self.ada_target}")
    check_loop_fields(self, "GanTrainConfig")
    for name in ("r1_every", "ada_images"):
      if getattr(self, name) <= 0:
        raise ValueError(f"GanTrainConfig.{name}: expected a positive integer, got {getattr(self, name)}")

  @property
  def resolution(self) -> int:
    return self.generator.resolution

  @property
  def conditions(self) -> tuple[str, ...]:
    return self.generator.conditions


def _gan_models(resolution: int, g_base: int, g_max: int, d_base: int, d_max: int,
            conditions: tuple[str, ...]) -> dict:
  return {
      "generator": GeneratorConfig(resolution=resolution, base_channels=g_base, max_channels=g_max,
                                   conditions=conditions),
      "discriminator": DiscriminatorConfig(resolution=resolution, base_channels=d_base, max_channels=d_max,
                                           conditions=conditions),
  }


def gan_tiny(resolution: int = 32, *, conditions: tuple[str, ...] = KNOWN_CONDITIONS) -> GanTrainConfig:
  """A few channels at 32x32 for unit tests; learns nothing useful.

      python -c "from jaxcxr import config; print(config.gan_tiny())"

  Expected: the 2-step train call compiles in 30-60 s on a 2-core CPU (one
  compile serves every test) and gives finite losses.
  """
  return GanTrainConfig(
      generator=GeneratorConfig(resolution=resolution, latent_dim=128, base_channels=4, max_channels=8,
                                conditions=conditions, cond_embed_dim=8, norm_groups=2),
      discriminator=DiscriminatorConfig(resolution=resolution, base_channels=4, max_channels=8,
                                        conditions=conditions),
      batch_size=4, steps=4, steps_per_call=2, r1_every=2, sample_every=0, samples_per_group=2,
      checkpoint_every=2, max_to_keep=2)


def gan_64_cpu() -> GanTrainConfig:
  """64x64 conditional GAN sized for 2 CPU cores and about 25 minutes.

      python -c "from jaxcxr import config, data; from jaxcxr.train.gan import train_gan; \\
        train_gan(data.load('nih_cxr14_subset_256.npz'), config.gan_64_cpu(), 'runs/gan64')"

  G channels (128, 64, 32, 16, 8) from 4x4 to 64x64, 0.93M parameters; D (8, 16,
  32, 64, 128), 0.16M. Measured on this project's 2-core CPU worker (jax 0.10.2,
  shared with other jobs, load 2-5): 1-2.5 minutes of init and compile, then
  0.6-0.75 s per step of batch 16, so 2,000 steps take about 25 minutes. A
  400-step trial already showed chest outlines with two dark lung fields;
  expected at 2,000 steps: blurry but recognisable frontal chest radiographs,
  little per-group detail at this size and length.
  """
  return GanTrainConfig(**_gan_models(64, 8, 128, 8, 128, KNOWN_CONDITIONS),
                        batch_size=16, steps=2000, steps_per_call=20, r1_gamma=0.1, r1_every=4,
                        g_learning_rate=2.5e-4, d_learning_rate=2.5e-4, ema_decay=0.995,
                        sample_every=200, checkpoint_every=200)


def gan_128() -> GanTrainConfig:
  """128x128 conditional GAN for a GPU.

      python -c "from jaxcxr import config, data; from jaxcxr.train.gan import train_gan; \\
        train_gan(data.load('nih_cxr14_subset_256.npz'), config.gan_128(), 'runs/gan128')"

  G channels (512, 512, 256, 128, 64, 32), 22.7M parameters; D 7.5M; about 2.8
  TFLOP per step of batch 64 (80% of `gan_256`'s), bfloat16 compute. Not timed
  here (no GPU in the session that wrote it); it should fit 20,000 steps in a
  30-minute H100 slot if `gan_256` does. Expected: sharp lung fields and ribs,
  visible sex and age differences.
  """
  return GanTrainConfig(**_gan_models(128, 32, 512, 32, 512, KNOWN_CONDITIONS),
                        batch_size=64, steps=20000, steps_per_call=100, r1_gamma=0.2,
                        compute_dtype="bfloat16", ema_decay=0.999, sample_every=2000, checkpoint_every=2000)


def gan_256() -> GanTrainConfig:
  """256x256 conditional GAN for a GPU: about 20,000 steps of batch 64 in a 30-minute H100 slot.

      python -c "from jaxcxr import config, data; from jaxcxr.train.gan import train_gan; \\
        train_gan(data.load('nih_cxr14_subset_256.npz'), config.gan_256(), 'runs/gan256')"

  G channels (512, 512, 256, 128, 64, 32, 16), 22.8M parameters; D 7.5M; about
  3.4 TFLOP per step of batch 64, bfloat16 compute. Not timed here (no GPU in the
  session that wrote it): 20,000 steps in 30 minutes needs 11 steps/s; check the
  first minute's img/s and lower `steps` if it falls short. Expected: 256x256
  radiographs with ribs, clavicles and heart borders.
  """
  return GanTrainConfig(**_gan_models(256, 16, 512, 16, 512, KNOWN_CONDITIONS),
                        batch_size=64, steps=20000, steps_per_call=100, r1_gamma=0.5,
                        compute_dtype="bfloat16", ema_decay=0.999, sample_every=2000,
                        checkpoint_every=2000)


def gan_64_resize_cpu(*, conditions: tuple[str, ...] = KNOWN_CONDITIONS) -> GanTrainConfig:
  """`gan_64_cpu`'s widths with bilinear-then-convolve up-sampling (no sub-pixel checkerboard).

      jaxcxr train gan --preset gan_64_resize_cpu --out runs/gan64r   # data: both NIH archives

  G (128, 64, 32, 16, 8), D (8, 16, 32, 64, 128); about 0.75 s per step of batch 16 on
  one CPU core.
  """
  models = _gan_models(64, 8, 128, 8, 128, conditions)
  models["generator"] = dataclasses.replace(models["generator"], upsampling="resize")
  return dataclasses.replace(gan_64_cpu(), **models, steps=6000, normal_only="label" not in conditions)


def gan_64_resize_normal_cpu() -> GanTrainConfig:
  """`gan_64_resize_cpu` on normal images only, conditioned on sex and age (for AnoGAN)."""
  return gan_64_resize_cpu(conditions=("sex", "age"))


def gan_64_wide_cpu() -> GanTrainConfig:
  """An ablation arm: `gan_64_resize_cpu` with twice the channels at the two largest resolutions.

      jaxcxr train gan --data nih_cxr14_subset_256.npz,nih_cxr14_extra_256.npz \
        --preset gan_64_wide_cpu --out runs/gan64w

  Twice `gan_64_cpu`'s channels at the two largest resolutions (G (128, 128, 64, 32, 16),
  D (16, 32, 64, 128, 128)) and bilinear-then-convolve up-sampling (no per-phase kernels
  to drift into the checkerboard of the sub-pixel blocks).
  """
  models = _gan_models(64, 16, 128, 16, 128, KNOWN_CONDITIONS)
  models["generator"] = dataclasses.replace(models["generator"], upsampling="resize")
  return dataclasses.replace(gan_64_cpu(), **models, steps=6000)


def gan_256_single_cpu() -> GanTrainConfig:
  """A single-stage 256x256 GAN sized for 2 CPU cores (the ablation's one-stage arm).

  G (128, 128, 64, 32, 16, 8, 8) from 4x4 to 256x256 with resize-conv up-sampling,
  D (8, 8, 16, 32, 64, 128, 128); batch 8.
  """
  models = _gan_models(256, 8, 128, 8, 128, KNOWN_CONDITIONS)
  models["generator"] = dataclasses.replace(models["generator"], upsampling="resize")
  return GanTrainConfig(**models, batch_size=8, steps=6000, steps_per_call=10, r1_gamma=0.1, r1_every=4,
                        g_learning_rate=2.5e-4, d_learning_rate=2.5e-4, ema_decay=0.995,
                        sample_every=200, checkpoint_every=100)


def gan_64_normal_cpu() -> GanTrainConfig:
  """`gan_64_cpu` trained on normal images only, conditioned on sex and age (for AnoGAN scoring).

      python -c "from jaxcxr import config, data; from jaxcxr.train.gan import train_gan; \\
        train_gan(data.load('nih_cxr14_subset_256.npz'), config.gan_64_normal_cpu(), 'runs/gan64n')"

  Expected: as `gan_64_cpu` (half the images, so more repeats of each).
  """
  base = gan_64_cpu()
  return dataclasses.replace(base, **_gan_models(64, 8, 128, 8, 128, ("sex", "age")), normal_only=True)


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


# ----------------------------------------------------------------------------- U-Net (lung segmentation)


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
    _check_choice("UNetConfig.dtype", self.dtype, DTYPES)

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
  augmentation) and runs in 0.07 s; 30 steps on two images raise their Dice from 0.21 to
  0.88 (overfitting, not learning). The learning rate is nearly constant (`lr_decay_steps`
  1000), so runs of different `steps` share one compiled step.
  """
  return SegTrainConfig(
      unet=UNetConfig(resolution=resolution, channels=(8, 16, 32), norm_groups=4),
      batch_size=2, steps=8, steps_per_call=1, unroll=True, learning_rate=1e-2, warmup_steps=0,
      lr_decay_steps=1000, eval_every=4, eval_batch_size=4, checkpoint_every=4, max_to_keep=2)


def unet_128_cpu() -> SegTrainConfig:
  """128x128 lung U-Net (8..128 channels, 0.49M parameters) sized to train on 2 CPU cores in ~15 minutes.

      python -c "from jaxcxr import config, data; from jaxcxr.train import segmentation as s; \
        print(s.train_unet(data.load('covid_v7lungs_256.npz'), config.unet_128_cpu(), 'runs/unet128'))"

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

      python -c "from jaxcxr import config, data; from jaxcxr.train import segmentation as s; \
        print(s.train_unet(data.load('covid_v7lungs_256.npz'), config.unet_256_cpu(), 'runs/unet256'))"

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

      python -c "from jaxcxr import config, data; from jaxcxr.train import segmentation as s; \
        print(s.train_unet(data.load('covid_v7lungs_256.npz'), config.unet_256(), 'runs/unet256'))"

  Expected: 6,000 steps of batch 32 in under 10 minutes on one H100 (estimate from DESIGN.md
  section 10: ~13 U-Net training steps/s at batch 64 in fp32; not yet measured here);
  validation Dice above that of `unet_128_cpu`.
  """
  return SegTrainConfig(
      unet=UNetConfig(resolution=256, channels=(32, 64, 128, 256, 512), norm_groups=8, dtype="bfloat16"),
      batch_size=32, steps=6000, steps_per_call=100, learning_rate=1e-3, warmup_steps=200,
      eval_every=500, eval_batch_size=64, checkpoint_every=1000)


# ----------------------------------------------------------------------------- classifier


# Inputs of the classifier (`ClassifierConfig.input_mode`).
INPUT_MODES: tuple[str, ...] = ("full", "halves")
# Tasks of the classifier (`ClassifierTrainConfig.task`).
TASKS: tuple[str, ...] = ("abnormal", "sex")
# Class-imbalance handling of classifier training (`ClassifierTrainConfig.imbalance`; the latent
# classifiers' choices are `jaxcxr.prefilter.IMBALANCE`).
IMBALANCE: tuple[str, ...] = ("none", "weighted_bce", "focal", "oversample")


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
    _check_choice("ClassifierConfig.input_mode", self.input_mode, INPUT_MODES)
    _check_choice("ClassifierConfig.dtype", self.dtype, DTYPES)
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
    _check_choice("ClassifierEnsembleConfig.dtype", self.dtype, DTYPES)
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
  # Mixup (Zhang et al. 2018): each batch is blended with a shuffled copy of itself with a weight
  # lam ~ Beta(mixup_alpha, mixup_alpha), and the loss is the same blend of the two labels' losses.
  # 0 disables it.
  mixup_alpha: float = 0.0
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
    _check_choice("ClassifierTrainConfig.task", self.task, TASKS)
    _check_choice("ClassifierTrainConfig.imbalance", self.imbalance, IMBALANCE)
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

      python -c "from jaxcxr import config, data; \\
        from jaxcxr.train.classifier import train_classifier; \\
        print(train_classifier(data.load('nih_cxr14_subset_256.npz'), config.classifier_128_cpu(), 'runs/cls128'))"

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

      python -c "from jaxcxr import config, data; \\
        from jaxcxr.train.classifier import train_classifier; \\
        print(train_classifier(data.load('nih_cxr14_subset_256.npz'), config.classifier_64_cpu('sex'), 'runs/cls64'))"

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

      python -c "from jaxcxr import config, data; \\
        from jaxcxr.train.classifier import train_classifier; \\
        ds = data.keep_abnormal_finding(data.load('nih_cxr14_subset_256.npz,nih_cxr14_extra_256.npz')); \\
        print(train_classifier(ds, config.classifier_96_cpu(), 'runs/cls96', report_test=False))"

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

      python -c "from jaxcxr import config, data; \\
        from jaxcxr.train.classifier import train_classifier; \\
        print(train_classifier(data.load('nih_cxr14_subset_256.npz'), config.classifier_256(), 'runs/cls256'))"

  Expected: 3,000 steps of batch 64 in bfloat16 within a few minutes on one H100;
  abnormal test AUC above the 128x128 CPU model's.
  """
  model = ClassifierConfig(resolution=256, stages=(2, 2, 2, 2), channels=(64, 128, 256, 512),
                           norm_groups=32, dtype="bfloat16")
  return ClassifierTrainConfig(model=model, task=task, batch_size=64, steps=3000, steps_per_call=100,
                               learning_rate=1e-3, warmup_steps=100, eval_every=200, checkpoint_every=500)


# ----------------------------------------------------------------------------- f-AnoGAN encoder


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
    _check_choice("EncoderConfig.resolution", self.resolution, RESOLUTIONS)
    if self.latent_dim <= 0 or self.base_channels <= 0 or self.max_channels < self.base_channels:
      raise ValueError(f"EncoderConfig: bad sizes latent_dim={self.latent_dim}, "
                       f"base_channels={self.base_channels}, max_channels={self.max_channels}")
    if self.norm_groups <= 0:
      raise ValueError(f"EncoderConfig.norm_groups: expected a positive integer, got {self.norm_groups}")
    _check_choice("EncoderConfig.dtype", self.dtype, DTYPES)

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
    _check_choice("FanoganTrainConfig.compute_dtype", self.compute_dtype, DTYPES)
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

      python -c "from jaxcxr import config, data; from jaxcxr.train import fanogan; \\
        ds = data.load('nih_cxr14_subset_256.npz'); ds = ds.subset(data.standard_split(ds)['train']); \\
        fanogan.train_fanogan(ds, 'checkpoints/gan_64_normal', config.fanogan_64_cpu(), 'runs/fanogan_64')"

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


# ----------------------------------------------------------------------------- HealthyGAN translator and critic


def _check_patch_levels(name: str, resolution: int, num_down: int, dtype: str) -> None:
  _check_choice(f"{name}.resolution", resolution, RESOLUTIONS)
  if num_down < 1 or resolution % (2 ** num_down) or resolution // (2 ** num_down) < 2:
    raise ValueError(f"{name}.num_down: expected 1 <= num_down with resolution / 2**num_down >= 2, got "
                     f"num_down={num_down} at resolution {resolution}")
  _check_choice(f"{name}.dtype", dtype, DTYPES)


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
    _check_choice("HealthyganTrainConfig.compute_dtype", self.compute_dtype, DTYPES)
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

      python -c "from jaxcxr import config, data; from jaxcxr.train import healthygan; \\
        ds = data.load('nih_cxr14_subset_256.npz'); ds = ds.subset(data.standard_split(ds)['train']); \\
        healthygan.train_healthygan(ds, config.healthygan_64_cpu(), 'runs/healthygan_64')"

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


# ----------------------------------------------------------------------------- latent classifier (pre-filter)


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


# ----------------------------------------------------------------------------- base-image score predictor


# The post-filter measures a `ScorePredictor` predicts: enough to rebuild the five scores at any
# strictness (`jaxcxr.scoring.score_from_measures`; the lung areas only decide "any lung").
PREDICTED_MEASURES: tuple[str, ...] = ("shape", "symmetry", "log_ratio", "abnormal_logit", "maxheat")


@dataclasses.dataclass(frozen=True)
class ScorePredictorConfig:
  """CNN from a cascade generator's base image to the post-filter's raw measures.

  (B, resolution, resolution, 1) in [-1, 1] -> (B, len(measures)): a 3x3 stem at full size, then
  per level 2x2 average pooling, a 3x3 convolution, GroupNorm and SiLU (then a 1x1 widening to
  the next level's channels), global mean pooling and a linear head. Predictions are in the measures' own units (the model keeps their training mean
  and standard deviation, and the residual standard deviation measured on validation latents).
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
  """The base-image predictor of the shipped 64 -> 256 cascades (0.1M parameters).

      python -c "from jaxcxr import config; print(config.score_predictor_64())"
  """
  return ScorePredictorConfig()


# ----------------------------------------------------------------------------- registry


# Every training preset by name, each callable without arguments; `jaxcxr train gan --preset NAME`
# takes the GAN ones. The latent classifiers' presets are `LATENT_PRESETS`.
PRESETS = {
    "gan_tiny": gan_tiny,
    "gan_64_cpu": gan_64_cpu,
    "gan_64_normal_cpu": gan_64_normal_cpu,
    "gan_128": gan_128,
    "gan_256": gan_256,
    "gan_64_resize_cpu": gan_64_resize_cpu,
    "gan_64_resize_normal_cpu": gan_64_resize_normal_cpu,
    "gan_64_wide_cpu": gan_64_wide_cpu,
    "gan_256_single_cpu": gan_256_single_cpu,
    "upsampler_tiny": upsampler_tiny,
    "upsampler_x4_cpu": upsampler_x4_cpu,
    "upsampler_x4_noiseless_cpu": upsampler_x4_noiseless_cpu,
    "upsampler_x4_generated_cpu": upsampler_x4_generated_cpu,
    "unet_tiny": unet_tiny,
    "unet_128_cpu": unet_128_cpu,
    "unet_256_cpu": unet_256_cpu,
    "unet_256": unet_256,
    "classifier_tiny": classifier_tiny,
    "classifier_64_cpu": classifier_64_cpu,
    "classifier_96_cpu": classifier_96_cpu,
    "classifier_128_cpu": classifier_128_cpu,
    "classifier_256": classifier_256,
    "fanogan_tiny": fanogan_tiny,
    "fanogan_64_cpu": fanogan_64_cpu,
    "healthygan_tiny": healthygan_tiny,
    "healthygan_64_cpu": healthygan_64_cpu,
}
