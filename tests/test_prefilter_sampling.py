"""Tests of the pre-filter's dataset builder, fitted pre-filters, filtered sampling on device and its CLI.

Tiny random models (as tests/test_scoring.py) keep XLA:CPU compiles short. Random models fail the
real calibration on every generated image, so the scorer here uses a calibration in which only the
abnormal classifier's logit decides validity (threshold at the median over a probe batch): about half
of the images are valid, each a deterministic function of its latent. The latent classifiers are fitted
on synthetic labelled latents (a linear rule in z), so acceptance has nothing to do with validity here:
these tests check the mechanics (which latents are generated, which images come back, static shapes),
not the filter's quality.
"""

import copy
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcxr import checkpoints, cli, data, prefilter, scoring
from jaxcxr.config import ClassifierConfig, LatentClassifierConfig, UNetConfig, gan_tiny
from jaxcxr.models.classifier import Classifier
from jaxcxr.models.generator import Generator, latents
from jaxcxr.models.latent import LatentClassifier
from jaxcxr.models.unet import UNet

CONFIG = scoring.ScoringConfig(mask_size=32, dilation=3, atlas_size=8, batch_size=4)
GROUP = "38_44f"


@pytest.fixture(scope="module")
def tiny():
  unet = UNet(UNetConfig(resolution=32, channels=(4, 8), norm_groups=2), rngs=nnx.Rngs(0))
  classifier = Classifier(ClassifierConfig(resolution=32, stages=(1,), channels=(4,), norm_groups=2),
                          rngs=nnx.Rngs(1))
  generator = Generator(gan_tiny(32).generator, rngs=nnx.Rngs(2))
  return unet, classifier, generator


@pytest.fixture(scope="module")
def scorer(tiny, nih_path):
  unet, classifier, generator = tiny
  base = scoring.calibrate(unet, classifier, data.load(nih_path).images[:20], CONFIG)
  probe = base.generate_and_score(generator, jax.random.key(99), 32, GROUP, keep_images=False)
  calibration = base.calibration._replace(
      shape_min=np.float32(-1.0), symmetry_min=np.float32(-1.0), log_ratio_min=np.float32(-1e3),
      log_ratio_max=np.float32(1e3), maxheat_max=np.float32(1e9),
      abnormal_logit_max=np.float32(np.median(probe.result.measures["abnormal_logit"])))
  return scoring.Scorer(unet, classifier, calibration, CONFIG)


def _synthetic_records(n=400, groups=(GROUP,), seed=0, valid_rule=None):
  """Latent records whose `valid` is a linear rule in z (learnable); scores consistent with valid."""
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n * len(groups), 128)).astype(np.float32)
  valid = (z[:, 0] + 0.5 * z[:, 1] > 0.5) if valid_rule is None else valid_rule(z)
  margin = np.where(valid, 1.0, -1.0).astype(np.float32)
  scores = {name: (margin + 0.1 * rng.standard_normal(z.shape[0])).astype(np.float32)
            for name in scoring.SCORE_NAMES}
  return {"z": z, "group": np.repeat(np.array(groups), n), "scores": scores,
          "features": rng.random((z.shape[0], 6)).astype(np.float32), "valid": valid, "generator_id": "synthetic"}


@pytest.fixture(scope="module")
def records():
  return _synthetic_records()


@pytest.fixture(scope="module")
def fitted(records):
  return prefilter.fit_prefilter(records, GROUP, "youden", "logreg", steps=300)


# ----------------------------------------------------------------------------- fitting


def test_fit_prefilter_chooses_on_validation_and_reports_on_test(records, fitted):
  rep = fitted.report
  assert rep["n"] == 400 and rep["n_train"] + rep["n_val"] + rep["n_test"] == 400
  assert rep["n_val"] == pytest.approx(80, abs=2) and rep["n_test"] == pytest.approx(80, abs=2)
  # the threshold is the youden point of the validation logits ...
  assert rep["validation"]["threshold"] == fitted.threshold
  # ... and the test figures are those of that threshold on the held-out part
  test = rep["test"]
  assert np.sum(test["confusion"]) == rep["n_test"] and test["threshold"] == fitted.threshold
  assert rep["test_roc_auc"] > 0.9                       # a linear rule, learnt by logistic regression
  assert rep["predicted_speedup"] == pytest.approx(test["precision"] / rep["precision_unfiltered_test"])
  assert rep["physical_limit"] == pytest.approx(1.0 / records["valid"].mean())
  assert not fitted.accepts_all and fitted.group == GROUP and fitted.generator_id == "synthetic"


