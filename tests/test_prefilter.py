"""Tests of the latent pre-filter: thresholds, Flax latent classifiers, CV, tables, datasets, figures."""

import numpy as np
import pytest
from flax import nnx

from jaxcxr import prefilter
from jaxcxr.config import LatentClassifierConfig, latent_deep, latent_logreg, latent_mlp
from jaxcxr.data import GROUPS, DataError
from jaxcxr.metrics import compute_roc_auc
from jaxcxr.models.latent import LatentClassifier

# ----------------------------------------------------------------------------- thresholds

# Hand-made ROC data A (P = Q = 3). Descending thresholds with (TP, FP):
# 0.6 (1,0)  0.5 (2,0)  0.4 (2,1)  0.3 (3,1)  0.2 (3,2)  0.1 (3,3)
# Youden TPR-FPR: 1/3 2/3 1/3 2/3 1/3 0 -> tie 0.5 / 0.3, ties go to the smaller threshold: 0.3.
# 2TPR-FPR: 2/3 4/3 1 5/3 4/3 1 -> 0.3.   TPR-2FPR: 1/3 2/3 0 1/3 -1/3 -1 -> 0.5.
# TPR >= 0.95 first reached (largest threshold) at 0.3.
# Precision: 1 1 2/3 3/4 3/5 1/2 -> tie 0.6 / 0.5 -> 0.5; with min_tpr 0.9 (TP >= 3) -> 3/4 at 0.3.
Y_A = np.array([0, 0, 1, 0, 1, 1])
S_A = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])

# Hand-made ROC data B (P = Q = 5) with a tied score (0.8 and 0.5 hold one positive and one negative each).
# Thresholds 0.9 0.8 0.7 0.6 0.5 0.4 0.3 0.2 with TP 1 2 3 4 5 5 5 5 and FP 0 1 1 1 2 3 4 5.
# Youden (5TP - 5FP): 5 5 10 15 15 10 5 0 -> tie 0.6 / 0.5 -> 0.5.  2TPR-FPR (10TP - 5FP): max 40 at 0.5.
# TPR-2FPR (5TP - 10FP): 5 0 5 10 5 ... -> 0.6.  TPR >= 0.95 needs TP = 5 -> 0.5.
# Precision 1 2/3 3/4 4/5 5/7 5/8 5/9 1/2: a bare argmax keeps one sample (0.9); TP >= 3 (min_tpr 0.5) -> 0.6.
Y_B = np.array([1, 1, 0, 1, 1, 0, 1, 0, 0, 0])
S_B = np.array([0.9, 0.8, 0.8, 0.7, 0.6, 0.5, 0.5, 0.4, 0.3, 0.2])


@pytest.mark.parametrize("y, s, strategy, kwargs, expected", [
    (Y_A, S_A, "youden", {}, 0.3),
    (Y_A, S_A, "2tpr-fpr", {}, 0.3),
    (Y_A, S_A, "tpr-2fpr", {}, 0.5),
    (Y_A, S_A, "tpr@0.95", {}, 0.3),
    (Y_A, S_A, "max_precision", {}, 0.5),
    (Y_A, S_A, "max_precision", {"min_tpr": 0.9}, 0.3),
    (Y_B, S_B, "youden", {}, 0.5),
    (Y_B, S_B, "2tpr-fpr", {}, 0.5),
    (Y_B, S_B, "tpr-2fpr", {}, 0.6),
    (Y_B, S_B, "tpr@0.95", {}, 0.5),
    (Y_B, S_B, "max_precision", {"min_tpr": 0.0}, 0.9),
    (Y_B, S_B, "max_precision", {"min_tpr": 0.5}, 0.6),
])
def test_select_threshold_hand_made(y, s, strategy, kwargs, expected):
  assert prefilter.select_threshold(y, s, strategy, **kwargs) == pytest.approx(expected)
  assert prefilter.select_threshold(y.astype(bool), s, strategy, **kwargs) == pytest.approx(expected)


