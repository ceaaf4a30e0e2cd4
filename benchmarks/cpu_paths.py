"""The CPU path choices behind `jaxcxr.models.layers.conv2d` and `jaxcxr.batching.CPU_CHUNK`, measured.

    python -m benchmarks.cpu_paths [--quick] [--out FILE]

One JSON line per measurement (stdout, and FILE with --out). Each probe runs in its own
process, because XLA flags and the chunk size are read when a function is first traced:

* `conv`: GFLOP/s of a 3x3 convolution (16x64x64x32 -> 32 channels) forward and forward +
  backward, for XLA's convolution with its own autodiff (`plain`), the custom VJP that keeps
  every gradient a canonical forward convolution (`custom_vjp`, what `conv2d` uses on a
  CPU) and im2col patches times a matmul (`patches`), in float32 and bfloat16, with the
  float32 and bfloat16 matmul rates beside them; under each XLA flag set of `FLAG_SETS`
  (oneDNN, XNNPACK graph fusion, AMX, 512-bit vectors).
* `small_channels`: the same at the shipped base GAN's smallest widths (16 -> 8, 8 -> 8 at
  64x64, batch 64), where AnoGAN spends its time.
* `kernel_gradient`: ms per kernel gradient of a 3x3 convolution inside a `lax.scan` at the
  base GAN's layer shapes: `conv2d`'s VJP (a forward convolution contracting the batch), im2col
  patches times a matmul, XLA's own transpose.
* `group_norm`: ms of `layers.GroupNorm`'s forward and backward (statistics as contractions over
  the pixels) against means over the grouped view's axes, at the U-Net's and GAN's shapes.
* `one_channel`: a 3x3 convolution from one input channel (8x256x256x1 -> 8), XLA's against
  `conv2d`'s CPU forward (shifted copies times the kernel, summed).
* `gradients`: ms per step of the shipped AnoGAN search (a `lax.scan`, batch 8) and of the
  256x256 U-Net's unrolled training step, with `conv2d`'s custom VJP and with XLA's autodiff
  (`layers.conv_path`).
* `chunk`: images/s of the shipped generate-and-score call (batch 32) and ms per image and
  step of the shipped AnoGAN search (batch 64, base image, 10 steps) for each
  `batching.CPU_CHUNK` (None = the whole batch at once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import measure
from benchmarks import models as models_lib
from benchmarks.suites import anogan as anogan_suite
from jaxcxr import anomaly, batching
from jaxcxr import io as io_lib
from jaxcxr.models import layers
from jaxcxr.train import segmentation

FLAG_SETS = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn_custom_call": "--xla_cpu_experimental_onednn_custom_call=true",
    "xnn_graph_fusion": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "no_xnnpack": "--xla_cpu_use_xnnpack=false",
    "max_isa_amx": "--xla_cpu_max_isa=AMX",
    "vector_width_512": "--xla_cpu_prefer_vector_width=512",
}
CHUNKS = ("none", "1", "2", "8")
PROBES = ("conv", "small_channels", "kernel_gradient", "group_norm", "one_channel", "gradients", "chunk")


def _median_time(fn, *args, repeats: int = 5) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def probe_conv(quick: bool) -> dict:
  b, h, c, o = (4, 32, 16, 16) if quick else (16, 64, 32, 32)
  flops = 2 * b * h * h * c * o * 9
  out = {"probe": "conv", "shape": [b, h, h, c, o]}
  n = 512 if quick else 2048
  for dtype in ("float32", "bfloat16"):
    a = jax.random.normal(jax.random.key(0), (n, n)).astype(dtype)
    out[f"matmul_{dtype}_gflops"] = round(2 * n ** 3 / _median_time(jax.jit(jnp.matmul), a, a) / 1e9, 1)
    x = jax.random.normal(jax.random.key(0), (b, h, h, c)).astype(dtype)
    k = (0.1 * jax.random.normal(jax.random.key(1), (3, 3, c, o))).astype(dtype)
    patches = lambda x, k: (layers.patches(x, 3).reshape(-1, 9 * c) @ k.reshape(9 * c, o)).reshape(b, h, h, o)
    for name, path, conv in (("plain", "xla", layers.conv2d), ("custom_vjp", "custom_vjp", layers.conv2d),
                             ("patches", "auto", patches)):
      with layers.conv_path(path):    # traced (on the first timed call) inside the block
        fwd = jax.jit(conv)
        both = jax.jit(jax.grad(lambda x, k, conv=conv: (conv(x, k).astype(jnp.float32) ** 2).sum(), argnums=(0, 1)))
        out[f"conv_fwd_{name}_{dtype}_gflops"] = round(flops / _median_time(fwd, x, k) / 1e9, 1)
        out[f"conv_fwdbwd_{name}_{dtype}_gflops"] = round(3 * flops / _median_time(both, x, k) / 1e9, 1)
  return out


def _search_seconds(m, batch: int, steps: int) -> float:
  """Median seconds of `anomaly.search_latents` on `batch` random queries (the anogan suite's)."""
  g, d = m.normal_generator, m.normal_discriminator
  config = anomaly.LatentSearchConfig(steps=steps, base_image=m.anogan_base_image)
  images, cond = anogan_suite.queries(g, config, batch)
  return _median_time(lambda: anomaly.search_latents(g, d, images, cond, jax.random.key(0), config).score, repeats=3)


def probe_small_channels(quick: bool) -> dict:
  """A 3x3 convolution with the shipped base GAN's smallest widths (16 -> 8 and 8 -> 8 at 64x64)."""
  b, h = (4, 32) if quick else (64, 64)
  out = {"probe": "small_channels", "batch": b, "side": h}
  for c, o in ((16, 8), (8, 8)):
    x = jax.random.normal(jax.random.key(0), (b, h, h, c))
    k = 0.1 * jax.random.normal(jax.random.key(1), (3, 3, c, o))
    with layers.conv_path("xla"):
      seconds = _median_time(jax.jit(layers.conv2d), x, k)
    out[f"conv_fwd_{c}_to_{o}_gflops"] = round(2 * b * h * h * c * o * 9 / seconds / 1e9, 1)
  return out


def probe_gradients(quick: bool, variant: str) -> dict:
  """The AnoGAN search (a `lax.scan`) and a U-Net training step with `conv2d`'s gradients by `variant`.

  "custom_vjp" is `conv2d` as shipped on a CPU; "plain" is XLA's convolution with XLA's autodiff
  (`layers.conv_path("xla")`).
  """
  m = models_lib.tiny() if quick else models_lib.shipped()
  out = {"probe": "gradients", "variant": variant, "models": m.source}
  b, steps = (2, 3) if quick else (8, 10)
  with layers.conv_path({"custom_vjp": "custom_vjp", "plain": "xla"}[variant]):
    out["anogan_batch"], out["anogan_ms_per_step"] = b, round(1e3 * _search_seconds(m, b, steps) / steps, 2)
    rng = np.random.default_rng(0)
    u_cfg = m.unet_train
    n, r = 4 * u_cfg.batch_size, u_cfg.unet.resolution
    data = {"images": rng.integers(0, 256, (n, r, r), dtype=np.uint8),
            "masks": rng.integers(0, 3, (n, r, r), dtype=np.uint8)}
    program = segmentation.train_step_program(u_cfg, data)
    timing, _ = measure.time_compiled(program.fn, program.fresh_args, repeats=3)
  out["unet_batch"], out["unet_ms_per_step"] = u_cfg.batch_size, round(1e3 * timing.median_s / u_cfg.steps_per_call, 1)
  return out


def _scan_ms(fn, *args, iters: int = 10) -> float:
  """ms per iteration of `fn(*args)` inside a jitted `lax.scan` (as in the training steps' calls)."""
  def body(carry, _):
    out = fn(*carry)
    return tuple(a + 1e-9 * out.sum().astype(a.dtype) for a in carry), None   # a dependence: no hoisting
  scanned = jax.jit(lambda *a: jax.lax.scan(body, a, None, length=iters)[0])
  return 1e3 * _median_time(scanned, *args, repeats=3) / iters


def _dk_patches(x, dy):
  """The kernel gradient as im2col patches times one matmul (what `conv2d`'s VJP did before)."""
  c_in, c_out = x.shape[-1], dy.shape[-1]
  return (layers.patches(x, 3).reshape(-1, 9 * c_in).T @ dy.reshape(-1, c_out)).reshape(3, 3, c_in, c_out)


def _dk_xla(x, dy):
  """The kernel gradient as XLA's autodiff writes it (the transpose of the convolution in its kernel)."""
  kernel = jnp.zeros((3, 3, x.shape[-1], dy.shape[-1]), x.dtype)
  return jax.vjp(lambda k: layers._xla_conv(x, k), kernel)[1](dy)[0]   # pylint: disable=protected-access


def probe_kernel_gradient(quick: bool) -> dict:
  """ms per kernel gradient of a 3x3 convolution inside a `lax.scan`, at the 64x64 base GAN's layer shapes.

  `shipped`: `conv2d`'s VJP on a CPU (a forward convolution with the batch as the contracted axis);
  `patches`: im2col patches times a matmul; `xla`: XLA's own transpose.
  """
  shapes = ((4, 16, 4, 4),) if quick else ((32, 64, 8, 8), (32, 64, 16, 8), (32, 32, 16, 16), (32, 32, 16, 32),
                                           (32, 16, 32, 64), (32, 8, 64, 128))
  out = {"probe": "kernel_gradient", "shapes": [list(s) for s in shapes]}
  def shipped(x, dy):
    kernel = jnp.zeros((3, 3, x.shape[-1], dy.shape[-1]))
    return layers._cpu_conv_bwd((x, kernel), dy)[1]   # pylint: disable=protected-access
  for name, fn in (("shipped", shipped), ("patches", _dk_patches), ("xla", _dk_xla)):
    out[f"{name}_ms"] = [round(_scan_ms(fn, jax.random.normal(jax.random.key(0), (b, h, h, c)),
                                        jax.random.normal(jax.random.key(1), (b, h, h, o))), 2)
                         for b, h, c, o in shapes]
  return out


def _group_norm_strided(x, groups: int):
  """GroupNorm's statistics as means over axes (1, 2, 4) of the grouped view (what `layers.GroupNorm` did before)."""
  b, h, w, c = x.shape
  xg = x.reshape(b, h, w, groups, c // groups)
  mean = xg.mean(axis=(1, 2, 4), keepdims=True)
  var = jnp.square(xg - mean).mean(axis=(1, 2, 4), keepdims=True)
  return ((xg - mean) * jax.lax.rsqrt(var + 1e-5)).reshape(b, h, w, c)


def probe_group_norm(quick: bool) -> dict:
  """ms of a GroupNorm's forward and backward: `layers.GroupNorm` (contractions) against strided reductions."""
  shapes = ((2, 32, 8, 4),) if quick else ((8, 256, 8, 8), (8, 128, 16, 8), (8, 64, 32, 8), (16, 64, 8, 2),
                                           (16, 32, 16, 4))
  out = {"probe": "group_norm", "shapes": [list(s) for s in shapes]}
  for name in ("shipped", "strided"):
    times = []
    for b, h, c, groups in shapes:
      norm = layers.GroupNorm(c, groups, dtype=jnp.float32)
      fn = (lambda x, norm=norm: norm(x)) if name == "shipped" else (lambda x, g=groups: _group_norm_strided(x, g))
      grad = jax.jit(jax.grad(lambda x, fn=fn: jnp.sum(jnp.tanh(fn(x)))))
      times.append(round(1e3 * _median_time(grad, jax.random.normal(jax.random.key(0), (b, h, h, c))), 2))
    out[f"{name}_fwd_bwd_ms"] = times
  return out


def probe_one_channel(quick: bool) -> dict:
  """ms of a 3x3 convolution from one input channel: XLA's and `conv2d`'s CPU forward (shifted copies, summed)."""
  b, h = (2, 32) if quick else (8, 256)
  x = jax.random.normal(jax.random.key(0), (b, h, h, 1))
  k = jax.random.normal(jax.random.key(1), (3, 3, 1, 8))
  return {"probe": "one_channel", "shape": [b, h, h, 1, 8],
          "xla_ms": round(1e3 * _median_time(jax.jit(layers._xla_conv), x, k), 2),   # pylint: disable=protected-access
          "shipped_ms": round(1e3 * _median_time(jax.jit(layers._cpu_forward), x, k), 2)}   # pylint: disable=W0212


def probe_chunk(quick: bool) -> dict:
  m = models_lib.tiny() if quick else models_lib.shipped()
  out = {"probe": "chunk", "chunk": batching.CPU_CHUNK, "models": m.source}

  b = 4 if quick else 32
  scorer = m.scorer.with_config(batch_size=b)

  program = scorer.generate_and_score_program(m.generator, jax.random.key(0), "58_64f", start=b)
  out["generate_and_score_batch"] = b
  out["generate_and_score_images_per_s"] = round(b / _median_time(program.fn, *program.args, repeats=3), 3)

  b, steps = (4, 3) if quick else (64, 10)
  out["anogan_batch"], out["anogan_steps"] = b, steps
  out["anogan_ms_per_image_step"] = round(1e3 * _search_seconds(m, b, steps) / (b * steps), 3)
  return out


def _run_probe(probe: str, quick: bool, env: dict, variant: str | None = None) -> dict:
  cmd = [sys.executable, "-m", "benchmarks.cpu_paths", "--probe", probe] + (["--quick"] if quick else [])
  cmd += ["--variant", variant] if variant else []
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    return {"probe": probe, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_paths", description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="small shapes and tiny models")
  parser.add_argument("--out", default=None, help="also write the JSON lines to this file")
  parser.add_argument("--probe", choices=PROBES, default=None, help="run one probe in this process (default: all)")
  parser.add_argument("--variant", choices=("custom_vjp", "plain"), default="custom_vjp", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.probe:
    probes = {"conv": probe_conv, "small_channels": probe_small_channels, "chunk": probe_chunk,
              "gradients": lambda quick: probe_gradients(quick, args.variant),
              "kernel_gradient": probe_kernel_gradient, "group_norm": probe_group_norm,
              "one_channel": probe_one_channel}
    print(json.dumps(probes[args.probe](args.quick)))
    return 0
  lines = []
  for name, flags in FLAG_SETS.items():
    line = {"flags_name": name, "xla_flags": flags,
            **_run_probe("conv", args.quick, {**os.environ, "XLA_FLAGS": flags})}
    print(json.dumps(line), flush=True)
    lines.append(line)
  for probe, variant in (("small_channels", None), ("kernel_gradient", None), ("group_norm", None),
                         ("one_channel", None), ("gradients", "custom_vjp"), ("gradients", "plain")):
    line = _run_probe(probe, args.quick, dict(os.environ), variant)
    print(json.dumps(line), flush=True)
    lines.append(line)
  for chunk in CHUNKS:
    line = _run_probe("chunk", args.quick, {**os.environ, "JAXCXR_CPU_CHUNK": chunk})
    print(json.dumps(line), flush=True)
    lines.append(line)
  if args.out:
    io_lib.save_json_lines(args.out, lines)
  return 0


if __name__ == "__main__":
  sys.exit(main())