def test_stratified_parts_are_disjoint_and_keep_both_classes():
  y = np.r_[np.ones(3, np.int64), np.zeros(50, np.int64)]
  parts = prefilter._stratified_parts(y, (0.6, 0.2, 0.2), seed=1)
  joined = np.concatenate(list(parts.values()))
  assert np.array_equal(np.sort(joined), np.arange(53))
  assert [int(y[parts[p]].sum()) for p in ("train", "val", "test")] == [1, 1, 1]
  y_two = np.r_[1, 1, np.zeros(10, np.int64)]            # two valid latents: one to train on, one to validate
  two = prefilter._stratified_parts(y_two, (0.6, 0.2, 0.2), seed=0)
  assert [int(y_two[two[p]].sum()) for p in ("train", "val", "test")] == [1, 1, 0]


def test_fit_prefilter_bad_arguments(records):
  with pytest.raises(ValueError, match="unknown threshold strategy 'bogus'"):
    prefilter.fit_prefilter(records, GROUP, "bogus")
  with pytest.raises(ValueError, match="unknown latent model preset"):
    prefilter.fit_prefilter(records, GROUP, "youden", "svm")
  with pytest.raises(ValueError, match="no latents of group '18_24m'"):
    prefilter.fit_prefilter(records, "18_24m")
  with pytest.raises(ValueError, match="on_empty"):
    prefilter.fit_prefilter(records, GROUP, on_empty="skip")


def test_group_without_valid_latents_errors_or_accepts_all(tmp_path):
  empty = _synthetic_records(n=60, valid_rule=lambda z: np.zeros(z.shape[0], bool))
  with pytest.raises(ValueError, match="0 valid and 60 invalid.*at least 2"):
    prefilter.fit_prefilter(empty, GROUP)
  one = _synthetic_records(n=60, valid_rule=lambda z: np.arange(z.shape[0]) == 7)
  with pytest.raises(ValueError, match="1 valid"):
    prefilter.fit_prefilter(one, GROUP)
  fallback = prefilter.fit_prefilter(empty, GROUP, on_empty="accept_all")
  assert fallback.accepts_all and fallback.report["accept_all"] and "0 valid" in fallback.report["reason"]
  assert fallback.accept(empty["z"]).all()
  loaded = prefilter.load_prefilter(fallback.save(tmp_path / "fallback"))
  assert loaded.accepts_all and loaded.accept(empty["z"][:5]).all()


def test_prefilter_save_load_round_trip(fitted, records, tmp_path):
  path = fitted.save(tmp_path / "pf")
  loaded = prefilter.load_prefilter(path)
  np.testing.assert_array_equal(loaded.logits(records["z"]), fitted.logits(records["z"]))
  assert (loaded.threshold, loaded.strategy, loaded.group, loaded.model_preset, loaded.generator_id) == (
      fitted.threshold, "youden", GROUP, "logreg", "synthetic")
  assert loaded.report["test"]["confusion"] == fitted.report["test"]["confusion"]
  meta = checkpoints.read_metadata(path)
  assert meta["threshold_probability"] == pytest.approx(1 / (1 + math.exp(-fitted.threshold)))
  with pytest.raises(checkpoints.CheckpointError, match="already exists"):
    fitted.save(path)
  plain = tmp_path / "plain"
  checkpoints.save_model(plain, fitted.classifier, fitted.classifier.config)
  with pytest.raises(checkpoints.CheckpointError, match="pre-filter metadata"):
    prefilter.load_prefilter(plain)


# ----------------------------------------------------------------------------- building latent datasets


