"""AnoGAN latent-search throughput: jaxcxr's batched `lax.scan` against the per-image loop (and PyTorch).

    python benchmarks/anogan.py [--preset tiny|gan_64_cpu|gan_256] [--checkpoint DIR]
        [--batches 1,64,256] [--steps 500] [--dtypes float32,bfloat16]
        [--out benchmarks/results/anogan_<device>.json]

Prints one JSON line per measurement (DESIGN.md section 9) with the device, the
jax/flax versions, batch, dtype, steps, compile seconds and steady-state images/s
(median of `--repeats` timed runs, each ended by `block_until_ready`). Peers, in
the same process:

* `jaxcxr_scan`: `anomaly.search_latents`' jitted search, compiled ahead of time
  (`lower().compile()`, timed separately); a timed run covers every step of B
  images, not the host-side input checks.
* `per_image_loop`: what reference AnoGAN code does: one image at a time, a
  Python loop of optimiser steps, each a separate call of a jitted
  value_and_grad + Adam update (the fast split-state `jax.jit`, so this is the
  loop at its best in JAX). Timed on `--reference-images` images for
  `--reference-steps` steps and extrapolated linearly to `--steps`
  (`"extrapolated": true` in its line).
* `torch`: a batched PyTorch twin of the same architecture (random weights,
  eager), when `import torch` works; otherwise a `"skipped"` line.

Weights are random unless `--checkpoint DIR` names a directory with `generator/`
and `discriminator/` (e.g. checkpoints/gan_64): timing does not depend on them.
"""

# pylint: disable=protected-access  (tests and benchmarks reach the jitted search itself)
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import pathlib
import platform
import statistics
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxcxr import anomaly, data
from jaxcxr import io as io_lib
from jaxcxr.config import gan_64_cpu, gan_256, gan_tiny
from jaxcxr.models import Discriminator, Generator, load_discriminator, load_generator, make_condition
from jaxcxr.models.generator import latents

PRESETS = {"tiny": lambda: gan_tiny(32), "gan_64_cpu": gan_64_cpu, "gan_256": gan_256}


def _context(args) -> dict:
  device = jax.devices()[0]
  return {"bench": "anogan", "device": device.device_kind, "platform": device.platform,
          "num_devices": jax.device_count(), "jax": jax.__version__, "flax": flax.__version__,
          "python": platform.python_version(), "preset": None if args.checkpoint else args.preset,
          "checkpoint": args.checkpoint, "steps": args.steps, "restarts": args.restarts}


def _models(args):
  """(generator, discriminator in inference mode): a checkpoint's, or a preset's with random weights."""
  if args.checkpoint:
    root = pathlib.Path(args.checkpoint)
    return load_generator(root / "generator"), load_discriminator(root / "discriminator")
  from jaxcxr.train import gan  # pylint: disable=g-import-not-at-top  (one jitted init of both models)

  config = PRESETS[args.preset]()
  state = gan.init_train_state(config, seed=0)
  abstract_g = nnx.eval_shape(lambda: Generator(config.generator, rngs=nnx.Rngs(0)))
  abstract_d = nnx.eval_shape(lambda: Discriminator(config.discriminator, rngs=nnx.Rngs(0)))
  generator = nnx.merge(nnx.graphdef(abstract_g), state["g"])
  discriminator = nnx.merge(nnx.graphdef(abstract_d), state["d"], state["d_stats"])
  return generator, nnx.view(discriminator, use_running_average=True)


@functools.partial(jax.jit, static_argnums=0)
def _generate_uint8(graphdef, state, z, cond):
  images = nnx.merge(graphdef, state)(z, cond)[..., 0]
  return jnp.round(jnp.clip((images + 1.0) * 127.5, 0.0, 255.0)).astype(jnp.uint8)


