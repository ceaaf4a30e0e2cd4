"""Input checks shared by the metrics."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_real"]


def check_real(name: str, x: Any) -> np.ndarray:
  """`x` as a numpy array, refused unless its dtype is bool, integer or float (not complex, strings, objects)."""
  x = np.asarray(x)
  if x.dtype.kind not in "biuf":
    raise ValueError(f"{name} must hold real numbers (bool, integer or float), got dtype {x.dtype}")
  return x
