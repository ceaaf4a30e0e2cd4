"""Residual overlays (8 normals + 8 pneumonias) of the AnoGAN test run, from its saved scores.

    JAXCXR_DATA=DIR python scripts/anogan_overlays.py checkpoints/gan_256_normal/anogan/scores_lungs_test.npz OUT.png

Re-searches only the 16 pictured test images (500 steps, 3 restarts, base image): image i of
the split starts from the latents of global index i (`anogan_scores`), as in the full run. The
script prints how far the re-computed lung-masked scores are from the saved ones (measured: at
most 8% relative, float differences between batch sizes amplified over 500 Adam steps).
"""
import sys
import jax
import numpy as np
from jaxcxr import anomaly, checkpoints, data, reports
from jaxcxr.models import load_discriminator, load_generator
from jaxcxr.models.unet import load_unet, predict_masks

scores_file, out = sys.argv[1], sys.argv[2]
saved = np.load(scores_file)
root = checkpoints.checkpoints_root()
g, d = load_generator(root / "gan_256_normal/generator"), load_discriminator(root / "gan_256_normal/discriminator")
ds = data.keep_abnormal_finding(data.load(data.default_data_path("nih_cxr14_subset_256.npz") .as_posix() + "," +
                                          data.default_data_path("nih_cxr14_extra_256.npz").as_posix()))
test = ds.subset(data.standard_split(ds)["test"])
assert np.array_equal(test.patient_id.astype(str), saved["patient_id"])
scores, labels = saved["scores"], saved["labels"]
picks = []
for label in (0, 1):
  order = np.flatnonzero(labels == label)[np.argsort(-scores[labels == label], kind="stable")]
  picks += [order[i // 2] if i % 2 == 0 else order[-1 - i // 2] for i in range(8)]
config = anomaly.LatentSearchConfig(steps=500, restarts=3, base_image=True)
r = anomaly.search_resolution(g, config)
cond = anomaly.normal_condition(test, g.config.conditions)
residual = np.zeros((len(test), r, r), np.float32)
for i in picks:
  res = anomaly.search_latents(g, d, data.resize_uint8(test.images[i:i + 1], r), cond[i:i + 1], jax.random.key(0),
                               config, first_index=int(i))
  residual[i] = np.asarray(res.residual[0, ..., 0], np.float32)
  print(i, flush=True)
masks = predict_masks(load_unet(root / "unet_256/unet"), test.images[picks])
again = anomaly.lung_residual_scores(residual[picks], masks)
print("max |rescored - saved| / saved:", float(np.max(np.abs(again - scores[picks]) / scores[picks])))
keep = np.zeros(len(test), bool); keep[picks] = True
reports.save_residual_overlays(test.images[keep], residual[keep], labels[keep], scores[keep], out,
                               title=f"anogan (500 steps, 3 restarts, lungs): test ROC AUC "
                                     f"{anomaly.auc_with_interval(scores, labels)['roc_auc']:.3f}")
print(out)
