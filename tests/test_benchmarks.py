"""The benchmark suite's records: `python -m benchmarks.run --quick` runs and every record keeps the schema.

Speed is not tested here (that is what the benchmarks report); only that every suite runs
and writes the fields a reader of the results relies on.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import measure, run, table, torch_peer

ROOT = pathlib.Path(__file__).resolve().parents[1]
# CI (.ci/run) installs the CPU torch build and sets JAXCXR_EXPECT_TORCH=1: there every twin must run.
EXPECT_TORCH = os.environ.get("JAXCXR_EXPECT_TORCH") == "1"


@pytest.fixture(scope="module")
def quick_records(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench") / "quick.jsonl"
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--json", "--out", str(out)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  printed = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
  written = [json.loads(line) for line in out.read_text().splitlines()]
  assert printed == written
  return printed


def test_quick_run_covers_every_suite(quick_records):
  assert {r["suite"] for r in quick_records} == set(run.SUITES)


def test_quick_records_keep_the_schema(quick_records):
  for r in quick_records:
    if "skipped" in r:
      assert isinstance(r["skipped"], str) and r["skipped"], r
      assert {"suite", "name", "peer", "device", "jax"} <= set(r), r
      continue
    missing = set(measure.REQUIRED_KEYS) - set(r)
    assert not missing, (missing, r)
    assert r["schema"] == measure.SCHEMA_VERSION
    assert r["median_s"] > 0 and r["min_s"] > 0 and r["min_s"] <= r["median_s"], r
    assert r["throughput"] > 0 and r["throughput_unit"].endswith("/s"), r
    assert isinstance(r["batch"], int) and r["batch"] >= 1, r
    assert r["dtype"] in ("float32", "bfloat16"), r
    for key in ("ratio_vs_torch_eager", "ratio_vs_torch_compile", "achieved_gflops", "fraction_of_peak"):
      if r.get(key) is not None:
        assert math.isfinite(r[key]) and r[key] > 0, (key, r)


def test_jaxcxr_records_carry_the_roofline(quick_records):
  measured = [r for r in quick_records if r["peer"] == "jaxcxr" and "skipped" not in r and r["suite"] != "time_to_k_valid"]
  assert measured
  for r in measured:
    assert r["flops_per_item"] > 0 and r["achieved_gflops"] > 0 and 0 < r["fraction_of_peak"], r


def test_twins_run_or_say_why(quick_records):
  """With torch every twin is timed; without it (and not expected) every twin says torch is missing."""
  assert not EXPECT_TORCH or torch_peer.available(), "JAXCXR_EXPECT_TORCH=1 but torch is not importable"
  twins = [r for r in quick_records if r["peer"].startswith("torch")]
  # Every suite with a PyTorch twin has its record (time_to_k_valid has none: it times the CLI's samplers).
  assert {r["suite"] for r in twins} == set(run.SUITES) - {"time_to_k_valid"}
  for r in twins:
    if torch_peer.available():
      assert "skipped" not in r and r["median_s"] > 0 and r["torch_threads"] >= 1, r
    else:
      assert r["skipped"] == torch_peer.SKIP_REASON, r


def test_ratios_pair_the_same_work():
  ctx = {"schema": 1}
  timing = measure.Timing(1.0, 2.0, 1.5, 3)
  jx = measure.record(ctx, suite="s", name="n", peer="jaxcxr", dtype="float32", batch=8, timing=timing, items=8,
                      unit="images/s")
  twin = measure.record(ctx, suite="s", name="n", peer="torch_eager", dtype="float32", batch=8,
                        timing=measure.Timing(1.0, 5.0, 4.0, 3), items=8, unit="images/s")
  other_batch = measure.record(ctx, suite="s", name="n", peer="torch_compile", dtype="float32", batch=4,
                               timing=timing, items=4, unit="images/s")
  records = [jx, twin, other_batch]
  measure.add_ratios(records)
  assert jx["ratio_vs_torch_eager"] == 2.5
  assert "ratio_vs_torch_compile" not in jx


def test_readme_table_is_replaced_between_markers(tmp_path, quick_records):
  readme = tmp_path / "README.md"
  readme.write_text(f"intro\n{table.START}\nold\n{table.END}\noutro\n")
  table.update_readme(readme, quick_records)
  text = readme.read_text()
  assert text.startswith("intro\n") and text.endswith("outro\n") and "\nold\n" not in text   # (records say "cold")
  assert "| generate_and_score |" in text
  (tmp_path / "bare.md").write_text("no markers")
  with pytest.raises(ValueError, match="markers"):
    table.update_readme(tmp_path / "bare.md", quick_records)


def test_profile_attributes_operations_to_their_components():
  """benchmarks/profile.py reads the optimised HLO's stack frames: GroupNorm's and the convolutions' operations."""
  import jax   # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp   # pylint: disable=g-import-not-at-top
  from benchmarks import profile   # pylint: disable=g-import-not-at-top
  from jaxcxr.models import layers   # pylint: disable=g-import-not-at-top

  norm = layers.GroupNorm(4, 2, dtype=jnp.float32)
  loss = lambda x, k: jnp.sum(jnp.tanh(norm(layers.conv2d(x, k))))
  x, k = jnp.ones((2, 8, 8, 3)), 0.1 * jnp.ones((3, 3, 3, 4))
  with layers.conv_path("custom_vjp"):
    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, k).compile().as_text()
  operations, members = profile.hlo_operations(hlo)
  labels = {profile._label(name, operations, members) for name in operations}   # pylint: disable=protected-access
  components = {component for component, _ in labels}
  assert {"group_norm", "conv_forward"} <= components, labels
  assert any(kind in ("convolution", "fusion(convolution)") for _, kind in labels), labels
  assert any(op.functions for op in operations.values())   # the stack frames were read
