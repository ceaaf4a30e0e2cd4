"""Condition vectors of the conditional GAN: (sex, normalised age, label) per image.

Sex is 0 male / 1 female, age is (years - 45) / 20, label is 0 normal / 1 abnormal.
A model trained without some condition (e.g. the normal-only GAN with
`conditions=("sex", "age")`) gets only the columns it names, in the order of
`jaxcxr.config.KNOWN_CONDITIONS`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxcxr import data
from jaxcxr.config import AGE_CENTER, AGE_SCALE, KNOWN_CONDITIONS


def normalize_age(age) -> np.ndarray:
  """Years -> the `age` condition, (age - 45) / 20, float32."""
  return ((np.asarray(age, np.float32) - AGE_CENTER) / AGE_SCALE).astype(np.float32)


def make_condition(sex, age, label=0, *, conditions: Sequence[str] = KNOWN_CONDITIONS) -> np.ndarray:
  """Builds condition vectors from per-image (or broadcast scalar) metadata.

  Args:
    sex: 'M'/'F' strings or 0 (male) / 1 (female) numbers; scalar or (B,).
    age: age in years; scalar or (B,).
    label: 0 normal / 1 abnormal; scalar or (B,). Ignored when "label" is not a condition.
    conditions: which columns to emit, a subsequence of ("sex", "age", "label").

  Returns:
    float32 (B, len(conditions)); B = 1 when every input is a scalar.

  Raises:
    jaxcxr.data.DataError: unknown sex codes, unknown (negative) ages, or labels other than 0/1.
  """
  sex = np.atleast_1d(np.asarray(sex))
  if sex.dtype.kind in "USO":
    codes = np.char.upper(sex.astype(str))
    if not np.isin(codes, ["M", "F"]).all():
      raise data.DataError(f"sex: expected 'M' or 'F', got {sorted(set(codes.tolist()) - {'M', 'F'})}")
    sex = (codes == "F").astype(np.float32)
  else:
    sex = sex.astype(np.float32)
    if not np.isin(sex, [0.0, 1.0]).all():
      raise data.DataError(f"sex: expected 0 (male) or 1 (female), got {np.unique(sex).tolist()}")
  age = np.atleast_1d(np.asarray(age, np.float32))
  if (age < 0).any():
    raise data.DataError("age: expected ages in years >= 0 (unknown ages, -1, cannot condition the GAN)")
  label = np.atleast_1d(np.asarray(label, np.float32))
  if "label" in conditions and not np.isin(label, [0.0, 1.0]).all():
    raise data.DataError(f"label: expected 0 (normal) or 1 (abnormal), got {np.unique(label).tolist()}")
  sex, age, label = np.broadcast_arrays(sex, normalize_age(age), label)
  columns = {"sex": sex, "age": age, "label": label}
  unknown = [c for c in conditions if c not in columns]
  if unknown:
    raise ValueError(f"conditions: unknown names {unknown}; expected a subsequence of {KNOWN_CONDITIONS}")
  return np.stack([columns[c] for c in conditions], axis=-1).astype(np.float32)


def group_condition_batch(group: str, n: int, label: int = 0, *,
                          conditions: Sequence[str] = KNOWN_CONDITIONS) -> np.ndarray:
  """n identical condition vectors for an age-sex group (its mid-age) and a label.

  Returns:
    float32 (n, len(conditions)).

  Raises:
    jaxcxr.data.DataError: unknown group name (from `data.parse_group`).
  """
  cond = data.group_condition(group)
  return np.repeat(make_condition(cond["sex"], cond["age"], label, conditions=conditions), n, axis=0)


def dataset_condition(dataset: data.CXRDataset, *, conditions: Sequence[str] = KNOWN_CONDITIONS) -> np.ndarray:
  """Condition vectors of every image of a dataset, float32 (N, len(conditions))."""
  return make_condition(dataset.sex, dataset.age, dataset.label, conditions=conditions)
