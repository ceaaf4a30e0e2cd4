"""The `jaxcxr` command: synthetic chest X-rays, their pre- and post-filters, and anomaly scores.

This module builds the parser of every command and runs one (`main`). Every command prints
human-readable progress to stderr; with `--json` it prints one JSON object on stdout. Bad
input (missing files, wrong shapes, unknown names) ends with one line `jaxcxr: error: ...` on
stderr and exit status 2, never a traceback. The handlers live by command group (`data`,
`train`, `generate`, `postfilter`, `evaluate`, `latents`); each parses its options, calls the
library and formats the result.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

import jaxcxr
from jaxcxr import config as config_lib
from jaxcxr.cli.common import COVID_DATA, EXIT_USAGE, GAN_DATA, Parser, UsageError, emit, log
from jaxcxr.compilation_cache import enable_compilation_cache

__all__ = ["build_parser", "main"]

# `jaxcxr.imaging`'s hash functions (`{name}_hash`) for `data dedup`.
HASH_NAMES = ("average", "difference", "perceptual", "wavelet")
# What `sample`'s shipped pre-filter judges (`jaxcxr.prefilter.choice.PREFILTER_INPUTS`).
PREFILTER_INPUTS = ("auto", "z", "base")
# `jaxcxr train` subcommands -> the family of `jaxcxr.config.FAMILIES` whose presets and help line they take;
# None where the trainer takes no train config (its help line is in `UNCONFIGURED_HELP`).
TRAIN_COMMANDS = {"gan": "gan", "upsampler": "upsampler", "unet": "unet", "classifier": "classifier",
                  "ensemble": None, "encoder-classifier": None, "fanogan": "fanogan", "healthygan": "healthygan",
                  "patchcore": None, "prefilter": None,
                  "cascade-prefilter": "cascade_prefilter", "encoder": "cxr_encoder"}
UNCONFIGURED_HELP = {
    "ensemble": "join trained classifiers of one task into a soft-vote ensemble with a pixel voter (no preset: "
                "it trains no network)",
    "encoder-classifier": "a classifier that is a linear probe on the CXR encoder's pooled stage features, fitted "
                          "on the training patients of the task's split (no preset: the encoder does not change)",
    "patchcore": "a PatchCore memory bank of the CXR encoder's patch features of the pneumonia task's training "
                 "normals (no preset: it trains no network)",
    "prefilter": "a latent pre-filter of one age-sex group, a classifier of z and its threshold (the command "
                 "`latents fit`; --preset names the classifier)",
}


def build_parser() -> argparse.ArgumentParser:
  """The parser of every command. Each command sets `run` to "GROUP:NAME": `jaxcxr.cli.GROUP.HANDLERS[NAME]`."""
  parser = Parser(prog="jaxcxr", description=__doc__.splitlines()[0])
  parser.add_argument("--version", action="version", version=_version())
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  data_parser = commands.add_parser("data", help="dataset tools")
  data_commands = data_parser.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

  stats = data_commands.add_parser("stats", help="counts per group and label; mean/std images per class")
  _add_data_arg(stats)
  stats.add_argument("--out", help="folder for mean/std PNG images per class (not written if omitted)")
  stats.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
  _add_json_arg(stats)
  stats.set_defaults(run="data:stats")

  dedup = data_commands.add_parser("dedup", help="near-duplicate pairs by perceptual hash")
  _add_data_arg(dedup)
  dedup.add_argument("--hash", choices=HASH_NAMES, default="perceptual", help="hash function (default perceptual)")
  dedup.add_argument("--max-distance", type=int, default=5, help="largest Hamming distance of a pair (default 5)")
  _add_json_arg(dedup)
  dedup.set_defaults(run="data:dedup")

  _add_train_parsers(commands)

  cascade = commands.add_parser("cascade", help="join a low-resolution GAN and an upsampler into one generator")
  cascade.add_argument("--gan", required=True, help="GAN folder with generator/ and discriminator/")
  cascade.add_argument("--upsampler", required=True,
                       help="upsampler checkpoint (`train upsampler`'s OUT/upsampler), or 'bilinear'")
  cascade.add_argument("--scale", type=int, default=4, choices=(2, 4), help="scale of 'bilinear' (default 4)")
  cascade.add_argument("--out", required=True, help="folder to write generator/ and discriminator/ into")
  cascade.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
  _add_json_arg(cascade)
  cascade.set_defaults(run="train:cascade")

  evaluate_parser = commands.add_parser("evaluate", help="quality figures of a trained model")
  evaluate_commands = evaluate_parser.add_subparsers(dest="evaluate_command", required=True, metavar="MODEL")
  evaluate_gan = evaluate_commands.add_parser("gan", help="realism figures vs real normals, FD, conditioning probes")
  evaluate_gan.add_argument("--data", help="npz archive(s), comma-separated (default: $JAXCXR_DATA/"
                                           f"{',$JAXCXR_DATA/'.join(GAN_DATA)}); the realism figures use the "
                                           "normal images of the standard split's test and train patients")
  evaluate_gan.add_argument("--checkpoint", help="folder with generator/ and discriminator/ (default: the shipped GAN)")
  evaluate_gan.add_argument("--seed", type=int, default=0)
  evaluate_gan.add_argument("--n-per-group", type=int, default=64, help="generated images per group for the probes")
  evaluate_gan.add_argument("--pairs", help="PNG path for the memorisation audit's 8 closest generated/training pairs")
  evaluate_gan.add_argument("--sex-classifier", help="sex classifier for the conditioning check (default: shipped)")
  evaluate_gan.add_argument("--feature-classifier",
                            help="classifier whose features give a GAN-independent FD (default: shipped abnormal)")
  evaluate_gan.add_argument("--encoder", help="CXR encoder whose embedding gives the memorisation audit's second "
                                             "space (default: the shipped encoder_cxr)")
  evaluate_gan.add_argument("--no-classifiers", action="store_true",
                            help="D features and pixel probes only (no classifier, no encoder space in the audit)")
  _add_json_arg(evaluate_gan)
  evaluate_gan.set_defaults(run="evaluate:gan")

  anomaly_ensemble = evaluate_commands.add_parser(
      "anomaly-ensemble", help="rank-average ensemble of anomaly scores saved by `evaluate anomaly --scores`")
  anomaly_ensemble.add_argument("scores", nargs="+", help="score files (npz) of the same split, one per method")
  _add_json_arg(anomaly_ensemble)
  anomaly_ensemble.set_defaults(run="evaluate:anomaly-ensemble")

  anomaly_cv = evaluate_commands.add_parser(
      "anomaly-cv", help="repeated patient-level cross-validation of f-AnoGAN, HealthyGAN (retrained per fold) or "
                         "PatchCore (memory bank refitted per fold)")
  anomaly_cv.add_argument("--method", choices=("fanogan", "healthygan", "patchcore"), required=True)
  _add_data_arg(anomaly_cv)
  anomaly_cv.add_argument("--out", required=True, help="folder for each fold's model and scores (a rerun resumes)")
  anomaly_cv.add_argument("--folds", type=int, default=5)
  anomaly_cv.add_argument("--repeats", type=int, default=2)
  anomaly_cv.add_argument("--steps", type=int,
                          help="training steps per fold (default: the CPU preset's); f-AnoGAN and HealthyGAN only")
  anomaly_cv.add_argument("--gan", help="normal-only GAN folder for f-AnoGAN (default: the shipped one)")
  anomaly_cv.add_argument("--encoder", help="CXR encoder checkpoint of PatchCore's patch features (default: the "
                                            "shipped checkpoints/encoder_cxr/encoder); each fold's bank follows the "
                                            "shipped bank's recipe otherwise (stage1, coreset 0.01, raw images)")
  anomaly_cv.add_argument("--lung-mask", action="store_true",
                          help="also score the residual inside the lungs (the shipped U-Net's mask); PatchCore: "
                               "build the banks from lung patches and score the largest lung-patch distance, as "
                               "the shipped bank")
  anomaly_cv.add_argument("--batch-size", type=int, default=64)
  anomaly_cv.add_argument("--seed", type=int, default=0)
  _add_json_arg(anomaly_cv)
  anomaly_cv.set_defaults(run="evaluate:anomaly-cv")

  evaluate_segmentation = evaluate_commands.add_parser("segmentation", help="lung Dice / IoU of the U-Net")
  _add_data_arg(evaluate_segmentation)
  evaluate_segmentation.add_argument("--checkpoint", help="U-Net checkpoint folder (default: the shipped one)")
  evaluate_segmentation.add_argument("--out", help="folder for worst_overlays.png (the 8 images of lowest Dice)")
  _add_split_arg(evaluate_segmentation)
  _add_json_arg(evaluate_segmentation)
  evaluate_segmentation.set_defaults(run="evaluate:segmentation")

  evaluate_anomaly = evaluate_commands.add_parser("anomaly", help="normal vs abnormal by an anomaly score")
  evaluate_anomaly.add_argument("--method", choices=("anogan", "fanogan", "healthygan", "patchcore"), required=True)
  _add_data_arg(evaluate_anomaly)
  evaluate_anomaly.add_argument("--steps", type=int, help="AnoGAN search steps (default: anomaly.SHIPPED_SEARCH's, "
                                "chosen on validation)")
  evaluate_anomaly.add_argument("--checkpoint", help="normal GAN folder (anogan), encoder (fanogan) or translator "
                                "(healthygan) checkpoint, or memory-bank folder (patchcore, `train patchcore`'s OUT); "
                                "default: the shipped one")
  evaluate_anomaly.add_argument("--batch-size", type=int, default=64)
  evaluate_anomaly.add_argument("--seed", type=int, default=0, help="AnoGAN random starts")
  evaluate_anomaly.add_argument("--restarts", type=int, default=1, help="AnoGAN random starts per image (best kept)")
  where = evaluate_anomaly.add_mutually_exclusive_group()
  where.add_argument("--lung-mask", dest="lung_mask", action="store_true", default=True,
                     help="score the residual inside the lungs only (the shipped U-Net's mask): image frames and "
                          "borders then count for nothing. The default, as every shipped anomaly card chose on "
                          "validation patients")
  where.add_argument("--whole-image", dest="lung_mask", action="store_false",
                     help="score the residual over the whole image instead of inside the lungs")
  searched = evaluate_anomaly.add_mutually_exclusive_group()
  searched.add_argument("--base-image", dest="base_image", action="store_const", const=True, default=None,
                        help="AnoGAN: search a cascade's base image (128x128 for gan_256_normal), cheaper per step "
                             "than its 256x256 output. The default, as gan_256_normal's card chose")
  searched.add_argument("--full-image", dest="base_image", action="store_const", const=False,
                        help="AnoGAN: search the cascade's full-size output instead of its base image")
  evaluate_anomaly.add_argument("--intensity-affine", action="store_true",
                                help="AnoGAN: fit a per-image intensity affine a * G(z) + b jointly with z, so the "
                                     "residual leaves out what exposure and contrast explain")
  evaluate_anomaly.add_argument("--early-stop-tol", type=float,
                                help="AnoGAN: stop an image's search once its loss fell by less than TOL over the "
                                     "last 20 steps (default: every step runs)")
  evaluate_anomaly.add_argument("--feature-term", choices=("encoder", "discriminator"),
                                help="AnoGAN: what the search's feature term compares: a CXR encoder's patch "
                                     "features (anomaly.EncoderFeatures; the default, chosen on validation) or the "
                                     "GAN discriminator's features (the original AnoGAN)")
  evaluate_anomaly.add_argument("--feature-encoder",
                                help="AnoGAN: the CXR encoder checkpoint of the encoder feature term (default: the "
                                     "shipped checkpoints/encoder_cxr/encoder)")
  evaluate_anomaly.add_argument("--feature-stage",
                                help="AnoGAN: the encoder stage of the feature term (default: "
                                     "anomaly.SHIPPED_FEATURE_STAGE, stage2)")
  evaluate_anomaly.add_argument("--feature-weight", type=float,
                                help="AnoGAN: l, the feature term's weight in the search loss, in [0, 1] (default "
                                     "0.5 with the encoder's term, chosen on validation; 0.1, the original's, with "
                                     "the discriminator's)")
  evaluate_anomaly.add_argument("--abnormal", choices=("pneumonia", "covid"), default="pneumonia",
                                help="abnormal images: NIH pneumonias (default), or the COVID-19 archive against NIH "
                                     "normals (a second task; source alone separates those archives)")
  evaluate_anomaly.add_argument("--covid-data", help="COVID-19 archive for --abnormal covid "
                                                     "(default covid_v7lungs_256.npz in the data folder)")
  _add_baselines_arg(evaluate_anomaly, "the task's training patients")
  _add_exposure_arg(evaluate_anomaly)
  evaluate_anomaly.add_argument("--no-exposure-control", dest="exposure_control", action="store_false",
                                help="skip the control that scores the test images again after exposure "
                                     "normalisation (body), beside the baselines on the same images; it runs by "
                                     "default with --split val or test and --exposure none, and costs a second "
                                     "scoring pass (for AnoGAN a second search)")
  evaluate_anomaly.add_argument("--scores", help="npz file for the per-image scores and residual maps (and the "
                                                 "threshold data's scores), e.g. for `evaluate anomaly-ensemble`")
  evaluate_anomaly.add_argument("--out", help="folder for the residual-map overlays PNG")
  _add_split_arg(evaluate_anomaly)
  evaluate_anomaly.set_defaults(split="test")
  _add_json_arg(evaluate_anomaly)
  evaluate_anomaly.set_defaults(run="evaluate:anomaly")

  evaluate_encoder = evaluate_commands.add_parser(
      "encoder", help="linear probes (pneumonia, sex) of a CXR encoder's features beside the trivial baselines")
  evaluate_encoder.add_argument("--checkpoint", help="CXR encoder folder (default: the shipped encoder_cxr)")
  evaluate_encoder.add_argument("--data", help="folder of the development archives (default: $JAXCXR_DATA); the "
                                               "probes use the NIH archives' classifier splits, validation patients")
  evaluate_encoder.add_argument("--out", help="folder for probes.png (each probe beside the baselines)")
  evaluate_encoder.add_argument("--unet", help="lung U-Net of the baselines' lung statistics (default: shipped)")
  evaluate_encoder.add_argument("--exposure", choices=("none", "body", "lungs"), default="none",
                                help="match every image's body or lung histogram to the task's training images' "
                                     "(jaxcxr.exposure) before the probes and the baselines are fitted and scored")
  _add_json_arg(evaluate_encoder)
  evaluate_encoder.set_defaults(run="evaluate:encoder")

  evaluate_classifier = evaluate_commands.add_parser("classifier", help="ROC AUC / accuracy of a classifier")
  evaluate_classifier.add_argument("--task", choices=("abnormal", "sex"), required=True)
  _add_data_arg(evaluate_classifier)
  evaluate_classifier.add_argument("--checkpoint", help="classifier checkpoint folder (default: the shipped one)")
  _add_baselines_arg(evaluate_classifier, "the classifier's training patients")
  _add_exposure_arg(evaluate_classifier)
  evaluate_classifier.add_argument("--out", help="folder for gradcam_overlays.png (8 positive images)")
  _add_split_arg(evaluate_classifier)
  _add_json_arg(evaluate_classifier)
  evaluate_classifier.set_defaults(run="evaluate:classifier")

  sample = commands.add_parser("sample", help="generate valid radiographs of one age-sex group (post-filtered)")
  sample.add_argument("--group", required=True, help="one of 18_24m 18_24f 38_44m 38_44f 58_64m 58_64f")
  sample.add_argument("--n", type=int, required=True, help="number of valid images to keep")
  sample.add_argument("--out", required=True, help="output folder for the PNGs")
  sample.add_argument("--label", type=int, choices=(0, 1), default=0, help="0 normal (default), 1 abnormal")
  sample.add_argument("--seed", type=int, default=0)
  sample.add_argument("--checkpoint", help="generator checkpoint, or the model folder holding it as generator/ "
                                           "(default: the shipped one)")
  sample.add_argument("--unfiltered", action="store_true", help="keep every generated image (no post-filter)")
  sample.add_argument("--max-generated", type=int, default=None,
                      help="give up after this many generated images (default max(1000, 200 n))")
  _add_scorer_args(sample)
  _add_prefilter_args(sample)
  sample.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
  _add_json_arg(sample)
  sample.set_defaults(run="generate:sample")

  demo = commands.add_parser("demo", help="the whole pipeline on the shipped models, as one self-contained HTML "
                                          "report (a few minutes on a CPU)")
  demo.add_argument("--group", default="38_44f", help="age-sex group (default 38_44f): one of 18_24m 18_24f 38_44m "
                                                      "38_44f 58_64m 58_64f")
  demo.add_argument("--n", type=int, default=8,
                    help="valid images to keep, with and without the pre-filter (default 8)")
  demo.add_argument("--out", default="jaxcxr_demo", help="folder for report.html (default jaxcxr_demo)")
  demo.add_argument("--seed", type=int, default=0)
  demo.add_argument("--strictness", choices=("strict", "standard"), default="strict",
                    help="post-filter level (default strict: few images pass and the pre-filter pays off; at "
                         "standard most pass, so no pre-filter can save much, and the report says why)")
  demo.add_argument("--overwrite", action="store_true", help="replace an existing report.html in --out")
  _add_json_arg(demo)
  demo.set_defaults(run="generate:demo")

  score = commands.add_parser("score", help="post-filter scores and validity of every image of a data file")
  _add_data_arg(score)
  _add_scorer_args(score)
  _add_json_arg(score)
  score.set_defaults(run="postfilter:score")

  report_parser = commands.add_parser("report", help="figures and tables of a component")
  report_commands = report_parser.add_subparsers(dest="report_command", required=True, metavar="COMPONENT")
  report_scoring = report_commands.add_parser("scoring", help="post-filter: valid rates, score histograms, examples")
  _add_data_arg(report_scoring)
  report_scoring.add_argument("--out", required=True, help="report folder (report.md, report.json, PNGs)")
  report_scoring.add_argument("--checkpoint", help="generator checkpoint folder (default: the shipped one)")
  report_scoring.add_argument("--n-per-group", type=int, default=64, help="generated samples per group")
  report_scoring.add_argument("--seed", type=int, default=0)
  _add_split_arg(report_scoring)
  report_scoring.set_defaults(split="test")
  report_scoring.add_argument("--covid", help="COVID-19 archive whose first image of --split joins the "
                              "non-radiograph check (default: $JAXCXR_DATA/covid_v7lungs_256.npz when present)")
  _add_scorer_args(report_scoring)
  _add_json_arg(report_scoring)
  report_scoring.set_defaults(run="postfilter:scoring")

  calibrate = commands.add_parser("calibrate", help="calibrate the post-filter scores on real normal images")
  _add_data_arg(calibrate)
  calibrate.add_argument("--out", required=True,
                         help="folder for calibration.json, atlas.npz and reference_measures.npz")
  calibrate.add_argument("--unet", help="U-Net checkpoint folder (default: the shipped one)")
  calibrate.add_argument("--classifier", help="abnormal classifier checkpoint folder (default: the shipped one)")
  calibrate.add_argument("--batch-size", type=int, default=32)
  calibrate.add_argument("--generator", help="generator whose valid rate sets the strict level (default: shipped)")
  calibrate.add_argument("--strict-valid-rate", type=float, default=0.05,
                         help="the strict level is where the generator keeps this fraction (default 0.05; 0: no "
                              "strict level)")
  calibrate.add_argument("--strict-n-per-group", type=int, default=128,
                         help="samples per age-sex group that set the strict level (default 128)")
  calibrate.add_argument("--seed", type=int, default=0, help="seed of the strict level's samples")
  _add_json_arg(calibrate)
  calibrate.set_defaults(run="postfilter:calibrate")

  _add_latents_parsers(commands)
  return parser


def _add_train_parsers(commands) -> None:
  """`jaxcxr train MODEL`: one subcommand per model the project ships (`TRAIN_COMMANDS`)."""
  train_parser = commands.add_parser(
      "train", help="train a model: every model the project ships (see `jaxcxr train --help`)",
      description="Train a model. Each MODEL's presets and help come from jaxcxr.config.FAMILIES; "
                  "`jaxcxr train MODEL --help` lists its presets. Every command writes its run folder --out "
                  "and prints a summary (--json: one JSON object).")
  train_commands = train_parser.add_subparsers(dest="train_command", required=True, metavar="MODEL")

  def add(name: str, **kwargs) -> argparse.ArgumentParser:
    family = TRAIN_COMMANDS[name]
    help_line = config_lib.FAMILIES[family].help if family else UNCONFIGURED_HELP[name]
    sub = train_commands.add_parser(name, help=help_line, description=f"jaxcxr train {name}: {help_line}.",
                                    epilog=_presets_epilog(family) if family else None,
                                    formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    sub.set_defaults(run=f"train:{name}")
    return sub

  gan = add("gan")
  _add_gan_data_arg(gan)
  _add_preset_arg(gan, "gan", None)
  gan.add_argument("--init-from", help="a trained GAN folder (generator/, discriminator/; a cascade's "
                                      "upsampler is left out) whose weights start the run")
  _add_run_args(gan, split=True)

  up = add("upsampler")
  _add_gan_data_arg(up)
  _add_preset_arg(up, "upsampler", "upsampler_x4_noiseless_cpu")
  up.add_argument("--base-gan", help="GAN or cascade folder whose images make part of each batch "
                                     "(presets with generated inputs, e.g. upsampler_x4_generated_cpu)")
  up.add_argument("--init-from", help="a trained stage (`train upsampler`'s OUT/upsampler) or a cascade "
                                      "folder whose upsampler starts the run")
  _add_run_args(up, split=True)

  unet = add("unet")
  unet.add_argument("--data", help=f"npz archive(s) with lung masks, comma-separated (default: "
                                   f"$JAXCXR_DATA/{COVID_DATA}); the trainer splits the patients itself "
                                   "(the preset's split fractions and seed)")
  _add_preset_arg(unet, "unet", None)
  _add_run_args(unet, split=False)

  classifier = add("classifier")
  classifier.add_argument("--task", choices=config_lib.TASKS, required=True,
                          help="abnormal (pneumonia vs normal: other abnormal images are left out) or sex")
  _add_gan_data_arg(classifier, "; the trainer splits the patients itself, stratified by the task")
  _add_preset_arg(classifier, "classifier", None)
  classifier.add_argument("--pretrained", metavar="DIR",
                          help="a saved classifier that starts the run: a ResNet's backbone (its head is "
                               "re-initialised), or the whole probe of `train encoder-classifier` (required by "
                               "the preset classifier_encoder_cpu)")
  classifier.add_argument("--report-test", action="store_true",
                          help="also evaluate the selected model on its test patients at the end (by default "
                               "they stay untouched: `jaxcxr evaluate classifier --split test` reports them once)")
  _add_run_args(classifier, split=False)

  ensemble = add("ensemble")
  ensemble.add_argument("--members", nargs="+", required=True, metavar="DIR",
                        help="two or more classifiers of --task trained on the same data and split (`train "
                             "classifier`'s OUT or OUT/classifier), e.g. one per seed")
  ensemble.add_argument("--task", choices=config_lib.TASKS, required=True, help="the members' task")
  _add_gan_data_arg(ensemble, "; the members' own data: their patient split indexes it")
  ensemble.add_argument("--pixel-size", type=int, default=32,
                        help="side of the pixel voter's block-mean image, dividing the members' input side "
                             "(default 32); 0: no pixel voter")
  ensemble.add_argument("--out", required=True, help="folder to write the ensemble into, as OUT/classifier")
  ensemble.add_argument("--overwrite", action="store_true", help="replace an existing OUT/classifier")
  ensemble.add_argument("--resume", action="store_true",
                        help="refused: assembly keeps no training checkpoints (it fits the pixel voter in seconds)")
  _add_json_arg(ensemble)

  probe = add("encoder-classifier")
  probe.add_argument("--encoder", default=None, metavar="DIR",
                     help="the pretrained CXR encoder (`train encoder`'s OUT/encoder; default: the shipped "
                          "checkpoints/encoder_cxr/encoder)")
  probe.add_argument("--task", choices=config_lib.TASKS, required=True,
                     help="abnormal (pneumonia vs normal: other abnormal images are left out) or sex")
  _add_gan_data_arg(probe, "; split by patient as `train classifier` splits them for the task")
  probe.add_argument("--out", required=True, help="folder to write the classifier into, as OUT/classifier")
  probe.add_argument("--overwrite", action="store_true", help="replace an existing OUT/classifier")
  _add_json_arg(probe)

  fanogan = add("fanogan")
  fanogan.add_argument("--gan", help="the normal-only GAN folder (generator/, discriminator/) the encoder inverts "
                                     "(default: the first shipped: checkpoints/gan_256_normal, else gan_64_normal)")
  _add_gan_data_arg(fanogan, "; the encoder trains on their normal images with known sex and age")
  _add_preset_arg(fanogan, "fanogan", None)
  fanogan.add_argument("--feature-encoder",
                       help="a CXR encoder checkpoint (e.g. checkpoints/encoder_cxr/encoder): the loss's feature "
                            "term compares its patch features (anomaly.EncoderFeatures) instead of the "
                            "discriminator's (the paper's; the default)")
  fanogan.add_argument("--feature-stage",
                       help="the CXR encoder stage of --feature-encoder's term (default: "
                            "anomaly.SHIPPED_FEATURE_STAGE, stage2, as AnoGAN's)")
  fanogan.add_argument("--feature-weight", type=float,
                       help="kappa, the feature term's weight in the loss (default: the preset's, the paper's 1)")
  _add_run_args(fanogan, split=True)

  healthygan = add("healthygan")
  _add_gan_data_arg(healthygan, "; pneumonia is the abnormal class, the standard split taken after that "
                                "(the patients `evaluate anomaly` holds out)")
  _add_preset_arg(healthygan, "healthygan", None)
  _add_run_args(healthygan, split=True)

  patchcore = add("patchcore")
  _add_gan_data_arg(patchcore, "; the bank holds the normal images of the pneumonia task's standard split (the "
                               "patients `evaluate anomaly` holds out are never in it)")
  patchcore.add_argument("--encoder", help="the CXR encoder checkpoint whose patch features fill the bank (default: "
                                           "the shipped checkpoints/encoder_cxr/encoder)")
  patchcore.add_argument("--stages", default="stage1",
                         help="encoder stages, comma-separated, concatenated on the finest grid (default stage1: "
                              "32x32x32 at the shipped encoder, chosen on validation patients)")
  patchcore.add_argument("--coreset-fraction", type=float, default=0.01,
                         help="share of the patches kept by the greedy k-center coreset, in (0, 1] (default 0.01, "
                              "chosen on validation patients)")
  patchcore.add_argument("--lung-mask", action=argparse.BooleanOptionalAction, default=True,
                         help="only lung patches enter the bank (default; `evaluate anomaly` scores inside the lungs "
                              "too); --no-lung-mask keeps every patch")
  patchcore.add_argument("--unet", help="lung U-Net of the masks (default: the shipped unet_256)")
  patchcore.add_argument("--exposure", action=argparse.BooleanOptionalAction, default=False,
                         help="histogram-standardise every image to a reference fitted on the bank's normals before "
                              "the encoder (jaxcxr.exposure; default off, chosen on validation patients)")
  patchcore.add_argument("--split", choices=("train", "all"), default="train",
                         help="normal images of the standard split's train patients (default) or of all patients")
  patchcore.add_argument("--seed", type=int, default=0, help="seed of the coreset's first patch and projection")
  patchcore.add_argument("--out", required=True, help="folder for the bank (memory_bank.npz, patchcore.json)")
  patchcore.add_argument("--overwrite", action="store_true", help="replace an existing bank in OUT")
  patchcore.add_argument("--resume", action="store_true",
                         help="refused: the bank is built in one pass and keeps no training checkpoints")
  _add_json_arg(patchcore)

  prefilter = add("prefilter")
  _add_prefilter_fit_args(prefilter, ("--preset", "--model"))
  prefilter.add_argument("--resume", action="store_true",
                         help="refused: a latent pre-filter fits in seconds and keeps no training checkpoints")

  cascade_prefilter = add("cascade-prefilter")
  _add_cascade_prefilter_args(cascade_prefilter)
  cascade_prefilter.add_argument("--resume", action="store_true",
                                 help="refused: the fit resumes by itself when the same command runs again")

  encoder = add("encoder")
  encoder.add_argument("--data", help="folder holding the development archives: nih_cxr14_subset_256.npz "
                                      "(required), nih_cxr14_extra_256.npz, covid_v7lungs_256.npz, "
                                      "openist_normal_lungs_256.npz; every test patient of every split the "
                                      "project uses is held out (default: $JAXCXR_DATA)")
  _add_preset_arg(encoder, "cxr_encoder", "cxr_encoder_cpu")
  encoder.add_argument("--method", choices=config_lib.METHODS, default="vicreg",
                       help="self-supervised objective (default vicreg)")
  _add_run_args(encoder, split=False)


def _presets_epilog(family: str) -> str:
  """The family's presets, one line each: its name and the first line of its docstring."""
  presets = config_lib.FAMILIES[family].presets
  width = max(len(name) for name in presets)
  first_line = lambda make: ((make.__doc__ or "").strip().splitlines() or [""])[0]
  lines = [f"  {name:{width}s}  {first_line(make)}" for name, make in presets.items()]
  return f"presets (jaxcxr.config.FAMILIES[{family!r}]):\n" + "\n".join(lines)


