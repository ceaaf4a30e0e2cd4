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
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from sklearn import metrics as sk_metrics

_HIGHEST = jax.lax.Precision.HIGHEST


# --------------------------------------------------------------------------- #
# Host-side Gaussian helpers (float64).
# --------------------------------------------------------------------------- #


def _check_real(name: str, x: Any) -> np.ndarray:
  """`x` as a numpy array, refused unless its dtype is bool, integer or float (not complex, strings, objects)."""
  x = np.asarray(x)
  if x.dtype.kind not in "biuf":
    raise ValueError(f"{name} must hold real numbers (bool, integer or float), got dtype {x.dtype}")
  return x


def _check_features(name: str, x: Any, min_rows: int = 2) -> np.ndarray:
  x = _check_real(name, x)
  if x.ndim != 2:
    raise ValueError(f"{name} must be 2-D [N, D], got shape {x.shape}")
  if x.shape[0] < min_rows:
    raise ValueError(f"{name} needs at least {min_rows} rows, got {x.shape[0]}")
  if x.shape[1] < 1:
    raise ValueError(f"{name} needs at least one feature column, got shape {x.shape}")
  x = x.astype(np.float64)
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} contains NaN or inf")
  return x


def _mean_cov(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and unbiased covariance (ddof=1) of rows; zero covariance for a single row."""
  mu = x.mean(axis=0)
  if x.shape[0] < 2:
    return mu, np.zeros((x.shape[1], x.shape[1]))
  xc = x - mu
  return mu, xc.T @ xc / (x.shape[0] - 1)


def _psd_eigvalsh(m: np.ndarray, vectors: bool = False):
  """Eigen-decomposition of a symmetric PSD matrix with roundoff-level eigenvalues set to 0.

  Eigenvalues below D * float64-eps * max|w| (as `numpy.linalg.pinv`'s rcond) are
  noise for singular matrices; left in, their square roots (~1e-8 each) would add
  up in the trace.
  """
  m = (m + m.T) / 2
  w, v = np.linalg.eigh(m) if vectors else (np.linalg.eigvalsh(m), None)
  cutoff = np.abs(w).max(initial=0.0) * w.size * np.finfo(np.float64).eps
  return np.where(w > cutoff, w, 0.0), v


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
  """Symmetric PSD square root via eigh."""
  w, v = _psd_eigvalsh(sigma, vectors=True)
  return (v * np.sqrt(w)) @ v.T


def _bures_trace(sqrt_a: np.ndarray, sigma_b: np.ndarray) -> float:
  """Tr((Sa^{1/2} Sb Sa^{1/2})^{1/2}) = Tr((Sa Sb)^{1/2}) from the symmetric PSD product."""
  w, _ = _psd_eigvalsh(sqrt_a @ sigma_b @ sqrt_a)
  return float(np.sqrt(w).sum())


def _gaussian_w2(mu_a, sigma_a, sqrt_a, mu_b, sigma_b) -> float:
  """Squared 2-Wasserstein (Bures) distance between N(mu_a, Sa) and N(mu_b, Sb), >= 0."""
  d2 = float(np.sum((mu_a - mu_b) ** 2))
  d2 += float(np.trace(sigma_a) + np.trace(sigma_b)) - 2.0 * _bures_trace(sqrt_a, sigma_b)
  return max(d2, 0.0)


def frechet_distance(features_a: Any, features_b: Any, *, eps: float = 0.0) -> float:
  """Fréchet distance between Gaussians fitted to two feature sets (the FID formula).

  With sample means mu and unbiased covariances S (ddof=1, as pytorch-fid's
  `np.cov`):

    FD = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}).

  The cross term is evaluated as Tr((S_a^{1/2} S_b S_a^{1/2})^{1/2}), which
  equals Tr((S_a S_b)^{1/2}) but only needs symmetric eigendecompositions of
  PSD matrices, so it is real and finite even when the covariances are
  singular (N <= D, where the rank is at most N - 1); roundoff-level
  eigenvalues (below D * eps_float64 * the largest) are set to 0 and a
  roundoff-negative final value is clamped to 0. Everything runs in
  float64 on the host.

  `eps > 0` adds a ridge `eps * I` to both covariances before the formula,
  i.e. the regularised estimate pytorch-fid falls back to (its `offset`,
  1e-6) when `scipy.linalg.sqrtm` fails. It is not needed for finiteness
  here; use it to reproduce pytorch-fid's fallback or to regularise
  covariances estimated from few samples. The default 0 gives the plain
  formula.

  Args:
    features_a: features [Na, D] (jnp or numpy), Na >= 2.
    features_b: features [Nb, D], Nb >= 2, same D.
    eps: non-negative ridge added to both covariances.

  Returns:
    The Fréchet distance (a squared distance, in squared feature units) as a
    Python float, >= 0.

  Raises:
    ValueError: inputs not 2-D, fewer than 2 rows, different D, non-finite
      values, or `eps < 0`.

  Examples:
    >>> x = np.random.default_rng(0).normal(size=(100, 3))
    >>> round(frechet_distance(x, x), 6)
    0.0
    >>> round(frechet_distance(x, x + 2.0), 6)  # shift by 2 in 3 dims
    12.0

  References:
    Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a
    Local Nash Equilibrium", NeurIPS 2017; Dowson & Landau, "The Fréchet
    distance between multivariate normal distributions", J. Multivar. Anal.
    1982; pytorch-fid (mseitzer/pytorch-fid), `calculate_frechet_distance`.
  """
  a = _check_features("features_a", features_a)
  b = _check_features("features_b", features_b)
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
  if not eps >= 0:
    raise ValueError(f"eps must be >= 0, got {eps}")
  with np.errstate(over="ignore", invalid="ignore"):
    mu_a, sigma_a = _mean_cov(a)
    mu_b, sigma_b = _mean_cov(b)
  if not all(np.isfinite(m).all() for m in (mu_a, sigma_a, mu_b, sigma_b)):
    raise ValueError("frechet_distance: the features' covariances overflow float64; rescale the features")
  if eps > 0:
    ridge = eps * np.eye(a.shape[1])
    sigma_a, sigma_b = sigma_a + ridge, sigma_b + ridge
  return _gaussian_w2(mu_a, sigma_a, _psd_sqrt(sigma_a), mu_b, sigma_b)


# --------------------------------------------------------------------------- #
# Sinkhorn divergence (jitted jnp) with optional OTDD label cost.
# --------------------------------------------------------------------------- #


def _sq_dists(x: jax.Array, y: jax.Array) -> jax.Array:
  """Pairwise squared Euclidean distances (N, M) via the Gram expansion, clamped >= 0."""
  xy = jnp.matmul(x, y.T, precision=_HIGHEST)
  d2 = jnp.sum(x * x, axis=1)[:, None] + jnp.sum(y * y, axis=1)[None, :] - 2.0 * xy
  return jnp.maximum(d2, 0.0)


def _entropic_ot(cost: jax.Array, epsilon: jax.Array, num_iters: int, tol: jax.Array, f0: jax.Array,
                 g0: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Regularised OT_eps(a, b) with uniform weights, log-domain Sinkhorn from potentials (f0, g0).

  Returns (<a,f> + <b,g>, the largest change of a potential in the last iteration): the
  iterations converged when that change is <= tol.
  """
  n, m = cost.shape
  log_a = -jnp.log(jnp.float32(n))
  log_b = -jnp.log(jnp.float32(m))

  def cond(state):
    i, _, _, delta = state
    return (i < num_iters) & (delta > tol)

  def body(state):
    i, f, g, _ = state
    f_new = -epsilon * jax.nn.logsumexp(log_b + (g[None, :] - cost) / epsilon, axis=1)
    g_new = -epsilon * jax.nn.logsumexp(log_a + (f_new[:, None] - cost) / epsilon, axis=0)
    delta = jnp.maximum(jnp.max(jnp.abs(f_new - f)), jnp.max(jnp.abs(g_new - g)))
    return i + 1, f_new, g_new, delta

  init = (jnp.int32(0), f0, g0, jnp.float32(jnp.inf))
  _, f, g, delta = jax.lax.while_loop(cond, body, init)
  return jnp.mean(f) + jnp.mean(g), delta


