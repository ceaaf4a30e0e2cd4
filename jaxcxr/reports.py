"""Reports that people look at rather than read: the post-filter report (figures + JSON + Markdown).

`scoring_report` answers "what does the post-filter keep?": the valid rate of real
normal and abnormal held-out images, the valid rate of generated images per group,
histograms of every score (real vs generated), and example kept and rejected
samples with their lung masks and Grad-CAM maps. `jaxcxr report scoring` runs it.
"""

from __future__ import annotations

import functools
import os
import pathlib
from typing import Any

import jax
import numpy as np
from PIL import Image

from jaxcxr import baselines
from jaxcxr import data as data_lib
from jaxcxr import io as io_lib
from jaxcxr import scoring
from jaxcxr.models.unet import predict_masks
from jaxcxr.plots import save_figure

__all__ = ["save_gradcam_overlays", "save_probe_figure", "save_residual_overlays", "save_segmentation_overlays",
           "scoring_report"]

_LUNG_COLOURS = np.array([[0, 0, 0], [230, 80, 60], [60, 140, 230]], np.float32) / 255.0  # bg, right, left


def _mask_overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """uint8 (h, w) image and label map (H, W) -> float RGB (H, W, 3) with lungs tinted (right red, left blue)."""
  gray = np.asarray(Image.fromarray(image).resize(labels.shape[::-1], Image.BILINEAR), np.float32) / 255.0
  rgb = np.repeat(gray[..., None], 3, axis=-1)
  tint = _LUNG_COLOURS[labels]
  alpha = 0.45 * (labels > 0)[..., None]
  return (1 - alpha) * rgb + alpha * tint


def _save_histograms(real_normal: dict, real_abnormal: dict, generated: dict, path: pathlib.Path) -> None:
  # matplotlib is imported where a figure is drawn, in every function of this file that draws one: matplotlib and
  # pyplot take 1.1 s after `import jaxcxr.reports` (2-core machine, median of 3), which the CLI's report
  # commands pay only when they draw.
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, len(scoring.SCORE_NAMES), figsize=(4 * len(scoring.SCORE_NAMES), 3.2))
  for ax, name in zip(axes, scoring.SCORE_NAMES):
    values = [real_normal[name], real_abnormal[name], generated[name]]
    finite = np.concatenate([v[np.isfinite(v)] for v in values if len(v)])
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (-1.0, 1.0)
    bins = np.linspace(min(lo, 0.0), max(hi, 0.0) + 1e-6, 30)
    for v, label, colour in zip(values, ("real normal", "real abnormal", "generated"),
                                ("tab:green", "tab:red", "tab:blue")):
      if len(v):
        ax.hist(np.clip(v, bins[0], bins[-1]), bins=bins, density=True, histtype="step", lw=1.8, color=colour,
                label=f"{label} ({np.mean(v > 0):.0%} > 0)")
    ax.axvline(0.0, color="k", lw=0.8, ls="--")
    ax.set_title(name)
    ax.legend(fontsize=7)
  fig.tight_layout()
  save_figure(fig, path, dpi=90)
  plt.close(fig)


def _save_examples(images, result: scoring.ScoreResult, picks: list[tuple[int, str]], path: pathlib.Path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  rows = max(1, len(picks))
  fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.6 * rows), squeeze=False)
  for row, (i, title) in enumerate(picks):
    axes[row, 0].imshow(images[i], cmap="gray", vmin=0, vmax=255)
    axes[row, 0].set_title(title, fontsize=7, loc="left")
    axes[row, 1].imshow(_mask_overlay(images[i], result.masks[i]))
    axes[row, 1].set_title("U-Net lungs (right red, left blue)", fontsize=7)
    axes[row, 2].imshow(images[i], cmap="gray", vmin=0, vmax=255,
                        extent=(0, 1, 1, 0))
    axes[row, 2].imshow(result.heatmaps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1, extent=(0, 1, 1, 0))
    axes[row, 2].set_title(f"Grad-CAM (abnormal), max {result.measures['maxheat'][i]:.1f}", fontsize=7)
  for ax in axes.ravel():
    ax.axis("off")
  fig.tight_layout()
  save_figure(fig, path, dpi=90)
  plt.close(fig)


def _failing(result: scoring.ScoreResult, i: int) -> str:
  failed = [name.removeprefix("score_") for name in scoring.SCORE_NAMES if result.scores[name][i] <= 0]
  return "fails " + ", ".join(failed) if failed else "valid"


