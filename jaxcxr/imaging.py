"""Image metrics, perceptual hashes and classical pre-processing for chest X-rays.

Mirrors:
  * `ssim` / `psnr`: `skimage.metrics.structural_similarity` (uniform 7x7 window,
    K1=0.01, K2=0.03, sample covariance, border-cropped mean) and
    `skimage.metrics.peak_signal_noise_ratio`, batched and jitted. As skimage,
    the data range defaults to 255 for uint8 images and (skimage: must be given)
    1 for float images.
  * `average_hash`, `difference_hash`, `perceptual_hash`, `wavelet_hash`: the
    `imagehash` package's ahash, dhash, phash and whash, bit for bit on 8-bit
    images: the same PIL Lanczos resize of 8-bit grayscale ("L") images on the
    host, then the same bit definitions. Uniform images hash to all-False bits
    (imagehash's phash and whash bits of a uniform image are float round-off).
  * `equalize_histogram`: `skimage.exposure.equalize_hist` of float images, in jnp.
  * `clahe`: a thin host-side wrapper over `skimage.exposure.equalize_adapthist`.

Images are float in [0, 1] or uint8 in [0, 255], batched as (B, H, W) or NHWC
(B, H, W, 1); a trailing channel of 1 is squeezed. Jitted functions run on
device; functions returning `np.ndarray`, and the hashes, do their work on the host.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft
from jax import lax
from PIL import Image
from scipy import ndimage
from skimage import exposure, filters, morphology


def _gray_shape(shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
  """Returns (B, H, W) for a (B, H, W) or (B, H, W, 1) shape, else raises ValueError."""
  if len(shape) == 4 and shape[-1] == 1:
    shape = shape[:3]
  if len(shape) != 3:
    raise ValueError(f"{name}: expected a batch of shape (B, H, W) or (B, H, W, 1), got {tuple(shape)}")
  return shape


def _check_pixels(images, name: str):
  """`images` as an array (jax arrays and tracers as they are), refused unless integer or float (not bool,
  complex, strings or objects) and, when concrete, finite."""
  if not isinstance(images, jax.Array):
    images = np.asarray(images)
  if not (jnp.issubdtype(images.dtype, jnp.integer) or jnp.issubdtype(images.dtype, jnp.floating)):
    raise ValueError(f"{name}: expected uint8 or float pixels, got dtype {images.dtype}; convert the images first "
                     f"(e.g. np.asarray(images, np.float32))")
  if (jnp.issubdtype(images.dtype, jnp.floating) and not _is_traced(images) and images.size
      and not bool(jnp.isfinite(images).all())):
    raise ValueError(f"{name}: the images contain NaN or inf pixels; replace them or drop those images first")
  return images


def _as_gray(images, name: str) -> jax.Array:
  """Returns `images` as a float32 (B, H, W) jax array."""
  images = jnp.asarray(images)
  return images.reshape(_gray_shape(images.shape, name)).astype(jnp.float32)


def _as_gray_pair(x, y) -> tuple[jax.Array, jax.Array]:
  x, y = _as_gray(x, "x"), _as_gray(y, "y")
  if x.shape != y.shape:
    raise ValueError(f"y: expected the shape of x {x.shape}, got {y.shape}")
  return x, y


def _as_hashes(hashes, name: str) -> jax.Array:
  """Returns `hashes` as a bool (B, nbits) jax array; bool or 0/1 integer bits (0/1 checked when concrete)."""
  if not isinstance(hashes, jax.Array):
    hashes = np.asarray(hashes)
  if hashes.dtype != bool and not jnp.issubdtype(hashes.dtype, jnp.integer):
    raise ValueError(f"{name}: expected bool hashes (e.g. from perceptual_hash), got dtype {hashes.dtype}")
  if hashes.ndim != 2:
    raise ValueError(f"{name}: expected hashes of shape (B, nbits), got {hashes.shape}")
  concrete = hashes.dtype != bool and not _is_traced(hashes) and hashes.size
  if concrete and not bool(((hashes == 0) | (hashes == 1)).all()):
    raise ValueError(f"{name}: integer hashes must hold 0/1 bits only")
  return jnp.asarray(hashes).astype(bool)


def _check_max_distance(max_distance) -> None:
  if not _is_int(max_distance) or max_distance < 0:
    raise ValueError(f"max_distance: expected an integer >= 0 (bits), got {max_distance!r}")


# ------------------------------------------------------------------ metrics


def _box_mean(x: jax.Array, size: int) -> jax.Array:
  """Mean over each size x size window, 'valid' and separable: (..., H, W) -> (..., H-size+1, W-size+1)."""
  lead = (1,) * (x.ndim - 2)
  x = lax.reduce_window(x, 0.0, lax.add, (*lead, size, 1), (1,) * x.ndim, "VALID")
  x = lax.reduce_window(x, 0.0, lax.add, (*lead, 1, size), (1,) * x.ndim, "VALID")
  return x / size**2


def _is_traced(value) -> bool:
  return isinstance(value, jax.core.Tracer)


@jax.jit
def _value_span(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  return jnp.minimum(x.min(), y.min()), jnp.maximum(x.max(), y.max())


def _metric_inputs(x, y, data_range, name: str) -> tuple[jax.Array, jax.Array, Any]:
  """Checks an image pair for `ssim`/`psnr` and resolves `data_range` from their dtype.

  Returns (x, y, data_range) with x, y jax arrays of their original dtype. The dtype test is
  static, so it also runs under jit; the test that the values fit in `data_range` (their span,
  max - min over both, is at most `data_range`) runs only on concrete arrays.
  """
  x, y = _check_pixels(x, f"{name}: x"), _check_pixels(y, f"{name}: y")
  x, y = jnp.asarray(x), jnp.asarray(y)
  both_float = jnp.issubdtype(x.dtype, jnp.floating) and jnp.issubdtype(y.dtype, jnp.floating)
  if x.dtype != y.dtype and not both_float:
    raise ValueError(f"{name}: x and y must both be uint8 or both be float, got {x.dtype} and {y.dtype}; convert "
                     f"one first (uint8 -> float in [0, 1]: divide by 255)")
  _gray_shape(x.shape, "x")
  _gray_shape(y.shape, "y")
  if data_range is None:
    if x.dtype == jnp.uint8:
      data_range = 255.0
    elif both_float:
      data_range = 1.0
    else:
      raise ValueError(f"{name}: no default data_range for {x.dtype} images; pass data_range (the largest minus "
                       f"the smallest possible pixel value)")
  if _is_traced(data_range) or _is_traced(x) or _is_traced(y):
    return x, y, data_range
  if not 0 < float(data_range) < math.inf:
    raise ValueError(f"{name}: data_range must be > 0 and finite, got {data_range}")
  if x.size and y.size:
    lo, hi = (float(v) for v in _value_span(x, y))
    if hi - lo > float(data_range) * (1 + 1e-6):
      raise ValueError(f"{name}: the images span [{lo:g}, {hi:g}], more than data_range={float(data_range):g}; "
                       f"pass data_range=None (255 for uint8, 1 for float images), the images' true data range "
                       f"(e.g. 255.0 for float values in [0, 255]), or rescale the images")
  return x, y, data_range


def ssim(x, y, *, data_range=None, win_size: int = 7) -> jax.Array:
  """Structural similarity per image, as `skimage.metrics.structural_similarity`.

  With local means u, sample (co)variances v over a uniform win_size^2 window,
  C1 = (0.01 R)^2 and C2 = (0.03 R)^2 for data range R:

    S = (2 ux uy + C1)(2 vxy + C2) / ((ux^2 + uy^2 + C1)(vx + vy + C2)),

  averaged over pixels at least (win_size - 1) // 2 from the border. Only those
  pixels are averaged, so a 'valid' box filter reproduces skimage exactly
  whatever its border mode. The (co)variances are taken of inputs centred on
  the pair's global mean: float32 `E[x^2] - E[x]^2` then cancels on values near
  0 instead of near E[x]^2, keeping the result within ~1e-6 of skimage in float64.

  The computation is jitted (`win_size` static) and `ssim` may be called under
  jit; the check that the images fit in `data_range` runs only on concrete arrays.

  Args:
    x: images (B, H, W) or (B, H, W, 1): uint8, or float in [0, data_range].
    y: images with the shape of `x`, uint8 if `x` is, else float.
    data_range: R, the dynamic range of the images; None: 255 for uint8 images
      (as skimage), 1.0 for float images. Other integer dtypes must give it.
    win_size: odd side of the uniform window, 3 <= win_size <= min(H, W).

  Returns:
    (B,) float32 SSIM; 1 for identical images.

  Raises:
    ValueError: for bad shapes, an invalid `win_size`, one uint8 and one float
      input, no default `data_range` for the dtype, or (concrete inputs) images
      whose values span more than `data_range`, e.g. uint8 images with data_range=1.

  Examples:
    >>> x = jnp.linspace(0, 1, 2 * 16 * 16).reshape(2, 16, 16)
    >>> ssim(x, x).tolist()
    [1.0, 1.0]

  References:
    Wang et al., "Image quality assessment: from error visibility to structural
    similarity", IEEE TIP 2004.
  """
  x, y, data_range = _metric_inputs(x, y, data_range, "ssim")
  return _ssim(x, y, data_range, win_size=win_size)


@functools.partial(jax.jit, static_argnames=("win_size",))
def _ssim(x, y, data_range, *, win_size: int) -> jax.Array:
  x, y = _as_gray_pair(x, y)
  if win_size < 3 or win_size % 2 == 0 or win_size > min(x.shape[1:]):
    raise ValueError(f"win_size: expected an odd integer in [3, {min(x.shape[1:])}], got {win_size}")
  centre = 0.5 * (x.mean(axis=(1, 2), keepdims=True) + y.mean(axis=(1, 2), keepdims=True))  # (B, 1, 1)
  x, y = x - centre, y - centre
  mx, my, mxx, myy, mxy = _box_mean(jnp.stack([x, y, x * x, y * y, x * y]), win_size)  # each (B, h, w)
  cov_norm = win_size**2 / (win_size**2 - 1)
  vx, vy, vxy = cov_norm * (mxx - mx * mx), cov_norm * (myy - my * my), cov_norm * (mxy - mx * my)
  ux, uy = mx + centre, my + centre
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
  return s.mean(axis=(1, 2))


def psnr(x, y, *, data_range=None) -> jax.Array:
  """Peak signal-to-noise ratio per image, as `skimage.metrics.peak_signal_noise_ratio`.

  PSNR = 10 log10(R^2 / MSE); inf for identical images. Jitted, and callable
  under jit; the check that the images fit in `data_range` runs only on
  concrete arrays.

  Args:
    x: reference images (B, H, W) or (B, H, W, 1): uint8, or float in [0, data_range].
    y: test images with the shape of `x`, uint8 if `x` is, else float.
    data_range: R, the dynamic range of the images; None: 255 for uint8 images
      (as skimage), 1.0 for float images. Other integer dtypes must give it.

  Returns:
    (B,) float32 PSNR in dB.

  Raises:
    ValueError: for bad shapes, one uint8 and one float input, no default
      `data_range` for the dtype, or (concrete inputs) images whose values span
      more than `data_range`.
  """
  x, y, data_range = _metric_inputs(x, y, data_range, "psnr")
  return _psnr(x, y, data_range)


@jax.jit
def _psnr(x, y, data_range) -> jax.Array:
  x, y = _as_gray_pair(x, y)
  # Rows first, then columns: shorter float32 sums keep PSNR within ~1e-5 dB of skimage's float64 mean.
  mse = jnp.mean(jnp.mean(jnp.square(x - y), axis=2), axis=1)
  return 10 * jnp.log10(data_range**2 / mse)


# ------------------------------------------------------------------ perceptual hashes


def _hash_pixels(images, name: str = "images") -> np.ndarray:
  """8-bit (B, H, W) pixels to hash: uint8 images as they are, float images in [0, 1] as round(255 x).

  Hashes run on the host, so tracers are refused, as are non-finite pixels (a NaN would
  otherwise hash like black), float values outside [0, 1] and other dtypes.
  """
  if _is_traced(images):
    raise ValueError(f"{name}: perceptual hashes resize images with PIL on the host (as imagehash); call them "
                     f"outside jax.jit / jax.vmap, on concrete arrays")
  pixels = np.asarray(images)
  pixels = pixels.reshape(_gray_shape(pixels.shape, name))
  if pixels.dtype == np.uint8:
    return pixels
  if not jnp.issubdtype(pixels.dtype, jnp.floating):
    raise ValueError(f"{name}: expected uint8 images or float images in [0, 1], got dtype {pixels.dtype}")
  pixels = pixels.astype(np.float64)
  finite = np.isfinite(pixels)
  if not finite.all():
    bad = np.unique(np.nonzero(~finite)[0])
    raise ValueError(f"{name}: {int((~finite).sum())} non-finite pixel(s) (NaN or inf) in image(s) "
                     f"{bad[:10].tolist()}{' ...' if bad.size > 10 else ''}; replace them or drop those images "
                     f"before hashing")
  if pixels.size and (pixels.min() < 0 or pixels.max() > 1):
    raise ValueError(f"{name}: float images must be in [0, 1], got values in [{pixels.min():g}, {pixels.max():g}]; "
                     f"divide 8-bit values by 255 or pass uint8 images")
  return np.rint(pixels * 255).astype(np.uint8)


def _resize_lanczos(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 (B, H, W) -> uint8 (B, height, width), each image resized as an 8-bit "L" PIL image with LANCZOS.

  imagehash's resize (`image.convert("L").resize((width, height), Image.LANCZOS)`), so the bits match its own.
  """
  out = np.empty((pixels.shape[0], height, width), np.uint8)
  for i, image in enumerate(pixels):
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.Resampling.LANCZOS)
    out[i] = np.asarray(resized)
  return out


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_hash_size(hash_size: int) -> None:
  if not _is_int(hash_size) or hash_size < 2:
    raise ValueError(f"hash_size: expected an integer >= 2 (as imagehash), got {hash_size}")


