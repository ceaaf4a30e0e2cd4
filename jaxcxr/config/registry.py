"""The registry of training presets: `FAMILIES`, `PRESETS` and `presets_for`.

Each family module declares its own presets (`PRESETS`, name -> function) and its `FAMILY`
(`common.Family`: the train config type the presets build, the presets, a help line); this
module joins them, so a new preset is added in its family's module only.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from jaxcxr.config import classifier, cxr_encoder, fanogan, gan, healthygan, prefilter, unet, upsampler
from jaxcxr.config.common import Family

__all__ = ["FAMILIES", "PRESETS", "presets_for"]

# Family name (the prefix of its preset names) -> its train config type, presets and help line. `jaxcxr train`
# takes their presets and help from here (its command names: docs/cli.md).
FAMILIES: dict[str, Family] = {
    "gan": gan.FAMILY,
    "upsampler": upsampler.FAMILY,
    "unet": unet.FAMILY,
    "classifier": classifier.FAMILY,
    "fanogan": fanogan.FAMILY,
    "healthygan": healthygan.FAMILY,
    "cascade_prefilter": prefilter.FAMILY,
    "cxr_encoder": cxr_encoder.FAMILY,
}


def _join(families: Mapping[str, Family]) -> dict[str, Callable[[], Any]]:
  """Every family's presets in one dict, family by family in declaration order.

  Raises:
    ValueError: two families declare a preset of the same name.
  """
  presets: dict[str, Callable[[], Any]] = {}
  for family_name, family in families.items():
    for name, make in family.presets.items():
      if name in presets:
        raise ValueError(f"preset {name!r} of family {family_name!r} is declared by another family too")
      presets[name] = make
  return presets


# Every training preset by name, each callable without arguments. The latent classifiers' presets
# are `LATENT_PRESETS` (they take `latent_dim` and build model configs, not training runs).
PRESETS: dict[str, Callable[[], Any]] = _join(FAMILIES)


def presets_for(config_type: type) -> dict[str, Callable[[], Any]]:
  """The presets that build `config_type`, by name, in declaration order (a new dict).

  Example:
    >>> from jaxcxr import config
    >>> list(config.presets_for(config.UpsamplerTrainConfig))
    ['upsampler_tiny', 'upsampler_x4_cpu', 'upsampler_x4_noiseless_cpu']

  Raises:
    ValueError: no family's presets build `config_type` (the train config types that have
      presets are named).
  """
  for family in FAMILIES.values():
    if family.config_type is config_type:
      return dict(family.presets)
  known = ", ".join(f.config_type.__name__ for f in FAMILIES.values())
  raise ValueError(f"no presets build {getattr(config_type, '__name__', config_type)!r}; presets exist for {known}")
