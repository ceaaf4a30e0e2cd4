"""The README's headline table against the evidence files it cites (docs/model_card_template.md: figures come from files).

The table is parsed from README.md: every number of a row's figure column (code spans such as
`tpr@0.95` are names, not figures) is compared, in order, with the value `FIGURES` reads from
the committed evidence files, formatted with the decimals the README shows (0.8205 is "0.821"
nowhere: it is "0.820" or "0.82"). Each file a row is read from must be cited in the row's
evidence column. `FIGURES` holds where each figure lives, never the figures themselves, so an
edited README number, an edited evidence file or an added number without a source fails here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import re
from typing import Any, Callable

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HEADER = "| checkpoint | what | headline figure"


@dataclasses.dataclass(frozen=True)
class Figure:
  """One number of the table: the evidence file (a path from the repository root, globs allowed) and how to read it."""

  path: str
  read: Callable[[Any], float]


@functools.cache
def load(path: str) -> Any:
  """A JSON file, a JSON-lines file (a list of objects), or a glob of JSON files (a list, sorted by path)."""
  if any(c in path for c in "*?["):
    files = sorted(ROOT.glob(path))
    assert files, f"no file matches {path}"
    return [json.loads(f.read_text()) for f in files]
  text = (ROOT / path).read_text()
  if path.endswith(".jsonl"):
    return [json.loads(line) for line in text.splitlines() if line.strip()]
  return json.loads(text)


def _get(doc: Any, key: str) -> Any:
  for part in key.split("."):
    doc = doc[int(part)] if isinstance(doc, list) else doc[part]
  return doc


def at(path: str, key: str, scale: float = 1.0) -> Figure:
  """The value under the dotted `key` (list items by index), times `scale` (1000 for ms)."""
  return Figure(path, lambda doc: _get(doc, key) * scale)


def mean(path: str, key: str) -> Figure:
  """The mean of the list under `key` (e.g. three seeds)."""
  return Figure(path, lambda doc: sum(_get(doc, key)) / len(_get(doc, key)))


def count(path: str, key: str) -> Figure:
  """The length of the list under `key`."""
  return Figure(path, lambda doc: len(_get(doc, key)))


def over(path: str, key: str, pick: Callable[[list[float]], float]) -> Figure:
  """`pick` (min or max) of `key` over the files of a glob."""
  return Figure(path, lambda docs: pick([_get(d, key) for d in docs]))


def _speedups(lines: list[dict[str, Any]], variant: str) -> list[float]:
  """Per group, the unfiltered run's seconds to K valid images over the variant's (a prefilter_speedup record)."""
  rows = [r for r in lines if "seconds_median" in r]
  base = {r["group"]: r["seconds_median"] for r in rows if r["variant"] == "unfiltered"}
  return [base[r["group"]] / r["seconds_median"] for r in rows if r["variant"] == variant]


def _diversity_change(lines: list[dict[str, Any]], variant: str) -> float:
  """The largest relative change (%) of the kept images' diversity figures against the unfiltered run's, any group."""
  rows = [r for r in lines if "seconds_median" in r]
  base = {r["group"]: r["diversity"] for r in rows if r["variant"] == "unfiltered"}
  return max(abs(100 * (r["diversity"][k] - base[r["group"]][k]) / base[r["group"]][k])
             for r in rows if r["variant"] == variant for k in ("mpd_pca", "fd_pca_to_real", "fd_classifier_to_real"))


def speedup(path: str, variant: str, pick: Callable[[list[float]], float]) -> Figure:
  return Figure(path, lambda lines: pick(_speedups(lines, variant)))


def _logreg_aucs(rows: list[dict[str, Any]]) -> list[float]:
  return [r["roc_auc"] for r in rows if r["model"] == "logreg_C1" and r["target"] == "valid" and r["strategy"] == "youden"]


def logreg_auc(path: str, pick: Callable[[list[float]], float]) -> Figure:
  """`pick` of the cross-validated ROC AUC of the latent logistic regression over the six groups."""
  return Figure(path, lambda rows: pick(_logreg_aucs(rows)))


C = "checkpoints"
GAN_SEEDS = f"{C}/gan_256/evaluation_seeds.json"
NORMAL_SEEDS = f"{C}/gan_256_normal/evaluation_seeds.json"
ANOGAN = f"{C}/gan_256_normal/anogan/evaluation_lungs_test.json"
SPEEDUP = "benchmarks/results/prefilter_speedup_gan256v3_strict_cpu.jsonl"
CASCADE = f"{C}/cascade_prefilter_gan_256/metadata/metadata"
LATENT = f"{C}/prefilters_gan_256/strict/*/metadata/metadata"
TABLE = "benchmarks/results/latents_table_gan256_{}/rows.json"
LEVELS = f"{C}/scoring_256/report_standard/report.json"
FANOGAN, HEALTHYGAN = f"{C}/fanogan_256", f"{C}/healthygan_256"
ENCODER = f"{C}/encoder_cxr/evaluation_val.json"
PATCHCORE = f"{C}/patchcore_encoder_cxr"


def _realism(path: str) -> list[Figure]:
  return [mean(path, f"figures.two_sample_auc_{name}.generated_vs_real") for name in ("pixels", "hog", "detail")]


def _classifier(path: str) -> list[Figure]:
  return [at(path, "roc_auc"), at(path, "roc_auc_ci95.0"), at(path, "roc_auc_ci95.1"), at(path, "baseline.roc_auc"),
          at(path, "baseline.paired_delong.p_value")]


def _auc(path: str) -> list[Figure]:
  return [at(path, "roc_auc"), at(path, "roc_auc_ci95.0"), at(path, "roc_auc_ci95.1")]


def _strongest_baseline(path: str) -> list[Figure]:
  """The strongest trivial baseline's AUC and the paired p-value of an evaluation's "baselines" report."""
  strongest = lambda doc: doc["baselines"]["baselines"][doc["baselines"]["strongest"]]["roc_auc"]
  return [Figure(path, strongest), at(path, "baselines.paired_delong.p_value")]


def _strongest_baseline_below(path: str, bound: float = 0.001) -> list[Figure]:
  """As `_strongest_baseline` for a README that writes "p < bound": the bound, as long as the p-value is below it."""
  strongest = lambda doc: doc["baselines"]["baselines"][doc["baselines"]["strongest"]]["roc_auc"]
  p_value = lambda doc: doc["baselines"]["paired_delong"]["p_value"]
  return [Figure(path, strongest), Figure(path, lambda doc: bound if p_value(doc) < bound else p_value(doc))]


# Row (the first checkpoint named in it) -> where each number of its figure column comes from, in order.
FIGURES: dict[str, list[Figure]] = {
    "gan_256": [count(GAN_SEEDS, "seeds"), *_realism(GAN_SEEDS),
                *[mean(GAN_SEEDS, f"figures.two_sample_auc_{n}.real_vs_real") for n in ("pixels", "hog", "detail")],
                mean(GAN_SEEDS, "figures.sex_agreement.generated")],
    "gan_256_normal": [*_realism(NORMAL_SEEDS), mean(NORMAL_SEEDS, "figures.sex_agreement.generated"),
                       count(NORMAL_SEEDS, "seeds"), at(ANOGAN, "steps"), at(ANOGAN, "restarts"), *_auc(ANOGAN),
                       at(ANOGAN, "seconds_per_image"),
                       *_strongest_baseline_below(ANOGAN)],
    "gan_64": [at(f"{C}/gan_64/quality.json", "fd_classifier_ratio"),
               at(f"{C}/gan_64/quality.json", "sex_classifier_agreement_generated")],
    "gan_64_normal": [at(f"{C}/gan_64_normal/quality.json", "fd_classifier_ratio"),
                      at(f"{C}/gan_64_normal/anomaly/anogan_50steps.json", "steps"),
                      *_auc(f"{C}/gan_64_normal/anomaly/anogan_50steps.json"),
                      *_strongest_baseline_below(f"{C}/gan_64_normal/anomaly/anogan_50steps_controls.json")],
    "unet_256": [at(f"{C}/unet_256/evaluation_test.json", k) for k in ("dice_mean", "dice_mean_ci95.0",
                                                                        "dice_mean_ci95.1", "baseline.dice_mean")],
    "classifier_abnormal_ensemble_96": _classifier(f"{C}/classifier_abnormal_ensemble_96/evaluation_test.json"),
    "classifier_sex_ensemble_64": _classifier(f"{C}/classifier_sex_ensemble_64/evaluation_test.json"),
    "classifier_abnormal_encoder": [*_auc(f"{C}/classifier_abnormal_encoder/evaluation_test.json"),
                                    *_strongest_baseline(f"{C}/classifier_abnormal_encoder/evaluation_test.json"),
                                    at(f"{C}/classifier_abnormal_encoder/probe_evaluation_test.json", "roc_auc"),
                                    at(f"{C}/classifier_abnormal_encoder/probe_evaluation_test.json",
                                       "baselines.paired_delong.p_value")],
    "classifier_sex_encoder": [*_auc(f"{C}/classifier_sex_encoder/evaluation_test.json"),
                               *_strongest_baseline(f"{C}/classifier_sex_encoder/evaluation_test.json")],
    "encoder_cxr": [at(ENCODER, f"tasks.pneumonia.probes.pooled_stages.{k}") for k in ("roc_auc", "ci95.0", "ci95.1")]
                   + [at(ENCODER, "tasks.pneumonia.baselines.pixel_logreg.roc_auc"),
                      at(ENCODER, "tasks.pneumonia.probes.pooled_stages.vs_baselines.paired_delong.p_value"),
                      at(ENCODER, "tasks.sex.probes.pooled_stages.roc_auc"),
                      at(ENCODER, "tasks.sex.baselines.pixel_logreg.roc_auc"),
                      at(ENCODER, "tasks.sex.probes.pooled_stages.vs_baselines.paired_delong.p_value")],
    "cascade_prefilter_gan_256": [
        at(CASCADE, "report.levels.strict.roc_auc_test"), at(CASCADE, "report.levels.strict.roc_auc_test_ci95.0"),
        at(CASCADE, "report.levels.strict.roc_auc_test_ci95.1"), Figure(SPEEDUP, lambda lines: lines[0]["k"]),
        speedup(SPEEDUP, "cascade_youden", min), speedup(SPEEDUP, "cascade_youden", max),
        speedup(SPEEDUP, "prefilter_youden", min), speedup(SPEEDUP, "prefilter_youden", max),
        Figure(SPEEDUP, lambda lines: _diversity_change(lines, "cascade_youden"))],
    "prefilters_gan_256": [
        over(LATENT, "strategies.youden.report.predicted_speedup", min),
        over(LATENT, "strategies.youden.report.predicted_speedup", max),
        Figure(TABLE.format("standard"), lambda rows: rows[0]["n_folds"]),
        logreg_auc(TABLE.format("standard"), min), logreg_auc(TABLE.format("standard"), max),
        logreg_auc(TABLE.format("strict"), min), logreg_auc(TABLE.format("strict"), max)],
    "scoring_256": [at(LEVELS, f"valid_rate_by_level.standard.{k}") for k in ("real_normal", "real_abnormal", "generated")]
                   + [at(LEVELS, "valid_rate_by_level.strict.q")]
                   + [at(LEVELS, f"valid_rate_by_level.strict.{k}") for k in ("real_normal", "real_abnormal", "generated")],
    "unet_128": [at(f"{C}/unet_128/evaluation_test.json", "dice_mean"),
                 at(f"{C}/unet_128/evaluation_test.json", "baseline.dice_mean"),
                 at(f"{C}/classifier_abnormal_128/evaluation_test.json", "roc_auc"),
                 at(f"{C}/classifier_sex_64/evaluation_test.json", "roc_auc"),
                 at(f"{C}/classifier_abnormal_128/evaluation_test.json", "baseline.roc_auc"),
                 at(f"{C}/classifier_sex_64/evaluation_test.json", "baseline.roc_auc"),
                 at(f"{C}/classifier_abnormal_128/evaluation_test.json", "baseline.paired_delong.p_value"),
                 at(f"{C}/classifier_sex_64/evaluation_test.json", "baseline.paired_delong.p_value")],
    "fanogan_256": [at(f"{FANOGAN}/evaluation_lungs_val.json", "roc_auc"), *_auc(f"{FANOGAN}/evaluation_lungs_test.json"),
                    at(f"{FANOGAN}/evaluation_test.json", "roc_auc"),
                    *_strongest_baseline_below(f"{FANOGAN}/evaluation_lungs_test.json"),
                    at(f"{FANOGAN}/cv_report.json", "folds"), at(f"{FANOGAN}/cv_report.json", "repeats"),
                    at(f"{FANOGAN}/cv_report.json", "summary.lungs.mean"),
                    at(f"{FANOGAN}/cv_report.json", "summary.lungs.sd"),
                    at(f"{FANOGAN}/cv_report.json", "baselines_summary.pixel_logreg.mean"),
                    at(f"{FANOGAN}/cv_report.json", "baselines_summary.pixel_logreg.sd")],
    "fanogan_64": [*_auc(f"{C}/fanogan_64/evaluation.json"),
                   *_strongest_baseline_below(f"{C}/fanogan_64/evaluation_test_controls.json")],
    "healthygan_256": [*_auc(f"{HEALTHYGAN}/evaluation_lungs_test.json"), at(f"{HEALTHYGAN}/cv_report.json", "folds"),
                       at(f"{HEALTHYGAN}/cv_report.json", "repeats"),
                       at(f"{HEALTHYGAN}/cv_report.json", "summary.lungs.mean"),
                       at(f"{HEALTHYGAN}/cv_report.json", "summary.lungs.sd"),
                       *_strongest_baseline("evaluations/baselines_test_healthygan_256_lungs.json")],
    "healthygan_64": [*_auc(f"{C}/healthygan_64/evaluation.json"),
                      at(f"{C}/healthygan_64/evaluation.json", "seconds_per_image", 1000),
                      *_strongest_baseline(f"{C}/healthygan_64/evaluation_test_controls.json")],
    "patchcore_encoder_cxr": [at(f"{PATCHCORE}/evaluation_val.json", "roc_auc"),
                              *_auc(f"{PATCHCORE}/evaluation_test.json"),
                              *_strongest_baseline(f"{PATCHCORE}/evaluation_test.json")],
}


def headline_rows(text: str) -> dict[str, tuple[str, str]]:
  """The headline table's rows: first checkpoint named -> (figure cell, evidence cell)."""
  start = text.index(HEADER)
  lines = text[start:].split("\n\n", 1)[0].splitlines()
  header = [c.strip() for c in lines[0].strip("|").split("|")]
  figure, evidence = header.index(next(h for h in header if h.startswith("headline figure"))), header.index("evidence")
  rows = {}
  for line in lines[2:]:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    rows[re.findall(r"`([^`]+)`", cells[0])[0]] = (cells[figure], cells[evidence])
  return rows


