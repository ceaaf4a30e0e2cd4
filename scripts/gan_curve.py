"""Validation curve of a GAN training run: realism figures of its checkpoints, against steps and hours.

For each training checkpoint of `--run` (a `jaxcxr train gan` folder) at a multiple of
`--every` steps, the EMA generator is joined to the upsampler of `--upsampler` (a cascade
generator folder, e.g. `checkpoints/gan_256`), so the figures are those of the 256x256
images a user gets. It generates one normal image per normal validation image with sex and
age (standard patient split of both NIH archives), conditioned on that image's sex and age,
and computes `realism.realism_report` against the validation normals (set A), with as
many training normals as the real-vs-real reference (set B) and the remaining training
normals as the PCA space. Validation patients only: the test patients stay unseen.

One JSON line per checkpoint goes to `RUN/curve.jsonl` (step, training hours, figures), or with
`--upsampler` to `RUN/curve_<name>.jsonl`, named after the cascade folder or the upsampler's run;
`--watch` keeps polling for new checkpoints (for a run that is still training); `--plot PNG`
draws the curve file (each figure against steps, with real vs real and the targets).

    python scripts/gan_curve.py --run runs/gan_v3_base --upsampler checkpoints/gan_256 --every 2000 --watch
    python scripts/gan_curve.py --run training_state/gan_v3_base128 --preset gan_128_resize_cpu \
        --upsampler training_state/upsampler_x2/upsampler --every 200 --plot curve.png
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import jax
import numpy as np
from flax import nnx

from jaxcxr import checkpoints, config as config_lib, data, io as io_lib, plots, quality
from jaxcxr import realism
from jaxcxr.models import condition as condition_lib
from jaxcxr.models.generator import Generator, load_generator, make_cascade
from jaxcxr.models.upsampler import load_upsampler
from jaxcxr.train import gan


def _real_sets(paths: str):
  dataset = data.load(paths)
  split = data.standard_split(dataset)
  usable = lambda d: d.subset((d.label == 0) & np.isin(d.sex, ["M", "F"]) & (d.age >= 0))
  val = usable(dataset.subset(split["val"]))
  train = usable(dataset.subset(split["train"]))
  return val, train


def _figures(report: dict) -> dict:
  return {"pixels_auc": report["two_sample_auc_pixels"]["generated_vs_real"],
          "hog_auc": report["two_sample_auc_hog"]["generated_vs_real"],
          "detail_auc": report["two_sample_auc_detail"]["generated_vs_real"],
          "pca_frechet_ratio": report["pca_frechet"]["ratio"],
          "high_frequency_ratio": report["high_frequency_share"]["ratio"],
          "real_vs_real": {"pixels_auc": report["two_sample_auc_pixels"]["real_vs_real"],
                           "hog_auc": report["two_sample_auc_hog"]["real_vs_real"],
                           "detail_auc": report["two_sample_auc_detail"]["real_vs_real"],
                           "high_frequency_ratio": report["high_frequency_share"]["real_vs_real_ratio"]},
          "n_per_set": report["n_per_set"]}


def evaluate_step(run: pathlib.Path, step: int, config, upsampler, val, train, *, seed: int = 0) -> dict:
  manager = checkpoints.TrainCheckpointer(run / "checkpoints")
  abstract = jax.eval_shape(lambda: gan.init_train_state(config, seed))
  state = manager.restore(abstract, step)
  seconds = manager.read_metadata(step).get("train_seconds")
  base = nnx.merge(nnx.graphdef(nnx.eval_shape(lambda: Generator(config.generator, rngs=nnx.Rngs(0)))),
                   state["g_ema"])
  generator = make_cascade(base, upsampler) if upsampler is not None else base
  return {"step": step, "train_hours": None if seconds is None else seconds / 3600,
          **generator_figures(generator, val, train, seed=seed)}


def generator_figures(generator, val, train, *, seed: int = 0) -> dict:
  """The curve's figures of one generator: one sample per validation normal, against them."""
  cond = condition_lib.make_condition(val.sex, val.age, val.label, conditions=generator.config.conditions)
  generated = quality.generate_from_conditions(generator, jax.random.key(seed), cond)
  n = len(val)
  real_a = data.resize_uint8(val.images, generator.config.resolution)
  real_b = data.resize_uint8(train.images[:n], generator.config.resolution)
  return {**_figures(realism.realism_report(generated, real_a, real_b, train.images[n:], seed=seed)),
          "mid_grey_spike": mid_grey_spike(generated), "mid_grey_spike_real": mid_grey_spike(real_a)}


def mid_grey_spike(images: np.ndarray) -> float:
  """How far the histogram peaks at mid-grey (uint8 127 and 128) above its neighbours (119-126, 129-136): 1 = no peak.

  DiffAugment's cutout fills a square with 0 in [-1, 1], mid-grey; a GAN that learns to draw
  cutout paints flat blobs of that value, a narrow spike that real films' smooth histograms
  lack (about 1). The two-sample tests above average it away.
  """
  counts = np.bincount(np.asarray(images, np.uint8).ravel(), minlength=256).astype(np.float64)
  neighbours = np.concatenate([counts[119:127], counts[129:137]]).mean()
  return float(counts[127:129].mean() / max(neighbours, 1.0))


