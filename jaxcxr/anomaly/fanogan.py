"""f-AnoGAN (izi_f, Schlegl et al. 2019): scoring with an encoder trained to invert a normal-only GAN.

The score of an image x is the loss its encoder E was trained with (`fanogan_loss`),

    L(x) = mean_pixels (x - G(E(x), c))^2 + kappa * mean_features (f(x) - f(G(E(x), c)))^2

one encoder pass and one reconstruction, no search. f is the discriminator's final feature
map (the paper's), or a stage of the CXR encoder (`anogan.EncoderFeatures`, as AnoGAN's
default search), whichever the encoder was trained with. The method's parts, found by its name:
the encoder model `jaxcxr.models.fanogan`, its trainer `jaxcxr.train.fanogan`, and here the
scoring (`fanogan_scores`, its compiled batch `score_program`), the loader (`load_fanogan`:
the encoder and the GAN it inverts) and the scorer for `evaluate_anomaly` (`FanoganScorer`).

Scoring is a `jax.jit` of a pure function over the `nnx.split` states (graph definitions
static), run over a dataset in fixed-size batches, the last one padded with copies of its
last image, so one compile serves every batch. Every network involved normalises per image
(GroupNorm, D in inference mode), so scores do not depend on the batch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr import data
from jaxcxr.anomaly.anogan import EncoderFeatures, check_pair
from jaxcxr.anomaly.scorer import AbstractAnomalyScorer, check_batch_size, query_images
from jaxcxr.batching import map_batches
from jaxcxr.config import EncoderConfig, GeneratorConfig
from jaxcxr.models import condition as condition_lib
from jaxcxr.models.cxr_encoder import load_cxr_encoder
from jaxcxr.models.discriminator import Discriminator, load_discriminator
from jaxcxr.models.fanogan import Encoder, load_encoder
from jaxcxr.models.generator import Generator, load_generator
from jaxcxr.models.graph import abstract_graphdef
from jaxcxr.program import Program

__all__ = [
    "FanoganScorer",
    "FanoganScores",
    "fanogan_loss",
    "fanogan_scores",
    "load_fanogan",
    "normal_condition",
    "score_program",
]


class FanoganScores(NamedTuple):
  """Host results of `fanogan_scores` for N images.

  Attributes:
    score: float32 (N,), the izi_f anomaly score image_loss + kappa * feature_loss (higher = less
      like the normal training images).
    image_loss: float32 (N,), mean (x - G(E(x), c))^2 over the pixels, signed image space.
    feature_loss: float32 (N,), mean (f(x) - f(G(E(x), c)))^2 over the feature term's map f
      (`Discriminator.features` or `EncoderFeatures.features`).
    residual: float16 (N, R, R), |x - G(E(x), c)| in signed image space, so in [0, 2].
    z: float32 (N, latent_dim), the encoder's code E(x).
    reconstruction: float16 (N, R, R), G(E(x), c) in signed image space [-1, 1].
  """

  score: np.ndarray
  image_loss: np.ndarray
  feature_loss: np.ndarray
  residual: np.ndarray
  z: np.ndarray
  reconstruction: np.ndarray


Features = Discriminator | EncoderFeatures


def features_graphdef(features: Features, dtype: str | None = None):
  """Graph definition of the feature term's module: D in inference mode (its spectral-norm vectors
  are only read) at `dtype` (default its own), or an `EncoderFeatures` as it is (its own dtype)."""
  if isinstance(features, EncoderFeatures):
    return nnx.graphdef(features)
  config = features.config if dtype is None else dataclasses.replace(features.config, dtype=dtype)
  return abstract_graphdef(Discriminator, config, use_running_average=True)


def _graphdefs(e_config: EncoderConfig, g_config: GeneratorConfig, features: Features):
  """Graph definitions of E, G and the feature term's module."""
  return (abstract_graphdef(Encoder, e_config), abstract_graphdef(Generator, g_config), features_graphdef(features))


def _fanogan_render(encoder: Encoder, generator: Generator):
  """G(z, c) at the encoder's resolution: a cascade's base image when the encoder works at its base resolution."""
  g = generator.config
  return generator.base_image if encoder.config.resolution != g.resolution else generator


