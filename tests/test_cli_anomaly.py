"""`jaxcxr evaluate anomaly|anomaly-ensemble|anomaly-cv`: AnoGAN, f-AnoGAN and HealthyGAN scores of the shipped
models, inside the lungs or on the whole image, saved scores and their ensemble, cross-validation (PatchCore's
too); bad input."""

import json
import pathlib

import numpy as np
import pytest

from jaxcxr import anomaly, checkpoints, cli, data, pretrained
from jaxcxr.cli.evaluate import human_anomaly, human_anomaly_cv

from conftest import run_cli


ENCODER = checkpoints.checkpoints_root() / "encoder_cxr" / "encoder"


def test_evaluate_anomaly_anogan_from_shipped_normal_gan(capsys, nih_path, tmp_path):
  # Every search option at once (the next test runs the defaults).
  code, out, err = run_cli(capsys, "evaluate", "anomaly", "--method", "anogan", "--data", str(nih_path), "--split",
                           "all", "--steps", "3", "--batch-size", "8", "--base-image", "--restarts", "2", "--out",
                           str(tmp_path), "--whole-image", "--intensity-affine", "--early-stop-tol", "0.001",
                           "--feature-term", "discriminator", "--feature-weight", "0.5", "--json")
  assert code == 0, err
  result = json.loads(out)
  assert result["n"] == 24 and result["n_normal"] == 12 and result["steps"] == 3
  assert result["base_image"] and result["restarts"] == 2 and not result["lung_mask"]
  assert result["intensity_affine"] and result["early_stop_tol"] == 0.001
  assert result["feature_weight"] == 0.5 and result["feature_term"] == "discriminator"
  # --feature-encoder puts the encoder's stage in the discriminator's place (tests/test_anomaly.py checks the term).
  scorer, _ = pretrained.anomaly_scorer("anogan", lung_mask=False, feature_encoder=ENCODER, feature_stage="stage3")
  assert isinstance(scorer.discriminator, anomaly.EncoderFeatures) and scorer.discriminator.stage == "stage3"
  assert set(result["components"]) == {"residual_score", "feature_score"}
  assert all(0 <= c["roc_auc"] <= 1 for c in result["components"].values())
  assert 0 <= result["roc_auc"] <= 1 and result["seconds_per_image"] > 0
  low, high = result["roc_auc_ci95"]
  assert 0 <= low <= result["roc_auc"] <= high <= 1
  assert {"precision", "recall", "specificity", "f1"} <= set(result)
  assert "optimistic" in result["threshold_from"]          # no separate threshold data with --split all
  assert pathlib.Path(result["overlays"]).stat().st_size > 0


def test_evaluate_anomaly_inside_the_lungs_by_default(capsys, nih_path):
  # The defaults (chosen on validation): inside the lungs, and AnoGAN on a cascade's base image with the shipped
  # CXR encoder's stage 2 as its feature term, at weight 0.5.
  code, out, err = run_cli(capsys, "evaluate", "anomaly", "--method", "anogan", "--data", str(nih_path), "--split",
                           "all", "--steps", "3", "--batch-size", "8", "--json")
  assert code == 0, err
  result = json.loads(out)
  assert result["lung_mask"] and result["method"] == "anogan_lungs" and result["base_image"]
  assert result["feature_term"] == f"{ENCODER} stage2" and result["feature_weight"] == 0.5
  assert result["steps"] == 3 and result["restarts"] == 1
  assert set(result["components"]) == {"residual_score", "feature_score", "unmasked"}


