"""Evaluation metrics: distribution distances, classification curves, segmentation overlap.

Mirrors the metric set of the original CXR-GAN study and MONAI's naming
(`compute_roc_auc(y_pred, y)`, `compute_dice`, ...):

* Distribution distances between feature sets (rows are samples):
  `frechet_distance` (FID formula, float64 on host) and `sinkhorn_distance`
  (debiased entropic OT in jitted jnp, optionally label-aware as in OTDD).
* Diversity: `mean_pairwise_distance` (blockwise, jitted).
* Binary classification, on host in float64: `compute_roc_auc` (rank formula,
  equals `sklearn.metrics.roc_auc_score`), `compute_roc_auc_ci` (DeLong standard
  error and interval; `roc_auc_interval` for reports), `compare_roc_auc` (DeLong's
  paired test), `compute_roc_curve` and `compute_pr_curve` (thin wrappers around sklearn), `compute_confusion`,
  `compute_binary_report`; `cluster_bootstrap_ci` for means over images grouped by patient.
* Segmentation from integer label maps (B, H, W), jitted: `compute_dice`,
  `compute_iou`, `compute_pixel_accuracy`.

Ragged or data-dependent work (ranking, class Gaussians, matrix square roots)
runs on the host in numpy; fixed-shape array work runs in jitted jnp.

Modules: `distances` (Frechet, Sinkhorn, mean pairwise distance), `classification` (ROC AUC with
DeLong intervals and the paired test, curves, confusion, the patient-clustered bootstrap),
`segmentation` (Dice, IoU, pixel accuracy); each name is also importable from `jaxcxr.metrics`.
"""

from __future__ import annotations

from jaxcxr.metrics.classification import (cluster_bootstrap_ci, compare_roc_auc, compute_binary_report,
                                           compute_confusion, compute_pr_curve, compute_roc_auc, compute_roc_auc_ci,
                                           compute_roc_curve, roc_auc_interval)
from jaxcxr.metrics.distances import frechet_distance, mean_pairwise_distance, sinkhorn_distance
from jaxcxr.metrics.segmentation import compute_dice, compute_iou, compute_pixel_accuracy

__all__ = [
    "cluster_bootstrap_ci",
    "compare_roc_auc",
    "compute_binary_report",
    "compute_confusion",
    "compute_dice",
    "compute_iou",
    "compute_pixel_accuracy",
    "compute_pr_curve",
    "compute_roc_auc",
    "compute_roc_auc_ci",
    "compute_roc_curve",
    "frechet_distance",
    "mean_pairwise_distance",
    "roc_auc_interval",
    "sinkhorn_distance",
]
