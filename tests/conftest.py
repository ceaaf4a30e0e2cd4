"""Shared test set-up (after equinox's conftest): strict rank promotion, a key fixture, fixture paths.

Dtype promotion stays "standard": optax 0.2.8's adam update mixes a Python float with
an int32 count and fails under jax_numpy_dtype_promotion="strict", so strict dtype
promotion would test a configuration no user can run.
"""

import functools
import os
import pathlib
import subprocess
import sys
import tempfile

# XLA:CPU compiles take most of the suite's time, and the tests' tiny models spend little time running. Two settings
# make the compiles cheaper. XLA's classic loop emitters (in place of the MLIR fusion emitters, the default) compile
# faster: the `gan_tiny` train step in 42 s instead of 52 s, the `upsampler_tiny` one in 12 s instead of 19 s;
# test_cascade.py used 20% and the CLI tests 13% less CPU time (2-core machine, back to back). And LLVM generates the
# code at -O0 (`--xla_backend_optimization_level=0`: XLA's HLO passes, fusion and sharding stay as users get them;
# only the backend's code generation skips its optimisations): the whole suite took 1,183 CPU-s of user time against
# 1,728 at the default level (-32%), 647 s of pytest wall time against 1,059 (the same machine and load, session 20).
# At -O0 XLA:CPU miscompiles the U-Net's training step with its gradient clip: NaN gradients in its first block
# from the second step on (the same program is finite at -O1 and -O2, and at -O0 without the clip, which is why
# `config.unet_tiny` has none), and the CXR encoder's two-step twin check, which asks that gradients zero in exact
# arithmetic stay below 1e-5 of the largest, saw one such entry above it. The two twin checks of those steps are
# marked `xla_optimised` and run in a subprocess at -O2 instead (`pytest_pyfunc_call` below). The programs compute
# the same functions, float rounding aside. The settings hold for this session and the processes it starts (they
# inherit the environment); a flag already in $XLA_FLAGS is left as given, so
# XLA_FLAGS="--xla_cpu_use_fusion_emitters=true --xla_backend_optimization_level=2" runs the suite with the code
# generation users get.
TEST_XLA_FLAGS = {"--xla_cpu_use_fusion_emitters": "false", "--xla_backend_optimization_level": "0"}
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", "")] + [f"{name}={value}" for name, value in TEST_XLA_FLAGS.items()
                                         if name not in os.environ.get("XLA_FLAGS", "")]).strip()

# JAX's default threefry keys with `jax_threefry_partitionable` (default in jax 0.10.2) compile slowly on XLA:CPU:
# the first `jax.random.normal` of each new shape took 4.2 s against 0.4 s without it, and every model built eagerly
# in a test draws its initial weights shape by shape: a tiny 64x64 generator took 11.8 s to build against 3.9 s (one
# core of the 2-core machine, the other busy; test_cascade.py used 101 against 84 CPU-s). The tests switch it off, for
# this session and the processes it starts, unless $JAX_THREEFRY_PARTITIONABLE says otherwise. Random draws then
# differ from a user's: no test depends on their values, only on their properties (and on a run against itself, e.g.
# killed and resumed, in the same setting).
os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position  (after $XLA_FLAGS: the backend reads it)
import numpy as np
import pytest
from flax import nnx

from jaxcxr import batching, cli, compilation_cache

jax.config.update("jax_numpy_rank_promotion", "raise")

# One persistent compilation cache for the session and the processes it starts (CLI runs, the
# notebook kernel): identical programs compile once; the user's own cache folder stays untouched.
# pytest-xdist's workers inherit the folder of the main process, so they share it too.
if compilation_cache.ENV not in os.environ:
  os.environ[compilation_cache.ENV] = tempfile.mkdtemp(prefix="jaxcxr-test-xla-")
compilation_cache.enable_compilation_cache()

DATA = pathlib.Path(__file__).parent / "data"
NIH_FIXTURE = DATA / "nih_fixture.npz"
COVID_FIXTURE = DATA / "covid_fixture.npz"


