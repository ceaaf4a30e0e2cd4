"""`Scorer`: the post-filter's models, their device states and calibration; its results; its folder on disk.

A calibration folder holds `calibration.json` (config, thresholds, strictness levels, provenance
naming the U-Net and classifier checkpoints and their `model_id`s), `atlas.npz` and
`reference_measures.npz`; `Scorer.save` writes it and `load_scorer` reads it back with the
models it names.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib
import zipfile
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcxr import checkpoints
from jaxcxr import io as io_lib
from jaxcxr.batching import map_batches
from jaxcxr.models.classifier import Classifier, load_classifier
from jaxcxr.models.condition import group_condition_batch
from jaxcxr.models.generator import Generator
from jaxcxr.models.unet import UNet, as_unit_images, load_unet
from jaxcxr.program import Program
from jaxcxr.scoring.pipeline import ScoringConfig, generate_and_score_fn, score_images, split_with_dtype
from jaxcxr.scoring.thresholds import (REFERENCE_MEASURES, STANDARD_STRICTNESS, THRESHOLD_NAMES, Calibration,
                                       resolve_strictness, score_from_measures, thresholds_at)

__all__ = ["ATLAS_FILE", "CALIBRATION_FILE", "REFERENCE_FILE", "GenerationResult", "ScoreResult", "Scorer",
           "load_scorer", "shipped_scoring"]

CALIBRATION_FILE = "calibration.json"
ATLAS_FILE = "atlas.npz"
# The raw measures of the calibration images, for thresholds at any strictness (absent in old calibrations).
REFERENCE_FILE = "reference_measures.npz"


class ScoreResult(NamedTuple):
  """Scores of N images, as host numpy arrays.

  Attributes:
    scores: {name: float32 (N,)} for the five `SCORE_NAMES` (> 0 is good).
    features: float32 (N, 6) symmetry features in `FEATURE_NAMES` order.
    valid: bool (N,), all five scores > 0.
    measures: {name: float32 (N,)} raw measures before calibration: shape, symmetry,
      log_ratio, abnormal_logit, maxheat, area_right, area_left (pixels at mask_size).
    masks: uint8 (N, mask_size, mask_size) label maps, or None unless asked for.
    heatmaps: float32 (N, R, R) Grad-CAM maps in [0, 1] (R the classifier side), or None.
  """

  scores: dict[str, np.ndarray]
  features: np.ndarray
  valid: np.ndarray
  measures: dict[str, np.ndarray]
  masks: np.ndarray | None = None
  heatmaps: np.ndarray | None = None


class GenerationResult(NamedTuple):
  """Output of `Scorer.generate_and_score`: `ScoreResult` fields plus what was generated.

  Attributes:
    images: uint8 (N, G, G) generated radiographs (G the generator side), or None.
    z: float32 (N, latent_dim) latents (sample i uses `models.generator.latents(key, i)`).
    result: the `ScoreResult` of the images.
  """

  images: np.ndarray | None
  z: np.ndarray
  result: ScoreResult


def _device_mesh() -> Mesh | None:
  devices = jax.devices()
  return Mesh(np.asarray(devices), ("batch",)) if len(devices) > 1 else None


def _to_unit_square(images: Any) -> np.ndarray:
  """uint8 [0, 255] or float [0, 1] (N, S, S[, 1]) -> float32 (N, S, S, 1) in [0, 1], checked."""
  images = np.asarray(images)
  if images.ndim in (3, 4) and images.shape[0] == 0:
    return np.zeros(images.shape[:3] + (1,), np.float32)
  if images.ndim in (3, 4) and images.shape[1] != images.shape[2]:
    raise ValueError(f"score: expected square images, got {images.shape[1]}x{images.shape[2]}; pad them to a "
                     "centred square first (jaxcxr.data.load_folder does), they are never cropped")
  try:
    return as_unit_images(images)[..., None]
  except ValueError as e:
    raise ValueError(f"score: {e}") from e


def _replace_config(config: ScoringConfig, changes: dict[str, Any]) -> ScoringConfig:
  """`dataclasses.replace(config, **changes)`, ValueError (naming the fields) for an unknown field."""
  unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(ScoringConfig)})
  if unknown:
    raise ValueError(f"unknown ScoringConfig field(s) {unknown}; expected some of "
                     f"{[f.name for f in dataclasses.fields(ScoringConfig)]}")
  return dataclasses.replace(config, **changes)


def _result(out: dict) -> ScoreResult:
  return ScoreResult(scores=out["scores"], features=out["features"], valid=out["valid"], measures=out["measures"],
                     masks=out.get("masks"), heatmaps=out.get("heatmaps"))


class Scorer:
  """The post-filter: a U-Net, an abnormal classifier and their calibration.

  Build it with `load_scorer()` (shipped checkpoints) or from models and `calibrate`.
  Model states are split once; each batch is one call of a jitted pure function
  (the split-state path has a lower per-call overhead than `nnx.jit`).

  Examples:
    >>> scorer = load_scorer()                                  # doctest: +SKIP
    >>> result = scorer.score(dataset.images)                   # doctest: +SKIP
    >>> result.valid.mean(), result.scores["score_symmetry"][:3]  # doctest: +SKIP
  """

  def __init__(self, unet: UNet, classifier: Classifier, calibration: Calibration,
               config: ScoringConfig = ScoringConfig(), *, provenance: dict | None = None,
               reference: dict[str, Any] | None = None, levels: dict[str, float] | None = None,
               strictness: float = STANDARD_STRICTNESS):
    """Args: the models, the thresholds, the config; `provenance` (saved with the calibration);
    `reference` (raw measures of the calibration images, `REFERENCE_MEASURES`; None: fixed
    thresholds), `levels` (named strictness levels, "standard" always included) and the
    `strictness` q that `calibration` corresponds to."""
    atlas = np.asarray(calibration.atlas, np.float32)
    if atlas.shape != (2, config.atlas_size, config.atlas_size):
      raise ValueError(f"Scorer: calibration atlas has shape {atlas.shape}, the config expects "
                       f"(2, {config.atlas_size}, {config.atlas_size})")
    self.config = config
    self.unet = unet
    self.classifier = classifier
    self.calibration = Calibration(atlas, *(np.float32(getattr(calibration, n)) for n in THRESHOLD_NAMES))
    self.provenance = dict(provenance or {})
    if reference is not None:
      missing = set(REFERENCE_MEASURES) - set(reference)
      if missing:
        raise ValueError(f"Scorer: reference measures lack {sorted(missing)}")
      reference = {name: np.asarray(reference[name], np.float32) for name in REFERENCE_MEASURES}
    self.reference = reference
    self.levels = {"standard": STANDARD_STRICTNESS, **(levels or {})}
    self.strictness = float(strictness)
    u_def, u_state = split_with_dtype(unet, config.dtype)
    c_def, c_state = split_with_dtype(classifier, config.dtype)
    # What the jitted functions take (public for pipelines that fuse more work into the same call,
    # e.g. `sampling.sample_valid`, `prefilter.sample_valid_latent`): static graphdefs, device-resident states and
    # calibration.
    self.graphdefs = (u_def, c_def)
    self.mesh = _device_mesh()
    self.states = self.replicate((u_state, c_state))
    self.device_calibration = self.replicate(jax.tree.map(jnp.asarray, self.calibration))

  def replicate(self, tree):
    """Puts a pytree on every device (a no-op with one device)."""
    if self.mesh is None:
      return tree
    return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

  def _shard(self, array: np.ndarray) -> jax.Array:
    """Puts a batch on the devices, split along its first axis when several devices divide it."""
    if self.mesh is None or array.shape[0] % self.mesh.size:
      return jnp.asarray(array)
    return jax.device_put(array, NamedSharding(self.mesh, PartitionSpec("batch")))

  def with_config(self, **changes) -> Scorer:
    """A scorer with the same models and calibration and a changed config (e.g. dtype="bfloat16")."""
    return Scorer(self.unet, self.classifier, self.calibration, _replace_config(self.config, changes),
                  provenance=self.provenance, reference=self.reference, levels=self.levels,
                  strictness=self.strictness)

  @property
  def strictness_name(self) -> str:
    """The level name of the current strictness ("standard", "strict"), or the number q as text."""
    names = [name for name, q in self.levels.items() if np.isclose(q, self.strictness)]
    return names[0] if names else f"{self.strictness:g}"

  def at_strictness(self, strictness: str | float) -> Scorer:
    """The same scorer with thresholds at another strictness (no refit, no recompilation).

    Args:
      strictness: a level of `self.levels` ("standard", "strict") or a fraction q in
        `STRICTNESS_RANGE` of real normal calibration images that fail each score.

    Raises:
      ValueError: an unknown level or a q out of range; or a calibration without reference
        measures (made before strictness levels existed) asked for anything but its own thresholds.
    """
    q, calibration = self._calibration_at(strictness)
    if calibration is self.calibration:
      return self
    scorer = copy.copy(self)
    scorer.calibration = calibration
    scorer.device_calibration = self.replicate(jax.tree.map(jnp.asarray, calibration))
    scorer.strictness = q
    return scorer

  def _calibration_at(self, strictness: str | float) -> tuple[float, Calibration]:
    """(q, host thresholds) at a strictness; `self.calibration` itself at the current one. Raises as `at_strictness`."""
    q = resolve_strictness(strictness, self.levels)
    if np.isclose(q, self.strictness):
      return self.strictness, self.calibration
    if self.reference is None:
      raise ValueError(f"strictness {strictness!r}: this calibration stores fixed thresholds only (no reference "
                       "measures); run `jaxcxr calibrate` again to get strictness levels")
    return q, thresholds_at(self.reference, self.calibration.atlas, q)

  def with_level(self, name: str, strictness: float) -> Scorer:
    """The same scorer with one more named strictness level (e.g. "strict"), saved by `save`."""
    if name == "standard" or not name.isidentifier():
      raise ValueError(f"with_level: expected a new level name (not 'standard'), got {name!r}")
    q = resolve_strictness(float(strictness), {})
    scorer = copy.copy(self)
    scorer.levels = {**self.levels, name: q}
    return scorer

  def scores_at(self, measures: dict[str, Any], strictness: str | float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(scores {name: (N,)}, valid bool (N,)) of scored images (their `ScoreResult.measures`) at another
    strictness, on the host (no device work: bisections and reports call it many times)."""
    measures = {k: np.asarray(v) for k, v in measures.items()}
    if len({v.shape for v in measures.values()}) > 1 or any(v.ndim != 1 for v in measures.values()):
      shapes = {k: v.shape for k, v in measures.items()}
      raise ValueError(f"scores_at: expected measures of one shape (N,), got {shapes}")
    scores, valid = score_from_measures(measures, self._calibration_at(strictness)[1])
    return {k: np.asarray(v, np.float32) for k, v in scores.items()}, np.asarray(valid, bool)

  def valid_at(self, measures: dict[str, Any], strictness: str | float) -> np.ndarray:
    """bool (N,) validity of scored images (their `ScoreResult.measures`) at another strictness, on the host."""
    return self.scores_at(measures, strictness)[1]

  def score(self, images: Any, *, keep_maps: bool = False, progress: bool = False) -> ScoreResult:
    """Scores real or generated radiographs.

    Args:
      images: uint8 [0, 255] or float [0, 1] images (N, S, S) or (N, S, S, 1), NHWC, any
        square side S (resized to each model's side, never cropped).
      keep_maps: also return the label maps and Grad-CAM maps (memory: ~80 kB per image).
      progress: show a tqdm bar on stderr.

    Returns:
      `ScoreResult` with N rows.

    Raises:
      ValueError: non-square, wrongly typed, non-finite or out-of-range images.
    """
    out = map_batches(lambda x: score_images(self.graphdefs, self.states, self.device_calibration, x,
                                              config=self.config, keep_maps=keep_maps),
                      _to_unit_square(images), self.config.batch_size, fixed_shape=True, put=self._shard,
                      desc="score", progress=progress)
    return _result(out)

  def generate_and_score(self, generator: Generator, key: jax.Array, n: int, group: str, *, label: int = 0,
                         start: int = 0, keep_images: bool = True, keep_maps: bool = False,
                         progress: bool = False) -> GenerationResult:
    """Generates samples start .. start+n-1 of a group and scores them, one compiled call per batch.

    Sample i uses latent `models.generator.latents(key, i)` (so it does not depend on n,
    the batch size or the number of devices) and the group's condition row.

    Args:
      generator: a `Generator` (its compute dtype is set from the config too).
      key: PRNG key of the latents.
      n: number of samples.
      group: one of `data.GROUPS`.
      label: 0 normal / 1 abnormal (only for a label-conditioned generator).
      start: index of the first sample.
      keep_images: return the uint8 images.
      keep_maps: also return label maps and Grad-CAM maps.
      progress: tqdm bar on stderr.

    Returns:
      `GenerationResult`.

    Raises:
      jaxcxr.data.DataError: unknown group. ValueError: n or start not an integer >= 0, or a label the
        generator lacks.

    Examples:
      Every image, valid or not, with its scores (`jaxcxr.sample_valid` keeps the valid ones):

      >>> import jax, jaxcxr
      >>> pre = jaxcxr.load_pretrained(batch_size=4)                                          # doctest: +SKIP
      >>> out = pre.scorer.generate_and_score(pre.generator, jax.random.key(0), 8, "58_64f")  # doctest: +SKIP
      >>> out.images.shape, out.result.valid.mean(), out.result.scores["score_shape"]         # doctest: +SKIP
    """
    for name, value in (("n", n), ("start", start)):
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"generate_and_score: {name} must be an integer >= 0, got {value!r}")
    fn, states, cond = self._generation(generator, group, label, keep_images, keep_maps)
    out = map_batches(lambda index: fn(states, self.device_calibration, key, index, cond),
                      np.arange(start, start + n, dtype=np.int32), self.config.batch_size, fixed_shape=True,
                      put=self._shard, desc=f"generate {group}", progress=progress)
    return GenerationResult(out.get("images"), out["z"], _result(out))

  def generate_and_score_program(self, generator: Generator, key: jax.Array, group: str, *, label: int = 0,
                                 start: int = 0, keep_images: bool = True, keep_maps: bool = False) -> Program:
    """The compiled call `generate_and_score` makes for one batch, and its arguments.

    The batch is samples start .. start + `config.batch_size` - 1, placed (and sharded) as
    `generate_and_score` places them; `fn` is the library's own jitted call, so its compile
    cache is the one `generate_and_score` uses.

    Args:
      generator, key, group, label, start, keep_images, keep_maps: as `generate_and_score`.

    Returns:
      `Program(fn, args)`: `fn(states, calibration, key, index, cond)` with the states of
      the U-Net, the classifier and the generator, `device_calibration`, int32 sample
      indices (B,) and the condition rows (B, C) -> the batch's outputs: "z", "scores",
      "features", "valid", "measures", with `keep_images` "images" and with `keep_maps`
      "masks", "heatmaps".

    Raises:
      jaxcxr.data.DataError: unknown group. ValueError: start not an integer >= 0, or a label
        the generator lacks.

    Examples:
      >>> program = scorer.generate_and_score_program(generator, jax.random.key(0), "58_64f")  # doctest: +SKIP
      >>> compiled = program.fn.lower(*program.args).compile()                                 # doctest: +SKIP
    """
    if not isinstance(start, (int, np.integer)) or isinstance(start, bool) or start < 0:
      raise ValueError(f"generate_and_score_program: start must be an integer >= 0, got {start!r}")
    fn, states, cond = self._generation(generator, group, label, keep_images, keep_maps)
    index = self._shard(np.arange(start, start + self.config.batch_size, dtype=np.int32))
    return Program(fn, (states, self.device_calibration, key, index, cond))

  def _generation(self, generator: Generator, group: str, label: int, keep_images: bool, keep_maps: bool):
    """(the jitted call, the placed model states, the placed condition rows of one batch) of `generate_and_score`."""
    cfg = generator.config
    if "label" not in cfg.conditions and label != 0:
      raise ValueError(f"generate_and_score: this generator is not conditioned on the label; got label={label}")
    cond_row = group_condition_batch(group, 1, label, conditions=cfg.conditions)
    g_def, g_state = split_with_dtype(generator, self.config.dtype)
    fn = generate_and_score_fn((*self.graphdefs, g_def), self.config, keep_maps, keep_images)
    states = (*self.states, self.replicate(g_state))
    cond = self._shard(np.repeat(cond_row, self.config.batch_size, axis=0))
    return fn, states, cond

  def save(self, directory: str | os.PathLike) -> pathlib.Path:
    """Writes the calibration (`calibration.json`: config, thresholds at the current strictness,
    the strictness levels, provenance; `atlas.npz`; `reference_measures.npz`).

    The models stay in their own checkpoints; `provenance` names them and holds their
    `checkpoints.model_id`, which `load_scorer` checks.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    io_lib.save_npz(directory / ATLAS_FILE, {"atlas": np.asarray(self.calibration.atlas, np.float32)}, compressed=True)
    if self.reference is not None:
      io_lib.save_npz(directory / REFERENCE_FILE, self.reference, compressed=True)
    payload = {"config": dataclasses.asdict(self.config),
               "thresholds": {n: float(getattr(self.calibration, n)) for n in THRESHOLD_NAMES},
               "strictness": self.strictness,
               "levels": self.levels,
               "provenance": self.provenance}
    io_lib.save_json(directory / CALIBRATION_FILE, payload)
    return directory


def shipped_scoring() -> pathlib.Path:
  """The first shipped calibration folder of `checkpoints.SHIPPED_SCORING` present.

  Raises:
    jaxcxr.checkpoints.CheckpointError: none is there.
  """
  root = checkpoints.checkpoints_root()
  for name in checkpoints.SHIPPED_SCORING:
    if (root / name / CALIBRATION_FILE).is_file():
      return root / name
  raise checkpoints.CheckpointError(f"{root}: no shipped scoring calibration among "
                                    f"{', '.join(checkpoints.SHIPPED_SCORING)}; pass --scoring DIR or run "
                                    "`jaxcxr calibrate`")


def _read_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
  """The arrays of an npz file (no pickles); the handle is ours to close, as np.load leaks its own on a bad zip."""
  with open(path, "rb") as file, np.load(file, allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


def load_scorer(directory: str | os.PathLike | None = None, *, unet_dir: str | os.PathLike | None = None,
                classifier_dir: str | os.PathLike | None = None, strictness: str | float = "standard",
                **config_changes) -> Scorer:
  """Loads a calibrated scorer: calibration from `directory`, models from the checkpoints it names.

  Args:
    directory: a folder written by `Scorer.save`; default the shipped calibration
      (`checkpoints.SHIPPED_SCORING`, the first present).
    strictness: a level of the calibration ("standard", "strict") or a fraction q of real
      normal calibration images failing each score (`Scorer.at_strictness`).
    unet_dir, classifier_dir: override the model checkpoints named in the calibration
      (their `model_id` must still match: thresholds are only valid for those weights).
    **config_changes: ScoringConfig fields to change, e.g. batch_size=64, dtype="bfloat16"
      (mask_size, dilation and atlas_size are fixed by the calibration).

  Raises:
    jaxcxr.checkpoints.CheckpointError: missing or unreadable calibration, or models whose
      ids differ from those it was calibrated with.
  """
  directory = pathlib.Path(directory) if directory is not None else shipped_scoring()
  try:
    payload = json.loads((directory / CALIBRATION_FILE).read_text(encoding="utf-8"))
    atlas = np.asarray(_read_npz(directory / ATLAS_FILE)["atlas"], np.float32)
    reference = None
    if (directory / REFERENCE_FILE).exists():
      arrays = _read_npz(directory / REFERENCE_FILE)
      reference = {name: np.asarray(arrays[name], np.float32) for name in REFERENCE_MEASURES}
    config = ScoringConfig(**payload["config"])
    thresholds = [np.float32(payload["thresholds"][name]) for name in THRESHOLD_NAMES]
    provenance = payload.get("provenance", {})
    for role, override in (("unet", unet_dir), ("classifier", classifier_dir)):
      if not isinstance(provenance, dict) or (override is None and not isinstance(provenance.get(role), str)):
        raise KeyError(f"provenance.{role}: the {role} checkpoint it was calibrated with")
    levels = {name: float(q) for name, q in payload.get("levels", {}).items()}
    saved_strictness = float(payload.get("strictness", STANDARD_STRICTNESS))
  except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
    raise checkpoints.CheckpointError(f"{directory}: not a readable scoring calibration ({e})") from e
  fixed = {"mask_size", "dilation", "atlas_size"} & set(config_changes)
  if fixed:
    raise ValueError(f"load_scorer: {sorted(fixed)} are fixed by the calibration and cannot be changed")
  config = _replace_config(config, config_changes)
  models = {}
  for role, override, loader in (("unet", unet_dir, load_unet), ("classifier", classifier_dir, load_classifier)):
    path = pathlib.Path(override) if override is not None else checkpoints.checkpoints_root() / provenance[role]
    expected = provenance.get(f"{role}_id")
    if expected is not None and checkpoints.model_id(path) != expected:
      raise checkpoints.CheckpointError(f"{path}: {role} weights differ from those {directory} was calibrated "
                                        f"with (model id {checkpoints.model_id(path)} != {expected}); re-run "
                                        "calibration")
    models[role] = loader(path)
  try:
    scorer = Scorer(models["unet"], models["classifier"], Calibration(atlas, *thresholds), config,
                    provenance=provenance, reference=reference, levels=levels, strictness=saved_strictness)
  except ValueError as e:          # the calibration's parts do not fit together
    raise checkpoints.CheckpointError(f"{directory}: not a consistent scoring calibration ({e})") from e
  return scorer.at_strictness(strictness)
