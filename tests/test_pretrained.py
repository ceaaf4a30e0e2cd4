"""Tests of the notebook API: `jaxcxr.load_pretrained`, the lazy top-level names, and the docstring examples.

The loading tests replace the loaders with counters (nothing is read from disk but the
folder layout); the doctests run the docstring examples on the shipped checkpoints (about a
minute on one CPU core, most of it compiling).
"""

import doctest
import importlib
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import jaxcxr
from jaxcxr import anomaly, checkpoints, models, scoring
from jaxcxr.checkpoints import CheckpointError
from jaxcxr.models import healthygan
from jaxcxr.prefilter import cascade

SHIPPED = checkpoints.checkpoints_root()
HAS_SHIPPED = all((SHIPPED / name).exists() for name in (
    "gan_256/generator", "scoring_256", "cascade_prefilter_gan_256", "gan_256_normal", "fanogan_256/encoder",
    "healthygan_256/translator"))
needs_shipped = pytest.mark.skipif(not HAS_SHIPPED, reason=f"the shipped 256x256 checkpoints are not under {SHIPPED}")

# Top-level name: (module, attribute) it must be.
TOP_LEVEL = {
    "load_pretrained": ("jaxcxr.pretrained", "load_pretrained"),
    "Pretrained": ("jaxcxr.pretrained", "Pretrained"),
    "resolve_sampler": ("jaxcxr.prefilter.choice", "resolve_sampler"),
    "sample_valid": ("jaxcxr.sampling", "sample_valid"),
    "sample_valid_cascade": ("jaxcxr.prefilter.cascade", "sample_valid_cascade"),
    "select_threshold": ("jaxcxr.prefilter", "select_threshold"),
    "search_latents": ("jaxcxr.anomaly", "search_latents"),
    "grad_cam": ("jaxcxr.explain", "grad_cam"),
    "evaluate_anomaly": ("jaxcxr.anomaly", "evaluate_anomaly"),
    "evaluate_gan": ("jaxcxr.quality", "evaluate_gan"),
    "evaluate_segmentation": ("jaxcxr.train.segmentation", "evaluate_segmentation"),
    "evaluate_classifier": ("jaxcxr.train.classifier", "evaluate_classifier"),
}

# Modules whose docstring examples must run (each holds an example of a main function), and those whose
# examples are all marked +SKIP (too slow for the test suite; still parsed).
DOCTEST_MODULES = ("jaxcxr", "jaxcxr.pretrained", "jaxcxr.sampling", "jaxcxr.prefilter.thresholds", "jaxcxr.explain",
                   "jaxcxr.anomaly.anogan", "jaxcxr.train.segmentation", "jaxcxr.train.classifier",
                   "jaxcxr.scoring.scorer", "jaxcxr.quality")
SKIPPED_ONLY = ("jaxcxr.scoring.scorer", "jaxcxr.quality")


# ----------------------------------------------------------------------------- top-level names


def test_import_jaxcxr_does_not_import_jax():
  heavy = ("jax", "flax", "numpy", "jaxcxr.pretrained")
  code = f"import sys, jaxcxr; print(sorted(m for m in {heavy!r} if m in sys.modules))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
  assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("name", sorted(TOP_LEVEL))
def test_top_level_names_are_the_library_functions(name):
  module, attribute = TOP_LEVEL[name]
  assert getattr(jaxcxr, name) is getattr(importlib.import_module(module), attribute)
  assert name in jaxcxr.__all__ and name in dir(jaxcxr)


def test_top_level_names_are_exactly_the_listed_ones():
  assert set(jaxcxr.__all__) == {"__version__", *TOP_LEVEL}
  assert not hasattr(jaxcxr, "generate_and_score")   # a Scorer method: load_pretrained().scorer.generate_and_score


