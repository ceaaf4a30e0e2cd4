"""Latent datasets: records of generator latents z with their post-filter scores and validity.

`validate_latent_records` (the one check of a dataset's keys, shapes and dtypes),
`save_latent_dataset` / `load_latent_dataset` (compressed npz, no pickled objects, written
atomically), `latent_targets` (the label sources of cross-validation), `build_latent_dataset`
(through the post-filter's `Scorer.generate_and_score`), `latent_dataset_summary`, and the
strictness helpers `scorer_id`, `records_at_strictness`, `records_at_scorer_level`
(rescoring from the stored raw measures).
"""

from __future__ import annotations

import os
import pathlib
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxcxr.data import GROUPS, DataError
from jaxcxr.io import save_npz
from jaxcxr.scoring import SCORE_NAMES  # the five post-filter scores, each > 0 meaning good

__all__ = [
    "FEATURE_DIM",
    "LATENT_DIM",
    "MEASURE_NAMES",
    "build_latent_dataset",
    "latent_dataset_summary",
    "latent_targets",
    "load_latent_dataset",
    "records_at_scorer_level",
    "records_at_strictness",
    "save_latent_dataset",
    "scorer_id",
    "validate_latent_records",
]

# Width of the generator latent z.
LATENT_DIM = 128
# Number of symmetry features per record (docs/scores.md).
FEATURE_DIM = 6
# Raw post-filter measures a latent dataset may store (`jaxcxr.scoring.ScoreResult.measures`).
MEASURE_NAMES = ("shape", "symmetry", "log_ratio", "abnormal_logit", "maxheat", "area_right", "area_left")


# ============================================================================ latent datasets


def _fail(source: str, message: str) -> DataError:
  return DataError(f"{source}: {message}")


def validate_latent_records(records: Mapping[str, Any], *, source: str = "records",
                            latent_dim: int = LATENT_DIM) -> dict[str, Any]:
  """Checks a latent dataset and returns it with canonical dtypes.

  Args:
    records: mapping with
      "z": float (N, latent_dim) latents, finite;
      "group": (N,) group names, each in `jaxcxr.data.GROUPS`;
      "scores": mapping of exactly the five `SCORE_NAMES` to float (N,) arrays
        (NaN/inf are kept: `NaN > 0` is False, so such a record fails that score);
      "features": float (N, 6) symmetry features;
      "valid": (N,) bool (or 0/1);
      "generator_id": str, the generator checkpoint's id;
      optionally "scorer_id": str, "UNET_ID/CLASSIFIER_ID" of the post-filter's models
        (`checkpoints.model_id`), whose measures these are;
      optionally "strictness": str, the post-filter level "scores" and "valid" are at;
      optionally "measures": mapping of the raw post-filter measures
        (`ScoreResult.measures`: shape, symmetry, log_ratio, abnormal_logit, maxheat,
        area_right, area_left) to float (N,) arrays, from which validity at any
        strictness follows (`Scorer.valid_at`) without generating again.
    source: name used in error messages (the file name when loading).
    latent_dim: expected width of z.

  Returns:
    A new dict with the same keys: z float32, group fixed-width unicode, scores
    float32 (in `SCORE_NAMES` order), features float32, valid bool, generator_id str.

  Raises:
    jaxcxr.data.DataError: a missing or unknown key, a wrong shape or dtype, an
      unknown group, or non-finite latents; the message names `source` and what
      was expected.
  """
  if not isinstance(records, Mapping):
    raise _fail(source, f"expected a mapping of latent records, got {type(records).__name__}")
  expected = {"z", "group", "scores", "features", "valid", "generator_id"}
  optional = {"measures", "scorer_id", "strictness"}
  missing, unknown = sorted(expected - set(records)), sorted(set(records) - expected - optional)
  if missing or unknown:
    raise _fail(source, f"expected keys {sorted(expected)}; missing {missing}, unknown {unknown}")
  z = np.asarray(records["z"])
  if z.ndim != 2 or z.shape[1] != latent_dim:
    raise _fail(source, f"z: expected shape (N, {latent_dim}), got {z.shape}")
  if not np.issubdtype(z.dtype, np.floating):
    raise _fail(source, f"z: expected floats, got dtype {z.dtype}")
  if not np.all(np.isfinite(z)):
    raise _fail(source, "z: expected finite latents, found NaN or inf")
  n = z.shape[0]

  def column(name: str, value: Any, *, floats: bool = False) -> np.ndarray:
    value = np.asarray(value)
    if value.shape != (n,):
      raise _fail(source, f"{name}: expected shape ({n},), got {value.shape}")
    if floats and not np.issubdtype(value.dtype, np.floating):
      raise _fail(source, f"{name}: expected floats, got dtype {value.dtype}")
    return value

  group = column("group", records["group"])
  if group.dtype.kind == "O" and all(isinstance(g, str) for g in group.tolist()):
    group = group.astype(str)                                         # e.g. a list of Python str via pandas
  if group.dtype.kind != "U":
    raise _fail(source, f"group: expected strings, got dtype {group.dtype}")
  bad = sorted(set(np.unique(group).tolist()) - set(GROUPS))
  if bad:
    raise _fail(source, f"group: unknown group(s) {bad[:5]}; expected one of {', '.join(GROUPS)}")
  scores = records["scores"]
  if not isinstance(scores, Mapping) or set(scores) != set(SCORE_NAMES):
    got = sorted(scores) if isinstance(scores, Mapping) else type(scores).__name__
    raise _fail(source, f"scores: expected exactly {list(SCORE_NAMES)}, got {got}")
  scores = {name: column(name, scores[name], floats=True).astype(np.float32) for name in SCORE_NAMES}
  features = np.asarray(records["features"])
  if features.shape != (n, FEATURE_DIM) or not np.issubdtype(features.dtype, np.floating):
    raise _fail(source, f"features: expected floats of shape ({n}, {FEATURE_DIM}), got {features.dtype} "
                f"{features.shape}")
  valid = column("valid", records["valid"])
  if valid.dtype != bool:
    if not np.all(np.isin(valid, (0, 1))):
      raise _fail(source, f"valid: expected bools (or 0/1), got dtype {valid.dtype}")
    valid = valid.astype(bool)
  generator_id = np.asarray(records["generator_id"])
  if generator_id.shape != () or generator_id.dtype.kind != "U":
    raise _fail(source, f"generator_id: expected one string, got {generator_id.dtype} {generator_id.shape}")
  out = {
      "z": z.astype(np.float32),
      "group": group,
      "scores": scores,
      "features": features.astype(np.float32),
      "valid": valid,
      "generator_id": str(generator_id),
  }
  if "measures" in records:
    measures = records["measures"]
    if not isinstance(measures, Mapping) or set(measures) != set(MEASURE_NAMES):
      got = sorted(measures) if isinstance(measures, Mapping) else type(measures).__name__
      raise _fail(source, f"measures: expected exactly {list(MEASURE_NAMES)}, got {got}")
    out["measures"] = {name: column(name, measures[name], floats=True).astype(np.float32) for name in MEASURE_NAMES}
  for name in ("scorer_id", "strictness"):
    if name in records:
      value = np.asarray(records[name])
      if value.shape != () or value.dtype.kind != "U":
        raise _fail(source, f"{name}: expected one string, got {value.dtype} {value.shape}")
      out[name] = str(value)
  return out


