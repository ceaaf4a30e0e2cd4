"""Property tests (hypothesis) of the `jaxcxr` command on bad input: exit 2, one error line, no traceback.

docs/cli.md and the README: bad input ends with exactly one `jaxcxr: error: ...` line
on stderr and exit status 2, nothing on stdout, never a traceback. Every command and
subcommand of `build_parser` is run in-process (`cli.main`) with:

* bad data files: missing, truncated or garbled npz (hypothesis draws the cut and the bytes),
  a single .npy, float or empty image stacks, per-image arrays of the wrong length, a PNG
  folder holding a file that is no image, a folder without images, an image archive where a
  latent dataset or a score file is expected;
* missing or corrupt checkpoints: any file of a generator checkpoint deleted, truncated,
  flipped or garbled (hypothesis draws file and damage), a config edited to mismatch the
  weights, an empty folder; a corrupt U-Net, classifier, f-AnoGAN encoder, HealthyGAN
  translator, pre-filter and scoring calibration;
* unknown groups, strategies, presets, model names and strictness levels; bad numbers
  (negative or zero counts, sizes and batch sizes) and arguments argparse itself refuses.

Commands stop before any training or generation (bad input is found first); the shipped
checkpoints are only read. `test_every_command_is_covered` fails when a command is added
to the parser without a case here.
"""

import argparse
import json
import pathlib
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from jaxcxr import checkpoints, cli, prefilter
from jaxcxr.data import GROUPS

