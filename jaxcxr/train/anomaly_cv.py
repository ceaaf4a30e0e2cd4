"""Repeated patient-level cross-validation of a trained anomaly method (f-AnoGAN, HealthyGAN, PatchCore).

One test split of about 150 images gives ROC AUC intervals about +-0.09 wide, and one
split's luck can move a figure by as much (HealthyGAN once scored 0.78 on one split and
0.60 on new patients). This module refits the method's trainable part on k-1 folds of the
development patients and scores the held-out fold, for several seeded partitions:

    report = cross_validate_anomaly("fanogan", dev, "runs/cv_fanogan", folds=5, repeats=2,
                                    steps=500, gan_dir="checkpoints/gan_256_normal", unet=unet)
    report = cross_validate_anomaly("patchcore", dev, "runs/cv_patchcore", unet=unet,
                                    encoder_dir="checkpoints/encoder_cxr/encoder")

Every fold is saved as it finishes (its model and its held-out scores), so a killed run
resumes at the fold it was in. What the method does not train stays fixed: the normal GAN
behind f-AnoGAN was trained on the standard split's train normals, and the CXR encoder
behind PatchCore was pretrained without labels on every development image, so a held-out
image may be one they saw (the report says so). PatchCore's trainable part is its memory
bank, refitted per fold on the training folds' normal images with the shipped bank's recipe
(`PATCHCORE_RECIPE`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxcxr import anomaly, baselines, checkpoints, io
from jaxcxr import config as config_lib
from jaxcxr import data as data_lib
from jaxcxr.models.generator import load_generator
from jaxcxr.models.healthygan import load_translator
from jaxcxr.models.unet import predict_masks
from jaxcxr.train.fanogan import train_fanogan
from jaxcxr.train.healthygan import train_healthygan

__all__ = ["METHODS", "PATCHCORE_RECIPE", "cross_validate_anomaly"]

METHODS = ("fanogan", "healthygan", "patchcore")

# How each fold's PatchCore bank is built (`anomaly.fit_encoder_patchcore`'s keywords): the shipped bank's recipe,
# as recorded in checkpoints/patchcore_encoder_cxr/patchcore.json and chosen on validation patients (its card). Its
# lung-only patches come with a U-Net (`unet`), its encoder is `encoder_dir`.
PATCHCORE_RECIPE = {"stages": ("stage1",), "coreset_fraction": 0.01, "normalise_exposure": False}


def _fanogan_preset(gan_dir) -> Any:
  """The f-AnoGAN CPU preset whose encoder reads the GAN's searched image: its base image's side (64 or 128)."""
  side = load_generator(pathlib.Path(gan_dir) / "generator").config.base_resolution
  presets = {64: config_lib.fanogan_64_cpu, 128: config_lib.fanogan_128_cpu}
  if side not in presets:
    raise ValueError(f"cross_validate_anomaly: no f-AnoGAN preset for a {side}x{side} base image ({gan_dir}); pass "
                     f"config")
  return presets[side]()


def _fold_config(method: str, base, steps: int | None):
  """The fold's training preset (f-AnoGAN, HealthyGAN) or PatchCore bank recipe, with `steps` applied."""
  if method == "patchcore":
    if steps is not None:
      raise ValueError("cross_validate_anomaly: PatchCore trains no network (its memory bank is built in one pass); "
                       "steps sets f-AnoGAN's and HealthyGAN's training")
    if base is not None and not isinstance(base, Mapping):
      raise ValueError(f"cross_validate_anomaly: PatchCore's config is a dict of PATCHCORE_RECIPE entries, got "
                       f"{type(base).__name__}")
    unknown = set(base or {}) - set(PATCHCORE_RECIPE)
    if unknown:
      raise ValueError(f"cross_validate_anomaly: PatchCore's config overrides {sorted(PATCHCORE_RECIPE)}, got "
                       f"{sorted(unknown)}")
    return {**PATCHCORE_RECIPE, **(base or {})}
  if base is None:
    base = config_lib.fanogan_64_cpu() if method == "fanogan" else config_lib.healthygan_64_cpu()
  if steps is None:
    return base
  if steps <= 0 or steps % base.steps_per_call:
    raise ValueError(f"cross_validate_anomaly: steps must be a positive multiple of {base.steps_per_call}, "
                     f"got {steps}")
  return dataclasses.replace(base, steps=steps, sample_every=steps, checkpoint_every=min(base.checkpoint_every, steps))


