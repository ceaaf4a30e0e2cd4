"""`jaxcxr evaluate gan|segmentation|classifier`: the default data, figures with their intervals, a checkpoint's
own patient split and the trivial baselines beside it."""

import dataclasses
import json

import pytest

from conftest import run_cli


def test_evaluate_gan_default_data_is_both_nih_archives(capsys, monkeypatch, nih_path, tmp_path):
  (tmp_path / "nih_cxr14_subset_256.npz").symlink_to(nih_path.resolve())
  monkeypatch.setenv("JAXCXR_DATA", str(tmp_path))
  code, out, err = run_cli(capsys, "evaluate", "gan", "--no-classifiers")
  assert code == 2 and out == "" and f"{tmp_path}/nih_cxr14_extra_256.npz: no such file" in err


def test_evaluate_gan_encoder_is_a_learned_judge(capsys, nih_path):
  # --no-classifiers leaves out every learned model, so naming the memorisation audit's encoder contradicts it.
  code, out, err = run_cli(capsys, "evaluate", "gan", "--data", str(nih_path), "--no-classifiers", "--encoder",
                           "checkpoints/encoder_cxr")
  assert code == 2 and out == "" and "--encoder and --no-classifiers" in err


def test_evaluate_segmentation_and_classifier(capsys, covid_path, nih_path, tmp_path):
  code, out, err = run_cli(capsys, "evaluate", "segmentation", "--data", str(covid_path), "--out",
                           str(tmp_path / "seg"), "--json")
  assert code == 0, err
  seg = json.loads(out)
  assert seg["n"] == 8 and 0.5 < seg["dice_mean"] <= 1 and {"dice_right", "dice_left", "iou_mean"} <= set(seg)
  for name in ("dice_mean", "dice_right", "dice_left"):   # bootstrap over patients brackets the mean
    low, high = seg[f"{name}_ci95"]
    assert low <= seg[name] <= high
  assert (tmp_path / "seg" / "worst_overlays.png").stat().st_size > 0
  # The trivial baseline (a morphological mask) on the same images, and the paired difference.
  base = seg["baseline"]
  assert "morphological" in base["baseline"] and 0 <= base["dice_mean"] <= 1
  assert base["difference"] == pytest.approx(seg["dice_mean"] - base["dice_mean"])
  assert base["difference_ci95"][0] <= base["difference"] <= base["difference_ci95"][1]
  code, out, err = run_cli(capsys, "evaluate", "classifier", "--task", "abnormal", "--data", str(nih_path), "--json")
  assert code == 0, err
  cls = json.loads(out)
  assert cls["n"] == 24 and 0 <= cls["roc_auc"] <= 1 and 0 <= cls["accuracy"] <= 1


def test_evaluate_classifier_uses_the_checkpoints_own_split_on_its_own_data(capsys, nih_path, tmp_path):
  from jaxcxr import checkpoints, config, data  # pylint: disable=g-import-not-at-top
  from jaxcxr.train.classifier import train_classifier  # pylint: disable=g-import-not-at-top

  cfg = dataclasses.replace(config.classifier_tiny(), task="sex", split=(0.5, 0.25, 0.25), split_seed=3)
  trained = train_classifier(data.load(nih_path), cfg, tmp_path / "run", progress=False)
  own_test = checkpoints.read_metadata(trained["classifier"])["split"]["test"]
  code, out, err = run_cli(capsys, "evaluate", "classifier", "--task", "sex", "--checkpoint", trained["classifier"],
                           "--data", str(nih_path), "--split", "test", "--json")
  assert code == 0, err
  result = json.loads(out)
  assert result["split_from"] == "the checkpoint's own patient split" and result["n"] == len(own_test)
  assert result["roc_auc"] == pytest.approx(trained["test"]["roc_auc"])
  # The trivial baselines, fitted on the same training patients, compared on the same test images.
  base = result["baselines"]
  assert base["method"]["roc_auc"] == pytest.approx(result["roc_auc"]) and base["n"] == result["n"]
  assert base["lung_statistics"] and set(base["baselines"]) == {"statistic", "statistics_logreg", "pixel_logreg"}
  strongest = base["baselines"][base["strongest"]]["roc_auc"]
  assert strongest == max(b["roc_auc"] for b in base["baselines"].values())
  assert 0 <= base["paired_delong"]["p_value"] <= 1
  assert base["paired_delong"]["difference"] == pytest.approx(result["roc_auc"] - strongest)
  assert base["fitted"]["n_train"] == len(checkpoints.read_metadata(trained["classifier"])["split"]["train"])
  assert set(base["by_view"]) == set(data.views(data.load(nih_path)))
  code, out, err = run_cli(capsys, "evaluate", "classifier", "--task", "sex", "--checkpoint", trained["classifier"],
                           "--data", str(nih_path), "--split", "test", "--no-baselines", "--out", str(tmp_path / "cam"))
  assert code == 0, err
  assert "trivial baselines" not in out and "trivial baselines" in (
      run_cli(capsys, "evaluate", "classifier", "--task", "sex", "--checkpoint", trained["classifier"], "--data",
              str(nih_path), "--split", "test")[1])
  assert (tmp_path / "cam" / "gradcam_overlays.png").stat().st_size > 0
  # The shipped classifier was trained on another file: the standard split of this one.
  code, out, err = run_cli(capsys, "evaluate", "classifier", "--task", "sex", "--data", str(nih_path), "--split",
                           "test", "--json")
  assert code == 0, err
  result = json.loads(out)
  assert result["split_from"] == "data.standard_split"
  assert result["baselines"] is None and "fewer than 2 images of a class" in err   # 1 male among 4 test images
  code, out, err = run_cli(capsys, "evaluate", "classifier", "--task", "sex", "--data", str(nih_path), "--split",
                           "train", "--baselines")
  assert code == 2 and "--baselines" in err and "Traceback" not in err
  code, out, err = run_cli(capsys, "evaluate", "classifier", "--task", "sex", "--data", str(nih_path), "--split",
                           "train", "--json")
  assert code == 0 and json.loads(out)["baselines"] is None and "no trivial baselines" in err
