"""Which images an evaluation runs on (`jaxcxr.evaluation_sets`), on the NIH and COVID-19 fixtures."""

import dataclasses

import numpy as np
import pytest

from jaxcxr import data, evaluation_sets
from jaxcxr.train.loop import data_metadata


@pytest.fixture(scope="module")
def nih(nih_path):
  return data.load(nih_path)


def test_standard_subset_is_a_part_of_the_standard_split(nih):
  assert evaluation_sets.standard_subset(nih, "all") is nih
  for part in ("train", "val", "test"):
    expected = nih.subset(data.standard_split(nih)[part])
    np.testing.assert_array_equal(evaluation_sets.standard_subset(nih, part).patient_id, expected.patient_id)
  with pytest.raises(ValueError, match="unknown split 'dev'"):
    evaluation_sets.standard_subset(nih, "dev")


def test_model_split_uses_the_checkpoints_own_split_on_its_own_data(nih):
  digest = data_metadata(nih)["data_sha256"]
  indices = {"seed": 3, "train": [0, 1, 2, 3], "val": [4, 5], "test": [6, 7, 8]}
  own = evaluation_sets.model_split(nih, {"split": indices, "data_sha256": digest}, "test")
  assert own.split_from == evaluation_sets.OWN_SPLIT
  np.testing.assert_array_equal(own.dataset.patient_id, nih.patient_id[[6, 7, 8]])
  np.testing.assert_array_equal(own.train.patient_id, nih.patient_id[[0, 1, 2, 3]])
  # A U-Net saves patient ids (and no training part).
  patients = {"test_patients": nih.patient_id[[9, 10]].tolist()}
  unet = evaluation_sets.model_split(nih, {"split": patients, "data_sha256": digest}, "test")
  assert unet.split_from == evaluation_sets.OWN_SPLIT and unet.train is None
  np.testing.assert_array_equal(unet.dataset.patient_id, nih.patient_id[[9, 10]])
  # Other data (another digest), no digest, "all", or a part the checkpoint did not save: the standard split.
  standard = nih.subset(data.standard_split(nih)["test"]).patient_id
  for metadata, split in (({"split": indices, "data_sha256": "0" * 64}, "test"), ({"split": indices}, "test"),
                          ({"split": patients, "data_sha256": digest}, "val")):
    other = evaluation_sets.model_split(nih, metadata, split)
    assert other.split_from == evaluation_sets.STANDARD_SPLIT
    # The training part is the standard split's (where the evaluation's trivial baselines are fitted).
    np.testing.assert_array_equal(other.train.patient_id, nih.subset(data.standard_split(nih)["train"]).patient_id)
    if split == "test":
      np.testing.assert_array_equal(other.dataset.patient_id, standard)
  assert evaluation_sets.model_split(nih, {"split": indices, "data_sha256": digest}, "all").dataset is nih
  for split in ("train", "all"):                           # no training patients apart from the evaluated ones
    assert evaluation_sets.model_split(nih, {}, split).train is None
    assert evaluation_sets.model_split(nih, {"split": indices, "data_sha256": digest}, split).train is None


def test_classifier_split_of_the_abnormal_task_keeps_pneumonia_only(nih):
  finding = np.where(nih.label == 1, np.where(np.arange(len(nih)) % 2 == 0, "Pneumonia", "Effusion"), "No Finding")
  tagged = dataclasses.replace(nih, extra={**nih.extra, "finding": finding})
  abnormal = evaluation_sets.classifier_split(tagged, {}, "all", "abnormal").dataset
  assert len(abnormal) == len(nih) - int(((nih.label == 1) & (np.arange(len(nih)) % 2 == 1)).sum())
  assert len(evaluation_sets.classifier_split(tagged, {}, "all", "sex").dataset) == len(nih)


def test_anomaly_tasks(nih, covid_path, tmp_path):
  task = evaluation_sets.anomaly_task(nih)
  assert (task.name, task.covid, task.dropped) == ("pneumonia", None, 0)
  np.testing.assert_array_equal(task.part("test").patient_id, evaluation_sets.standard_subset(nih, "test").patient_id)
  np.testing.assert_array_equal(task.threshold_part("test").patient_id, task.part("val").patient_id)
  assert task.threshold_part("val") is None and task.threshold_part("all") is None
  # The COVID-19 task: NIH normals against the archive's images of known sex and age.
  arrays = dict(np.load(covid_path))
  arrays["age"] = np.where(np.arange(len(arrays["age"])) % 4 == 0, -1, 45).astype(arrays["age"].dtype)
  np.savez(tmp_path / "covid.npz", **arrays)
  covid = data.load(tmp_path / "covid.npz")
  task = evaluation_sets.anomaly_task(nih, covid)
  assert (task.name, task.dropped, len(task.covid)) == ("covid", 2, 6)
  everything = task.part("all")
  assert (int((everything.label == 0).sum()), int((everything.label == 1).sum())) == (12, 6)
  np.testing.assert_array_equal(everything.patient_id[everything.label == 0], nih.patient_id[nih.label == 0])


def test_calibration_normals_are_the_standard_splits_normal_training_images(nih):
  train = data.standard_split(nih)["train"]
  expected = train[nih.label[train] == 0]
  np.testing.assert_array_equal(evaluation_sets.calibration_normals(nih), nih.images[expected])
  with pytest.raises(data.DataError, match="normal/abnormal labels"):
    evaluation_sets.calibration_normals(dataclasses.replace(nih, label=None))


def test_gan_images_are_the_standard_splits_parts(nih):
  finding = np.where(nih.label == 1, np.where(np.arange(len(nih)) % 2 == 0, "Pneumonia", "Effusion"), "No Finding")
  tagged = dataclasses.replace(nih, extra={**nih.extra, "finding": finding})
  images = evaluation_sets.gan_images(tagged)
  split = data.standard_split(tagged)
  for part, got in (("test", images.test_normals), ("train", images.train_normals)):
    np.testing.assert_array_equal(got.patient_id, nih.patient_id[split[part]][nih.label[split[part]] == 0])
  train = split["train"]
  kept = train[(nih.label[train] == 0) | (finding[train] == "Pneumonia")]
  np.testing.assert_array_equal(images.training_set.patient_id, nih.patient_id[kept])
  assert (images.training_set.label == 1).any() and (images.test_normals.label == 0).all()