def fanogan_loss(encoder: Encoder, generator: Generator, discriminator: Features, x: jax.Array, cond: jax.Array,
                 feature_weight) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Per-image izi_f loss of f-AnoGAN (Schlegl et al. 2019): the training loss and the anomaly score.

      L(x) = mean_pixels (x - G(E(x), c))^2 + kappa * mean_features (f(x) - f(G(E(x), c)))^2

  with f = `discriminator.features`: the discriminator's final feature map (the reference
  code's `out_features`), or a CXR encoder stage (`EncoderFeatures`, unit vectors per
  position), and kappa = `feature_weight` (the paper: 1). An encoder at a cascade's base
  resolution reconstructs the base image (`Generator.base_image`).

  Args:
    encoder: a `models.fanogan.Encoder`.
    generator: the frozen generator.
    discriminator: the feature term's f: the frozen GAN's discriminator (inference mode) or an
      `EncoderFeatures`.
    x: float32 (B, R, R, 1), NHWC, in [-1, 1].
    cond: float32 (B, len(conditions)).
    feature_weight: kappa (a float or a traced scalar).

  Returns:
    (loss (B,), {"image_loss" (B,), "feature_loss" (B,), "z" (B, latent_dim),
    "reconstruction" (B, R, R, 1) float32 in [-1, 1]}).
  """
  z = encoder(x)
  reconstruction = _fanogan_render(encoder, generator)(z, cond)
  image_loss = jnp.square(x - reconstruction).mean(axis=(1, 2, 3))
  feature_loss = jnp.square(discriminator.features(x) - discriminator.features(reconstruction)).mean(axis=(1, 2, 3))
  loss = image_loss + feature_weight * feature_loss
  return loss, {"image_loss": image_loss, "feature_loss": feature_loss, "z": z, "reconstruction": reconstruction}


@functools.cache
def _score_fn(graphdefs):
  """The jitted scoring of one batch for these graph definitions (E, G, f).

  Returns:
    `fn(states, images, cond, feature_weight)` -> {"score", "image_loss", "feature_loss" (B,),
    "residual" float16 (B, R, R), "z" (B, latent_dim), "reconstruction" float16 (B, R, R)}.
  """

  def score(states, images, cond, feature_weight):
    encoder, generator, discriminator = (nnx.merge(g, s) for g, s in zip(graphdefs, states))
    x = data.to_signed(images)[..., None]                                # (B, R, R, 1)
    loss, parts = fanogan_loss(encoder, generator, discriminator, x, cond, feature_weight)
    return {"score": loss, "image_loss": parts["image_loss"], "feature_loss": parts["feature_loss"],
            "residual": jnp.abs(x - parts["reconstruction"])[..., 0].astype(jnp.float16), "z": parts["z"],
            "reconstruction": parts["reconstruction"][..., 0].astype(jnp.float16)}

  return jax.jit(score)


def _check_models(encoder: Encoder, generator: Generator, discriminator: Features) -> None:
  check_pair(generator, discriminator, "fanogan_scores")
  e, g = encoder.config, generator.config
  if e.resolution not in (g.resolution, g.base_resolution) or e.latent_dim != g.latent_dim:
    raise ValueError(f"fanogan_scores: encoder (resolution {e.resolution}, latent_dim {e.latent_dim}) does not "
                     f"match the generator (resolution {g.resolution}, base {g.base_resolution}, latent_dim "
                     f"{g.latent_dim})")


def normal_condition(dataset: data.CXRDataset, conditions: tuple[str, ...]) -> np.ndarray:
  """Conditions that ask a GAN for the normal version of each image: its sex and age, label 0.

  f-AnoGAN reconstructs every image as a normal one; for a GAN not conditioned on the label
  (the normal-only GAN) this is just the image's sex and age.

  Returns:
    float32 (N, len(conditions)).

  Raises:
    jaxcxr.data.DataError: unknown sex or age.
  """
  return condition_lib.make_condition(dataset.sex, dataset.age, 0, conditions=conditions)


def fanogan_scores(encoder: Encoder, generator: Generator, discriminator: Features, images, cond=None, *,
                   feature_weight: float = 1.0, batch_size: int = 64, progress: bool = True) -> FanoganScores:
  """f-AnoGAN (izi_f) anomaly scores: one encoder pass and one reconstruction per image.

  The score is `fanogan_loss`, the loss the encoder was trained with, per image
  (the reference code's `anomaly_scoring` with `dual_iloss=True`). Images of another
  size than the models' are resized with `data.resize_uint8` (PIL LANCZOS, whole
  image). Batch-independent (GroupNorm encoder and generator, D in inference mode);
  one compile per model structure and batch size.

  Args:
    encoder: a `models.fanogan.Encoder` trained against this GAN (`train.fanogan`).
    generator, discriminator: the frozen normal-only GAN; D's spectral-norm vectors are
      read, never updated. `discriminator` is the feature term's f: an `EncoderFeatures` for an
      encoder trained with the CXR encoder's features (`load_fanogan` returns the right one).
    images: a `data.CXRDataset`, or uint8 (N, H, W) square radiographs.
    cond: float32 (N, len(conditions)); None for a dataset takes `normal_condition` (sex
      and age, label 0).
    feature_weight: kappa of the score (the paper: 1).
    batch_size: images per jitted call (capped at N; the last batch is padded).
    progress: show a tqdm bar on stderr.

  Returns:
    `FanoganScores` of numpy arrays (score, image_loss, feature_loss (N,), residual float16
    (N, R, R) in [0, 2], z (N, latent_dim)).

  Raises:
    ValueError: mismatched models, images that are not uint8 (N, H, W), cond missing for an
      array or of the wrong shape, non-finite cond, batch_size <= 0, a feature_weight that is
      negative or not finite.
    jaxcxr.data.DataError: unknown sex or age when cond comes from a dataset.

  References:
    Schlegl, Seeböck, Waldstein, Langs, Schmidt-Erfurth: f-AnoGAN: Fast unsupervised anomaly
    detection with generative adversarial networks. Medical Image Analysis 54, 2019.
  """
  _check_models(encoder, generator, discriminator)
  check_batch_size(batch_size, "fanogan_scores")
  images, cond = _score_inputs(encoder, generator, images, cond, feature_weight)
  r, n = encoder.config.resolution, len(images)
  if n == 0:
    empty = np.zeros((0,), np.float32)
    return FanoganScores(empty, empty, empty, np.zeros((0, r, r), np.float16),
                         np.zeros((0, generator.config.latent_dim), np.float32), np.zeros((0, r, r), np.float16))
  fn, states = _score_fn_and_states(encoder, generator, discriminator)
  kappa = jnp.float32(feature_weight)
  out = map_batches(lambda b: fn(states, b["images"], b["cond"], kappa),
                    {"images": images, "cond": cond}, batch_size, desc="f-AnoGAN", progress=progress)
  return FanoganScores(**out)


def _score_inputs(encoder, generator, images, cond, feature_weight) -> tuple[np.ndarray, np.ndarray]:
  """Checked inputs of `fanogan_scores`: (uint8 (N, R, R) images, float32 (N, C) cond)."""
  if not 0.0 <= feature_weight < math.inf:   # also refuses NaN
    raise ValueError(f"fanogan_scores: feature_weight must be a finite number >= 0, got {feature_weight!r}")
  g_cfg = generator.config
  images, dataset = query_images(images, encoder.config.resolution, "fanogan_scores")
  if cond is None:
    if dataset is None:
      raise ValueError("fanogan_scores: cond is required for an image array (only a CXRDataset provides its own)")
    cond = normal_condition(dataset, tuple(g_cfg.conditions))
  n = len(images)
  cond = np.asarray(cond, np.float32)
  if cond.shape != (n, len(g_cfg.conditions)) or not np.isfinite(cond).all():
    raise ValueError(f"fanogan_scores: expected finite cond of shape ({n}, {len(g_cfg.conditions)}) for "
                     f"conditions {g_cfg.conditions}, got {cond.shape}")
  return images, cond


def _score_fn_and_states(encoder, generator, discriminator):
  """The jitted batch scoring for these models' structure, and their states."""
  fn = _score_fn(_graphdefs(encoder.config, generator.config, discriminator))
  return fn, (nnx.state(encoder), nnx.state(generator), nnx.state(discriminator))


