"""Tests of fitted pre-filters: fit protocol, fallbacks, save and load (`jaxcxr.prefilter.prefilters`)."""

import math

import numpy as np
import pytest

from jaxcxr import checkpoints, prefilter
from jaxcxr.prefilter.prefilters import _stratified_parts

GROUP = "38_44f"  # conftest.SAMPLING_GROUP: the sampling scorer's and `fitted`'s group

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
  parts = _stratified_parts(y, (0.6, 0.2, 0.2), seed=1)
  joined = np.concatenate(list(parts.values()))
  assert np.array_equal(np.sort(joined), np.arange(53))
  assert [int(y[parts[p]].sum()) for p in ("train", "val", "test")] == [1, 1, 1]
  y_two = np.r_[1, 1, np.zeros(10, np.int64)]            # two valid latents: one to train on, one to validate
  two = _stratified_parts(y_two, (0.6, 0.2, 0.2), seed=0)
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


def test_group_without_valid_latents_errors_or_accepts_all(tmp_path, synthetic_records):
  empty = synthetic_records(n=60, valid_rule=lambda z: np.zeros(z.shape[0], bool))
  with pytest.raises(ValueError, match="0 valid and 60 invalid.*at least 2"):
    prefilter.fit_prefilter(empty, GROUP)
  one = synthetic_records(n=60, valid_rule=lambda z: np.arange(z.shape[0]) == 7)
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
