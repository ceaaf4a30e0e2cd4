"""`jaxcxr train MODEL` for every model family the project ships, a few steps each on the fixtures.

Each command runs in-process through `cli.main` (compiled programs are shared with the rest of
the session) with its family's tiny preset; the test loads what the run wrote with the family's
own loader and checks the JSON summary. Runs that later commands build on (the GAN of a cascade
and its pre-filter, the classifiers of an ensemble) are module fixtures, made once. Where another
test file trains the same tiny model on the same fixture images (tests/test_cli_generate.py's GAN and
upsampler, tests/test_fanogan.py's and tests/test_healthygan.py's runs), the command here uses
the same arguments, so that the session compiles each program once. Bad combinations end with
exit 2 and one `jaxcxr: error:` line naming the fault.
"""

import contextlib
import io
import json
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

from jaxcxr import checkpoints, cli, config, prefilter
from jaxcxr.cli import entry
from jaxcxr.models.classifier import load_classifier
from jaxcxr.models.cxr_encoder import load_cxr_encoder
from jaxcxr.models.ensemble import ClassifierEnsemble
from jaxcxr.models.fanogan import load_encoder
from jaxcxr.models.generator import load_generator
from jaxcxr.models.healthygan import load_translator
from jaxcxr.models.unet import load_unet
from jaxcxr.prefilter.cascade import load_cascade_prefilter

from conftest import COVID_FIXTURE, NIH_FIXTURE, SAMPLING_GROUP
from test_fanogan import random_gan, save_gan
from test_patchcore import save_tiny_encoder

NIH = str(NIH_FIXTURE)
SCORING = checkpoints.checkpoints_root() / "scoring_256"


def train(*argv) -> tuple[int, dict | None, str]:
  """Runs `jaxcxr train ARGV --json`; returns (exit status, the JSON result or None, stderr)."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = cli.main(["train", *[str(a) for a in argv], "--json"])
  return code, json.loads(out.getvalue()) if code == 0 else None, err.getvalue()


def assert_error(argv, message: str) -> None:
  code, _, err = train(*argv)
  errors = [line for line in err.splitlines() if line.startswith("jaxcxr: error:")]
  assert code == 2 and len(errors) == 1 and "Traceback" not in err, (argv, code, err[-2000:])
  assert message in errors[0], (message, errors[0])


@pytest.fixture(scope="module")
def gan(tmp_path_factory):
  """A `gan_tiny` run on all NIH fixture images (as in test_cli_generate.py: one compiled step): (folder, JSON)."""
  out = tmp_path_factory.mktemp("gan") / "run"
  code, result, err = train("gan", "--data", NIH, "--preset", "gan_tiny", "--split", "all", "--out", out)
  assert code == 0, err
  return out, result


@pytest.fixture(scope="module")
def normal_gan(tmp_path_factory):
  """A random normal-only GAN folder, tests/test_fanogan.py's (its f-AnoGAN step compiles once for both files)."""
  return save_gan(tmp_path_factory.mktemp("normal_gan"), *random_gan())


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
  """Two `classifier_tiny` sex classifiers (not the presets' default task), seeds 0 and 1: [(folder, JSON result)]."""
  runs = []
  for seed in (0, 1):
    out = tmp_path_factory.mktemp("classifier") / f"seed{seed}"
    code, result, err = train("classifier", "--task", "sex", "--data", NIH, "--preset", "classifier_tiny",
                              "--seed", seed, "--out", out)
    assert code == 0, err
    runs.append((out, result))
  return runs


# ----------------------------------------------------------------------------- help


def test_train_help_lists_every_family_and_each_family_its_presets(capsys, monkeypatch):
  monkeypatch.setenv("COLUMNS", "400")          # one help line per family, not wrapped
  assert set(entry.TRAIN_COMMANDS.values()) - {None} == set(config.FAMILIES)
  assert cli.main(["train", "--help"]) == 0
  listing = " ".join(capsys.readouterr().out.split())
  for command, family in entry.TRAIN_COMMANDS.items():
    help_line = config.FAMILIES[family].help if family else entry.UNCONFIGURED_HELP[command]
    assert f" {command} {help_line}" in listing, command
    assert cli.main(["train", command, "--help"]) == 0
    text = capsys.readouterr().out
    presets = config.FAMILIES[family].presets if family else config.LATENT_PRESETS if command == "prefilter" else ()
    for preset in presets:
      assert preset in text, (command, preset)
    if family:
      assert "--preset" in text and f"FAMILIES[{family!r}]" in text


