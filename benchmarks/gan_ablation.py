"""Generator-design ablation on the CPU: each arm trains for the same wall-clock budget.

    python benchmarks/gan_ablation.py train --arm gan_64_cpu --minutes 12 --out runs/ablation

`train` trains one arm on the development data's train patients (both NIH archives,
`data.standard_split`; abnormal = pneumonia, `data.keep_abnormal_finding`) in slices of
100 steps until the budget is spent; each slice resumes the last and writes the inference
weights (`generator/` and `discriminator/`, or `upsampler/`). With `--snapshot-fraction F`
the weights reached at F of the budget are kept too (the cascade arm: its low-resolution
GAN gets F of the budget, its upsampler, `--arm upsampler_x4_cpu`, the rest).

Arms are presets of `jaxcxr.config`: GAN presets (`gan_64_cpu`, `gan_64_wide_cpu`,
`gan_256_single_cpu`) or the upsampler preset. Run two arms at a time pinned to one
core each (`taskset -c 0 ...`, `taskset -c 1 ...`) so that they get equal compute.
The evaluation of the arms is `jaxcxr evaluate gan` on each assembled generator
(see checkpoints/gan_256/MODEL_CARD.md for the table and the commands).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shutil
import sys
import time

from jaxcxr import config, data

DATA = ("nih_cxr14_subset_256.npz", "nih_cxr14_extra_256.npz")


def development_train(data_dir: str) -> tuple[data.CXRDataset, data.CXRDataset]:
  """(train, validation) images of both NIH archives, abnormal meaning pneumonia."""
  ds = data.load([pathlib.Path(data_dir) / name for name in DATA])
  split = data.standard_split(ds)
  return (data.keep_abnormal_finding(ds.subset(split["train"])),
          data.keep_abnormal_finding(ds.subset(split["val"])))


def train(args):
  preset = config.PRESETS[args.arm]()
  train_ds, val_ds = development_train(args.data_dir)
  out = pathlib.Path(args.out) / args.arm
  big = 10 ** 6 // preset.steps_per_call * preset.steps_per_call
  every = max(preset.steps_per_call, args.slice_steps // preset.steps_per_call * preset.steps_per_call)
  cfg = dataclasses.replace(preset, steps=big, checkpoint_every=every, max_to_keep=1000, sample_every=0)
  start = time.time()
  deadline = start + args.minutes * 60.0
  print(f"{args.arm}: {len(train_ds)} train images, budget {args.minutes} min", file=sys.stderr)
  if isinstance(cfg, config.UpsamplerTrainConfig):
    from jaxcxr.train import upsampler as trainer  # pylint: disable=g-import-not-at-top
    run = lambda c, resume: trainer.train_upsampler(train_ds, c, out, validation=val_ds, resume=resume,
                                                    progress=False)
  else:
    from jaxcxr.train import gan as trainer  # pylint: disable=g-import-not-at-top
    run = lambda c, resume: trainer.train_gan(train_ds, c, out, resume=resume, progress=False)
  # Train in slices of `every` steps until the budget is spent; each slice resumes the last.
  step, snapshot = 0, args.snapshot_fraction is None
  if args.resume:
    from jaxcxr import checkpoints  # pylint: disable=g-import-not-at-top
    with checkpoints.TrainCheckpointer(out / "checkpoints") as ckpt:
      step = ckpt.latest_step() or 0
  first = step
  while time.time() < deadline:
    step += every
    run(dataclasses.replace(cfg, steps=step), step > every or first > 0)
    if not snapshot and time.time() >= start + args.snapshot_fraction * args.minutes * 60.0:
      # The weights at this fraction of the budget (the cascade arm's base, whose upsampler gets the rest).
      target = out / f"at_{args.snapshot_fraction:.2f}"
      for name in ("generator", "discriminator"):
        shutil.copytree(out / name, target / name, dirs_exist_ok=True)
      (target / "budget.json").write_text(json.dumps({"steps": step, "seconds": time.time() - start}))
      snapshot = True
  (out / "budget.json").write_text(json.dumps({"arm": args.arm, "minutes": args.minutes, "steps": step,
                                               "seconds": time.time() - start}))
  print(f"{args.arm}: {step} steps in {time.time() - start:.0f} s", file=sys.stderr)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("command", choices=("train",))
  parser.add_argument("--arm", required=True, choices=sorted(config.PRESETS))
  parser.add_argument("--minutes", type=float, default=12.0)
  parser.add_argument("--out", default="runs/ablation")
  parser.add_argument("--data-dir", default="../shared/data")
  parser.add_argument("--slice-steps", type=int, default=100,
                      help="steps per slice: the budget is checked and the weights written after each")
  parser.add_argument("--resume", action="store_true", help="continue the arm's run folder (a longer budget)")
  parser.add_argument("--snapshot-fraction", type=float,
                      help="also keep the weights reached at this fraction of the budget (out/ARM/at_F/)")
  args = parser.parse_args(argv)
  train(args)


if __name__ == "__main__":
  main()
