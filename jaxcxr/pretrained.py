"""The shipped trained models, ready to use and loaded on first use: `load_pretrained`.

`load_pretrained()` finds the shipped model folders under the checkpoints root
(`jaxcxr.checkpoints.checkpoints_root()`: `$JAXCXR_CHECKPOINTS`, else the `checkpoints/`
folder of the source checkout, else the package `jaxcxr_models` that a non-editable
install carries) and returns a `Pretrained`. Nothing is loaded until a model is first
used: each attribute loads its model with the same library function the command line
uses, once, and keeps it. The installed package holds the models below only (their
best folders); the older ones (e.g. `gan_64`) come with the source checkout.

=====================  ===========================================================
attribute              model (loader)
=====================  ===========================================================
`generator`            the GAN generator, the first of `SHIPPED_GENERATORS`
                       (`jaxcxr.models.load_generator`); the shipped 256x256 one is a
                       cascade: a 128x128 base GAN and a 2x upsampler
`scorer`               the post-filter: lung U-Net, abnormal classifier and their
                       calibration (`jaxcxr.scoring.load_scorer`)
`cascade_prefilter`    the generator's cascade pre-filter on its base image
                       (`jaxcxr.prefilter.cascade.load_cascade_prefilter`)
`normal_gan`           the normal-only GAN for AnoGAN: `NormalGan(generator,
                       discriminator)` (`load_generator`, `load_discriminator`)
`fanogan`              the f-AnoGAN encoder with its GAN: `Fanogan(encoder, generator,
                       discriminator)` (`jaxcxr.anomaly.load_fanogan`)
`translator`           the HealthyGAN translator
                       (`jaxcxr.models.healthygan.load_translator`)
=====================  ===========================================================

`anomaly_scorer(method)` (and `Pretrained.anomaly_scorer`) builds the scorer of an anomaly
method (`ANOMALY_METHODS`) from a given checkpoint or the shipped one. It scores the residual
inside the lungs by default (`ANOMALY_LUNG_MASK`): every shipped anomaly model's card chose
that score on validation patients; `lung_mask=False` scores the whole image.

Typical use::

  pre = jaxcxr.load_pretrained(batch_size=8)
  found = jaxcxr.sample_valid_cascade(pre.scorer, pre.generator, pre.cascade_prefilter, key, 4, "58_64f")
  generated = pre.scorer.generate_and_score(pre.generator, key, 16, "58_64f")   # every image, with scores
  scores = jaxcxr.anomaly.fanogan_scores(*pre.fanogan, dataset)
  result = jaxcxr.evaluate_anomaly(pre.anomaly_scorer("fanogan"), dataset)   # inside the lungs
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from jaxcxr import anomaly, checkpoints, models, scoring
from jaxcxr.models import healthygan
from jaxcxr.models.cxr_encoder import load_cxr_encoder
from jaxcxr.models.healthygan import load_translator
from jaxcxr.models.unet import load_unet, predict_masks
from jaxcxr.prefilter import cascade

__all__ = ["ANOMALY_LUNG_MASK", "ANOMALY_METHODS", "MODEL_NAMES", "Fanogan", "NormalGan", "Pretrained",
           "anomaly_scorer", "load_pretrained", "lung_masker"]

# The anomaly methods `anomaly_scorer` builds: AnoGAN latent search, f-AnoGAN, HealthyGAN, PatchCore.
ANOMALY_METHODS: tuple[str, ...] = ("anogan", "fanogan", "healthygan", "patchcore")
# Score the residual inside the lungs: the setting every shipped anomaly model's card chose on validation patients
# (whole image vs lungs on independent patients: 0.557 vs 0.703 for f-AnoGAN, 0.681 vs 0.789 for HealthyGAN).
ANOMALY_LUNG_MASK = True

_ROOT_ENV = "JAXCXR_CHECKPOINTS"

# The models of a `Pretrained`, in order: {attribute: (description, shipped folders searched, best first)}.
_MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "generator": ("GAN generator", checkpoints.SHIPPED_GENERATORS),
    "scorer": ("post-filter calibration (U-Net and classifier)", checkpoints.SHIPPED_SCORING),
    "cascade_prefilter": ("cascade pre-filter of the generator", checkpoints.SHIPPED_CASCADE_PREFILTERS),
    "normal_gan": ("normal-only GAN", checkpoints.SHIPPED_NORMAL_GANS),
    "fanogan": ("f-AnoGAN encoder", checkpoints.SHIPPED_FANOGAN_ENCODERS),
    "translator": ("HealthyGAN translator", checkpoints.SHIPPED_HEALTHYGAN_TRANSLATORS),
}
MODEL_NAMES: tuple[str, ...] = tuple(_MODELS)


class NormalGan(NamedTuple):
  """The normal-only GAN of AnoGAN: unpack it into `jaxcxr.search_latents(*pre.normal_gan, images, cond, key)`."""

  generator: Any
  discriminator: Any


class Fanogan(NamedTuple):
  """The f-AnoGAN models: unpack them into `jaxcxr.anomaly.fanogan_scores(*pre.fanogan, images, cond)`."""

  encoder: Any
  generator: Any
  discriminator: Any


@contextlib.contextmanager
def _checkpoints_root(root: pathlib.Path):
  """Makes `checkpoints.checkpoints_root()` return `root` while the block runs.

  The shipped-model helpers (`scoring.load_scorer`, `anomaly.load_fanogan`,
  `cascade.shipped_cascade_prefilter`, `checkpoints.shipped_checkpoint`) resolve folders
  against the checkpoints root; the documented override, `$JAXCXR_CHECKPOINTS`, is set
  for the block and restored after it (not thread-safe, as any change of the environment).
  """
  if root == checkpoints.checkpoints_root():
    yield
    return
  old = os.environ.get(_ROOT_ENV)
  os.environ[_ROOT_ENV] = str(root)
  try:
    yield
  finally:
    if old is None:
      os.environ.pop(_ROOT_ENV, None)
    else:
      os.environ[_ROOT_ENV] = old


def _why(root: pathlib.Path) -> str:
  """"; " and why models are missing under the installed models package, else ""."""
  installed = checkpoints.installed_models()
  return f"; {checkpoints.missing_reason(root)}" if installed is not None and root.resolve() == installed else ""


def _find_folders(root: pathlib.Path) -> dict[str, pathlib.Path | None]:
  """The folder of each model of `_MODELS` under `root` (None where it is missing), loading nothing.

  Folders are found as the command line finds them: `checkpoints.shipped_checkpoint`,
  `scoring.shipped_scoring`, `cascade.shipped_cascade_prefilter` (by the generator's model
  id), and the first normal-only GAN folder with a `generator/`.
  """
  def first(find):
    try:
      return find()
    except checkpoints.CheckpointError:
      return None

  with _checkpoints_root(root):
    generator = first(lambda: checkpoints.shipped_checkpoint(*checkpoints.SHIPPED_GENERATORS))
    return {
        "generator": generator,
        "scorer": first(scoring.shipped_scoring),
        "cascade_prefilter": None if generator is None else cascade.shipped_cascade_prefilter(
            checkpoints.model_id(generator)),
        "normal_gan": next(iter(checkpoints.shipped_normal_gans()), None),
        "fanogan": first(lambda: checkpoints.shipped_checkpoint(*checkpoints.SHIPPED_FANOGAN_ENCODERS)),
        "translator": first(lambda: checkpoints.shipped_checkpoint(*checkpoints.SHIPPED_HEALTHYGAN_TRANSLATORS)),
    }


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Pretrained:
  """The shipped models of one checkpoints root; each is loaded on first access and then kept.

  Build it with `load_pretrained`. The `*_dir` fields are the folders found (None where
  a model is missing: its attribute then raises `jaxcxr.checkpoints.CheckpointError`).
  `available` names the models present, `loaded` those already loaded; the repr lists both.

  Attributes:
    root: the checkpoints root the folders were found under.
    strictness: the post-filter level `scorer` is loaded at ("standard", "strict" or a q).
    batch_size: the post-filter's images per compiled call; None keeps the calibration's.
      On a CPU a small batch (4 or 8) compiles and runs a first round much sooner.
    generator_dir, scorer_dir, cascade_prefilter_dir, normal_gan_dir, fanogan_dir,
      translator_dir: the model folders (`normal_gan_dir` holds `generator/` and
      `discriminator/`; `scorer_dir` the calibration, which names its U-Net and classifier).

  Examples:
    >>> import jaxcxr
    >>> pre = jaxcxr.load_pretrained()
    >>> pre.loaded, pre.folders["generator"].relative_to(pre.root).as_posix()
    ((), 'gan_256/generator')
    >>> print(pre)  # doctest: +ELLIPSIS
    Pretrained(root=..., strictness='standard', batch_size=None)
      generator          gan_256/generator  (not loaded)
      scorer             scoring_256  (not loaded)
      cascade_prefilter  cascade_prefilter_gan_256  (not loaded)
      normal_gan         gan_256_normal  (not loaded)
      fanogan            fanogan_256/encoder  (not loaded)
      translator         healthygan_256/translator  (not loaded)
  """

  root: pathlib.Path
  strictness: str | float = "standard"
  batch_size: int | None = None
  generator_dir: pathlib.Path | None = None
  scorer_dir: pathlib.Path | None = None
  cascade_prefilter_dir: pathlib.Path | None = None
  normal_gan_dir: pathlib.Path | None = None
  fanogan_dir: pathlib.Path | None = None
  translator_dir: pathlib.Path | None = None

  @property
  def folders(self) -> dict[str, pathlib.Path | None]:
    """{model name: its folder, or None where it is missing}, in `MODEL_NAMES` order."""
    return {name: getattr(self, f"{name}_dir") for name in MODEL_NAMES}

  @property
  def available(self) -> tuple[str, ...]:
    """The names of the models present under `root`."""
    return tuple(name for name, folder in self.folders.items() if folder is not None)

  @property
  def loaded(self) -> tuple[str, ...]:
    """The names of the models loaded so far."""
    return tuple(name for name in MODEL_NAMES if name in self.__dict__)

  def _folder(self, name: str) -> pathlib.Path:
    folder = getattr(self, f"{name}_dir")
    if folder is None:
      what, names = _MODELS[name]
      raise checkpoints.CheckpointError(f"{self.root}: no {what} here (looked for {', '.join(names)}); pass "
                                        f"load_pretrained(root=...) a checkpoints folder that has one{_why(self.root)}")
    return folder

  @functools.cached_property
  def generator(self):
    """The GAN generator (`jaxcxr.models.load_generator`), generating in [-1, 1] from a latent and a group."""
    return models.load_generator(self._folder("generator"))

  @functools.cached_property
  def scorer(self):
    """The post-filter `jaxcxr.scoring.Scorer` (`load_scorer`) at `strictness`, with `batch_size` if set.

    Its `unet` is the shipped lung U-Net and its `classifier` the shipped abnormal classifier
    (the one `jaxcxr.grad_cam` explains); `generate_and_score(generator, key, n, group)`
    generates and scores images without filtering.
    """
    changes = {} if self.batch_size is None else {"batch_size": self.batch_size}
    with _checkpoints_root(self.root):
      return scoring.load_scorer(self._folder("scorer"), strictness=self.strictness, **changes)

  @functools.cached_property
  def cascade_prefilter(self):
    """The generator's `CascadePrefilter` (`load_cascade_prefilter`), for `jaxcxr.sample_valid_cascade`."""
    return cascade.load_cascade_prefilter(self._folder("cascade_prefilter"))

  @functools.cached_property
  def normal_gan(self) -> NormalGan:
    """`NormalGan(generator, discriminator)` trained on normal images only (AnoGAN's `search_latents`)."""
    folder = self._folder("normal_gan")
    return NormalGan(models.load_generator(folder / "generator"), models.load_discriminator(folder / "discriminator"))

  @functools.cached_property
  def fanogan(self) -> Fanogan:
    """`Fanogan(encoder, generator, discriminator)` (`jaxcxr.anomaly.load_fanogan`, the GAN checked by model id)."""
    with _checkpoints_root(self.root):
      return Fanogan(*anomaly.load_fanogan(self._folder("fanogan")))

  @functools.cached_property
  def translator(self):
    """The HealthyGAN `Translator` (`load_translator`), for `jaxcxr.anomaly.healthygan_scores`."""
    return healthygan.load_translator(self._folder("translator"))

  def anomaly_scorer(self, method: str, *, lung_mask: bool = ANOMALY_LUNG_MASK, batch_size: int = 64,
                     search: anomaly.LatentSearchConfig | None = None, seed: int = 0):
    """`anomaly_scorer` of `method` with this root's models: inside the lungs by default (see `anomaly_scorer`)."""
    folder = {"anogan": "normal_gan", "fanogan": "fanogan", "healthygan": "translator"}.get(method)
    with _checkpoints_root(self.root):
      return anomaly_scorer(method, self._folder(folder) if folder else None, lung_mask=lung_mask,
                            batch_size=batch_size, search=search, seed=seed)[0]

  def __repr__(self) -> str:
    lines = [f"Pretrained(root={str(self.root)!r}, strictness={self.strictness!r}, batch_size={self.batch_size!r})"]
    width = max(map(len, MODEL_NAMES))
    for name, folder in self.folders.items():
      if folder is None:
        where = f"missing (looked for {', '.join(_MODELS[name][1])}{_why(self.root)})"
      else:
        shown = folder.relative_to(self.root).as_posix() if folder.is_relative_to(self.root) else str(folder)
        where = f"{shown}  ({'loaded' if name in self.__dict__ else 'not loaded'})"
      lines.append(f"  {name:<{width}}  {where}")
    return "\n".join(lines)