# The test files that take longest (about 15 CPU-s or more each), longest first (a serial run with `--durations=0`,
# session 14), with test_wheel.py some files after test_demo.py: its `jaxcxr demo` reuses test_demo.py's compiled
# programs from the shared cache. They are collected first: pytest-xdist with `--dist loadfile
# --no-loadscope-reorder` hands whole files to the workers in collection order, so the long ones start first and
# the short ones even out the end. (Without --no-loadscope-reorder, xdist 3.8 orders the files by their number of
# tests instead: a timeline of the suite showed test_properties_api.py, test_scoring.py and test_properties_cli.py
# first and the 140-s test_benchmarks.py starting at 256 s.) Without xdist only the order changes.
# test_cli_train.py comes after test_cli_generate.py, whose `train gan` and `train upsampler` programs it compiles
# again: by then they are in the shared cache.
LONG_FILES = ("test_twins.py", "test_cascade.py", "test_benchmarks.py", "test_prefilter_cascade.py",
              "test_cxr_encoder.py", "test_cli_generate.py", "test_cli_anomaly.py", "test_demo.py", "test_anomaly.py",
              "test_scoring.py", "test_cli_train.py", "test_kill_resume.py", "test_properties_cli.py",
              "test_pretrained.py", "test_wheel.py", "test_cli_evaluate.py", "test_cli_postfilter.py", "test_gan.py",
              "test_prefilter_sampler.py", "test_unet.py", "test_notebook.py", "test_fanogan.py", "test_classifier.py",
              "test_anomaly_cv.py", "test_quality.py", "test_ensemble.py", "test_properties_api.py")


def pytest_xdist_auto_num_workers(config):
  """`-n auto`: one worker more than the machine has cores (capped by `--maxprocesses`).

  The tests wait on single-threaded XLA compiles, subprocess start-ups and file writes much of
  the time, so a worker per core leaves cores idle: on the 2-core CI machine, back to back on a
  quiet machine, 3 workers ran the suite in 502 s of pytest wall time against 563 s for 2.
  """
  del config
  return batching.usable_cores() + 1


OPTIMISED_LEVEL = "--xla_backend_optimization_level=2"


def session_compiles_unoptimised() -> bool:
  """Whether this session's XLA:CPU code generation runs at -O0 (the default of the suite, `TEST_XLA_FLAGS`)."""
  return "--xla_backend_optimization_level=0" in os.environ.get("XLA_FLAGS", "").split()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
  """A test marked `xla_optimised` in a session at -O0 runs alone in a subprocess at -O2; it passes or fails there.

  Its fixtures are set up here as well (cheap ones in the marked tests) and again in the subprocess;
  its `record_property` entries stay in the subprocess.
  """
  if pyfuncitem.get_closest_marker("xla_optimised") is None or not session_compiles_unoptimised():
    return None
  flags = [f for f in os.environ["XLA_FLAGS"].split() if not f.startswith("--xla_backend_optimization_level")]
  env = {**os.environ, "XLA_FLAGS": " ".join([*flags, OPTIMISED_LEVEL])}
  proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         pyfuncitem.nodeid], cwd=pyfuncitem.config.rootpath, env=env, capture_output=True, text=True,
                        timeout=900, check=False)
  if proc.returncode != 0:
    pytest.fail(f"{pyfuncitem.nodeid} at {OPTIMISED_LEVEL} (subprocess):\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}",
                pytrace=False)
  return True


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONG_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))   # stable: a file's tests keep their order


@functools.partial(nnx.jit, static_argnames=("method",))
def jit_call(module, *args, method: str = "__call__"):
  """`module.method(*args)` as one compiled call, for a test's own reference computations.

  Called outside `jit`, a model runs operation by operation, and XLA:CPU compiles each new
  (operation, shape) pair on its own: a tiny cascade's forward pass made about 230 such
  compiles (5-8 s), and test_cascade.py spent 50 of its 84 s compiling 1,486 of them. One
  compiled call of the same function costs a fraction of that and gives the values the
  library's own compiled calls give (float rounding aside).
  """
  return getattr(module, method)(*args)


def unoptimised_xla_flags(*extra: str) -> str:
  """$XLA_FLAGS and `extra` for a subprocess whose XLA:CPU code generation runs at -O0, unless $XLA_FLAGS names a level.

  For the subprocesses whose values are checked against nothing (the benchmarks' records) or only
  against the same process's (sharded against one-device results). In the default session (-O0,
  `TEST_XLA_FLAGS`) this is the session's own setting; a level chosen in the environment is kept.
  At -O0 XLA gave NaN gradients in the U-Net's training step (see TEST_XLA_FLAGS): equal NaNs pass
  numpy's `assert_allclose`, so a test comparing such results checks that they are finite too.
  """
  flags = " ".join([os.environ.get("XLA_FLAGS", ""), *extra]).strip()
  return flags if "--xla_backend_optimization_level" in flags else f"{flags} --xla_backend_optimization_level=0".strip()


def run_cli(capsys, *argv):
  """Runs `jaxcxr ARGV` in this process (compiled programs shared with the session): (exit status, stdout, stderr)."""
  code = cli.main(list(argv))
  captured = capsys.readouterr()
  return code, captured.out, captured.err


