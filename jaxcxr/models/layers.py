"""Layers shared by the GAN models (NHWC): convolution, spectral norm, group norm, resampling.

Convolution gradients on a CPU. Inside a `lax.scan` body, XLA:CPU leaves the
convolutions that autodiff emits (kernel and input gradients, dim_labels
`f01b_i01o->01bf` / `b01f_01oi->b01f`) in a slow generic form: a GAN train step
measured 4.4 s as a plain jit but 50 s inside a scan (64x64, batch 16, jax
0.10.2). On a CPU backend `conv2d` therefore has a custom VJP that keeps every
convolution in the canonical NHWC/HWIO forward form: the input gradient is a
forward convolution with the flipped, transposed kernel (itself through the same
rule, so R1's second derivatives stay canonical) and the kernel gradient is a
forward convolution too, of the input with the output gradient, the batch as the
contracted axis. A convolution from one input channel is computed from shifted
copies of the image (XLA's ran at 3 GFLOP/s). Other backends use plain
`lax.conv_general_dilated` and its autodiff (cuDNN).

`conv_path` switches between the two for the functions traced inside it (e.g. to
measure what the custom VJP gains: `benchmarks/cpu_paths.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from flax import nnx

# How `conv2d` computes convolutions with a kernel larger than 1x1 and their gradients:
# "auto" picks by backend (the custom VJP on a CPU, XLA's autodiff elsewhere).
CONV_PATHS = ("auto", "custom_vjp", "xla")
_conv_path = "auto"


def conv_path_in_use() -> str:
  """The path `conv2d` takes when a function is traced now: "custom_vjp" or "xla" (`conv_path` resolved)."""
  if _conv_path != "auto":
    return _conv_path
  return "custom_vjp" if jax.default_backend() == "cpu" else "xla"


@contextlib.contextmanager
def conv_path(path: str) -> Iterator[None]:
  """Chooses, inside the block, how `conv2d` computes its convolutions and their gradients.

  A process-wide setting, read when a function is traced. Entering and leaving the block
  clears JAX's in-memory compilation caches (`jax.clear_caches`) when the path changes, so
  a jitted function called inside the block is traced again with the chosen path and
  never served a program traced with the other (programs compiled ahead of time keep
  theirs). Both paths compute the same functions, float rounding aside; the custom-VJP path
  computes a convolution from one input channel its own way too.

  Args:
    path: "custom_vjp" (every gradient a canonical forward convolution; the default on a
      CPU backend), "xla" (`lax.conv_general_dilated` with XLA's
      own autodiff; the default elsewhere) or "auto" (the default of the backend).

  Raises:
    ValueError: an unknown path.

  Examples:
    >>> x, k = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 4))
    >>> with conv_path("xla"):
    ...   conv_path_in_use(), jax.jit(conv2d)(x, k).shape
    ('xla', (1, 8, 8, 4))
  """
  if path not in CONV_PATHS:
    raise ValueError(f"conv_path: expected one of {CONV_PATHS}, got {path!r}")
  previous = _conv_path
  _set_conv_path(path)
  try:
    yield
  finally:
    _set_conv_path(previous)


def _set_conv_path(path: str) -> None:
  global _conv_path
  if path != _conv_path:
    _conv_path = path
    jax.clear_caches()


def conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 'SAME' 2-D cross-correlation, NHWC input, HWIO kernel (odd size).

  A 1x1 kernel is a matmul; larger ones take the path of `conv_path_in_use()`.
  """
  if kernel.shape[0] == 1:
    return x @ kernel.reshape(kernel.shape[2], kernel.shape[3])
  if conv_path_in_use() == "xla":
    return _xla_conv(x, kernel)
  return _cpu_conv(x, kernel)


def _xla_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def patches(x: jax.Array, k: int) -> jax.Array:
  """im2col: (B, H, W, C) -> (B, H, W, k*k*C), channel index (i * k + j) * C + c ('SAME' zero padding, k odd)."""
  _, h, w, _ = x.shape
  p = k // 2
  padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  return jnp.concatenate([padded[:, i: i + h, j: j + w, :] for i in range(k) for j in range(k)], axis=-1)


