"""Adds a "Provenance" section to the model cards of the shipped checkpoints (no retraining).

    python scripts/backfill_provenance.py [--data ../shared/data] [--check]

For each `checkpoints/NAME/MODEL_CARD.md`:

* data archives: every `*.npz` the card names that exists in `--data` (or, for latent
  datasets, in `benchmarks/results/`), with its SHA-256 computed now and whether it is one
  of the digests the checkpoint's metadata recorded at training time;
* seeds: every `seed` / `*_seed` entry of the folder's model checkpoints' metadata and of
  its `train_summary.json`, `summary.json` and `calibration.json` (entries that differ only
  by age-sex group or strictness level are listed once);
* code: the jaxcxr version the checkpoints' metadata recorded, and the commit that last
  changed the folder apart from its card (`git log -1 -- checkpoints/NAME
  ':(exclude)checkpoints/NAME/MODEL_CARD.md'`): the training runs did not record their git
  revision, so the code that trained the model is that commit or an earlier one.

The section replaces an existing "## Provenance" section, so a second run changes nothing.
With `--check`, nothing is written and the exit status is 1 when a card would change.
New trainings record the same facts themselves (`jaxcxr.provenance.provenance`, in each
model checkpoint's metadata and train summary).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jaxcxr import checkpoints, io, provenance  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from jaxcxr.data import GROUPS, file_sha256  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from jaxcxr.prefilter.thresholds import STRATEGIES  # noqa: E402  pylint: disable=wrong-import-position

_LEVELS = ("standard", "strict")
_SUMMARIES = ("train_summary.json", "summary.json", "calibration.json")
_SECTION = re.compile(r"^## Provenance\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)


def _seeds(obj: Any, prefix: str, out: dict[str, Any]) -> None:
  """Every `seed` / `*_seed` entry of a JSON object, by its key path (lists of objects as [*])."""
  if isinstance(obj, dict):
    for key, value in obj.items():
      path = f"{prefix}.{key}" if prefix else str(key)
      if (key == "seed" or str(key).endswith("_seed")) and not isinstance(value, (dict, list)):
        out[path] = value
      elif isinstance(value, (dict, list)):
        _seeds(value, path, out)
  elif isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
    values: dict[str, list[Any]] = {}
    for item in obj:
      found: dict[str, Any] = {}
      _seeds(item, "", found)
      for key, value in found.items():
        values.setdefault(key, []).append(value)
    for key, value in values.items():
      out[f"{prefix}[*].{key}"] = value


def _model_dirs(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in [folder, *folder.rglob("*")] if p.is_dir() and (p / "jaxcxr_manifest.json").is_file())


def _collapse(path: str) -> str:
  # prefilters_gan_256 holds one checkpoint per level and group, each with every strategy: list their seeds once.
  for name in STRATEGIES:
    path = path.replace(f"strategies.{name}.", "strategies.*.")
  return re.sub(r"[^/.]+", lambda m: "*" if m.group(0) in (*GROUPS, *_LEVELS) else m.group(0), path)


def _commit(folder: pathlib.Path) -> str | None:
  """The last commit that changed the folder's weights or calibration (else anything in it but the card)."""
  weights = [p / "jaxcxr_manifest.json" for p in _model_dirs(folder)]
  weights += [folder / name for name in ("calibration.json", "atlas.npz", "reference_measures.npz")]
  paths = [str(p.relative_to(REPO)) for p in weights if p.is_file()] or [
      str(folder.relative_to(REPO)), f":(exclude){(folder / 'MODEL_CARD.md').relative_to(REPO)}"]
  done = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%H", "--", *paths], capture_output=True,
                        text=True, check=False)
  return done.stdout.strip() or None


def card_record(folder: pathlib.Path, data_dir: pathlib.Path) -> tuple[dict[str, Any], str]:
  """(the `provenance`-style record of a shipped checkpoint folder, the note under the section title)."""
  seeds: dict[str, Any] = {}
  recorded: set[str] = set()
  versions: set[str] = set()
  for model in _model_dirs(folder):
    meta = checkpoints.read_metadata(model)
    versions.add(str(meta.get("jaxcxr_version")))
    where = model.relative_to(folder).as_posix()
    _seeds(meta, "" if where == "." else where, seeds)
    for key in ("data_sha256",):
      recorded.update(d for d in str(meta.get(key) or "").split(",") if d)
    for sub in ("base", "upsampler_metadata"):
      if isinstance(meta.get(sub), dict):
        recorded.update(d for d in str(meta[sub].get("data_sha256") or "").split(",") if d)
  for name in _SUMMARIES:
    if (folder / name).is_file():
      summary = json.loads((folder / name).read_text())
      _seeds(summary, name, seeds)
      prov = summary.get("provenance") if isinstance(summary, dict) else None
      if isinstance(prov, dict):
        recorded.update(d for d in str(prov.get("data_sha256") or "").split(",") if d)
  seeds = dict(sorted({_collapse(key): value for key, value in seeds.items()}.items()))

  card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
  card = _SECTION.sub("", card)
  names = sorted(set(re.findall(r"[A-Za-z0-9][\w.-]*\.npz", card)))
  data = []
  for name in names:
    candidates = [data_dir / name, REPO / "benchmarks" / "results" / name]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None or (folder / name).exists():     # outputs kept in the folder are not training data
      continue
    digest = file_sha256(path)
    note = ("matches the digest recorded at training" if digest in recorded else
            "not among the digests recorded at training: the archive may have changed" if recorded else
            "no digest was recorded at training")
    data.append({"path": str(path), "sha256": digest, "note": note})
  commit = _commit(folder.resolve())
  record = {"jaxcxr_version": ", ".join(sorted(versions - {"None"})) or None, "git_revision": commit,
            "git_dirty": None, "seeds": seeds, "data": data}
  note = ("Backfilled by `scripts/backfill_provenance.py` (the training runs predate "
          "`jaxcxr.provenance`). The git revision is the commit that added these weights (the last one that "
          "changed the checkpoints' manifests or the calibration files); the code that trained them is that "
          "commit or an earlier one, its working-tree state was not recorded. Seeds are the `seed` entries of the "
          "checkpoints' metadata and summaries, by key path; digests are of the archives the card names, "
          "computed from the shared data folder.")
  return record, note


def backfilled(card: str, record: dict[str, Any], note: str) -> str:
  """The card with its "## Provenance" section replaced (or appended)."""
  section = provenance.markdown_section(record, note=note)
  if _SECTION.search(card):
    return _SECTION.sub(lambda _: section + "\n", card).rstrip("\n") + "\n"
  return card.rstrip("\n") + "\n\n" + section


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder of the data archives")
  parser.add_argument("--checkpoints", default=str(REPO / "checkpoints"))
  parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a card would change")
  args = parser.parse_args(argv)
  changed = []
  for card_path in sorted(pathlib.Path(args.checkpoints).glob("*/MODEL_CARD.md")):
    record, note = card_record(card_path.parent, pathlib.Path(args.data))
    old = card_path.read_text(encoding="utf-8")
    new = backfilled(old, record, note)
    if new != old:
      changed.append(card_path.parent.name)
      if not args.check:
        io.save_text(card_path, new)
    print(f"{card_path.parent.name}: {len(record['data'])} archives, {len(record['seeds'])} seeds, "
          f"commit {(record['git_revision'] or 'unknown')[:12]}{' (changed)' if new != old else ''}")
  return 1 if args.check and changed else 0


if __name__ == "__main__":
  sys.exit(main())