def scorer_id(scorer: Any) -> str | None:
  """"UNET_ID/CLASSIFIER_ID" of a scorer's models from its provenance, or None when it does not name them."""
  unet, classifier = scorer.provenance.get("unet_id"), scorer.provenance.get("classifier_id")
  return f"{unet}/{classifier}" if unet and classifier else None


def records_at_strictness(records: Mapping[str, Any], scorer: Any, strictness: str | float) -> dict[str, Any]:
  """The records with scores and `valid` at another strictness of `scorer`, from their stored measures.

  Args:
    records: a latent dataset with "measures" (`build_latent_dataset` stores them).
    scorer: the `jaxcxr.scoring.Scorer` (the same models) that measured them.
    strictness: a level name ("standard", "strict") or a fraction q (`Scorer.at_strictness`).

  Raises:
    jaxcxr.data.DataError: records without measures, or measured by other models than the scorer's.
    ValueError: an unknown strictness.
  """
  if "measures" not in records:
    raise DataError("this latent dataset holds no raw measures (built before strictness levels); rebuild it with "
                    "`jaxcxr latents build` to rescore it at another strictness")
  expected, stored = scorer_id(scorer), records.get("scorer_id")
  if expected and stored and expected != stored:
    raise DataError(f"the latent dataset was measured by post-filter models {stored}, not the scorer's {expected}; "
                    "rebuild it with this scorer")
  scores, valid = scorer.scores_at(records["measures"], strictness)
  return {**records, "scores": scores, "valid": valid, "strictness": scorer.at_strictness(strictness).strictness_name}


def records_at_scorer_level(records: Mapping[str, Any], scorer: Any) -> Mapping[str, Any]:
  """The records labelled at the level `scorer` runs at: rescored from their measures when their level
  differs; records without measures (built before strictness levels) are returned as built."""
  if "measures" in records and records.get("strictness") != scorer.strictness_name:
    return records_at_strictness(records, scorer, scorer.strictness)
  return records


