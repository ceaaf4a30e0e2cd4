"""Fitting an `EncoderClassifier`: a linear probe on the frozen CXR encoder, saved as a classifier.

`fit_encoder_classifier` takes a pretrained encoder (`jaxcxr train encoder`) and the labelled NIH
images, splits them by patient exactly as `jaxcxr train classifier` does for the task (so the
test patients are the ResNet classifiers' test patients), computes the pooled stage features of
the training patients with the module itself, and fits a standardised L2 logistic regression on
them (its strength by cross-validation grouped by patient, `baselines.grouped_logreg`). The
encoder's weights do not change. The decision threshold (Youden) and the validation report come
from the validation patients; the test patients are not touched: evaluate the saved classifier
once with `jaxcxr evaluate classifier --split test`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxcxr import checkpoints
from jaxcxr import data as data_lib
from jaxcxr.config import ClassifierTrainConfig
from jaxcxr.models.classifier import predict_proba
from jaxcxr.models.cxr_encoder import load_cxr_encoder
from jaxcxr.models.encoder_classifier import EncoderClassifier, pooled_features
from jaxcxr.provenance import provenance
from jaxcxr.train.classifier import (classification_report, fit_folded_logreg, select_threshold_youden,
                                     task_split)
from jaxcxr.train.loop import data_metadata, device_name

__all__ = ["fit_encoder_classifier"]


def fit_encoder_classifier(encoder_dir: str | os.PathLike, dataset: data_lib.CXRDataset, task: str,
                           out_dir: str | os.PathLike, *,
                           pooled_stages: tuple[str, ...] | None = None,
                           batch_size: int = 64, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
  """Fits the linear probe of an `EncoderClassifier` and saves it to `out_dir/classifier`.

  Args:
    encoder_dir: a saved `CXREncoder` (e.g. `checkpoints/encoder_cxr/encoder`).
    dataset: `evaluation_sets.classifier_images(...)` of the task (as `jaxcxr train classifier` takes).
    task: "abnormal" or "sex".
    out_dir: the classifier is saved to `out_dir/classifier` (replacing one there).
    pooled_stages: the encoder stages whose pooled features the probe reads; None: those
      `jaxcxr.config.classifier.POOLED_STAGES` the encoder has (the validation probes' features).
    batch_size: images per jitted call.
    log: called with a line per phase.

  Returns:
    {"classifier" (path), "threshold", "C", "val" (report), "n_train", "n_val", "n_test", "seconds"}.

  Raises:
    jaxcxr.checkpoints.CheckpointError: an unreadable encoder.
    jaxcxr.data.DataError: a task part without both classes.
    ValueError: an unknown task, or stages the encoder does not have.
  """
  start = time.perf_counter()
  split_config = ClassifierTrainConfig(task=task)
  indices, y, n_dropped = task_split(dataset, split_config)
  model = EncoderClassifier.around(load_cxr_encoder(encoder_dir), pooled_stages)
  config = model.config
  train, val = indices["train"], indices["val"]
  log(f"{task}: pooled {', '.join(config.pooled_stages)} features ({config.features}) of {len(train)} training "
      "images")
  x = pooled_features(model, dataset.images[train], batch_size=batch_size)
  weight, bias, c = fit_folded_logreg(x, y[train], dataset.patient_id[train], f"the {task} probe")
  model.weight[...] = weight
  model.bias[...] = np.float32(bias)
  val_set = dataset.subset(val)
  val_prob = predict_proba(model, val_set.images, batch_size)
  threshold = select_threshold_youden(val_prob, y[val])
  val_report = classification_report(val_prob, y[val], threshold, data_lib.views(val_set))
  log(f"{task}: C = {c:g}; validation ROC AUC {val_report['roc_auc']:.4f} on {len(val)} images")
  seconds = time.perf_counter() - start
  metadata = {
      "task": task,
      "positive_class": "abnormal" if task == "abnormal" else "female",
      "threshold": threshold,
      "split": {"seed": split_config.split_seed, "fractions": list(split_config.split), "stratify": task,
                "by": "patient_id", **{name: idx.tolist() for name, idx in indices.items()}},
      "encoder": {"path": str(encoder_dir), "model_id": checkpoints.model_id(encoder_dir)},
      "probe": {"C": c, "features": config.features, "fit": "baselines.grouped_logreg, standardisation folded"},
      "train_seconds": seconds,
      "device": device_name(),
      "val": val_report,
      "test": None,
      **data_metadata(dataset),
      "provenance": provenance(dataset.source, {"split_seed": split_config.split_seed}),
  }
  path = checkpoints.save_model(pathlib.Path(out_dir) / "classifier", model, config, metadata=metadata,
                                overwrite=True)
  return {"classifier": str(path), "threshold": threshold, "C": c, "val": val_report, "n_train": int(len(train)),
          "n_val": int(len(val)), "n_test": int(len(indices["test"])), "n_dropped": n_dropped, "seconds": seconds,
          "config": dataclasses.asdict(config)}