def _add_preset_arg(parser: argparse.ArgumentParser, family: str, default: str | None) -> None:
  names = ", ".join(config_lib.FAMILIES[family].presets)
  parser.add_argument("--preset", required=default is None, default=default,
                      help=f"training preset: {names}" + (f" (default {default})" if default else "")
                           + "; listed below")


def _add_gan_data_arg(parser: argparse.ArgumentParser, note: str = "") -> None:
  parser.add_argument("--data", help="npz archive(s), comma-separated, each archive's patients split alone "
                                     f"(default: $JAXCXR_DATA/{',$JAXCXR_DATA/'.join(GAN_DATA)}){note}")


def _add_run_args(parser: argparse.ArgumentParser, *, split: bool) -> None:
  """The options of every trainer that keeps training checkpoints: steps, run folder, resume, seed, progress, json."""
  parser.add_argument("--steps", type=int, help="override the preset's number of steps (a multiple of its "
                                                "steps_per_call)")
  parser.add_argument("--out", required=True, help="run folder (training checkpoints, metrics, the final weights)")
  parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
  if split:
    parser.add_argument("--split", choices=("train", "all"), default="train",
                        help="images to train on: the standard split's train patients (default) or all")
  parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the training randomness")
  parser.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
  _add_json_arg(parser)


