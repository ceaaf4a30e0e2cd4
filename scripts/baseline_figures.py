"""The trivial baselines on real radiographs, before and after exposure normalisation (issues 24 and 26).

    python scripts/baseline_figures.py --data DIR/nih_cxr14_subset_256.npz --out runs/baselines_nih_val.json

Fits the baselines of `jaxcxr.baselines` (every image statistic with its sign, the statistics
logistic regression, the 32x32 pixel logistic regression) on the training patients of
`data.standard_split` and reports their ROC AUCs (DeLong 95% intervals) on the validation
patients, overall and per view (AP/PA). Then it does the same after `jaxcxr.exposure`
histogram standardisation of every image's body region to the training normals' reference
(the baselines refitted on the normalised training images). The top statistics are ranked
by validation AUC for this report only; the "statistic" baseline is chosen on training.
Abnormal means pneumonia (`data.keep_abnormal_finding`).

With `--unet DIR` (e.g. checkpoints/unet_256/unet), the lungs the U-Net predicts add the lung
statistics, and a third variant normalises inside the predicted lungs instead of the body.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from jaxcxr import baselines, data, exposure

TOP = 5


def _summary(report: dict) -> dict:
  """The figures a reader wants first: the baselines, the top statistics, and how far statistics sit from 0.5."""
  stats = report["statistics"]
  ranked = sorted(stats, key=lambda name: -stats[name]["roc_auc"])
  summary = {
      "baselines": {name: {"roc_auc": b["roc_auc"], "roc_auc_ci95": b["roc_auc_ci95"], "description": b["description"]}
                    for name, b in report["baselines"].items()},
      "top_statistics_by_val_auc": {name: stats[name]["roc_auc"] for name in ranked[:TOP]},
      "mean_abs_auc_minus_half": float(np.mean([abs(s["roc_auc"] - 0.5) for s in stats.values()])),
      "by_view": {},
  }
  for view, entry in (report.get("by_view") or {}).items():
    vstats = entry["statistics"]
    vranked = sorted((n for n in vstats if vstats[n]["roc_auc"] is not None), key=lambda n: -vstats[n]["roc_auc"])
    summary["by_view"][view] = {
        "n": entry["n"], "n_positive": entry["n_positive"],
        "baselines": {name: b["roc_auc"] for name, b in entry["baselines"].items()},
        "top_statistics_by_val_auc": {name: vstats[name]["roc_auc"] for name in vranked[:TOP]},
    }
  return summary


def _print(title: str, summary: dict) -> None:
  print(f"\n{title}")
  for name, b in summary["baselines"].items():
    ci = b["roc_auc_ci95"]
    print(f"  {name:18s} {b['description']:24s} AUC {b['roc_auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]")
  print("  top statistics (validation AUC, train-fitted sign): " +
        ", ".join(f"{n} {a:.3f}" for n, a in summary["top_statistics_by_val_auc"].items()))
  print(f"  mean |AUC - 0.5| over all statistics: {summary['mean_abs_auc_minus_half']:.3f}")
  for view, v in summary["by_view"].items():
    print(f"  {view} (n = {v['n']}, {v['n_positive']} pneumonia): " +
          ", ".join(f"{n} {a:.3f}" for n, a in v["baselines"].items()) + "; top: " +
          ", ".join(f"{n} {a:.3f}" for n, a in list(v["top_statistics_by_val_auc"].items())[:3]))


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data", default=None,
                      help="npz archive(s), comma-separated (default: $JAXCXR_DATA/nih_cxr14_subset_256.npz)")
  parser.add_argument("--out", default="runs/baselines_nih_val.json", help="JSON report")
  parser.add_argument("--split", default="val", choices=("val", "test"), help="the patients to report on")
  parser.add_argument("--pixel-size", type=int, default=32)
  parser.add_argument("--unet", default=None, help="a lung U-Net checkpoint: lung statistics and lung normalisation")
  args = parser.parse_args(argv)
  path = args.data or str(data.default_data_path("nih_cxr14_subset_256.npz"))
  start = time.perf_counter()
  ds = data.keep_abnormal_finding(data.load(path))
  parts = data.standard_split(ds)
  train, evaluated = ds.subset(parts["train"]), ds.subset(parts[args.split])
  for name, part in (("train", train), (args.split, evaluated)):
    if not np.isin(part.label, (0, 1)).all():
      raise data.DataError(f"{path}: the {name} images need labels 0/1 only")
  views = data.views(evaluated)
  masks = {"train": None, "evaluated": None}
  if args.unet:
    from jaxcxr.models.unet import load_unet, predict_masks  # pylint: disable=g-import-not-at-top

    unet = load_unet(args.unet)
    masks = {"train": predict_masks(unet, train.images), "evaluated": predict_masks(unet, evaluated.images)}
  reports = {}
  with threadpool_limits(1):
    fitted = baselines.fit_baselines(train.images, train.label, masks=masks["train"], patients=train.patient_id,
                                     pixel_size=args.pixel_size)
    reports["raw"] = baselines.evaluate_baselines(fitted, evaluated.images, evaluated.label, views=views,
                                                  masks=masks["evaluated"])
    variants = {"exposure_normalised": None, **({"exposure_normalised_lungs": "lungs"} if args.unet else {})}
    references, seconds = {}, {}
    for key, region in variants.items():
      normal_masks = None if region is None else masks["train"][train.label == 0]
      reference = exposure.fit_reference(train.images[train.label == 0], normal_masks)
      references[key] = reference.to_dict()
      t0 = time.perf_counter()
      normalised_train = exposure.normalise(train.images, reference, None if region is None else masks["train"])
      normalised = exposure.normalise(evaluated.images, reference, None if region is None else masks["evaluated"])
      seconds[key] = time.perf_counter() - t0
      fitted = baselines.fit_baselines(normalised_train, train.label, masks=masks["train"],
                                       patients=train.patient_id, pixel_size=args.pixel_size)
      reports[key] = baselines.evaluate_baselines(fitted, normalised, evaluated.label, views=views,
                                                  masks=masks["evaluated"])
  result = {
      "command": "python scripts/baseline_figures.py " + " ".join(sys.argv[1:] if argv is None else argv),
      "data": path,
      "data_sha256": {p: data.file_sha256(p) for p in path.split(",")},
      "task": "pneumonia (1) vs no finding (0)",
      "split": f"data.standard_split: baselines fitted on train, reported on {args.split}",
      "n_train": len(train), "n_train_positive": int(train.label.sum()),
      "n_evaluated": len(evaluated), "n_evaluated_positive": int(evaluated.label.sum()),
      "lung_masks": f"predicted by {args.unet}" if args.unet else None,
      "exposure_references": references,
      "exposure_seconds": seconds, "exposure_images": len(train) + len(evaluated),
      "summary": {k: _summary(r) for k, r in reports.items()},
      **reports,
      "seconds": time.perf_counter() - start,
  }
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1) + "\n")
  print(f"{len(train)} training and {len(evaluated)} {args.split} images ({path}); report in {out}")
  titles = {"raw": "raw images",
            "exposure_normalised": "after exposure normalisation (body region, training normals' reference)",
            "exposure_normalised_lungs": "after exposure normalisation (predicted lungs, training normals' reference)"}
  for key in reports:
    _print(titles[key], result["summary"][key])
  return 0


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.exit(main())
