"""Post-filter measures predicted from a cascade generator's base image (the cascade pre-filter's model).

A cascade generator (`GeneratorConfig.upsampler`) makes a low-resolution base image and a
learned, noiseless super-resolution stage turns it into the 256x256 output, so an image's
post-filter measures are a function of its base image. The base image costs a fraction of
generating and scoring the full image (for the 64x64 base of `gan_256` v2, CPU: 1.6 ms against
34 ms + 58 ms per image), which makes it a far richer and still cheap input for a pre-filter
than the latent z.

`ScorePredictor` regresses the measures that decide validity (`config.PREDICTED_MEASURES`);
`jaxcxr.prefilter.cascade.log_valid_probability` turns them into log P(valid) at any
strictness through the scorer's calibration. Its training is `jaxcxr.train.score_predictor`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr.config import ScorePredictorConfig
from jaxcxr.models.layers import Conv, GroupNorm, avg_pool2

__all__ = ["ScorePredictor", "load_score_predictor"]


class ScorePredictor(nnx.Module):
  """CNN: base images (B, R, R, 1) in [-1, 1] -> standardised measures (B, len(config.measures)).

  `measures(x)` gives them in the measures' units. The buffers `mean` and `std` hold the training
  targets' statistics and `residual_std` the standard deviation of validation errors (in measure
  units); `jaxcxr.train.score_predictor.fit_score_predictor` sets all three.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from jaxcxr import config
    >>> model = ScorePredictor(config.score_predictor_64(), rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 64, 64, 1))).shape
    (2, 5)
  """

  def __init__(self, config: ScorePredictorConfig, *, rngs: nnx.Rngs):
    self.config = config
    c = config.channels
    self.stem = Conv(1, c[0], 3, rngs=rngs)
    self.convs = nnx.List([Conv(c_in, c_out, 3, rngs=rngs) for c_in, c_out in zip(c, c)])
    self.norms = nnx.List([GroupNorm(w, config.norm_groups, dtype=jnp.float32) for w in c])
    self.widen = nnx.List([Conv(c_in, c_out, 1, rngs=rngs) for c_in, c_out in zip(c[:-1], c[1:])])
    self.head = nnx.Linear(c[-1], len(config.measures), rngs=rngs)
    n = len(config.measures)
    self.mean = nnx.BatchStat(jnp.zeros((n,), jnp.float32))
    self.std = nnx.BatchStat(jnp.ones((n,), jnp.float32))
    self.residual_std = nnx.BatchStat(jnp.ones((n,), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    r = self.config.resolution
    if x.ndim != 4 or x.shape[1:] != (r, r, 1):
      raise ValueError(f"ScorePredictor: expected base images of shape (B, {r}, {r}, 1), got {x.shape}")
    h = self.stem(x.astype(jnp.float32))
    for level, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      h = jax.nn.silu(norm(conv(avg_pool2(h))))
      if level < len(self.widen):
        h = self.widen[level](h)
    return self.head(h.mean(axis=(1, 2)))

  def measures(self, x: jax.Array) -> dict[str, jax.Array]:
    """{measure name: float32 (B,)} in the measures' units."""
    y = self(x) * self.std[...][None] + self.mean[...][None]
    return {name: y[:, i] for i, name in enumerate(self.config.measures)}


def load_score_predictor(directory) -> ScorePredictor:
  """A `ScorePredictor` saved by `jaxcxr.checkpoints.save_model`."""
  model, _, _ = checkpoints.load_model(directory, lambda c: ScorePredictor(c, rngs=nnx.Rngs(0)),
                                       ScorePredictorConfig)
  return model
