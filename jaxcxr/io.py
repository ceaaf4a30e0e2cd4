"""Atomic file output: write to a temporary sibling, then rename into place.

A crash or kill never leaves a half-written PNG or JSON behind (docs/conventions.md).
"""

from __future__ import annotations

import io
import json
import math
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_bytes_atomic(path: str | os.PathLike, payload: bytes) -> pathlib.Path:
  """Writes `payload` to `path` through a temporary file in the same folder and os.replace.

  The file gets the permissions of an ordinary new file (0o666 less the umask), not
  the owner-only 0o600 of `tempfile.mkstemp`.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, "wb") as f:
      f.write(payload)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
  return path


def save_png(path: str | os.PathLike, image: Any, *, compress_level: int = 6) -> pathlib.Path:
  """Saves a uint8 (H, W) grayscale or (H, W, 3|4) colour image, or a PIL image, as PNG, atomically.

  `compress_level` is zlib's (0-9; 6, PIL's default): lossless at every level, only the time and
  the file size change.
  """
  if not isinstance(image, Image.Image):
    image = np.asarray(image)
    if image.dtype != np.uint8:
      raise ValueError(f"save_png: expected uint8 pixels, got {image.dtype}")
    if image.ndim == 3 and image.shape[-1] == 1:
      image = image[..., 0]
    image = Image.fromarray(image)
  buffer = io.BytesIO()
  image.save(buffer, format="PNG", compress_level=compress_level)
  return write_bytes_atomic(path, buffer.getvalue())


def save_figure(path: str | os.PathLike, fig: Any, *, dpi: float | None = None) -> pathlib.Path:
  """Writes a matplotlib figure as PNG, atomically (`dpi` None keeps the figure's own)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=dpi)
  return write_bytes_atomic(path, buffer.getvalue())


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], *, compressed: bool = False) -> pathlib.Path:
  """Saves arrays as an npz archive (no pickled objects; zip-deflated when `compressed`), atomically."""
  buffer = io.BytesIO()
  (np.savez_compressed if compressed else np.savez)(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
  return write_bytes_atomic(path, buffer.getvalue())


def save_text(path: str | os.PathLike, text: str) -> pathlib.Path:
  """Saves a text file (Markdown, HTML, CSV) as UTF-8, atomically."""
  return write_bytes_atomic(path, text.encode("utf-8"))


def to_json_safe(value: Any) -> Any:
  """NaN/inf -> None and numpy values -> builtins, recursively (strict JSON)."""
  if isinstance(value, dict):
    return {str(k): to_json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_json_safe(v) for v in value]
  if isinstance(value, np.ndarray):
    return to_json_safe(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def save_json(path: str | os.PathLike, obj: Any) -> pathlib.Path:
  """Saves `obj` as indented JSON, atomically."""
  return write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_json_lines(path: str | os.PathLike, lines: list[Any]) -> pathlib.Path:
  """Writes one JSON object per line (benchmark results, docs/benchmarks.md), atomically; returns the path."""
  text = "".join(json.dumps(to_json_safe(line)) + "\n" for line in lines)
  return write_bytes_atomic(path, text.encode())


def read_json_lines(path: str | os.PathLike) -> list[Any]:
  """The JSON objects of a JSON-lines file, one per complete line; [] when the file is missing.

  A last line without its newline, or one that is not JSON (a log appended to by a writer
  older than `append_json_line`, killed mid-line), is left out.
  """
  path = pathlib.Path(path)
  if not path.exists():
    return []
  records = []
  for line in path.read_bytes().split(b"\n")[:-1]:
    try:
      records.append(json.loads(line))
    except ValueError:
      continue
  return records


def append_json_line(path: str | os.PathLike, record: Any, *, keep: Callable[[Any], bool] | None = None
                     ) -> pathlib.Path:
  """Appends one JSON object as a line to a JSON-lines log, atomically (the whole file is rewritten).

  A kill leaves the log as it was before the call or after it, never with half a line. The
  records already there for which `keep(record)` is False are dropped in the same write
  (a resumed training run drops the lines of steps after its checkpoint).
  """
  lines = [r for r in read_json_lines(path) if keep is None or keep(r)]
  return save_json_lines(path, [*lines, record])


def prepare_output_dir(path: str | os.PathLike, *, overwrite: bool) -> pathlib.Path:
  """Creates `path`; refuses a non-empty existing folder unless `overwrite` (then it is emptied).

  Raises:
    FileExistsError: the folder exists, holds files, and `overwrite` is False.
  """
  path = pathlib.Path(path)
  if path.exists() and not path.is_dir():
    raise FileExistsError(f"{path}: exists and is not a folder")
  if path.is_dir() and any(path.iterdir()):
    if not overwrite:
      raise FileExistsError(f"{path}: output folder exists and is not empty; pass --overwrite to replace it")
    shutil.rmtree(path)
  path.mkdir(parents=True, exist_ok=True)
  return path


# ----------------------------------------------------------------------------- resumable output folders

# The record of the run that writes an output folder (hidden; see `open_run_dir`).
RUN_RECORD = ".jaxcxr_run.json"


def open_run_dir(path: str | os.PathLike, run: dict[str, Any], *, overwrite: bool
                 ) -> tuple[pathlib.Path, dict[str, Any] | None]:
  """Opens the output folder of a resumable run: resumes the same run, else prepares an empty folder.

  `run` names everything the output depends on (JSON values: a command's arguments, model
  ids). The folder keeps it in `RUN_RECORD`, written first, so that a run killed at any
  moment is recognised when the same command runs again: its partial output is kept and the
  run continues, whatever `overwrite` says (the result is the same). A folder of another run,
  or with other files, is refused unless `overwrite` (then emptied, `prepare_output_dir`).

  Returns:
    (folder, saved): saved is the record file's content {"run", "complete", "result"} when
    the folder holds this run (interrupted, or complete unless `overwrite` asks to redo it),
    else None (a fresh, empty folder holding the new record).

  Raises:
    FileExistsError: the folder holds other files and `overwrite` is False (the message says
      when they are a run of other arguments).
  """
  path = pathlib.Path(path)
  record_path = path / RUN_RECORD
  run = json.loads(json.dumps(to_json_safe(run)))
  saved = None
  if record_path.is_file():
    try:
      saved = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
      saved = None
  if isinstance(saved, dict) and saved.get("run") == run and not (saved.get("complete") and overwrite):
    return path, saved
  if isinstance(saved, dict) and not overwrite and path.is_dir():
    changed = {k: (saved.get("run", {}).get(k), v) for k, v in run.items() if saved.get("run", {}).get(k) != v}
    raise FileExistsError(f"{path}: holds the output of a run with other arguments (saved, now): {changed}; "
                          "pass --overwrite to replace it, or choose another output folder")
  path = prepare_output_dir(path, overwrite=overwrite)
  save_json(record_path, {"run": run, "complete": False})
  return path, None


def finish_run_dir(path: str | os.PathLike, result: dict[str, Any]) -> pathlib.Path:
  """Marks the run of `open_run_dir` complete in its record, with its result (JSON-safe), atomically."""
  record_path = pathlib.Path(path) / RUN_RECORD
  saved = json.loads(record_path.read_text(encoding="utf-8"))
  return save_json(record_path, {"run": saved["run"], "complete": True, "result": to_json_safe(result)})
