"""AnoGAN search settings on the pneumonia task's validation patients: affine, exposure, early stopping, feature term.

    JAXCXR_DATA=... python scripts/anogan_val.py OUT_JSON STEPS NAME [NAME ...]

NAME is one of SETTINGS below: search settings, whether the queries are exposure-normalised, and the
feature term's f (None: the GAN's discriminator; a stage name: that stage of the shipped `encoder_cxr`,
`anomaly.EncoderFeatures`). Every setting searches `gan_256_normal`'s base image (`GAN=DIR`: another
normal-only GAN folder), one random start per image (seed 0), and scores the residual inside the lungs of the shipped
`unet_256` (`lung_residual_scores`, as `jaxcxr evaluate anomaly --base-image` does), beside the
trivial baselines fitted on the training patients. Results are appended to OUT_JSON (a rerun skips
the settings already there). Each record keeps its per-image lung scores (`lung_scores`, in the order
of the validation images), so two settings compare by DeLong's paired test:
`metrics.compare_roc_auc(a["lung_scores"], b["lung_scores"], labels)`.
"""
import dataclasses
import json
import os
import sys
import time

import jax
import numpy as np

from jaxcxr import anomaly, baselines, checkpoints, data, evaluation_sets, exposure
from jaxcxr.anomaly.evaluate import auc_with_interval
from jaxcxr.models.cxr_encoder import load_cxr_encoder
from jaxcxr.models.unet import load_unet, predict_masks

SETTINGS = {
    "plain": ({}, False, None),
    "affine": ({"intensity_affine": True}, False, None),
    "exposure": ({}, True, None),
    "affine_exposure": ({"intensity_affine": True}, True, None),
    "affine_stop": ({"intensity_affine": True, "early_stop_tol": 1e-3}, False, None),
    "plain_stop": ({"early_stop_tol": 1e-3}, False, None),
    "encoder_stage2": ({}, False, "stage2"),
    "encoder_stage2_l0.5": ({"feature_weight": 0.5}, False, "stage2"),
    "encoder_stage2_l0.9": ({"feature_weight": 0.9}, False, "stage2"),
    "encoder_stage2_l0.5_r2": ({"feature_weight": 0.5, "restarts": 2}, False, "stage2"),
    "encoder_stage2_l0.5_affine": ({"feature_weight": 0.5, "intensity_affine": True}, False, "stage2"),
}

out_path, steps, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
root = os.environ["JAXCXR_DATA"]
nih = data.load([os.path.join(root, "nih_cxr14_subset_256.npz"), os.path.join(root, "nih_cxr14_extra_256.npz")])
task = evaluation_sets.anomaly_task(nih)
train, val = task.part("train"), task.part("val")
normals = train.select(label=0)
cache = "/tmp/anom/masks.npz"
if os.path.exists(cache):
  with np.load(cache) as f:
    train_masks, val_masks = f["train"], f["val"]
else:
  unet = load_unet(checkpoints.shipped_checkpoint(*checkpoints.SHIPPED_UNETS))
  train_masks, val_masks = predict_masks(unet, train.images), predict_masks(unet, val.images)
  os.makedirs(os.path.dirname(cache), exist_ok=True)
  np.savez(cache, train=train_masks, val=val_masks)
fitted = baselines.fit_baselines(train.images, train.label, masks=train_masks, patients=train.patient_id)
base = fitted.scores(val.images, val_masks)
reference = exposure.fit_reference(normals.images)
# GAN=DIR searches another normal-only GAN folder (e.g. a v3 candidate); its records carry its path.
gan_dir = os.environ.get("GAN", str(checkpoints.checkpoints_root() / "gan_256_normal"))
gan_name = "gan_256_normal" if "GAN" not in os.environ else gan_dir
generator, discriminator = anomaly.load_anogan(gan_dir)

results = json.load(open(out_path))["runs"] if os.path.exists(out_path) else []
for name in names:
  if any(r["setting"] == name and r["steps"] == steps and r.get("gan", "gan_256_normal") == gan_name
         for r in results):
    continue
  changes, normalise, stage = SETTINGS[name]
  config = anomaly.LatentSearchConfig(steps=steps, base_image=True, **changes)
  features = discriminator if stage is None else anomaly.EncoderFeatures(
      load_cxr_encoder(checkpoints.checkpoints_root() / "encoder_cxr" / "encoder"), stage)
  query = dataclasses.replace(val, images=exposure.normalise(val.images, reference)) if normalise else val
  t = time.perf_counter()
  out = anomaly.anogan_scores(generator, features, query, None, jax.random.key(0), config, batch_size=64,
                              progress=False)
  seconds = time.perf_counter() - t
  scores = anomaly.lung_residual_scores(out.residual, val_masks)
  cmp = baselines.compare_scores(scores, val.label, base, views=data.views(val), descriptions=fitted.descriptions(),
                                 method=f"anogan_{name}")
  d = cmp["paired_delong"]
  r = {"setting": name, "steps": steps, "gan": gan_name, "config": {k: getattr(config, k) for k in (
           "steps", "restarts", "base_image", "intensity_affine", "early_stop_tol", "early_stop_window",
           "learning_rate", "feature_weight")}, "exposure_normalised_inputs": normalise,
       "feature_term": "discriminator" if stage is None else f"encoder_cxr {stage}, unit channel vectors",
       **auc_with_interval(scores, val.label.astype(int)),
       "unmasked_score": auc_with_interval(out.score, val.label.astype(int))["roc_auc"],
       "by_view": {v: e["method"]["roc_auc"] for v, e in cmp["by_view"].items()},
       "strongest": d["baseline"], "strongest_auc": cmp["baselines"][d["baseline"]]["roc_auc"],
       "difference": d["difference"], "p_value": d["p_value"], "seconds": seconds,
       "seconds_per_image": seconds / len(val), "mean_steps_run": float(out.steps_run.mean()),
       "comparison_text": baselines.format_comparison(cmp, by_view=True),
       "lung_scores": scores.tolist()}               # per validation image, for paired tests between settings
  print(f"{name:>16} steps={steps}: AUC {r['roc_auc']:.3f} [{r['roc_auc_ci95'][0]:.2f}, {r['roc_auc_ci95'][1]:.2f}] "
        f"AP {r['by_view'].get('AP', float('nan')):.3f} PA {r['by_view'].get('PA', float('nan')):.3f} "
        f"(unmasked {r['unmasked_score']:.3f}) vs {r['strongest']} {r['strongest_auc']:.3f} p={r['p_value']:.3g}; "
        f"{r['seconds_per_image']:.2f} s/image, {r['mean_steps_run']:.0f} steps run", flush=True)
  results.append(r)
  with open(out_path, "w") as f:
    json.dump({"data": "NIH subset + extra, pneumonia task, standard split: validation patients; gan_256_normal's "
                       "64x64 base image, residual inside unet_256's lungs", "n_val": len(val),
               "exposure_reference": reference.to_dict(), "runs": results}, f, indent=1,
              default=lambda o: np.asarray(o).tolist())