def _levels(scorer: scoring.Scorer) -> dict[str, float]:
  """The scorer's named strictness levels plus the most lenient q, when it has reference measures."""
  if scorer.reference is None:
    return {scorer.strictness_name: scorer.strictness}
  return {**scorer.levels, f"{scoring.STRICTNESS_RANGE[0]:g} (most lenient)": scoring.STRICTNESS_RANGE[0]}


def non_radiograph_check(scorer: scoring.Scorer, normal_image: np.ndarray, covid_image: np.ndarray | None,
                         path: str | os.PathLike, *, seed: int = 0) -> dict[str, Any]:
  """What the post-filter says about images that are not a usable normal radiograph.

  Scores pure noise, a blank image, `normal_image` flipped left-right (heart on the wrong
  side) and, when given, a COVID-19 radiograph, at every strictness level, and draws them
  with their lung masks and Grad-CAM maps into `path`.

  Returns:
    {name: {"valid_by_level": {level: bool}, "failing": [score names at the scorer's level],
    "scores": {name: float}}}.
  """
  rng = np.random.default_rng(seed)
  images = {"pure noise": rng.integers(0, 256, normal_image.shape, dtype=np.uint8),
            "blank (all black)": np.zeros_like(normal_image),
            "real normal, flipped left-right": np.ascontiguousarray(normal_image[:, ::-1]),
            "real normal": normal_image}
  if covid_image is not None:
    images["COVID-19 radiograph (abnormal)"] = covid_image
  names, stacked = list(images), np.stack(list(images.values()))
  result = scorer.with_config(batch_size=min(scorer.config.batch_size, 8)).score(stacked, keep_maps=True)
  levels = _levels(scorer)
  valid = {level: scorer.valid_at(result.measures, q) for level, q in levels.items()}
  out = {}
  for i, name in enumerate(names):
    out[name] = {"valid_by_level": {level: bool(v[i]) for level, v in valid.items()},
                 "failing": [n for n in scoring.SCORE_NAMES if result.scores[n][i] <= 0],
                 "scores": {n: float(result.scores[n][i]) for n in scoring.SCORE_NAMES}}
  titles = []
  for i, name in enumerate(names):
    valid_at = [level.split(" ")[0] for level, v in out[name]["valid_by_level"].items() if v]
    verdict = f"valid at: {', '.join(valid_at) if valid_at else 'no level (rejected)'}"
    titles.append((i, f"{name}\n{verdict}"))
  _save_examples(stacked, result, titles, pathlib.Path(path))
  return out


