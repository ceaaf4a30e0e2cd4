"""Which labelled images a model is trained and evaluated on: a patient split's part, a model's own split, the tasks.

* `standard_subset`: "all" images, or the "train", "val" or "test" patients of
  `jaxcxr.data.standard_split`.
* `model_split`: a trained model's evaluation images. Its trainer saved its own patient split
  in the checkpoint's metadata (the classifiers as indices into their data, the U-Net as
  patient ids); when the data is the data it was trained on (same digest), that split is
  used, so that its test patients were never used for a choice. Otherwise the standard
  split. `classifier_images`: the images a classifier of a task learns from and is evaluated
  on (abnormal means pneumonia); `classifier_split` applies `model_split` to them.
* `calibration_normals`: the real normal images a post-filter is calibrated on.
* `GanImages` (`gan_images`): what a generator is compared with (`jaxcxr evaluate gan`).
* `AnomalyTask` (`anomaly_task`): normal against abnormal images for the anomaly scorers:
  the NIH pneumonia task, or NIH normals against a COVID-19 archive's images (each archive
  split by its own patients; only images of known sex and age, which the normal GAN behind
  AnoGAN and f-AnoGAN is conditioned on, so that every method scores the same images).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from jaxcxr import data as data_lib
from jaxcxr.config import TASKS
from jaxcxr.data import CXRDataset
from jaxcxr.train.loop import data_metadata

__all__ = ["ANOMALY_TASKS", "OWN_SPLIT", "SPLITS", "STANDARD_SPLIT", "AnomalyTask", "EvaluationImages", "GanImages",
           "anomaly_task", "calibration_normals", "classifier_images", "classifier_split", "gan_images", "model_split",
           "standard_subset"]

# The parts an evaluation may run on: every image, or one part of a patient split.
SPLITS: tuple[str, ...] = ("all", "train", "val", "test")
# Where `model_split` took the images from (the commands' "split_from").
OWN_SPLIT = "the checkpoint's own patient split"
STANDARD_SPLIT = "data.standard_split"
# The anomaly tasks: abnormal = NIH pneumonias, or the COVID-19 archive's images.
ANOMALY_TASKS: tuple[str, ...] = ("pneumonia", "covid")


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def standard_subset(ds: CXRDataset, split: str) -> CXRDataset:
  """`ds` for "all", else the images of the `split` patients of `data.standard_split(ds)`.

  Raises:
    ValueError: an unknown split.
  """
  _check_split(split)
  return ds if split == "all" else ds.subset(data_lib.standard_split(ds)[split])


class EvaluationImages(NamedTuple):
  """The images a model is evaluated on.

  Attributes:
    dataset: the images of the split asked for.
    split_from: `OWN_SPLIT` or `STANDARD_SPLIT`.
    train: the training patients' images of the split used, which the evaluation's trivial baselines
      are fitted on (`jaxcxr.baselines`): the model's own training images with `OWN_SPLIT` (None when
      its metadata does not name them), the standard split's "train" part with `STANDARD_SPLIT`;
      None for the splits "train" and "all", whose images include them.
  """

  dataset: CXRDataset
  split_from: str
  train: CXRDataset | None


def _saved_part(ds: CXRDataset, saved: Mapping[str, Any], part: str) -> CXRDataset | None:
  """The images of one part of a saved split: indices under `part`, or patient ids under `part_patients`."""
  if part in saved:
    return ds.subset(np.asarray(saved[part], np.int64))
  if f"{part}_patients" in saved:
    return ds.subset(np.isin(ds.patient_id, np.asarray(saved[f"{part}_patients"])))
  return None


def model_split(ds: CXRDataset, metadata: Mapping[str, Any], split: str) -> EvaluationImages:
  """The `split` images of a model: its own saved patient split on its own data, else the standard split.

  Args:
    ds: the evaluation data (as loaded: the digest of its files is compared with the one saved).
    metadata: the model checkpoint's metadata (`jaxcxr.checkpoints.read_metadata`): "split"
      holds the trainer's parts, as indices into the data ("train", "val", "test") or patient
      ids ("val_patients", ...), and "data_sha256" the digest of the data it was trained on.
    split: one of `SPLITS`.

  Returns:
    `EvaluationImages`.

  Raises:
    ValueError: an unknown split.
  """
  _check_split(split)
  saved = metadata.get("split") or {}
  if split != "all" and metadata.get("data_sha256") and metadata["data_sha256"] == data_metadata(ds).get(
      "data_sha256"):
    own = _saved_part(ds, saved, split)
    if own is not None:
      return EvaluationImages(own, OWN_SPLIT, _saved_part(ds, saved, "train") if split != "train" else None)
  train = standard_subset(ds, "train") if split in ("val", "test") else None
  return EvaluationImages(standard_subset(ds, split), STANDARD_SPLIT, train)


def classifier_images(ds: CXRDataset, task: str) -> CXRDataset:
  """The images a classifier of `task` ("abnormal" or "sex") is trained and evaluated on.

  The abnormal classifiers learn pneumonia against normal images, so other abnormal images are
  left out (`data.keep_abnormal_finding`); the sex classifiers take every image (the trainer
  drops those of unknown sex). `jaxcxr train classifier` and `evaluate classifier` both start
  from these, so that a classifier's saved split indexes the same images.

  Raises:
    ValueError: an unknown task.
  """
  if task not in TASKS:
    raise ValueError(f"unknown classifier task {task!r}; expected one of {', '.join(TASKS)}")
  return data_lib.keep_abnormal_finding(ds) if task == "abnormal" else ds


def classifier_split(ds: CXRDataset, metadata: Mapping[str, Any], split: str, task: str) -> EvaluationImages:
  """`model_split` of a classifier of `task` ("abnormal" or "sex"), on `classifier_images(ds, task)`.

  The sex classifier's own split is stratified by sex, not by label.
  """
  return model_split(classifier_images(ds, task), metadata, split)


@dataclasses.dataclass(frozen=True)
class AnomalyTask:
  """Normal (label 0) against abnormal (label 1) images, split by patient.

  Attributes:
    name: "pneumonia" or "covid" (`ANOMALY_TASKS`).
    nih: the NIH images, abnormal meaning pneumonia (`data.keep_abnormal_finding`).
    covid: the COVID-19 archive's images of known sex and age (the covid task), else None.
    dropped: COVID-19 images left out for unknown sex or age.
  """

  name: str
  nih: CXRDataset
  covid: CXRDataset | None = None
  dropped: int = 0

  def part(self, split: str) -> CXRDataset:
    """The task's images of one part of the standard split (each archive split by its own patients)."""
    if self.covid is None:
      return standard_subset(self.nih, split)
    return data_lib.concatenate([standard_subset(self.nih, split).select(label=0),
                                 standard_subset(self.covid, split).select(label=1)])

  def threshold_part(self, split: str) -> CXRDataset | None:
    """Where the decision threshold of a `split` evaluation is chosen: the validation patients for "test", else none."""
    return self.part("val") if split == "test" else None


