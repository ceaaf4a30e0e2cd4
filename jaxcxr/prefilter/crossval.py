"""Cross-validation of latent classifiers, its tables, exploratory views and the one-command report.

* `cross_validate_latent` (stratified k-fold per age-sex group and target, thresholds
  chosen on inner out-of-fold scores) and `results_table` (markdown);
* exploratory views: `latent_score_correlations`, `embed_extremes`;
* `write_latent_report`: CV table, views, each group's best model's ROC/PR and confusion
  (figures from `jaxcxr.plots`).
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold

from jaxcxr import io as io_lib
from jaxcxr import metrics as metrics_lib
from jaxcxr.data import GROUPS
from jaxcxr.io import write_bytes_atomic
from jaxcxr.plots import save_confusion_matrix, save_correlation_heatmap, save_extremes_scatter, save_roc_pr_curves
from jaxcxr.prefilter.classifiers import _check_latents, select_models
from jaxcxr.prefilter.dataset import latent_targets, validate_latent_records
from jaxcxr.prefilter.thresholds import _check_strategies, select_threshold
from jaxcxr.scoring import SCORE_NAMES

__all__ = [
    "TARGETS",
    "cross_validate_latent",
    "embed_extremes",
    "latent_score_correlations",
    "results_table",
    "write_latent_report",
]

# Cross-validation targets: `valid`, each score (label: score > 0), and "valid_by_scores"
# (one model per score, each thresholded at TPR 0.95, valid = all five pass).
TARGETS: tuple[str, ...] = ("valid", *SCORE_NAMES, "valid_by_scores")


# ============================================================================ cross-validation


def _model_scores(estimator: Any, z: np.ndarray) -> np.ndarray:
  """Ranking scores of a fitted binary classifier: decision_function, else P(class 1). float64 (N,)."""
  if hasattr(estimator, "decision_function"):
    return np.asarray(estimator.decision_function(z), np.float64)
  return np.asarray(estimator.predict_proba(z), np.float64)[:, 1]


def _target_label(y: Mapping[str, np.ndarray], target: str, n: int) -> np.ndarray:
  """int64 (N,) label of a target: "valid" as given, a score's label is score > 0."""
  if target == "valid_by_scores":
    missing = [k for k in SCORE_NAMES if k not in y]
    if missing:
      raise ValueError(f"target 'valid_by_scores' needs all five scores in y; missing {missing}")
    label = np.all([np.asarray(y[k]) > 0 for k in SCORE_NAMES], axis=0)
  elif target not in y:
    raise ValueError(f"target {target!r} not in y (keys {sorted(y)}); targets are among {', '.join(TARGETS)}")
  elif target == "valid":
    label = np.asarray(y["valid"])
    if label.dtype != bool and not np.all(np.isin(label, (0, 1))):
      raise ValueError("y['valid'] must be bool or 0/1")
  else:
    label = np.asarray(y[target]) > 0
  if label.shape != (n,):
    raise ValueError(f"target {target!r}: expected {n} labels, got shape {label.shape}")
  return label.astype(np.int64)


# Per-fold metrics averaged into a `cross_validate_latent` row.
_METRICS = ("roc_auc", "precision", "precision_default", "tpr", "acceptance")


def _precision(accepted: np.ndarray, y: np.ndarray) -> float:
  return metrics_lib.compute_binary_report(accepted.astype(np.int64), y)["precision"]


def _min_class_count(n_folds: int) -> int:
  """Fewest samples of a class a group needs: every outer training part then holds >= n_folds of it.

  StratifiedKFold spreads a class of c samples over the folds as evenly as possible,
  so the largest held-out share is ceil(c / k) and the smallest training part keeps
  c - ceil(c / k); the inner k folds that choose the threshold need k of each class.
  """
  count = n_folds
  while count - math.ceil(count / n_folds) < n_folds:
    count += 1
  return count