def score_program(encoder: Encoder, generator: Generator, discriminator: Features, images, cond=None, *,
                  feature_weight: float = 1.0) -> Program:
  """The compiled call `fanogan_scores` makes for one batch of these images, and its arguments.

  Args:
    encoder, generator, discriminator, images, cond, feature_weight: as `fanogan_scores`;
      the batch is all of `images` (resized to the encoder's resolution as there).

  Returns:
    `Program(fn, args)`: `fn(states, images, cond, feature_weight)` with the states of E, G
    and f, uint8 images (B, R, R), cond float32 (B, C) and kappa a float32 scalar -> {"score",
    "image_loss", "feature_loss" (B,), "residual" float16 (B, R, R), "z" (B, latent_dim),
    "reconstruction" float16 (B, R, R)}. `fn` is the library's own jitted function (its
    compile cache is the one `fanogan_scores` uses).

  Raises:
    ValueError: as `fanogan_scores`, or no image.
  """
  _check_models(encoder, generator, discriminator)
  images, cond = _score_inputs(encoder, generator, images, cond, feature_weight)
  if len(images) == 0:
    raise ValueError("score_program: expected at least one image")
  fn, states = _score_fn_and_states(encoder, generator, discriminator)
  return Program(fn, (states, jnp.asarray(images), jnp.asarray(cond), jnp.float32(feature_weight)))


