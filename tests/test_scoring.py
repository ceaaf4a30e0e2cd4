"""Tests of the post-filter (`jaxcxr.scoring`): features, scores, batching, sharding, generate-and-score.

Feature and score maths are checked on hand-made masks with known answers. The
pipeline tests use tiny random models (shapes, batch independence, determinism,
bf16, save/load); the blank/saturated-image tests use the shipped checkpoints,
whose calibration is what users run.
"""

import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcxr import checkpoints, data, scoring
from jaxcxr.models.generator import latents
from jaxcxr.models.unet import UNet

from conftest import unoptimised_xla_flags

CONFIG = scoring.ScoringConfig(mask_size=32, dilation=3, atlas_size=8, batch_size=4)


def _rect(h, w, top, left, height, width):
  m = np.zeros((h, w), np.uint8)
  m[top: top + height, left: left + width] = 1
  return m


# ----------------------------------------------------------------------------- features


def test_symmetric_mask_gives_perfect_symmetry_features():
  right = _rect(16, 16, 3, 1, 10, 5)                       # image left half
  labels = right + 2 * right[:, ::-1]                       # mirrored left lung on the right half
  f = np.asarray(scoring.symmetry_features(jnp.asarray(labels[None]), 3))
  np.testing.assert_allclose(f[0], [1.0, 1.0, 0.0, 1.0, 1.0, 0.0], atol=1e-6)


def test_symmetry_features_match_hand_computed_values():
  # Left half: a 4x4 block (16 px); right half mirrored: a 4x2 block inside it (8 px).
  labels = np.zeros((1, 8, 16), np.uint8)
  labels[0, 2:6, 2:6] = 1
  labels[0, 2:6, 10:12] = 2       # mirrored columns 16-1-11=4 .. 16-1-10=5 -> inside 2:6
  f = np.asarray(scoring.symmetry_features(jnp.asarray(labels), 1))[0]
  iou, cosine, deviation = 8 / 16, 8 / np.sqrt(16 * 8), (16 / 24 - 0.5) ** 2
  np.testing.assert_allclose(f, [iou, cosine, deviation, iou, cosine, deviation], rtol=1e-6)


def test_dilation_changes_only_the_dilated_features():
  labels = np.zeros((1, 12, 12), np.uint8)
  labels[0, 5, 2] = 1             # one pixel each side, mirror positions differ by one column
  labels[0, 5, 12 - 1 - 3] = 2
  f = np.asarray(scoring.symmetry_features(jnp.asarray(labels), 3))[0]
  np.testing.assert_allclose(f[:3], [0.0, 0.0, 0.0], atol=1e-7)      # disjoint single pixels
  # dilated 3x3 squares overlapping in 2 columns x 3 rows: IoU 6/12, cosine 6/9
  np.testing.assert_allclose(f[3:], [6 / 12, 6 / 9, 0.0], rtol=1e-6)


def test_empty_mask_features_are_finite_worst_values():
  f = np.asarray(scoring.symmetry_features(jnp.zeros((2, 8, 8), jnp.uint8), 3))
  np.testing.assert_array_equal(f, np.tile([0.0, 0.0, 0.25, 0.0, 0.0, 0.25], (2, 1)).astype(np.float32))


def test_symmetry_features_reject_odd_width():
  with pytest.raises(ValueError, match="even W"):
    scoring.symmetry_features(jnp.zeros((1, 8, 7), jnp.uint8))


@pytest.mark.parametrize("dilation", [0, -3, 2, 4, 3.0, True, "3", None], ids=repr)
def test_symmetry_features_reject_bad_dilation(dilation):
  # 0 used to fail with a TypeError deep inside jax; even sides were silently accepted.
  with pytest.raises(ValueError, match=rf"dilation must be a positive odd integer, got {re.escape(repr(dilation))}"):
    scoring.symmetry_features(jnp.zeros((1, 8, 8), jnp.uint8), dilation)


def test_symmetry_features_accept_numpy_integer_dilation():
  labels = np.zeros((1, 12, 12), np.uint8)
  labels[0, 5, 2] = 1
  labels[0, 5, 12 - 1 - 3] = 2
  want = np.asarray(scoring.symmetry_features(jnp.asarray(labels), 3))
  np.testing.assert_array_equal(scoring.symmetry_features(jnp.asarray(labels), np.int64(3)), want)


