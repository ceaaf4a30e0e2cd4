"""Configs of the conditional GAN (generator, discriminator, training) and its training presets.

`UPSAMPLINGS`, `GeneratorConfig` (`jaxcxr.models.generator`; with an `UpsamplerConfig`, a
cascade), `DiscriminatorConfig` (`jaxcxr.models.discriminator`), `GanTrainConfig`
(`jaxcxr.train.gan`) and the presets (`PRESETS`): `gan_tiny`, `gan_64_cpu`, `gan_64_normal_cpu`,
`gan_64_resize_cpu`, `gan_64_resize_normal_cpu` (the bases of the shipped 256x256 cascades),
`gan_64_wide_cpu`, `gan_256_single_cpu` (ablation arms), `gan_128_resize_cpu` and
`gan_128_resize_normal_cpu` (128x128 bases for a 2x stage), `gan_128`, `gan_256`.
"""

from __future__ import annotations

import dataclasses

from jaxcxr.config.common import (DTYPES, KNOWN_CONDITIONS, RESOLUTIONS, Family, check_choice, check_loop_fields,
                                  stage_channels)
from jaxcxr.config.upsampler import UpsamplerConfig

__all__ = ["FAMILY", "PRESETS", "UPSAMPLINGS", "DiscriminatorConfig", "GanTrainConfig", "GeneratorConfig",
           "gan_128", "gan_128_resize_cpu", "gan_128_resize_normal_bcr_cpu", "gan_128_resize_normal_bcr_cutout_cpu",
           "gan_128_resize_normal_cpu",
           "gan_128_resize_normal_no_cutout_cpu", "gan_256", "gan_256_single_cpu", "gan_64_cpu", "gan_64_normal_cpu",
           "gan_64_resize_cpu", "gan_64_resize_normal_cpu", "gan_64_wide_cpu", "gan_tiny"]


# Up-sampling of the generator's blocks: "subpixel" (3x3 conv to 4c channels + depth-to-space; the
# 64x64 GANs of sessions 1-3: each of the four output phases has its own kernel, which drift apart
# into a checkerboard) or "resize" (bilinear 2x, then a 3x3 conv: every output pixel is made by the
# same weights; tests/test_cascade.py measures the 2x2 pattern of both with random weights).
UPSAMPLINGS: tuple[str, ...] = ("subpixel", "resize")


