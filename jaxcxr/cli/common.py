"""What every command shares: the error contract, progress on stderr, the JSON or human output, the run record.

Bad input the user can fix raises `UsageError` (or a library error `entry.main` knows); `main`
prints it as one `jaxcxr: error: ...` line on stderr and exits with `EXIT_USAGE`. Progress
goes to stderr (`log`); the result goes to stdout (`emit`), as one JSON object with `--json`.
This module imports no jax, so that the parser and `--help` stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["COVID_DATA", "EXIT_USAGE", "GAN_DATA", "NIH_DATA", "Parser", "UsageError", "emit", "log", "run_record"]

EXIT_USAGE = 2

# The NIH archive the data tools, `score` and `evaluate segmentation`'s siblings read by default.
NIH_DATA = "nih_cxr14_subset_256.npz"
# The NIH development archives the generators train on (and `evaluate gan` tests against).
GAN_DATA = (NIH_DATA, "nih_cxr14_extra_256.npz")
# The COVID-19 archive (lung masks; the U-Net's data and the second anomaly task's abnormal images).
COVID_DATA = "covid_v7lungs_256.npz"


class UsageError(Exception):
  """Bad arguments or input the user can fix; reported without a traceback."""


class Parser(argparse.ArgumentParser):
  """argparse whose errors (and its subcommands', which inherit the class) are one `jaxcxr: error:` line, exit 2."""

  def error(self, message: str):
    self.exit(EXIT_USAGE, f"jaxcxr: error: {message} (see `{self.prog} --help`)\n")


def log(message: str) -> None:
  """One progress line on stderr."""
  print(message, file=sys.stderr, flush=True)


def emit(result: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], str]) -> None:
  """The command's result on stdout: one JSON object, or `human(result)`."""
  print(json.dumps(result) if as_json else human(result), flush=True)


def run_record(args: argparse.Namespace, **ids: Any) -> dict[str, Any]:
  """What a command's output depends on: its arguments (less --out, --overwrite, --json, --progress) and `ids`."""
  skip = {"out", "overwrite", "json", "progress", "run", "human"}
  return {**{k: v for k, v in sorted(vars(args).items()) if k not in skip and not callable(v)}, **ids}
