"""The PyTorch side of each suite: `benchmarks.twins` loaded with jaxcxr's weights, timed in the same process.

Each function emits one record per mode and dtype: peer "torch_eager", and
"torch_compile" with `--torch-compile` (its first calls, the compilation, are the
record's `compile_s`); dtypes float32, and bfloat16 with `--torch-bf16`. The twins use
torch's default intra-op threads (all cores, as XLA) on the CPU and CUDA when present.
Without torch, one "skipped" record per call says why.

Each mode runs under `Bench.guard`: a twin that fails (torch.compile cannot trace it or reaches
its recompile limit, CUDA runs out of memory) leaves a failed record, and the run goes on; a failure while building
the twin is recorded under peer "torch". On CUDA, each function empties torch's cache
allocator when it returns, so the next JAX measurement gets the memory back.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
from typing import Any, Callable

import numpy as np

from benchmarks import measure

SKIP_REASON = "torch not installed (pip install 'torch==2.13.0+cpu' on a CPU machine)"


def available() -> bool:
  return importlib.util.find_spec("torch") is not None


def _skip(bench, suite: str, name: str, batch: int) -> bool:
  """True where the twin does not run: not asked (`--no-twins`, no record) or torch missing (a skipped record)."""
  if not bench.twins:
    return True
  if available():
    return False
  bench.emit(measure.skipped(bench.ctx, suite=suite, name=name, peer="torch_eager", reason=SKIP_REASON, batch=batch))
  return True


def _device():
  import torch  # pylint: disable=g-import-not-at-top
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync() -> Callable[[], None]:
  import torch  # pylint: disable=g-import-not-at-top
  return torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)


def _frees_cuda_memory(fn: Callable[..., None]) -> Callable[..., None]:
  """Runs a twin's measurement, then (on CUDA) frees what its models and inputs held in torch's cache."""
  @functools.wraps(fn)
  def wrapper(*args, **kwargs) -> None:
    try:
      fn(*args, **kwargs)
    finally:
      if available():
        import torch  # pylint: disable=g-import-not-at-top
        if torch.cuda.is_available():
          gc.collect()
          torch.cuda.empty_cache()
  return wrapper


def _modes(bench) -> list[str]:
  return ["eager"] + (["compile"] if bench.torch_compile else [])


def _dtypes(bench) -> list[str]:
  return ["float32"] + (["bfloat16"] if bench.torch_bf16 else [])


def _time(bench, fn: Callable[[], Any], mode: str):
  """Times `fn` (built for `mode`); torch.compile gets three warm-up calls (compile, recompiles, autotune)."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    return measure.time_call(fn, repeats=bench.repeats, sync=_sync(), warmup=3 if mode == "compile" else 1)


# Dynamo compiles a function again for each new input shape, dtype or grad mode, per code object (the twins'
# `forward`s are shared by every suite and batch). Past its recompile limit (8 by default) it would silently
# run eager code under the name torch_compile: the AnoGAN twin's `features` (with and without gradients, two
# batches, two dtypes) reached it in a dry run. The limit is raised, and reaching it raises instead.
RECOMPILE_LIMIT = 64


def _compiled(bench, module_or_fn, mode: str):
  """`module_or_fn` as `mode` runs it: eager, or under `torch.compile` with the run's backend (`RECOMPILE_LIMIT`)."""
  if mode != "compile":
    return module_or_fn
  import torch  # pylint: disable=g-import-not-at-top
  config = torch._dynamo.config  # pylint: disable=protected-access
  for name in ("recompile_limit", "cache_size_limit"):        # the name before torch 2.6: cache_size_limit
    if hasattr(config, name):
      setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
      break
  if hasattr(config, "fail_on_recompile_limit_hit"):
    config.fail_on_recompile_limit_hit = True
  return torch.compile(module_or_fn, backend=bench.torch_compile_backend)


def _emit(bench, suite, name, mode, dtype, batch, timing, items, unit, **extra):
  import torch  # pylint: disable=g-import-not-at-top
  if mode == "compile":
    extra["torch_compile_backend"] = bench.torch_compile_backend
  bench.emit(measure.record(bench.ctx, suite=suite, name=name, peer=f"torch_{mode}", dtype=dtype, batch=batch,
                            timing=timing, items=items, unit=unit, torch_device=str(_device()),
                            torch_threads=torch.get_num_threads(), **extra))


@_frees_cuda_memory
def generate_and_score(bench, m, scorer, cond: np.ndarray, batch: int, dtype: str, suite: str) -> None:
  """`twins.TorchGenerateAndScore` on fresh N(0, I) latents each run, jaxcxr's dtype."""
  if _skip(bench, suite, "generate_and_score", batch):
    return
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import twins  # pylint: disable=g-import-not-at-top
  with bench.guard(suite, "generate_and_score", "torch", dtype=dtype, batch=batch):
    device = _device()
    model = twins.TorchGenerateAndScore.from_nnx(scorer, m.generator).to(device)
    c = torch.as_tensor(cond, device=device)
    for mode in _modes(bench):
      with bench.guard(suite, "generate_and_score", f"torch_{mode}", dtype=dtype, batch=batch):
        fn = _compiled(bench, model, mode)
        run = lambda: fn(torch.randn(batch, m.generator.config.latent_dim, device=device), c)
        _emit(bench, suite, "generate_and_score", mode, dtype, batch, _time(bench, run, mode), batch, "images/s")