def _check_common(name: str, resolution: int, conditions: tuple[str, ...], dtype: str) -> None:
  check_choice(f"{name}.resolution", resolution, RESOLUTIONS)
  if not conditions or len(set(conditions)) != len(conditions) or not set(conditions) <= set(KNOWN_CONDITIONS):
    raise ValueError(f"{name}.conditions: expected distinct names from {KNOWN_CONDITIONS}, got {conditions}")
  if tuple(c for c in KNOWN_CONDITIONS if c in conditions) != tuple(conditions):
    raise ValueError(f"{name}.conditions: expected the order {KNOWN_CONDITIONS}, got {conditions}")
  check_choice(f"{name}.dtype", dtype, DTYPES)


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
  """Conditional generator: latent z and (sex, age, label) -> (H, W, 1) image in [-1, 1]."""

  # Output side in pixels (32, 64, 128 or 256); 4x4 start, one sub-pixel block per doubling.
  resolution: int = 64
  # Size of the latent vector z.
  latent_dim: int = 128
  # Channels at the output resolution; doubled per halving of the side, capped at max_channels.
  base_channels: int = 32
  # Channel cap of the low-resolution stages.
  max_channels: int = 256
  # Conditioning inputs, in this order; ("sex", "age") for a normal-only GAN.
  conditions: tuple[str, ...] = KNOWN_CONDITIONS
  # Width of the learned embedding of the condition vector.
  cond_embed_dim: int = 32
  # Groups of the GroupNorm layers (batch-independent; capped by the channel count).
  norm_groups: int = 8
  # Compute dtype of convolutions ("float32" or "bfloat16"); parameters stay float32.
  dtype: str = "float32"
  # Up-sampling of the blocks, one of UPSAMPLINGS.
  upsampling: str = "subpixel"
  # A learned super-resolution stage after the blocks (a cascade): the blocks then make
  # resolution / upsampler.scale pixels, and the stage the rest. None: single stage.
  upsampler: UpsamplerConfig | None = None

  def __post_init__(self):
    _check_common("GeneratorConfig", self.resolution, self.conditions, self.dtype)
    if self.latent_dim <= 0 or self.base_channels <= 0 or self.max_channels < self.base_channels:
      raise ValueError(f"GeneratorConfig: bad sizes latent_dim={self.latent_dim}, "
                       f"base_channels={self.base_channels}, max_channels={self.max_channels}")
    check_choice("GeneratorConfig.upsampling", self.upsampling, UPSAMPLINGS)
    if self.upsampler is not None and self.base_resolution not in RESOLUTIONS:
      raise ValueError(f"GeneratorConfig: resolution {self.resolution} with a x{self.upsampler.scale} "
                       f"upsampler leaves a {self.base_resolution}x{self.base_resolution} base; expected "
                       f"one of {RESOLUTIONS}")

  @property
  def base_resolution(self) -> int:
    """Side of the image the blocks make: `resolution`, or resolution / scale with an upsampler."""
    return self.resolution if self.upsampler is None else self.resolution // self.upsampler.scale

  @property
  def base(self) -> GeneratorConfig:
    """The config of the blocks alone (the low-resolution GAN of a cascade)."""
    return dataclasses.replace(self, resolution=self.base_resolution, upsampler=None)

  def with_upsampler(self, upsampler: UpsamplerConfig) -> GeneratorConfig:
    """The cascade of this (single-stage) generator followed by `upsampler`."""
    if self.upsampler is not None:
      raise ValueError("GeneratorConfig.with_upsampler: this generator already has an upsampler")
    return dataclasses.replace(self, resolution=self.resolution * upsampler.scale, upsampler=upsampler)

  @property
  def channels(self) -> tuple[int, ...]:
    """Channels per stage of the blocks, 4x4 first."""
    return stage_channels(self.base_resolution, self.base_channels, self.max_channels)


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
  """Projection discriminator with spectral norm: (H, W, 1) image and condition -> logit."""

  # Input side in pixels (32, 64, 128 or 256); one residual down block per halving to 4x4.
  resolution: int = 64
  # Channels at the input resolution; doubled per halving of the side, capped at max_channels.
  base_channels: int = 32
  # Channel cap of the low-resolution stages.
  max_channels: int = 256
  # Conditioning inputs (must match the generator's).
  conditions: tuple[str, ...] = KNOWN_CONDITIONS
  # Slope of the leaky ReLUs.
  negative_slope: float = 0.2
  # Compute dtype of convolutions ("float32" or "bfloat16"); parameters stay float32.
  dtype: str = "float32"

  def __post_init__(self):
    _check_common("DiscriminatorConfig", self.resolution, self.conditions, self.dtype)
    if self.base_channels <= 0 or self.max_channels < self.base_channels:
      raise ValueError(f"DiscriminatorConfig: bad sizes base_channels={self.base_channels}, "
                       f"max_channels={self.max_channels}")

  @property
  def channels(self) -> tuple[int, ...]:
    """Channels per stage, input resolution first, 4x4 last."""
    return stage_channels(self.resolution, self.base_channels, self.max_channels)[::-1]