def _entropic_ot_self(cost: jax.Array, epsilon: jax.Array, num_iters: int, tol: jax.Array
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """OT_eps(a, a) for a symmetric cost (N, N) and uniform a: symmetric Sinkhorn, f <- (f + T(f)) / 2.

  The two potentials of a symmetric problem are equal; averaging each update with the
  previous potential (Feydy et al. 2019) converges in a few iterations where alternating
  updates crawl (the plan is then near the identity). Returns (2 <a, f>, the last change
  of f, f).
  """
  n = cost.shape[0]
  log_a = -jnp.log(jnp.float32(n))

  def cond(state):
    i, _, delta = state
    return (i < num_iters) & (delta > tol)

  def body(state):
    i, f, _ = state
    f_new = 0.5 * (f - epsilon * jax.nn.logsumexp(log_a + (f[None, :] - cost) / epsilon, axis=1))
    return i + 1, f_new, jnp.max(jnp.abs(f_new - f))

  _, f, delta = jax.lax.while_loop(cond, body, (jnp.int32(0), jnp.zeros(n), jnp.float32(jnp.inf)))
  return 2.0 * jnp.mean(f), delta, f


@functools.partial(jax.jit, static_argnames=("num_iters",))
def _sinkhorn_divergence(x, y, lab_x, lab_y, w_xy, w_xx, w_yy, label_weight, epsilon, tol, *,
                         num_iters):
  # Centre on the pooled mean: squared distances are translation invariant and the
  # Gram expansion loses less precision near the origin.
  centre = (jnp.sum(x, axis=0, keepdims=True) + jnp.sum(y, axis=0, keepdims=True)) / (
      x.shape[0] + y.shape[0])  # (1, D)
  x, y = x - centre, y - centre
  c_xy = _sq_dists(x, y) + label_weight * w_xy[lab_x][:, lab_y]  # (N, M)
  c_xx = _sq_dists(x, x) + label_weight * w_xx[lab_x][:, lab_x]  # (N, N)
  c_yy = _sq_dists(y, y) + label_weight * w_yy[lab_y][:, lab_y]  # (M, M)
  scale = jnp.maximum(jnp.mean(c_xy), jnp.finfo(jnp.float32).tiny)
  symmetric = lambda c: 0.5 * (c + c.T)  # exact symmetry for the symmetric iterations
  ot_xx, delta_xx, f_xx = _entropic_ot_self(symmetric(c_xx) / scale, epsilon, num_iters, tol)
  ot_yy, delta_yy, f_yy = _entropic_ot_self(symmetric(c_yy) / scale, epsilon, num_iters, tol)
  # Warm start from the self potentials: exact for identical sets (one iteration), neutral otherwise.
  ot_xy, delta_xy = _entropic_ot(c_xy / scale, epsilon, num_iters, tol, f_xx, f_yy)
  # The largest last-iteration change of the three problems; NaN if any is NaN (not converged).
  delta = jnp.max(jnp.stack([delta_xy, delta_xx, delta_yy]))
  return scale * (ot_xy - 0.5 * (ot_xx + ot_yy)), delta


def _class_w2_matrices(a, b, labels_a, labels_b):
  """Label indices and squared Bures distances between label-conditional Gaussians."""
  classes_a, idx_a = np.unique(labels_a, return_inverse=True)
  classes_b, idx_b = np.unique(labels_b, return_inverse=True)
  gauss_a = [_mean_cov(a[idx_a == k]) for k in range(len(classes_a))]
  gauss_b = [_mean_cov(b[idx_b == k]) for k in range(len(classes_b))]
  sqrt_a = [_psd_sqrt(s) for _, s in gauss_a]
  sqrt_b = [_psd_sqrt(s) for _, s in gauss_b]

  def table(ga, sa, gb):
    return np.array([[_gaussian_w2(mu1, s1, r1, mu2, s2) for mu2, s2 in gb]
                     for (mu1, s1), r1 in zip(ga, sa)])

  w_ab = table(gauss_a, sqrt_a, gauss_b)
  w_aa = table(gauss_a, sqrt_a, gauss_a)
  w_bb = table(gauss_b, sqrt_b, gauss_b)
  return idx_a.reshape(-1), idx_b.reshape(-1), w_ab, w_aa, w_bb


def sinkhorn_distance(
    features_a: Any,
    features_b: Any,
    *,
    epsilon: float = 0.05,
    num_iters: int = 500,
    labels_a: Any = None,
    labels_b: Any = None,
    label_cost_weight: float = 1.0,
    tol: float = 1e-5,
) -> float:
  """Debiased Sinkhorn divergence between two feature sets, optionally label-aware (OTDD).

  Uniform weights a_i = 1/Na, b_j = 1/Nb. The ground cost between samples is

    c(i, j) = ||x_i - y_j||^2 + lambda * W2^2(P_{l_i}, Q_{l'_j}),

  where the second term is present only when labels are given: P_l (Q_l') is
  the Gaussian fitted (mean, ddof=1 covariance; zero covariance for a
  singleton class) to the features of set a (b) with label l (l'), W2^2 the
  squared 2-Wasserstein distance between Gaussians (Bures formula, as OTDD's
  Gaussian approximation), and lambda = `label_cost_weight`. Labels are
  compared only through their conditional feature distributions, so renaming
  labels changes nothing.

  Costs are divided by s = mean_{ij} c(i, j) of the cross-set cost so that
  `epsilon` is scale-free. With C' = C / s,

    OT(a, b) = max_{f, g} <a, f> + <b, g>
               - epsilon <a (x) b, exp((f (+) g - C') / epsilon) - 1>

  is solved by log-domain Sinkhorn iterations (f then g, logsumexp updates,
  started from the potentials of OT(a, a) and OT(b, b), which are solved first
  with the symmetric update f <- (f + T(f)) / 2 of Feydy et al.), at most
  `num_iters` of them for each of the three problems, stopping
  once no potential moves by more than `tol` (in units of the normalised cost
  C') in an iteration. A problem that is still moving after `num_iters`
  iterations (small epsilon converges slowly) or whose result is not finite
  makes the call warn: its value is not the divergence. The returned
  value is on the unnormalised scale (squared feature units, like
  `frechet_distance`):

    S(a, b) = s * [OT(a, b) - (OT(a, a) + OT(b, b)) / 2],

  with the same s for all three terms. S is symmetric, S(a, a) = 0, and S >= 0
  at convergence; tiny negative values can come from float32 roundoff and are
  not clamped. As epsilon -> 0, S tends to the squared 2-Wasserstein distance
  between the empirical measures (plus lambda times label costs). Memory is
  O(Na Nb + Na^2 + Nb^2): the three cost matrices are materialised.

  Args:
    features_a: features [Na, D] (jnp or numpy), Na >= 1.
    features_b: features [Nb, D], same D.
    epsilon: entropic regularisation relative to the mean cost, > 0.
    num_iters: maximum Sinkhorn iterations per OT problem (static).
    labels_a: optional labels [Na] (any hashable numpy dtype) for OTDD.
    labels_b: optional labels [Nb]; give both or neither.
    label_cost_weight: lambda, the weight of the label term, >= 0.
    tol: early-stopping tolerance on the potentials, >= 0 (0: always run
      `num_iters` iterations).

  Returns:
    S(a, b) as a Python float.

  Warns:
    RuntimeWarning: when any of the three OT problems stopped at `num_iters`
      iterations with a last change of a potential still above `tol` (with
      tol > 0; small epsilon converges slowly), or gave a non-finite result: the
      value returned is then unreliable; raise `epsilon` or `num_iters`.

  Raises:
    ValueError: bad shapes, non-finite features, only one of the labels,
      label lengths not matching, non-positive `epsilon`/`num_iters`, or
      negative `tol`/`label_cost_weight`.

  Examples:
    >>> x = np.random.default_rng(0).normal(size=(64, 2))
    >>> abs(sinkhorn_distance(x, x)) < 1e-4
    True

  References:
    Cuturi, "Sinkhorn Distances", NeurIPS 2013; Feydy et al., "Interpolating
    between Optimal Transport and MMD using Sinkhorn Divergences", AISTATS
    2019; Alvarez-Melis & Fusi, "Geometric Dataset Distances via Optimal
    Transport" (OTDD), NeurIPS 2020.
  """
  a = _check_features("features_a", features_a, min_rows=1)
  b = _check_features("features_b", features_b, min_rows=1)
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
  if max(np.abs(a).max(), np.abs(b).max()) > np.finfo(np.float32).max:
    raise ValueError("sinkhorn_distance: the features exceed the float32 range; rescale the features")
  if not epsilon > 0:
    raise ValueError(f"epsilon must be > 0, got {epsilon}")
  if int(num_iters) < 1:
    raise ValueError(f"num_iters must be >= 1, got {num_iters}")
  if not tol >= 0:
    raise ValueError(f"tol must be >= 0, got {tol}")
  if (labels_a is None) != (labels_b is None):
    raise ValueError("give both labels_a and labels_b, or neither")
  if labels_a is None:
    idx_a = np.zeros(a.shape[0], np.int32)
    idx_b = np.zeros(b.shape[0], np.int32)
    w_ab = w_aa = w_bb = np.zeros((1, 1))
    weight = 0.0
  else:
    labels_a, labels_b = np.asarray(labels_a), np.asarray(labels_b)
    if labels_a.shape != (a.shape[0],) or labels_b.shape != (b.shape[0],):
      raise ValueError(
          f"labels must be 1-D and match the rows: labels_a {labels_a.shape} for "
          f"{a.shape[0]} rows, labels_b {labels_b.shape} for {b.shape[0]} rows")
    if not label_cost_weight >= 0:
      raise ValueError(f"label_cost_weight must be >= 0, got {label_cost_weight}")
    idx_a, idx_b, w_ab, w_aa, w_bb = _class_w2_matrices(a, b, labels_a, labels_b)
    weight = float(label_cost_weight)
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  value, delta = _sinkhorn_divergence(
      f32(a), f32(b), jnp.asarray(idx_a, jnp.int32), jnp.asarray(idx_b, jnp.int32),
      f32(w_ab), f32(w_aa), f32(w_bb), f32(weight), f32(epsilon), f32(tol),
      num_iters=int(num_iters))
  value, delta = float(value), float(delta)
  if not math.isfinite(value) or math.isnan(delta):
    warnings.warn(
        f"sinkhorn_distance: the Sinkhorn iterations at epsilon={epsilon:g} gave a non-finite result ({value}); "
        f"raise epsilon or num_iters, or rescale the features if their squared distances overflow float32",
        RuntimeWarning, stacklevel=2)
  elif tol > 0 and not delta <= float(np.float32(tol)):
    warnings.warn(
        f"sinkhorn_distance: the Sinkhorn iterations at epsilon={epsilon:g} did not converge within "
        f"num_iters={int(num_iters)} (last change of a potential {delta:.3g} > tol={tol:g}), so the value "
        f"{value:.6g} is unreliable; raise epsilon or num_iters", RuntimeWarning, stacklevel=2)
  return value


# --------------------------------------------------------------------------- #
# Diversity.
# --------------------------------------------------------------------------- #


@functools.partial(jax.jit, static_argnames=("block_size",))
def _pairwise_block_sums(x: jax.Array, *, block_size: int) -> jax.Array:
  n = x.shape[0]
  # Translation invariant; centring loses less precision in the Gram expansion.
  x = x - jnp.mean(x, axis=0, keepdims=True)
  num_blocks = -(-n // block_size)
  xp = jnp.pad(x, ((0, num_blocks * block_size - n), (0, 0)))
  blocks = xp.reshape(num_blocks, block_size, x.shape[1])
  cols = jnp.arange(n)

  def block_sum(args):
    start, rows = args  # (), (block_size, D)
    d = jnp.sqrt(_sq_dists(rows, x))  # (block_size, N)
    row_ids = start + jnp.arange(block_size)
    keep = (row_ids[:, None] < n) & (row_ids[:, None] != cols[None, :])
    return jnp.sum(jnp.where(keep, d, 0.0))

  starts = jnp.arange(num_blocks) * block_size
  return jax.lax.map(block_sum, (starts, blocks))  # (num_blocks,)


def mean_pairwise_distance(features: Any, *, block_size: int = 1024) -> float:
  """Mean Euclidean distance over distinct pairs of samples (a diversity measure).

    MPD = 2 / (N (N - 1)) * sum_{i < j} ||x_i - x_j||_2.

  Computed in jitted float32 jnp one block of `block_size` rows against all N
  rows at a time (peak memory O(block_size * N), so 10k x 512 features fit
  easily); the per-block sums are added in float64 on the host. Distances come
  from the Gram expansion after centring, so pairs closer than about
  1e-3 x the feature scale are inexact.

  Args:
    features: features [N, D] (jnp or numpy), N >= 2.
    block_size: rows per block (static).

  Returns:
    The mean pairwise distance as a Python float.

  Raises:
    ValueError: not 2-D, fewer than 2 rows, non-finite values, or
      `block_size < 1`.

  Examples:
    >>> mean_pairwise_distance(np.array([[0.0, 0.0], [3.0, 4.0]]))
    5.0
  """
  x = _check_features("features", features)
  if np.abs(x).max() > np.finfo(np.float32).max:
    raise ValueError("mean_pairwise_distance: the features exceed the float32 range; rescale the features")
  if int(block_size) < 1:
    raise ValueError(f"block_size must be >= 1, got {block_size}")
  n = x.shape[0]
  block_size = min(int(block_size), n)
  sums = _pairwise_block_sums(jnp.asarray(x, jnp.float32), block_size=block_size)
  value = float(np.asarray(sums, np.float64).sum() / (n * (n - 1)))
  if not math.isfinite(value):
    raise ValueError("mean_pairwise_distance: the squared distances overflow float32; rescale the features")
  return value


# --------------------------------------------------------------------------- #
# Binary classification (host, float64).
# --------------------------------------------------------------------------- #


def _check_binary(name: str, v: Any) -> np.ndarray:
  v = _check_real(name, v)
  if v.dtype == bool:
    return v.astype(np.int64)
  if not np.all(np.isin(v, (0, 1))):
    raise ValueError(f"{name} must contain only 0/1 (or bool) values")
  return v.astype(np.int64)


def _check_pair(y_pred: Any, y: Any, *, scores: bool) -> tuple[np.ndarray, np.ndarray]:
  y_pred, y = np.asarray(y_pred), np.asarray(y)
  if y_pred.ndim != 1 or y.ndim != 1:
    raise ValueError(f"y_pred and y must be 1-D, got shapes {y_pred.shape} and {y.shape}")
  if y_pred.shape != y.shape:
    raise ValueError(f"y_pred and y lengths differ: {y_pred.shape[0]} vs {y.shape[0]}")
  if y.shape[0] == 0:
    raise ValueError("y_pred and y are empty; expected at least one score and label")
  y = _check_binary("y", y)
  if scores:
    y_pred = _check_real("y_pred", y_pred).astype(np.float64)
    if not np.all(np.isfinite(y_pred)):
      raise ValueError("y_pred contains NaN or inf")
  else:
    y_pred = _check_binary("y_pred", y_pred)
  return y_pred, y


def _require_both_classes(y: np.ndarray) -> None:
  if y.min() == y.max():
    raise ValueError(f"y has only one class ({int(y[0])}); ROC needs positives and negatives")


def compute_roc_auc(y_pred: Any, y: Any) -> float:
  """Area under the ROC curve from scores, ties counted as half (average ranks).

  With r_i the average rank of y_pred_i among all N scores, and P (Q) the
  number of positives (negatives), the Mann-Whitney form is

    AUC = (sum_{i: y_i = 1} r_i - P (P + 1) / 2) / (P Q),

  which equals `sklearn.metrics.roc_auc_score(y, y_pred)` including ties.

  Args:
    y_pred: scores [N] (jnp or numpy), higher means more positive.
    y: binary targets [N] in {0, 1} (or bool).

  Returns:
    The AUC in [0, 1] as a Python float.

  Raises:
    ValueError: lengths differ, not 1-D, empty, y not binary, y has only one
      class, or y_pred not finite.

  Examples:
    >>> compute_roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75

  References:
    Hanley & McNeil, "The meaning and use of the area under a ROC curve",
    Radiology 1982; MONAI `compute_roc_auc`.
  """
  y_pred, y = _check_pair(y_pred, y, scores=True)
  _require_both_classes(y)
  ranks = scipy.stats.rankdata(y_pred)  # average ranks for ties, 1-based
  num_pos = float(y.sum())
  num_neg = float(y.shape[0]) - num_pos
  return float((ranks[y == 1].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def _has_two_of_each_class(y: np.ndarray) -> bool:
  return min(int(y.sum()), int(y.size - y.sum())) >= 2


def _delong_components(y_pred: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
  """(AUC, V10 (P,), V01 (Q,)): DeLong's structural components from midranks (Sun & Xu 2014).

  V10_i is the share of negatives that positive i outranks (ties count half), V01_j the share of
  positives that outrank negative j; the AUC is the mean of either.
  """
  pos, neg = y_pred[y == 1], y_pred[y == 0]
  rank_all = scipy.stats.rankdata(np.concatenate([pos, neg]))
  v10 = (rank_all[: pos.size] - scipy.stats.rankdata(pos)) / neg.size
  v01 = 1.0 - (rank_all[pos.size:] - scipy.stats.rankdata(neg)) / pos.size
  return float(v10.mean()), v10, v01


def compute_roc_auc_ci(y_pred: Any, y: Any, *, level: float = 0.95) -> dict[str, float]:
  """ROC AUC with its DeLong standard error and a normal confidence interval (clipped to [0, 1]).

  The variance is S10 / P + S01 / Q, S10 and S01 the sample variances of DeLong's
  structural components over the P positives and Q negatives. On the small test
  splits of this project (~70 images a class) the half-width is about 0.06: read
  AUC differences below that as noise.

  Args:
    y_pred: scores [N], higher means more positive.
    y: binary targets [N] in {0, 1} (or bool), both classes present, at least 2 of each.
    level: confidence level in (0, 1).

  Returns:
    {"roc_auc", "se", "low", "high", "level"}.

  Raises:
    ValueError: as `compute_roc_auc`, fewer than 2 images of a class, or level outside (0, 1).

  References:
    DeLong, DeLong & Clarke-Pearson, Biometrics 1988; Sun & Xu, IEEE SPL 2014 (midrank algorithm).
  """
  if not 0.0 < level < 1.0:
    raise ValueError(f"level must be in (0, 1), got {level}")
  y_pred, y = _check_pair(y_pred, y, scores=True)
  _require_both_classes(y)
  if not _has_two_of_each_class(y):
    raise ValueError("compute_roc_auc_ci needs at least 2 positives and 2 negatives")
  auc, v10, v01 = _delong_components(y_pred, y)
  se = float(np.sqrt(v10.var(ddof=1) / v10.size + v01.var(ddof=1) / v01.size))
  half = float(scipy.stats.norm.ppf(0.5 + level / 2.0)) * se
  return {"roc_auc": auc, "se": se, "low": max(0.0, auc - half), "high": min(1.0, auc + half), "level": level}


def roc_auc_interval(y_pred: Any, y: Any, *, level: float = 0.95) -> list[float] | None:
  """[low, high] of `compute_roc_auc_ci`, or None when a class has fewer than 2 images.

  For reports over subsets that may be small or one-class (a view, a split); other bad
  input raises as in `compute_roc_auc_ci`.
  """
  y_pred, y = _check_pair(y_pred, y, scores=True)
  if not _has_two_of_each_class(y):
    return None
  ci = compute_roc_auc_ci(y_pred, y, level=level)
  return [ci["low"], ci["high"]]


def compare_roc_auc(y_pred_a: Any, y_pred_b: Any, y: Any) -> dict[str, float]:
  """DeLong's paired test of two scorers' ROC AUCs on the same images.

  Args:
    y_pred_a, y_pred_b: scores [N] of the two scorers, higher means more positive.
    y: binary targets [N], at least 2 of each class.

  Returns:
    {"roc_auc_a", "roc_auc_b", "difference" (a - b), "se" (of the difference), "p_value"
    (two-sided; 1 when the two scorers rank every pair alike)}.

  Raises:
    ValueError: as `compute_roc_auc_ci`, or predictions of different lengths.
  """
  a, y = _check_pair(y_pred_a, y, scores=True)
  b, _ = _check_pair(y_pred_b, y, scores=True)
  _require_both_classes(y)
  if not _has_two_of_each_class(y):
    raise ValueError("compare_roc_auc needs at least 2 positives and 2 negatives")
  auc_a, v10_a, v01_a = _delong_components(a, y)
  auc_b, v10_b, v01_b = _delong_components(b, y)
  cov = np.cov(np.stack([v10_a, v10_b])) / v10_a.size + np.cov(np.stack([v01_a, v01_b])) / v01_a.size
  var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
  diff = auc_a - auc_b
  if var <= 1e-15:
    p_value = 1.0 if abs(diff) < 1e-12 else 0.0
    se = 0.0
  else:
    se = float(np.sqrt(var))
    p_value = float(2.0 * scipy.stats.norm.sf(abs(diff) / se))
  return {"roc_auc_a": auc_a, "roc_auc_b": auc_b, "difference": diff, "se": se, "p_value": p_value}


def cluster_bootstrap_ci(values: Any, clusters: Any, *, level: float = 0.95, n_resamples: int = 2000,
                         seed: int = 0) -> list[float]:
  """Percentile bootstrap interval of a mean over images that come in clusters (patients).

  Whole clusters are resampled with replacement, so several images of one patient
  count as one draw (they are not independent); the statistic is the mean over the
  resampled images.

  Args:
    values: float (N,) per-image values (e.g. Dice).
    clusters: (N,) cluster ids (e.g. patient ids), any hashable dtype.
    level: confidence level in (0, 1).
    n_resamples: bootstrap resamples.
    seed: seed of the resampling.

  Returns:
    [low, high].

  Raises:
    ValueError: mismatched lengths, no values, non-real or non-finite values, a level outside (0, 1)
      or n_resamples < 1.
  """
  values = _check_real("cluster_bootstrap_ci: values", values).astype(np.float64)
  clusters = np.asarray(clusters)
  if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
    raise ValueError(f"cluster_bootstrap_ci: n_resamples must be an integer >= 1, got {n_resamples!r}")
  if values.ndim != 1 or clusters.shape != values.shape or values.size == 0:
    raise ValueError(f"cluster_bootstrap_ci: expected values (N,) and clusters (N,), N > 0, got {values.shape} "
                     f"and {clusters.shape}")
  if not np.isfinite(values).all():
    raise ValueError("cluster_bootstrap_ci: values contain NaN or inf")
  if not 0.0 < level < 1.0:
    raise ValueError(f"level must be in (0, 1), got {level}")
  _, index = np.unique(clusters, return_inverse=True)
  sums = np.bincount(index, weights=values)
  counts = np.bincount(index).astype(np.float64)
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, sums.size, (n_resamples, sums.size))
  means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
  tail = (1.0 - level) / 2.0
  return [float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))]


def compute_roc_curve(y_pred: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """ROC curve: a thin wrapper around `sklearn.metrics.roc_curve(y, y_pred)`.

  For each threshold t (decreasing, the first is +inf):
  TPR(t) = #{y_pred >= t, y = 1} / P and FPR(t) = #{y_pred >= t, y = 0} / Q.
  sklearn's defaults apply (`drop_intermediate=True`: collinear points dropped).

  Args:
    y_pred: scores [N] (jnp or numpy).
    y: binary targets [N] in {0, 1} (or bool), both classes present.

  Returns:
    `(fpr, tpr, thresholds)` as numpy arrays of equal length.

  Raises:
    ValueError: as `compute_roc_auc`.
  """
  y_pred, y = _check_pair(y_pred, y, scores=True)
  _require_both_classes(y)
  fpr, tpr, thresholds = sk_metrics.roc_curve(y, y_pred)
  return fpr, tpr, thresholds


def compute_pr_curve(y_pred: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Precision-recall curve: a thin wrapper around `sklearn.metrics.precision_recall_curve`.

  For each distinct threshold t (increasing):
  precision(t) = TP(t) / (TP(t) + FP(t)), recall(t) = TP(t) / P, counting
  y_pred >= t as positive. As in sklearn, the arrays end with the point
  (precision 1, recall 0), which has no threshold, so `len(thresholds) ==
  len(precision) - 1`.

  Args:
    y_pred: scores [N] (jnp or numpy).
    y: binary targets [N] in {0, 1} (or bool), at least one positive.

  Returns:
    `(precision, recall, thresholds)` as numpy arrays.

  Raises:
    ValueError: lengths differ, not 1-D, empty, y not binary, no positive in
      y (recall undefined), or y_pred not finite.
  """
  y_pred, y = _check_pair(y_pred, y, scores=True)
  if y.sum() == 0:
    raise ValueError("y has no positives; recall is undefined")
  precision, recall, thresholds = sk_metrics.precision_recall_curve(y, y_pred)
  return precision, recall, thresholds


def compute_confusion(y_pred_binary: Any, y: Any) -> np.ndarray:
  """Binary confusion matrix `[[tn, fp], [fn, tp]]` (rows: truth, columns: prediction).

  C[t, p] = #{i : y_i = t, y_pred_i = p}, the layout of
  `sklearn.metrics.confusion_matrix(y, y_pred, labels=[0, 1])`.

  Args:
    y_pred_binary: predicted labels [N] in {0, 1} (or bool).
    y: binary targets [N] in {0, 1} (or bool).

  Returns:
    An int64 array of shape (2, 2).

  Raises:
    ValueError: lengths differ, not 1-D, empty, or values not binary.

  Examples:
    >>> compute_confusion([1, 0, 1, 1], [1, 0, 0, 1]).tolist()
    [[1, 1], [0, 2]]
  """
  y_pred, y = _check_pair(y_pred_binary, y, scores=False)
  return np.bincount(2 * y + y_pred, minlength=4).reshape(2, 2).astype(np.int64)


def _safe_div(num: float, den: float) -> float:
  return float(num) / float(den) if den else 0.0


def compute_binary_report(y_pred_binary: Any, y: Any) -> dict[str, float | int]:
  """Accuracy, precision, recall/sensitivity, specificity, F1, TPR, FPR and the counts.

    accuracy = (tp + tn) / N,        precision = tp / (tp + fp),
    recall = tpr = tp / (tp + fn),   specificity = tn / (tn + fp),
    fpr = fp / (fp + tn),            f1 = 2 tp / (2 tp + fp + fn).

  A ratio with a zero denominator is 0.0 (never NaN), as sklearn's
  `zero_division=0`.

  Args:
    y_pred_binary: predicted labels [N] in {0, 1} (or bool).
    y: binary targets [N] in {0, 1} (or bool).

  Returns:
    dict with float `accuracy, precision, recall, specificity, f1, tpr, fpr`
    and int `tn, fp, fn, tp`.

  Raises:
    ValueError: as `compute_confusion`.
  """
  (tn, fp), (fn, tp) = compute_confusion(y_pred_binary, y).tolist()
  recall = _safe_div(tp, tp + fn)
  return {
      "accuracy": _safe_div(tp + tn, tn + fp + fn + tp),
      "precision": _safe_div(tp, tp + fp),
      "recall": recall,
      "specificity": _safe_div(tn, tn + fp),
      "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
      "tpr": recall,
      "fpr": _safe_div(fp, fp + tn),
      "tn": tn, "fp": fp, "fn": fn, "tp": tp,
  }


# --------------------------------------------------------------------------- #
# Segmentation (jitted jnp).
# --------------------------------------------------------------------------- #


def _check_label_maps(y_pred: Any, y: Any) -> tuple[jax.Array, jax.Array]:
  y_pred, y = (v if isinstance(v, jax.Array) else _check_real(name, v) for name, v in (("y_pred", y_pred), ("y", y)))
  y_pred, y = jnp.asarray(y_pred), jnp.asarray(y)
  if y_pred.ndim != 3 or y_pred.shape != y.shape:
    raise ValueError(
        f"y_pred and y must be integer label maps of equal shape (B, H, W), got "
        f"{y_pred.shape} and {y.shape}")
  for name, v in (("y_pred", y_pred), ("y", y)):
    if not (jnp.issubdtype(v.dtype, jnp.integer) or v.dtype == jnp.bool_):
      raise ValueError(f"{name} must be an integer label map, got dtype {v.dtype}")
  return y_pred.astype(jnp.int32), y.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _overlap_counts(y_pred, y, *, num_classes):
  classes = jnp.arange(1, num_classes, dtype=jnp.int32).reshape(1, 1, 1, -1)  # foreground only
  p = (y_pred[..., None] == classes).astype(jnp.float32)  # (B, H, W, K-1)
  t = (y[..., None] == classes).astype(jnp.float32)
  inter = jnp.sum(p * t, axis=(1, 2))  # (B, K-1)
  return inter, jnp.sum(p, axis=(1, 2)), jnp.sum(t, axis=(1, 2))


def _check_num_classes(num_classes: int) -> int:
  if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 2:
    raise ValueError(f"num_classes must be an integer >= 2 (background + one class), got {num_classes!r}")
  return int(num_classes)


def _check_label_range(y_pred: jax.Array, y: jax.Array, num_classes: int) -> None:
  """Raises ValueError if a label lies outside [0, num_classes) (it would silently count as no class).

  Checked on concrete arrays only (two scalars come to the host); traced inputs are not checked.
  """
  for name, v in (("y_pred", y_pred), ("y", y)):
    if isinstance(v, jax.core.Tracer) or v.size == 0:
      continue
    lo, hi = (int(m) for m in _label_extremes(v))
    if lo < 0 or hi >= num_classes:
      values = np.unique(np.asarray(v))
      bad = values[(values < 0) | (values >= num_classes)]
      raise ValueError(
          f"{name} has label values {bad[:10].tolist()}{' ...' if bad.size > 10 else ''} outside [0, {num_classes}) "
          f"(num_classes={num_classes}); map them to classes in range, or raise num_classes to cover them")


@jax.jit
def _label_extremes(v: jax.Array) -> tuple[jax.Array, jax.Array]:
  return v.min(), v.max()


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _dice(y_pred, y, *, num_classes):
  inter, size_p, size_t = _overlap_counts(y_pred, y, num_classes=num_classes)
  den = size_p + size_t
  return jnp.where(den > 0, 2.0 * inter / jnp.where(den > 0, den, 1.0), 1.0)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _iou(y_pred, y, *, num_classes):
  inter, size_p, size_t = _overlap_counts(y_pred, y, num_classes=num_classes)
  union = size_p + size_t - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 1.0)


def compute_dice(y_pred: Any, y: Any, *, num_classes: int) -> jax.Array:
  """Per-image, per-foreground-class Dice from integer label maps.

  For image b and class c in 1..K-1, with P = {y_pred == c} and T = {y == c}:

    Dice[b, c-1] = 2 |P n T| / (|P| + |T|),

  defined as 1.0 when both are empty and 0.0 when only one is (never NaN).
  Class 0 (background) is not reported.

  Args:
    y_pred: predicted label maps (B, H, W), integer in [0, num_classes) (jnp or numpy).
    y: target label maps (B, H, W), integer in [0, num_classes).
    num_classes: K, including background (static; e.g. 3 for background,
      right lung, left lung).

  Returns:
    float32 jax array (B, num_classes - 1).

  Raises:
    ValueError: shapes differ or are not (B, H, W), non-integer dtype,
      `num_classes < 2`, or (concrete inputs) a label outside [0, num_classes),
      which would otherwise count as no class at all.

  Examples:
    >>> m = np.zeros((1, 4, 4), np.int32); m[0, :2, :2] = 1
    >>> compute_dice(m, m, num_classes=3).tolist()  # class 2 empty in both
    [[1.0, 1.0]]

  References:
    Dice, "Measures of the amount of ecologic association between species",
    Ecology 1945; MONAI `compute_dice`.
  """
  y_pred, y = _check_label_maps(y_pred, y)
  num_classes = _check_num_classes(num_classes)
  _check_label_range(y_pred, y, num_classes)
  return _dice(y_pred, y, num_classes=num_classes)


def compute_iou(y_pred: Any, y: Any, *, num_classes: int) -> jax.Array:
  """Per-image, per-foreground-class intersection over union (Jaccard index).

    IoU[b, c-1] = |P n T| / |P u T|,   P = {y_pred == c}, T = {y == c},

  1.0 when both are empty, 0.0 when only one is. Note IoU = Dice / (2 - Dice).

  Args:
    y_pred: predicted label maps (B, H, W), integer in [0, num_classes) (jnp or numpy).
    y: target label maps (B, H, W), integer in [0, num_classes).
    num_classes: K, including background (static).

  Returns:
    float32 jax array (B, num_classes - 1).

  Raises:
    ValueError: as `compute_dice`.

  Examples:
    >>> a = np.zeros((1, 4, 4), np.int32); a[0, :2, :] = 1  # 8 pixels
    >>> b = np.zeros((1, 4, 4), np.int32); b[0, 1:3, :] = 1  # 8 pixels, 4 shared
    >>> round(float(compute_iou(a, b, num_classes=2)[0, 0]), 4)
    0.3333
  """
  y_pred, y = _check_label_maps(y_pred, y)
  num_classes = _check_num_classes(num_classes)
  _check_label_range(y_pred, y, num_classes)
  return _iou(y_pred, y, num_classes=num_classes)


@jax.jit
def _pixel_accuracy(y_pred, y):
  return jnp.mean((y_pred == y).astype(jnp.float32), axis=(1, 2))


def compute_pixel_accuracy(y_pred: Any, y: Any) -> jax.Array:
  """Fraction of pixels whose label matches, per image: mean_{h,w} [y_pred == y].

  Args:
    y_pred: predicted label maps (B, H, W), integer (jnp or numpy).
    y: target label maps (B, H, W), integer.

  Returns:
    float32 jax array (B,).

  Raises:
    ValueError: as `compute_dice`.
  """
  y_pred, y = _check_label_maps(y_pred, y)
  return _pixel_accuracy(y_pred, y)
