"""The results table of a benchmark run (markdown), and its place in benchmarks/README.md."""

from __future__ import annotations

import pathlib
from typing import Any

from jaxcxr import io as io_lib

START, END = "<!-- results:start -->", "<!-- results:end -->"

_COLUMNS = ("suite", "name", "peer", "dtype", "batch", "throughput", "compile_s", "median_s",
            "ratio_vs_torch_eager", "ratio_vs_torch_compile", "ratio_vs_per_image_loop", "flops_per_item", "achieved_gflops", "fraction_of_peak")


def _cell(value: Any) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    if abs(value) >= 1e6:
      return f"{value:.3g}"
    return f"{value:.4g}"
  return str(value)


def markdown(records: list[dict[str, Any]]) -> str:
  """One row per record; the throughput column carries its unit; skipped peers say why."""
  if not records:
    return "(no records)"
  rows = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
  for r in records:
    if "skipped" in r:
      rows.append(f"| {r['suite']} | {r['name']} | {r['peer']} | skipped: {r['skipped']} |" + " |" * (len(_COLUMNS) - 4))
      continue
    cells = []
    for c in _COLUMNS:
      cell = _cell(r.get(c))
      if c == "throughput":
        cell = f"{cell} {r['throughput_unit']}"
      cells.append(cell)
    rows.append("| " + " | ".join(cells) + " |")
  first = records[0]
  head = (f"{first['date']}, {first['device']} ({first['platform']}; {first['cpu']}, {first['cpu_count']} cores), "
          f"jax {first['jax']}, torch {first['torch']}.")
  peak = next((r["peak_gflops"] for r in records if r.get("peak_gflops")), None)
  if peak:
    head += f" Matmul peak measured in the run: {peak} GFLOP/s."
  if first.get("dry_run"):
    head = ("**GPU DRY RUN on the CPU, not GPU numbers**: the GPU code path (XLA convolutions, no in-call chunks, "
            f"bfloat16 peak, GPU batch sizes divided by {first.get('dry_run_divisor')}). " + head)
  failed = sum(1 for r in records if r.get("failed"))
  if failed:
    head += f" {failed} measurement(s) failed (rows 'skipped: failed: ...')."
  return head + "\n\n" + "\n".join(rows)


def update_readme(readme: pathlib.Path, records: list[dict[str, Any]]) -> None:
  """Replaces the text between the results markers of `readme` with this run's table."""
  text = readme.read_text(encoding="utf-8")
  if START not in text or END not in text:
    raise ValueError(f"{readme}: no {START} ... {END} markers to put the table between")
  before, rest = text.split(START, 1)
  _, after = rest.split(END, 1)
  io_lib.write_bytes_atomic(readme, (before + START + "\n" + markdown(records) + "\n" + END + after).encode())


def main(argv=None) -> int:
  """python -m benchmarks.table RESULTS.jsonl: the markdown table of a results file."""
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m benchmarks.table", description=main.__doc__)
  parser.add_argument("results", help="a JSON-lines file written by python -m benchmarks.run --out")
  args = parser.parse_args(argv)
  print(markdown(io_lib.read_json_lines(args.results)))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
