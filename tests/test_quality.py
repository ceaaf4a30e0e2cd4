"""Tests for jaxcxr.quality on an untrained tiny GAN (figures are computed, finite, and ordered)."""

import dataclasses

import numpy as np
import pytest
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


@pytest.mark.parametrize("female_level, agreement", [(200, 1.0), (50, 0.0)])
def test_sex_classifier_agreement_known_answer(nih_path, monkeypatch, female_level, agreement):
  """A generator that draws the asked sex (female: uniform `female_level`, male: 255 - it) and a classifier that
  reads it (logit > 0 where bright): the agreement is 1, or 0 when the generator draws the other sex."""
  from jaxcxr.config import ClassifierConfig
  from jaxcxr.models.classifier import Classifier

  cfg = config.gan_tiny(resolution=32)
  generator = Generator(cfg.generator, rngs=nnx.Rngs(0))
  discriminator = nnx.view(Discriminator(cfg.discriminator, rngs=nnx.Rngs(1)), use_running_average=True)
  classifier = Classifier(ClassifierConfig(resolution=32, stages=(1,), channels=(4,), norm_groups=2),
                          rngs=nnx.Rngs(2))
  drawn = []

  def sample_images(gen, key, n, group):
    assert gen is generator
    drawn.append(group)
    level = female_level if group.endswith("f") else 255 - female_level
    return np.full((n, 32, 32), level, np.uint8)

  def predict_logits(model, images, **_):
    assert model is classifier
    return np.asarray(images, np.float32).mean(axis=(1, 2)) / 255.0 - 0.5

  monkeypatch.setattr(quality.generator_lib, "sample_images", sample_images)
  monkeypatch.setattr(quality, "predict_logits", predict_logits)
  result = quality.evaluate_gan(generator, discriminator, data.load(nih_path), n_per_group=4, sex_classifier=classifier)
  assert drawn == list(data.GROUPS)
  assert result["sex_classifier_agreement_generated"] == agreement
  female = {g: row["classifier_female_fraction"] for g, row in result["groups"].items()}
  assert female == {g: float(g.endswith("f") == (agreement == 1.0)) for g in data.GROUPS}


def _normals_with_distinct_patients(real, n, *, seed, prefix):
  """n distinct normal images (the fixture's normals, shifted and with pixel noise), one patient each."""
  normals = real.select(label=0)
  rng = np.random.default_rng(seed)
  pick = rng.integers(0, len(normals), n)
  shifts = rng.integers(-6, 7, (n, 2))
  images = np.stack([np.roll(normals.images[i], tuple(s), axis=(0, 1)) for i, s in zip(pick, shifts)])
  images = np.clip(np.round(images + rng.normal(0.0, 2.0, images.shape)), 0, 255).astype(np.uint8)
  return dataclasses.replace(normals.subset(pick), images=images,
                             patient_id=np.asarray([f"{prefix}{i}" for i in range(n)]))


