"""Tests of the matplotlib figures of `jaxcxr.plots` (the pre-filter study's, also re-exported by `prefilter`)."""

import numpy as np

from jaxcxr import plots, prefilter


def test_figures_are_written(tmp_path):
  rng = np.random.default_rng(7)
  y = rng.integers(0, 2, 200)
  s = y + rng.normal(size=200)
  written = [
      plots.save_roc_pr_curves({"model": (y, s), "chance": (y, rng.normal(size=200))}, tmp_path / "roc.png",
                               title="valid"),
      plots.save_confusion_matrix(prefilter.threshold_report(y, s, 0.5)["confusion"], tmp_path / "cm.png"),
      plots.save_correlation_heatmap(np.array([[0.1, np.nan, -0.3]]), ["score_shape"], tmp_path / "r.png"),
      plots.save_extremes_scatter(prefilter.embed_extremes(rng.normal(size=(50, 4)), s[:50], 10),
                                  tmp_path / "pca.png", title="score_shape"),
  ]
  for path in written:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "pca.png", "r.png", "roc.png"]


def test_prefilter_reexports_the_figures():
  for name in ("save_roc_pr_curves", "save_confusion_matrix", "save_correlation_heatmap", "save_extremes_scatter"):
    assert getattr(prefilter, name) is getattr(plots, name)