def numbers(cell: str) -> list[str]:
  """The numbers of a figure cell as written, code spans (names such as `tpr@0.95`) left out."""
  return re.findall(r"(?<![\w.])\d+(?:\.\d+)?", re.sub(r"`[^`]*`", "", cell))


def row_problems(name: str, figure_cell: str, evidence_cell: str) -> list[str]:
  """Where a row's figures differ from their files (or are not all accounted for, or cite no file)."""
  figures = FIGURES[name]
  written = numbers(figure_cell)
  problems = []
  cited = set(re.findall(r"`([^`]+)`", evidence_cell))
  problems += [f"{name}: reads {f.path}, which its evidence column does not cite"
               for f in {f.path: f for f in figures}.values() if f.path not in cited]
  if len(written) != len(figures):
    return problems + [f"{name}: {len(written)} numbers {written} but {len(figures)} sources in FIGURES"]
  for text, source in zip(written, figures):
    decimals = len(text.split(".")[1]) if "." in text else 0
    value = source.read(load(source.path))
    if format(value, f".{decimals}f") != text:
      problems.append(f"{name}: README {text}, {source.path} {value!r} (= {format(value, f'.{decimals}f')})")
  return problems


def test_every_row_has_its_sources():
  assert set(headline_rows(README.read_text())) == set(FIGURES)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_headline_figures_match_their_evidence(name):
  figure_cell, evidence_cell = headline_rows(README.read_text())[name]
  assert row_problems(name, figure_cell, evidence_cell) == []


@pytest.mark.parametrize("edit, expected", [
    (("test ROC AUC 0.820 [0.75, 0.89]", "test ROC AUC 0.821 [0.75, 0.89]"), "README 0.821"),
    (("test Dice 0.958 [0.953, 0.962]", "test Dice 0.958 [0.953, 0.962] (95% CI)"), "5 numbers"),
    (("`checkpoints/healthygan_64/evaluation.json`", "`evaluation.json`"), "does not cite"),
    (("14 ms per image", "10 ms per image"), "README 10"),
])
def test_a_wrong_figure_fails(edit, expected):
  rows = headline_rows(README.read_text().replace(*edit))
  problems = [p for name in FIGURES for p in row_problems(name, *rows[name])]
  assert any(expected in p for p in problems), problems