def _queries(generator, n: int):
  """uint8 (n, R, R) query images (the generator's own samples) and their conditions."""
  cfg = generator.config
  rng = np.random.default_rng(0)
  cond = make_condition(rng.choice(["M", "F"], n), rng.integers(18, 80, n), rng.integers(0, 2, n),
                        conditions=cfg.conditions)
  z = latents(jax.random.key(1), jnp.int32(0), n, cfg.latent_dim)
  graphdef, state = nnx.split(generator)
  images = np.concatenate([np.asarray(_generate_uint8(graphdef, state, z[i: i + 64], cond[i: i + 64]))
                           for i in range(0, n, 64)])
  return images, cond


def _emit(line: dict, lines: list) -> None:
  lines.append(line)
  print(json.dumps(line), flush=True)


def bench_scan(generator, discriminator, images, cond, batch: int, dtype: str, args, context, lines):
  config = anomaly.LatentSearchConfig(steps=args.steps, restarts=args.restarts, dtype=dtype)
  key = jax.random.key(0)
  prepare = lambda: anomaly._prepare(generator, discriminator, images[:batch], cond[:batch], key, config, 0,
                                     None)
  call_args, kwargs = prepare()
  start = time.perf_counter()
  lowered = anomaly._search_jit.lower(*call_args, **kwargs)
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(*call_args[2:]))           # warm-up (first execution)
  times = []
  for _ in range(args.repeats):
    call_args, _ = prepare()                                # fresh starts: z0 is donated
    jax.block_until_ready(call_args)
    start = time.perf_counter()
    jax.block_until_ready(compiled(*call_args[2:]))
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  _emit({**context, "peer": "jaxcxr_scan", "batch": batch, "dtype": dtype, "lower_s": round(lower_s, 3),
         "compile_s": round(compile_s, 3),
         "median_s": round(median, 5), "min_s": round(min(times), 5), "repeats": args.repeats,
         "images_per_s": round(batch / median, 3), "ms_per_step": round(1e3 * median / args.steps, 4)}, lines)


def bench_per_image_loop(generator, discriminator, images, cond, args, context, lines):
  """The reference procedure: per image, `steps` separate jitted value_and_grad + Adam calls."""
  config = anomaly.LatentSearchConfig(steps=args.steps)
  g_graphdef, d_graphdef = anomaly._graphdefs(generator.config, discriminator.config)
  g_state, d_state = nnx.state(generator), nnx.state(discriminator)
  tx = optax.adam(config.learning_rate)
  lam = config.feature_weight

  @jax.jit
  def features(d_state, x):
    return nnx.merge(d_graphdef, d_state).features(x)

  @jax.jit
  def step(g_state, d_state, z, opt_state, x, fx, c):
    g, d = nnx.merge(g_graphdef, g_state), nnx.merge(d_graphdef, d_state)

    def loss_fn(z):
      fake = g(z, c)
      return (1 - lam) * jnp.abs(x - fake).mean() + lam * jnp.abs(fx - d.features(fake)).mean()

    loss, grads = jax.value_and_grad(loss_fn)(z)
    with jax.numpy_dtype_promotion("standard"):
      updates, opt_state = tx.update(grads, opt_state, z)
    return optax.apply_updates(z, updates), opt_state, loss

  def run_image(i, n_steps):
    x = data.to_signed(images[i: i + 1])[..., None]
    c = jnp.asarray(cond[i: i + 1])
    fx = features(d_state, x)
    z = jax.random.normal(jax.random.fold_in(jax.random.key(0), i), (1, generator.config.latent_dim))
    opt_state = tx.init(z)
    for _ in range(n_steps):
      z, opt_state, loss = step(g_state, d_state, z, opt_state, x, fx, c)
    return jax.block_until_ready(loss)

  n_steps = min(args.reference_steps, args.steps)
  start = time.perf_counter()
  # Compiles: two steps, because the first call's fresh z and Adam state are uncommitted arrays
  # and later calls' are committed ones, which jit compiles separately.
  run_image(0, 2)
  compile_s = time.perf_counter() - start
  per_step = []
  for i in range(args.reference_images):
    start = time.perf_counter()
    run_image(i, n_steps)
    per_step.append((time.perf_counter() - start) / n_steps)
  step_s = statistics.median(per_step)
  _emit({**context, "peer": "per_image_loop", "batch": 1, "dtype": "float32", "compile_s": round(compile_s, 3),
         "measured_images": args.reference_images, "measured_steps": n_steps, "extrapolated": n_steps < args.steps,
         "note": f"per-step time measured over {n_steps} steps of each image, scaled linearly to {args.steps} steps",
         "ms_per_step": round(1e3 * step_s, 4), "median_s": round(step_s * args.steps, 5),
         "images_per_s": round(1.0 / (step_s * args.steps), 4)}, lines)