def test_lung_measures_on_hand_made_masks():
  labels = np.zeros((1, 8, 8), np.uint8)
  labels[0, 1:5, 1:3] = 1        # right lung 8 px
  labels[0, 1:5, 5:8] = 2        # left lung 12 px; mirrored columns 0..2 -> overlap columns 1..2 = 8 px
  atlas = np.zeros((2, 4, 4), np.float32)
  m = {k: float(v[0]) for k, v in scoring.lung_measures(jnp.asarray(labels), jnp.asarray(atlas)).items()}
  assert m["area_right"] == 8 and m["area_left"] == 12
  assert m["symmetry"] == pytest.approx(2 * 8 / 20)
  assert m["log_ratio"] == pytest.approx(np.log(13 / 9))
  assert m["shape"] == 0.0                                   # no overlap with an empty atlas


def _calibration(**changes):
  base = dict(atlas=np.zeros((2, 8, 8), np.float32), shape_min=0.5, symmetry_min=0.5, log_ratio_min=-0.2,
              log_ratio_max=0.3, abnormal_logit_max=1.0, maxheat_max=10.0)
  base.update(changes)
  return scoring.Calibration(**base)


def test_scores_are_positive_exactly_when_inside_the_calibrated_range():
  measures = {"shape": np.array([0.6, 0.4]), "symmetry": np.array([0.7, 0.7]),
              "log_ratio": np.array([0.0, 0.5]), "area_right": np.array([10.0, 10.0]),
              "area_left": np.array([10.0, 16.0]), "abnormal_logit": np.array([0.0, 2.0]),
              "maxheat": np.array([3.0, 3.0])}
  scores, valid = scoring.score_from_measures(measures, _calibration())
  s = {k: np.asarray(v) for k, v in scores.items()}
  np.testing.assert_allclose(s["score_shape"], [0.1, -0.1], atol=1e-6)
  np.testing.assert_allclose(s["score_abnormal"], [1.0, -1.0], atol=1e-6)
  np.testing.assert_allclose(s["score_maxheat"], [7.0, 7.0], atol=1e-6)
  np.testing.assert_allclose(s["score_left2right"], [0.2, -0.2], atol=1e-6)
  np.testing.assert_array_equal(np.asarray(valid), [True, False])


def test_no_lung_fails_left2right():
  measures = {"shape": np.zeros(1), "symmetry": np.zeros(1), "log_ratio": np.zeros(1), "area_right": np.zeros(1),
              "area_left": np.zeros(1), "abnormal_logit": np.zeros(1), "maxheat": np.zeros(1)}
  scores, valid = scoring.score_from_measures(measures, _calibration())
  assert float(scores["score_left2right"][0]) == -1.0 and not bool(valid[0])


# ----------------------------------------------------------------------------- pipeline, tiny models


# `tiny` (U-Net, classifier, generator at 32x32) comes from tests/conftest.py.


@pytest.fixture(scope="module")
def nih(nih_path):
  return data.load(nih_path)


@pytest.fixture(scope="module")
def scorer(tiny, nih):
  unet, classifier, _ = tiny
  return scoring.calibrate(unet, classifier, nih.images[:20], CONFIG)


def test_calibration_gives_the_configured_shapes(scorer):
  c = scorer.calibration
  assert c.atlas.shape == (2, 8, 8) and np.all((c.atlas >= 0) & (c.atlas <= 1))
  assert c.log_ratio_min <= c.log_ratio_max
  assert scorer.provenance["n_calibration_images"] == 20


def test_calibrate_needs_twenty_images(tiny, nih):
  with pytest.raises(ValueError, match="at least 20"):
    scoring.calibrate(tiny[0], tiny[1], nih.images[:5], CONFIG)