@pytest.fixture
def getkey():
  """Returns a function giving a fresh PRNG key on each call (deterministic per test)."""
  counter = iter(range(1_000_000))
  base = jax.random.key(0)
  return lambda: jax.random.fold_in(base, next(counter))


@pytest.fixture(scope="session")
def nih_path():
  return NIH_FIXTURE


@pytest.fixture(scope="session")
def covid_path():
  return COVID_FIXTURE


# ----------------------------------------------------------------------------- sampling and pre-filter fixtures
#
# Shared by the pre-filter and sampling tests (test_prefilter_*.py, test_sampling.py); tests/test_scoring.py
# defines its own `tiny` and `scorer`. Tiny random models (as tests/test_scoring.py) keep XLA:CPU compiles
# short. Random models fail the real calibration on every generated image, so `scorer` uses a calibration in
# which only the abnormal classifier's logit decides validity (threshold at the median over a probe batch):
# about half of the images are valid, each a deterministic function of its latent. The latent classifiers
# are fitted on synthetic labelled latents (a linear rule in z), so acceptance has nothing to do with
# validity here: these fixtures serve tests of the mechanics, not of the filter's quality.

# The group the sampling scorer is calibrated on and `fitted` is fitted for.
SAMPLING_GROUP = "38_44f"


def _synthetic_records(n=400, groups=(SAMPLING_GROUP,), seed=0, valid_rule=None):
  """Latent records whose `valid` is a linear rule in z (learnable); scores consistent with valid."""
  from jaxcxr import scoring  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n * len(groups), 128)).astype(np.float32)
  valid = (z[:, 0] + 0.5 * z[:, 1] > 0.5) if valid_rule is None else valid_rule(z)
  margin = np.where(valid, 1.0, -1.0).astype(np.float32)
  scores = {name: (margin + 0.1 * rng.standard_normal(z.shape[0])).astype(np.float32)
            for name in scoring.SCORE_NAMES}
  return {"z": z, "group": np.repeat(np.array(groups), n), "scores": scores,
          "features": rng.random((z.shape[0], 6)).astype(np.float32), "valid": valid, "generator_id": "synthetic"}


@pytest.fixture(scope="session")
def synthetic_records():
  """The function (n=400, groups=(SAMPLING_GROUP,), seed=0, valid_rule=None) -> synthetic latent records."""
  return _synthetic_records


@pytest.fixture(scope="session")
def tiny():
  """(U-Net, classifier, generator): tiny random models at 32x32."""
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from jaxcxr.config import ClassifierConfig, UNetConfig, gan_tiny  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.classifier import Classifier  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.generator import Generator  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.unet import UNet  # pylint: disable=g-import-not-at-top

  unet = UNet(UNetConfig(resolution=32, channels=(4, 8), norm_groups=2), rngs=nnx.Rngs(0))
  classifier = Classifier(ClassifierConfig(resolution=32, stages=(1,), channels=(4,), norm_groups=2),
                          rngs=nnx.Rngs(1))
  generator = Generator(gan_tiny(32).generator, rngs=nnx.Rngs(2))
  return unet, classifier, generator


@pytest.fixture(scope="session")
def scorer(tiny, nih_path):
  """A `Scorer` of the tiny models (batch 4) whose validity is the abnormal logit below its probe median."""
  from jaxcxr import data, scoring  # pylint: disable=g-import-not-at-top

  unet, classifier, generator = tiny
  config = scoring.ScoringConfig(mask_size=32, dilation=3, atlas_size=8, batch_size=4)
  base = scoring.calibrate(unet, classifier, data.load(nih_path).images[:20], config)
  probe = base.generate_and_score(generator, jax.random.key(99), 32, SAMPLING_GROUP, keep_images=False)
  calibration = base.calibration._replace(
      shape_min=np.float32(-1.0), symmetry_min=np.float32(-1.0), log_ratio_min=np.float32(-1e3),
      log_ratio_max=np.float32(1e3), maxheat_max=np.float32(1e9),
      abnormal_logit_max=np.float32(np.median(probe.result.measures["abnormal_logit"])))
  return scoring.Scorer(unet, classifier, calibration, config)


@pytest.fixture(scope="session")
def records():
  """400 synthetic latent records of SAMPLING_GROUP."""
  return _synthetic_records()


@pytest.fixture(scope="session")
def fitted(records):
  """The logreg pre-filter of SAMPLING_GROUP (youden threshold) fitted on `records`."""
  from jaxcxr import prefilter  # pylint: disable=g-import-not-at-top

  return prefilter.fit_prefilter(records, SAMPLING_GROUP, "youden", "logreg", steps=300)
