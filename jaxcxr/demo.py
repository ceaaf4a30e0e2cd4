"""`jaxcxr demo`: the whole pipeline on the shipped models, written as one self-contained HTML report.

`run_demo` samples K post-filter-valid radiographs of one age-sex group with the cascade
pre-filter, samples them again without it (both samplers chosen by
`jaxcxr.prefilter.choice.resolve_sampler`, as `jaxcxr sample` chooses), and writes
`report.html`: one file, every figure embedded as a base64 PNG data URI, no scripts, no
external files. Its sections (the `id` of each is in `SECTIONS`):

=================  ==========================================================================
id                 what it shows
=================  ==========================================================================
`summary`          the headline (`headline`: the speed-up at the level run) and the run in
                   numbers: group, K, strictness, speed-up, ROC AUC, total time
`samples`          the K kept images beside the bundled real normals (each labelled with its group)
`postfilter`       kept and rejected unfiltered samples: lung masks, Grad-CAM, the five scores
`histograms`       the five scores of unfiltered generated images against the bundled real normals
`prefilter-roc`    the pre-filter's ROC on a fresh sample (log P(valid) of the cascade's base image
                   against the post-filter's verdict) with its chosen threshold, beside the
                   checkpoint's stored test figures
`speed`            generated images per valid one and wall time, with and without the pre-filter
`anomaly`          f-AnoGAN on bundled real normals and pneumonias: input, reconstruction,
                   residual map, score
`timings`          the seconds of every step, and the versions and device
=================  ==========================================================================

The demo runs at the strict post-filter level by default, where the pre-filter pays: about 6%
of generated images pass, so skipping the unpromising latents saves most of the work (the
cascade pre-filter's card predicts 6.2x fewer finished images per valid one). At the standard
level about 80% pass, so no pre-filter can save more than 1/0.8 = 1.25x of the finished images,
and drawing a pool of base images costs time: there the measured ratio is explained by the
headline, not presented as the pre-filter's result.

Only the stored summaries of the cascade pre-filter's validation and test latents ship with
its checkpoint (AUC, thresholds, per-strategy TPR/FPR), not its curves, so the ROC curve is
computed here from `DemoConfig.roc_samples` fresh latents (`Sampler.judge`). The same unfiltered sample gives
the kept/rejected panel and the generated side of the histograms: its uint8 images (what a
user saves) are scored together with the real examples in one post-filter call.

Real examples: `jaxcxr/assets/real_examples.npz` ships 8 normal and 2 pneumonia radiographs
(256x256, uint8) from the NIH ChestX-ray14 dataset, taken from `tests/data/nih_fixture.npz`
by `build_real_examples` (indices `REAL_EXAMPLE_INDICES`), so an installed package has real
images to compare with. NIH places no restriction on their use beyond the attribution
`REAL_EXAMPLES_ATTRIBUTION`, which the report prints.

Defaults (`DemoConfig()`: group 38_44f, K = 8, batch 8, strict) took 38.9 s of wall time in a
fresh process with an empty compilation cache, on one core of the 2-core CPU (a training on the
other), 13.5 s of it compiling the two samplers; sampling the 8 valid images took 1.1 s with
the pre-filter and 3.1 s without it (`python -m benchmarks.run --suite time_to_k_valid`, record
`cold_demo`, benchmarks/results/time_to_k_valid_cpu.jsonl).

Example::

  from jaxcxr import demo
  result = demo.run_demo("jaxcxr_demo", demo.DemoConfig(group="58_64m", n=4), log=print)
  result["speedup"], result["timings"]
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import html
import importlib.resources
import json
import os
import pathlib
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax
import jax
import numpy as np

import jaxcxr
from jaxcxr import anomaly as anomaly_lib
from jaxcxr import batching
from jaxcxr import data as data_lib
from jaxcxr import io as io_lib
from jaxcxr import metrics, pretrained, reports
from jaxcxr.plots import save_figure
from jaxcxr.prefilter import choice
from jaxcxr.scoring import SCORE_NAMES, ScoreResult

# matplotlib (0.75 s of CPU time to import `matplotlib.figure` on the 2-core machine) is imported by the two figure
# functions that use it.

__all__ = ["FEW_PASS", "DemoConfig", "REAL_EXAMPLE_INDICES", "REAL_EXAMPLES_ATTRIBUTION", "REPORT_NAME", "SECTIONS",
           "build_real_examples", "headline", "load_real_examples", "run_demo"]

REPORT_NAME = "report.html"
SECTIONS: dict[str, str] = {
    "summary": "Summary",
    "samples": "Kept images beside real radiographs",
    "postfilter": "Post-filter: kept and rejected samples",
    "histograms": "Score histograms: generated vs real",
    "prefilter-roc": "Pre-filter ROC curve and threshold",
    "speed": "With and without the pre-filter",
    "anomaly": "Anomaly scoring of real radiographs (f-AnoGAN)",
    "timings": "Timings and versions",
}
# Rows of tests/data/nih_fixture.npz bundled as jaxcxr/assets/real_examples.npz: 8 normals (both of
# 38_44f, both of 38_44m, one of each other group), then the 2 pneumonias of 38_44f.
REAL_EXAMPLE_INDICES: tuple[int, ...] = (12, 13, 8, 9, 0, 4, 16, 20, 14, 15)
REAL_EXAMPLES_ATTRIBUTION = (
    "Real radiographs: NIH ChestX-ray14 dataset, data provider NIH Clinical Center "
    "(https://nihcc.app.box.com/v/ChestXray-NIHCC); X. Wang, Y. Peng, L. Lu, Z. Lu, M. Bagheri, R. M. Summers, "
    "\"ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on Weakly-Supervised Classification and "
    "Localization of Common Thorax Diseases\", IEEE CVPR 2017. Resized from 1024x1024 to 256x256.")
_ASSET = "real_examples.npz"
_ARRAYS = ("images", "label", "sex", "age", "patient_id", "view", "source_id")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  """What `run_demo` generates and measures."""

  # Age-sex group of the generated images (`jaxcxr.data.GROUPS`).
  group: str = "38_44f"
  # K: valid images each sampler collects.
  n: int = 8
  # Seed of the latents (the samplers use key(seed), the ROC sample fold_in(key(seed), 1)).
  seed: int = 0
  # Post-filter level: "strict" (few images pass: where the pre-filter pays) or "standard" (most pass: it cannot
  # pay much); the cascade pre-filter has thresholds for both.
  strictness: str = "strict"
  # The cascade pre-filter's threshold strategy (`jaxcxr.prefilter.thresholds.STRATEGIES`).
  strategy: str = "youden"
  # Images per compiled call of the post-filter; small batches compile and finish a round sooner on a CPU.
  batch_size: int = 8
  # Unfiltered latents generated and scored for the ROC curve, the kept/rejected panel and the histograms.
  roc_samples: int = 48
  # Kept and rejected samples shown in the post-filter panel (each).
  examples: int = 4

  def __post_init__(self):
    data_lib.parse_group(self.group)          # DataError naming the groups
    if self.n < 1 or self.batch_size < 1 or self.roc_samples < 2 or self.examples < 1:
      raise ValueError(f"DemoConfig: need n >= 1, batch_size >= 1, roc_samples >= 2, examples >= 1; got n={self.n}, "
                       f"batch_size={self.batch_size}, roc_samples={self.roc_samples}, examples={self.examples}")
    if self.strictness not in ("standard", "strict"):
      raise ValueError(f"DemoConfig: strictness must be 'standard' or 'strict', got {self.strictness!r}")


# ----------------------------------------------------------------------------- bundled real examples


def build_real_examples(fixture: str | os.PathLike, out: str | os.PathLike) -> pathlib.Path:
  """Writes the bundled real examples: rows `REAL_EXAMPLE_INDICES` of the NIH test fixture, compressed npz.

  Args:
    fixture: `tests/data/nih_fixture.npz`.
    out: the npz to write (the shipped one is `jaxcxr/assets/real_examples.npz`).

  Returns:
    The path written (atomically).
  """
  with np.load(fixture, allow_pickle=False) as archive:
    arrays = {k: archive[k][list(REAL_EXAMPLE_INDICES)] for k in _ARRAYS}
  return io_lib.save_npz(out, arrays, compressed=True)


def load_real_examples() -> data_lib.CXRDataset:
  """The bundled real radiographs (8 normals, then 2 pneumonias; see the module docstring) as a `CXRDataset`."""
  with importlib.resources.as_file(importlib.resources.files("jaxcxr") / "assets" / _ASSET) as path:
    return data_lib.load(path)


# ----------------------------------------------------------------------------- the run


class _Steps:
  """Times named steps (`with steps("name"):`), logging each one's seconds."""

  def __init__(self, log: Callable[[str], None]):
    self.log = log
    self.seconds: dict[str, float] = {}

  @contextlib.contextmanager
  def __call__(self, name: str) -> Iterator[None]:
    self.log(f"demo: {name} ...")
    t0 = time.perf_counter()
    yield
    self.seconds[name] = time.perf_counter() - t0
    self.log(f"demo: {name}: {self.seconds[name]:.1f} s")