def _signed(images: np.ndarray, device):
  import torch  # pylint: disable=g-import-not-at-top
  return (torch.as_tensor(images, device=device).float() / 127.5 - 1.0)[:, None]


def _anogan_twins(m, dtype: str):
  from benchmarks import twins  # pylint: disable=g-import-not-at-top
  device = _device()
  g = twins.TorchGenerator.from_nnx(m.normal_generator, dtype).to(device)
  d = twins.TorchDiscriminator.from_nnx(m.normal_discriminator, dtype).to(device)
  return g, d


@_frees_cuda_memory
def anogan_batched(bench, m, config, images: np.ndarray, cond: np.ndarray, suite: str) -> None:
  """`twins.anogan_search`: every image's search in one batch, the same Adam steps and loss."""
  b = len(images)
  if _skip(bench, suite, "search", b):
    return
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import twins  # pylint: disable=g-import-not-at-top
  with bench.guard(suite, "search", "torch", dtype=config.dtype, batch=b):
    device = _device()
    g, d = _anogan_twins(m, config.dtype)
    x, c = _signed(images, device), torch.as_tensor(cond, device=device)
    target = twins.Render(g, config.base_image)
    for mode in _modes(bench):
      with bench.guard(suite, "search", f"torch_{mode}", dtype=config.dtype, batch=b):
        render, features = _compiled(bench, target, mode), _compiled(bench, d.features, mode)
        run = lambda: twins.anogan_search(render, features, x, c, config.steps, config.learning_rate,
                                          config.feature_weight, config.restarts)
        timing = measure.time_call(run, repeats=bench.repeats, sync=_sync(), warmup=3 if mode == "compile" else 1)
        _emit(bench, suite, "search", mode, config.dtype, b, timing, b, "images/s", steps=config.steps,
              ms_per_step=round(1e3 * timing.median_s / config.steps, 3))


@_frees_cuda_memory
def anogan_per_image(bench, m, config, images: np.ndarray, cond: np.ndarray, suite: str) -> None:
  """The reference code's loop (`twins.anogan_search_per_image`) over all B images, eager.

  Timed on `reference_images` images for `reference_steps` steps and scaled linearly to B
  images and `config.steps` steps (`extrapolated`): one image's steps are independent of
  the others', so its time is linear in both.
  """
  b = len(images)
  if _skip(bench, suite, "search", b):
    return
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import twins  # pylint: disable=g-import-not-at-top
  with bench.guard(suite, "search", "torch_per_image_loop", dtype=config.dtype, batch=b):
    device = _device()
    g, d = _anogan_twins(m, config.dtype)
    n_images, n_steps = min(2, b), min(10, config.steps)
    x, c = _signed(images[:n_images], device), torch.as_tensor(cond[:n_images], device=device)
    run = lambda: twins.anogan_search_per_image(g, d.features, x, c, n_steps, config.learning_rate,
                                                config.feature_weight, config.restarts, base_image=config.base_image)
    measured = measure.time_call(run, repeats=bench.repeats, sync=_sync())
    scale = (b / n_images) * (config.steps + 1) / (n_steps + 1)
    timing = measure.Timing(measured.compile_s, measured.median_s * scale, measured.min_s * scale, measured.repeats)
    _emit(bench, suite, "search", "per_image_loop", config.dtype, b, timing, b, "images/s", steps=config.steps,
          extrapolated=True, measured_images=n_images, measured_steps=n_steps,
          ms_per_step=round(1e3 * timing.median_s / config.steps, 3))


@_frees_cuda_memory
def fanogan(bench, m, images: np.ndarray, cond: np.ndarray, suite: str) -> None:
  """`twins.fanogan_scores` with the f-AnoGAN encoder, G and D twins."""
  b = len(images)
  if _skip(bench, suite, "score", b):
    return
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import twins  # pylint: disable=g-import-not-at-top
  with bench.guard(suite, "score", "torch", dtype="float32", batch=b):
    device = _device()
    e = twins.TorchEncoder.from_nnx(m.encoder).to(device)
    g, d = _anogan_twins(m, "float32")
    x, c = torch.as_tensor(images, device=device), torch.as_tensor(cond, device=device)
    for mode in _modes(bench):
      with bench.guard(suite, "score", f"torch_{mode}", dtype="float32", batch=b):
        fn = _compiled(bench, lambda x, c: twins.fanogan_scores(e, g, d, x, c), mode)
        _emit(bench, suite, "score", mode, "float32", b, _time(bench, lambda: fn(x, c), mode), b, "images/s")


