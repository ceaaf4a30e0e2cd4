"""Figures: image grids, the one way matplotlib figures are written, and the pre-filter study's figures.

Every writer goes through a temporary file and `os.replace`, so a kill never
leaves a half-written figure (docs/conventions.md).

Pre-filter study figures (`jaxcxr.prefilter.write_latent_report`): `save_roc_pr_curves`,
`save_confusion_matrix`, `save_correlation_heatmap`, `save_extremes_scatter`.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from jaxcxr import io as io_lib


def save_figure(fig, path: str | os.PathLike, *, dpi: float | None = None) -> pathlib.Path:
  """Writes a matplotlib figure as PNG, atomically (`dpi` None keeps the figure's own; `jaxcxr.io.save_figure`)."""
  return io_lib.save_figure(path, fig, dpi=dpi)


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
  tiles = _to_uint8(images)
  n, h, w = tiles.shape
  if n == 0:
    raise ValueError("save_image_grid: no images")
  if not isinstance(nrow, (int, np.integer)) or isinstance(nrow, bool) or nrow <= 0:
    raise ValueError(f"save_image_grid: nrow must be a positive integer, got {nrow!r}")
  if labels is not None and len(labels) != n:
    raise ValueError(f"save_image_grid: expected one label per image, got {len(labels)} labels for {n} images")
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
  return io_lib.save_png(path, image)


# ----------------------------------------------------------------------------- pre-filter study figures
#
# They draw on a bare `matplotlib.figure.Figure` (no pyplot, no global backend switch; PNG
# through Agg) and write through `save_figure`.


def _new_figure(width: float, height: float, ncols: int = 1):
  # Deferred (measured heavy boundaries): matplotlib.figure here, 1.0 s after `import jaxcxr.plots`, and
  # `jaxcxr.metrics` (jax and scikit-learn) in `save_roc_pr_curves`, 5.7 s after it (2-core machine, median of 3):
  # this module itself imports only numpy and PIL.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
  return fig, fig.subplots(1, ncols, squeeze=False)[0]


def save_roc_pr_curves(curves: Mapping[str, tuple[Any, Any]], path: str | os.PathLike, *,
                       title: str = "") -> pathlib.Path:
  """ROC (left) and precision-recall (right) curves of several scorers in one PNG, written atomically.

  Args:
    curves: label -> (y (N,) binary with both classes, scores (N,)); the legend
      shows each ROC AUC.
    path: PNG file; parent folders are created.
    title: figure title.

  Returns:
    The path written.

  Raises:
    ValueError: no curves, or bad labels/scores (as `metrics.compute_roc_curve`).
  """
  from jaxcxr import metrics as metrics_lib  # pylint: disable=g-import-not-at-top

  if not curves:
    raise ValueError("save_roc_pr_curves: no curves")
  fig, (ax_roc, ax_pr) = _new_figure(10, 4.5, ncols=2)
  base_rates = []
  for label, (y, scores) in curves.items():
    fpr, tpr, _ = metrics_lib.compute_roc_curve(scores, y)
    precision, recall, _ = metrics_lib.compute_pr_curve(scores, y)
    auc = metrics_lib.compute_roc_auc(scores, y)
    ax_roc.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax_pr.plot(recall, precision, label=label, drawstyle="steps-post")
    base_rates.append(float(np.mean(np.asarray(y, np.float64))))
  ax_roc.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
  ax_roc.set(xlabel="FPR", ylabel="TPR", xlim=(0, 1), ylim=(0, 1.01), title="ROC")
  ax_roc.legend(loc="lower right", fontsize="small")
  for rate in sorted(set(base_rates)):
    ax_pr.axhline(rate, color="grey", linestyle=":", linewidth=1)
  ax_pr.set(xlabel="recall (TPR)", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01),
            title="precision-recall (dotted: base rate)")
  if title:
    fig.suptitle(title)
  return save_figure(fig, path)


