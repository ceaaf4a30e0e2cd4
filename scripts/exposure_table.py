"""Each judge's validation AUC with and without exposure normalisation, beside its trivial baselines (issue 24).

    python scripts/exposure_table.py RUNS_DIR evaluations/exposure_val.json

RUNS_DIR holds the `--json` outputs of the commands listed in evaluations/README.md (one per judge and
`--exposure` setting, named JUDGE_SETTING.json, SETTING in none/body/lungs; the encoder's as
encoder_SETTING.json). For every judge and setting the table gives the judge's AUC and interval, the
strongest trivial baseline's AUC with the paired DeLong p, the single image statistic's AUC (the
baseline exposure should pull toward 0.5), and the mean |AUC - 0.5| of all single statistics. The
setting chosen per judge is the one with the highest validation AUC. Writes JSON and a Markdown table
beside it.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

SETTINGS = ("none", "body", "lungs")


def _row(report: dict, auc: float, ci) -> dict:
  """The figures of one (judge, setting) from a `baselines.compare_scores` report."""
  stats = report.get("statistics") or {}
  return {"roc_auc": auc, "roc_auc_ci95": ci,
          "strongest_baseline": report["strongest"],
          "strongest_baseline_roc_auc": report["baselines"][report["strongest"]]["roc_auc"],
          "paired_delong_p": report["paired_delong"]["p_value"],
          "statistic_baseline": report["baselines"]["statistic"]["description"],
          "statistic_baseline_roc_auc": report["baselines"]["statistic"]["roc_auc"],
          "mean_abs_statistic_auc_minus_half": (float(np.mean([abs(s["roc_auc"] - 0.5) for s in stats.values()]))
                                                if stats else None)}


def rows(runs: pathlib.Path) -> dict[str, dict[str, dict]]:
  table: dict[str, dict[str, dict]] = {}
  for path in sorted(runs.glob("*.json")):
    judge, _, setting = path.stem.rpartition("_")
    if setting not in SETTINGS:
      continue
    result = json.loads(path.read_text())
    if judge == "encoder":
      for task, entry in result["tasks"].items():
        for kind, probe in entry["probes"].items():
          table.setdefault(f"encoder_cxr {kind} probe ({task})", {})[setting] = _row(
              probe["vs_baselines"], probe["roc_auc"], probe["ci95"])
      continue
    table.setdefault(judge, {})[setting] = _row(result["baselines"], result["roc_auc"], result["roc_auc_ci95"])
  for entry in table.values():
    entry["chosen"] = max((s for s in SETTINGS if s in entry), key=lambda s: entry[s]["roc_auc"])
  return table


def markdown(table: dict[str, dict[str, dict]]) -> str:
  lines = ["| judge | exposure | AUC [95% CI] | strongest baseline (AUC, paired p) | single statistic (AUC) "
           "| mean abs(AUC - 0.5) of the statistics |", "| --- | --- | --- | --- | --- | --- |"]
  for judge, entry in table.items():
    for setting in SETTINGS:
      if setting not in entry:
        continue
      r = entry[setting]
      mark = " (chosen)" if setting == entry["chosen"] else ""
      mean = "" if r["mean_abs_statistic_auc_minus_half"] is None else f"{r['mean_abs_statistic_auc_minus_half']:.3f}"
      lines.append(f"| {judge} | {setting}{mark} | {r['roc_auc']:.3f} [{r['roc_auc_ci95'][0]:.2f}, "
                   f"{r['roc_auc_ci95'][1]:.2f}] | {r['strongest_baseline']} {r['strongest_baseline_roc_auc']:.3f}, "
                   f"p = {r['paired_delong_p']:.3g} | {r['statistic_baseline']} {r['statistic_baseline_roc_auc']:.3f} "
                   f"| {mean} |")
  return "\n".join(lines) + "\n"


def main() -> None:
  runs, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
  table = rows(runs)
  out.write_text(json.dumps(table, indent=1) + "\n")
  out.with_suffix(".md").write_text(markdown(table))
  print(markdown(table))


if __name__ == "__main__":
  main()
