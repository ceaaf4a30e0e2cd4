"""Tests of the pre-filter's threshold strategies (`jaxcxr.prefilter.thresholds`)."""

import numpy as np
import pytest

from jaxcxr import prefilter


# Hand-made ROC data A (P = Q = 3). Descending thresholds with (TP, FP):
# 0.6 (1,0)  0.5 (2,0)  0.4 (2,1)  0.3 (3,1)  0.2 (3,2)  0.1 (3,3)
# Youden TPR-FPR: 1/3 2/3 1/3 2/3 1/3 0 -> tie 0.5 / 0.3, ties go to the smaller threshold: 0.3.
# 2TPR-FPR: 2/3 4/3 1 5/3 4/3 1 -> 0.3.   TPR-2FPR: 1/3 2/3 0 1/3 -1/3 -1 -> 0.5.
# TPR >= 0.95 first reached (largest threshold) at 0.3.
# Precision: 1 1 2/3 3/4 3/5 1/2 -> tie 0.6 / 0.5 -> 0.5; with min_tpr 0.9 (TP >= 3) -> 3/4 at 0.3.
Y_A = np.array([0, 0, 1, 0, 1, 1])
S_A = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])

# Hand-made ROC data B (P = Q = 5) with a tied score (0.8 and 0.5 hold one positive and one negative each).
# Thresholds 0.9 0.8 0.7 0.6 0.5 0.4 0.3 0.2 with TP 1 2 3 4 5 5 5 5 and FP 0 1 1 1 2 3 4 5.
# Youden (5TP - 5FP): 5 5 10 15 15 10 5 0 -> tie 0.6 / 0.5 -> 0.5.  2TPR-FPR (10TP - 5FP): max 40 at 0.5.
# TPR-2FPR (5TP - 10FP): 5 0 5 10 5 ... -> 0.6.  TPR >= 0.95 needs TP = 5 -> 0.5.
# Precision 1 2/3 3/4 4/5 5/7 5/8 5/9 1/2: a bare argmax keeps one sample (0.9); TP >= 3 (min_tpr 0.5) -> 0.6.
Y_B = np.array([1, 1, 0, 1, 1, 0, 1, 0, 0, 0])
S_B = np.array([0.9, 0.8, 0.8, 0.7, 0.6, 0.5, 0.5, 0.4, 0.3, 0.2])


@pytest.mark.parametrize("y, s, strategy, kwargs, expected", [
    (Y_A, S_A, "youden", {}, 0.3),
    (Y_A, S_A, "2tpr-fpr", {}, 0.3),
    (Y_A, S_A, "tpr-2fpr", {}, 0.5),
    (Y_A, S_A, "tpr@0.95", {}, 0.3),
    (Y_A, S_A, "max_precision", {}, 0.5),
    (Y_A, S_A, "max_precision", {"min_tpr": 0.9}, 0.3),
    (Y_B, S_B, "youden", {}, 0.5),
    (Y_B, S_B, "2tpr-fpr", {}, 0.5),
    (Y_B, S_B, "tpr-2fpr", {}, 0.6),
    (Y_B, S_B, "tpr@0.95", {}, 0.5),
    (Y_B, S_B, "max_precision", {"min_tpr": 0.0}, 0.9),
    (Y_B, S_B, "max_precision", {"min_tpr": 0.5}, 0.6),
])
def test_select_threshold_hand_made(y, s, strategy, kwargs, expected):
  assert prefilter.select_threshold(y, s, strategy, **kwargs) == pytest.approx(expected)
  assert prefilter.select_threshold(y.astype(bool), s, strategy, **kwargs) == pytest.approx(expected)


def test_tpr_at_095_exact_boundary_and_ties():
  # 20 positives scored 1..20 and two negatives (21.5 and 0.5): TPR = 19/20 = 0.95 exactly at threshold 2.
  s = np.r_[np.arange(1.0, 21.0), 21.5, 0.5]
  y = np.r_[np.ones(20, int), 0, 0]
  assert prefilter.select_threshold(y, s, "tpr@0.95") == 2.0
  # Tied scores: at 0.4 TPR jumps from 0.5 to 1, so 0.4 is the largest threshold with TPR >= 0.95.
  assert prefilter.select_threshold([1, 1, 1, 1, 0], [0.9, 0.9, 0.4, 0.4, 0.1], "tpr@0.95") == 0.4


def test_select_threshold_matches_brute_force():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 300)
  s = np.round(rng.normal(size=300) + y, 1)  # many ties
  p, q = y.sum(), (1 - y).sum()
  cands = np.unique(s)
  tpr = np.array([(s[y == 1] >= t).mean() for t in cands])
  fpr = np.array([(s[y == 0] >= t).mean() for t in cands])
  for strategy, objective in (("youden", tpr - fpr), ("2tpr-fpr", 2 * tpr - fpr), ("tpr-2fpr", tpr - 2 * fpr)):
    best = cands[np.isclose(objective, objective.max(), rtol=0, atol=1e-12)].min()
    assert prefilter.select_threshold(y, s, strategy) == best, strategy
  assert prefilter.select_threshold(y, s, "tpr@0.95") == cands[tpr >= 0.95].max()
  ok = tpr * p >= np.ceil(0.1 * p)
  precision = np.array([y[s >= t].mean() for t in cands])
  best = cands[ok & np.isclose(precision, precision[ok].max(), rtol=0, atol=1e-12)].min()
  assert prefilter.select_threshold(y, s, "max_precision") == best
  assert q > 0


def test_select_threshold_errors():
  with pytest.raises(ValueError, match="youden, 2tpr-fpr, tpr-2fpr, tpr@0.95, max_precision"):
    prefilter.select_threshold(Y_A, S_A, "f1")
  with pytest.raises(ValueError, match="only one class"):
    prefilter.select_threshold([1, 1, 1], [0.1, 0.2, 0.3], "youden")
  with pytest.raises(ValueError, match="NaN"):
    prefilter.select_threshold([0, 1], [0.1, np.nan], "youden")
  with pytest.raises(ValueError, match="equal length"):
    prefilter.select_threshold([0, 1], [0.1, 0.2, 0.3], "youden")


def test_threshold_report_hand_made():
  report = prefilter.threshold_report(Y_B, S_B, 0.6)       # accepts 0.9 0.8 0.8 0.7 0.6: TP 4, FP 1
  assert report["n"] == 10 and report["n_accepted"] == 5 and report["acceptance_rate"] == 0.5
  assert report["tpr"] == pytest.approx(0.8) and report["fpr"] == pytest.approx(0.2)
  assert report["precision"] == pytest.approx(0.8)
  assert report["confusion"].tolist() == [[4, 1], [1, 4]]
  none = prefilter.threshold_report(Y_B, S_B, 2.0)
  assert none["n_accepted"] == 0 and none["precision"] == 0.0
