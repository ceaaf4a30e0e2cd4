"""Chest X-ray data: archives and folders to arrays, age-sex groups, patient splits, augmentation.

Archives follow the shared npz format: `images` uint8 [N, 256, 256] (required) and
optional `lung_masks` uint8 [N, 256, 256] (0 background, 1 patient's right lung =
image left, 2 patient's left lung = image right), `label` (0 normal, 1 abnormal),
`sex` ('M'/'F'/'U'), `age` (years, -1 unknown), `patient_id`. Files are opened with
`allow_pickle=False`. Folders of PNG (and DICOM with the `dicom` extra) load into
the same `CXRDataset`.

Pixel spaces: uint8 [0, 255]; "unit" float32 [0, 1] (U-Net/classifier space);
"signed" float32 [-1, 1] (generator space). Arrays are NHWC once on device.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pathlib
import queue
import threading
import zipfile
from collections.abc import Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxcxr.config import AugmentConfig

IMAGE_SIZE = 256

# Six age-sex groups of the original study; ages inclusive.
GROUPS: tuple[str, ...] = ("18_24m", "18_24f", "38_44m", "38_44f", "58_64m", "58_64f")
AGE_RANGES: tuple[tuple[int, int], ...] = ((18, 24), (38, 44), (58, 64))
SEXES = ("m", "f")


class DataError(ValueError):
  """Bad input data; the message names the file or argument and what was expected."""


# ----------------------------------------------------------------------------- groups


def parse_group(name: str) -> tuple[int, int, str]:
  """'38_44f' -> (38, 44, 'F'). Raises DataError for an unknown group name."""
  if name not in GROUPS:
    raise DataError(f"unknown group {name!r}; expected one of {', '.join(GROUPS)}")
  lo, hi = name[:-1].split("_")
  return int(lo), int(hi), name[-1].upper()


def group_index(name: str) -> int:
  """Index of a group name in `GROUPS` (DataError if unknown)."""
  parse_group(name)
  return GROUPS.index(name)


def group_of(age: int, sex: str) -> str | None:
  """The group of one (age, sex) pair, or None when it falls in no group (or is unknown)."""
  idx = int(group_indices(np.asarray([age]), np.asarray([sex]))[0])
  return GROUPS[idx] if idx >= 0 else None


def group_indices(age: np.ndarray, sex: np.ndarray) -> np.ndarray:
  """Vectorised group index per image, -1 where the age/sex falls in no group. int32 (N,).

  Raises:
    DataError: ages that are not numbers, or age and sex of different shapes.
  """
  age = np.asarray(age)
  if age.dtype.kind not in "iuf":
    raise DataError(f"group_indices: expected numeric ages (years, -1 unknown), got dtype {age.dtype}")
  if np.shape(sex) != age.shape:
    raise DataError(f"group_indices: age and sex must have one shape, got {age.shape} and {np.shape(sex)}")
  sex = np.char.lower(np.asarray(sex).astype(str))
  out = np.full(age.shape, -1, np.int32)
  for a, (lo, hi) in enumerate(AGE_RANGES):
    in_age = (age >= lo) & (age <= hi)
    for s, code in enumerate(SEXES):
      out[in_age & (sex == code)] = 2 * a + s
  return out


def group_condition(name: str) -> dict[str, float]:
  """Conditioning values of a group for the conditional GAN: sex (1 = female) and mid-age in years."""
  lo, hi, sex = parse_group(name)
  return {"sex": float(sex == "F"), "age": (lo + hi) / 2.0}


# ----------------------------------------------------------------------------- datasets


@dataclasses.dataclass(frozen=True)
class CXRDataset:
  """A set of radiographs and their per-image metadata (host numpy arrays).

  Attributes:
    images: uint8 (N, 256, 256), radiographic display (lungs dark).
    label: int8 (N,), 0 normal, 1 abnormal, -1 unknown.
    sex: str (N,), 'M', 'F' or 'U'.
    age: int16 (N,), years, -1 unknown.
    patient_id: str (N,); images of one patient share it.
    lung_masks: uint8 (N, 256, 256) with labels {0, 1, 2}, or None.
    source: where the data came from (file or folder path).
    extra: other per-image arrays present in the archive (e.g. `view`).
  """

  images: np.ndarray
  label: np.ndarray
  sex: np.ndarray
  age: np.ndarray
  patient_id: np.ndarray
  lung_masks: np.ndarray | None = None
  source: str = ""
  extra: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return int(self.images.shape[0])

  @property
  def groups(self) -> np.ndarray:
    """Group index per image (see `GROUPS`), -1 outside every group. int32 (N,)."""
    return group_indices(self.age, self.sex)

  def subset(self, index: np.ndarray | Sequence[int]) -> CXRDataset:
    """The images at `index` (integer indices or a boolean mask), with their metadata.

    Raises:
      DataError: a mask of another length, indices out of range, or an index that is not integer.
    """
    index = np.asarray(index)
    if index.size == 0 and index.dtype != bool:
      index = index.astype(np.int64)
    if index.dtype == bool:
      if index.shape != (len(self),):
        raise DataError(f"subset: a boolean mask of shape {index.shape} for {len(self)} images; expected "
                        f"({len(self)},)")
      index = np.flatnonzero(index)
    if index.dtype.kind not in "iu" or index.ndim != 1:
      raise DataError(f"subset: expected 1-D integer indices or a boolean mask, got {index.dtype} {index.shape}")
    if index.size and (index.min() < -len(self) or index.max() >= len(self)):
      raise DataError(f"subset: indices outside [0, {len(self)}) (min {index.min()}, max {index.max()})")
    take = lambda a: None if a is None else a[index]
    return dataclasses.replace(
        self,
        images=self.images[index],
        label=self.label[index],
        sex=self.sex[index],
        age=self.age[index],
        patient_id=self.patient_id[index],
        lung_masks=take(self.lung_masks),
        extra={k: v[index] for k, v in self.extra.items()},
    )

  def select(self, *, group: str | None = None, label: int | None = None) -> CXRDataset:
    """Images of one group and/or label."""
    keep = np.ones(len(self), bool)
    if group is not None:
      keep &= self.groups == group_index(group)
    if label is not None:
      keep &= self.label == label
    return self.subset(keep)


def load(path: str | os.PathLike | Sequence[str | os.PathLike]) -> CXRDataset:
  """Loads an npz archive or a folder of PNG/DICOM images (dispatch on the path).

  Several paths (a sequence, or one string of comma-separated paths) load as one
  dataset, in order, with `concatenate`: e.g. the two NIH development archives,
  `"nih_cxr14_subset_256.npz,nih_cxr14_extra_256.npz"`.
  """
  if isinstance(path, str) and "," in path:
    path = [p.strip() for p in path.split(",") if p.strip()]
  if isinstance(path, str) and not path.strip():
    raise DataError("no data path given (an empty string); pass an npz archive or a folder of PNG/DICOM images")
  if not isinstance(path, (str, os.PathLike, Sequence)):
    raise DataError(f"expected a path (str or os.PathLike) or a sequence of paths, got {type(path).__name__}")
  if not isinstance(path, (str, os.PathLike)):
    paths = list(path)
    if not paths:
      raise DataError("no data path given (an empty list)")
    return concatenate([load(p) for p in paths]) if len(paths) > 1 else load(paths[0])
  path = pathlib.Path(path)
  if not path.exists():
    raise DataError(f"{path}: no such file or folder")
  if path.is_dir():
    return load_folder(path)
  return load_npz(path)


def load_npz(path: str | os.PathLike) -> CXRDataset:
  """Loads and validates an archive in the shared npz format.

  Raises:
    DataError: missing file, not an npz archive, no `images`, wrong shape/dtype,
      mismatched per-image array lengths, or unknown mask labels.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"{path}: no such file")
  try:
    with open(path, "rb") as f:     # ours to close: np.load leaks its own handle on a corrupt zip
      loaded = np.load(f, allow_pickle=False)
      if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"a single {type(loaded).__name__}, not an npz archive of named arrays")
      with loaded as archive:
        arrays = {k: archive[k] for k in archive.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
    raise DataError(f"{path}: not a readable npz archive ({e}); expected the shared npz format (`images` uint8 "
                    f"[N, 256, 256], ...), e.g. written by np.savez") from None
  if "images" not in arrays:
    raise DataError(f"{path}: no `images` array (found: {', '.join(sorted(arrays)) or 'none'}); "
                    "expected uint8 images of shape [N, 256, 256]")
  images = _check_images(arrays.pop("images"), f"{path}: `images`")
  n = images.shape[0]
  for name, value in arrays.items():
    if value.ndim == 0 or value.shape[0] != n:
      raise DataError(f"{path}: `{name}` has shape {value.shape}; expected first dimension {n} "
                      "(one entry per image)")
    if name in ("label", "sex", "age", "patient_id") and value.ndim != 1:
      raise DataError(f"{path}: `{name}` has shape {value.shape}; expected ({n},) (one value per image)")
  masks = arrays.pop("lung_masks", None)
  if masks is not None:
    masks = _check_masks(masks, images.shape, f"{path}: `lung_masks`")
  return _make_dataset(images, arrays, masks, str(path))


def concatenate(datasets: Sequence[CXRDataset]) -> CXRDataset:
  """One dataset of several archives' images, in order; `extra["archive"]` holds each image's archive index.

  Per-image arrays in `extra` are kept when every archive has them. Lung masks are
  kept when every archive has them. `standard_split` splits each archive's patients
  as it would split that archive alone (a patient found in several archives follows
  the first), so adding an archive never moves the patients of the ones before it.

  Raises:
    DataError: no datasets, or images of different sizes.
  """
  datasets = list(datasets)
  if not datasets:
    raise DataError("concatenate: no datasets given")
  shapes = {d.images.shape[1:] for d in datasets}
  if len(shapes) > 1:
    raise DataError(f"concatenate: images of different sizes {sorted(shapes)}")
  cat = lambda name: np.concatenate([getattr(d, name) for d in datasets])
  masks = None
  if all(d.lung_masks is not None for d in datasets):
    masks = np.concatenate([d.lung_masks for d in datasets])
  common = set.intersection(*(set(d.extra) for d in datasets)) - {"archive"}
  extra = {k: np.concatenate([np.asarray(d.extra[k]).astype(str) if d.extra[k].dtype.kind in "US"
                              else d.extra[k] for d in datasets]) for k in sorted(common)}
  archive = [d.extra["archive"] if "archive" in d.extra else np.zeros(len(d), np.int16) for d in datasets]
  offsets = np.cumsum([0] + [int(a.max()) + 1 if len(a) else 1 for a in archive[:-1]])
  extra["archive"] = np.concatenate([a.astype(np.int16) + o for a, o in zip(archive, offsets)])
  return CXRDataset(images=cat("images"), label=cat("label"), sex=cat("sex"), age=cat("age"),
                    patient_id=cat("patient_id"), lung_masks=masks,
                    source=",".join(d.source for d in datasets), extra=extra)


def views(dataset: CXRDataset) -> np.ndarray | None:
  """Each image's radiographic view as "AP", "PA", "LATERAL", ...: the first word of `extra["view"]`, upper case.

  The NIH archives say "AP" and "PA"; the COVID archive also says "AP Supine", which counts as AP.
  None when the dataset has no views.
  """
  view = dataset.extra.get("view")
  if view is None:
    return None
  words = np.char.split(np.char.upper(np.char.strip(np.asarray(view).astype(str))))
  return np.asarray([w[0] if w else "" for w in words]).astype(str)


def keep_abnormal_finding(dataset: CXRDataset, finding: str = "Pneumonia") -> CXRDataset:
  """Drops abnormal images whose `finding` does not name `finding` (normal images all stay).

  The NIH extra archive's label 1 means any finding; the subset's means pneumonia.
  Models whose "abnormal" is pneumonia keep the extra archive's normals and its
  pneumonias only. Images without a `finding` entry are kept as labelled.
  """
  if "finding" not in dataset.extra:
    return dataset
  names = np.asarray(dataset.extra["finding"]).astype(str)
  keep = (dataset.label != 1) | (np.char.find(names, finding) >= 0)
  return dataset.subset(keep)


def load_folder(folder: str | os.PathLike) -> CXRDataset:
  """Loads every PNG (and, with pydicom installed, DICOM) file of a folder, sorted by name.

  Images are converted to 8-bit grayscale, zero-padded to a centred square (never
  cropped) and resized to 256x256 with LANCZOS, as the shared archives were built.
  Metadata are unknown (label -1, sex 'U', age -1); patient_id is the file stem.
  """
  folder = pathlib.Path(folder)
  files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".dcm", ".dicom"))
  if not files:
    raise DataError(f"{folder}: no .png or .dcm files found")
  images = np.stack([_read_image_file(p) for p in files])
  return _make_dataset(images, {"source_id": np.asarray([p.name for p in files])}, None, str(folder),
                       default_patient_id=np.asarray([p.stem for p in files]))