def _out_of_fold_scores(estimator, z: np.ndarray, y: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
  """Each latent's score from a clone fitted without it (inner stratified k folds). float64 (N,)."""
  scores = np.empty(y.shape[0], np.float64)
  for train, test in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(z, y):
    scores[test] = _model_scores(clone(estimator).fit(z[train], y[train]), z[test])
  return scores


def _fold_metrics(estimator, z_tr, y_tr, z_te, y_te, strategies: Sequence[str], n_folds: int,
                  seed: int) -> dict[str, dict[str, float]]:
  """Held-out metrics of one outer fold, per threshold strategy: {strategy: {metric: value}}.

  The inner out-of-fold scores and the refit are shared by all strategies, so
  asking for all five costs what one does.
  """
  oof = _out_of_fold_scores(estimator, z_tr, y_tr, n_folds, seed)
  model = clone(estimator).fit(z_tr, y_tr)
  s_te = _model_scores(model, z_te)
  shared = {"roc_auc": metrics_lib.compute_roc_auc(s_te, y_te),
            "precision_default": _precision(np.asarray(model.predict(z_te)), y_te)}
  out = {}
  for strategy in strategies:
    accepted = s_te >= select_threshold(y_tr, oof, strategy)
    out[strategy] = {**shared, "precision": _precision(accepted, y_te), "tpr": float(accepted[y_te == 1].mean()),
                     "acceptance": float(accepted.mean())}
  return out


def _fold_metrics_by_scores(estimator, z_tr, z_te, y_te, score_labels_tr, n_folds: int,
                            seed: int) -> dict[str, float]:
  """One model per score, each thresholded at TPR 0.95 on the training folds; valid = all pass.

  Per score k, the threshold t_k is "tpr@0.95" on the out-of-fold scores of the
  training part and the model refitted on the whole part is applied to the
  held-out latents. The decision is exact: accepted when all five s_k >= t_k. For
  ROC AUC the five model scores are put on one scale, u_k = the fraction of the
  training positives of score k (out-of-fold) scoring at most as high, and a
  latent is ranked by min_k u_k (its weakest score). A score with fewer than
  n_folds training positives or negatives cannot be learned and filters nothing
  (always accepted, u_k = 1).
  """
  accepted = np.ones(z_te.shape[0], bool)
  weakest = np.ones(z_te.shape[0], np.float64)
  for labels in score_labels_tr:
    if min(int(labels.sum()), int((1 - labels).sum())) < n_folds:
      continue
    oof = _out_of_fold_scores(estimator, z_tr, labels, n_folds, seed)
    s_te = _model_scores(clone(estimator).fit(z_tr, labels), z_te)
    accepted &= s_te >= select_threshold(labels, oof, "tpr@0.95")
    positives = np.sort(oof[labels == 1])
    weakest = np.minimum(weakest, np.searchsorted(positives, s_te, side="right") / positives.shape[0])
  return {"roc_auc": metrics_lib.compute_roc_auc(weakest, y_te), "precision": _precision(accepted, y_te),
          "precision_default": float("nan"), "tpr": float(accepted[y_te == 1].mean()),
          "acceptance": float(accepted.mean())}


def cross_validate_latent(z: Any, y: Any, groups: Any, models: Mapping[str, Any], n_folds: int = 3, seed: int = 0,
                          targets: Sequence[str] = ("valid",), *, group_names: Sequence[str] | None = None,
                          strategy: str | Sequence[str] = "youden") -> list[dict[str, Any]]:
  """Stratified k-fold cross-validation of latent classifiers, per age-sex group and target.

  For each target, group and model: the group's records are split by
  `StratifiedKFold(n_folds, shuffle=True, random_state=seed)` (the same folds for
  every model), the model is fitted (a `sklearn.base.clone`) on the training folds
  and evaluated on the held-out fold; the row holds fold means and standard
  deviations. Metrics per fold:

  * "roc_auc" of the model's scores (`decision_function`, else P(valid));
  * "precision" of accepting score >= t, with its "tpr" and "acceptance" rate.
    t is chosen by `strategy` on out-of-fold scores of the training folds (inner
    stratified `n_folds`-fold CV, then a refit on all training folds, as
    scikit-learn's `TunedThresholdClassifierCV`): chosen on data the model did not
    see, reported on held-out data. Training-set scores would give over-selective
    thresholds for every model that memorises its training set (knn_1, deep trees,
    forests, and any model with 128 inputs and ~100 records). It costs
    `n_folds + 1` fits per fold;
  * "precision_default" of the model's own `predict` (e.g. probability 0.5).

  Targets (see `TARGETS`): "valid"; a score name, label = score > 0; and
  "valid_by_scores": one model per score, each thresholded by "tpr@0.95" (the same
  inner CV), a latent is predicted valid when all five accept, scored against
  label = all five scores > 0 (= valid by its definition); its precision is that of
  the all-pass rule, "precision_default" is NaN, and its ROC AUC ranks latents by
  their weakest score (see `_fold_metrics_by_scores`).

  Fallback for thin groups: a group whose positives (or negatives) for a target
  are too few for every training part to hold `n_folds` of them (5 for 3 folds)
  cannot be cross-validated this way (a held-out fold without positives has no
  ROC AUC; inner folds without positives pick no threshold), so it is skipped:
  one row per model with NaN metrics and the reason in "note" (e.g. a group with
  no valid latent at all). Asking for such a group explicitly in `group_names`
  is an error instead.

  Args:
    z: float (N, D) latents.
    y: labels: a mapping with "valid" (N,) bool and/or score names -> (N,) float
      scores (`latent_targets(records)` builds it), or a plain (N,) binary array,
      taken as "valid".
    groups: (N,) group name per latent.
    models: name -> unfitted scikit-learn-style estimator (`latent_model_zoo`).
    n_folds: folds (>= 2).
    seed: seed of the fold shuffling.
    targets: targets to evaluate, each in `TARGETS` and available from `y`.
    group_names: groups to evaluate (default: every group present, in
      `jaxcxr.data.GROUPS` order, then any others sorted).
    strategy: threshold strategy of "precision" (one of `STRATEGIES`), or several:
      one row per strategy, all from the same fits ("valid_by_scores" always
      uses "tpr@0.95" and has one row).

  Returns:
    One dict per (target, group, model[, strategy]), in that nesting order, with keys
    "model", "group", "target", "n", "n_pos", "base_rate" (n_pos / n),
    "roc_auc", "roc_auc_std", "precision", "precision_std", "precision_default",
    "tpr", "acceptance" (fold means unless "_std"), "strategy", "n_folds" and
    "note" ("" unless skipped).

  Raises:
    ValueError: mismatched lengths, an unknown target or strategy, n_folds < 2, a
      requested group absent from `groups` or with too few positives or negatives
      for a target.
  """
  z = np.asarray(z)
  if z.ndim != 2:
    raise ValueError(f"z: expected latents of shape (N, D), got {z.shape}")
  z = _check_latents(z, z.shape[1])
  n = z.shape[0]
  groups = np.asarray(groups).astype(str)
  if groups.shape != (n,):
    raise ValueError(f"groups: expected ({n},) names, got shape {groups.shape}")
  if not isinstance(y, Mapping):
    y = {"valid": np.asarray(y)}
  unknown = [t for t in targets if t not in TARGETS]
  if unknown or not targets:
    raise ValueError(f"unknown target(s) {unknown}; expected some of {', '.join(TARGETS)}")
  strategies = _check_strategies(strategy)
  if n_folds < 2:
    raise ValueError(f"n_folds: expected >= 2, got {n_folds}")
  present = set(groups.tolist())
  explicit = group_names is not None
  if explicit:
    absent = [g for g in group_names if g not in present]
    if absent:
      raise ValueError(f"group(s) {absent} have no latents; present: {sorted(present)}")
    names = list(group_names)
  else:
    names = [g for g in GROUPS if g in present] + sorted(present - set(GROUPS))
  min_count = _min_class_count(n_folds)
  labels = {t: _target_label(y, t, n) for t in targets}
  score_labels = ([_target_label(y, k, n) for k in SCORE_NAMES] if "valid_by_scores" in targets else [])

  rows = []
  for target in targets:
    for group in names:
      member = groups == group
      zg, yg = z[member], labels[target][member]
      n_pos = int(yg.sum())
      base = {"group": group, "target": target, "n": int(yg.shape[0]), "n_pos": n_pos,
              "base_rate": n_pos / yg.shape[0], "n_folds": n_folds}
      row_strategies = ("tpr@0.95",) if target == "valid_by_scores" else strategies
      n_neg = base["n"] - n_pos
      if min(n_pos, n_neg) < min_count:
        note = (f"skipped: {n_pos} positives and {n_neg} negatives; each class needs >= {min_count} "
                f"for {n_folds} folds with {n_folds} inner folds")
        if explicit:
          raise ValueError(f"group {group!r}, target {target!r}: {note[len('skipped: '):]}")
        for name in models:
          for s in row_strategies:
            rows.append({"model": name, **base, "strategy": s, **{k: float("nan") for k in _METRICS},
                         "roc_auc_std": float("nan"), "precision_std": float("nan"), "note": note})
        continue
      folds = list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(zg, yg))
      for name, estimator in models.items():
        per_fold = []
        for train, test in folds:
          if target == "valid_by_scores":
            per_fold.append({"tpr@0.95": _fold_metrics_by_scores(
                estimator, zg[train], zg[test], yg[test], [s[member][train] for s in score_labels], n_folds, seed)})
          else:
            per_fold.append(_fold_metrics(estimator, zg[train], yg[train], zg[test], yg[test], strategies,
                                          n_folds, seed))
        for s in row_strategies:
          row = {"model": name, **base, "strategy": s}
          for key in _METRICS:
            row[key] = float(np.mean([m[s][key] for m in per_fold]))
          row["roc_auc_std"] = float(np.std([m[s]["roc_auc"] for m in per_fold]))
          row["precision_std"] = float(np.std([m[s]["precision"] for m in per_fold]))
          row["note"] = ""
          rows.append(row)
  return rows


