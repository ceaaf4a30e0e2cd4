"""f-AnoGAN and HealthyGAN scored in the CXR encoder's feature space: the pneumonia task's validation patients.

    JAXCXR_DATA=... python scripts/feature_distance_val.py OUT_JSON

Each method maps a query film x to a normal-looking one: f-AnoGAN's reconstruction G(E(x)) (at
the shipped `gan_256_normal`'s 128x128 base), HealthyGAN's healthy translation. The shipped
scores compare the two in pixels, inside the lungs of `unet_256` (`anomaly.lung_residual_scores`).
Here the same pairs are compared in the space of the self-supervised CXR encoder instead, with
the feature map AnoGAN's default search uses (`anomaly.EncoderFeatures`, stage 2, unit vectors
per position): per position d = |f(x) - f(x')|, scored as the mean of d^2 inside the lungs (the
lung mask resized to the feature grid) and over the whole image. Each score is reported with its
95% DeLong interval, beside the method's shipped pixel score on the same images (paired DeLong).
"""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxcxr import anomaly, checkpoints, data, evaluation_sets, metrics
from jaxcxr.anomaly.evaluate import auc_with_interval
from jaxcxr.models.cxr_encoder import load_cxr_encoder
from jaxcxr.models.healthygan import blend, load_translator
from jaxcxr.models.unet import load_unet, predict_masks

STAGE = "stage2"
out_path = sys.argv[1]
root = os.environ["JAXCXR_DATA"]
nih = data.load([os.path.join(root, "nih_cxr14_subset_256.npz"), os.path.join(root, "nih_cxr14_extra_256.npz")])
val = evaluation_sets.anomaly_task(nih).part("val")
y = val.label
print(f"validation: {len(val)} images, {int(y.sum())} pneumonia", flush=True)
C = checkpoints.checkpoints_root()
features = anomaly.EncoderFeatures(load_cxr_encoder(C / "encoder_cxr/encoder"), STAGE)
masks = predict_masks(load_unet(C / "unet_256/unet"), val.images, batch_size=32)


@jax.jit
def distance(f, x, other):
  """Per-position |f(x) - f(other)|, (B, h, w), for signed NHWC images."""
  return jnp.sqrt(jnp.square(f.features(x) - f.features(other)).sum(axis=-1))


def feature_distances(pairs):
  """(N, h, w) feature distances of (x, x') pairs given as float32 (N, R, R) signed images, in batches of 16."""
  out = []
  for i in range(0, len(pairs[0]), 16):
    x, other = (jnp.asarray(p[i:i + 16], jnp.float32)[..., None] for p in pairs)
    out.append(np.asarray(distance(features, x, other)))
  return np.concatenate(out)


def report(name, pixel_lungs, d):
  lungs = anomaly.lung_residual_scores(d, masks)
  whole = np.square(d).mean(axis=(1, 2))
  row = {"pixel_lungs (shipped score)": auc_with_interval(pixel_lungs, y),
         "feature_lungs": auc_with_interval(lungs, y), "feature_whole_image": auc_with_interval(whole, y),
         "feature_lungs_vs_pixel_lungs": metrics.compare_roc_auc(lungs, pixel_lungs, y)}
  print(name, json.dumps({k: round(v["roc_auc"], 3) for k, v in row.items() if "roc_auc" in v}), flush=True)
  return row


results = {"n": len(val), "n_abnormal": int(y.sum()), "stage": STAGE}

encoder, generator, discriminator = anomaly.load_fanogan(C / "fanogan_256/encoder")
f_out = anomaly.fanogan_scores(encoder, generator, discriminator, val, batch_size=32, progress=False)
x128 = data.to_signed(data.resize_uint8(val.images, encoder.config.resolution))
results["fanogan_256"] = report("f-AnoGAN", anomaly.lung_residual_scores(f_out.residual, masks),
                                feature_distances((x128, np.asarray(f_out.reconstruction, np.float32))))

translator = load_translator(C / "healthygan_256/translator")
r = translator.config.resolution
xr = data.to_signed(data.resize_uint8(val.images, r))


@jax.jit
def translate(t, x):
  content, mask = t(x)
  return blend(content, mask, x)[..., 0]


healthy = np.concatenate([np.asarray(translate(translator, jnp.asarray(xr[i:i + 16], jnp.float32)[..., None]))
                          for i in range(0, len(xr), 16)])
results["healthygan_256"] = report("HealthyGAN", anomaly.lung_residual_scores(np.abs(xr - healthy), masks),
                                   feature_distances((xr, healthy)))
with open(out_path, "w") as f:
  json.dump(results, f, indent=1)
