"""Tests of the Flax latent classifiers and the model zoo (`jaxcxr.prefilter.classifiers`)."""

import numpy as np
import pytest
from flax import nnx

from jaxcxr import prefilter
from jaxcxr.config import LatentClassifierConfig, latent_deep, latent_logreg, latent_mlp
from jaxcxr.metrics import compute_roc_auc
from jaxcxr.models.latent import LatentClassifier
from jaxcxr.prefilter import classifiers

# ----------------------------------------------------------------------------- Flax latent classifiers


def _linear_problem(n, seed, threshold=0.3):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, 128)).astype(np.float32)
  return z, (z[:, 0] + 0.5 * z[:, 1] > threshold).astype(np.int64)


@pytest.fixture(scope="module")
def separable():
  # 2048 training latents: with 128 noise dimensions, a 16-unit MLP trained on 512 reaches only ~0.91.
  z_train, y_train = _linear_problem(2048, 0)
  z_test, y_test = _linear_problem(512, 1)
  return z_train, y_train, z_test, y_test


@pytest.fixture(scope="module")
def fitted_bn_mlp(separable):
  z, y, _, _ = separable
  config = LatentClassifierConfig(hidden=(16,), batch_norm=(0,))
  return prefilter.fit_latent_classifier(z, y, config, steps=300, steps_per_call=50, batch_size=64,
                                         seed=0)


def test_flax_logreg_learns_linear_problem(separable):
  z, y, z_test, y_test = separable
  model = prefilter.fit_latent_classifier(z, y, latent_logreg(), steps=300, steps_per_call=50, batch_size=64,
                                          imbalance="focal")
  p = prefilter.predict_latent(model, z_test)
  assert p.shape == (512,) and p.dtype == np.float32 and np.all((p >= 0) & (p <= 1))
  assert compute_roc_auc(p, y_test) > 0.95