def results_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """Markdown tables of `cross_validate_latent` rows: models x groups, one table per target and strategy.

  Each cell is "precision (lift) / ROC AUC": fold means, precision at the table's
  threshold strategy and its lift = precision / base rate (the pre-filter's
  predicted speed-up in generated images per valid one), as in the original
  study's table. A skipped group shows "skipped" and its reason is listed under
  the table.

  Args:
    rows: rows from `cross_validate_latent`.

  Returns:
    The markdown text.

  Raises:
    ValueError: no rows.
  """
  if not rows:
    raise ValueError("results_table: no rows")
  out = []
  for target, strategy in dict.fromkeys((r["target"], r["strategy"]) for r in rows):
    sub = [r for r in rows if r["target"] == target and r["strategy"] == strategy]
    models = list(dict.fromkeys(r["model"] for r in sub))
    groups = list(dict.fromkeys(r["group"] for r in sub))
    cell = {(r["model"], r["group"]): r for r in sub}
    folds = sorted({r["n_folds"] for r in sub})
    out.append(f"### {target}, threshold {strategy}\n")
    out.append(f"precision (lift = precision / base rate) / ROC AUC, mean over {', '.join(map(str, folds))} folds\n")
    out.append("| model | " + " | ".join(groups) + " |")
    out.append("|---|" + "---|" * len(groups))
    for model in models:
      cells = []
      for group in groups:
        r = cell.get((model, group))
        if r is None:
          cells.append("")
        elif r["note"]:
          cells.append("skipped")
        else:
          lift = r["precision"] / r["base_rate"] if r["base_rate"] > 0 else float("nan")
          cells.append(f"{r['precision']:.3f} ({lift:.2f}x) / {r['roc_auc']:.3f}")
      out.append(f"| {model} | " + " | ".join(cells) + " |")
    base = {r["group"]: r for r in sub}
    out.append("| *positives / n* | " + " | ".join(f"{base[g]['n_pos']} / {base[g]['n']}" for g in groups) + " |")
    notes = {(r["group"], r["note"]) for r in sub if r["note"]}
    if notes:
      out.append("")
      out.extend(f"- {g}: {note}" for g, note in sorted(notes))
    out.append("")
  return "\n".join(out)


