"""Tests for jaxcxr.metrics: golden values, sklearn/scipy parity and invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
from sklearn import metrics as sk_metrics

from jaxcxr import metrics


@pytest.fixture(autouse=True)
def _strict_jax():
  # Catch silent broadcasting and dtype promotion inside the metrics, whatever conftest sets.
  with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion("strict"):
    yield


def _fd_reference(mu_a, sigma_a, mu_b, sigma_b):
  """pytorch-fid's formula with scipy.linalg.sqrtm (full-rank covariances only)."""
  covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b).real
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2 * covmean))


def _random_spd(rng, d):
  a = rng.normal(size=(d, d))
  return a @ a.T / d + 0.2 * np.eye(d)


# --------------------------------------------------------------------------- #
# Fréchet distance.
# --------------------------------------------------------------------------- #


def test_frechet_matches_closed_form_for_gaussians():
  rng = np.random.default_rng(0)
  d = 3
  mu_a, mu_b = np.zeros(d), np.array([1.0, -0.5, 0.25])
  sigma_a, sigma_b = _random_spd(rng, d), _random_spd(rng, d)
  expected = _fd_reference(mu_a, sigma_a, mu_b, sigma_b)
  x = rng.multivariate_normal(mu_a, sigma_a, size=40_000)
  y = rng.multivariate_normal(mu_b, sigma_b, size=40_000)
  assert metrics.frechet_distance(x, y) == pytest.approx(expected, rel=0.03)


def test_frechet_matches_sqrtm_formula_on_sample_statistics():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(200, 6))
  y = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) + 0.3
  expected = _fd_reference(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
  assert metrics.frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)
  # jnp input gives the same value (float32 data, computed in float64).
  x32, y32 = x.astype(np.float32), y.astype(np.float32)
  assert metrics.frechet_distance(jnp.asarray(x32), jnp.asarray(y32)) == pytest.approx(
      metrics.frechet_distance(x32, y32), rel=1e-12)


def test_frechet_identical_symmetric_and_shift():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(300, 8))
  y = rng.normal(size=(250, 8)) * 1.5
  assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
  assert metrics.frechet_distance(x, y) == pytest.approx(metrics.frechet_distance(y, x), rel=1e-10)
  # A pure shift adds exactly ||delta||^2.
  delta = np.arange(8) / 4.0
  assert metrics.frechet_distance(x, x + delta) == pytest.approx(np.sum(delta**2), rel=1e-9)


def test_frechet_with_fewer_samples_than_dimensions():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(10, 50))
  y = rng.normal(size=(12, 50)) + 0.5
  fd = metrics.frechet_distance(x, y)
  assert np.isfinite(fd) and fd > 0
  assert fd == pytest.approx(metrics.frechet_distance(y, x), rel=1e-9)
  assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
  # Independent route for the cross term: Tr((Sa Sb)^{1/2}) from the (real, >= 0)
  # eigenvalues of the non-symmetric product.
  sa, sb = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  eig = np.clip(np.linalg.eigvals(sa @ sb).real, 0, None)
  expected = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(sa + sb) - 2 * np.sqrt(eig).sum()
  assert fd == pytest.approx(expected, rel=1e-6)


def test_frechet_ridge_eps():
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(10, 30)), rng.normal(size=(10, 30)) * 2
  eps = 1e-2
  ridge = eps * np.eye(30)
  expected = _fd_reference(x.mean(0), np.cov(x, rowvar=False) + ridge,
                           y.mean(0), np.cov(y, rowvar=False) + ridge)
  assert metrics.frechet_distance(x, y, eps=eps) == pytest.approx(expected, rel=1e-8)
  assert metrics.frechet_distance(x, y, eps=eps) != pytest.approx(metrics.frechet_distance(x, y))


@pytest.mark.parametrize("a, b", [
    (np.zeros(5), np.zeros((5, 2))),          # 1-D
    (np.zeros((1, 2)), np.zeros((5, 2))),     # one row
    (np.zeros((5, 2)), np.zeros((5, 3))),     # different D
    (np.full((5, 2), np.nan), np.zeros((5, 2))),
])
def test_frechet_rejects_bad_inputs(a, b):
  with pytest.raises(ValueError):
    metrics.frechet_distance(a, b)
  with pytest.raises(ValueError):
    metrics.frechet_distance(np.zeros((5, 2)), np.ones((5, 2)), eps=-1.0)


