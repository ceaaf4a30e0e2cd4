"""Atomic file output: write to a temporary sibling, then rename into place.

A crash or kill never leaves a half-written PNG or JSON behind (DESIGN.md section 11).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import tempfile
from typing import Any

import numpy as np


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


def save_png(path: str | os.PathLike, image: np.ndarray) -> pathlib.Path:
  """Saves a uint8 (H, W) grayscale or (H, W, 3|4) colour image as PNG, atomically."""
  import io  # pylint: disable=g-import-not-at-top

  from PIL import Image  # pylint: disable=g-import-not-at-top

  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"save_png: expected uint8 pixels, got {image.dtype}")
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return write_bytes_atomic(path, buffer.getvalue())


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> pathlib.Path:
  """Saves arrays as an uncompressed npz archive (no pickled objects), atomically."""
  import io  # pylint: disable=g-import-not-at-top

  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
  return write_bytes_atomic(path, buffer.getvalue())


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
  """Writes one JSON object per line (benchmark results, DESIGN.md section 9), atomically; returns the path."""
  text = "".join(json.dumps(to_json_safe(line)) + "\n" for line in lines)
  return write_bytes_atomic(path, text.encode())


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
