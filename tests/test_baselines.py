"""Tests for jaxcxr.baselines: known-answer detectors, train-fitted signs, the paired DeLong test, errors."""

import json

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from jaxcxr import baselines
from jaxcxr.data import DataError


def _bright(y, seed, size=16, shift=40):
  """uint8 images whose brightness separates the classes: positives `shift` grey levels brighter."""
  rng = np.random.default_rng(seed)
  y = np.asarray(y)
  return (60 + shift * y[:, None, None] + rng.integers(0, 30, (len(y), size, size))).astype(np.uint8)


def _delong_pairwise(a, b, y):
  """DeLong's paired test from the pairwise kernel (O(P Q)), independent of jaxcxr.metrics' midranks."""

  def components(s):
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)

  v10_a, v01_a = components(a)
  v10_b, v01_b = components(b)
  s10, s01 = np.cov(v10_a, v10_b), np.cov(v01_a, v01_b)
  var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / v10_a.size + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / v01_a.size
  diff = v10_a.mean() - v10_b.mean()
  return diff, np.sqrt(var), 2 * scipy.stats.norm.sf(abs(diff) / np.sqrt(var))


# ----------------------------------------------------------------------------- statistics


def test_image_statistics_known_values():
  images = np.zeros((2, 16, 16), np.uint8)
  images[0] = 10
  images[1] = 200
  images[1, 4:12, 4:12] = 100          # the centre box of a 16x16 image is rows/cols 4..11
  stats = baselines.image_statistics(images)
  names = baselines.statistic_names(lungs=False)
  col = {n: stats[:, i] for i, n in enumerate(names)}
  np.testing.assert_allclose(col["mean (image)"], [10, (192 * 200 + 64 * 100) / 256])
  np.testing.assert_allclose(col["mean (centre)"], [10, 100])
  np.testing.assert_allclose(col["std (centre)"], [0, 0])
  np.testing.assert_allclose(col["std (image)"][1], np.std(images[1].astype(float)))
  np.testing.assert_allclose(col["p50 (centre)"], [10, 100])
  np.testing.assert_allclose(col["p5 (image)"][1], 99.5 + 0.05 * 256 / 64)   # 5% of 256 pixels into level 100
  masks = np.zeros_like(images)
  masks[:, :, :4] = 1
  masks[:, :, 12:] = 2
  with_lungs = baselines.image_statistics(images, masks)
  assert with_lungs.shape == (2, 21) and len(baselines.statistic_names(lungs=True)) == 21
  np.testing.assert_allclose(with_lungs[:, 14], [10, 200])   # mean (lungs)


def test_mean_detector_recovers_auc_1_on_brightness():
  y_train, y = np.repeat([0, 1], 15), np.repeat([0, 1], 12)
  fitted = baselines.fit_baselines(_bright(y_train, 0), y_train, pixel_size=None)
  i = fitted.names.index("mean (image)")
  assert fitted.signs[i] == 1 and fitted.train_roc_auc[i] == 1.0
  report = baselines.evaluate_baselines(fitted, _bright(y, 1), y)
  assert report["statistics"]["mean (image)"]["roc_auc"] == 1.0
  assert report["baselines"]["statistic"]["roc_auc"] == 1.0
  assert fitted.train_roc_auc[fitted.best] == 1.0


def test_sign_is_fitted_on_training_images_only():
  y_train, y = np.repeat([0, 1], 15), np.repeat([0, 1], 12)
  brighter = baselines.fit_baselines(_bright(y_train, 0), y_train, pixel_size=None)
  darker = baselines.fit_baselines(_bright(1 - y_train, 0), y_train, pixel_size=None)   # flipped data
  i = brighter.names.index("mean (image)")
  assert brighter.signs[i] == 1 and darker.signs[i] == -1
  assert darker.statistic.startswith("-")
  # Evaluated on images where the positives are darker, the train-fitted sign is kept: AUC 0, not 1.
  report = baselines.evaluate_baselines(brighter, _bright(1 - y, 1), y)
  assert report["statistics"]["mean (image)"]["roc_auc"] == 0.0