def _fit_and_score(method, train_set, held_out, fold_dir, config, gan_dir, seed, batch_size, masks):
  """Trains the fold's model (resuming a killed run) and returns its held-out scores {name: (N,)}.

  `masks` (the held-out images' lung label maps, or None) add the lung-masked residual score "lungs".
  """
  if method == "fanogan":
    if not (fold_dir / "encoder").exists():
      train_fanogan(train_set, gan_dir, config, fold_dir, resume=True, seed=seed, progress=False)
    scorer = anomaly.FanoganScorer.from_checkpoint(fold_dir / "encoder", gan_dir, batch_size=batch_size)
  else:
    if not (fold_dir / "translator").exists():
      train_healthygan(train_set, config, fold_dir, resume=True, seed=seed, progress=False)
    scorer = anomaly.HealthyganScorer(load_translator(fold_dir / "translator"), batch_size=batch_size)
  score, residual, components = scorer(held_out, progress=False)
  scores = {"score": score, **components}
  if masks is not None:
    scores["lungs"] = anomaly.lung_residual_scores(residual, masks)
  return scores


def _patchcore_fold(train_set, held_out, fold_dir, recipe, encoder_dir, seed, batch_size, train_masks, held_masks):
  """Fits (or reloads) the fold's bank on `train_set`'s normals and returns the held-out scores {"score": (N,)}.

  With lung masks the bank holds the normals' lung patches only and an image scores its largest lung-patch
  distance, as the shipped bank; without, every patch.
  """
  bank_dir = fold_dir / "patchcore"
  if (bank_dir / "patchcore.json").exists():       # written last (`save_patchcore`): the bank is complete
    model = anomaly.load_patchcore(bank_dir)
  else:
    normal = np.asarray(train_set.label) == 0
    model = anomaly.fit_encoder_patchcore(
        bank_dir, encoder_dir, train_set.images[normal], masks=None if train_masks is None else train_masks[normal],
        seed=seed, metadata={"cross_validation": "the training folds' normal images"}, **recipe)
  score, _ = model.score(held_out.images, held_masks, batch_size=batch_size)
  return {"score": score}


def _check_patchcore_bank(fold_dir: pathlib.Path, recipe: dict, encoder_id: str, masked: bool, seed: int):
  """Refuses a fold folder whose saved bank was built another way (another encoder, recipe, seed or masking).

  Raises:
    ValueError: naming what differs.
  """
  info_file = fold_dir / "patchcore" / "patchcore.json"
  if not info_file.exists():
    return
  info = json.loads(info_file.read_text())
  extractor, settings = info["metadata"]["extractor"], info["settings"]
  saved = {"encoder model_id": extractor["model_id"], "stages": tuple(extractor["stages"]),
           "normalise_exposure": extractor["exposure"] is not None, "coreset_fraction": settings["coreset_fraction"],
           "lung_mask": settings["masked"], "seed": settings["seed"]}
  wanted = {"encoder model_id": encoder_id, "stages": tuple(recipe["stages"]),
            "normalise_exposure": bool(recipe["normalise_exposure"]),
            "coreset_fraction": float(recipe["coreset_fraction"]), "lung_mask": masked, "seed": seed}
  differ = [f"{k} {saved[k]!r} (now {wanted[k]!r})" for k in wanted if saved[k] != wanted[k]]
  if differ:
    raise ValueError(f"{info_file}: the saved bank was built with {', '.join(differ)}; use a new out_dir")


def _summary(values: list[float | None]) -> dict[str, Any]:
  v = np.asarray([x for x in values if x is not None], np.float64)
  if not len(v):
    return {"mean": None, "sd": None, "min": None, "max": None, "n_folds": 0}
  return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
          "min": float(v.min()), "max": float(v.max()), "n_folds": int(len(v))}


