"""`jaxcxr data stats` and `jaxcxr data dedup`: what an archive of radiographs holds."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jaxcxr import data, dataset_audit
from jaxcxr.cli import inputs
from jaxcxr.cli.common import NIH_DATA, UsageError, log

__all__ = ["HANDLERS"]


def run_stats(args: argparse.Namespace) -> dict[str, Any]:
  """`data stats`: counts per group and label, mean/std images per class (`dataset_audit.describe_dataset`)."""
  path = inputs.data_path(args.data, NIH_DATA)
  log(f"loading {path}")
  result = dataset_audit.describe_dataset(data.load(path), image_dir=args.out, overwrite=args.overwrite)
  if args.out:
    log(f"wrote mean/std images to {args.out}")
  return {"file": str(path), **result}


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
  """`data dedup`: near-duplicate pairs by perceptual hash (`dataset_audit.near_duplicates`)."""
  path = inputs.data_path(args.data, NIH_DATA)
  if args.max_distance < 0:
    raise UsageError(f"--max-distance must be >= 0, got {args.max_distance}")
  log(f"loading {path}")
  ds = data.load(path)
  rows = dataset_audit.near_duplicates(ds, hash_name=args.hash, max_distance=args.max_distance,
                                       progress=sys.stderr.isatty())
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
