"""Graph definitions of models built abstractly from their config, cached: `abstract_graphdef`.

Pure jitted steps carry a model as (graph definition, state) and rebuild it with
`nnx.merge(graphdef, state)`. The graph definition depends only on the model class and its
config, so it is made once per (class, config) with `nnx.eval_shape` (the parameter
initialisers are traced, never run) and reused: the same object each time, which also keeps
it a cheap, stable static argument of `jax.jit`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable

from flax import nnx

__all__ = ["abstract_graphdef"]


@functools.lru_cache(maxsize=128)
def abstract_graphdef(model_type: Callable[..., nnx.Module], config: Hashable, *,
                      use_running_average: bool = False) -> nnx.GraphDef:
  """The graph definition of `model_type(config, rngs=nnx.Rngs(0))`, built without computing parameters.

  Example:
    >>> from jaxcxr.config import UNetConfig
    >>> from jaxcxr.models.unet import UNet
    >>> cfg = UNetConfig(resolution=32, channels=(4, 8), norm_groups=2)
    >>> abstract_graphdef(UNet, cfg) is abstract_graphdef(UNet, cfg)
    True

  Args:
    model_type: the model class (or any callable taking the config and a keyword `rngs`).
    config: its argument, hashable: a frozen config dataclass (or, e.g., a tuple of channels).
    use_running_average: the graph of `nnx.view(model, use_running_average=True)` instead:
      a model with batch statistics or spectral-norm power iterations in inference mode
      (they are read, not updated).

  Returns:
    The `nnx.GraphDef`, cached per (model_type, config, use_running_average).
  """
  model = nnx.eval_shape(lambda: model_type(config, rngs=nnx.Rngs(0)))
  if use_running_average:
    model = nnx.view(model, use_running_average=True)
  return nnx.graphdef(model)