# ============================================================================ exploratory views


def latent_score_correlations(z: Any, scores: Mapping[str, Any]) -> np.ndarray:
  """Pearson correlation between each score and each latent coordinate.

    r[k, d] = cov(s_k, z_d) / (std(s_k) std(z_d)),

  computed in float64; NaN where a score or a coordinate is constant.

  Args:
    z: float (N, D) latents, N >= 2.
    scores: name -> finite float (N,) scores; the rows follow its order.

  Returns:
    float64 (len(scores), D).

  Raises:
    ValueError: bad shapes, N < 2, or non-finite values.
  """
  z = np.asarray(z, np.float64)
  if z.ndim != 2 or z.shape[0] < 2:
    raise ValueError(f"z: expected (N, D) latents with N >= 2, got shape {z.shape}")
  s = np.stack([np.asarray(v, np.float64) for v in scores.values()]) if scores else np.zeros((0, z.shape[0]))
  if s.shape[1:] != (z.shape[0],):
    raise ValueError(f"scores: expected ({z.shape[0]},) arrays, got {[np.shape(v) for v in scores.values()]}")
  if not (np.all(np.isfinite(z)) and np.all(np.isfinite(s))):
    raise ValueError("latent_score_correlations: z and scores must be finite")
  zc, sc = z - z.mean(axis=0), s - s.mean(axis=1, keepdims=True)
  cov = sc @ zc                                                        # (K, D), times N
  norm = np.sqrt((sc ** 2).sum(axis=1))[:, None] * np.sqrt((zc ** 2).sum(axis=0))[None, :]
  return np.divide(cov, norm, out=np.full(cov.shape, np.nan), where=norm > 0)


