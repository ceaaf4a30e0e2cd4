"""Inference with the binary classifier: input preparation, batched predictions and the loader.

The functions take a `Classifier` (the ResNet-18-like network, `jaxcxr.models.resnet`, re-exported
here), a `ClassifierEnsemble` (`jaxcxr.models.ensemble`) or an `EncoderClassifier`
(`jaxcxr.models.encoder_classifier`), all with the same `__call__`, `features`, `head` interface;
`load_classifier` returns any of them, as its checkpoint says. This module sits above them: the
model modules never import it.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr.batching import map_batches
from jaxcxr.config import ClassifierConfig, ClassifierEnsembleConfig, EncoderClassifierConfig
from jaxcxr.data import resize_uint8
from jaxcxr.models.encoder_classifier import EncoderClassifier
from jaxcxr.models.ensemble import ClassifierEnsemble
from jaxcxr.models.resnet import BasicBlock, Classifier

__all__ = ["BasicBlock", "Classifier", "load_classifier", "predict_logits", "predict_pooled_features", "predict_proba",
           "prepare_images"]


# ----------------------------------------------------------------------------- inputs


def prepare_images(images: Any, resolution: int) -> np.ndarray:
  """Images in any of the accepted forms -> host float32 (N, R, R, 1) in [0, 1], NHWC.

  Accepted: uint8 (N, H, W) or (N, H, W, 1) in [0, 255] (resized with LANCZOS when
  H, W != R), or float (N, H, W) / (N, H, W, 1) already in [0, 1] (resized
  bilinearly with antialiasing when needed). Generator outputs in [-1, 1] must go
  through `jaxcxr.data.signed_to_unit` first.

  Raises:
    ValueError: other shapes or dtypes, or float images that are not finite or not in [0, 1].
  """
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] != 1:
    raise ValueError(f"expected images of shape (N, H, W) or (N, H, W, 1), got {images.shape}")
  if images.dtype == np.uint8:
    return (resize_uint8(images, resolution).astype(np.float32) / 255.0)[..., None]
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f"expected uint8 or float images, got {images.dtype}")
  images = images.astype(np.float32)
  if images.size and not np.isfinite(images).all():
    raise ValueError("float images contain NaN or inf; replace them or drop those images first")
  if images.size and (images.min() < -1e-3 or images.max() > 1.0 + 1e-3):
    raise ValueError(f"float images must be in [0, 1], got range [{images.min():.3g}, {images.max():.3g}]; "
                     "convert generator images with jaxcxr.data.signed_to_unit, 8-bit values by dividing by 255")
  images = np.clip(images, 0.0, 1.0)
  if images.shape[1:3] != (resolution, resolution):
    images = np.asarray(jax.image.resize(images, (images.shape[0], resolution, resolution, 1), "linear",
                                         antialias=True))
  return images


# ----------------------------------------------------------------------------- inference


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, state, x):
  return nnx.merge(graphdef, state)(x)


@functools.partial(jax.jit, static_argnums=0)
def _pooled_features(graphdef, state, x):
  return nnx.merge(graphdef, state).features(x).mean(axis=(1, 2))


def _in_batches(fn, model: Classifier, images: Any, batch_size: int) -> np.ndarray:
  """fn(graphdef, state, x) over `prepare_images(images)` in fixed-size jitted batches (`map_batches`)."""
  graphdef, state = nnx.split(model)
  return map_batches(lambda x: fn(graphdef, state, x), prepare_images(images, model.config.resolution), batch_size)


def predict_logits(model: Classifier, images: Any, batch_size: int = 64) -> np.ndarray:
  """Logits for a set of images, in fixed-size jitted batches (last batch padded).

  Args:
    model: a `Classifier`.
    images: see `prepare_images` (uint8 at any size, or float in [0, 1]).
    batch_size: images per jitted call (static: one compilation per size).

  Returns:
    float32 numpy (N,) logits.
  """
  return _in_batches(_logits, model, images, batch_size)


def predict_pooled_features(model: Classifier, images: Any, batch_size: int = 64) -> np.ndarray:
  """Globally average-pooled last feature map (the head's input in "full" mode), batched like `predict_logits`.

  A chest-X-ray feature space for Fréchet distances and diversity figures that does not
  depend on any GAN.

  Returns:
    float32 numpy (N, C), C = config.channels[-1] (2x side by side in "halves" mode).
  """
  return _in_batches(_pooled_features, model, images, batch_size)


def predict_proba(model: Classifier, images: Any, batch_size: int = 64) -> np.ndarray:
  """Probabilities of class 1, sigmoid(logit), as float32 numpy (N,); see `predict_logits`."""
  logits = predict_logits(model, images, batch_size)
  return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def load_classifier(directory) -> Classifier:
  """Loads a classifier saved by `jaxcxr.train.classifier.train_classifier` (or `save_model`), an
  ensemble saved by `jaxcxr.train.classifier.assemble_ensemble` (a `ClassifierEnsemble`), or a probe
  on the CXR encoder saved by `jaxcxr.train.encoder_classifier` (an `EncoderClassifier`); the last two
  have the `Classifier`'s interface.

  GroupNorm has no train/eval difference, so the model is ready for inference.
  The checkpoint metadata (`jaxcxr.checkpoints.read_metadata(directory)`) holds the
  task, the decision threshold chosen on validation data and the test metrics.

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing, corrupt or mismatched checkpoint.
  """
  config_type = checkpoints.read_metadata(directory).get("config_type")
  if config_type == ClassifierEnsembleConfig.__name__:
    model, _, _ = checkpoints.load_model(directory, lambda c: ClassifierEnsemble(c, rngs=nnx.Rngs(0)),
                                         ClassifierEnsembleConfig)
  elif config_type == EncoderClassifierConfig.__name__:
    model, _, _ = checkpoints.load_model(directory, lambda c: EncoderClassifier(c, rngs=nnx.Rngs(0)),
                                         EncoderClassifierConfig)
  else:
    model, _, _ = checkpoints.load_model(directory, lambda c: Classifier(c, rngs=nnx.Rngs(0)), ClassifierConfig)
  return model