@dataclasses.dataclass(frozen=True)
class GanTrainConfig:
  """Training of the conditional GAN: models, losses, optimisers, augmentation and the loop."""

  # The generator.
  generator: GeneratorConfig = GeneratorConfig()
  # The discriminator.
  discriminator: DiscriminatorConfig = DiscriminatorConfig()
  # Images per step (D and G each see one batch).
  batch_size: int = 32
  # Total optimisation steps (one D and one G update each).
  steps: int = 3000
  # Steps per jitted call, run with lax.scan (host sync, progress and checkpoints between calls).
  steps_per_call: int = 10
  # Adam learning rate of the generator.
  g_learning_rate: float = 2e-4
  # Adam learning rate of the discriminator.
  d_learning_rate: float = 2e-4
  # Adam beta1 (0 as in StyleGAN2/BigGAN: momentum hurts adversarial games).
  adam_b1: float = 0.0
  # Adam beta2.
  adam_b2: float = 0.99
  # R1 penalty weight gamma: gamma/2 * E||grad_x D(x)||^2 on (augmented) reals.
  r1_gamma: float = 1.0
  # Lazy R1: penalty every k steps with weight k * gamma (StyleGAN2); 1 = every step.
  r1_every: int = 4
  # EMA decay of the generator weights (with a (1+t)/(10+t) warm-up).
  ema_decay: float = 0.999
  # DiffAugment policies applied to reals and fakes before D: "translation", "cutout", "color".
  diffaug: tuple[str, ...] = ("translation", "cutout", "color")
  # Max translation as a fraction of the side.
  diffaug_translation: float = 0.125
  # Cutout square side as a fraction of the side.
  diffaug_cutout: float = 0.5
  # Adaptive augmentation (Karras et al. 2020, ADA): each image is augmented with probability
  # p, raised when D overfits (E[sign D(real)] > ada_target) and lowered otherwise. None: always
  # augment (p = 1, plain DiffAugment). Measured on gan_64_cpu: with p = 1, D stayed at chance
  # (loss 2 ln 2) for all of a 1,200-step run, even against fixed blurry fakes.
  ada_target: float | None = 0.6
  # Images over which p can move from 0 to 1 (StyleGAN2-ADA uses 500k; our runs see ~30k).
  ada_images: int = 5000
  # Balanced consistency regularisation (bCR, Zhao et al. 2021): D's loss adds cr_weight x the mean
  # of (D(T(x)) - D(x))^2 over the step's real and fake inputs, T = `cr_augment` applied to every
  # image. D learns to give an image and its transform the same logit without ever being told
  # that T(real) is real, so G gains nothing by drawing T's traces (cutout's flat squares, which
  # the normal-only GAN drew when cutout was among the augmentations D judged). 0 = off.
  cr_weight: float = 0.0
  # DiffAugment policies of the consistency term's T (sizes as for `diffaug`).
  cr_augment: tuple[str, ...] = ("translation", "cutout")
  # Compute dtype of G and D during training ("float32" or "bfloat16"); params and losses stay float32.
  compute_dtype: str = "float32"
  # Train on normal images (label 0) only; needs "label" absent from the conditions (AnoGAN use).
  normal_only: bool = False
  # Write a sample grid (six groups, normal label) every this many steps; 0 = only at the end.
  sample_every: int = 500
  # Samples per group in the grid.
  samples_per_group: int = 8
  # Save a training checkpoint every this many steps (and at the end).
  checkpoint_every: int = 500
  # Training checkpoints kept.
  max_to_keep: int = 3

  def __post_init__(self):
    g, d = self.generator, self.discriminator
    if g.resolution != d.resolution:
      raise ValueError(f"GanTrainConfig: generator resolution {g.resolution} != discriminator "
                       f"resolution {d.resolution}")
    if g.conditions != d.conditions:
      raise ValueError(f"GanTrainConfig: generator conditions {g.conditions} != discriminator "
                       f"conditions {d.conditions}")
    if self.normal_only and "label" in g.conditions:
      raise ValueError("GanTrainConfig: normal_only=True trains on one label, so 'label' cannot be a "
                       "condition; use conditions=('sex', 'age')")
    check_choice("GanTrainConfig.compute_dtype", self.compute_dtype, DTYPES)
    for name in ("diffaug", "cr_augment"):
      unknown = set(getattr(self, name)) - {"translation", "cutout", "color"}
      if unknown:
        raise ValueError(f"GanTrainConfig.{name}: unknown policies {sorted(unknown)}; "
                         "expected 'translation', 'cutout', 'color'")
    if not self.cr_weight >= 0.0 or (self.cr_weight > 0 and not self.cr_augment):
      raise ValueError(f"GanTrainConfig.cr_weight: expected a weight >= 0 (with policies in cr_augment when "
                       f"positive), got {self.cr_weight} with cr_augment={self.cr_augment}")
    if self.ada_target is not None and not 0.0 < self.ada_target < 1.0:
      raise ValueError(f"GanTrainConfig.ada_target: expected None or a value in (0, 1), got {self.ada_target}")
    check_loop_fields(self, "GanTrainConfig")
    for name in ("r1_every", "ada_images"):
      if getattr(self, name) <= 0:
        raise ValueError(f"GanTrainConfig.{name}: expected a positive integer, got {getattr(self, name)}")

  @property
  def resolution(self) -> int:
    return self.generator.resolution

  @property
  def conditions(self) -> tuple[str, ...]:
    return self.generator.conditions