def _add_data_arg(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--data", help="npz archive or folder of PNG/DICOM (default: $JAXCXR_DATA/<standard file>)")


def _add_split_arg(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--split", choices=("all", "train", "val", "test"), default="all",
                      help="images to evaluate: all (default) or a part of the standard patient split")


def _add_scorer_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--scoring", help="calibration folder (default: the shipped checkpoints/scoring_256)")
  parser.add_argument("--strictness", default="standard",
                      help="post-filter level: standard (about 5%% of real normals fail each score), strict (the "
                           "shipped generator keeps about 5%%, as in the original study), or a fraction Q in "
                           "[0.01, 0.9] of real normals failing each score (default standard)")
  parser.add_argument("--batch-size", type=int, default=None, help="images per compiled call (default 32)")
  parser.add_argument("--bf16", action="store_true", help="compute in bfloat16 (parameters and scores stay fp32)")


def _add_baselines_arg(parser: argparse.ArgumentParser, where: str) -> None:
  parser.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=None,
                      help=f"the trivial baselines (image statistics, pixel logistic regression; jaxcxr.baselines) "
                           f"fitted on {where} and compared on the same images with DeLong's paired test, per view. "
                           "Default: whenever --split is val or test; --baselines insists, --no-baselines skips")


def _add_exposure_arg(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--exposure", choices=("none", "body", "lungs"), default="none",
                      help="exposure normalisation before judging (jaxcxr.exposure): each image's grey levels in the "
                           "body, or inside the shipped U-Net's lungs, matched to the training normals' reference; "
                           "the baselines see the same images. Needs --split val or test. Default none, as every "
                           "shipped judge chose on validation patients (evaluations/exposure_val.md)")