def test_build_latent_dataset_uses_fold_in_per_group(scorer, tiny, getkey, tmp_path):
  key = getkey()
  built = prefilter.build_latent_dataset(scorer, tiny[2], key, 3, generator_id="abc", groups=("18_24m", "58_64f"))
  assert built["z"].shape == (6, 128) and list(built["group"]) == ["18_24m"] * 3 + ["58_64f"] * 3
  expected = latents(jax.random.fold_in(key, data.GROUPS.index("58_64f")), jnp.int32(0), 3, 128)
  np.testing.assert_allclose(built["z"][3:], np.asarray(expected), rtol=1e-6)
  np.testing.assert_array_equal(built["valid"], np.all([built["scores"][k] > 0 for k in scoring.SCORE_NAMES], 0))
  summary = prefilter.latent_dataset_summary(built)
  assert summary["groups"]["58_64f"]["n"] == 3 and summary["generator_id"] == "abc"
  prefilter.save_latent_dataset(tmp_path / "l.npz", built)
  loaded = prefilter.load_latent_dataset(tmp_path / "l.npz")
  np.testing.assert_array_equal(loaded["z"], built["z"])
  # The raw measures travel with the records: validity at the build's strictness follows from them.
  assert set(loaded["measures"]) == set(prefilter.MEASURE_NAMES)
  np.testing.assert_array_equal(scorer.valid_at(loaded["measures"], scorer.strictness), built["valid"])
  # Rescoring from the measures: the build's own strictness reproduces the records; a stricter one keeps a subset.
  same = prefilter.records_at_strictness(loaded, scorer, scorer.strictness)
  np.testing.assert_array_equal(same["valid"], built["valid"])
  np.testing.assert_allclose(same["scores"]["score_shape"], built["scores"]["score_shape"], rtol=1e-6)
  ref = {k: loaded["measures"][k] for k in scoring.REFERENCE_MEASURES}   # a scorer with reference measures
  levels = scoring.Scorer(scorer.unet, scorer.classifier, scoring.thresholds_at(ref, scorer.calibration.atlas, 0.05),
                          scorer.config, reference=ref)
  lenient, stricter = (prefilter.records_at_strictness(loaded, levels, q) for q in (0.05, 0.5))
  assert not (stricter["valid"] & ~lenient["valid"]).any()
  for name in ("score_shape", "score_symmetry"):   # each score tightens
    assert (stricter["scores"][name] <= lenient["scores"][name]).all()
  # Datasets written without measures (before strictness levels) still load, but cannot be rescored.
  prefilter.save_latent_dataset(tmp_path / "old.npz", {k: v for k, v in built.items() if k != "measures"})
  old = prefilter.load_latent_dataset(tmp_path / "old.npz")
  assert "measures" not in old
  with pytest.raises(data.DataError, match="rebuild"):
    prefilter.records_at_strictness(old, scorer, "standard")
  # Measures of other post-filter models are refused.
  named = copy.copy(scorer)
  named.provenance = {"unet_id": "u1", "classifier_id": "c1"}
  with pytest.raises(data.DataError, match="other|not the scorer"):
    prefilter.records_at_strictness({**loaded, "scorer_id": "u0/c0"}, named, "standard")


# ----------------------------------------------------------------------------- filtered sampling


def _brute_force(scorer, generator, pf, key, n_drawn):
  """Accepted and valid flags of latent indices 0 .. n_drawn-1, computed one stage at a time on the host."""
  z = np.asarray(latents(key, jnp.int32(0), n_drawn, 128))
  accepted = pf.accept(z) if pf is not None else np.ones(n_drawn, bool)
  valid = scorer.generate_and_score(generator, key, n_drawn, GROUP, keep_images=False).result.valid
  return accepted, valid


def test_sample_valid_returns_exactly_k_valid_accepted_images(scorer, tiny, fitted, getkey):
  key, k = getkey(), 5
  found = prefilter.sample_valid(scorer, tiny[2], fitted, key, k, GROUP, pool_size=16, accept_size=4)
  assert found["n_valid"] == k and found["complete"]
  assert found["images"].shape == (k, 32, 32) and found["images"].dtype == np.uint8
  for name, values in found["scores"].items():
    assert values.shape == (k,) and (values > 0).all(), name
  # every returned latent is the scheme's latent of its index, and the pre-filter accepts it
  np.testing.assert_allclose(found["z"], np.asarray(jax.vmap(lambda i: latents(key, i, 1, 128)[0])(
      jnp.asarray(found["index"]))), rtol=1e-6)
  assert fitted.accept(found["z"]).all()
  # the images are the first k indices that are accepted and valid, and only accepted latents were generated
  accepted, valid = _brute_force(scorer, tiny[2], fitted, key, found["n_latents_drawn"])
  assert list(found["index"]) == list(np.flatnonzero(accepted & valid)[:k])
  assert found["n_generated"] == int(accepted.sum())
  assert found["n_valid_seen"] == int((accepted & valid).sum())
  assert found["acceptance_rate"] == pytest.approx(accepted.mean())
  assert found["valid_rate"] == pytest.approx(found["n_valid_seen"] / found["n_generated"])
  again = scorer.generate_and_score(tiny[2], key, 1, GROUP, start=int(found["index"][0]))
  np.testing.assert_array_equal(again.images[0], found["images"][0])