def anomaly_task(nih: CXRDataset, covid: CXRDataset | None = None) -> AnomalyTask:
  """The pneumonia task of the NIH images, or with `covid` the COVID-19 task (NIH normals against its images).

  Args:
    nih: NIH images (abnormal images other than pneumonia are left out here).
    covid: a COVID-19 archive (its abnormal images are the task's abnormal ones), or None.

  Returns:
    `AnomalyTask`.
  """
  nih = data_lib.keep_abnormal_finding(nih)
  if covid is None:
    return AnomalyTask("pneumonia", nih)
  known = np.isin(covid.sex, ["M", "F"]) & (covid.age >= 0)
  return AnomalyTask("covid", nih, covid.subset(known), int((~known).sum()))


def calibration_normals(ds: CXRDataset) -> np.ndarray:
  """The images a post-filter is calibrated on (`jaxcxr calibrate`): the standard split's normal training images.

  Returns:
    uint8 (N, H, W), the label-0 images of the standard split's train patients.

  Raises:
    jaxcxr.data.DataError: data without normal/abnormal labels.
  """
  if ds.label is None:
    raise data_lib.DataError(f"{ds.source or 'the data'}: calibration needs normal/abnormal labels")
  train = ds.subset(data_lib.standard_split(ds)["train"])
  return train.images[train.label == 0]


class GanImages(NamedTuple):
  """The real images a generator is evaluated against (`jaxcxr evaluate gan`, `quality.evaluate_gan`).

  Attributes:
    test_normals: the normal images of the standard split's test patients (the realism figures).
    train_normals: the normal images of its train patients (the PCA space of the figures).
    training_set: every image of its train patients, abnormal meaning pneumonia: what a shipped
      generator trained on, searched by the memorisation audit.
  """

  test_normals: CXRDataset
  train_normals: CXRDataset
  training_set: CXRDataset


def gan_images(ds: CXRDataset) -> GanImages:
  """`GanImages` of the data a generator was trained on (both NIH archives as loaded)."""
  split = data_lib.standard_split(ds)
  return GanImages(test_normals=ds.subset(split["test"]).select(label=0),
                   train_normals=ds.subset(split["train"]).select(label=0),
                   training_set=data_lib.keep_abnormal_finding(ds.subset(split["train"])))
