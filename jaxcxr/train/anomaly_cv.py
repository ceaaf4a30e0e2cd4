"""Repeated patient-level cross-validation of a trained anomaly method (f-AnoGAN, HealthyGAN).

One test split of about 150 images gives ROC AUC intervals about +-0.09 wide, and one
split's luck can move a figure by as much (HealthyGAN once scored 0.78 on one split and
0.60 on new patients). This module refits the method's trainable part on k-1 folds of the
development patients and scores the held-out fold, for several seeded partitions:

    report = cross_validate_anomaly("fanogan", dev, "runs/cv_fanogan", folds=5, repeats=2,
                                    steps=500, gan_dir="checkpoints/gan_256_normal", unet=unet)

Every fold is saved as it finishes (its model and its held-out scores), so a killed run
resumes at the fold it was in. The normal GAN behind f-AnoGAN stays fixed: it was trained
on the standard split's train normals, which are part of the development patients, so a
held-out normal may be one the GAN saw (the report says so).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import time
from typing import Any

import numpy as np

from jaxcxr import anomaly, baselines, io
from jaxcxr import config as config_lib
from jaxcxr import data as data_lib
from jaxcxr.models.healthygan import load_translator
from jaxcxr.models.unet import predict_masks
from jaxcxr.train.fanogan import train_fanogan
from jaxcxr.train.healthygan import train_healthygan

METHODS = ("fanogan", "healthygan")


def _fold_config(method: str, base, steps: int | None):
  if base is None:
    base = config_lib.fanogan_64_cpu() if method == "fanogan" else config_lib.healthygan_64_cpu()
  if steps is None:
    return base
  if steps <= 0 or steps % base.steps_per_call:
    raise ValueError(f"cross_validate_anomaly: steps must be a positive multiple of {base.steps_per_call}, "
                     f"got {steps}")
  return dataclasses.replace(base, steps=steps, sample_every=steps, checkpoint_every=min(base.checkpoint_every, steps))


def _fit_and_score(method, train_set, held_out, fold_dir, config, gan_dir, seed, batch_size):
  """Trains the fold's model (resuming a killed run) and returns its (score, residual, components) on `held_out`."""
  if method == "fanogan":
    if not (fold_dir / "encoder").exists():
      train_fanogan(train_set, gan_dir, config, fold_dir, resume=True, seed=seed, progress=False)
    scorer = anomaly.FanoganScorer(*anomaly.load_fanogan(fold_dir / "encoder", gan_dir), batch_size=batch_size)
  else:
    if not (fold_dir / "translator").exists():
      train_healthygan(train_set, config, fold_dir, resume=True, seed=seed, progress=False)
    scorer = anomaly.HealthyganScorer(load_translator(fold_dir / "translator"), batch_size=batch_size)
  return scorer(held_out, progress=False)


def _summary(values: list[float | None]) -> dict[str, Any]:
  v = np.asarray([x for x in values if x is not None], np.float64)
  if not len(v):
    return {"mean": None, "sd": None, "min": None, "max": None, "n_folds": 0}
  return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
          "min": float(v.min()), "max": float(v.max()), "n_folds": int(len(v))}


