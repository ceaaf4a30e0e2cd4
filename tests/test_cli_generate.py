"""`jaxcxr sample` and `jaxcxr cascade`: a tiny GAN trained, sampled, joined to an upsampler and evaluated end to
end; the shipped models' post-filtered samples; bad input -> exit 2."""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from jaxcxr import batching
from jaxcxr.cli import evaluate as evaluate_cli
from jaxcxr.cli.generate import SAMPLE_PHASES

from conftest import run_cli


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


def test_sample_keeps_only_valid_images_from_shipped_checkpoints(capsys, tmp_path):
  code, out, err = run_cli(capsys, "sample", "--group", "38_44f", "--n", "4", "--out", str(tmp_path / "s"),
                           "--batch-size", "8", "--json")
  assert code == 0, err
  result = json.loads(out)
  assert result["filtered"] is True and result["n_valid"] == 4 and len(result["files"]) == 4
  assert 0 < result["valid_rate"] <= 1 and result["seconds"] > 0
  # the kept samples are the first valid ones, in sample order; the last round stopped after the chunk (2 images on
  # one CPU device) holding the last of them
  assert result["sample_index"] == sorted(result["sample_index"])
  chunk = batching.default_chunk() or 8
  assert result["sample_index"][-1] + 1 <= result["n_generated"] <= result["sample_index"][-1] + chunk
  assert set(result["timings"]) == set(SAMPLE_PHASES) and all(s >= 0 for s in result["timings"].values())
  assert result["timings"]["sample"] >= result["seconds"]
  from jaxcxr import scoring
  scorer = scoring.load_scorer(batch_size=8)
  kept = np.stack([np.asarray(Image.open(f)) for f in result["files"]])
  assert scorer.score(kept).valid.all()
