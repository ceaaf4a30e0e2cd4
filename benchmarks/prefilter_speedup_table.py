"""Markdown table of a `prefilter_speedup.py` JSON-lines result: per group and variant, the measured
speed-ups next to the predicted one and the limit 1/p, and diversity against the unfiltered valid images.

    python benchmarks/prefilter_speedup_table.py benchmarks/results/prefilter_speedup_gan256_strict_all_cpu.jsonl

Columns: wall-time speed-up (unfiltered seconds / variant seconds to K valid images), generated-per-valid
speed-up, the predicted speed-up (test precision / base rate of the fitted filter), the limit 1/p of
the group's latent dataset, and the relative change of three diversity figures of the K kept images
against the unfiltered run's: mean pairwise distance in the whitened PCA space of real normals
(`realism.PcaFrechet`, the space of `evaluate gan`), Fréchet distance to the group's real normals in
that space, and in the abnormal classifier's features. "ok" marks a variant with a wall-time speed-up
>= 3 and all three diversity changes within 10%.
"""

from __future__ import annotations

import json
import sys


def _pct(value, reference):
  if value is None or reference in (None, 0):
    return None
  return 100.0 * (value - reference) / reference


def table(lines: list[dict]) -> str:
  rows = [l for l in lines if l.get("variant") != "summary" and "seconds_median" in l]
  summaries = {l["group"]: l for l in lines if l.get("variant") == "summary"}
  out = ["| group | variant | seconds | speed-up (time) | speed-up (generated) | predicted | limit 1/p | "
         "MPD PCA | FD PCA | FD classifier | >= 3x, diversity within 10% |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
  for group in dict.fromkeys(r["group"] for r in rows):
    base = next(r for r in rows if r["group"] == group and r["variant"] == "unfiltered")
    s = summaries.get(group, {})
    bd = base["diversity"]
    for r in (r for r in rows if r["group"] == group):
      name = r["variant"]
      d = r["diversity"]
      changes = [_pct(d.get(k), bd.get(k)) for k in ("mpd_pca", "fd_pca_to_real", "fd_classifier_to_real")]
      time_up = base["seconds_median"] / r["seconds_median"]
      gen_up = base["generated_per_valid"] / r["generated_per_valid"]
      if name.startswith("cascade_"):
        predicted = (s.get("cascade") or {}).get(name[len("cascade_"):], {}).get("predicted_speedup")
      elif name.startswith("prefilter_"):
        predicted = (s.get("latent") or {}).get(name[len("prefilter_"):], {}).get("predicted_speedup")
      else:
        predicted = None
      ok = (name != "unfiltered" and time_up >= 3 and all(c is not None and abs(c) <= 10 for c in changes))
      fmt = lambda c: "" if c is None else f"{c:+.1f}%"
      out.append(f"| {group} | {name} | {r['seconds_median']:.1f} | {time_up:.2f} | {gen_up:.2f} | "
                 f"{'' if predicted is None else f'{predicted:.2f}'} | {s.get('physical_limit', float('nan')):.1f} | "
                 f"{fmt(changes[0])} | {fmt(changes[1])} | {fmt(changes[2])} | {'ok' if ok else ''} |")
  return "\n".join(out)


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 1:
    print(__doc__, file=sys.stderr)
    return 2
  with open(argv[0]) as f:
    lines = [json.loads(line) for line in f if line.strip()]
  print(table(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
