"""The encoder classifiers against the shipped ensembles on the same patients: DeLong's paired test (issue 24).

    JAXCXR_DATA=... python scripts/encoder_classifier_vs_ensemble.py evaluations/encoder_classifier_vs_ensemble.json

For each task (abnormal = pneumonia vs normal; sex) and each part of the classifiers' own patient
split (validation, test: both models share it), the probability of `classifier_<task>_encoder` (the
shipped classifier on the CXR encoder) is compared with that of the shipped ensemble
(`classifier_abnormal_ensemble_96`, `classifier_sex_ensemble_64`); roc_auc_a is the encoder
classifier's, roc_auc_b the ensemble's.
"""
import json, os, sys
from jaxcxr import checkpoints, data, evaluation_sets, metrics
from jaxcxr.models.classifier import load_classifier, predict_proba
from jaxcxr.train.classifier import task_labels
d = os.environ["JAXCXR_DATA"]
ds_all = data.load([f"{d}/nih_cxr14_subset_256.npz", f"{d}/nih_cxr14_extra_256.npz"])
out = {}
for task, old in (("abnormal", "classifier_abnormal_ensemble_96"), ("sex", "classifier_sex_ensemble_64")):
  for split in ("val", "test"):
    r = {}
    new_dir = f"checkpoints/classifier_{task}_encoder/classifier"
    for name, path in (("encoder_classifier", new_dir), ("ensemble", f"checkpoints/{old}/classifier")):
      chosen = evaluation_sets.classifier_split(ds_all, checkpoints.read_metadata(path), split, task)
      keep, y = task_labels(chosen.dataset, task)
      r[name] = (predict_proba(load_classifier(path), chosen.dataset.images[keep]), y[keep])
    (pa, ya), (pb, yb) = r["encoder_classifier"], r["ensemble"]
    assert (ya == yb).all()
    c = metrics.compare_roc_auc(pa, pb, ya)
    out[f"{task}/{split}"] = c
    print(task, split, json.dumps(c, default=float))
json.dump(out, open(sys.argv[1], "w"), indent=1, default=float)
