"""Running a compiled function over host arrays in fixed-size batches.

Every batched inference entry point of jaxcxr (U-Net masks, classifier logits and
features, Grad-CAM, the post-filter's `Scorer`, the anomaly scorers) goes through
`map_batches`: the arrays are cut into batches of one static size (the last one
padded by repeating its last row, so padding never feeds blank images to a model
and never triggers a second compilation), the function runs once per batch, and the
real rows are copied back to the host and concatenated.

Inside a compiled function, `in_chunks` runs a batch of independent items a few at a time
(`default_chunk`), and `in_chunks_until` does so in order and stops early: after the first
`limit` items, or once a count over the outputs (e.g. valid images) reaches a target, so
that a sampling round computes only the items it needs.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm


def map_batches(fn: Callable[[Any], Any], arrays: Any, batch_size: int, *, fixed_shape: bool = False,
                put: Callable[[np.ndarray], Any] | None = None, desc: str | None = None,
                progress: bool = False) -> Any:
  """`fn` over fixed-size batches of host arrays; returns its outputs for the real rows, on the host.

  Args:
    fn: maps a pytree of (batch_size, ...) arrays (the structure of `arrays`) to a pytree of
      arrays whose first axis is the batch (typically a jitted function).
    arrays: a pytree (an array, a dict, ...) of host arrays with a common first dimension N.
    batch_size: rows per call (the static batch shape `fn` sees), capped at N unless `fixed_shape`.
    fixed_shape: always call `fn` with `batch_size` rows, padding even when N < batch_size, so that
      every N shares one compilation (for functions called again and again with varying N).
    put: moves each batch leaf to the device(s) (e.g. a sharded `jax.device_put`); default
      `jax.numpy.asarray`.
    desc: tqdm label; with `progress` a bar is shown on stderr.
    progress: show a tqdm bar.

  Returns:
    `fn`'s output pytree with numpy leaves of N rows. With N = 0, `fn` is not run: its output
    shapes come from `jax.eval_shape` on one batch, and the leaves are empty (0, ...) arrays.

  Raises:
    ValueError: batch_size <= 0 or leaves with different first dimensions.
  """
  if batch_size <= 0:
    raise ValueError(f"map_batches: batch_size must be positive, got {batch_size}")
  leaves, treedef = jax.tree.flatten(arrays)
  leaves = [np.asarray(leaf) for leaf in leaves]
  sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(f"map_batches: expected arrays with a common first dimension, got shapes "
                     f"{[leaf.shape for leaf in leaves]}")
  n = sizes.pop()
  put = put or jax.numpy.asarray
  batch_size = int(batch_size) if fixed_shape else min(int(batch_size), max(n, 1))
  if n == 0:
    spec = treedef.unflatten([jax.ShapeDtypeStruct((batch_size,) + leaf.shape[1:], leaf.dtype) for leaf in leaves])
    return jax.tree.map(lambda s: np.zeros((0,) + s.shape[1:], s.dtype), jax.eval_shape(fn, spec))
  starts = range(0, n, batch_size)
  if progress:
    starts = tqdm(starts, desc=desc, unit="batch", file=sys.stderr, leave=False)
  parts = []
  for start in starts:
    count = min(batch_size, n - start)
    batch = [np.concatenate([leaf[start: start + count], np.repeat(leaf[start + count - 1: start + count],
                                                                   batch_size - count, axis=0)])
             for leaf in leaves]
    out = jax.device_get(fn(treedef.unflatten([put(b) for b in batch])))
    parts.append(jax.tree.map(lambda v, count=count: np.asarray(v)[:count], out))
  return jax.tree.map(lambda *p: np.concatenate(p), *parts)


def _cpu_chunk(value: str) -> int | None:
  """$JAXCXR_CPU_CHUNK: a positive integer, or "none" for whole batches."""
  if value.strip().lower() == "none":
    return None
  if not value.strip().isdigit() or int(value) < 1:
    raise ValueError(f"JAXCXR_CPU_CHUNK: expected a positive integer or 'none', got {value!r}")
  return int(value)


# On a CPU, the items of a batch run fastest a few at a time: one chunk's activations stay in
# the caches through a whole network, where a large batch streams every layer's activations
# through memory. Measured with `python -m benchmarks.cpu_paths` on the project's 2-core Xeon
# (benchmarks/README.md, benchmarks/results/cpu_paths_2026-11-29_cpu.jsonl): the shipped
# generate-and-score call at batch 32 1.37x faster on one core. Not used by the AnoGAN search,
# whose 64x64 chunks were 1.12x faster on one core but slower on two (that two-core run is not
# recorded). Accelerators want the whole batch at once.
# $JAXCXR_CPU_CHUNK overrides it (read at import); `cpu_chunk` changes it for a block.
CPU_CHUNK = _cpu_chunk(os.environ.get("JAXCXR_CPU_CHUNK", "2"))


@contextlib.contextmanager
def cpu_chunk(chunk: int | None) -> Iterator[None]:
  """Sets `CPU_CHUNK` inside the block: the chunk size `default_chunk` gives on one CPU device.

  A process-wide setting, read when a function is traced (as `jaxcxr.models.layers.conv_path`):
  entering and leaving the block clears JAX's in-memory compilation caches when the value
  changes, so a jitted function called inside the block is traced again with it. None runs
  whole batches, as on an accelerator (`python -m benchmarks.run --gpu-dry-run` uses it).

  Args:
    chunk: items per chunk (>= 1), or None for no chunks.

  Raises:
    ValueError: a chunk that is neither None nor a positive integer.
  """
  if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
    raise ValueError(f"cpu_chunk: expected a positive integer or None, got {chunk!r}")
  previous = CPU_CHUNK
  _set_cpu_chunk(chunk)
  try:
    yield
  finally:
    _set_cpu_chunk(previous)


def _set_cpu_chunk(chunk: int | None) -> None:
  global CPU_CHUNK
  if chunk != CPU_CHUNK:
    CPU_CHUNK = chunk
    jax.clear_caches()


def usable_cores() -> int:
  """The CPU cores this process may run on: its affinity mask (e.g. after `taskset`), else `os.cpu_count()`."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def default_chunk() -> int | None:
  """Items per sequential chunk inside a compiled call: `CPU_CHUNK` on one CPU device, else None (no chunks).

  Several devices share a batch by sharding it; chunks would cut across the shards.
  """
  return CPU_CHUNK if jax.default_backend() == "cpu" and jax.device_count() == 1 else None