def save_latent_dataset(path: str | os.PathLike, records: Mapping[str, Any], *,
                        latent_dim: int = LATENT_DIM) -> pathlib.Path:
  """Validates and writes a latent dataset as a compressed npz, atomically.

  The npz holds flat arrays: "z" float32 (N, latent_dim), "group" fixed-width
  unicode (N,), one float32 (N,) array per score name, "features" float32 (N, 6),
  "valid" bool (N,), "generator_id" a 0-d unicode array. No pickled objects.

  Args:
    path: the file to write (written exactly there, no suffix added); parent
      folders are created.
    records: as `validate_latent_records`.
    latent_dim: expected width of z.

  Returns:
    The path written.

  Raises:
    jaxcxr.data.DataError: as `validate_latent_records` (nothing is written).
  """
  records = validate_latent_records(records, source=str(path), latent_dim=latent_dim)
  arrays = {"z": records["z"], "group": records["group"], **records["scores"],
            "features": records["features"], "valid": records["valid"],
            "generator_id": np.asarray(records["generator_id"], dtype=str),
            **{f"measure_{k}": v for k, v in records.get("measures", {}).items()},
            **{name: np.asarray(records[name], dtype=str) for name in ("scorer_id", "strictness") if name in records}}
  return save_npz(path, arrays, compressed=True)


def load_latent_dataset(path: str | os.PathLike, *, latent_dim: int = LATENT_DIM) -> dict[str, Any]:
  """Reads a latent dataset written by `save_latent_dataset` (`allow_pickle=False`).

  Args:
    path: the npz file.
    latent_dim: expected width of z.

  Returns:
    The records as `validate_latent_records` returns them.

  Raises:
    jaxcxr.data.DataError: the file is missing or not an npz, holds object arrays,
      misses keys, or fails `validate_latent_records`; the message names the file.
  """
  source = str(path)
  keys = ("z", "group", *SCORE_NAMES, "features", "valid", "generator_id")
  try:
    with open(path, "rb") as f:     # ours to close: np.load leaks its own handle on a corrupt zip
      loaded = np.load(f, allow_pickle=False)
      if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise _fail(source, "expected an npz archive of a latent dataset, got a single .npy array")
      with loaded as npz:
        missing = [k for k in keys if k not in npz.files]
        if missing:
          raise _fail(source, f"not a latent dataset: missing array(s) {missing}; expected {list(keys)}")
        arrays = {k: npz[k] for k in keys}
        measures = {k: npz[f"measure_{k}"] for k in MEASURE_NAMES if f"measure_{k}" in npz.files}
        tags = {name: npz[name] for name in ("scorer_id", "strictness") if name in npz.files}
  except DataError:
    raise
  except FileNotFoundError:
    raise _fail(source, "no such file") from None
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise _fail(source, f"not a readable npz latent dataset without pickled objects ({e})") from None
  records = {"z": arrays["z"], "group": arrays["group"], "scores": {k: arrays[k] for k in SCORE_NAMES},
             "features": arrays["features"], "valid": arrays["valid"], "generator_id": arrays["generator_id"]}
  if measures:
    records["measures"] = measures
  records.update(tags)
  return validate_latent_records(records, source=source, latent_dim=latent_dim)


