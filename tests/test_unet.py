"""Tests of the lung U-Net (`jaxcxr.models.unet`) and its training (`jaxcxr.train.segmentation`).

Only the 8-image COVID fixture with lung masks is used. XLA:CPU compiles are the cost
here, so the tests share them: one train-step compile (`unet_tiny` on 2 training
images, used by the overfit and the resume test), one evaluation batch size, and a
few tiny networks for the shape table.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcxr import data
from jaxcxr.config import PRESETS, SegTrainConfig, UNetConfig, from_dict, to_dict, unet_tiny
from jaxcxr.models.unet import UNet, count_params, load_unet, predict_masks
from jaxcxr.train import segmentation as seg

# The training config of both training tests (same compiled step: only loop-only fields differ).
TINY = unet_tiny()
# The network of the inference tests (also a row of the shape table, so its forward compile is shared).
SMALL = UNetConfig(resolution=32, channels=(4, 8, 16), norm_groups=2)


@pytest.fixture(scope="module")
def covid(covid_path):
  return data.load(covid_path)


def _unet(config: UNetConfig, seed: int = 0) -> UNet:
  return UNet(config, rngs=nnx.Rngs(seed))


@jax.jit
def _apply(model: UNet, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  # Jitted: eager NNX dispatches (and compiles) every primitive on its own, minutes on a busy CPU.
  return model(x), model.predict_masks(x)


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize(
    "config, in_shape",
    [
        (SMALL, (3, 32, 32, 1)),
        (UNetConfig(resolution=64, channels=(4, 8), norm_groups=2), (2, 32, 64, 1)),  # other size, non-square
        # Four levels, GroupNorm groups capped at 3 for 6 channels, two classes.
        (UNetConfig(resolution=48, channels=(4, 6, 8, 12), norm_groups=4, num_classes=2), (1, 48, 48, 1)),
        (dataclasses.replace(SMALL, dtype="bfloat16"), (1, 32, 32, 1)),
    ])
def test_unet_shapes(config, in_shape, getkey):
  unet = _unet(config)
  x = jax.random.uniform(getkey(), in_shape)
  logits, labels = _apply(unet, x)
  assert logits.shape == in_shape[:3] + (config.num_classes,)
  assert logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()
  assert labels.shape == in_shape[:3] and labels.dtype == jnp.int32
  # Parameters stay float32 whatever the compute dtype.
  assert {p.dtype for p in jax.tree.leaves(nnx.state(unet, nnx.Param))} == {jnp.dtype(jnp.float32)}


def test_unet_rejects_bad_inputs_and_configs():
  unet = _unet(UNetConfig(resolution=32, channels=(4, 8, 16)))
  with pytest.raises(ValueError, match="multiples of 4"):
    jax.eval_shape(unet, jnp.zeros((1, 30, 32, 1)))
  with pytest.raises(ValueError, match=r"\(B, H, W, 1\)"):
    jax.eval_shape(unet, jnp.zeros((1, 32, 32)))
  with pytest.raises(ValueError, match="multiple of 16"):
    UNetConfig(resolution=72, channels=(4, 8, 16, 32, 64))
  with pytest.raises(ValueError, match="dtype"):
    UNetConfig(dtype="float16")
  with pytest.raises(ValueError, match="multiple of steps_per_call"):
    SegTrainConfig(steps=15, steps_per_call=10)


def test_presets_param_counts_and_json_round_trip():
  counts = {}
  for name, preset in PRESETS.items():
    if not name.startswith("unet_"):
      continue
    config = preset()
    assert from_dict(SegTrainConfig, json.loads(json.dumps(to_dict(config)))) == config
    counts[name] = count_params(nnx.eval_shape(lambda c=config: UNet(c.unet, rngs=nnx.Rngs(0))))
  # Golden numbers: a change of architecture shows here first.
  assert counts == {"unet_tiny": 29_571, "unet_128_cpu": 486_787, "unet_256_cpu": 1_947_011, "unet_256": 7_763_971}


@pytest.fixture(scope="module")
def small_unet():
  return _unet(SMALL)


def test_inference_is_batch_independent(covid, small_unet):
  x = seg.resize_images(data.to_unit(covid.images[:3])[..., None], (32, 32))
  alone, _ = _apply(small_unet, x[:1])
  in_batch, _ = _apply(small_unet, x)
  np.testing.assert_allclose(np.asarray(alone[0]), np.asarray(in_batch[0]), rtol=1e-5, atol=1e-5)
  # Host path: padding of the last batch and the batch size never change a mask (up to logit ties).
  one = predict_masks(small_unet, covid.images[:3], batch_size=1)
  two = predict_masks(small_unet, covid.images[:3], batch_size=2)
  assert (one == two).mean() > 0.9999


def test_predict_masks_resizes_to_the_input_size(covid, small_unet):
  images = covid.images[:3, :200, :150]  # wrong size and not square: resized (stretched), never cropped
  masks = predict_masks(small_unet, images, batch_size=2)
  assert masks.shape == (3, 200, 150) and masks.dtype == np.uint8
  assert set(np.unique(masks)) <= {0, 1, 2}
  unit = images.astype(np.float32) / 255.0
  np.testing.assert_array_equal(predict_masks(small_unet, unit[..., None], batch_size=2), masks)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    predict_masks(small_unet, unit * 2.0 - 1.0)
  with pytest.raises(ValueError, match="shape"):
    predict_masks(small_unet, unit[0])


# ----------------------------------------------------------------------------- loss and scores


def test_segmentation_loss_limits():
  y = jnp.asarray(np.random.default_rng(0).integers(0, 3, (2, 8, 8)))
  loss = jax.jit(seg.segmentation_loss)
  _, (ce, _) = loss(jnp.zeros((2, 8, 8, 3)), y)
  np.testing.assert_allclose(float(ce), np.log(3.0), rtol=1e-6)
  perfect = 50.0 * jax.nn.one_hot(y, 3)
  total, (ce, dice_loss) = loss(perfect, y)
  assert float(ce) < 1e-6 and float(dice_loss) < 1e-6 and float(total) < 1e-5


def test_segmentation_scores_perfect_and_swapped(covid):
  masks = covid.lung_masks[:3]
  scores = seg.segmentation_scores(masks, masks)
  assert set(scores) == set(seg.METRIC_KEYS)   # no patient ids: no intervals
  assert scores["n"] == 3
  for key in ("dice_mean", "dice_right", "dice_left", "iou_mean", "pixel_accuracy"):
    assert scores[key] == 1.0
  swapped = np.where(masks == 1, 2, np.where(masks == 2, 1, masks)).astype(np.uint8)
  wrong = seg.segmentation_scores(swapped, masks)
  assert wrong["dice_right"] == 0.0 and wrong["dice_left"] == 0.0


def test_bad_masks_are_refused(covid, small_unet, tmp_path):
  unet = small_unet
  bad = covid.lung_masks.copy()
  bad[0, 0, 0] = 3
  with pytest.raises(data.DataError, match=r"unknown label\(s\) \[3\]"):
    seg.evaluate_segmentation(unet, dataclasses.replace(covid, lung_masks=bad))
  with pytest.raises(data.DataError, match="lung_masks"):
    seg.evaluate_segmentation(unet, dataclasses.replace(covid, lung_masks=None))
  with pytest.raises(data.DataError, match=r"unknown label\(s\) \[3\]"):  # before any compile
    seg.train_unet(dataclasses.replace(covid, lung_masks=bad), unet_tiny(), tmp_path, progress=False)
  with pytest.raises(data.DataError, match="fewer than one batch"):
    seg.train_unet(covid, dataclasses.replace(unet_tiny(), batch_size=7), tmp_path, progress=False)


# ----------------------------------------------------------------------------- training


def test_train_call_changes_params_and_overfits_two_images(covid):
  pair = covid.subset([0, 1])
  config = TINY
  r = config.resolution
  train = {"images": seg._resize_images_uint8(pair.images, r),
           "masks": seg._resize_masks_nearest(pair.lung_masks, r)}
  device_data = jax.device_put({k: jnp.asarray(v) for k, v in train.items()})
  state = seg.init_train_state(config, seed=0)
  model = lambda s: seg._model(config, s["params"])
  before = seg.evaluate_segmentation(model(state), pair, batch_size=1)
  assert set(before) == set(seg.METRIC_KEYS + seg.INTERVAL_KEYS) and before["n"] == 2
  assert all(0.0 <= before[k] <= 1.0 for k in seg.METRIC_KEYS if k != "n")
  first_params = jax.tree.map(np.array, state["params"])
  call = seg.make_train_step(config)
  state, metrics = call(state, device_data)
  assert metrics["loss"].shape == (config.steps_per_call,)
  assert np.isfinite(np.asarray(metrics["loss"])).all()
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), first_params, state["params"])
  assert all(jax.tree.leaves(changed))
  losses = [float(metrics["loss"][0])]
  for _ in range(29):
    state, metrics = call(state, device_data)
    losses.append(float(metrics["loss"][-1]))
  after = seg.evaluate_segmentation(model(state), pair, batch_size=1)
  assert np.mean(losses[-5:]) < 0.6 * losses[0], losses
  # The lungs, right and left together: the tiny 3-level U-Net sees too little of the image to tell the right lung from
  # the left within 30 steps in about half of the seeds (measured over 5 seeds x 2 PRNG settings; dice_mean then
  # stays near 0.35), but it learns where the lungs are in every one (0.05-0.49 -> 0.80-0.92).
  lungs = lambda params: _lung_dice(seg._model(config, params), pair)
  assert lungs(state["params"]) > max(0.75, lungs(first_params) + 0.3), (before, after)


def _lung_dice(model, dataset) -> float:
  """Dice of the predicted lungs (either label) against the true lungs (either label), over all images."""
  pred = np.asarray(predict_masks(model, dataset.images)) > 0
  true = np.asarray(dataset.lung_masks) > 0
  return float(2 * (pred & true).sum() / (pred.sum() + true.sum()))


@pytest.fixture(scope="module")
def four_patients(covid):
  # 2 train, 1 val, 1 test patients with fractions (0.5, 0.25, 0.25): same data shape as the overfit test.
  return covid.subset([0, 1, 2, 3])


def test_train_unet_resume_is_exact(four_patients, tmp_path):
  config = dataclasses.replace(TINY, split_fractions=(0.5, 0.25, 0.25), eval_batch_size=1)
  full = seg.train_unet(four_patients, config, tmp_path / "full", progress=False)
  assert full["steps"] == 8 and (full["split"]["n_train"], full["split"]["n_val"], full["split"]["n_test"]) == (2, 1, 1)
  assert set(full["val"]) == set(full["test"]) == set(seg.METRIC_KEYS + seg.INTERVAL_KEYS)
  assert [h["step"] for h in full["val_history"]] == [4, 8]
  best = max(full["val_history"], key=lambda h: h["dice_mean"])
  assert full["selected_step"] == best["step"] and full["val"]["dice_mean"] == pytest.approx(best["dice_mean"])

  seg.train_unet(four_patients, dataclasses.replace(config, steps=4), tmp_path / "resumed", progress=False)
  with pytest.raises(FileExistsError):
    seg.train_unet(four_patients, config, tmp_path / "resumed", progress=False)
  with pytest.raises(ValueError, match="split"):
    seg.train_unet(four_patients, dataclasses.replace(config, split_seed=1), tmp_path / "resumed", resume=True,
                   progress=False)
  resumed = seg.train_unet(four_patients, config, tmp_path / "resumed", resume=True, progress=False)
  assert resumed["start_step"] == 4 and resumed["steps"] == 8
  assert resumed["val_history"] == full["val_history"]
  assert resumed["selected_step"] == full["selected_step"] and resumed["test"] == full["test"]

  a, b = load_unet(full["unet"]), load_unet(resumed["unet"])
  for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  from jaxcxr import checkpoints  # pylint: disable=g-import-not-at-top
  meta = checkpoints.read_metadata(full["unet"])
  assert meta["split"]["seed"] == 0 and meta["split"]["fractions"] == [0.5, 0.25, 0.25]
  assert meta["data_sha256"] == data.file_sha256(four_patients.source)
  assert meta["test_metrics"] == full["test"] and meta["steps"] == 8
  assert json.loads((tmp_path / "full" / "summary.json").read_text())["selected_step"] == full["selected_step"]
