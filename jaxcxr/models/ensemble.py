"""A classifier ensemble as one module: member networks and a pixel logistic regression, soft-voted.

The ensemble's logit is the mean of its voters' logits (K member `Classifier`s of one
architecture, trained with different seeds, and optionally a logistic regression on the
input's block means). Averaging logits is soft voting on the log-odds scale.

The ensemble keeps the `Classifier` interface that scoring and Grad-CAM use,
`__call__(x) == head(features(x))` with a global-average-pooling linear head:

* `features(x)` concatenates the members' last feature maps (B, h, w, C) along the
  channels and appends one channel for the pixel model: its logit contribution from
  each of the h x w cells (the block means under that cell, times their weights),
  times h * w, so that its spatial mean is the pixel model's logit without bias;
* `head(feature_map)` averages the members' heads and the pixel model's (mean of its
  channel plus bias).

So Grad-CAM (`jaxcxr.explain`) of the ensemble is, in logit units, the mean of the
members' maps plus the pixel model's own map of regional evidence, and `raw_max`
(score_maxheat) stays comparable with a single network's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcxr.config import ClassifierEnsembleConfig
from jaxcxr.models.resnet import Classifier

__all__ = ["ClassifierEnsemble", "PixelLogit", "block_means", "set_pixel_weights"]


def block_means(x: jax.Array, size: int) -> jax.Array:
  """Images (B, R, R, 1) -> (B, size, size) means over (R / size)-pixel square blocks."""
  b, r = x.shape[0], x.shape[1]
  k = r // size
  return x[..., 0].reshape(b, size, k, size, k).mean(axis=(2, 4))


class PixelLogit(nnx.Module):
  """A logistic regression on block means, logit = <weight, block_means(x)> + bias.

  The weights are set from a fitted model (`jaxcxr.train.classifier`), with the
  feature standardisation folded in; a fresh module votes 0.
  """

  def __init__(self, size: int):
    self.size = size
    self.weight = nnx.Param(jnp.zeros((size, size), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((), jnp.float32))

  def cell_map(self, x: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """(B, h, w) logit contributions of each of h x w cells (without bias) of images (B, R, R, 1)."""
    h, w = grid
    terms = block_means(x.astype(jnp.float32), self.size) * self.weight[...][None]   # (B, S, S)
    b = terms.shape[0]
    return terms.reshape(b, h, self.size // h, w, self.size // w).sum(axis=(2, 4))

  def __call__(self, x: jax.Array) -> jax.Array:
    return (block_means(x.astype(jnp.float32), self.size) * self.weight[...][None]).sum(axis=(1, 2)) + self.bias[...]


class ClassifierEnsemble(nnx.Module):
  """Soft vote of member classifiers and a pixel logistic regression: (B, R, R, 1) in [0, 1] -> (B,) logits.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from jaxcxr.config import ClassifierConfig, ClassifierEnsembleConfig
    >>> member = ClassifierConfig(resolution=32, stages=(1, 1), channels=(4, 8), norm_groups=2)
    >>> model = ClassifierEnsemble(ClassifierEnsembleConfig(member=member, members=2, pixel_size=8),
    ...                            rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((3, 32, 32, 1))).shape
    (3,)
    >>> model.features(jnp.zeros((3, 32, 32, 1))).shape     # 2 x 8 member channels + 1 pixel channel
    (3, 4, 4, 17)
  """

  def __init__(self, config: ClassifierEnsembleConfig, *, rngs: nnx.Rngs):
    self.config = config
    member = dataclasses.replace(config.member, dtype=config.dtype)
    if member.input_mode != "full":
      raise ValueError("ClassifierEnsemble: members must use input_mode='full'")
    self.members = nnx.List([Classifier(member, rngs=rngs) for _ in range(config.members)])
    self.pixel = PixelLogit(config.pixel_size) if config.pixel_size else None

  @property
  def voters(self) -> int:
    return self.config.members + (1 if self.pixel is not None else 0)

  def features(self, x: jax.Array) -> jax.Array:
    """Members' last feature maps side by side in channels, plus the pixel model's cell map: (B, h, w, K C [+ 1])."""
    maps = [m.features(x) for m in self.members]
    if self.pixel is not None:
      h, w = maps[0].shape[1:3]
      if self.config.pixel_size % h or self.config.pixel_size % w:
        raise ValueError(f"ClassifierEnsemble: pixel_size {self.config.pixel_size} is not a multiple of the "
                         f"feature map {h}x{w}")
      maps.append((self.pixel.cell_map(x, (h, w)) * (h * w))[..., None])
    return jnp.concatenate(maps, axis=-1)

  def head(self, feature_map: jax.Array) -> jax.Array:
    """Mean of the voters' logits from `features`' output: float32 (B,)."""
    c = feature_map.shape[-1] - (1 if self.pixel is not None else 0)
    per = c // self.config.members
    logits = [m.head(feature_map[..., i * per:(i + 1) * per]) for i, m in enumerate(self.members)]
    if self.pixel is not None:
      logits.append(feature_map[..., -1].mean(axis=(1, 2)) + self.pixel.bias[...])
    return sum(logits) / len(logits)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.head(self.features(x))

  def voter_logits(self, x: jax.Array) -> jax.Array:
    """Each voter's logit, (B, voters): the members in order, then the pixel model."""
    logits = [m(x) for m in self.members]
    if self.pixel is not None:
      logits.append(self.pixel(x))
    return jnp.stack(logits, axis=-1)


def set_pixel_weights(model: ClassifierEnsemble, weight: np.ndarray, bias: float) -> None:
  """Sets the pixel voter from raw-feature coefficients (size, size) and intercept (standardisation folded)."""
  model.pixel.weight[...] = jnp.asarray(weight, jnp.float32).reshape(model.config.pixel_size, model.config.pixel_size)
  model.pixel.bias[...] = jnp.asarray(bias, jnp.float32)
