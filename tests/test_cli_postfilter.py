"""`jaxcxr score`, `jaxcxr calibrate` and `jaxcxr report scoring` with the shipped post-filter models."""

import json

import numpy as np
import pytest

from jaxcxr import data

from conftest import run_cli


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
