"""`jaxcxr data stats` and `jaxcxr data dedup`: what an archive of radiographs holds."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
from tqdm import tqdm

from jaxcxr import data, imaging, io
from jaxcxr.cli import inputs
from jaxcxr.cli.common import NIH_DATA, UsageError, log

__all__ = ["HANDLERS"]


def run_stats(args: argparse.Namespace) -> dict[str, Any]:
  """`data stats`: counts per group and label, mean/std images per class."""
  path = inputs.data_path(args.data, NIH_DATA)
  log(f"loading {path}")
  ds = data.load(path)
  groups = ds.groups
  label_names = {0: "normal", 1: "abnormal", -1: "unknown"}
  per_group = {}
  for g, name in enumerate(data.GROUPS):
    in_group = groups == g
    per_group[name] = {label_names[v]: int(np.sum(in_group & (ds.label == v))) for v in (0, 1)}
    per_group[name]["total"] = int(in_group.sum())
  result: dict[str, Any] = {
      "file": str(path),
      "n": len(ds),
      "n_patients": int(np.unique(ds.patient_id).size),
      "labels": {label_names[int(v)]: int(np.sum(ds.label == v)) for v in np.unique(ds.label)},
      "sex": {str(s): int(np.sum(ds.sex == s)) for s in np.unique(ds.sex)},
      "age": {"min": int(ds.age[ds.age >= 0].min()) if (ds.age >= 0).any() else None,
              "median": float(np.median(ds.age[ds.age >= 0])) if (ds.age >= 0).any() else None,
              "unknown": int(np.sum(ds.age < 0))},
      "groups": per_group,
      "outside_groups": int(np.sum(groups < 0)),
      "has_lung_masks": ds.lung_masks is not None,
      "images": {},
  }
  if args.out:
    out = io.prepare_output_dir(args.out, overwrite=args.overwrite)
    for v in np.unique(ds.label):
      pixels = ds.images[ds.label == v].astype(np.float64)
      mean, std = pixels.mean(axis=0), pixels.std(axis=0)
      name = label_names[int(v)]
      std_scale = float(max(std.max(), 1e-12))
      io.save_png(out / f"mean_{name}.png", np.round(mean).astype(np.uint8))
      # The std image is stretched to the full 8-bit range; `std_max` gives the scale.
      io.save_png(out / f"std_{name}.png", np.round(std / std_scale * 255).astype(np.uint8))
      result["images"][name] = {"mean": str(out / f"mean_{name}.png"), "std": str(out / f"std_{name}.png"),
                                "std_max": std_scale}
    log(f"wrote mean/std images to {out}")
  return result


def human_stats(r: dict[str, Any]) -> str:
  lines = [f"{r['file']}: {r['n']} images, {r['n_patients']} patients",
           "labels: " + ", ".join(f"{k} {v}" for k, v in r["labels"].items()),
           "sex: " + ", ".join(f"{k} {v}" for k, v in r["sex"].items()),
           f"{'group':8s} {'normal':>7s} {'abnormal':>9s} {'total':>6s}"]
  for name, c in r["groups"].items():
    lines.append(f"{name:8s} {c['normal']:7d} {c['abnormal']:9d} {c['total']:6d}")
  lines.append(f"outside the six groups: {r['outside_groups']}")
  for name, paths in r["images"].items():
    lines.append(f"{name}: {paths['mean']}, {paths['std']}")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- data dedup


def run_dedup(args: argparse.Namespace) -> dict[str, Any]:
  """`data dedup`: near-duplicate pairs by perceptual hash."""
  path = inputs.data_path(args.data, NIH_DATA)
  if args.max_distance < 0:
    raise UsageError(f"--max-distance must be >= 0, got {args.max_distance}")
  log(f"loading {path}")
  ds = data.load(path)
  hash_fn = getattr(imaging, f"{args.hash}_hash")
  batch = 256
  hashes = []
  for start in tqdm(range(0, len(ds), batch), desc=f"{args.hash} hash", unit="batch", file=sys.stderr,
                    disable=not sys.stderr.isatty()):
    hashes.append(np.asarray(hash_fn(data.to_unit(ds.images[start:start + batch]))))
  hashes = np.concatenate(hashes)
  pairs = imaging.find_near_duplicates(hashes, max_distance=args.max_distance)
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
  return {"file": str(path), "n": len(ds), "hash": args.hash, "max_distance": args.max_distance,
          "n_pairs": len(rows), "pairs": rows}


def human_dedup(r: dict[str, Any]) -> str:
  lines = [f"{r['file']}: {r['n']} images, {r['n_pairs']} near-duplicate pair(s) "
           f"({r['hash']} hash, Hamming distance <= {r['max_distance']})"]
  for p in r["pairs"]:
    names = f" {p.get('source_i', '')} {p.get('source_j', '')}" if "source_i" in p else ""
    lines.append(f"  {p['i']:6d} {p['j']:6d}  distance {p['distance']:2d}  ssim {p['ssim']:.3f}"
                 f"{'  same patient' if p['same_patient'] else ''}{names}")
  return "\n".join(lines)


# Subcommand name: (handler, human formatter).
HANDLERS = {"stats": (run_stats, human_stats), "dedup": (run_dedup, human_dedup)}
