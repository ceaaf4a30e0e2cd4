"""Tests for jaxcxr.data: loading and validation, groups, patient splits, batches, augmentation."""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxcxr import config, data


# ----------------------------------------------------------------------------- loading


def test_load_npz_fixture(nih_path):
  ds = data.load(nih_path)
  assert ds.images.shape == (24, 256, 256) and ds.images.dtype == np.uint8
  assert set(ds.label.tolist()) == {0, 1}
  assert set(ds.sex.tolist()) == {"M", "F"}
  assert ds.lung_masks is None
  assert "view" in ds.extra
  # The fixture holds two images per (group, label) cell.
  assert np.bincount(ds.groups, minlength=6).tolist() == [4] * 6


def test_load_masks_fixture(covid_path):
  ds = data.load(covid_path)
  assert ds.lung_masks is not None and ds.lung_masks.shape == ds.images.shape
  assert set(np.unique(ds.lung_masks).tolist()) == {0, 1, 2}


def test_subset_and_select(nih_path):
  ds = data.load(nih_path)
  sub = ds.select(group="38_44f", label=1)
  assert len(sub) == 2
  assert (sub.sex == "F").all() and (sub.label == 1).all() and ((sub.age >= 38) & (sub.age <= 44)).all()
  np.testing.assert_array_equal(ds.subset([3, 1]).images, ds.images[[3, 1]])


def test_load_png_folder_pads_to_square(tmp_path):
  # A 100x50 (w x h) image is zero-padded to a centred 100x100 square, then resized: the
  # top and bottom quarter rows are black, the middle is bright.
  Image.fromarray(np.full((50, 100), 200, np.uint8)).save(tmp_path / "a.png")
  Image.fromarray(np.full((40, 40, 4), 255, np.uint8), mode="RGBA").save(tmp_path / "b.png")
  ds = data.load(tmp_path)
  assert ds.images.shape == (2, 256, 256)
  assert ds.images[0, :50].max() == 0 and ds.images[0, -50:].max() == 0
  assert abs(int(ds.images[0, 128, 128]) - 200) <= 1
  assert ds.patient_id.tolist() == ["a", "b"]
  assert (ds.label == -1).all()


def _write_npz(path, **arrays):
  np.savez(path, **arrays)
  return path


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"pixels": np.zeros((2, 256, 256), np.uint8)}, r"no `images` array .*pixels"),
        ({"images": np.zeros((2, 128, 128), np.uint8)}, r"shape \(2, 128, 128\); expected \[N, 256, 256\]"),
        ({"images": np.zeros((2, 256, 256), np.float32)}, r"dtype float32; expected uint8"),
        ({"images": np.full((2, 256, 256), np.nan, np.float32)}, r"NaN pixel"),
        ({"images": np.zeros((2, 256, 256), np.uint8), "label": np.zeros(3, np.int8)}, r"`label` has shape \(3,\)"),
        ({"images": np.zeros((2, 256, 256), np.uint8), "lung_masks": np.full((2, 256, 256), 7, np.uint8)},
         r"unknown label\(s\) \[7\]"),
        ({"images": np.zeros((1, 256, 256), np.uint8), "sex": np.array(["X"])}, r"`sex` has values"),
    ],
)
def test_bad_archives_name_file_and_expectation(tmp_path, arrays, message):
  path = _write_npz(tmp_path / "bad.npz", **arrays)
  with pytest.raises(data.DataError, match=message) as info:
    data.load(path)
  assert str(path) in str(info.value)


def test_missing_and_unreadable_files(tmp_path):
  with pytest.raises(data.DataError, match="no such file"):
    data.load(tmp_path / "missing.npz")
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"not a zip archive")
  with pytest.raises(data.DataError, match="not a readable npz archive"):
    data.load(garbage)
  with pytest.raises(data.DataError, match="no .png or .dcm files"):
    data.load(tmp_path)  # a folder holding only garbage.npz


def test_object_arrays_are_refused(tmp_path):
  path = tmp_path / "pickled.npz"
  np.savez(path, images=np.zeros((1, 256, 256), np.uint8), sex=np.array([object()], dtype=object))
  with pytest.raises(data.DataError, match="not a readable npz archive"):
    data.load(path)


# ----------------------------------------------------------------------------- groups


@pytest.mark.parametrize(
    "age, sex, expected",
    [(18, "M", "18_24m"), (24, "f", "18_24f"), (25, "M", None), (38, "M", "38_44m"), (44, "F", "38_44f"),
     (64, "M", "58_64m"), (58, "F", "58_64f"), (57, "F", None), (40, "U", None), (-1, "M", None)],
)
def test_group_of(age, sex, expected):
  assert data.group_of(age, sex) == expected