def test_unknown_top_level_attribute_raises_attribute_error():
  with pytest.raises(AttributeError, match="module 'jaxcxr' has no attribute 'no_such_function'"):
    jaxcxr.no_such_function  # pylint: disable=pointless-statement
  assert not hasattr(jaxcxr, "evaluate_nothing")
  with pytest.raises(ImportError):
    from jaxcxr import no_such_function  # pylint: disable=g-import-not-at-top,unused-import,no-name-in-module


# ----------------------------------------------------------------------------- load_pretrained


@pytest.fixture
def loaders(monkeypatch):
  """Replaces every loader `Pretrained` uses by a counter; returns {loader name: [(args, kwargs), ...]}."""
  calls = {}

  def fake(name, result):
    calls[name] = []

    def loader(*args, **kwargs):
      calls[name].append((args, kwargs, checkpoints.checkpoints_root()))
      return result
    return loader

  monkeypatch.setattr(models, "load_generator", fake("load_generator", "G"))
  monkeypatch.setattr(models, "load_discriminator", fake("load_discriminator", "D"))
  monkeypatch.setattr(scoring, "load_scorer", fake("load_scorer", "scorer"))
  monkeypatch.setattr(cascade, "load_cascade_prefilter", fake("load_cascade_prefilter", "cascade"))
  monkeypatch.setattr(anomaly, "load_fanogan", fake("load_fanogan", ("E", "G", "D")))
  monkeypatch.setattr(healthygan, "load_translator", fake("load_translator", "T"))
  return calls


@needs_shipped
def test_load_pretrained_loads_nothing_until_a_model_is_used(loaders):
  pre = jaxcxr.load_pretrained(batch_size=4)
  assert isinstance(pre, jaxcxr.Pretrained) and pre.root == SHIPPED.absolute()
  assert pre.available == ("generator", "scorer", "cascade_prefilter", "normal_gan", "fanogan", "translator")
  assert pre.loaded == () and not any(loaders.values())
  assert "(loaded)" not in repr(pre)

  assert pre.generator == "G" and pre.generator == "G"
  assert loaders["load_generator"] == [((SHIPPED / "gan_256" / "generator",), {}, SHIPPED)]
  assert pre.loaded == ("generator",)
  assert [name for name, c in loaders.items() if c] == ["load_generator"]   # nothing else was loaded
  lines = repr(pre).splitlines()
  assert "generator" in lines[1] and "gan_256/generator  (loaded)" in lines[1]
  assert all("(not loaded)" in line for line in lines[2:])


@needs_shipped
def test_each_model_is_loaded_once_with_its_library_loader(loaders):
  pre = jaxcxr.load_pretrained(strictness="strict", batch_size=4)
  for name in ("scorer", "cascade_prefilter", "normal_gan", "fanogan", "translator"):
    first = getattr(pre, name)
    assert getattr(pre, name) is first
  assert loaders["load_scorer"] == [((SHIPPED / "scoring_256",), {"strictness": "strict", "batch_size": 4}, SHIPPED)]
  assert loaders["load_cascade_prefilter"] == [((SHIPPED / "cascade_prefilter_gan_256",), {}, SHIPPED)]
  assert loaders["load_generator"] == [((SHIPPED / "gan_256_normal" / "generator",), {}, SHIPPED)]
  assert loaders["load_discriminator"] == [((SHIPPED / "gan_256_normal" / "discriminator",), {}, SHIPPED)]
  assert loaders["load_fanogan"] == [((SHIPPED / "fanogan_256" / "encoder",), {}, SHIPPED)]
  assert loaders["load_translator"] == [((SHIPPED / "healthygan_256" / "translator",), {}, SHIPPED)]
  assert pre.normal_gan == ("G", "D") and pre.normal_gan.discriminator == "D"
  assert pre.fanogan.encoder == "E" and tuple(pre.fanogan) == ("E", "G", "D")
  assert pre.loaded == ("scorer", "cascade_prefilter", "normal_gan", "fanogan", "translator")


