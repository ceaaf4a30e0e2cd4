"""What a CXR encoder knows, measured: linear probes on its features beside the trivial baselines.

`evaluate_encoder` fits, for each labelled task of `jaxcxr.train.cxr_encoder.development_data`
(pneumonia against normal; female against male), a linear probe (`linear_probe`: standardised L2
logistic regression, its strength chosen by cross-validation grouped by patient) on the frozen
features of the training patients and scores the validation patients, for two feature sets:

* "embedding": the global embedding (`CXREncoder.__call__`, 256 values with the defaults);
* "pooled_stages": the mean and the maximum over positions of the stage 2-4 patch features
  (`pooled_stage_features`, 896 values): local evidence a global average dilutes.

Each probe's validation AUC stands beside the trivial baselines fitted on the same training
patients (`jaxcxr.baselines`: image statistics, with the lungs of a U-Net when given, and pixel
logistic regression), with DeLong's paired test against the strongest. Validation patients only:
the probes' settings and the encoder's training length are chosen on them, so the figures are
for choosing, and a classifier built on the encoder reports its own test figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxcxr import baselines, exposure
from jaxcxr.config.classifier import POOLED_STAGES
from jaxcxr.data import DataError
from jaxcxr.models.cxr_encoder import CXREncoder, image_features
from jaxcxr.models.encoder_classifier import EncoderClassifier, pooled_features
from jaxcxr.train.cxr_encoder import ProbeTask, linear_probe

__all__ = ["FEATURE_SETS", "POOLED_STAGES", "evaluate_encoder", "pooled_stage_features"]

FEATURE_SETS: tuple[str, ...] = ("embedding", "pooled_stages")


def pooled_stage_features(encoder: CXREncoder, images: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
  """Mean and maximum over positions of each stage in `POOLED_STAGES` (those the encoder has): float32 (N, F).

  The inputs of an `EncoderClassifier`'s linear head (`EncoderClassifier.around(encoder)`).

  Args:
    encoder: a `CXREncoder`.
    images: uint8 (N, H, W) radiographs (resized to the encoder's resolution).
    batch_size: images per jitted call.

  Returns:
    float32 (N, 2 * sum of the pooled stages' channels): per stage, its channel means then its maxima.
  """
  return pooled_features(EncoderClassifier.around(encoder), images, batch_size=batch_size)


def _features(encoder: CXREncoder, images: np.ndarray, kind: str, batch_size: int) -> np.ndarray:
  if kind == "embedding":
    return image_features(encoder, images, ("embedding",), batch_size=batch_size)["embedding"]
  return pooled_stage_features(encoder, images, batch_size=batch_size)


def evaluate_encoder(encoder: CXREncoder, tasks: Sequence[ProbeTask], *,
                     lung_masks: Callable[[np.ndarray], np.ndarray] | None = None,
                     feature_sets: Sequence[str] = FEATURE_SETS, batch_size: int = 64, exposure_region: str = "none",
                     progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
  """Linear probes of the encoder's features for each task, beside the trivial baselines on the same patients.

  Args:
    encoder: a `CXREncoder` (e.g. `load_cxr_encoder("checkpoints/encoder_cxr")`).
    tasks: labelled tasks (`development_data(...).probes`).
    lung_masks: images -> lung label maps (e.g. `jaxcxr.pretrained.lung_masker()`), for the
      baselines' lung statistics; None for whole-image and centre statistics only.
    feature_sets: some of `FEATURE_SETS`.
    batch_size: images per jitted call.
    exposure_region: "none", or the region ("body", "lungs", "image") in which every image's histogram is
      matched to the reference of the task's training images (`jaxcxr.exposure`) before the features and
      the baselines see it ("lungs" needs `lung_masks`). The probes and baselines are fitted on the
      normalised training images, so this measures a judge trained with the normalisation.
    progress: called with a line per task.

  Returns:
    {task name: {"n_train", "n_val", "val_positives", "probes" {feature set: {"roc_auc", "ci95",
    "C", "dimensions", "vs_baselines" (`baselines.compare_scores` report of the probe against the
    baselines)}}, "baselines" (each baseline's validation AUC and interval), "strongest_baseline",
    "fitted" (what the baselines chose)}}.

  Raises:
    ValueError: an unknown feature set.
    jaxcxr.data.DataError: a task with fewer than 2 images of a class in a part; an unknown exposure
      region, or "lungs" without `lung_masks`.
  """
  unknown = [f for f in feature_sets if f not in FEATURE_SETS]
  if unknown or not feature_sets:
    raise ValueError(f"evaluate_encoder: unknown feature set(s) {unknown or list(feature_sets)}; expected some of "
                     f"{FEATURE_SETS}")
  if exposure_region not in ("none", *exposure.REGIONS):
    raise DataError(f"evaluate_encoder: unknown exposure region {exposure_region!r}; expected none or one of "
                    f"{', '.join(exposure.REGIONS)}")
  if exposure_region == "lungs" and lung_masks is None:
    raise DataError("evaluate_encoder: exposure normalisation inside the lungs needs lung_masks")
  out: dict[str, Any] = {}
  for task in tasks:
    progress(f"{task.name}: {len(task.train_y)} training and {len(task.val_y)} validation images")
    train_masks = val_masks = None
    if lung_masks is not None:
      train_masks, val_masks = lung_masks(task.train_images), lung_masks(task.val_images)
    if exposure_region != "none":
      region_masks = (train_masks, val_masks) if exposure_region == "lungs" else (None, None)
      reference = exposure.fit_reference(task.train_images, region_masks[0], region=exposure_region)
      task = dataclasses.replace(task, train_images=exposure.normalise(task.train_images, reference, region_masks[0]),
                                 val_images=exposure.normalise(task.val_images, reference, region_masks[1]))
      progress(f"  exposure: the {exposure_region} histograms matched to the {reference.n_images} training images'")
    fitted = baselines.fit_baselines(task.train_images, task.train_y, masks=train_masks,
                                     patients=task.train_patients)
    base_scores = fitted.scores(task.val_images, val_masks)
    entry: dict[str, Any] = {"n_train": int(len(task.train_y)), "n_val": int(len(task.val_y)),
                             "val_positives": int(np.sum(task.val_y)), "probes": {}}
    for kind in feature_sets:
      train_x = _features(encoder, task.train_images, kind, batch_size)
      val_x = _features(encoder, task.val_images, kind, batch_size)
      probe, prob = linear_probe(train_x, task.train_y, task.train_patients, val_x, task.val_y)
      comparison = baselines.compare_scores(prob, task.val_y, base_scores, descriptions=fitted.descriptions(),
                                            method=f"{kind} probe")
      entry["probes"][kind] = {**probe, "dimensions": int(train_x.shape[1]), "vs_baselines": comparison}
      progress(f"  {kind} probe: " + baselines.format_comparison(comparison))
    # The baselines' validation AUCs are the same in every probe's comparison (the same scores, images and labels).
    entry["baselines"] = comparison["baselines"]
    entry["strongest_baseline"] = comparison["strongest"]
    entry["fitted"] = fitted.describe()
    out[task.name] = entry
  return out
