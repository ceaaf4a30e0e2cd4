"""The models a benchmark run measures: the shipped checkpoints, or tiny random ones (`--quick`).

Timing does not depend on the weights, only on the shapes; `--quick` uses a few
channels at 32x32 so the whole suite runs in under a minute, for the schema test.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxcxr
from jaxcxr import config as config_lib
from jaxcxr import scoring
from jaxcxr.models import Discriminator, Generator
from jaxcxr.models.classifier import Classifier
from jaxcxr.models.cxr_encoder import CXREncoder, load_cxr_encoder
from jaxcxr.models.fanogan import Encoder
from jaxcxr.models.healthygan import Translator
from jaxcxr.models.unet import UNet


@dataclasses.dataclass
class Models:
  """Everything the suites run, with the training recipes of the trainable ones."""
  source: str                       # "shipped" or "tiny"
  generator: Any                    # the sampling generator (a cascade when shipped)
  scorer: Any                       # scoring.Scorer (its batch size is set per measurement)
  normal_generator: Any             # AnoGAN / f-AnoGAN GAN, trained on normal images only
  normal_discriminator: Any         # in inference mode
  encoder: Any                      # f-AnoGAN encoder
  cxr_encoder: Any                  # the CXR encoder of AnoGAN's shipped feature term (and PatchCore's features)
  translator: Any                   # HealthyGAN translator
  gan_train: config_lib.GanTrainConfig    # the recipe of the (base) GAN
  unet_train: config_lib.SegTrainConfig   # the recipe of the lung U-Net
  encoder_train: config_lib.CXREncoderTrainConfig   # the recipe of the self-supervised CXR encoder (VICReg)
  anogan_base_image: bool           # search the base image (the shipped cascade's setting)


def shipped() -> Models:
  """The shipped models (`jaxcxr.load_pretrained`) and the presets they were trained with."""
  pre = jaxcxr.load_pretrained()
  g_normal, d_normal = pre.normal_gan
  encoder, _, _ = pre.fanogan
  cxr_encoder = load_cxr_encoder(jaxcxr.checkpoints.shipped_checkpoint(*jaxcxr.checkpoints.SHIPPED_ENCODERS))
  return Models(source="shipped", generator=pre.generator, scorer=pre.scorer, normal_generator=g_normal,
                normal_discriminator=d_normal, encoder=encoder, cxr_encoder=cxr_encoder, translator=pre.translator,
                gan_train=config_lib.gan_64_resize_cpu(), unet_train=config_lib.unet_256_cpu(),
                encoder_train=config_lib.cxr_encoder_cpu("vicreg"), anogan_base_image=True)


def random_module(make, seed: int):
  """`make(rngs)` with random weights drawn by numpy: no eager initialisers to compile.

  Each float leaf of ndim >= 2 (kernels) ~ N(0, 1 / fan_in), vectors (biases, norm scales,
  spectral-norm u) are ones/sqrt(n); integer leaves stay zero. Timing depends on shapes only;
  eager initialisation would spend most of `--quick` compiling each initialiser.
  """
  abstract = nnx.eval_shape(lambda: make(nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(seed)

  def fill(leaf):
    shape, dtype = leaf.shape, np.dtype(leaf.dtype)
    if not np.issubdtype(dtype, np.floating):
      return jnp.zeros(shape, dtype)
    if len(shape) >= 2:
      return jnp.asarray(rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape), dtype)
    return jnp.full(shape, 1 / np.sqrt(max(1, int(np.prod(shape)))), dtype)

  return nnx.merge(graphdef, jax.tree.map(fill, state))


def tiny() -> Models:
  """A few channels at 32x32, random weights, fixed thresholds."""
  gan = config_lib.gan_tiny(32)
  normal_gan = config_lib.gan_tiny(32, conditions=("sex", "age"))
  unet_train = config_lib.unet_tiny(32)
  # Batch 2 as the other suites; one step per call: compiling the tiny preset's two unrolled steps took 1.5x as long
  # (26 vs 17 s on one loaded core).
  encoder_train = dataclasses.replace(config_lib.cxr_encoder_tiny("vicreg"), batch_size=2)
  unet = random_module(lambda rngs: UNet(unet_train.unet, rngs=rngs), 0)
  classifier = random_module(lambda rngs: Classifier(config_lib.ClassifierConfig(
      resolution=32, stages=(1,), channels=(4,), norm_groups=2), rngs=rngs), 1)
  scoring_config = scoring.ScoringConfig(mask_size=32, dilation=3, atlas_size=8, batch_size=4)
  atlas = np.full((2, 8, 8), 0.5, np.float32)
  scorer = scoring.Scorer(unet, classifier, scoring.Calibration(atlas, 0.5, 0.5, -1.0, 1.0, 0.0, 1.0), scoring_config)
  discriminator = random_module(lambda rngs: Discriminator(normal_gan.discriminator, rngs=rngs), 4)
  return Models(source="tiny", generator=random_module(lambda rngs: Generator(gan.generator, rngs=rngs), 2),
                scorer=scorer, normal_generator=random_module(lambda rngs: Generator(normal_gan.generator, rngs=rngs), 3),
                normal_discriminator=nnx.view(discriminator, use_running_average=True),
                encoder=random_module(lambda rngs: Encoder(config_lib.fanogan_tiny(32).encoder, rngs=rngs), 5),
                cxr_encoder=random_module(lambda rngs: CXREncoder(encoder_train.encoder, rngs=rngs), 7),
                translator=random_module(lambda rngs: Translator(config_lib.healthygan_tiny(32).translator, rngs=rngs), 6),
                gan_train=gan, unet_train=unet_train, encoder_train=encoder_train, anogan_base_image=False)
