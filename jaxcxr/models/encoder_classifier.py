"""A classifier that is a linear probe on the self-supervised CXR encoder.

`EncoderClassifier` holds a `CXREncoder` (its pretrained weights, unchanged) and one linear layer
on the mean and the maximum over positions of each pooled stage's patch features (`pooled_features`;
`jaxcxr.encoder_probes` probes the same features). It has the interface of the ResNet `Classifier`:

* `__call__(x)`: float32 (B,) logits of images (B, R, R, 1) in [0, 1] (as `prepare_images` gives);
* `features(x)`: the first pooled stage's patch features, the map Grad-CAM weighs;
* `head(feature_map)`: the later stages, the pooling and the linear layer;

so `predict_proba`, `jaxcxr evaluate classifier`, Grad-CAM and the scorers take it as they take a
`Classifier`. `jaxcxr.train.encoder_classifier` fits the linear layer; `load_classifier` loads it.

The linear layer acts on raw pooled features: the probe's standardisation is folded into its
weights and bias, so the logit equals the fitted logistic regression's decision function.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcxr.batching import map_batches
from jaxcxr.config.classifier import POOLED_STAGES, EncoderClassifierConfig
from jaxcxr.models.cxr_encoder import CXREncoder, prepare_images, space_to_depth

__all__ = ["EncoderClassifier", "EncoderClassifierConfig", "pooled_features"]


def _stage_index(name: str) -> int:
  return int(name[len("stage"):]) - 1


class EncoderClassifier(nnx.Module):
  """Linear probe on pooled CXR-encoder features: (B, R, R, 1) in [0, 1] -> (B,) logits.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from jaxcxr.config import CXREncoderConfig, EncoderClassifierConfig
    >>> encoder = CXREncoderConfig(resolution=32, patch=4, channels=(8, 16), blocks=(1, 1), norm_groups=4)
    >>> model = EncoderClassifier(EncoderClassifierConfig(encoder=encoder, pooled_stages=("stage1", "stage2")),
    ...                           rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 32, 32, 1))).shape, model.features(jnp.zeros((2, 32, 32, 1))).shape
    ((2,), (2, 8, 8, 8))
  """

  def __init__(self, config: EncoderClassifierConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.encoder = CXREncoder(dataclasses.replace(config.encoder, dtype=config.dtype), rngs=rngs)
    self.weight = nnx.Param(jnp.zeros((config.features,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((), jnp.float32))

  def _check(self, x: jax.Array) -> None:
    r = self.config.resolution
    if not hasattr(x, "ndim") or x.ndim != 4 or x.shape[1:] != (r, r, 1):
      raise ValueError(f"EncoderClassifier: expected images of shape (B, {r}, {r}, 1) in [0, 1], got "
                       f"{getattr(x, 'shape', type(x).__name__)}")

  def features(self, x: jax.Array) -> jax.Array:
    """The first pooled stage's patch features (the encoder's residual stream there): float32 (B, h, w, C)."""
    self._check(x)
    enc = self.encoder
    signed = x.astype(jnp.float32) * 2.0 - 1.0                       # [0, 1] -> the encoder's [-1, 1]
    h = enc.stem(space_to_depth(signed.astype(jnp.dtype(self.config.dtype)), enc.config.patch))
    for stage in enc.stages[:_stage_index(self.config.pooled_stages[0]) + 1]:
      h = stage(h)
    return h.astype(jnp.float32)

  def pooled(self, feature_map: jax.Array) -> jax.Array:
    """The probe's inputs from `features`' output: per pooled stage, channel means then maxima. float32 (B, F)."""
    enc, stages = self.encoder, self.config.pooled_stages
    first = _stage_index(stages[0])
    h, parts = feature_map.astype(jnp.dtype(self.config.dtype)), []
    for s in range(first, _stage_index(stages[-1]) + 1):
      if s > first:
        h = enc.stages[s](h)
      if f"stage{s + 1}" in stages:
        f = h.astype(jnp.float32)
        parts += [f.mean(axis=(1, 2)), f.max(axis=(1, 2))]
    return jnp.concatenate(parts, axis=-1)

  def head(self, feature_map: jax.Array) -> jax.Array:
    """Logits from `features`' output: float32 (B,)."""
    return self.pooled(feature_map) @ self.weight[...] + self.bias[...]

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.head(self.features(x))

  @classmethod
  def around(cls, encoder: CXREncoder, pooled_stages: tuple[str, ...] | None = None) -> "EncoderClassifier":
    """A classifier holding `encoder`'s weights, with a zero linear head (the probe's starting point).

    `pooled_stages` None: those of `POOLED_STAGES` the encoder has (its first stage when it has none).
    """
    if pooled_stages is None:
      pooled_stages = tuple(s for s in POOLED_STAGES if s in encoder.config.feature_shapes()) or ("stage1",)
    model = cls(EncoderClassifierConfig(encoder=encoder.config, pooled_stages=tuple(pooled_stages)),
                rngs=nnx.Rngs(0))
    nnx.update(model.encoder, nnx.state(encoder))
    return model


@functools.partial(jax.jit, static_argnums=0)
def _pooled(graphdef, state, x):
  model = nnx.merge(graphdef, state)
  return model.pooled(model.features(x))


def pooled_features(model: EncoderClassifier, images: Any, *, batch_size: int = 64) -> np.ndarray:
  """The linear head's inputs, as the module computes them: float32 (N, F) for uint8 (N, H, W) radiographs.

  Images are resized to the classifier's side as `models.cxr_encoder.prepare_images` does (LANCZOS, as
  the archives were built) and scaled to [0, 1], the module's inputs.
  """
  x = prepare_images(np.asarray(images), model.config.resolution).astype(np.float32)[..., None] / 255.0
  graphdef, state = nnx.split(model)
  return map_batches(lambda b: _pooled(graphdef, state, b), x, batch_size)