def _read_image_file(path: pathlib.Path) -> np.ndarray:
  if path.suffix.lower() in (".dcm", ".dicom"):
    try:
      # Deferred: pydicom is an optional dependency (the `dicom` extra), needed only for a DICOM file; its import
      # takes 0.15 s after jax (2-core machine).
      import pydicom  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise DataError(f"{path}: reading DICOM needs the `dicom` extra (pip install 'jaxcxr[dicom]')") from None
    try:
      ds = pydicom.dcmread(path)
      pixels = ds.pixel_array.astype(np.float64)
    except Exception as e:  # pylint: disable=broad-except  (pydicom raises many types for a bad file)
      raise DataError(f"{path}: not a readable DICOM image ({type(e).__name__}: {e})") from None
    if pixels.ndim != 2:
      raise DataError(f"{path}: a DICOM image of shape {pixels.shape}; expected one grayscale frame (H, W)")
    lo, hi = float(pixels.min()), float(pixels.max())
    pixels = (pixels - lo) / max(hi - lo, 1e-12) * 255.0
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":  # inverted display
      pixels = 255.0 - pixels
    image = Image.fromarray(np.round(pixels).astype(np.uint8))
  else:
    try:
      with Image.open(path) as opened:   # closed on a truncated file too
        opened.load()
        image = opened.copy()
    except OSError as e:
      raise DataError(f"{path}: not a readable image ({e})") from None
    if image.mode in ("RGBA", "LA"):  # alpha-composite on black, as the shared archives were built
      background = Image.new("RGBA", image.size, (0, 0, 0, 255))
      image = Image.alpha_composite(background, image.convert("RGBA"))
    if image.mode in ("I;16", "I"):
      pixels = np.asarray(image, np.float64)
      pixels = (pixels - pixels.min()) / max(float(np.ptp(pixels)), 1e-12) * 255.0
      image = Image.fromarray(np.round(pixels).astype(np.uint8))
    image = image.convert("L")
  w, h = image.size
  side = max(w, h)
  square = Image.new("L", (side, side), 0)
  square.paste(image, ((side - w) // 2, (side - h) // 2))
  return np.asarray(square.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS), np.uint8)


def _check_images(images: np.ndarray, what: str) -> np.ndarray:
  if np.issubdtype(images.dtype, np.floating) and np.isnan(images).any():
    raise DataError(f"{what} has {int(np.isnan(images).sum())} NaN pixel(s); expected uint8 in [0, 255]")
  if images.dtype != np.uint8:
    raise DataError(f"{what} has dtype {images.dtype}; expected uint8 in [0, 255]")
  if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.shape[0] == 0:
    raise DataError(f"{what} has shape {images.shape}; expected [N, {IMAGE_SIZE}, {IMAGE_SIZE}] with N > 0")
  return images


def _check_masks(masks: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
  if masks.shape != shape:
    raise DataError(f"{what} has shape {masks.shape}; expected {shape} (same as `images`)")
  if not np.issubdtype(masks.dtype, np.integer):
    raise DataError(f"{what} has dtype {masks.dtype}; expected integer labels 0, 1, 2")
  unknown = np.setdiff1d(np.unique(masks), [0, 1, 2])
  if unknown.size:
    raise DataError(f"{what} has unknown label(s) {unknown.tolist()}; expected 0 background, "
                    "1 patient's right lung, 2 patient's left lung")
  return masks.astype(np.uint8)


def _make_dataset(images, arrays, masks, source, default_patient_id=None) -> CXRDataset:
  n = images.shape[0]
  arrays = dict(arrays)
  label = np.asarray(arrays.pop("label", np.full(n, -1)))
  if not np.isin(label, [-1, 0, 1]).all():
    raise DataError(f"{source}: `label` has values {np.unique(label).tolist()}; expected 0, 1 (or -1 unknown)")
  sex = np.char.upper(np.asarray(arrays.pop("sex", np.full(n, "U"))).astype(str))
  if not np.isin(sex, ["M", "F", "U"]).all():
    raise DataError(f"{source}: `sex` has values {np.unique(sex).tolist()}; expected 'M', 'F' or 'U'")
  age = np.asarray(arrays.pop("age", np.full(n, -1)))
  if not np.issubdtype(age.dtype, np.integer):
    raise DataError(f"{source}: `age` has dtype {age.dtype}; expected integer years (-1 unknown)")
  if age.size and (age.min() < -1 or age.max() > np.iinfo(np.int16).max):
    raise DataError(f"{source}: `age` has values in [{age.min()}, {age.max()}]; expected years >= 0 (-1 unknown)")
  if default_patient_id is None:
    default_patient_id = np.asarray([f"image{i}" for i in range(n)])
  patient_id = np.asarray(arrays.pop("patient_id", default_patient_id)).astype(str)
  return CXRDataset(images=images, label=label.astype(np.int8), sex=sex, age=age.astype(np.int16),
                    patient_id=patient_id, lung_masks=masks, source=source, extra=arrays)


def file_sha256(path: str | os.PathLike) -> str:
  """sha256 hex digest of a file, read in chunks (DataError if it cannot be read)."""
  digest = hashlib.sha256()
  try:
    with open(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
  except OSError as e:
    raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from None
  return digest.hexdigest()


def default_data_path(name: str) -> pathlib.Path:
  """`$JAXCXR_DATA/name`; DataError when JAXCXR_DATA is unset (pass paths explicitly instead)."""
  root = os.environ.get("JAXCXR_DATA")
  if not root:
    raise DataError(f"no data path given and JAXCXR_DATA is unset; pass --data or set JAXCXR_DATA "
                    f"to the folder holding {name}")
  return pathlib.Path(root) / name


# ----------------------------------------------------------------------------- splits

# The patient-level split every shipped model uses: train / validation / test fractions and seed.
STANDARD_SPLIT = (0.7, 0.15, 0.15)
STANDARD_SPLIT_SEED = 0


def standard_split(dataset: CXRDataset) -> dict[str, np.ndarray]:
  """The shipped models' patient-level split of `dataset`, stratified by label.

  Training uses "train", settings are chosen on "val", and "test" is reported once.
  Deterministic per patient (see `split_by_patient`), so every model trained on the
  same archive holds out the same patients. For archives joined with `concatenate`,
  each archive's patients are split as in that archive alone (a patient in several
  archives follows the first, through the label of its first image).
  """
  strata = dataset.label.astype(np.int64)
  if "archive" in dataset.extra:   # each archive's patients are split as in that archive alone
    strata = strata + 3 * np.asarray(dataset.extra["archive"], np.int64)
  return split_by_patient(dataset.patient_id, STANDARD_SPLIT, stratify=strata, seed=STANDARD_SPLIT_SEED)



def split_by_patient(
    patient_id: np.ndarray,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    *,
    stratify: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
  """Deterministic patient-level train/val/test split: no patient appears in two parts.

  Each patient gets a pseudo-random rank from sha256(seed, patient_id) (independent
  of the order and of other patients, so adding images never moves a patient),
  and patients are assigned in rank order to reach the fractions. With `stratify`
  (per-image labels), patients are split within each stratum of their first
  image's label, which keeps the label balance in every part.

  Returns:
    {"train", "val", "test"}: sorted int64 image indices.
  """
  fractions = tuple(float(f) for f in fractions)
  if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
    raise DataError(f"fractions {fractions}: expected three non-negative numbers summing to 1")
  pid, stratify = _check_patients(patient_id, stratify, "split_by_patient")
  patients, first, inverse = np.unique(pid, return_index=True, return_inverse=True)
  strata = np.zeros(len(patients), np.int64) if stratify is None else stratify[first]
  part = np.empty(len(patients), np.int8)
  rank = _patient_ranks(patients, seed)
  bounds = np.cumsum(fractions)[:2]
  for s in np.unique(strata):
    members = np.flatnonzero(strata == s)
    members = members[np.argsort(rank[members], kind="stable")]
    cut = np.round(bounds * len(members)).astype(int)
    part[members[: cut[0]]] = 0
    part[members[cut[0]: cut[1]]] = 1
    part[members[cut[1]:]] = 2
  image_part = part[inverse]
  return {name: np.flatnonzero(image_part == i) for i, name in enumerate(("train", "val", "test"))}


def patient_folds(patient_id: np.ndarray, folds: int, *, stratify: np.ndarray | None = None,
                  seed: int = 0) -> np.ndarray:
  """Patient-level k-fold assignment: each image's fold in [0, folds), no patient in two folds.

  Patients are ranked as in `split_by_patient` (sha256 of seed and patient id) and dealt to
  the folds in turn within each stratum of their first image's label, so every fold keeps
  the label balance. A new seed gives a new partition (a repeat of the cross-validation).

  Raises:
    DataError: fewer than 2 folds, or fewer patients than folds.
  """
  if not isinstance(folds, (int, np.integer)) or isinstance(folds, bool) or folds < 2:
    raise DataError(f"patient_folds: expected an integer of at least 2 folds, got {folds!r}")
  pid, stratify = _check_patients(patient_id, stratify, "patient_folds")
  patients, first, inverse = np.unique(pid, return_index=True, return_inverse=True)
  strata = np.zeros(len(patients), np.int64) if stratify is None else stratify[first]
  if len(patients) < folds:
    raise DataError(f"patient_folds: {len(patients)} patients, fewer than {folds} folds")
  rank = _patient_ranks(patients, seed)
  order = np.lexsort((rank, strata))          # by stratum, then rank: dealing in turn balances every stratum
  fold = np.empty(len(patients), np.int64)
  fold[order] = np.arange(len(patients)) % folds
  return fold[inverse]


def _check_patients(patient_id, stratify, what: str) -> tuple[np.ndarray, np.ndarray | None]:
  """(patient ids as str (N,), stratify (N,) or None), DataError unless both are 1-D of one length."""
  pid = np.asarray(patient_id).astype(str)
  if pid.ndim != 1:
    raise DataError(f"{what}: expected patient ids of shape (N,), got {pid.shape}")
  if stratify is not None:
    stratify = np.asarray(stratify)
    if stratify.shape != pid.shape:
      raise DataError(f"{what}: stratify has shape {stratify.shape}; expected {pid.shape} (one label per image)")
  return pid, stratify


def _patient_ranks(patients: np.ndarray, seed: int) -> np.ndarray:
  """A pseudo-random rank per patient from sha256(seed, patient_id), independent of the others. uint64."""
  return np.array([int.from_bytes(hashlib.sha256(f"{seed}:{p}".encode()).digest()[:8], "little")
                   for p in patients], np.uint64)


def balanced_patient_halves(patient_id: np.ndarray, *, seed: int = 0) -> np.ndarray:
  """Two patient-disjoint halves with equal image counts (within one patient's images).

  Patients with the most images first, those with equally many in the seeded order of
  `split_by_patient`'s ranks; each goes to the half with fewer images so far. A plain 50/50
  patient split left halves of 29 and 47 of the 76 normal test images (seed 1), too few for
  the 32 dimensions of `evaluate gan`'s two-sample tests in one half.

  Returns:
    bool (N,): True for the images of half A.
  """
  pid = np.asarray(patient_id).astype(str)
  patients, inverse, counts = np.unique(pid, return_inverse=True, return_counts=True)
  to_a = np.zeros(len(patients), bool)
  sizes = [0, 0]
  for i in np.lexsort((_patient_ranks(patients, seed), -counts)):   # most images first, seeded order among equals
    side = 0 if sizes[0] <= sizes[1] else 1
    to_a[i] = side == 0
    sizes[side] += counts[i]
  return to_a[inverse]


# ----------------------------------------------------------------------------- pixel spaces


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 (N, H, W) -> uint8 (N, size, size) with PIL LANCZOS, as the shared archives were built."""
  images = np.asarray(images)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  if images.ndim != 3 or images.dtype != np.uint8:
    raise DataError(f"expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
  if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
    raise DataError(f"resize_uint8: size must be a positive integer, got {size!r}")
  if images.shape[1:] == (size, size):
    return np.ascontiguousarray(images)

  return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.LANCZOS), np.uint8)
                   for im in images])



def _numeric(images):
  """`images` as an array (jax arrays and tracers as they are); DataError unless bool, integer or float."""
  if not isinstance(images, jax.Array):
    images = np.asarray(images)
  if images.dtype != bool and not (jnp.issubdtype(images.dtype, jnp.integer)
                                   or jnp.issubdtype(images.dtype, jnp.floating)):
    raise DataError(f"expected uint8 or float pixels, got dtype {images.dtype}")
  return images


def to_unit(images) -> jax.Array:
  """uint8 [0, 255] -> float32 [0, 1]."""
  return jnp.asarray(_numeric(images), jnp.float32) / 255.0


def to_signed(images) -> jax.Array:
  """uint8 [0, 255] -> float32 [-1, 1] (generator space)."""
  return jnp.asarray(_numeric(images), jnp.float32) / 127.5 - 1.0


def unit_to_signed(images) -> jax.Array:
  """float [0, 1] -> float [-1, 1]."""
  return _numeric(images) * 2.0 - 1.0


def signed_to_unit(images) -> jax.Array:
  """float [-1, 1] -> float [0, 1]."""
  return (_numeric(images) + 1.0) * 0.5


def signed_to_uint8(images) -> jax.Array:
  """float [-1, 1] (generator space) -> uint8 [0, 255], clipped and rounded, on device (jittable).

  The one rounding every sampler, the upsampler and the score predictor apply to generated images.
  """
  return jnp.round(jnp.clip((jnp.asarray(_numeric(images)) + 1.0) * 127.5, 0.0, 255.0)).astype(jnp.uint8)


def to_uint8(images, *, signed: bool = False) -> np.ndarray:
  """float [0, 1] (or [-1, 1] with `signed=True`) -> host uint8, clipped and rounded."""
  images = np.asarray(_numeric(images), np.float32)
  if signed:
    images = (images + 1.0) * 0.5
  return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------- batches


def iterate_batches(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    key: jax.Array | None = None,
    drop_remainder: bool = True,
    repeat: bool = False,
    prefetch: int = 2,
    sharding: jax.sharding.Sharding | None = None,
) -> Iterator[dict[str, jax.Array]]:
  """Yields dicts of device arrays, `prefetch` batches ahead on a background thread.

  Args:
    arrays: host arrays with equal first dimension (e.g. {"image": ..., "label": ...}).
    batch_size: images per batch (static shape; with drop_remainder=False the last
      batch is padded to `batch_size` and a boolean "mask" entry marks real rows).
    key: shuffles each epoch with fold_in(key, epoch) when given; else sequential order.
    repeat: cycle over epochs forever.
    prefetch: batches transferred ahead of use (host-to-device overlap).
    sharding: where to put batches (e.g. a NamedSharding over the batch axis); default device.
  """
  n = _common_length(arrays)
  if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size <= 0:
    raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
  if drop_remainder and n < batch_size:
    raise DataError(f"{n} examples are fewer than one batch of {batch_size}")

  def host_batches():
    epoch = 0
    while True:
      order = (np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
               if key is not None else np.arange(n))
      stop = n - n % batch_size if drop_remainder else n
      for start in range(0, stop, batch_size):
        idx = order[start: start + batch_size]
        batch = {k: v[idx] for k, v in arrays.items()}
        if not drop_remainder:
          pad = batch_size - len(idx)
          batch = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
          batch["mask"] = np.arange(batch_size) < len(idx)
        yield batch
      epoch += 1
      if not repeat:
        return

  put = (lambda b: jax.device_put(b, sharding)) if sharding is not None else jax.device_put
  yield from _prefetch(map(put, host_batches()), prefetch)


def _common_length(arrays: Mapping[str, np.ndarray]) -> int:
  lengths = {k: len(v) for k, v in arrays.items()}
  if not lengths or len(set(lengths.values())) != 1:
    raise DataError(f"arrays must be non-empty with one common length, got {lengths}")
  return next(iter(lengths.values()))


def _prefetch(iterator: Iterator, size: int) -> Iterator:
  """Runs `iterator` on a daemon thread, `size` items ahead; re-raises its errors."""
  if size <= 0:
    yield from iterator
    return
  items: queue.Queue = queue.Queue(maxsize=size)
  done = object()
  stop = threading.Event()

  def worker():
    try:
      for item in iterator:
        while not stop.is_set():
          try:
            items.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if stop.is_set():
          return
      items.put(done)
    except BaseException as e:  # pylint: disable=broad-except
      items.put(e)

  thread = threading.Thread(target=worker, daemon=True)
  thread.start()
  try:
    while True:
      item = items.get()
      if item is done:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()


# ----------------------------------------------------------------------------- augmentation


@functools.partial(jax.jit, static_argnames=("config",))
def augment(
    key: jax.Array,
    images: jax.Array,
    config: AugmentConfig = AugmentConfig(),
    masks: jax.Array | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Random per-example augmentation, jit-able and batched; one key per example via split.

  Geometric (rotation, translation, scale about the centre, bilinear, zero fill),
  then horizontal flip with probability `hflip_prob` (off by default: it swaps
  heart and lung sides), Gaussian blur with a random sigma, and intensity jitter
  (contrast about the image mean, brightness), clipped to [0, 1]. Generator-space
  images go through `signed_to_unit` first.

  Args:
    key: PRNG key for the batch.
    images: float32 (B, H, W, 1) in [0, 1].
    config: ranges of each transformation (static).
    masks: optional integer label maps (B, H, W) (0 background, 1 image-left lung,
      2 image-right lung); they get the same geometry with nearest-neighbour
      sampling, and a flip swaps labels 1 and 2 so that 1 stays the image-left lung.

  Returns:
    float32 (B, H, W, 1) in [0, 1]; with `masks`, the pair (images, masks).
  """
  if not hasattr(images, "ndim") or images.ndim != 4 or images.shape[-1] != 1:
    raise ValueError(f"images: expected shape (B, H, W, 1) (an array), got {getattr(images, 'shape', type(images))}")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"images: expected float images in [0, 1], got dtype {images.dtype}; uint8 images go through "
                     "data.to_unit first")
  if masks is not None and masks.shape != images.shape[:3]:
    raise ValueError(f"masks: expected shape {images.shape[:3]} (images without the channel), got {masks.shape}")
  keys = jax.random.split(key, images.shape[0])
  one = functools.partial(_augment_one, config=config)
  if masks is None:
    return jax.vmap(lambda k, x: one(k, x, None)[0])(keys, images)
  return jax.vmap(one)(keys, images, masks)


def _augment_one(key, image, mask, config: AugmentConfig):
  h, w = image.shape[:2]
  k_rot, k_shift, k_scale, k_flip, k_blur, k_con, k_bri = jax.random.split(key, 7)
  angle = jnp.deg2rad(config.rotation_deg) * jax.random.uniform(k_rot, minval=-1.0, maxval=1.0)
  shift = config.translation * jax.random.uniform(k_shift, (2,), minval=-1.0, maxval=1.0) * jnp.array(
      [h, w], jnp.float32)
  scale = 1.0 + config.scale * jax.random.uniform(k_scale, minval=-1.0, maxval=1.0)
  # Inverse map: output pixel -> input coordinate (rotate/scale about the centre, then shift).
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  dy, dx = yy - cy - shift[0], xx - cx - shift[1]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  src_y = (cos * dy - sin * dx) / scale + cy
  src_x = (sin * dy + cos * dx) / scale + cx
  flip = jax.random.uniform(k_flip) < config.hflip_prob
  src_x = jnp.where(flip, (w - 1) - src_x, src_x)
  out = jax.scipy.ndimage.map_coordinates(image[..., 0], [src_y, src_x], order=1, mode="constant", cval=0.0)
  if config.blur_sigma > 0:
    out = _gaussian_blur(out, config.blur_sigma * jax.random.uniform(k_blur))
  mean = out.mean()
  contrast = 1.0 + config.contrast * jax.random.uniform(k_con, minval=-1.0, maxval=1.0)
  brightness = config.brightness * jax.random.uniform(k_bri, minval=-1.0, maxval=1.0)
  out = jnp.clip((out - mean) * contrast + mean + brightness, 0.0, 1.0)[..., None]
  if mask is None:
    return out, None
  warped = jax.scipy.ndimage.map_coordinates(mask.astype(jnp.float32), [src_y, src_x], order=0, mode="constant",
                                             cval=0.0).astype(mask.dtype)
  swapped = jnp.where(warped == 1, 2, jnp.where(warped == 2, 1, warped)).astype(mask.dtype)
  return out, jnp.where(flip, swapped, warped)


def _gaussian_blur(image: jax.Array, sigma: jax.Array, radius: int = 3) -> jax.Array:
  """Separable Gaussian blur with a traced sigma (sigma ~ 0 gives the identity)."""
  t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  kernel = jnp.exp(-0.5 * (t / jnp.maximum(sigma, 1e-3)) ** 2)
  kernel = kernel / kernel.sum()
  padded = jnp.pad(image, radius, mode="edge")
  rows = jax.vmap(lambda r: jnp.convolve(r, kernel, mode="valid"))(padded)
  return jax.vmap(lambda c: jnp.convolve(c, kernel, mode="valid"), in_axes=1, out_axes=1)(rows)
