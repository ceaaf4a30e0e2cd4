"""The post-filter's compiled programs: images -> scores, and latents -> generated images -> scores.

Everything numeric of one batch runs in one jitted function: U-Net label map, symmetry features
and lung measures (`features`), classifier logit and Grad-CAM maximum from one forward pass
(`jaxcxr.explain`), the five scores and `valid` (`thresholds`). The functions take static graph
definitions and their states (docs/conventions.md, "Pure jitted programs"); `Scorer` holds them.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcxr.batching import default_chunk, in_chunks
from jaxcxr.config import DTYPES
from jaxcxr.explain import grad_cam_pure
from jaxcxr.models.classifier import Classifier
from jaxcxr.models.generator import latents
from jaxcxr.models.graph import abstract_graphdef
from jaxcxr.models.unet import UNet, label_map
from jaxcxr.scoring.features import lung_measures, symmetry_features
from jaxcxr.scoring.thresholds import score_from_measures

__all__ = ["ScoringConfig", "generate_and_score_batch", "generate_and_score_fn", "latents_at", "score_batch",
           "score_images", "split_with_dtype"]


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
  """How images are scored (not what the thresholds are: that is `Calibration`)."""

  # Side of the label maps that features and lung scores are computed at.
  mask_size: int = 256
  # Side k of the square dilation of each half-mask for the three dilated features.
  dilation: int = 5
  # Side of the mean-lung atlas of score_shape (mask_size must be a multiple of it).
  atlas_size: int = 64
  # Images per jitted call (static: one compile per size).
  batch_size: int = 32
  # Compute dtype of generator, U-Net and classifier ("float32" or "bfloat16"); parameters,
  # features and scores stay float32.
  dtype: str = "float32"

  def __post_init__(self):
    if self.mask_size < 2 or self.mask_size % 2:
      raise ValueError(f"ScoringConfig.mask_size must be even and >= 2, got {self.mask_size}")
    if self.dilation < 1 or self.dilation % 2 == 0:
      raise ValueError(f"ScoringConfig.dilation must be odd and >= 1, got {self.dilation}")
    if self.atlas_size < 1 or self.mask_size % self.atlas_size:
      raise ValueError(f"ScoringConfig.atlas_size={self.atlas_size} must divide mask_size={self.mask_size}")
    if self.batch_size < 1:
      raise ValueError(f"ScoringConfig.batch_size must be positive, got {self.batch_size}")
    if self.dtype not in DTYPES:
      raise ValueError(f"ScoringConfig.dtype: expected one of {DTYPES}, got {self.dtype!r}")


def _measure(unet: UNet, classifier: Classifier, atlas: jax.Array, x: jax.Array, config: ScoringConfig):
  """Images (B, S, S, 1) in [0, 1] -> labels, features, raw measures and the Grad-CAM map."""
  s = config.mask_size
  labels = label_map(unet, x[..., 0], (s, s))                               # (B, S, S) uint8
  r = classifier.config.resolution
  xc = x if x.shape[1] == r else jax.image.resize(x, (x.shape[0], r, r, 1), "linear", antialias=True)
  heatmap, maxheat, logit = grad_cam_pure(classifier, xc, 1.0)
  measures = lung_measures(labels, atlas)
  measures["abnormal_logit"] = logit
  measures["maxheat"] = maxheat
  return labels, symmetry_features(labels, config.dilation), measures, heatmap


def score_batch(models, states, calibration, x, config: ScoringConfig, keep_maps: bool):
  """The scoring of one batch inside a traced function (what `Scorer.score` jits).

  Args:
    models: (U-Net graphdef, classifier graphdef), static.
    states: (U-Net state, classifier state).
    calibration: a `Calibration` of arrays.
    x: float32 (B, S, S, 1), NHWC, in [0, 1].
    config: the `ScoringConfig` (static).
    keep_maps: also return "masks" and "heatmaps".

  Returns:
    {"scores": {name: (B,)}, "features": (B, 6), "valid": (B,), "measures": {...}} (+ maps).
  """
  return in_chunks(lambda x: _score_items(models, states, calibration, x, config, keep_maps), x,
                   chunk=default_chunk())


def _score_items(models, states, calibration, x, config: ScoringConfig, keep_maps: bool):
  """`score_batch` on every image at once (each image's result depends on that image only)."""
  unet = nnx.merge(models[0], states[0])
  classifier = nnx.merge(models[1], states[1])
  labels, features, measures, heatmap = _measure(unet, classifier, calibration.atlas, x, config)
  scores, valid = score_from_measures(measures, calibration)
  out = {"scores": scores, "features": features, "valid": valid, "measures": measures}
  if keep_maps:
    out["masks"], out["heatmaps"] = labels, heatmap
  return out


@functools.partial(jax.jit, static_argnames=("models", "config", "keep_maps"))
def score_images(models, states, calibration, x, *, config, keep_maps):
  return score_batch(models, states, calibration, x.astype(jnp.float32), config, keep_maps)


def latents_at(key: jax.Array, index: jax.Array, latent_dim: int) -> jax.Array:
  """z of sample indices (B,) -> (B, latent_dim): `models.generator.latents(key, i)` per index, traceable."""
  return jax.vmap(lambda i: latents(key, i, 1, latent_dim)[0])(index)


def generate_and_score_batch(models, states, calibration, z, cond, config: ScoringConfig, keep_maps: bool,
                             keep_images: bool = True):
  """Generation plus post-filter scoring of one batch of latents inside a traced function.

  The core of every compiled sampling path (`Scorer.generate_and_score`, the unfiltered rounds
  of `jaxcxr.sampling.sample_valid` and the pre-filtered rounds of `jaxcxr.prefilter.sample_valid_latent`).

  Args:
    models: (U-Net graphdef, classifier graphdef, generator graphdef, ...), static.
    states: their states, in the same order.
    calibration: a `Calibration` of arrays.
    z: float32 (B, latent_dim) latents; cond: float32 (B, n_conditions) condition rows.
    config: the `ScoringConfig` (static).
    keep_maps: also return "masks" and "heatmaps".
    keep_images: also return "images", uint8 (B, G, G).

  Returns:
    `score_batch`'s dict plus "z" (and "images").
  """

  def items(z, cond):
    images = nnx.merge(models[2], states[2])(z, cond)                                # (B, G, G, 1) in [-1, 1]
    x = jnp.clip((images + 1.0) * 0.5, 0.0, 1.0)
    out = _score_items(models[:2], states[:2], calibration, x, config, keep_maps)
    out["z"] = z
    if keep_images:
      out["images"] = jnp.round(x[..., 0] * 255.0).astype(jnp.uint8)
    return out

  # A few images at a time on a CPU (`batching.in_chunks`): the same results, faster.
  return in_chunks(items, z, cond, chunk=default_chunk())


@functools.cache
def generate_and_score_fn(models, config: ScoringConfig, keep_maps: bool, keep_images: bool):
  """The one compiled call for these graph definitions (U-Net, classifier, generator) and settings.

  Returns:
    `fn(states, calibration, key, index, cond)`: latents of samples `index`, generator, U-Net,
    classifier, Grad-CAM, scores (`generate_and_score_batch`'s outputs).
  """

  def generate_and_score(states, calibration, key, index, cond):
    z = latents_at(key, index, nnx.merge(models[2], states[2]).config.latent_dim)
    return generate_and_score_batch(models, states, calibration, z, cond, config, keep_maps, keep_images)

  return jax.jit(generate_and_score)


def split_with_dtype(model: nnx.Module, dtype: str):
  """(graphdef, state) of `model` (with a `config.dtype`) computing in `dtype`; parameters are unchanged."""
  graphdef, state = nnx.split(model)
  if model.config.dtype == dtype:
    return graphdef, state
  return abstract_graphdef(type(model), dataclasses.replace(model.config, dtype=dtype)), state