def test_missing_root_names_the_path_and_the_models_missing(tmp_path):
  missing = tmp_path / "no_checkpoints"
  with pytest.raises(CheckpointError) as e:
    jaxcxr.load_pretrained(missing)
  message = str(e.value)
  assert str(missing) in message and "does not exist" in message
  for name in ("gan_256/generator", "scoring_256", "cascade_prefilter_gan_256", "gan_256_normal",
               "fanogan_256/encoder", "healthygan_256/translator", "JAXCXR_CHECKPOINTS"):
    assert name in message


def test_root_without_any_model_is_an_error(tmp_path):
  (tmp_path / "gan_256").mkdir()   # a folder, but not a model checkpoint
  with pytest.raises(CheckpointError, match="holds none of the shipped models") as e:
    jaxcxr.load_pretrained(tmp_path)
  assert str(tmp_path) in str(e.value) and "healthygan_64/translator" in str(e.value)
  (tmp_path / "file").write_text("")
  with pytest.raises(CheckpointError, match="found a file"):
    jaxcxr.load_pretrained(tmp_path / "file")


def test_bad_batch_size():
  with pytest.raises(ValueError, match="batch_size"):
    jaxcxr.load_pretrained(batch_size=0)


@needs_shipped
def test_another_root_is_used_for_every_model_and_missing_ones_raise_on_use(tmp_path, monkeypatch, loaders):
  monkeypatch.delenv("JAXCXR_CHECKPOINTS", raising=False)
  root = tmp_path / "ckpt"
  root.mkdir()
  for name in ("gan_256", "scoring_256"):   # a generator and a calibration; no cascade, no anomaly models
    (root / name).symlink_to(SHIPPED / name)
  pre = jaxcxr.load_pretrained(root)
  assert pre.available == ("generator", "scorer") and pre.root == root.absolute()
  assert "JAXCXR_CHECKPOINTS" not in os.environ
  assert "missing (looked for healthygan_256/translator, healthygan_64/translator)" in repr(pre)
  # The scorer's U-Net and classifier are found under the root the calibration is in (checked by the loader).
  assert pre.scorer == "scorer"
  assert loaders["load_scorer"] == [((root / "scoring_256",), {"strictness": "standard"}, root)]
  assert "JAXCXR_CHECKPOINTS" not in os.environ
  for name, folder in (("translator", "healthygan_256/translator"), ("fanogan", "fanogan_256/encoder"),
                       ("cascade_prefilter", "cascade_prefilter_gan_256"), ("normal_gan", "gan_256_normal")):
    with pytest.raises(CheckpointError, match=folder) as e:
      getattr(pre, name)
    assert str(root) in str(e.value)
  assert not loaders["load_translator"] and pre.loaded == ("scorer",)


@pytest.mark.skipif(not (SHIPPED / "healthygan_64" / "translator").exists() or not (SHIPPED / "unet_256").exists(),
                    reason="the shipped healthygan_64 and unet_256 are not there")
def test_anomaly_scorer_scores_inside_the_lungs_unless_asked_not_to():
  from jaxcxr import anomaly, pretrained  # pylint: disable=g-import-not-at-top

  assert pretrained.ANOMALY_LUNG_MASK is True
  lines = []
  scorer, folder = pretrained.anomaly_scorer("healthygan", SHIPPED / "healthygan_64", batch_size=8, log=lines.append)
  assert folder == SHIPPED / "healthygan_64" / "translator"          # the model folder names its translator/
  assert isinstance(scorer, anomaly.LungMaskedScorer) and scorer.name == "healthygan_lungs"
  assert isinstance(scorer.inner, anomaly.HealthyganScorer) and scorer.inner.batch_size == 8
  assert lines[-1] == f"scoring the residual inside the lungs of {SHIPPED / 'unet_256' / 'unet'}"
  whole, _ = pretrained.anomaly_scorer("healthygan", folder, lung_mask=False)
  assert isinstance(whole, anomaly.HealthyganScorer) and whole.name == "healthygan"
  with pytest.raises(ValueError, match="unknown anomaly method 'vae'"):
    pretrained.anomaly_scorer("vae")
  with pytest.raises(ValueError, match="AnoGAN"):
    pretrained.anomaly_scorer("healthygan", folder, search=anomaly.LatentSearchConfig())



