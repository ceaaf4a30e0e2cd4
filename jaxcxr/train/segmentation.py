"""Lung U-Net training: a pure jitted multi-step function, evaluation and a thin loop.

Loss per step: mean pixel cross-entropy over the three classes plus `dice_weight`
times the soft-Dice loss of the two lung classes,

  L = CE(logits, y) + w * (1 - mean_{b, c in {1, 2}} (2 sum p_c t_c + 1) / (sum p_c + sum t_c + 1)),

with p = softmax(logits) and t the one-hot targets, per image (the +1 keeps an
image without a lung finite). Optimiser: AdamW (decay on kernels only) with a
linear warm-up and cosine decay, global-norm clipping.

The training images (uint8, resized once) and masks (nearest) live on the device;
step t draws its batch (without replacement) and its augmentation
(`jaxcxr.data.augment`, masks warped with the images) from
`jax.random.fold_in(key, t)` inside the jitted function. The trajectory is
therefore a pure function of (config, data, seed, step) and resuming from a
checkpoint is exact. `steps_per_call` steps run in one `lax.scan`, fully unrolled
with `config.unroll` (XLA:CPU runs convolutions inside loop bodies about 13x slower
for this U-Net, jax-ml/jax#12868); the train state (a plain dict of arrays, see
`init_train_state`) is donated. The loop is the one of every trainer,
`loop.run_training_loop`; validation with model selection runs in its hook, and the
best weights so far are part of the checkpointed state.

Evaluation predicts at the model's resolution and compares
at the data's native 256x256: logits are resized bilinearly before the argmax.
"""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxcxr import checkpoints
from jaxcxr import data as data_lib
from jaxcxr import io
from jaxcxr import metrics as metrics_lib
from jaxcxr.config import SegTrainConfig
from jaxcxr.models.graph import abstract_graphdef
from jaxcxr.models.unet import UNet, count_params, load_unet, predict_masks, resize_images
from jaxcxr.program import Program
from jaxcxr.provenance import provenance
from jaxcxr.train.loop import (compile_steps, data_metadata, device_name, host_copy, loop_summary, run_training_loop,
                               without_loop_fields)

__all__ = [
    "evaluate_segmentation",
    "init_train_state",
    "load_unet",
    "make_train_step",
    "predict_masks",
    "prepare_data",
    "segmentation_loss",
    "segmentation_scores",
    "train_step",
    "train_unet",
]

TrainState = dict[str, Any]
METRIC_KEYS = ("n", "dice_mean", "dice_right", "dice_left", "iou_mean", "pixel_accuracy")
# 95% intervals of the Dice means (bootstrap over patients) that `evaluate_segmentation` adds.
INTERVAL_KEYS = ("dice_mean_ci95", "dice_right_ci95", "dice_left_ci95")


# ----------------------------------------------------------------------------- loss


def segmentation_loss(logits: jax.Array, y: jax.Array, *, dice_weight: float = 1.0,
                      smooth: float = 1.0) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """Pixel cross-entropy plus soft Dice over the foreground classes.

  Args:
    logits: float32 (B, H, W, K), NHWC.
    y: integer labels (B, H, W) in [0, K).
    dice_weight: weight of the soft-Dice term.
    smooth: added to numerator and denominator of each per-image Dice.

  Returns:
    (total, (cross_entropy, dice_loss)), float32 scalars; dice_loss = 1 - mean soft Dice
    of classes 1 .. K-1 over images.
  """
  k = logits.shape[-1]
  # One-hot products instead of a label gather: the gather's gradient is a scatter-add, slow on XLA:CPU.
  onehot = jax.nn.one_hot(y, k, dtype=jnp.float32)                      # (B, H, W, K)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  ce = -(onehot * log_probs).sum(axis=-1).mean()
  probs, target = jnp.exp(log_probs)[..., 1:], onehot[..., 1:]          # (B, H, W, K-1)
  inter = (probs * target).sum(axis=(1, 2))                             # (B, K-1)
  denom = probs.sum(axis=(1, 2)) + target.sum(axis=(1, 2))
  dice_loss = 1.0 - ((2.0 * inter + smooth) / (denom + smooth)).mean()
  return ce + dice_weight * dice_loss, (ce, dice_loss)