def _add_json_arg(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _add_prefilter_args(sample: argparse.ArgumentParser) -> None:
  """`sample`'s pre-filter options: --prefilter STRATEGY with --latents F.npz, or --prefilter-dir DIR."""
  sample.add_argument("--prefilter", metavar="STRATEGY", default=None,
                      help="pre-filter latents before generating; threshold strategy (youden, 2tpr-fpr, tpr-2fpr, "
                           "tpr@0.95, max_precision); with --latents F.npz it is fitted now for --group, otherwise "
                           "the shipped pre-filter of the generator at --strictness is used")
  sample.add_argument("--latents", metavar="F.npz", default=None,
                      help="latent dataset (`jaxcxr latents build`) to fit the --prefilter on (train/validation/"
                           "test split of the group's latents)")
  sample.add_argument("--prefilter-model", default="logreg",
                      help="latent classifier preset when fitting: logreg (default), mlp1..mlp4, deep")
  sample.add_argument("--prefilter-dir", default=None,
                      help="a pre-filter saved by `jaxcxr latents fit` (instead of --latents)")
  sample.add_argument("--prefilter-input", choices=("auto", "z", "base"), default="auto",
                      help="what the shipped pre-filter judges: 'base' = the cascade generator's cheap base image "
                           "(`jaxcxr.prefilter.cascade`), 'z' = the latent alone; 'auto' (default) takes 'base' when "
                           "the generator has a shipped cascade pre-filter, else 'z'. --latents and --prefilter-dir "
                           "are latent (z) pre-filters")
  sample.add_argument("--pool-size", type=int, default=None,
                      help="latents drawn per compiled round (default: accept size x ceil(2 / the pre-filter's "
                           "acceptance), at most 32x)")
  sample.add_argument("--accept-size", type=int, default=None,
                      help="accepted latents generated and scored per round (default the batch size)")


def _add_latents_parsers(commands) -> None:
  latents_parser = commands.add_parser("latents", help="latent pre-filter: datasets, model table, fitted filters")
  latents_commands = latents_parser.add_subparsers(dest="latents_command", required=True, metavar="SUBCOMMAND")

  build = latents_commands.add_parser("build", help="generate and post-score latents per group (a latent dataset)")
  build.add_argument("--n-per-group", type=int, required=True, help="latents per age-sex group")
  build.add_argument("--out", required=True, help="the npz file to write")
  build.add_argument("--checkpoint", help="generator checkpoint folder (default: the shipped one)")
  build.add_argument("--groups", default="all", help="'all' (default) or comma-separated group names")
  build.add_argument("--seed", type=int, default=0, help="group g uses fold_in(key(seed), g)")
  build.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
  _add_scorer_args(build)
  _add_json_arg(build)
  build.set_defaults(run="latents:build")

  table = latents_commands.add_parser("table", help="cross-validated latent classifiers per group, with figures")
  table.add_argument("--data", required=True, help="latent dataset npz (`jaxcxr latents build`)")
  table.add_argument("--out", required=True, help="report folder (table.md, rows.json, PNGs)")
  table.add_argument("--models", default=None,
                     help="comma-separated model names of the zoo, 'families' (one per family, 11), or 'all' "
                          "(default: logreg_C1, logreg_l1, knn_10, tree_d5, forest, flax_logreg, flax_mlp2)")
  table.add_argument("--targets", default="valid", help="comma-separated: valid, score names, valid_by_scores")
  table.add_argument("--strategy", default="youden",
                     help="threshold strategy of the precision column; comma-separated or 'all' for one table "
                          "each, from the same fits (curves use the first)")
  table.add_argument("--folds", type=int, default=3)
  table.add_argument("--extremes-k", type=int, default=100, help="latents per side in the best/worst PCA views")
  table.add_argument("--seed", type=int, default=0)
  table.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
  table.add_argument("--strictness", default=None,
                     help="rescore the records at this post-filter level (standard, strict or a fraction Q) from "
                          "their stored measures; default: as built")
  table.add_argument("--scoring", help="calibration folder of --strictness (default: the shipped one)")
  _add_json_arg(table)
  table.set_defaults(run="latents:table")

  fit = latents_commands.add_parser("fit", help="fit and save one group's pre-filter (threshold on validation); "
                                               "also `jaxcxr train prefilter`")
  _add_prefilter_fit_args(fit, ("--model", "--preset"))
  fit.set_defaults(run="latents:fit")

  cas = latents_commands.add_parser(
      "cascade", help="fit a cascade pre-filter: post-filter measures predicted from the generator's base images; "
                      "also `jaxcxr train cascade-prefilter`")
  _add_cascade_prefilter_args(cas)
  cas.set_defaults(run="latents:cascade")


def _add_prefilter_fit_args(parser: argparse.ArgumentParser, model_flags: tuple[str, str]) -> None:
  """`latents fit` and `train prefilter` (one command, two names): sets `run` to its handler."""
  parser.add_argument("--data", required=True, help="latent dataset npz (`jaxcxr latents build`)")
  parser.add_argument("--group", required=True, help="one of 18_24m 18_24f 38_44m 38_44f 58_64m 58_64f")
  parser.add_argument("--strategy", default="youden",
                      help="threshold strategy (default youden), or 'all': one classifier with every strategy's "
                           "threshold, saved as one pre-filter set")
  parser.add_argument(*model_flags, dest="model", default="logreg",
                      help="latent classifier (jaxcxr.config.LATENT_PRESETS): "
                           f"{', '.join(config_lib.LATENT_PRESETS)} (default logreg)")
  parser.add_argument("--steps", type=int, default=None, help="AdamW steps of the latent classifier (default 1000)")
  parser.add_argument("--out", required=True, help="pre-filter checkpoint folder")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--accept-all-if-empty", action="store_true",
                      help="save an accept-everything pre-filter for a group with < 2 valid latents instead of "
                           "failing")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing pre-filter folder")
  parser.add_argument("--strictness", default=None,
                      help="learn validity at this post-filter level (standard, strict or Q), rescored from the "
                           "records' measures; default: as built")
  parser.add_argument("--scoring", help="calibration folder of --strictness (default: the shipped one)")
  _add_json_arg(parser)
  parser.set_defaults(run="latents:fit")