def _flat(grid: np.ndarray) -> np.ndarray:
  """(B, h, w) -> (B, h*w); explicit sizes, as -1 is ambiguous for an empty batch."""
  return grid.reshape(grid.shape[0], grid.shape[1] * grid.shape[2])


def average_hash(images, *, hash_size: int = 8) -> jax.Array:
  """imagehash ahash: Lanczos downscale to hash_size^2 8-bit pixels, bit = pixel > their mean.

  Computed on the host (see `_hash_pixels`): float images in [0, 1] are first
  rounded to 8 bits, round(255 x), and each image is resized as imagehash does
  (PIL LANCZOS on an "L" image), so the bits equal `imagehash.average_hash`'s.
  Integer pixels against their float64 mean: a uniform image gives all-False bits.

  Args:
    images: (B, H, W) or (B, H, W, 1), uint8 or float in [0, 1], concrete (not traced).
    hash_size: side of the bit grid, >= 2.

  Returns:
    (B, hash_size**2) bool jax array, bits in row-major order (as imagehash's `hash.ravel()`).

  Raises:
    ValueError: for bad shapes or dtypes, float values outside [0, 1], NaN or inf
      pixels, traced input, or hash_size < 2.
  """
  _check_hash_size(hash_size)
  small = _flat(_resize_lanczos(_hash_pixels(images), hash_size, hash_size))
  return jnp.asarray(small > small.mean(axis=1, keepdims=True))