def scoring_report(scorer: scoring.Scorer, generator, dataset: data_lib.CXRDataset, out_dir: str | os.PathLike, *,
                   n_per_group: int = 64, split: str = "test", seed: int = 0, examples: int = 4,
                   covid_image: np.ndarray | None = None, progress: bool = False) -> dict[str, Any]:
  """Writes the post-filter report into `out_dir`: report.json, report.md, histograms.png, examples_*.png,
  non_radiographs.png.

  Args:
    scorer: a calibrated `scoring.Scorer` (e.g. `scoring.load_scorer()`).
    generator: the `Generator` whose samples are scored.
    dataset: real radiographs with labels (e.g. the NIH archive).
    out_dir: output folder (created; files are replaced atomically).
    n_per_group: generated samples per age-sex group.
    split: "test" (default; the held-out patients of `data.standard_split`), "val", "train" or "all".
    seed: key of the generated samples.
    examples: kept and rejected generated samples shown (each).
    covid_image: optional uint8 (H, W) COVID-19 radiograph for the non-radiograph check.
    progress: tqdm bars on stderr.

  Returns:
    The report dict (also report.json): real valid rates by label, generated valid rate per
    group, per-score fraction > 0, valid rates at every strictness level, thresholds, what
    the post-filter says about noise, a blank image, a flipped radiograph (and a COVID-19
    radiograph), and the figure paths.
  """
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  real = dataset if split == "all" else dataset.subset(data_lib.standard_split(dataset)[split])
  if real.label is None:
    raise data_lib.DataError(f"{dataset.source or 'dataset'}: the report needs normal/abnormal labels")
  real_result = scorer.score(real.images, progress=progress)
  by_label = {name: real_result.valid[real.label == v] for v, name in ((0, "normal"), (1, "abnormal"))}
  key = jax.random.key(seed)
  per_group, gen_scores, gen_images, gen_results = {}, [], [], []
  for g, group in enumerate(data_lib.GROUPS):
    generated = scorer.generate_and_score(generator, jax.random.fold_in(key, g), n_per_group, group, keep_maps=True,
                                          progress=progress)
    per_group[group] = {"n": n_per_group, "valid_rate": float(generated.result.valid.mean()),
                        "pass_rate": {n: float(np.mean(generated.result.scores[n] > 0)) for n in scoring.SCORE_NAMES}}
    gen_scores.append(generated.result.scores)
    gen_images.append(generated.images)
    gen_results.append(generated.result)
  generated_scores = {n: np.concatenate([s[n] for s in gen_scores]) for n in scoring.SCORE_NAMES}
  pick = lambda mask: {n: real_result.scores[n][mask] for n in scoring.SCORE_NAMES}
  _save_histograms(pick(real.label == 0), pick(real.label == 1), generated_scores, out / "histograms.png")

  images = np.concatenate(gen_images)
  merged = scoring.ScoreResult(
      scores=generated_scores, features=np.concatenate([r.features for r in gen_results]),
      valid=np.concatenate([r.valid for r in gen_results]),
      measures={k: np.concatenate([r.measures[k] for r in gen_results]) for k in gen_results[0].measures},
      masks=np.concatenate([r.masks for r in gen_results]), heatmaps=np.concatenate([r.heatmaps for r in gen_results]))
  group_of = np.repeat(np.asarray(data_lib.GROUPS), n_per_group)
  kept = np.flatnonzero(merged.valid)[:examples]
  rejected = np.flatnonzero(~merged.valid)[:examples]
  _save_examples(images, merged, [(int(i), f"{group_of[i]} #{i % n_per_group}: valid") for i in kept],
                 out / "examples_kept.png")
  _save_examples(images, merged, [(int(i), f"{group_of[i]} #{i % n_per_group}: {_failing(merged, i)}")
                                  for i in rejected], out / "examples_rejected.png")
  postfilter = {}
  for name, features, target in (("generated images, target valid", merged.features, merged.valid),
                                 ("real images, target valid", real_result.features, real_result.valid),
                                 ("real images, target normal (label 0)", real_result.features, real.label == 0)):
    try:
      rows = scoring.fit_symmetry_postfilter(features, target, seed=seed)
    except ValueError as e:  # a class too rare to cross-validate: say so in the report
      postfilter[name] = {"skipped": str(e)}
      continue
    postfilter[name] = {"rows": [{k: v for k, v in r.items() if k != "estimator"} for r in rows],
                        "table": scoring.symmetry_postfilter_table(rows, name)}
  levels = _levels(scorer)
  by_level = {}
  for level, q in levels.items():
    real_valid = scorer.valid_at(real_result.measures, q)
    by_level[level] = {"q": q, "real_normal": float(real_valid[real.label == 0].mean()),
                       "real_abnormal": float(real_valid[real.label == 1].mean()),
                       "generated": float(scorer.valid_at(merged.measures, q).mean())}
  judges = _judges_vs_baselines(scorer, dataset, real, real_result, split)
  normals = np.flatnonzero(real.label == 0)
  sanity = non_radiograph_check(scorer, real.images[normals[0] if normals.size else 0], covid_image,
                                out / "non_radiographs.png", seed=seed)
  report = {
      "split": split,
      "real": {"n": len(real), "valid_rate": float(real_result.valid.mean()),
               "valid_rate_by_label": {k: float(v.mean()) if v.size else None for k, v in by_label.items()},
               "n_by_label": {k: int(v.size) for k, v in by_label.items()},
               "pass_rate": {n: float(np.mean(real_result.scores[n] > 0)) for n in scoring.SCORE_NAMES}},
      "generated": {"n_per_group": n_per_group, "seed": seed, "valid_rate": float(merged.valid.mean()),
                    "groups": per_group,
                    "pass_rate": {n: float(np.mean(generated_scores[n] > 0)) for n in scoring.SCORE_NAMES}},
      "strictness": scorer.strictness_name,
      "strictness_q": scorer.strictness,
      "thresholds": {n: float(getattr(scorer.calibration, n)) for n in scoring.THRESHOLD_NAMES},
      "valid_rate_by_level": by_level,
      "judges_vs_baselines": judges,
      "non_radiographs": sanity,
      "symmetry_postfilter": postfilter,
      "provenance": scorer.provenance,
      "figures": ["histograms.png", "examples_kept.png", "examples_rejected.png", "non_radiographs.png"],
  }
  io_lib.save_json(out / "report.json", report)
  io_lib.write_bytes_atomic(out / "report.md", _markdown(report).encode())
  return report


