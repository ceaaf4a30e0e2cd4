"""Tests of cross-validation, tables, exploratory views and the report (`jaxcxr.prefilter.crossval`)."""

import json

import numpy as np
import pytest

from jaxcxr import cli, prefilter
from jaxcxr.config import latent_logreg
from jaxcxr.data import GROUPS

GROUP = "38_44f"

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


# ----------------------------------------------------------------------------- exploratory views


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


# ----------------------------------------------------------------------------- report (CLI)


def test_latents_table_cli_writes_table_rows_and_figures(tmp_path, capsys, synthetic_records):
  path = tmp_path / "latents.npz"
  prefilter.save_latent_dataset(path, synthetic_records(n=150, groups=("18_24m", GROUP)))
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