def test_evaluate_gan_realism_figures_with_a_discriminator_below_the_generators_resolution(nih_path, tmp_path):
  # A cascade's discriminator works at the low resolution: D features must be computed at D's size.
  generator = Generator(config.GeneratorConfig(resolution=64, base_channels=4, max_channels=8, norm_groups=2),
                        rngs=nnx.Rngs(0))
  discriminator = nnx.view(Discriminator(config.DiscriminatorConfig(resolution=32, base_channels=4, max_channels=8),
                                         rngs=nnx.Rngs(1)), use_running_average=True)
  real = data.load(nih_path)
  # D sees images LANCZOS-resized to its own side, as in its training, whatever their size
  images = data.resize_uint8(real.images[:4], 64)
  features = quality.discriminator_features(discriminator, images)
  np.testing.assert_allclose(features, quality.discriminator_features(discriminator, data.resize_uint8(images, 32)),
                             rtol=1e-5, atol=1e-6)
  assert quality.discriminator_features(discriminator, data.resize_uint8(real.images[:4], 48)).shape == features.shape
  test_normals = _normals_with_distinct_patients(real, 72, seed=0, prefix="test")
  train_normals = _normals_with_distinct_patients(real, 48, seed=1, prefix="train")
  calls = []

  def block_means(images):   # a feature space for the audit: 8x8 block means
    calls.append(images.shape)
    return images.reshape(len(images), 8, 8, 8, 8).mean(axis=(2, 4)).reshape(len(images), -1)

  result = quality.evaluate_gan(generator, discriminator, real, n_per_group=2, test_normals=test_normals,
                                train_normals=train_normals, memorisation_features=block_means,
                                closest_pairs_path=tmp_path / "pairs.png")
  assert result["resolution"] == 64
  assert result["fd_generated_vs_real"] > 2 * result["fd_real_vs_real"] > 0
  r = result["realism"]
  assert r["n_per_set"] == 36                        # 72 patients in two equal halves
  for name in ("pixels", "hog", "detail"):
    auc = r[f"two_sample_auc_{name}"]
    assert 0.0 <= auc["real_vs_real"] <= 1.0 and 0.0 <= auc["generated_vs_real"] <= 1.0
  # an untrained generator's images are told apart from radiographs; the two real halves are not
  assert r["two_sample_auc_pixels"]["generated_vs_real"] > 0.9 > 0.7 > r["two_sample_auc_pixels"]["real_vs_real"]
  fd = r["pca_frechet"]
  assert fd["generated_vs_real"] > fd["real_vs_real"] > 0 and fd["ratio"] > 1
  hf = r["high_frequency_share"]
  assert all(np.isfinite(hf[k]) and hf[k] >= 0 for k in ("generated", "real_a", "real_b", "ratio"))
  assert 0 < hf["real_a"] < 1 and 0.5 < hf["real_vs_real_ratio"] < 2

  # Memorisation: the 6 x 2 group samples against the 48 training and 72 test images, each set at 64x64.
  m = result["memorisation"]
  assert sorted(calls) == [(12, 64, 64), (48, 64, 64), (72, 64, 64)]
  for space in ("pixels", "features"):
    a = m[space]
    assert (a["n_generated"], a["n_training"], a["n_test"]) == (12, 48, 72)
    assert a["threshold"] == a["test"]["q05"] > 0
    # an untrained generator's noise is nowhere near a radiograph: none below the test images' 5th percentile, and the
    # closest noise image farther from the training images than 95% of the test images (the farthest test image, an
    # outlier of the fixture, may be farther still: it was, for one draw of the initial weights)
    assert a["share_below_threshold"] == 0.0 and a["generated"]["min"] > a["test"]["q95"]
    assert len(a["closest_pairs"]) == 8
  assert m["pixels"]["figure"] == str(tmp_path / "pairs.png")
  assert m["features"]["figure"] == str(tmp_path / "pairs_features.png")
  assert (tmp_path / "pairs.png").is_file() and (tmp_path / "pairs_features.png").is_file()
  # Diversity: 36 generated (B's conditions) against A; groups of 2 generated images each.
  d = result["diversity"]
  assert d["overall"]["generated"] > 0 and 0.5 < d["overall"]["real_vs_real_ratio"] < 2
  assert set(d["groups"]) == set(data.GROUPS) and all(g["n_generated"] == 2 for g in d["groups"].values())
  for pair in ("generated_vs_real", "real_vs_real"):
    assert 0 <= d["precision_recall"][pair]["precision"] <= 1 and 0 <= d["precision_recall"][pair]["recall"] <= 1
  # noise images lie off the real images' manifold; the other real half lies on it
  assert d["precision_recall"]["generated_vs_real"]["precision"] < d["precision_recall"]["real_vs_real"]["precision"]
  assert d["nearest_neighbour_share"]["generated_vs_real"] < d["nearest_neighbour_share"]["real_vs_real"]
  report = quality.format_gan_report(result)
  for line in ("two-sample AUC, HOG", "diversity (mean pairwise distance", "precision / recall (k = 3)",
               "memorisation audit", f"closest pairs (features): {tmp_path / 'pairs_features.png'}"):
    assert line in report, line


def test_evaluate_gan_realism_needs_32_normal_test_images_per_half(nih_path):
  cfg = config.gan_tiny(resolution=32)
  generator = Generator(cfg.generator, rngs=nnx.Rngs(0))
  discriminator = nnx.view(Discriminator(cfg.discriminator, rngs=nnx.Rngs(1)), use_running_average=True)
  real = data.load(nih_path)
  train_normals = _normals_with_distinct_patients(real, 48, seed=1, prefix="train")
  with pytest.raises(data.DataError, match=r"12 normal test images .*need at least 32 per half \(the PCA dimension\)"):
    quality.evaluate_gan(generator, discriminator, real, test_normals=real, train_normals=train_normals)
  with pytest.raises(data.DataError, match=r"12 normal training images; need more than 32"):
    quality.evaluate_gan(generator, discriminator, real, train_normals=real,
                         test_normals=_normals_with_distinct_patients(real, 64, seed=2, prefix="test"))
  with pytest.raises(ValueError, match="together"):
    quality.evaluate_gan(generator, discriminator, real, test_normals=real)
  with pytest.raises(ValueError, match="closest_pairs_path belong to the memorisation audit, which needs test_normals"):
    quality.evaluate_gan(generator, discriminator, real, closest_pairs_path="pairs.png")

