"""jaxcxr: chest X-ray GANs with pre/post-filtering and AnoGAN latent search in JAX/Flax NNX.

Arrays are NHWC. Images are float32 in generator space [-1, 1] or in
U-Net/classifier space [0, 1]; every docstring says which.

The main functions are reachable from here; they are imported on first use (PEP 562),
so `import jaxcxr` stays fast and imports neither jax nor any model code:

* `load_pretrained` (`jaxcxr.pretrained`): the shipped models as a `Pretrained`, each loaded on first use.
* `resolve_sampler` (`jaxcxr.prefilter.choice`): which sampler runs (no pre-filter, a latent one
  or the cascade one; shipped or given), as a `Sampler` that compiles, samples and judges.
* `sample_valid` (`jaxcxr.sampling`): exactly k post-filter-valid images, no pre-filter.
* `sample_valid_cascade` (`jaxcxr.prefilter.cascade`): the same with the cascade pre-filter,
  which judges each latent by the generator's cheap base image first.
* Generating and scoring without filtering is a method of the post-filter:
  `load_pretrained().scorer.generate_and_score(generator, key, n, group)`.
* `select_threshold` (`jaxcxr.prefilter`): a pre-filter threshold by a named strategy.
* `search_latents` (`jaxcxr.anomaly`): AnoGAN latent search for a batch of images.
* `grad_cam` (`jaxcxr.explain`): Grad-CAM heatmaps of a classifier.
* `evaluate_anomaly` (`jaxcxr.anomaly`), `evaluate_gan` (`jaxcxr.quality`),
  `evaluate_segmentation` (`jaxcxr.train.segmentation`) and `evaluate_classifier`
  (`jaxcxr.train.classifier`): evaluation on labelled radiographs.

Examples:
  >>> import jaxcxr, jaxcxr.sampling
  >>> jaxcxr.sample_valid is jaxcxr.sampling.sample_valid
  True
  >>> "load_pretrained" in dir(jaxcxr)
  True

A runnable walk-through: `examples/quickstart.ipynb`.
"""

import importlib as _importlib

__version__ = "0.1.0"

# Public name: module it lives in (imported on first access by `__getattr__`).
_LAZY = {
    "Pretrained": "jaxcxr.pretrained",
    "load_pretrained": "jaxcxr.pretrained",
    "resolve_sampler": "jaxcxr.prefilter.choice",
    "sample_valid": "jaxcxr.sampling",
    "sample_valid_cascade": "jaxcxr.prefilter.cascade",
    "select_threshold": "jaxcxr.prefilter",
    "search_latents": "jaxcxr.anomaly",
    "grad_cam": "jaxcxr.explain",
    "evaluate_anomaly": "jaxcxr.anomaly",
    "evaluate_gan": "jaxcxr.quality",
    "evaluate_segmentation": "jaxcxr.train.segmentation",
    "evaluate_classifier": "jaxcxr.train.classifier",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
  """Imports a main function's module on first access (PEP 562) and caches the function here."""
  module = _LAZY.get(name)
  if module is None:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(_importlib.import_module(module), name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted({*globals(), *_LAZY})
