"""PatchCore on the CXR encoder's patch features: the settings sweep on the pneumonia task's validation patients.

    JAXCXR_DATA=... python scripts/patchcore_encoder_val.py OUT_JSON [PHASE]

PHASE "stages" (default): every stage set x {lungs, whole image} x {raw, exposure-normalised}
at coreset fraction 0.1 (no whole-image run of the 32x32 stage1 grid: its coreset takes too long
here); PHASE "coreset": fractions 0.01, 0.03, 0.1, 0.25, 1.0 (or the comma-separated FRACTIONS)
at the stage set, region and exposure named by the environment variables STAGES
(comma-separated), LUNGS (1/0), EXPOSURE (1/0); SEED sets the coreset's seed (default 0).
Bank from the standard split's training normals (NIH subset + extra, pneumonia
task); scores on its validation patients, each beside the trivial baselines fitted on the training
patients (lung statistics from unet_256), as `jaxcxr evaluate anomaly --split val` does.
"""
import json
import os
import sys
import time

import numpy as np

from jaxcxr import baselines, checkpoints, data, evaluation_sets, exposure
from jaxcxr.anomaly.evaluate import auc_with_interval
from jaxcxr.anomaly.patchcore import _concat_on_grid, fit_patchcore
from jaxcxr.models.cxr_encoder import image_features, load_cxr_encoder
from jaxcxr.models.unet import load_unet, predict_masks

out_path = sys.argv[1]
phase = sys.argv[2] if len(sys.argv) > 2 else "stages"
cache = os.environ.get("CACHE", "/tmp/anom")
os.makedirs(cache, exist_ok=True)
root = os.environ["JAXCXR_DATA"]
nih = data.load([os.path.join(root, "nih_cxr14_subset_256.npz"), os.path.join(root, "nih_cxr14_extra_256.npz")])
task = evaluation_sets.anomaly_task(nih)
train, val = task.part("train"), task.part("val")
normals = train.select(label=0)
print(f"train {len(train)} ({len(normals)} normal), val {len(val)} ({int(val.label.sum())} pneumonia)", flush=True)


def cached(name, fn):
  path = os.path.join(cache, name + ".npz")
  if os.path.exists(path):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  t = time.perf_counter()
  value = fn()
  np.savez(path, **value)
  print(f"{name}: {time.perf_counter() - t:.0f} s", flush=True)
  return value


unet = load_unet(checkpoints.shipped_checkpoint(*checkpoints.SHIPPED_UNETS))
masks = cached("masks", lambda: {"train": predict_masks(unet, train.images), "val": predict_masks(unet, val.images)})
train_masks, val_masks = masks["train"], masks["val"]
normal_masks = train_masks[train.label == 0]
reference = exposure.fit_reference(normals.images)
encoder = load_cxr_encoder(checkpoints.shipped_checkpoint(*checkpoints.SHIPPED_ENCODERS))
STAGES = ("stage1", "stage2", "stage3", "stage4")
SEED = int(os.environ.get("SEED", "0"))      # the coreset's seed


def features(images):
  return image_features(encoder, images, STAGES, batch_size=32)


feats = {}
for exp in (False, True):
  prep = (lambda x: exposure.normalise(x, reference)) if exp else (lambda x: x)
  feats[exp] = {"train": cached(f"feat_train_exp{int(exp)}", lambda: features(prep(normals.images))),
                "val": cached(f"feat_val_exp{int(exp)}", lambda: features(prep(val.images)))}

fitted = baselines.fit_baselines(train.images, train.label, masks=train_masks, patients=train.patient_id)
descriptions = fitted.descriptions()
base = fitted.scores(val.images, val_masks)


def concat(stage_feats, names):
  return _concat_on_grid([stage_feats[n] for n in names])


def run(names, lungs, exp, fraction):
  f_train, f_val = concat(feats[exp]["train"], names), concat(feats[exp]["val"], names)
  t = time.perf_counter()
  model = fit_patchcore(lambda x: f_train, normals.images, coreset_fraction=fraction, seed=SEED,
                        masks=normal_masks if lungs else None)
  fit_s = time.perf_counter() - t
  model.features_fn = lambda x: f_val
  t = time.perf_counter()
  scores, _ = model.score(val.images, val_masks if lungs else None)
  score_s = time.perf_counter() - t
  cmp = baselines.compare_scores(scores, val.label, base, views=data.views(val), descriptions=descriptions,
                                 method="patchcore")
  d = cmp["paired_delong"]
  return {"stages": list(names), "lungs": lungs, "exposure": exp, "coreset_fraction": fraction, "seed": SEED,
          "grid": list(model.grid), "bank": list(model.memory_bank.shape),
          "bank_mb": model.memory_bank.nbytes / 2**20, "fit_seconds": fit_s, "score_seconds": score_s,
          **auc_with_interval(scores, val.label.astype(int)),
          "by_view": {v: e["method"]["roc_auc"] for v, e in cmp["by_view"].items()},
          "strongest": d["baseline"], "strongest_auc": cmp["baselines"][d["baseline"]]["roc_auc"],
          "difference": d["difference"], "p_value": d["p_value"],
          "comparison_text": baselines.format_comparison(cmp, by_view=True)}


if phase == "stages":
  grid = [(names, lungs, exp, 0.1) for names in (("stage2",), ("stage3",), ("stage2", "stage3"), ("stage1", "stage2"),
                                                   ("stage3", "stage4"), ("stage1",))
          for lungs in (True, False) for exp in (False, True)]
else:
  names = tuple(os.environ["STAGES"].split(","))
  lungs, exp = os.environ["LUNGS"] == "1", os.environ["EXPOSURE"] == "1"
  fractions = os.environ.get("FRACTIONS", "0.01,0.03,0.1,0.25,1.0")
  grid = [(names, lungs, exp, float(f)) for f in fractions.split(",")]

results = json.load(open(out_path))["runs"] if os.path.exists(out_path) else []
done = {(tuple(r["stages"]), r["lungs"], r["exposure"], r["coreset_fraction"], r.get("seed", 0)) for r in results}
for setting in grid:
  if (*setting, SEED) in done:
    continue
  if "stage1" in setting[0] and not setting[1]:
    continue          # 32x32 over the whole image: 4x the patches of 16x16, the coreset alone takes many minutes
  r = run(*setting)
  print(f"{'+'.join(r['stages']):>14} lungs={int(r['lungs'])} exp={int(r['exposure'])} f={r['coreset_fraction']} "
        f"seed={SEED}: "
        f"AUC {r['roc_auc']:.3f} [{r['roc_auc_ci95'][0]:.2f}, {r['roc_auc_ci95'][1]:.2f}] "
        f"AP {r['by_view'].get('AP', float('nan')):.3f} PA {r['by_view'].get('PA', float('nan')):.3f} vs "
        f"{r['strongest']} {r['strongest_auc']:.3f} p={r['p_value']:.3g}; bank {r['bank']} "
        f"fit {r['fit_seconds']:.0f} s score {r['score_seconds']:.0f} s", flush=True)
  results.append(r)
  with open(out_path, "w") as f:
    json.dump({"data": "NIH subset + extra, pneumonia task, standard split: bank of the training normals, scored on "
                       "the validation patients", "n_train_normals": len(normals), "n_val": len(val),
               "exposure_reference": reference.to_dict(), "runs": results}, f, indent=1,
              default=lambda o: np.asarray(o).tolist())
