"""Quality figures of a trained conditional GAN (the model cards' numbers).

* Fréchet distance between generated and real images in a chest-X-ray feature
  space (the discriminator's `features`, mean-pooled), next to the real-vs-real
  distance between two patient-disjoint halves of the real data: the generated set
  is conditioned on the metadata of one half and compared with the other half, so
  both distances use equally many images and the same condition mix.
* A debiased Sinkhorn divergence with an OTDD-style label term (normal/abnormal) on
  the same feature sets, as a second view.
* A conditioning check: pixel-space probes (logistic regression for sex, ridge
  regression for age, on 16x16 block means) fitted on one real half, validated on
  the other, then applied to generated images of each age-sex group.
* With real normal test and training images (`test_normals`, `train_normals`): the
  realism figures of `jaxcxr.realism` (two-sample AUCs, PCA Fréchet distance,
  high-frequency share) of generated normals against one patient-disjoint half of
  the test normals, next to the other half against it; their diversity and coverage
  in the PCA space (`realism.diversity_report`: mean pairwise distance per age-sex
  group and overall, precision and recall); and the memorisation audit of
  `jaxcxr.memorisation` (the distance of each generated image to its nearest
  training image, beside the same for the test images).

Discriminator features are computed at the discriminator's resolution, which may be
below the generator's (a cascade: a low-resolution GAN followed by a learned
super-resolution stage); every other figure uses the generator's resolution.
Images cross this module's API as uint8 (N, H, W), radiographic display; the
generator and discriminator work in generator space [-1, 1], NHWC.
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
from flax import nnx
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from jaxcxr import data, memorisation, metrics, realism
from jaxcxr.batching import map_batches
from jaxcxr.models import condition as condition_lib
from jaxcxr.models import generator as generator_lib
from jaxcxr.models.classifier import predict_logits, predict_pooled_features
from jaxcxr.models.discriminator import Discriminator
from jaxcxr.models.generator import Generator

PROBE_SIZE = 16
# fold_in index of the realism figures' generated images (0: FD half, 1..6: groups).
REALISM_KEY = 100


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _generate(graphdef, state, key, cond):
  generator = nnx.merge(graphdef, state)
  z = generator_lib.latents(key, jnp.int32(0), cond.shape[0], generator.config.latent_dim)
  return data.signed_to_uint8(generator(z, cond)[..., 0])


def generate_from_conditions(generator: Generator, key: jax.Array, cond: np.ndarray) -> np.ndarray:
  """uint8 (N, R, R) images for explicit condition vectors (N, len(conditions)), one call.

  Raises:
    ValueError: cond that is not a finite real (N, len(generator.config.conditions)) array.
  """
  cond = np.asarray(cond)
  width = len(generator.config.conditions)
  if cond.dtype.kind not in "biuf" or cond.ndim != 2 or cond.shape[1] != width:
    raise ValueError(f"generate_from_conditions: expected real cond of shape (N, {width}) for conditions "
                     f"{generator.config.conditions}, got {cond.dtype} {cond.shape}")
  if not np.isfinite(cond).all():
    raise ValueError("generate_from_conditions: cond contains NaN or inf")
  graphdef, state = nnx.split(generator)
  return np.asarray(_generate(graphdef, state, key, jnp.asarray(cond, jnp.float32)))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _pooled_features(graphdef, state, images):
  discriminator = nnx.merge(graphdef, state)
  return discriminator.features(images).mean(axis=(1, 2))               # (B, C)


def discriminator_features(discriminator: Discriminator, images_uint8: np.ndarray, *, batch_size: int = 64
                           ) -> np.ndarray:
  """Mean-pooled `features` of uint8 (N, H, W) images. float32 (N, C).

  Images of another size are first resized to the discriminator's resolution (PIL
  LANCZOS), e.g. the 256x256 output of a cascade generator whose discriminator
  works at 64x64.
  """
  graphdef, state = nnx.split(discriminator)
  images = data.resize_uint8(np.asarray(images_uint8), discriminator.config.resolution)
  return map_batches(lambda x: _pooled_features(graphdef, state, data.to_signed(x)[..., None]), images, batch_size)


def _probe_inputs(images_uint8: np.ndarray) -> np.ndarray:
  n, r = images_uint8.shape[:2]
  block = r // PROBE_SIZE
  x = images_uint8.astype(np.float32).reshape(n, PROBE_SIZE, block, PROBE_SIZE, block).mean(axis=(2, 4))
  return x.reshape(n, -1) / 255.0


def realism_sets(test_normals: data.CXRDataset, train_normals: data.CXRDataset, *, seed: int
                 ) -> tuple[data.CXRDataset, data.CXRDataset, np.ndarray]:
  """The realism figures' real sets: halves A and B of the test normals (n each) and the training normals.

  Checks every size before any slow work (`jaxcxr evaluate gan` calls it before it loads a model).
  Returns (a, b, train images uint8 (M, 256, 256)).

  Raises:
    jaxcxr.data.DataError: fewer than 32 normal test images per half or at most 32 normal
      training images (the PCA dimension).
  """
  test = test_normals.subset((test_normals.label == 0) & np.isin(test_normals.sex, ["M", "F"])
                             & (test_normals.age >= 0))
  in_a = data.balanced_patient_halves(test.patient_id, seed=seed)
  a, b = test.subset(in_a), test.subset(~in_a)
  n = min(len(a), len(b))
  if n < realism.PCA_DIM:
    raise data.DataError(
        f"realism figures: {len(test)} normal test images with sex and age ({len(a)} and {len(b)} in two "
        f"patient-disjoint halves); need at least {realism.PCA_DIM} per half (the PCA dimension)")
  train = train_normals.images[train_normals.label == 0]
  if len(train) <= realism.PCA_DIM:
    raise data.DataError(f"realism figures: {len(train)} normal training images; need more than "
                         f"{realism.PCA_DIM} (the PCA dimension)")
  return a.subset(np.arange(n)), b.subset(np.arange(n)), train


def evaluate_gan(generator: Generator, discriminator: Discriminator, real: data.CXRDataset, *, seed: int = 0,
                 n_per_group: int = 64, sex_classifier=None, feature_classifier=None,
                 test_normals: data.CXRDataset | None = None, train_normals: data.CXRDataset | None = None,
                 training_set: data.CXRDataset | None = None,
                 memorisation_features: Callable[[np.ndarray], np.ndarray] | None = None,
                 closest_pairs_path: str | os.PathLike | None = None) -> dict[str, Any]:
  """Quality figures of a generator against real images (see the module docstring).

  Args:
    generator, discriminator: a trained pair (inference mode). The discriminator's
      resolution may be below the generator's (a cascade); its features are computed on
      images resized to it.
    real: real images with sex and age (those without are dropped); resized to the
      generator's resolution with PIL LANCZOS, as in training. For a generator not
      conditioned on the label (a normal-only GAN), only the normal images (label 0) are used.
    seed: key of the generated images and of the half split.
    n_per_group: generated images per age-sex group for the conditioning check.
    sex_classifier: optional `models.classifier.Classifier` for the sex task (logit > 0 =
      female); adds its female fraction per group and "sex_classifier_agreement_generated"
      next to its agreement on the real images of half B.
    feature_classifier: optional `Classifier` (e.g. the shipped abnormal classifier) whose
      globally pooled last feature map is a chest-X-ray feature space fixed across GANs
      (unlike D's features, which belong to each GAN): adds "fd_classifier_generated_vs_real",
      "fd_classifier_real_vs_real" and their ratio "fd_classifier_ratio".
    test_normals: real images of held-out (test) patients; its normal images (label 0) with
      sex and age give the realism figures ("realism"): split into two patient-disjoint
      halves A and B, cut to equal size n, and n generated normals conditioned on B's sex
      and age are compared with A, next to B against A (`realism.realism_report`, all at
      the generator's resolution). Only these equal halves are used, so both comparisons
      see the same sample size. Needs `train_normals`.
    train_normals: real images of the training patients; its normal images fit the PCA
      Fréchet space.
    training_set: the images the generator trained on (all labels), searched by the
      memorisation audit; None searches every image of `train_normals`. Needs `test_normals`.
    memorisation_features: optional callable, uint8 (N, R, R) images -> (N, D) features (e.g.
      a chest-X-ray encoder's embedding); adds the audit in that space ("features").
    closest_pairs_path: optional PNG path: writes the 8 closest generated/training pairs in
      pixels there (`memorisation.save_closest_pairs`), and with `memorisation_features` those
      in feature space beside it as "<stem>_features.png"; each space's entry records its "figure".

  Returns:
    {"n_real_half", "fd_generated_vs_real", "fd_real_vs_real", "fd_ratio",
     "sinkhorn_generated_vs_real", "sinkhorn_real_vs_real", "probe_sex_accuracy_real",
     "probe_age_mae_real", "groups": {group: {"female_fraction", "mean_age"} for generated
     and "real_*" for real images of the group}}, and with `test_normals`:
     * "realism": the `realism.realism_report` dict;
     * "diversity": the `realism.diversity_report` dict, in the PCA Fréchet space: "overall"
       and precision/recall for the realism sets (generated on B's conditions, against A;
       B against A as reference), "groups" for the n_per_group generated normals of each
       group (at its mid-age) against the real normal images of the group in `real`;
     * "memorisation": {"generated": what was audited, "pixels": `NearestTraining.summary()`
       (+ "figure"), and with `memorisation_features` "features"}: the 6 x n_per_group
       generated normals of the groups (in `data.GROUPS` order, so generated index i is
       group i // n_per_group), every image of `training_set`, the normal test images.

  Raises:
    jaxcxr.data.DataError: fewer than 8 usable real images; with `test_normals`, fewer than
      32 normal test images per half or at most 32 normal training images (the PCA dimension).
    ValueError: n_per_group below 1; only one of `test_normals` and `train_normals` given, or `training_set`,
      `memorisation_features` or `closest_pairs_path` without them.

  Examples:
    The shipped normal-only GAN against the real normal radiographs of a dataset (the
    first call compiles several functions: a minute or more on a CPU, so not run here):

    >>> import jaxcxr
    >>> pre = jaxcxr.load_pretrained()                                               # doctest: +SKIP
    >>> report = evaluate_gan(*pre.normal_gan, data.load("nih.npz"), n_per_group=8)  # doctest: +SKIP
    >>> report["fd_ratio"], report["sinkhorn_generated_vs_real"]                     # doctest: +SKIP
  """
  cfg = generator.config
  if isinstance(n_per_group, bool) or not isinstance(n_per_group, (int, np.integer)) or n_per_group < 1:
    raise ValueError(f"evaluate_gan: n_per_group must be a positive integer, got {n_per_group!r}")
  if (test_normals is None) != (train_normals is None):
    raise ValueError("evaluate_gan: give test_normals and train_normals together (the realism figures) or neither")
  audit_options = {"training_set": training_set, "memorisation_features": memorisation_features,
                   "closest_pairs_path": closest_pairs_path}
  if test_normals is None and any(v is not None for v in audit_options.values()):
    given = ", ".join(k for k, v in audit_options.items() if v is not None)
    raise ValueError(f"evaluate_gan: {given} belong to the memorisation audit, which needs test_normals and "
                     "train_normals")
  real_sets = None
  if test_normals is not None:   # check the sizes before the slow figures
    real_sets = realism_sets(test_normals, train_normals, seed=seed)
  known = np.isin(real.sex, ["M", "F"]) & (real.age >= 0)
  if "label" in cfg.conditions:
    known &= np.isin(real.label, [0, 1])
  elif real.label is not None:
    known &= real.label == 0   # a generator without the label condition models normal images
  real = real.subset(known)
  if len(real) < 8:
    raise data.DataError(f"{real.source}: {len(real)} usable real images; need at least 8 for the quality figures")
  halves = data.split_by_patient(real.patient_id, (0.5, 0.5, 0.0), stratify=real.label, seed=seed)
  a, b = real.subset(halves["train"]), real.subset(halves["val"])
  n = min(len(a), len(b))
  a, b = a.subset(np.arange(n)), b.subset(np.arange(n))
  images_a = data.resize_uint8(a.images, cfg.resolution)
  images_b = data.resize_uint8(b.images, cfg.resolution)
  key = jax.random.key(seed)
  cond_b = condition_lib.make_condition(b.sex, b.age, b.label, conditions=cfg.conditions)
  generated = generate_from_conditions(generator, jax.random.fold_in(key, 0), cond_b)

  feats = {name: discriminator_features(discriminator, x)
           for name, x in (("a", images_a), ("b", images_b), ("gen", generated))}
  result: dict[str, Any] = {"n_real_half": n, "resolution": cfg.resolution}
  result["fd_generated_vs_real"] = metrics.frechet_distance(feats["gen"], feats["a"])
  result["fd_real_vs_real"] = metrics.frechet_distance(feats["b"], feats["a"])
  result["fd_ratio"] = result["fd_generated_vs_real"] / max(result["fd_real_vs_real"], 1e-12)
  result["sinkhorn_generated_vs_real"] = metrics.sinkhorn_distance(feats["gen"], feats["a"], labels_a=b.label,
                                                                   labels_b=a.label)
  result["sinkhorn_real_vs_real"] = metrics.sinkhorn_distance(feats["b"], feats["a"], labels_a=b.label,
                                                              labels_b=a.label)

  if feature_classifier is not None:
    cf = {name: predict_pooled_features(feature_classifier, x)
          for name, x in (("a", images_a), ("b", images_b), ("gen", generated))}
    result["fd_classifier_generated_vs_real"] = metrics.frechet_distance(cf["gen"], cf["a"])
    result["fd_classifier_real_vs_real"] = metrics.frechet_distance(cf["b"], cf["a"])
    result["fd_classifier_ratio"] = (result["fd_classifier_generated_vs_real"]
                                     / max(result["fd_classifier_real_vs_real"], 1e-12))

  # Conditioning probes, fitted on half A, checked on half B, applied to generated groups.
  sex_probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
  sex_probe.fit(_probe_inputs(images_a), a.sex == "F")
  age_probe = make_pipeline(StandardScaler(), Ridge(alpha=100.0))
  age_probe.fit(_probe_inputs(images_a), a.age.astype(np.float64))
  result["probe_sex_accuracy_real"] = float(np.mean(sex_probe.predict(_probe_inputs(images_b)) == (b.sex == "F")))
  result["probe_age_mae_real"] = float(np.mean(np.abs(age_probe.predict(_probe_inputs(images_b)) - b.age)))
  groups, generated_groups = {}, {}
  all_images = data.resize_uint8(real.images, cfg.resolution)
  for g, name in enumerate(data.GROUPS):
    images = generator_lib.sample_images(generator, jax.random.fold_in(key, 1 + g), n_per_group, name)
    generated_groups[name] = images
    x = _probe_inputs(images)
    row = {"female_fraction": float(np.mean(sex_probe.predict(x))),
           "mean_predicted_age": float(np.mean(age_probe.predict(x)))}
    if sex_classifier is not None:
      row["classifier_female_fraction"] = float(np.mean(predict_logits(sex_classifier, images) > 0))
    in_group = real.groups == g
    if in_group.any():
      xr = _probe_inputs(all_images[in_group])
      row["real_female_fraction"] = float(np.mean(sex_probe.predict(xr)))
      row["real_mean_predicted_age"] = float(np.mean(age_probe.predict(xr)))
      row["n_real"] = int(in_group.sum())
    groups[name] = row
  result["groups"] = groups
  lo_m = np.mean([groups[g]["female_fraction"] for g in data.GROUPS if g.endswith("m")])
  lo_f = np.mean([groups[g]["female_fraction"] for g in data.GROUPS if g.endswith("f")])
  result["sex_agreement_generated"] = float((1 - lo_m + lo_f) / 2)
  if sex_classifier is not None:
    male = np.mean([groups[g]["classifier_female_fraction"] for g in data.GROUPS if g.endswith("m")])
    female = np.mean([groups[g]["classifier_female_fraction"] for g in data.GROUPS if g.endswith("f")])
    result["sex_classifier_agreement_generated"] = float((1 - male + female) / 2)
    result["sex_classifier_accuracy_real"] = float(np.mean((predict_logits(sex_classifier, b.images) > 0)
                                                           == (b.sex == "F")))
  if real_sets is not None:
    ra, rb, train = real_sets
    cond = condition_lib.make_condition(rb.sex, rb.age, 0, conditions=cfg.conditions)
    generated = generate_from_conditions(generator, jax.random.fold_in(key, REALISM_KEY), cond)
    images_ra = data.resize_uint8(ra.images, cfg.resolution)
    images_rb = data.resize_uint8(rb.images, cfg.resolution)
    train = data.resize_uint8(train, cfg.resolution)
    space = realism.PcaFrechet(train, seed=seed)
    result["realism"] = realism.realism_report(generated, images_ra, images_rb, train, seed=seed, space=space)
    normal = np.ones(len(real), bool) if real.label is None else real.label == 0
    real_groups = {name: all_images[normal & (real.groups == g)] for g, name in enumerate(data.GROUPS)}
    result["diversity"] = realism.diversity_report(space, generated, images_ra, images_rb,
                                                   generated_groups=generated_groups, real_groups=real_groups)
    result["memorisation"] = _memorisation(
        np.concatenate(list(generated_groups.values())),
        train_normals if training_set is None else training_set, test_normals,
        resolution=cfg.resolution, features=memorisation_features, figure=closest_pairs_path)
  return result


def _memorisation(generated: np.ndarray, training_set: data.CXRDataset, test_normals: data.CXRDataset, *,
                  resolution: int, features: Callable[[np.ndarray], np.ndarray] | None,
                  figure: str | os.PathLike | None) -> dict[str, Any]:
  """`evaluate_gan`'s "memorisation" entry (see there); writes the closest-pairs figures when `figure` is a path."""
  training = data.resize_uint8(training_set.images, resolution)
  test = data.resize_uint8(test_normals.images[test_normals.label == 0], resolution)
  audits = memorisation.audit(generated, training, test, features=features)
  entry: dict[str, Any] = {"generated": f"{len(generated)} unfiltered normal samples of the {len(data.GROUPS)} "
                                        "groups (data.GROUPS order)",
                           "test": f"{len(test)} normal images of the test patients"}
  for space, audit in audits.items():
    entry[space] = audit.summary()
    if figure is not None:
      path = pathlib.Path(figure)
      if space != "pixels":
        path = path.with_name(f"{path.stem}_{space}{path.suffix or '.png'}")
      entry[space]["figure"] = str(memorisation.save_closest_pairs(audit, generated, training, path))
  return entry


# ----------------------------------------------------------------------------- report text


def format_gan_report(r: dict[str, Any]) -> str:
  """Human-readable lines of an `evaluate_gan` result (as `jaxcxr evaluate gan` prints it without --json).

  Args:
    r: the dict `evaluate_gan` returns (other keys, e.g. the CLI's "checkpoint", are ignored).

  Returns:
    The report, lines joined by newlines: D-feature FD, Sinkhorn and sex agreement, the
    classifier figures when present, the per-group conditioning, and with the test-normal
    figures the realism table, the diversity and coverage figures and the memorisation audit.
  """
  lines = [f"FD generated vs real {r['fd_generated_vs_real']:.4g}, real vs real {r['fd_real_vs_real']:.4g} "
           f"(ratio {r['fd_ratio']:.2f}); Sinkhorn {r['sinkhorn_generated_vs_real']:.4g} vs "
           f"{r['sinkhorn_real_vs_real']:.4g}; sex agreement {r['sex_agreement_generated']:.2f}"]
  if "fd_classifier_ratio" in r:
    lines.append(f"FD in classifier features: {r['fd_classifier_generated_vs_real']:.4g} vs real-real "
                 f"{r['fd_classifier_real_vs_real']:.4g} (ratio {r['fd_classifier_ratio']:.2f})")
  if "sex_classifier_agreement_generated" in r:
    lines.append(f"sex classifier agreement: generated {r['sex_classifier_agreement_generated']:.2f}, "
                 f"real {r['sex_classifier_accuracy_real']:.2f}")
  for name, g in r["groups"].items():
    lines.append(f"  {name}: female fraction {g['female_fraction']:.2f}, predicted age {g['mean_predicted_age']:.1f}")
  if "realism" in r:
    lines.extend(_realism_lines(r["realism"]))
  if "diversity" in r:
    lines.extend(_diversity_lines(r["diversity"]))
  if "memorisation" in r:
    lines.extend(_memorisation_lines(r["memorisation"]))
  return "\n".join(lines)


def _realism_lines(realism_figures: dict[str, Any]) -> list[str]:
  """Rows of the realism figures: figure, generated vs real, real vs real."""
  rows = [(f"two-sample AUC, {label}", f"{realism_figures[f'two_sample_auc_{key}']['generated_vs_real']:.3f}",
           f"{realism_figures[f'two_sample_auc_{key}']['real_vs_real']:.3f}", "")
          for key, label in (("pixels", "pixels"), ("hog", "HOG"), ("detail", "detail"))]
  fd = realism_figures["pca_frechet"]
  rows.append(("PCA Frechet", f"{fd['generated_vs_real']:.4g}", f"{fd['real_vs_real']:.4g}",
               f"ratio {fd['ratio']:.2f}"))
  hf = realism_figures["high_frequency_share"]
  rows.append(("high-frequency ratio", f"{hf['ratio']:.3f}", f"{hf['real_vs_real_ratio']:.3f}",
               f"real share {hf['real_a']:.4f}"))
  lines = [f"realism figures ({realism_figures['n_per_set']} images per set; AUC 0.5 = indistinguishable, "
           "ratios 1 = real):",
           f"  {'figure':<22}{'generated vs real':>19}{'real vs real':>14}"]
  lines += [f"  {name:<22}{gen:>19}{ref:>14}  {note}".rstrip() for name, gen, ref, note in rows]
  return lines


def _optional(value: float | None, spec: str) -> str:
  return "-" if value is None else format(value, spec)


def _diversity_lines(d: dict[str, Any]) -> list[str]:
  """Lines of the diversity figures: mean pairwise distances and ratios, precision/recall, nearest-neighbour share."""
  o = d["overall"]
  lines = ["diversity (mean pairwise distance in the whitened PCA space; ratio 1 = as diverse as real):",
           f"  overall: generated {o['generated']:.3f}, real {o['real_a']:.3f} (ratio {o['ratio']:.3f}; "
           f"real vs real {o['real_vs_real_ratio']:.3f})"]
  for name, g in d.get("groups", {}).items():
    lines.append(f"  {name}: generated {_optional(g['generated'], '.3f')} ({g['n_generated']}), real "
                 f"{_optional(g['real'], '.3f')} ({g['n_real']}), ratio {_optional(g['ratio'], '.3f')}")
  if "mean_group_ratio" in d:
    lines.append(f"  mean group ratio {_optional(d['mean_group_ratio'], '.3f')}")
  pr, nn = d["precision_recall"], d["nearest_neighbour_share"]
  lines.append(f"precision / recall (k = {d['k']}): generated vs real {pr['generated_vs_real']['precision']:.3f} / "
               f"{pr['generated_vs_real']['recall']:.3f}, real vs real {pr['real_vs_real']['precision']:.3f} / "
               f"{pr['real_vs_real']['recall']:.3f}")
  lines.append(f"share of real images nearer a generated than a real image: {nn['generated_vs_real']:.3f} "
               f"(real vs real {nn['real_vs_real']:.3f})")
  return lines


def _memorisation_lines(m: dict[str, Any]) -> list[str]:
  """Lines of the memorisation audit, one per space, and the figures written."""
  lines = [f"memorisation audit (distance to the nearest training image; {m['generated']}; {m['test']}):",
           f"  {'space':<10}{'generated q05 / median':>24}{'test q05 / median':>20}{'share below test q05':>23}"]
  for space in ("pixels", "features"):
    if space in m:
      a = m[space]
      lines.append(f"  {space:<10}{a['generated']['q05']:>13.4g} / {a['generated']['median']:<8.4g}"
                   f"{a['test']['q05']:>9.4g} / {a['test']['median']:<8.4g}{a['share_below_threshold']:>12.3f} "
                   "(target <= 0.05)")
  lines += [f"  closest pairs ({space}): {m[space]['figure']}" for space in ("pixels", "features")
            if "figure" in m.get(space, {})]
  return lines