def test_same_images_whatever_the_pool_and_accept_sizes(scorer, tiny, fitted, getkey):
  key = getkey()
  a = prefilter.sample_valid(scorer, tiny[2], fitted, key, 4, GROUP, pool_size=16, accept_size=4)
  b = prefilter.sample_valid(scorer, tiny[2], fitted, key, 4, GROUP, pool_size=4, accept_size=2)
  assert list(a["index"]) == list(b["index"])
  np.testing.assert_allclose(a["scores"]["score_abnormal"], b["scores"]["score_abnormal"], atol=1e-5)


def test_rounds_and_calls_do_not_recompile(scorer, tiny, fitted, getkey):
  # A pool size used by no other test, so the first call below compiles exactly once.
  before = prefilter.TRACE_COUNTS["filter_generate_and_score"]
  first = prefilter.sample_valid(scorer, tiny[2], fitted, getkey(), 6, GROUP, pool_size=12, accept_size=4)
  assert first["n_rounds"] >= 2
  other_group = dataclasses.replace(fitted, group="18_24m", threshold=fitted.threshold - 0.5)
  second = prefilter.sample_valid(scorer, tiny[2], other_group, getkey(), 3, "18_24m", pool_size=12,
                                  accept_size=4)
  assert second["n_valid"] == 3
  assert prefilter.TRACE_COUNTS["filter_generate_and_score"] - before == 1


def test_baseline_and_accept_all_fallback_match_plain_post_filtering(scorer, tiny, getkey):
  key = getkey()
  plain = prefilter.sample_valid(scorer, tiny[2], None, key, 3, GROUP, accept_size=4)
  assert plain["acceptance_rate"] == 1.0 and plain["n_generated"] == plain["n_latents_drawn"]
  _, valid = _brute_force(scorer, tiny[2], None, key, plain["n_latents_drawn"])
  assert list(plain["index"]) == list(np.flatnonzero(valid)[:3])
  empty = _synthetic_records(n=60, valid_rule=lambda z: np.zeros(z.shape[0], bool))
  fallback = prefilter.fit_prefilter(empty, GROUP, on_empty="accept_all")
  same = prefilter.sample_valid(scorer, tiny[2], fallback, key, 3, GROUP, pool_size=16, accept_size=4)
  assert list(same["index"]) == list(plain["index"]) and same["acceptance_rate"] == 1.0


def test_sample_valid_bad_arguments(scorer, tiny, fitted, getkey):
  small = prefilter.Prefilter(LatentClassifier(LatentClassifierConfig(latent_dim=64), rngs=nnx.Rngs(0)), 0.0,
                              "youden", GROUP, "logreg")
  with pytest.raises(ValueError, match="latents of size 64"):
    prefilter.sample_valid(scorer, tiny[2], small, getkey(), 1, GROUP)
  with pytest.raises(ValueError, match="fitted for group '38_44f'"):
    prefilter.sample_valid(scorer, tiny[2], fitted, getkey(), 1, "18_24m")
  with pytest.raises(ValueError, match="accept_size <= pool_size"):
    prefilter.sample_valid(scorer, tiny[2], fitted, getkey(), 1, GROUP, pool_size=2, accept_size=4)
  with pytest.raises(ValueError, match="nudging needs"):
    prefilter.sample_valid(scorer, tiny[2], None, getkey(), 1, GROUP, nudge=prefilter.NudgeConfig())
  with pytest.raises(ValueError, match="k must be"):
    prefilter.sample_valid(scorer, tiny[2], fitted, getkey(), -1, GROUP)
  with pytest.raises(data.DataError):
    prefilter.sample_valid(scorer, tiny[2], dataclasses.replace(fitted, group="99_99x"), getkey(), 1, "99_99x")


