"""Tests for the `jaxcxr` command as a whole: the parser stays free of jax, the console script's errors.

The commands are tested by group, as `jaxcxr/cli/` holds them: tests/test_cli_data.py, test_cli_generate.py,
test_cli_postfilter.py, test_cli_evaluate.py, test_cli_anomaly.py, test_cli_train.py (and on bad input,
tests/test_properties_cli.py).
"""

import os
import subprocess
import sys


def test_help_and_usage_errors_import_no_jax():
  # The parser and `--help` stay fast: a command's module (and the library, jax) is imported only once it parses.
  code = ("import sys; from jaxcxr import cli; cli.build_parser().format_help(); "
          "code = cli.main(['data', 'frobnicate']); print(code, sorted(m for m in ('jax', 'flax', 'numpy', 'orbax.checkpoint', 'matplotlib', 'jaxcxr.data') "
          "if m in sys.modules))")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert proc.stdout.strip() == "2 []", proc.stdout + proc.stderr


def test_console_script_reports_errors_without_traceback(tmp_path):
  # The installed entry point, as a user runs it: argparse errors and data errors both exit 2.
  env = {**os.environ, "JAXCXR_DATA": ""}
  proc = subprocess.run([sys.executable, "-m", "jaxcxr.cli", "data", "stats", "--data", str(tmp_path / "x.npz")],
                        capture_output=True, text=True, env=env, check=False)
  assert proc.returncode == 2 and "jaxcxr: error:" in proc.stderr and "Traceback" not in proc.stderr
  proc = subprocess.run([sys.executable, "-m", "jaxcxr.cli", "data", "frobnicate"],
                        capture_output=True, text=True, env=env, check=False)
  assert proc.returncode == 2 and "invalid choice" in proc.stderr
