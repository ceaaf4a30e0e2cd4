"""A generator's model-card sample sheet: per age-sex group, 8 latents next to 4 real normal images.

    python benchmarks/gan_sample_sheet.py --checkpoint checkpoints/gan_256 \
        --data ../shared/data/nih_cxr14_subset_256.npz,../shared/data/nih_cxr14_extra_256.npz \
        --out checkpoints/gan_256/samples.png

Rows are the six groups (18_24m .. 58_64f); columns 1-8 are unfiltered samples of the
EMA generator (normal label, latents from `jax.random.key(0)`, the same in every row),
columns 9-12 real normal radiographs of the group from the standard split's training
patients (fewer when the group has fewer), all at the generator's resolution.
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import numpy as np

from jaxcxr import data, plots
from jaxcxr.models import load_generator, sample_images

N_GENERATED = 8
N_REAL = 4


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", required=True, help="folder with generator/")
  parser.add_argument("--data", required=True, help="npz archive(s), comma-separated")
  parser.add_argument("--out", required=True, help="PNG to write")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  generator = load_generator(pathlib.Path(args.checkpoint) / "generator")
  side = generator.config.resolution
  real = data.load(args.data)
  real = real.subset(data.standard_split(real)["train"]).select(label=0)
  tiles, labels = [], []
  blank = np.zeros((side, side), np.uint8)
  for group in data.GROUPS:
    generated = sample_images(generator, jax.random.key(args.seed), N_GENERATED, group, batch_size=N_GENERATED)
    of_group = real.select(group=group).images[:N_REAL]
    of_group = data.resize_uint8(of_group, side) if len(of_group) else np.zeros((0, side, side), np.uint8)
    row = list(generated) + list(of_group) + [blank] * (N_REAL - len(of_group))
    tiles += row
    labels += [group] + [""] * (N_GENERATED - 1) + ["real"] + [""] * (N_REAL - 1)
  plots.save_image_grid(np.stack(tiles), args.out, nrow=N_GENERATED + N_REAL, labels=labels)
  print(args.out)


if __name__ == "__main__":
  main()