def _versions() -> dict[str, Any]:
  """Versions of jaxcxr, jax, flax, numpy and python, the platform, the devices and the usable CPU cores."""
  devices = jax.devices()
  return {"jaxcxr": jaxcxr.__version__, "jax": jax.__version__, "flax": flax.__version__, "numpy": np.__version__,
          "python": platform.python_version(), "platform": platform.platform(),
          "device": f"{len(devices)} x {devices[0].platform} ({devices[0].device_kind})", "cpu_cores_usable": batching.usable_cores()}


_SAMPLER_KEYS = ("n_valid", "n_generated", "n_latents_drawn", "n_valid_seen", "n_rounds", "seconds", "valid_rate",
                 "acceptance_rate", "generated_per_valid", "complete", "pool_size", "accept_size")


def _sampler_summary(found: dict[str, Any], compile_seconds: float) -> dict[str, Any]:
  """A sampler's counters and seconds (`jaxcxr.sampling.run_rounds`'s dict less its arrays) plus its compile time."""
  out = {k: found[k] for k in _SAMPLER_KEYS}
  out["compile_seconds"] = compile_seconds
  return out


def run_demo(out_dir: str | os.PathLike, config: DemoConfig = DemoConfig(), *, overwrite: bool = False,
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
  """Runs the pipeline on the shipped models and writes `out_dir/report.html` (see the module docstring).

  Args:
    out_dir: folder for the report (created; other files in it are left alone).
    config: what to generate and measure.
    overwrite: replace an existing `report.html`.
    log: callable(str) for progress lines (default: none). The samplers also print one line
      per round to stderr.

  Returns:
    JSON-ready {"report", "report_bytes", "group", "n", "seed", "strictness", "strategy", "seconds",
    "timings" {step: s}, "counts", "samplers" {"prefiltered", "unfiltered"}, "speedup",
    "prefilter_roc", "anomaly", "versions"}.

  Raises:
    FileExistsError: `out_dir` is a file, or `report.html` exists and overwrite is False.
    jaxcxr.checkpoints.CheckpointError: a shipped model is missing.
  """
  log = log or (lambda message: None)
  out = pathlib.Path(out_dir)
  report_path = out / REPORT_NAME
  if out.exists() and not out.is_dir():
    raise FileExistsError(f"{out}: exists and is not a folder")
  if report_path.exists() and not overwrite:
    raise FileExistsError(f"{report_path}: exists; pass overwrite=True (--overwrite) to replace it")
  t_start = time.perf_counter()
  steps = _Steps(log)
  key = jax.random.key(config.seed)

  with steps("load the shipped models"):
    pre = pretrained.load_pretrained(strictness=config.strictness, batch_size=config.batch_size)
    generator, scorer = pre.generator, pre.scorer
    # The two samplers `jaxcxr sample` would choose: with the generator's cascade pre-filter, and without one.
    prefiltered = choice.resolve_sampler(scorer, generator, config.group, strategy=config.strategy,
                                         prefilter=pre.cascade_prefilter, generator_dir=pre.generator_dir)
    unfiltered = choice.resolve_sampler(scorer, generator, config.group)
    real = load_real_examples()
  with steps("compile the pre-filtered sampler"):
    cascade_compile = prefiltered.warm_up(key)
  with steps(f"sample {config.n} valid images with the pre-filter"):
    kept = prefiltered.sample(key, config.n, progress=True)
  with steps("compile the unfiltered sampler"):
    plain_compile = unfiltered.warm_up(key)
  with steps(f"sample {config.n} valid images without the pre-filter"):
    plain = unfiltered.sample(key, config.n, progress=True)
  with steps(f"generate {config.roc_samples} unfiltered samples and their pre-filter log P(valid)"):
    judged = prefiltered.judge(jax.random.fold_in(key, 1), config.roc_samples)
    roc = {"images": judged["images"], "log_p": judged["score"]}
  with steps("post-filter the unfiltered samples and the real examples (masks, Grad-CAM)"):
    scored = scorer.score(np.concatenate([roc["images"], real.images]), keep_maps=True)
  with steps("f-AnoGAN (load, compile, score) on real normals and pneumonias"):
    anomaly = _fanogan_panel(pre.fanogan, real, config.group, pre.fanogan_dir)
  cas = prefiltered.prefilter
  threshold = prefiltered.threshold
  stored = cas.report.get("levels", {}).get(scorer.strictness_name, {})
  roc_summary = _roc_summary(roc["log_p"], scored.valid[:config.roc_samples], threshold, stored, config.strategy,
                             n_test=cas.report.get("parts", {}).get("test"))
  samplers = {"prefiltered": _sampler_summary(kept, cascade_compile),
              "unfiltered": _sampler_summary(plain, plain_compile)}
  speedup = _speedup(samplers, stored, config.strategy)
  counts = {"kept": int(kept["n_valid"]), "roc_samples": config.roc_samples,
            "roc_valid": int(scored.valid[:config.roc_samples].sum()),
            "real_normals": int((real.label == 0).sum()), "real_pneumonias": int((real.label == 1).sum()),
            "real_normals_valid": int(scored.valid[config.roc_samples:][real.label == 0].sum())}
  result: dict[str, Any] = {
      "report": str(report_path), "group": config.group, "n": config.n, "seed": config.seed,
      "strictness": scorer.strictness_name, "strictness_q": scorer.strictness, "strategy": config.strategy,
      "counts": counts, "samplers": samplers,
      "speedup": speedup, "prefilter_roc": roc_summary,
      "anomaly": {k: v for k, v in anomaly.items() if k != "figure_inputs"}, "versions": _versions()}
  with steps("figures and HTML"):
    page = _render(result, config, kept=kept, real=real, roc=roc, scored=scored, anomaly=anomaly,
                   threshold=threshold, timings=dict(steps.seconds), t_start=t_start)
    io_lib.write_bytes_atomic(report_path, page.encode())
  result.update(timings=steps.seconds, seconds=time.perf_counter() - t_start, report_bytes=report_path.stat().st_size)
  log(f"demo: wrote {report_path} ({result['report_bytes'] / 1e6:.1f} MB) in {result['seconds']:.1f} s")
  return io_lib.to_json_safe(result)


def _roc_summary(log_p: np.ndarray, valid: np.ndarray, threshold: float, stored: dict[str, Any], strategy: str,
                 n_test: int | None) -> dict[str, Any]:
  """The fresh sample's ROC AUC and operating point at the threshold, beside the checkpoint's stored test figures."""
  accepted = log_p >= threshold
  both = 0 < valid.sum() < valid.size
  test = stored.get("strategies", {}).get(strategy, {}).get("test", {})
  return {"n": int(valid.size), "n_valid": int(valid.sum()), "threshold": float(threshold),
          "roc_auc": float(metrics.compute_roc_auc(log_p, valid)) if both else None,
          "tpr": float(accepted[valid].mean()) if valid.any() else None,
          "fpr": float(accepted[~valid].mean()) if (~valid).any() else None,
          "acceptance_rate": float(accepted.mean()),
          "stored_test": {"n": n_test, "roc_auc": stored.get("roc_auc_test"),
                          "roc_auc_ci95": stored.get("roc_auc_test_ci95"), "base_rate": stored.get("base_rate_test"),
                          **{k: test.get(k) for k in ("tpr", "fpr", "precision", "acceptance_rate")}}}


def _speedup(samplers: dict[str, dict[str, Any]], stored: dict[str, Any], strategy: str) -> dict[str, Any]:
  """Measured ratios (unfiltered / pre-filtered) and the checkpoint's prediction, precision / base rate."""
  pre, plain = samplers["prefiltered"], samplers["unfiltered"]
  ratio = lambda a, b: a / b if b else None
  test = stored.get("strategies", {}).get(strategy, {}).get("test", {})
  base_rate = stored.get("base_rate_test")
  return {"generated_per_valid": ratio(plain["generated_per_valid"], pre["generated_per_valid"]),
          "wall_time": ratio(plain["seconds"], pre["seconds"]),
          "wall_time_with_compile": ratio(plain["seconds"] + plain["compile_seconds"],
                                          pre["seconds"] + pre["compile_seconds"]),
          "predicted": ratio(test.get("precision") or 0.0, base_rate) if base_rate else None,
          "limit": ratio(1.0, base_rate) if base_rate else None}


def _fanogan_panel(models, real: data_lib.CXRDataset, group: str, encoder_dir: pathlib.Path) -> dict[str, Any]:
  """f-AnoGAN on 2 real normals (of `group` when bundled) and the 2 pneumonias: scores, reconstructions, residuals.

  `anomaly.fanogan_scores` gives the score, the residual and the reconstruction G(E(x)) at the
  encoder's resolution (a cascade's base image). The test ROC AUCs stored beside the
  encoder (`evaluation*_test.json`, when present) are returned as "stored_test" {"whole image",
  "inside the lungs"}.
  """
  normals = np.flatnonzero(real.label == 0)
  same = normals[real.groups[normals] == data_lib.group_index(group)]
  chosen = np.concatenate([np.concatenate([same, normals[~np.isin(normals, same)]])[:2],
                           np.flatnonzero(real.label == 1)[:2]])
  subset = real.subset(chosen)
  encoder = models[0]
  r = encoder.config.resolution
  out = anomaly_lib.fanogan_scores(*models, subset, batch_size=len(subset), progress=False)
  reconstruction = np.asarray(out.reconstruction, np.float32)
  residual = np.asarray(out.residual, np.float32)
  score = out.score
  groups = [data_lib.group_of(int(a), str(s)) or "?" for a, s in zip(subset.age, subset.sex)]
  stored = {}
  for name, file in (("whole image", "evaluation_test.json"), ("inside the lungs", "evaluation_lungs_test.json")):
    try:   # a figure for the page only: an absent or unreadable file (e.g. one being rewritten) is left out
      entry = json.loads((pathlib.Path(encoder_dir).parent / file).read_text())
    except (OSError, ValueError):
      continue
    stored[name] = {k: entry.get(k) for k in ("n", "roc_auc", "roc_auc_ci95")}
    comparison = entry.get("baselines") or {}
    if comparison.get("strongest") in comparison.get("baselines", {}):
      strongest = comparison["baselines"][comparison["strongest"]]
      stored[name]["baseline"] = {"name": strongest.get("description", comparison["strongest"]),
                                  "roc_auc": strongest["roc_auc"],
                                  "p_value": comparison.get("paired_delong", {}).get("p_value")}
  return {"method": "fanogan", "resolution": r, "stored_test": stored, "scores": [float(s) for s in np.asarray(score)],
          "labels": [int(v) for v in subset.label], "groups": groups,
          "figure_inputs": {"inputs": np.asarray(data_lib.to_signed(data_lib.resize_uint8(subset.images, r))),
                            "reconstructions": reconstruction, "residuals": residual}}


# ----------------------------------------------------------------------------- figures


def _png_uri(path: str | os.PathLike) -> str:
  """A PNG file as a base64 data URI."""
  return "data:image/png;base64," + base64.b64encode(pathlib.Path(path).read_bytes()).decode("ascii")


def _img(path: str | os.PathLike, alt: str, width: str = "100%") -> str:
  """An <img> element embedding a PNG file."""
  return f'<img alt="{html.escape(alt)}" style="width:{width}" src="{_png_uri(path)}">'


def _save_roc_figure(log_p: np.ndarray, valid: np.ndarray, threshold: float, summary: dict[str, Any],
                     path: pathlib.Path, level: str, strategy: str) -> pathlib.Path:
  """The pre-filter's ROC figure: curve and operating points (left), log P(valid) by post-filter verdict (right).

  Left: the ROC of log P(valid) on the fresh sample, its point at the threshold, and the
  checkpoint's stored test point. Right: histograms of log P(valid) of the valid and the
  rejected samples, with the threshold.
  """
  # Deferred (a measured heavy boundary): matplotlib.figure, 1.2 s after `import jaxcxr.demo` (2-core machine,
  # median of 3), imported by the two functions that draw.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top


  fig = Figure(figsize=(10, 4.2), dpi=90, layout="constrained")
  ax_roc, ax_hist = fig.subplots(1, 2)
  stored = summary["stored_test"]
  if summary["roc_auc"] is not None:
    fpr, tpr, _ = metrics.compute_roc_curve(log_p, valid)
    ax_roc.plot(fpr, tpr, color="tab:blue", label=f"fresh sample, n={summary['n']} (AUC {summary['roc_auc']:.3f})")
    ax_roc.plot([summary["fpr"]], [summary["tpr"]], "o", color="tab:red", ms=8,
                label=f"{strategy} threshold {threshold:.2f} here (TPR {summary['tpr']:.2f}, FPR {summary['fpr']:.2f})")
  else:
    ax_roc.text(0.5, 0.5, f"no ROC: all {summary['n']} samples in one class", ha="center", va="center")
  if stored.get("tpr") is not None:
    auc = stored.get("roc_auc")
    ax_roc.plot([stored["fpr"]], [stored["tpr"]], "s", mfc="none", color="k", ms=9,
                label=f"stored test latents (AUC {auc:.3f}): TPR {stored['tpr']:.2f}, FPR {stored['fpr']:.2f}")
  ax_roc.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
  ax_roc.set(xlabel="FPR (invalid images finished)", ylabel="TPR (valid images finished)", xlim=(-0.01, 1.01),
             ylim=(-0.01, 1.01), title=f"ROC of log P(valid) at {level}")
  ax_roc.legend(loc="lower right", fontsize=7)
  finite = log_p[np.isfinite(log_p)]
  # A few latents reach log P of -100 and below; the range stops 10 below the threshold (the rest in the first bin).
  lo = max(float(np.percentile(finite, 5)), threshold - 10.0) - 0.5 if finite.size else threshold - 1.0
  bins = np.linspace(min(lo, threshold - 0.5), max(float(finite.max()) if finite.size else 0.0, threshold) + 0.1, 30)
  groups = [(np.clip(log_p[mask], bins[0], bins[-1]), f"{label} ({int(mask.sum())})", colour)
            for mask, label, colour in ((valid, "post-filter valid", "tab:green"),
                                        (~valid, "post-filter rejected", "tab:red")) if mask.any()]
  ax_hist.hist([g[0] for g in groups], bins=bins, stacked=True, color=[g[2] for g in groups],
               label=[g[1] for g in groups], alpha=0.75)
  ax_hist.axvline(threshold, color="k", linestyle="--", label=f"threshold ({strategy})")
  ax_hist.set(xlabel="predicted log P(valid) from the base image\n(lower values pooled in the first bin)",
              ylabel="samples (stacked)",
              title="left of the line: never upsampled or post-scored")
  ax_hist.legend(fontsize=7)
  return save_figure(fig, path)


def _save_anomaly_figure(panel: dict[str, Any], path: pathlib.Path) -> pathlib.Path:
  """One row per image: input (at the encoder's resolution), reconstruction G(E(x)), residual |x - G(E(x))|."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top


  arrays = panel["figure_inputs"]
  rows = len(panel["scores"])
  vmax = float(np.percentile(arrays["residuals"], 99.5)) or 1.0       # one colour scale for every residual
  fig = Figure(figsize=(7.2, 2.4 * rows), dpi=90, layout="constrained")
  axes = fig.subplots(rows, 3, squeeze=False)
  r = panel["resolution"]
  for i in range(rows):
    name = "pneumonia" if panel["labels"][i] else "normal"
    axes[i, 0].imshow(arrays["inputs"][i], cmap="gray", vmin=-1, vmax=1)
    axes[i, 0].set_title(f"real {name}, {panel['groups'][i]} ({r}x{r} input)", fontsize=8)
    axes[i, 1].imshow(arrays["reconstructions"][i], cmap="gray", vmin=-1, vmax=1)
    axes[i, 1].set_title("reconstruction G(E(x))", fontsize=8)
    image = axes[i, 2].imshow(arrays["residuals"][i], cmap="inferno", vmin=0, vmax=vmax)
    axes[i, 2].set_title(f"residual |x - G(E(x))|; score {panel['scores'][i]:.4f}", fontsize=8)
    for ax in axes[i]:
      ax.axis("off")
  fig.colorbar(image, ax=axes[:, 2].tolist(), fraction=0.05, shrink=0.6)
  return save_figure(fig, path)


def _grid_labels(real: data_lib.CXRDataset, valid: np.ndarray, group: str) -> tuple[np.ndarray, list[str]]:
  """Order of the real normals (same group first) and a label per image: its group, sex and age, post-filter."""
  normals = np.flatnonzero(real.label == 0)
  groups = [data_lib.group_of(int(real.age[i]), str(real.sex[i])) or "?" for i in normals]
  order = np.argsort([g != group for g in groups], kind="stable")
  labels = [f"{groups[j]}, {real.sex[normals[j]]} {real.age[normals[j]]}: "
            f"{'valid' if valid[normals[j]] else 'rejected'}" for j in order]
  return normals[order], labels


def _figures(images: np.ndarray, captions: list[str], prefix: pathlib.Path) -> str:
  """uint8 (N, H, W) images as a captioned 4-column grid of embedded PNGs."""
  figures = []
  for i, (image, caption) in enumerate(zip(images, captions)):
    path = io_lib.save_png(prefix.with_name(f"{prefix.name}_{i}.png"), image)
    figures.append(f"<figure>{_img(path, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
  return f'<div class="grid">{"".join(figures)}</div>'


def _score_cells(scores: dict[str, np.ndarray], i: int) -> str:
  """Table cells of image i's five scores, failing ones marked."""
  return "".join(f'<td class="{"bad" if scores[n][i] <= 0 else "ok"}">{scores[n][i]:+.3f}</td>' for n in SCORE_NAMES)


def _fmt(value: Any, spec: str = ".2f", missing: str = "n/a") -> str:
  """`format(value, spec)`, or `missing` for None."""
  return missing if value is None else format(value, spec)


# ----------------------------------------------------------------------------- HTML


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1340px;
       padding: 16px 24px; color: #1d232a; background: #fff; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #d0d7de; padding-bottom: 4px; margin-top: 1.6em; }
nav a { margin-right: 14px; } .muted { color: #57606a; font-size: 0.92em; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: right; } th { background: #f6f8fa; }
td.l, th.l { text-align: left; } td.ok { color: #116329; } td.bad { color: #cf222e; font-weight: 600; }
.row { display: flex; gap: 20px; align-items: flex-start; } .row > div { flex: 1; min-width: 0; }
.cards { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px; }
.big { font-size: 1.25em; font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(4, 1fr); gap: 4px; }
figure { margin: 0; } figure img { display: block; } figcaption { font-size: 0.8em; color: #57606a; }
.card b { display: block; margin-bottom: 2px; }
"""


def _render(result: dict[str, Any], config: DemoConfig, *, kept, real, roc, scored, anomaly, threshold: float,
            timings: dict[str, float], t_start: float) -> str:
  """The report page: every figure drawn into a temporary folder and embedded as a data URI.

  `timings` are the steps before this one; the page adds its own (drawing the figures) and the
  total since `t_start`, both as of the moment the timings table is written.
  """
  t_figures = time.perf_counter()

  n_roc = config.roc_samples
  level = result["strictness"]
  gen = ScoreResult(scores={k: v[:n_roc] for k, v in scored.scores.items()}, features=scored.features[:n_roc],
                    valid=scored.valid[:n_roc], measures={k: v[:n_roc] for k, v in scored.measures.items()},
                    masks=scored.masks[:n_roc], heatmaps=scored.heatmaps[:n_roc])
  real_scores = {k: v[n_roc:] for k, v in scored.scores.items()}
  real_valid = scored.valid[n_roc:]
  accepted = roc["log_p"] >= threshold
  sections: dict[str, str] = {}
  with tempfile.TemporaryDirectory(prefix="jaxcxr_demo_") as tmp:
    tmp = pathlib.Path(tmp)
    # -- samples
    kept_labels = [f"latent #{int(i)}" for i in kept["index"]]
    kept_html = (_figures(kept["images"], kept_labels, tmp / "kept") if kept["n_valid"] else
                 "<p>No valid image within the generation limit.</p>")
    order, real_labels = _grid_labels(real, real_valid, config.group)
    n_same = sum(label.startswith(config.group) for label in real_labels)
    sections["samples"] = (
        f'<div class="row"><div><h3>Generated: {kept["n_valid"]} valid {config.group} images (pre- and post-filtered)'
        f'</h3>{kept_html}<p class="muted">Labels: latent index. Each image passed the cascade pre-filter and all five '
        f'post-filter scores at <b>{level}</b>.</p></div>'
        f'<div><h3>Real normals (bundled NIH examples, {n_same} of group {config.group})</h3>'
        f'{_figures(real.images[order], real_labels, tmp / "real")}'
        f'<p class="muted">Labels: the image\'s own age-sex group, '
        f'sex and age, and the post-filter\'s verdict at {level}. Only {n_same} bundled normal(s) belong to '
        f'{config.group}; the others come from other groups and are labelled so.</p></div></div>'
        f'<p class="muted">{html.escape(REAL_EXAMPLES_ATTRIBUTION)}</p>')
    # -- post-filter examples
    cards = []
    shown = ([(int(i), "kept") for i in np.flatnonzero(gen.valid)[:config.examples]]
             + [(int(i), "rejected") for i in np.flatnonzero(~gen.valid)[:config.examples]])
    header = "".join(f"<th>{n.removeprefix('score_')}</th>" for n in SCORE_NAMES)
    for k, (i, verdict) in enumerate(shown):
      failing = [n.removeprefix("score_") for n in SCORE_NAMES if gen.scores[n][i] <= 0]
      title = f"sample #{i}: {verdict}" + (f" (fails {', '.join(failing)})" if failing else "")
      # pylint: disable-next=protected-access
      reports._save_examples(roc["images"], gen, [(i, "")], tmp / f"example_{k}.png")
      pre_verdict = "finished" if accepted[i] else "skipped"
      cards.append(f'<div class="card"><b class="{"ok" if verdict == "kept" else "bad"}">{html.escape(title)}</b>'
                   f'{_img(tmp / f"example_{k}.png", title)}'
                   f'<table><tr>{header}<th>pre-filter log P</th></tr><tr>{_score_cells(gen.scores, i)}'
                   f'<td>{roc["log_p"][i]:.2f} ({pre_verdict})</td></tr></table></div>')
    sections["postfilter"] = (
        f"<p>{n_roc} unfiltered {config.group} samples (latents of a second key) went through the post-filter: "
        f"<b>{int(gen.valid.sum())} valid</b> ({gen.valid.mean():.0%}). The first {config.examples} kept and rejected "
        "ones: the image, the U-Net's lungs (patient's right lung red, left blue) and the abnormal classifier's "
        "Grad-CAM map. Scores are calibrated so that > 0 passes (red: fails); valid = all five > 0. The last column "
        "is the cascade pre-filter's prediction from the base image and whether it would have finished the "
        f"image (threshold {threshold:.2f}).</p>"
        f'<div class="cards">{"".join(cards) or "<p>no samples</p>"}</div>')
    # -- histograms
    normal, pneumonia = real.label == 0, real.label == 1
    # Real normals against generated images; 2 pneumonias make no density (they are in the table below).
    no_abnormal = {k: v[:0] for k, v in real_scores.items()}
    reports._save_histograms({k: v[normal] for k, v in real_scores.items()},  # pylint: disable=protected-access
                             no_abnormal, gen.scores, tmp / "histograms.png")
    pass_rows = "".join(
        f"<tr><td class='l'>{name}</td><td>{len(next(iter(s.values())))}</td>"
        + "".join(f"<td>{np.mean(s[n] > 0):.0%}</td>" for n in SCORE_NAMES) + f"<td>{np.mean(v):.0%}</td></tr>"
        for name, s, v in (("generated (unfiltered)", gen.scores, gen.valid),
                           ("real normals (bundled)", {k: v[normal] for k, v in real_scores.items()},
                            real_valid[normal]),
                           ("real pneumonias (bundled)", {k: v[pneumonia] for k, v in real_scores.items()},
                            real_valid[pneumonia])))
    sections["histograms"] = (
        f'{_img(tmp / "histograms.png", "score histograms")}'
        f"<p class='muted'>Densities of each score; the dashed line is the pass mark 0. Generated: the {n_roc} "
        f"unfiltered samples above. Real: the {int(normal.sum())} bundled normals (so few that their curve is "
        "only a rough guide), scored by the same post-filter. "
        "The scores' thresholds were calibrated on the real normal training images: at "
        f"{level} a fraction q = {result['strictness_q']:.3g} of them fails each score.</p>"
        f"<table><tr><th class='l'>images</th><th>n</th>{header}<th>valid</th></tr>{pass_rows}</table>"
        "<p class='muted'>Columns: fraction with that score > 0.</p>")
    # -- pre-filter ROC
    summary = result["prefilter_roc"]
    stored = summary["stored_test"]
    _save_roc_figure(roc["log_p"], gen.valid, threshold, summary, tmp / "roc.png", level, config.strategy)
    ci = stored.get("roc_auc_ci95") or [None, None]
    sections["prefilter-roc"] = (
        f'{_img(tmp / "roc.png", "pre-filter ROC curve", "80%")}'
        "<p>The cascade pre-filter (<code>checkpoints/cascade_prefilter_gan_256</code>) predicts the post-filter's "
        "measures from the generator's cheap base image and turns them into log P(valid); a latent whose "
        f"value clears the <b>{config.strategy}</b> threshold ({threshold:.3f} at {level}, chosen on validation "
        "latents) is upsampled and post-scored, the others are dropped. The checkpoint stores only summaries of its "
        f"validation and test latents, so the curve is computed here from the {summary['n']} fresh samples above "
        "(their post-filter verdict is the truth).</p>"
        "<table><tr><th class='l'></th><th>n</th><th>valid rate</th><th>ROC AUC</th><th>TPR</th><th>FPR</th>"
        "<th>acceptance</th></tr>"
        f"<tr><td class='l'>fresh sample ({config.group})</td><td>{summary['n']}</td>"
        f"<td>{summary['n_valid'] / summary['n']:.2f}</td><td>{_fmt(summary['roc_auc'], '.3f')}</td>"
        f"<td>{_fmt(summary['tpr'])}</td><td>{_fmt(summary['fpr'])}</td><td>{summary['acceptance_rate']:.2f}</td></tr>"
        f"<tr><td class='l'>stored test latents (all groups)</td><td>{_fmt(stored.get('n'), ',')}</td>"
        f"<td>{_fmt(stored.get('base_rate'))}</td><td>{_fmt(stored.get('roc_auc'), '.3f')} "
        f"[{_fmt(ci[0], '.3f')}, {_fmt(ci[1], '.3f')}]</td><td>{_fmt(stored.get('tpr'))}</td>"
        f"<td>{_fmt(stored.get('fpr'))}</td><td>{_fmt(stored.get('acceptance_rate'))}</td></tr></table>")
    # -- speed
    sections["speed"] = _speed_section(result, config)
    # -- anomaly
    _save_anomaly_figure(anomaly, tmp / "anomaly.png")
    rows = "".join(f"<tr><td class='l'>{'pneumonia' if lab else 'normal'}</td><td class='l'>{g}</td><td>{s:.4f}</td>"
                   "</tr>" for lab, g, s in zip(anomaly["labels"], anomaly["groups"], anomaly["scores"]))
    sections["anomaly"] = (
        f'<div class="row"><div>{_img(tmp / "anomaly.png", "f-AnoGAN inputs, reconstructions and residuals")}</div>'
        "<div><p>f-AnoGAN (Schlegl et al. 2019; <code>checkpoints/fanogan_256</code>): an encoder maps a real "
        "radiograph to a latent of the normal-only GAN (<code>gan_256_normal</code>, conditioned on the patient's "
        f"sex and age); the GAN's {anomaly['resolution']}x{anomaly['resolution']} base image of that latent is the "
        "reconstruction. The anomaly score is the izi_f loss: mean squared residual plus the discriminator-feature "
        "residual (higher = less like the normal training images). Residuals share one colour scale.</p>"
        f"<table><tr><th class='l'>label</th><th class='l'>group</th><th>score</th></tr>{rows}</table>"
        f"<p class='muted'>Four images cannot measure a method. {_stored_auc_text(anomaly['stored_test'])}</p>"
        "</div></div>")
  # -- timings (the page's own step is timed up to here)
  timings = {**timings, "figures and HTML": time.perf_counter() - t_figures}
  sections["timings"] = _timings_section(timings, result["versions"], time.perf_counter() - t_start)
  sections["summary"] = _summary_section(result, config, time.perf_counter() - t_start)
  return _page(result, config, sections)


def _stored_auc_text(stored: dict[str, Any]) -> str:
  """A sentence with the f-AnoGAN checkpoint's stored test ROC AUCs (or how to measure them)."""
  if not stored:
    return "Measure it on labelled data with <code>jaxcxr evaluate anomaly --method fanogan</code>."
  parts = [f"{name} {_fmt(v['roc_auc'], '.3f')} [{_fmt((v['roc_auc_ci95'] or [None])[0], '.3f')}, "
           f"{_fmt((v['roc_auc_ci95'] or [None, None])[1], '.3f')}] (n={v['n']})"
           + (f", beside its strongest trivial baseline on the same images, {v['baseline']['name']}: "
              f"{_fmt(v['baseline']['roc_auc'], '.3f')} (paired DeLong p = {_fmt(v['baseline']['p_value'], '.2g')})"
              if v.get("baseline") else "") for name, v in stored.items()]
  return ("Stored with the checkpoint, normal vs pneumonia on held-out NIH patients, test ROC AUC: "
          + "; ".join(parts) + " (<code>jaxcxr evaluate anomaly --method fanogan [--lung-mask]</code>).")


def _speed_section(result: dict[str, Any], config: DemoConfig) -> str:
  """The `speed` section: both samplers' counts and times, the measured and the predicted speed-up."""
  s, sp = result["samplers"], result["speedup"]
  rows = ""
  for name, title in (("prefiltered", "cascade pre-filter + post-filter"), ("unfiltered", "post-filter only")):
    r = s[name]
    rows += (f"<tr><td class='l'>{title}</td><td>{r['n_valid']}{'' if r['complete'] else ' (limit hit)'}</td>"
             f"<td>{r['n_latents_drawn']}</td><td>{r['n_generated']}</td><td>{r['n_rounds']}</td>"
             f"<td>{r['generated_per_valid']:.2f}</td><td>{r['seconds']:.2f}</td><td>{r['compile_seconds']:.1f}</td>"
             f"</tr>")
  return (
      f"<p>Both samplers collected K = {config.n} valid {config.group} images from the same latent key "
      f"({result['strictness']} post-filter, batch {config.batch_size}), one after the other in this run on this "
      "device. <i>Generated</i> counts images finished (upsampled and post-scored); the pre-filtered sampler also "
      "made a cheap base image for every latent drawn, which its wall time includes.</p>"
      "<table><tr><th class='l'>sampler</th><th>valid kept</th><th>latents drawn</th><th>generated</th>"
      "<th>rounds</th><th>generated per valid</th><th>wall time (s)</th><th>compile + first round (s)</th></tr>"
      f"{rows}</table>"
      f"<p class='big'>{html.escape(headline(result))}</p>"
      f"<p class='muted'>Speed-up with compilation: {_fmt(sp['wall_time_with_compile'])}x. Predicted from the "
      f"checkpoint's test latents (precision / base rate at {result['strictness']}, {result['strategy']}): "
      f"{_fmt(sp['predicted'])}x; no pre-filter can beat 1 / base rate = {_fmt(sp['limit'])}x here. With "
      f"K = {config.n} the ratios are noisy (rounds of {config.batch_size} images: {s['unfiltered']['n_rounds']} "
      f"without the pre-filter, {s['prefiltered']['n_rounds']} with it).</p>")


# Below this stored base rate (the fraction of generated images valid at the level run) the measured ratios are the
# pre-filter's result; at or above it (standard: about 0.8) no pre-filter can save more than 1 / base rate of the
# finished images, and the pool's base images cost time, so the ratios are explained instead.
FEW_PASS = 0.5


def headline(result: dict[str, Any]) -> str:
  """The demo's result in a sentence or two (plain text): the pre-filter's speed-up at the level run.

  Where few generated images pass (the cascade pre-filter's stored test base rate below
  `FEW_PASS`, e.g. the strict level) it states the measured ratios. Where most pass (standard)
  it explains them: no pre-filter can save more than 1 / base rate of the finished images there,
  and the pool's base images cost time, so it points to the strict level instead.

  Args:
    result: `run_demo`'s result (its "strictness", "speedup" and "samplers").
  """
  sp, level = result["speedup"], result["strictness"]
  ratios = (f"{_fmt(sp['generated_per_valid'])}x fewer finished images per valid one, wall-time speed-up "
            f"{_fmt(sp['wall_time'])}x")
  base_rate = 1.0 / sp["limit"] if sp.get("limit") else None
  if base_rate is None or base_rate < FEW_PASS:
    passing = "" if base_rate is None else f", where {base_rate:.0%} of generated images pass the post-filter"
    return (f"At the {level} level{passing}, the cascade pre-filter gave {ratios} (predicted from its test "
            f"latents: {_fmt(sp['predicted'])}x fewer finished images per valid one).")
  return (f"At the {level} level {base_rate:.0%} of generated images pass, so no pre-filter can save more than "
          f"1 / {base_rate:.2f} = {sp['limit']:.2f}x of the finished images, and the base images of its pool cost "
          f"time: the measured {ratios} show that ceiling, not what the pre-filter is for. It pays where few images "
          "pass: at the strict level, the demo's default (--strictness strict).")


def _timings_section(timings: dict[str, float], versions: dict[str, Any], total: float) -> str:
  """The `timings` section: seconds per step and the versions."""
  rows = "".join(f"<tr><td class='l'>{html.escape(name)}</td><td>{seconds:.1f}</td></tr>"
                 for name, seconds in timings.items())
  version_rows = "".join(f"<tr><td class='l'>{html.escape(k)}</td><td class='l'>{html.escape(str(v))}</td></tr>"
                         for k, v in versions.items())
  return (f"<div class='row'><div><table><tr><th class='l'>step</th><th>seconds</th></tr>{rows}"
          f"<tr><th class='l'>total (to this page)</th><th>{total:.1f}</th></tr></table>"
          "<p class='muted'>The first call of each jitted function compiles it (or loads it from the compilation "
          "cache); on a CPU compilation is most of the run.</p></div>"
          f"<div><table><tr><th class='l'>component</th><th class='l'>version</th></tr>{version_rows}</table></div>"
          "</div>")


def _summary_section(result: dict[str, Any], config: DemoConfig, total: float) -> str:
  """The `summary` section: the headline, the run in ten numbers and the pipeline in one sentence."""
  s, sp, roc = result["samplers"], result["speedup"], result["prefilter_roc"]
  counts = result["counts"]
  items = [
      ("group", config.group), ("valid images kept (K)", f"{counts['kept']} of {config.n}"),
      ("post-filter level", result["strictness"]), ("seed", config.seed),
      ("generated per valid: with / without pre-filter",
       f"{s['prefiltered']['generated_per_valid']:.2f} / {s['unfiltered']['generated_per_valid']:.2f} "
       f"({_fmt(sp['generated_per_valid'])}x)"),
      ("wall time to K valid: with / without pre-filter",
       f"{s['prefiltered']['seconds']:.2f} s / {s['unfiltered']['seconds']:.2f} s ({_fmt(sp['wall_time'])}x)"),
      ("pre-filter ROC AUC: fresh sample / stored test",
       f"{_fmt(roc['roc_auc'], '.3f')} (n={roc['n']}) / {_fmt(roc['stored_test'].get('roc_auc'), '.3f')}"),
      ("unfiltered samples valid", f"{counts['roc_valid']} of {counts['roc_samples']}"),
      ("bundled real normals valid", f"{counts['real_normals_valid']} of {counts['real_normals']}"),
      ("total time", f"{total:.1f} s on {result['versions']['device']}, "
                     f"{result['versions']['cpu_cores_usable']} usable CPU core(s)"),
  ]
  rows = "".join(f"<tr><td class='l'>{html.escape(k)}</td><td class='l'>{html.escape(str(v))}</td></tr>"
                 for k, v in items)
  return (f"<p class='big'>{html.escape(headline(result))}</p><table>{rows}</table>"
          "<p class='muted'>Pipeline: the conditional GAN <code>gan_256</code> (a low-resolution GAN and a learned "
          "upsampler) generates; the cascade pre-filter judges each latent by its base image and only the "
          "promising ones are finished; the post-filter (lung U-Net, abnormal classifier with Grad-CAM, five "
          "calibrated scores) keeps an image only when all five scores are > 0.</p>")


def _page(result: dict[str, Any], config: DemoConfig, sections: dict[str, str]) -> str:
  """The whole HTML document: header, navigation and the sections in `SECTIONS` order."""
  nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title in SECTIONS.items())
  body = "".join(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{sections[sid]}</section>'
                 for sid, title in SECTIONS.items())
  when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  level = result["strictness"]
  return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          f"<title>jaxcxr demo: {html.escape(config.group)}</title><style>{_CSS}</style></head><body>"
          f"<h1>jaxcxr demo: synthetic chest X-rays of group {html.escape(config.group)}</h1>"
          f"<p class='muted'>jaxcxr {html.escape(result['versions']['jaxcxr'])}, {when}; "
          f"<code>jaxcxr demo --group {html.escape(config.group)} --n {config.n} --seed {config.seed}"
          f"{'' if level == DemoConfig.strictness else ' --strictness ' + html.escape(level)}"
          f"</code>. Synthetic images for research and teaching, not for diagnosis.</p>"
          f"<nav>{nav}</nav>{body}</body></html>\n")