GROUP = "38_44f"
# Derandomized: the same examples on every run (no flaky CI).
SETTINGS = settings(max_examples=20, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FEW = settings(max_examples=4, deadline=None, database=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# Tests over commands are parametrized by the command (each is met on every run), a few examples each.
PER_COMMAND = settings(max_examples=4, deadline=None, database=None, derandomize=True,
                       suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ROOT = checkpoints.checkpoints_root()


def run(capsys, argv):
  code = cli.main([str(a) for a in argv])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def assert_one_error(capsys, argv, *, contains: str | None = None) -> str:
  """Runs argv; asserts exit 2, nothing on stdout, one `jaxcxr: error:` line, no traceback; returns it."""
  code, out, err = run(capsys, argv)
  errors = [line for line in err.splitlines() if line.startswith("jaxcxr: error:")]
  assert code == 2 and out == "" and "Traceback" not in err and len(errors) == 1, (argv, code, out, err[-2000:])
  if contains is not None:
    assert contains in errors[0], (argv, errors[0])
  return errors[0]


# ----------------------------------------------------------------------------- bad data files


@pytest.fixture(scope="module")
def files(tmp_path_factory, nih_path, synthetic_records):
  """{kind: path} of bad (and two good) inputs, written once."""
  tmp = tmp_path_factory.mktemp("cli_inputs")
  raw = pathlib.Path(nih_path).read_bytes()
  (tmp / "truncated.npz").write_bytes(raw[: len(raw) // 3])
  (tmp / "garbage.npz").write_bytes(b"\x00garbage" * 20)
  np.save(tmp / "array.npy", np.zeros((2, 256, 256), np.uint8))
  np.savez(tmp / "float_images.npz", images=np.zeros((2, 256, 256), np.float32))
  np.savez(tmp / "no_images.npz", images=np.zeros((0, 256, 256), np.uint8))
  np.savez(tmp / "label_length.npz", images=np.zeros((2, 256, 256), np.uint8), label=np.array([0, 1, 0]))
  png = tmp / "png_folder"
  png.mkdir()
  Image.fromarray(np.zeros((64, 64), np.uint8)).save(png / "a.png")
  (png / "b.png").write_bytes(b"not a png")
  (tmp / "no_pngs").mkdir()
  (tmp / "no_pngs" / "notes.txt").write_text("no images here")
  latents = tmp / "latents.npz"
  prefilter.save_latent_dataset(latents, synthetic_records(n=60))
  bad = dict(synthetic_records(n=60))
  bad["z"] = np.where(bad["z"] > 2, np.nan, bad["z"]).astype(np.float32)
  np.savez(tmp / "latents_nan.npz", z=bad["z"], group=bad["group"], features=bad["features"], valid=bad["valid"],
           generator_id=np.asarray("synthetic"), **{f"score_{k}": v for k, v in bad["scores"].items()})
  paths = {p.stem if p.is_file() else p.name: p for p in tmp.iterdir()}
  paths.update(missing=tmp / "missing.npz", nih=pathlib.Path(nih_path), tmp=tmp)
  return paths


IMAGE_DATA_KINDS = ("missing", "truncated", "garbage", "array", "float_images", "no_images", "label_length",
                    "png_folder", "no_pngs")
# Commands reading radiographs with --data: argv with {data} and {tmp} filled in.
DATA_COMMANDS = {
    "data stats": ["data", "stats", "--data", "{data}"],
    "data dedup": ["data", "dedup", "--data", "{data}"],
    "train gan": ["train", "gan", "--data", "{data}", "--preset", "gan_tiny", "--out", "{tmp}/run_gan"],
    "train upsampler": ["train", "upsampler", "--data", "{data}", "--preset", "upsampler_tiny", "--out",
                        "{tmp}/run_up"],
    "train unet": ["train", "unet", "--data", "{data}", "--preset", "unet_tiny", "--out", "{tmp}/run_unet"],
    "train classifier": ["train", "classifier", "--task", "abnormal", "--data", "{data}", "--preset",
                         "classifier_tiny", "--out", "{tmp}/run_classifier"],
    "train fanogan": ["train", "fanogan", "--data", "{data}", "--preset", "fanogan_128_cpu", "--out",
                      "{tmp}/run_fanogan"],
    "train healthygan": ["train", "healthygan", "--data", "{data}", "--preset", "healthygan_tiny", "--out",
                         "{tmp}/run_healthygan"],
    "train patchcore": ["train", "patchcore", "--data", "{data}", "--out", "{tmp}/run_patchcore"],
    "evaluate gan": ["evaluate", "gan", "--data", "{data}", "--no-classifiers"],
    "evaluate anomaly-cv": ["evaluate", "anomaly-cv", "--method", "healthygan", "--data", "{data}", "--out",
                            "{tmp}/cv"],
    "evaluate segmentation": ["evaluate", "segmentation", "--data", "{data}"],
    "evaluate anomaly": ["evaluate", "anomaly", "--method", "healthygan", "--data", "{data}"],
    "evaluate classifier": ["evaluate", "classifier", "--task", "abnormal", "--data", "{data}"],
    "score": ["score", "--data", "{data}"],
    "report scoring": ["report", "scoring", "--data", "{data}", "--out", "{tmp}/report"],
    "calibrate": ["calibrate", "--data", "{data}", "--out", "{tmp}/calibration"],
}
LATENT_DATA_KINDS = ("missing", "truncated", "garbage", "array", "nih", "png_folder", "latents_nan")
# Commands reading a latent dataset (or score files) instead.
LATENT_COMMANDS = {
    "latents table": ["latents", "table", "--data", "{data}", "--out", "{tmp}/table"],
    "latents fit": ["latents", "fit", "--data", "{data}", "--group", GROUP, "--out", "{tmp}/fit"],
    "latents cascade": ["latents", "cascade", "--data", "{data}", "--out", "{tmp}/cascade_pf"],
    "train prefilter": ["train", "prefilter", "--data", "{data}", "--group", GROUP, "--out", "{tmp}/fit"],
    "train cascade-prefilter": ["train", "cascade-prefilter", "--data", "{data}", "--out", "{tmp}/cascade_pf"],
    "evaluate anomaly-ensemble": ["evaluate", "anomaly-ensemble", "{data}", "{data}"],
}


def _argv(template, files, data):
  return [a.format(data=data, tmp=files["tmp"]) for a in template]


@pytest.mark.parametrize("kind", IMAGE_DATA_KINDS)
@pytest.mark.parametrize("command", sorted(DATA_COMMANDS))
def test_data_commands_refuse_bad_data_files(capsys, files, command, kind):
  line = assert_one_error(capsys, _argv(DATA_COMMANDS[command], files, files[kind]))
  named = files[kind] / "b.png" if kind == "png_folder" else files[kind]
  assert str(named) in line


@pytest.mark.parametrize("kind", LATENT_DATA_KINDS)
@pytest.mark.parametrize("command", sorted(LATENT_COMMANDS))
def test_latent_commands_refuse_bad_latent_datasets(capsys, files, command, kind):
  if command == "evaluate anomaly-ensemble" and kind == "latents_nan":
    return                                                  # a latent dataset is just another non-score file
  assert str(files[kind]) in assert_one_error(capsys, _argv(LATENT_COMMANDS[command], files, files[kind]))


def test_sample_refuses_a_bad_latent_dataset(capsys, files):
  assert_one_error(capsys, ["sample", "--group", GROUP, "--n", "2", "--out", files["tmp"] / "s_latents",
                            "--prefilter", "youden", "--latents", files["truncated"]], contains="truncated.npz")


@pytest.mark.parametrize("command", sorted(DATA_COMMANDS) + sorted(LATENT_COMMANDS))   # each command, every run
@PER_COMMAND
@given(fraction=st.floats(0.0, 0.99), garbage=st.binary(max_size=48))
def test_any_cut_or_garbled_file_is_one_error(capsys, files, fraction, garbage, command):
  raw = files["nih"].read_bytes() if command in DATA_COMMANDS else files["latents"].read_bytes()
  bad = files["tmp"] / "cut.npz"
  bad.write_bytes(raw[: int(len(raw) * fraction)] + garbage)
  template = DATA_COMMANDS.get(command) or LATENT_COMMANDS[command]
  assert str(bad) in assert_one_error(capsys, _argv(template, files, bad))


def test_missing_default_data_folder(capsys, monkeypatch, files):
  monkeypatch.setenv("JAXCXR_DATA", str(files["tmp"] / "no_such_folder"))
  for template in DATA_COMMANDS.values():
    argv = [a for a in template if a not in ("--data", "{data}")]
    assert_one_error(capsys, _argv(argv, files, ""), contains="no_such_folder")


# ----------------------------------------------------------------------------- corrupt checkpoints


def _damage(path: pathlib.Path, how: str, seed: int) -> None:
  raw = path.read_bytes()
  rng = np.random.default_rng(seed)
  if how == "delete":
    path.unlink()
  elif how == "truncate":
    path.write_bytes(raw[: int(rng.integers(0, max(len(raw), 1)))])
  elif how == "flip":
    data = bytearray(raw or b"\x00")
    i = int(rng.integers(len(data)))
    data[i] ^= 1 << int(rng.integers(8))
    path.write_bytes(bytes(data))
  else:  # garble
    path.write_bytes(rng.integers(0, 256, max(len(raw), 8), dtype=np.uint8).tobytes())


GAN = ROOT / "gan_64"


def _gan_damages() -> list[tuple[str, str]]:
  """(file, damage) pairs of a generator checkpoint that must be noticed: any damage to the weights
  (every file under state/, hashed in the manifest) and to the manifest; the config and orbax's
  metadata deleted or garbled (a flipped bit in a JSON value could still be a valid config)."""
  if not GAN.is_dir():
    return [("none", "delete")]
  state = sorted(p.relative_to(GAN / "generator").as_posix() for p in (GAN / "generator" / "state").rglob("*")
                 if p.is_file())
  pairs = [(name, how) for name in [*state, "jaxcxr_manifest.json"] for how in ("delete", "truncate", "flip", "garble")]
  pairs += [(name, how) for name in ("config/metadata",) for how in ("delete", "truncate", "garble")]
  return pairs + [("_CHECKPOINT_METADATA", "delete"), ("metadata/metadata", "delete")]
# Commands that load a GAN folder (generator/ and discriminator/) or its generator.
GAN_COMMANDS = {
    "sample": ["sample", "--group", GROUP, "--n", "2", "--out", "{tmp}/sample", "--unfiltered", "--checkpoint",
               "{gan}/generator"],
    "evaluate gan": ["evaluate", "gan", "--checkpoint", "{gan}", "--data", "{nih}", "--no-classifiers"],
    "cascade": ["cascade", "--gan", "{gan}", "--upsampler", "bilinear", "--out", "{tmp}/cascade"],
    "evaluate anomaly": ["evaluate", "anomaly", "--method", "anogan", "--checkpoint", "{gan}", "--data", "{nih}",
                         "--steps", "1"],
    "latents build": ["latents", "build", "--n-per-group", "1", "--out", "{tmp}/latents.npz", "--checkpoint",
                      "{gan}/generator"],
    "report scoring": ["report", "scoring", "--data", "{nih}", "--out", "{tmp}/report", "--checkpoint",
                       "{gan}/generator"],
    "calibrate": ["calibrate", "--data", "{nih}", "--out", "{tmp}/calibration", "--generator", "{gan}/generator"],
}


@pytest.mark.skipif(not GAN.is_dir(), reason="needs the shipped gan_64 checkpoint")
@pytest.mark.parametrize("command", ["sample", "evaluate gan", "cascade", "evaluate anomaly", "latents build"])
@PER_COMMAND
@given(damage=st.sampled_from(_gan_damages()), seed=st.integers(0, 2**16))
def test_any_damaged_generator_file_is_one_error(capsys, tmp_path_factory, nih_path, damage, seed, command):
  name, how = damage
  tmp = tmp_path_factory.mktemp("damaged")
  gan = tmp / "gan"
  shutil.copytree(GAN, gan)
  target = gan / "generator" / name
  if how == "truncate" and target.stat().st_size == 0:
    how = "garble"
  _damage(target, how, seed)
  argv = [a.format(tmp=tmp, gan=gan, nih=nih_path) for a in GAN_COMMANDS[command]]
  assert str(gan / "generator") in assert_one_error(capsys, argv)


@pytest.fixture(scope="module")
def broken_gans(tmp_path_factory):
  """{how: GAN folder}: missing, empty generator/, config that does not fit the weights, no discriminator/."""
  tmp = tmp_path_factory.mktemp("broken_gans")
  folders = {"missing": tmp / "missing"}
  for how in ("empty", "config", "no_discriminator"):
    folders[how] = tmp / how
    shutil.copytree(GAN, folders[how])
  shutil.rmtree(folders["empty"] / "generator")
  (folders["empty"] / "generator").mkdir()
  shutil.rmtree(folders["no_discriminator"] / "discriminator")
  config_file = folders["config"] / "generator" / "config" / "metadata"
  config = json.loads(config_file.read_text())

  def widen(node):
    for key, value in node.items():
      if key in ("base_channels", "max_channels") and isinstance(value, int):
        node[key] = 2 * value
      elif isinstance(value, dict):
        widen(value)

  widen(config)
  config_file.write_text(json.dumps(config))
  return folders


@pytest.mark.skipif(not GAN.is_dir(), reason="needs the shipped gan_64 checkpoint")
@pytest.mark.parametrize("how", ["missing", "empty", "config", "no_discriminator"])
@pytest.mark.parametrize("command", sorted(GAN_COMMANDS))
def test_broken_gan_folders_are_one_error(capsys, tmp_path, nih_path, broken_gans, command, how):
  if how == "no_discriminator" and command in ("sample", "latents build", "report scoring", "calibrate"):
    return                                                   # these read the generator only
  argv = [a.format(tmp=tmp_path, gan=broken_gans[how], nih=nih_path) for a in GAN_COMMANDS[command]]
  line = assert_one_error(capsys, argv)
  assert str(broken_gans[how]) in line
  if how == "config":
    assert "in the checkpoint but" in line
  assert not (tmp_path / "cascade").exists()                 # nothing half-written


# Other checkpoints: (shipped folder, the command's argv with {ck} = a damaged copy).
OTHER_CHECKPOINTS = {
    "unet": ("unet_128/unet", ["evaluate", "segmentation", "--data", "{covid}", "--checkpoint", "{ck}"]),
    "classifier": ("classifier_sex_64/classifier", ["evaluate", "classifier", "--task", "sex", "--data", "{nih}",
                                         "--checkpoint", "{ck}"]),
    "fanogan": ("fanogan_64/encoder", ["evaluate", "anomaly", "--method", "fanogan", "--data", "{nih}",
                                       "--checkpoint", "{ck}"]),
    "healthygan": ("healthygan_64/translator", ["evaluate", "anomaly", "--method", "healthygan", "--data", "{nih}",
                                                "--checkpoint", "{ck}"]),
    "calibrate unet": ("unet_128/unet", ["calibrate", "--data", "{nih}", "--out", "{tmp}/c", "--unet", "{ck}"]),
    "calibrate classifier": ("classifier_abnormal_128/classifier", ["calibrate", "--data", "{nih}", "--out",
                                                                    "{tmp}/c", "--classifier", "{ck}"]),
    "upsampler": (None, ["cascade", "--gan", "{gan}", "--upsampler", "{ck}", "--out", "{tmp}/cascade"]),
}


@pytest.mark.parametrize("role, how", [(role, how) for role in sorted(OTHER_CHECKPOINTS)
                                       for how in ("missing", "truncate")
                                       if how == "missing" or OTHER_CHECKPOINTS[role][0] is not None])
def test_missing_or_corrupt_model_checkpoints_are_one_error(capsys, tmp_path, nih_path, covid_path, role, how):
  shipped, template = OTHER_CHECKPOINTS[role]
  ck = tmp_path / "ck"
  if how == "truncate":
    if not (ROOT / shipped).is_dir():
      pytest.skip(f"needs the shipped {shipped} checkpoint")
    shutil.copytree(ROOT / shipped, ck)
    state = max((p for p in (ck / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    _damage(state, "truncate", 0)
  argv = [a.format(ck=ck, tmp=tmp_path, nih=nih_path, covid=covid_path, gan=GAN) for a in template]
  assert str(ck) in assert_one_error(capsys, argv)


SCORING = ROOT / "scoring_256"


def _spoil_scoring(folder: pathlib.Path, how: str) -> None:
  calibration = folder / "calibration.json"
  if how == "atlas_truncated":
    _damage(folder / "atlas.npz", "truncate", 1)
  elif how == "atlas_missing":
    (folder / "atlas.npz").unlink()
  elif how == "reference_garbled":
    _damage(folder / "reference_measures.npz", "garble", 2)
  elif how == "json_garbled":
    _damage(calibration, "garble", 3)
  else:
    payload = json.loads(calibration.read_text())
    if how == "json_list":
      payload = [payload]
    elif how == "no_thresholds":
      del payload["thresholds"]
    elif how == "no_provenance":
      del payload["provenance"]
    elif how == "config_mismatch":
      payload["config"]["atlas_size"] = 32
    elif how == "config_unknown":
      payload["config"]["colour"] = "red"
    calibration.write_text(json.dumps(payload))


@pytest.mark.skipif(not SCORING.is_dir(), reason="needs the shipped scoring_256 calibration")
@pytest.mark.parametrize("how", ["atlas_truncated", "atlas_missing", "reference_garbled", "json_garbled", "json_list",
                                 "no_thresholds", "no_provenance", "config_mismatch", "config_unknown", "empty"])
def test_corrupt_scoring_calibration_is_one_error(capsys, tmp_path, nih_path, how):
  folder = tmp_path / "scoring"
  if how == "empty":
    folder.mkdir()
  else:
    shutil.copytree(SCORING, folder)
    _spoil_scoring(folder, how)
  assert str(folder) in assert_one_error(capsys, ["score", "--data", nih_path, "--scoring", folder])


def test_missing_or_corrupt_prefilter_is_one_error(capsys, tmp_path, fitted):
  assert_one_error(capsys, ["sample", "--group", GROUP, "--n", "2", "--out", tmp_path / "s", "--prefilter", "youden",
                            "--prefilter-dir", tmp_path / "missing"], contains="missing")
  fitted.save(tmp_path / "pf")
  state = max((p for p in (tmp_path / "pf" / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  _damage(state, "flip", 4)
  assert_one_error(capsys, ["sample", "--group", GROUP, "--n", "2", "--out", tmp_path / "s2", "--prefilter", "youden",
                            "--prefilter-dir", tmp_path / "pf"], contains=str(tmp_path / "pf"))


# ----------------------------------------------------------------------------- names and numbers


@pytest.mark.parametrize("command", ["sample", "demo", "latents build", "latents fit"])
@pytest.mark.parametrize("named", ["40_50m", "38_44F", "38-44f", "all", "18_24"])   # each near miss, every run
def test_near_miss_groups_are_one_error(capsys, files, named, command):
  _assert_unknown_group_is_one_error(capsys, files, named, command)


@pytest.mark.parametrize("command", ["sample", "demo", "latents build", "latents fit"])
@FEW
@given(group=st.one_of(st.text(max_size=10), st.sampled_from(["40_50m", "38_44F", "38-44f", "all", "18_24"])))
def test_unknown_groups_are_one_error(capsys, files, group, command):
  _assert_unknown_group_is_one_error(capsys, files, group, command)


def _assert_unknown_group_is_one_error(capsys, files, group, command):
  names = [g.strip() for g in group.split(",") if g.strip()]
  if group in GROUPS or "\x00" in group or (command == "latents build" and (
      group.strip() == "all" or (names and all(g in GROUPS for g in names)))):
    return                                                   # a valid group (list)
  argv = {"sample": ["sample", "--group", group, "--n", "2", "--out", files["tmp"] / "g"],
          "demo": ["demo", "--group", group, "--out", files["tmp"] / "g"],
          "latents build": ["latents", "build", "--n-per-group", "1", "--groups", group, "--out",
                            files["tmp"] / "g.npz"],
          "latents fit": ["latents", "fit", "--data", files["latents"], "--group", group, "--out",
                          files["tmp"] / "g"]}[command]
  assert_one_error(capsys, [f"--group={group}" if a == group and a.startswith("-") else a for a in argv])


@pytest.mark.parametrize("option", [
    ("sample", "--n"), ("sample", "--max-generated"), ("sample", "--batch-size"), ("demo", "--n"),
    ("latents build", "--n-per-group"), ("report scoring", "--n-per-group"), ("evaluate gan", "--n-per-group"),
    ("score", "--batch-size"), ("evaluate anomaly", "--batch-size"), ("evaluate anomaly", "--restarts"),
    ("evaluate anomaly", "--steps"), ("calibrate", "--batch-size"), ("calibrate", "--strict-n-per-group"),
    ("evaluate anomaly-cv", "--folds"), ("evaluate anomaly-cv", "--repeats"), ("evaluate anomaly-cv", "--steps"),
    ("evaluate anomaly-cv", "--batch-size"), ("train gan", "--steps"), ("train upsampler", "--steps"),
    ("train unet", "--steps"), ("train classifier", "--steps"), ("train fanogan", "--steps"),
    ("train healthygan", "--steps"), ("latents cascade", "--steps"), ("train cascade-prefilter", "--steps"),
    ("train prefilter", "--steps"), ("train encoder", "--steps")], ids=" ".join)
@FEW
@given(n=st.integers(-10**6, 0))
def test_zero_or_negative_counts_are_one_error(capsys, files, n, option):
  command, flag = option
  base = {"sample": ["sample", "--group", GROUP, "--n", "2", "--out", "{tmp}/n"],
          "demo": ["demo", "--out", "{tmp}/demo"],
          "latents build": ["latents", "build", "--n-per-group", "1", "--out", "{tmp}/n.npz"],
          "latents cascade": ["latents", "cascade", "--data", "{data}", "--out", "{tmp}/n"],
          "train cascade-prefilter": ["train", "cascade-prefilter", "--data", "{data}", "--out", "{tmp}/n"],
          "train prefilter": ["train", "prefilter", "--data", "{data}", "--group", GROUP, "--out", "{tmp}/n"],
          "train encoder": ["train", "encoder", "--data", "{tmp}", "--out", "{tmp}/n"],
          "evaluate anomaly": ["evaluate", "anomaly", "--method", "anogan", "--data", "{data}"],
          }.get(command) or DATA_COMMANDS[command]
  data = files["latents"] if command in LATENT_COMMANDS else files["nih"]
  argv = _argv(base, files, data)
  if flag in argv:                        # an option the base command line sets: drop it and its value
    del argv[argv.index(flag): argv.index(flag) + 2]
  assert_one_error(capsys, [*argv, f"{flag}={n}"])


@pytest.mark.parametrize("argv, message", [
    (["sample", "--group", GROUP, "--n", "2", "--out", "{tmp}/x", "--prefilter", "nope"], "unknown threshold strategy"),
    (["sample", "--group", GROUP, "--n", "2", "--out", "{tmp}/x", "--strictness", "lenient"], "strictness"),
    (["score", "--data", "{nih}", "--strictness", "2"], "strictness"),
    (["latents", "fit", "--data", "{latents}", "--group", GROUP, "--strategy", "nope", "--out", "{tmp}/x"],
     "unknown threshold strategy"),
    (["latents", "fit", "--data", "{latents}", "--group", GROUP, "--model", "nope", "--out", "{tmp}/x"],
     "unknown latent model preset"),
    (["latents", "table", "--data", "{latents}", "--out", "{tmp}/x", "--strategy", "nope"], "unknown strategy"),
    (["latents", "table", "--data", "{latents}", "--out", "{tmp}/x", "--models", "nope"], "unknown latent model"),
    (["latents", "table", "--data", "{latents}", "--out", "{tmp}/x", "--targets", "nope"], "unknown target"),
    (["latents", "table", "--data", "{latents}", "--out", "{tmp}/x", "--strictness", "strict"], "measures"),
    (["train", "gan", "--data", "{nih}", "--preset", "nope", "--out", "{tmp}/x"], "unknown preset"),
    (["train", "upsampler", "--data", "{nih}", "--preset", "gan_tiny", "--out", "{tmp}/x"], "unknown preset"),
    (["train", "classifier", "--task", "sex", "--data", "{nih}", "--preset", "unet_tiny", "--out", "{tmp}/x"],
     "unknown preset"),
    (["train", "encoder", "--data", "{tmp}", "--preset", "cxr_encoder_tiny", "--method", "mae", "--out", "{tmp}/x"],
     "invalid choice"),
    (["train", "ensemble", "--members", "{tmp}/a", "--task", "sex", "--data", "{nih}", "--out", "{tmp}/x"],
     "at least two"),
    (["train", "prefilter", "--data", "{latents}", "--group", GROUP, "--preset", "nope", "--out", "{tmp}/x"],
     "unknown latent model preset"),
    (["cascade", "--gan", "{tmp}/missing", "--upsampler", "bilinear", "--out", "{tmp}/x"], "missing"),
    (["report", "scoring", "--data", "{nih}", "--out", "{tmp}/x", "--covid", "{tmp}/missing.npz"], "missing.npz"),
    (["demo", "--out", "{nih}"], "not a folder"),
    (["evaluate", "anomaly-ensemble", "{nih}"], "at least two"),
    (["evaluate", "anomaly", "--method", "fanogan", "--data", "{nih}", "--steps", "3"], "AnoGAN search"),
    (["data", "dedup", "--data", "{nih}", "--hash", "nope"], "invalid choice"),
    (["evaluate", "classifier", "--task", "age", "--data", "{nih}"], "invalid choice"),
    (["sample", "--group", GROUP, "--n", "two", "--out", "{tmp}/x"], "invalid int value"),
    (["calibrate", "--data", "{nih}", "--out", "{tmp}/x", "--strict-valid-rate", "nan"], "--strict-valid-rate"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_unknown_names_and_bad_values_are_one_error(capsys, files, argv, message):
  assert_one_error(capsys, [a.format(tmp=files["tmp"], nih=files["nih"], latents=files["latents"]) for a in argv],
                   contains=message)


@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("kind", ["missing", "nih", "no_pngs", "truncated_archive"])
def test_encoder_commands_refuse_a_bad_data_folder(capsys, files, kind, command):
  # `train encoder --data` and `evaluate encoder --data` are a folder of the development archives, the NIH subset
  # archive among them.
  folder = {"missing": files["tmp"] / "no_folder", "nih": files["nih"], "no_pngs": files["no_pngs"]}.get(kind)
  if kind == "truncated_archive":
    folder = files["tmp"] / "encoder_data"
    folder.mkdir(exist_ok=True)
    shutil.copy(files["truncated"], folder / "nih_cxr14_subset_256.npz")
  rest = (["--preset", "cxr_encoder_tiny", "--out", files["tmp"] / "enc"] if command == "train"
          else ["--checkpoint", ROOT / "encoder_cxr" / "encoder", "--unet", ROOT / "unet_256" / "unet"])
  line = assert_one_error(capsys, [command, "encoder", "--data", folder, *rest])
  assert str(folder) in line


def test_evaluate_encoder_refuses_a_missing_checkpoint(capsys, files):
  line = assert_one_error(capsys, ["evaluate", "encoder", "--checkpoint", files["tmp"] / "no_encoder", "--data",
                                   files["tmp"]])
  assert "no_encoder" in line


def test_train_ensemble_refuses_missing_members(capsys, files):
  line = assert_one_error(capsys, ["train", "ensemble", "--members", files["tmp"] / "m0", files["tmp"] / "m1",
                                   "--task", "abnormal", "--data", files["nih"], "--out", files["tmp"] / "e"])
  assert str(files["tmp"] / "m0") in line


@pytest.mark.parametrize("kind", ["missing_encoder", "not_an_encoder", "truncated_archive"])
def test_train_encoder_classifier_refuses_a_bad_encoder_or_archive(capsys, files, kind):
  encoder = {"missing_encoder": files["tmp"] / "no_encoder", "not_an_encoder": ROOT / "unet_256" / "unet"}.get(
      kind, ROOT / "encoder_cxr" / "encoder")
  archive = files["truncated"] if kind == "truncated_archive" else files["nih"]
  line = assert_one_error(capsys, ["train", "encoder-classifier", "--encoder", encoder, "--task", "abnormal",
                                   "--data", archive, "--out", files["tmp"] / "probe"])
  assert str(archive if kind == "truncated_archive" else encoder) in line


def test_every_command_is_covered():
  def leaves(parser, prefix=()):
    for action in parser._actions:                            # pylint: disable=protected-access
      if isinstance(action, argparse._SubParsersAction):      # pylint: disable=protected-access
        for name, sub in action.choices.items():
          yield from leaves(sub, prefix + (name,))
        return
    yield " ".join(prefix)

  covered = set(DATA_COMMANDS) | set(LATENT_COMMANDS) | set(GAN_COMMANDS) | {"demo", "train encoder", "evaluate encoder",
                                                                                 "train ensemble",
                                                                                 "train encoder-classifier"}
  assert set(leaves(cli.build_parser())) <= covered, set(leaves(cli.build_parser())) - covered


def test_help_and_version_exit_0(capsys):
  assert cli.main(["--version"]) == 0 and "jaxcxr" in capsys.readouterr().out
  assert cli.main(["sample", "--help"]) == 0 and "--group" in capsys.readouterr().out