def save_confusion_matrix(confusion: Any, path: str | os.PathLike, *, title: str = "",
                          labels: tuple[str, str] = ("invalid", "valid")) -> pathlib.Path:
  """A 2x2 confusion matrix `[[tn, fp], [fn, tp]]` (rows truth, columns prediction) as a PNG, atomically.

  Args:
    confusion: int (2, 2) counts, e.g. `jaxcxr.prefilter.threshold_report(...)["confusion"]`.
    path: PNG file; parent folders are created.
    title: axes title.
    labels: names of class 0 and class 1.

  Returns:
    The path written.

  Raises:
    ValueError: not a (2, 2) array of non-negative counts.
  """
  confusion = np.asarray(confusion)
  if (confusion.shape != (2, 2) or confusion.dtype.kind not in "iuf" or not np.isfinite(confusion).all()
      or np.any(confusion < 0)):
    raise ValueError(f"save_confusion_matrix: expected (2, 2) non-negative counts, got {confusion}")
  fig, (ax,) = _new_figure(4, 3.6)
  total = max(int(confusion.sum()), 1)
  ax.imshow(confusion, cmap="Blues", vmin=0)
  for (i, j), count in np.ndenumerate(confusion):
    dark = count > confusion.max() / 2
    ax.text(j, i, f"{int(count)}\n{100 * count / total:.1f}%", ha="center", va="center",
            color="white" if dark else "black")
  ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=list(labels), yticklabels=list(labels),
         xlabel="predicted (accepted)", ylabel="true", title=title)
  return save_figure(fig, path)


def save_correlation_heatmap(correlations: Any, names: Sequence[str], path: str | os.PathLike, *,
                             title: str = "Pearson r(score, z_d)") -> pathlib.Path:
  """Heatmap of a (n_scores, D) correlation matrix (`jaxcxr.prefilter.latent_score_correlations`) as a PNG, atomically.

  Args:
    correlations: float (K, D) in [-1, 1]; NaN cells are left blank.
    names: K row names.
    path: PNG file; parent folders are created.
    title: axes title.

  Returns:
    The path written.

  Raises:
    ValueError: not 2-D, or len(names) != K.
  """
  correlations = np.asarray(correlations, np.float64)
  if correlations.ndim != 2 or correlations.shape[0] != len(names):
    raise ValueError(f"save_correlation_heatmap: expected ({len(names)}, D) correlations, got {correlations.shape}")
  limit = float(np.nanmax(np.abs(correlations))) if np.any(np.isfinite(correlations)) else 1.0
  fig, (ax,) = _new_figure(12, 1.2 + 0.45 * len(names))
  image = ax.imshow(np.ma.masked_invalid(correlations), cmap="RdBu_r", vmin=-limit, vmax=limit,
                    aspect="auto", interpolation="nearest")
  ax.set(yticks=range(len(names)), yticklabels=list(names), xlabel="latent coordinate d", title=title)
  fig.colorbar(image, ax=ax, fraction=0.03)
  return save_figure(fig, path)


def save_extremes_scatter(embedding: Mapping[str, np.ndarray], path: str | os.PathLike, *,
                          title: str = "") -> pathlib.Path:
  """Scatter of `jaxcxr.prefilter.embed_extremes` output (best latents vs worst) as a PNG, atomically.

  Args:
    embedding: the dict `embed_extremes` returns.
    path: PNG file; parent folders are created.
    title: axes title (e.g. the score's name).

  Returns:
    The path written.

  Raises:
    ValueError: an embedding without the arrays `embed_extremes` returns, or of mismatched shapes.
  """
  missing = sorted({"embedding", "is_best", "explained_variance_ratio"} - set(embedding))
  if missing:
    raise ValueError(f"save_extremes_scatter: the embedding lacks {missing}; pass what embed_extremes returns")
  points, best = np.asarray(embedding["embedding"]), np.asarray(embedding["is_best"], bool)
  if points.ndim != 2 or points.shape[1] < 2 or best.shape != points.shape[:1]:
    raise ValueError(f"save_extremes_scatter: expected embedding (N, 2) and is_best (N,), got {points.shape} and "
                     f"{best.shape}")
  ratio = np.asarray(embedding["explained_variance_ratio"])
  fig, (ax,) = _new_figure(5, 4.5)
  ax.scatter(points[best, 0], points[best, 1], s=10, alpha=0.7, label=f"best {int(best.sum())}")
  ax.scatter(points[~best, 0], points[~best, 1], s=10, alpha=0.7, marker="x", label=f"worst {int((~best).sum())}")
  ax.set(xlabel=f"PC1 ({100 * ratio[0]:.1f}%)", ylabel=f"PC2 ({100 * ratio[1]:.1f}%)", title=title)
  ax.legend(fontsize="small")
  return save_figure(fig, path)

