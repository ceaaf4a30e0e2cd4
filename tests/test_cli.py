"""Tests for the `jaxcxr` command: data stats and dedup, JSON output, bad input -> exit 2."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxcxr import anomaly, cli, data, dataset_audit
from jaxcxr.cli import entry
from jaxcxr.cli import evaluate as evaluate_cli

SHARED_NIH = pathlib.Path(__file__).parents[2] / "shared" / "data" / "nih_cxr14_subset_256.npz"


def run_cli(capsys, *argv):
  code = cli.main(list(argv))
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_stats_json_and_images(capsys, nih_path, tmp_path):
  out_dir = tmp_path / "stats"
  code, out, err = run_cli(capsys, "data", "stats", "--data", str(nih_path), "--out", str(out_dir), "--json")
  assert code == 0
  result = json.loads(out)
  assert result["n"] == 24 and result["n_patients"] == 24
  assert result["labels"] == {"normal": 12, "abnormal": 12}
  assert result["sex"] == {"F": 12, "M": 12}
  assert all(c == {"normal": 2, "abnormal": 2, "total": 4} for c in result["groups"].values())
  for name in ("normal", "abnormal"):
    mean = np.asarray(Image.open(result["images"][name]["mean"]))
    assert mean.shape == (256, 256) and mean.dtype == np.uint8
  # The mean normal image is the pixel mean of the normal images.
  from jaxcxr import data
  ds = data.load(nih_path)
  expected = np.round(ds.images[ds.label == 0].astype(np.float64).mean(0)).astype(np.uint8)
  np.testing.assert_array_equal(np.asarray(Image.open(out_dir / "mean_normal.png")), expected)
  assert "loading" in err
  # A second run into the same folder needs --overwrite.
  code, _, err = run_cli(capsys, "data", "stats", "--data", str(nih_path), "--out", str(out_dir))
  assert code == 2 and "--overwrite" in err
  code, out, _ = run_cli(capsys, "data", "stats", "--data", str(nih_path), "--out", str(out_dir), "--overwrite")
  assert code == 0 and "38_44f" in out


@pytest.mark.skipif(not SHARED_NIH.exists(), reason="needs ../shared/data (present in CI, not on users' machines)")
def test_stats_on_shared_archive_matches_its_readme(capsys):
  code, out, _ = run_cli(capsys, "data", "stats", "--data", str(SHARED_NIH), "--json")
  assert code == 0
  result = json.loads(out)
  assert result["n"] == 797 and result["n_patients"] == 546
  assert result["labels"] == {"normal": 389, "abnormal": 408}
  # Table "Age-sex groups in nih_cxr14_subset_256.npz (normal/abnormal)" of shared/data/README.md.
  readme = {"18_24m": (14, 14), "18_24f": (9, 10), "38_44m": (25, 19), "38_44f": (25, 30),
            "58_64m": (23, 37), "58_64f": (23, 21)}
  assert {g: (c["normal"], c["abnormal"]) for g, c in result["groups"].items()} == readme


def test_dedup_finds_planted_duplicate_only(capsys, nih_path, tmp_path):
  images = np.load(nih_path)["images"]
  rng = np.random.default_rng(0)
  planted = np.roll(images[5], (1, 1), axis=(0, 1)).astype(np.float64) + rng.normal(0, 0.02 * 255, images[5].shape)
  planted = np.clip(np.round(planted), 0, 255).astype(np.uint8)
  path = tmp_path / "with_duplicate.npz"
  np.savez(path, images=np.concatenate([images, planted[None]]))
  code, out, _ = run_cli(capsys, "data", "dedup", "--data", str(path), "--json")
  assert code == 0
  result = json.loads(out)
  assert result["n"] == 25
  assert [(p["i"], p["j"]) for p in result["pairs"]] == [(5, 24)]
  assert result["pairs"][0]["distance"] <= 5 and result["pairs"][0]["ssim"] > 0.5

  code, out, _ = run_cli(capsys, "data", "dedup", "--data", str(nih_path), "--json")
  assert code == 0 and json.loads(out)["n_pairs"] == 0


def test_dedup_hashes_are_the_librarys(nih_path):
  # The parser lists the hashes without importing the library (`--help` stays fast); they must be the library's.
  assert entry.HASH_NAMES == dataset_audit.HASHES
  with pytest.raises(ValueError, match="unknown hash"):
    dataset_audit.near_duplicates(data.load(nih_path), hash_name="md5")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "stats", "--data", "{tmp}/missing.npz"], "missing.npz: no such file"),
        (["data", "stats", "--data", "{tmp}/noimages.npz"], "no `images` array"),
        (["data", "dedup", "--data", "{tmp}/noimages.npz"], "no `images` array"),
        (["data", "dedup", "--data", "{tmp}/noimages.npz", "--max-distance", "-1"], "--max-distance must be >= 0"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, argv, message):
  np.savez(tmp_path / "noimages.npz", pixels=np.zeros((1, 256, 256), np.uint8))
  code, out, err = run_cli(capsys, *[a.format(tmp=tmp_path) for a in argv])
  assert code == 2 and out == ""
  assert message in err and "Traceback" not in err


def test_missing_data_path_without_env(capsys, monkeypatch):
  monkeypatch.delenv("JAXCXR_DATA", raising=False)
  code, _, err = run_cli(capsys, "data", "stats")
  assert code == 2 and "JAXCXR_DATA is unset" in err


def test_data_env_variable_is_used(capsys, monkeypatch, nih_path, tmp_path):
  (tmp_path / "nih_cxr14_subset_256.npz").symlink_to(nih_path.resolve())
  monkeypatch.setenv("JAXCXR_DATA", str(tmp_path))
  code, out, _ = run_cli(capsys, "data", "stats", "--json")
  assert code == 0 and json.loads(out)["n"] == 24


def test_evaluate_gan_default_data_is_both_nih_archives(capsys, monkeypatch, nih_path, tmp_path):
  (tmp_path / "nih_cxr14_subset_256.npz").symlink_to(nih_path.resolve())
  monkeypatch.setenv("JAXCXR_DATA", str(tmp_path))
  code, out, err = run_cli(capsys, "evaluate", "gan", "--no-classifiers")
  assert code == 2 and out == "" and f"{tmp_path}/nih_cxr14_extra_256.npz: no such file" in err


def test_help_and_usage_errors_import_no_jax():
  # The parser and `--help` stay fast: a command's module (and the library, jax) is imported only once it parses.
  code = ("import sys; from jaxcxr import cli; cli.build_parser().format_help(); "
          "code = cli.main(['data', 'frobnicate']); print(code, sorted(m for m in ('jax', 'flax', 'numpy', 'orbax.checkpoint', 'matplotlib', 'jaxcxr.data') "
          "if m in sys.modules))")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert proc.stdout.strip() == "2 []", proc.stdout + proc.stderr


def test_console_script_reports_errors_without_traceback(tmp_path):
  # The installed entry point, as a user runs it: argparse errors and data errors both exit 2.
  env = {**os.environ, "JAXCXR_DATA": ""}
  proc = subprocess.run([sys.executable, "-m", "jaxcxr.cli", "data", "stats", "--data", str(tmp_path / "x.npz")],
                        capture_output=True, text=True, env=env, check=False)
  assert proc.returncode == 2 and "jaxcxr: error:" in proc.stderr and "Traceback" not in proc.stderr
  proc = subprocess.run([sys.executable, "-m", "jaxcxr.cli", "data", "frobnicate"],
                        capture_output=True, text=True, env=env, check=False)
  assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_train_sample_and_evaluate_gan_end_to_end(capsys, nih_path, tmp_path):
  run = tmp_path / "run"
  code, out, err = run_cli(capsys, "train", "gan", "--data", str(nih_path), "--preset", "gan_tiny", "--split", "all",
                           "--out", str(run), "--json")
  assert code == 0, err
  summary = json.loads(out)
  assert summary["steps"] == 4 and summary["n_images"] == 24
  # A second run into the same folder without --resume is refused, with exit 2.
  code, _, err = run_cli(capsys, "train", "gan", "--data", str(nih_path), "--preset", "gan_tiny", "--out", str(run))
  assert code == 2 and "resume" in err

  code, out, err = run_cli(capsys, "sample", "--group", "38_44f", "--n", "3", "--out", str(tmp_path / "s"),
                           "--checkpoint", str(run / "generator"), "--unfiltered", "--json")
  assert code == 0, err
  result = json.loads(out)
  assert result["n_generated"] == 3 and len(result["files"]) == 3 and result["filtered"] is False
  assert np.asarray(Image.open(result["files"][0])).shape == (32, 32)

  # A cascade of this GAN and a trained upsampler is one generator, sampled as any other, at 2x.
  code, out, err = run_cli(capsys, "train", "upsampler", "--data", str(nih_path), "--preset", "upsampler_tiny",
                           "--split", "all", "--out", str(tmp_path / "up"), "--json")
  assert code == 0, err
  upsampler = json.loads(out)
  assert upsampler["steps"] == 4 and pathlib.Path(upsampler["upsampler"]).is_dir()
  code, out, err = run_cli(capsys, "cascade", "--gan", str(run), "--upsampler", upsampler["upsampler"], "--out",
                           str(tmp_path / "cascade"), "--json")
  assert code == 0, err
  assert json.loads(out)["resolution"] == 64 and json.loads(out)["base_resolution"] == 32
  # --checkpoint takes the model folder (as the README names the shipped ones) for its generator/.
  code, out, err = run_cli(capsys, "sample", "--group", "38_44f", "--n", "2", "--out", str(tmp_path / "s2"),
                           "--checkpoint", str(tmp_path / "cascade"), "--unfiltered", "--json")
  assert code == 0, err
  assert json.loads(out)["checkpoint"] == str(tmp_path / "cascade" / "generator")
  assert np.asarray(Image.open(json.loads(out)["files"][0])).shape == (64, 64)
  code, _, err = run_cli(capsys, "cascade", "--gan", str(tmp_path / "cascade"), "--upsampler", "bilinear", "--out",
                         str(tmp_path / "cascade2"))
  assert code == 2 and "already a cascade" in err

  # The realism figures need 32 normal test images per half; the fixture's test split has 2.
  code, out, err = run_cli(capsys, "evaluate", "gan", "--checkpoint", str(run), "--data", str(nih_path),
                           "--n-per-group", "2", "--json")
  errors = [line for line in err.splitlines() if line.startswith("jaxcxr: error:")]
  assert code == 2 and out == "" and "Traceback" not in err and len(errors) == 1
  assert "2 normal test images" in errors[0] and "32 per half (the PCA dimension)" in errors[0]

  # Two archives (comma-separated) of distinct normal images: each archive's patients split alone.
  paths = [_write_normal_archive(nih_path, tmp_path / f"normals{k}.npz", 224, seed=k) for k in range(2)]
  code, out, err = run_cli(capsys, "evaluate", "gan", "--checkpoint", str(run), "--data", ",".join(paths),
                           "--n-per-group", "2", "--no-classifiers", "--json")
  assert code == 0, err
  quality = json.loads(out)
  assert np.isfinite(quality["fd_generated_vs_real"]) and set(quality["groups"]) == {
      "18_24m", "18_24f", "38_44m", "38_44f", "58_64m", "58_64f"}
  realism = quality["realism"]
  assert realism["n_per_set"] == 34             # 2 x 34 test patients (15% of 224 per archive), in two halves
  for name in ("pixels", "hog", "detail"):
    assert set(realism[f"two_sample_auc_{name}"]) == {"generated_vs_real", "real_vs_real"}
  assert realism["pca_frechet"]["ratio"] > 1 and np.isfinite(realism["high_frequency_share"]["ratio"])
  table = evaluate_cli.human_gan(quality)
  assert "two-sample AUC, HOG" in table and "PCA Frechet" in table and "high-frequency ratio" in table


def _write_normal_archive(source, path, n, *, seed):
  """An npz of n distinct normal images (the fixture's normals shifted, with pixel noise), one patient each."""
  from jaxcxr import data  # pylint: disable=g-import-not-at-top

  normals = data.load(source).select(label=0)
  rng = np.random.default_rng(seed)
  pick = rng.integers(0, len(normals), n)
  shifts = rng.integers(-6, 7, (n, 2))
  images = np.stack([np.roll(normals.images[i], tuple(s), axis=(0, 1)) for i, s in zip(pick, shifts)])
  images = np.clip(np.round(images + rng.normal(0.0, 2.0, images.shape)), 0, 255).astype(np.uint8)
  np.savez(path, images=images, label=np.zeros(n, np.int8), sex=normals.sex[pick], age=normals.age[pick],
           patient_id=np.asarray([f"archive{seed}_patient{i}" for i in range(n)]))
  return str(path)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "--group", "40_50m", "--n", "2", "--out", "{tmp}/s"], "unknown group '40_50m'"),
        (["sample", "--group", "38_44f", "--n", "0", "--out", "{tmp}/s"], "--n must be positive"),
        (["sample", "--group", "38_44f", "--n", "2", "--out", "{tmp}/s", "--checkpoint", "{tmp}/nothing"], "nothing"),
        (["train", "gan", "--data", "{tmp}/x.npz", "--preset", "gan_999", "--out", "{tmp}/r"], "unknown preset"),
        # config.PRESETS holds every family's presets; `train gan` takes only the GAN ones.
        (["train", "gan", "--data", "{tmp}/x.npz", "--preset", "unet_tiny", "--out", "{tmp}/r"],
         "unknown preset 'unet_tiny' for the conditional chest X-ray GAN"),
        (["train", "upsampler", "--data", "{tmp}/x.npz", "--preset", "upsampler_x4_generated_cpu", "--out", "{tmp}/r"],
         "trains on the base GAN's own images: give --base-gan"),
    ],
)
def test_gan_commands_bad_input(capsys, tmp_path, argv, message):
  code, out, err = run_cli(capsys, *[a.format(tmp=tmp_path) for a in argv])
  assert code == 2 and out == "" and message in err and "Traceback" not in err