@_frees_cuda_memory
def healthygan(bench, m, images: np.ndarray, suite: str) -> None:
  """`twins.healthygan_scores` with the translator twin."""
  b = len(images)
  if _skip(bench, suite, "score", b):
    return
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import twins  # pylint: disable=g-import-not-at-top
  with bench.guard(suite, "score", "torch", dtype="float32", batch=b):
    device = _device()
    t = twins.TorchTranslator.from_nnx(m.translator).to(device)
    x = torch.as_tensor(images, device=device)
    for mode in _modes(bench):
      with bench.guard(suite, "score", f"torch_{mode}", dtype="float32", batch=b):
        fn = _compiled(bench, lambda x: twins.healthygan_scores(t, x), mode)
        _emit(bench, suite, "score", mode, "float32", b, _time(bench, lambda: fn(x), mode), b, "images/s")


@_frees_cuda_memory
def gan_train_step(bench, m, config, data: dict, suite: str) -> None:
  """`twins.TorchGanTrainStep`: `steps_per_call` steps per timed call, each drawing its batch on the device."""
  if _skip(bench, suite, "gan", config.batch_size):
    return
  import torch  # pylint: disable=g-import-not-at-top

  from benchmarks import models as models_lib, twins  # pylint: disable=g-import-not-at-top
  from jaxcxr.models import Discriminator, Generator  # pylint: disable=g-import-not-at-top
  with bench.guard(suite, "gan", "torch_eager", dtype=config.compute_dtype, batch=config.batch_size):
    device = _device()
    g = models_lib.random_module(lambda rngs: Generator(config.generator, rngs=rngs), 0)
    d = models_lib.random_module(lambda rngs: Discriminator(config.discriminator, rngs=rngs), 1)
    step = twins.TorchGanTrainStep.from_nnx(g, d, config)
    step.g.to(device), step.d.to(device), step.g_ema.to(device)
    images = torch.as_tensor(np.array(data["images"]), device=device)
    cond = torch.as_tensor(np.array(data["cond"]), device=device)

    def run():
      for _ in range(config.steps_per_call):
        step(step.draw(images, cond))

    timing = measure.time_call(run, repeats=bench.repeats, sync=_sync())
    _emit(bench, suite, "gan", "eager", config.compute_dtype, config.batch_size, timing, config.steps_per_call,
          "steps/s", steps_per_call=config.steps_per_call)


@_frees_cuda_memory
def unet_train_step(bench, m, config, data: dict, suite: str) -> None:
  """`twins.TorchUNetTrainStep`: `steps_per_call` steps per timed call, batches drawn and augmented on the device."""
  if _skip(bench, suite, "unet", config.batch_size):
    return
  import torch  # pylint: disable=g-import-not-at-top

  from benchmarks import models as models_lib, twins  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.unet import UNet  # pylint: disable=g-import-not-at-top
  with bench.guard(suite, "unet", "torch_eager", dtype=config.unet.dtype, batch=config.batch_size):
    device = _device()
    unet = models_lib.random_module(lambda rngs: UNet(config.unet, rngs=rngs), 0)
    step = twins.TorchUNetTrainStep.from_nnx(unet, config)
    step.unet.to(device)
    images = torch.as_tensor(np.array(data["images"]), device=device)
    masks = torch.as_tensor(np.array(data["masks"]), device=device)

    def run():
      for _ in range(config.steps_per_call):
        step(*step.draw(images, masks))

    timing = measure.time_call(run, repeats=bench.repeats, sync=_sync())
    _emit(bench, suite, "unet", "eager", config.unet.dtype, config.batch_size, timing, config.steps_per_call,
          "steps/s", steps_per_call=config.steps_per_call)


@_frees_cuda_memory
def encoder_train_step(bench, config, images, suite: str) -> None:
  """`twins_encoder.TorchEncoderTrainStep` from jaxcxr's fresh train state: `steps_per_call` steps per timed call.

  Each step draws its batch and both views on the device (`draw`), as jaxcxr's step does
  inside its call. Eager only, as the other training-step twins.
  """
  b = config.batch_size
  if _skip(bench, suite, "encoder", b):
    return
  import torch  # pylint: disable=g-import-not-at-top

  from benchmarks import twins_encoder  # pylint: disable=g-import-not-at-top
  from jaxcxr.train import cxr_encoder  # pylint: disable=g-import-not-at-top
  with bench.guard(suite, "encoder", "torch_eager", dtype=config.encoder.dtype, batch=b):
    device = _device()
    state = cxr_encoder.init_train_state(config)
    step = twins_encoder.TorchEncoderTrainStep.from_nnx(cxr_encoder.encoder_of(state, config),
                                                        cxr_encoder.projector_of(state, config), config)
    step.encoder.to(device), step.projector.to(device)
    x = torch.as_tensor(np.array(images), device=device)

    def run():
      for _ in range(config.steps_per_call):
        step(step.draw(x))

    timing = measure.time_call(run, repeats=bench.repeats, sync=_sync())
    _emit(bench, suite, "encoder", "eager", config.encoder.dtype, b, timing, config.steps_per_call, "steps/s",
          steps_per_call=config.steps_per_call)