# ----------------------------------------------------------------------------- state


def _optimizer(config: SegTrainConfig) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, config.warmup_steps,
                                                config.decay_steps, end_value=0.0)
  # Decay kernels only; GroupNorm scales and biases stay free.
  adamw = optax.adamw(schedule, weight_decay=config.weight_decay,
                      mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params))
  if config.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), adamw)
  return adamw


def init_train_state(config: SegTrainConfig, seed: int = 0) -> TrainState:
  """Fresh training state: a plain dict of arrays (checkpointable, donatable).

  Keys: "step" int32 (); "key" uint32 raw key data of the training key; "params"
  the U-Net parameters as a pure dict (`nnx.to_pure_dict`); "opt" the optax state.
  """
  root = jax.random.key(seed)
  model = UNet(config.unet, rngs=nnx.Rngs(jax.random.fold_in(root, 1)))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return {
      "step": jnp.zeros((), jnp.int32),
      "key": jax.random.key_data(jax.random.fold_in(root, 2)),
      "params": params,
      "opt": _optimizer(config).init(params),
  }


# ----------------------------------------------------------------------------- step


def train_step(state: TrainState, data: dict[str, jax.Array], config: SegTrainConfig
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One AdamW step on a random augmented batch (pure; `make_train_step` jits and scans it).

  Args:
    state: from `init_train_state` (or a restored checkpoint).
    data: {"images": uint8 (N, R, R), "masks": uint8 (N, R, R)} on device, R = the
      model resolution (from `prepare_data`).
    config: the training config (static).

  Returns:
    (new state, metrics): float32 scalars "loss", "ce", "dice_loss".
  """
  graphdef = abstract_graphdef(UNet, config.unet)
  tx = _optimizer(config)
  step = state["step"]
  key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), step)
  k_idx, k_aug = jax.random.split(key)
  n = data["images"].shape[0]
  idx = jax.random.choice(k_idx, n, (config.batch_size,), replace=False)
  images = (data["images"][idx].astype(jnp.float32) / 255.0)[..., None]   # (B, R, R, 1) in [0, 1]
  masks = data["masks"][idx]                                              # (B, R, R)
  if config.augment is not None:
    images, masks = data_lib.augment(k_aug, images, config.augment, masks=masks)

  def loss_fn(params):
    logits = nnx.merge(graphdef, params)(images)
    return segmentation_loss(logits, masks, dice_weight=config.dice_weight)

  (loss, (ce, dice_loss)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
  updates, opt = tx.update(grads, state["opt"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  new_state = {"step": step + 1, "key": state["key"], "params": params, "opt": opt}
  return new_state, {"loss": loss, "ce": ce, "dice_loss": dice_loss}


def _loop_free(config: SegTrainConfig) -> SegTrainConfig:
  """The config with loop-only fields normalised: what the compiled step depends on."""
  k = config.steps_per_call
  return without_loop_fields(config, steps=k * (config.decay_steps // k + 1), lr_decay_steps=config.decay_steps,
                             split_fractions=(1.0, 0.0, 0.0), split_seed=0)


def make_train_step(config: SegTrainConfig) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Jitted `steps_per_call` training steps in one `lax.scan` (fully unrolled with `config.unroll`), state donated.

  Cached per config, ignoring loop-only fields (steps, once the schedule length is
  fixed, evaluation, checkpointing and split), so a resumed run in the same process
  does not recompile.

  Returns:
    `fn(state, data) -> (state, metrics)`, metrics stacked over the steps: each (steps_per_call,).
  """
  k = config.steps_per_call
  return compile_steps(train_step, k, k if config.unroll else 1, static=(_loop_free(config),))



def train_step_program(config: SegTrainConfig, data: dict, *, seed: int = 0) -> Program:
  """The compiled training call `train_unet` makes, and its arguments on a fresh state.

  Args:
    config: the training config.
    data: the training arrays the step draws its batches from, {"images": uint8 (N, R, R),
      "masks": uint8 (N, R, R)} as from `prepare_data`'s "train" (placed on the device
      here, as the trainer places them).
    seed: seed of the fresh state (`init_train_state`).

  Returns:
    `Program(fn, args, donated=(0,))`: `fn(state, data)` = `make_train_step(config)`, which runs
    `config.steps_per_call` steps and returns (state, metrics stacked over the steps). The
    state (position 0) is donated: call again with `fresh_args()`.
  """
  return Program(make_train_step(config), (init_train_state(config, seed), jax.device_put(data)), donated=(0,))


# ----------------------------------------------------------------------------- data


def _check_masks(dataset: data_lib.CXRDataset) -> np.ndarray:
  source = dataset.source or "dataset"
  masks = dataset.lung_masks
  if masks is None:
    raise data_lib.DataError(f"{source}: no `lung_masks`; segmentation needs label maps (0 background, "
                             "1 patient's right lung, 2 patient's left lung)")
  masks = np.asarray(masks)
  if masks.shape != dataset.images.shape:
    raise data_lib.DataError(f"{source}: `lung_masks` has shape {masks.shape}; expected {dataset.images.shape} "
                             "(same as `images`)")
  if not np.issubdtype(masks.dtype, np.integer):
    raise data_lib.DataError(f"{source}: `lung_masks` has dtype {masks.dtype}; expected integer labels 0, 1, 2")
  unknown = np.setdiff1d(np.unique(masks), [0, 1, 2])
  if unknown.size:
    raise data_lib.DataError(f"{source}: `lung_masks` has unknown label(s) {unknown.tolist()}; expected "
                             "0 background, 1 patient's right lung, 2 patient's left lung")
  return masks


def _resize_masks_nearest(masks: np.ndarray, size: int) -> np.ndarray:
  """(N, H, W) labels -> (N, size, size), nearest neighbour (pixel centres)."""
  n, h, w = masks.shape
  if (h, w) == (size, size):
    return np.ascontiguousarray(masks)
  rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(np.int64), h - 1)
  cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(np.int64), w - 1)
  return np.ascontiguousarray(masks[:, rows][:, :, cols])