# --------------------------------------------------------------------------- #
# Sinkhorn divergence.
# --------------------------------------------------------------------------- #


# All Sinkhorn tests share the shapes (64, 3) and (48, 3): each new shape combination
# costs a compilation (seconds on a loaded CPU).
def _clusters(rng, n):
  """Two labelled clusters in 3-D: (n, 3) float32 features and (n,) labels."""
  labels = rng.integers(0, 2, size=n)
  centres = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 1.0]])
  return (centres[labels] + 0.5 * rng.normal(size=(n, 3))).astype(np.float32), labels


def test_sinkhorn_identical_symmetric_and_exact_for_shifts():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(64, 3)).astype(np.float32)
  y = (rng.normal(size=(48, 3)) * 1.3 + 0.4).astype(np.float32)
  assert abs(metrics.sinkhorn_distance(x, x)) < 1e-4
  s_xy, s_yx = metrics.sinkhorn_distance(x, y), metrics.sinkhorn_distance(y, x)
  assert np.isfinite(s_xy) and s_xy > 0.1
  assert s_xy == pytest.approx(s_yx, rel=1e-4)
  # For a translated copy the cross-cost differs from the self-cost by a separable
  # term plus ||delta||^2, so the debiased divergence is exactly ||delta||^2 for any
  # epsilon; it also grows with the shift. Sinkhorn converges slowly on a translated copy
  # (a near-permutation plan): up to ~1,900 iterations here, so 500 would warn.
  values = []
  for t in (0.25, 0.5, 1.0, 2.0):
    delta = t * np.array([1.0, -1.0, 0.5], np.float32)
    values.append(metrics.sinkhorn_distance(x, x + delta, num_iters=2000))
    assert values[-1] == pytest.approx(float(np.sum(delta**2)), rel=1e-4)
  assert np.all(np.diff(values) > 0)


def test_sinkhorn_labels_shuffled_farther_and_renaming_invariant():
  rng = np.random.default_rng(6)
  x, lx = _clusters(rng, 64)
  y, ly = _clusters(rng, 48)
  shuffled = rng.permutation(ly)
  matched = metrics.sinkhorn_distance(x, y, labels_a=lx, labels_b=ly)
  mismatched = metrics.sinkhorn_distance(x, y, labels_a=lx, labels_b=shuffled)
  assert 0 <= matched < 0.5 * mismatched
  # Labels are compared through their conditional distributions only: renaming them
  # (here with strings) changes nothing; weight 0 is the unlabelled divergence.
  renamed = np.where(ly == 0, "b", "a")
  assert metrics.sinkhorn_distance(x, y, labels_a=lx, labels_b=renamed) == pytest.approx(
      matched, rel=1e-4)
  assert metrics.sinkhorn_distance(
      x, y, labels_a=lx, labels_b=shuffled, label_cost_weight=0.0) == pytest.approx(
          metrics.sinkhorn_distance(x, y), rel=1e-4)


def test_sinkhorn_single_label_adds_weighted_bures_distance():
  # One label per set: the label term is the constant lambda * W2^2(N_a, N_b) on every
  # cross pair and 0 within a set, so at equal absolute regularisation it adds exactly
  # lambda * FD(a, b). The mean-cost normaliser grows by the same constant, so the
  # unlabelled run gets epsilon rescaled to match.
  rng = np.random.default_rng(7)
  x = rng.normal(size=(64, 3)).astype(np.float32)
  y = (rng.normal(size=(48, 3)) * 2.0 + 1.0).astype(np.float32)
  label_cost = 0.5 * metrics.frechet_distance(x, y)
  mean_cost = scipy.spatial.distance.cdist(x, y, "sqeuclidean").mean()
  base = metrics.sinkhorn_distance(x, y, epsilon=0.05 * (mean_cost + label_cost) / mean_cost)
  labelled = metrics.sinkhorn_distance(
      x, y, epsilon=0.05, labels_a=np.zeros(64), labels_b=np.zeros(48), label_cost_weight=0.5)
  assert labelled == pytest.approx(base + label_cost, rel=1e-4)