def _judges_vs_baselines(scorer: scoring.Scorer, dataset: data_lib.CXRDataset, real: data_lib.CXRDataset,
                         real_result: scoring.ScoreResult, split: str) -> dict[str, Any] | None:
  """Each score as a detector of abnormal real images (lower score = more abnormal) beside the trivial baselines.

  The baselines (`jaxcxr.baselines`, with the lungs of the scorer's U-Net) are fitted on the
  standard split's training patients and compared on the report's images by DeLong's paired
  test. None for the splits "train" and "all" (no separate training patients) or when a part
  has fewer than 2 images of a class.
  """
  if split not in ("val", "test"):
    return None
  train = dataset.subset(data_lib.standard_split(dataset)["train"])
  keep_train, keep = np.isin(train.label, (0, 1)), np.isin(real.label, (0, 1))
  train, evaluated = train.subset(keep_train), real.subset(keep)
  if min(np.bincount(train.label.astype(np.int64), minlength=2).min(),
         np.bincount(evaluated.label.astype(np.int64), minlength=2).min()) < 2:
    return None
  masks = functools.partial(predict_masks, scorer.unet)
  fitted = baselines.fit_baselines(train.images, train.label.astype(np.int64), masks=masks(train.images),
                                   patients=train.patient_id)
  base = fitted.scores(evaluated.images, masks(evaluated.images))
  views = data_lib.views(evaluated)
  return {name: baselines.compare_scores(-real_result.scores[name][keep], evaluated.label.astype(np.int64), base,
                                         views=views, descriptions=fitted.descriptions(), method=name)
          for name in scoring.SCORE_NAMES}


def _markdown(r: dict[str, Any]) -> str:
  real, gen = r["real"], r["generated"]
  lines = ["# Post-filter report", "",
           f"Real images ({r['split']} split, {real['n']} images): valid rate {real['valid_rate']:.3f}; "
           + ", ".join(f"{k} {v:.3f} (n={real['n_by_label'][k]})" for k, v in real["valid_rate_by_label"].items()
                       if v is not None) + ".", "",
           f"Generated images ({gen['n_per_group']} per group, seed {gen['seed']}): valid rate {gen['valid_rate']:.3f}.",
           "", "| group | valid rate | " + " | ".join(n.removeprefix("score_") for n in scoring.SCORE_NAMES) + " |",
           "|---|---|" + "---|" * len(scoring.SCORE_NAMES)]
  for group, g in gen["groups"].items():
    lines.append(f"| {group} | {g['valid_rate']:.3f} | "
                 + " | ".join(f"{g['pass_rate'][n]:.2f}" for n in scoring.SCORE_NAMES) + " |")
  lines.append("| real (all labels) | {:.3f} | ".format(real["valid_rate"])
               + " | ".join(f"{real['pass_rate'][n]:.2f}" for n in scoring.SCORE_NAMES) + " |")
  lines += ["", "Score columns: fraction of images with that score > 0.", "",
            f"## Valid rates per strictness level (this report's scores use {r['strictness']})", "",
            "q: the fraction of real normal calibration images that fail each score.", "",
            "| level | q | real normal | real abnormal | generated |", "|---|---|---|---|---|"]
  for level, v in r["valid_rate_by_level"].items():
    lines.append(f"| {level} | {v['q']:.4g} | {v['real_normal']:.3f} | {v['real_abnormal']:.3f} | "
                 f"{v['generated']:.3f} |")
  if r.get("judges_vs_baselines"):
    lines += ["", "## Each score as a detector of abnormal real images, beside the trivial baselines", "",
              "A lower score reads as more abnormal. The baselines (image statistics with the U-Net's lungs, "
              "logistic regression on them and on 32x32 pixels) are fitted on the standard split's training "
              "patients; the strongest on these images is compared by DeLong's paired test.", ""]
    lines += [f"- {name.removeprefix('score_')}: {baselines.format_comparison(c)}"
              for name, c in r["judges_vs_baselines"].items()]
  lines += ["", "## Images that are not a usable normal radiograph", "",
            "| image | " + " | ".join(next(iter(r["non_radiographs"].values()))["valid_by_level"]) + " | fails |",
            "|---|" + "---|" * (len(next(iter(r["non_radiographs"].values()))["valid_by_level"]) + 1)]
  for name, v in r["non_radiographs"].items():
    lines.append(f"| {name} | " + " | ".join("valid" if ok else "rejected" for ok in v["valid_by_level"].values())
                 + f" | {', '.join(n.removeprefix('score_') for n in v['failing']) or '-'} |")
  lines += ["", "![non-radiographs](non_radiographs.png)", ""]
  lines += [
            "## The original post-filter: decision tree / logistic regression on the six symmetry features", ""]
  for name, entry in r["symmetry_postfilter"].items():
    lines += [entry.get("table", f"**{name}**: skipped ({entry.get('skipped')})"), ""]
  lines += [
            "![score histograms](histograms.png)", "", "Kept samples:", "", "![kept](examples_kept.png)", "",
            "Rejected samples:", "", "![rejected](examples_rejected.png)", ""]
  return "\n".join(lines)