def difference_hash(images, *, hash_size: int = 8) -> jax.Array:
  """imagehash dhash: Lanczos downscale to hash_size x (hash_size + 1), bit = pixel > its left neighbour.

  Computed on the host on 8-bit pixels, as `average_hash`; the bits equal
  `imagehash.dhash`'s, and a uniform image gives all-False bits.

  Args:
    images: (B, H, W) or (B, H, W, 1), uint8 or float in [0, 1], concrete (not traced).
    hash_size: side of the bit grid, >= 2.

  Returns:
    (B, hash_size**2) bool jax array.

  Raises:
    ValueError: as `average_hash`.
  """
  _check_hash_size(hash_size)
  small = _resize_lanczos(_hash_pixels(images), hash_size, hash_size + 1)
  return jnp.asarray(_flat(small[:, :, 1:] > small[:, :, :-1]))


def perceptual_hash(images, *, hash_size: int = 8, highfreq_factor: int = 4) -> jax.Array:
  """imagehash phash: 2-D DCT-II of a (hash_size * highfreq_factor)^2 Lanczos downscale.

  Bits are the top-left hash_size x hash_size (lowest-frequency) coefficients,
  DC included, compared with their median. Computed on the host on 8-bit
  pixels, as `average_hash`, with imagehash's unnormalised float64 DCT, so the
  bits equal `imagehash.phash`'s, except for uniform images: their non-DC
  coefficients are 0 up to float round-off, which makes imagehash's bits noise;
  here a uniform downscale gives all-False bits.

  Args:
    images: (B, H, W) or (B, H, W, 1), uint8 or float in [0, 1], concrete (not traced).
    hash_size: side of the bit grid, >= 2.
    highfreq_factor: downscale side is hash_size * highfreq_factor, >= 1.

  Returns:
    (B, hash_size**2) bool jax array.

  Raises:
    ValueError: as `average_hash`, or highfreq_factor < 1.
  """
  _check_hash_size(hash_size)
  if not _is_int(highfreq_factor) or highfreq_factor < 1:
    raise ValueError(f"highfreq_factor: expected an integer >= 1, got {highfreq_factor}")
  n = hash_size * highfreq_factor
  small = _resize_lanczos(_hash_pixels(images), n, n)
  bits = np.zeros((small.shape[0], hash_size * hash_size), bool)
  for i, pixels in enumerate(small):
    if pixels.min() == pixels.max():
      continue  # uniform: no structure to encode
    # imagehash: scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1), the same float64 DCT-II.
    low = scipy.fft.dct(scipy.fft.dct(pixels, axis=0), axis=1)[:hash_size, :hash_size]
    bits[i] = (low > np.median(low)).ravel()
  return jnp.asarray(bits)