def test_evaluate_anomaly_saves_scores_and_reports_the_threshold_data(capsys, nih_path, tmp_path):
  code, out, err = run_cli(capsys, "evaluate", "anomaly", "--method", "fanogan", "--data", str(nih_path), "--split",
                           "test", "--scores", str(tmp_path / "s.npz"), "--whole-image", "--json")
  assert code == 0, err
  result = json.loads(out)
  assert not result["lung_mask"] and result["method"] == "fanogan"
  saved = np.load(tmp_path / "s.npz")
  assert len(saved["scores"]) == result["n"] and len(saved["threshold_scores"]) == result["threshold_data"]["n"]
  assert saved["residual"].shape[0] == result["n"] and saved["residual"].ndim == 3
  assert result["roc_auc"] == pytest.approx(anomaly.auc_with_interval(saved["scores"], saved["labels"])["roc_auc"])
  val = result["threshold_data"]
  assert val["roc_auc"] == pytest.approx(
      anomaly.auc_with_interval(saved["threshold_scores"], saved["threshold_labels"])["roc_auc"])
  assert set(val["components"]) == {"image_loss", "feature_loss"} and "by_view" in val
  assert not set(saved["patient_id"]) & set(saved["threshold_patient_id"])   # test and validation patients differ
  # The trivial baselines on the same test images, fitted on the task's training patients.
  base = result["baselines"]
  assert base["method"]["roc_auc"] == pytest.approx(result["roc_auc"]) and base["n"] == result["n"]
  assert base["strongest"] in base["baselines"] and base["paired_delong"]["baseline"] == base["strongest"]
  # The exposure control (by default): the same judge on body-normalised test images, beside the baselines there.
  control = result["exposure_control"]
  assert control["exposure"] == "body" and control["reference_images"] > 0 and 0 <= control["roc_auc"] <= 1
  assert control["baselines"]["method"]["roc_auc"] == pytest.approx(control["roc_auc"])
  assert control["baselines"]["n"] == result["n"]
  text = human_anomaly(result)                                   # what the command prints without --json
  assert "vs trivial baselines" in text and "after exposure normalisation (body): ROC AUC" in text
  parsed = cli.build_parser().parse_args(["evaluate", "anomaly", "--method", "fanogan", "--no-exposure-control"])
  assert parsed.exposure_control is False                        # and run_anomaly skips the control without it


def test_evaluate_anomaly_covid_task_against_nih_normals(capsys, nih_path, covid_path, tmp_path):
  arrays = dict(np.load(covid_path))
  arrays["age"] = np.where(np.arange(len(arrays["age"])) % 4 == 0, -1, 45).astype(arrays["age"].dtype)
  np.savez(tmp_path / "covid.npz", **arrays)                      # a quarter of unknown age, as in the archive
  code, out, err = run_cli(capsys, "evaluate", "anomaly", "--method", "healthygan", "--data", str(nih_path),
                           "--abnormal", "covid", "--covid-data", str(tmp_path / "covid.npz"), "--split", "all",
                           "--json")
  assert code == 0, err
  result = json.loads(out)
  covid = data.load(tmp_path / "covid.npz")
  known = int((np.isin(covid.sex, ["M", "F"]) & (covid.age >= 0)).sum())
  assert result["abnormal"] == "covid" and result["n_normal"] == 12 and result["n_abnormal"] == known
  assert result["covid_dropped_unknown_sex_or_age"] == len(covid) - known
  assert "source_only_baseline" not in result                    # --split all: no separate training patients
  assert result["baselines"] is None


def test_evaluate_anomaly_ensemble_of_saved_scores(capsys, nih_path, tmp_path):
  for method in ("fanogan", "healthygan"):
    code, _, err = run_cli(capsys, "evaluate", "anomaly", "--method", method, "--data", str(nih_path), "--split",
                           "test", "--scores", str(tmp_path / f"{method}.npz"), "--json")
    assert code == 0, err
  files = [str(tmp_path / "fanogan.npz"), str(tmp_path / "healthygan.npz")]
  code, out, err = run_cli(capsys, "evaluate", "anomaly-ensemble", *files, "--json")
  assert code == 0, err
  result = json.loads(out)
  saved = [np.load(f) for f in files]
  expected = anomaly.rank_average([s["scores"] for s in saved])
  assert result["test"]["roc_auc"] == pytest.approx(anomaly.auc_with_interval(expected, saved[0]["labels"])["roc_auc"])
  assert set(result["test"]["members"]) == set(files) and "threshold_data" in result
  other = tmp_path / "other.npz"                                  # a file of other images is refused
  np.savez(other, scores=np.zeros(3), labels=np.array([0, 1, 1]))
  code, out, err = run_cli(capsys, "evaluate", "anomaly-ensemble", files[0], str(other))
  assert code == 2 and "differ" in err


def test_evaluate_anomaly_cv_command(capsys, nih_path, tmp_path, monkeypatch):
  from jaxcxr import config  # pylint: disable=g-import-not-at-top
  from jaxcxr.train import anomaly_cv  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(config, "healthygan_64_cpu", config.healthygan_tiny)   # the shipped preset, made tiny
  code, out, err = run_cli(capsys, "evaluate", "anomaly-cv", "--method", "healthygan", "--data", str(nih_path),
                           "--folds", "2", "--repeats", "1", "--steps", "2", "--out", str(tmp_path), "--json")
  assert code == 0, err
  report = json.loads(out)
  assert report["folds"] == 2 and len(report["per_fold"]) == 2 and report["steps"] == 2
  dev = data.load(nih_path)
  split = data.standard_split(dev)
  assert report["n"] == len(split["train"]) + len(split["val"])            # never the test patients
  assert "patchcore" in anomaly_cv.METHODS and "healthygan: 2-fold x 1" in human_anomaly_cv(report)


