"""Provenance of a trained model: the seeds, the data archives by SHA-256, the code by version and git revision.

Every trainer puts `provenance(...)` into its model checkpoint's metadata and into the summary it
returns (which `jaxcxr train ... --json` prints and the shipped `train_summary.json` files keep);
`markdown_section` renders one as the "Provenance" section of a model card::

    record = provenance("tests/data/nih_fixture.npz", {"seed": 0})
    record["data"]   # [{"path": "tests/data/nih_fixture.npz", "sha256": "..."}]
    print(markdown_section(record))
"""

from __future__ import annotations

import functools
import os
import pathlib
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

from jaxcxr import __version__
from jaxcxr.data import file_sha256

__all__ = ["data_digests", "git_revision", "markdown_section", "provenance"]

# The folder holding the `jaxcxr` package; its git revision is recorded when it is a git checkout.
SOURCE_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _git(root: pathlib.Path, *args: str) -> str | None:
  try:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=False)
  except (OSError, subprocess.SubprocessError):
    return None
  return done.stdout if done.returncode == 0 else None


def git_revision(root: str | os.PathLike | None = None) -> dict[str, Any]:
  """{"git_revision": `git rev-parse HEAD`, "git_dirty": tracked files changed since} of the source checkout.

  Both None when `root` (default: the folder holding the `jaxcxr` package) is not the top of
  a git checkout (an installed wheel, a copy of the sources) or git is not installed; a
  package installed inside someone else's repository does not report that repository.
  """
  root = pathlib.Path(root) if root is not None else SOURCE_ROOT
  if not (root / ".git").exists():
    return {"git_revision": None, "git_dirty": None}
  head = _git(root, "rev-parse", "HEAD")
  status = _git(root, "status", "--porcelain", "--untracked-files=no")
  if head is None or status is None:
    return {"git_revision": None, "git_dirty": None}
  return {"git_revision": head.strip(), "git_dirty": bool(status.strip())}


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:   # keyed by size and time: a changed file is hashed again
  return file_sha256(path)


def data_digests(data_paths: str | os.PathLike | Iterable[str | os.PathLike] | None) -> list[dict[str, Any]]:
  """[{"path", "sha256"}] per data archive; "sha256" None for what is not a file (a folder of PNGs).

  `data_paths`: one path, comma-separated paths (a `CXRDataset.source` of joined archives),
  or a sequence of paths; None or "" for none.
  """
  if data_paths is None:
    return []
  if isinstance(data_paths, (str, os.PathLike)):
    data_paths = [p for p in str(data_paths).split(",") if p.strip()]
  out = []
  for entry in data_paths:
    path = pathlib.Path(str(entry).strip())
    if path.is_file():
      stat = path.stat()
      digest = _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    else:
      digest = None
    out.append({"path": str(path), "sha256": digest})
  return out


def provenance(data_paths: str | os.PathLike | Iterable[str | os.PathLike] | None,
               seeds: Mapping[str, Any]) -> dict[str, Any]:
  """What a trained model came from: {"jaxcxr_version", "git_revision", "git_dirty", "seeds", "data"}.

  Args:
    data_paths: the data archives trained on (see `data_digests`).
    seeds: every seed the result depends on, by name (e.g. {"seed": 0, "split_seed": 0}).

  Returns:
    A JSON-ready dict: "data" is `data_digests(data_paths)`; "git_revision" and "git_dirty" are
    `git_revision()` (None outside a git checkout).
  """
  return {"jaxcxr_version": __version__, **git_revision(), "seeds": {str(k): v for k, v in seeds.items()},
          "data": data_digests(data_paths)}


def markdown_section(record: Mapping[str, Any], *, title: str = "Provenance", note: str | None = None) -> str:
  """A model card's "## Provenance" section (Markdown) from a `provenance` record.

  `note` is a paragraph under the title; a data entry's own "note" follows its digest.
  """
  revision = record.get("git_revision")
  dirty = record.get("git_dirty")
  code = (f"`{revision}`" + (" (with uncommitted changes)" if dirty else "") if revision
          else "not recorded (not a git checkout)")
  lines = [f"## {title}", ""]
  if note:
    lines += [note, ""]
  lines += [f"- jaxcxr version: {record.get('jaxcxr_version') or 'not recorded'}", f"- git revision: {code}"]
  seeds = record.get("seeds") or {}
  lines.append("- seeds: " + (", ".join(f"{k} = {v}" for k, v in seeds.items()) if seeds else "not recorded"))
  lines.append("- data archives (SHA-256):" if record.get("data") else "- data archives: not recorded")
  for entry in record.get("data") or []:
    digest = entry.get("sha256")
    lines.append(f"  - `{pathlib.Path(entry['path']).name}`: " + (f"`{digest}`" if digest else "not a file")
                 + (f" ({entry['note']})" if entry.get("note") else ""))
  return "\n".join(lines) + "\n"