def test_group_names():
  assert data.parse_group("58_64f") == (58, 64, "F")
  assert [data.group_index(g) for g in data.GROUPS] == list(range(6))
  with pytest.raises(data.DataError, match=r"unknown group '40_50m'; expected one of 18_24m"):
    data.group_index("40_50m")
  assert data.group_condition("18_24f") == {"sex": 1.0, "age": 21.0}


# ----------------------------------------------------------------------------- splits


def test_split_by_patient_is_disjoint_deterministic_and_stratified():
  rng = np.random.default_rng(0)
  patient_id = rng.integers(0, 300, size=1000).astype(str)
  label = (np.char.str_len(patient_id) % 2).astype(np.int8)  # a per-patient label
  split = data.split_by_patient(patient_id, (0.6, 0.2, 0.2), stratify=label, seed=3)
  parts = [set(patient_id[split[k]]) for k in ("train", "val", "test")]
  assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
  assert sum(len(split[k]) for k in split) == 1000
  again = data.split_by_patient(patient_id, (0.6, 0.2, 0.2), stratify=label, seed=3)
  for k in split:
    np.testing.assert_array_equal(split[k], again[k])
  n_patients = len(np.unique(patient_id))
  assert abs(len(parts[0]) / n_patients - 0.6) < 0.03
  other = data.split_by_patient(patient_id, (0.6, 0.2, 0.2), stratify=label, seed=4)
  assert not np.array_equal(other["test"], split["test"])


def test_split_is_stable_when_patients_are_added():
  # A patient's part depends only on (seed, patient_id) within its stratum's ranking: adding
  # images of an existing patient never moves any patient.
  ids = np.array([f"p{i}" for i in range(200)])
  split = data.split_by_patient(ids)
  more = np.concatenate([ids, ids[:50]])
  split_more = data.split_by_patient(more)
  for k in split:
    assert set(ids[split[k]]) == set(more[split_more[k]])


def test_split_rejects_bad_fractions():
  with pytest.raises(data.DataError, match="fractions"):
    data.split_by_patient(np.arange(10), (0.5, 0.5, 0.5))


# ----------------------------------------------------------------------------- pixel spaces


def test_intensity_conversions_round_trip():
  u8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
  np.testing.assert_allclose(data.to_unit(u8)[0, :2], [0.0, 1 / 255])
  assert float(data.to_signed(u8).min()) == -1.0 and float(data.to_signed(u8).max()) == 1.0
  np.testing.assert_array_equal(data.to_uint8(data.to_unit(u8)), u8)
  np.testing.assert_array_equal(data.to_uint8(data.to_signed(u8), signed=True), u8)
  np.testing.assert_allclose(data.signed_to_unit(data.unit_to_signed(data.to_unit(u8))), data.to_unit(u8), atol=1e-6)


# ----------------------------------------------------------------------------- batches


def test_iterate_batches_covers_each_example_once_per_epoch(getkey):
  x = np.arange(10)
  batches = list(data.iterate_batches({"x": x}, 4, key=getkey(), drop_remainder=False))
  assert len(batches) == 3
  seen = np.concatenate([np.asarray(b["x"])[np.asarray(b["mask"])] for b in batches])
  assert sorted(seen.tolist()) == list(range(10))
  assert np.asarray(batches[-1]["mask"]).tolist() == [True, True, False, False]
  dropped = list(data.iterate_batches({"x": x}, 4))
  assert [np.asarray(b["x"]).tolist() for b in dropped] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_iterate_batches_repeat_and_errors(getkey):
  it = data.iterate_batches({"x": np.arange(6), "y": np.arange(6) * 2}, 3, key=getkey(), repeat=True)
  epochs = [next(it) for _ in range(6)]
  for b in epochs:
    np.testing.assert_array_equal(np.asarray(b["y"]), 2 * np.asarray(b["x"]))
  with pytest.raises(data.DataError, match="one common length"):
    next(data.iterate_batches({"x": np.arange(3), "y": np.arange(4)}, 2))
  with pytest.raises(data.DataError, match="fewer than one batch"):
    next(data.iterate_batches({"x": np.arange(3)}, 4))


def test_iterate_batches_propagates_worker_errors():
  class Broken(np.ndarray):
    def __getitem__(self, index):
      raise RuntimeError("disk on fire")

  broken = np.arange(8).view(Broken)
  with pytest.raises(RuntimeError, match="disk on fire"):
    list(data.iterate_batches({"x": broken}, 4))


# ----------------------------------------------------------------------------- augmentation


@pytest.fixture(scope="module")
def images():
  return data.to_unit(data.load(pathlib.Path(__file__).parent / "data" / "nih_fixture.npz").images[:4])[..., None]