# ----------------------------------------------------------------------------- scoring commands (shipped models)


def test_sample_keeps_only_valid_images_from_shipped_checkpoints(capsys, tmp_path):
  code, out, err = run_cli(capsys, "sample", "--group", "38_44f", "--n", "4", "--out", str(tmp_path / "s"),
                           "--batch-size", "8", "--json")
  assert code == 0, err
  result = json.loads(out)
  assert result["filtered"] is True and result["n_valid"] == 4 and len(result["files"]) == 4
  assert result["n_generated"] % 8 == 0 and result["n_generated"] >= 4
  assert 0 < result["valid_rate"] <= 1 and result["seconds"] > 0
  # the kept samples are the first valid ones, in sample order
  assert result["sample_index"] == sorted(result["sample_index"])
  from jaxcxr import scoring
  scorer = scoring.load_scorer(batch_size=8)
  kept = np.stack([np.asarray(Image.open(f)) for f in result["files"]])
  assert scorer.score(kept).valid.all()


def test_score_command_lists_keyed_by_score_name(capsys, nih_path):
  code, out, err = run_cli(capsys, "score", "--data", str(nih_path), "--batch-size", "8", "--json")
  assert code == 0, err
  result = json.loads(out)
  from jaxcxr import scoring
  for name in scoring.SCORE_NAMES:
    assert len(result[name]) == 24 and all(np.isfinite(result[name]))
  assert len(result["valid"]) == 24 and result["n_valid"] == sum(result["valid"])
  assert result["valid"] == [all(result[n][i] > 0 for n in scoring.SCORE_NAMES) for i in range(24)]
  assert set(result["valid_rate_by_label"]) == {"normal", "abnormal"}


