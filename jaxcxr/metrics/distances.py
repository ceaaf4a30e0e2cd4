"""Distances between feature sets (rows are samples) and their diversity.

* `frechet_distance`: the FID formula between Gaussian fits, float64 on the host.
* `sinkhorn_distance`: the debiased entropic optimal-transport divergence in jitted jnp,
  optionally label-aware as in OTDD.
* `mean_pairwise_distance`: the mean Euclidean distance between rows (blockwise, jitted).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcxr.metrics.checks import check_real

__all__ = ["frechet_distance", "mean_pairwise_distance", "sinkhorn_distance"]

_HIGHEST = jax.lax.Precision.HIGHEST


# --------------------------------------------------------------------------- #
# Host-side Gaussian helpers (float64).
# --------------------------------------------------------------------------- #


def _check_features(name: str, x: Any, min_rows: int = 2) -> np.ndarray:
  x = check_real(name, x)
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
