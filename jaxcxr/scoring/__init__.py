"""Post-filter: lung symmetry features, the five scores, `valid`, and the fused generate-and-score call.

Everything numeric runs in one jitted function per batch:

  image (B, S, S, 1) in [0, 1]
    -> U-Net label map at `mask_size` (0 background, 1 patient's right lung = image
       left, 2 patient's left lung = image right)
    -> six symmetry features and the raw lung measures
    -> classifier logit and Grad-CAM max from one forward pass
    -> five scores, each > 0 meaning "good", and valid = all five > 0.

**Symmetry features** (the original post-filter): M = labels > 0, A = M[:, :, :W/2],
B = M[:, :, W/2:] mirrored. IoU(A, B); cosine <A, B> / (|A|_2 |B|_2); the squared
area-ratio deviation (|A| / (|A| + |B|) - 1/2)^2; then the same three after a k x k
dilation of each half (k = `ScoringConfig.dilation`). Empty masks give IoU 0, cosine 0
and deviation 1/4 (the worst values), never NaN.

**Scores**, with thresholds calibrated on real normal training images (`calibrate`) so
that about 5% of those images fail each score (2.5% on each side for the ratio):

* `score_shape` = min over the two lungs of the soft Dice between the lung and the mean
  lung of real normal images (the atlas), minus its 5th percentile.
* `score_symmetry` = Dice(right lung, mirrored left lung) minus its 5th percentile.
* `score_left2right` = the distance of log(area left / area right) inside the central
  95% range of real normal images (negative outside it); -1 when no lung is found.
* `score_abnormal` = 95th percentile of the normal-vs-abnormal classifier's logit on
  real normal images minus the image's logit (logit units).
* `score_maxheat` = 95th percentile of the Grad-CAM raw maximum (evidence for
  "abnormal" in logit units, `jaxcxr.explain`) minus the image's.

**Strictness.** The calibration also keeps each raw measure's values over the real
normal images, so the thresholds can be re-set at run time without refitting: at a
strictness q, a fraction q of those images fails each score (q / 2 on each side for
the ratio). Named levels live in the calibration: "standard" is q = 0.05 (the
percentiles above); "strict" is the q at which the shipped generator's valid rate is
about 5%, the original study's regime. `load_scorer(strictness=...)`,
`Scorer.at_strictness` and the command line's `--strictness` take a level name or a
number q in [0.01, 0.9].

Images of any square side are resized (never cropped) to each model's resolution;
non-square images are refused (pad them to a square first, as `jaxcxr.data.load_folder`
does). Every model here normalises per image (GroupNorm), so a score never depends on
the rest of its batch; with several devices the batch is sharded over them with
`jax.sharding` and the results equal the single-device ones.

Modules, from the bottom up (each name below is also importable from `jaxcxr.scoring`):

* `features`: the six symmetry features and the raw lung measures of label maps (pure jnp).
* `thresholds`: `Calibration` (the thresholds), strictness levels, `thresholds_at` and
  `score_from_measures` (raw measures -> the five scores and `valid`).
* `pipeline`: `ScoringConfig` and the jitted programs: images -> scores, latents -> images -> scores.
* `scorer`: `Scorer` (the models, their split states and the calibration), its results, and the
  calibration folder on disk (`Scorer.save`, `load_scorer`, `shipped_scoring`).
* `calibration`: fitting the thresholds on real normal images (`calibrate`) and the strict level
  on a generator's samples (`calibrate_strict_level`).
* `symmetry_postfilter`: the original post-filter (a tree and a logistic regression on the
  symmetry features) and its table.
"""

from __future__ import annotations

from jaxcxr.scoring.calibration import calibrate, calibrate_strict_level, strictness_for_valid_rate
from jaxcxr.scoring.features import FEATURE_NAMES, lung_measures, symmetry_features
from jaxcxr.scoring.pipeline import ScoringConfig, generate_and_score_batch, latents_at, score_batch, split_with_dtype
from jaxcxr.scoring.scorer import (ATLAS_FILE, CALIBRATION_FILE, REFERENCE_FILE, GenerationResult, Scorer, ScoreResult,
                                   load_scorer, shipped_scoring)
from jaxcxr.scoring.symmetry_postfilter import fit_symmetry_postfilter, symmetry_postfilter_table
from jaxcxr.scoring.thresholds import (REFERENCE_MEASURES, SCORE_NAMES, STANDARD_STRICTNESS, STRICTNESS_RANGE,
                                       THRESHOLD_NAMES, Calibration, resolve_strictness, score_from_measures,
                                       thresholds_at)

__all__ = [
    "ATLAS_FILE",
    "CALIBRATION_FILE",
    "FEATURE_NAMES",
    "REFERENCE_FILE",
    "REFERENCE_MEASURES",
    "SCORE_NAMES",
    "STANDARD_STRICTNESS",
    "STRICTNESS_RANGE",
    "THRESHOLD_NAMES",
    "Calibration",
    "generate_and_score_batch",
    "latents_at",
    "lung_measures",
    "score_batch",
    "split_with_dtype",
    "GenerationResult",
    "ScoreResult",
    "Scorer",
    "ScoringConfig",
    "calibrate",
    "calibrate_strict_level",
    "strictness_for_valid_rate",
    "fit_symmetry_postfilter",
    "load_scorer",
    "resolve_strictness",
    "shipped_scoring",
    "thresholds_at",
    "score_from_measures",
    "symmetry_features",
    "symmetry_postfilter_table",
]