def latent_targets(records: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The label sources of `cross_validate_latent`: {"valid": (N,) bool, score name: (N,) float32}.

  Raises:
    jaxcxr.data.DataError: records without `valid` or `scores` (see `validate_latent_records`).
  """
  if not isinstance(records, Mapping) or "valid" not in records or not isinstance(records.get("scores"), Mapping):
    raise _fail("records", "expected latent records with `valid` and `scores` (see validate_latent_records)")
  return {"valid": np.asarray(records["valid"]), **{k: np.asarray(v) for k, v in records["scores"].items()}}


# ============================================================================ building latent datasets


def build_latent_dataset(scorer: Any, generator: Any, key: jax.Array, n_per_group: int, *, generator_id: str,
                         groups: Sequence[str] = GROUPS, label: int = 0, progress: bool = False,
                         parts_dir: str | os.PathLike | None = None, chunk_size: int | None = None) -> dict[str, Any]:
  """Generates and post-scores `n_per_group` latents per age-sex group: a latent dataset (docs/scores.md).

  Group `g` (its index in `jaxcxr.data.GROUPS`) uses the key `jax.random.fold_in(key, g)`,
  and its record j holds z = `models.generator.latents(fold_in(key, g), j)`, so a
  group's records do not depend on which other groups or how many records are
  built (record j of a 100-per-group build is record j of a 10k-per-group build).
  Each batch is one compiled call of `Scorer.generate_and_score(..., keep_images=False)`.

  With `parts_dir`, each chunk of `chunk_size` records of a group is saved there as it is
  built (`GROUP_START.npz`, atomically) and a chunk already there is read instead of built,
  so a build killed at any moment resumes and returns the records of an uninterrupted one
  (the chunks start at multiples of the scorer's batch size, so every batch holds the same
  latents as in one pass). The caller owns the folder (it must hold chunks of this very
  build: same scorer, generator, key and label).

  Args:
    scorer: a `jaxcxr.scoring.Scorer` (the post-filter that labels each latent).
    generator: a `jaxcxr.models.generator.Generator`.
    key: PRNG key of the latents.
    n_per_group: records per group (>= 1).
    generator_id: `checkpoints.model_id` of the generator's checkpoint (stored with the data).
    groups: group names to build, each in `GROUPS`.
    label: 0 normal / 1 abnormal condition (only for a label-conditioned generator).
    progress: tqdm bars on stderr.
    parts_dir: folder of the saved chunks (created), or None to keep nothing.
    chunk_size: records per saved chunk, rounded up to a multiple of the scorer's batch size
      (default: a whole group per chunk).

  Returns:
    Records as `validate_latent_records` returns them: "z" float32 (N, latent_dim),
    "group" (N,) str, "scores" {name: float32 (N,)} (> 0 good), "features" float32
    (N, 6), "valid" bool (N,), "generator_id" str; N = n_per_group * len(groups),
    grouped in the order of `groups`.

  Raises:
    ValueError: n_per_group < 1 or no groups. jaxcxr.data.DataError: an unknown group.
  """
  if n_per_group < 1:
    raise ValueError(f"build_latent_dataset: n_per_group must be >= 1, got {n_per_group}")
  if not groups:
    raise ValueError("build_latent_dataset: no groups")
  for name in groups:
    if name not in GROUPS:
      raise DataError(f"unknown group {name!r}; expected one of {', '.join(GROUPS)}")
  batch = int(getattr(getattr(scorer, "config", None), "batch_size", 1))
  size = n_per_group if chunk_size is None else min(n_per_group, -(-max(int(chunk_size), 1) // batch) * batch)
  parts_dir = None if parts_dir is None else pathlib.Path(parts_dir)
  parts = []
  for name in groups:
    group_key = jax.random.fold_in(key, GROUPS.index(name))
    for start in range(0, n_per_group, size):
      path = None if parts_dir is None else parts_dir / f"{name}_{start:07d}.npz"
      if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as saved:
          parts.append({k: saved[k] for k in saved.files})
        continue
      out = scorer.generate_and_score(generator, group_key, min(size, n_per_group - start), name, label=label,
                                      start=start, keep_images=False, progress=progress)
      part = {"z": out.z, "features": out.result.features, "valid": out.result.valid,
              **{f"score_{k}": out.result.scores[k] for k in SCORE_NAMES},
              **{f"measure_{k}": out.result.measures[k] for k in MEASURE_NAMES}}
      if path is not None:
        save_npz(path, part)
      parts.append(part)
  joined = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
  records = {
      "z": joined["z"],
      "group": np.concatenate([np.full(n_per_group, name) for name in groups]),
      "scores": {k: joined[f"score_{k}"] for k in SCORE_NAMES},
      "features": joined["features"],
      "valid": joined["valid"],
      "generator_id": str(generator_id),
      "measures": {k: joined[f"measure_{k}"] for k in MEASURE_NAMES},
  }
  if scorer_id(scorer):
    records["scorer_id"] = scorer_id(scorer)
  if hasattr(scorer, "strictness_name"):
    records["strictness"] = scorer.strictness_name
  return validate_latent_records(records, latent_dim=generator.config.latent_dim)


def latent_dataset_summary(records: Mapping[str, Any]) -> dict[str, Any]:
  """Counts and valid rates: {"n", "n_valid", "valid_rate", "generator_id", "groups": {name: {...}}}."""
  group, valid = np.asarray(records["group"]), np.asarray(records["valid"], bool)
  per_group = {}
  for name in [g for g in GROUPS if g in set(group.tolist())]:
    member = group == name
    per_group[name] = {"n": int(member.sum()), "n_valid": int(valid[member].sum()),
                       "valid_rate": float(valid[member].mean())}
  return {"n": int(valid.shape[0]), "n_valid": int(valid.sum()),
          "valid_rate": float(valid.mean()) if valid.size else 0.0,
          "generator_id": str(records["generator_id"]), "groups": per_group}