def save_residual_overlays(images_uint8: np.ndarray, residual: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                           path: str | os.PathLike, *, per_class: int = 8, title: str = "") -> pathlib.Path:
  """Radiographs beside their anomaly residual maps overlaid in colour: `per_class` normals, then abnormals.

  Each class shows its highest- and lowest-scoring images alternately (so both the method's
  confident calls and its misses are seen), four image/overlay pairs per row.

  Args:
    images_uint8: uint8 (N, H, W) radiographs.
    residual: (N, R, R) residual maps in [0, 2] (|x - reconstruction| in [-1, 1] image space),
      stretched over the image, with one colour scale for all panels (0 to the 99.5th
      percentile of all residuals) and an opacity that grows with the residual.
    labels: (N,) 0 normal / 1 abnormal.
    scores: (N,) anomaly scores (higher = more abnormal).
    path: output PNG.
    per_class: images shown per class.
    title: figure title.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  residual = np.asarray(residual, np.float32)
  vmax = float(np.percentile(residual, 99.5)) or 1.0
  pairs_per_row = 4
  blocks = []
  for label in (0, 1):
    order = np.flatnonzero(labels == label)[np.argsort(-scores[labels == label], kind="stable")]
    chosen = [order[i // 2] if i % 2 == 0 else order[-1 - i // 2] for i in range(min(per_class, len(order)))]
    blocks.append((label, list(dict.fromkeys(int(i) for i in chosen))))
  rows = sum(max(1, -(-len(chosen) // pairs_per_row)) for _, chosen in blocks)
  fig, axes = plt.subplots(rows, 2 * pairs_per_row, figsize=(2 * pairs_per_row * 1.7, rows * 1.9), squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  row = 0
  for label, chosen in blocks:
    name = "abnormal" if label else "normal"
    for k, i in enumerate(chosen):
      r, c = row + k // pairs_per_row, 2 * (k % pairs_per_row)
      h, w = images_uint8[i].shape
      axes[r, c].imshow(images_uint8[i], cmap="gray", vmin=0, vmax=255)
      axes[r, c].set_title(f"{name}, score {scores[i]:.4g}", fontsize=6, loc="left")
      axes[r, c + 1].imshow(images_uint8[i], cmap="gray", vmin=0, vmax=255)
      alpha = np.clip(residual[i] / vmax, 0, 1) * 0.85                 # small residuals stay see-through
      axes[r, c + 1].imshow(residual[i], cmap="inferno", vmin=0, vmax=vmax, alpha=alpha, interpolation="bilinear",
                            extent=(-0.5, w - 0.5, h - 0.5, -0.5))   # the map stretched over the image
      axes[r, c + 1].set_title("residual overlay", fontsize=6, loc="left")
    row += max(1, -(-len(chosen) // pairs_per_row))
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / rows))
  path = pathlib.Path(path)
  save_figure(fig, path, dpi=90)
  plt.close(fig)
  return path


def _save_grid(fig, axes, path: str | os.PathLike, title: str, *, title_space: float) -> pathlib.Path:
  """Hides the axes, adds the title (leaving `title_space` of the height for it), writes the PNG, closes."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  for ax in axes.ravel():
    ax.axis("off")
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout(rect=(0, 0, 1, 1 - (title_space if title else 0.0)))
  path = pathlib.Path(path)
  save_figure(fig, path, dpi=90)
  plt.close(fig)
  return path


