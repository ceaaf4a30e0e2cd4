"""Tests of Grad-CAM and heatmap overlays."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from flax import nnx
from PIL import Image

from jaxcxr import data
from jaxcxr import explain
from jaxcxr.config import ClassifierConfig, classifier_tiny
from jaxcxr.models.classifier import Classifier, prepare_images


@pytest.fixture(scope="module")
def nih(nih_path):
  return data.load(nih_path)


@pytest.fixture(scope="module")
def models():
  # No zero-initialised residual scales, so that the blocks contribute to the maps.
  make = lambda mode: Classifier(dataclasses.replace(classifier_tiny(input_mode=mode).model, zero_init_residual=False),
                                 rngs=nnx.Rngs(0))
  return {"full": make("full"), "halves": make("halves")}


class PoolModel(nnx.Module):
  """Known-answer model: features = 4x4 average pooling of the image, logit = w * mean(features).

  Only pixels that are bright contribute, so Grad-CAM for target 1 (w > 0) must light up
  exactly the feature cells covering the bright square, with raw maximum w * (cell mean) * 1.
  """

  def __init__(self, w: float):
    self.config = ClassifierConfig(resolution=16, stages=(1,), channels=(1,), norm_groups=1)
    self.w = nnx.Param(jnp.asarray(w, jnp.float32))

  def features(self, x):
    b = x.shape[0]
    return x.reshape(b, 4, 4, 4, 4, 1).mean(axis=(2, 4))           # (B, 4, 4, 1)

  def head(self, feature_map):
    return self.w[...] * feature_map.mean(axis=(1, 2, 3))


def test_known_answer_pool_model():
  x = np.zeros((2, 16, 16, 1), np.float32)
  x[0, 4:8, 8:12] = 1.0          # feature cell (1, 2) fully bright
  x[1, 12:16, 0:4] = 0.5         # cell (3, 0) half bright
  cam = explain.grad_cam(PoolModel(2.0), x, target=1)
  # Raw map: n * alpha * A = 16 * (2 / 16) * A = 2 A, so the max is 2 * cell mean.
  np.testing.assert_allclose(cam.raw_max, [2.0, 1.0], rtol=1e-6)
  for i, (cy, cx) in enumerate([(1, 2), (3, 0)]):
    peak = np.unravel_index(np.argmax(cam.heatmap[i]), (16, 16))
    assert (peak[0] // 4, peak[1] // 4) == (cy, cx)
    assert cam.heatmap[i].max() == pytest.approx(1.0)
    cell = np.zeros((4, 4), bool)
    cell[cy, cx] = True
    near = scipy.ndimage.binary_dilation(cell, np.ones((3, 3), bool))   # the cell and its 8 neighbours
    far = ~np.kron(near, np.ones((4, 4), bool))
    assert np.all(cam.heatmap[i][far] == 0.0)   # bilinear spill reaches neighbouring cells only
  # Target 0 (minus the logit): the bright square is evidence against it, so the map is all zero.
  cam0 = explain.grad_cam(PoolModel(2.0), x, target=0)
  assert np.all(cam0.heatmap == 0.0) and np.all(cam0.raw_max == 0.0)
  # A negative weight flips which class the square supports.
  np.testing.assert_allclose(explain.grad_cam(PoolModel(-2.0), x, target=0).heatmap, cam.heatmap, atol=1e-6)


class PoolHalvesModel(nnx.Module):
  """Known-answer "halves" model: top 4 rows cropped, 4x4 pooling per half, separate weights per half."""

  num_segments = 2
  crop_rows = 4

  def __init__(self, w_left: float, w_right: float):
    self.config = ClassifierConfig(resolution=16, input_mode="halves", crop_top=0.25, stages=(1,), channels=(1,),
                                   norm_groups=1)
    self.w = nnx.Param(jnp.asarray([w_left, w_right], jnp.float32))

  def features(self, x):
    b = x.shape[0]
    x = x[:, 4:]
    pool = lambda h: h.reshape(b, 3, 4, 2, 4, 1).mean(axis=(2, 4))  # (B, 3, 2, 1)
    left, right = pool(x[:, :, :8]), pool(x[:, :, 8:][:, :, ::-1])
    return jnp.concatenate([left, right[:, :, ::-1]], axis=2)       # (B, 3, 4, 1)

  def head(self, feature_map):
    return (self.w[0] * feature_map[:, :, :2].mean(axis=(1, 2, 3))
            + self.w[1] * feature_map[:, :, 2:].mean(axis=(1, 2, 3)))


def test_known_answer_halves():
  x = np.zeros((1, 16, 16, 1), np.float32)
  x[0, 8:12, 12:16] = 1.0   # right half, feature cell (1, 3)
  cam = explain.grad_cam(PoolHalvesModel(0.0, 3.0), x)
  peak = np.unravel_index(np.argmax(cam.heatmap[0]), (16, 16))
  assert 8 <= peak[0] < 12 and 12 <= peak[1] < 16
  assert np.all(cam.heatmap[0, :4] == 0.0) and np.all(cam.heatmap[0, :, :8] == 0.0)   # crop, left half
  np.testing.assert_allclose(cam.raw_max, [3.0], rtol=1e-6)   # n * alpha * A = 6 * (3 / 6) * 1
  # Only the left half's weight is non-zero: the bright right half is ignored.
  assert np.all(explain.grad_cam(PoolHalvesModel(3.0, 0.0), x).heatmap == 0.0)


@pytest.mark.parametrize("mode", ["full", "halves"])
def test_shapes_range_blank_and_batch_independence(mode, models, nih):
  model = models[mode]
  r = model.config.resolution
  images = np.concatenate([nih.images[:3], np.zeros((1, 256, 256), np.uint8), np.full((1, 256, 256), 255, np.uint8)])
  cam = explain.grad_cam(model, images, batch_size=3)   # two batches, the last one padded
  assert cam.heatmap.shape == (5, r, r) and cam.heatmap.dtype == np.float32
  assert cam.raw_max.shape == (5,)
  assert np.isfinite(cam.heatmap).all() and np.isfinite(cam.raw_max).all()
  assert cam.heatmap.min() >= 0.0 and cam.heatmap.max() <= 1.0 and (cam.raw_max >= 0).all()
  for i in range(5):  # each map is normalised by its own maximum, or all zero
    assert cam.heatmap[i].max() == pytest.approx(1.0) or cam.heatmap[i].max() == 0.0
    assert (cam.heatmap[i].max() == 0.0) == (cam.raw_max[i] == 0.0)
  if mode == "halves":
    assert np.all(cam.heatmap[:, : model.crop_rows] == 0.0)   # the cropped top rows carry no heat
  # Batch independence: image 1 alone, in another batch size, gives the same map.
  alone = explain.grad_cam(model, images[1:2], batch_size=3)
  np.testing.assert_allclose(alone.heatmap[0], cam.heatmap[1], atol=1e-5)
  np.testing.assert_allclose(alone.raw_max[0], cam.raw_max[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["full", "halves"])
def test_raw_map_mean_is_logit_minus_bias(mode, models, nih):
  """With GAP + linear, the mean of n * sum_c alpha_c A^c per segment sums to the logit minus the bias."""
  model = models[mode]
  x = jnp.asarray(prepare_images(nih.images[:2], model.config.resolution))
  graphdef, state = nnx.split(model)

  @jax.jit
  def parts(state, x):
    m = nnx.merge(graphdef, state)
    f = m.features(x)
    grads = jax.grad(lambda f: m.head(f).sum())(f)
    cams = explain._segment_cams(f, grads, m.num_segments)   # pylint: disable=protected-access
    return sum(c.mean(axis=(1, 2)) for c in cams), m(x) - m.linear.bias[0]

  total, logit_minus_bias = parts(state, x)
  np.testing.assert_allclose(total, logit_minus_bias, rtol=1e-4, atol=1e-5)


def test_target_validation_and_max_heat(models):
  with pytest.raises(ValueError, match="target"):
    explain.grad_cam(models["full"], np.zeros((1, 16, 16), np.uint8), target=2)
  maps = np.zeros((2, 4, 4), np.float32)
  maps[0, 1, 2] = 3.0
  np.testing.assert_array_equal(explain.max_heat(maps), [3.0, 0.0])


def test_overlay_heatmap(tmp_path, nih):
  image = nih.images[0]
  heat = np.zeros((16, 16), np.float32)
  heat[4:8, 4:8] = 1.0
  path = explain.overlay_heatmap(image, heat, tmp_path / "sub" / "overlay.png")
  with Image.open(path) as im:
    assert im.mode == "RGB" and im.size == (256, 256)
    rgb = np.asarray(im)
  # Cold corner: the radiograph unchanged (gray); hot square: coloured.
  np.testing.assert_array_equal(rgb[200:, 200:, 0], image[200:, 200:])
  np.testing.assert_array_equal(rgb[200:, 200:, 1], image[200:, 200:])
  hot = rgb[80:112, 80:112].astype(int)
  assert np.abs(hot[..., 0] - hot[..., 2]).mean() > 20
  assert not list(tmp_path.glob("sub/.*"))   # no temporary file left behind
  with pytest.raises(ValueError, match="NaN"):
    explain.overlay_heatmap(image, np.full((4, 4), np.nan, np.float32), tmp_path / "bad.png")


def test_lung_share_known_answers():
  maps = np.zeros((3, 8, 8))
  maps[0, 2:4, 2:4] = 1.0                     # all mass inside the lungs
  maps[1, 6:8, 6:8] = 2.0                     # all mass outside
  maps[2] = 1.0                               # uniform: the lungs' share of the area
  masks = np.zeros((3, 8, 8), np.uint8)
  masks[:, 1:5, 1:5] = 1
  masks[:, 1:5, 5:7] = 2                      # any label > 0 is lung
  np.testing.assert_allclose(explain.lung_share(maps, masks), [1.0, 0.0, 24 / 64])
  # Masks at twice the maps' size are resized to them (each map pixel a 2x2 block of the mask).
  np.testing.assert_allclose(explain.lung_share(maps[2:], np.kron(masks[2:], np.ones((2, 2), np.uint8))),
                             [24 / 64], atol=0.02)
  assert np.isnan(explain.lung_share(np.zeros((1, 8, 8)), masks[:1])[0])
  with pytest.raises(ValueError, match="one batch"):
    explain.lung_share(maps, masks[:2])
  with pytest.raises(ValueError, match="non-negative"):
    explain.lung_share(-maps, masks)


def test_lung_evidence_of_the_pool_model():
  x = np.zeros((2, 16, 16), np.uint8)
  x[0, 4:8, 8:12] = 255          # the evidence of image 0 sits in feature cell (1, 2)
  x[1, 12:16, 0:4] = 255         # that of image 1 in cell (3, 0)
  masks = np.zeros((2, 16, 16), np.uint8)
  masks[:, 0:12, 4:16] = 1       # lungs over image 0's square and its neighbourhood, not image 1's
  got = explain.lung_evidence(PoolModel(2.0), x, masks, bootstrap=200)
  share = explain.lung_share(explain.grad_cam(PoolModel(2.0), x).heatmap, masks)
  assert share[0] > 0.9 and share[1] < 0.1
  assert got["n"] == 2 and got["mean"] == pytest.approx(share.mean()) and got["n_empty_maps"] == 0
  assert got["chance"] == pytest.approx(144 / 256) and got["ci95"][0] <= got["mean"] <= got["ci95"][1]
  with pytest.raises(ValueError, match="no images"):
    explain.lung_evidence(PoolModel(2.0), x[:0], masks[:0])