def test_max_rounds_stops_a_filter_that_accepts_nothing(scorer, tiny, fitted, getkey):
  never = dataclasses.replace(fitted, threshold=1e9)
  found = prefilter.sample_valid(scorer, tiny[2], never, getkey(), 2, GROUP, pool_size=16, accept_size=4,
                                 max_rounds=3)
  assert found["n_valid"] == 0 and not found["complete"] and found["n_generated"] == 0
  assert found["n_latents_drawn"] == 48 and found["n_slots"] == 12 and found["images"].shape == (0, 32, 32)


def test_nudging_keeps_norms_and_raises_logits(scorer, tiny, fitted, getkey):
  key = getkey()
  nudge = prefilter.NudgeConfig(steps=2, step_size=1.0)
  found = prefilter.sample_valid(scorer, tiny[2], fitted, key, 3, GROUP, pool_size=16, accept_size=4, nudge=nudge)
  assert found["n_valid"] == 3
  original = np.asarray(jax.vmap(lambda i: latents(key, i, 1, 128)[0])(jnp.asarray(found["index"])))
  np.testing.assert_allclose(np.linalg.norm(found["z"], axis=1), np.linalg.norm(original, axis=1), rtol=1e-5)
  assert (fitted.logits(found["z"]) > fitted.logits(original)).all()
  assert fitted.accept(found["z"]).all()
  plain = prefilter.sample_valid(scorer, tiny[2], fitted, key, 3, GROUP, pool_size=16, accept_size=4)
  assert found["acceptance_rate"] >= plain["acceptance_rate"]
  with pytest.raises(ValueError, match="steps"):
    prefilter.NudgeConfig(steps=0)


# ----------------------------------------------------------------------------- report and CLI


def test_latents_table_cli_writes_table_rows_and_figures(tmp_path, capsys):
  path = tmp_path / "latents.npz"
  prefilter.save_latent_dataset(path, _synthetic_records(n=150, groups=("18_24m", GROUP)))
  out = tmp_path / "table"
  code = cli.main(["latents", "table", "--data", str(path), "--out", str(out), "--models", "logreg_C1,tree_d5",
                   "--extremes-k", "20", "--strategy", "youden,tpr@0.95", "--json"])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  result = json.loads(captured.out)
  assert set(result["best"]) == {"18_24m", GROUP} and result["models"] == ["logreg_C1", "tree_d5"]
  assert result["best"][GROUP]["roc_auc"] > 0.8
  table = (out / "table.md").read_text()
  assert "logreg_C1" in table and "tree_d5" in table and GROUP in table
  assert "### valid, threshold youden" in table and "### valid, threshold tpr@0.95" in table
  rows = json.loads((out / "rows.json").read_text())
  assert len(rows) == 8 and result["strategies"] == ["youden", "tpr@0.95"]
  for name in ("correlations_all", f"correlations_{GROUP}", "extremes_score_shape", f"roc_pr_{GROUP}",
               f"confusion_{GROUP}"):
    assert (out / f"{name}.png").stat().st_size > 0, name
  code = cli.main(["latents", "table", "--data", str(path), "--out", str(tmp_path / "t2"), "--models", "nope"])
  assert code == 2 and "unknown latent model" in capsys.readouterr().err
  code = cli.main(["latents", "table", "--data", str(path), "--out", str(tmp_path / "t3"), "--strategy", "best"])
  assert code == 2 and "unknown strategy" in capsys.readouterr().err