def cross_validate_anomaly(method: str, dataset: data_lib.CXRDataset, out_dir: str | os.PathLike, *,
                           folds: int = 5, repeats: int = 2, config=None, steps: int | None = None,
                           gan_dir: str | os.PathLike | None = None, unet=None, seed: int = 0,
                           batch_size: int = 64, progress: bool = True) -> dict[str, Any]:
  """Repeated, stratified, patient-level k-fold cross-validation of an anomaly method.

  Args:
    method: "fanogan" (the encoder is retrained on the training folds' normals against the
      fixed normal GAN in `gan_dir`) or "healthygan" (translator and critic retrained on the
      training folds' images, normal labelled, the rest unannotated).
    dataset: development images with labels 0 (normal) and 1 (abnormal); never the test
      patients. Folds are stratified by label (and archive, as `standard_split` is).
    out_dir: folder for each fold's model, its held-out scores and the report (resumable).
    folds, repeats: k and the number of seeded partitions (repeat r uses seed `seed + r`).
    config: the training preset (default `config.fanogan_64_cpu()` or
      `config.healthygan_64_cpu()`, as the shipped models).
    steps: training steps per fold (default: the preset's).
    gan_dir: the normal GAN (f-AnoGAN only).
    unet: a lung U-Net: the lung-masked score (`anomaly.lung_residual_scores`) is reported
      next to the method's own.
    seed: first partition seed and each fold's training seed.
    batch_size: scoring batch.
    progress: one line per fold on stderr.

  Returns (and writes as `out_dir/cv_report.json`):
    {"method", "folds", "repeats", "steps", "n", "n_abnormal", "per_fold" [{"repeat", "fold",
    "n", "n_abnormal", "seconds", "roc_auc" {score name: AUC}}], "summary" {score name:
    {"mean", "sd", "min", "max", "n_folds"}} over all folds, "pooled" {score name: [per repeat
    {"roc_auc", "roc_auc_ci95"} of the held-out scores pooled over that repeat's folds]},
    "baselines_summary" (the trivial baselines' fold AUCs, as "summary"; each fold's are its
    "baselines_roc_auc"), "baselines" [per repeat: `jaxcxr.baselines.compare_scores` of the
    pooled held-out "lungs" (with a U-Net) or "score" against the baselines' pooled held-out
    scores, with DeLong's paired test and per view]}.
    Score names: "score", "lungs" (with a U-Net) and the method's components. The trivial
    baselines (`jaxcxr.baselines.fit_baselines`: image statistics, with the lungs when a U-Net
    is given, and pixel logistic regression) are fitted on each fold's training folds.

  Raises:
    ValueError: an unknown method, a missing `gan_dir` for f-AnoGAN, or bad fold settings.
    jaxcxr.data.DataError: labels other than 0/1, or too few patients for the folds.
  """
  if method not in METHODS:
    raise ValueError(f"cross_validate_anomaly: method must be one of {METHODS}, got {method!r}")
  if method == "fanogan" and gan_dir is None:
    raise ValueError("cross_validate_anomaly: f-AnoGAN needs gan_dir (the normal GAN its encoder inverts)")
  if repeats < 1:
    raise ValueError(f"cross_validate_anomaly: repeats must be >= 1, got {repeats}")
  y = np.asarray(dataset.label)
  if not (np.isin(y, [0, 1]).all() and len(np.unique(y)) == 2):
    raise data_lib.DataError(f"{dataset.source}: cross-validation needs normal (0) and abnormal (1) labels")
  config = _fold_config(method, config, steps)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  strata = y.astype(np.int64)
  if "archive" in dataset.extra:
    strata = strata + 3 * np.asarray(dataset.extra["archive"], np.int64)
  masks = None
  if unet is not None:
    masks = predict_masks(unet, dataset.images)
  per_fold, pooled_scores, comparisons = [], {}, []
  for r in range(repeats):
    fold_of = data_lib.patient_folds(dataset.patient_id, folds, stratify=strata, seed=seed + r)
    repeat_scores: dict[str, np.ndarray] = {}
    repeat_baselines: dict[str, np.ndarray] = {}
    for f in range(folds):
      baseline_aucs: dict[str, float | None] = {}
      fold_dir = out / f"repeat{r}_fold{f}"
      scores_file = fold_dir / "held_out_scores.npz"
      held = np.flatnonzero(fold_of == f)
      if scores_file.exists():
        with np.load(scores_file) as saved:
          fold_scores = {k: saved[k] for k in saved.files if k != "index"}
          if not np.array_equal(saved["index"], held):
            raise ValueError(f"{scores_file}: held-out images differ from this partition; use a new out_dir")
        seconds = float(fold_scores.pop("seconds"))
      else:
        start = time.perf_counter()
        score, residual, components = _fit_and_score(method, dataset.subset(fold_of != f), dataset.subset(held),
                                                     fold_dir, config, gan_dir, seed, batch_size)
        fold_scores = {"score": score, **components}
        if masks is not None:
          fold_scores["lungs"] = anomaly.lung_residual_scores(residual, masks[held])
        seconds = time.perf_counter() - start
        io.save_npz(scores_file, {**fold_scores, "index": held, "seconds": np.float64(seconds)})
      # The trivial baselines, fitted on the training folds (cheap and deterministic: refitted on resume).
      fitted = baselines.fit_baselines(dataset.images[fold_of != f], y[fold_of != f],
                                       masks=None if masks is None else masks[fold_of != f],
                                       patients=dataset.patient_id[fold_of != f])
      for name, v in fitted.scores(dataset.images[held], None if masks is None else masks[held]).items():
        repeat_baselines.setdefault(name, np.zeros(len(y), np.float64))[held] = v
        baseline_aucs[name] = anomaly.auc_with_interval(v, y[held])["roc_auc"]
      aucs = {name: anomaly.auc_with_interval(v, y[held])["roc_auc"] for name, v in fold_scores.items()}
      per_fold.append({"repeat": r, "fold": f, "n": int(len(held)), "n_abnormal": int(y[held].sum()),
                       "seconds": seconds, "roc_auc": aucs, "baselines_roc_auc": dict(baseline_aucs)})
      for name, v in fold_scores.items():
        repeat_scores.setdefault(name, np.zeros(len(y), np.float64))[held] = v
      if progress:
        print(f"{method} CV repeat {r} fold {f}: " + ", ".join(f"{k} {v:.3f}" for k, v in aucs.items()
                                                               if v is not None) + f" ({seconds:.0f} s)",
              file=sys.stderr, flush=True)
    for name, v in repeat_scores.items():
      pooled_scores.setdefault(name, []).append(anomaly.auc_with_interval(v, y))
    main = "lungs" if "lungs" in repeat_scores else "score"
    comparisons.append(baselines.compare_scores(repeat_scores[main], y, repeat_baselines, views=data_lib.views(dataset),
                                                method=f"{method} ({main})"))
  names = per_fold[0]["roc_auc"].keys()
  report = {"method": method, "folds": folds, "repeats": repeats, "steps": config.steps, "seed": seed,
            "n": int(len(y)), "n_abnormal": int(y.sum()), "data": dataset.source,
            "gan_dir": None if gan_dir is None else str(gan_dir),
            "note": ("the normal GAN is fixed; it was trained on the standard split's train normals, some of "
                     "which are held out here") if method == "fanogan" else None,
            "per_fold": per_fold,
            "summary": {name: _summary([p["roc_auc"][name] for p in per_fold]) for name in names},
            "pooled": pooled_scores,
            "baselines_summary": {name: _summary([p["baselines_roc_auc"][name] for p in per_fold])
                                  for name in per_fold[0]["baselines_roc_auc"]},
            "baselines": comparisons}
  io.save_json(out / "cv_report.json", io.to_json_safe(report))
  return report
