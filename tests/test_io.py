"""Tests of atomic output (`jaxcxr.io`)."""

import ast
import collections
import os
import pathlib
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


def test_save_png_is_lossless_at_every_compress_level(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)   # smooth rows with a little noise: compressible, not trivially
  image = (np.add.outer(np.arange(32), np.arange(32)) * 4 + rng.integers(0, 3, (32, 32))).astype(np.uint8)
  sizes = {}
  for level in (0, 4, 9):
    path = io.save_png(tmp_path / f"{level}.png", image, compress_level=level)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
    sizes[level] = path.stat().st_size
  assert sizes[0] > sizes[9]          # the level reaches zlib: 0 stores the pixels uncompressed


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


# ----------------------------------------------------------------------------- every write is atomic

# Raw write calls allowed outside `jaxcxr/io.py` (which holds the atomic writers), each with why.
_ALLOWED_RAW_WRITES = {
    # save_model renames its finished temporary checkpoint folder into place (and an old one away).
    ("jaxcxr/checkpoints.py", "os.rename"): 3,
}
_WRITE_FUNCTIONS = {"np.save", "np.savez", "np.savez_compressed", "numpy.save", "numpy.savez",
                    "numpy.savez_compressed", "json.dump", "pickle.dump", "os.rename", "os.replace", "os.link",
                    "shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.copytree", "shutil.move"}
_WRITE_METHODS = {"savefig", "imsave", "imwrite", "write_text", "write_bytes", "tofile", "to_csv", "to_json"}


def _dotted(node):
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if isinstance(node, ast.Name):
    parts.append(node.id)
  elif isinstance(node, ast.Call):
    parts.append(_dotted(node.func) + "()")
  return ".".join(reversed(parts))


def _mode(call, position):
  for kw in call.keywords:
    if kw.arg == "mode" and isinstance(kw.value, ast.Constant):
      return str(kw.value.value)
  if len(call.args) > position and isinstance(call.args[position], ast.Constant):
    return str(call.args[position].value)
  return "r"


def _raw_writes(source):
  """(line, call) of every call in `source` that writes a file other than through jaxcxr.io."""
  found = []
  for node in ast.walk(ast.parse(source)):
    if not isinstance(node, ast.Call):
      continue
    name = _dotted(node.func)
    receiver, _, last = name.rpartition(".")
    if name in ("open", "io.open", "builtins.open"):
      hit = bool(set("wax+") & set(_mode(node, 1)))
    elif name == "os.open":
      hit = any(isinstance(a, ast.Attribute) and a.attr in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND")
                for a in ast.walk(node))
    elif last == "open" and receiver:          # pathlib.Path.open(mode)
      hit = bool(set("wax+") & set(_mode(node, 0)))
    elif last == "save":                       # PIL: image.save(path_or_buffer, format=...)
      hit = (any(kw.arg == "format" for kw in node.keywords) or receiver.rsplit(".", 1)[-1] in ("image", "img", "im")
             or receiver.endswith(("fromarray()", "convert()")))
    else:
      hit = name in _WRITE_FUNCTIONS or last in _WRITE_METHODS
    if hit:
      found.append((node.lineno, name))
  return found


def test_the_write_scanner_finds_raw_writes():
  source = ("open(p, 'w')\nopen(p, mode='ab')\npath.open('w')\nnp.savez(p, a=a)\nfig.savefig(p)\nimage.save(p)\n"
            "Image.fromarray(a).save(p)\nx.save(buf, format='PNG')\np.write_text('x')\njson.dump(o, f)\n"
            "os.replace(a, b)\nshutil.copy(a, b)\n"
            "open(p)\nopen(p, 'rb')\npath.open()\nnp.load(p)\nscorer.save(d)\nckpt.save(3, s)\njson.dumps(o)\n")
  assert [line for line, _ in _raw_writes(source)] == list(range(1, 13))