def test_cli_build_fit_and_prefiltered_sample(scorer, tiny, tmp_path, capsys, monkeypatch):
  unet, classifier, generator = tiny
  for name, model in (("unet", unet), ("classifier", classifier), ("generator", generator)):
    checkpoints.save_model(tmp_path / name, model, model.config)
  provenance = {"unet": str(tmp_path / "unet"), "unet_id": checkpoints.model_id(tmp_path / "unet"),
                "classifier": str(tmp_path / "classifier"),
                "classifier_id": checkpoints.model_id(tmp_path / "classifier")}
  scoring.Scorer(unet, classifier, scorer.calibration, CONFIG, provenance=provenance).save(tmp_path / "scoring")
  common = ["--checkpoint", str(tmp_path / "generator"), "--scoring", str(tmp_path / "scoring"), "--json"]
  latents_path = tmp_path / "latents.npz"

  code = cli.main(["latents", "build", "--n-per-group", "24", "--groups", GROUP, "--out", str(latents_path),
                   *common])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  built = json.loads(captured.out)
  assert built["n"] == 24 and built["groups"][GROUP]["n"] == 24
  assert built["generator_id"] == checkpoints.model_id(tmp_path / "generator")

  code = cli.main(["latents", "fit", "--data", str(latents_path), "--group", GROUP, "--out", str(tmp_path / "pf"),
                   "--json"])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  assert json.loads(captured.out)["strategy"] == "youden"

  for source in (["--prefilter", "youden", "--latents", str(latents_path)], ["--prefilter-dir", str(tmp_path / "pf")]):
    out = tmp_path / f"samples_{len(source)}"
    code = cli.main(["sample", "--group", GROUP, "--n", "2", "--out", str(out), *source, "--pool-size", "16",
                     *common])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["n_valid"] == 2 and len(result["files"]) == 2
    assert result["prefilter"]["group"] == GROUP and result["n_generated"] <= result["n_latents_drawn"]
    assert {"seconds", "valid_rate", "acceptance_rate", "compile_seconds"} <= set(result)

  # One classifier with every strategy's threshold (a pre-filter set), found as a shipped one by generator id.
  shipped = tmp_path / "root" / "prefilters_tiny" / "standard" / GROUP
  code = cli.main(["latents", "fit", "--data", str(latents_path), "--group", GROUP, "--strategy", "all", "--out",
                   str(shipped), "--json"])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  strategies = json.loads(captured.out)["strategies"]
  assert set(strategies) == set(prefilter.STRATEGIES)
  single = prefilter.load_prefilter(tmp_path / "pf")
  youden = prefilter.load_prefilter(shipped, "youden")
  assert youden.threshold == pytest.approx(single.threshold) and youden.report["strictness"] == "standard"
  with pytest.raises(checkpoints.CheckpointError, match="name one"):
    prefilter.load_prefilter(shipped)
  with pytest.raises(checkpoints.CheckpointError, match="not tpr@0.95"):
    prefilter.load_prefilter(tmp_path / "pf", "tpr@0.95")
  monkeypatch.setenv("JAXCXR_CHECKPOINTS", str(tmp_path / "root"))
  code = cli.main(["sample", "--group", GROUP, "--n", "2", "--out", str(tmp_path / "shipped"), "--prefilter",
                   "tpr@0.95", "--pool-size", "16", *common])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  result = json.loads(captured.out)
  assert result["n_valid"] == 2 and result["prefilter"]["strategy"] == "tpr@0.95"
  assert "shipped pre-filter" in captured.err
  monkeypatch.delenv("JAXCXR_CHECKPOINTS")
  # A pre-filter learned at one level, or from other post-filter models, is refused.
  stricter = copy.copy(scorer)
  stricter.strictness = 0.3
  with pytest.raises(ValueError, match="learned validity at strictness 'standard'"):
    prefilter.check_prefilter_scorer(single, stricter)
  others = copy.copy(scorer)
  others.provenance = {"unet_id": "u9", "classifier_id": "c9"}
  with pytest.raises(ValueError, match="post-filter models"):
    prefilter.check_prefilter_scorer(single, others)
  prefilter.check_prefilter_scorer(single, scorer)   # its own post-filter passes

  # a pre-filter of another generator's latents is refused; so are contradictory options
  other = dict(prefilter.load_latent_dataset(latents_path), generator_id="0123456789abcdef")
  prefilter.save_latent_dataset(tmp_path / "other.npz", other)
  for argv, message in (
      (["--prefilter", "youden", "--latents", str(tmp_path / "other.npz")], "rebuild the latent dataset"),
      (["--prefilter", "youden"], "no shipped pre-filter"),
      (["--prefilter", "youden", "--latents", str(latents_path), "--unfiltered"], "cannot be combined"),
      (["--prefilter", "bogus", "--latents", str(latents_path)], "unknown threshold strategy"),
  ):
    code = cli.main(["sample", "--group", GROUP, "--n", "1", "--out", str(tmp_path / "refused"), *argv, *common])
    assert code == 2 and message in capsys.readouterr().err, argv