def test_sinkhorn_compiles_once_per_shape():
  rng = np.random.default_rng(8)
  x, y = rng.normal(size=(64, 3)), rng.normal(size=(48, 3))
  metrics.sinkhorn_distance(x, y, epsilon=0.1)
  size = metrics.distances._sinkhorn_divergence._cache_size()
  # epsilon, tol and the label weight are traced, not static; one-label sets reuse it too.
  metrics.sinkhorn_distance(x + 1.0, y, epsilon=0.2, tol=1e-6)
  metrics.sinkhorn_distance(x, y, labels_a=np.ones(64), labels_b=np.ones(48))
  assert metrics.distances._sinkhorn_divergence._cache_size() == size


def test_sinkhorn_warns_when_not_converged():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(64, 3)).astype(np.float32)
  y = (rng.normal(size=(48, 3)) * 1.3 + 0.4).astype(np.float32)
  converged = metrics.sinkhorn_distance(x, y, epsilon=0.001, num_iters=20000, tol=0.0)
  # At epsilon 1e-3, 500 iterations stop short: the value is off by several percent.
  with pytest.warns(RuntimeWarning, match=r"epsilon=0.001 did not converge within num_iters=500 .*"
                                          r"raise epsilon or num_iters"):
    early = metrics.sinkhorn_distance(x, y, epsilon=0.001)
  assert abs(early - converged) > 0.01 * converged
  with pytest.warns(RuntimeWarning, match="epsilon=0.05 did not converge within num_iters=3"):
    metrics.sinkhorn_distance(x, y, num_iters=3)
  # Converged runs stay silent (warnings are errors in this suite); tol=0 asks for exactly
  # num_iters iterations and is not judged.
  assert metrics.sinkhorn_distance(x, y, epsilon=0.001, num_iters=5000) == pytest.approx(converged, rel=1e-4)
  metrics.sinkhorn_distance(x, y, num_iters=3, tol=0.0)


def test_sinkhorn_warns_on_non_finite_result():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(64, 3)).astype(np.float32) * 1e20   # squared distances overflow float32
  y = rng.normal(size=(48, 3)).astype(np.float32) * 1e20
  with pytest.warns(RuntimeWarning, match="epsilon=0.05 gave a non-finite result"):
    assert not np.isfinite(metrics.sinkhorn_distance(x, y))


@pytest.mark.parametrize("kwargs", [
    dict(labels_a=np.zeros(5)),                           # only one set labelled
    dict(labels_a=np.zeros(4), labels_b=np.zeros(5)),     # wrong length
    dict(epsilon=0.0),
    dict(num_iters=0),
    dict(tol=-1.0),
])
def test_sinkhorn_rejects_bad_arguments(kwargs):
  with pytest.raises(ValueError):
    metrics.sinkhorn_distance(np.zeros((5, 2)), np.ones((5, 2)), **kwargs)


# --------------------------------------------------------------------------- #
# Diversity.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("block_size", [8, 1024])
def test_mean_pairwise_distance_matches_pdist(block_size):
  x = np.random.default_rng(9).normal(size=(37, 5)) * 3 + 10
  expected = scipy.spatial.distance.pdist(x).mean()
  assert metrics.mean_pairwise_distance(x, block_size=block_size) == pytest.approx(
      expected, rel=1e-5)


def test_mean_pairwise_distance_golden_and_errors():
  assert metrics.mean_pairwise_distance(np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])) == (
      pytest.approx((5.0 + 3.0 + 4.0) / 3))
  with pytest.raises(ValueError):
    metrics.mean_pairwise_distance(np.zeros((1, 3)))


# --------------------------------------------------------------------------- #
# Binary classification.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_and_curves_match_sklearn_with_ties(seed):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, size=200)
  y_pred = rng.integers(0, 6, size=200) / 5 + 0.2 * y  # many ties
  assert metrics.compute_roc_auc(y_pred, y) == pytest.approx(
      sk_metrics.roc_auc_score(y, y_pred), abs=1e-12)
  assert metrics.compute_roc_auc(jnp.asarray(y_pred, jnp.float32), jnp.asarray(y)) == (
      pytest.approx(sk_metrics.roc_auc_score(y, y_pred.astype(np.float32)), abs=1e-12))
  for ours, ref in zip(metrics.compute_roc_curve(y_pred, y), sk_metrics.roc_curve(y, y_pred)):
    np.testing.assert_array_equal(ours, ref)
  for ours, ref in zip(metrics.compute_pr_curve(y_pred, y),
                       sk_metrics.precision_recall_curve(y, y_pred)):
    np.testing.assert_array_equal(ours, ref)


