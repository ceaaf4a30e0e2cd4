"""PatchCore (U-Net encoder features) on the NIH validation patients beside the trivial baselines.

    JAXCXR_DATA=... python scripts/patchcore_val.py [CORESET_FRACTION] [OUT_JSON] [lungs,whole_image]
"""
"""PatchCore on the NIH subset: bank from the standard split's training normals, scores on validation patients."""
import json, os, sys, time
import numpy as np
import jaxcxr
from jaxcxr import baselines, data
from jaxcxr.anomaly.patchcore import fit_patchcore, unet_encoder_features
from jaxcxr.anomaly.evaluate import auc_with_interval
from jaxcxr.models.unet import load_unet, predict_masks

fraction = float(sys.argv[1]) if len(sys.argv) > 1 else 0.01
path = sys.argv[2] if len(sys.argv) > 2 else "runs/patchcore_val.json"
only = sys.argv[3].split(",") if len(sys.argv) > 3 else ["lungs", "whole_image"]
ds = data.load(os.path.join(os.environ["JAXCXR_DATA"], "nih_cxr14_subset_256.npz"))
split = data.standard_split(ds)
train, val = ds.subset(split["train"]), ds.subset(split["val"])
normals = train.select(label=0)
print("train normals", len(normals), "val", len(val), "val abnormal", int(val.label.sum()), flush=True)
unet = load_unet("checkpoints/unet_256/unet")
features_fn = unet_encoder_features(unet, (3, 4))
t = time.perf_counter()
train_masks = predict_masks(unet, normals.images)
val_masks = predict_masks(unet, val.images)
print("masks", time.perf_counter() - t, flush=True)
out = {"features": "unet_256 encoder levels 3+4 (32x32x64 + 16x16x128 on 32x32)", "coreset_fraction": fraction}
for name, tm, vm in (("lungs", train_masks, val_masks), ("whole_image", None, None)):
  if name not in only:
    continue
  t = time.perf_counter()
  model = fit_patchcore(features_fn, normals.images, coreset_fraction=fraction, masks=tm)
  fit_s = time.perf_counter() - t
  t = time.perf_counter()
  scores, _ = model.score(val.images, vm)
  score_s = time.perf_counter() - t
  cmp = baselines.compare_to_baselines(scores, val.label, val.images, train.images, train.label,
                                       views=data.views(val), method=f"patchcore_{name}")
  text = baselines.format_comparison(cmp, by_view=True)
  print(name, "bank", model.memory_bank.shape, f"fit {fit_s:.0f} s, score {score_s:.0f} s", flush=True)
  print(text, flush=True)
  out[name] = {"bank": list(model.memory_bank.shape), "fit_seconds": fit_s, "score_seconds": score_s,
               **auc_with_interval(scores, val.label.astype(int)), "comparison_text": text,
               "comparison": json.loads(json.dumps(cmp, default=lambda o: np.asarray(o).tolist()))}
  with open(path, "w") as f:
    json.dump(out, f, indent=2, default=lambda o: np.asarray(o).tolist())
