"""Timing, roofline and record helpers shared by every benchmark suite (`python -m benchmarks.run`).

One measurement is one flat JSON record (`record`): what ran (`suite`, `name`, `peer`,
`dtype`, `batch`), where (`context`: device, library versions, CPU), its compile time
kept apart from the steady state (`compile_s`; `median_s` and `min_s` over `repeats`
timed runs, each ended by `jax.block_until_ready` or a CUDA synchronise), its
`throughput` with `throughput_unit`, and where known the work per item from XLA's cost
analysis (`flops_per_item`), the achieved rate (`achieved_gflops`) and its share of the
matmul peak measured in the same run (`fraction_of_peak`).

XLA's cost analysis counts the body of a `lax.scan` (a while loop) once, whatever its
trip count, so suites of scanned work (the AnoGAN search, multi-step training) cost one
step as its own function and multiply.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import statistics
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcxr import batching

SCHEMA_VERSION = 1

# Every record has these keys (the schema test checks them); the others are suite-specific.
REQUIRED_KEYS = ("schema", "suite", "name", "peer", "device", "platform", "jax", "flax", "dtype", "batch",
                 "compile_s", "median_s", "min_s", "repeats", "throughput", "throughput_unit")


@dataclasses.dataclass(frozen=True)
class Timing:
  """Compile seconds (None where nothing compiled) and steady-state seconds of one call."""
  compile_s: float | None
  median_s: float
  min_s: float
  repeats: int


def cpu_model() -> str:
  """The CPU's model name (Linux /proc/cpuinfo), else `platform.processor()`."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def _package_version(name: str) -> str | None:
  """An installed distribution's version (None if absent): `jax.lib.__version__` is not there in every jax."""
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def torch_version() -> str | None:
  if importlib.util.find_spec("torch") is None:
    return None
  import torch  # pylint: disable=g-import-not-at-top
  return torch.__version__


