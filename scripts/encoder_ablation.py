"""Ablation of the CXR encoder's self-supervised methods at an equal CPU budget, with linear probes.

Each method of `jaxcxr.train.cxr_encoder.METHODS` (or those named) trains the same encoder from
the same initial weights on the same pretraining images (`development_data`: every development
image, test patients of every archive held out) until its process CPU time, after the first
(compiling) call, reaches the budget; CPU time rather than wall time, because the machine is
shared and the wall time of a run depends on its neighbours. Then a linear probe (`linear_probe`)
of its global embedding is fitted on the training patients and scored on the validation patients
for pneumonia and sex, beside two controls on the same patients: the pixel logistic regression
(32x32 block means, `jaxcxr.train.classifier.fit_pixel_logreg`) and the randomly initialised
encoder. Each probe is compared with the pixel baseline by DeLong's paired test.

    JAXCXR_DATA=/work/shared/data nice -n 5 python scripts/encoder_ablation.py \
        --cpu-seconds 600 --out runs/encoder_ablation.json

The table is rewritten after every row, so a killed run keeps the rows it finished.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

from jaxcxr import data as data_lib
from jaxcxr import io as io_lib
from jaxcxr import metrics as metrics_lib
from jaxcxr.models.cxr_encoder import embed_images, prepare_images
from jaxcxr.train import cxr_encoder as ce
from jaxcxr.train.classifier import fit_pixel_logreg


def _probe_rows(encoder, tasks, batch_size=64):
  """{task: (linear_probe result, validation probabilities)} of the encoder's embedding."""
  out = {}
  for task in tasks:
    train_x = embed_images(encoder, task.train_images, batch_size=batch_size)
    val_x = embed_images(encoder, task.val_images, batch_size=batch_size)
    out[task.name] = ce.linear_probe(train_x, task.train_y, task.train_patients, val_x, task.val_y)
  return out


def _pixel_baseline(task: ce.ProbeTask):
  n = len(task.train_y)
  train = data_lib.CXRDataset(images=task.train_images, label=task.train_y.astype(np.int8),
                              sex=np.full(n, "U"), age=np.full(n, -1, np.int16),
                              patient_id=task.train_patients.astype(str))
  model = fit_pixel_logreg(train, task.train_y)
  prob = model.predict_proba(task.val_images)
  ci = metrics_lib.compute_roc_auc_ci(prob, task.val_y)
  return {"roc_auc": ci["roc_auc"], "ci95": [ci["low"], ci["high"]], "C": model.C, "n_train": n,
          "n_val": int(len(task.val_y))}, prob


def _with_paired(rows, pixel_prob, tasks):
  """Adds DeLong's paired test against the pixel baseline to each task's result."""
  out = {}
  for task in tasks:
    result, prob = rows[task.name]
    paired = metrics_lib.compare_roc_auc(prob, pixel_prob[task.name], task.val_y)
    out[task.name] = {**result, "vs_pixel": {"difference": paired["difference"], "p_value": paired["p_value"]}}
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data", default=os.environ.get("JAXCXR_DATA"), help="the shared data folder")
  p.add_argument("--methods", default=",".join(ce.METHODS), help="comma-separated methods")
  p.add_argument("--preset", default="cxr_encoder_cpu", choices=sorted(ce.PRESETS))
  p.add_argument("--cpu-seconds", type=float, default=600.0, help="process CPU seconds of training per method")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="runs/encoder_ablation.json")
  args = p.parse_args(argv)
  if not args.data:
    print("error: no --data and JAXCXR_DATA is unset", file=sys.stderr)
    return 2
  methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  dev = ce.development_data(**ce.archives_in(args.data))
  table = {"command": " ".join(["python", "scripts/encoder_ablation.py", *(argv or sys.argv[1:])]),
           "budget": f"{args.cpu_seconds:.0f} s of process CPU time per method after its first (compiling) call",
           "device": jax.devices()[0].device_kind, "data": dev.description, "preset": args.preset, "rows": []}

  def save():
    io_lib.save_json(args.out, io_lib.to_json_safe(table))

  pixel = {t.name: _pixel_baseline(t) for t in dev.probes}
  pixel_prob = {name: prob for name, (_, prob) in pixel.items()}
  table["rows"].append({"method": "pixel logistic regression (32x32)", "steps": 0,
                        **{name: result for name, (result, _) in pixel.items()}})
  print(table["rows"][-1], flush=True)
  base = ce.PRESETS[args.preset](methods[0])
  random_init = ce.encoder_of(ce.init_train_state(base, args.seed), base)
  table["rows"].append({"method": "random init (no training)", "steps": 0,
                        **_with_paired(_probe_rows(random_init, dev.probes), pixel_prob, dev.probes)})
  print(table["rows"][-1], flush=True)
  save()
  for method in methods:
    config = ce.PRESETS[args.preset](method)
    images = jax.device_put(prepare_images(dev.pretrain.images, config.encoder.resolution))
    state = ce.init_train_state(config, args.seed)
    call = ce.make_train_step(config)
    t0, c0 = time.perf_counter(), time.process_time()
    state, metrics = call(state, images)
    jax.block_until_ready(metrics)
    compile_cpu, compile_wall = time.process_time() - c0, time.perf_counter() - t0
    steps, losses = config.steps_per_call, []
    t0, c0 = time.perf_counter(), time.process_time()
    while time.process_time() - c0 < args.cpu_seconds:
      state, metrics = call(state, images)
      metrics = jax.device_get(metrics)
      steps += config.steps_per_call
      losses.append(float(np.mean(metrics["loss"])))
      if steps % 50 == 0:
        print(f"{method}: step {steps}, loss {losses[-1]:.4f}, cpu {time.process_time() - c0:.0f} s, "
              f"wall {time.perf_counter() - t0:.0f} s", flush=True)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    row = {"method": method, "steps": steps, "cpu_seconds": cpu, "wall_seconds": wall,
           "compile_cpu_seconds": compile_cpu, "compile_wall_seconds": compile_wall,
           "images_per_cpu_second": config.batch_size * (steps - config.steps_per_call) / cpu,
           "loss_first_last": [losses[0] if losses else None, float(np.mean(losses[-10:])) if losses else None],
           "embedding_std_last": float(np.mean(metrics["embedding_std"])),
           "config": {"projector": list(config.projector), "batch_size": config.batch_size,
                      "learning_rate": config.learning_rate}}
    row.update(_with_paired(_probe_rows(ce.encoder_of(state, config), dev.probes), pixel_prob, dev.probes))
    table["rows"].append(row)
    print(row, flush=True)
    save()
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
