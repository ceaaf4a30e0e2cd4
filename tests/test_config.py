"""Tests of `jaxcxr.config`: the package of every config dataclass and preset (no models, no jax)."""

import ast
import dataclasses
import json
import subprocess
import sys

import pytest

from jaxcxr import config

# Prefix of each family's preset names -> the train config class its presets build.
FAMILIES = {"gan_": config.GanTrainConfig, "unet_": config.SegTrainConfig, "classifier_": config.ClassifierTrainConfig,
            "fanogan_": config.FanoganTrainConfig, "healthygan_": config.HealthyganTrainConfig,
            "upsampler_": config.UpsamplerTrainConfig, "cascade_prefilter_": config.CascadePrefilterTrainConfig,
            "cxr_encoder_": config.CXREncoderTrainConfig}


@pytest.mark.parametrize("name", sorted(config.PRESETS))
def test_presets_build_their_family_and_round_trip_through_json(name):
  cfg = config.PRESETS[name]()
  [config_type] = [t for prefix, t in FAMILIES.items() if name.startswith(prefix)]
  assert type(cfg) is config_type and getattr(config, name) is config.PRESETS[name]
  assert config.from_dict(config_type, json.loads(json.dumps(config.to_dict(cfg)))) == cfg
  hash(cfg)  # jit static arguments
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.steps = 1


@pytest.mark.parametrize("name", sorted(config.LATENT_PRESETS))
def test_latent_presets_take_latent_dim(name):
  cfg = config.LATENT_PRESETS[name](64)
  assert isinstance(cfg, config.LatentClassifierConfig) and cfg.latent_dim == 64
  assert config.from_dict(config.LatentClassifierConfig, json.loads(json.dumps(config.to_dict(cfg)))) == cfg


def test_check_choice_names_the_field():
  with pytest.raises(ValueError, match=r"UNetConfig.dtype: expected one of \('float32', 'bfloat16'\), got 'float16'"):
    config.UNetConfig(dtype="float16")
  with pytest.raises(ValueError, match=r"ClassifierTrainConfig.task: expected one of"):
    config.ClassifierTrainConfig(task="age")
  with pytest.raises(ValueError, match=r"SegTrainConfig.eval_every=15: expected a non-negative multiple"):
    config.SegTrainConfig(eval_every=15)
  with pytest.raises(ValueError, match=r"GanTrainConfig.checkpoint_every: expected a positive integer"):
    config.GanTrainConfig(checkpoint_every=0)


def test_importing_config_loads_no_models_and_no_jax():
  # A fresh interpreter: this one has imported jax and the models already.
  code = ("import sys, jaxcxr.config; print(sorted(m for m in sys.modules if m.split('.')[0] in "
          "('jax', 'flax', 'optax', 'orbax', 'numpy') or m.startswith('jaxcxr.')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
  loaded = ast.literal_eval(out)
  assert "jaxcxr.config" in loaded and "jaxcxr.config.registry" in loaded
  assert [m for m in loaded if m != "jaxcxr.config" and not m.startswith("jaxcxr.config.")] == []


def test_families_hold_every_preset_once_and_presets_for_returns_them():
  seen = {}
  for family_name, (config_type, presets, help_line) in config.FAMILIES.items():
    assert help_line and "\n" not in help_line
    assert config.presets_for(config_type) == dict(presets)
    for name, make in presets.items():
      assert name.startswith(family_name + "_") and name not in seen
      assert type(make()) is config_type and FAMILIES[family_name + "_"] is config_type
      seen[name] = make
  assert seen == config.PRESETS and list(seen) == list(config.PRESETS)


def test_presets_for_a_type_without_presets_names_the_ones_with():
  with pytest.raises(ValueError, match=r"no presets build 'UNetConfig'; presets exist for GanTrainConfig, "):
    config.presets_for(config.UNetConfig)


def test_presets_for_returns_a_copy():
  presets = config.presets_for(config.GanTrainConfig)
  presets.clear()
  assert "gan_tiny" in config.presets_for(config.GanTrainConfig) and "gan_tiny" in config.PRESETS