def test_tpr_at_095_exact_boundary_and_ties():
  # 20 positives scored 1..20 and two negatives (21.5 and 0.5): TPR = 19/20 = 0.95 exactly at threshold 2.
  s = np.r_[np.arange(1.0, 21.0), 21.5, 0.5]
  y = np.r_[np.ones(20, int), 0, 0]
  assert prefilter.select_threshold(y, s, "tpr@0.95") == 2.0
  # Tied scores: at 0.4 TPR jumps from 0.5 to 1, so 0.4 is the largest threshold with TPR >= 0.95.
  assert prefilter.select_threshold([1, 1, 1, 1, 0], [0.9, 0.9, 0.4, 0.4, 0.1], "tpr@0.95") == 0.4


def test_select_threshold_matches_brute_force():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 300)
  s = np.round(rng.normal(size=300) + y, 1)  # many ties
  p, q = y.sum(), (1 - y).sum()
  cands = np.unique(s)
  tpr = np.array([(s[y == 1] >= t).mean() for t in cands])
  fpr = np.array([(s[y == 0] >= t).mean() for t in cands])
  for strategy, objective in (("youden", tpr - fpr), ("2tpr-fpr", 2 * tpr - fpr), ("tpr-2fpr", tpr - 2 * fpr)):
    best = cands[np.isclose(objective, objective.max(), rtol=0, atol=1e-12)].min()
    assert prefilter.select_threshold(y, s, strategy) == best, strategy
  assert prefilter.select_threshold(y, s, "tpr@0.95") == cands[tpr >= 0.95].max()
  ok = tpr * p >= np.ceil(0.1 * p)
  precision = np.array([y[s >= t].mean() for t in cands])
  best = cands[ok & np.isclose(precision, precision[ok].max(), rtol=0, atol=1e-12)].min()
  assert prefilter.select_threshold(y, s, "max_precision") == best
  assert q > 0


def test_select_threshold_errors():
  with pytest.raises(ValueError, match="youden, 2tpr-fpr, tpr-2fpr, tpr@0.95, max_precision"):
    prefilter.select_threshold(Y_A, S_A, "f1")
  with pytest.raises(ValueError, match="only one class"):
    prefilter.select_threshold([1, 1, 1], [0.1, 0.2, 0.3], "youden")
  with pytest.raises(ValueError, match="NaN"):
    prefilter.select_threshold([0, 1], [0.1, np.nan], "youden")
  with pytest.raises(ValueError, match="equal length"):
    prefilter.select_threshold([0, 1], [0.1, 0.2, 0.3], "youden")


def test_threshold_report_hand_made():
  report = prefilter.threshold_report(Y_B, S_B, 0.6)       # accepts 0.9 0.8 0.8 0.7 0.6: TP 4, FP 1
  assert report["n"] == 10 and report["n_accepted"] == 5 and report["acceptance_rate"] == 0.5
  assert report["tpr"] == pytest.approx(0.8) and report["fpr"] == pytest.approx(0.2)
  assert report["precision"] == pytest.approx(0.8)
  assert report["confusion"].tolist() == [[4, 1], [1, 4]]
  none = prefilter.threshold_report(Y_B, S_B, 2.0)
  assert none["n_accepted"] == 0 and none["precision"] == 0.0


# ----------------------------------------------------------------------------- Flax latent classifiers


def _linear_problem(n, seed, threshold=0.3):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, 128)).astype(np.float32)
  return z, (z[:, 0] + 0.5 * z[:, 1] > threshold).astype(np.int64)


@pytest.fixture(scope="module")
def separable():
  # 2048 training latents: with 128 noise dimensions, a 16-unit MLP trained on 512 reaches only ~0.91.
  z_train, y_train = _linear_problem(2048, 0)
  z_test, y_test = _linear_problem(512, 1)
  return z_train, y_train, z_test, y_test