def load_pretrained(root: str | os.PathLike | None = None, *, strictness: str | float = "standard",
                    batch_size: int | None = None) -> Pretrained:
  """The shipped models of a checkpoints folder, each loaded on first use (see `Pretrained`).

  Only the folders are looked up here (file checks, no weights read); each model loads when
  its attribute is first read, with the loader the command line uses, and is kept.

  Args:
    root: the checkpoints folder; default `jaxcxr.checkpoints.checkpoints_root()`
      (`$JAXCXR_CHECKPOINTS`, else `checkpoints/` of the source checkout, else the
      installed package `jaxcxr_models` of a non-editable install).
    strictness: the post-filter level of `scorer`: "standard", "strict" or a fraction q.
    batch_size: the post-filter's images per compiled call (default the calibration's, 32);
      small values (4, 8) make the first call compile and run much sooner on a CPU.

  Returns:
    A `Pretrained`. Models missing under `root` show as missing in its repr, and raise
    `jaxcxr.checkpoints.CheckpointError` (naming the folders searched) when used.

  Raises:
    jaxcxr.checkpoints.CheckpointError: `root` does not exist, is not a folder, or holds none
      of the shipped models (the message names it and lists the folders searched).
    ValueError: batch_size < 1.

  Examples:
    Sample two post-filter-valid images of women aged 58-64 with the cascade pre-filter:

    >>> import jax, numpy as np
    >>> import jaxcxr
    >>> pre = jaxcxr.load_pretrained(batch_size=4)
    >>> pre.available
    ('generator', 'scorer', 'cascade_prefilter', 'normal_gan', 'fanogan', 'translator')
    >>> found = jaxcxr.sample_valid_cascade(pre.scorer, pre.generator, pre.cascade_prefilter,
    ...                                     jax.random.key(0), 2, "58_64f")
    >>> found["images"].shape, found["images"].dtype, found["n_valid"]
    ((2, 256, 256), dtype('uint8'), 2)
    >>> all(bool((s > 0).all()) for s in found["scores"].values())  # valid: every score > 0
    True
    >>> pre.loaded
    ('generator', 'scorer', 'cascade_prefilter')
  """
  if batch_size is not None and batch_size < 1:
    raise ValueError(f"load_pretrained: batch_size must be >= 1, got {batch_size}")
  root = pathlib.Path(root if root is not None else checkpoints.checkpoints_root()).absolute()
  searched = "; ".join(f"{what}: {' or '.join(names)}" for what, names in _MODELS.values())
  if not root.exists():
    raise checkpoints.CheckpointError(f"{root}: checkpoints folder does not exist; missing every shipped model "
                                      f"({searched}). Pass root=DIR or set {_ROOT_ENV}, or install jaxcxr with its "
                                      f"models package {checkpoints.MODELS_PACKAGE} (pip install .)")
  if not root.is_dir():
    raise checkpoints.CheckpointError(f"{root}: expected the checkpoints folder, found a file")
  folders = _find_folders(root)
  if not any(folders.values()):
    raise checkpoints.CheckpointError(f"{root}: holds none of the shipped models; missing {searched}. Pass "
                                      f"root=DIR or set {_ROOT_ENV}")
  return Pretrained(root, strictness, batch_size, **{f"{name}_dir": folder for name, folder in folders.items()})