def wavelet_hash(images, *, hash_size: int = 8, image_scale: int | None = None) -> jax.Array:
  """imagehash whash (Haar): the level-k Haar approximation (LL) band, bit = LL > its median.

  As imagehash, images are resized (Lanczos, on 8-bit pixels, as `average_hash`)
  to `image_scale` (default: the largest power of two <= min(H, W), at least
  hash_size) and decomposed with the orthonormal Haar DWT for
  k = log2(image_scale / hash_size) levels; each level maps a 2x2 block
  (a, b, c, d) to (a + b + c + d) / 2, so the LL band is proportional to the sums
  of the 8-bit pixels over (image_scale / hash_size)^2 blocks, which are
  compared exactly here. imagehash's `remove_max_haar_ll` zeroes the coarsest LL
  coefficient, i.e. subtracts the image mean: that shifts every LL value and
  their median alike, so it cannot change a bit and is omitted. The bits equal
  `imagehash.whash`'s except where its float round-off decides between equal
  block sums (equal to the median): those bits are False here, so a uniform
  image gives all-False bits.

  Args:
    images: (B, H, W) or (B, H, W, 1), uint8 or float in [0, 1], concrete (not traced).
    hash_size: side of the bit grid, a power of two.
    image_scale: side of the resized image, a power of two >= hash_size.

  Returns:
    (B, hash_size**2) bool jax array.

  Raises:
    ValueError: as `average_hash`, or if hash_size or image_scale is not a valid power of two.
  """
  pixels = _hash_pixels(images)
  if not _is_int(hash_size) or hash_size < 1 or hash_size & (hash_size - 1):
    raise ValueError(f"hash_size: expected a power of two, got {hash_size!r}")
  if image_scale is None:
    image_scale = max(2 ** int(math.log2(min(pixels.shape[1:]))), hash_size)
  for name, value in (("hash_size", hash_size), ("image_scale", image_scale)):
    if not _is_int(value) or value < 1 or value & (value - 1):
      raise ValueError(f"{name}: expected a power of two, got {value}")
  if image_scale < hash_size:
    raise ValueError(f"image_scale: expected >= hash_size ({hash_size}), got {image_scale}")
  small = _resize_lanczos(pixels, image_scale, image_scale)
  block = image_scale // hash_size
  sums = _flat(small.reshape(small.shape[0], hash_size, block, hash_size, block).sum(axis=(2, 4), dtype=np.int64))
  if not sums.shape[0]:
    return jnp.zeros(sums.shape, bool)
  return jnp.asarray(sums > np.median(sums, axis=1, keepdims=True))


