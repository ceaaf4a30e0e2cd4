"""`jaxcxr train gan`, `jaxcxr train upsampler` and `jaxcxr cascade`: train the generators and assemble a cascade."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from typing import Any

from flax import nnx

from jaxcxr import checkpoints, io
from jaxcxr import config as config_lib
from jaxcxr.cli import inputs
from jaxcxr.cli.common import UsageError
from jaxcxr.models import discriminator as discriminator_lib
from jaxcxr.models import generator as generator_lib
from jaxcxr.models.upsampler import Upsampler, load_upsampler
from jaxcxr.train import gan as gan_trainer
from jaxcxr.train import upsampler as upsampler_trainer

__all__ = ["HANDLERS"]


def _train_preset(name: str, steps: int | None, config_type: type, what: str):
  """The preset `name` of one family (PRESETS holds every family's), with `--steps` applied."""
  presets = {n: make for n, make in config_lib.PRESETS.items() if isinstance(make(), config_type)}
  if name not in presets:
    raise UsageError(f"unknown preset {name!r} for {what}; expected one of {', '.join(presets)}")
  config = presets[name]()
  if steps is not None:
    if steps <= 0 or steps % config.steps_per_call:
      raise UsageError(f"--steps must be a positive multiple of steps_per_call={config.steps_per_call}, got {steps}")
    config = dataclasses.replace(config, steps=steps)
  return config


def run_gan(args: argparse.Namespace) -> dict[str, Any]:
  """`train gan`: a preset of the conditional GAN on the development images."""
  config = _train_preset(args.preset, args.steps, config_lib.GanTrainConfig, "a GAN")
  ds = inputs.development_images(args.data, args.split)
  summary = gan_trainer.train_gan(ds, config, args.out, resume=args.resume, seed=args.seed,
                                  progress=sys.stderr.isatty() or args.progress, init_from=args.init_from)
  return {"preset": args.preset, "split": args.split, **summary}


def run_upsampler(args: argparse.Namespace) -> dict[str, Any]:
  """`train upsampler`: the super-resolution stage of a cascade generator (optionally on its base GAN's images)."""
  config = _train_preset(args.preset, args.steps, config_lib.UpsamplerTrainConfig, "an upsampler")
  if config.generated_fraction and not args.base_gan:
    raise UsageError(f"--preset {args.preset} trains on the base GAN's own images: give --base-gan")
  base = init = None
  if args.base_gan:
    base = generator_lib.load_generator(checkpoints.model_folder(args.base_gan, "generator"))
  if args.init_from:
    path = pathlib.Path(args.init_from)
    init = (generator_lib.load_generator(path / "generator").upsampler if (path / "generator").is_dir()
            else load_upsampler(path))
    if init is None:
      raise UsageError(f"--init-from {path}: its generator has no upsampler (not a cascade)")
  train = inputs.development_images(args.data, args.split)
  validation = inputs.development_images(args.data, "train", "val") if args.split == "train" else None
  summary = upsampler_trainer.train_upsampler(train, config, args.out, validation=validation, resume=args.resume,
                                              seed=args.seed, progress=sys.stderr.isatty() or args.progress,
                                              base=base, init_from=init)
  return {"preset": args.preset, "split": args.split, **summary}


def human_upsampler(r: dict[str, Any]) -> str:
  """`train upsampler`'s result in a line or two."""
  line = f"trained {r['preset']} to step {r['steps']} in {r['seconds']:.0f} s; upsampler: {r['upsampler']}"
  if "validation_l1" in r:
    line += f"\nvalidation L1 {r['validation_l1']:.4f} (bilinear {r['validation_l1_bilinear']:.4f})"
  return line


def run_cascade(args: argparse.Namespace) -> dict[str, Any]:
  """`cascade`: join a low-resolution GAN and an upsampler into one generator (and keep the GAN's discriminator)."""
  gan = pathlib.Path(args.gan)
  base = generator_lib.load_generator(gan / "generator")
  if base.config.upsampler is not None:
    raise UsageError(f"{gan}/generator is already a cascade ({base.config.resolution}x{base.config.resolution})")
  if args.upsampler == "bilinear":
    stage = Upsampler(config_lib.UpsamplerConfig(scale=args.scale), rngs=nnx.Rngs(0))   # zero detail: bilinear
    up_meta = {"upsampler": f"bilinear x{args.scale} (untrained stage)"}
  else:
    stage = load_upsampler(args.upsampler)
    up_meta = {"upsampler": str(args.upsampler), "upsampler_metadata": checkpoints.read_metadata(args.upsampler)}
  cascade = generator_lib.make_cascade(base, stage)
  # The cascade's discriminator is its base GAN's (it average-pools the output to its resolution); read
  # before anything is written, so that a missing or corrupt one leaves no half-written --out.
  discriminator = discriminator_lib.load_discriminator(gan / "discriminator")
  out = io.prepare_output_dir(args.out, overwrite=args.overwrite)
  gan_meta = checkpoints.read_metadata(gan / "generator")
  gan_meta = {k: v for k, v in gan_meta.items() if k not in ("format", "jaxcxr_version", "model", "config_type",
                                                             "created", "config")}
  g_path = checkpoints.save_model(out / "generator", cascade, cascade.config,
                                  metadata={"base": {"path": str(gan), **gan_meta}, **up_meta}, overwrite=True)
  d_path = checkpoints.save_model(out / "discriminator", discriminator, discriminator.config,
                                  metadata={"base": str(gan)}, overwrite=True)
  return {"generator": str(g_path), "discriminator": str(d_path), "resolution": cascade.config.resolution,
          "base_resolution": cascade.config.base_resolution}


def human_gan(r: dict[str, Any]) -> str:
  """`train gan`'s result in a line."""
  return (f"trained {r['preset']} to step {r['steps']} in {r['seconds']:.0f} s "
          f"({r['images_per_second']:.1f} img/s); generator: {r['generator']}")


def human_cascade(r: dict[str, Any]) -> str:
  """`cascade`'s result in a line."""
  return f"cascade {r['base_resolution']} -> {r['resolution']}: {r['generator']}"


# Subcommand name: (handler, human formatter).
HANDLERS = {"gan": (run_gan, human_gan), "upsampler": (run_upsampler, human_upsampler),
            "cascade": (run_cascade, human_cascade)}