def test_anomaly_scorer_searches_with_the_settings_chosen_on_validation():
  from jaxcxr import anomaly, pretrained  # pylint: disable=g-import-not-at-top
  from jaxcxr.models import Discriminator  # pylint: disable=g-import-not-at-top

  scorer, folder = pretrained.anomaly_scorer("anogan", lung_mask=False)
  assert folder == SHIPPED / "gan_256_normal"
  assert scorer.config == anomaly.SHIPPED_SEARCH and scorer.config.base_image and scorer.config.feature_weight == 0.5
  assert isinstance(scorer.discriminator, anomaly.EncoderFeatures)
  assert scorer.discriminator.stage == anomaly.SHIPPED_FEATURE_STAGE == "stage2"
  # The original's term: the GAN's discriminator at the original's weight, the rest of the chosen search.
  original, _ = pretrained.anomaly_scorer("anogan", lung_mask=False, feature_term="discriminator")
  assert isinstance(original.discriminator, Discriminator) and original.config.feature_weight == 0.1
  assert original.config.steps == anomaly.SHIPPED_SEARCH.steps and original.config.base_image
  with pytest.raises(ValueError, match="unknown feature_term 'pixels'"):
    pretrained.anomaly_scorer("anogan", feature_term="pixels")
  with pytest.raises(ValueError, match="feature_encoder sets the 'encoder' feature term"):
    pretrained.anomaly_scorer("anogan", feature_term="discriminator", feature_encoder=SHIPPED / "encoder_cxr")
  with pytest.raises(ValueError, match="AnoGAN"):
    pretrained.anomaly_scorer("fanogan", feature_term="discriminator")

@pytest.mark.skipif(not (SHIPPED / "patchcore_encoder_cxr" / "patchcore.json").exists(),
                    reason="the shipped patchcore_encoder_cxr is not there")
def test_anomaly_scorer_loads_the_shipped_patchcore_bank_with_its_encoder():
  from jaxcxr import anomaly, pretrained  # pylint: disable=g-import-not-at-top

  scorer, folder = pretrained.anomaly_scorer("patchcore", lung_mask=False, batch_size=4)
  assert folder == SHIPPED / "patchcore_encoder_cxr"
  assert isinstance(scorer, anomaly.PatchcoreScorer) and scorer.unet is None
  assert scorer.patchcore.grid == (32, 32) and scorer.patchcore.settings["masked"]
  images = np.full((2, 256, 256), 120, np.uint8)
  scores, maps = scorer.patchcore.score(images)
  assert scores.shape == (2,) and maps.shape == (2, 256, 256) and np.isfinite(scores).all()


@needs_shipped
def test_pretrained_is_frozen():
  pre = jaxcxr.load_pretrained()
  with pytest.raises(AttributeError):
    pre.root = pathlib.Path("elsewhere")


# ----------------------------------------------------------------------------- docstring examples


def run_doctests(module) -> tuple[doctest.TestResults, str]:
  """Runs a module's docstring examples; returns the results and the failure report."""
  report = []
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  for test in doctest.DocTestFinder().find(module, module.__name__):
    runner.run(test, out=report.append)
  return runner.summarize(verbose=False), "".join(report)


@pytest.mark.slow
@needs_shipped
@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_docstring_examples_run(module_name):
  results, report = run_doctests(importlib.import_module(module_name))
  assert results.attempted > 0 or module_name in SKIPPED_ONLY, f"{module_name} has no docstring examples"
  assert results.failed == 0, report
