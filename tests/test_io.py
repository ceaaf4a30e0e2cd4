"""Tests of atomic output (`jaxcxr.io`)."""

import os
import stat

import numpy as np
import pytest

from jaxcxr import io


def test_atomic_write_has_ordinary_file_permissions(tmp_path):
  old = os.umask(0o022)
  try:
    path = io.write_bytes_atomic(tmp_path / "a.bin", b"payload")
  finally:
    os.umask(old)
  assert path.read_bytes() == b"payload"
  assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_failed_write_leaves_no_file_behind(tmp_path):
  with pytest.raises(TypeError):
    io.write_bytes_atomic(tmp_path / "b.bin", "not bytes")  # type: ignore[arg-type]
  assert list(tmp_path.iterdir()) == []


def test_save_png_refuses_float_pixels(tmp_path):
  with pytest.raises(ValueError, match="uint8"):
    io.save_png(tmp_path / "x.png", np.zeros((4, 4), np.float32))
  assert list(tmp_path.iterdir()) == []


def test_save_json_lines_one_object_per_line_with_numpy_values(tmp_path):
  import json  # pylint: disable=g-import-not-at-top

  old = os.umask(0o022)
  try:
    path = io.save_json_lines(tmp_path / "sub" / "bench.json", [{"a": np.float32(1.5), "b": np.arange(2)}, {"c": None}])
  finally:
    os.umask(old)
  lines = path.read_text().splitlines()
  assert [json.loads(line) for line in lines] == [{"a": 1.5, "b": [0, 1]}, {"c": None}]
  assert stat.S_IMODE(path.stat().st_mode) == 0o644   # not mkstemp's 0o600