@pytest.fixture(scope="module")
def fitted_bn_mlp(separable):
  z, y, _, _ = separable
  config = LatentClassifierConfig(hidden=(16,), batch_norm=(0,))
  return prefilter.fit_latent_classifier(z, y, config, steps=300, steps_per_call=50, batch_size=64,
                                         seed=0)


def test_flax_logreg_learns_linear_problem(separable):
  z, y, z_test, y_test = separable
  model = prefilter.fit_latent_classifier(z, y, latent_logreg(), steps=300, steps_per_call=50, batch_size=64,
                                          imbalance="focal")
  p = prefilter.predict_latent(model, z_test)
  assert p.shape == (512,) and p.dtype == np.float32 and np.all((p >= 0) & (p <= 1))
  assert compute_roc_auc(p, y_test) > 0.95


def test_flax_mlp_with_batch_norm_learns_and_is_batch_independent(separable, fitted_bn_mlp):
  _, _, z_test, y_test = separable
  p = prefilter.predict_latent(fitted_bn_mlp, z_test)
  assert compute_roc_auc(p, y_test) > 0.95
  # Inference mode: a latent's output does not depend on the batch (running averages, no batch statistics).
  np.testing.assert_allclose(prefilter.predict_latent(fitted_bn_mlp, z_test[:1]), p[:1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(prefilter.predict_latent(fitted_bn_mlp, z_test[100:103]), p[100:103], rtol=1e-5,
                             atol=1e-6)
  # No recompile for a batch size in an already compiled power-of-two bucket (5 -> 128 rows, as 1 and 3).
  compiled = prefilter._latent_logits._cache_size()
  prefilter.predict_latent(fitted_bn_mlp, z_test[:5])
  assert prefilter._latent_logits._cache_size() == compiled
  # The running averages moved away from their initial values during training.
  mean = np.asarray(fitted_bn_mlp.norms[0].mean[...])
  assert np.abs(mean).max() > 1e-3


def test_fit_step_compiles_once_per_config_and_size_bucket(separable):
  z, y, _, _ = separable
  # The settings of the Flax model in `cv_rows` (steps_per_call = min(100, steps)), whose training parts of
  # 44-67 latents fall in the same 128-row bucket: one compiled step for this test and all those fits.
  settings = dict(steps=100, batch_size=64)
  prefilter.fit_latent_classifier(z[:100], y[:100], latent_logreg(), **settings)
  step = prefilter._make_fit_step(latent_logreg(), "class_weights", 64, 100)
  compiled = step._cache_size()
  # Another number of latents in the same bucket and another learning rate reuse the compiled step.
  prefilter.fit_latent_classifier(z[:45], y[:45], latent_logreg(), **settings, learning_rate=5e-3)
  assert step._cache_size() == compiled


def test_deep_net_shapes():
  # Abstract (eval_shape) model: eager initialisation of 14 layers compiles one sampler per shape (~7 s on CPU).
  model = nnx.eval_shape(lambda: LatentClassifier(latent_deep(), rngs=nnx.Rngs(0)))
  assert [layer.out_features for layer in model.hidden] == [256, 256, 128, 128, 64, 64, 32, 32] + [16] * 6
  assert len(model.norms) == 3 and model.head.out_features == 1
  z = np.zeros((5, 128), np.float32)
  assert nnx.eval_shape(lambda: LatentClassifier(latent_deep(), rngs=nnx.Rngs(0))(z)).shape == (5,)
  infer = lambda: nnx.view(LatentClassifier(latent_deep(), rngs=nnx.Rngs(0)), use_running_average=True)(z)
  assert nnx.eval_shape(infer).shape == (5,)
  assert nnx.eval_shape(lambda: LatentClassifier(latent_mlp(4), rngs=nnx.Rngs(0))(z)).shape == (5,)


def test_wrong_latent_size_errors(fitted_bn_mlp):
  with pytest.raises(ValueError, match=r"\(B, 128\)"):
    prefilter.predict_latent(fitted_bn_mlp, np.zeros((4, 64), np.float32))
  with pytest.raises(ValueError, match=r"\(B, 128\)"):
    prefilter.fit_latent_classifier(np.zeros((4, 64), np.float32), [0, 1, 0, 1], latent_logreg(), steps=1)
  with pytest.raises(ValueError, match=r"\(B, 128\)"):
    fitted_bn_mlp(np.zeros((128,), np.float32))
  with pytest.raises(ValueError, match="only one class"):
    prefilter.fit_latent_classifier(np.zeros((4, 128), np.float32), [1, 1, 1, 1], latent_logreg(), steps=1)
  with pytest.raises(ValueError, match="batch_norm"):
    LatentClassifierConfig(hidden=(8,), batch_norm=(1,))


# ----------------------------------------------------------------------------- cross-validation and tables


def _group_dataset(n_per_group=100, seed=0, empty_group="58_64f"):
  """Latents of the six groups, ~25% valid, none in `empty_group`; valid latents have z0 shifted by +3.

  The shift is strong because each training part holds ~67 latents in 128 dimensions:
  a weaker planted signal leaves every model near chance for lack of data, not for a bug.
  """
  rng = np.random.default_rng(seed)
  groups = np.repeat(np.array(GROUPS), n_per_group)
  z = rng.normal(size=(groups.shape[0], 128)).astype(np.float32)
  valid = rng.random(groups.shape[0]) < 0.25
  valid[groups == empty_group] = False
  z[valid, 0] += 3.0
  return z, valid, groups


@pytest.fixture(scope="module")
def cv_rows():
  z, valid, groups = _group_dataset()
  models = {"logreg_l1": prefilter.latent_model_zoo(flax=False)["logreg_l1"],
            "flax_logreg": prefilter.FlaxLatentEstimator(latent_logreg(), steps=100, batch_size=64)}
  return prefilter.cross_validate_latent(z, valid, groups, models)


def test_cross_validate_rows_and_empty_group(cv_rows):
  assert len(cv_rows) == 2 * 6
  assert [(r["group"], r["model"]) for r in cv_rows[:2]] == [("18_24m", "logreg_l1"), ("18_24m", "flax_logreg")]
  skipped = [r for r in cv_rows if r["note"]]
  assert {r["group"] for r in skipped} == {"58_64f"} and len(skipped) == 2
  assert "0 positives" in skipped[0]["note"] and np.isnan(skipped[0]["roc_auc"])
  for r in cv_rows:
    if not r["note"]:
      assert r["target"] == "valid" and r["n"] == 100 and r["n_folds"] == 3 and r["strategy"] == "youden"
      assert 0 <= r["precision"] <= 1 and 0 <= r["acceptance"] <= 1 and r["roc_auc_std"] >= 0
  for model in ("logreg_l1", "flax_logreg"):
    aucs = [r["roc_auc"] for r in cv_rows if r["model"] == model and not r["note"]]
    assert np.mean(aucs) > 0.7, (model, aucs)   # ~0.8 measured


def test_cross_validate_shuffled_labels_near_chance():
  z, valid, groups = _group_dataset(seed=1, empty_group="none")
  shuffled = np.random.default_rng(2).permutation(valid)
  models = {"svc_linear": prefilter.latent_model_zoo(flax=False)["svc_linear"]}
  rows = prefilter.cross_validate_latent(z, shuffled, groups, models, seed=3)
  aucs = [r["roc_auc"] for r in rows]
  assert len(aucs) == 6 and abs(np.mean(aucs) - 0.5) < 0.12, aucs


def test_cross_validate_score_targets_and_requested_empty_group():
  # 16-d latents (the CV is generic in D): enough data per dimension to learn five score models.
  rng = np.random.default_rng(4)
  n = 180
  groups = np.repeat(np.array(["18_24m", "38_44f"]), n // 2)
  z = rng.normal(size=(n, 16)).astype(np.float32)
  # Each score is mostly positive (~84%) and driven by its own latent coordinate; valid (~40%) = all five > 0.
  scores = {name: (z[:, k] + 1.0 + 0.3 * rng.normal(size=n)).astype(np.float32)
            for k, name in enumerate(prefilter.SCORE_NAMES)}
  valid = np.all([s > 0 for s in scores.values()], axis=0)
  y = {"valid": valid, **scores}
  models = {"logreg_l1": prefilter.latent_model_zoo(flax=False)["logreg_l1"]}
  targets = ("valid", "score_shape", "valid_by_scores")
  rows = prefilter.cross_validate_latent(z, y, groups, models, targets=targets)
  assert [(r["target"], r["group"]) for r in rows] == [(t, g) for t in targets for g in ("18_24m", "38_44f")]
  by_target = {t: [r for r in rows if r["target"] == t] for t in targets}
  assert all(r["strategy"] == "tpr@0.95" and np.isnan(r["precision_default"]) for r in by_target["valid_by_scores"])
  assert all(r["roc_auc"] > 0.8 and r["precision"] > r["base_rate"] + 0.2 for r in by_target["valid_by_scores"])
  assert all(r["roc_auc"] > 0.85 for r in by_target["score_shape"])
  # valid is an AND of five linear rules: one linear model per score beats one linear model of valid.
  mean_auc = {t: np.mean([r["roc_auc"] for r in by_target[t]]) for t in targets}
  assert mean_auc["valid_by_scores"] > mean_auc["valid"] + 0.05, mean_auc
  # A group asked for by name without enough positives is an error, not a skipped row.
  with pytest.raises(ValueError, match="'38_44f'.*positives"):
    prefilter.cross_validate_latent(z, valid & (groups == "18_24m"), groups, models, group_names=["38_44f"])
  with pytest.raises(ValueError, match="unknown target"):
    prefilter.cross_validate_latent(z, y, groups, models, targets=("score_nope",))


def test_model_zoo_names_and_every_sklearn_model_runs():
  zoo = prefilter.latent_model_zoo()
  assert list(zoo) == ["knn_1", "knn_3", "knn_10", "knn_30", "svc_linear", "svc_rbf", "svc_poly",
                       "logreg_C0.01", "logreg_C0.1", "logreg_C1", "logreg_C10", "logreg_l1", "tree_d5",
                       "tree_d10", "forest", "flax_logreg", "flax_mlp1", "flax_mlp2", "flax_mlp3", "flax_mlp4",
                       "flax_deep"]
  assert zoo["flax_deep"].config == latent_deep()
  # Every scikit-learn model through the CV loop (scores from decision_function or predict_proba), kept
  # cheap: one group of 16-d latents, 2 folds, 10 trees (160 latents: knn_30's inner training parts need 30).
  rng = np.random.default_rng(5)
  z = rng.normal(size=(160, 16)).astype(np.float32)
  valid = z[:, 0] + 0.5 * rng.normal(size=160) > 0.5
  sklearn_models = {k: v for k, v in zoo.items() if not k.startswith("flax_")}
  sklearn_models["forest"].set_params(n_estimators=10)
  rows = prefilter.cross_validate_latent(z, valid, np.full(160, "38_44m"), sklearn_models, n_folds=2)
  assert [r["model"] for r in rows] == list(sklearn_models)
  assert all(np.isfinite(r["roc_auc"]) and np.isfinite(r["precision"]) and not r["note"] for r in rows)
  assert np.mean([r["roc_auc"] for r in rows]) > 0.7


def test_results_table_lists_every_model_and_group(cv_rows):
  table = prefilter.results_table(cv_rows)
  assert table.startswith("### valid")
  for name in ("logreg_l1", "flax_logreg", *GROUPS):
    assert name in table
  header = next(line for line in table.splitlines() if line.startswith("| model"))
  assert header == "| model | " + " | ".join(GROUPS) + " |"
  assert "skipped" in table and "- 58_64f: skipped: 0 positives" in table
  first = next(r for r in cv_rows if r["model"] == "logreg_l1")
  lift = first["precision"] / first["base_rate"]
  assert f"{first['precision']:.3f} ({lift:.2f}x) / {first['roc_auc']:.3f}" in table
  with pytest.raises(ValueError):
    prefilter.results_table([])


def test_cross_validate_several_strategies_share_fits():
  z, valid, groups = _group_dataset(seed=6, empty_group="none")
  models = {"logreg_C1": prefilter.latent_model_zoo(flax=False)["logreg_C1"]}
  one = prefilter.cross_validate_latent(z, valid, groups, models, strategy="youden", group_names=["18_24m"])
  rows = prefilter.cross_validate_latent(z, valid, groups, models, strategy=prefilter.STRATEGIES,
                                         group_names=["18_24m"])
  assert [r["strategy"] for r in rows] == list(prefilter.STRATEGIES)
  assert len({r["roc_auc"] for r in rows}) == 1          # one set of fits behind every strategy's row
  by = {r["strategy"]: r for r in rows}
  assert by["youden"] == one[0]
  # The strategies differ where they should: tpr@0.95 accepts the most, max_precision the fewest.
  assert by["tpr@0.95"]["tpr"] > 0.85 and by["tpr@0.95"]["acceptance"] >= by["youden"]["acceptance"]
  assert by["max_precision"]["acceptance"] <= by["youden"]["acceptance"]
  table = prefilter.results_table(rows)
  assert all(f"### valid, threshold {s}" in table for s in prefilter.STRATEGIES)
  for bad in ("nope", ("youden", "youden"), ()):
    with pytest.raises(ValueError, match="strategy"):
      prefilter.cross_validate_latent(z, valid, groups, models, strategy=bad)


# ----------------------------------------------------------------------------- latent datasets


def _records(n=12, seed=0):
  rng = np.random.default_rng(seed)
  scores = {k: rng.normal(size=n).astype(np.float32) for k in prefilter.SCORE_NAMES}
  return {"z": rng.normal(size=(n, 128)).astype(np.float32),
          "group": np.array(GROUPS * (n // 6)),
          "scores": scores,
          "features": rng.random((n, 6)).astype(np.float32),
          "valid": np.all([s > 0 for s in scores.values()], axis=0),
          "generator_id": "gan_64@1200"}


def test_latent_dataset_round_trip(tmp_path):
  records = _records()
  path = prefilter.save_latent_dataset(tmp_path / "sub" / "latents.npz", records)
  loaded = prefilter.load_latent_dataset(path)
  np.testing.assert_array_equal(loaded["z"], records["z"])
  np.testing.assert_array_equal(loaded["group"], records["group"])
  assert loaded["group"].dtype.kind == "U"
  for k in prefilter.SCORE_NAMES:
    np.testing.assert_array_equal(loaded["scores"][k], records["scores"][k])
  np.testing.assert_array_equal(loaded["features"], records["features"])
  np.testing.assert_array_equal(loaded["valid"], records["valid"])
  assert loaded["valid"].dtype == bool and loaded["generator_id"] == "gan_64@1200"
  assert [p.name for p in path.parent.iterdir()] == ["latents.npz"]   # no temporary left behind
  targets = prefilter.latent_targets(loaded)
  assert set(targets) == {"valid", *prefilter.SCORE_NAMES}


def test_latent_dataset_bad_files(tmp_path):
  bad_width = dict(_records(), z=np.zeros((12, 64), np.float32))
  with pytest.raises(DataError, match=r"z: expected shape \(N, 128\)"):
    prefilter.save_latent_dataset(tmp_path / "a.npz", bad_width)
  assert not (tmp_path / "a.npz").exists()
  with pytest.raises(DataError, match="unknown group"):
    prefilter.save_latent_dataset(tmp_path / "a.npz", dict(_records(), group=np.array(["x"] * 12)))
  with pytest.raises(DataError, match="missing"):
    prefilter.save_latent_dataset(tmp_path / "a.npz", {k: v for k, v in _records().items() if k != "valid"})

  records = _records()
  arrays = {"z": records["z"], "group": records["group"], **records["scores"], "features": records["features"],
            "generator_id": np.array("g")}
  np.savez(tmp_path / "no_valid.npz", **arrays)
  with pytest.raises(DataError, match=r"no_valid.npz: .*missing array\(s\) \['valid'\]"):
    prefilter.load_latent_dataset(tmp_path / "no_valid.npz")
  np.savez(tmp_path / "narrow.npz", **dict(arrays, valid=records["valid"], z=np.zeros((12, 64), np.float32)))
  with pytest.raises(DataError, match=r"narrow.npz: z: expected shape \(N, 128\)"):
    prefilter.load_latent_dataset(tmp_path / "narrow.npz")
  np.savez(tmp_path / "pickled.npz", **dict(arrays, valid=np.array([None] * 12, dtype=object)))
  with pytest.raises(DataError, match="pickled.npz"):
    prefilter.load_latent_dataset(tmp_path / "pickled.npz")
  np.save(tmp_path / "array.npy", records["z"])
  with pytest.raises(DataError, match="array.npy: expected an npz archive"):
    prefilter.load_latent_dataset(tmp_path / "array.npy")
  (tmp_path / "text.npz").write_text("not an archive")
  with pytest.raises(DataError, match="text.npz"):
    prefilter.load_latent_dataset(tmp_path / "text.npz")
  with pytest.raises(DataError, match="no such file"):
    prefilter.load_latent_dataset(tmp_path / "missing.npz")


# ----------------------------------------------------------------------------- exploratory views and figures


def test_latent_score_correlations_and_extremes():
  rng = np.random.default_rng(6)
  z = rng.normal(size=(400, 128))
  scores = {"score_a": 2.0 * z[:, 3] + 0.1 * rng.normal(size=400), "score_b": rng.normal(size=400),
            "constant": np.ones(400)}
  corr = prefilter.latent_score_correlations(z, scores)
  assert corr.shape == (3, 128)
  assert corr[0, 3] > 0.99 and np.abs(np.delete(corr[0], 3)).max() < 0.3
  np.testing.assert_allclose(corr[1], np.corrcoef(scores["score_b"], z.T)[0, 1:], atol=1e-10)
  assert np.all(np.isnan(corr[2]))

  out = prefilter.embed_extremes(z, scores["score_a"], 20)
  assert out["embedding"].shape == (40, 2) and out["index"].shape == (40,)
  order = np.argsort(scores["score_a"])
  assert set(out["index"][:20]) == set(order[-20:]) and set(out["index"][20:]) == set(order[:20])
  assert out["is_best"].sum() == 20 and out["explained_variance_ratio"].shape == (2,)
  with pytest.raises(ValueError, match="k must be"):
    prefilter.embed_extremes(z, scores["score_a"], 201)


def test_figures_are_written(tmp_path):
  rng = np.random.default_rng(7)
  y = rng.integers(0, 2, 200)
  s = y + rng.normal(size=200)
  written = [
      prefilter.save_roc_pr_curves({"model": (y, s), "chance": (y, rng.normal(size=200))}, tmp_path / "roc.png",
                                   title="valid"),
      prefilter.save_confusion_matrix(prefilter.threshold_report(y, s, 0.5)["confusion"], tmp_path / "cm.png"),
      prefilter.save_correlation_heatmap(np.array([[0.1, np.nan, -0.3]]), ["score_shape"], tmp_path / "r.png"),
      prefilter.save_extremes_scatter(prefilter.embed_extremes(rng.normal(size=(50, 4)), s[:50], 10),
                                      tmp_path / "pca.png", title="score_shape"),
  ]
  for path in written:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "pca.png", "r.png", "roc.png"]
