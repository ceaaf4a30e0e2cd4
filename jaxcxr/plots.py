"""Figures: image grids and the one way matplotlib figures are written.

Every writer goes through a temporary file and `os.replace`, so a kill never
leaves a half-written figure (DESIGN.md section 11).
"""

from __future__ import annotations

import io
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from jaxcxr.io import write_bytes_atomic


def save_figure(fig, path: str | os.PathLike, *, dpi: float | None = None) -> pathlib.Path:
  """Writes a matplotlib figure as PNG, atomically (`dpi` None keeps the figure's own)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=dpi)
  return write_bytes_atomic(path, buffer.getvalue())


def _to_uint8(images) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  if images.ndim != 3:
    raise ValueError(f"save_image_grid: expected images of shape (N, H, W) or (N, H, W, 1), got {images.shape}")
  if images.dtype == np.uint8:
    return images
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f"save_image_grid: expected uint8 or float images, got {images.dtype}")
  return np.round(np.clip(np.nan_to_num(images.astype(np.float32)), 0.0, 1.0) * 255.0).astype(np.uint8)


def save_image_grid(images, path: str | os.PathLike, *, nrow: int,
                    labels: Sequence[str] | None = None, padding: int = 2) -> pathlib.Path:
  """Tiles grayscale images into one PNG, `nrow` images per row, written atomically.

  Args:
    images: uint8 (N, H, W) or (N, H, W, 1) in [0, 255], or float in unit space
      [0, 1] (clipped; convert generator output with `data.signed_to_unit` first).
    path: PNG file to write; parent folders are created.
    nrow: images per row of the grid.
    labels: optional caption per image (N strings; "" for none), drawn at the top
      left of its tile.
    padding: pixels of black between tiles.

  Returns:
    The path written.

  Raises:
    ValueError: bad shapes, dtype, nrow or number of labels.
  """
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top

  tiles = _to_uint8(images)
  n, h, w = tiles.shape
  if n == 0:
    raise ValueError("save_image_grid: no images")
  if nrow <= 0:
    raise ValueError(f"save_image_grid: nrow must be positive, got {nrow}")
  if labels is not None and len(labels) != n:
    raise ValueError(f"save_image_grid: got {len(labels)} labels for {n} images")
  cols = min(nrow, n)
  rows = -(-n // cols)
  grid = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding), np.uint8)
  for i, tile in enumerate(tiles):
    r, c = divmod(i, cols)
    top, left = padding + r * (h + padding), padding + c * (w + padding)
    grid[top: top + h, left: left + w] = tile
  image = Image.fromarray(grid).convert("RGB")
  if labels is not None:
    draw = ImageDraw.Draw(image)
    for i, text in enumerate(labels):
      if text:
        r, c = divmod(i, cols)
        x, y = padding + c * (w + padding) + 1, padding + r * (h + padding) + 1
        box = draw.textbbox((x, y), str(text))
        draw.rectangle(box, fill=(0, 0, 0))
        draw.text((x, y), str(text), fill=(255, 255, 0))
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return write_bytes_atomic(path, buffer.getvalue())