def _cpu_forward(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The forward convolution on a CPU: XLA's, except from one input channel.

  From one channel (the first layer of the U-Net, the classifier, the discriminator) XLA:CPU's
  convolution ran at 3 GFLOP/s; the k*k shifted copies of the image times the kernel's rows, summed
  in one elementwise loop, took 2.0 ms against 21.9 ms (8x256x256x1 -> 8, one core;
  `python -m benchmarks.cpu_paths --probe one_channel`). Its gradients stay those of `_cpu_conv`.
  3x3 kernels only: a 7x7 one (HealthyGAN's stem), 49 shifted copies, followed by a GroupNorm ran
  52 ms against XLA's 28 (64x64x64x1 -> 8, one core), though faster alone.
  """
  if kernel.shape[2] != 1 or kernel.shape[0] != 3:
    return _xla_conv(x, kernel)
  k = kernel.shape[0]
  p = k // 2
  _, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  return sum(padded[:, i: i + h, j: j + w, :] * kernel[i, j].reshape(1, 1, 1, -1)
             for i in range(k) for j in range(k))


@jax.custom_vjp
def _cpu_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return _cpu_forward(x, kernel)


def _cpu_conv_fwd(x, kernel):
  return _cpu_forward(x, kernel), (x, kernel)


def _cpu_conv_bwd(residuals, dy):
  x, kernel = residuals
  k = kernel.shape[0]
  # Input gradient: a forward convolution with the flipped, in/out-swapped kernel (canonical form;
  # through _cpu_conv again, so second derivatives, e.g. R1, stay canonical too).
  dx = _cpu_conv(dy, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))
  # Kernel gradient: also a forward convolution, with the batch as the contracted feature axis: x as (C_in, H, W, B)
  # images, dy as a (H, W, B, C_out) kernel, a (k, k) output. Inside a lax.scan, at the base GAN's layer shapes, it
  # took 1.9-8.9 ms against 3.2-39.7 ms for im2col patches times one matmul (whose 9x copy of x was 17% of the GAN
  # training step; equal at 16x16 and 32x32 with 32-64 channels) and 150-870 ms for XLA's own transpose
  # (`python -m benchmarks.cpu_paths --probe kernel_gradient`, one core).
  p = k // 2
  dk = jax.lax.conv_general_dilated(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), (1, 1), ((p, p), (p, p)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))   # (C_in, k, k, C_out)
  return dx, dk.transpose(1, 2, 0, 3).astype(kernel.dtype)


_cpu_conv.defvjp(_cpu_conv_fwd, _cpu_conv_bwd)


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
  """(B, H, W, b*b*C) -> (B, b*H, b*W, C); channel index = (dy * b + dx) * C + c."""
  b, h, w, c = x.shape
  c_out = c // (block * block)
  x = x.reshape(b, h, w, block, block, c_out)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * block, w * block, c_out)


def upsample2(x: jax.Array) -> jax.Array:
  """Bilinear 2x up-sampling with half-pixel centres and edge replication, (B, H, W, C) -> (B, 2H, 2W, C).

  Output pixel 2i is 3/4 x[i] + 1/4 x[i-1], pixel 2i+1 is 3/4 x[i] + 1/4 x[i+1] (per axis), the
  same as `jax.image.resize(..., "linear")` in the interior. Every output pixel is made by the
  same filter, so a convolution after it cannot produce a fixed 2x2 (checkerboard) pattern.
  """

  def along(t: jax.Array, axis: int) -> jax.Array:
    n = t.shape[axis]
    prev = jnp.concatenate([jax.lax.slice_in_dim(t, 0, 1, axis=axis), jax.lax.slice_in_dim(t, 0, n - 1, axis=axis)],
                           axis=axis)
    nxt = jnp.concatenate([jax.lax.slice_in_dim(t, 1, n, axis=axis), jax.lax.slice_in_dim(t, n - 1, n, axis=axis)],
                          axis=axis)
    even, odd = 0.75 * t + 0.25 * prev, 0.75 * t + 0.25 * nxt
    stacked = jnp.stack([even, odd], axis=axis + 1)
    return stacked.reshape(t.shape[:axis] + (2 * n,) + t.shape[axis + 1:])

  return along(along(x, 1), 2)


def avg_pool2(x: jax.Array) -> jax.Array:
  """2x2 average pooling, (B, H, W, C) -> (B, H/2, W/2, C)."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _add_bias(y: jax.Array, bias: nnx.Param | None, dtype) -> jax.Array:
  if bias is None:
    return y
  return y + bias[...].astype(dtype).reshape((1,) * (y.ndim - 1) + (-1,))


class Conv(nnx.Module):
  """Stride-1 'SAME' convolution with float32 parameters `kernel` (HWIO) and `bias`; NHWC."""

  def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, *, kernel_init=None,
               use_bias: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
    kernel_init = kernel_init or nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    shape = (kernel_size, kernel_size, in_features, out_features)
    self.kernel = nnx.Param(kernel_init(rngs.params(), shape, jnp.float32))
    self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    y = conv2d(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    return _add_bias(y, self.bias, self.dtype)


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x), eps))


