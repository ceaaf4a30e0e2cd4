"""The cascade pre-filter card's sample sheet: per group, cascade-filtered and plain post-filtered valid images.

    python scripts/cascade_prefilter_samples.py --out checkpoints/cascade_prefilter_gan_256/samples.png

Rows are the six age-sex groups; columns 1-6 are the first 6 valid images of
`prefilter.cascade.sample_valid_cascade` (the shipped generator, scorer and cascade pre-filter,
`--strategy`, at `--strictness`), columns 7-12 the first 6 of `sampling.sample_valid` (no
pre-filter), both from the same latent key, so the two sets share the latents the pre-filter
accepts.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from jaxcxr import data, plots, sampling, scoring
from jaxcxr.models import load_generator
from jaxcxr.prefilter import cascade

N = 6


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--generator", default="checkpoints/gan_256/generator")
  parser.add_argument("--prefilter", default="checkpoints/cascade_prefilter_gan_256")
  parser.add_argument("--strictness", default="strict")
  parser.add_argument("--strategy", default="youden")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", required=True, help="PNG to write")
  args = parser.parse_args(argv)
  scorer = scoring.load_scorer().at_strictness(args.strictness)
  generator = load_generator(args.generator)
  prefilter = cascade.load_cascade_prefilter(args.prefilter)
  tiles, labels = [], []
  for group in data.GROUPS:
    key = jax.random.key(args.seed)
    filtered = cascade.sample_valid_cascade(scorer, generator, prefilter, key, N, group, strategy=args.strategy)
    plain = sampling.sample_valid(scorer, generator, key, N, group)
    tiles += list(np.asarray(filtered["images"])) + list(np.asarray(plain["images"]))
    labels += [f"{group} cascade"] + [""] * (N - 1) + ["no pre-filter"] + [""] * (N - 1)
  plots.save_image_grid(np.stack(tiles), args.out, nrow=2 * N, labels=labels)
  print(args.out)


if __name__ == "__main__":
  main()