def test_augment_shapes_range_and_determinism(images):
  key = jax.random.key(1)
  out = data.augment(key, images)
  assert out.shape == images.shape and out.dtype == jnp.float32
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  np.testing.assert_array_equal(out, data.augment(key, images))
  assert not np.allclose(out, data.augment(jax.random.key(2), images))
  # Different examples get different transformations from one batch key.
  twin = jnp.concatenate([images[:1], images[:1]])
  pair = data.augment(key, twin)
  assert not np.allclose(pair[0], pair[1])


def test_augment_identity_when_ranges_are_zero(images):
  none = config.AugmentConfig(rotation_deg=0, translation=0, scale=0, brightness=0, contrast=0, blur_sigma=0)
  np.testing.assert_allclose(data.augment(jax.random.key(0), images, none), images, atol=1e-5)


def test_augment_flip_only_when_asked(images):
  flip = config.AugmentConfig(rotation_deg=0, translation=0, scale=0, brightness=0, contrast=0, blur_sigma=0,
                              hflip_prob=1.0)
  np.testing.assert_allclose(data.augment(jax.random.key(0), images, flip), images[:, :, ::-1], atol=1e-5)


def test_augment_small_changes_stay_small(images):
  out = data.augment(jax.random.key(3), images)
  # Default ranges (5 degrees, 4% shift, 5% zoom, mild intensity): most of the image stays close.
  assert float(jnp.mean(jnp.abs(out - images))) < 0.12


def test_augment_rejects_wrong_shape(images):
  with pytest.raises(ValueError, match=r"expected shape \(B, H, W, 1\)"):
    data.augment(jax.random.key(0), images[..., 0])


def _write_dicom(path, pixels, photometric="MONOCHROME2"):
  pytest.importorskip("pydicom")
  from pydicom.dataset import FileDataset, FileMetaDataset
  from pydicom.uid import ExplicitVRLittleEndian, generate_uid

  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
  meta.MediaStorageSOPInstanceUID = generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
  ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
  ds.Rows, ds.Columns = pixels.shape
  ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
  ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
  ds.PixelData = pixels.astype(np.uint16).tobytes()
  ds.save_as(path, enforce_file_format=True)


def test_load_dicom_folder(tmp_path):
  ramp = np.tile(np.linspace(0, 4095, 300), (300, 1)).astype(np.uint16)  # dark left, bright right
  _write_dicom(tmp_path / "a.dcm", ramp)
  _write_dicom(tmp_path / "b.dcm", ramp, photometric="MONOCHROME1")  # inverted display
  ds = data.load(tmp_path)
  assert ds.images.shape == (2, 256, 256)
  assert ds.images[0, 128, 5] < 10 and ds.images[0, 128, 250] > 245
  assert ds.images[1, 128, 5] > 245 and ds.images[1, 128, 250] < 10


def test_augment_masks_follow_the_geometry(covid_path):
  ds = data.load(covid_path)
  images, masks = data.to_unit(ds.images[:3])[..., None], jnp.asarray(ds.lung_masks[:3])
  geometry_only = config.AugmentConfig(rotation_deg=10, translation=0.08, scale=0.1, brightness=0, contrast=0,
                                       blur_sigma=0)
  out, out_masks = data.augment(jax.random.key(5), images, geometry_only, masks=masks)
  assert out_masks.dtype == masks.dtype and set(np.unique(out_masks).tolist()) <= {0, 1, 2}
  # Warping the image and the (binary) lung mask with one transformation keeps them aligned:
  # the mean image intensity inside the warped mask equals the original's inside the original mask.
  for i in range(3):
    before = float(images[i, ..., 0][masks[i] > 0].mean())
    after = float(out[i, ..., 0][out_masks[i] > 0].mean())
    assert abs(before - after) < 0.02
  assert not np.array_equal(out_masks, masks)
  flip = dataclasses.replace(geometry_only, rotation_deg=0, translation=0, scale=0, hflip_prob=1.0)
  _, flipped = data.augment(jax.random.key(5), images, flip, masks=masks)
  expected = np.asarray(masks)[:, :, ::-1]
  expected = np.where(expected == 1, 2, np.where(expected == 2, 1, expected))
  np.testing.assert_array_equal(flipped, expected)
  with pytest.raises(ValueError, match="masks: expected shape"):
    data.augment(jax.random.key(0), images, masks=masks[:, :10])


def test_file_sha256_spans_chunks(tmp_path):
  import hashlib
  import os

  payload = os.urandom(3 * (1 << 20) + 17)  # several 1 MiB read chunks.
  (tmp_path / "d.npz").write_bytes(payload)
  assert data.file_sha256(tmp_path / "d.npz") == hashlib.sha256(payload).hexdigest()