def save_segmentation_overlays(images_uint8: np.ndarray, predicted: np.ndarray, target: np.ndarray,
                               dice: np.ndarray, path: str | os.PathLike, *, n: int = 8, title: str = "",
                               names: Any = None) -> pathlib.Path:
  """The `n` images of lowest mean Dice: radiograph, drawn lungs, predicted lungs, one row each.

  Args:
    images_uint8: uint8 (N, H, W) radiographs.
    predicted, target: integer label maps (N, H, W) (0 background, 1 right lung, 2 left lung).
    dice: float (N, 2) per-image Dice of the right and left lung.
    path: output PNG.
    n: rows (the worst n images by mean Dice).
    title: figure title.
    names: optional (N,) image names shown in the row titles (e.g. patient ids).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  dice = np.asarray(dice, np.float64)
  picks = np.argsort(dice.mean(axis=1))[:n]
  rows = max(1, len(picks))
  fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.6 * rows), squeeze=False)
  for row, i in enumerate(picks):
    label = f"{names[i]}: " if names is not None else ""
    axes[row, 0].imshow(images_uint8[i], cmap="gray", vmin=0, vmax=255)
    axes[row, 0].set_title(f"{label}Dice right {dice[i, 0]:.3f}, left {dice[i, 1]:.3f}", fontsize=7, loc="left")
    axes[row, 1].imshow(_mask_overlay(images_uint8[i], np.asarray(target[i], np.int64)))
    axes[row, 1].set_title("drawn lungs (right red, left blue)", fontsize=7)
    axes[row, 2].imshow(_mask_overlay(images_uint8[i], np.asarray(predicted[i], np.int64)))
    axes[row, 2].set_title("U-Net lungs", fontsize=7)
  return _save_grid(fig, axes, path, title, title_space=0.25 / rows)


def save_gradcam_overlays(images_uint8: np.ndarray, heatmaps: np.ndarray, probabilities: np.ndarray,
                          path: str | os.PathLike, *, title: str = "", names: Any = None,
                          columns: int = 4) -> pathlib.Path:
  """A grid of radiographs with their Grad-CAM maps blended over them and the classifier's probability.

  Args:
    images_uint8: uint8 (N, H, W) radiographs.
    heatmaps: float (N, R, R) maps in [0, 1] (`explain.grad_cam(...).heatmap`).
    probabilities: float (N,) the classifier's probability of the explained class.
    path: output PNG.
    title: figure title.
    names: optional (N,) labels shown above each image.
    columns: images per row.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  n = len(images_uint8)
  rows = max(1, -(-n // columns))
  fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows), squeeze=False)
  for i in range(n):
    ax = axes[i // columns, i % columns]
    ax.imshow(images_uint8[i], cmap="gray", vmin=0, vmax=255, extent=(0, 1, 1, 0))
    heat = np.clip(np.asarray(heatmaps[i], np.float32), 0.0, 1.0)
    ax.imshow(heat, cmap="jet", alpha=0.6 * heat, vmin=0, vmax=1, extent=(0, 1, 1, 0))   # cold regions stay grey
    label = f"{names[i]}, " if names is not None else ""
    ax.set_title(f"{label}p = {float(probabilities[i]):.2f}", fontsize=7)
  return _save_grid(fig, axes, path, title, title_space=0.12 / rows)


def save_probe_figure(tasks: dict[str, Any], path: str | os.PathLike, *, title: str = "") -> pathlib.Path:
  """Each task's linear probes beside its trivial baselines: validation ROC AUC with 95% intervals.

  Args:
    tasks: `jaxcxr.encoder_probes.evaluate_encoder`'s result.
    path: output PNG.
    title: figure title.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, len(tasks), figsize=(5.0 * len(tasks), 3.4), squeeze=False)
  for ax, (name, entry) in zip(axes[0], tasks.items()):
    rows = [(f"{k} probe", p["roc_auc"], p["ci95"], "tab:blue") for k, p in entry["probes"].items()]
    rows += [(b["description"], b["roc_auc"], b["roc_auc_ci95"], "tab:gray") for b in entry["baselines"].values()]
    y = np.arange(len(rows))[::-1]
    for yi, (label, auc, ci, colour) in zip(y, rows):
      ax.errorbar(auc, yi, xerr=[[auc - ci[0]], [ci[1] - auc]], fmt="o", color=colour, capsize=3)
      ax.text(ci[1] + 0.01, yi, f"{auc:.3f}", va="center", fontsize=7)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=7)
    ax.axvline(0.5, color="k", lw=0.5, ls=":")
    ax.set_xlim(0.4, 1.05)
    ax.set_xlabel("validation ROC AUC (95% DeLong interval)", fontsize=8)
    ax.set_title(f"{name}: {entry['n_val']} images, {entry['val_positives']} positive", fontsize=9)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  out = save_figure(fig, path, dpi=110)
  plt.close(fig)
  return out