# ------------------------------------------------------------------ hash distances and filters


def _hamming(a: jax.Array, b: jax.Array) -> jax.Array:
  """(Ba, n), (Bb, n) bool -> (Ba, Bb) int32, as one +-1 matmul: d = (n - <sa, sb>) / 2."""
  sa = jnp.where(a, 1.0, -1.0).astype(jnp.float32)
  sb = jnp.where(b, 1.0, -1.0).astype(jnp.float32)
  dots = jnp.matmul(sa, sb.T, precision=lax.Precision.HIGHEST)  # exact: integers < 2**24
  return jnp.round((a.shape[1] - dots) / 2).astype(jnp.int32)


def hamming_distances(a, b) -> jax.Array:
  """All pairwise Hamming distances between two sets of bit hashes.

  Args:
    a: (Ba, nbits) bool hashes.
    b: (Bb, nbits) bool hashes.

  Returns:
    (Ba, Bb) int32, entry [i, j] = number of bits where a[i] and b[j] differ.

  Raises:
    ValueError: for non-2-D or non-bit inputs, or mismatched nbits.
  """
  a, b = _as_hashes(a, "a"), _as_hashes(b, "b")
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"b: expected {a.shape[1]} bits per hash like a, got {b.shape[1]}")
  return _hamming_jit(a, b)


_hamming_jit = jax.jit(_hamming)


