"""Latent classifiers: the Flax latent classifier and the scikit-learn model zoo on z.

* Flax latent classifiers (`jaxcxr.models.latent`): `fit_latent_classifier` (one jitted
  `lax.scan` of optax steps per call, train state donated), `predict_latent` (`jax.jit`
  over the `nnx.split` state, docs/conventions.md), and `FlaxLatentEstimator`, their
  scikit-learn face.
* Model zoo: `latent_model_zoo` (the original study's grid), `DEFAULT_REPORT_MODELS`,
  `FAMILY_MODELS` and `select_models` (estimators by name).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.special
from flax import nnx
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.tree import DecisionTreeClassifier

from jaxcxr.config import LATENT_PRESETS, LatentClassifierConfig
from jaxcxr.models.graph import abstract_graphdef
from jaxcxr.models.latent import LatentClassifier
from jaxcxr.prefilter.thresholds import _check_labels
from jaxcxr.train.classifier import focal_loss, weighted_bce

__all__ = [
    "DEFAULT_REPORT_MODELS",
    "FAMILY_MODELS",
    "FOCAL_GAMMA",
    "FlaxLatentEstimator",
    "IMBALANCE",
    "fit_latent_classifier",
    "latent_model_zoo",
    "predict_latent",
    "select_models",
]

# Class-imbalance handling of `fit_latent_classifier`.
IMBALANCE: tuple[str, ...] = ("class_weights", "focal", "none")
# Focusing exponent gamma of the "focal" loss (Lin et al. 2017's default).
FOCAL_GAMMA = 2.0

# Global gradient-norm clip of the Flax latent classifiers: with class weights N / (2 N_c) a rare
# class (a score target with ~1% negatives) weighs ~50x, and the 14-layer `latent_deep` under
# momentum SGD then diverged to NaN scores (measured: the 11-family table's one-model-per-score
# variant on gan_256, group 18_24m); ordinary steps stay below it (flax_logreg's CV ROC AUC on
# that group is 0.802 with and without the clip).
GRADIENT_CLIP = 5.0


# ============================================================================ Flax latent classifiers


def _check_latents(z: Any, latent_dim: int, name: str = "z") -> np.ndarray:
  z = np.asarray(z)
  if z.ndim != 2 or z.shape[1] != latent_dim:
    raise ValueError(f"{name}: expected latents of shape (B, {latent_dim}), got {z.shape}")
  if not np.issubdtype(z.dtype, np.floating) or not np.all(np.isfinite(z)):
    raise ValueError(f"{name}: expected finite float latents, got dtype {z.dtype}")
  return z.astype(np.float32)


def _bucket(n: int, minimum: int = 128) -> int:
  """Padded row count: the next power of two >= max(n, minimum), so few shapes ever compile.

  The minimum of 128 puts the inner and outer training parts of a ~100-latent group
  into one bucket (each new shape costs a 2-3 s compile on a small CPU).
  """
  return max(minimum, 1 << max(0, n - 1).bit_length())


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  return np.concatenate([x, np.zeros((rows - x.shape[0], *x.shape[1:]), x.dtype)]) if rows > x.shape[0] else x


def _sgd_with_weight_decay(learning_rate, weight_decay) -> optax.GradientTransformation:
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: str(getattr(path[-1], "key", path[-1])) == "kernel", params)
  return optax.chain(optax.clip_by_global_norm(GRADIENT_CLIP),
                     optax.add_decayed_weights(weight_decay, mask=decay_mask),
                     optax.sgd(learning_rate, momentum=0.9, nesterov=True))


def _optimizer() -> optax.GradientTransformation:
  """Nesterov SGD with L2 weight decay on Dense kernels (not biases or BatchNorm scales), gradients clipped.

  Not Adam: its per-coordinate step normalisation moves all 128 latent coordinates
  equally fast, so with a few hundred latents the noise coordinates grow as fast
  as the informative ones (measured: held-out ROC AUC 0.60 for Adam against 0.75
  for SGD and 0.76 for scikit-learn's logistic regression, 67 training latents).
  Gradient descent from zero follows the ridge path instead. The hyperparameters
  live in the optimiser state, so another learning rate or weight decay does not
  recompile.
  """
  return optax.inject_hyperparams(_sgd_with_weight_decay)(learning_rate=0.1, weight_decay=0.0)


@functools.lru_cache(maxsize=32)
def _make_fit_step(config: LatentClassifierConfig, imbalance: str, batch_size: int, steps_per_call: int):
  """Jitted `steps_per_call` optimisation steps in one `lax.scan`, train state donated (cached)."""
  graphdef = abstract_graphdef(LatentClassifier, config)
  tx = _optimizer()

  def step(state, data):
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
    idx = jax.random.randint(key, (batch_size,), 0, data["n"])       # rows >= n are padding
    z, y = data["z"][idx], data["y"][idx]                             # (B, D), (B,)

    def loss_fn(params):
      model = nnx.merge(graphdef, params, state["batch_stats"])
      logits = model(z)                                               # (B,)
      if imbalance == "class_weights":
        loss = weighted_bce(logits, y, data["class_weights"])
      elif imbalance == "focal":
        loss = focal_loss(logits, y, gamma=FOCAL_GAMMA)
      else:
        loss = optax.sigmoid_binary_cross_entropy(logits, y.astype(jnp.float32))
      return loss.mean(), nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new = {"step": state["step"] + 1, "key": state["key"], "params": params, "batch_stats": batch_stats,
           "opt": opt}
    return new, loss

  def call(state, data):
    return jax.lax.scan(lambda s, _: step(s, data), state, None, length=steps_per_call)

  return jax.jit(call, donate_argnums=0)


def fit_latent_classifier(z: Any, y: Any, config: LatentClassifierConfig, *, imbalance: str = "class_weights",
                          steps: int = 1000, batch_size: int = 256, learning_rate: float = 0.05,
                          weight_decay: float = 1e-3, steps_per_call: int = 100,
                          seed: int = 0) -> LatentClassifier:
  """Trains a latent classifier with Nesterov SGD on minibatches drawn with replacement.

  Step t draws its batch from `jax.random.fold_in(key(seed), t)` inside one jitted
  function that runs `steps_per_call` steps in a `lax.scan` with the train state
  (params, BatchNorm statistics, optimiser state) donated. The training rows are
  padded to a power of two (indices are drawn below the true count), so folds of
  slightly different sizes reuse one compiled step per config.

  Losses (`imbalance`): "class_weights" is w_y BCE with w_c = N / (2 N_c) from `y`
  (each class weighs half of the loss); "focal" is the focal loss with gamma =
  `FOCAL_GAMMA` (Lin et al. 2017); "none" is plain BCE.

  Args:
    z: float (N, config.latent_dim) training latents.
    y: (N,) binary labels in {0, 1} or bool, both classes present.
    config: the classifier (see `jaxcxr.models.latent`).
    imbalance: one of `IMBALANCE`.
    steps: total optimisation steps, a multiple of min(steps_per_call, steps).
    batch_size: latents per step.
    learning_rate: SGD learning rate (constant; momentum 0.9, Nesterov).
    weight_decay: L2 weight decay on Dense kernels (added to the gradient).
    steps_per_call: steps per jitted call.
    seed: seeds the initialisation and the batches.

  Returns:
    The fitted `LatentClassifier` (in training mode; `predict_latent` switches its
    BatchNorms to their running averages).

  Raises:
    ValueError: z not (N, latent_dim) or not finite, y not binary or of one class,
      an unknown `imbalance`, or non-positive step/batch settings.
  """
  if imbalance not in IMBALANCE:
    raise ValueError(f"unknown imbalance {imbalance!r}; expected one of {', '.join(IMBALANCE)}")
  if steps <= 0 or batch_size <= 0 or steps_per_call <= 0 or learning_rate <= 0 or weight_decay < 0:
    raise ValueError("fit_latent_classifier: steps, batch_size, steps_per_call and learning_rate must be "
                     "positive, weight_decay non-negative")
  per_call = min(steps_per_call, steps)
  if steps % per_call:
    raise ValueError(f"fit_latent_classifier: steps={steps} is not a multiple of steps_per_call={per_call}")
  z = _check_latents(z, config.latent_dim)
  y = _check_labels(y, both_classes=True)
  if y.shape[0] != z.shape[0]:
    raise ValueError(f"fit_latent_classifier: expected one label per latent, got {z.shape[0]} latents but "
                     f"{y.shape[0]} labels")
  n = z.shape[0]
  counts = np.bincount(y, minlength=2)
  rows = _bucket(n)
  data = {"z": jnp.asarray(_pad_rows(z, rows)), "y": jnp.asarray(_pad_rows(y.astype(np.int32), rows)),
          "n": jnp.int32(n), "class_weights": jnp.asarray(n / (2.0 * counts), jnp.float32)}

  root = jax.random.key(seed)
  model = LatentClassifier(config, rngs=nnx.Rngs(jax.random.fold_in(root, 1)))
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params, batch_stats = nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)
  opt = _optimizer().init(params)
  opt.hyperparams["learning_rate"] = jnp.asarray(learning_rate, jnp.float32)
  opt.hyperparams["weight_decay"] = jnp.asarray(weight_decay, jnp.float32)
  state = {"step": jnp.zeros((), jnp.int32), "key": jax.random.key_data(jax.random.fold_in(root, 2)),
           "params": params, "batch_stats": batch_stats, "opt": opt}
  fit_step = _make_fit_step(config, imbalance, batch_size, per_call)
  for _ in range(steps // per_call):
    state, _ = fit_step(state, data)
  return nnx.merge(graphdef, state["params"], state["batch_stats"])


@functools.partial(jax.jit, static_argnums=0)
def _latent_logits(graphdef, state, z):
  return nnx.merge(graphdef, state)(z)                                # (B,)


def _inference_logits(model: LatentClassifier, z: Any, chunk: int = 8192) -> np.ndarray:
  """float32 (N,) logits of the model in inference mode, in padded chunks (few compiled shapes)."""
  z = _check_latents(z, model.config.latent_dim)
  graphdef, state = nnx.split(nnx.view(model, use_running_average=True, raise_if_not_found=False))
  out = []
  for start in range(0, z.shape[0], chunk):
    block = z[start: start + chunk]
    logits = _latent_logits(graphdef, state, _pad_rows(block, _bucket(block.shape[0])))
    out.append(np.asarray(jax.device_get(logits))[: block.shape[0]])
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def predict_latent(model: LatentClassifier, z: Any) -> np.ndarray:
  """Probability that each latent's image is valid: sigmoid(logit), BatchNorm in inference mode.

  Runs `jax.jit` over the state from `nnx.split` of
  `nnx.view(model, use_running_average=True)` (docs/conventions.md: ~10x less
  per-call overhead than `nnx.jit` at small batches); rows are padded to a power
  of two (at least 128, at most 8192 per call), so a new batch size rarely compiles. Each
  latent's output depends on that latent only.

  Args:
    model: a `LatentClassifier` (e.g. from `fit_latent_classifier`).
    z: float (B, model.config.latent_dim) latents.

  Returns:
    float32 numpy (B,) probabilities in [0, 1]. For ranking, prefer the logits
    (`FlaxLatentEstimator.decision_function`): float32 probabilities saturate at 1.

  Raises:
    ValueError: z is not (B, latent_dim) or not finite.
  """
  return scipy.special.expit(_inference_logits(model, z)).astype(np.float32)


class FlaxLatentEstimator(ClassifierMixin, BaseEstimator):
  """scikit-learn face of a Flax latent classifier, so one CV loop handles every model.

  `fit(X, y)` runs `fit_latent_classifier`; `decision_function` gives logits,
  `predict_proba` (N, 2) probabilities, `predict` 0/1 at logit 0. Parameters are
  stored unchanged (scikit-learn convention), so `sklearn.base.clone` works.

  Args:
    config: the classifier config (default: logistic regression on 128-d z).
    imbalance, steps, batch_size, learning_rate, weight_decay, seed: as
      `fit_latent_classifier`.
  """

  def __init__(self, config: LatentClassifierConfig | None = None, *, imbalance: str = "class_weights",
               steps: int = 1000, batch_size: int = 256, learning_rate: float = 0.05,
               weight_decay: float = 1e-3, seed: int = 0):
    self.config = config
    self.imbalance = imbalance
    self.steps = steps
    self.batch_size = batch_size
    self.learning_rate = learning_rate
    self.weight_decay = weight_decay
    self.seed = seed

  def fit(self, X, y):  # pylint: disable=invalid-name  (scikit-learn's argument names)
    config = self.config or LatentClassifierConfig()
    self.model_ = fit_latent_classifier(X, y, config, imbalance=self.imbalance, steps=self.steps,
                                        batch_size=self.batch_size, learning_rate=self.learning_rate,
                                        weight_decay=self.weight_decay, seed=self.seed)
    self.classes_ = np.array([0, 1])
    return self

  def decision_function(self, X) -> np.ndarray:  # pylint: disable=invalid-name
    return _inference_logits(self.model_, X)

  def predict_proba(self, X) -> np.ndarray:  # pylint: disable=invalid-name
    p = predict_latent(self.model_, X).astype(np.float64)
    return np.stack([1.0 - p, p], axis=1)

  def predict(self, X) -> np.ndarray:  # pylint: disable=invalid-name
    return (self.decision_function(X) >= 0).astype(np.int64)


# ============================================================================ model zoo


def latent_model_zoo(*, seed: int = 0, flax: bool = True, flax_steps: int = 1000) -> dict[str, Any]:
  """The original study's model grid on z, by name (unfitted scikit-learn estimators).

  * "knn_1", "knn_3", "knn_10", "knn_30": StandardScaler + k-nearest neighbours
    (scores: the fraction of valid neighbours);
  * "svc_linear" (LinearSVC: liblinear's squared hinge, because libsvm's linear
    kernel scales quadratically with 10k latents), "svc_rbf", "svc_poly" (degree
    3): StandardScaler + SVM, scores from `decision_function` (no Platt scaling:
    ROC AUC and thresholds only need a ranking);
  * "logreg_C0.01", "logreg_C0.1", "logreg_C1", "logreg_C10" (L2) and
    "logreg_l1" (C = 1, L1, liblinear): StandardScaler + logistic regression;
  * "tree_d5", "tree_d10": decision trees of depth 5 and 10;
  * "forest": a random forest of 200 trees;
  * with `flax`: "flax_logreg", "flax_mlp1" ... "flax_mlp4", "flax_deep"
    (`FlaxLatentEstimator` over the `jaxcxr.models.latent` presets; z ~ N(0, I)
    needs no scaler).

  Every model that supports it uses balanced class weights (w_c = N / (2 N_c)):
  with ~4% valid latents the default decision otherwise almost never accepts,
  which leaves "precision at the default" undefined. ROC AUC barely depends on it.

  Args:
    seed: random_state of the stochastic models and seed of the Flax ones.
    flax: include the Flax models.
    flax_steps: optimisation steps of each Flax fit.

  Returns:
    dict name -> estimator, in the order above.
  """
  if flax and (not isinstance(flax_steps, (int, np.integer)) or flax_steps < 1):
    raise ValueError(f"latent_model_zoo: flax_steps must be an integer >= 1, got {flax_steps!r}")

  scaled = lambda estimator: make_pipeline(StandardScaler(), estimator)
  zoo: dict[str, Any] = {}
  for k in (1, 3, 10, 30):
    zoo[f"knn_{k}"] = scaled(KNeighborsClassifier(n_neighbors=k))
  zoo["svc_linear"] = scaled(LinearSVC(class_weight="balanced", random_state=seed))
  zoo["svc_rbf"] = scaled(SVC(kernel="rbf", class_weight="balanced", random_state=seed))
  zoo["svc_poly"] = scaled(SVC(kernel="poly", degree=3, class_weight="balanced", random_state=seed))
  for c, name in ((1e-2, "0.01"), (1e-1, "0.1"), (1.0, "1"), (1e1, "10")):
    zoo[f"logreg_C{name}"] = scaled(LogisticRegression(C=c, class_weight="balanced", max_iter=1000))
  zoo["logreg_l1"] = scaled(LogisticRegression(C=1.0, l1_ratio=1.0, solver="liblinear", class_weight="balanced",
                                               random_state=seed))
  for depth in (5, 10):
    zoo[f"tree_d{depth}"] = DecisionTreeClassifier(max_depth=depth, class_weight="balanced", random_state=seed)
  zoo["forest"] = RandomForestClassifier(n_estimators=200, class_weight="balanced", random_state=seed)
  if flax:
    for name, preset in LATENT_PRESETS.items():
      zoo[f"flax_{name}"] = FlaxLatentEstimator(preset(), steps=flax_steps, seed=seed)
  return zoo


# A fast subset of `latent_model_zoo` (the full zoo with SVMs and deep Flax nets is slow on a CPU).
DEFAULT_REPORT_MODELS: tuple[str, ...] = ("logreg_C1", "logreg_l1", "knn_10", "tree_d5", "forest", "flax_logreg",
                                          "flax_mlp2")

# One model per family of the zoo, the original study's 11-family table: L2 and L1 logistic
# regression, linear, RBF and polynomial SVMs, k-NN, a decision tree, a random forest, and the
# Flax logistic regression, MLP and deep net.
FAMILY_MODELS: tuple[str, ...] = ("logreg_C1", "logreg_l1", "svc_linear", "svc_rbf", "svc_poly", "knn_10", "tree_d5",
                                  "forest", "flax_logreg", "flax_mlp2", "flax_deep")


def select_models(names: str | Sequence[str] | None = None, *, seed: int = 0) -> dict[str, Any]:
  """Estimators of `latent_model_zoo` by name: None -> `DEFAULT_REPORT_MODELS`, "families" -> `FAMILY_MODELS`,
  "all" -> the whole zoo.

  Args:
    names: a comma-separated string or a sequence of zoo names, "families", "all", or None.
    seed: as `latent_model_zoo`.

  Raises:
    ValueError: an unknown name (listing the known ones) or an empty selection.
  """
  if not (names is None or isinstance(names, str)
          or (isinstance(names, Sequence) and all(isinstance(n, str) for n in names))):
    raise ValueError(f"names: expected None, a comma-separated string or a sequence of model names, got {names!r}")
  zoo = latent_model_zoo(seed=seed)
  if names is None:
    names = DEFAULT_REPORT_MODELS
  if isinstance(names, str):
    if names.strip() == "all":
      return zoo
    if names.strip() == "families":
      return {n: zoo[n] for n in FAMILY_MODELS}
    names = [n.strip() for n in names.split(",") if n.strip()]
  names = list(names)
  unknown = [n for n in names if n not in zoo]
  if unknown or not names:
    raise ValueError(f"unknown latent model(s) {unknown}; expected some of {', '.join(zoo)} (or 'all')")
  return {n: zoo[n] for n in names}