def _gan_models(resolution: int, g_base: int, g_max: int, d_base: int, d_max: int,
            conditions: tuple[str, ...]) -> dict:
  return {
      "generator": GeneratorConfig(resolution=resolution, base_channels=g_base, max_channels=g_max,
                                   conditions=conditions),
      "discriminator": DiscriminatorConfig(resolution=resolution, base_channels=d_base, max_channels=d_max,
                                           conditions=conditions),
  }


def gan_tiny(resolution: int = 32, *, conditions: tuple[str, ...] = KNOWN_CONDITIONS) -> GanTrainConfig:
  """A few channels at 32x32 for unit tests; learns nothing useful.

      python -c "from jaxcxr import config; print(config.gan_tiny())"

  Expected: the 2-step train call compiles in 30-60 s on a 2-core CPU (one
  compile serves every test) and gives finite losses.
  """
  return GanTrainConfig(
      generator=GeneratorConfig(resolution=resolution, latent_dim=128, base_channels=4, max_channels=8,
                                conditions=conditions, cond_embed_dim=8, norm_groups=2),
      discriminator=DiscriminatorConfig(resolution=resolution, base_channels=4, max_channels=8,
                                        conditions=conditions),
      batch_size=4, steps=4, steps_per_call=2, r1_every=2, sample_every=0, samples_per_group=2,
      checkpoint_every=2, max_to_keep=2)


def gan_64_cpu() -> GanTrainConfig:
  """64x64 conditional GAN sized for 2 CPU cores and about 25 minutes.

      jaxcxr train gan --preset gan_64_cpu --data $JAXCXR_DATA/nih_cxr14_subset_256.npz --split all --out runs/gan64

  G channels (128, 64, 32, 16, 8) from 4x4 to 64x64, 0.93M parameters; D (8, 16,
  32, 64, 128), 0.16M. Measured on this project's 2-core CPU worker (jax 0.10.2,
  shared with other jobs, load 2-5): 1-2.5 minutes of init and compile, then
  0.6-0.75 s per step of batch 16, so 2,000 steps take about 25 minutes. A
  400-step trial already showed chest outlines with two dark lung fields;
  expected at 2,000 steps: blurry but recognisable frontal chest radiographs,
  little per-group detail at this size and length.
  """
  return GanTrainConfig(**_gan_models(64, 8, 128, 8, 128, KNOWN_CONDITIONS),
                        batch_size=16, steps=2000, steps_per_call=20, r1_gamma=0.1, r1_every=4,
                        g_learning_rate=2.5e-4, d_learning_rate=2.5e-4, ema_decay=0.995,
                        sample_every=200, checkpoint_every=200)