def in_chunks(fn: Callable[..., Any], *args: Any, chunk: int | None) -> Any:
  """`fn(*args)` for a batch of independent items, computed `chunk` items at a time (inside a trace).

  Every leaf of `args` has the batch as its first axis; `fn` maps a batch to a pytree whose
  leaves have it too, and each item's output depends on that item only (no batch
  statistics), so the result equals `fn(*args)` up to float rounding. The chunks run one
  after another in the same compiled program (`lax.map`); the largest divisor of the batch
  not above `chunk` is used, so there is no padding.

  Args:
    fn: the per-batch function.
    *args: its batched arguments (pytrees).
    chunk: items per chunk; None, or at least the batch, calls `fn` once on everything.
  """
  n = jax.tree.leaves(args)[0].shape[0]
  size = _chunk_size(n, chunk)
  if size == n:
    return fn(*args)
  split = jax.tree.map(lambda a: a.reshape((n // size, size) + a.shape[1:]), args)
  out = jax.lax.map(lambda a: fn(*a), split)
  return jax.tree.map(lambda a: a.reshape((n,) + a.shape[2:]), out)


def _chunk_size(n: int, chunk: int | None) -> int:
  """The largest divisor of n not above chunk (n itself for None or chunk >= n)."""
  if chunk is None or chunk >= n:
    return n
  return max(d for d in range(1, chunk + 1) if n % d == 0)


def in_chunks_until(fn: Callable[..., Any], *args: Any, chunk: int | None, limit: jax.Array | int,
                    target: jax.Array | int, count: Callable[[Any, jax.Array], jax.Array]) -> tuple[Any, jax.Array]:
  """`fn` over the items of a batch `chunk` at a time, in order, stopping early (inside a trace).

  As `in_chunks` (same chunks, same results for the items computed), but the chunks run in
  a `lax.while_loop` that stops before a chunk starting at or after item `limit`, and after
  the chunk where the running total of `count(chunk output, item positions)` reaches
  `target`. Items not computed cost nothing and their outputs are zeros. With one chunk
  (chunk None or >= the batch; what several devices or an accelerator get) it is one call of
  `fn` on the whole batch, skipped when limit or target is <= 0 (a `lax.cond`, so that a
  sharded batch stays sharded).

  Args:
    fn: the per-batch function (each item's output depends on that item only).
    *args: its batched arguments (pytrees whose leaves share the batch as first axis, N).
    chunk: items per chunk (the largest divisor of N not above it); None: one chunk.
    limit: items from the start to compute at most (traced int; the last chunk may pass it).
    target: stop once the count reaches it (traced int); <= 0 computes nothing.
    count: (one chunk's outputs, int32 (chunk,) item positions) -> int32 scalar added to the total.

  Returns:
    (fn's outputs for all N items, zeros where not computed; int32 items computed, whole chunks:
    a multiple of the chunk size, at most N).
  """
  n = jax.tree.leaves(args)[0].shape[0]
  size = _chunk_size(n, chunk)
  limit, target = jnp.asarray(limit, jnp.int32), jnp.asarray(target, jnp.int32)
  if size == n:
    run = (limit > 0) & (target > 0)
    shapes = jax.eval_shape(fn, *args)
    out = jax.lax.cond(run, lambda a: fn(*a), lambda a: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
                       args)
    return out, jnp.where(run, n, 0).astype(jnp.int32)
  m = n // size
  split = jax.tree.map(lambda a: a.reshape((m, size) + a.shape[1:]), args)
  one = lambda i: jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), split)
  shapes = jax.eval_shape(lambda a: fn(*a), one(0))
  buffers = jax.tree.map(lambda s: jnp.zeros((m,) + s.shape, s.dtype), shapes)

  def keep_going(state):
    i, total, _ = state
    return (i < m) & (i * size < limit) & (total < target)

  def step(state):
    i, total, buffers = state
    out = fn(*one(i))
    position = i * size + jnp.arange(size, dtype=jnp.int32)
    buffers = jax.tree.map(lambda b, o: jax.lax.dynamic_update_index_in_dim(b, o, i, 0), buffers, out)
    return i + 1, total + count(out, position).astype(jnp.int32), buffers

  i, _, buffers = jax.lax.while_loop(keep_going, step, (jnp.int32(0), jnp.int32(0), buffers))
  return jax.tree.map(lambda b: b.reshape((n,) + b.shape[2:]), buffers), i * size
