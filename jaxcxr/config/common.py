"""Pieces shared by the config families: dtypes, conditions, resolutions, checks, augmentation.

* `DTYPES`, the compute dtypes of every model; `check_choice` and `check_loop_fields` (the
  loop fields of every train config), the checks the families' `__post_init__` use.
* `AugmentConfig` (per-example augmentation, `jaxcxr.data.augment`) and `LIGHT_AUGMENT`.
* `KNOWN_CONDITIONS`, `AGE_CENTER`, `AGE_SCALE`: the conditioning inputs of the generators.
* `RESOLUTIONS` and `stage_channels`: the image sides and channel ladders of the GAN-family
  models (generator, discriminator, f-AnoGAN encoder, HealthyGAN).
* `Family`: one family's train config type, presets and help line (`jaxcxr.config.FAMILIES`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple

__all__ = ["AGE_CENTER", "AGE_SCALE", "DTYPES", "KNOWN_CONDITIONS", "LIGHT_AUGMENT", "RESOLUTIONS", "AugmentConfig",
           "Family", "check_choice", "check_loop_fields", "stage_channels"]


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


def check_choice(field: str, value: Any, choices: tuple[Any, ...]) -> None:
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


# Conditioning inputs the models know, in the order they appear in a condition vector.
KNOWN_CONDITIONS: tuple[str, ...] = ("sex", "age", "label")
# Age normalisation of the `age` condition: (age - AGE_CENTER) / AGE_SCALE.
AGE_CENTER = 45.0
AGE_SCALE = 20.0
# Image sides of the GAN-family models (generator, discriminator, f-AnoGAN encoder, HealthyGAN).
RESOLUTIONS: tuple[int, ...] = (32, 64, 128, 256)


def stage_channels(resolution: int, base_channels: int, max_channels: int) -> tuple[int, ...]:
  """Channels per stage from 4x4 up to `resolution`: min(max, base * resolution / side)."""
  n = int(math.log2(resolution // 4))
  return tuple(min(max_channels, base_channels * 2 ** (n - i)) for i in range(n + 1))


class Family(NamedTuple):
  """One family of training presets (an entry of `jaxcxr.config.FAMILIES`)."""

  # The train config dataclass that every preset of the family returns.
  config_type: type
  # Preset name -> function that takes no arguments and returns a `config_type`.
  presets: Mapping[str, Callable[[], Any]]
  # One line for command-line help, e.g. "the conditional chest X-ray GAN".
  help: str
