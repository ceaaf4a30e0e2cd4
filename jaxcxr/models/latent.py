"""Latent classifiers of the pre-filter: a generator latent z (B, latent_dim) -> one logit per latent.

Mirrors the Keras models of the original study's pre-filter (which predicted from z
alone whether the generated image would be valid):

* logistic regression: no hidden layer, a single `Dense(1)` on z;
* MLPs with 1 to 4 hidden layers (`jaxcxr.config.latent_mlp(depth)`);
* the "deep net" 256-256-BN-128-128-BN-64-64-BN-32-32-16x6 (`config.latent_deep`), read as
  Dense 256, Dense 256, BatchNorm, Dense 128, Dense 128, BatchNorm, Dense 64,
  Dense 64, BatchNorm, Dense 32, Dense 32, then six Dense 16 layers ("16x6" = six
  layers of width 16, not one layer of 96 units or six outputs: the network has a
  single sigmoid output like the others), then the `Dense(1)` logit head.

Each hidden layer is Dense -> ReLU (Keras `Dense(n, activation="relu")`); a
BatchNorm listed in `config.LatentClassifierConfig.batch_norm` follows the activation,
as `BatchNormalization()` placed after such a layer does in Keras. Parameter names:
Keras `dense_i` -> `hidden[i]`, the last `dense` -> `head`, the k-th
`batch_normalization` -> `norms[k]`.

BatchNorm layers use batch statistics and update their running averages in the
default (training) mode; switch to inference once with
`nnx.view(model, use_running_average=True)` (docs/conventions.md), which makes each
latent's output independent of the rest of the batch. No dropout: the original
networks regularised with BatchNorm only, and a stochastic layer would need a key
threaded through `__call__`; use weight decay in the fit instead.

Models never import training code; fitting, prediction and thresholds live in
`jaxcxr.prefilter`; the config and its presets (`LATENT_PRESETS`) in `jaxcxr.config`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcxr.config import LatentClassifierConfig

__all__ = ["LatentClassifier"]

_HE = nnx.initializers.he_normal()  # ReLU layers (Keras' default glorot_uniform is for linear/tanh units)


class LatentClassifier(nnx.Module):
  """MLP (or logistic regression) from latents to one logit: (B, latent_dim) float32 -> (B,) float32.

  `sigmoid(logit)` is the predicted probability that the latent's generated image
  is valid (or passes the target score).

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from jaxcxr import config
    >>> model = LatentClassifier(config.latent_mlp(2), rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((3, 128))).shape
    (3,)
    >>> deep = LatentClassifier(config.latent_deep(), rngs=nnx.Rngs(0))
    >>> nnx.view(deep, use_running_average=True)(jnp.zeros((1, 128))).shape  # inference mode
    (1,)
  """

  def __init__(self, config: LatentClassifierConfig, *, rngs: nnx.Rngs):
    # Classic threefry: XLA:CPU compiles each partitionable-threefry `normal` of a new shape slowly
    # (see models/classifier.py); initial values differ, semantics do not.
    with jax.threefry_partitionable(False):
      self.config = config
      widths = (config.latent_dim, *config.hidden)
      self.hidden = nnx.List([nnx.Linear(w_in, w_out, kernel_init=_HE, rngs=rngs)
                              for w_in, w_out in zip(widths[:-1], widths[1:])])
      self.norms = nnx.List([nnx.BatchNorm(config.hidden[i], momentum=config.batch_norm_momentum, rngs=rngs)
                             for i in sorted(config.batch_norm)])
      # Zero head: every latent starts at logit 0 (p = 0.5), the usual start of logistic regression. A random
      # head adds a random 128-d direction that a short fit on a few hundred latents never unlearns.
      self.head = nnx.Linear(widths[-1], 1, kernel_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    """Logits of latents.

    Args:
      z: float32 (B, latent_dim).

    Returns:
      float32 (B,) logits.

    Raises:
      ValueError: z is not (B, latent_dim).
    """
    cfg = self.config
    if z.ndim != 2 or z.shape[-1] != cfg.latent_dim:
      raise ValueError(f"LatentClassifier: expected latents of shape (B, {cfg.latent_dim}), got {z.shape}")
    norm_of = {layer: k for k, layer in enumerate(sorted(cfg.batch_norm))}
    x = z.astype(jnp.float32)
    for i, dense in enumerate(self.hidden):
      x = jax.nn.relu(dense(x))
      if i in norm_of:
        x = self.norms[norm_of[i]](x)
    return self.head(x)[:, 0]