def test_flax_mlp_with_batch_norm_learns_and_is_batch_independent(separable, fitted_bn_mlp):
  _, _, z_test, y_test = separable
  p = prefilter.predict_latent(fitted_bn_mlp, z_test)
  assert compute_roc_auc(p, y_test) > 0.95
  # Inference mode: a latent's output does not depend on the batch (running averages, no batch statistics).
  np.testing.assert_allclose(prefilter.predict_latent(fitted_bn_mlp, z_test[:1]), p[:1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(prefilter.predict_latent(fitted_bn_mlp, z_test[100:103]), p[100:103], rtol=1e-5,
                             atol=1e-6)
  # No recompile for a batch size in an already compiled power-of-two bucket (5 -> 128 rows, as 1 and 3).
  compiled = classifiers._latent_logits._cache_size()
  prefilter.predict_latent(fitted_bn_mlp, z_test[:5])
  assert classifiers._latent_logits._cache_size() == compiled
  # The running averages moved away from their initial values during training.
  mean = np.asarray(fitted_bn_mlp.norms[0].mean[...])
  assert np.abs(mean).max() > 1e-3


def test_fit_step_compiles_once_per_config_and_size_bucket(separable):
  z, y, _, _ = separable
  # The settings of the Flax model in `cv_rows` (steps_per_call = min(100, steps)), whose training parts of
  # 44-67 latents fall in the same 128-row bucket: one compiled step for this test and all those fits.
  settings = dict(steps=100, batch_size=64)
  prefilter.fit_latent_classifier(z[:100], y[:100], latent_logreg(), **settings)
  step = classifiers._make_fit_step(latent_logreg(), "class_weights", 64, 100)
  compiled = step._cache_size()
  # Another number of latents in the same bucket and another learning rate reuse the compiled step.
  prefilter.fit_latent_classifier(z[:45], y[:45], latent_logreg(), **settings, learning_rate=5e-3)
  assert step._cache_size() == compiled


def test_deep_net_shapes():
  # Abstract (eval_shape) model: eager initialisation of 14 layers compiles one sampler per shape (~7 s on CPU).
  model = nnx.eval_shape(lambda: LatentClassifier(latent_deep(), rngs=nnx.Rngs(0)))
  assert [layer.out_features for layer in model.hidden] == [256, 256, 128, 128, 64, 64, 32, 32] + [16] * 6
  assert len(model.norms) == 3 and model.head.out_features == 1
  z = np.zeros((5, 128), np.float32)
  assert nnx.eval_shape(lambda: LatentClassifier(latent_deep(), rngs=nnx.Rngs(0))(z)).shape == (5,)
  infer = lambda: nnx.view(LatentClassifier(latent_deep(), rngs=nnx.Rngs(0)), use_running_average=True)(z)
  assert nnx.eval_shape(infer).shape == (5,)
  assert nnx.eval_shape(lambda: LatentClassifier(latent_mlp(4), rngs=nnx.Rngs(0))(z)).shape == (5,)


def test_wrong_latent_size_errors(fitted_bn_mlp):
  with pytest.raises(ValueError, match=r"\(B, 128\)"):
    prefilter.predict_latent(fitted_bn_mlp, np.zeros((4, 64), np.float32))
  with pytest.raises(ValueError, match=r"\(B, 128\)"):
    prefilter.fit_latent_classifier(np.zeros((4, 64), np.float32), [0, 1, 0, 1], latent_logreg(), steps=1)
  with pytest.raises(ValueError, match=r"\(B, 128\)"):
    fitted_bn_mlp(np.zeros((128,), np.float32))
  with pytest.raises(ValueError, match="only one class"):
    prefilter.fit_latent_classifier(np.zeros((4, 128), np.float32), [1, 1, 1, 1], latent_logreg(), steps=1)
  with pytest.raises(ValueError, match="batch_norm"):
    LatentClassifierConfig(hidden=(8,), batch_norm=(1,))


# ----------------------------------------------------------------------------- model zoo


def test_model_zoo_names_and_every_sklearn_model_runs():
  zoo = prefilter.latent_model_zoo()
  assert list(zoo) == ["knn_1", "knn_3", "knn_10", "knn_30", "svc_linear", "svc_rbf", "svc_poly",
                       "logreg_C0.01", "logreg_C0.1", "logreg_C1", "logreg_C10", "logreg_l1", "tree_d5",
                       "tree_d10", "forest", "flax_logreg", "flax_mlp1", "flax_mlp2", "flax_mlp3", "flax_mlp4",
                       "flax_deep"]
  assert zoo["flax_deep"].config == latent_deep()
  # Every scikit-learn model through the CV loop (scores from decision_function or predict_proba), kept
  # cheap: one group of 16-d latents, 2 folds, 10 trees (160 latents: knn_30's inner training parts need 30).
  rng = np.random.default_rng(5)
  z = rng.normal(size=(160, 16)).astype(np.float32)
  valid = z[:, 0] + 0.5 * rng.normal(size=160) > 0.5
  sklearn_models = {k: v for k, v in zoo.items() if not k.startswith("flax_")}
  sklearn_models["forest"].set_params(n_estimators=10)
  rows = prefilter.cross_validate_latent(z, valid, np.full(160, "38_44m"), sklearn_models, n_folds=2)
  assert [r["model"] for r in rows] == list(sklearn_models)
  assert all(np.isfinite(r["roc_auc"]) and np.isfinite(r["precision"]) and not r["note"] for r in rows)
  assert np.mean([r["roc_auc"] for r in rows]) > 0.7


def test_deep_latent_classifier_stays_finite_with_a_rare_class():
  # ~1% negatives weigh ~50x under class weights: the 14-layer net diverged to NaN before gradient clipping.
  rng = np.random.default_rng(7)
  z = rng.standard_normal((600, 128)).astype(np.float32)
  y = np.ones(600, np.int64)
  y[:6] = 0
  model = prefilter.fit_latent_classifier(z, y, latent_deep(), steps=300)
  assert np.all(np.isfinite(prefilter.predict_latent(model, z)))
