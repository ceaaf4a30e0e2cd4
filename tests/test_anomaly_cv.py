"""Tests for the repeated patient-level cross-validation of anomaly methods (`train.anomaly_cv`)."""

import json

import numpy as np
import pytest

from jaxcxr import anomaly, config, data
from jaxcxr.train import anomaly_cv

TINY = config.healthygan_tiny()


@pytest.fixture(scope="module")
def nih(nih_path):
  return data.load(nih_path)


def test_healthygan_cv_scores_every_image_once_per_repeat_and_resumes(nih, tmp_path):
  report = anomaly_cv.cross_validate_anomaly("healthygan", nih, tmp_path, folds=2, repeats=1, config=TINY,
                                             steps=2, batch_size=8, progress=False)
  assert report["steps"] == 2 and report["n"] == 24 and len(report["per_fold"]) == 2
  assert sum(p["n"] for p in report["per_fold"]) == 24                  # each image held out once per repeat
  held = [np.load(tmp_path / f"repeat0_fold{f}" / "held_out_scores.npz")["index"] for f in range(2)]
  assert not set(nih.patient_id[held[0]]) & set(nih.patient_id[held[1]])  # no patient in both folds
  for p, index in zip(report["per_fold"], held):                        # each fold's AUC is its held-out scores'
    scores = np.load(tmp_path / f"repeat0_fold{p['fold']}" / "held_out_scores.npz")["score"]
    assert p["roc_auc"]["score"] == pytest.approx(anomaly.auc_with_interval(scores, nih.label[index])["roc_auc"])
  aucs = [p["roc_auc"]["score"] for p in report["per_fold"]]
  assert report["summary"]["score"]["mean"] == pytest.approx(np.mean(aucs))
  assert json.loads((tmp_path / "cv_report.json").read_text())["summary"] == report["summary"]
  # The trivial baselines, fitted on each fold's training folds, pooled per repeat against the method's scores.
  assert set(report["baselines_summary"]) == {"statistic", "statistics_logreg", "pixel_logreg"}
  comparison = report["baselines"][0]
  assert comparison["method"]["roc_auc"] == pytest.approx(report["pooled"]["score"][0]["roc_auc"])
  assert comparison["strongest"] in comparison["baselines"] and comparison["n"] == 24
  # A rerun after a crash recomputes only what is missing: fold 1's scores, from its saved model.
  (tmp_path / "repeat0_fold1" / "held_out_scores.npz").unlink()
  again = anomaly_cv.cross_validate_anomaly("healthygan", nih, tmp_path, folds=2, repeats=1, config=TINY,
                                            steps=2, batch_size=8, progress=False)
  for before, after in zip(report["per_fold"], again["per_fold"]):
    assert after["roc_auc"] == pytest.approx(before["roc_auc"], abs=1e-6)
  with pytest.raises(ValueError, match="held-out images differ"):           # another partition, same folder
    anomaly_cv.cross_validate_anomaly("healthygan", nih, tmp_path, folds=2, repeats=1, config=TINY, steps=2,
                                      seed=5, progress=False)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"method": "anogan"}, ValueError, "method must be one of"),
    ({"method": "fanogan"}, ValueError, "needs gan_dir"),
    ({"method": "healthygan", "steps": 3}, ValueError, "multiple of 2"),
    ({"method": "healthygan", "repeats": 0}, ValueError, "repeats must be >= 1"),
    ({"method": "healthygan", "folds": 1}, data.DataError, "at least 2 folds"),
])
def test_cv_bad_input(nih, tmp_path, kwargs, error, message):
  kwargs = {"config": TINY, **kwargs}
  method = kwargs.pop("method")
  with pytest.raises(error, match=message):
    anomaly_cv.cross_validate_anomaly(method, nih, tmp_path, progress=False, **kwargs)


def test_cv_needs_both_labels(nih, tmp_path):
  with pytest.raises(data.DataError, match="normal \\(0\\) and abnormal \\(1\\)"):
    anomaly_cv.cross_validate_anomaly("healthygan", nih.select(label=0), tmp_path, config=TINY, progress=False)
