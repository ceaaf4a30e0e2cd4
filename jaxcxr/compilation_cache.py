"""The persistent XLA compilation cache: a second process reuses the first one's compiled programs.

On a CPU, compiling the shipped sampler takes about 10 s of a `jaxcxr sample` run that then
samples for 2-3 s. JAX can keep compiled executables on disk, keyed by the program, the
compiler flags, the jax/jaxlib versions and the device, so a later process with the same
program loads it instead of compiling. The CLI turns it on by default:

    $JAXCXR_COMPILATION_CACHE     a folder, or "off" to disable
    default                       $XDG_CACHE_HOME/jaxcxr/xla, else ~/.cache/jaxcxr/xla

In a notebook, call `enable_compilation_cache()` before the first compile.
"""

from __future__ import annotations

import os
import pathlib

ENV = "JAXCXR_COMPILATION_CACHE"
OFF = ("off", "0", "false", "no", "none")


def default_directory() -> pathlib.Path | None:
  """The cache folder the environment asks for: $JAXCXR_COMPILATION_CACHE, else the user's cache folder; None if off."""
  value = os.environ.get(ENV)
  if value is not None:
    return None if value.strip().lower() in OFF or not value.strip() else pathlib.Path(value).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "jaxcxr" / "xla"


def enable_compilation_cache(directory: str | os.PathLike | None = None, *,
                             min_compile_seconds: float = 0.5) -> pathlib.Path | None:
  """Turns on JAX's persistent compilation cache in `directory` (default: `default_directory()`).

  Programs that took at least `min_compile_seconds` to compile are written; small ones are
  cheaper to recompile than to read. A folder that cannot be created leaves the cache off
  (the run compiles as usual) rather than failing the run.

  Returns:
    The folder in use, or None when the cache is off.
  """
  # Deferred (a measured heavy boundary): the CLI's entry imports this module before it knows the command, and
  # `jaxcxr --help` must not import jax, 3.7 s after this module (2-core machine, median of 3).
  import jax  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(directory).expanduser() if directory is not None else default_directory()
  if path is None:
    return None
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError:
    return None
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path
