"""What an archive of radiographs holds: counts per group and label, per-class mean/std images, near-duplicates.

The library side of `jaxcxr data stats` (`describe_dataset`) and `jaxcxr data dedup`
(`near_duplicates`). Images are uint8 (N, H, W) as stored in a `jaxcxr.data.CXRDataset`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
from tqdm import tqdm

from jaxcxr import data, imaging, io

__all__ = ["HASHES", "LABEL_NAMES", "describe_dataset", "near_duplicates"]

# Name of each label value in the summaries.
LABEL_NAMES = {0: "normal", 1: "abnormal", -1: "unknown"}
# The perceptual hashes of `jaxcxr.imaging` (`{name}_hash`) that `near_duplicates` can use.
HASHES = ("average", "difference", "perceptual", "wavelet")


def describe_dataset(ds: data.CXRDataset, *, image_dir: str | os.PathLike | None = None,
                     overwrite: bool = False) -> dict[str, Any]:
  """Counts of a dataset per label, sex, age and age-sex group; optionally each class's mean and std image.

  Args:
    ds: the dataset.
    image_dir: a folder for `mean_<class>.png` and `std_<class>.png` per label value (not written
      when None). The std image is stretched to the full 8-bit range; `std_max` gives the scale.
    overwrite: replace a non-empty `image_dir`.

  Returns:
    {"n", "n_patients", "labels", "sex", "age": {"min", "median", "unknown"}, "groups": {group:
    {"normal", "abnormal", "total"}}, "outside_groups", "has_lung_masks", "images": {class:
    {"mean", "std", "std_max"}} (empty without `image_dir`)}.

  Raises:
    FileExistsError: `image_dir` is not empty and `overwrite` is False.
  """
  groups = ds.groups
  per_group = {}
  for g, name in enumerate(data.GROUPS):
    in_group = groups == g
    per_group[name] = {LABEL_NAMES[v]: int(np.sum(in_group & (ds.label == v))) for v in (0, 1)}
    per_group[name]["total"] = int(in_group.sum())
  known_age = ds.age >= 0
  result: dict[str, Any] = {
      "n": len(ds),
      "n_patients": int(np.unique(ds.patient_id).size),
      "labels": {LABEL_NAMES[int(v)]: int(np.sum(ds.label == v)) for v in np.unique(ds.label)},
      "sex": {str(s): int(np.sum(ds.sex == s)) for s in np.unique(ds.sex)},
      "age": {"min": int(ds.age[known_age].min()) if known_age.any() else None,
              "median": float(np.median(ds.age[known_age])) if known_age.any() else None,
              "unknown": int(np.sum(ds.age < 0))},
      "groups": per_group,
      "outside_groups": int(np.sum(groups < 0)),
      "has_lung_masks": ds.lung_masks is not None,
      "images": {},
  }
  if image_dir is not None:
    out = io.prepare_output_dir(image_dir, overwrite=overwrite)
    for v in np.unique(ds.label):
      pixels = ds.images[ds.label == v].astype(np.float64)
      mean, std = pixels.mean(axis=0), pixels.std(axis=0)
      name = LABEL_NAMES[int(v)]
      std_scale = float(max(std.max(), 1e-12))
      io.save_png(out / f"mean_{name}.png", np.round(mean).astype(np.uint8))
      io.save_png(out / f"std_{name}.png", np.round(std / std_scale * 255).astype(np.uint8))
      result["images"][name] = {"mean": str(out / f"mean_{name}.png"), "std": str(out / f"std_{name}.png"),
                                "std_max": std_scale}
  return result


def near_duplicates(ds: data.CXRDataset, *, hash_name: str = "perceptual", max_distance: int = 5,
                    batch_size: int = 256, progress: bool = False) -> list[dict[str, Any]]:
  """Pairs of images whose perceptual hashes differ in at most `max_distance` bits.

  Args:
    ds: the dataset.
    hash_name: one of `HASHES` (`jaxcxr.imaging.<name>_hash`).
    max_distance: the largest Hamming distance of a pair (>= 0).
    batch_size: images hashed per call.
    progress: a tqdm bar on stderr.

  Returns:
    One row per pair i < j: {"i", "j", "distance" (Hamming), "ssim", "same_patient"}, and
    "source_i", "source_j" when the archive has `source_id`s.

  Raises:
    ValueError: an unknown hash, or a negative `max_distance`.
  """
  if hash_name not in HASHES:
    raise ValueError(f"near_duplicates: unknown hash {hash_name!r}; expected one of {', '.join(HASHES)}")
  hash_fn = getattr(imaging, f"{hash_name}_hash")
  hashes = []
  for start in tqdm(range(0, len(ds), batch_size), desc=f"{hash_name} hash", unit="batch", file=sys.stderr,
                    disable=not progress):
    hashes.append(np.asarray(hash_fn(data.to_unit(ds.images[start:start + batch_size]))))
  hashes = np.concatenate(hashes)
  pairs = imaging.find_near_duplicates(hashes, max_distance=max_distance)
  distances = (np.asarray(imaging.hamming_distances(hashes[pairs[:, 0]], hashes[pairs[:, 1]])).diagonal()
               if len(pairs) else np.zeros(0, np.int32))
  ssim = (np.asarray(imaging.ssim(data.to_unit(ds.images[pairs[:, 0]]), data.to_unit(ds.images[pairs[:, 1]])))
          if len(pairs) else np.zeros(0))
  source = ds.extra.get("source_id")
  rows = []
  for (i, j), dist, s in zip(pairs.tolist(), distances.tolist(), ssim.tolist()):
    row = {"i": i, "j": j, "distance": int(dist), "ssim": float(s),
           "same_patient": bool(ds.patient_id[i] == ds.patient_id[j])}
    if source is not None:
      row["source_i"], row["source_j"] = str(source[i]), str(source[j])
    rows.append(row)
  return rows