def gan_128() -> GanTrainConfig:
  """128x128 conditional GAN for a GPU.

      jaxcxr train gan --preset gan_128 --data $JAXCXR_DATA/nih_cxr14_subset_256.npz --split all --out runs/gan128

  G channels (512, 512, 256, 128, 64, 32), 22.7M parameters; D 7.5M; about 2.8
  TFLOP per step of batch 64 (80% of `gan_256`'s), bfloat16 compute. Not timed
  here (no GPU in the session that wrote it); it should fit 20,000 steps in a
  30-minute H100 slot if `gan_256` does. Expected: sharp lung fields and ribs,
  visible sex and age differences.
  """
  return GanTrainConfig(**_gan_models(128, 32, 512, 32, 512, KNOWN_CONDITIONS),
                        batch_size=64, steps=20000, steps_per_call=100, r1_gamma=0.2,
                        compute_dtype="bfloat16", ema_decay=0.999, sample_every=2000, checkpoint_every=2000)


def gan_256() -> GanTrainConfig:
  """256x256 conditional GAN for a GPU: about 20,000 steps of batch 64 in a 30-minute H100 slot.

      jaxcxr train gan --preset gan_256 --data $JAXCXR_DATA/nih_cxr14_subset_256.npz --split all --out runs/gan256

  G channels (512, 512, 256, 128, 64, 32, 16), 22.8M parameters; D 7.5M; about
  3.4 TFLOP per step of batch 64, bfloat16 compute. Not timed here (no GPU in the
  session that wrote it): 20,000 steps in 30 minutes needs 11 steps/s; check the
  first minute's img/s and lower `steps` if it falls short. Expected: 256x256
  radiographs with ribs, clavicles and heart borders.
  """
  return GanTrainConfig(**_gan_models(256, 16, 512, 16, 512, KNOWN_CONDITIONS),
                        batch_size=64, steps=20000, steps_per_call=100, r1_gamma=0.5,
                        compute_dtype="bfloat16", ema_decay=0.999, sample_every=2000,
                        checkpoint_every=2000)


def gan_64_resize_cpu(*, conditions: tuple[str, ...] = KNOWN_CONDITIONS) -> GanTrainConfig:
  """`gan_64_cpu`'s widths with bilinear-then-convolve up-sampling (no sub-pixel checkerboard).

      jaxcxr train gan --preset gan_64_resize_cpu --out runs/gan64r   # data: both NIH archives

  G (128, 64, 32, 16, 8), D (8, 16, 32, 64, 128); about 0.75 s per step of batch 16 on
  one CPU core.
  """
  models = _gan_models(64, 8, 128, 8, 128, conditions)
  models["generator"] = dataclasses.replace(models["generator"], upsampling="resize")
  return dataclasses.replace(gan_64_cpu(), **models, steps=6000, normal_only="label" not in conditions)


def gan_64_resize_normal_cpu() -> GanTrainConfig:
  """`gan_64_resize_cpu` on normal images only, conditioned on sex and age (for AnoGAN)."""
  return gan_64_resize_cpu(conditions=("sex", "age"))


def gan_64_wide_cpu() -> GanTrainConfig:
  """An ablation arm: `gan_64_resize_cpu` with twice the channels at the two largest resolutions.

      jaxcxr train gan --data nih_cxr14_subset_256.npz,nih_cxr14_extra_256.npz \
        --preset gan_64_wide_cpu --out runs/gan64w

  Twice `gan_64_cpu`'s channels at the two largest resolutions (G (128, 128, 64, 32, 16),
  D (16, 32, 64, 128, 128)) and bilinear-then-convolve up-sampling (no per-phase kernels
  to drift into the checkerboard of the sub-pixel blocks).
  """
  models = _gan_models(64, 16, 128, 16, 128, KNOWN_CONDITIONS)
  models["generator"] = dataclasses.replace(models["generator"], upsampling="resize")
  return dataclasses.replace(gan_64_cpu(), **models, steps=6000)