def test_score_strictness_levels_from_the_command_line(capsys, nih_path):
  rates = {}
  for level in ("standard", "0.3"):
    code, out, err = run_cli(capsys, "score", "--data", str(nih_path), "--batch-size", "8", "--strictness", level,
                             "--json")
    assert code == 0, err
    result = json.loads(out)
    rates[level] = result["n_valid"]
  assert result["strictness_q"] == pytest.approx(0.3)
  assert rates["0.3"] <= rates["standard"]
  code, out, err = run_cli(capsys, "score", "--data", str(nih_path), "--strictness", "lenient")
  assert code == 2 and "strictness" in err and "standard" in err and "Traceback" not in err


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


def test_calibrate_refuses_too_few_normal_images(capsys, nih_path, tmp_path):
  code, out, err = run_cli(capsys, "calibrate", "--data", str(nih_path), "--out", str(tmp_path / "c"))
  assert code == 2 and out == "" and "at least 20" in err and "Traceback" not in err


def test_report_scoring_writes_figures_and_tables(capsys, nih_path, tmp_path):
  out_dir = tmp_path / "report"
  code, out, err = run_cli(capsys, "report", "scoring", "--data", str(nih_path), "--split", "test", "--out",
                           str(out_dir), "--n-per-group", "4", "--batch-size", "8", "--json")
  assert code == 0, err
  report = json.loads(out)
  test = data.load(nih_path).subset(data.standard_split(data.load(nih_path))["test"])
  assert report["real"]["n"] == len(test) and set(report["generated"]["groups"]) == {
      "18_24m", "18_24f", "38_44m", "38_44f", "58_64m", "58_64f"}
  assert all(0 <= g["valid_rate"] <= 1 for g in report["generated"]["groups"].values())
  for name in ("report.md", "report.json", "histograms.png", "examples_kept.png", "examples_rejected.png"):
    assert (out_dir / name).stat().st_size > 0, name
  assert len(report["symmetry_postfilter"]) == 3
  assert "Post-filter report" in (out_dir / "report.md").read_text()
  # Each score as a detector of abnormal test images, beside the baselines fitted on the training patients.
  judges = report["judges_vs_baselines"]
  assert set(judges) == {"score_shape", "score_abnormal", "score_maxheat", "score_symmetry", "score_left2right"}
  assert all(j["n"] == len(test) and j["strongest"] in j["baselines"] for j in judges.values())
  assert "beside the trivial baselines" in (out_dir / "report.md").read_text()


