"""Flax NNX models of jaxcxr (NHWC). Models never import training or scoring code."""

from jaxcxr.models.condition import dataset_condition, group_condition_batch, make_condition, normalize_age
from jaxcxr.models.discriminator import Discriminator, load_discriminator
from jaxcxr.models.generator import Generator, latents, load_generator, make_cascade, sample_images
from jaxcxr.models.upsampler import Upsampler, load_upsampler
from jaxcxr.models.layers import SpectralConv, depth_to_space

__all__ = [
    "Discriminator",
    "Generator",
    "SpectralConv",
    "Upsampler",
    "dataset_condition",
    "depth_to_space",
    "group_condition_batch",
    "latents",
    "load_discriminator",
    "load_generator",
    "load_upsampler",
    "make_cascade",
    "make_condition",
    "normalize_age",
    "sample_images",
]
