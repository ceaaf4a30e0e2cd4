"""Gathers `jaxcxr evaluate gan --json` outputs of several seeds into one file of per-seed figures.

    python scripts/gan_evaluation_seeds.py --checkpoint checkpoints/gan_256 \
        runs/gan_256/evaluation.json runs/gan_256/evaluation_seed1.json runs/gan_256/evaluation_seed2.json \
        --seeds 0,1,2 --out checkpoints/gan_256/evaluation_seeds.json

Each figure is a list in the order of the input files (one seed each): the two-sample AUCs and
the high-frequency ratio with their real-vs-real values, the PCA Fréchet ratio, the sex
agreement with the sex classifier's accuracy on the real images, the two feature-FD ratios,
and, where the outputs have them, the memorisation audit's shares and the diversity ratios.
A model card's three-seed table reads this file.
"""

from __future__ import annotations

import argparse
import json
import pathlib


def _figures(e: dict) -> dict:
  r = e["realism"]
  auc = lambda name: {"generated_vs_real": r[name]["generated_vs_real"], "real_vs_real": r[name]["real_vs_real"]}
  out = {"two_sample_auc_pixels": auc("two_sample_auc_pixels"), "two_sample_auc_hog": auc("two_sample_auc_hog"),
         "two_sample_auc_detail": auc("two_sample_auc_detail"),
         "pca_frechet_ratio": r["pca_frechet"]["ratio"],
         "high_frequency_ratio": {"generated_vs_real": r["high_frequency_share"]["ratio"],
                                  "real_vs_real": r["high_frequency_share"]["real_vs_real_ratio"]},
         "sex_agreement": {"generated": e["sex_classifier_agreement_generated"],
                           "classifier_accuracy_real": e["sex_classifier_accuracy_real"]},
         "fd_classifier_ratio": e["fd_classifier_ratio"], "fd_discriminator_ratio": e["fd_ratio"]}
  if "memorisation" in e:
    m = e["memorisation"]
    out["memorisation_share"] = {space: m[space]["share_below_threshold"] for space in ("pixels", "features")
                                 if space in m}
  if "diversity" in e:
    d = e["diversity"]
    out["diversity"] = {"overall_ratio": d["overall"]["ratio"], "mean_group_ratio": d["mean_group_ratio"],
                        "precision": d["precision_recall"]["generated_vs_real"]["precision"],
                        "recall": d["precision_recall"]["generated_vs_real"]["recall"],
                        "nearest_neighbour_share": d["nearest_neighbour_share"]["generated_vs_real"]}
  return out


def _stack(per_seed: list) -> object:
  """A list of same-shaped nested dicts -> one nested dict of lists."""
  if isinstance(per_seed[0], dict):
    return {k: _stack([p[k] for p in per_seed]) for k in per_seed[0]}
  return per_seed


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("evaluations", nargs="+", help="`evaluate gan --json` outputs, one per seed")
  parser.add_argument("--checkpoint", required=True, help="the evaluated folder, as the command named it")
  parser.add_argument("--seeds", required=True, help="the --seed of each output, comma-separated, in their order")
  parser.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  outputs = [json.loads(pathlib.Path(p).read_text()) for p in args.evaluations]
  seeds = [int(s) for s in args.seeds.split(",")]
  if len(seeds) != len(outputs):
    parser.error(f"{len(outputs)} outputs but {len(seeds)} seeds")
  record = {"command": f"jaxcxr evaluate gan --checkpoint {args.checkpoint} --seed S --json  (S = "
                       f"{', '.join(str(s) for s in seeds)}; the model card names every option)",
            "seeds": seeds, "figures": _stack([_figures(o) for o in outputs])}
  pathlib.Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
  print(args.out)


if __name__ == "__main__":
  main()