# ----------------------------------------------------------------------------- each family


def test_gan(gan):
  run, result = gan
  assert result["preset"] == "gan_tiny" and result["steps"] == 4 and result["n_images"] == 24
  assert load_generator(run / "generator").config == config.gan_tiny().generator


def test_fanogan_encoder_of_a_normal_gan(normal_gan, tmp_path):
  code, result, err = train("fanogan", "--gan", normal_gan, "--data", NIH, "--preset", "fanogan_tiny", "--split",
                            "all", "--out", tmp_path / "fanogan")
  assert code == 0, err
  assert result["preset"] == "fanogan_tiny" and result["steps"] == 4 and result["gan"] == str(normal_gan)
  assert result["n_images"] == 12 and result["split"] == "all"          # the fixture's normal images
  assert load_encoder(result["encoder"]).config == config.fanogan_tiny().encoder
  assert checkpoints.read_metadata(result["encoder"])["generator_id"] == checkpoints.model_id(
      normal_gan / "generator")
  assert_error(["fanogan", "--gan", normal_gan, "--data", NIH, "--preset", "fanogan_64_cpu", "--out",
                tmp_path / "f2"], "the encoder config at 64x64")
  assert result["feature_weight"] == 1.0 and result["feature_encoder"] is None      # the paper's term by default
  assert checkpoints.read_metadata(result["encoder"])["feature_term"] == "discriminator"
  assert_error(["fanogan", "--gan", normal_gan, "--data", NIH, "--preset", "fanogan_tiny", "--feature-weight", "-1",
                "--out", tmp_path / "f3"], "feature_weight >= 0")
  assert_error(["fanogan", "--gan", normal_gan, "--data", NIH, "--preset", "fanogan_tiny", "--feature-encoder",
                tmp_path / "missing", "--out", tmp_path / "f4"], "no such folder")
  assert_error(["fanogan", "--gan", normal_gan, "--data", NIH, "--preset", "fanogan_tiny", "--feature-stage",
                "stage1", "--out", tmp_path / "f5"], "no --feature-encoder given")


def test_upsampler_cascade_and_its_cascade_prefilter(gan, tmp_path):
  if not SCORING.is_dir():
    pytest.skip("needs the shipped scoring_256 calibration (the levels the thresholds are chosen at)")
  code, result, err = train("upsampler", "--data", NIH, "--preset", "upsampler_tiny", "--split", "all", "--out",
                            tmp_path / "up")
  assert code == 0, err
  assert result["steps"] == 4 and pathlib.Path(result["upsampler"]).is_dir()
  assert cli.main(["cascade", "--gan", str(gan[0]), "--upsampler", result["upsampler"], "--out",
                   str(tmp_path / "cascade")]) == 0
  generator_dir = tmp_path / "cascade" / "generator"
  # A latent dataset of the cascade: measures drawn from the real normals' that calibrated scoring_256.
  reference = np.load(SCORING / "reference_measures.npz")
  rng = np.random.default_rng(0)
  n = 200
  rows = rng.integers(0, len(reference["shape"]), n)
  measures = {k: (reference[k][rows] + 0.05 * rng.standard_normal(n)).astype(np.float32) for k in reference.files}
  measures.update(area_right=np.full(n, 900.0, np.float32), area_left=np.full(n, 800.0, np.float32))
  records = {"z": rng.standard_normal((n, 128)).astype(np.float32), "group": np.full(n, SAMPLING_GROUP),
             "scores": {name: np.zeros(n, np.float32) for name in prefilter.SCORE_NAMES},
             "features": np.zeros((n, 6), np.float32), "valid": np.ones(n, bool),
             "generator_id": checkpoints.model_id(generator_dir), "measures": measures}
  prefilter.save_latent_dataset(tmp_path / "latents.npz", records)
  argv = ["cascade-prefilter", "--data", tmp_path / "latents.npz", "--checkpoint", tmp_path / "cascade",
          "--preset", "cascade_prefilter_tiny", "--out", tmp_path / "cpf"]
  code, result, err = train(*argv)
  assert code == 0, err
  assert result["preset"] == "cascade_prefilter_tiny" and result["steps"] == 20
  assert set(result["levels"]) == {"standard", "strict"}
  loaded = load_cascade_prefilter(tmp_path / "cpf")
  assert loaded.predictor.config == config.cascade_prefilter_tiny().predictor
  assert loaded.generator_id == records["generator_id"] and loaded.thresholds == result["thresholds"]
  assert_error([*argv[:-1], tmp_path / "cpf2", "--resume"], "resumes by itself")
  assert_error([*argv[:-1], tmp_path / "cpf2", "--steps", "15"], "multiple of steps_per_call=10")
  assert_error([*argv[:5], "--preset", "cascade_prefilter_64", "--out", tmp_path / "cpf2"],
               "predicts from 64x64 base images")
  assert_error([*argv[:5], "--out", tmp_path / "cpf2"],   # the default follows the base: 32x32 has no preset
               "no cascade pre-filter preset reads 32x32 base images (the default would be cascade_prefilter_32)")


