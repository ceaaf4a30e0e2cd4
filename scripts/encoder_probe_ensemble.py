"""Would the CXR encoder add to the shipped pneumonia ensemble? Validation patients only (issue 24).

    JAXCXR_DATA=... python scripts/encoder_probe_ensemble.py evaluations/encoder_probe_ensemble_val.json

On the pneumonia probe task's 120 validation images: the shipped ensemble
(classifier_abnormal_ensemble_96), the linear probe on encoder_cxr's pooled stage features
(fitted on the training patients, as `jaxcxr evaluate encoder`), and rank averages of the two with
the probe's weight 0.25 / 0.5 / 0.75, each with DeLong's paired test against the strongest trivial
baseline (whole-image and centre statistics, pixel logistic regression).
"""
import json, os, sys
from scipy.stats import rankdata
from jaxcxr.models.cxr_encoder import load_cxr_encoder
from jaxcxr.models.classifier import load_classifier, predict_proba
from jaxcxr.train import cxr_encoder
from jaxcxr.encoder_probes import pooled_stage_features
from jaxcxr import baselines
dev = cxr_encoder.development_data(**cxr_encoder.archives_in(os.environ["JAXCXR_DATA"]))
task = [t for t in dev.probes if t.name == "pneumonia"][0]
enc = load_cxr_encoder("checkpoints/encoder_cxr/encoder")
tr, va = pooled_stage_features(enc, task.train_images), pooled_stage_features(enc, task.val_images)
probe, p_probe = cxr_encoder.linear_probe(tr, task.train_y, task.train_patients, va, task.val_y)
ens = load_classifier("checkpoints/classifier_abnormal_ensemble_96/classifier")
p_ens = predict_proba(ens, task.val_images)
out = {"probe": probe["roc_auc"]}
from sklearn.metrics import roc_auc_score
y = task.val_y
out["ensemble"] = roc_auc_score(y, p_ens)
for w in (0.25, 0.5, 0.75):
  r = w * rankdata(p_probe) + (1 - w) * rankdata(p_ens)
  out[f"rank_avg_w{w}"] = roc_auc_score(y, r)
fitted = baselines.fit_baselines(task.train_images, task.train_y, patients=task.train_patients)
base = fitted.scores(task.val_images, None)
r = 0.5 * rankdata(p_probe) + 0.5 * rankdata(p_ens)
out["vs_baselines_rank_avg"] = baselines.compare_scores(r, y, base, descriptions=fitted.descriptions(), method="rank avg")["paired_delong"]
out["vs_baselines_ensemble"] = baselines.compare_scores(p_ens, y, base, descriptions=fitted.descriptions(), method="ens")["paired_delong"]
print(json.dumps(out, indent=1))
json.dump(out, open(sys.argv[1], "w"), indent=1)
