"""SIGKILL, then the same command again: it resumes and ends with the uninterrupted run's output.

Each test starts the command as a real process (`python -c "...cli.main()"`), waits until it has
written an intermediate checkpoint or partial output (polling the file system), kills it with
SIGKILL, runs the same command to completion and compares the output with an uninterrupted run
of the same seed (run in this process through `cli.main`: the same code and compiled programs).

The killed process runs with a shim that sleeps after every atomic write of `jaxcxr.io`
(`_SLOW`), so that the run is still going when the poll sees its first checkpoint; the shim
changes no value, and the resumed process runs without it.

Mechanisms and what covers them:

* `jaxcxr sample`: the round journal (`sampling.SampleJournal`: kept images as PNGs plus the
  counters after every round; `io.open_run_dir`'s run record) -> `test_sample_*`.
* `jaxcxr latents build`: chunks of latent records in a hidden sibling folder
  (`build_latent_dataset(parts_dir=...)`) -> `test_latents_build_*`.
* Every trainer: `train.loop.run_training_loop` (the whole train state in orbax training
  checkpoints, batches and randomness folded from (seed, step) inside the jitted step) ->
  `test_train_upsampler_*` kills `jaxcxr train upsampler` (the cheapest CLI trainer to compile);
  `test_every_trainer_runs_on_the_shared_loop` checks that the gan, upsampler, U-Net,
  classifier, f-AnoGAN, HealthyGAN and score-predictor trainers all train through that loop,
  whose in-process kill-and-resume exactness each trainer's own test file checks (the score
  predictor's: `test_score_predictor_fit_resumes_exactly_on_the_shared_loop`, here).
"""

import ast
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from jaxcxr import checkpoints, cli, data, prefilter, scoring

GROUP = "38_44f"   # conftest.SAMPLING_GROUP
REPO = pathlib.Path(__file__).resolve().parents[1]
NIH_FIXTURE = REPO / "tests" / "data" / "nih_fixture.npz"

# The command line as a user runs it, with every atomic write of jaxcxr.io followed by a pause of
# $JAXCXR_TEST_WRITE_DELAY seconds (0 without it): values are untouched, the run only takes longer.
_SLOW = """
import os, sys, time
from jaxcxr import io
_write, _delay = io.write_bytes_atomic, float(os.environ.get("JAXCXR_TEST_WRITE_DELAY", "0"))
def _slow(*args, **kwargs):
  path = _write(*args, **kwargs)
  time.sleep(_delay)
  return path
io.write_bytes_atomic = _slow
from jaxcxr.cli import main
sys.exit(main())
"""


