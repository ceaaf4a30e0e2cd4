"""`jaxcxr evaluate gan|anomaly|anomaly-cv|anomaly-ensemble|segmentation|classifier`: quality figures of a model.

Which images each evaluation runs on comes from `jaxcxr.evaluation_sets` (a model's own patient
split, the standard split, the pneumonia and COVID-19 anomaly tasks); the anomaly scorer of a
method from `jaxcxr.pretrained.anomaly_scorer` (inside the lungs by default, as every shipped
anomaly card chose).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxcxr import (anomaly, baselines, checkpoints, data, encoder_probes, evaluation_sets, explain, exposure,
                    pretrained, quality, reports)
from jaxcxr.cli import inputs
from jaxcxr.cli.common import COVID_DATA, GAN_DATA, UsageError, log
from jaxcxr.models import discriminator as discriminator_lib
from jaxcxr.models import generator as generator_lib
from jaxcxr.models.classifier import load_classifier, predict_proba
from jaxcxr.models.cxr_encoder import embed_images, load_cxr_encoder
from jaxcxr.models.unet import load_unet, predict_masks
from jaxcxr.train import cxr_encoder
from jaxcxr.train.anomaly_cv import cross_validate_anomaly
from jaxcxr.train.classifier import evaluate_classifier, task_labels
from jaxcxr.train.segmentation import evaluate_segmentation

__all__ = ["HANDLERS"]


def _ci_text(ci) -> str:
  return f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""


# ----------------------------------------------------------------------------- gan


def _shipped_lung_masker() -> Callable[[], Callable[[np.ndarray], np.ndarray]]:
  """A getter of the shipped U-Net's lung masker that loads the U-Net on its first call only.

  One per command: the baselines' lung statistics, `--exposure lungs` and the Grad-CAM lung share
  then share one loaded U-Net, and a command that needs none of them loads nothing.
  """
  return functools.cache(lambda: pretrained.lung_masker(log=log))


def _baselines(wanted: bool | None, split: str, train: tuple[data.CXRDataset, np.ndarray] | None,
               evaluated: data.CXRDataset, labels: np.ndarray, scores: np.ndarray, *,
               method: str, lung_masker: Callable[[], Callable[[np.ndarray], np.ndarray]]) -> dict[str, Any] | None:
  """The trivial baselines beside a judge (`baselines.compare_with_training_patients`), or None when not asked.

  The lung statistics use the shipped U-Net (`lung_masker`, a `_shipped_lung_masker`), loaded only when the
  baselines are computed.

  `wanted` None (the default) compares whenever the split has training patients to fit the baselines
  on (val and test) and both parts have 2 images of each class, and says why not otherwise; True
  insists (a usage error without them); False skips.
  """
  if wanted is False:
    return None
  if train is None:
    if wanted:
      raise UsageError(f"--baselines needs --split val or test (the baselines are fitted on the training patients); "
                       f"got --split {split}")
    log(f"no trivial baselines: --split {split} has no training patients apart from the evaluated ones")
    return None
  counts = [np.bincount(np.asarray(y, np.int64), minlength=2) for y in (train[1], labels)]
  if min(c.min() for c in counts) < 2 and not wanted:
    log(f"no trivial baselines: fewer than 2 images of a class (training {counts[0].tolist()}, evaluated "
        f"{counts[1].tolist()} negative/positive)")
    return None
  log(f"trivial baselines fitted on {len(train[0])} training images, compared on the same {len(evaluated)} images")
  try:
    return baselines.compare_with_training_patients(scores, labels, evaluated, train[0], train[1],
                                                    lung_masks=lung_masker(), method=method)
  except (ValueError, data.DataError) as e:
    raise UsageError(f"the trivial baselines: {e}") from e


def _normalise_exposure(region: str, split: str, train: data.CXRDataset | None, *datasets: data.CXRDataset,
                        lung_masker: Callable[[], Callable[[np.ndarray], np.ndarray]]
                        ) -> tuple[dict[str, Any] | None, data.CXRDataset | None, list[data.CXRDataset]]:
  """`--exposure REGION`: the training patients and `datasets` mapped onto the training normals' reference.

  `lung_masker` (a `_shipped_lung_masker`) gives the lungs of region "lungs".

  Returns (the reference's record or None, train, datasets), unchanged for "none"; a None dataset stays None.
  """
  if region == "none":
    return None, train, list(datasets)
  if train is None:
    raise UsageError(f"--exposure {region} needs --split val or test (the reference is fitted on the training "
                     f"patients' normals); got --split {split}")
  masker = lung_masker() if region == "lungs" else None
  given = [ds for ds in datasets if ds is not None]
  try:
    reference, (train, *normalised) = exposure.normalise_like_training(train, given, region=region,
                                                                       lung_masks=masker)
  except data.DataError as e:
    raise UsageError(f"--exposure {region}: {e}") from e
  normalised = iter(normalised)
  datasets = [None if ds is None else next(normalised) for ds in datasets]
  log(f"exposure: every image's {region} histogram mapped onto the {reference.n_images} training normals' reference")
  return reference.to_dict(), train, datasets


def _baselines_text(report: dict[str, Any] | None) -> list[str]:
  """The baselines' lines of a human report: the comparison and one line per view."""
  if report is None:
    return []
  return ["  " + line for line in ("vs trivial baselines: " + baselines.format_comparison(report, by_view=True)
                                   ).splitlines()]


def run_gan(args: argparse.Namespace) -> dict[str, Any]:
  """`evaluate gan`: realism figures against real normal test images, FD, conditioning probes."""
  if args.n_per_group <= 0:
    raise UsageError(f"--n-per-group must be positive, got {args.n_per_group}")
  if args.encoder and args.no_classifiers:
    raise UsageError("--encoder and --no-classifiers: the latter leaves out every learned judge, the encoder too")
  root = pathlib.Path(args.checkpoint) if args.checkpoint else checkpoints.shipped_checkpoint(
      *checkpoints.SHIPPED_GENERATORS).parent
  path = inputs.data_paths(args.data, *GAN_DATA)
  log(f"loading {root}/generator, {root}/discriminator and {path}")
  dataset = data.load(path)
  images = evaluation_sets.gan_images(dataset)
  log(f"realism figures against {len(images.test_normals)} normal test images, PCA space of "
      f"{len(images.train_normals)} normal training images (standard patient split)")
  generator = generator_lib.load_generator(root / "generator")
  discriminator = discriminator_lib.load_discriminator(root / "discriminator")
  quality.realism_sets(images.test_normals, images.train_normals, seed=args.seed)   # too few: before the judges load
  classifiers = {}
  shipped = checkpoints.SHIPPED_CLASSIFIERS
  for role, arg, names in (("sex_classifier", args.sex_classifier, shipped["sex"]),
                           ("feature_classifier", args.feature_classifier, shipped["abnormal"])):
    if args.no_classifiers:
      continue
    try:
      directory = inputs.checkpoint(arg, names, "classifier")
    except checkpoints.CheckpointError:
      log(f"no shipped {role.replace('_', ' ')}: its figures are left out")
      continue
    log(f"loading {role.replace('_', ' ')} {directory}")
    classifiers[role] = load_classifier(directory)
  features, encoder_dir = None, None
  if not args.no_classifiers:
    try:
      encoder_dir = inputs.checkpoint(args.encoder, checkpoints.SHIPPED_ENCODERS, "encoder")
    except checkpoints.CheckpointError:
      log("no shipped CXR encoder: the memorisation audit is in pixels only")
  if encoder_dir is not None:
    log(f"memorisation audit also in the embedding of {encoder_dir}")
    features = functools.partial(_unit_embeddings, load_cxr_encoder(encoder_dir))
  result = quality.evaluate_gan(generator, discriminator, dataset, seed=args.seed, n_per_group=args.n_per_group,
                                test_normals=images.test_normals, train_normals=images.train_normals,
                                training_set=images.training_set, closest_pairs_path=args.pairs,
                                memorisation_features=features, **classifiers)
  return {"checkpoint": str(root), "data": str(path), "memorisation_encoder": None if encoder_dir is None
          else str(encoder_dir), **result}


def _unit_embeddings(encoder, images: np.ndarray) -> np.ndarray:
  """The encoder's embeddings scaled to unit length: the audit's feature distance is then a chord of cosines."""
  x = embed_images(encoder, images)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def human_gan(r: dict[str, Any]) -> str:
  """`evaluate gan`'s figures (`quality.format_gan_report`): FD, probes, realism, diversity, memorisation."""
  return quality.format_gan_report(r)


# ----------------------------------------------------------------------------- anomaly


def run_anomaly(args: argparse.Namespace) -> dict[str, Any]:
  """`evaluate anomaly`: normal vs abnormal by a method's anomaly score (`anomaly.evaluate_anomaly`)."""
  if args.method != "anogan" and (args.steps is not None or args.restarts != 1 or args.base_image is not None
                                  or args.intensity_affine or args.early_stop_tol is not None
                                  or args.feature_term is not None or args.feature_encoder or args.feature_stage
                                  or args.feature_weight is not None):
    raise UsageError("--steps, --restarts, --base-image/--full-image, --intensity-affine, --early-stop-tol, "
                     "--feature-term, --feature-encoder, --feature-stage and --feature-weight set the AnoGAN "
                     "search; the other methods score in one pass")
  feature_term = args.feature_term or "encoder"
  if feature_term == "discriminator" and (args.feature_encoder or args.feature_stage):
    raise UsageError("--feature-encoder and --feature-stage set the encoder's feature term; --feature-term is "
                     "discriminator")
  feature_stage = args.feature_stage or anomaly.SHIPPED_FEATURE_STAGE
  feature_encoder = None
  if args.method == "anogan" and feature_term == "encoder":
    feature_encoder = args.feature_encoder or checkpoints.shipped_checkpoint(*checkpoints.SHIPPED_ENCODERS)
  if args.feature_weight is not None and not 0 <= args.feature_weight <= 1:
    raise UsageError(f"--feature-weight must be in [0, 1], got {args.feature_weight}")
  if args.early_stop_tol is not None and not args.early_stop_tol >= 0:
    raise UsageError(f"--early-stop-tol must be >= 0, got {args.early_stop_tol}")
  if args.restarts < 1:
    raise UsageError(f"--restarts must be >= 1, got {args.restarts}")
  if args.batch_size <= 0:
    raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
  search = None
  if args.method == "anogan":
    # The search chosen on validation, with the options given.
    search = dataclasses.replace(anomaly.shipped_search(feature_term), restarts=args.restarts,
                                 base_image=args.base_image is not False, intensity_affine=args.intensity_affine,
                                 early_stop_tol=args.early_stop_tol)
    if args.feature_weight is not None:
      search = dataclasses.replace(search, feature_weight=args.feature_weight)
    if args.steps is not None:
      if args.steps <= 0:
        raise UsageError(f"--steps must be positive, got {args.steps}")
      search = dataclasses.replace(search, steps=args.steps)
  try:
    scorer, source = pretrained.anomaly_scorer(args.method, args.checkpoint, lung_mask=args.lung_mask,
                                               batch_size=args.batch_size, search=search, seed=args.seed, log=log,
                                               **({"feature_term": feature_term, "feature_encoder": feature_encoder,
                                                   "feature_stage": feature_stage} if args.method == "anogan" else {}))
  except ValueError as e:                                              # an unknown --feature-stage
    raise UsageError(str(e)) from e
  path = inputs.data_paths(args.data, *GAN_DATA)
  log(f"loading {path}")
  nih = data.load(path)
  covid = None
  if args.abnormal == "covid":
    # Second task: NIH normals against the COVID-19 archive's images (each archive split by its own patients).
    covid_path = inputs.data_path(args.covid_data, COVID_DATA)
    log(f"loading {covid_path}")
    covid = data.load(covid_path)
    path = f"{path},{covid_path}"
  task = evaluation_sets.anomaly_task(nih, covid)
  test, threshold_data = task.part(args.split), task.threshold_part(args.split)
  train = task.part("train") if args.split in ("val", "test") else None
  lung_masker = _shipped_lung_masker()
  reference, train, (test, threshold_data) = _normalise_exposure(args.exposure, args.split, train, test,
                                                                 threshold_data, lung_masker=lung_masker)
  try:
    result = anomaly.evaluate_anomaly(scorer, test, threshold_data=threshold_data, progress=True)
  except ValueError as e:
    raise UsageError(f"{path}: {e}") from e
  scores_file = anomaly.save_score_file(args.scores, result, test, threshold_data) if args.scores else None
  scores, residual, labels = result.pop("scores"), result.pop("residual"), result.pop("labels")
  del result["component_scores"]
  result.pop("threshold_scores", None)
  if scores_file is not None:
    result["scores_file"] = str(scores_file)
  if args.out:
    overlay = reports.save_residual_overlays(test.images, residual, labels, scores,
                                             pathlib.Path(args.out) / f"residuals_{args.method}.png",
                                             title=f"{args.method}: ROC AUC {result['roc_auc']:.3f}")
    result["overlays"] = str(overlay)
  if task.covid is not None:
    result["covid_dropped_unknown_sex_or_age"] = task.dropped
    if args.split in ("val", "test"):
      # The figure's reference: what the archives' look alone gives (trained on the training patients).
      result["source_only_baseline"] = anomaly.source_only_baseline(task.part("train"), test)
  result["baselines"] = _baselines(args.baselines, args.split, None if train is None else (train, train.label),
                                   test, labels, scores, method=scorer.name, lung_masker=lung_masker)
  if args.exposure_control and args.exposure == "none" and train is not None and result["baselines"] is not None:
    result["exposure_control"] = _exposure_control(scorer, train, test, lung_masker)
  result.update(split=args.split, checkpoint=str(source), data=str(path), lung_mask=args.lung_mask,
                abnormal=args.abnormal, exposure=args.exposure, exposure_reference=reference)
  if args.method == "anogan":
    result.update(steps=search.steps, restarts=search.restarts, base_image=search.base_image,
                  intensity_affine=search.intensity_affine, early_stop_tol=search.early_stop_tol,
                  feature_weight=search.feature_weight,
                  feature_term=("discriminator" if feature_term == "discriminator" else
                                f"{feature_encoder} {feature_stage}"))
  return result


def _exposure_control(scorer, train: data.CXRDataset, test: data.CXRDataset,
                      lung_masker: Callable[[], Callable[[np.ndarray], np.ndarray]]) -> dict[str, Any]:
  """The judge again on exposure-normalised images ("body"), beside the trivial baselines on the same images.

  Part of what an anomaly score reads is the film's exposure, which the image statistics read too. The
  control maps every image's body histogram onto the training normals' reference (`jaxcxr.exposure`)
  and scores the test images once more: a judge whose AUC falls to the baselines' there was reading
  exposure. Costs a second scoring pass (for AnoGAN a second search; `--no-exposure-control` skips it).
  """
  log("exposure control: the test images scored again after exposure normalisation")
  reference, train_n, (test_n,) = _normalise_exposure("body", "test", train, test, lung_masker=lung_masker)
  result = anomaly.evaluate_anomaly(scorer, test_n, progress=True)
  comparison = _baselines(None, "test", (train_n, train_n.label), test_n, result["labels"], result["scores"],
                          method=scorer.name, lung_masker=lung_masker)
  out = {"exposure": "body", "roc_auc": result["roc_auc"], "roc_auc_ci95": result["roc_auc_ci95"],
         "by_view": {v: {"n": c["n"], "roc_auc": c["roc_auc"]} for v, c in (result.get("by_view") or {}).items()},
         "reference_images": reference["n_images"], "seconds": result["seconds"]}
  if comparison is not None:
    out["baselines"] = comparison
  return out


def human_anomaly(r: dict[str, Any]) -> str:
  """`evaluate anomaly`'s figures: ROC AUC and operating point, each component, the baseline, each view."""
  lines = [f"{r['method']} on {r['n']} images ({r['split']}: {r['n_normal']} normal, {r['n_abnormal']} abnormal): "
           f"ROC AUC {r['roc_auc']:.4f}{_ci_text(r.get('roc_auc_ci95'))}, precision {r['precision']:.3f}, "
           f"recall {r['recall']:.3f}, specificity {r['specificity']:.3f}, F1 {r['f1']:.3f} "
           f"(threshold from {r['threshold_from']}); "
           f"{r['seconds_per_image'] * 1e3:.1f} ms per image"]
  for name, c in (r.get("components") or {}).items():
    auc = "n/a" if c["roc_auc"] is None else f"{c['roc_auc']:.4f}"
    lines.append(f"  {name} alone: ROC AUC {auc}{_ci_text(c.get('roc_auc_ci95'))}")
  if "source_only_baseline" in r:
    b = r["source_only_baseline"]
    lines.append(f"  source-only baseline ({b['method']}): ROC AUC {b['roc_auc']:.4f}{_ci_text(b['roc_auc_ci95'])}")
  lines += _baselines_text(r.get("baselines"))
  for view, c in (r.get("by_view") or {}).items():
    auc = "n/a" if c["roc_auc"] is None else f"{c['roc_auc']:.4f}"
    lines.append(f"  {view} view ({c['n']} images, {c['n_abnormal']} abnormal): ROC AUC {auc}"
                 f"{_ci_text(c.get('roc_auc_ci95'))}")
  if "exposure_control" in r:
    e = r["exposure_control"]
    lines.append(f"  after exposure normalisation ({e['exposure']}): ROC AUC {e['roc_auc']:.4f}"
                 f"{_ci_text(e.get('roc_auc_ci95'))}")
    lines += ["  " + line for line in _baselines_text(e.get("baselines"))]
  return "\n".join(lines)


def run_anomaly_cv(args: argparse.Namespace) -> dict[str, Any]:
  """`evaluate anomaly-cv`: repeated patient-level CV of f-AnoGAN, HealthyGAN or PatchCore, refitted per fold."""
  if args.batch_size <= 0:
    raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
  if args.gan is not None and args.method != "fanogan":
    raise UsageError(f"--gan is f-AnoGAN's normal GAN; --method {args.method} does not use one")
  if args.encoder is not None and args.method != "patchcore":
    raise UsageError(f"--encoder is PatchCore's CXR encoder; --method {args.method} does not use one")
  if args.steps is not None and args.method == "patchcore":
    raise UsageError("--steps sets f-AnoGAN's and HealthyGAN's training; PatchCore builds its memory bank in one pass")
  root = checkpoints.checkpoints_root()
  gan = encoder = None
  if args.method == "fanogan":
    gan = pathlib.Path(args.gan) if args.gan else next(iter(checkpoints.shipped_normal_gans()), None)
    if gan is None:
      raise UsageError(f"no shipped normal-only GAN under {root}; pass --gan DIR (generator/, discriminator/)")
  if args.method == "patchcore":
    encoder = inputs.checkpoint(args.encoder, checkpoints.SHIPPED_ENCODERS, "encoder")
  path = inputs.data_paths(args.data, *GAN_DATA)
  log(f"loading {path}")
  ds = data.keep_abnormal_finding(data.load(path))
  split = data.standard_split(ds)
  dev = ds.subset(np.sort(np.concatenate([split["train"], split["val"]])))   # never the test patients
  unet = load_unet(checkpoints.shipped_checkpoint(*checkpoints.SHIPPED_UNETS)) if args.lung_mask else None
  log(f"{args.folds} folds x {args.repeats} repeats over {len(dev)} development images; progress one line per fold")
  try:
    return cross_validate_anomaly(args.method, dev, args.out, folds=args.folds, repeats=args.repeats,
                                  steps=args.steps, gan_dir=gan, encoder_dir=encoder, unet=unet, seed=args.seed,
                                  batch_size=args.batch_size)
  except (ValueError, data.DataError) as e:
    raise UsageError(str(e)) from e


def human_anomaly_cv(r: dict[str, Any]) -> str:
  """`evaluate anomaly-cv`'s summary: each score's mean ROC AUC over the folds."""
  fitted = (f"{r['steps']} training steps per fold" if r["steps"] is not None else
            "memory bank refitted per fold")
  lines = [f"{r['method']}: {r['folds']}-fold x {r['repeats']} patient-level CV over {r['n']} development images "
           f"({r['n_abnormal']} abnormal), {fitted}"]
  for name, s in r["summary"].items():
    if s["mean"] is not None:
      lines.append(f"  {name}: ROC AUC mean {s['mean']:.3f} (SD {s['sd']:.3f}, {s['min']:.3f}-{s['max']:.3f}, "
                   f"{s['n_folds']} folds)")
  for name, s in r.get("baselines_summary", {}).items():
    if s["mean"] is not None:
      lines.append(f"  baseline {name}: ROC AUC mean {s['mean']:.3f} (SD {s['sd']:.3f}, {s['n_folds']} folds)")
  for repeat, comparison in enumerate(r.get("baselines", [])):
    lines.append(f"  repeat {repeat}, pooled vs trivial baselines: " + baselines.format_comparison(comparison))
  return "\n".join(lines)


def run_anomaly_ensemble(args: argparse.Namespace) -> dict[str, Any]:
  """`evaluate anomaly-ensemble`: the rank-average ensemble of score files of the same images."""
  if len(args.scores) < 2:
    raise UsageError("give at least two score files (from `evaluate anomaly --scores FILE`)")
  return anomaly.ensemble_score_files(args.scores)


def human_anomaly_ensemble(r: dict[str, Any]) -> str:
  """`evaluate anomaly-ensemble`'s ROC AUCs: the ensemble's and each member's, per part."""
  lines = []
  for part in ("threshold_data", "test"):
    if part in r:
      p = r[part]
      lines.append(f"rank-average ensemble on {part} ({p['n']} images, {p['n_abnormal']} abnormal): ROC AUC "
                   f"{p['roc_auc']:.4f}{_ci_text(p['roc_auc_ci95'])}")
      lines += [f"  {name}: {m['roc_auc']:.4f}{_ci_text(m['roc_auc_ci95'])}" for name, m in p["members"].items()]
  return "\n".join(lines)


# ----------------------------------------------------------------------------- segmentation, classifier


def run_segmentation(args: argparse.Namespace) -> dict[str, Any]:
  """`evaluate segmentation`: lung Dice and IoU of a U-Net on its own (or the standard) split's patients."""
  directory = inputs.checkpoint(args.checkpoint, checkpoints.SHIPPED_UNETS, "unet")
  path = inputs.data_path(args.data, COVID_DATA)
  log(f"loading {path} and {directory}")
  chosen = evaluation_sets.model_split(data.load(path), checkpoints.read_metadata(directory), args.split)
  ds = chosen.dataset
  model = load_unet(directory)
  result = evaluate_segmentation(model, ds, per_image=True)
  per_image = result.pop("dice_per_image", None)
  result["baseline"] = baselines.compare_segmentation(per_image, ds.images, ds.lung_masks, ds.patient_id)
  if args.out and per_image is not None:
    predicted = predict_masks(model, ds.images)
    name = directory.name if directory.name != "unet" else directory.parent.name
    result["worst_overlays"] = str(reports.save_segmentation_overlays(
        ds.images, predicted, ds.lung_masks, np.asarray(per_image), pathlib.Path(args.out) / "worst_overlays.png",
        title=f"{name}: the 8 {args.split} images of lowest Dice", names=ds.patient_id))
  return {**result, "split": args.split, "split_from": chosen.split_from, "checkpoint": str(directory)}


def human_segmentation(r: dict[str, Any]) -> str:
  """`evaluate segmentation`'s Dice and IoU."""
  ci = lambda k: f" [{r[k][0]:.4f}, {r[k][1]:.4f}]" if k in r else ""
  return (f"{r['n']} images ({r['split']}, {r['split_from']}): Dice mean {r['dice_mean']:.4f}{ci('dice_mean_ci95')} "
          f"(right {r['dice_right']:.4f}{ci('dice_right_ci95')}, left {r['dice_left']:.4f}{ci('dice_left_ci95')}), "
          f"IoU {r['iou_mean']:.4f}" + _segmentation_baseline_line(r.get("baseline")))


def _segmentation_baseline_line(b: dict[str, Any] | None) -> str:
  if not b:
    return ""
  return (f"\n  vs the trivial baseline ({b['baseline']}): Dice {b['dice_mean']:.4f} [{b['dice_mean_ci95'][0]:.4f}, "
          f"{b['dice_mean_ci95'][1]:.4f}]; difference {b['difference']:+.4f} [{b['difference_ci95'][0]:+.4f}, "
          f"{b['difference_ci95'][1]:+.4f}] (bootstrap over patients)")


def run_classifier(args: argparse.Namespace) -> dict[str, Any]:
  """`evaluate classifier`: ROC AUC and accuracy on the classifier's own (or the standard) split's patients."""
  directory = inputs.checkpoint(args.checkpoint, checkpoints.SHIPPED_CLASSIFIERS[args.task], "classifier")
  metadata = checkpoints.read_metadata(directory)
  if metadata.get("task") not in (None, args.task):
    raise UsageError(f"{directory}: a {metadata['task']} classifier, not {args.task}")
  paths = inputs.data_paths(args.data, *GAN_DATA)
  log(f"loading {paths} and {directory}")
  chosen = evaluation_sets.classifier_split(data.load(paths), metadata, args.split, args.task)
  lung_masker = _shipped_lung_masker()
  reference, chosen_train, (ds,) = _normalise_exposure(args.exposure, args.split, chosen.train, chosen.dataset,
                                                       lung_masker=lung_masker)
  threshold = float(metadata.get("threshold", 0.5))
  model = load_classifier(directory)
  result = evaluate_classifier(model, ds, args.task, threshold=threshold)
  result.update(task=args.task, split=args.split, split_from=chosen.split_from, checkpoint=str(directory),
                exposure=args.exposure, exposure_reference=reference)
  keep, y = task_labels(ds, args.task)
  ds, y = ds.subset(keep), y[keep]
  train = None
  if chosen_train is not None:
    train_keep, train_y = task_labels(chosen_train, args.task)
    train = (chosen_train.subset(train_keep), train_y[train_keep])
  prob = predict_proba(model, ds.images)
  result["baselines"] = _baselines(args.baselines, args.split, train, ds, y, prob, method=f"{args.task} classifier",
                                   lung_masker=lung_masker)
  true_positives = np.flatnonzero((y == 1) & (prob >= threshold))
  if args.task == "abnormal" and true_positives.size:
    # Where the pneumonia evidence lies: the Grad-CAM mass over the shipped U-Net's lungs, true positives only.
    images = ds.images[true_positives]
    result["gradcam_lung_share"] = explain.lung_evidence(model, images, lung_masker()(images))
  if args.out:
    positives = np.flatnonzero(y == 1)
    if positives.size:
      prob = prob[positives]
      # 8 positives spread evenly over the classifier's ranking (not its 8 most confident).
      ranks = np.argsort(prob)[np.unique(np.linspace(0, positives.size - 1, 8).round().astype(int))]
      picks = positives[ranks]
      cam = explain.grad_cam(model, ds.images[picks])
      what = "pneumonia" if args.task == "abnormal" else "female"
      result["gradcam_overlays"] = str(reports.save_gradcam_overlays(
          ds.images[picks], cam.heatmap, prob[ranks],
          pathlib.Path(args.out) / "gradcam_overlays.png", names=ds.patient_id[picks],
          title=f"Grad-CAM ({what}) on 8 {args.split} {what} images, spread over the classifier's ranking"))
  return result


def human_classifier(r: dict[str, Any]) -> str:
  """`evaluate classifier`'s figures: ROC AUC, accuracy, the baseline's comparison, each view."""
  auc = "n/a (one class)" if r["roc_auc"] is None else f"{r['roc_auc']:.4f}{_ci_text(r.get('roc_auc_ci95'))}"
  line = (f"{r['task']} classifier on {r['n']} images ({r['split']}, {r.get('split_from', 'data.standard_split')}): "
          f"ROC AUC {auc}, accuracy {r['accuracy']:.4f}")
  for text in _baselines_text(r.get("baselines")):
    line += "\n" + text
  if r.get("gradcam_lung_share"):
    g = r["gradcam_lung_share"]
    line += (f"\n  Grad-CAM mass inside the lungs, {g['n']} true positives: {g['mean']:.3f} "
             f"(95% CI {g['ci95'][0]:.3f}-{g['ci95'][1]:.3f}); the lungs' share of the image {g['chance']:.3f}")
  for view, value in (r.get("roc_auc_by_view") or {}).items():
    line += f"\n  {view}: ROC AUC {'n/a' if value is None else f'{value:.4f}'} (n={r['n_by_view'][view]})"
  return line


def run_encoder(args: argparse.Namespace) -> dict[str, Any]:
  """`evaluate encoder`: linear probes of a CXR encoder on validation patients beside the trivial baselines."""
  directory = inputs.checkpoint(args.checkpoint, checkpoints.SHIPPED_ENCODERS, "encoder")
  log(f"loading {directory}")
  encoder = load_cxr_encoder(directory)                    # a bad checkpoint fails before the archives load
  folder = pathlib.Path(args.data) if args.data else data.default_data_path(GAN_DATA[0]).parent
  dev = cxr_encoder.development_data(**cxr_encoder.archives_in(folder))
  try:
    result = encoder_probes.evaluate_encoder(encoder, dev.probes, exposure_region=args.exposure,
                                             lung_masks=pretrained.lung_masker(args.unet, log=log), progress=log)
  except data.DataError as e:
    raise UsageError(str(e)) from e
  out = {"checkpoint": str(directory), "data": str(folder), "split": "val (the classifier trainer's task splits)",
         "exposure": args.exposure, "tasks": result}
  if args.out:
    name = directory.parent.name if directory.name == "encoder" else directory.name
    out["figure"] = str(reports.save_probe_figure(result, pathlib.Path(args.out) / "probes.png",
                                                  title=f"{name}: linear probes on validation patients"))
  return out


def human_encoder(r: dict[str, Any]) -> str:
  """`evaluate encoder`'s probes, one line per task and feature set."""
  lines = [f"{r['checkpoint']}: linear probes on validation patients"]
  for task, entry in r["tasks"].items():
    for kind, probe in entry["probes"].items():
      lines.append(f"  {task}, {kind} ({probe['dimensions']} features): "
                   + baselines.format_comparison(probe["vs_baselines"]))
  return "\n".join(lines)


# Subcommand name: (handler, human formatter).
HANDLERS = {"gan": (run_gan, human_gan), "anomaly": (run_anomaly, human_anomaly),
            "anomaly-cv": (run_anomaly_cv, human_anomaly_cv),
            "anomaly-ensemble": (run_anomaly_ensemble, human_anomaly_ensemble),
            "segmentation": (run_segmentation, human_segmentation), "classifier": (run_classifier, human_classifier),
            "encoder": (run_encoder, human_encoder)}
