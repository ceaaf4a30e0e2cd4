"""The original post-filter: a decision tree and a logistic regression on the six symmetry features."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxcxr.scoring.features import FEATURE_NAMES

__all__ = ["fit_symmetry_postfilter", "symmetry_postfilter_table"]


def fit_symmetry_postfilter(features: Any, y: Any, *, n_folds: int = 3, seed: int = 0) -> list[dict[str, Any]]:
  """The original post-filter: a decision tree and a logistic regression on the six symmetry features.

  Each model's hyper-parameters are chosen by `n_folds`-fold stratified cross-validation
  (scikit-learn `GridSearchCV`, ROC AUC): tree depth 1-6 and minimum leaf size; logistic
  regression C from 1e-3 to 1e3 on standardised features. The reported figures are
  the cross-validated scores of the chosen setting (mean and std over folds).

  Args:
    features: float (N, 6) in `FEATURE_NAMES` order (e.g. `ScoreResult.features`).
    y: binary (N,) targets, e.g. `ScoreResult.valid` or labels a user supplies.
    n_folds: folds of the cross-validation.
    seed: seed of the fold assignment.

  Returns:
    One row per model: {"model", "params", "roc_auc", "roc_auc_std", "accuracy",
    "accuracy_std", "n", "n_positive", "estimator" (refitted on all data)}.

  Raises:
    ValueError: wrong feature shape, non-finite features, non-binary y, n_folds < 2, or fewer than
      `n_folds` examples of a class.
  """
  # Deferred (a measured heavy boundary): scikit-learn, for this fit only. Its five modules below take 2.3 s to
  # import after `import jaxcxr.scoring`, which itself imports no scikit-learn (2-core machine, median of 3).
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.model_selection import GridSearchCV, StratifiedKFold  # pylint: disable=g-import-not-at-top
  from sklearn.pipeline import make_pipeline  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
  from sklearn.tree import DecisionTreeClassifier  # pylint: disable=g-import-not-at-top

  x, y = np.asarray(features), np.asarray(y)
  if x.dtype.kind not in "biuf" or x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES) or y.shape != x.shape[:1]:
    raise ValueError(f"fit_symmetry_postfilter: expected real features (N, {len(FEATURE_NAMES)}) and y (N,), got "
                     f"{x.dtype} {x.shape} and {y.shape}")
  if not np.isfinite(x.astype(np.float64)).all():
    raise ValueError("fit_symmetry_postfilter: features contain NaN or inf")
  if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
    raise ValueError("fit_symmetry_postfilter: y must hold binary labels (bool or 0/1)")
  if not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
    raise ValueError(f"fit_symmetry_postfilter: n_folds must be an integer >= 2, got {n_folds!r}")
  x, y = x.astype(np.float64), y.astype(bool)
  counts = (int((~y).sum()), int(y.sum()))
  if min(counts) < n_folds:
    raise ValueError(f"fit_symmetry_postfilter: need at least {n_folds} examples of each class, got "
                     f"{counts[0]} negative and {counts[1]} positive")
  folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
  grids = {
      "decision_tree": (DecisionTreeClassifier(random_state=seed),
                        {"max_depth": [1, 2, 3, 4, 5, 6], "min_samples_leaf": [1, 5, 20]}),
      "logistic_regression": (make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                              {"logisticregression__C": [1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3]}),
  }
  rows = []
  for name, (estimator, grid) in grids.items():
    search = GridSearchCV(estimator, grid, scoring={"roc_auc": "roc_auc", "accuracy": "accuracy"},
                          refit="roc_auc", cv=folds)
    search.fit(x, y)
    i = search.best_index_
    cv = search.cv_results_
    rows.append({"model": name, "params": {k.split("__")[-1]: v for k, v in search.best_params_.items()},
                 "roc_auc": float(cv["mean_test_roc_auc"][i]), "roc_auc_std": float(cv["std_test_roc_auc"][i]),
                 "accuracy": float(cv["mean_test_accuracy"][i]), "accuracy_std": float(cv["std_test_accuracy"][i]),
                 "n": int(len(y)), "n_positive": counts[1], "estimator": search.best_estimator_})
  return rows


def symmetry_postfilter_table(rows: list[dict[str, Any]], title: str = "") -> str:
  """Markdown table of `fit_symmetry_postfilter` rows."""
  lines = [f"**{title}**", ""] if title else []
  lines += ["| model | chosen parameters | ROC AUC (3-fold CV) | accuracy | n (positive) |", "|---|---|---|---|---|"]
  for r in rows:
    params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
    lines.append(f"| {r['model']} | {params} | {r['roc_auc']:.3f} +- {r['roc_auc_std']:.3f} | "
                 f"{r['accuracy']:.3f} +- {r['accuracy_std']:.3f} | {r['n']} ({r['n_positive']}) |")
  return "\n".join(lines)
