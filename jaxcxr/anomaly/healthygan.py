"""HealthyGAN (Siddiquee et al. 2022): scoring by how much the translation to a healthy image changes an image.

A translator trained on unlabelled radiographs maps any image x to a content image and a
mask m; its output out = content * m + x * (1 - m) (`models.healthygan.blend`) is the
healthy version of x, and the anomaly score is mean |x - out|. The method's parts, found by
its name: the translator and critic models `jaxcxr.models.healthygan`, their trainer
`jaxcxr.train.healthygan`, and here the scoring (`healthygan_scores`, its compiled batch
`score_program`), the loader (`load_translator`, re-exported from the model module) and the
scorer for `evaluate_anomaly` (`HealthyganScorer`).

Scoring is a `jax.jit` of a pure function over the translator's `nnx.split` state, run over
a dataset in fixed-size batches, the last one padded, so one compile serves every batch;
the translator normalises per image, so scores do not depend on the batch.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcxr import data
from jaxcxr.anomaly.scorer import AbstractAnomalyScorer, check_batch_size, query_images
from jaxcxr.batching import map_batches
from jaxcxr.models.graph import abstract_graphdef
from jaxcxr.models.healthygan import Translator, blend, load_translator
from jaxcxr.program import Program

__all__ = [
    "HealthyganScorer",
    "HealthyganScores",
    "healthygan_scores",
    "load_translator",
    "score_program",
]


class HealthyganScores(NamedTuple):
  """Host results of `healthygan_scores` for N images.

  Attributes:
    score: float32 (N,), mean |x - out| over the pixels, out the healthy translation (signed
      image space; the original code divides by 2, a constant factor).
    residual: float16 (N, R, R), |x - out| in [0, 2].
    mask: float16 (N, R, R), the translator's mask m in [0, 1] (where it replaced the input).
  """

  score: np.ndarray
  residual: np.ndarray
  mask: np.ndarray


@functools.cache
def _score_fn(graphdef):
  """The jitted scoring of one batch: `fn(state, images uint8 (B, R, R))` -> {"score", "residual", "mask"}."""

  def score(state, images):
    x = data.to_signed(images)[..., None]                                # (B, R, R, 1)
    content, mask = nnx.merge(graphdef, state)(x)
    residual = jnp.abs(x - blend(content, mask, x))
    return {"score": residual.mean(axis=(1, 2, 3)), "residual": residual[..., 0].astype(jnp.float16),
            "mask": mask[..., 0].astype(jnp.float16)}

  return jax.jit(score)


def healthygan_scores(translator: Translator, images, *, batch_size: int = 64,
                      progress: bool = True) -> HealthyganScores:
  """HealthyGAN anomaly scores: how much the translation to a healthy image changes each image.

  score = mean |x - out| with out = content * m + x * (1 - m) the translator's output
  (the original's test-time score, without its constant division by 2). Images of
  another size than the translator's are resized with `data.resize_uint8`.
  Batch-independent (per-image normalisation); one compile per structure and batch size.

  Args:
    translator: a `models.healthygan.Translator` (e.g. `load_translator`).
    images: a `data.CXRDataset`, or uint8 (N, H, W) square radiographs.
    batch_size: images per jitted call (capped at N; the last batch is padded).
    progress: show a tqdm bar on stderr.

  Returns:
    `HealthyganScores` of numpy arrays: score float32 (N,), residual float16 (N, R, R) in
    [0, 2], mask float16 (N, R, R) in [0, 1].

  Raises:
    ValueError: images that are not uint8 (N, H, W); batch_size <= 0.

  References:
    Siddiquee, Shah, Wu, Chong, Schwedt, Li: HealthyGAN: Learning from unannotated medical
    images to detect anomalies associated with human disease. SASHIMI (MICCAI workshop), 2022.
  """
  check_batch_size(batch_size, "healthygan_scores")
  cfg = translator.config
  images, _ = query_images(images, cfg.resolution, "healthygan_scores")
  r = cfg.resolution
  if len(images) == 0:
    return HealthyganScores(np.zeros((0,), np.float32), np.zeros((0, r, r), np.float16),
                            np.zeros((0, r, r), np.float16))
  fn, state = _score_fn(abstract_graphdef(Translator, cfg)), nnx.state(translator)
  out = map_batches(lambda b: fn(state, b["images"]), {"images": images},
                    batch_size, desc="HealthyGAN", progress=progress)
  return HealthyganScores(**out)


def score_program(translator: Translator, images) -> Program:
  """The compiled call `healthygan_scores` makes for one batch of these images, and its arguments.

  Args:
    translator, images: as `healthygan_scores`; the batch is all of `images` (resized to
      the translator's resolution as there).

  Returns:
    `Program(fn, args)`: `fn(state, images)` with the translator's state and uint8 images
    (B, R, R) -> {"score" (B,), "residual" float16 (B, R, R), "mask" float16 (B, R, R)}.
    `fn` is the library's own jitted function (its compile cache is the one
    `healthygan_scores` uses).

  Raises:
    ValueError: images that are not uint8 (N, H, W), or no image.
  """
  cfg = translator.config
  images, _ = query_images(images, cfg.resolution, "score_program")
  if len(images) == 0:
    raise ValueError("score_program: expected at least one image")
  return Program(_score_fn(abstract_graphdef(Translator, cfg)), (nnx.state(translator), jnp.asarray(images)))


# ----------------------------------------------------------------------------- scorer


@dataclasses.dataclass
class HealthyganScorer(AbstractAnomalyScorer):
  """HealthyGAN: translation to a healthy image."""

  translator: Translator
  batch_size: int = 64
  name: str = "healthygan"

  def __call__(self, dataset, *, progress):
    out = healthygan_scores(self.translator, dataset, batch_size=self.batch_size, progress=progress)
    return out.score, out.residual, {}
