"""Tests for the repeated patient-level cross-validation of anomaly methods (`train.anomaly_cv`)."""

import json
import pathlib

import numpy as np
import pytest

from jaxcxr import anomaly, config, data
from jaxcxr.train import anomaly_cv

from test_patchcore import save_tiny_encoder

TINY = config.healthygan_tiny()
SHIPPED_PATCHCORE = pathlib.Path(__file__).resolve().parents[1] / "checkpoints" / "patchcore_encoder_cxr"


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
    ({"method": "healthygan", "gan_dir": "gan"}, ValueError, "healthygan does not use one"),
    ({"method": "fanogan", "gan_dir": "gan", "encoder_dir": "enc"}, ValueError, "fanogan does not use one"),
    ({"method": "patchcore", "config": None}, ValueError, "needs encoder_dir"),
    ({"method": "patchcore", "config": None, "encoder_dir": "enc", "steps": 2}, ValueError, "trains no network"),
    ({"method": "patchcore", "encoder_dir": "enc"}, ValueError, "config is a dict"),
    ({"method": "patchcore", "config": {"stage": "stage1"}, "encoder_dir": "enc"}, ValueError, "got \\['stage'\\]"),
])
def test_cv_bad_input(nih, tmp_path, kwargs, error, message):
  kwargs = {"config": TINY, **kwargs}
  method = kwargs.pop("method")
  with pytest.raises(error, match=message):
    anomaly_cv.cross_validate_anomaly(method, nih, tmp_path, progress=False, **kwargs)


def test_cv_needs_both_labels(nih, tmp_path):
  with pytest.raises(data.DataError, match="normal \\(0\\) and abnormal \\(1\\)"):
    anomaly_cv.cross_validate_anomaly("healthygan", nih.select(label=0), tmp_path, config=TINY, progress=False)


def test_patchcore_recipe_is_the_shipped_banks():
  info = json.loads((SHIPPED_PATCHCORE / "patchcore.json").read_text())
  extractor = info["metadata"]["extractor"]
  assert list(anomaly_cv.PATCHCORE_RECIPE["stages"]) == extractor["stages"]
  assert anomaly_cv.PATCHCORE_RECIPE["coreset_fraction"] == info["settings"]["coreset_fraction"]
  assert anomaly_cv.PATCHCORE_RECIPE["normalise_exposure"] == (extractor["exposure"] is not None)
  assert info["settings"]["masked"] and extractor["checkpoint"] == "encoder_cxr/encoder"


def _lungs_by_brightness(unet, images, **kwargs):
  """A stand-in U-Net's masks that differ from image to image: the pixels brighter than the image's median."""
  del unet, kwargs
  return (images > np.median(images, axis=(1, 2), keepdims=True)).astype(np.uint8)


def test_patchcore_cv_banks_hold_the_training_folds_normals_only_and_resume(nih, tmp_path, monkeypatch):
  encoder = save_tiny_encoder(tmp_path / "encoder")
  monkeypatch.setattr(anomaly_cv, "predict_masks", _lungs_by_brightness)
  masks = _lungs_by_brightness(None, nih.images)
  kwargs = {"folds": 2, "repeats": 1, "encoder_dir": encoder, "unet": "stand-in", "batch_size": 8, "progress": False}
  out = tmp_path / "cv"
  report = anomaly_cv.cross_validate_anomaly("patchcore", nih, out, config={"coreset_fraction": 1.0}, **kwargs)
  assert report["steps"] is None and len(report["per_fold"]) == 2 and set(report["summary"]) == {"score"}
  assert report["patchcore"]["lung_mask"] and report["patchcore"]["stages"] == ["stage1"]
  scores = {}
  for f in range(2):
    fold_dir = out / f"repeat0_fold{f}"
    with np.load(fold_dir / "held_out_scores.npz") as saved:
      held, scores[f] = saved["index"], saved["score"]
    train_normals = np.setdiff1d(np.flatnonzero(nih.label == 0), held)
    # Without a coreset the bank is every lung patch of what it was fitted on: exactly the training folds' normals.
    bank = anomaly.load_patchcore(fold_dir / "patchcore")
    expected = anomaly.fit_patchcore(bank.features_fn, nih.images[train_normals], masks=masks[train_normals],
                                     coreset_fraction=1.0)
    assert bank.settings["n_images"] == len(train_normals) and bank.settings["masked"]
    np.testing.assert_allclose(bank.memory_bank, expected.memory_bank, atol=1e-5)
    # Its held-out scores are the bank's lung-patch scores of the held-out images.
    np.testing.assert_allclose(scores[f], bank.score(nih.images[held], masks[held])[0], rtol=1e-5)
    assert report["per_fold"][f]["roc_auc"]["score"] == pytest.approx(
        anomaly.auc_with_interval(scores[f], nih.label[held])["roc_auc"])
  # Killed while scoring fold 1: the rerun scores it from its saved bank (a refit would fail here).
  (out / "repeat0_fold1" / "held_out_scores.npz").unlink()
  with monkeypatch.context() as m:
    m.setattr(anomaly, "fit_encoder_patchcore", lambda *a, **k: pytest.fail("refitted a saved bank"))
    again = anomaly_cv.cross_validate_anomaly("patchcore", nih, out, config={"coreset_fraction": 1.0}, **kwargs)
  np.testing.assert_allclose(np.load(out / "repeat0_fold1" / "held_out_scores.npz")["score"], scores[1], rtol=1e-5)
  assert again["summary"]["score"]["mean"] == pytest.approx(report["summary"]["score"]["mean"])
  with pytest.raises(ValueError, match="coreset_fraction 1.0 \\(now 0.01\\); use a new out_dir"):
    anomaly_cv.cross_validate_anomaly("patchcore", nih, out, **kwargs)    # the shipped recipe into another's folder


def test_fanogan_cv_trains_the_encoder_at_the_gan_base_images_side(nih, tmp_path):
  from test_fanogan import random_gan, save_gan  # pylint: disable=g-import-not-at-top

  shipped = pathlib.Path(__file__).resolve().parents[1] / "checkpoints" / "gan_256_normal"
  base = anomaly.load_anogan(shipped)[0].config.base_resolution
  assert anomaly_cv._fanogan_preset(shipped).encoder.resolution == base        # pylint: disable=protected-access
  assert anomaly_cv._fanogan_preset(shipped) == {64: config.fanogan_64_cpu(),  # pylint: disable=protected-access
                                                128: config.fanogan_128_cpu()}[base]
  tiny = save_gan(tmp_path / "gan", *random_gan(32))                             # no 32x32 preset: say so
  with pytest.raises(ValueError, match="no f-AnoGAN preset for a 32x32 base image"):
    anomaly_cv.cross_validate_anomaly("fanogan", nih, tmp_path / "cv", gan_dir=tiny, progress=False)