def gan_256_single_cpu() -> GanTrainConfig:
  """A single-stage 256x256 GAN sized for 2 CPU cores (the ablation's one-stage arm).

  G (128, 128, 64, 32, 16, 8, 8) from 4x4 to 256x256 with resize-conv up-sampling,
  D (8, 8, 16, 32, 64, 128, 128); batch 8.
  """
  models = _gan_models(256, 8, 128, 8, 128, KNOWN_CONDITIONS)
  models["generator"] = dataclasses.replace(models["generator"], upsampling="resize")
  return GanTrainConfig(**models, batch_size=8, steps=6000, steps_per_call=10, r1_gamma=0.1, r1_every=4,
                        g_learning_rate=2.5e-4, d_learning_rate=2.5e-4, ema_decay=0.995,
                        sample_every=200, checkpoint_every=100)


def gan_64_normal_cpu() -> GanTrainConfig:
  """`gan_64_cpu` trained on normal images only, conditioned on sex and age (for AnoGAN scoring).

      jaxcxr train gan --preset gan_64_normal_cpu --data $JAXCXR_DATA/nih_cxr14_subset_256.npz --split all \\
        --out runs/gan64n

  Expected: as `gan_64_cpu` (half the images, so more repeats of each).
  """
  base = gan_64_cpu()
  return dataclasses.replace(base, **_gan_models(64, 8, 128, 8, 128, ("sex", "age")), normal_only=True)


def gan_128_resize_cpu(*, conditions: tuple[str, ...] = KNOWN_CONDITIONS) -> GanTrainConfig:
  """A 128x128 base for a 2x cascade stage, sized for one CPU core over several sessions.

      jaxcxr train gan --preset gan_128_resize_cpu --out runs/gan128r   # data: both NIH archives

  `gan_64_resize_cpu`'s recipe one resolution up: G (128, 128, 64, 32, 16, 8) from 4x4 to
  128x128 with resize-conv up-sampling, D (8, 16, 32, 64, 128, 128), batch 16. The 64x64 base
  of `gan_256` leaves its 4x stage to invent everything finer than 4 pixels of a 256 film
  (ribs, vessel markings); a 128x128 base draws them itself.
  """
  models = _gan_models(128, 8, 128, 8, 128, conditions)
  models["generator"] = dataclasses.replace(models["generator"], upsampling="resize")
  return dataclasses.replace(gan_64_cpu(), **models, steps=60000, sample_every=500, checkpoint_every=200,
                             normal_only="label" not in conditions)


def gan_128_resize_normal_cpu() -> GanTrainConfig:
  """`gan_128_resize_cpu` on normal images only, conditioned on sex and age (for AnoGAN).

      jaxcxr train gan --preset gan_128_resize_normal_cpu --init-from GAN --steps 6000 --out runs/gan128n

  Meant to start from a trained `gan_128_resize_cpu` (`--init-from`; the label's weights are
  dropped, `gan.warm_start`): with half the images, a normal-only run from scratch would
  repeat the base's 20,000 steps on less data.
  """
  return gan_128_resize_cpu(conditions=("sex", "age"))


def gan_128_resize_normal_no_cutout_cpu() -> GanTrainConfig:
  """`gan_128_resize_normal_cpu` without DiffAugment's cutout (translation and colour only).

      jaxcxr train gan --preset gan_128_resize_normal_no_cutout_cpu --init-from GAN --steps 4000 --out runs/gan128nc

  Cutout sets a square to 0, mid-grey. With the adaptive probability near 0.45 the
  discriminator sees such a square in about half the real images, and the normal-only GAN
  learned to draw it: flat mid-grey blobs in 3 of 8 latents of its sample grid, and 5.7% of
  its samples' pixels at 127-128 against 1.1% of real films (`gan_256_normal` v3 candidate,
  step 9,800). Meant to continue a trained normal-only GAN (`--init-from`).
  """
  return dataclasses.replace(gan_128_resize_normal_cpu(), diffaug=("translation", "color"))


