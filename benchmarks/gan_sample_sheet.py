"""A generator's model-card sample sheet: per age-sex group, 8 latents next to 4 real normal images.

    python benchmarks/gan_sample_sheet.py --checkpoint checkpoints/gan_256 \
        --data ../shared/data/nih_cxr14_subset_256.npz,../shared/data/nih_cxr14_extra_256.npz \
        --out checkpoints/gan_256/samples.png

Rows are the six groups (18_24m .. 58_64f); columns 1-8 are unfiltered samples of the
EMA generator (normal label, latents from `jax.random.key(0)`, the same in every row),
columns 9-12 real normal radiographs of the group from the standard split's training
patients (fewer when the group has fewer), all at the generator's resolution.

`--crops PNG` also writes the full-size view: 4 samples (one per latent, groups 38_44m,
38_44f, 58_64m, 58_64f) above 4 real normal films of the same groups, at the generator's
resolution with no resampling, then the upper right lung of each (half the film's side,
from 1/8 of the height and width) enlarged 2x by pixel repetition: the texture a thumbnail
hides.
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
CROP_GROUPS = ("38_44m", "38_44f", "58_64m", "58_64f")


def lung_crop(image: np.ndarray) -> np.ndarray:
  """The upper right lung field (image left) of a frontal film, enlarged 2x by pixel repetition: (side, side)."""
  side = image.shape[0]
  top, left, size = side // 8, side // 8, side // 2
  return np.repeat(np.repeat(image[top:top + size, left:left + size], 2, axis=0), 2, axis=1)


def save_crops(generator, real: data.CXRDataset, path: str, seed: int) -> None:
  """4 samples over 4 real films at full size, then their lung crops (`lung_crop`), tiled at full size."""
  side = generator.config.resolution
  generated = [sample_images(generator, jax.random.fold_in(jax.random.key(seed), i), 1, group, batch_size=1)[0]
               for i, group in enumerate(CROP_GROUPS)]
  films = [data.resize_uint8(real.select(group=group).images[:1], side)[0] for group in CROP_GROUPS]
  crops = [lung_crop(x) for x in generated + films]
  labels = [f"generated {g}" for g in CROP_GROUPS] + [f"real {g}" for g in CROP_GROUPS]
  labels += ["lung, x2"] + [""] * 3 + ["lung, x2"] + [""] * 3
  plots.save_image_grid(np.stack(generated + films + crops), path, nrow=4, labels=labels)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", required=True, help="folder with generator/")
  parser.add_argument("--data", required=True, help="npz archive(s), comma-separated")
  parser.add_argument("--out", required=True, help="PNG to write")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--crops", help="PNG of the full-size view (4 samples, 4 real films, their lung crops)")
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
  if args.crops:
    save_crops(generator, real, args.crops, args.seed)
    print(args.crops)


if __name__ == "__main__":
  main()
