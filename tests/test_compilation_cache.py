"""Tests for the persistent compilation cache the CLI turns on (`jaxcxr.compilation_cache`)."""

import os
import pathlib
import subprocess
import sys

from jaxcxr import compilation_cache

PROGRAM = """
import sys, jax, jax.numpy as jnp
from jaxcxr.compilation_cache import enable_compilation_cache
hits = []
jax.monitoring.register_event_listener(lambda name, **kw: hits.append(name) if "cache_hits" in name else None)
print(enable_compilation_cache(sys.argv[1], min_compile_seconds=0))
print(float(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).sum()))
print(len(hits))
"""


def _run(directory):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", PROGRAM, str(directory)], capture_output=True, text=True, env=env,
                       check=True, timeout=300)
  return out.stdout.split()


def test_a_second_process_reads_what_the_first_compiled(tmp_path):
  first = _run(tmp_path / "xla")
  assert first[0] == str(tmp_path / "xla")
  entries = sorted(p.name for p in (tmp_path / "xla").iterdir())
  assert entries                                                   # the compiled program was written
  assert first[2] == "0"                                           # nothing to read the first time
  second = _run(tmp_path / "xla")
  assert int(second[2]) >= 1                                       # read, not compiled again
  assert second[1] == first[1]                                     # same result from the cached executable


def test_directory_from_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv(compilation_cache.ENV, "off")
  assert compilation_cache.default_directory() is None
  assert compilation_cache.enable_compilation_cache() is None
  monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / "c"))
  assert compilation_cache.default_directory() == tmp_path / "c"
  monkeypatch.delenv(compilation_cache.ENV)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compilation_cache.default_directory() == tmp_path / "xdg" / "jaxcxr" / "xla"


def test_an_unusable_folder_leaves_the_cache_off(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  assert compilation_cache.enable_compilation_cache(blocker / "xla") is None
  assert not (blocker / "xla").exists() and pathlib.Path(blocker).is_file()