def embed_extremes(z: Any, score: Any, k: int, *, seed: int = 0) -> dict[str, np.ndarray]:
  """2-D PCA of the k best and k worst latents by a score (UMAP is not a dependency).

  PCA (scikit-learn) is fitted on the 2k selected latents only, so the axes are
  the directions along which best and worst latents vary most; a clear split of
  the two clouds says the score is predictable from z.

  Args:
    z: float (N, D) latents, D >= 2.
    score: finite float (N,) score, higher = better.
    k: latents per side, 1 <= k and 2k <= N (ties broken by index).
    seed: PCA's random_state (its solver may be randomised).

  Returns:
    dict with "embedding" float64 (2k, 2), "index" int64 (2k,) rows of z (the k
    best in decreasing score, then the k worst in increasing score), "is_best"
    bool (2k,), "explained_variance_ratio" float64 (2,).

  Raises:
    ValueError: bad shapes, k out of range, or non-finite values.
  """
  z, score = np.asarray(z, np.float64), np.asarray(score, np.float64)
  if z.ndim != 2 or z.shape[1] < 2 or score.shape != (z.shape[0],):
    raise ValueError(f"embed_extremes: expected z (N, D >= 2) and score (N,), got {z.shape} and {score.shape}")
  if not isinstance(k, (int, np.integer)) or not 1 <= k <= z.shape[0] // 2:
    raise ValueError(f"embed_extremes: k must be in 1..{z.shape[0] // 2} (2k <= N = {z.shape[0]}), got {k}")
  if not (np.all(np.isfinite(z)) and np.all(np.isfinite(score))):
    raise ValueError("embed_extremes: z and score must be finite")
  order = np.argsort(-score, kind="stable")
  index = np.concatenate([order[:k], order[::-1][:k]]).astype(np.int64)   # best desc, worst asc
  pca = PCA(n_components=2, random_state=seed)
  embedding = pca.fit_transform(z[index])
  return {"embedding": embedding, "index": index, "is_best": np.arange(2 * k) < k,
          "explained_variance_ratio": np.asarray(pca.explained_variance_ratio_, np.float64)}


# ============================================================================ one-command report