def bench_torch(generator, discriminator, images, cond, batch: int, args, context, lines):
  """A batched PyTorch twin (eager): same layer shapes, random weights, NCHW.

  Untested where it was written (no torch there); the layer sizes follow
  `models.generator` / `models.discriminator`, torch's pixel_shuffle orders sub-pixel
  channels differently (same cost), and torch's spectral norm in eval mode skips the
  power iteration as ours does in inference mode.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top

  g_cfg, d_cfg = generator.config, discriminator.config
  device = "cuda" if torch.cuda.is_available() else "cpu"
  w_dim = g_cfg.latent_dim + g_cfg.cond_embed_dim

  class FiLM(nn.Module):
    def __init__(self, c):
      super().__init__()
      self.proj = nn.Linear(w_dim, 2 * c)

    def forward(self, x, w):
      gamma, beta = self.proj(w).chunk(2, dim=1)
      return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]

  class UpBlock(nn.Module):
    def __init__(self, c_in, c_out):
      super().__init__()
      groups = g_cfg.norm_groups
      self.norm1, self.film1 = nn.GroupNorm(min(groups, c_in), c_in), FiLM(c_in)
      self.conv1 = nn.Conv2d(c_in, 4 * c_out, 3, padding=1)
      self.norm2, self.film2 = nn.GroupNorm(min(groups, c_out), c_out), FiLM(c_out)
      self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
      self.skip = nn.Conv2d(c_in, 4 * c_out, 1)

    def forward(self, x, w):
      h = F.pixel_shuffle(self.conv1(F.relu(self.film1(self.norm1(x), w))), 2)
      h = self.conv2(F.relu(self.film2(self.norm2(h), w)))
      return h + F.pixel_shuffle(self.skip(x), 2)

  class TorchGenerator(nn.Module):
    def __init__(self):
      super().__init__()
      ch = g_cfg.channels
      self.cond_embed = nn.Linear(len(g_cfg.conditions), g_cfg.cond_embed_dim)
      self.input = nn.Linear(w_dim, 16 * ch[0])
      self.blocks = nn.ModuleList([UpBlock(a, b) for a, b in zip(ch[:-1], ch[1:])])
      self.out_norm = nn.GroupNorm(min(g_cfg.norm_groups, ch[-1]), ch[-1])
      self.out_film, self.out_conv = FiLM(ch[-1]), nn.Conv2d(ch[-1], 1, 3, padding=1)

    def forward(self, z, c):
      w = torch.cat([z, self.cond_embed(c)], dim=1)
      x = self.input(w).view(z.shape[0], -1, 4, 4)
      for block in self.blocks:
        x = block(x, w)
      return torch.tanh(self.out_conv(F.relu(self.out_film(self.out_norm(x), w))))

  sn = nn.utils.parametrizations.spectral_norm

  class DownBlock(nn.Module):
    def __init__(self, c_in, c_out):
      super().__init__()
      self.conv1 = sn(nn.Conv2d(c_in, c_in, 3, padding=1))
      self.conv2 = sn(nn.Conv2d(c_in, c_out, 3, padding=1))
      self.skip = sn(nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x):
      act = lambda t: F.leaky_relu(t, d_cfg.negative_slope)
      h = F.avg_pool2d(act(self.conv1(act(x))), 2)
      return self.conv2(h) + self.skip(F.avg_pool2d(x, 2))

  class TorchFeatures(nn.Module):
    def __init__(self):
      super().__init__()
      ch = d_cfg.channels
      self.stem = sn(nn.Conv2d(1, ch[0], 3, padding=1))
      self.blocks = nn.ModuleList([DownBlock(a, b) for a, b in zip(ch[:-1], ch[1:])])

    def forward(self, x):
      h = self.stem(x)
      for block in self.blocks:
        h = block(h)
      return F.leaky_relu(h, d_cfg.negative_slope)

  torch.manual_seed(0)
  g = TorchGenerator().to(device).eval().requires_grad_(False)
  f = TorchFeatures().to(device).eval().requires_grad_(False)   # eval: no power-iteration updates
  x = torch.as_tensor(images[:batch], device=device).float().div(127.5).sub(1.0)[:, None]
  c = torch.as_tensor(cond[:batch], device=device)
  lam = anomaly.LatentSearchConfig().feature_weight
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def search():
    with torch.no_grad():
      fx = f(x)
    z = torch.randn(batch, g_cfg.latent_dim, device=device, requires_grad=True)
    opt = torch.optim.Adam([z], lr=anomaly.LatentSearchConfig().learning_rate)
    for _ in range(args.steps):
      opt.zero_grad(set_to_none=True)
      fake = g(z, c)
      losses = ((1 - lam) * (x - fake).abs().mean(dim=(1, 2, 3))
                + lam * (fx - f(fake)).abs().mean(dim=(1, 2, 3)))
      losses.sum().backward()
      opt.step()
    sync()
    return losses.detach()

  start = time.perf_counter()
  search()                                                  # warm-up (cuDNN autotuning, allocator)
  warmup_s = time.perf_counter() - start
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    search()
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  _emit({**context, "peer": "torch", "mode": "eager", "torch": torch.__version__, "torch_device": device,
         "batch": batch, "dtype": "float32", "warmup_s": round(warmup_s, 3), "median_s": round(median, 5),
         "min_s": round(min(times), 5), "repeats": args.repeats, "images_per_s": round(batch / median, 3),
         "ms_per_step": round(1e3 * median / args.steps, 4)}, lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                      help="model sizes when no checkpoint is given (random weights)")
  parser.add_argument("--checkpoint", default=None, help="directory with generator/ and discriminator/")
  parser.add_argument("--batches", default="1,64,256", help="comma-separated batch sizes")
  parser.add_argument("--steps", type=int, default=500, help="Adam steps per image")
  parser.add_argument("--restarts", type=int, default=1, help="random starts per image (jaxcxr peer)")
  parser.add_argument("--dtypes", default="float32", help="comma-separated: float32, bfloat16")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
  parser.add_argument("--reference-images", type=int, default=2, help="images timed in the per-image loop")
  parser.add_argument("--reference-steps", type=int, default=50, help="steps timed per image in the loop")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
  parser.add_argument("--out", default=None, help="also write the JSON lines to this file")
  args = parser.parse_args(argv)
  batches = [int(b) for b in args.batches.split(",")]
  dtypes = args.dtypes.split(",")

  generator, discriminator = _models(args)
  context = _context(args)
  context["resolution"] = generator.config.resolution
  images, cond = _queries(generator, max(batches + [args.reference_images]))
  models = f"checkpoint {args.checkpoint}" if args.checkpoint else f"preset {args.preset} (random weights)"
  print(f"anogan benchmark on {context['device']}: {models}, resolution "
        f"{context['resolution']}, steps {args.steps}, batches {batches}, dtypes {dtypes}", file=sys.stderr)
  lines: list = []
  for dtype in dtypes:
    for batch in batches:
      bench_scan(generator, discriminator, images, cond, batch, dtype, args, context, lines)
  bench_per_image_loop(generator, discriminator, images, cond, args, context, lines)
  if not args.no_torch:
    if importlib.util.find_spec("torch") is None:
      _emit({**context, "peer": "torch", "skipped": "torch not installed"}, lines)
    else:
      for batch in batches:
        bench_torch(generator, discriminator, images, cond, batch, args, context, lines)
  if args.out:
    io_lib.save_json_lines(args.out, lines)
  return 0


if __name__ == "__main__":
  sys.exit(main())