def test_evaluate_anomaly_cv_patchcore_command(capsys, nih_path, tmp_path, monkeypatch):
  from jaxcxr.cli import evaluate  # pylint: disable=g-import-not-at-top

  # The handler's part only (its library call is tests/test_anomaly_cv.py's): which encoder, U-Net and images it
  # passes, and its summary of a PatchCore report.
  calls = []
  def cross_validate(method, dev, out, **kwargs):
    calls.append(kwargs)
    return {"method": method, "folds": kwargs["folds"], "repeats": kwargs["repeats"], "steps": None, "n": len(dev),
            "n_abnormal": int(dev.label.sum()), "summary": {"score": {"mean": 0.5, "sd": 0.1, "min": 0.4, "max": 0.6,
                                                                        "n_folds": 2}}}
  monkeypatch.setattr(evaluate, "cross_validate_anomaly", cross_validate)
  shipped = checkpoints.shipped_checkpoint(*checkpoints.SHIPPED_ENCODERS)
  argv = ["evaluate", "anomaly-cv", "--method", "patchcore", "--data", str(nih_path), "--folds", "2", "--repeats", "1",
          "--out", str(tmp_path / "cv")]
  code, out, err = run_cli(capsys, *argv, "--encoder", str(shipped.parent))     # the model folder names it too
  assert code == 0, err
  assert "memory bank refitted per fold" in out and "score: ROC AUC mean 0.500" in out
  assert calls[0]["encoder_dir"] == shipped and calls[0]["gan_dir"] is None and calls[0]["unet"] is None
  assert calls[0]["steps"] is None and calls[0]["folds"] == 2 and calls[0]["repeats"] == 1
  code, out, err = run_cli(capsys, *argv)                                        # default: the shipped encoder
  assert code == 0, err
  assert calls[1]["encoder_dir"] == shipped


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "anomaly", "--method", "fanogan", "--steps", "3"], "set the AnoGAN search"),
    (["evaluate", "anomaly", "--method", "healthygan", "--base-image"], "set the AnoGAN search"),
    (["evaluate", "anomaly", "--method", "fanogan", "--full-image"], "set the AnoGAN search"),
    (["evaluate", "anomaly", "--method", "anogan", "--base-image", "--full-image"], "not allowed with argument"),
    (["evaluate", "anomaly", "--method", "patchcore", "--intensity-affine"], "set the AnoGAN search"),
    (["evaluate", "anomaly", "--method", "anogan", "--early-stop-tol", "-1"], "--early-stop-tol must be >= 0"),
    (["evaluate", "anomaly", "--method", "anogan", "--restarts", "0"], "--restarts must be >= 1"),
    (["evaluate", "anomaly", "--method", "anogan", "--steps", "0"],
     "--steps must be positive"),
    (["evaluate", "anomaly", "--method", "fanogan", "--feature-encoder", "e"], "set the AnoGAN search"),
    (["evaluate", "anomaly", "--method", "healthygan", "--feature-term", "encoder"], "set the AnoGAN search"),
    (["evaluate", "anomaly", "--method", "anogan", "--feature-term", "discriminator", "--feature-stage", "stage3"],
     "set the encoder's feature term"),
    (["evaluate", "anomaly", "--method", "anogan", "--feature-weight", "1.5"], "--feature-weight must be in [0, 1]"),
    (["evaluate", "anomaly", "--method", "anogan", "--feature-encoder", str(ENCODER), "--feature-stage", "stage9"],
     "unknown stage 'stage9'; the encoder has stage1, stage2, stage3, stage4"),
    (["evaluate", "anomaly", "--method", "fanogan", "--lung-mask", "--whole-image"], "not allowed with argument"),
    (["evaluate", "anomaly-cv", "--method", "healthygan", "--gan", "g", "--out", "cv"], "--gan is f-AnoGAN's"),
    (["evaluate", "anomaly-cv", "--method", "fanogan", "--encoder", "e", "--out", "cv"], "--encoder is PatchCore's"),
    (["evaluate", "anomaly-cv", "--method", "patchcore", "--steps", "2", "--out", "cv"], "PatchCore builds its"),
])
def test_evaluate_anomaly_bad_input(capsys, nih_path, argv, message):
  code, out, err = run_cli(capsys, *argv, "--data", str(nih_path))
  assert code == 2 and out == "" and message in err