def test_roc_auc_golden_values():
  assert metrics.compute_roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
  assert metrics.compute_roc_auc([0.5, 0.5, 0.5], [True, False, True]) == 0.5
  assert metrics.compute_roc_auc([3, 2, 1], [1, 0, 0]) == 1.0


@pytest.mark.parametrize("fn", [metrics.compute_roc_auc, metrics.compute_roc_curve])
def test_roc_errors(fn):
  with pytest.raises(ValueError, match="one class"):
    fn([0.1, 0.2, 0.3], [1, 1, 1])
  with pytest.raises(ValueError, match="lengths differ"):
    fn([0.1, 0.2, 0.3], [0, 1])
  with pytest.raises(ValueError, match="0/1"):
    fn([0.1, 0.2, 0.3], [0, 1, 2])
  with pytest.raises(ValueError, match="NaN"):
    fn([0.1, np.nan, 0.3], [0, 1, 1])


def test_roc_auc_ci_hand_computed_delong_variance():
  # Positives 0.9, 0.4; negatives 0.5, 0.1: V10 = (1, 0.5), V01 = (0.5, 1), AUC 0.75,
  # variance var(V10)/2 + var(V01)/2 = 0.125/2 + 0.125/2 = 0.125.
  out = metrics.compute_roc_auc_ci(np.array([0.9, 0.4, 0.5, 0.1]), np.array([1, 1, 0, 0]))
  assert out["roc_auc"] == pytest.approx(0.75)
  assert out["se"] == pytest.approx(np.sqrt(0.125))
  assert out["low"] == pytest.approx(0.75 - 1.959963984540054 * np.sqrt(0.125))
  assert out["high"] == 1.0   # clipped


def test_roc_auc_ci_matches_bootstrap_spread():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 300)
  y_pred = rng.normal(size=300) + 0.8 * y
  out = metrics.compute_roc_auc_ci(y_pred, y)
  assert out["roc_auc"] == pytest.approx(sk_metrics.roc_auc_score(y, y_pred))
  boot = []
  for _ in range(1000):
    i = rng.integers(0, 300, 300)
    if y[i].min() != y[i].max():
      boot.append(sk_metrics.roc_auc_score(y[i], y_pred[i]))
  assert out["se"] == pytest.approx(np.std(boot), rel=0.15)
  assert out["low"] < out["roc_auc"] < out["high"]


def test_compare_roc_auc_identical_better_and_worse():
  rng = np.random.default_rng(1)
  y = rng.integers(0, 2, 200)
  good = rng.normal(size=200) + 2.0 * y
  weak = rng.normal(size=200) + 0.2 * y
  same = metrics.compare_roc_auc(good, 3.0 * good + 1.0, y)   # a monotone transform ranks alike
  assert same["difference"] == pytest.approx(0.0) and same["p_value"] == 1.0
  better = metrics.compare_roc_auc(good, weak, y)
  assert better["difference"] > 0.2 and better["p_value"] < 1e-6
  assert metrics.compare_roc_auc(weak, good, y)["difference"] == pytest.approx(-better["difference"])
  # Noise-only scorers are rarely "significantly" different.
  p = [metrics.compare_roc_auc(rng.normal(size=200), rng.normal(size=200), y)["p_value"] for _ in range(40)]
  assert np.mean(np.asarray(p) < 0.05) <= 0.2


def test_roc_auc_interval_is_the_ci_or_none_for_thin_classes():
  y_pred, y = np.array([0.9, 0.4, 0.5, 0.1, 0.7]), np.array([1, 1, 0, 0, 0])
  ci = metrics.compute_roc_auc_ci(y_pred, y)
  assert metrics.roc_auc_interval(y_pred, y) == [ci["low"], ci["high"]]
  assert metrics.roc_auc_interval(y_pred, np.array([1, 0, 0, 0, 0])) is None   # one positive
  assert metrics.roc_auc_interval(y_pred, np.zeros(5, int)) is None            # one class
  with pytest.raises(ValueError, match="lengths differ"):
    metrics.roc_auc_interval(y_pred, y[:4])