def _add_cascade_prefilter_args(parser: argparse.ArgumentParser) -> None:
  """`latents cascade` and `train cascade-prefilter` (one command, two names): sets `run` to its handler."""
  parser.add_argument("--data", required=True, help="latent dataset npz of the cascade generator, with measures")
  parser.add_argument("--out", required=True, help="cascade pre-filter checkpoint folder")
  parser.add_argument("--checkpoint", help="cascade generator, or its model folder (default: the shipped one)")
  presets = ", ".join(config_lib.FAMILIES["cascade_prefilter"].presets)
  parser.add_argument("--preset", help=f"training preset: {presets} (default cascade_prefilter_R for the "
                                       "generator's RxR base images); listed below")
  parser.add_argument("--steps", type=int, default=None,
                      help="AdamW steps of the score predictor (default: the preset's; a multiple of its "
                           "steps_per_call, the steps between validation passes)")
  parser.add_argument("--levels", default="standard,strict", help="strictness levels to choose thresholds for")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--scoring", help="calibration folder that measured the records (default: the shipped one)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
  parser.set_defaults(strictness="standard")
  _add_json_arg(parser)
  parser.set_defaults(run="latents:cascade")


def _version() -> str:
  return f"jaxcxr {jaxcxr.__version__}"


def main(argv: list[str] | None = None) -> int:
  """Runs the command `argv` (default `sys.argv[1:]`); returns its exit status (0, or `EXIT_USAGE` for bad input)."""
  parser = build_parser()
  try:
    args = parser.parse_args(argv)
  except SystemExit as e:       # --help, --version, or a usage error already reported in one line
    return e.code if isinstance(e.code, int) else EXIT_USAGE
  # The one deferred import: a command's module imports the library, and with it jax, flax and orbax: 3.8-4.1 s of
  # CPU time for `import jaxcxr.cli.evaluate` (or .generate, .data) on the 2-core machine, against 0.02 s for this
  # module. It is imported once the arguments parse, so that `--help` and usage errors stay fast.
  group, name = args.run.split(":")
  run, human = importlib.import_module(f"jaxcxr.cli.{group}").HANDLERS[name]
  inputs = importlib.import_module("jaxcxr.cli.inputs")
  enable_compilation_cache()     # $JAXCXR_COMPILATION_CACHE: a folder, or "off"
  start = time.perf_counter()
  try:
    result = run(args)
  except (UsageError, *inputs.LIBRARY_ERRORS) as e:
    print(f"jaxcxr: error: {e}", file=sys.stderr)
    return EXIT_USAGE
  log(f"done in {time.perf_counter() - start:.1f} s")
  emit(result, args.json, human)
  return 0
