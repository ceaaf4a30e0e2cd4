"""`jaxcxr data stats` and `jaxcxr data dedup`: JSON output, images, $JAXCXR_DATA, bad input -> exit 2."""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from jaxcxr import data, dataset_audit
from jaxcxr.cli import entry

from conftest import run_cli

SHARED_NIH = pathlib.Path(__file__).parents[2] / "shared" / "data" / "nih_cxr14_subset_256.npz"


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