def _popen(argv, *, delay=0.0):
  env = {**os.environ, "JAXCXR_DATA": str(NIH_FIXTURE.parent), "JAXCXR_TEST_WRITE_DELAY": str(delay)}
  return subprocess.Popen([sys.executable, "-c", _SLOW, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _kill_when(proc, ready, *, timeout=240.0):
  """SIGKILLs `proc` as soon as `ready()` holds; fails if the process ended or the wait timed out first."""
  deadline = time.monotonic() + timeout
  while not ready():
    if proc.poll() is not None:
      out, err = proc.communicate()
      pytest.fail(f"the process ended (status {proc.returncode}) before the kill point:\n{err[-3000:]}")
    if time.monotonic() > deadline:
      proc.kill()
      proc.communicate()
      pytest.fail("timed out waiting for the kill point")
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL


def _run_to_end(argv):
  proc = _popen(argv)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  assert "Traceback" not in err
  return json.loads(out), err


def _run_here(capsys, argv):
  code = cli.main(list(argv))
  captured = capsys.readouterr()
  assert code == 0, captured.err
  return json.loads(captured.out)


# ----------------------------------------------------------------------------- tiny saved models


@pytest.fixture(scope="module")
def saved_models(scorer, tiny, tmp_path_factory):
  """conftest's tiny generator and scorer as checkpoint folders: (generator dir, scoring dir)."""
  root = tmp_path_factory.mktemp("models")
  unet, classifier, generator = tiny
  for name, model in (("unet", unet), ("classifier", classifier), ("generator", generator)):
    checkpoints.save_model(root / name, model, model.config)
  provenance = {"unet": str(root / "unet"), "unet_id": checkpoints.model_id(root / "unet"),
                "classifier": str(root / "classifier"), "classifier_id": checkpoints.model_id(root / "classifier")}
  scoring.Scorer(unet, classifier, scorer.calibration, scorer.config, provenance=provenance).save(root / "scoring")
  return root / "generator", root / "scoring"


# ----------------------------------------------------------------------------- jaxcxr sample


def test_sample_killed_mid_run_resumes_to_the_same_images(saved_models, tmp_path, capsys):
  generator, scoring_dir = saved_models
  common = ["--group", GROUP, "--n", "6", "--checkpoint", str(generator), "--scoring", str(scoring_dir),
            "--json"]
  reference = _run_here(capsys, ["sample", *common, "--out", str(tmp_path / "straight")])

  out = tmp_path / "killed"
  argv = ["sample", *common, "--out", str(out)]
  # Killed after its first kept image (a round's PNG and progress written), before the last one.
  proc = _popen(argv, delay=0.5)
  _kill_when(proc, lambda: (out / f"{GROUP}_00000.png").exists())
  partial = sorted(p.name for p in out.glob("*.png"))
  assert 1 <= len(partial) < 6 and (out / ".jaxcxr_run.json").exists()
  resumed, err = _run_to_end(argv)
  assert "resuming" in err

  # Bitwise: every round is the same compiled call of the same latent indices, PNG is lossless.
  assert resumed["files"] == [f.replace("straight", "killed") for f in reference["files"]]
  for a, b in zip(reference["files"], resumed["files"]):
    assert pathlib.Path(a).read_bytes() == pathlib.Path(b).read_bytes()
  for key in ("n_valid", "n_generated", "valid_rate", "sample_index"):
    assert resumed[key] == reference[key], key
  assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "straight").iterdir())

  # Once complete, the same command reports the same result again; other arguments are refused.
  again = _run_here(capsys, argv)
  assert again["files"] == resumed["files"] and again["sample_index"] == resumed["sample_index"]
  code = cli.main(["sample", *common, "--seed", "1", "--out", str(out)])
  assert code == 2 and "other arguments" in capsys.readouterr().err


# ----------------------------------------------------------------------------- jaxcxr latents build


def test_latents_build_killed_mid_run_resumes_to_the_same_records(saved_models, tmp_path, capsys):
  generator, scoring_dir = saved_models
  common = ["--n-per-group", "8", "--groups", f"{GROUP},58_64m", "--checkpoint", str(generator), "--scoring",
            str(scoring_dir), "--json"]
  _run_here(capsys, ["latents", "build", *common, "--out", str(tmp_path / "straight.npz")])

  out = tmp_path / "killed.npz"
  argv = ["latents", "build", *common, "--out", str(out)]
  work = tmp_path / ".killed.npz.partial"
  proc = _popen(argv, delay=2.0)
  _kill_when(proc, lambda: any(work.glob(f"{GROUP}_*.npz")))       # the first group is done
  assert not out.exists() and not any(work.glob("58_64m_*.npz"))
  resumed, err = _run_to_end(argv)
  assert "resuming" in err and resumed["n"] == 16 and not work.exists()

  # Bitwise equal records: each chunk holds the same batches of the same latents.
  a, b = prefilter.load_latent_dataset(tmp_path / "straight.npz"), prefilter.load_latent_dataset(out)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_latent_chunks_assemble_to_the_one_pass_records(scorer, tiny, tmp_path):
  # Several chunks per group (each a multiple of the batch size), some of them already saved.
  key = jax.random.key(5)
  options = {"generator_id": "g", "groups": (GROUP,)}
  whole = prefilter.build_latent_dataset(scorer, tiny[2], key, 10, **options)
  prefilter.build_latent_dataset(scorer, tiny[2], key, 10, parts_dir=tmp_path, chunk_size=3, **options)
  assert sorted(p.name for p in tmp_path.iterdir()) == [f"{GROUP}_{s:07d}.npz" for s in (0, 4, 8)]
  (tmp_path / f"{GROUP}_0000004.npz").unlink()                     # killed before this chunk was saved
  chunked = prefilter.build_latent_dataset(scorer, tiny[2], key, 10, parts_dir=tmp_path, chunk_size=3, **options)
  jax.tree.map(np.testing.assert_array_equal, chunked, whole)


# ----------------------------------------------------------------------------- the training loop