def test_evaluate_anomaly_anogan_from_shipped_normal_gan(capsys, nih_path, tmp_path):
  code, out, err = run_cli(capsys, "evaluate", "anomaly", "--method", "anogan", "--data", str(nih_path), "--split",
                           "all", "--steps", "3", "--batch-size", "8", "--base-image", "--restarts", "2", "--out",
                           str(tmp_path), "--whole-image", "--intensity-affine", "--early-stop-tol", "0.001", "--json")
  assert code == 0, err
  result = json.loads(out)
  assert result["n"] == 24 and result["n_normal"] == 12 and result["steps"] == 3
  assert result["base_image"] and result["restarts"] == 2 and not result["lung_mask"]
  assert result["intensity_affine"] and result["early_stop_tol"] == 0.001
  assert set(result["components"]) == {"residual_score", "feature_score"}
  assert all(0 <= c["roc_auc"] <= 1 for c in result["components"].values())
  assert 0 <= result["roc_auc"] <= 1 and result["seconds_per_image"] > 0
  low, high = result["roc_auc_ci95"]
  assert 0 <= low <= result["roc_auc"] <= high <= 1
  assert {"precision", "recall", "specificity", "f1"} <= set(result)
  assert "optimistic" in result["threshold_from"]          # no separate threshold data with --split all
  assert pathlib.Path(result["overlays"]).stat().st_size > 0