def anomaly_scorer(method: str, checkpoint: str | os.PathLike | None = None, *,
                   lung_mask: bool = ANOMALY_LUNG_MASK, unet: str | os.PathLike | None = None, batch_size: int = 64,
                   search: anomaly.LatentSearchConfig | None = None, seed: int = 0,
                   log: Callable[[str], None] | None = None, feature_term: str = "encoder",
                   feature_encoder: str | os.PathLike | None = None, feature_stage: str = anomaly.SHIPPED_FEATURE_STAGE
                   ) -> tuple[anomaly.AbstractAnomalyScorer, pathlib.Path]:
  """The scorer of an anomaly method (for `jaxcxr.anomaly.evaluate_anomaly`), from a checkpoint or the shipped one.

  Args:
    method: one of `ANOMALY_METHODS`.
    checkpoint: "anogan": a normal-only GAN folder (`generator/`, `discriminator/`);
      "fanogan": an encoder checkpoint (its GAN is found by model id, `anomaly.load_fanogan`);
      "healthygan": a translator checkpoint. The encoder's and translator's model folders are
      accepted too (`checkpoints.model_folder`); "patchcore": a memory-bank folder
      (`jaxcxr train patchcore`'s OUT; its encoder is read from its record). Default: the
      shipped one, best first.
    lung_mask: score the residual inside the lungs (`anomaly.LungMaskedScorer`; PatchCore: its
      largest lung-patch distance), the setting every shipped anomaly card chose on validation
      (default); False scores the whole image.
    unet: the lung U-Net checkpoint of the mask (default the shipped one).
    batch_size: images per compiled call.
    search: AnoGAN's `anomaly.LatentSearchConfig`; default `anomaly.SHIPPED_SEARCH`, the search
      chosen on validation (with the discriminator's feature term, the paper's weight 0.1 instead
      of its 0.5). AnoGAN only.
    seed: AnoGAN's random starts.
    log: optional callable(str): a line per model loaded.
    feature_term: AnoGAN only: what the search's feature term f compares. "encoder" (default,
      chosen on validation): a stage of a CXR encoder (`anomaly.EncoderFeatures`);
      "discriminator": the GAN discriminator's features, as the original AnoGAN.
    feature_encoder: the CXR encoder checkpoint of the "encoder" term (default the shipped one).
    feature_stage: the encoder stage of the "encoder" term.

  Returns:
    (the scorer, the method's checkpoint folder).

  Raises:
    ValueError: an unknown method, or `search` for another method than AnoGAN.
    jaxcxr.checkpoints.CheckpointError: a missing or corrupt checkpoint, or none shipped.
  """
  log = log or (lambda message: None)
  if method not in ANOMALY_METHODS:
    raise ValueError(f"unknown anomaly method {method!r}; expected one of {', '.join(ANOMALY_METHODS)}")
  if (search is not None or feature_encoder is not None or feature_term != "encoder") and method != "anogan":
    raise ValueError("search, feature_term and feature_encoder set the AnoGAN latent search; the other methods "
                     "score in one pass")
  default_search = anomaly.shipped_search(feature_term)     # refuses an unknown term
  if feature_term == "discriminator" and feature_encoder is not None:
    raise ValueError("feature_encoder sets the 'encoder' feature term; feature_term is 'discriminator'")
  if method == "anogan":
    root = checkpoints.checkpoints_root()
    gan = pathlib.Path(checkpoint) if checkpoint else next(iter(checkpoints.shipped_normal_gans()), None)
    if gan is None:
      raise checkpoints.CheckpointError(f"no shipped normal-only GAN under {root}; pass --checkpoint DIR (generator/, "
                                        "discriminator/)")
    log(f"loading normal-only GAN {gan}")
    generator, discriminator = anomaly.load_anogan(gan)      # the whole GAN folder, checked, whichever term
    if feature_term == "discriminator":
      features = discriminator
    else:
      feature_encoder = feature_encoder or _given_or_shipped(None, "encoder", checkpoints.SHIPPED_ENCODERS)
      log(f"AnoGAN's feature term: {feature_stage} of the CXR encoder {feature_encoder}")
      features = anomaly.EncoderFeatures(load_cxr_encoder(feature_encoder), feature_stage)
    scorer = anomaly.AnoganScorer(generator, features, search or default_search, seed=seed, batch_size=batch_size)
    directory = gan
  elif method == "fanogan":
    directory = _given_or_shipped(checkpoint, "encoder", checkpoints.SHIPPED_FANOGAN_ENCODERS)
    log(f"loading f-AnoGAN encoder {directory} and its GAN")
    scorer = anomaly.FanoganScorer.from_checkpoint(directory, batch_size=batch_size)
  elif method == "healthygan":
    directory = _given_or_shipped(checkpoint, "translator", checkpoints.SHIPPED_HEALTHYGAN_TRANSLATORS)
    log(f"loading HealthyGAN translator {directory}")
    scorer = anomaly.HealthyganScorer(load_translator(directory), batch_size=batch_size)
  else:
    directory = _patchcore_folder(checkpoint)
    log(f"loading PatchCore memory bank {directory} and its encoder")
    try:
      model = anomaly.load_patchcore(directory)
    except ValueError as e:
      raise checkpoints.CheckpointError(str(e)) from e
    unet_model = None
    if lung_mask:
      unet_dir = _given_or_shipped(unet, "unet", checkpoints.SHIPPED_UNETS)
      log(f"scoring the lung patches of {unet_dir}'s masks")
      unet_model = load_unet(unet_dir)
    return anomaly.PatchcoreScorer(model, unet_model, batch_size=batch_size), directory
  if lung_mask:
    unet_dir = _given_or_shipped(unet, "unet", checkpoints.SHIPPED_UNETS)
    log(f"scoring the residual inside the lungs of {unet_dir}")
    scorer = anomaly.LungMaskedScorer(scorer, load_unet(unet_dir))
  return scorer, directory


