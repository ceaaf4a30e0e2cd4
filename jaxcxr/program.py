"""`Program`: one compiled pipeline of jaxcxr, its jitted function and the arguments of one call.

Each pipeline that runs as one compiled call has a public accessor returning the
exact program the library runs and the arguments it would pass, so that a
benchmark can lower it (HLO, XLA's cost analysis), compile it ahead of time and
time the compiled call without reaching into private names:

* `Scorer.generate_and_score_program` (`jaxcxr.scoring`): latents, generator, post-filter.
* `search_program`, `step_program` (`jaxcxr.anomaly.anogan`): the AnoGAN search, one step of it.
* `score_program` (`jaxcxr.anomaly.fanogan`, `jaxcxr.anomaly.healthygan`): one batch of scores.
* `train_step_program` (`jaxcxr.train.gan`, `jaxcxr.train.segmentation`, `jaxcxr.train.cxr_encoder`):
  `steps_per_call` steps.

Examples:
  >>> program = search_program(generator, discriminator, images, cond, key, config)  # doctest: +SKIP
  >>> compiled = program.fn.lower(*program.args).compile()                          # doctest: +SKIP
  >>> out = compiled(*program.fresh_args())                                          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Program"]


class Program(NamedTuple):
  """A jitted function of the library and the arguments of one call of it.

  Every static setting (graph definitions, step counts, configs) is bound into `fn`, so
  `args` holds only arrays and pytrees of arrays: `fn(*args)` is the call the library
  makes, `fn.lower(*args)` lowers it and `fn.lower(*args).compile()(*args)` runs it
  compiled ahead of time. The arguments at the positions in `donated` are consumed by a
  call (XLA reuses their buffers for the outputs): call again with `fresh_args()`.

  Attributes:
    fn: a `jax.jit`-wrapped function (the object the library calls, so its compile cache
      is the library's).
    args: the positional arguments of one call, placed (and sharded) as the library does.
    donated: positions in `args` of the donated arguments.
  """

  fn: Callable[..., Any]
  args: tuple
  donated: tuple[int, ...] = ()

  def fresh_args(self) -> tuple:
    """`args` with device copies of the donated ones (the others shared), for one more call."""
    return tuple(jax.tree.map(jnp.copy, a) if i in self.donated else a for i, a in enumerate(self.args))