def cross_validate_anomaly(method: str, dataset: data_lib.CXRDataset, out_dir: str | os.PathLike, *,
                           folds: int = 5, repeats: int = 2, config=None, steps: int | None = None,
                           gan_dir: str | os.PathLike | None = None, encoder_dir: str | os.PathLike | None = None,
                           unet=None, seed: int = 0, batch_size: int = 64, progress: bool = True) -> dict[str, Any]:
  """Repeated, stratified, patient-level k-fold cross-validation of an anomaly method.

  Args:
    method: "fanogan" (the encoder is retrained on the training folds' normals against the
      fixed normal GAN in `gan_dir`), "healthygan" (translator and critic retrained on the
      training folds' images, normal labelled, the rest unannotated) or "patchcore" (the memory
      bank refitted on the training folds' normal images, `anomaly.fit_encoder_patchcore` on the
      fixed CXR encoder in `encoder_dir`).
    dataset: development images with labels 0 (normal) and 1 (abnormal); never the test
      patients. Folds are stratified by label (and archive, as `standard_split` is).
    out_dir: folder for each fold's model, its held-out scores and the report (resumable).
    folds, repeats: k and the number of seeded partitions (repeat r uses seed `seed + r`).
    config: the training preset (default: `config.fanogan_64_cpu()` or `fanogan_128_cpu()`, the
      one at the side of `gan_dir`'s base image, or `config.healthygan_64_cpu()`, as the shipped
      models); for PatchCore, a dict replacing
      entries of `PATCHCORE_RECIPE` (default: the shipped bank's recipe).
    steps: training steps per fold (default: the preset's); not for PatchCore.
    gan_dir: the normal GAN (f-AnoGAN only).
    encoder_dir: the CXR encoder checkpoint (PatchCore only; the shipped bank's is
      `checkpoints/encoder_cxr/encoder`).
    unet: a lung U-Net: the lung-masked score (`anomaly.lung_residual_scores`) is reported
      next to the method's own. PatchCore instead builds its banks from lung patches only and
      scores each image by its largest lung-patch distance, as the shipped bank (its "score");
      without a U-Net, from every patch.
    seed: first partition seed and each fold's training (PatchCore: coreset) seed.
    batch_size: scoring batch.
    progress: one line per fold on stderr.

  Returns (and writes as `out_dir/cv_report.json`):
    {"method", "folds", "repeats", "steps" (None for PatchCore), "n", "n_abnormal", "per_fold"
    [{"repeat", "fold", "n", "n_abnormal", "seconds", "roc_auc" {score name: AUC}}], "summary"
    {score name: {"mean", "sd", "min", "max", "n_folds"}} over all folds, "pooled" {score name:
    [per repeat {"roc_auc", "roc_auc_ci95"} of the held-out scores pooled over that repeat's
    folds]}, "baselines_summary" (the trivial baselines' fold AUCs, as "summary"; each fold's
    are its "baselines_roc_auc"), "baselines" [per repeat: `jaxcxr.baselines.compare_scores` of
    the pooled held-out "lungs" (with a U-Net) or "score" against the baselines' pooled held-out
    scores, with DeLong's paired test and per view], "patchcore" (PatchCore only: the recipe,
    the encoder and its model id, "lung_mask")}.
    Score names: "score", "lungs" (with a U-Net, not PatchCore) and the method's components. The
    trivial baselines (`jaxcxr.baselines.fit_baselines`: image statistics, with the lungs when a
    U-Net is given, and pixel logistic regression) are fitted on each fold's training folds.

  Raises:
    ValueError: an unknown method, a missing `gan_dir` for f-AnoGAN or `encoder_dir` for
      PatchCore (or either given to another method), `steps` or an unknown recipe entry for
      PatchCore, bad fold settings, or an `out_dir` whose saved folds are of another partition
      (or PatchCore bank recipe).
    jaxcxr.data.DataError: labels other than 0/1, or too few patients for the folds.
    jaxcxr.checkpoints.CheckpointError: `encoder_dir` is not a model checkpoint.
  """
  if method not in METHODS:
    raise ValueError(f"cross_validate_anomaly: method must be one of {METHODS}, got {method!r}")
  if method == "fanogan" and gan_dir is None:
    raise ValueError("cross_validate_anomaly: f-AnoGAN needs gan_dir (the normal GAN its encoder inverts)")
  if method == "patchcore" and encoder_dir is None:
    raise ValueError("cross_validate_anomaly: PatchCore needs encoder_dir (the CXR encoder whose patch features fill "
                     "the bank)")
  if gan_dir is not None and method != "fanogan":
    raise ValueError(f"cross_validate_anomaly: gan_dir is f-AnoGAN's normal GAN; {method} does not use one")
  if encoder_dir is not None and method != "patchcore":
    raise ValueError(f"cross_validate_anomaly: encoder_dir is PatchCore's CXR encoder; {method} does not use one")
  if repeats < 1:
    raise ValueError(f"cross_validate_anomaly: repeats must be >= 1, got {repeats}")
  y = np.asarray(dataset.label)
  if not (np.isin(y, [0, 1]).all() and len(np.unique(y)) == 2):
    raise data_lib.DataError(f"{dataset.source}: cross-validation needs normal (0) and abnormal (1) labels")
  if method == "fanogan" and config is None:
    config = _fanogan_preset(gan_dir)
  config = _fold_config(method, config, steps)
  encoder_id = checkpoints.model_id(encoder_dir) if method == "patchcore" else None
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
      if method == "patchcore":
        _check_patchcore_bank(fold_dir, config, encoder_id, masks is not None, seed)
      if scores_file.exists():
        with np.load(scores_file) as saved:
          fold_scores = {k: saved[k] for k in saved.files if k != "index"}
          if not np.array_equal(saved["index"], held):
            raise ValueError(f"{scores_file}: held-out images differ from this partition; use a new out_dir")
        seconds = float(fold_scores.pop("seconds"))
      else:
        start = time.perf_counter()
        train_set, held_set = dataset.subset(fold_of != f), dataset.subset(held)
        if method == "patchcore":
          fold_scores = _patchcore_fold(train_set, held_set, fold_dir, config, encoder_dir, seed, batch_size,
                                        None if masks is None else masks[fold_of != f],
                                        None if masks is None else masks[held])
        else:
          fold_scores = _fit_and_score(method, train_set, held_set, fold_dir, config, gan_dir, seed, batch_size,
                                       None if masks is None else masks[held])
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
    label = "lung patches" if method == "patchcore" and masks is not None else main
    comparisons.append(baselines.compare_scores(repeat_scores[main], y, repeat_baselines, views=data_lib.views(dataset),
                                                method=f"{method} ({label})"))
  names = per_fold[0]["roc_auc"].keys()
  notes = {"fanogan": ("the normal GAN is fixed; it was trained on the standard split's train normals, some of "
                       "which are held out here"),
           "patchcore": ("the CXR encoder is fixed; it was pretrained without labels on every development image, "
                         "the held-out ones included; only the memory bank is refitted per fold")}
  report = {"method": method, "folds": folds, "repeats": repeats,
            "steps": None if method == "patchcore" else config.steps, "seed": seed,
            "n": int(len(y)), "n_abnormal": int(y.sum()), "data": dataset.source,
            "gan_dir": None if gan_dir is None else str(gan_dir),
            "note": notes.get(method),
            "per_fold": per_fold,
            "summary": {name: _summary([p["roc_auc"][name] for p in per_fold]) for name in names},
            "pooled": pooled_scores,
            "baselines_summary": {name: _summary([p["baselines_roc_auc"][name] for p in per_fold])
                                  for name in per_fold[0]["baselines_roc_auc"]},
            "baselines": comparisons}
  if method == "patchcore":
    report["patchcore"] = {**config, "stages": list(config["stages"]), "encoder_dir": str(encoder_dir),
                           "encoder_model_id": encoder_id, "lung_mask": masks is not None}
  io.save_json(out / "cv_report.json", io.to_json_safe(report))
  return report
