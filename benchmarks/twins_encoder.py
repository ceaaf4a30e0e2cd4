"""PyTorch twin of the CXR encoder's VICReg training step (`jaxcxr.train.cxr_encoder.train_step`), NCHW.

The conventions of `benchmarks.twins`, whose layers (`Conv`, `GroupNorm`, `Linear`, the
blur) this module uses: weights copied from the NNX modules, the same work (layers,
shapes, compute dtype, loss, optimiser step and augmentation), jaxcxr's outputs to float32
rounding (tests/test_twins.py). Module and attribute names are jaxcxr's (`stem`,
`stages[s].merge_norm`, `stages[s].merge`, `stages[s].blocks[j].conv1`, `out_norm`; the
projector's `hidden`, `norms`, `out`). This module imports neither jax nor jaxcxr.

Layout: jaxcxr's `space_to_depth(x, b)` reads channel (dy * b + dx) * C + c, torch's
`pixel_unshuffle` channel c * b * b + dy * b + dx. They agree for the stem (one input
channel); the input channels of each stage's 1x1 merge convolution are permuted at load
time, so no extra op runs.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# The twins' shared layers and weight helpers.
from benchmarks.twins import Conv, GroupNorm, Linear, _array, _param, _phase_minor, _Twin, clipped_step, gaussian_blur

__all__ = ["TorchCXREncoder", "TorchEncoderTrainStep", "TorchProjector", "draw_views", "views", "vicreg_loss"]


# ----------------------------------------------------------------------------- encoder and projector


class _ResidualBlock(nn.Module):
  """Twin of `cxr_encoder.ResidualBlock`: x + conv2(silu(norm2(conv1(silu(norm1(x))))))."""

  def __init__(self, block, dtype: torch.dtype):
    super().__init__()
    self.norm1 = GroupNorm(block.norm1, dtype)
    self.conv1 = Conv.from_nnx(block.conv1, dtype=dtype)
    self.norm2 = GroupNorm(block.norm2, dtype)
    self.conv2 = Conv.from_nnx(block.conv2, dtype=dtype)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h = self.conv1(F.silu(self.norm1(x)))
    return x + self.conv2(F.silu(self.norm2(h)))


class _Stage(nn.Module):
  """Twin of `cxr_encoder.Stage`: optional patch merging (GroupNorm, 2x2 pixel_unshuffle, 1x1 conv), then blocks."""

  def __init__(self, stage, dtype: torch.dtype):
    super().__init__()
    if stage.merge is None:
      self.merge_norm, self.merge = None, None
    else:
      self.merge_norm = GroupNorm(stage.merge_norm, dtype)
      self.merge = Conv.from_nnx(stage.merge, dtype=dtype, in_perm=_phase_minor(stage.merge.kernel.shape[2]))
    self.blocks = nn.ModuleList([_ResidualBlock(b, dtype) for b in stage.blocks])

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.merge is not None:
      x = self.merge(F.pixel_unshuffle(self.merge_norm(x), 2))
    for block in self.blocks:
      x = block(x)
    return x


class TorchCXREncoder(_Twin):
  """Twin of `models.cxr_encoder.CXREncoder`: (B, 1, R, R) in [-1, 1] -> float32 (B, D) embeddings."""

  def __init__(self, encoder, dtype: torch.dtype):
    super().__init__()
    self.patch, self.dtype = encoder.config.patch, dtype
    self.stem = Conv.from_nnx(encoder.stem, dtype=dtype)
    self.stages = nn.ModuleList([_Stage(s, dtype) for s in encoder.stages])
    self.out_norm = GroupNorm(encoder.out_norm, dtype)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h = self.stem(F.pixel_unshuffle(x.to(self.dtype), self.patch))
    for stage in self.stages:
      h = stage(h)
    return F.silu(self.out_norm(h)).float().mean(dim=(2, 3))


def _layer_norm(norm) -> nn.LayerNorm:
  """Twin of an `nnx.LayerNorm` (its epsilon, 1e-6 by default, not torch's 1e-5)."""
  layer = nn.LayerNorm(norm.num_features, eps=float(norm.epsilon))
  layer.weight, layer.bias = _param(_array(norm.scale)), _param(_array(norm.bias))
  return layer


class TorchProjector(nn.Module):
  """Twin of `train.cxr_encoder.Projector`: (Linear, LayerNorm, ReLU) per hidden width, then a Linear output.

  `nnx.LayerNorm` computes the variance as E[x^2] - E[x]^2, torch as E[(x - mean)^2]: equal up to
  float32 rounding.
  """

  def __init__(self, projector, dtype: torch.dtype = torch.float32):
    super().__init__()
    self.hidden = nn.ModuleList([Linear.from_nnx(layer, dtype=dtype) for layer in projector.hidden])
    self.norms = nn.ModuleList([_layer_norm(norm) for norm in projector.norms])
    self.out = Linear.from_nnx(projector.out, dtype=dtype)

  @classmethod
  def from_nnx(cls, projector) -> TorchProjector:
    """The twin of a `Projector` (float32, as jaxcxr's)."""
    return cls(projector)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for linear, norm in zip(self.hidden, self.norms):
      x = F.relu(norm(linear(x)))
    return self.out(x)


# ----------------------------------------------------------------------------- views


def draw_views(batch: int, resolution: int, config, *, device=None, generator: torch.Generator | None = None
               ) -> dict[str, torch.Tensor]:
  """The draws of `train.cxr_encoder.draw_views` from torch's PRNG: the same entries, distributions and shapes.

  "area", "log_aspect", "angle", "log_gamma", "contrast", "brightness" (B,); "position",
  "shift" (B, 2); with `config.blur_prob` > 0 "blur_sigma" (B,) and "blur" (B,) bool; with
  `config.noise` > 0 "noise" (B, R, R).
  """
  kw = {"device": device, "generator": generator}
  uniform = lambda low, high, *shape: low + (high - low) * torch.rand(*shape, **kw)
  draws = {"area": uniform(*config.crop_area, batch),
           "log_aspect": uniform(math.log(config.crop_aspect[0]), math.log(config.crop_aspect[1]), batch),
           "position": torch.rand(batch, 2, **kw),
           "shift": config.translation * uniform(-1.0, 1.0, batch, 2),
           "angle": math.radians(config.rotation_deg) * uniform(-1.0, 1.0, batch),
           "log_gamma": math.log(config.gamma) * uniform(-1.0, 1.0, batch),
           "contrast": 1.0 + config.contrast * uniform(-1.0, 1.0, batch),
           "brightness": config.brightness * uniform(-1.0, 1.0, batch)}
  if config.blur_prob > 0:
    draws["blur_sigma"] = uniform(*config.blur_sigma, batch)
    draws["blur"] = torch.rand(batch, **kw) < config.blur_prob
  if config.noise > 0:
    draws["noise"] = (config.noise * torch.rand(batch, 1, 1, **kw)
                      * torch.randn(batch, resolution, resolution, **kw))
  return draws


def views(images: torch.Tensor, draws: dict[str, torch.Tensor], config) -> torch.Tensor:
  """Twin of `train.cxr_encoder.apply_views`: uint8 (B, R, R) and draws -> float32 (B, 1, R, R) in [-1, 1].

  The crop, shift and rotation as an inverse map of each output pixel to image fractions f;
  bilinear sampling with zero fill as jaxcxr's `map_coordinates(order=1, mode="constant")` at
  pixel f * R - 0.5, here `grid_sample` at 2 f - 1 with align_corners=False (the same pixel;
  each out-of-image neighbour weighs zero in both). Then gamma, contrast about the view's mean,
  brightness, the separable Gaussian blur of radius max(1, ceil(2 * max sigma)) with edge
  padding (computed for every image, kept where "blur"), the noise, clipped to [0, 1].
  """
  r = images.shape[-1]
  column = lambda v: v[:, None, None, None]
  aspect = torch.exp(draws["log_aspect"])
  crop_h = torch.clamp(torch.sqrt(draws["area"] / aspect), max=1.0)
  crop_w = torch.clamp(torch.sqrt(draws["area"] * aspect), max=1.0)
  crop = torch.stack([crop_h, crop_w], dim=1)                                     # (B, 2), fractions of the side
  centre = crop / 2 + draws["position"] * (1 - crop) + draws["shift"]
  u = (torch.arange(r, dtype=torch.float32, device=images.device) + 0.5) / r - 0.5
  oy, ox = u[None, :, None] * crop_h[:, None, None], u[None, None, :] * crop_w[:, None, None]
  cos, sin = torch.cos(draws["angle"])[:, None, None], torch.sin(draws["angle"])[:, None, None]
  fy = centre[:, 0, None, None] + cos * oy - sin * ox                              # (B, R, R)
  fx = centre[:, 1, None, None] + sin * oy + cos * ox
  grid = torch.stack([2.0 * fx - 1.0, 2.0 * fy - 1.0], dim=-1)
  x = F.grid_sample(images[:, None].float() / 255.0, grid, mode="bilinear", padding_mode="zeros",
                    align_corners=False)
  x = torch.pow(torch.clamp(x, 0.0, 1.0), column(torch.exp(draws["log_gamma"])))
  mean = x.mean(dim=(1, 2, 3), keepdim=True)
  x = (x - mean) * column(draws["contrast"]) + mean + column(draws["brightness"])
  if config.blur_prob > 0:
    radius = max(1, math.ceil(2 * config.blur_sigma[1]))
    x = torch.where(column(draws["blur"]), gaussian_blur(x, draws["blur_sigma"], radius), x)
  if config.noise > 0:
    x = x + draws["noise"][:, None]
  return torch.clamp(x, 0.0, 1.0) * 2.0 - 1.0


# ----------------------------------------------------------------------------- loss and step


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, weights: tuple[float, float, float]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
  """Twin of `train.cxr_encoder.vicreg_loss`: (lambda * invariance + mu * variance + nu * covariance, the parts)."""
  z1, z2 = z1.float(), z2.float()
  n, d = z1.shape

  def variance(z):
    return torch.mean(F.relu(1.0 - torch.sqrt(torch.var(z, dim=0, unbiased=True) + 1e-4)))

  def covariance(z):
    zc = z - z.mean(dim=0, keepdim=True)
    cov = zc.T @ zc / (n - 1)
    return (torch.sum(torch.square(cov)) - torch.sum(torch.square(torch.diagonal(cov)))) / d

  parts = {"invariance": torch.mean(torch.square(z1 - z2)), "variance": (variance(z1) + variance(z2)) / 2,
           "covariance": covariance(z1) + covariance(z2)}
  lam, mu, nu = weights
  return lam * parts["invariance"] + mu * parts["variance"] + nu * parts["covariance"], parts


class TorchEncoderTrainStep:
  """Twin of `train.cxr_encoder.train_step` with method "vicreg": two views per image, encoder, projector, AdamW.

  A step: the views of the batch (`draw`: `views` of `draw_views`), the encoder's embeddings and
  the projector's outputs of all 2B views in one pass, VICReg's loss of the two halves, its
  gradient; global-norm clipping as `optax.clip_by_global_norm` (g * max_norm / norm when
  norm >= max_norm); `torch.optim.AdamW` (b1 0.9, b2 0.999, eps 1e-8) with weight decay on the
  kernels only (parameters of more than one dimension, as jaxcxr's mask of the leaves named
  "kernel"), at the learning rate of optax's linear warm-up at the update count (0 at the
  first update, as jaxcxr's). Metrics: jaxcxr's ("loss", the three parts, "embedding_std").

  Where it differs: `draw` takes the batch (without replacement) and the views' parameters
  from torch's PRNG, not jax's: the same distributions, other numbers. Given jaxcxr's views
  (`__call__`), the step reproduces jaxcxr's. Only VICReg, the benchmark recipe's method, is
  twinned.

  Raises:
    NotImplementedError: a config of another method.
  """

  def __init__(self, encoder: TorchCXREncoder, projector: TorchProjector, config):
    if config.method != "vicreg":
      raise NotImplementedError(f"TorchEncoderTrainStep: only the 'vicreg' step is twinned, got {config.method!r}")
    self.encoder, self.projector, self.config, self.step = encoder, projector, config, 0
    params = self.parameters()
    self.opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": config.weight_decay},
                                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
                                 lr=0.0, betas=(0.9, 0.999), eps=1e-8)

  @classmethod
  def from_nnx(cls, encoder, projector, config) -> TorchEncoderTrainStep:
    """From a train state's encoder and projector (`encoder_of`, `projector_of`) with a fresh AdamW state."""
    return cls(TorchCXREncoder.from_nnx(encoder).train(), TorchProjector.from_nnx(projector).train(), config)

  def parameters(self) -> list[nn.Parameter]:
    """The encoder's parameters, then the projector's."""
    return [*self.encoder.parameters(), *self.projector.parameters()]

  def learning_rate(self, count: int) -> float:
    """optax.linear_schedule(0, lr, max(warmup_steps, 1)) at `count`."""
    cfg = self.config
    return cfg.learning_rate * min(count, max(cfg.warmup_steps, 1)) / max(cfg.warmup_steps, 1)

  def draw(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A step's views from the data (uint8 (N, R, R) on the device): B images without replacement, two views each.

    Returns float32 (2B, 1, R, R) in [-1, 1]: the first views of the B images, then the second.
    """
    cfg, device = self.config, images.device
    b, r = cfg.batch_size, images.shape[-1]
    idx = torch.randperm(images.shape[0], device=device, generator=generator)[:b]
    batch = images[idx]
    with torch.no_grad():
      return torch.cat([views(batch, draw_views(b, r, cfg.augment, device=device, generator=generator), cfg.augment)
                        for _ in range(2)])

  def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One update on the views (2B, 1, R, R) in [-1, 1]; returns jaxcxr's metrics."""
    cfg, b = self.config, self.config.batch_size
    h = self.encoder(x)
    loss, parts = vicreg_loss(*self.projector(h).split(b), cfg.vicreg_weights)
    with torch.no_grad():
      unit = h * torch.rsqrt(torch.clamp_min(torch.sum(h * h, dim=-1, keepdim=True), 1e-12))
      spread = torch.mean(torch.std(unit, dim=0, unbiased=False))
    params = self.parameters()
    clipped_step(self.opt, params, torch.autograd.grad(loss, params), cfg.grad_clip, self.learning_rate(self.step))
    self.step += 1
    return {"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()}, "embedding_std": spread}
