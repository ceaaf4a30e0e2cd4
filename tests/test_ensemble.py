"""Tests of the classifier ensemble: soft voting, the folded pixel voter, Grad-CAM, assembly, scoring."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcxr import checkpoints, data, explain, scoring
from jaxcxr.config import ClassifierConfig, ClassifierEnsembleConfig, UNetConfig, classifier_tiny
from jaxcxr.models.classifier import load_classifier, predict_logits, prepare_images
from jaxcxr.models.ensemble import ClassifierEnsemble, block_means, set_pixel_weights
from jaxcxr.models.unet import UNet
from jaxcxr.train import classifier as tc

MEMBER = ClassifierConfig(resolution=32, stages=(1, 1), channels=(4, 8), norm_groups=2)


@pytest.fixture(scope="module")
def nih(nih_path):
  return data.load(nih_path)


@pytest.fixture(scope="module")
def ensemble():
  model = ClassifierEnsemble(ClassifierEnsembleConfig(member=MEMBER, members=2, pixel_size=8), rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  set_pixel_weights(model, rng.normal(size=(8, 8)), 0.3)
  return model


def test_logit_is_the_mean_of_the_voters_and_head_of_features(ensemble):
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(3, 32, 32, 1)), jnp.float32)
  voters = ensemble.voter_logits(x)
  assert voters.shape == (3, 3)
  np.testing.assert_allclose(ensemble(x), voters.mean(axis=1), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ensemble.head(ensemble.features(x)), ensemble(x), rtol=1e-6)
  # The pixel voter is the dot product of its weights with the 8x8 block means, plus its bias.
  expected = (block_means(x, 8) * ensemble.pixel.weight[...][None]).sum(axis=(1, 2)) + 0.3
  np.testing.assert_allclose(voters[:, 2], expected, rtol=1e-5)


def test_grad_cam_of_the_ensemble_has_the_pixel_voters_evidence(ensemble):
  x = np.random.default_rng(2).integers(0, 256, (2, 32, 32), dtype=np.uint8)
  cam = explain.grad_cam(ensemble, x, batch_size=2)
  assert cam.heatmap.shape == (2, 32, 32) and np.isfinite(cam.raw_max).all()
  # With the members silenced (zero heads), the raw map is the pixel voter's own cell map / voters.
  silent = nnx.clone(ensemble)
  for m in silent.members:
    m.linear.kernel[...] = jnp.zeros_like(m.linear.kernel[...])
  raw = explain.grad_cam(silent, x, batch_size=2).raw_max
  cells = silent.pixel.cell_map(jnp.asarray(prepare_images(x, 32)), (4, 4)) * 16 / 3
  np.testing.assert_allclose(raw, np.maximum(np.asarray(cells).max(axis=(1, 2)), 0), rtol=1e-4, atol=1e-5)


def test_fit_pixel_voter_folds_the_standardisation(nih):
  y = nih.label.astype(np.int32)
  weight, bias, c = tc.fit_pixel_voter(nih.images, y, nih.patient_id, 32, 8)
  # The folded weights reproduce a logistic regression refitted at the chosen C on the same features.
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  x = np.asarray(block_means(jnp.asarray(prepare_images(nih.images, 32)), 8)).reshape(len(y), -1)
  reference = make_pipeline(StandardScaler(), LogisticRegression(C=c, solver="liblinear", max_iter=1000)).fit(x, y)
  np.testing.assert_allclose(x @ weight.ravel() + bias, reference.decision_function(x), rtol=1e-4, atol=1e-4)


def test_assemble_ensemble_saves_a_loadable_scorable_model(nih, tmp_path):
  cfg = classifier_tiny(resolution=32)
  members = [tc.train_classifier(nih, cfg, tmp_path / f"m{seed}", seed=seed, progress=False,
                                 report_test=False)["classifier"] for seed in (0, 1)]
  result = tc.assemble_ensemble(members, nih, tmp_path / "ensemble", pixel_size=16)   # the 16x16 feature map
  assert set(result["val_voters"]) == {"member 0", "member 1", "pixel"}
  model = load_classifier(result["classifier"])
  assert isinstance(model, ClassifierEnsemble) and model.config.members == 2
  meta = checkpoints.read_metadata(result["classifier"])
  assert meta["split"] == checkpoints.read_metadata(members[0])["split"] and meta["test"] is None
  # The saved ensemble's members are the trained members.
  np.testing.assert_allclose(predict_logits(model.members[1], nih.images[:4]),
                             predict_logits(load_classifier(members[1]), nih.images[:4]), rtol=1e-6)
  # It drives the post-filter like a single classifier.
  unet = UNet(UNetConfig(resolution=32, channels=(4, 8), norm_groups=2), rngs=nnx.Rngs(0))
  config = scoring.ScoringConfig(mask_size=32, dilation=3, atlas_size=8, batch_size=4)
  scored = scoring.calibrate(unet, model, nih.images[:20], config).score(nih.images[:4])
  assert np.isfinite(scored.measures["abnormal_logit"]).all() and np.isfinite(scored.measures["maxheat"]).all()
  # Members of another split are refused.
  other = tc.train_classifier(nih, dataclasses.replace(cfg, split_seed=5), tmp_path / "other", progress=False,
                              report_test=False)["classifier"]
  with pytest.raises(ValueError, match="split"):
    tc.assemble_ensemble([members[0], other], nih, tmp_path / "bad")


def test_ensemble_config_validation():
  with pytest.raises(ValueError, match="members"):
    ClassifierEnsembleConfig(member=MEMBER, members=0)
  with pytest.raises(ValueError, match="pixel_size"):
    ClassifierEnsembleConfig(member=MEMBER, pixel_size=5)
