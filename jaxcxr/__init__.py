"""jaxcxr: chest X-ray GANs with pre/post-filtering and AnoGAN latent search in JAX/Flax NNX.

Arrays are NHWC. Images are float32 in generator space [-1, 1] or in
U-Net/classifier space [0, 1]; every docstring says which.
"""

__version__ = "0.1.0"