def _archive(path, n, *, prefix, finding=None, seed=0):
  rng = np.random.default_rng(seed)
  arrays = dict(images=rng.integers(0, 256, (n, 256, 256), dtype=np.uint8), label=np.arange(n) % 2,
                sex=np.where(np.arange(n) % 3, "M", "F"), age=np.full(n, 40),
                patient_id=np.asarray([f"{prefix}{i // 2}" for i in range(n)]))
  if finding is not None:
    arrays["finding"] = np.asarray(finding)
  np.savez(path, **arrays)
  return path


def test_load_several_archives_concatenates_in_order(tmp_path):
  a = _archive(tmp_path / "a.npz", 40, prefix="p", finding=["No Finding", "Pneumonia"] * 20)
  b = _archive(tmp_path / "b.npz", 10, prefix="q", finding=["No Finding", "Effusion"] * 5, seed=1)
  both = data.load(f"{a},{b}")
  assert len(both) == 50 and both.source == f"{a},{b}"
  np.testing.assert_array_equal(both.images[40:], data.load(b).images)
  np.testing.assert_array_equal(both.extra["archive"], [0] * 40 + [1] * 10)
  assert both.extra["finding"][41] == "Effusion"
  assert len(data.load([a, b])) == 50 and len(data.load([a])) == 40
  with pytest.raises(data.DataError, match="empty list"):
    data.load([])


def test_standard_split_keeps_each_archives_patients_where_they_were(tmp_path):
  a = _archive(tmp_path / "a.npz", 60, prefix="p")
  b = _archive(tmp_path / "b.npz", 30, prefix="q", seed=1)
  alone, both = data.standard_split(data.load(a)), data.standard_split(data.load([a, b]))
  for part in ("train", "val", "test"):
    np.testing.assert_array_equal(both[part][both[part] < 60], alone[part])   # archive a: unchanged
  pid = data.load([a, b]).patient_id
  parts = [set(pid[both[p]]) for p in ("train", "val", "test")]
  assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
  assert len(both["train"]) + len(both["val"]) + len(both["test"]) == 90


def test_keep_abnormal_finding_drops_other_findings_only(tmp_path):
  b = data.load(_archive(tmp_path / "b.npz", 6, prefix="q", finding=["No Finding", "Effusion", "No Finding",
                                                                   "Atelectasis|Pneumonia", "No Finding", "Mass"]))
  kept = data.keep_abnormal_finding(b)
  np.testing.assert_array_equal(kept.extra["finding"], ["No Finding", "No Finding", "Atelectasis|Pneumonia",
                                                        "No Finding"])
  plain = data.load(_archive(tmp_path / "c.npz", 4, prefix="r"))
  assert len(data.keep_abnormal_finding(plain)) == 4        # no `finding`: labels kept as they are


def test_balanced_patient_halves_are_disjoint_and_equal_in_images():
  # one patient with 10 images, 30 with one: a plain 50/50 patient split can be far from equal
  pid = np.asarray(["big"] * 10 + [f"p{i}" for i in range(30)])
  for seed in range(5):
    in_a = data.balanced_patient_halves(pid, seed=seed)
    assert not set(pid[in_a]) & set(pid[~in_a])
    assert abs(int(in_a.sum()) - int((~in_a).sum())) <= 1
  assert not np.array_equal(data.balanced_patient_halves(pid, seed=0), data.balanced_patient_halves(pid, seed=1))


def test_patient_folds_keep_patients_together_and_balance_labels():
  rng = np.random.default_rng(0)
  patient = rng.integers(0, 60, 200).astype(str)
  label = (rng.random(60) < 0.4).astype(np.int64)[patient.astype(int)]   # one label per patient
  fold = data.patient_folds(patient, 5, stratify=label, seed=0)
  assert set(fold) == set(range(5))
  for p in np.unique(patient):
    assert len(set(fold[patient == p])) == 1
  per_fold_abnormal_patients = [len(np.unique(patient[(fold == f) & (label == 1)])) for f in range(5)]
  assert max(per_fold_abnormal_patients) - min(per_fold_abnormal_patients) <= 1
  assert not np.array_equal(fold, data.patient_folds(patient, 5, stratify=label, seed=1))   # a new repeat
  np.testing.assert_array_equal(fold, data.patient_folds(patient, 5, stratify=label, seed=0))
  with pytest.raises(data.DataError, match="at least 2 folds"):
    data.patient_folds(patient, 1)
  with pytest.raises(data.DataError, match="fewer than 100 folds"):
    data.patient_folds(patient, 100)


def test_views_take_the_first_word_in_upper_case(nih_path):
  ds = data.load(nih_path)
  ds = dataclasses.replace(ds, extra={**ds.extra, "view": np.asarray(["AP Supine", " pa", "AP", "Lateral"] * 6)})
  assert list(data.views(ds)[:4]) == ["AP", "PA", "AP", "LATERAL"]
  assert data.views(dataclasses.replace(ds, extra={})) is None