def test_roc_auc_ci_errors():
  with pytest.raises(ValueError, match="at least 2"):
    metrics.compute_roc_auc_ci([0.1, 0.2, 0.3], [1, 0, 0])
  with pytest.raises(ValueError, match="level"):
    metrics.compute_roc_auc_ci([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], level=1.0)
  with pytest.raises(ValueError, match="lengths differ"):
    metrics.compare_roc_auc([0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3], [1, 1, 0, 0])


def test_pr_curve_needs_a_positive():
  with pytest.raises(ValueError, match="no positives"):
    metrics.compute_pr_curve([0.1, 0.2], [0, 0])


@pytest.mark.parametrize("seed", [0, 1])
def test_confusion_and_report_match_sklearn(seed):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, size=101)
  y_pred = np.where(rng.random(101) < 0.7, y, 1 - y)
  confusion = metrics.compute_confusion(y_pred, y)
  np.testing.assert_array_equal(confusion, sk_metrics.confusion_matrix(y, y_pred, labels=[0, 1]))
  report = metrics.compute_binary_report(jnp.asarray(y_pred), y)
  assert report["accuracy"] == pytest.approx(sk_metrics.accuracy_score(y, y_pred))
  assert report["precision"] == pytest.approx(sk_metrics.precision_score(y, y_pred))
  assert report["recall"] == report["tpr"] == pytest.approx(sk_metrics.recall_score(y, y_pred))
  assert report["specificity"] == pytest.approx(sk_metrics.recall_score(y, y_pred, pos_label=0))
  assert report["fpr"] == pytest.approx(1 - report["specificity"])
  assert report["f1"] == pytest.approx(sk_metrics.f1_score(y, y_pred))
  assert [report[k] for k in ("tn", "fp", "fn", "tp")] == confusion.ravel().tolist()


def test_report_zero_division_gives_zero():
  # No predicted positives and no true positives: precision, recall, f1 are 0/0.
  report = metrics.compute_binary_report([0, 0, 0], [0, 0, 0])
  assert report == dict(accuracy=1.0, precision=0.0, recall=0.0, specificity=1.0, f1=0.0,
                        tpr=0.0, fpr=0.0, tn=3, fp=0, fn=0, tp=0)
  # No true negatives: specificity and fpr are 0/0.
  report = metrics.compute_binary_report([True, False], [True, True])
  assert report["specificity"] == 0.0 and report["fpr"] == 0.0
  assert report["precision"] == 1.0 and report["recall"] == 0.5
  assert report["f1"] == pytest.approx(2 / 3)
  assert not any(np.isnan(v) for v in report.values())


def test_confusion_errors():
  with pytest.raises(ValueError, match="lengths differ"):
    metrics.compute_confusion([0, 1], [0, 1, 1])
  with pytest.raises(ValueError, match="y_pred must contain only 0/1"):
    metrics.compute_confusion([0.3, 1], [0, 1])
  with pytest.raises(ValueError, match="empty"):
    metrics.compute_binary_report([], [])


# --------------------------------------------------------------------------- #
# Segmentation.
# --------------------------------------------------------------------------- #


def _square(size, top, left, side, value, out=None):
  out = np.zeros((size, size), np.int32) if out is None else out
  out[top:top + side, left:left + side] = value
  return out


def test_dice_iou_two_squares_known_overlap():
  # Class 1: 4x4 squares offset by (2, 2): overlap 2x2 = 4 px.
  # Class 2: 3x3 squares offset by (0, 1): overlap 3x2 = 6 px.
  y_pred = _square(12, 0, 0, 4, 1)
  y = _square(12, 2, 2, 4, 1)
  _square(12, 8, 8, 3, 2, out=y_pred)
  _square(12, 8, 7, 3, 2, out=y)
  dice = metrics.compute_dice(y_pred[None], y[None], num_classes=3)
  iou = metrics.compute_iou(y_pred[None], y[None], num_classes=3)
  assert dice.shape == iou.shape == (1, 2) and dice.dtype == jnp.float32
  np.testing.assert_allclose(dice, [[2 * 4 / 32, 2 * 6 / 18]], rtol=1e-6)
  np.testing.assert_allclose(iou, [[4 / 28, 6 / 12]], rtol=1e-6)
  # Pixel accuracy: the mismatched pixels are the symmetric differences, 24 + 6.
  np.testing.assert_allclose(
      metrics.compute_pixel_accuracy(y_pred[None], y[None]), [(144 - 30) / 144], rtol=1e-6)


