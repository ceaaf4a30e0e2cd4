"""Sampling exactly k post-filter-valid images on device: the round loop and unfiltered sampling.

* `run_rounds`: the host loop of every sampler. It runs a compiled round (one call per
  round, same shapes every round) from a running latent index, telling it how many valid
  images are still needed, until `k` valid images are collected or a limit is hit, keeps
  the valid images in index order and assembles the result (counters, rates, progress lines).
* `finish_slots`: how every round finishes its slots (generates and post-scores them): in
  index order, a few at a time on a CPU, stopping once the valid images still needed are
  found (`jaxcxr.batching.in_chunks_until`), so that neither padding slots nor the slots
  after the last needed valid image are computed. `select_accepted` and `consumed_latents`
  are the static-shape selection of the pre-filtered rounds and where the next round starts. The pre-filtered samplers
  (`jaxcxr.prefilter.sample_valid_latent`, `jaxcxr.prefilter.cascade.sample_valid_cascade`) run
  their rounds through it too; `jaxcxr.prefilter.choice.resolve_sampler` picks one of the three.
* `SampleJournal`: a run's progress in its output folder (the kept images as PNGs, the
  counters), so that `run_rounds` killed at any moment resumes where it was and returns
  what an uninterrupted run returns (`jaxcxr sample` uses it).
* Unfiltered sampling (plain post-filtering): `sample_valid`, whose round
  (`UnfilteredRound`) generates and post-scores up to the next `batch_size` consecutive latent
  indices in one compiled call (`scoring.generate_and_score_batch` through `finish_slots`), and
  `warm_up_sampler` (compiles the round: a call that needs nothing computes nothing).
* The default limits of a run for k valid images: `default_max_generated` (images generated
  before giving up) and `default_max_rounds` (compiled rounds, for pre-filters that accept few).

Latent i is `models.generator.latents(key, i)` (`scoring.latents_at`), so the images do
not depend on the batch size: unfiltered sampling returns the first `k` valid indices.
Where the time of a run goes, and why a round stops early, is measured in
`benchmarks/suites/time_to_k_valid.py` (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from jaxcxr import io as io_lib
from jaxcxr import scoring
from jaxcxr.batching import default_chunk, in_chunks_until
from jaxcxr.models.condition import group_condition_batch
from jaxcxr.scoring import SCORE_NAMES

__all__ = [
    "PNG_COMPRESS_LEVEL",
    "SampleJournal",
    "TRACE_COUNTS",
    "UnfilteredRound",
    "check_label",
    "check_limits",
    "consumed_latents",
    "default_max_generated",
    "default_max_rounds",
    "finish_slots",
    "pool_size_for",
    "round_inputs",
    "run_rounds",
    "sample_valid",
    "select_accepted",
    "warm_up_sampler",
]

# The default give-up point of a run for k valid images: max(MIN_MAX_GENERATED, MAX_GENERATED_PER_VALID * k)
# generated images (200 per valid one allows a valid rate down to 0.5%).
MIN_MAX_GENERATED = 1000
MAX_GENERATED_PER_VALID = 200

# zlib level of the sampled PNGs (`SampleJournal.save_image`): a 256x256 radiograph in 3.1 ms and 26.0 kB at 4
# against 6.6 ms and 25.9 kB at PIL's default 6 (one core; 32 shipped-generator samples). At 6, writing the 32
# images of a pre-filtered run to 32 strict-valid ones took 4% of its 5 s (benchmarks/README.md).
PNG_COMPRESS_LEVEL = 4

# Number of traces (compilations) of `_generate_and_score_round`, for the no-recompile checks.
TRACE_COUNTS: dict[str, int] = {"generate_and_score_round": 0}


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_limits(k: int, max_rounds: int, max_generated: int | None = None) -> None:
  """Raises ValueError unless k >= 0, max_rounds >= 1 and max_generated (if given) >= 0 are integers (the
  messages name `sample_valid`)."""
  if not _is_int(k) or k < 0:
    raise ValueError(f"sample_valid: k must be an integer >= 0, got {k!r}")
  if not _is_int(max_rounds) or max_rounds < 1:
    raise ValueError(f"sample_valid: max_rounds must be an integer >= 1, got {max_rounds!r}")
  if max_generated is not None and (not _is_int(max_generated) or max_generated < 0):
    raise ValueError(f"sample_valid: max_generated must be None or an integer >= 0, got {max_generated!r}")


def default_max_generated(k: int) -> int:
  """The default limit of a run for `k` valid images: max(1000, 200 k) generated images.

  Raises:
    ValueError: k is not an integer >= 0.
  """
  if not _is_int(k) or k < 0:
    raise ValueError(f"default_max_generated: k must be an integer >= 0, got {k!r}")
  return max(MIN_MAX_GENERATED, MAX_GENERATED_PER_VALID * int(k))


def default_max_rounds(max_generated: int, accept_size: int) -> int:
  """Rounds allowed for `max_generated` images when each round has `accept_size` slots: ceil(ratio).

  A round whose pre-filter accepts nothing generates nothing but still draws and judges its
  pool, so bounding the rounds like the generated images stops such a run.

  Raises:
    ValueError: max_generated < 0 or accept_size < 1 (or not integers).
  """
  if not _is_int(max_generated) or max_generated < 0:
    raise ValueError(f"default_max_rounds: max_generated must be an integer >= 0, got {max_generated!r}")
  if not _is_int(accept_size) or accept_size < 1:
    raise ValueError(f"default_max_rounds: accept_size must be an integer >= 1, got {accept_size!r}")
  return max(1, -(-int(max_generated) // int(accept_size)))


def check_label(generator, label: int) -> None:
  """Raises ValueError for label != 0 with a generator that is not conditioned on the label."""
  if "label" not in generator.config.conditions and label != 0:
    raise ValueError(f"sample_valid: this generator is not conditioned on the label; got label={label}")


def round_inputs(scorer, generator, key: jax.Array, group: str, label: int, batch_size: int) -> dict[str, Any]:
  """What every compiled sampling round takes, split and placed on device once.

  Args:
    scorer: the `jaxcxr.scoring.Scorer` (post-filter).
    generator: the `Generator` (computing in the scorer's dtype).
    key: PRNG key of the latents.
    group: age-sex group (its condition row).
    label: 0 normal / 1 abnormal condition.
    batch_size: images generated per round.

  Returns:
    {"models": (U-Net, classifier, generator) graphdefs, "states": their device states,
    "calibration": the scorer's device calibration, "batch_sharding": a `NamedSharding` of the
    batch over the scorer's mesh (None without a mesh or when the mesh does not divide
    `batch_size`), "cond": (batch_size, n_conditions) condition rows, "key": key}.

  Raises:
    jaxcxr.data.DataError: unknown group.
  """
  g_def, g_state = scoring.split_with_dtype(generator, scorer.config.dtype)
  mesh = scorer.mesh
  return {"models": (*scorer.graphdefs, g_def), "states": (*scorer.states, scorer.replicate(g_state)),
          "calibration": scorer.device_calibration,
          "batch_sharding": (None if mesh is None or batch_size % mesh.size else
                             jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))),
          "cond": jnp.asarray(group_condition_batch(group, batch_size, label,
                                                    conditions=generator.config.conditions)),
          "key": key}


class SampleJournal:
  """The progress of one sampling run kept in its output folder, so that a killed run resumes exactly.

  After each round `run_rounds` calls `record`: the round's kept images are written as
  `PREFIX_IIIII.png` (I the image's rank among the kept ones, the file names of `jaxcxr
  sample`), then the counters and the z, latent index and scores of every kept image so far
  (`PROGRESS_FILE`, an npz), each file atomically. `restore` reads them back, the images
  from the PNGs (lossless), and `run_rounds` continues from the saved latent counter. A round
  is a function of its start index alone, so the resumed run returns what an uninterrupted
  one returns (the "seconds" of both runs added up).
  """

  PROGRESS_FILE = ".jaxcxr_sample_progress.npz"

  def __init__(self, folder: str | os.PathLike, prefix: str):
    self.folder = pathlib.Path(folder)
    self.prefix = prefix
    self._kept: dict[str, Any] | None = None

  def image_path(self, i: int) -> pathlib.Path:
    """The PNG of the i-th kept image."""
    return self.folder / f"{self.prefix}_{i:05d}.png"

  def save_image(self, i: int, image: np.ndarray) -> pathlib.Path:
    """Writes the i-th kept image, uint8 (G, G), as its PNG (`PNG_COMPRESS_LEVEL`), atomically."""
    return io_lib.save_png(self.image_path(i), image, compress_level=PNG_COMPRESS_LEVEL)

  def restore(self) -> dict[str, Any] | None:
    """{"counters": {...}, "kept": {"images", "z", "index", "scores"}} saved by `record`, or None."""
    path = self.folder / self.PROGRESS_FILE
    if not path.is_file():
      return None
    with np.load(path, allow_pickle=False) as saved:
      # n_slots and n_judged are absent from the progress files of earlier versions: 0 there.
      counters = {name: int(saved[name]) if name in saved.files else 0 for name in _COUNTERS}
      counters["seconds"] = float(saved["seconds"])
      self._kept = {"z": saved["z"], "index": saved["index"],
                    "scores": {name: saved[f"score_{name}"] for name in SCORE_NAMES}}
    images = [np.asarray(Image.open(self.image_path(i))) for i in range(counters["n_kept"])]
    return {"counters": counters, "kept": {**self._kept, "images": np.stack(images) if images else None}}

  def record(self, counters: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Writes the round's newly kept images (from rank counters["n_kept"] - len(new images)), then the progress."""
    first = int(counters["n_kept"]) - len(new["images"])
    for i, image in enumerate(new["images"]):
      self.save_image(first + i, image)
    new = {k: new[k] for k in ("z", "index", "scores")}
    self._kept = new if self._kept is None else jax.tree.map(lambda *parts: np.concatenate(parts), self._kept, new)
    io_lib.save_npz(self.folder / self.PROGRESS_FILE, {
        **{name: np.asarray(counters[name], np.int64) for name in _COUNTERS},
        "seconds": np.asarray(counters["seconds"], np.float64), "z": self._kept["z"], "index": self._kept["index"],
        **{f"score_{n}": self._kept["scores"][n] for n in SCORE_NAMES}})

  def finish(self) -> None:
    """Removes the progress file (the run is complete; the PNGs stay)."""
    (self.folder / self.PROGRESS_FILE).unlink(missing_ok=True)


_COUNTERS = ("n_kept", "n_drawn", "n_generated", "n_valid_seen", "rounds", "n_slots", "n_judged")


def run_rounds(round_fn: Callable[[int, int], Mapping[str, Any]], k: int, group: str, *, resolution: int,
               latent_dim: int, pool_size: int, accept_size: int, max_rounds: int = 10_000,
               max_generated: int | None = None, progress: bool = False,
               journal: SampleJournal | None = None) -> dict[str, Any]:
  """Runs compiled rounds from latent index 0 until `k` valid images are collected or a limit is hit.

  Each round is `round_fn(start, need)`, need = the valid images still wanted (the round may
  stop once it has found them); the next round starts at `start + consumed`, and is
  dispatched before the host writes the previous round's images, so that on an accelerator
  (or a CPU with cores to spare) it computes meanwhile. The host only collects valid images
  (in the round's slot order, the index order) and stops at `k`. With a `journal`, the
  progress is saved after each round and a saved one is continued.

  Args:
    round_fn: callable(start: int, need: int) -> mapping of (device) arrays for the latents from
      index `start` on: "images" uint8 (A, G, G), "z" float32 (A, latent_dim), "index" int (A,),
      "scores" {name: float32 (A,)}, "valid" bool (A,) (False on slots not generated),
      "slot_used" bool (A,) (the slots generated), "consumed" int (latents used up: the next
      round starts after them), "computed" int (images computed, a padding slot in the last
      chunk included), "judged" int (latents the pre-filter judged: 0 without one).
    k: valid images wanted (>= 0).
    group: age-sex group (for the progress lines).
    resolution: G, the image side (for an empty result).
    latent_dim: width of z (for an empty result).
    pool_size: latents drawn per round (reported).
    accept_size: A, the slots of a round.
    max_rounds: give up after this many rounds.
    max_generated: give up once this many images were generated (default no limit).
    progress: one line per round on stderr.
    journal: a `SampleJournal` to save the progress to after each round and to resume from.

  Returns:
    The dict `sample_valid` documents.

  Raises:
    ValueError: k < 0, max_rounds < 1 or max_generated < 0 (or not integers).
  """
  check_limits(k, max_rounds, max_generated)
  t0 = time.perf_counter()
  kept: list[dict] = []
  n_kept = n_drawn = n_generated = n_valid_seen = rounds = n_slots = n_judged = 0
  previous_seconds = round_seconds = 0.0
  saved = journal.restore() if journal is not None else None
  if saved is not None:
    n_kept, n_drawn, n_generated, n_valid_seen, rounds, n_slots, n_judged = (saved["counters"][name]
                                                                             for name in _COUNTERS)
    previous_seconds = saved["counters"]["seconds"]
    if n_kept:
      kept.append(saved["kept"])
    if progress:
      print(f"sample {group}: resumed at round {rounds}, {n_kept}/{k} valid", file=sys.stderr, flush=True)
  more = lambda: n_kept < k and rounds < max_rounds and (max_generated is None or n_generated < max_generated)
  pending = round_fn(n_drawn, k - n_kept) if more() else None
  while pending is not None:
    t_round = time.perf_counter()
    out = jax.device_get(pending)
    round_seconds += time.perf_counter() - t_round
    rounds += 1
    n_drawn += int(out["consumed"])
    n_generated += int(out["slot_used"].sum())
    n_slots += int(out["computed"])
    n_judged += int(out["judged"])
    valid = np.flatnonzero(out["valid"])
    n_valid_seen += valid.size
    take = valid[: k - n_kept]
    kept.append({"images": out["images"][take], "z": out["z"][take], "index": out["index"][take],
                 "scores": {name: v[take] for name, v in out["scores"].items()}})
    n_kept += take.size
    # The next round is dispatched before this one's images are written (asynchronously: it computes meanwhile).
    t_round = time.perf_counter()
    pending = round_fn(n_drawn, k - n_kept) if more() else None
    round_seconds += time.perf_counter() - t_round
    if journal is not None:
      counters = dict(zip(_COUNTERS, (n_kept, n_drawn, n_generated, n_valid_seen, rounds, n_slots, n_judged)))
      journal.record({**counters, "seconds": previous_seconds + time.perf_counter() - t0}, kept[-1])
    if progress:
      print(f"sample {group}: round {rounds}, {n_kept}/{k} valid, {n_generated} generated of {n_drawn} latents "
            f"drawn", file=sys.stderr, flush=True)
  seconds = previous_seconds + time.perf_counter() - t0
  merged = (jax.tree.map(lambda *parts: np.concatenate(parts), *kept) if kept else
            {"images": np.zeros((0, resolution, resolution), np.uint8),
             "z": np.zeros((0, latent_dim), np.float32), "index": np.zeros((0,), np.int32),
             "scores": {name: np.zeros((0,), np.float32) for name in SCORE_NAMES}})
  return {**merged, "n_valid": int(n_kept), "n_latents_drawn": int(n_drawn), "n_generated": int(n_generated),
          "n_valid_seen": int(n_valid_seen), "n_rounds": rounds,
          "seconds": float(seconds), "round_seconds": float(round_seconds),
          "valid_rate": n_valid_seen / n_generated if n_generated else 0.0,
          "acceptance_rate": n_generated / n_drawn if n_drawn else 0.0,
          "generated_per_valid": n_generated / n_valid_seen if n_valid_seen else float("inf"),
          "complete": n_kept == k, "pool_size": pool_size, "accept_size": accept_size,
          "n_slots": int(n_slots), "n_judged": int(n_judged)}


# ----------------------------------------------------------------------------- the parts of a round


def finish_slots(fn: Callable[..., Mapping[str, jax.Array]], *args: Any, limit: jax.Array | int,
                 need: jax.Array | int) -> tuple[dict[str, jax.Array], jax.Array, jax.Array, jax.Array]:
  """Generates and post-scores a round's slots in order until `need` valid images are found (inside a trace).

  The first `limit` slots are the real ones (the rest pad the static shape). They run
  `batching.default_chunk()` at a time (a CPU; one call of all of them elsewhere) and stop
  after the chunk holding the `need`-th valid image: a slot not computed costs nothing, so
  padding slots and the slots after the last image a run needs take no time.

  Args:
    fn: (per-slot arguments of a chunk) -> {"valid": bool (c,), ...}, each slot's output from
      that slot alone (`scoring.generate_and_score_batch` and the like).
    *args: its arguments, every leaf with the slots (A) as first axis.
    limit: real slots (traced int <= A).
    need: valid images still wanted (traced int); 0 computes nothing (a warm-up).

  Returns:
    (fn's outputs with "valid" False on slots not used, slot_used bool (A,) (the first
    `finished` slots), finished int32 (slots generated: used), computed int32 (slots computed,
    a padding slot of the last chunk included)).
  """
  n = jax.tree.leaves(args)[0].shape[0]
  out, computed = in_chunks_until(fn, *args, chunk=default_chunk(), limit=limit, target=need,
                                  count=lambda o, position: (o["valid"] & (position < limit)).sum())
  finished = jnp.minimum(computed, limit)
  slot_used = jnp.arange(n, dtype=jnp.int32) < finished
  return {**out, "valid": out["valid"] & slot_used}, slot_used, finished, jnp.minimum(computed, n)


def select_accepted(accepted: jax.Array, accept_size: int) -> tuple[jax.Array, jax.Array]:
  """The slots of a filtered round with static shapes (inside a traced function).

  The first `accept_size` accepted positions of the pool in index order fill the slots
  (`lax.top_k` of -(position, + pool_size if rejected)); a pool with fewer fills the rest
  with rejected positions (padding slots, never generated: `finish_slots`' limit).

  Args:
    accepted: bool (P,) over the pool, in latent-index order.
    accept_size: A, slots per round (<= P).

  Returns:
    (chosen int32 (A,) pool positions, n_accepted int32: accepted latents in the pool).
  """
  pool_size = accepted.shape[0]
  position = jnp.arange(pool_size, dtype=jnp.int32)
  rank = jnp.where(accepted, position, pool_size + position)         # accepted first, each kind in index order
  _, chosen = jax.lax.top_k(-rank, accept_size)                      # (A,) positions, ascending rank
  return chosen.astype(jnp.int32), accepted.sum().astype(jnp.int32)


def consumed_latents(chosen: jax.Array, n_accepted: jax.Array, finished: jax.Array, judged: jax.Array) -> jax.Array:
  """Latents a filtered round used up, so that the next round starts at the first accepted one it left over.

  Args:
    chosen: int32 (A,) pool positions of the slots (`select_accepted`).
    n_accepted: accepted latents among the judged ones.
    finished: slots generated (the first ones of `chosen`).
    judged: pool latents judged (from the start of the pool).

  Returns:
    int32: up to and including the last finished latent when accepted ones are left unfinished,
    else every judged latent (the unfinished ones among them were all rejected).
  """
  last = jnp.where(finished > 0, chosen[jnp.maximum(finished - 1, 0)] + 1, chosen[0])
  return jnp.where(finished < n_accepted, last, judged).astype(jnp.int32)


def pool_size_for(accept_size: int, acceptance: float | None) -> int:
  """Latents per filtered round: accept_size x ceil(2 / acceptance), at most 32x (an unknown rate counts as 1/32).

  A pool then usually holds twice the accepted latents a round needs.

  Raises:
    ValueError: accept_size < 1, or an acceptance outside [0, 1].
  """
  if not _is_int(accept_size) or accept_size < 1:
    raise ValueError(f"accept_size must be an integer >= 1, got {accept_size!r}")
  if acceptance is not None and not 0.0 <= acceptance <= 1.0:   # also refuses NaN
    raise ValueError(f"pool_size_for: acceptance must be None or a fraction in [0, 1], got {acceptance!r}")
  acceptance = acceptance or 1.0 / 32
  return accept_size * min(32, max(1, math.ceil(2.0 / max(acceptance, 1.0 / 32))))


# ----------------------------------------------------------------------------- unfiltered sampling


@functools.partial(jax.jit, static_argnames=("models", "config", "batch_size", "batch_sharding"))
def _generate_and_score_round(models, states, calibration, key, start, need, cond, *, config, batch_size,
                              batch_sharding):
  """One round of unfiltered sampling in one compiled call (shapes static in every round).

  models/states: (U-Net, classifier, generator). Latent indices start .. start+batch_size-1
  give z (`latents`), generated and post-scored in order until `need` valid images are found
  (`finish_slots`); the round consumes the latents it generated.
  """
  TRACE_COUNTS["generate_and_score_round"] += 1          # runs at trace time only
  latent_dim = nnx.merge(models[2], states[2]).config.latent_dim
  index = start + jnp.arange(batch_size, dtype=jnp.int32)                                # (B,)
  z = scoring.latents_at(key, index, latent_dim)                                         # (B, D)
  if batch_sharding is not None:
    z = jax.lax.with_sharding_constraint(z, batch_sharding)
  out, slot_used, finished, computed = finish_slots(
      lambda z, cond: scoring.generate_and_score_batch(models, states, calibration, z, cond, config, keep_maps=False),
      z, cond, limit=batch_size, need=need)
  return {"images": out["images"], "z": z, "index": index, "scores": out["scores"], "valid": out["valid"],
          "slot_used": slot_used, "consumed": finished, "computed": computed, "judged": jnp.int32(0)}


class UnfilteredRound:
  """Everything constant across rounds of unfiltered sampling, split once; `__call__(start, need)` runs one round."""

  def __init__(self, scorer, generator, key: jax.Array, group: str, label: int, batch_size: int):
    check_label(generator, label)
    if not _is_int(batch_size) or batch_size < 1:
      raise ValueError(f"sample_valid: batch_size must be an integer >= 1, got {batch_size!r}")
    inputs = round_inputs(scorer, generator, key, group, label, batch_size)
    self.models, self.states, self.calibration = inputs["models"], inputs["states"], inputs["calibration"]
    self.batch_sharding, self.cond, self.key = inputs["batch_sharding"], inputs["cond"], inputs["key"]
    self.static = {"config": scorer.config, "batch_size": batch_size}

  def __call__(self, start: int, need: int) -> dict[str, Any]:
    return _generate_and_score_round(self.models, self.states, self.calibration, self.key, jnp.int32(start),
                                     jnp.int32(need), self.cond, batch_sharding=self.batch_sharding, **self.static)


def warm_up_sampler(scorer, generator, key: jax.Array, group: str, *, label: int = 0,
                    batch_size: int | None = None) -> float:
  """Compiles `sample_valid`'s round; returns its seconds.

  The call needs no valid image, so it computes nothing: the seconds are the compilation (or
  its load from the persistent compilation cache, `jaxcxr.compilation_cache`).
  """
  batch_size = batch_size if batch_size is not None else scorer.config.batch_size
  caller = UnfilteredRound(scorer, generator, key, group, label, batch_size)
  t0 = time.perf_counter()
  jax.block_until_ready(caller(0, 0))
  return time.perf_counter() - t0


def sample_valid(scorer, generator, key: jax.Array, k: int, group: str, *, label: int = 0,
                 batch_size: int | None = None, max_rounds: int = 10_000, max_generated: int | None = None,
                 progress: bool = False, journal: SampleJournal | None = None) -> dict[str, Any]:
  """Post-filtered sampling without a pre-filter: exactly `k` valid images, the first valid latent indices.

  Each round is ONE compiled call (same shapes every round, so it compiles once per
  configuration): generate and post-score the next `batch_size` latent indices
  (`models.generator.latents(key, i)`, indices from a running counter so no z repeats), in
  order, stopping once the valid images still needed are found (`finish_slots`: the last
  round computes only what the run needs). The returned images are the first `k` valid
  indices, whatever the batch size; the host only collects valid images and stops at `k`.
  The same images come from `jaxcxr.prefilter.sample_valid_latent` with a pre-filter that
  accepts every latent.

  Args:
    scorer: a `jaxcxr.scoring.Scorer` (post-filter).
    generator: a `Generator`.
    key: PRNG key of the latents.
    k: valid images wanted (>= 0).
    group: age-sex group.
    label: 0 normal / 1 abnormal condition.
    batch_size: images generated and scored per round (default the scorer's batch size).
    max_rounds: give up after this many rounds.
    max_generated: give up once this many images were generated (default no limit).
    progress: one line per round on stderr.
    journal: a `SampleJournal`: save the progress after each round, resume a saved one.

  Returns:
    {"images": uint8 (n_valid, G, G) valid images in index order, "z": float32 (n_valid,
    latent_dim), "index" int (n_valid,) latent indices, "scores" {name: float32 (n_valid,)}
    (all > 0), "n_valid" (= k unless a limit was hit), "n_latents_drawn" (latents
    considered), "n_generated" (images generated; = n_latents_drawn here), "n_valid_seen"
    (valid among them, including any beyond k), "n_rounds", "seconds" (wall time, rounds
    only), "round_seconds" (the part of it spent dispatching the compiled rounds and waiting
    for their results; the rest is host work not overlapped with a round: collecting, the
    journal, progress), "valid_rate" (n_valid_seen / n_generated),
    "acceptance_rate" (n_generated / n_latents_drawn: 1 here), "generated_per_valid"
    (n_generated / n_valid_seen), "complete" (n_valid == k), "pool_size" and "accept_size"
    (both = batch_size), "n_slots" (images computed: = n_generated here), "n_judged" (latents
    a pre-filter judged: 0 here)}.

  Raises:
    ValueError: k < 0, max_rounds < 1, batch_size < 1, a label the generator lacks.
    jaxcxr.data.DataError: unknown group.

  Examples:
    Two valid images of women aged 58-64 from the shipped models (`jaxcxr.load_pretrained`):

    >>> import jax
    >>> import jaxcxr
    >>> pre = jaxcxr.load_pretrained(batch_size=4)
    >>> found = sample_valid(pre.scorer, pre.generator, jax.random.key(0), 2, "58_64f")
    >>> found["images"].shape, found["images"].dtype, found["z"].shape, found["complete"]
    ((2, 256, 256), dtype('uint8'), (2, 128), True)
    >>> sorted(found["scores"]) == sorted(SCORE_NAMES)
    True
    >>> bool(found["index"][0] < found["index"][1]) and found["n_generated"] >= 2
    True
  """
  check_limits(k, max_rounds, max_generated)
  batch_size = batch_size if batch_size is not None else scorer.config.batch_size
  caller = UnfilteredRound(scorer, generator, key, group, label, batch_size)
  return run_rounds(caller, k, group, resolution=generator.config.resolution, latent_dim=generator.config.latent_dim,
                    pool_size=batch_size, accept_size=batch_size, max_rounds=max_rounds,
                    max_generated=max_generated, progress=progress, journal=journal)