def lung_masker(unet: str | os.PathLike | None = None, *, log: Callable[[str], None] = lambda _: None
                ) -> Callable[[Any], np.ndarray]:
  """A function from radiographs to lung label maps: `predict_masks` of the given (default: shipped) U-Net.

  The evaluations pass it to `jaxcxr.baselines.compare_with_training_patients` for the lung statistics.
  """
  unet_dir = _given_or_shipped(unet, "unet", checkpoints.SHIPPED_UNETS)
  log(f"lung masks (baseline statistics, exposure, Grad-CAM share) from {unet_dir}")
  return functools.partial(predict_masks, load_unet(unet_dir))


def _patchcore_folder(directory: str | os.PathLike | None) -> pathlib.Path:
  """A given PatchCore folder, else the first shipped one (`checkpoints.SHIPPED_PATCHCORE`) with a patchcore.json."""
  if directory:
    return pathlib.Path(directory)
  root = checkpoints.checkpoints_root()
  for name in checkpoints.SHIPPED_PATCHCORE:
    if (root / name / "patchcore.json").is_file():
      return root / name
  raise checkpoints.CheckpointError(f"{root}: no shipped PatchCore memory bank among "
                                    f"{', '.join(checkpoints.SHIPPED_PATCHCORE)}; pass --checkpoint DIR "
                                    "(`jaxcxr train patchcore`'s OUT)")


def _given_or_shipped(directory: str | os.PathLike | None, kind: str, shipped: tuple[str, ...]) -> pathlib.Path:
  """A given checkpoint (or the model folder holding it as `kind/`), else the first shipped one of `shipped`."""
  return checkpoints.model_folder(directory, kind) if directory else checkpoints.shipped_checkpoint(*shipped)