def test_no_module_writes_a_file_except_through_the_atomic_writers():
  root = pathlib.Path(io.__file__).resolve().parents[1]
  counts = collections.Counter()
  for path in sorted((root / "jaxcxr").rglob("*.py")):
    name = path.relative_to(root).as_posix()
    if name == "jaxcxr/io.py":
      continue
    for line, call in _raw_writes(path.read_text(encoding="utf-8")):
      assert (name, call) in _ALLOWED_RAW_WRITES, (
          f"{name}:{line}: {call} writes a file directly; use jaxcxr.io (write_bytes_atomic, save_json, save_png, "
          "save_npz, save_figure, save_text, append_json_line)")
      counts[(name, call)] += 1
  assert dict(counts) == _ALLOWED_RAW_WRITES


@pytest.mark.parametrize("write", [
    lambda p: io.save_json(p, {"new": 1}),
    lambda p: io.save_png(p, np.full((4, 4), 7, np.uint8)),
    lambda p: io.save_npz(p, {"a": np.arange(3)}, compressed=True),
    lambda p: io.append_json_line(p, {"step": 2}),
    lambda p: io.save_text(p, "new"),
])
def test_an_interrupted_write_leaves_the_old_file_intact(tmp_path, monkeypatch, write):
  path = tmp_path / "out.file"
  io.write_bytes_atomic(path, b'{"step": 1}\n')

  def killed(fd):          # the new bytes are in the temporary file when the process dies
    raise KeyboardInterrupt

  monkeypatch.setattr(io.os, "fsync", killed)
  with pytest.raises(KeyboardInterrupt):
    write(path)
  assert path.read_bytes() == b'{"step": 1}\n'
  assert [p.name for p in tmp_path.iterdir()] == ["out.file"]      # no temporary file left
  monkeypatch.undo()
  write(path)
  assert path.read_bytes() != b'{"step": 1}\n'


def test_json_lines_log_appends_atomically_and_skips_a_torn_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  assert io.read_json_lines(path) == []
  path.write_bytes(b'{"step": 1}\n{"step": 2}\n{"ste')     # a log torn by a kill of an older, appending writer
  assert io.read_json_lines(path) == [{"step": 1}, {"step": 2}]
  io.append_json_line(path, {"step": 3, "loss": np.float32(0.5)}, keep=lambda r: r["step"] < 2)
  assert path.read_text() == '{"step": 1}\n{"step": 3, "loss": 0.5}\n'


def test_open_run_dir_resumes_the_same_run_and_refuses_another(tmp_path):
  out = tmp_path / "run"
  folder, saved = io.open_run_dir(out, {"seed": 0, "n": (1, 2)}, overwrite=False)
  assert saved is None and folder == out and [p.name for p in out.iterdir()] == [io.RUN_RECORD]
  (out / "a.png").write_bytes(b"partial")
  _, saved = io.open_run_dir(out, {"seed": 0, "n": [1, 2]}, overwrite=False)        # killed: the same run again
  assert saved == {"run": {"seed": 0, "n": [1, 2]}, "complete": False} and (out / "a.png").exists()
  with pytest.raises(FileExistsError, match="other arguments.*'seed': \\(0, 1\\)"):
    io.open_run_dir(out, {"seed": 1, "n": [1, 2]}, overwrite=False)
  io.finish_run_dir(out, {"files": ["a.png"], "rate": float("nan")})
  _, saved = io.open_run_dir(out, {"seed": 0, "n": [1, 2]}, overwrite=False)
  assert saved["complete"] and saved["result"] == {"files": ["a.png"], "rate": None}
  _, saved = io.open_run_dir(out, {"seed": 0, "n": [1, 2]}, overwrite=True)         # redo a complete run
  assert saved is None and [p.name for p in out.iterdir()] == [io.RUN_RECORD]
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "x").write_text("x")
  with pytest.raises(FileExistsError, match="not empty"):
    io.open_run_dir(tmp_path / "other", {"seed": 0}, overwrite=False)