def test_score_shapes_and_batch_independence(scorer, nih):
  batch = scorer.score(nih.images[:6], keep_maps=True)
  assert batch.features.shape == (6, 6) and batch.valid.shape == (6,) and batch.valid.dtype == bool
  assert batch.masks.shape == (6, 32, 32) and batch.heatmaps.shape == (6, 32, 32)
  assert set(batch.scores) == set(scoring.SCORE_NAMES)
  np.testing.assert_array_equal(batch.valid, np.all([batch.scores[k] > 0 for k in scoring.SCORE_NAMES], axis=0))
  alone = scorer.score(nih.images[2:3])
  for name in scoring.SCORE_NAMES:
    np.testing.assert_allclose(alone.scores[name][0], batch.scores[name][2], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(alone.features[0], batch.features[2], rtol=1e-5, atol=1e-6)


def test_score_accepts_float_images_like_uint8(scorer, nih):
  a = scorer.score(nih.images[:2])
  b = scorer.score(nih.images[:2].astype(np.float32) / 255.0)
  np.testing.assert_allclose(a.scores["score_abnormal"], b.scores["score_abnormal"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("images, match", [
    (np.zeros((2, 32, 30), np.uint8), "square"),
    (np.full((2, 32, 32), np.nan, np.float32), "NaN"),
    (np.full((2, 32, 32), -1.0, np.float32), r"\[0, 1\]"),
    (np.zeros((2, 32, 32), np.int64), "uint8"),
    (np.zeros((32, 32), np.uint8), "shape"),
])
def test_score_rejects_bad_images(scorer, images, match):
  with pytest.raises(ValueError, match=match):
    scorer.score(images)


def test_generate_and_score_is_deterministic_and_independent_of_n(scorer, tiny, getkey):
  generator = tiny[2]
  key = getkey()
  six = scorer.generate_and_score(generator, key, 6, "38_44f")
  assert six.images.shape == (6, 32, 32) and six.images.dtype == np.uint8 and six.z.shape == (6, 128)
  again = scorer.generate_and_score(generator, key, 6, "38_44f")
  np.testing.assert_array_equal(six.images, again.images)
  # sample 5 of a run of 6 is sample 1 of a run started at 4
  later = scorer.generate_and_score(generator, key, 2, "38_44f", start=4)
  np.testing.assert_array_equal(later.images[1], six.images[5])
  np.testing.assert_allclose(later.z[1], np.asarray(latents(key, jnp.int32(5), 1, 128))[0], rtol=1e-6)
  np.testing.assert_allclose(later.result.scores["score_shape"][1], six.result.scores["score_shape"][5], atol=1e-5)
  # the images it returns score the same through score()
  direct = scorer.score(six.images)
  np.testing.assert_allclose(direct.features, six.result.features, atol=0.02)
  # one batch as `generate_and_score_program` gives it: the same compiled call (no new compile), samples 0..3
  program = scorer.generate_and_score_program(generator, key, "38_44f")
  compiled = program.fn._cache_size()   # pylint: disable=protected-access
  out = program.fn(*program.args)
  assert program.fn._cache_size() == compiled   # pylint: disable=protected-access
  np.testing.assert_array_equal(np.asarray(out["images"]), six.images[:4])
  np.testing.assert_array_equal(np.asarray(out["z"]), six.z[:4])
  np.testing.assert_array_equal(np.asarray(out["scores"]["score_shape"]), six.result.scores["score_shape"][:4])
  with pytest.raises(ValueError, match="start must be"):
    scorer.generate_and_score_program(generator, key, "38_44f", start=-1)


def test_generate_and_score_bad_input(scorer, tiny, getkey):
  with pytest.raises(data.DataError):
    scorer.generate_and_score(tiny[2], getkey(), 2, "99_99x")
  with pytest.raises(ValueError, match="n must be"):
    scorer.generate_and_score(tiny[2], getkey(), -1, "38_44f")


def test_bfloat16_scores_are_finite_and_close(scorer, nih):
  fp32 = scorer.score(nih.images[:4])
  bf16 = scorer.with_config(dtype="bfloat16").score(nih.images[:4])
  for name in scoring.SCORE_NAMES:
    assert np.isfinite(bf16.scores[name]).all()
  np.testing.assert_allclose(bf16.measures["abnormal_logit"], fp32.measures["abnormal_logit"], atol=0.1)


def _saved_models(tmp_path, tiny):
  """Saves the tiny U-Net and classifier; returns their folders and a calibration provenance naming them."""
  unet_dir, cls_dir = tmp_path / "unet", tmp_path / "classifier"
  checkpoints.save_model(unet_dir, tiny[0], tiny[0].config)
  checkpoints.save_model(cls_dir, tiny[1], tiny[1].config)
  provenance = {"unet": str(unet_dir), "unet_id": checkpoints.model_id(unet_dir),
                "classifier": str(cls_dir), "classifier_id": checkpoints.model_id(cls_dir)}
  return unet_dir, cls_dir, provenance


def test_save_and_load_round_trip(scorer, tmp_path, tiny):
  unet_dir, cls_dir, provenance = _saved_models(tmp_path, tiny)
  saved = scoring.Scorer(tiny[0], tiny[1], scorer.calibration, CONFIG, provenance=provenance)
  saved.save(tmp_path / "calibration")
  loaded = scoring.load_scorer(tmp_path / "calibration", unet_dir=unet_dir, classifier_dir=cls_dir)
  for name in scoring.THRESHOLD_NAMES:
    assert float(getattr(loaded.calibration, name)) == pytest.approx(float(getattr(scorer.calibration, name)))
  np.testing.assert_array_equal(loaded.calibration.atlas, scorer.calibration.atlas)
  assert loaded.config == CONFIG
  # other weights than the calibrated ones are refused
  other = tmp_path / "other_unet"
  checkpoints.save_model(other, UNet(tiny[0].config, rngs=nnx.Rngs(7)), tiny[0].config)
  with pytest.raises(checkpoints.CheckpointError, match="differ"):
    scoring.load_scorer(tmp_path / "calibration", unet_dir=other, classifier_dir=cls_dir)
  with pytest.raises(checkpoints.CheckpointError, match="calibration"):
    scoring.load_scorer(tmp_path / "missing")


# ----------------------------------------------------------------------------- strictness levels


def test_standard_strictness_is_the_five_percent_calibration(scorer):
  ref = scorer.reference
  c = scorer.calibration
  assert scorer.strictness == scoring.STANDARD_STRICTNESS and scorer.strictness_name == "standard"
  assert float(c.shape_min) == pytest.approx(np.percentile(ref["shape"], 5), rel=1e-6)
  assert float(c.symmetry_min) == pytest.approx(np.percentile(ref["symmetry"], 5), rel=1e-6)
  assert float(c.log_ratio_min) == pytest.approx(np.percentile(ref["log_ratio"], 2.5), rel=1e-6, abs=1e-7)
  assert float(c.log_ratio_max) == pytest.approx(np.percentile(ref["log_ratio"], 97.5), rel=1e-6, abs=1e-7)
  assert float(c.abnormal_logit_max) == pytest.approx(np.percentile(ref["abnormal_logit"], 95), rel=1e-6)
  assert float(c.maxheat_max) == pytest.approx(np.percentile(ref["maxheat"], 95), rel=1e-6)


def test_other_strictness_changes_thresholds_not_measures(scorer, nih):
  images = nih.images[:24]
  standard = scorer.score(images)
  for q in (0.01, 0.05, 0.2, 0.5):
    stricter = scorer.at_strictness(q)
    assert stricter.strictness == q and scorer.strictness == scoring.STANDARD_STRICTNESS  # a copy
    scored = stricter.score(images)
    # The measures do not depend on the thresholds; validity from stored measures equals rescoring.
    np.testing.assert_array_equal(scored.measures["abnormal_logit"], standard.measures["abnormal_logit"])
    np.testing.assert_array_equal(scorer.valid_at(standard.measures, q), scored.valid)
  assert scorer.at_strictness("standard") is scorer


def _synthetic_reference(n=200, seed=0):
  """Raw measures of n imaginary normal images (the tiny random U-Net finds no lungs to measure)."""
  rng = np.random.default_rng(seed)
  return {"shape": rng.uniform(0.6, 0.9, n), "symmetry": rng.uniform(0.7, 0.95, n),
          "log_ratio": rng.normal(-0.1, 0.1, n), "abnormal_logit": rng.normal(-2, 1, n),
          "maxheat": rng.normal(1, 0.5, n), "area_right": np.full(n, 900.0), "area_left": np.full(n, 800.0)}


@pytest.fixture(scope="module")
def synthetic(tiny):
  ref = _synthetic_reference()
  atlas = np.full((2, 8, 8), 0.5, np.float32)
  return scoring.Scorer(tiny[0], tiny[1], scoring.thresholds_at(ref, atlas, 0.05), CONFIG, reference=ref), ref


def test_valid_rate_of_reference_images_falls_with_strictness(synthetic):
  scorer, ref = synthetic
  rates = [scorer.valid_at(ref, q).mean() for q in (0.01, 0.05, 0.2, 0.5)]
  assert rates == sorted(rates, reverse=True)
  # Each score fails a fraction q of the reference images; five independent scores keep about (1 - q)^5.
  assert rates[1] == pytest.approx(0.95 ** 5, abs=0.06) and rates[3] == pytest.approx(0.5 ** 5, abs=0.05)


@pytest.mark.parametrize("level", ["lenient", "0.95", 0.0, float("nan"), "-0.1"])
def test_unknown_or_out_of_range_strictness_is_refused(scorer, level):
  with pytest.raises(ValueError, match="strictness"):
    scorer.at_strictness(level)


def test_strictness_for_valid_rate_finds_the_target(synthetic):
  scorer, measures = synthetic
  n = len(measures["shape"])
  q = scoring.strictness_for_valid_rate(scorer, measures, 0.3)
  assert scoring.STRICTNESS_RANGE[0] < q < scoring.STRICTNESS_RANGE[1]
  # The rate is a step function of q: within one image of the target on either side of q.
  assert scorer.valid_at(measures, q).mean() <= 0.3 < scorer.valid_at(measures, q - 1e-6).mean() + 1 / n
  with pytest.raises(ValueError, match="valid_rate"):
    scoring.strictness_for_valid_rate(scorer, measures, 1.5)


def test_calibrate_strict_level_pools_every_group_and_records_how(scorer, tiny):
  import jax  # pylint: disable=g-import-not-at-top

  generator = tiny[2]
  leveled, report = scoring.calibrate_strict_level(scorer, generator, 0.4, n_per_group=4, seed=7,
                                                   provenance={"generator": "tiny"})
  # The same samples scored here: group i of data.GROUPS gives samples 0..3 of key(seed + i).
  parts = [scorer.generate_and_score(generator, jax.random.key(7 + i), 4, g, keep_images=False).result.measures
           for i, g in enumerate(data.GROUPS)]
  measures = {k: np.concatenate([m[k] for m in parts]) for k in parts[0]}
  q = scoring.strictness_for_valid_rate(scorer, measures, 0.4)
  assert report["strictness"] == q and leveled.levels == {**scorer.levels, "strict": q}
  assert report["n_samples"] == 24
  assert report["generated_valid_rate"] == {name: float(leveled.valid_at(measures, name).mean())
                                            for name in leveled.levels}
  assert leveled.provenance["strict"] == {"generator": "tiny", "n_samples": 24, "seed": 7, "target_valid_rate": 0.4}
  assert "strict" not in scorer.provenance                 # the scorer given is left as it was
  for kwargs in (dict(valid_rate=0.0), dict(valid_rate=1.0), dict(valid_rate=0.4, n_per_group=0)):
    with pytest.raises(ValueError):
      scoring.calibrate_strict_level(scorer, generator, **kwargs)


def test_levels_survive_save_and_load(scorer, tmp_path, tiny):
  unet_dir, cls_dir, provenance = _saved_models(tmp_path, tiny)
  saved = scoring.Scorer(tiny[0], tiny[1], scorer.calibration, CONFIG, provenance=provenance,
                         reference=scorer.reference).with_level("strict", 0.3)
  saved.save(tmp_path / "calibration")
  strict = scoring.load_scorer(tmp_path / "calibration", strictness="strict")
  assert strict.strictness == pytest.approx(0.3) and strict.strictness_name == "strict"
  expected = scoring.thresholds_at(scorer.reference, scorer.calibration.atlas, 0.3)
  for name in scoring.THRESHOLD_NAMES:
    assert float(getattr(strict.calibration, name)) == pytest.approx(float(getattr(expected, name)))
  assert scoring.load_scorer(tmp_path / "calibration", strictness="0.2").strictness == pytest.approx(0.2)
  # A calibration written before strictness levels (no reference measures) keeps its fixed thresholds.
  (tmp_path / "calibration" / scoring.REFERENCE_FILE).unlink()
  old = scoring.load_scorer(tmp_path / "calibration")
  assert old.reference is None and old.strictness == scoring.STANDARD_STRICTNESS
  with pytest.raises(ValueError, match="calibrate"):
    old.at_strictness("0.2")


# ----------------------------------------------------------------------------- shipped models


@pytest.fixture(scope="module")
def shipped_scorer():
  try:
    return scoring.load_scorer(batch_size=4)   # the default: the first of checkpoints.SHIPPED_SCORING present
  except checkpoints.CheckpointError:
    pytest.skip("no shipped scoring calibration")


def test_shipped_scorer_is_the_256_calibration_with_levels(shipped_scorer):
  assert shipped_scorer.provenance["unet"].startswith("unet_256")
  assert shipped_scorer.reference is not None and set(shipped_scorer.levels) == {"standard", "strict"}
  assert shipped_scorer.levels["strict"] > shipped_scorer.levels["standard"]


def test_non_radiographs_are_invalid_at_every_level(shipped_scorer):
  rng = np.random.default_rng(0)
  images = np.stack([np.zeros((256, 256), np.uint8), np.full((256, 256), 255, np.uint8),
                     np.full((256, 256), 128, np.uint8), rng.integers(0, 256, (256, 256), dtype=np.uint8),
                     np.clip(rng.normal(128, 40, (256, 256)), 0, 255).astype(np.uint8)])
  result = shipped_scorer.score(images)
  for name in scoring.SCORE_NAMES:
    assert np.isfinite(result.scores[name]).all(), name
  assert np.isfinite(result.features).all()
  for level in (*shipped_scorer.levels, scoring.STRICTNESS_RANGE[0]):   # the most lenient q too
    assert not shipped_scorer.valid_at(result.measures, level).any(), level


def test_shipped_scorer_keeps_most_real_normal_images(shipped_scorer, nih):
  result = shipped_scorer.score(nih.images)
  normal, abnormal = result.valid[nih.label == 0], result.valid[nih.label == 1]
  # calibrated so that about 5% of real normals fail each score; abnormal images fail more often
  assert normal.mean() >= 0.5
  assert normal.mean() > abnormal.mean()


# ----------------------------------------------------------------------------- sharding


# Both results come from one process with 8 host devices (XLA_FLAGS must be set before jax is imported): the
# sharded run first, then the same pipeline, calibration included, as a one-device process computes it: every
# Scorer without a mesh (its arrays on the default device) and the batches in CPU chunks (what
# `batching.default_chunk` gives on one device), traced anew. One process imports jax, builds the models and
# loads the data once, where a process per device count did it twice. Batches of 8 put one image on each
# device. The sharded run also takes the device-count branches a one-device run does not have, checked against
# its own batch-8 results: the real images scored in batches of 4, which 8 devices do not divide (such a batch
# stays whole on one device beside the replicated model states, `Scorer._shard`), and `sampling.sample_valid`,
# whose rounds of 8 carry a batch-sharding constraint (`sampling.round_inputs`) and must keep the first valid
# indices of the same 8 generated images.
SHARDED_SCRIPT = r"""
import json, sys
import jax, numpy as np
from flax import nnx
sys.path.insert(0, sys.argv[1])
from jaxcxr import batching, data, sampling, scoring
from jaxcxr.config import ClassifierConfig, UNetConfig, gan_tiny
from jaxcxr.models.classifier import Classifier
from jaxcxr.models.generator import Generator
from jaxcxr.models.unet import UNet
from jaxcxr.scoring import pipeline, scorer as scorer_module
assert len(jax.devices()) == 8, jax.devices()
config = scoring.ScoringConfig(mask_size=32, dilation=3, atlas_size=8, batch_size=8)
unet = UNet(UNetConfig(resolution=32, channels=(4, 8), norm_groups=2), rngs=nnx.Rngs(0))
classifier = Classifier(ClassifierConfig(resolution=32, stages=(1,), channels=(4,), norm_groups=2), rngs=nnx.Rngs(1))
generator = Generator(gan_tiny(32).generator, rngs=nnx.Rngs(2))
images = data.load(sys.argv[2]).images[:8]

def run():
  scorer = scoring.calibrate(unet, classifier, np.concatenate([images] * 3), config)
  out = scorer.generate_and_score(generator, jax.random.key(3), 8, "38_44m")
  real = scorer.score(images)
  return scorer, out, {"n_shards": len(scorer._shard(np.zeros((8, 1), np.float32)).sharding.device_set),
                       "gen": {k: v.tolist() for k, v in out.result.scores.items()},
                       "real": {k: v.tolist() for k, v in real.scores.items()},
                       "features": real.features.tolist()}

scorer, out, sharded = run()
by_four = scorer.with_config(batch_size=4)
sharded["n_shards_4"] = len(by_four._shard(np.zeros((4, 1), np.float32)).sharding.device_set)
sharded["real4"] = {k: v.tolist() for k, v in by_four.score(images).scores.items()}
# Every threshold open but the abnormal logit's, at the median of the 8 generated images': half of them valid.
halving = scoring.Scorer(unet, classifier, scorer.calibration._replace(
    shape_min=-1e9, symmetry_min=-1e9, log_ratio_min=-1e9, log_ratio_max=1e9, maxheat_max=1e9,
    abnormal_logit_max=float(np.median(out.result.measures["abnormal_logit"]))), config)
found = sampling.sample_valid(halving, generator, jax.random.key(3), 3, "38_44m", max_generated=8)
sharded["round_shards"] = len(sampling.round_inputs(halving, generator, jax.random.key(3), "38_44m", 0, 8)
                              ["batch_sharding"].device_set)
sharded["sampled_index"] = found["index"].tolist()
sharded["gen_valid"] = halving.valid_at(out.result.measures, "standard").tolist()
chunked = []
scorer_module._device_mesh = lambda: None
pipeline.default_chunk = lambda: chunked.append(batching.CPU_CHUNK) or batching.CPU_CHUNK
jax.clear_caches()                        # traced again: the sharded run's traces have no chunks
single = run()[2]
assert chunked, "the one-device run was not traced again"
print(json.dumps({"sharded": sharded, "single": single}))
"""


def test_sharded_equals_single_device(nih_path):
  # Both runs in one process at -O0 (`unoptimised_xla_flags`: the sharding and the programs stay, their code generation
  # is cheaper): 8.5 CPU-s instead of 22, the same scores. Both must be finite: equal NaNs pass `assert_allclose`.
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=unoptimised_xla_flags("--xla_force_host_platform_device_count=8"))
  root = pathlib.Path(__file__).resolve().parents[1]
  proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, str(root), str(nih_path)], env=env,
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads(proc.stdout.strip().splitlines()[-1])
  single, sharded = results["single"], results["sharded"]
  assert single["n_shards"] == 1 and sharded["n_shards"] == 8
  for run in (single, sharded):
    assert all(np.isfinite(run[part][name]).all() for part in ("gen", "real") for name in scoring.SCORE_NAMES), run
    assert np.isfinite(run["features"]).all(), run["features"]
  for part in ("gen", "real"):
    for name in scoring.SCORE_NAMES:
      np.testing.assert_allclose(sharded[part][name], single[part][name], rtol=1e-4, atol=1e-4, err_msg=name)
  np.testing.assert_allclose(sharded["features"], single["features"], atol=1e-6)
  # The sharded run's other branches, against its own batch-8 results.
  assert sharded["n_shards_4"] == 1 and sharded["round_shards"] == 8
  for name in scoring.SCORE_NAMES:
    np.testing.assert_allclose(sharded["real4"][name], sharded["real"][name], rtol=1e-4, atol=1e-4, err_msg=name)
  assert 0 < sum(sharded["gen_valid"]) < 8, sharded["gen_valid"]
  assert sharded["sampled_index"] == np.flatnonzero(sharded["gen_valid"])[:3].tolist()


def test_scoring_config_validation():
  with pytest.raises(ValueError, match="odd"):
    scoring.ScoringConfig(dilation=4)
  with pytest.raises(ValueError, match="divide"):
    scoring.ScoringConfig(mask_size=256, atlas_size=60)
  with pytest.raises(ValueError, match="dtype"):
    dataclasses.replace(CONFIG, dtype="float16")


def test_symmetry_postfilter_cross_validates_tree_and_logistic_regression():
  rng = np.random.default_rng(0)
  features = rng.uniform(0, 1, (120, 6))
  y = features[:, 0] > 0.5                                  # IoU above 0.5: learnable by both
  rows = scoring.fit_symmetry_postfilter(features, y)
  assert [r["model"] for r in rows] == ["decision_tree", "logistic_regression"]
  assert all(r["roc_auc"] > 0.9 and r["n"] == 120 for r in rows)
  shuffled = scoring.fit_symmetry_postfilter(features, rng.permutation(y))
  assert all(r["roc_auc"] < 0.75 for r in shuffled)
  assert "decision_tree" in scoring.symmetry_postfilter_table(rows)
  with pytest.raises(ValueError, match="each class"):
    scoring.fit_symmetry_postfilter(features, np.zeros(120, bool))