def test_unet_trains_and_resumes_to_more_steps(tmp_path):
  out = tmp_path / "unet"
  argv = ["unet", "--data", COVID_FIXTURE, "--preset", "unet_tiny", "--out", out]
  code, result, err = train(*argv, "--steps", "4")
  assert code == 0, err
  assert result["steps"] == 4 and result["data"]["n_images"] == 8 and result["val"] is not None
  assert_error([*argv, "--steps", "8"], "pass --resume")
  code, result, err = train(*argv, "--steps", "8", "--resume")
  assert code == 0, err
  assert (result["start_step"], result["steps"]) == (4, 8)
  assert load_unet(result["unet"]).config == config.unet_tiny().unet


def test_classifiers_and_their_ensemble(classifiers, tmp_path):
  for run, result in classifiers:
    assert result["task"] == "sex" and result["steps"] == 4 and result["test"] is None    # no --report-test
    assert load_classifier(run / "classifier").config == config.classifier_tiny().model
    assert checkpoints.read_metadata(run / "classifier")["task"] == "sex"
  members = [run for run, _ in classifiers]
  code, result, err = train("ensemble", "--members", *members, "--task", "sex", "--data", NIH,
                            "--pixel-size", "8", "--out", tmp_path / "ensemble")
  assert code == 0, err
  ensemble = load_classifier(result["classifier"])
  assert isinstance(ensemble, ClassifierEnsemble) and ensemble.config.members == 2
  # The ensemble holds its members' weights.
  for slot, (run, _) in zip(ensemble.members, classifiers):
    member = load_classifier(run / "classifier")
    for a, b in zip(jax.tree.leaves(nnx.state(slot)), jax.tree.leaves(nnx.state(member)), strict=True):
      np.testing.assert_array_equal(a, b)
  assert set(result["val_voters"]) == {"member 0", "member 1", "pixel"}
  assert_error(["ensemble", "--members", *members, "--task", "sex", "--data", NIH, "--pixel-size", "8",
                "--out", tmp_path / "ensemble"], "pass --overwrite")
  assert_error(["ensemble", "--members", *members, "--task", "abnormal", "--data", NIH, "--out", tmp_path / "e2"],
               "is a sex classifier, not abnormal")
  assert_error(["ensemble", "--members", members[0], "--task", "sex", "--data", NIH, "--out", tmp_path / "e2"],
               "at least two classifiers")
  assert_error(["ensemble", "--members", *members, "--task", "sex", "--data", NIH, "--pixel-size", "5",
                "--out", tmp_path / "e2"], "pixel_size=5")
  assert_error(["ensemble", "--members", *members, "--task", "sex", "--data", NIH, "--out", tmp_path / "e2",
                "--resume"], "keeps no training checkpoints")


def test_healthygan(tmp_path):
  # Every image of the fixture, as tests/test_healthygan.py trains on (one compiled step for both files).
  code, result, err = train("healthygan", "--data", NIH, "--preset", "healthygan_tiny", "--split", "all", "--out",
                            tmp_path / "hg")
  assert code == 0, err
  assert result["steps"] == 4 and (result["n_mixed"], result["n_normal"]) == (24, 12)
  assert load_translator(result["translator"]).config == config.healthygan_tiny().translator