def test_dice_iou_empty_masks():
  empty = np.zeros((6, 6), np.int32)
  full = _square(6, 1, 1, 3, 1)
  batch_pred = np.stack([empty, empty, full])
  batch_y = np.stack([empty, full, empty])
  for fn in (metrics.compute_dice, metrics.compute_iou):
    out = np.asarray(fn(batch_pred, batch_y, num_classes=2))
    np.testing.assert_array_equal(out, [[1.0], [0.0], [0.0]])


def test_segmentation_matches_numpy_and_is_batch_independent():
  rng = np.random.default_rng(10)
  y_pred = rng.integers(0, 3, size=(4, 16, 16)).astype(np.uint8)
  y = rng.integers(0, 3, size=(4, 16, 16)).astype(np.uint8)
  dice = np.asarray(metrics.compute_dice(y_pred, y, num_classes=3))
  iou = np.asarray(metrics.compute_iou(y_pred, y, num_classes=3))
  for b in range(4):
    for c in (1, 2):
      p, t = y_pred[b] == c, y[b] == c
      assert dice[b, c - 1] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()), rel=1e-6)
      assert iou[b, c - 1] == pytest.approx((p & t).sum() / (p | t).sum(), rel=1e-6)
    # Image b alone equals image b in the batch.
    np.testing.assert_array_equal(
        metrics.compute_dice(y_pred[b:b + 1], y[b:b + 1], num_classes=3), dice[b:b + 1])
  np.testing.assert_allclose(iou, dice / (2 - dice), rtol=1e-6)
  np.testing.assert_allclose(metrics.compute_pixel_accuracy(y_pred, y),
                             (y_pred == y).mean(axis=(1, 2)), rtol=1e-6)


@pytest.mark.parametrize("fn", [metrics.compute_dice, metrics.compute_iou], ids=["dice", "iou"])
def test_segmentation_refuses_labels_outside_the_classes(fn):
  # Labels >= num_classes (or < 0) used to count as no class: all 3s against an empty
  # target scored a perfect 1 with 3 classes.
  y = np.zeros((2, 8, 8), np.int32)
  with pytest.raises(ValueError, match=r"y_pred has label values \[3\] outside \[0, 3\) \(num_classes=3\)"):
    fn(np.full((2, 8, 8), 3, np.int32), y, num_classes=3)
  bad = y.copy()
  bad[1, 0, :3] = [-1, 5, 7]
  with pytest.raises(ValueError, match=r"y has label values \[-1, 5, 7\] outside \[0, 3\)"):
    fn(y, bad, num_classes=3)
  with pytest.raises(ValueError, match="raise num_classes"):
    fn(jnp.asarray(bad), jnp.asarray(y), num_classes=3)
  # The largest valid label is fine.
  assert fn(np.full((2, 8, 8), 2, np.uint8), np.full((2, 8, 8), 2, np.uint8), num_classes=3).shape == (2, 2)


def test_segmentation_under_jit_skips_the_host_check():
  rng = np.random.default_rng(11)
  y_pred = rng.integers(0, 3, size=(2, 8, 8)).astype(np.int32)
  y = rng.integers(0, 3, size=(2, 8, 8)).astype(np.int32)
  jitted = jax.jit(lambda p, t: metrics.compute_dice(p, t, num_classes=3))
  np.testing.assert_array_equal(jitted(y_pred, y), metrics.compute_dice(y_pred, y, num_classes=3))


def test_segmentation_errors():
  maps = np.zeros((2, 4, 4), np.int32)
  with pytest.raises(ValueError):
    metrics.compute_dice(maps, maps[:1], num_classes=2)
  with pytest.raises(ValueError):
    metrics.compute_iou(maps[0], maps[0], num_classes=2)
  with pytest.raises(ValueError, match="integer"):
    metrics.compute_dice(maps.astype(np.float32), maps, num_classes=2)
  with pytest.raises(ValueError, match="num_classes"):
    metrics.compute_dice(maps, maps, num_classes=1)
  with pytest.raises(ValueError):
    metrics.compute_pixel_accuracy(maps, maps[..., None])