def test_pixel_baseline_finds_a_spatial_cue_the_statistics_miss():
  rng = np.random.default_rng(3)

  def quadrants(y):
    images = rng.integers(90, 110, (len(y), 16, 16)).astype(np.uint8)
    for k, label in enumerate(y):   # same histogram either way: only the bright quadrant's place differs
      rows, cols = (slice(0, 8), slice(0, 8)) if label else (slice(8, 16), slice(8, 16))
      images[k, rows, cols] += 60
    return images

  y_train, y = np.repeat([0, 1], 20), np.repeat([0, 1], 15)
  result = baselines.compare_to_baselines(rng.random(30), y, quadrants(y), quadrants(y_train), y_train,
                                          pixel_size=4, train_patients=np.arange(40) // 2)
  assert result["baselines"]["pixel_logreg"]["roc_auc"] > 0.95
  assert result["baselines"]["statistic"]["roc_auc"] < 0.85
  assert result["strongest"] == "pixel_logreg"
  assert result["fitted"]["pixel_size"] == 4


# ----------------------------------------------------------------------------- paired test


def test_paired_delong_matches_an_independent_computation():
  rng = np.random.default_rng(4)
  y = rng.integers(0, 2, 120)
  a = y + rng.normal(0, 0.8, 120)
  b = np.round(y + rng.normal(0, 1.2, 120), 1)        # ties inside b
  result = baselines.compare_scores(a, y, {"b": b}, method="a")
  diff, se, p = _delong_pairwise(a, b, y)
  test = result["paired_delong"]
  assert result["strongest"] == "b" and test["baseline"] == "b"
  np.testing.assert_allclose([test["difference"], test["se"], test["p_value"]], [diff, se, p], rtol=1e-10)
  np.testing.assert_allclose(test["difference_ci95"], [diff - 1.959963984540054 * se, diff + 1.959963984540054 * se],
                             rtol=1e-10)
  np.testing.assert_allclose(result["method"]["roc_auc"], roc_auc_score(y, a))
  np.testing.assert_allclose(result["baselines"]["b"]["roc_auc"], roc_auc_score(y, b))


def test_paired_delong_se_agrees_with_a_paired_bootstrap():
  rng = np.random.default_rng(5)
  n = 200
  y = np.repeat([0, 1], n // 2)
  shared = rng.normal(0, 1, n)
  a = y + shared + rng.normal(0, 0.7, n)
  b = 0.6 * y + shared + rng.normal(0, 0.7, n)
  se = baselines.compare_scores(a, y, {"b": b})["paired_delong"]["se"]
  # Stratified resamples: the first half of each row negatives, the second positives (Mann-Whitney AUC per row).
  k = np.concatenate([rng.integers(0, n // 2, (2000, n // 2)), n // 2 + rng.integers(0, n // 2, (2000, n // 2))], 1)
  half = n // 2

  def auc(s):
    ranks = scipy.stats.rankdata(s[k], axis=1)
    return (ranks[:, half:].sum(axis=1) - half * (half + 1) / 2) / half ** 2

  diffs = auc(a) - auc(b)
  assert abs(np.std(diffs) / se - 1) < 0.15, (np.std(diffs), se)


def test_strongest_baseline_and_views():
  rng = np.random.default_rng(6)
  y = np.tile([0, 1], 30)
  views = np.repeat(["AP", "PA"], 30)
  views[:4] = "LL"                  # a view with 2 images of each class
  views[4] = "XX"                   # and one with one image: no AUC
  method = y + rng.normal(0, 1.0, 60)
  weak, strong = y + rng.normal(0, 3.0, 60), y + rng.normal(0, 0.3, 60)
  result = baselines.compare_scores(method, y, {"weak": weak, "strong": strong}, views=views)
  assert result["strongest"] == "strong"
  assert result["paired_delong"]["difference"] < 0
  assert set(result["by_view"]) == {"AP", "PA", "LL", "XX"}
  assert result["by_view"]["XX"]["strongest"] is None and result["by_view"]["XX"]["method"]["roc_auc"] is None
  ap = result["by_view"]["AP"]
  keep = views == "AP"
  np.testing.assert_allclose(ap["method"]["roc_auc"], roc_auc_score(y[keep], method[keep]))
  assert ap["n"] == keep.sum() and ap["strongest"] in ("weak", "strong")
  json.dumps(result)
  text = baselines.format_comparison(result, by_view=True)
  first = text.splitlines()[0]
  assert first.startswith(f"AUC {result['method']['roc_auc']:.3f} [") and " vs strong " in first
  assert f"p = {result['paired_delong']['p_value']:.2g}" in first
  assert "\n  XX (n = 1): AUC n/a" in text and len(text.splitlines()) == 5


def test_compare_to_baselines_end_to_end_is_json_and_per_view():
  y_train, y = np.repeat([0, 1], 20), np.tile([0, 1], 12)
  images = _bright(y, 1, shift=12)
  views = np.where(np.arange(24) < 12, "AP", "PA")
  scores = y + np.random.default_rng(7).normal(0, 0.5, 24)
  result = baselines.compare_to_baselines(scores, y, images, _bright(y_train, 0, shift=12), y_train, views=views,
                                          pixel_size=8, method="judge")
  again = json.loads(json.dumps(result))
  assert again["method"]["name"] == "judge" and set(again["baselines"]) == set(baselines.BASELINES)
  assert set(again["by_view"]) == {"AP", "PA"} and "statistics" in again["by_view"]["AP"]
  assert again["strongest"] == max(again["baselines"], key=lambda n: again["baselines"][n]["roc_auc"])
  assert len(again["statistics"]) == 14


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_raise():
  y = np.repeat([0, 1], 6)
  images = _bright(y, 0)
  scores = np.arange(12.0)
  with pytest.raises(ValueError, match="one label each"):
    baselines.compare_to_baselines(scores, y[:-1], images, images, y, pixel_size=None)
  with pytest.raises(ValueError, match=r"shape \(12,\)"):
    baselines.compare_to_baselines(scores[:-1], y, images, images, y, pixel_size=None)
  with pytest.raises(ValueError, match="at least 2 of each class"):
    baselines.compare_to_baselines(scores, np.zeros(12, int), images, images, y, pixel_size=None)
  with pytest.raises(ValueError, match="at least 2 of each class"):
    baselines.fit_baselines(images, np.ones(12, int), pixel_size=None)
  nan = scores.copy()
  nan[3] = np.nan
  with pytest.raises(ValueError, match=r"NaN or infinite \(e.g. index \[3\]\)"):
    baselines.compare_to_baselines(nan, y, images, images, y, pixel_size=None)
  with pytest.raises(ValueError, match="0 \\(negative\\) or 1"):
    baselines.compare_scores(scores, y * 2, {"b": scores})
  with pytest.raises(ValueError, match="no baseline"):
    baselines.compare_scores(scores, y, {})
  with pytest.raises(DataError, match="uint8"):
    baselines.image_statistics(images.astype(np.float32))
  masks = np.ones(images.shape, np.uint8)
  with pytest.raises(DataError, match="both"):
    baselines.compare_to_baselines(scores, y, images, images, y, masks=masks, pixel_size=None)
  fitted = baselines.fit_baselines(images, y, masks=masks, pixel_size=None)
  with pytest.raises(DataError, match="lung masks"):
    fitted.scores(images)
  empty = masks.copy()
  empty[2] = 0
  with pytest.raises(DataError, match=r"index \[2\]"):
    baselines.image_statistics(images, empty)
  with pytest.raises(ValueError, match="views"):
    baselines.compare_scores(scores, y, {"b": scores}, views=np.array(["AP"] * 3))


def test_the_morphological_lung_baseline_splits_at_the_midline_and_is_compared_per_patient():
  images = np.zeros((3, 64, 64), np.uint8)
  images[:, 4:60, 2:62] = 200                        # a bright body
  images[:, 12:52, 8:28] = 40                         # two dark lungs
  images[:, 12:52, 36:56] = 40
  masks = np.zeros((3, 64, 64), np.uint8)
  masks[:, 12:52, 8:28], masks[:, 12:52, 36:56] = 1, 2
  labels = baselines.morphological_lung_labels(images)
  assert set(np.unique(labels[:, :, :32])) <= {0, 1} and set(np.unique(labels[:, :, 32:])) <= {0, 2}
  assert (labels == 1).any() and (labels == 2).any()
  perfect = np.ones((3, 2))
  report = baselines.compare_segmentation(perfect, images, masks, ["a", "a", "b"])
  assert 0.5 < report["dice_mean"] <= 1 and report["difference"] == pytest.approx(1 - report["dice_mean"])
  low, high = report["difference_ci95"]
  assert low <= report["difference"] <= high
  with pytest.raises(ValueError, match="one of each per image"):
    baselines.compare_segmentation(perfect[:2], images, masks, ["a", "a", "b"])