def context() -> dict[str, Any]:
  """Where the run happens: device, platform, versions, CPU, its cores and those this process may use, date (UTC)."""
  device = jax.devices()[0]
  return {"schema": SCHEMA_VERSION, "device": device.device_kind, "platform": device.platform,
          "num_devices": jax.device_count(), "jax": jax.__version__, "jaxlib": _package_version("jaxlib"),
          "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__,
          "torch": torch_version(), "python": platform.python_version(), "cpu": cpu_model(),
          "cpu_count": os.cpu_count(), "cores": batching.usable_cores(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}


def time_compiled(jitted: Callable, make_args: Callable[[], tuple], *, repeats: int,
                  static: dict[str, Any] | None = None, static_argnums: tuple[int, ...] = ()) -> tuple[Timing, Any]:
  """Compiles `jitted` ahead of time for `make_args()` and times its steady state.

  Args:
    jitted: a `jax.jit`-wrapped function.
    make_args: returns the positional arguments of one call; called before each run,
      outside the timed region (donated buffers need fresh ones).
    repeats: timed runs after one untimed warm-up run.
    static: static keyword arguments (passed to `lower`, not to the compiled call).
    static_argnums: positions in `make_args()` of static positional arguments (graph
      definitions), likewise passed to `lower` only.

  Returns:
    (Timing, the compiled executable, for `cost_flops`).
  """
  static = static or {}
  args = make_args()
  start = time.perf_counter()
  compiled = jitted.lower(*args, **static).compile()
  compile_s = time.perf_counter() - start
  dynamic = lambda a: [x for i, x in enumerate(a) if i not in static_argnums]
  jax.block_until_ready(compiled(*dynamic(args)))
  times = []
  for _ in range(repeats):
    args = jax.block_until_ready(make_args())
    start = time.perf_counter()
    jax.block_until_ready(compiled(*dynamic(args)))
    times.append(time.perf_counter() - start)
  return Timing(compile_s, statistics.median(times), min(times), repeats), compiled


def time_call(fn: Callable[[], Any], *, repeats: int, sync: Callable[[], None] = lambda: None,
              warmup: int = 1) -> Timing:
  """Times an arbitrary call (a PyTorch twin, a host loop): `warmup` untimed runs, then `repeats`.

  The warm-up (first-call allocation, cuDNN autotuning, `torch.compile`) is reported as
  `compile_s`; `sync` ends every run (e.g. `torch.cuda.synchronize`).
  """
  start = time.perf_counter()
  for _ in range(warmup):
    fn()
    sync()
  warmup_s = time.perf_counter() - start if warmup else None
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    sync()
    times.append(time.perf_counter() - start)
  return Timing(warmup_s, statistics.median(times), min(times), repeats)


def cost_flops(stage) -> float | None:
  """FLOPs of one call from XLA's cost analysis of a `Compiled` or `Lowered` stage (None if unavailable).

  A `Lowered` stage's analysis runs on the unoptimised HLO without compiling (cheap); the
  FLOPs of convolutions and matmuls, which dominate, are the same. A `lax.scan` body is
  counted once (see the module docstring).
  """
  try:
    analysis = stage.cost_analysis()
  except Exception:  # pylint: disable=broad-except  (backends without cost analysis)
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  if not analysis or "flops" not in analysis:
    return None
  return float(analysis["flops"])


def function_flops(fn: Callable, *args, **static) -> float | None:
  """FLOPs of `jax.jit(fn)(*args)` from the cost analysis of its lowering (not compiled, not run)."""
  return cost_flops(jax.jit(fn, static_argnames=tuple(static)).lower(*args, **static))


def matmul_peak(dtype: str = "float32", n: int = 2048, repeats: int = 5) -> dict[str, Any]:
  """The achieved GFLOP/s of a large square matmul: the roofline's compute ceiling for this run.

  float32 on a CPU (XLA:CPU's matmul is its fastest kernel), bfloat16 on a GPU. A
  measured peak, not a datasheet one: it includes the thread count the process really has.
  """
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
  timing, _ = time_compiled(jax.jit(jnp.matmul), lambda: (a, b), repeats=repeats)
  return {"peak_dtype": dtype, "peak_matrix": n, "peak_gflops": round(2 * n ** 3 / timing.min_s / 1e9, 1)}


def roofline(flops_per_item: float | None, items_per_s: float, peak: dict[str, Any]) -> dict[str, Any]:
  """flops_per_item, achieved_gflops and fraction_of_peak (None where the FLOPs are unknown)."""
  if flops_per_item is None:
    return {"flops_per_item": None, "achieved_gflops": None, "fraction_of_peak": None}
  achieved = flops_per_item * items_per_s / 1e9
  return {"flops_per_item": round(flops_per_item), "achieved_gflops": round(achieved, 2),
          "fraction_of_peak": round(achieved / peak["peak_gflops"], 4), "peak_gflops": peak["peak_gflops"],
          "peak_dtype": peak["peak_dtype"]}


def record(ctx: dict[str, Any], *, suite: str, name: str, peer: str, dtype: str, batch: int, timing: Timing,
           items: int, unit: str, **extra) -> dict[str, Any]:
  """One measurement: `items` processed per timed run gives `throughput` in `unit` (e.g. "images/s")."""
  return {**ctx, "suite": suite, "name": name, "peer": peer, "dtype": dtype, "batch": batch,
          "compile_s": None if timing.compile_s is None else round(timing.compile_s, 3),
          "median_s": round(timing.median_s, 6), "min_s": round(timing.min_s, 6), "repeats": timing.repeats,
          "throughput": round(items / timing.median_s, 4), "throughput_unit": unit, **extra}


def skipped(ctx: dict[str, Any], *, suite: str, name: str, peer: str, reason: str, **extra) -> dict[str, Any]:
  """A peer that could not run here (e.g. PyTorch not installed): a record without timings."""
  return {**ctx, "suite": suite, "name": name, "peer": peer, "skipped": reason, **extra}


def add_ratios(records: list[dict[str, Any]]) -> None:
  """Adds `ratio_vs_torch_eager`, `ratio_vs_torch_compile` and `ratio_vs_per_image_loop` to jaxcxr records.

  The ratio is the twin's median time over jaxcxr's for the same suite, name, dtype and
  batch (> 1: jaxcxr is faster), measured in this process.
  """
  twins = {(r["suite"], r["name"], r["dtype"], r["batch"], r["peer"]): r for r in records if "skipped" not in r}
  for r in records:
    if r.get("peer") != "jaxcxr" or "skipped" in r:
      continue
    for peer, key in (("torch_eager", "ratio_vs_torch_eager"), ("torch_compile", "ratio_vs_torch_compile"),
                      ("torch_per_image_loop", "ratio_vs_per_image_loop")):
      twin = twins.get((r["suite"], r["name"], r["dtype"], r["batch"], peer))
      if twin is not None:
        r[key] = round(twin["median_s"] / r["median_s"], 3)
