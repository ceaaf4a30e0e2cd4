"""Tests for jaxcxr.quality on an untrained tiny GAN (figures are computed, finite, and ordered)."""

import numpy as np
from flax import nnx

from jaxcxr import config, data, quality
from jaxcxr.models import Discriminator, Generator


def test_evaluate_gan_on_untrained_pair(nih_path):
  cfg = config.gan_tiny(resolution=32)
  generator = Generator(cfg.generator, rngs=nnx.Rngs(0))
  discriminator = nnx.view(Discriminator(cfg.discriminator, rngs=nnx.Rngs(1)), use_running_average=True)
  real = data.load(nih_path)
  result = quality.evaluate_gan(generator, discriminator, real, n_per_group=4)
  assert result["n_real_half"] == 12
  for name in ("fd_generated_vs_real", "fd_real_vs_real", "sinkhorn_generated_vs_real", "sinkhorn_real_vs_real"):
    assert np.isfinite(result[name]), name
  # An untrained generator draws noise-like images: far from real radiographs, much farther
  # than one half of the real images from the other half.
  assert result["fd_generated_vs_real"] > 2 * result["fd_real_vs_real"] > 0
  assert set(result["groups"]) == set(data.GROUPS)
  assert all(0.0 <= g["female_fraction"] <= 1.0 for g in result["groups"].values())
  assert 0.0 <= result["sex_agreement_generated"] <= 1.0


def test_evaluate_gan_with_classifier_feature_space_and_sex_classifier(nih_path):
  from jaxcxr.config import ClassifierConfig
  from jaxcxr.models.classifier import Classifier, predict_pooled_features

  cfg = config.gan_tiny(resolution=32)
  generator = Generator(cfg.generator, rngs=nnx.Rngs(0))
  discriminator = nnx.view(Discriminator(cfg.discriminator, rngs=nnx.Rngs(1)), use_running_average=True)
  classifier = Classifier(ClassifierConfig(resolution=32, stages=(1,), channels=(4,), norm_groups=2),
                          rngs=nnx.Rngs(2))
  real = data.load(nih_path)
  result = quality.evaluate_gan(generator, discriminator, real, n_per_group=4, sex_classifier=classifier,
                                feature_classifier=classifier)
  assert result["fd_classifier_generated_vs_real"] > result["fd_classifier_real_vs_real"] > 0
  assert result["fd_classifier_ratio"] > 1
  assert 0.0 <= result["sex_classifier_agreement_generated"] <= 1.0
  assert 0.0 <= result["sex_classifier_accuracy_real"] <= 1.0
  assert all(0.0 <= g["classifier_female_fraction"] <= 1.0 for g in result["groups"].values())
  # the pooled features are per image: one image alone equals the same image in a batch
  features = predict_pooled_features(classifier, real.images[:5], batch_size=4)
  alone = predict_pooled_features(classifier, real.images[4:5], batch_size=4)
  np.testing.assert_allclose(features[4], alone[0], rtol=1e-5, atol=1e-6)
