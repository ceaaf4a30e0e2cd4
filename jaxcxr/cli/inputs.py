"""What several commands read: `--data` and its defaults, given or shipped checkpoints, the post-filter, run folders,
training presets.

Each helper turns options into library objects (paths, datasets, a `Scorer`) and bad values
into `UsageError`; the library does the work.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import pathlib
from collections.abc import Iterator
from typing import Any

from jaxcxr import checkpoints, data, io, scoring
from jaxcxr import config as config_lib
from jaxcxr.cli.common import GAN_DATA, UsageError, log

# The library's errors for input the user can fix: `entry.main` reports each as one `jaxcxr: error:` line, exit 2.
LIBRARY_ERRORS = (data.DataError, checkpoints.CheckpointError, FileExistsError, FileNotFoundError)

__all__ = ["LIBRARY_ERRORS", "checkpoint", "data_path", "data_paths", "development_images", "drop_unused",
           "generator_checkpoint", "load_scorer", "train_preset", "work_dir"]


def data_path(arg: str | None, default_name: str) -> pathlib.Path:
  """`--data` as given, else `$JAXCXR_DATA/default_name`."""
  return pathlib.Path(arg) if arg else data.default_data_path(default_name)


def data_paths(arg: str | None, *default_names: str) -> str:
  """`--data` as given (one path, or comma-separated paths for `data.load`), else the default files joined by commas."""
  return arg if arg else ",".join(str(data.default_data_path(name)) for name in default_names)


def checkpoint(arg: str | None, shipped: tuple[str, ...], kind: str | None = None) -> pathlib.Path:
  """A given checkpoint folder (a model folder holding one as `kind/` names it too), else the first shipped one."""
  if not arg:
    return checkpoints.shipped_checkpoint(*shipped)
  return checkpoints.model_folder(arg, kind) if kind else pathlib.Path(arg)


def generator_checkpoint(arg: str | None) -> pathlib.Path:
  """`--checkpoint` of a generator: a generator checkpoint or a model folder with `generator/`; default the shipped."""
  return checkpoint(arg, checkpoints.SHIPPED_GENERATORS, "generator")


def train_preset(family: str, name: str, steps: int | None, *preset_args: Any):
  """The preset `name` of `jaxcxr.config.FAMILIES[family]`, called with `preset_args`, with `--steps` applied.

  Raises:
    UsageError: `name` is not one of the family's presets, or `steps` is not a positive multiple
      of the preset's `steps_per_call`.
  """
  presets = config_lib.FAMILIES[family].presets
  if name not in presets:
    raise UsageError(f"unknown preset {name!r} for {config_lib.FAMILIES[family].help}; expected one of "
                     f"{', '.join(presets)}")
  config = presets[name](*preset_args)
  if steps is not None:
    if steps <= 0 or steps % config.steps_per_call:
      raise UsageError(f"--steps must be a positive multiple of steps_per_call={config.steps_per_call} (preset "
                       f"{name}), got {steps}")
    try:
      config = dataclasses.replace(config, steps=steps)
    except ValueError as e:
      raise UsageError(f"--steps {steps}: {e}") from e
  return config


def load_scorer(args: argparse.Namespace) -> scoring.Scorer:
  """The post-filter of `--scoring` (default the shipped one) at `--strictness`, with `--batch-size` and `--bf16`."""
  directory = getattr(args, "scoring", None) or scoring.shipped_scoring()
  strictness = getattr(args, "strictness", "standard")
  log(f"loading scorer {directory} (U-Net, classifier, calibration) at strictness {strictness}")
  if getattr(args, "batch_size", None) is not None and args.batch_size <= 0:
    raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
  changes: dict[str, Any] = {"batch_size": args.batch_size} if getattr(args, "batch_size", None) else {}
  if getattr(args, "bf16", False):
    changes["dtype"] = "bfloat16"
  try:
    return scoring.load_scorer(directory, strictness=strictness, **changes)
  except ValueError as e:
    raise UsageError(f"--strictness: {e}") from e


def development_images(arg: str | None, split: str, part: str = "train") -> data.CXRDataset:
  """The images a generator-family model trains on: `--data` (default both NIH archives), the standard
  split's `part` patients unless split == "all", abnormal meaning pneumonia (`data.keep_abnormal_finding`)."""
  path = data_paths(arg, *GAN_DATA)
  log(f"loading {path}")
  ds = data.load(path)
  if split == "train":
    ds = ds.subset(data.standard_split(ds)[part])
  kept = data.keep_abnormal_finding(ds)
  which = "all patients" if split == "all" else f"the standard split's {part} patients"
  log(f"{which}: {len(kept)} images ({len(ds) - len(kept)} abnormal images without pneumonia left out: "
      "the label means pneumonia)")
  return kept


def work_dir(out: pathlib.Path, run: dict[str, Any], overwrite: bool, suffix: str) -> pathlib.Path:
  """The hidden sibling folder `.OUT.SUFFIX` where a command that writes `out` keeps its work so far.

  It holds the run's record (`io.open_run_dir`): the same command run again after a kill finds
  it and continues from what is there, even if the kill came after `out` was written (the
  command then writes the same `out` again); a folder of other arguments is emptied. The
  command removes it once `out` is written.

  Raises:
    FileExistsError: `out` exists, is not this run's, and `overwrite` is False.
  """
  work = out.with_name(f".{out.name}.{suffix}")
  resumed = work.is_dir() and io.open_run_dir(work, run, overwrite=True)[1] is not None
  if out.exists() and not overwrite and not resumed:
    raise FileExistsError(f"{out}: exists; pass --overwrite to replace it")
  io.open_run_dir(work, run, overwrite=True)
  if resumed:
    log(f"{work}: resuming the interrupted run of this same command")
  return work


@contextlib.contextmanager
def drop_unused(work: pathlib.Path) -> Iterator[None]:
  """Removes a `work_dir` that holds nothing but its record when the block fails (bad input, no work done)."""
  try:
    yield
  except Exception:
    if work.is_dir() and [p.name for p in work.iterdir()] == [io.RUN_RECORD]:
      (work / io.RUN_RECORD).unlink()
      work.rmdir()
    raise