def gan_128_resize_normal_bcr_cpu() -> GanTrainConfig:
  """`gan_128_resize_normal_no_cutout_cpu` with cutout and translation moved into a consistency term (bCR).

      jaxcxr train gan --preset gan_128_resize_normal_bcr_cpu --init-from GAN --steps 12000 --out runs/gan128bcr

  Without cutout the normal-only GAN drew no grey squares, but its validation figures
  settled worse than with it (PCA FD ratio 1.44-1.61 against 1.21-1.29, detail AUC
  0.92-0.93 against 0.84-0.90, `training_state/gan_v3_normal128_no_cutout`): cutout was
  also D's strongest regulariser. Here D must give a film and its cut-out, shifted copy
  the same logit, but never judges the cut-out copies as real or fake. Weight 1: at the
  bCR paper's 10, the warm-started D (never asked for consistency before) fell to chance
  within 40 steps and stayed there (real logits -0.48 to -0.29 below the fakes' -0.32 to
  -0.18 over steps 40-140). Meant to continue a normal-only GAN that draws no squares
  (`--init-from`, e.g. the no-cutout run): D becomes blind to cut-out squares, so it cannot
  teach G to drop squares it already draws (from the cutout run at step 9,800, a flat
  square stayed in one of the grid's 8 latents at step 500; mid-grey spike 4.13, 2.14,
  1.63 at steps 200-600, real films 0.99).
  """
  return dataclasses.replace(gan_128_resize_normal_no_cutout_cpu(), cr_weight=1.0)


def gan_128_resize_normal_bcr_cutout_cpu() -> GanTrainConfig:
  """`gan_128_resize_normal_bcr_cpu` with cutout back in DiffAugment, held rare by a higher ADA target.

      jaxcxr train gan --preset gan_128_resize_normal_bcr_cutout_cpu --init-from GAN --steps 12000 --out runs/gan128bcrc

  The consistency term alone left the validation PCA FD ratio at 1.49-1.70, where the run with
  cutout in DiffAugment reached 1.21-1.29, but that run drew cutout's squares: its adaptive p
  settled at 0.41-0.45, so D saw a square in about 45% of the real films. Here ADA aims at
  E[sign D(real)] = 0.8 instead of 0.6, which keeps p, and the share of real films with a
  square, several times lower; the consistency term stays. Meant to continue a normal-only
  GAN that draws no squares (`--init-from`, e.g. the bCR run).

  Measured from the bCR run's step 4,400 (session 19; `evaluations/gan_v3_normal128_bcr_cutout_ada0.8_*`):
  p settled at 0.14-0.19, the validation PCA FD ratio fell to 1.42-1.56 and the detail AUC to
  0.85-0.88 within 1,000 steps, but the squares came back: a flat grey square in one of the
  grid's 8 latents at step 1,000, and the mid-grey spike rose 1.17 / 1.51 / 1.53 / 1.88 at steps
  400-1,000 (real films 0.99). Cutout leaks even when D sees a square in under a fifth of the
  real films. Dropped.
  """
  return dataclasses.replace(gan_128_resize_normal_bcr_cpu(), diffaug=("translation", "cutout", "color"),
                             ada_target=0.8)


# The GAN training presets by name, each callable without arguments (`jaxcxr train gan --preset NAME`).
PRESETS = {
    "gan_tiny": gan_tiny,
    "gan_64_cpu": gan_64_cpu,
    "gan_64_normal_cpu": gan_64_normal_cpu,
    "gan_128": gan_128,
    "gan_256": gan_256,
    "gan_64_resize_cpu": gan_64_resize_cpu,
    "gan_64_resize_normal_cpu": gan_64_resize_normal_cpu,
    "gan_64_wide_cpu": gan_64_wide_cpu,
    "gan_256_single_cpu": gan_256_single_cpu,
    "gan_128_resize_cpu": gan_128_resize_cpu,
    "gan_128_resize_normal_cpu": gan_128_resize_normal_cpu,
    "gan_128_resize_normal_no_cutout_cpu": gan_128_resize_normal_no_cutout_cpu,
    "gan_128_resize_normal_bcr_cpu": gan_128_resize_normal_bcr_cpu,
    "gan_128_resize_normal_bcr_cutout_cpu": gan_128_resize_normal_bcr_cutout_cpu,
}

FAMILY = Family(GanTrainConfig, PRESETS, "the conditional chest X-ray GAN")