def test_patchcore_bank_is_fitted_then_evaluated_from_its_folder(tmp_path):
  encoder = save_tiny_encoder(tmp_path / "encoder")
  argv = ["patchcore", "--data", NIH, "--encoder", encoder, "--stages", "stage2", "--no-lung-mask", "--split", "all",
          "--coreset-fraction", "0.5"]
  code, result, err = train(*argv, "--out", tmp_path / "pc")
  assert code == 0, err
  # The fixture's 12 normal images, 4x4 patches of 16 channels each, half of them kept.
  assert result["n_images"] == 12 and result["grid"] == [4, 4] and result["memory_bank"] == [96, 16]
  assert not result["masked"] and not result["exposure"]
  assert_error([*argv, "--out", tmp_path / "pc"], "pass --overwrite")
  assert_error([*argv, "--out", tmp_path / "pc2", "--resume"], "keeps no training checkpoints")
  assert_error([*argv, "--out", tmp_path / "pc2", "--stages", "stage9"], "stages")
  assert_error([*argv, "--out", tmp_path / "pc2", "--coreset-fraction", "0"], "--coreset-fraction")
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = cli.main(["evaluate", "anomaly", "--method", "patchcore", "--checkpoint", str(tmp_path / "pc"), "--data",
                     NIH, "--split", "all", "--whole-image", "--json"])
  assert code == 0, err.getvalue()
  report = json.loads(out.getvalue())
  assert report["method"] == "patchcore" and report["n"] == 24 and 0.0 <= report["roc_auc"] <= 1.0


def test_prefilter_is_latents_fit(synthetic_records, tmp_path):
  prefilter.save_latent_dataset(tmp_path / "latents.npz", synthetic_records(n=200))
  argv = ["prefilter", "--data", tmp_path / "latents.npz", "--group", SAMPLING_GROUP, "--steps", "200"]
  code, result, err = train(*argv, "--out", tmp_path / "pf")
  assert code == 0, err
  loaded = prefilter.load_prefilter(tmp_path / "pf")
  assert loaded.group == SAMPLING_GROUP and loaded.model_preset == "logreg" and result["threshold"] == loaded.threshold
  # The same command as `latents fit`: the same pre-filter from the same arguments.
  assert cli.main(["latents", "fit", *[str(a) for a in argv[1:]], "--out", str(tmp_path / "pf2"), "--json"]) == 0
  np.testing.assert_array_equal(prefilter.load_prefilter(tmp_path / "pf2").threshold, loaded.threshold)
  assert_error([*argv, "--out", tmp_path / "pf3", "--resume"], "keeps no training checkpoints")
  assert_error([*argv, "--out", tmp_path / "pf3", "--preset", "logreg2"], "unknown latent model preset")


def test_encoder_on_a_folder_of_development_archives(tmp_path):
  folder = tmp_path / "data"
  folder.mkdir()
  (folder / "nih_cxr14_subset_256.npz").symlink_to(NIH_FIXTURE)
  (folder / "covid_v7lungs_256.npz").symlink_to(COVID_FIXTURE)
  code, result, err = train("encoder", "--data", folder, "--preset", "cxr_encoder_tiny", "--method", "simclr",
                            "--out", tmp_path / "enc")
  assert code == 0, err
  assert result["method"] == "simclr" and result["steps"] == 4
  encoder = load_cxr_encoder(result["encoder"])
  assert encoder.config == config.cxr_encoder_tiny().encoder
  assert checkpoints.read_metadata(result["encoder"])["train_config"]["method"] == "simclr"
  assert_error(["encoder", "--data", NIH, "--preset", "cxr_encoder_tiny", "--out", tmp_path / "e2"],
               "no nih_cxr14_subset_256.npz")


# ----------------------------------------------------------------------------- bad combinations


@pytest.mark.parametrize("argv, message", [
    (["unet", "--data", COVID_FIXTURE, "--preset", "unet_999"], "unknown preset 'unet_999' for the lung-segmentation"),
    (["healthygan", "--data", NIH, "--preset", "fanogan_tiny"], "unknown preset 'fanogan_tiny'"),
    (["classifier", "--task", "sex", "--data", NIH, "--preset", "classifier_tiny", "--steps", "3"],
     "multiple of steps_per_call=2"),
    (["classifier", "--data", NIH, "--preset", "classifier_tiny"], "--task"),
    (["fanogan", "--gan", "{tmp}/no_gan", "--data", NIH, "--preset", "fanogan_tiny"], "no_gan: expected a normal-only"),
    (["encoder", "--data", NIH, "--preset", "cxr_encoder_cpu", "--steps", "0"], "--steps must be a positive"),
    (["cascade-prefilter", "--data", "{tmp}/x.npz", "--preset", "nope"], "unknown preset 'nope'"),
])
def test_bad_combinations_are_one_error(tmp_path, argv, message):
  assert_error([str(a).format(tmp=tmp_path) for a in argv] + ["--out", tmp_path / "out"], message)
  assert not (tmp_path / "out").exists()

