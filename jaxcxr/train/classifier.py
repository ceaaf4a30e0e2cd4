"""Classifier training: a pure jitted multi-step function, a thin loop, evaluation and a pixel baseline.

Tasks: "abnormal" (label 1 = abnormal) and "sex" (1 = female; sex 'U' dropped).

Step (`train_step`): the training images (uint8, resized once on the host to the
model resolution) live on the device; step t draws its batch indices and
augmentation from `jax.random.fold_in(key, t)` inside the jitted function, so the
trajectory is a pure function of (config, data, seed, step) and resuming from a
checkpoint is exact. `steps_per_call` steps run in one `lax.scan`; the train
state (a plain dict of arrays) is donated.

Losses per `ClassifierTrainConfig.imbalance` (each a per-example vector, averaged
over the batch):
* "none" and "oversample": BCE(z, y) = softplus(z) - y z;
* "weighted_bce": w_y BCE(z, y) with w_c = N / (2 N_c) from the training labels;
* "focal": (1 - p_t)^gamma BCE(z, y), times alpha_t = alpha y + (1 - alpha)(1 - y)
  when `focal_alpha` is set (Lin et al. 2017; gamma = 0 and no alpha is BCE);
* "oversample" draws both classes equally often (example i with probability
  1 / (2 N_{y_i})), the repeated minority images differing by their augmentation.
With `mixup_alpha` > 0 (Zhang et al. 2018), the augmented batch is blended with
itself rolled by one, x = lam x + (1 - lam) x', lam ~ Beta(alpha, alpha), and the
loss is lam L(z, y) + (1 - lam) L(z, y') with any of the losses above.

Optimiser: AdamW (weight decay on kernels only) with warm-up + cosine decay and
global-norm clipping; with `freeze_stages = k` the stem and stages 1..k get
`optax.set_to_zero` through `optax.multi_transform`, so they never change. With
`pretrained`, every backbone parameter comes from a saved classifier and the head
is freshly initialised.

The model is the ResNet `Classifier` or, when `config.model` is an
`EncoderClassifierConfig`, the `EncoderClassifier`: fine-tuning a probe on the CXR
encoder, which starts whole (encoder and probe head) from `pretrained`.

Loop (`train_classifier`, on the shared `loop.run_training_loop`): patient-level
split stratified on the label (seed in the metadata), validation AUC every
`eval_every` steps for model selection (the only use of validation data besides the
decision threshold; the best parameters so far are part of the checkpointed state),
test metrics once at the end with the selected model.
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
from jaxcxr import metrics as metrics_lib
from jaxcxr.baselines import fit_pixel_logreg, grouped_logreg
from jaxcxr.batching import map_batches
from jaxcxr.config import ClassifierConfig, ClassifierEnsembleConfig, ClassifierTrainConfig, EncoderClassifierConfig
from jaxcxr.data import resize_uint8
from jaxcxr.models.classifier import Classifier, load_classifier, predict_logits, predict_proba, prepare_images
from jaxcxr.models.encoder_classifier import EncoderClassifier
from jaxcxr.models.ensemble import ClassifierEnsemble, block_means, set_pixel_weights
from jaxcxr.models.graph import abstract_graphdef
from jaxcxr.provenance import provenance
from jaxcxr.train.loop import (compile_steps, data_metadata, device_name, host_copy, loop_summary, run_training_loop,
                               without_loop_fields)

__all__ = [
    "classification_loss",
    "classification_report",
    "evaluate_classifier",
    "focal_loss",
    "init_train_state",
    "load_classifier",
    "load_pretrained_backbone",
    "assemble_ensemble",
    "fit_pixel_logreg",
    "fit_folded_logreg",
    "fit_pixel_voter",
    "make_train_step",
    "pixel_logreg_baseline",
    "predict_logits",
    "predict_proba",
    "prepare_data",
    "select_threshold_youden",
    "task_labels",
    "task_split",
    "train_classifier",
    "train_step",
    "weighted_bce",
]

TrainState = dict[str, Any]


# ----------------------------------------------------------------------------- labels


def task_labels(dataset: data_lib.CXRDataset, task: str) -> tuple[np.ndarray, np.ndarray]:
  """Which images have a known target for `task`, and the 0/1 targets.

  Args:
    dataset: the images and their metadata.
    task: "abnormal" (`dataset.label`, -1 unknown) or "sex" (`dataset.sex == 'F'`, 'U' unknown).

  Returns:
    (keep bool (N,), y int32 (N,)); y is meaningful where keep is True.
  """
  if task == "abnormal":
    return np.isin(dataset.label, [0, 1]), (dataset.label == 1).astype(np.int32)
  if task == "sex":
    return np.isin(dataset.sex, ["M", "F"]), (dataset.sex == "F").astype(np.int32)
  raise ValueError(f"task: expected 'abnormal' or 'sex', got {task!r}")


# ----------------------------------------------------------------------------- losses


def weighted_bce(logits: jax.Array, y: jax.Array, weights: jax.Array) -> jax.Array:
  """Class-weighted binary cross-entropy per example: w_{y_i} (softplus(z_i) - y_i z_i).

  Args:
    logits: float (B,).
    y: 0/1 targets (B,).
    weights: float (2,), (weight of class 0, weight of class 1).

  Returns:
    float32 (B,).
  """
  y = y.astype(jnp.float32)
  w = weights[0] * (1.0 - y) + weights[1] * y
  return w * optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), y)


def focal_loss(logits: jax.Array, y: jax.Array, *, gamma: float, alpha: float | None = None) -> jax.Array:
  """Binary focal loss per example, (1 - p_t)^gamma BCE, optionally times alpha_t (optax's, log-space stable).

  With gamma = 0 it is BCE; with gamma = 0 and alpha it is `weighted_bce` with
  weights (1 - alpha, alpha).

  Args:
    logits: float (B,).
    y: 0/1 targets (B,).
    gamma: focusing exponent (>= 0).
    alpha: weight of positives (negatives get 1 - alpha); None = unweighted.

  Returns:
    float32 (B,).

  References:
    Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
  """
  return optax.sigmoid_focal_loss(logits.astype(jnp.float32), y.astype(jnp.float32), alpha=alpha, gamma=gamma)


def classification_loss(logits: jax.Array, y: jax.Array, config: ClassifierTrainConfig,
                        class_weights: jax.Array) -> jax.Array:
  """The per-example training loss of `config.imbalance` (see the module docstring). float32 (B,)."""
  if config.imbalance == "weighted_bce":
    return weighted_bce(logits, y, class_weights)
  if config.imbalance == "focal":
    return focal_loss(logits, y, gamma=config.focal_gamma, alpha=config.focal_alpha)
  return optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), y.astype(jnp.float32))


# ----------------------------------------------------------------------------- optimiser and state


def _top_key(path) -> str:
  return str(getattr(path[0], "key", path[0]))


def _model_type(model_config: ClassifierConfig | EncoderClassifierConfig) -> type[nnx.Module]:
  """The module a classifier config builds: the ResNet `Classifier` or the `EncoderClassifier`."""
  return EncoderClassifier if isinstance(model_config, EncoderClassifierConfig) else Classifier


def _is_frozen(path, freeze_stages: int) -> bool:
  if freeze_stages <= 0:
    return False
  keys = [str(getattr(k, "key", k)) for k in path]
  if keys[0] == "encoder":                 # an EncoderClassifier: encoder.stem, encoder.stages[i]
    keys = keys[1:]
    if keys[0] == "stem":
      return True
  elif keys[0] in ("stem_conv", "stem_norm"):
    return True
  return keys[0] == "stages" and int(keys[1]) < freeze_stages


def _optimizer(config: ClassifierTrainConfig) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, config.warmup_steps,
                                                max(config.steps, config.warmup_steps + 1), 0.0)
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: str(getattr(path[-1], "key", path[-1])) == "kernel", params)
  parts = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip > 0 else []
  parts.append(optax.adamw(schedule, weight_decay=config.weight_decay, mask=decay_mask))
  tx = optax.chain(*parts)
  if config.freeze_stages == 0:
    return tx
  labels = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: "frozen" if _is_frozen(path, config.freeze_stages) else "train", params)
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def _params(model: Classifier) -> dict:
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def load_pretrained_backbone(directory: str | os.PathLike, params: dict, *, keep_head: bool = False) -> dict:
  """`params` with every backbone leaf (all but `linear`, the ResNet's head) taken from a saved classifier.

  The saved classifier may differ in resolution, input mode and dtype (convolution
  weights do not depend on them) but not in stages, channels or stem. With `keep_head`
  (an `EncoderClassifier`, whose head is its fitted probe) every leaf is taken.

  Raises:
    jaxcxr.checkpoints.CheckpointError: unreadable checkpoint, or a backbone leaf
      whose shape differs (named).
  """
  source = _params(load_classifier(directory))

  def take(path, leaf):
    if _top_key(path) == "linear" and not keep_head:
      return leaf
    name = jax.tree_util.keystr(path)
    node = source
    try:
      for k in path:
        node = node[getattr(k, "key", k)]
    except (KeyError, TypeError, IndexError):
      raise checkpoints.CheckpointError(f"{directory}: pretrained classifier has no backbone leaf {name}; "
                                        "stages, channels and stem must match") from None
    if np.shape(node) != np.shape(leaf):
      raise checkpoints.CheckpointError(f"{directory}: pretrained leaf {name} has shape {np.shape(node)}, "
                                        f"the model {np.shape(leaf)}; stages, channels and stem must match")
    return jnp.asarray(node, leaf.dtype)

  return jax.tree_util.tree_map_with_path(take, params)


def init_train_state(config: ClassifierTrainConfig, seed: int = 0) -> TrainState:
  """Fresh training state: a plain dict of arrays (checkpointable, donatable).

  Keys: "step" int32 (); "key" uint32 raw key data of the training key; "params"
  the model's `nnx.Param` values as a pure dict (backbone from `config.pretrained`
  when set); "opt" the optimiser state.
  """
  root = jax.random.key(seed)
  params = _params(_model_type(config.model)(config.model, rngs=nnx.Rngs(jax.random.fold_in(root, 1))))
  if config.pretrained:
    params = load_pretrained_backbone(config.pretrained, params,
                                      keep_head=isinstance(config.model, EncoderClassifierConfig))
  return {
      "step": jnp.zeros((), jnp.int32),
      "key": jax.random.key_data(jax.random.fold_in(root, 2)),
      "params": params,
      "opt": _optimizer(config).init(params),
  }


# ----------------------------------------------------------------------------- step


def train_step(state: TrainState, data: dict[str, jax.Array], config: ClassifierTrainConfig
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step (pure; `make_train_step` jits and scans it).

  Args:
    state: from `init_train_state` (or a restored checkpoint).
    data: on device (from `prepare_data`): "images" uint8 (N, R, R), "label" int32 (N,),
      "class_weights" float32 (2,), "sample_p" float32 (N,) (sampling probabilities).
    config: the training config (static).

  Returns:
    (new state, metrics): scalars "loss" (batch mean) and "accuracy" (at logit 0).
  """
  graphdef = abstract_graphdef(_model_type(config.model), config.model)
  tx = _optimizer(config)
  b = config.batch_size
  step = state["step"]
  key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), step)
  k_idx, k_aug, k_mix = jax.random.split(key, 3)
  n = data["images"].shape[0]
  if config.imbalance == "oversample":
    idx = jax.random.choice(k_idx, n, (b,), replace=True, p=data["sample_p"])
  else:
    idx = jax.random.randint(k_idx, (b,), 0, n)
  x = (data["images"][idx].astype(jnp.float32) / 255.0)[..., None]   # (B, R, R, 1) in [0, 1]
  if config.augment is not None:
    x = data_lib.augment(k_aug, x, config.augment)
  y = data["label"][idx]
  if config.mixup_alpha > 0:
    # Blend with the batch rolled by one (a random pairing: the batch is already a random draw).
    lam = jax.random.beta(k_mix, config.mixup_alpha, config.mixup_alpha)
    x = lam * x + (1.0 - lam) * jnp.roll(x, 1, axis=0)

  def loss_fn(params):
    logits = nnx.merge(graphdef, params)(x)                            # (B,)
    loss = classification_loss(logits, y, config, data["class_weights"])
    if config.mixup_alpha > 0:
      loss = lam * loss + (1.0 - lam) * classification_loss(logits, jnp.roll(y, 1), config, data["class_weights"])
    return loss.mean(), logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
  updates, opt = tx.update(grads, state["opt"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  accuracy = jnp.mean(((logits > 0).astype(jnp.int32) == y).astype(jnp.float32))
  return {"step": step + 1, "key": state["key"], "params": params, "opt": opt}, {"loss": loss, "accuracy": accuracy}


def _loop_free(config: ClassifierTrainConfig) -> ClassifierTrainConfig:
  """The config with loop-only fields normalised: what the compiled step depends on (steps: the schedule's)."""
  return without_loop_fields(config, steps=config.steps, pretrained=None, split=(1.0, 0.0, 0.0), split_seed=0)


def make_train_step(config: ClassifierTrainConfig) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Jitted `steps_per_call` training steps in one `lax.scan` (`scan_unroll` steps unrolled), train state donated.

  Cached per config (ignoring loop-only fields), so a resumed run in the same
  process does not recompile.

  Returns:
    `fn(state, data) -> (state, metrics)`, metrics stacked over the steps: each (steps_per_call,).
  """
  return compile_steps(train_step, config.steps_per_call, config.scan_unroll, static=(_loop_free(config),))


# ----------------------------------------------------------------------------- data


def prepare_data(dataset: data_lib.CXRDataset, config: ClassifierTrainConfig) -> dict[str, np.ndarray]:
  """Host arrays of the training step from a (training) dataset whose targets are all known.

  Returns:
    {"images": uint8 (N, R, R), "label": int32 (N,), "class_weights": float32 (2,)
    (N / (2 N_c)), "sample_p": float32 (N,) (1 / (2 N_{y_i}) for "oversample", else 1 / N)}.

  Raises:
    jaxcxr.data.DataError: an unknown target, or a single class.
  """
  keep, y = task_labels(dataset, config.task)
  if not keep.all():
    raise data_lib.DataError(f"{dataset.source or 'dataset'}: {int((~keep).sum())} image(s) have no "
                             f"{config.task} target")
  counts = np.bincount(y, minlength=2)
  if counts.min() == 0:
    raise data_lib.DataError(f"{dataset.source or 'dataset'}: the training part has a single class "
                             f"(counts {counts.tolist()}) for task {config.task!r}")
  n = len(y)
  if config.imbalance == "oversample":
    sample_p = 1.0 / (2.0 * counts[y])
  else:
    sample_p = np.full(n, 1.0 / n)
  return {
      "images": resize_uint8(dataset.images, config.resolution),
      "label": y.astype(np.int32),
      "class_weights": (n / (2.0 * counts)).astype(np.float32),
      "sample_p": (sample_p / sample_p.sum()).astype(np.float32),
  }


# ----------------------------------------------------------------------------- evaluation


def select_threshold_youden(y_pred: np.ndarray, y: np.ndarray) -> float:
  """The probability threshold maximising TPR - FPR (Youden's J), predicting 1 for y_pred >= t."""
  fpr, tpr, thresholds = metrics_lib.compute_roc_curve(y_pred, y)
  finite = np.isfinite(thresholds)
  j = np.where(finite, tpr - fpr, -np.inf)
  return float(thresholds[int(np.argmax(j))]) if finite.any() else 0.5


def _auc_or_none(y_pred: np.ndarray, y: np.ndarray) -> float | None:
  return metrics_lib.compute_roc_auc(y_pred, y) if 0 < y.sum() < len(y) else None


def classification_report(prob: np.ndarray, y: np.ndarray, threshold: float, views: np.ndarray | None
                          ) -> dict[str, Any]:
  """ROC AUC (with its interval), the binary figures at `threshold`, and per view when `views` is given."""
  binary = metrics_lib.compute_binary_report((prob >= threshold).astype(np.int64), y)
  out = {
      "n": int(len(y)),
      "n_positive": int(y.sum()),
      "roc_auc": _auc_or_none(prob, y),
      "roc_auc_ci95": metrics_lib.roc_auc_interval(prob, y),
      "accuracy": binary["accuracy"],
      "sensitivity": binary["recall"],
      "specificity": binary["specificity"],
      "threshold": float(threshold),
  }
  if views is not None:
    out["roc_auc_by_view"] = {str(v): _auc_or_none(prob[views == v], y[views == v]) for v in np.unique(views)}
    out["n_by_view"] = {str(v): int((views == v).sum()) for v in np.unique(views)}
  return out


def evaluate_classifier(model: Classifier, dataset: data_lib.CXRDataset, task: str, *, batch_size: int = 32,
                        threshold: float = 0.5) -> dict[str, Any]:
  """ROC AUC and accuracy of a classifier on a dataset (docs/cli.md `evaluate classifier`).

  Images without a target for `task` are skipped. Accuracy, sensitivity and
  specificity predict class 1 where p >= `threshold` (use the validation threshold
  saved in the checkpoint metadata, `read_metadata(dir)["threshold"]`).

  Args:
    model: a `Classifier` (e.g. from `load_classifier`).
    dataset: images (any size; resized to the model resolution) with labels/sex.
    task: "abnormal" or "sex".
    batch_size: images per jitted call.
    threshold: decision threshold on the probability of class 1.

  Returns:
    {"n", "n_positive", "roc_auc" (None when a class is missing), "accuracy",
    "sensitivity", "specificity", "threshold"} plus, when the dataset has a `view`
    array, "roc_auc_by_view" {view: AUC or None} and "n_by_view".

  Raises:
    jaxcxr.data.DataError: no image has a target for `task`.

  Examples:
    A tiny untrained classifier on four labelled images (the shipped abnormal one:
    `jaxcxr.load_pretrained().scorer.classifier`):

    >>> import numpy as np
    >>> from flax import nnx
    >>> from jaxcxr.config import ClassifierConfig
    >>> rng = np.random.default_rng(0)
    >>> dataset = data_lib.CXRDataset(rng.integers(0, 256, (4, 64, 64), dtype=np.uint8), np.int8([0, 1, 0, 1]),
    ...                               np.array(["F", "M", "F", "M"]), np.full(4, 60, np.int16),
    ...                               np.array(["a", "b", "c", "d"]))
    >>> model = Classifier(ClassifierConfig(resolution=32, stages=(1,), channels=(4,), norm_groups=2),
    ...                    rngs=nnx.Rngs(0))
    >>> report = evaluate_classifier(model, dataset, "abnormal", batch_size=4)
    >>> report["n"], report["n_positive"], 0 <= report["roc_auc"] <= 1
    (4, 2, True)
  """
  keep, y = task_labels(dataset, task)
  if not keep.any():
    raise data_lib.DataError(f"{dataset.source or 'dataset'}: no image has a {task} target")
  subset = dataset.subset(keep)
  prob = predict_proba(model, subset.images, batch_size)
  return classification_report(prob, y[keep], threshold, data_lib.views(subset))


# ----------------------------------------------------------------------------- loop


def task_split(dataset: data_lib.CXRDataset, config: ClassifierTrainConfig):
  """(image indices of the train/val/test patients, every image's 0/1 target, images without a target).

  Patients split with `config.split` and `config.split_seed`, stratified by the task's target.
  """
  keep, y = task_labels(dataset, config.task)
  kept = np.flatnonzero(keep)
  if kept.size == 0:
    raise data_lib.DataError(f"{dataset.source or 'dataset'}: no image has a {config.task} target")
  parts = data_lib.split_by_patient(dataset.patient_id[kept], config.split, stratify=y[kept],
                                    seed=config.split_seed)
  indices = {name: kept[idx] for name, idx in parts.items()}
  for name in ("train", "val"):
    counts = np.bincount(y[indices[name]], minlength=2)
    if counts.min() == 0:
      raise data_lib.DataError(f"{dataset.source or 'dataset'}: the {name} part has class counts "
                               f"{counts.tolist()} for task {config.task!r}; both classes are needed "
                               "(more images or other split fractions)")
  return indices, y, int((~keep).sum())


def train_classifier(dataset: data_lib.CXRDataset, config: ClassifierTrainConfig, out_dir: str | os.PathLike, *,
                     resume: bool = False, seed: int = 0, progress: bool = True,
                     stop_at: int | None = None, report_test: bool = True) -> dict[str, Any]:
  """Trains the classifier with model selection on validation AUC; evaluates once on test.

  Writes under `out_dir`: `checkpoints/STEP/` (training state plus the best
  parameters so far, every `checkpoint_every` steps and at the end), `metrics.jsonl`
  (loss and accuracy per call) and, when the run reaches `config.steps`, the
  inference checkpoint `classifier/`
  (`checkpoints.save_model`, parameters of the step with the best validation AUC)
  whose metadata hold the task, the split (seed, fractions, indices), steps,
  seconds, device, data sha256, the decision threshold (Youden on validation), and
  validation and test metrics. A run killed at any moment continues from its last
  checkpoint with `resume=True`; the result equals an uninterrupted run.

  Args:
    dataset: images with labels (task "abnormal") or sex (task "sex") and patient ids.
    config: the training config, e.g. `jaxcxr.config.classifier_128_cpu()`.
    out_dir: output folder.
    resume: continue from the latest checkpoint in `out_dir` (start afresh if none).
    seed: seed of the initial weights and of the training randomness (the split
      uses `config.split_seed`).
    progress: show a tqdm bar on stderr.
    stop_at: stop after this step (a multiple of `steps_per_call`), leaving a
      checkpoint to resume from; for time-sliced runs. None runs to `config.steps`.
    report_test: evaluate the selected model on the test part. Pass False while comparing
      settings (choose on validation), then evaluate the chosen model once with
      `jaxcxr evaluate classifier --split test`.

  Returns:
    {"steps", "start_step", "seconds", "compile_seconds", "seconds_per_step",
    "images_per_second", "final" (loss and accuracy of the last call), "best_step",
    "best_val_auc", "threshold", "val", "test" (None when stopped early or without report_test), "n_train",
    "n_val", "n_test", "n_dropped" (images without a target), "out_dir",
    "classifier" (path or None)}.

  Raises:
    jaxcxr.data.DataError: unusable data (before any compilation).
    ValueError: `stop_at` is not a multiple of `steps_per_call`.
    FileExistsError: `out_dir` holds checkpoints and `resume` is False.
  """
  end = config.steps if stop_at is None else min(int(stop_at), config.steps)
  if end % config.steps_per_call:
    raise ValueError(f"stop_at={stop_at}: expected a multiple of steps_per_call={config.steps_per_call}")
  if isinstance(config.model, EncoderClassifierConfig) and not config.pretrained:
    raise ValueError("train_classifier: an EncoderClassifierConfig model starts from a saved encoder classifier "
                     "(`pretrained`, e.g. `jaxcxr train encoder-classifier`'s OUT/classifier); none was given")
  indices, y_all, n_dropped = task_split(dataset, config)
  host_data = prepare_data(dataset.subset(indices["train"]), config)
  val_images = prepare_images(dataset.images[indices["val"]], config.resolution)
  y_val = y_all[indices["val"]]
  out_dir = pathlib.Path(out_dir)
  graphdef = abstract_graphdef(_model_type(config.model), config.model)
  state = init_train_state(config, seed)
  # Model selection: the best parameters so far, their validation AUC and step, checkpointed with the train state.
  state["best"] = {"params": host_copy(state["params"]), "auc": np.asarray(-1.0, np.float32),
                   "step": np.asarray(0, np.int32)}

  def select(step: int, state: dict) -> dict | None:
    if step % config.eval_every and step != config.steps:
      return None
    params = host_copy(state["params"])
    logits = predict_logits(nnx.merge(graphdef, params), val_images, config.eval_batch_size)
    auc = np.asarray(metrics_lib.compute_roc_auc(logits, y_val), np.float32)
    if auc > state["best"]["auc"]:  # compared as stored; ties keep the earlier step
      return {**state, "best": {"params": params, "auc": auc, "step": np.asarray(step, np.int32)}}
    return None

  loop = run_training_loop(
      name=f"classifier:{config.task}", config=config, state=state, train_call=make_train_step(config),
      args=(jax.device_put({k: jnp.asarray(v) for k, v in host_data.items()}),), out_dir=out_dir, resume=resume,
      progress=progress, host_entries=("best",), on_call=select, stop_at=end,
      run_metadata={"seed": seed, "n_train": int(len(indices["train"])),
                    "data_sha256": data_metadata(dataset).get("data_sha256")},
      checkpoint_metadata=lambda s: {"best_val_auc": float(s["best"]["auc"]), "best_step": int(s["best"]["step"])},
      postfix=lambda m, s: {"loss": f"{float(np.mean(m['loss'])):.3f}", "val_auc": f"{float(s['best']['auc']):.3f}"})

  best = loop.state["best"]
  result = {
      **loop_summary(loop, config),
      "best_step": int(best["step"]),
      "best_val_auc": float(best["auc"]),
      "n_train": int(len(indices["train"])),
      "n_val": int(len(indices["val"])),
      "n_test": int(len(indices["test"])),
      "n_dropped": n_dropped,
      "out_dir": str(out_dir),
      "threshold": None,
      "val": None,
      "test": None,
      "classifier": None,
  }
  if loop.step < config.steps:
    return result

  # Final: the selected model, its validation threshold, and the test set evaluated once.
  model = nnx.merge(graphdef, best["params"])
  val_prob = predict_proba(model, val_images, config.eval_batch_size)
  threshold = select_threshold_youden(val_prob, y_val)
  val_report = classification_report(val_prob, y_val, threshold, data_lib.views(dataset.subset(indices["val"])))
  test_report = None
  if report_test and len(indices["test"]):
    test_set = dataset.subset(indices["test"])
    views = data_lib.views(test_set) if config.task == "abnormal" else None
    test_prob = predict_proba(model, test_set.images, config.eval_batch_size)
    test_report = classification_report(test_prob, y_all[indices["test"]], threshold, views)
  metadata = {
      "task": config.task,
      "positive_class": "abnormal" if config.task == "abnormal" else "female",
      "threshold": threshold,
      "split": {"seed": config.split_seed, "fractions": list(config.split), "stratify": config.task,
                "by": "patient_id", **{name: idx.tolist() for name, idx in indices.items()}},
      "steps": loop.step,
      "best_step": int(best["step"]),
      "train_seconds": loop.previous_seconds + loop.seconds,
      "device": device_name(),
      "seed": seed,
      "imbalance": config.imbalance,
      "pretrained": config.pretrained,
      "freeze_stages": config.freeze_stages,
      "val": val_report,
      "test": test_report,
      **data_metadata(dataset),
      "provenance": provenance(dataset.source, {"seed": seed, "split_seed": config.split_seed}),
  }
  path = checkpoints.save_model(out_dir / "classifier", model, config.model, metadata=metadata, overwrite=True)
  result.update(threshold=threshold, val=val_report, test=test_report, classifier=str(path),
                provenance=metadata["provenance"])
  return result


# ----------------------------------------------------------------------------- ensemble


def fit_pixel_voter(images: np.ndarray, y: np.ndarray, patients: np.ndarray, resolution: int,
                    size: int) -> tuple[np.ndarray, float, float]:
  """The pixel logistic regression of a `ClassifierEnsemble`, fitted on the features the module computes.

  Features: `models.ensemble.block_means` of the images as the ensemble sees them
  (`prepare_images` at `resolution`), standardised; L2 strength C by grouped 5-fold
  cross-validated AUC (as `fit_pixel_logreg`). The standardisation is folded into the
  returned raw-feature weights.

  Returns:
    (weight float32 (size, size), bias, C).
  """
  x = np.asarray(block_means(jnp.asarray(prepare_images(images, resolution)), size)).reshape(len(images), -1)
  weight, bias, c = fit_folded_logreg(x, y, patients, "the pixel voter")
  return weight.reshape(size, size), bias, c


def fit_folded_logreg(x: np.ndarray, y: np.ndarray, patients: np.ndarray, what: str) -> tuple[np.ndarray, float, float]:
  """`baselines.grouped_logreg` on raw features x, its standardisation folded into raw-feature weights.

  Returns:
    (weight float32 (F,), bias, C): weight @ x + bias is the fitted model's decision function.
  """
  search = grouped_logreg(x, y, patients, what)
  scaler, logreg = search.best_estimator_[0], search.best_estimator_[1]
  scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
  weight = logreg.coef_[0] / scale
  bias = float(logreg.intercept_[0] - (logreg.coef_[0] * scaler.mean_ / scale).sum())
  return weight.astype(np.float32), bias, float(search.best_params_["logisticregression__C"])


def assemble_ensemble(member_dirs: list[str | os.PathLike], dataset: data_lib.CXRDataset, out_dir: str | os.PathLike,
                      *, pixel_size: int = 32) -> dict[str, Any]:
  """Joins trained classifiers of one task, architecture and patient split into a `ClassifierEnsemble`.

  The pixel voter is fitted on the members' training patients; the decision threshold
  (Youden) and the validation report come from their validation patients. The test
  patients are not touched: evaluate the saved ensemble once with
  `jaxcxr evaluate classifier --split test`.

  Args:
    member_dirs: classifier checkpoints from `train_classifier` on `dataset`.
    dataset: the data the members were trained on (same images, same order).
    out_dir: the ensemble is saved to `out_dir/classifier`.
    pixel_size: side of the pixel voter's block-mean image; 0 for none.

  Returns:
    {"classifier" (path), "threshold", "val" (report), "val_voters" {name: validation AUC}, "pixel_C"}.

  Raises:
    ValueError: members of different tasks, architectures, splits or data.
  """
  metas = [checkpoints.read_metadata(d) for d in member_dirs]
  first = metas[0]
  for d, m in zip(member_dirs, metas):
    for key in ("task", "config", "split", "data_sha256"):
      if m.get(key) != first.get(key):
        raise ValueError(f"assemble_ensemble: {d} differs from {member_dirs[0]} in {key}")
  digest = data_metadata(dataset).get("data_sha256")
  if first.get("data_sha256") is not None and digest != first["data_sha256"]:
    raise ValueError("assemble_ensemble: the members were trained on other data than `dataset`")
  task, split = first["task"], first["split"]
  members = [load_classifier(d) for d in member_dirs]
  config = ClassifierEnsembleConfig(member=members[0].config, members=len(members), pixel_size=pixel_size)
  model = ClassifierEnsemble(config, rngs=nnx.Rngs(0))
  for slot, member in zip(model.members, members):
    nnx.update(slot, nnx.state(member))
  _, y = task_labels(dataset, task)
  train, val = (np.asarray(split[name], np.int64) for name in ("train", "val"))
  pixel_c = None
  if pixel_size:
    weight, bias, pixel_c = fit_pixel_voter(dataset.images[train], y[train], dataset.patient_id[train],
                                            config.resolution, pixel_size)
    set_pixel_weights(model, weight, bias)
  val_set = dataset.subset(val)
  graphdef, state = nnx.split(model)
  voters = map_batches(lambda x: _voter_logits(graphdef, state, x), prepare_images(val_set.images, config.resolution),
                       64)
  names = [f"member {i}" for i in range(len(members))] + (["pixel"] if pixel_size else [])
  val_voters = {name: metrics_lib.compute_roc_auc(voters[:, i], y[val]) for i, name in enumerate(names)}
  val_prob = predict_proba(model, val_set.images)
  threshold = select_threshold_youden(val_prob, y[val])
  val_report = classification_report(val_prob, y[val], threshold, data_lib.views(val_set))
  metadata = {
      "task": task,
      "positive_class": first.get("positive_class"),
      "threshold": threshold,
      "split": split,
      "members": [{"path": str(d), "model_id": checkpoints.model_id(d), "seed": m.get("seed"),
                   "best_step": m.get("best_step"), "val_auc": (m.get("val") or {}).get("roc_auc")}
                  for d, m in zip(member_dirs, metas)],
      "train_seconds": float(sum(m.get("train_seconds") or 0.0 for m in metas)),
      "pixel_C": pixel_c,
      "val": val_report,
      "val_voters": val_voters,
      "test": None,
      **data_metadata(dataset),
      "provenance": provenance(dataset.source, {"member_seeds": [m.get("seed") for m in metas],
                                                "split_seed": (split or {}).get("seed")}),
  }
  path = checkpoints.save_model(pathlib.Path(out_dir) / "classifier", model, config, metadata=metadata,
                                overwrite=True)
  return {"classifier": str(path), "threshold": threshold, "val": val_report, "val_voters": val_voters,
          "pixel_C": pixel_c, "provenance": metadata["provenance"]}


@functools.partial(jax.jit, static_argnums=0)
def _voter_logits(graphdef, state, x):
  return nnx.merge(graphdef, state).voter_logits(x)


# ----------------------------------------------------------------------------- baseline


def pixel_logreg_baseline(train_ds: data_lib.CXRDataset, test_ds: data_lib.CXRDataset, task: str) -> dict[str, Any]:
  """Logistic regression on 32x32 pixel averages (`fit_pixel_logreg`): the baseline a CNN must clearly beat.

  Fitted on `train_ds` (C by grouped cross-validation there); the test set is used once.

  Args:
    train_ds: training images (patients disjoint from `test_ds`'s).
    test_ds: test images.
    task: "abnormal" or "sex" (images without a target are skipped).

  Returns:
    {"n_train", "n_test", "C", "roc_auc", "accuracy" (at p >= 0.5)} plus
    "roc_auc_by_view" when the test set has views.
  """
  keep_tr, y_tr = task_labels(train_ds, task)
  keep_te, y_te = task_labels(test_ds, task)
  train_ds, y_tr = train_ds.subset(keep_tr), y_tr[keep_tr]
  test_ds, y_te = test_ds.subset(keep_te), y_te[keep_te]
  overlap = np.intersect1d(train_ds.patient_id, test_ds.patient_id)
  if overlap.size:
    raise data_lib.DataError(f"train and test share {overlap.size} patient(s) (e.g. {overlap[0]!r}); "
                             "split by patient (jaxcxr.data.split_by_patient)")
  if int(np.bincount(y_tr, minlength=2).min()) < 2:
    raise data_lib.DataError(f"the training set needs at least 2 images of each class for task {task!r}")
  model = fit_pixel_logreg(train_ds, y_tr)
  report = classification_report(model.predict_proba(test_ds.images), y_te, 0.5, data_lib.views(test_ds))
  return {"n_train": int(len(y_tr)), "n_test": report["n"], "C": model.C,
          **{k: v for k, v in report.items() if k not in ("n", "threshold")}}
