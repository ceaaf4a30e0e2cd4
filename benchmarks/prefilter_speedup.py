"""Measured speed-up of the latent pre-filter (docs/scores.md), with and without it, in one run on one device.

    python benchmarks/prefilter_speedup.py --latents F.npz --k 64 --groups all --strategy youden --model logreg
        [--checkpoint GEN] [--scoring DIR] [--strictness standard|strict|Q] [--batch-size 32] [--pool-size 1024] [--nudge 3:0.5,3:1.0]
        [--repeats 3] [--data REAL.npz] [--seed 1] [--bf16]
        [--out benchmarks/results/prefilter_speedup_<device>.json]
    python benchmarks/prefilter_speedup.py --tiny      # smoke test: random tiny models, CPU, ~2 minutes

For each group: the group's pre-filter is fitted on the latent dataset (`prefilter.fit_prefilter`:
classifier on its train part, threshold by --strategy on its validation part, precision and
TPR/FPR on its test part), then K valid images are sampled by each variant through
`prefilter.sample_valid_latent` (one compiled round: pool of latents -> classifier -> static-shape
selection -> generate and post-score only the selected ones; the host loop of
`jaxcxr.sampling.run_rounds`):

* `unfiltered`: no pre-filter (every latent accepted: `jaxcxr.sampling`'s unfiltered round of
  --batch-size consecutive latents);
* `prefilter`: the fitted pre-filter;
* `nudged_<steps>x<size>`: the pre-filter after latent nudging (`prefilter.NudgeConfig`:
  each pooled z climbs the classifier's logit on its own norm shell).

All variants of a group sample with the same key (common random numbers), a key other than the
latent dataset's (--seed, default 1; `latents build` defaults to 0), so the pre-filter is measured
on latents it was not fitted on. One JSON line per (group, variant): the warm-up call's seconds,
excluded from the timings ("warmup_seconds"; "compile_seconds" = warm-up minus a mean round when
that call compiled, else 0: variants share one compile across groups, and nudged variants across
step sizes), wall seconds to K valid images (median and min over --repeats,
keys folded per repeat), generated images per valid image (all repeats pooled), valid and
acceptance rates, and diversity of the K images of the first repeat: mean pairwise distance
(`metrics.mean_pairwise_distance`) of 16x16 block means in [0, 1], of the abnormal classifier's
mean-pooled features and of z; with --data, the Fréchet distance (`metrics.frechet_distance`) in
those classifier features to the real normal images of the group. Then one `summary` line per
group: the predicted speed-up (precision_filtered / precision_unfiltered on the test part) next
to the measured ones (generated-per-valid ratio and wall-time ratio), and the physical limit
1 / (the group's valid rate in the latent dataset). --out writes every line to a JSON-lines file.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import flax
import jax
import numpy as np
from flax import nnx

from jaxcxr import checkpoints, data, metrics, prefilter, realism, sampling, scoring
from jaxcxr import io as io_lib
from jaxcxr.prefilter import cascade
from jaxcxr.train import score_predictor
from jaxcxr.models.classifier import predict_pooled_features
from jaxcxr.models.generator import load_generator

BLOCK = 16


def _emit(line: dict, lines: list) -> None:
  line = io_lib.to_json_safe(line)
  lines.append(line)
  print(json.dumps(line), flush=True)


# ----------------------------------------------------------------------------- diversity


def block_means(images: np.ndarray) -> np.ndarray:
  """uint8 (N, S, S) -> float32 (N, 256): 16x16 block means in [0, 1]."""
  n, s = images.shape[:2]
  b = s // BLOCK
  return (images[:, : b * BLOCK, : b * BLOCK].astype(np.float32).reshape(n, BLOCK, b, BLOCK, b)
          .mean(axis=(2, 4)).reshape(n, -1) / 255.0)


def diversity(scorer, found: dict, real: dict | None) -> dict:
  """Diversity of the K images of a run; with real normals, also their Fréchet distances to them.

  `real`: {"features": the group's real normals' classifier features, "images": those images,
  "pca": a `realism.PcaFrechet` fitted on all real normals} or None.
  """
  images, z = found["images"], found["z"]
  if len(images) < 2:
    return {"n": int(len(images))}
  features = predict_pooled_features(scorer.classifier, images)
  out = {"n": int(len(images)),
         "mpd_pixels16": metrics.mean_pairwise_distance(block_means(images)),
         "mpd_classifier": metrics.mean_pairwise_distance(features),
         "mpd_z": metrics.mean_pairwise_distance(z)}
  if real is not None:
    pca = real["pca"].transform(images)
    out["mpd_pca"] = metrics.mean_pairwise_distance(pca)
    if len(real["images"]) >= 2:
      out["fd_classifier_to_real"] = metrics.frechet_distance(features, real["features"])
      out["fd_pca_to_real"] = metrics.frechet_distance(pca, real["pca"].transform(real["images"]))
      out["n_real"] = int(len(real["images"]))
  return out


# ----------------------------------------------------------------------------- set-up


def _tiny_setup(args):
  """Random tiny models (tests/test_scoring.py sizes), a calibration that passes about half of the images
  on the abnormal logit alone, and a latent dataset built on the spot (a CPU smoke test of this script)."""
  from jaxcxr.config import ClassifierConfig, UNetConfig, gan_tiny  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.classifier import Classifier  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.generator import Generator  # pylint: disable=g-import-not-at-top
  from jaxcxr.models.unet import UNet  # pylint: disable=g-import-not-at-top

  unet = UNet(UNetConfig(resolution=32, channels=(4, 8), norm_groups=2), rngs=nnx.Rngs(0))
  classifier = Classifier(ClassifierConfig(resolution=32, stages=(1,), channels=(4,), norm_groups=2),
                          rngs=nnx.Rngs(1))
  generator = Generator(gan_tiny(32).generator, rngs=nnx.Rngs(2))
  config = scoring.ScoringConfig(mask_size=32, dilation=3, atlas_size=8, batch_size=args.batch_size or 8)
  fixture = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "nih_fixture.npz"
  base = scoring.calibrate(unet, classifier, data.load(fixture).images[:20], config)
  probe = base.generate_and_score(generator, jax.random.key(99), 64, "38_44f", keep_images=False)
  calibration = base.calibration._replace(
      shape_min=np.float32(-1.0), symmetry_min=np.float32(-1.0), log_ratio_min=np.float32(-1e3),
      log_ratio_max=np.float32(1e3), maxheat_max=np.float32(1e9),
      abnormal_logit_max=np.float32(np.percentile(probe.result.measures["abnormal_logit"], 20)))
  scorer = scoring.Scorer(unet, classifier, calibration, config)
  records = prefilter.build_latent_dataset(scorer, generator, jax.random.key(0), args.tiny_n_per_group,
                                           generator_id="tiny-random", groups=("38_44f",))
  return scorer, generator, records, "tiny-random", None


def _setup(args):
  if args.tiny:
    return _tiny_setup(args)
  directory = pathlib.Path(args.checkpoint) if args.checkpoint else checkpoints.shipped_checkpoint(
      *checkpoints.SHIPPED_GENERATORS)
  generator = load_generator(directory)
  generator_id = checkpoints.model_id(directory)
  changes = {"batch_size": args.batch_size} if args.batch_size else {}
  if args.bf16:
    changes["dtype"] = "bfloat16"
  scorer = scoring.load_scorer(args.scoring, strictness=args.strictness, **changes)
  records = prefilter.load_latent_dataset(args.latents)
  records = prefilter.records_at_scorer_level(records, scorer)   # labels at the measured level
  if records["generator_id"] != generator_id and not args.allow_generator_mismatch:
    sys.exit(f"prefilter_speedup: {args.latents} was built with generator {records['generator_id']}, but "
             f"{directory} is {generator_id}; rebuild it (`jaxcxr latents build`) or pass "
             "--allow-generator-mismatch")
  real = None
  if args.data:
    dataset = data.load(args.data)
    normals = dataset.images[dataset.label == 0]
    real = {"dataset": dataset, "pca": realism.PcaFrechet(normals, seed=0)}
  return scorer, generator, records, str(directory), real


def _cascade(args, generator, generator_name):
  """The cascade pre-filter of --cascade: None for 'none', a plain generator, or none shipped for it."""
  if args.cascade == "none" or generator.config.upsampler is None:
    return None
  if args.cascade == "shipped":
    if args.tiny:
      return None
    path = cascade.shipped_cascade_prefilter(checkpoints.model_id(generator_name))
    return cascade.load_cascade_prefilter(path) if path is not None else None
  return cascade.load_cascade_prefilter(args.cascade)


def _context(args, scorer, generator, generator_name) -> dict:
  device = jax.devices()[0]
  return {"bench": "prefilter_speedup", "device": device.device_kind, "platform": device.platform,
          "num_devices": jax.device_count(), "jax": jax.__version__, "flax": flax.__version__,
          "python": platform.python_version(), "generator": generator_name,
          "resolution": generator.config.resolution, "dtype": scorer.config.dtype,
          "mask_size": scorer.config.mask_size, "k": args.k, "strategy": args.strategy, "model": args.model,
          "repeats": args.repeats, "seed": args.seed}


def _parse_nudges(text: str) -> list[prefilter.NudgeConfig]:
  if text.strip() in ("", "none"):
    return []
  out = []
  for item in text.split(","):
    steps, size = item.split(":")
    out.append(prefilter.NudgeConfig(steps=int(steps), step_size=float(size)))
  return out


# ----------------------------------------------------------------------------- measurement


def _round_traces() -> int:
  """Compilations so far of the filtered, cascade and unfiltered sampling rounds."""
  return (prefilter.TRACE_COUNTS["filter_generate_and_score"] + sampling.TRACE_COUNTS["generate_and_score_round"]
          + cascade.TRACE_COUNTS["cascade_round"])


def measure(warm_up, sample, key, args) -> dict:
  """Warm-up (compile) then --repeats timed runs to K valid images; generated-per-valid pooled over runs.

  warm_up(key) -> seconds; sample(key, k, max_generated) -> the samplers' result dict.
  """
  traces = _round_traces()
  warmup_seconds = warm_up(key)
  compiled = _round_traces() > traces
  runs = [sample(jax.random.fold_in(key, r), args.k, args.max_generated) for r in range(args.repeats)]
  seconds = [r["seconds"] for r in runs]
  generated, valid_seen = sum(r["n_generated"] for r in runs), sum(r["n_valid_seen"] for r in runs)
  drawn = sum(r["n_latents_drawn"] for r in runs)
  slots = sum(r["n_slots"] for r in runs)
  round_seconds = sum(seconds) / sum(r["n_rounds"] for r in runs)
  return {"first": runs[0], "compiled_in_warmup": compiled, "warmup_seconds": warmup_seconds,
          "compile_seconds": max(warmup_seconds - round_seconds, 0.0) if compiled else 0.0,
          "round_seconds": round_seconds, "seconds_median": statistics.median(seconds),
          "seconds_min": min(seconds), "complete": all(r["complete"] for r in runs),
          "n_generated": generated, "n_slots": slots, "n_valid_seen": valid_seen, "n_latents_drawn": drawn,
          "generated_per_valid": generated / valid_seen if valid_seen else float("inf"),
          "valid_rate": valid_seen / generated if generated else 0.0,
          "acceptance_rate": generated / drawn if drawn else 0.0,
          "images_per_second": generated / sum(seconds) if sum(seconds) else 0.0}


def _strategies(text: str) -> list[str]:
  names = list(prefilter.STRATEGIES) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
  unknown = [n for n in names if n not in prefilter.STRATEGIES]
  if unknown or not names:
    raise SystemExit(f"prefilter_speedup: unknown strategy {unknown}; expected 'all' or some of "
                     f"{', '.join(prefilter.STRATEGIES)}")
  return names


def _cascade_predicted(cas, scorer, generator, records, group: str, strategies) -> dict:
  """Per strategy: the cascade pre-filter's precision on the group's test latents (its own split) over the base
  rate, i.e. its predicted generated-per-valid speed-up, with test TPR and acceptance."""
  member = np.flatnonzero(records["group"] == group)
  test = np.intersect1d(score_predictor.split_indices(records["group"], seed=cas.report.get("split_seed", 0))["test"],
                        member)
  base = score_predictor.base_images(generator, records["z"][test], records["group"][test])
  level = scorer.strictness_name
  log_p = cascade.log_valid_probabilities(cas.predictor, base, scorer.calibration)
  y = np.asarray(records["valid"])[test]
  out = {"n_test": int(test.size), "base_rate_test": float(y.mean()),
         "roc_auc_test": metrics.compute_roc_auc(log_p, y.astype(int)) if 0 < y.sum() < y.size else None}
  for s in strategies:
    accepted = log_p >= cas.threshold(level, s)
    precision = float(y[accepted].mean()) if accepted.any() else 0.0
    out[s] = {"precision": precision, "tpr": float(accepted[y].mean()) if y.any() else None,
              "acceptance": float(accepted.mean()),
              "predicted_speedup": precision / y.mean() if y.mean() > 0 else None}
  return out


def bench_group(group: str, scorer, generator, records, real, cas, args, context, lines) -> None:
  strategies = _strategies(args.strategy)
  fitted = {}
  for s in strategies:
    try:
      fitted[s] = prefilter.fit_prefilter(records, group, s, args.model, seed=args.fit_seed)
    except ValueError as e:
      _emit({**context, "group": group, "variant": f"prefilter_{s}", "skipped": str(e)}, lines)
  accept_size = scorer.config.batch_size
  real_group = None
  if real is not None:
    normal = real["dataset"].images[(real["dataset"].groups == data.group_index(group)) &
                                    (real["dataset"].label == 0)]
    if len(normal) >= 2:
      real_group = {"images": normal, "features": predict_pooled_features(scorer.classifier, normal),
                    "pca": real["pca"]}
  key = jax.random.fold_in(jax.random.key(args.seed), data.group_index(group))
  variants = [("unfiltered", {"kind": "unfiltered", "pool_size": accept_size})]
  for s, pf in fitted.items():
    pool_size, _ = prefilter.default_round_sizes(scorer, pf, args.pool_size, accept_size)
    variants.append((f"prefilter_{s}", {"kind": "latent", "pf": pf, "pool_size": pool_size, "nudge": None}))
  first = strategies[0]
  if first in fitted:
    pool_size, _ = prefilter.default_round_sizes(scorer, fitted[first], args.pool_size, accept_size)
    variants += [(f"nudged_{n.steps}x{n.step_size:g}_{first}", {"kind": "latent", "pf": fitted[first],
                                                                "pool_size": pool_size, "nudge": n})
                 for n in _parse_nudges(args.nudge)]
  if cas is not None:
    for s in strategies:
      pool_size, _ = cascade.default_cascade_round_sizes(scorer, cas, s, args.pool_size, accept_size)
      variants.append((f"cascade_{s}", {"kind": "cascade", "strategy": s, "pool_size": pool_size}))
  results = {}
  for name, v in variants:
    pool = v["pool_size"]
    if v["kind"] == "unfiltered":
      warm_up = lambda k: sampling.warm_up_sampler(scorer, generator, k, group, batch_size=accept_size)
      sample = lambda k, n, limit: sampling.sample_valid(scorer, generator, k, n, group, batch_size=accept_size,
                                                         max_generated=limit)
    elif v["kind"] == "latent":
      options = {"pool_size": pool, "accept_size": accept_size, "nudge": v["nudge"]}
      warm_up = lambda k, v=v, o=options: prefilter.warm_up_latent(scorer, generator, v["pf"], k, group, **o)
      sample = lambda k, n, limit, v=v, o=options: prefilter.sample_valid_latent(
          scorer, generator, v["pf"], k, n, group, max_generated=limit, **o)
    else:
      options = {"strategy": v["strategy"], "pool_size": pool, "accept_size": accept_size}
      warm_up = lambda k, o=options: cascade.warm_up_cascade(scorer, generator, cas, k, group, **o)
      sample = lambda k, n, limit, o=options: cascade.sample_valid_cascade(scorer, generator, cas, k, n, group,
                                                                          max_generated=limit, **o)
    m = measure(warm_up, sample, key, args)
    results[name] = m
    first_run = m.pop("first")
    nudge = v.get("nudge")
    _emit({**context, "group": group, "variant": name, "pool_size": pool, "accept_size": accept_size,
           "nudge_steps": nudge.steps if nudge else 0, "nudge_step_size": nudge.step_size if nudge else 0.0,
           **m, "diversity": diversity(scorer, first_run, real_group)}, lines)
  base = results["unfiltered"]
  summary = {**context, "group": group, "variant": "summary",
             "physical_limit": 1.0 / float(np.mean(records["valid"][records["group"] == group])),
             "dataset_valid_rate": float(np.mean(records["valid"][records["group"] == group])),
             "measured_valid_rate_unfiltered": base["valid_rate"], "latent": {}}
  for s, pf in fitted.items():
    rep = pf.report
    summary["latent"][s] = {"threshold": pf.threshold, "test_roc_auc": rep.get("test_roc_auc"),
                            "test": {k: rep.get("test", {}).get(k) for k in ("tpr", "fpr", "precision")},
                            "predicted_speedup": rep.get("predicted_speedup")}
  if cas is not None:
    summary["cascade"] = _cascade_predicted(cas, scorer, generator, records, group, strategies)
  for name, m in results.items():
    if name == "unfiltered":
      continue
    summary[f"measured_speedup_generated_{name}"] = (base["generated_per_valid"] / m["generated_per_valid"]
                                                     if m["generated_per_valid"] else None)
    summary[f"measured_speedup_time_{name}"] = base["seconds_median"] / m["seconds_median"]
  _emit(summary, lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--latents", help="latent dataset npz (`jaxcxr latents build`) of the generator below")
  parser.add_argument("--k", type=int, default=64, help="valid images per group and run")
  parser.add_argument("--groups", default="all", help="'all' or comma-separated group names")
  parser.add_argument("--strategy", default="youden",
                      help="threshold strategies: comma-separated names or 'all' (one variant each, per pre-filter)")
  parser.add_argument("--cascade", default="shipped",
                      help="cascade pre-filter folder (`jaxcxr.prefilter.cascade`), 'shipped' (the generator's, if "
                           "any) or 'none'")
  parser.add_argument("--model", default="logreg", help="latent classifier preset (logreg, mlp1..mlp4, deep)")
  parser.add_argument("--checkpoint", help="generator checkpoint folder (default: the shipped one)")
  parser.add_argument("--scoring", help="scoring calibration folder (default: the shipped one, checkpoints/scoring_256)")
  parser.add_argument("--strictness", default="standard",
                      help="post-filter level (standard, strict or a fraction Q); the latent records are rescored "
                           "to it from their stored measures")
  parser.add_argument("--batch-size", type=int, default=None, help="images generated per round (default 32)")
  parser.add_argument("--pool-size", type=int, default=None, help="latents per pre-filter round (default: batch x ceil(2 / acceptance), at most 32x)")
  parser.add_argument("--nudge", default="3:0.5,3:1.0",
                      help="nudged variants as STEPS:STEP_SIZE, comma-separated; 'none' to skip")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (keys folded per run)")
  parser.add_argument("--max-generated", type=int, default=200_000, help="give up a run after this many images")
  parser.add_argument("--data", help="real images (npz, or comma-separated npz) for the PCA space (all normals) and "
                                     "the Fréchet distances to each group's normal images")
  parser.add_argument("--seed", type=int, default=1, help="sampling key (use another than the latent dataset's)")
  parser.add_argument("--fit-seed", type=int, default=0, help="seed of the pre-filter's split and fit "
                      "(`jaxcxr latents fit` and `sample --prefilter` use 0 by default)")
  parser.add_argument("--bf16", action="store_true", help="compute in bfloat16")
  parser.add_argument("--allow-generator-mismatch", action="store_true")
  parser.add_argument("--tiny", action="store_true", help="smoke test with random tiny models (no files needed)")
  parser.add_argument("--tiny-n-per-group", type=int, default=256, help="latent dataset size in --tiny mode")
  parser.add_argument("--out", nargs="?", const="auto", default=None,
                      help="also write the JSON lines to this file; without a value to "
                           "benchmarks/results/prefilter_speedup_<device>.json")
  args = parser.parse_args(argv)
  if not args.tiny and not args.latents:
    parser.error("--latents F.npz is required (or --tiny)")
  if args.k < 1 or args.repeats < 1:
    parser.error("--k and --repeats must be >= 1")
  scorer, generator, records, generator_name, real = _setup(args)
  present = [g for g in data.GROUPS if g in set(records["group"].tolist())]
  groups = present if args.groups == "all" else [g.strip() for g in args.groups.split(",")]
  context = _context(args, scorer, generator, generator_name)
  cas = _cascade(args, generator, generator_name)
  context["cascade"] = None if cas is None else cas.generator_id
  print(f"prefilter speed-up on {context['device']}: groups {groups}, K {args.k}, {args.strategy} {args.model}",
        file=sys.stderr)
  lines: list = []
  start = time.perf_counter()
  for group in groups:
    bench_group(group, scorer, generator, records, real, cas, args, context, lines)
  print(f"done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
  if args.out:
    path = pathlib.Path(args.out)
    if args.out == "auto":
      slug = "".join(c if c.isalnum() else "_" for c in context["device"].lower()).strip("_")
      path = pathlib.Path(__file__).resolve().parent / "results" / f"prefilter_speedup_{slug}.json"
    io_lib.save_json_lines(path, lines)
    print(f"wrote {path}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