class SpectralConv(nnx.Module):
  """Convolution (or, with `kernel_size=None`, dense layer) with spectrally normalised weights.

  The kernel, reshaped to a (k*k*c_in, c_out) matrix W, is divided by its largest
  singular value, estimated with one power-iteration step from the stored `u`
  (Miyato et al. 2018). The parameter itself is never modified (unlike
  `nnx.SpectralNorm`, which writes W / sigma back into the wrapped layer on every
  call). `u` (an `nnx.BatchStat`) is written back only in training mode; under
  `nnx.view(model, use_running_average=True)` the layer is a pure function of its
  weights and `u`. Inputs and outputs are NHWC (or (B, features) when dense).
  """

  def __init__(self, in_features: int, out_features: int, kernel_size: int | None = 3, *,
               use_bias: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
    shape = ((in_features, out_features) if kernel_size is None
             else (kernel_size, kernel_size, in_features, out_features))
    # Orthogonal init (BigGAN): every singular value of the (K, c_out) matrix is 1, so dividing by
    # sigma does not shrink the activations. A fan-in Gaussian has sigma ~ 1 + sqrt(c_out / K), and
    # a dozen such layers scaled the initial logits down to ~1e-3 (D stuck at chance for 400 steps).
    init = nnx.initializers.orthogonal()
    self.kernel = nnx.Param(init(rngs.params(), shape, jnp.float32))
    self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None
    self.u = nnx.BatchStat(_l2_normalize(jax.random.normal(rngs.params(), (out_features,), jnp.float32)))
    self.kernel_size = kernel_size
    self.dtype = dtype
    # Training mode writes the power-iteration vector back; nnx.view(..., use_running_average=True) freezes it.
    self.use_running_average = False

  def set_view(self, use_running_average: bool | None = None):
    """Used by `nnx.view`.

    Args:
      use_running_average: if True, `u` is not updated (deterministic inference).
    """
    if use_running_average is not None:
      self.use_running_average = use_running_average

  def normalized_kernel(self) -> jax.Array:
    """The kernel divided by its estimated spectral norm (float32; gradients flow through sigma)."""
    kernel = self.kernel[...]
    w = kernel.reshape(-1, kernel.shape[-1])                     # (K, c_out)
    v = jax.lax.stop_gradient(_l2_normalize(w @ self.u[...]))   # (K,)
    u = jax.lax.stop_gradient(_l2_normalize(v @ w))             # (c_out,)
    sigma = v @ (w @ u)
    if not self.use_running_average:
      self.u[...] = u
    return kernel / sigma

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.normalized_kernel().astype(self.dtype)
    x = x.astype(self.dtype)
    y = x @ kernel if self.kernel_size is None else conv2d(x, kernel)
    return _add_bias(y, self.bias, self.dtype)


class GroupNorm(nnx.Module):
  """Group normalisation over (H, W, C/groups) per image, statistics in float32, NHWC.

  Our own rather than `nnx.GroupNorm`, whose bfloat16 path relies on implicit
  float32 promotion (an error under `jax_numpy_dtype_promotion="strict"`).
  """

  def __init__(self, channels: int, groups: int, *, dtype, epsilon: float = 1e-5):
    if channels % groups:
      raise ValueError(f"GroupNorm: {channels} channels are not divisible into {groups} groups")
    self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))
    self.groups = groups
    self.epsilon = epsilon
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    per_group = c // self.groups
    n = h * w * per_group
    xf = x.astype(jnp.float32).reshape(b, h * w, c)
    # Two passes (the mean, then the centred squares), each a contraction over the pixels: XLA:CPU runs these as
    # matmuls, where a mean over axes (1, 2, 4) of the grouped view was a strided reduction. Forward and backward of
    # the 256x256 U-Net's GroupNorms took 36% of its training step; with contractions forward and backward took
    # 1.5-3.8x less time at the U-Net's and GAN's shapes (`python -m benchmarks.cpu_paths --probe group_norm`).
    # Same statistics, float rounding aside.
    mean = jnp.einsum("bpc,p->bc", xf, jnp.ones((h * w,), jnp.float32)).reshape(b, self.groups, per_group)
    mean = jnp.repeat(mean.sum(-1) / n, per_group, axis=1)                     # (B, C), per group
    centred = xf - mean[:, None, :]
    var = jnp.einsum("bpc,bpc->bc", centred, centred).reshape(b, self.groups, per_group)
    inv = jnp.repeat(jax.lax.rsqrt(var.sum(-1) / n + self.epsilon), per_group, axis=1)
    y = centred * (inv * self.scale[...].reshape(1, c))[:, None, :] + self.bias[...].reshape(1, 1, c)
    return y.reshape(b, h, w, c).astype(self.dtype)