def _cross_validated_decisions(estimator, z: np.ndarray, y: np.ndarray, strategy: str, n_folds: int,
                               seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Out-of-fold scores and accept decisions with the folds and threshold protocol of `cross_validate_latent`.

  Returns (scores float64 (N,), accepted bool (N,)): each latent is scored by a model
  fitted on the other folds, and accepted when its score >= the threshold chosen by
  `strategy` on inner out-of-fold scores of those folds.
  """
  scores = np.empty(y.shape[0], np.float64)
  accepted = np.zeros(y.shape[0], bool)
  for train, test in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(z, y):
    threshold = select_threshold(y[train], _out_of_fold_scores(estimator, z[train], y[train], n_folds, seed),
                                 strategy)
    scores[test] = _model_scores(clone(estimator).fit(z[train], y[train]), z[test])
    accepted[test] = scores[test] >= threshold
  return scores, accepted


def write_latent_report(records: Mapping[str, Any], out_dir: str | os.PathLike, *,
                        models: Mapping[str, Any] | None = None, targets: Sequence[str] = ("valid",),
                        strategy: str | Sequence[str] = "youden", n_folds: int = 3, seed: int = 0,
                        extremes_k: int = 100, log: Any = None) -> dict[str, Any]:
  """The pre-filter study in one call: CV table, exploratory views, and curves of each group's best model.

  Writes into `out_dir` (created; files written atomically):

  * `table.md`: `results_table` of `cross_validate_latent` per group (stratified
    `n_folds`-fold CV; thresholds chosen on inner out-of-fold scores, precision on the
    held-out fold);
  * `rows.json`: those rows (NaN as null);
  * `correlations_all.png` and `correlations_<group>.png`: Pearson r of each score
    with each latent coordinate (`latent_score_correlations`);
  * `extremes_<score>.png`: 2-D PCA of the `extremes_k` best and worst latents per
    score, all groups pooled (`embed_extremes`);
  * `roc_pr_<group>.png` and `confusion_<group>.png` for the model with the best mean
    ROC AUC in the group, on the first target that is not "valid_by_scores": out-of-fold
    scores (same folds) and the confusion of out-of-fold accept decisions, each
    fold's threshold chosen by `strategy` on its training folds only.

  Args:
    records: a latent dataset (`load_latent_dataset`).
    out_dir: output folder.
    models: name -> unfitted estimator (default `select_models()`).
    targets: CV targets (see `TARGETS`).
    strategy: threshold strategy (`STRATEGIES`) or several (one table each, from
      the same fits); the curves and confusion matrices use the first.
    n_folds: CV folds.
    seed: fold shuffling and model seeds.
    extremes_k: latents per side of the extremes views (capped at N // 2).
    log: optional callable(str) for progress lines.

  Returns:
    {"rows": CV rows, "best": {group: {"model", "roc_auc", "confusion", "tpr", "fpr",
    "precision"}}, "files": [paths written]}.

  Raises:
    ValueError / jaxcxr.data.DataError: bad records, unknown targets, strategy or models.
  """
  log = log or (lambda message: None)
  records = validate_latent_records(records, latent_dim=np.asarray(records["z"]).shape[-1])
  strategies = _check_strategies(strategy)
  unknown = [t for t in targets if t not in TARGETS]
  if unknown or not targets:
    raise ValueError(f"unknown target(s) {unknown}; expected some of {', '.join(TARGETS)}")
  models = dict(models) if models is not None else select_models(seed=seed)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  z, groups, y = records["z"], records["group"], latent_targets(records)
  files: list[str] = []

  log(f"cross-validating {len(models)} model(s) x {len(set(groups.tolist()))} group(s), targets {list(targets)}")
  rows = cross_validate_latent(z, y, groups, models, n_folds=n_folds, seed=seed, targets=targets,
                               strategy=strategies)
  files.append(str(write_bytes_atomic(out / "table.md", results_table(rows).encode())))
  files.append(str(io_lib.save_json(out / "rows.json", io_lib.to_json_safe(rows))))

  log("exploratory views: correlations and extremes")
  present = [g for g in GROUPS if g in set(groups.tolist())]
  score_matrix = np.stack([records["scores"][k] for k in SCORE_NAMES])          # (5, N)
  finite = np.all(np.isfinite(score_matrix), axis=0)
  for name, member in [("all", np.ones(z.shape[0], bool))] + [(g, groups == g) for g in present]:
    keep = member & finite
    if keep.sum() < 2:
      continue
    r = latent_score_correlations(z[keep], {k: records["scores"][k][keep] for k in SCORE_NAMES})
    files.append(str(save_correlation_heatmap(r, SCORE_NAMES, out / f"correlations_{name}.png",
                                              title=f"Pearson r(score, z_d), {name} (n={int(keep.sum())})")))
  k = min(extremes_k, int(finite.sum()) // 2)
  if k >= 1:
    for score in SCORE_NAMES:
      view = embed_extremes(z[finite], records["scores"][score][finite], k, seed=seed)
      files.append(str(save_extremes_scatter(view, out / f"extremes_{score}.png",
                                             title=f"{score}: best vs worst {k} latents")))

  best: dict[str, Any] = {}
  primary = next((t for t in targets if t != "valid_by_scores"), None)
  if primary is not None:
    labels = _target_label(y, primary, z.shape[0])
    for group in present:
      scored = [r for r in rows if r["target"] == primary and r["group"] == group and not r["note"]
                and r["strategy"] == strategies[0]]
      if not scored:
        continue
      top = max(scored, key=lambda r: r["roc_auc"])
      member = groups == group
      log(f"{group}: best model {top['model']} (ROC AUC {top['roc_auc']:.3f}); out-of-fold curves")
      oof, accepted = _cross_validated_decisions(models[top["model"]], z[member], labels[member], strategies[0],
                                                 n_folds, seed)
      confusion = metrics_lib.compute_confusion(accepted.astype(np.int64), labels[member])
      report = metrics_lib.compute_binary_report(accepted.astype(np.int64), labels[member])
      files.append(str(save_roc_pr_curves({top["model"]: (labels[member], oof)}, out / f"roc_pr_{group}.png",
                                          title=f"{group}, target {primary}, out-of-fold")))
      files.append(str(save_confusion_matrix(confusion, out / f"confusion_{group}.png",
                                             title=f"{group}: {top['model']} at {strategies[0]}, out-of-fold")))
      best[group] = {"model": top["model"], "target": primary, "roc_auc": top["roc_auc"],
                     "confusion": confusion.tolist(), "tpr": report["tpr"], "fpr": report["fpr"],
                     "precision": report["precision"], "base_rate": float(labels[member].mean())}
  return {"rows": rows, "best": best, "files": files}