@functools.partial(jax.jit, static_argnames=("block_size",))
def _near_pair_block(hashes, row0, col0, num_hashes, max_distance, *, block_size):
  """Mask of pairs (row0 + r, col0 + c) with row < col < num_hashes and distance <= max_distance."""
  rows = lax.dynamic_slice_in_dim(hashes, row0, block_size)
  cols = lax.dynamic_slice_in_dim(hashes, col0, block_size)
  i = row0 + jnp.arange(block_size)
  j = col0 + jnp.arange(block_size)
  mask = (_hamming(rows, cols) <= max_distance) & (i[:, None] < j[None, :]) & (j[None, :] < num_hashes)
  return mask, mask.any()


def find_near_duplicates(hashes, *, max_distance: int = 5, block_size: int = 4096) -> np.ndarray:
  """Pairs of hashes within `max_distance` bits of each other.

  Distances are computed on device in block_size x block_size tiles of the
  upper triangle, and a tile is copied to the host only when it holds a pair,
  so memory stays O(block_size^2) however many hashes there are.

  Args:
    hashes: (N, nbits) bool hashes, e.g. from `perceptual_hash`.
    max_distance: largest Hamming distance that counts as a near-duplicate.
    block_size: tile side (rows and columns) of each device computation.

  Returns:
    (P, 2) int64 array of index pairs i < j, sorted lexicographically.

  Raises:
    ValueError: for hashes that are not 2-D bits, a negative max_distance or block_size < 1.
  """
  hashes = _as_hashes(hashes, "hashes")
  _check_max_distance(max_distance)
  if not _is_int(block_size) or block_size < 1:
    raise ValueError(f"block_size: expected an integer >= 1, got {block_size!r}")
  n = hashes.shape[0]
  block = max(1, min(block_size, n))
  num_blocks = -(-n // block)
  padded = jnp.pad(hashes, ((0, num_blocks * block - n), (0, 0)))
  found = [np.zeros((0, 2), np.int64)]
  for bi in range(num_blocks):
    for bj in range(bi, num_blocks):
      mask, any_pair = _near_pair_block(padded, bi * block, bj * block, n, max_distance, block_size=block)
      if any_pair:
        r, c = np.nonzero(np.asarray(mask))
        found.append(np.stack([r + bi * block, c + bj * block], axis=1).astype(np.int64))
  pairs = np.concatenate(found)
  return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def flag_neighbour_outliers(hashes, *, max_distance: int = 5) -> np.ndarray:
  """Flags generated samples that resemble neither neighbour in their given order.

  The neighbour rule: image i is flagged (to drop) when its Hamming distance to
  its previous image AND to its next image both exceed `max_distance`. The first
  and the last image have one neighbour each and are flagged when that single
  distance exceeds it. A lone image has no neighbour and is never flagged.

  Args:
    hashes: (B, nbits) bool hashes of the images, in their sampling order.
    max_distance: largest Hamming distance that counts as "close".

  Returns:
    (B,) bool, True for images to drop.

  Raises:
    ValueError: for hashes that are not 2-D bits, or a negative max_distance.
  """
  hashes = _as_hashes(hashes, "hashes")
  _check_max_distance(max_distance)
  if hashes.shape[0] < 2:
    return np.zeros(hashes.shape[0], bool)
  far = np.asarray(jnp.sum(hashes[1:] != hashes[:-1], axis=1)) > max_distance  # (B-1,)
  return np.concatenate([[True], far]) & np.concatenate([far, [True]])


# ------------------------------------------------------------------ contrast


def checkerboard_strength(images) -> jax.Array:
  """How much of each image's fine detail is a fixed 2x2-periodic pattern (a checkerboard or stripes).

  The detail image r = x - binomial_blur_3x3(x) keeps every pattern of period 2 (the blur
  removes none of it). The means of r over the four 2x2 sub-lattices (pixels with the same
  (y mod 2, x mod 2)) are equal for natural images, whose detail has no preferred phase, and
  differ by the pattern's amplitude when up-sampling left one (measured inside a border of
  1/8 of the side: zero-padded convolutions make phase-dependent edges). Returned: the standard
  deviation of the four means over the standard deviation of r: about 1/sqrt(HW/4) for
  detail without a pattern (< 0.02 at 256x256), near 1 when the pattern dominates.

  Args:
    images: float (B, H, W) or (B, H, W, 1), even H and W, any range.

  Returns:
    float32 (B,).

  Raises:
    ValueError: for bad shapes, odd sides, dtypes other than integer or float, or (concrete
      inputs) NaN or inf pixels.
  """
  x = _as_gray(_check_pixels(images, "checkerboard_strength"), "checkerboard_strength")
  if x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError(f"checkerboard_strength: expected even image sides, got {x.shape[1:]}")
  return _checkerboard_strength(x)


@jax.jit
def _checkerboard_strength(x: jax.Array) -> jax.Array:
  b, h, w = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
  k = jnp.array([1.0, 2.0, 1.0]) / 4.0
  rows = sum(k[i] * padded[:, i: i + h, :] for i in range(3))
  blurred = sum(k[j] * rows[:, :, j: j + w] for j in range(3))
  m = 2 * (min(h, w) // 16)       # an even margin: zero-padded convolutions leave phase-dependent borders
  r = (x - blurred)[:, m: h - m, m: w - m]
  hi, wi = r.shape[1:]
  phases = r.reshape(b, hi // 2, 2, wi // 2, 2).mean(axis=(1, 3)).reshape(b, 4)
  return phases.std(axis=-1) / (r.std(axis=(1, 2)) + 1e-8)


def equalize_histogram(images, *, num_bins: int = 256) -> jax.Array:
  """Global histogram equalisation per image, as `skimage.exposure.equalize_hist`.

  Each image's [min, max] range is split into `num_bins` equal bins and every
  pixel is mapped to the normalised cumulative histogram, linearly interpolated
  between bin centres (skimage's `np.interp`). A constant image gets numpy's
  range (v - 0.5, v + 0.5), as in skimage.

  The mapping depends only on each image's values relative to its [min, max],
  so uint8 images give the result of their float version x / 255, i.e.
  `equalize_hist` of the float image (skimage's own uint8 path bins per integer
  value instead and differs by up to ~0.004).

  Args:
    images: (B, H, W) or (B, H, W, 1), float or uint8.
    num_bins: number of histogram bins, at least 2.

  Returns:
    float32 images of the input's shape, in [0, 1].

  Raises:
    ValueError: for bad shapes, dtypes other than integer or float, (concrete inputs) NaN or
      inf pixels, or num_bins < 2.
  """
  if not _is_int(num_bins) or num_bins < 2:
    raise ValueError(f"num_bins: expected an integer >= 2, got {num_bins!r}")
  return _equalize_histogram(_check_pixels(images, "images"), num_bins=int(num_bins))


@functools.partial(jax.jit, static_argnames=("num_bins",))
def _equalize_histogram(images, *, num_bins: int) -> jax.Array:
  shape = jnp.shape(images)
  x = _as_gray(images, "images")

  def equalize_one(image):  # (H, W)
    lo, hi = image.min(), image.max()
    lo, hi = jnp.where(lo == hi, lo - 0.5, lo), jnp.where(lo == hi, hi + 0.5, hi)
    position = (image - lo) / (hi - lo) * num_bins  # in bin widths from lo
    index = jnp.clip(jnp.floor(position).astype(jnp.int32), 0, num_bins - 1)
    cdf = jnp.cumsum(jnp.bincount(index.ravel(), length=num_bins)).astype(jnp.float32) / image.size
    # np.interp on the uniform grid of bin centres (position k + 0.5), clamped at both ends.
    left = jnp.clip(jnp.floor(position - 0.5).astype(jnp.int32), 0, num_bins - 2)
    weight = jnp.clip(position - 0.5 - left.astype(jnp.float32), 0.0, 1.0)
    return cdf[left] + weight * (cdf[left + 1] - cdf[left])

  # One image at a time (`lax.map`, not `vmap`): every batch size runs the same per-image program, so an image's
  # result does not depend on its batch to the last bit, whatever vectorisation the compiler picks for a shape.
  return jax.lax.map(equalize_one, x).reshape(shape)


def _unit_float_images(images, name: str) -> np.ndarray:
  """float32 numpy (B, H, W) in [0, 1] from uint8 (divided by 255) or float images in [0, 1] (else ValueError)."""
  images = np.asarray(images)
  shape = _gray_shape(images.shape, name)
  if images.dtype == np.uint8:
    return images.reshape(shape).astype(np.float32) / 255
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"{name}: expected uint8 images or float images in [0, 1], got dtype {images.dtype}")
  x = images.reshape(shape).astype(np.float32)
  if not np.isfinite(x).all():
    raise ValueError(f"{name}: images contain NaN or inf; replace them or drop those images first")
  if x.size and (x.min() < 0 or x.max() > 1):
    raise ValueError(f"{name}: float images must be in [0, 1], got values in [{x.min():g}, {x.max():g}]; "
                     f"divide 8-bit values by 255 or pass uint8 images")
  return x


def clahe(images, *, clip_limit: float = 0.01, kernel_size=None) -> np.ndarray:
  """Contrast-limited adaptive histogram equalisation on the host.

  A loop over `skimage.exposure.equalize_adapthist`, a well-kept reference
  implementation; CLAHE's tile interpolation gains little from a jnp port for
  one-off dataset pre-processing. uint8 images are taken as x / 255 (the same
  result as skimage's on the uint8 image).

  Args:
    images: (B, H, W) or (B, H, W, 1), uint8 or float in [0, 1], numpy or jax.
    clip_limit: skimage's normalised clip limit in (0, 1]; higher gives more contrast.
    kernel_size: tile shape (int or (h, w)); None is skimage's default, 1/8 of each side.

  Returns:
    float32 numpy images of the input's shape, in [0, 1], whatever the input
    dtype; constant images are returned unchanged (divided by 255 if uint8).

  Raises:
    ValueError: for bad shapes, dtypes other than uint8 and float, NaN or inf,
      float values outside [0, 1], clip_limit outside (0, 1] or a kernel side < 1.
  """
  shape = np.shape(images)
  x = _unit_float_images(images, "images")
  if not isinstance(clip_limit, (int, float, np.integer, np.floating)) or not 0 < clip_limit <= 1:   # and NaN
    raise ValueError(f"clip_limit: expected a number in (0, 1], got {clip_limit!r}")
  if kernel_size is not None and not all(_is_int(k) and k >= 1 for k in np.atleast_1d(kernel_size).tolist()):
    raise ValueError(f"kernel_size: expected None or integer tile sides >= 1, got {kernel_size!r}")
  # skimage stretches its output to [0, 1], which turns a constant image white; keep it.
  out = [
      img if np.ptp(img) == 0 else exposure.equalize_adapthist(img, kernel_size=kernel_size, clip_limit=clip_limit)
      for img in x
  ]
  return np.clip(np.array(out, np.float32), 0.0, 1.0).reshape(shape)


# ------------------------------------------------------------------ lung masks


def _lung_mask_one(image: np.ndarray) -> np.ndarray:
  """Heuristic lung mask of one (H, W) radiograph in [0, 1]; see `lung_mask_morphological`."""
  body = image > 1 / 255  # pure-black padding is not body
  if body.sum() < 0.1 * image.size or np.ptp(image[body]) < 1e-3:
    return np.zeros(image.shape, bool)
  # Band-pass: subtracting a lung-scale blur removes the top-to-bottom exposure gradient
  # that otherwise joins the lung apices to the dark air above the shoulders.
  smooth = ndimage.gaussian_filter(image, sigma=2.0) - ndimage.gaussian_filter(image, sigma=30.0)
  dark = (smooth < filters.threshold_otsu(smooth[body])) & body
  dark = ndimage.binary_opening(dark, morphology.disk(3))
  # Outside air is dark too; it reaches the image border directly or via black padding.
  labels, _ = ndimage.label(dark | ~body)
  edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
  dark &= ~np.isin(labels, edge[edge > 0])
  dark = ndimage.binary_closing(dark, morphology.disk(5))
  labels, _ = ndimage.label(dark)
  largest = np.argsort(np.bincount(labels.ravel())[1:])[::-1][:2] + 1  # empty when nothing is left
  return ndimage.binary_fill_holes(np.isin(labels, largest))


def lung_mask_morphological(images) -> np.ndarray:
  """Classical lung mask for frontal radiographs (a heuristic baseline), on the host.

  Per image: band-pass filtering (Gaussian blur with sigma 2 px minus one with
  sigma 30 px); Otsu threshold on the body pixels (pure-black padding excluded),
  keeping the dark side; opening with a disk of radius 3; dropping dark
  components connected to the image border or to the padding (outside air);
  closing with a disk of radius 5; keeping the two largest components and
  filling their holes. Tuned for 256 x 256 images, where lungs are dark and bone
  is bright. Blank or constant images give empty masks. On the 24 NIH test
  fixture images 23 masks are two plausible left/right lungs; failures happen
  where a lung merges with the dark air outside the body.

  Args:
    images: (B, H, W) or (B, H, W, 1), uint8 or float in [0, 1], numpy or jax.

  Returns:
    (B, H, W) bool numpy masks.

  Raises:
    ValueError: as `clahe` (bad shapes or dtypes, NaN or inf, float values outside [0, 1]).
  """
  x = _unit_float_images(images, "images")
  return np.array([_lung_mask_one(img) for img in x], bool).reshape(x.shape)
