"""Validation curve of a HealthyGAN training run: its anomaly ROC AUC against steps and hours.

    JAXCXR_DATA=... python scripts/healthygan_curve.py --run training_state/healthygan_64_long --every 200 \
        [--preset healthygan_64_cpu] [--watch] [--plot curve.png]

`--preset` names the run's preset (the architecture its checkpoints are restored into).

For each training checkpoint of `--run` (a `jaxcxr train healthygan` folder) at a multiple of
`--every` steps, the translator of that step scores the pneumonia task's validation patients
(`evaluation_sets.anomaly_task(...).part("val")` of both NIH archives: normal against pneumonia,
the patients `jaxcxr evaluate anomaly --split val` uses), as `evaluate anomaly --method healthygan`
scores them: the whole-image score and the residual inside `unet_256`'s lungs (the shipped
setting). One JSON line per checkpoint goes to `RUN/curve.jsonl` (step, training hours, the two
ROC AUCs with DeLong intervals); `--watch` keeps polling for new checkpoints (a run still
training); `--plot PNG` draws the curve. Validation patients only: the test patients stay unseen.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import jax
import matplotlib
import numpy as np
from flax import nnx

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

from jaxcxr import checkpoints, data, evaluation_sets, metrics  # pylint: disable=wrong-import-position
from jaxcxr import config as config_lib  # pylint: disable=wrong-import-position
from jaxcxr import io as io_lib  # pylint: disable=wrong-import-position
from jaxcxr.anomaly.healthygan import healthygan_scores  # pylint: disable=wrong-import-position
from jaxcxr.anomaly.scorer import lung_residual_scores  # pylint: disable=wrong-import-position
from jaxcxr.models.healthygan import Translator  # pylint: disable=wrong-import-position
from jaxcxr.models.unet import load_unet, predict_masks  # pylint: disable=wrong-import-position
from jaxcxr.train import healthygan  # pylint: disable=wrong-import-position


def _auc(score: np.ndarray, y: np.ndarray) -> dict:
  ci = metrics.compute_roc_auc_ci(score, y)
  return {"roc_auc": ci["roc_auc"], "ci95": [ci["low"], ci["high"]]}


def evaluate_step(run: pathlib.Path, step: int, config, val: data.CXRDataset, masks: np.ndarray) -> dict:
  manager = checkpoints.TrainCheckpointer(run / "checkpoints")
  state = manager.restore(jax.eval_shape(lambda: healthygan.init_train_state(config, 0)), step)
  seconds = manager.read_metadata(step).get("train_seconds")
  translator = nnx.merge(nnx.graphdef(nnx.eval_shape(lambda: Translator(config.translator, rngs=nnx.Rngs(0)))),
                         state["t"])
  out = healthygan_scores(translator, val, progress=False)
  y = np.asarray(val.label, np.int64)
  return {"step": step, "train_hours": None if seconds is None else seconds / 3600,
          "lungs": _auc(lung_residual_scores(out.residual, masks), y), "whole_image": _auc(out.score, y),
          "n": int(len(y)), "n_pneumonia": int(y.sum())}


def plot_curve(records: list[dict], path: pathlib.Path, title: str) -> pathlib.Path:
  records = sorted(records, key=lambda r: r["step"])
  steps = [r["step"] for r in records]
  fig, ax = plt.subplots(figsize=(7, 4))
  for key, colour in (("lungs", "C0"), ("whole_image", "C1")):
    auc = [r[key]["roc_auc"] for r in records]
    low, high = [r[key]["ci95"][0] for r in records], [r[key]["ci95"][1] for r in records]
    ax.plot(steps, auc, "o-", color=colour, label=key.replace("_", " "))
    ax.fill_between(steps, low, high, color=colour, alpha=0.15)
  ax.set_xlabel("training step")
  ax.set_ylabel("validation ROC AUC (95% DeLong)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", required=True, help="a `jaxcxr train healthygan` run folder")
  parser.add_argument("--preset", default="healthygan_64_cpu", help="the run's preset")
  parser.add_argument("--data", default=",".join(str(pathlib.Path(os.environ.get("JAXCXR_DATA", "data")) / f)
                                                  for f in ("nih_cxr14_subset_256.npz", "nih_cxr14_extra_256.npz")))
  parser.add_argument("--unet", default="checkpoints/unet_256/unet", help="the U-Net whose lungs mask the residual")
  parser.add_argument("--every", type=int, default=200, help="evaluate checkpoints at multiples of this step")
  parser.add_argument("--watch", action="store_true", help="keep polling for new checkpoints")
  parser.add_argument("--plot", help="PNG of the curve, drawn after the evaluations (with --watch: after each)")
  args = parser.parse_args()
  run = pathlib.Path(args.run)
  config = config_lib.PRESETS[args.preset]()
  val = evaluation_sets.anomaly_task(data.load(args.data.split(","))).part("val")
  masks = predict_masks(load_unet(args.unet), val.images)
  curve_path = run / "curve.jsonl"
  while True:
    done = {r["step"] for r in io_lib.read_json_lines(curve_path)} if curve_path.exists() else set()
    steps = checkpoints.TrainCheckpointer(run / "checkpoints").all_steps()
    for step in [s for s in steps if s % args.every == 0 and s not in done]:
      record = evaluate_step(run, step, config, val, masks)
      io_lib.append_json_line(curve_path, record)
      print(json.dumps(record), flush=True)
    if args.plot and curve_path.exists():
      plot_curve(io_lib.read_json_lines(curve_path), pathlib.Path(args.plot), f"{run.name}: pneumonia vs normal")
    if not args.watch:
      break
    time.sleep(60)


if __name__ == "__main__":
  main()