def test_evaluate_anomaly_inside_the_lungs_by_default(capsys, nih_path):
  # The default (every shipped anomaly card chose the lungs on validation); `--lung-mask` says the same explicitly.
  code, out, err = run_cli(capsys, "evaluate", "anomaly", "--method", "anogan", "--data", str(nih_path), "--split",
                           "all", "--steps", "3", "--batch-size", "8", "--base-image", "--json")
  assert code == 0, err
  result = json.loads(out)
  assert result["lung_mask"] and result["method"] == "anogan_lungs"
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
  assert "vs trivial baselines" in run_cli(capsys, "evaluate", "anomaly", "--method", "fanogan", "--data",
                                           str(nih_path), "--split", "test", "--whole-image")[1]


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
  assert anomaly_cv.METHODS == ("fanogan", "healthygan")


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "anomaly", "--method", "fanogan", "--steps", "3"], "set the AnoGAN search"),
    (["evaluate", "anomaly", "--method", "healthygan", "--base-image"], "set the AnoGAN search"),
    (["evaluate", "anomaly", "--method", "patchcore", "--intensity-affine"], "set the AnoGAN search"),
    (["evaluate", "anomaly", "--method", "anogan", "--early-stop-tol", "-1"], "--early-stop-tol must be >= 0"),
    (["evaluate", "anomaly", "--method", "anogan", "--restarts", "0"], "--restarts must be >= 1"),
    (["evaluate", "anomaly", "--method", "anogan", "--steps", "0"],
     "--steps must be positive"),
    (["evaluate", "anomaly", "--method", "fanogan", "--lung-mask", "--whole-image"], "not allowed with argument"),
])
def test_evaluate_anomaly_bad_input(capsys, nih_path, argv, message):
  code, out, err = run_cli(capsys, *argv, "--data", str(nih_path))
  assert code == 2 and out == "" and message in err
