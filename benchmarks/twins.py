"""PyTorch twins of jaxcxr's networks and compiled pipelines, for the benchmark suite (NCHW).

Each twin does the same work as its jaxcxr counterpart: the same layers and shapes, the
same compute dtype (float32 parameters, convolutions in `dtype`, normalisation
statistics in float32), the same losses and optimiser steps. Its weights are copied
from the NNX module (`from_nnx`), and it reproduces jaxcxr's outputs to float32
rounding (tests/test_twins.py measures the differences). The twins run eagerly and under
`torch.compile` (both checked on a CPU) and use no CPU-only op; run inference under
`torch.no_grad()` (Grad-CAM takes a gradient of the classifier head, which
`torch.inference_mode()` forbids). Only jaxcxr's models are read (`from_nnx`): this
module imports neither jax nor jaxcxr.

Layout. Images are NCHW here, NHWC in jaxcxr. Module and attribute names are jaxcxr's
(`stem`, `blocks[i].conv1`, `out_film`, ...), so a parameter is found under the same
path in both. Weights are converted once, at load time:

* convolution kernels HWIO (kh, kw, in, out) -> OIHW (out, in, kh, kw); dense kernels
  (in, out) -> (out, in);
* sub-pixel channel order: jaxcxr's `depth_to_space` reads channel (dy * 2 + dx) * C + c,
  torch's `pixel_shuffle` channel c * 4 + dy * 2 + dx. The output channels of the
  convolution before a `pixel_shuffle` (and the input channels of the convolution after
  a `pixel_unshuffle`, the translator's `space_to_depth`) are permuted, so no extra op runs;
* the generator's input layer (z -> 4x4 map) has its outputs, and the f-AnoGAN encoder's
  output layer its inputs, reordered for an NCHW reshape;
* spectral norm keeps W as torch's (out, K) matrix, jaxcxr's (K, out) with its rows in
  another order: the power-iteration step and sigma are the same numbers.

Where a twin is not exactly jaxcxr's work, its docstring says so.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "TorchClassifier",
    "TorchClassifierEnsemble",
    "TorchDiscriminator",
    "TorchEncoder",
    "TorchGanTrainStep",
    "TorchGenerateAndScore",
    "TorchGenerator",
    "TorchScorer",
    "TorchTranslator",
    "TorchUNet",
    "TorchUNetTrainStep",
    "TorchUpsampler",
    "Render",
    "anogan_search",
    "anogan_search_per_image",
    "augment",
    "classifier_twin",
    "clipped_step",
    "diff_augment",
    "draw_augment",
    "draw_diff_augment",
    "fanogan_scores",
    "gaussian_blur",
    "grad_cam",
    "healthygan_scores",
    "label_map",
    "lung_measures",
    "resize_linear",
    "score_from_measures",
    "segmentation_loss",
    "symmetry_features",
]

_THRESHOLDS = ("shape_min", "symmetry_min", "log_ratio_min", "log_ratio_max", "abnormal_logit_max", "maxheat_max")


# ----------------------------------------------------------------------------- weights and layers


def _array(variable) -> np.ndarray:
  """An NNX variable (or array) as a float32 numpy copy."""
  return np.array(variable[...], np.float32)


def _torch_dtype(name: str) -> torch.dtype:
  return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def _param(array: np.ndarray) -> nn.Parameter:
  return nn.Parameter(torch.from_numpy(np.ascontiguousarray(array, np.float32)))


def _phase_minor(channels: int, phases: int = 4) -> np.ndarray:
  """perm[j]: the jaxcxr channel (phase * C + c) of torch's channel j = c * phases + phase."""
  j = np.arange(channels)
  return (j % phases) * (channels // phases) + j // phases


class Conv(nn.Module):
  """Convolution with symmetric padding k // 2, computing in `dtype` (bias added in `dtype`), NCHW.

  The twin of `layers.Conv` (stride 1, 'SAME') and of the `nnx.Conv`s of the U-Net and
  the classifier (symmetric padding, strides 1 or 2). `out_perm` / `in_perm` reorder the
  output / input channels (torch channel j takes jaxcxr channel perm[j]).
  """

  def __init__(self, kernel: np.ndarray, bias: np.ndarray | None = None, *, stride: int = 1,
               dtype: torch.dtype = torch.float32, out_perm: np.ndarray | None = None,
               in_perm: np.ndarray | None = None):
    super().__init__()
    if out_perm is not None:
      kernel = kernel[..., out_perm]
      bias = None if bias is None else bias[out_perm]
    if in_perm is not None:
      kernel = kernel[:, :, in_perm, :]
    self.weight = _param(kernel.transpose(3, 2, 0, 1))               # (out, in, kh, kw)
    self.bias = None if bias is None else _param(bias)
    self.stride = stride
    self.padding = kernel.shape[0] // 2
    self.dtype = dtype

  @classmethod
  def from_nnx(cls, conv, **kwargs) -> Conv:
    bias = None if conv.bias is None else _array(conv.bias)
    return cls(_array(conv.kernel), bias, **kwargs)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    bias = None if self.bias is None else self.bias.to(self.dtype)
    return F.conv2d(x.to(self.dtype), self.weight.to(self.dtype), bias, self.stride, self.padding)


class Linear(nn.Module):
  """Dense layer computing in `dtype` (the twin of `nnx.Linear`); `out_perm` / `in_perm` reorder features."""

  def __init__(self, kernel: np.ndarray, bias: np.ndarray | None, *, dtype: torch.dtype = torch.float32,
               out_perm: np.ndarray | None = None, in_perm: np.ndarray | None = None):
    super().__init__()
    if out_perm is not None:
      kernel, bias = kernel[:, out_perm], None if bias is None else bias[out_perm]
    if in_perm is not None:
      kernel = kernel[in_perm]
    self.weight = _param(kernel.T)                                   # (out, in)
    self.bias = None if bias is None else _param(bias)
    self.dtype = dtype

  @classmethod
  def from_nnx(cls, linear, **kwargs) -> Linear:
    return cls(_array(linear.kernel), None if linear.bias is None else _array(linear.bias), **kwargs)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    bias = None if self.bias is None else self.bias.to(self.dtype)
    return F.linear(x.to(self.dtype), self.weight.to(self.dtype), bias)


class GroupNorm(nn.Module):
  """Group normalisation with float32 statistics, output in `dtype` (twin of `layers.GroupNorm`, `nnx.GroupNorm`).

  `nnx.GroupNorm` (the classifier's) computes the variance as E[x^2] - E[x]^2, torch and
  `layers.GroupNorm` as E[(x - mean)^2]: equal up to float32 rounding.
  """

  def __init__(self, norm, dtype: torch.dtype = torch.float32):
    super().__init__()
    self.weight = _param(_array(norm.scale))
    self.bias = _param(_array(norm.bias))
    self.groups = getattr(norm, "num_groups", None) or norm.groups     # nnx.GroupNorm or layers.GroupNorm
    self.eps = float(norm.epsilon)
    self.dtype = dtype

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.group_norm(x.float(), self.groups, self.weight, self.bias, self.eps).to(self.dtype)


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
  return x * torch.rsqrt(torch.clamp_min(torch.sum(x * x), 1e-12))


class SpectralConv(nn.Module):
  """Twin of `layers.SpectralConv`: a convolution (or dense layer) with W / sigma, sigma from one power step.

  Every call runs one power-iteration step from the stored `u` (no gradient through
  v and u, gradients flow through sigma), as jaxcxr does in both modes; in training mode
  (`.train()`) the new u is written back, in inference mode (`.eval()`) it is only read.
  """

  def __init__(self, layer, dtype: torch.dtype):
    super().__init__()
    kernel = _array(layer.kernel)
    self.dense = layer.kernel_size is None
    self.weight = _param(kernel.T if self.dense else kernel.transpose(3, 2, 0, 1))
    self.bias = None if layer.bias is None else _param(_array(layer.bias))
    self.register_buffer("u", torch.from_numpy(_array(layer.u)))
    self.dtype = dtype

  def normalized_weight(self) -> torch.Tensor:
    """The weight divided by its estimated spectral norm (float32)."""
    w = self.weight.reshape(self.weight.shape[0], -1)                # (c_out, K): W^T
    with torch.no_grad():
      v = _l2_normalize(self.u @ w)                                  # (K,)
      u = _l2_normalize(w @ v)                                       # (c_out,)
      if self.training:
        self.u.copy_(u)
    sigma = torch.dot(v, u @ w)
    return self.weight / sigma

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    weight = self.normalized_weight().to(self.dtype)
    bias = None if self.bias is None else self.bias.to(self.dtype)
    if self.dense:
      return F.linear(x.to(self.dtype), weight, bias)
    return F.conv2d(x.to(self.dtype), weight, bias, 1, weight.shape[-1] // 2)


def upsample2(x: torch.Tensor) -> torch.Tensor:
  """Twin of `layers.upsample2`: torch's half-pixel bilinear 2x is the same filter with edge replication."""
  return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def resize_linear(x: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
  """Twin of `jax.image.resize(x, ..., "linear", antialias)` over H and W, NCHW.

  jax builds a dense (in, out) triangle-filter matrix per axis and contracts; torch's
  (antialiased) bilinear interpolation applies the same weights (measured equal to
  2.4e-7). As jax does, a size that does not change is skipped.
  """
  if tuple(x.shape[-2:]) == tuple(size):
    return x
  return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias)


class _Twin(nn.Module):
  """A twin of a whole jaxcxr model, built from it by `from_nnx`."""

  @classmethod
  def from_nnx(cls, module, dtype: str | None = None):
    """The twin of an NNX model, weights copied, in inference mode (call `.train()` for training).

    Args:
      module: the jaxcxr model.
      dtype: compute dtype, "float32" or "bfloat16"; None takes the model's `config.dtype`.
    """
    return cls(module, _torch_dtype(dtype or module.config.dtype)).eval()


# ----------------------------------------------------------------------------- generator


class FiLM(nn.Module):
  """x * (1 + gamma) + beta with (gamma, beta) a dense function of the style vector w."""

  def __init__(self, film, dtype: torch.dtype):
    super().__init__()
    self.proj = Linear.from_nnx(film.proj, dtype=dtype)

  def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    gamma, beta = self.proj(w).to(x.dtype).chunk(2, dim=1)         # (B, C) each
    return x * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]


class UpBlock(nn.Module):
  """Twin of `generator.UpBlock` ("resize": bilinear 2x then conv; "subpixel": conv then pixel_shuffle)."""

  def __init__(self, block, dtype: torch.dtype):
    super().__init__()
    self.subpixel = block.upsampling == "subpixel"
    perm = _phase_minor(block.conv1.kernel.shape[-1]) if self.subpixel else None
    self.norm1 = GroupNorm(block.norm1, dtype)
    self.film1 = FiLM(block.film1, dtype)
    self.conv1 = Conv.from_nnx(block.conv1, dtype=dtype, out_perm=perm)
    self.norm2 = GroupNorm(block.norm2, dtype)
    self.film2 = FiLM(block.film2, dtype)
    self.conv2 = Conv.from_nnx(block.conv2, dtype=dtype)
    self.skip = Conv.from_nnx(block.skip, dtype=dtype, out_perm=perm)

  def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    h = F.relu(self.film1(self.norm1(x), w))
    if self.subpixel:
      h = F.pixel_shuffle(self.conv1(h), 2)
      skip = F.pixel_shuffle(self.skip(x), 2)
    else:
      h = self.conv1(upsample2(h))
      skip = upsample2(self.skip(x))
    h = F.relu(self.film2(self.norm2(h), w))
    return self.conv2(h) + skip


def leaky_relu(x: torch.Tensor, negative_slope: float) -> torch.Tensor:
  """jax.nn.leaky_relu: where(x >= 0, x, slope * x), derivative 1 at 0 (torch's F.leaky_relu has the slope there).

  The difference shows in gradients wherever an activation is exactly 0, e.g. a bias-free
  convolution over DiffAugment's cutout (zeros): R1 differed by 8% with F.leaky_relu.
  """
  return torch.where(x >= 0, x, x * negative_slope)


def _leaky(x: torch.Tensor) -> torch.Tensor:
  return leaky_relu(x, 0.2)


class _ResidualBlock(nn.Module):
  def __init__(self, block, dtype: torch.dtype):
    super().__init__()
    self.conv1 = Conv.from_nnx(block.conv1, dtype=dtype)
    self.conv2 = Conv.from_nnx(block.conv2, dtype=dtype)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x + self.conv2(_leaky(self.conv1(_leaky(x))))


class _Stage(nn.Module):
  def __init__(self, stage, dtype: torch.dtype):
    super().__init__()
    self.conv1 = Conv.from_nnx(stage.conv1, dtype=dtype)
    self.conv2 = Conv.from_nnx(stage.conv2, dtype=dtype)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return _leaky(self.conv2(_leaky(self.conv1(upsample2(x)))))


class TorchUpsampler(_Twin):
  """Twin of `models.upsampler.Upsampler` without noise inputs: (B, 1, h, w) in [-1, 1] -> scale x larger.

  Raises:
    NotImplementedError: for an upsampler with noise inputs (`config.noise=True`): its
      noise comes from jax's PRNG as a function of the latent, which torch cannot draw.
  """

  def __init__(self, upsampler, dtype: torch.dtype):
    super().__init__()
    if upsampler.config.noise:
      raise NotImplementedError("TorchUpsampler: upsamplers with noise inputs (config.noise=True) are not twinned; "
                                "their noise is jax's PRNG of the latent")
    self.stem = Conv.from_nnx(upsampler.stem, dtype=dtype)
    self.blocks = nn.ModuleList([_ResidualBlock(b, dtype) for b in upsampler.blocks])
    self.stages = nn.ModuleList([_Stage(s, dtype) for s in upsampler.stages])
    self.out = Conv.from_nnx(upsampler.out, dtype=dtype)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    base = x.float()
    h = self.stem(base)
    for block in self.blocks:
      h = block(h)
    for stage in self.stages:
      h = stage(h)
      base = upsample2(base)
    return torch.clamp(base + self.out(h).float(), -1.0, 1.0)


class TorchGenerator(_Twin):
  """Twin of `models.Generator`: (z (B, latent_dim), cond (B, C)) -> (B, 1, R, R) float32 in [-1, 1].

  A cascade's upsampler computes in its own config's dtype, as in jaxcxr (where a
  generator's dtype, e.g. `scoring.split_with_dtype`, does not reach its upsampler).
  """

  def __init__(self, generator, dtype: torch.dtype):
    super().__init__()
    cfg = generator.config
    self.latent_dim, self.resolution, self.c0 = cfg.latent_dim, cfg.resolution, cfg.channels[0]
    j = np.arange(16 * self.c0)
    self.cond_embed = Linear.from_nnx(generator.cond_embed)
    # jaxcxr reshapes the input layer's output to (B, 4, 4, C0); reorder it for (B, C0, 4, 4).
    self.input = Linear.from_nnx(generator.input, dtype=dtype, out_perm=(j % 16) * self.c0 + j // 16)
    self.blocks = nn.ModuleList([UpBlock(b, dtype) for b in generator.blocks])
    self.out_norm = GroupNorm(generator.out_norm, dtype)
    self.out_film = FiLM(generator.out_film, dtype)
    self.out_conv = Conv.from_nnx(generator.out_conv, dtype=dtype)
    up = generator.upsampler
    self.upsampler = None if up is None else TorchUpsampler(up, _torch_dtype(up.config.dtype))

  def base_image(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """The blocks' image, float32 (B, 1, base_resolution, base_resolution) in [-1, 1]."""
    w = torch.cat([z.float(), self.cond_embed(cond.float())], dim=1)
    x = self.input(w).reshape(z.shape[0], self.c0, 4, 4)
    for block in self.blocks:
      x = block(x, w)
    x = F.relu(self.out_film(self.out_norm(x), w))
    return torch.tanh(self.out_conv(x).float())

  def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    x = self.base_image(z, cond)
    return x if self.upsampler is None else self.upsampler(x)


# ----------------------------------------------------------------------------- discriminator


class _DownBlock(nn.Module):
  def __init__(self, block, dtype: torch.dtype):
    super().__init__()
    self.conv1 = SpectralConv(block.conv1, dtype)
    self.conv2 = SpectralConv(block.conv2, dtype)
    self.skip = SpectralConv(block.skip, dtype)
    self.negative_slope = block.negative_slope

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    act = lambda t: leaky_relu(t, self.negative_slope)
    h = F.avg_pool2d(act(self.conv1(act(x))), 2)
    return self.conv2(h) + self.skip(F.avg_pool2d(x, 2))


class TorchDiscriminator(_Twin):
  """Twin of `models.Discriminator` (spectral norm as `layers.SpectralConv`); `.eval()` is jaxcxr's inference view."""

  def __init__(self, discriminator, dtype: torch.dtype):
    super().__init__()
    cfg = discriminator.config
    self.resolution, self.negative_slope = cfg.resolution, cfg.negative_slope
    self.stem = SpectralConv(discriminator.stem, dtype)
    self.blocks = nn.ModuleList([_DownBlock(b, dtype) for b in discriminator.blocks])
    self.linear = SpectralConv(discriminator.linear, torch.float32)
    self.embed = SpectralConv(discriminator.embed, torch.float32)

  def features(self, x: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) in [-1, 1] (S = resolution * 2**k, pooled k times) -> float32 (B, C, 4, 4)."""
    while x.shape[-1] > self.resolution:
      x = F.avg_pool2d(x, 2)
    h = self.stem(x)
    for block in self.blocks:
      h = block(h)
    return leaky_relu(h, self.negative_slope).float()

  def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Projection logits psi(h) + <embed(cond), h>, float32 (B,)."""
    h = self.features(x).sum(dim=(2, 3))                            # (B, C)
    return self.linear(h)[:, 0] + torch.sum(self.embed(cond.float()) * h, dim=-1)


# ----------------------------------------------------------------------------- U-Net


class _ConvBlock(nn.Module):
  def __init__(self, block, dtype: torch.dtype):
    super().__init__()
    self.conv1 = Conv.from_nnx(block.conv1, dtype=dtype)
    self.norm1 = GroupNorm(block.norm1, dtype)
    self.conv2 = Conv.from_nnx(block.conv2, dtype=dtype)
    self.norm2 = GroupNorm(block.norm2, dtype)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(self.norm1(self.conv1(x)))
    return F.relu(self.norm2(self.conv2(x)))


class TorchUNet(_Twin):
  """Twin of `models.UNet`: (B, 1, H, W) in [0, 1] -> (B, num_classes, H, W) float32 logits.

  The sub-pixel up-convolutions are 1x1 convolutions and `pixel_shuffle` (channels permuted at load).
  """

  def __init__(self, unet, dtype: torch.dtype):
    super().__init__()
    self.resolution, self.dtype = unet.config.resolution, dtype
    self.encoder = nn.ModuleList([_ConvBlock(b, dtype) for b in unet.encoder])
    self.up = nn.ModuleList([Conv.from_nnx(u.conv, dtype=dtype, out_perm=_phase_minor(u.conv.kernel.shape[-1]))
                             for u in unet.up])
    self.decoder = nn.ModuleList([_ConvBlock(b, dtype) for b in unet.decoder])
    self.head = Conv.from_nnx(unet.head, dtype=dtype)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h = (x.float() * 2.0 - 1.0).to(self.dtype)
    skips = []
    for i, block in enumerate(self.encoder):
      if i:
        h = F.max_pool2d(h, 2)
      h = block(h)
      skips.append(h)
    for i in reversed(range(len(self.decoder))):
      h = F.pixel_shuffle(self.up[i](h), 2)
      h = self.decoder[i](torch.cat([h, skips[i]], dim=1))
    return self.head(h).float()


def label_map(unet: TorchUNet, images: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
  """Twin of `models.unet.label_map`: (B, H, W) in [0, 1] -> uint8 (B, *out_hw) lung labels.

  Resize to the U-Net's side (antialiased bilinear), logits, bilinear back to `out_hw`, argmax.
  """
  r = unet.resolution
  logits = unet(resize_linear(images[:, None].float(), (r, r)))
  logits = resize_linear(logits, out_hw, antialias=False)
  return logits.argmax(dim=1).to(torch.uint8)


# ----------------------------------------------------------------------------- classifier and Grad-CAM


class _BasicBlock(nn.Module):
  def __init__(self, block, dtype: torch.dtype):
    super().__init__()
    stride = _stride(block.conv1)
    self.conv1 = Conv.from_nnx(block.conv1, stride=stride, dtype=dtype)
    self.norm1 = GroupNorm(block.norm1)
    self.conv2 = Conv.from_nnx(block.conv2, dtype=dtype)
    self.norm2 = GroupNorm(block.norm2)
    self.skip_conv = None if block.skip_conv is None else Conv.from_nnx(block.skip_conv, stride=stride, dtype=dtype)
    self.skip_norm = None if block.skip_norm is None else GroupNorm(block.skip_norm)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h = F.relu(self.norm1(self.conv1(x)))
    h = self.norm2(self.conv2(h))
    skip = x if self.skip_conv is None else self.skip_norm(self.skip_conv(x))
    return F.relu(h + skip)


def _stride(conv) -> int:
  strides = conv.strides
  return int(strides if isinstance(strides, int) else strides[0])


class TorchClassifier(_Twin):
  """Twin of `models.classifier.Classifier` ("full" or "halves" input): (B, 1, R, R) in [0, 1] -> (B,) logits.

  Padding is symmetric k // 2 as in jaxcxr (torchvision's), max pooling pads with -inf.
  """

  def __init__(self, classifier, dtype: torch.dtype):
    super().__init__()
    cfg = classifier.config
    self.resolution, self.num_segments, self.crop_rows = cfg.resolution, classifier.num_segments, classifier.crop_rows
    self.stem_pool = cfg.stem_pool
    self.stem_conv = Conv.from_nnx(classifier.stem_conv, stride=cfg.stem_stride, dtype=dtype)
    self.stem_norm = GroupNorm(classifier.stem_norm)
    self.stages = nn.ModuleList([nn.ModuleList([_BasicBlock(b, dtype) for b in stage])
                                 for stage in classifier.stages])
    self.linear = Linear.from_nnx(classifier.linear)

  def _backbone(self, x: torch.Tensor) -> torch.Tensor:
    h = F.relu(self.stem_norm(self.stem_conv(x)))
    if self.stem_pool:
      h = F.max_pool2d(h, 3, 2, padding=1)
    for stage in self.stages:
      for block in stage:
        h = block(h)
    return h.float()

  def features(self, x: torch.Tensor) -> torch.Tensor:
    """Last feature map, float32 (B, C, h, w); in "halves" mode the two halves side by side (right one mirrored back)."""
    if self.num_segments == 1:
      return self._backbone(x)
    b, r = x.shape[0], self.resolution
    x = x[:, :, self.crop_rows:]
    left, right = x[..., : r // 2], x[..., r // 2:].flip(-1)
    f = self._backbone(torch.cat([left, right], dim=0))
    return torch.cat([f[:b], f[b:].flip(-1)], dim=-1)

  def head(self, feature_map: torch.Tensor) -> torch.Tensor:
    w = feature_map.shape[-1] // self.num_segments
    pooled = torch.cat([feature_map[..., s * w:(s + 1) * w].mean(dim=(2, 3)) for s in range(self.num_segments)],
                       dim=1)
    return self.linear(pooled)[:, 0]

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.head(self.features(x))


class TorchClassifierEnsemble(_Twin):
  """Twin of `models.ensemble.ClassifierEnsemble`: members' maps plus the pixel model's cell map; mean of logits."""

  def __init__(self, ensemble, dtype: torch.dtype):
    super().__init__()
    self.resolution, self.num_segments, self.crop_rows = ensemble.config.resolution, 1, 0
    self.members = nn.ModuleList([TorchClassifier(m, dtype) for m in ensemble.members])
    self.pixel_size = ensemble.config.pixel_size
    if self.pixel_size:
      self.pixel_weight = _param(_array(ensemble.pixel.weight))
      self.pixel_bias = _param(_array(ensemble.pixel.bias))

  def features(self, x: torch.Tensor) -> torch.Tensor:
    maps = [m.features(x) for m in self.members]
    if self.pixel_size:
      h, w, s = maps[0].shape[2], maps[0].shape[3], self.pixel_size
      b, k = x.shape[0], x.shape[-1] // s
      means = x[:, 0].float().reshape(b, s, k, s, k).mean(dim=(2, 4))                     # (B, S, S)
      cells = (means * self.pixel_weight).reshape(b, h, s // h, w, s // w).sum(dim=(2, 4))  # (B, h, w)
      maps.append((cells * (h * w))[:, None])
    return torch.cat(maps, dim=1)

  def head(self, feature_map: torch.Tensor) -> torch.Tensor:
    c = feature_map.shape[1] - (1 if self.pixel_size else 0)
    per = c // len(self.members)
    logits = [m.head(feature_map[:, i * per:(i + 1) * per]) for i, m in enumerate(self.members)]
    if self.pixel_size:
      logits.append(feature_map[:, -1].mean(dim=(1, 2)) + self.pixel_bias)
    return sum(logits) / len(logits)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.head(self.features(x))


def classifier_twin(classifier, dtype: str | None = None) -> TorchClassifier | TorchClassifierEnsemble:
  """The twin of a `Classifier` or a `ClassifierEnsemble` (what `load_classifier` returns)."""
  cls = TorchClassifierEnsemble if hasattr(classifier, "members") else TorchClassifier
  return cls.from_nnx(classifier, dtype)


def grad_cam(model: TorchClassifier | TorchClassifierEnsemble, x: torch.Tensor, sign: float = 1.0, *,
             heatmap: bool = True) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
  """Twin of `jaxcxr.explain.grad_cam_pure`: one forward pass, the head's vector-Jacobian product, the maps.

  Args:
    model: a classifier twin.
    x: (B, 1, R, R) in [0, 1].
    sign: +1 explains the logit, -1 minus the logit.
    heatmap: also make the normalised heatmap; the scoring pipeline uses only the raw
      maximum, and jaxcxr's compiled scoring never computes the heatmap it does not return.

  Returns:
    (heatmap float32 (B, R, R) in [0, 1] or None, raw_max float32 (B,), logits float32 (B,)).
  """
  r, segments, crop = model.resolution, model.num_segments, model.crop_rows
  feature_map = model.features(x).float().detach()
  with torch.enable_grad():
    feature_map.requires_grad_(True)
    logits = model.head(feature_map)
    (grads,) = torch.autograd.grad(logits, feature_map, torch.full_like(logits, sign))
  feature_map, logits = feature_map.detach(), logits.detach()
  h, w = feature_map.shape[2:]
  ws = w // segments
  cams = []
  for s in range(segments):
    alpha = grads[..., s * ws:(s + 1) * ws].mean(dim=(2, 3))                         # (B, C)
    cam = torch.einsum("bchw,bc->bhw", feature_map[..., s * ws:(s + 1) * ws], alpha) * (h * ws)
    cams.append(F.relu(cam))
  raw_max = torch.cat(cams, dim=2).amax(dim=(1, 2))
  if not heatmap:
    return None, raw_max, logits
  region_w = r // segments
  up = torch.cat([resize_linear(c[:, None], (r - crop, region_w))[:, 0] for c in cams], dim=2)
  up = F.pad(F.relu(up), (0, r - segments * region_w, crop, 0))
  peak = up.amax(dim=(1, 2), keepdim=True)
  normalized = torch.where(peak > 0, up / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(up))
  return torch.clamp(normalized, 0.0, 1.0), raw_max, logits


# ----------------------------------------------------------------------------- post-filter scoring


def _half_features(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
  area_a, area_b = a.sum(dim=(1, 2)), b.sum(dim=(1, 2))
  inter = (a * b).sum(dim=(1, 2))
  union = area_a + area_b - inter
  zero = torch.zeros_like(inter)
  iou = torch.where(union > 0, inter / torch.clamp_min(union, 1.0), zero)
  norm = torch.sqrt(area_a * area_b)
  cosine = torch.where(norm > 0, inter / torch.clamp_min(norm, 1e-12), zero)
  total = area_a + area_b
  deviation = torch.square(torch.where(total > 0, area_a / torch.clamp_min(total, 1.0), zero) - 0.5)
  return torch.stack([iou, cosine, deviation], dim=-1)


def symmetry_features(labels: torch.Tensor, dilation: int = 5) -> torch.Tensor:
  """Twin of `scoring.symmetry_features`: label maps (B, H, W) -> float32 (B, 6).

  The k x k dilation is a stride-1 max pool (jaxcxr: `lax.reduce_window` max); its
  -inf padding and jaxcxr's 0 give the same maxima on {0, 1} masks.
  """
  m = (labels > 0).float()
  w = m.shape[-1]
  a, b = m[..., : w // 2], m[..., w // 2:].flip(-1)
  dilate = lambda t: t if dilation == 1 else F.max_pool2d(t[:, None], dilation, 1, dilation // 2)[:, 0]
  return torch.cat([_half_features(a, b), _half_features(dilate(a), dilate(b))], dim=-1)


def _soft_dice(m: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
  inter = (m * p[None]).sum(dim=(1, 2))
  total = m.sum(dim=(1, 2)) + p.sum()
  return torch.where(total > 0, 2.0 * inter / torch.clamp_min(total, 1e-12), torch.zeros_like(total))


def lung_measures(labels: torch.Tensor, atlas: torch.Tensor) -> dict[str, torch.Tensor]:
  """Twin of `scoring.lung_measures`: labels (B, S, S) and atlas (2, A, A) -> float32 (B,) measures."""
  b, s, _ = labels.shape
  a = atlas.shape[-1]
  right, left = (labels == 1).float(), (labels == 2).float()
  pool = lambda m: m.reshape(b, a, s // a, a, s // a).mean(dim=(2, 4))
  shape = torch.minimum(_soft_dice(pool(right), atlas[0]), _soft_dice(pool(left), atlas[1]))
  area_right, area_left = right.sum(dim=(1, 2)), left.sum(dim=(1, 2))
  total = area_right + area_left
  overlap = (right * left.flip(-1)).sum(dim=(1, 2))
  symmetry = torch.where(total > 0, 2.0 * overlap / torch.clamp_min(total, 1.0), torch.zeros_like(total))
  log_ratio = torch.log((area_left + 1.0) / (area_right + 1.0))
  return {"shape": shape, "symmetry": symmetry, "log_ratio": log_ratio, "area_right": area_right,
          "area_left": area_left}


def score_from_measures(measures: dict[str, torch.Tensor], calibration) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
  """Twin of `scoring.score_from_measures`: ({name: (B,)} for `scoring.SCORE_NAMES`, bool (B,) valid).

  `calibration` is anything with the threshold attributes of `scoring.Calibration`.
  """
  c = calibration
  lr = measures["log_ratio"]
  any_lung = (measures["area_right"] + measures["area_left"]) > 0
  scores = {
      "score_shape": measures["shape"] - c.shape_min,
      "score_abnormal": c.abnormal_logit_max - measures["abnormal_logit"],
      "score_maxheat": c.maxheat_max - measures["maxheat"],
      "score_symmetry": measures["symmetry"] - c.symmetry_min,
      "score_left2right": torch.where(any_lung, torch.minimum(lr - c.log_ratio_min, c.log_ratio_max - lr),
                                      torch.full_like(lr, -1.0)),
  }
  valid = torch.stack([v > 0 for v in scores.values()]).all(dim=0)
  return scores, valid


class TorchScorer(nn.Module):
  """Twin of `scoring.score_batch`: (B, 1, S, S) images in [0, 1] -> scores, valid, features, measures.

  U-Net label map at `mask_size`, the classifier's logit and Grad-CAM maximum (its input
  resized with antialiasing when S differs from its side), the six symmetry features, the
  lung measures and the five scores (`keep_maps=False`: no masks or heatmaps returned).
  """

  def __init__(self, unet: TorchUNet, classifier: TorchClassifier | TorchClassifierEnsemble, calibration, *,
               mask_size: int, dilation: int):
    super().__init__()
    self.unet, self.classifier = unet, classifier
    self.register_buffer("atlas", torch.tensor(np.asarray(calibration.atlas, np.float32)))
    for name in _THRESHOLDS:
      setattr(self, name, float(np.float32(getattr(calibration, name))))
    self.mask_size, self.dilation = mask_size, dilation

  @classmethod
  def from_nnx(cls, scorer) -> TorchScorer:
    """The twin of a `scoring.Scorer` (its models at its `config.dtype`, its calibration), in inference mode."""
    dtype = scorer.config.dtype
    return cls(TorchUNet.from_nnx(scorer.unet, dtype), classifier_twin(scorer.classifier, dtype),
               scorer.calibration, mask_size=scorer.config.mask_size, dilation=scorer.config.dilation).eval()

  def forward(self, x: torch.Tensor) -> dict:
    s, r = self.mask_size, self.classifier.resolution
    labels = label_map(self.unet, x[:, 0], (s, s))
    _, maxheat, logit = grad_cam(self.classifier, resize_linear(x, (r, r)), 1.0, heatmap=False)
    measures = lung_measures(labels, self.atlas)
    measures["abnormal_logit"] = logit
    measures["maxheat"] = maxheat
    scores, valid = score_from_measures(measures, self)
    return {"scores": scores, "features": symmetry_features(labels, self.dilation), "valid": valid,
            "measures": measures}


class TorchGenerateAndScore(nn.Module):
  """Twin of `scoring.generate_and_score_batch` (keep_maps=False, keep_images=True): (z, cond) -> dict.

  Returns {"images": uint8 (B, G, G), "scores": {name: (B,)}, "valid": bool (B,),
  "features": (B, 6), "measures": {...}, "z": z}, as jaxcxr's compiled call.
  """

  def __init__(self, generator: TorchGenerator, scorer: TorchScorer):
    super().__init__()
    self.generator, self.scorer = generator, scorer

  @classmethod
  def from_nnx(cls, scorer, generator) -> TorchGenerateAndScore:
    """From a `scoring.Scorer` and a `Generator`, the generator at the scorer's dtype (as jaxcxr runs it)."""
    return cls(TorchGenerator.from_nnx(generator, scorer.config.dtype), TorchScorer.from_nnx(scorer)).eval()

  def forward(self, z: torch.Tensor, cond: torch.Tensor) -> dict:
    x = torch.clamp((self.generator(z, cond) + 1.0) * 0.5, 0.0, 1.0)
    out = self.scorer(x)
    out["z"] = z
    out["images"] = torch.round(x[:, 0] * 255.0).to(torch.uint8)
    return out


# ----------------------------------------------------------------------------- f-AnoGAN and HealthyGAN


class _EncoderBlock(nn.Module):
  def __init__(self, block, dtype: torch.dtype):
    super().__init__()
    self.norm1 = GroupNorm(block.norm1, dtype)
    self.conv1 = Conv.from_nnx(block.conv1, dtype=dtype)
    self.norm2 = GroupNorm(block.norm2, dtype)
    self.conv2 = Conv.from_nnx(block.conv2, dtype=dtype)
    self.skip = Conv.from_nnx(block.skip, dtype=dtype)
    self.negative_slope = block.negative_slope

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    act = lambda t: leaky_relu(t, self.negative_slope)
    h = F.avg_pool2d(self.conv1(act(self.norm1(x))), 2)
    h = self.conv2(act(self.norm2(h)))
    return h + self.skip(F.avg_pool2d(x, 2))


class TorchEncoder(_Twin):
  """Twin of `models.fanogan.Encoder` (f-AnoGAN izi_f): (B, 1, R, R) in [-1, 1] -> float32 (B, latent_dim)."""

  def __init__(self, encoder, dtype: torch.dtype):
    super().__init__()
    self.resolution, self.negative_slope = encoder.config.resolution, encoder.config.negative_slope
    self.stem = Conv.from_nnx(encoder.stem, dtype=dtype)
    self.blocks = nn.ModuleList([_EncoderBlock(b, dtype) for b in encoder.blocks])
    self.out_norm = GroupNorm(encoder.out_norm, dtype)
    c = encoder.out_norm.scale.shape[0]
    j = np.arange(16 * c)
    # jaxcxr flattens the (B, 4, 4, C) map; reorder the output layer's inputs for the (B, C, 4, 4) flattening.
    self.output = Linear.from_nnx(encoder.output, in_perm=(j % 16) * c + j // 16)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h = self.stem(x)
    for block in self.blocks:
      h = block(h)
    h = leaky_relu(self.out_norm(h), self.negative_slope)
    return self.output(h.reshape(h.shape[0], -1).float())


class _NormConv(nn.Module):
  def __init__(self, layer, dtype: torch.dtype, in_perm: np.ndarray | None = None):
    super().__init__()
    self.conv = Conv.from_nnx(layer.conv, dtype=dtype, in_perm=in_perm)
    self.norm = GroupNorm(layer.norm, dtype)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.norm(self.conv(x))


class _TranslatorResBlock(nn.Module):
  def __init__(self, block, dtype: torch.dtype):
    super().__init__()
    self.conv1 = _NormConv(block.conv1, dtype)
    self.conv2 = _NormConv(block.conv2, dtype)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x + self.conv2(F.relu(self.conv1(x)))


class TorchTranslator(_Twin):
  """Twin of `models.healthygan.Translator` (HealthyGAN): (B, 1, R, R) in [-1, 1] -> (content, mask).

  space_to_depth is `pixel_unshuffle` (the next convolution's input channels permuted at
  load), depth_to_space `pixel_shuffle`.
  """

  def __init__(self, translator, dtype: torch.dtype):
    super().__init__()
    self.resolution = translator.config.resolution
    self.stem = _NormConv(translator.stem, dtype)
    self.down = nn.ModuleList([_NormConv(d, dtype, in_perm=_phase_minor(d.conv.kernel.shape[2]))
                               for d in translator.down])
    self.res = nn.ModuleList([_TranslatorResBlock(b, dtype) for b in translator.res])
    self.up = nn.ModuleList([Conv.from_nnx(u, dtype=dtype, out_perm=_phase_minor(u.kernel.shape[-1]))
                             for u in translator.up])
    self.up_norm = nn.ModuleList([GroupNorm(n, dtype) for n in translator.up_norm])
    self.output = Conv.from_nnx(translator.output, dtype=dtype)

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = F.relu(self.stem(x))
    for layer in self.down:
      h = F.relu(layer(F.pixel_unshuffle(h, 2)))
    for block in self.res:
      h = block(h)
    for conv, norm in zip(self.up, self.up_norm):
      h = F.relu(norm(F.pixel_shuffle(conv(h), 2)))
    logits = self.output(h).float()
    return torch.tanh(logits[:, :1]), torch.sigmoid(logits[:, 1:])


def _signed(images: torch.Tensor) -> torch.Tensor:
  """uint8 (B, R, R) -> float32 (B, 1, R, R) in [-1, 1] (`data.to_signed`)."""
  return (images.float() / 127.5 - 1.0)[:, None]


def fanogan_scores(encoder: TorchEncoder, generator: TorchGenerator, discriminator: TorchDiscriminator,
                   images: torch.Tensor, cond: torch.Tensor, feature_weight: float = 1.0) -> dict:
  """Twin of one batch of `anomaly.fanogan_scores` (`fanogan_loss` on uint8 images (B, R, R)).

  Returns {"score", "image_loss", "feature_loss" (B,), "residual" float16 (B, R, R), "z" (B, D),
  "reconstruction" float16 (B, R, R)}; an encoder at a cascade's base resolution
  reconstructs the base image, as in jaxcxr.
  """
  x = _signed(images)
  z = encoder(x)
  render = generator.base_image if encoder.resolution != generator.resolution else generator
  reconstruction = render(z, cond)
  image_loss = torch.square(x - reconstruction).mean(dim=(1, 2, 3))
  feature_loss = torch.square(discriminator.features(x) - discriminator.features(reconstruction)).mean(dim=(1, 2, 3))
  return {"score": image_loss + feature_weight * feature_loss, "image_loss": image_loss, "feature_loss": feature_loss,
          "residual": torch.abs(x - reconstruction)[:, 0].half(), "z": z, "reconstruction": reconstruction[:, 0].half()}


def healthygan_scores(translator: TorchTranslator, images: torch.Tensor) -> dict:
  """Twin of one batch of `anomaly.healthygan_scores`: uint8 (B, R, R) -> {"score", "residual", "mask"}."""
  x = _signed(images)
  content, mask = translator(x)
  residual = torch.abs(x - (content * mask + x * (1.0 - mask)))
  return {"score": residual.mean(dim=(1, 2, 3)), "residual": residual[:, 0].half(), "mask": mask[:, 0].half()}


# ----------------------------------------------------------------------------- AnoGAN


class Render(nn.Module):
  """G(z, c), or with `base_image` a cascade's base image, as one module (for `torch.compile` of a search)."""

  def __init__(self, generator: TorchGenerator, base_image: bool = False):
    super().__init__()
    self.generator, self.base_image_only = generator, base_image
    self.latent_dim = generator.latent_dim

  def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    return self.generator.base_image(z, cond) if self.base_image_only else self.generator(z, cond)


def anogan_search(g: TorchGenerator, f, x: torch.Tensor, cond: torch.Tensor, steps: int, lr: float,
                  feature_weight: float, restarts: int, *, z0: torch.Tensor | None = None,
                  base_image: bool = False) -> dict:
  """Twin of `anomaly.search_latents` with early stopping and latent clipping off (the defaults).

  Every (image, restart) pair is one problem of a stacked batch; Adam on z minimises

      L(z) = (1 - l) * mean|x - G(z, c)| + l * mean|f(x) - f(G(z, c))|,

  the gradient taken of the losses' sum. As jaxcxr's `lax.scan`, the loop makes steps + 1
  loss-and-gradient evaluations, the last one only for the final loss (its gradient is
  unused), then renders the best restart of each image once more for its residual.
  Adam is `torch.optim.Adam` with optax's defaults (b1 0.9, b2 0.999, eps 1e-8 added to
  the bias-corrected sqrt(nu)): the same update as `optax.adam`, rounded differently.

  Args:
    g: the generator twin.
    f: the feature map, e.g. `TorchDiscriminator.features` (in inference mode).
    x: (B, 1, R, R) queries in [-1, 1] at the searched side (the base resolution with
      `base_image`; jaxcxr's `anogan_scores` resizes them on the host).
    cond: (B, C) conditions.
    steps, lr, feature_weight, restarts: as `LatentSearchConfig`.
    z0: (B, restarts, latent_dim) starts (e.g. `anomaly.initial_latents`); None draws N(0, I).
    base_image: search the cascade's base image (`LatentSearchConfig.base_image`).

  Returns:
    {"z" (B, D) best latents, "score" (B,), "residual" (B, 1, R, R), "loss_trace" (steps, B),
    "restart_scores" (B, R), "residual_score" (B,), "feature_score" (B,), "latents" (B, R, D)
    every restart's final z}.
  """
  b, d = x.shape[0], g.latent_dim
  if z0 is None:
    z0 = torch.randn(b, restarts, d, device=x.device)
  render = g.base_image if base_image else g
  z = z0.reshape(b * restarts, d).detach().clone().requires_grad_(True)
  xr, cr = x.repeat_interleave(restarts, dim=0), cond.repeat_interleave(restarts, dim=0)
  with torch.no_grad():
    fx = f(x).repeat_interleave(restarts, dim=0)
  opt = torch.optim.Adam([z], lr=lr, betas=(0.9, 0.999), eps=1e-8)
  trace = []
  for t in range(steps + 1):
    with torch.enable_grad():
      fake = render(z, cr)
      losses = ((1.0 - feature_weight) * torch.abs(xr - fake).mean(dim=(1, 2, 3))
                + feature_weight * torch.abs(fx - f(fake)).mean(dim=(1, 2, 3)))
      (z.grad,) = torch.autograd.grad(losses.sum(), z)
    trace.append(losses.detach())
    if t < steps:
      opt.step()
  final = trace[steps].reshape(b, restarts)
  best = final.argmin(dim=1)                                          # ties -> lowest restart
  rows = torch.arange(b, device=x.device)
  latents = z.detach().reshape(b, restarts, d)
  z_best = latents[rows, best]
  with torch.no_grad():
    best_fake = render(z_best, cond)
    residual = torch.abs(x - best_fake)
    feature_score = torch.abs(f(x) - f(best_fake)).mean(dim=(1, 2, 3))
  return {"z": z_best, "score": final[rows, best], "residual": residual,
          "loss_trace": torch.stack(trace[:steps]).reshape(steps, b, restarts)[:, rows, best],
          "restart_scores": final, "residual_score": residual.mean(dim=(1, 2, 3)), "feature_score": feature_score,
          "latents": latents}


def anogan_search_per_image(g: TorchGenerator, f, x: torch.Tensor, cond: torch.Tensor, steps: int, lr: float,
                            feature_weight: float, restarts: int, *, z0: torch.Tensor | None = None,
                            base_image: bool = False) -> dict:
  """The reference code's loop: `anogan_search` on one image at a time, results stacked.

  Per image the same problems and updates as the batched search (each problem is
  independent); the difference is the batch size of every generator and D call.
  """
  parts = [anogan_search(g, f, x[i:i + 1], cond[i:i + 1], steps, lr, feature_weight, restarts,
                         z0=None if z0 is None else z0[i:i + 1], base_image=base_image) for i in range(x.shape[0])]
  return {k: torch.cat([p[k] for p in parts], dim=1 if k == "loss_trace" else 0) for k in parts[0]}


# ----------------------------------------------------------------------------- GAN train step


def draw_diff_augment(batch: int, size: int, config, *, device=None, generator: torch.Generator | None = None
                      ) -> dict[str, torch.Tensor]:
  """The random draws of the GAN trainer's augmentation (`train.gan.diff_augment`, each image with
  probability p) for `batch` square images of side `size`.

  The same distributions and shapes as jaxcxr's (torch's PRNG, so other numbers):
  brightness, contrast (B, 1, 1, 1) ~ U[0, 1); integer shifts ty, tx (B, 1) in
  [-s, s]; cutout centres cy, cx (B, 1); "pick" (B, 1, 1, 1) ~ U[0, 1) (augment where < p).
  """
  kw = {"device": device, "generator": generator}
  shift = int(size * config.diffaug_translation + 0.5)
  cut = int(size * config.diffaug_cutout + 0.5)
  return {"brightness": torch.rand(batch, 1, 1, 1, **kw), "contrast": torch.rand(batch, 1, 1, 1, **kw),
          "ty": torch.randint(-shift, shift + 1, (batch, 1), **kw), "tx": torch.randint(-shift, shift + 1, (batch, 1), **kw),
          "cy": torch.randint(0, size + (1 - cut % 2), (batch, 1), **kw),
          "cx": torch.randint(0, size + (1 - cut % 2), (batch, 1), **kw), "pick": torch.rand(batch, 1, 1, 1, **kw)}


def diff_augment(images: torch.Tensor, params: dict[str, torch.Tensor], config) -> torch.Tensor:
  """Twin of `train.gan.diff_augment` with given draws (`draw_diff_augment`): (B, 1, H, W) -> (B, 1, H, W).

  Translation gathers rows then columns with clamped indices and fills -1 outside, as
  jaxcxr's `take_along_axis`; its gradient is a scatter-add in both.
  """
  b, c, h, w = images.shape
  x = images
  if "color" in config.diffaug:
    x = x + (params["brightness"] - 0.5)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (params["contrast"] + 0.5) + mean
  if "translation" in config.diffaug:
    src_y = torch.arange(h, device=x.device)[None, :] - params["ty"]              # (B, H)
    src_x = torch.arange(w, device=x.device)[None, :] - params["tx"]              # (B, W)
    x = torch.gather(x, 2, src_y.clamp(0, h - 1)[:, None, :, None].expand(b, c, h, w))
    x = torch.gather(x, 3, src_x.clamp(0, w - 1)[:, None, None, :].expand(b, c, h, w))
    inside = (((src_y >= 0) & (src_y < h))[:, None, :, None] & ((src_x >= 0) & (src_x < w))[:, None, None, :])
    x = torch.where(inside, x, torch.full_like(x, -1.0))
  if "cutout" in config.diffaug:
    ch, cw = int(h * config.diffaug_cutout + 0.5), int(w * config.diffaug_cutout + 0.5)
    in_y = torch.abs(torch.arange(h, device=x.device)[None, :] - params["cy"]) < (ch + 1) // 2
    in_x = torch.abs(torch.arange(w, device=x.device)[None, :] - params["cx"]) < (cw + 1) // 2
    x = torch.where(in_y[:, None, :, None] & in_x[:, None, None, :], torch.zeros_like(x), x)
  return x


def _maybe_augment(images: torch.Tensor, p: torch.Tensor, params: dict[str, torch.Tensor], config) -> torch.Tensor:
  return torch.where(params["pick"] < p, diff_augment(images, params, config), images)


class TorchGanTrainStep:
  """Twin of `train.gan.train_step`: one D update then one G update, EMA, ADA.

  D: logistic loss on DiffAugment-ed reals and fakes (one forward of both, spectral-norm
  vectors written back), plus on steps with step % r1_every == 0 the R1 penalty
  gamma / 2 * r1_every * E||grad_x D(x)||^2 (double backward through D in inference mode,
  from the new vectors); G: non-saturating loss against the updated D in inference mode;
  Adam (config.adam_b1, adam_b2, eps 1e-8) on each; EMA of G with decay
  min(ema_decay, (1 + t) / (10 + t)); the ADA probability p moved by sign(E[sign D(real)]
  - ada_target) * batch / ada_images. Compute dtype: `config.compute_dtype`.

  The random draws (batch indices, latents, condition rows, augmentation) come from
  torch's PRNG (`draw`), or are passed in (`__call__`): with jaxcxr's draws, the losses
  and gradients match jaxcxr's step (tests/test_twins.py).
  """

  def __init__(self, generator: TorchGenerator, discriminator: TorchDiscriminator, config):
    self.g, self.d, self.config = generator, discriminator, config
    self.g_ema = copy.deepcopy(generator).requires_grad_(False)
    adam = lambda params, lr: torch.optim.Adam(params, lr=lr, betas=(config.adam_b1, config.adam_b2), eps=1e-8)
    self.opt_g = adam(self.g.parameters(), config.g_learning_rate)
    self.opt_d = adam(self.d.parameters(), config.d_learning_rate)
    self.step = 0
    device = next(generator.parameters()).device
    self.ada_p = torch.tensor(0.0 if config.ada_target is not None else 1.0, device=device)

  @classmethod
  def from_nnx(cls, generator, discriminator, config) -> TorchGanTrainStep:
    """From a fresh or trained (G, D) pair at step 0 (EMA = G, fresh Adam), as `init_train_state` starts."""
    dtype = config.compute_dtype
    return cls(TorchGenerator.from_nnx(generator, dtype).train(), TorchDiscriminator.from_nnx(discriminator, dtype),
               config)

  def draw(self, images: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None) -> dict:
    """A step's random inputs from the data set (uint8 (N, R, R) and (N, C) on the device), with torch's PRNG.

    Returns {"reals" (B, R, R) in [-1, 1], "cond" (B, C), "z" (B, D), "gcond" (B, C) (the G
    step's conditions, other rows), "gz" (B, D), "aug_real", "aug_fake", "aug_g"
    (`draw_diff_augment`)}, jaxcxr's draws in kind and shape.
    """
    cfg, device = self.config, images.device
    n, b, size = images.shape[0], cfg.batch_size, images.shape[-1]
    kw = {"device": device, "generator": generator}
    idx = torch.randint(0, n, (b,), **kw)
    aug = lambda: draw_diff_augment(b, size, cfg, **kw)
    return {"reals": images[idx].float() / 127.5 - 1.0, "cond": cond[idx],
            "z": torch.randn(b, self.g.latent_dim, **kw), "gcond": cond[torch.randint(0, n, (b,), **kw)],
            "gz": torch.randn(b, self.g.latent_dim, **kw), "aug_real": aug(), "aug_fake": aug(), "aug_g": aug()}

  def __call__(self, batch: dict) -> dict[str, torch.Tensor]:
    """One step on `draw`'s inputs ("reals" (B, R, R) in [-1, 1]); returns jaxcxr's metrics."""
    cfg, b, p = self.config, self.config.batch_size, self.ada_p
    reals, cond = batch["reals"][:, None], batch["cond"]
    with torch.no_grad():
      fakes = self.g(batch["z"], cond)
    reals_aug = _maybe_augment(reals, p, batch["aug_real"], cfg)
    fakes_aug = _maybe_augment(fakes, p, batch["aug_fake"], cfg)

    d_params = list(self.d.parameters())
    self.d.train()
    logits = self.d(torch.cat([reals_aug, fakes_aug]), torch.cat([cond, cond]))
    self.d.eval()
    d_real, d_fake = logits[:b], logits[b:]
    d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    total, r1 = d_loss, torch.zeros((), device=reals.device)
    if cfg.r1_gamma > 0 and self.step % cfg.r1_every == 0:
      x = reals_aug.detach().requires_grad_(True)
      (grad_x,) = torch.autograd.grad(self.d(x, cond).sum(), x, create_graph=True)
      r1 = torch.square(grad_x).sum(dim=(1, 2, 3)).mean()
      total = total + (0.5 * cfg.r1_gamma * cfg.r1_every) * r1
    for param, grad in zip(d_params, torch.autograd.grad(total, d_params)):
      param.grad = grad
    self.opt_d.step()

    gcond = batch["gcond"]
    images = self.g(batch["gz"], gcond)
    g_loss = F.softplus(-self.d(_maybe_augment(images, p, batch["aug_g"], cfg), gcond)).mean()
    g_params = list(self.g.parameters())
    for param, grad in zip(g_params, torch.autograd.grad(g_loss, g_params)):
      param.grad = grad
    self.opt_g.step()

    t = float(self.step)
    beta = min(cfg.ema_decay, (1.0 + t) / (10.0 + t))
    with torch.no_grad():
      ema = list(self.g_ema.parameters())
      torch._foreach_mul_(ema, beta)
      torch._foreach_add_(ema, [q.detach() for q in g_params], alpha=1.0 - beta)
    if cfg.ada_target is not None:
      adjust = torch.sign(torch.sign(d_real.detach()).mean() - cfg.ada_target) * (b / cfg.ada_images)
      self.ada_p = torch.clamp(p + adjust, 0.0, 1.0)
    self.step += 1
    return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "r1": r1.detach(), "d_real": d_real.detach().mean(),
            "d_fake": d_fake.detach().mean(), "ada_p": p}


# ----------------------------------------------------------------------------- U-Net train step


def draw_augment(batch: int, *, device=None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
  """The per-image random draws of `data.augment` (torch's PRNG): the raw uniforms before scaling.

  "rotation", "scale", "contrast", "brightness" (B,) and "shift" (B, 2) ~ U[-1, 1);
  "flip", "blur" (B,) ~ U[0, 1).
  """
  kw = {"device": device, "generator": generator}
  signed = lambda *shape: torch.rand(*shape, **kw) * 2.0 - 1.0
  return {"rotation": signed(batch), "shift": signed(batch, 2), "scale": signed(batch), "flip": torch.rand(batch, **kw),
          "blur": torch.rand(batch, **kw), "contrast": signed(batch), "brightness": signed(batch)}


def augment(images: torch.Tensor, params: dict[str, torch.Tensor], config, masks: torch.Tensor | None = None):
  """Twin of `data.augment` with given draws (`draw_augment`): images (B, 1, H, W) in [0, 1] (and masks (B, H, W)).

  Rotation, translation and scale about the centre as an inverse map, bilinear sampling
  with zero fill (jaxcxr: `map_coordinates(order=1, mode="constant")`; here `grid_sample`
  with align_corners=True and zero padding, the same interpolation; the grid's [-1, 1]
  normalisation rounds coordinates by ~1e-5 pixel, which can move a nearest-neighbour
  mask sample at an exact half-pixel), the optional flip, a separable Gaussian blur of
  radius 3 with edge padding, contrast and brightness, clipped to [0, 1].
  """
  b, _, h, w = images.shape
  device = images.device
  angle = math.radians(config.rotation_deg) * params["rotation"]
  shift = config.translation * params["shift"] * torch.tensor([h, w], dtype=torch.float32, device=device)
  scale = 1.0 + config.scale * params["scale"]
  yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=device),
                          torch.arange(w, dtype=torch.float32, device=device), indexing="ij")
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  dy = yy[None] - cy - shift[:, 0, None, None]
  dx = xx[None] - cx - shift[:, 1, None, None]
  cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
  src_y = (cos * dy - sin * dx) / scale[:, None, None] + cy
  src_x = (sin * dy + cos * dx) / scale[:, None, None] + cx
  flip = params["flip"] < config.hflip_prob
  src_x = torch.where(flip[:, None, None], (w - 1) - src_x, src_x)
  grid = torch.stack([src_x / (w - 1) * 2.0 - 1.0, src_y / (h - 1) * 2.0 - 1.0], dim=-1)     # (B, H, W, 2)
  out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
  if config.blur_sigma > 0:
    out = gaussian_blur(out, config.blur_sigma * params["blur"])
  mean = out.mean(dim=(1, 2, 3), keepdim=True)
  contrast = (1.0 + config.contrast * params["contrast"])[:, None, None, None]
  brightness = (config.brightness * params["brightness"])[:, None, None, None]
  out = torch.clamp((out - mean) * contrast + mean + brightness, 0.0, 1.0)
  if masks is None:
    return out
  warped = F.grid_sample(masks[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                         align_corners=True)[:, 0].to(masks.dtype)
  swapped = torch.where(warped == 1, 2, torch.where(warped == 2, 1, warped)).to(masks.dtype)
  return out, torch.where(flip[:, None, None], swapped, warped)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
  """Separable Gaussian blur with a per-image sigma (B,) of (B, 1, H, W), edge padding (a grouped convolution)."""
  b, _, h, w = images.shape
  t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
  kernel = torch.exp(-0.5 * (t[None] / torch.clamp_min(sigma, 1e-3)[:, None]) ** 2)
  kernel = kernel / kernel.sum(dim=1, keepdim=True)                                       # (B, 2r + 1)
  padded = F.pad(images, (radius,) * 4, mode="replicate").reshape(1, b, h + 2 * radius, w + 2 * radius)
  rows = F.conv2d(padded, kernel[:, None, None, :], groups=b)                              # along W
  return F.conv2d(rows, kernel[:, None, :, None], groups=b).reshape(b, 1, h, w)           # along H


def segmentation_loss(logits: torch.Tensor, y: torch.Tensor, *, dice_weight: float = 1.0, smooth: float = 1.0
                      ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
  """Twin of `train.segmentation.segmentation_loss`: logits (B, K, H, W), labels (B, H, W) -> (total, (ce, dice))."""
  k = logits.shape[1]
  onehot = F.one_hot(y.long(), k).permute(0, 3, 1, 2).float()
  log_probs = F.log_softmax(logits.float(), dim=1)
  ce = -(onehot * log_probs).sum(dim=1).mean()
  probs, target = torch.exp(log_probs)[:, 1:], onehot[:, 1:]
  inter = (probs * target).sum(dim=(2, 3))
  denom = probs.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
  dice_loss = 1.0 - ((2.0 * inter + smooth) / (denom + smooth)).mean()
  return ce + dice_weight * dice_loss, (ce, dice_loss)



def clipped_step(opt: torch.optim.Optimizer, params, grads, clip: float, lr: float) -> None:
  """One optimiser step with these gradients, clipped to global norm `clip` (0: no clipping) as optax's
  `clip_by_global_norm`, at learning rate `lr` (the trainers' schedules set it per step)."""
  if clip > 0:
    norm = torch.sqrt(sum(torch.sum(torch.square(g)) for g in grads))
    grads = [torch.where(norm < clip, g, g / norm * clip) for g in grads]
  for param, grad in zip(params, grads):
    param.grad = grad
  for group in opt.param_groups:
    group["lr"] = lr
  opt.step()

class TorchUNetTrainStep:
  """Twin of `train.segmentation.train_step`: cross-entropy + soft Dice, global-norm clipping, AdamW.

  AdamW is `torch.optim.AdamW` (b1 0.9, b2 0.999, eps 1e-8) with weight decay on the
  kernels only (parameters of more than one dimension, as jaxcxr's mask), the learning
  rate of optax's warm-up + cosine schedule at the update count; clipping as
  `optax.clip_by_global_norm` (g * max_norm / norm when norm >= max_norm).
  """

  def __init__(self, unet: TorchUNet, config):
    self.unet, self.config, self.step = unet, config, 0
    params = list(unet.parameters())
    self.opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": config.weight_decay},
                                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
                                 lr=0.0, betas=(0.9, 0.999), eps=1e-8)

  @classmethod
  def from_nnx(cls, unet, config) -> TorchUNetTrainStep:
    """From a U-Net at step 0 (fresh AdamW state), as `init_train_state` starts."""
    return cls(TorchUNet.from_nnx(unet).train(), config)

  def learning_rate(self, count: int) -> float:
    """optax.warmup_cosine_decay_schedule(0, lr, warmup_steps, decay_steps, end_value=0) at `count`."""
    cfg = self.config
    if count < cfg.warmup_steps:
      return cfg.learning_rate * count / cfg.warmup_steps
    length = cfg.decay_steps - cfg.warmup_steps
    return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(count - cfg.warmup_steps, length) / length))

  def draw(self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """A step's batch from the data (uint8 (N, R, R) images and masks on the device): drawn without replacement, augmented."""
    cfg, device = self.config, images.device
    idx = torch.randperm(images.shape[0], device=device, generator=generator)[:cfg.batch_size]
    x, y = (images[idx].float() / 255.0)[:, None], masks[idx]
    if cfg.augment is None:
      return x, y
    return augment(x, draw_augment(cfg.batch_size, device=device, generator=generator), cfg.augment, masks=y)

  def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """One update on a batch (B, 1, R, R) in [0, 1] and labels (B, R, R); returns jaxcxr's metrics."""
    cfg = self.config
    loss, (ce, dice_loss) = segmentation_loss(self.unet(images), masks, dice_weight=cfg.dice_weight)
    params = list(self.unet.parameters())
    clipped_step(self.opt, params, torch.autograd.grad(loss, params), cfg.grad_clip, self.learning_rate(self.step))
    self.step += 1
    return {"loss": loss.detach(), "ce": ce.detach(), "dice_loss": dice_loss.detach()}