@functools.partial(jax.jit, static_argnames=("size",))
def _resize_uint8(images: jax.Array, size: int) -> jax.Array:
  unit = resize_images(images[..., None].astype(jnp.float32) / 255.0, (size, size))[..., 0]
  return jnp.round(jnp.clip(unit, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def _resize_images_uint8(images: np.ndarray, size: int, chunk: int = 64) -> np.ndarray:
  """uint8 (N, H, W) -> uint8 (N, size, size) with the inference resampling (`resize_images`)."""
  if images.shape[1:] == (size, size):
    return np.ascontiguousarray(images)
  out = []
  for start in range(0, len(images), chunk):
    part = images[start: start + chunk]
    real = len(part)
    if real < chunk and len(images) > chunk:  # keep one compiled shape
      part = np.concatenate([part, np.zeros((chunk - real,) + part.shape[1:], part.dtype)])
    out.append(np.asarray(_resize_uint8(jnp.asarray(part), size))[:real])
  return np.concatenate(out)


def prepare_data(dataset: data_lib.CXRDataset, config: SegTrainConfig) -> dict[str, Any]:
  """Checks a dataset, splits it by patient and builds the training arrays.

  Returns:
    {"train": {"images": uint8 (N, R, R), "masks": uint8 (N, R, R)} host arrays at the
    model resolution R (images with `resize_images`, masks nearest); "val", "test":
    `CXRDataset`s at native size; "split": JSON-ready description (seed, fractions,
    image and patient counts, val/test patient ids)}.

  Raises:
    jaxcxr.data.DataError: no masks, unknown mask labels, or fewer training images than
      one batch.
  """
  source = dataset.source or "dataset"
  masks = _check_masks(dataset)
  parts = data_lib.split_by_patient(dataset.patient_id, config.split_fractions, seed=config.split_seed)
  train_idx = parts["train"]
  if len(train_idx) < config.batch_size:
    raise data_lib.DataError(f"{source}: the training split has {len(train_idx)} image(s), fewer than one batch "
                             f"of {config.batch_size}")
  r = config.resolution
  train = {"images": _resize_images_uint8(dataset.images[train_idx], r),
           "masks": _resize_masks_nearest(masks[train_idx], r).astype(np.uint8)}
  split = {"seed": config.split_seed, "fractions": list(config.split_fractions)}
  for name, idx in parts.items():
    split[f"n_{name}"] = int(len(idx))
    split[f"n_{name}_patients"] = int(len(np.unique(dataset.patient_id[idx])))
  for name in ("val", "test"):
    split[f"{name}_patients"] = sorted(np.unique(dataset.patient_id[parts[name]]).tolist())
  return {"train": train, "val": dataset.subset(parts["val"]), "test": dataset.subset(parts["test"]),
          "split": split}


# ----------------------------------------------------------------------------- evaluation


def segmentation_scores(y_pred, y, *, num_classes: int = 3, patients: Any = None,
                        per_image: bool = False) -> dict[str, Any]:
  """Summary overlap scores of predicted vs target label maps.

  Args:
    y_pred: integer label maps (N, H, W).
    y: integer label maps (N, H, W): 0 background, 1 patient's right lung, 2 patient's left lung.
    num_classes: K including background.
    patients: optional (N,) patient ids: adds 95% intervals of the three Dice means, by a
      bootstrap over patients (`metrics.cluster_bootstrap_ci`).
    per_image: also return the per-image Dice.

  Returns:
    {"n", "dice_mean" (over images and lung classes), "dice_right" (class 1),
    "dice_left" (class 2), "iou_mean", "pixel_accuracy"}; Python floats (n an int).
    With `patients`: also `INTERVAL_KEYS` ([low, high]); with `per_image`: "dice_per_image"
    (N lists [right, left]).
  """
  dice = np.asarray(metrics_lib.compute_dice(y_pred, y, num_classes=num_classes))   # (N, K-1)
  iou = np.asarray(metrics_lib.compute_iou(y_pred, y, num_classes=num_classes))
  acc = np.asarray(metrics_lib.compute_pixel_accuracy(y_pred, y))
  out: dict[str, Any] = {
      "n": int(dice.shape[0]),
      "dice_mean": float(dice.mean()),
      "dice_right": float(dice[:, 0].mean()),
      "dice_left": float(dice[:, 1].mean()) if dice.shape[1] > 1 else float("nan"),
      "iou_mean": float(iou.mean()),
      "pixel_accuracy": float(acc.mean()),
  }
  if patients is not None and dice.shape[0] and dice.shape[1] > 1:
    for name, values in (("dice_mean", dice.mean(axis=1)), ("dice_right", dice[:, 0]), ("dice_left", dice[:, 1])):
      out[f"{name}_ci95"] = metrics_lib.cluster_bootstrap_ci(values, patients)
  if per_image:
    out["dice_per_image"] = [[round(float(a), 5), round(float(b), 5)] for a, b in dice[:, :2]]
  return out


def evaluate_segmentation(model: UNet, dataset: data_lib.CXRDataset, *, batch_size: int = 16,
                          per_image: bool = False) -> dict[str, Any]:
  """Lung-segmentation scores of a U-Net on a dataset with `lung_masks`.

  Predicts at the model's resolution and compares at the dataset's native size
  (256x256): images are resized to the model, logits resized back bilinearly
  before the argmax (`predict_masks`).

  Args:
    model: a `UNet`.
    dataset: images with `lung_masks` (e.g. `jaxcxr.data.load("covid_v7lungs_256.npz")`).
    batch_size: images per jitted call.

  Returns:
    {"n", "dice_mean", "dice_right", "dice_left", "iou_mean", "pixel_accuracy"}; Dice
    and IoU per image and class (1 when both prediction and target are empty), then
    averaged. dice_right is class 1, the patient's right lung (image left). Also 95%
    intervals by a bootstrap over patients (`INTERVAL_KEYS`), and with `per_image` the
    per-image Dice (`segmentation_scores`).

  Raises:
    jaxcxr.data.DataError: no masks, masks of another shape, labels outside {0, 1, 2},
      or an empty dataset.

  Examples:
    A tiny untrained U-Net on four images with lung masks (the shipped one:
    `jaxcxr.load_pretrained().scorer.unet`):

    >>> import numpy as np
    >>> from flax import nnx
    >>> from jaxcxr.config import UNetConfig
    >>> rng = np.random.default_rng(0)
    >>> masks = np.zeros((4, 64, 64), np.uint8)
    >>> masks[:, 16:48, 8:28], masks[:, 16:48, 36:56] = 1, 2
    >>> dataset = data_lib.CXRDataset(rng.integers(0, 256, (4, 64, 64), dtype=np.uint8), np.zeros(4, np.int8),
    ...                               np.array(["F", "M", "F", "M"]), np.full(4, 60, np.int16),
    ...                               np.array(["a", "a", "b", "c"]), lung_masks=masks)
    >>> unet = UNet(UNetConfig(resolution=32, channels=(4, 8), norm_groups=2), rngs=nnx.Rngs(0))
    >>> scores = evaluate_segmentation(unet, dataset, batch_size=4)
    >>> scores["n"], 0 <= scores["dice_mean"] <= 1, len(scores["dice_mean_ci95"])
    (4, True, 2)
  """
  masks = _check_masks(dataset)
  if len(dataset) == 0:
    raise data_lib.DataError(f"{dataset.source or 'dataset'}: no images to evaluate")
  y_pred = predict_masks(model, dataset.images, batch_size)
  return segmentation_scores(y_pred, masks, num_classes=model.config.num_classes, patients=dataset.patient_id,
                             per_image=per_image)


# ----------------------------------------------------------------------------- loop


def _model(config: SegTrainConfig, params) -> UNet:
  return nnx.merge(abstract_graphdef(UNet, config.unet), params)


def train_unet(dataset: data_lib.CXRDataset, config: SegTrainConfig, out_dir: str | os.PathLike, *,
               resume: bool = False, seed: int = 0, progress: bool = True) -> dict[str, Any]:
  """Trains the lung U-Net with a patient-level split, validation, checkpoints and resume.

  The dataset is split by patient (`config.split_fractions`, `config.split_seed`).
  Validation Dice (at native 256x256) is computed every `eval_every` steps and at
  the end; the step with the best validation `dice_mean` is the one kept (the
  test split is never used for any choice). Test metrics are computed once, at the
  end, for the kept weights.

  Writes under `out_dir`: `checkpoints/STEP/` (training state and the best weights
  so far, every `checkpoint_every` steps and at the end), `metrics.jsonl` (losses per
  call), the inference checkpoint `unet/` (`checkpoints.save_model`, metadata with the
  split, steps, seconds, device, data sha256, val and test metrics) and `summary.json`
  (the returned dict). A run killed at any moment continues from its last checkpoint with
  `resume=True`, with the same result as an uninterrupted run.

  Args:
    dataset: radiographs with `lung_masks` (e.g. covid_v7lungs_256.npz).
    config: the training config, e.g. `jaxcxr.config.unet_128_cpu()`.
    out_dir: output folder.
    resume: continue from the latest checkpoint in `out_dir` (start afresh if none);
      the seed and training key then come from the checkpoint.
    seed: seed of the initial weights and of the training randomness.
    progress: show a tqdm bar on stderr (loss, img/s, validation Dice).

  Returns:
    A model-card-ready summary: {"model", "n_params", "resolution", "channels", "dtype",
    "steps", "start_step", "selected_step", "seconds", "compile_seconds",
    "seconds_per_step", "images_per_second", "batch_size", "device", "seed",
    "data" {"source", "sha256", "n_images", "n_patients"}, "split", "final_loss",
    "val", "test" (metric dicts as `evaluate_segmentation`, None for an empty part),
    "val_history" [{"step", "dice_mean"}], "out_dir", "unet"}.

  Raises:
    jaxcxr.data.DataError: unusable data (before any compilation).
    FileExistsError: `out_dir` holds checkpoints and `resume` is False.
    ValueError: resuming with another split or other data than the checkpoint's.
  """
  prepared = prepare_data(dataset, config)
  split, val_ds, test_ds = prepared["split"], prepared["val"], prepared["test"]
  data_sha = data_metadata(dataset).get("data_sha256")
  out_dir = pathlib.Path(out_dir)
  state = init_train_state(config, seed)
  # Model selection: the best weights so far, their validation Dice and step (-1: none yet), checkpointed.
  state["best"] = {"params": host_copy(state["params"]), "dice": np.float32(-1.0), "step": np.int32(-1)}
  history: list[dict[str, float]] = []

  def resumed(meta: dict):
    nonlocal seed
    history[:] = meta.get("val_history", [])
    seed = int(meta.get("seed", seed))

  def validate(step: int, state: dict) -> dict | None:
    due = step == config.steps or (config.eval_every and step % config.eval_every == 0)
    if not due or not len(val_ds):
      return None
    dice = evaluate_segmentation(_model(config, state["params"]), val_ds,
                                 batch_size=config.eval_batch_size)["dice_mean"]
    history.append({"step": step, "dice_mean": dice})
    if dice > float(state["best"]["dice"]):
      return {**state, "best": {"params": host_copy(state["params"]), "dice": np.float32(dice), "step": np.int32(step)}}
    return None

  loop = run_training_loop(
      name="U-Net", config=config, state=state, train_call=make_train_step(config),
      args=(jax.device_put({k: jnp.asarray(v) for k, v in prepared["train"].items()}),), out_dir=out_dir,
      resume=resume, progress=progress, host_entries=("best",), on_call=validate, on_resume=resumed,
      run_metadata={"split": {"seed": split["seed"], "fractions": split["fractions"]}, "data_sha256": data_sha,
                    "seed": seed},
      checkpoint_metadata=lambda _: {"val_history": history},
      postfix=lambda m, _: {"loss": f"{m['loss'][-1]:.3f}",
                            "val_dice": f"{history[-1]['dice_mean']:.3f}" if history else "-"})

  step, best = loop.step, loop.state["best"]
  # The kept weights: best validation Dice, or the last step when there is no validation part.
  selected_step = int(best["step"]) if int(best["step"]) >= 0 else step
  model = _model(config, best["params"] if int(best["step"]) >= 0 else host_copy(loop.state["params"]))
  val = evaluate_segmentation(model, val_ds, batch_size=config.eval_batch_size) if len(val_ds) else None
  test = evaluate_segmentation(model, test_ds, batch_size=config.eval_batch_size) if len(test_ds) else None
  seconds = loop.previous_seconds + loop.seconds
  final_loss = loop.final.get("loss")
  metadata = {
      "steps": step,
      "selected_step": selected_step,
      "train_seconds": seconds,
      "device": device_name(),
      "seed": seed,
      "split": split,
      "data_source": dataset.source,
      "data_sha256": data_sha,
      "n_params": count_params(model),
      "final_loss": final_loss,
      "val_metrics": val,
      "test_metrics": test,
      "val_history": history,
      "provenance": provenance(dataset.source, {"seed": seed, "split_seed": split["seed"]}),
  }
  path = checkpoints.save_model(out_dir / "unet", model, config.unet, metadata=metadata, overwrite=True)
  timing = loop_summary(loop, config)
  summary = {
      "model": "UNet",
      "n_params": count_params(model),
      "resolution": config.resolution,
      "channels": list(config.unet.channels),
      "dtype": config.unet.dtype,
      "steps": step,
      "start_step": loop.start_step,
      "selected_step": selected_step,
      "seconds": seconds,
      **{k: timing[k] for k in ("compile_seconds", "seconds_per_step", "images_per_second")},
      "batch_size": config.batch_size,
      "device": device_name(),
      "seed": seed,
      "data": {"source": dataset.source, "sha256": data_sha, "n_images": len(dataset),
               "n_patients": int(len(np.unique(dataset.patient_id)))},
      "split": split,
      "final_loss": final_loss,
      "val": val,
      "test": test,
      "val_history": history,
      "out_dir": str(out_dir),
      "unet": str(path),
      "provenance": metadata["provenance"],
  }
  io.save_json(out_dir / "summary.json", summary)
  return summary