def test_train_upsampler_killed_mid_run_resumes_to_the_same_weights(tmp_path, capsys):
  from jaxcxr.train.upsampler import load_upsampler  # pylint: disable=g-import-not-at-top

  common = ["train", "upsampler", "--data", str(NIH_FIXTURE), "--preset", "upsampler_tiny", "--split", "all",
            "--steps", "8", "--resume", "--json"]
  reference = _run_here(capsys, [*common, "--out", str(tmp_path / "straight")])

  out = tmp_path / "killed"
  argv = [*common, "--out", str(out)]
  proc = _popen(argv, delay=0.5)
  _kill_when(proc, lambda: (out / "checkpoints" / "2").is_dir())   # a committed checkpoint of step 2 (of 8)
  assert not (out / "upsampler").exists()
  resumed, _ = _run_to_end(argv)
  assert resumed["start_step"] in (2, 4, 6) and resumed["steps"] == 8

  # Bitwise equal weights: the step draws its batch and noise from fold_in(seed key, step).
  a, b = load_upsampler(reference["upsampler"]), load_upsampler(resumed["upsampler"])
  for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b)), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert resumed["final"] == reference["final"]
  assert resumed["provenance"]["seeds"] == {"seed": 0}
  assert resumed["provenance"]["data"] == [{"path": str(NIH_FIXTURE), "sha256": data.file_sha256(NIH_FIXTURE)}]
  # The metrics log reads as the uninterrupted one's: one line per call, no line of a lost step.
  logs = [[{k: v for k, v in json.loads(line).items() if k != "images_per_second"}
           for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (tmp_path / "straight", out)]
  assert logs[0] == logs[1] and [r["step"] for r in logs[1]] == [2, 4, 6, 8]


def test_every_trainer_runs_on_the_shared_loop():
  """Each trainer module trains through `run_training_loop` (and passes it `resume`), so the loop's
  kill test covers them; their own files test in-process kill-and-resume exactness."""
  trainers = {"gan": "train_gan", "upsampler": "train_upsampler", "segmentation": "train_unet",
              "classifier": "train_classifier", "fanogan": "train_fanogan", "healthygan": "train_healthygan",
              "score_predictor": "fit_score_predictor", "cxr_encoder": "train_cxr_encoder"}
  for module, function in trainers.items():
    tree = ast.parse((REPO / "jaxcxr" / "train" / f"{module}.py").read_text())
    body = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == function)
    calls = [node for node in ast.walk(body) if isinstance(node, ast.Call)
             and getattr(node.func, "id", getattr(node.func, "attr", None)) == "run_training_loop"]
    assert len(calls) == 1, module
    assert "resume" in {kw.arg for kw in calls[0].keywords}, module


def test_score_predictor_fit_resumes_exactly_on_the_shared_loop(tmp_path, monkeypatch):
  """The cascade pre-filter's trainer, moved onto `run_training_loop`: a fit stopped after its first
  validation pass and resumed returns the uninterrupted fit's model and history (in process)."""
  from jaxcxr.config import ScorePredictorConfig  # pylint: disable=g-import-not-at-top
  from jaxcxr.train import score_predictor as trainer  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (60, 32, 32)).astype(np.uint8)
  unit = images / 255.0
  measures = {name: unit.mean(axis=(1, 2)) * (i + 1) for i, name in
              enumerate(("shape", "symmetry", "log_ratio", "abnormal_logit", "maxheat"))}
  parts = trainer.split_indices(np.full(60, GROUP), seed=0)
  options = {"train": parts["train"], "validation": parts["validation"], "steps": 30, "eval_every": 10,
             "batch_size": 8, "progress": False}
  config = ScorePredictorConfig(resolution=32, channels=(4, 8), norm_groups=2)
  straight, history = trainer.fit_score_predictor(images, measures, config, **options)

  real = trainer.run_training_loop
  monkeypatch.setattr(trainer, "run_training_loop", lambda **kwargs: real(**{**kwargs, "stop_at": 10}))
  trainer.fit_score_predictor(images, measures, config, out_dir=tmp_path / "fit", **options)
  monkeypatch.undo()
  with pytest.raises(FileExistsError, match="resume"):
    trainer.fit_score_predictor(images, measures, config, out_dir=tmp_path / "fit", **options)
  resumed, resumed_history = trainer.fit_score_predictor(images, measures, config, out_dir=tmp_path / "fit",
                                                         resume=True, **options)
  for key in ("step", "train_loss", "val_loss", "best_step", "val_r2"):
    assert resumed_history[key] == history[key], key
  for x, y in zip(jax.tree.leaves(nnx.state(straight)), jax.tree.leaves(nnx.state(resumed)), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