# The curve's figures, each with issue 25's target: (key, title, target low, target high).
PLOTTED = (("pixels_auc", "two-sample AUC, pixels 64x64", None, 0.65),
           ("hog_auc", "two-sample AUC, HOG 128x128", None, 0.85),
           ("detail_auc", "two-sample AUC, detail histograms", None, 0.75),
           ("pca_frechet_ratio", "PCA(32) Frechet ratio", None, 1.3),
           ("high_frequency_ratio", "high-frequency power ratio", 0.9, 1.1),
           ("mid_grey_spike", "mid-grey histogram spike (cutout leak)", None, None))


def plot_curve(records: list[dict], path: pathlib.Path, title: str) -> pathlib.Path:
  """One panel per figure against training steps (top axis: training hours), real vs real dotted, targets shaded."""
  records = sorted(records, key=lambda r: r["step"])
  steps = [r["step"] for r in records]
  fig, axes = plots._new_figure(4.0 * len(PLOTTED), 3.4, len(PLOTTED))  # pylint: disable=protected-access
  for ax, (key, name, low, high) in zip(axes, PLOTTED):
    kept = [r for r in records if key in r]          # records written before a figure was added lack it
    ax.plot([r["step"] for r in kept], [r[key] for r in kept], "o-", label="generated vs real")
    reference = [r["real_vs_real"].get(key) for r in records]
    if key == "pca_frechet_ratio":
      reference = [1.0] * len(records)
    if key == "mid_grey_spike":
      reference = [r.get("mid_grey_spike_real") for r in records]
    if all(v is not None for v in reference):
      ax.plot(steps, reference, ":", color="grey", label="real vs real")
    bottom, top = ax.get_ylim()
    if high is not None:
      ax.axhspan(bottom if low is None else low, high, color="tab:green", alpha=0.12, label="target")
    ax.set(title=name, xlabel="training step")
    hours = [r.get("train_hours") for r in records]
    if len(records) > 1 and all(h is not None for h in hours):
      top_axis = ax.secondary_xaxis("top", functions=(lambda s: np.interp(s, steps, hours),
                                                      lambda h: np.interp(h, hours, steps)))
      top_axis.set_xlabel("training hours")
  axes[0].legend(fontsize=7)
  fig.suptitle(title, fontsize=10)
  return plots.save_figure(fig, path)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", required=True, help="a `jaxcxr train gan` run folder")
  parser.add_argument("--preset", default="gan_64_resize_cpu", help="the run's preset")
  parser.add_argument("--upsampler", help="the stage that finishes the images: a cascade generator folder (its "
                      "upsampler) or an upsampler checkpoint (`train upsampler`'s OUT/upsampler)")
  parser.add_argument("--curve", help="the JSON-lines file of the curve (default RUN/curve.jsonl, with --upsampler "
                      "RUN/curve_<the upsampler folder's parent name>.jsonl)")
  parser.add_argument("--data", default=",".join(str(pathlib.Path(os.environ.get("JAXCXR_DATA", "data")) / f)
                                                  for f in ("nih_cxr14_subset_256.npz", "nih_cxr14_extra_256.npz")))
  parser.add_argument("--every", type=int, default=2000, help="evaluate checkpoints at multiples of this step")
  parser.add_argument("--watch", action="store_true", help="keep polling for new checkpoints")
  parser.add_argument("--plot", help="PNG of the curve file, drawn after the evaluations (with --watch: after each)")
  args = parser.parse_args()
  run = pathlib.Path(args.run)
  config = config_lib.PRESETS[args.preset]()
  upsampler = None
  curve_path = run / "curve.jsonl"
  if args.upsampler:
    stage = pathlib.Path(args.upsampler).resolve()
    if (stage / "generator").is_dir():       # a cascade folder: named after itself
      upsampler, name = load_generator(stage / "generator").upsampler, stage.name
    else:                                    # RUN/upsampler of `train upsampler`: named after its run
      upsampler, name = load_upsampler(stage), stage.parent.name
    curve_path = run / f"curve_{name}.jsonl"
  if args.curve:
    curve_path = pathlib.Path(args.curve)
  val, train = _real_sets(args.data)
  while True:
    done = {r["step"] for r in io_lib.read_json_lines(curve_path)} if curve_path.exists() else set()
    steps = checkpoints.TrainCheckpointer(run / "checkpoints").all_steps()
    todo = [s for s in steps if s % args.every == 0 and s not in done]
    for step in todo:
      record = evaluate_step(run, step, config, upsampler, val, train)
      io_lib.append_json_line(curve_path, record)
      print(json.dumps(record), flush=True)
    if args.plot and curve_path.exists():
      stage = f" + {curve_path.stem.removeprefix('curve_')}" if args.upsampler else ""
      plot_curve(io_lib.read_json_lines(curve_path), pathlib.Path(args.plot), f"{run.name}{stage}: validation normals")
    if not args.watch:
      break
    time.sleep(60)


if __name__ == "__main__":
  main()