# ----------------------------------------------------------------------------- loader and scorer


def load_fanogan(encoder_dir: str | os.PathLike,
                 gan_dir: str | os.PathLike | None = None) -> tuple[Encoder, Generator, Features]:
  """Loads an f-AnoGAN encoder, the GAN it was trained against and its feature term, checking they belong together.

  Args:
    encoder_dir: the encoder checkpoint written by `train.fanogan.train_fanogan`.
    gan_dir: folder with `generator/` and `discriminator/`; None takes the shipped normal GAN
      whose generator id the encoder recorded, else the folder recorded in its metadata.

  Returns:
    (encoder, generator, f): f is the discriminator in inference mode, or, for an encoder
    trained with a CXR encoder's features (`train_fanogan(feature_encoder=...)`), that
    encoder's `EncoderFeatures` at the recorded stage (the shipped CXR encoder with the
    recorded model id, else the recorded folder).

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing checkpoints, or a GAN or CXR encoder whose
      weights are not the ones the encoder was trained against (compared by `checkpoints.model_id`).
  """
  meta = checkpoints.read_metadata(encoder_dir)
  if gan_dir is None:
    # The shipped normal GAN whose generator the encoder learned (its recorded folder is where it was
    # trained, absolute, so another machine finds it by model id); else the recorded folder.
    gan_dir = next((d for d in checkpoints.shipped_normal_gans()
                    if checkpoints.model_id(d / "generator") == meta.get("generator_id")), meta.get("gan_dir", ""))
  gan_dir = pathlib.Path(gan_dir)
  for part in ("generator", "discriminator"):
    expected, found = meta.get(f"{part}_id"), checkpoints.model_id(gan_dir / part)
    if expected is not None and expected != found:
      raise checkpoints.CheckpointError(
          f"{gan_dir / part}: model id {found} is not the {part} the encoder {encoder_dir} was trained against "
          f"({expected})")
  # The ids above checked the whole GAN folder; the discriminator's weights are read only when they are f.
  if meta.get("feature_term", "discriminator") == "discriminator":
    features = load_discriminator(gan_dir / "discriminator")
  else:
    features = EncoderFeatures(load_cxr_encoder(_feature_encoder_dir(meta, encoder_dir)), meta["feature_stage"])
  return load_encoder(encoder_dir), load_generator(gan_dir / "generator"), features


def _feature_encoder_dir(meta: dict, encoder_dir) -> pathlib.Path:
  """The CXR encoder an f-AnoGAN encoder's feature term used: the shipped one with its model id, else its folder."""
  expected = meta.get("feature_encoder_id")
  shipped = [checkpoints.checkpoints_root() / name for name in checkpoints.SHIPPED_ENCODERS]
  found = next((d for d in shipped if d.is_dir() and checkpoints.model_id(d) == expected),
               pathlib.Path(meta.get("feature_encoder_dir", "")))
  found_id = checkpoints.model_id(found)
  if found_id != expected:
    raise checkpoints.CheckpointError(
        f"{found}: model id {found_id} is not the CXR encoder the f-AnoGAN encoder {encoder_dir} was trained with "
        f"({expected})")
  return found


@dataclasses.dataclass
class FanoganScorer(AbstractAnomalyScorer):
  """f-AnoGAN: one encoder pass and one reconstruction."""

  encoder: Encoder
  generator: Generator
  discriminator: Features            # the feature term's f
  batch_size: int = 64
  name: str = "fanogan"
  feature_weight: float = 1.0        # kappa of the score: the one the encoder was trained with

  @classmethod
  def from_checkpoint(cls, encoder_dir: str | os.PathLike, gan_dir: str | os.PathLike | None = None, *,
                      batch_size: int = 64) -> "FanoganScorer":
    """The scorer of an encoder checkpoint: its models (`load_fanogan`) and the kappa it recorded (default 1)."""
    kappa = float(checkpoints.read_metadata(encoder_dir).get("feature_weight", 1.0))
    return cls(*load_fanogan(encoder_dir, gan_dir), batch_size=batch_size, feature_weight=kappa)

  def __call__(self, dataset, *, progress):
    out = fanogan_scores(self.encoder, self.generator, self.discriminator, dataset, batch_size=self.batch_size,
                         feature_weight=self.feature_weight, progress=progress)
    return out.score, out.residual, {"image_loss": out.image_loss, "feature_loss": out.feature_loss}
