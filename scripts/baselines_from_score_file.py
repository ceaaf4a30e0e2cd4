"""The trivial baselines beside a stored anomaly score file, without scoring the images again.

    JAXCXR_DATA=... python scripts/baselines_from_score_file.py SCORES.npz OUT.json [--split test]

SCORES.npz is what `jaxcxr evaluate anomaly --scores` wrote (for instance
checkpoints/gan_256_normal/anogan/scores_lungs_test.npz, whose AnoGAN search took 40 minutes). The
images it scored are rebuilt as `jaxcxr evaluate anomaly` builds them (the NIH pneumonia task of
both archives, `--split` patients) and checked against the file's patient ids and labels, image by
image; then the baselines are fitted on the task's training patients and compared with the
stored scores as `evaluate anomaly` does (DeLong's paired test, per view; lungs of the shipped
U-Net). Writes {"score_file", "roc_auc", "baselines"}.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

import numpy as np

from jaxcxr import baselines, data, evaluation_sets, metrics, pretrained

ARCHIVES = ("nih_cxr14_subset_256.npz", "nih_cxr14_extra_256.npz")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("scores")
  parser.add_argument("out")
  parser.add_argument("--split", default="test", choices=("val", "test"))
  args = parser.parse_args()
  stored = np.load(args.scores)
  nih = data.load(",".join(os.path.join(os.environ["JAXCXR_DATA"], name) for name in ARCHIVES))
  task = evaluation_sets.anomaly_task(nih)
  evaluated, train = task.part(args.split), task.part("train")
  if not (np.array_equal(evaluated.patient_id.astype(str), stored["patient_id"])
          and np.array_equal(evaluated.label, stored["labels"])):
    raise SystemExit(f"{args.scores}: its images are not the {args.split} part of the pneumonia task, in order")
  scores, labels = stored["scores"], stored["labels"]
  report = baselines.compare_with_training_patients(scores, labels, evaluated, train, train.label,
                                                    lung_masks=pretrained.lung_masker(), method="stored scores")
  out = {"score_file": args.scores, "split": args.split, "n": int(len(scores)),
         "roc_auc": float(metrics.compute_roc_auc(scores, labels)), "baselines": report}
  pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
  print(baselines.format_comparison(report, by_view=True))


if __name__ == "__main__":
  main()
