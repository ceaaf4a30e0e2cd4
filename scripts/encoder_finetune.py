"""Fine-tuning the CXR encoder for pneumonia or sex, against its linear probe and the pixel baseline (validation).

An experiment before a trainer: does fine-tuning the self-supervised encoder beat its frozen
linear probe, and the pixel logistic regression, on the validation patients of the classifier
trainer's split (the probe tasks of `jaxcxr.train.cxr_encoder.development_data`)? The model is
the encoder, GroupNorm + SiLU + global average pooling, and a linear head on the embedding;
the head is initialised from the linear probe's logistic regression on frozen embeddings
(so step 0 is the probe), then everything trains with AdamW (the encoder at `--encoder-lr`,
the head at `--lr`), class-weighted BCE and the classifier trainer's augmentation. Validation
AUC every `--eval-every` steps; the best step is reported (chosen on validation: an optimistic
figure, test untouched).

  JAXCXR_DATA=... python scripts/encoder_finetune.py --encoder training_state/encoder_cxr/encoder \
      --task pneumonia --steps 600 --out evaluations/encoder_finetune_pneumonia.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxcxr import data as data_lib
from jaxcxr import metrics
from jaxcxr.config import AugmentConfig
from jaxcxr.models.cxr_encoder import embed_images, load_cxr_encoder, prepare_images
from jaxcxr.train import cxr_encoder as trainer
from jaxcxr.train.classifier import fit_pixel_logreg


class Finetuned(nnx.Module):
  """The encoder and a linear head on its embedding: uint8-derived [-1, 1] images -> logits."""

  def __init__(self, encoder, weight: np.ndarray, bias: float):
    self.encoder = encoder
    self.w = nnx.Param(jnp.asarray(weight, jnp.float32))
    self.b = nnx.Param(jnp.asarray(bias, jnp.float32))

  def __call__(self, x):
    return self.encoder(x) @ self.w[...] + self.b[...]


def _probe_head(train_x, train_y, groups, val_x, val_y):
  """The linear probe (standardised logistic regression) folded into a head on raw embeddings."""
  result, _ = trainer.linear_probe(train_x, train_y, groups, val_x, val_y)
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  lr = LogisticRegression(C=result["C"], max_iter=5000).fit((train_x - mean) / std, train_y)
  w = lr.coef_[0] / std
  b = float(lr.intercept_[0] - (lr.coef_[0] * mean / std).sum())
  return result, w, b


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--encoder", required=True)
  p.add_argument("--task", choices=("pneumonia", "sex"), required=True)
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--encoder-lr", type=float, default=1e-4)
  p.add_argument("--weight-decay", type=float, default=1e-4)
  p.add_argument("--eval-every", type=int, default=50)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", required=True)
  args = p.parse_args()

  folder = os.environ.get("JAXCXR_DATA", "../shared/data")
  dev = trainer.development_data(**trainer.archives_in(folder))
  task = {t.name: t for t in dev.probes}[args.task]
  encoder = load_cxr_encoder(args.encoder)
  r = encoder.config.resolution
  train_x = embed_images(encoder, task.train_images)
  val_x = embed_images(encoder, task.val_images)
  probe, w, b = _probe_head(train_x, task.train_y, task.train_patients, val_x, task.val_y)
  n = len(task.train_y)
  pid = task.train_patients.astype(str)
  pixel_ds = data_lib.CXRDataset(images=task.train_images, label=task.train_y.astype(np.int8), sex=np.full(n, "U"),
                                 age=np.full(n, -1, np.int16), patient_id=pid)
  pixel = fit_pixel_logreg(pixel_ds, task.train_y)
  pixel_prob = pixel.predict_proba(task.val_images)
  print(f"probe {probe['roc_auc']:.3f}, pixel {metrics.compute_roc_auc(pixel_prob, task.val_y):.3f}", flush=True)

  model = Finetuned(encoder, w, b)
  graphdef, params = nnx.split(model, nnx.Param)
  schedule = optax.warmup_cosine_decay_schedule(0.0, 1.0, min(50, args.steps // 10), args.steps, 0.0)
  label = lambda ps: jax.tree_util.tree_map_with_path(
      lambda path, _: "encoder" if str(getattr(path[0], "key", path[0])) == "encoder" else "head", ps)
  tx = optax.multi_transform(
      {"encoder": optax.adamw(lambda s: args.encoder_lr * schedule(s), weight_decay=args.weight_decay),
       "head": optax.adamw(lambda s: args.lr * schedule(s), weight_decay=0.0)}, label)
  opt = tx.init(params)
  images = jnp.asarray(prepare_images(task.train_images, r))
  y = jnp.asarray(task.train_y, jnp.int32)
  counts = np.bincount(task.train_y, minlength=2)
  weights = jnp.asarray(len(task.train_y) / (2.0 * counts), jnp.float32)
  augment = AugmentConfig()

  @jax.jit
  def step(params, opt, key):
    k_idx, k_aug = jax.random.split(key)
    idx = jax.random.randint(k_idx, (args.batch,), 0, images.shape[0])
    x = data_lib.augment(k_aug, (images[idx].astype(jnp.float32) / 255.0)[..., None], augment) * 2.0 - 1.0
    yb = y[idx]

    def loss_fn(p):
      logits = nnx.merge(graphdef, p)(x)
      w_ = weights[yb]
      return (w_ * optax.sigmoid_binary_cross_entropy(logits, yb.astype(jnp.float32))).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  @jax.jit
  def logits_of(params, x_uint8):
    return nnx.merge(graphdef, params)(data_lib.to_signed(x_uint8)[..., None])

  val_images = prepare_images(task.val_images, r)

  def val_auc(params):
    out = np.concatenate([np.asarray(logits_of(params, val_images[i:i + 64])) for i in range(0, len(val_images), 64)])
    return metrics.compute_roc_auc(out, task.val_y), out

  history = [{"step": 0, "roc_auc": val_auc(params)[0]}]
  best = (history[0]["roc_auc"], 0, val_auc(params)[1])
  key = jax.random.key(args.seed)
  start = time.perf_counter()
  for s in range(1, args.steps + 1):
    params, opt, loss = step(params, opt, jax.random.fold_in(key, s))
    if s % args.eval_every == 0 or s == args.steps:
      auc, out = val_auc(params)
      history.append({"step": s, "roc_auc": auc, "loss": float(loss), "seconds": time.perf_counter() - start})
      print(json.dumps(history[-1]), flush=True)
      if auc > best[0]:
        best = (auc, s, out)
  best_ci = metrics.compute_roc_auc_ci(best[2], task.val_y)
  paired = metrics.compare_roc_auc(best[2], pixel_prob, task.val_y)
  result = {"task": args.task, "encoder": args.encoder, "args": vars(args), "n_train": n, "n_val": len(task.val_y),
            "linear_probe": probe,
            "pixel_logreg": metrics.compute_roc_auc_ci(pixel_prob, task.val_y),
            "fine_tuned_best": {"step": best[1], **best_ci, "paired_delong_vs_pixel": paired},
            "history": history,
            "note": "best step chosen on these validation patients: optimistic; test untouched"}
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.out).write_text(json.dumps(result, indent=1))
  print(json.dumps({k: result[k] for k in ("linear_probe", "pixel_logreg", "fine_tuned_best")}, indent=1))


if __name__ == "__main__":
  main()
