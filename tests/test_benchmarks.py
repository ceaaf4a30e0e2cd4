"""The benchmarks' records: `benchmarks.run --quick` and `gpu.sh --dry-run` run, and every record keeps the schema.

Speed is not tested here (that is what the benchmarks report); only that every suite runs
and writes the fields a reader of the results relies on, and that a GPU dry run takes the
branches a GPU run takes.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import core_scaling, measure, run, table, torch_peer
from benchmarks.suites import anogan as anogan_suite, fanogan as fanogan_suite
from benchmarks.suites import generate_and_score as gas_suite, healthygan as healthygan_suite
from jaxcxr import batching

from conftest import unoptimised_xla_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
# CI (.ci/run) installs the CPU torch build and sets JAXCXR_EXPECT_TORCH=1: there every twin must run.
EXPECT_TORCH = os.environ.get("JAXCXR_EXPECT_TORCH") == "1"
# The suites whose batch sizes come from a CPU and a GPU list.
BATCHED_SUITES = {"generate_and_score": gas_suite, "anogan": anogan_suite, "fanogan": fanogan_suite,
                  "healthygan": healthygan_suite}
QUICK_SKIPS = {"time_to_k_valid"}   # needs the shipped cascade and its pre-filter: skipped with --quick


def _lines(path: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def quick_records(tmp_path_factory):
  """`python -m benchmarks.run --quick` on the CPU path (custom VJP, in-call chunks), one suite.

  HealthyGAN, the cheapest: the CPU branches of `benchmarks.run` ([2] as the batch, the float32
  peak) are the same in every suite; the dry run below runs every suite. At -O0, as the dry run.
  """
  out = tmp_path_factory.mktemp("bench") / "quick.jsonl"
  env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": unoptimised_xla_flags()}
  proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--suite", "healthygan", "--json",
                         "--out", str(out)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  printed = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
  assert printed == _lines(out)
  return printed


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
  """`bash benchmarks/gpu.sh --dry-run` as a GPU session runs the script, its files in a temporary OUT.

  Its records are checked, not the values its programs compute: XLA:CPU generates their code at
  -O0 (`unoptimised_xla_flags`; the records carry the flags), and the jaxcxr programs compiled in
  10 s instead of 19 s (the dry run, 36 instead of 50 CPU-s, one core of the 2-core machine).
  """
  out = tmp_path_factory.mktemp("gpu_dry_run")
  env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "XLA_FLAGS": unoptimised_xla_flags()}
  proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600, check=False)
  return proc, out


@pytest.fixture(scope="module")
def dry_records(dry_run):
  proc, out = dry_run
  log = (out / "gpu_log.txt").read_text() if (out / "gpu_log.txt").exists() else ""
  assert proc.returncode == 0, proc.stdout + proc.stderr + log[-5000:]
  return _lines(out / "gpu.jsonl")


@pytest.fixture(params=["quick", "dry_run"])
def records(request):
  return request.getfixturevalue("quick_records" if request.param == "quick" else "dry_records")


def test_gpu_dry_run_writes_the_files_of_a_gpu_session(dry_run, dry_records):
  _, out = dry_run
  assert sorted(p.name for p in out.iterdir()) == ["device.txt", "gpu.jsonl", "gpu_log.txt", "gpu_table.md"]
  device = (out / "device.txt").read_text()
  assert "GPU DRY RUN on the CPU" in device and "jax " in device, device
  assert (out / "gpu_log.txt").read_text().rstrip().endswith("benchmarks.run exit status 0")
  written = (out / "gpu_table.md").read_text()
  assert written.startswith("**GPU DRY RUN on the CPU, not GPU numbers**"), written[:300]
  assert written.strip() == table.markdown(dry_records).strip()


def test_gpu_dry_run_measures_every_suite(dry_records):
  """Every suite has measured records (time_to_k_valid needs the shipped models), and nothing failed."""
  assert not [r for r in dry_records if r.get("failed")], [r["skipped"] for r in dry_records if r.get("failed")]
  measured = {r["suite"] for r in dry_records if r["peer"] == "jaxcxr" and "skipped" not in r}
  assert measured == set(run.SUITES) - QUICK_SKIPS
  for r in dry_records:
    if r["suite"] in QUICK_SKIPS:
      assert "not in --quick" in r["skipped"], r


def test_gpu_dry_run_takes_the_gpu_branches(dry_records):
  """Dry-run records, XLA's convolutions, no chunks, the bfloat16 peak, both dtypes, the GPU batch sizes scaled."""
  for r in dry_records:
    assert r["dry_run"] is True and r["platform"] == "cpu" and r["dry_run_divisor"] == run.DRY_RUN_DIVISOR, r
    assert r["conv_path"] == "xla" and r["in_call_chunk"] is None, r
  jaxcxr = [r for r in dry_records if r["peer"] == "jaxcxr" and "skipped" not in r]
  assert all(r["peak_dtype"] == "bfloat16" for r in jaxcxr if r["suite"] != "time_to_k_valid")
  for suite, module in BATCHED_SUITES.items():
    timed = [r for r in dry_records if r["suite"] == suite and "skipped" not in r]
    # --quick: the largest GPU batch only, divided
    assert {r["batch"] for r in timed} == {max(module.GPU_BATCHES) // run.DRY_RUN_DIVISOR}, (suite, timed)
  for suite in ("generate_and_score", "anogan"):
    assert {r["dtype"] for r in jaxcxr if r["suite"] == suite} == {"float32", "bfloat16"}, suite
  if torch_peer.available():
    compiled = [r for r in dry_records if r["peer"] == "torch_compile"]
    assert {r["suite"] for r in compiled} == set(BATCHED_SUITES)
    assert all(r["torch_compile_backend"] == "aot_eager" for r in compiled)
    assert {r["dtype"] for r in dry_records if r["suite"] == "generate_and_score" and r["peer"] == "torch_eager"} \
        == {"float32", "bfloat16"}


def test_quick_run_takes_the_cpu_branches(quick_records):
  for r in quick_records:
    assert r["dry_run"] is False and "dry_run_divisor" not in r, r
    assert r["conv_path"] == "custom_vjp" and r["in_call_chunk"] == batching.CPU_CHUNK, r
    assert r["batch"] == 2 and r["dtype"] == "float32", r
  assert {r["peak_dtype"] for r in quick_records if r["peer"] == "jaxcxr"} == {"float32"}


def test_records_keep_the_schema(records):
  for r in records:
    if "skipped" in r:
      assert isinstance(r["skipped"], str) and r["skipped"], r
      assert {"suite", "name", "peer", "device", "jax"} <= set(r), r
      assert not r.get("failed"), r
      continue
    missing = set(measure.REQUIRED_KEYS) - set(r)
    assert not missing, (missing, r)
    assert r["schema"] == measure.SCHEMA_VERSION
    assert r["median_s"] > 0 and r["min_s"] > 0 and r["min_s"] <= r["median_s"], r
    assert r["throughput"] > 0 and r["throughput_unit"].endswith("/s"), r
    assert isinstance(r["batch"], int) and r["batch"] >= 1, r
    assert r["dtype"] in ("float32", "bfloat16"), r
    assert r["cores"] >= 1, r
    for key in ("ratio_vs_torch_eager", "ratio_vs_torch_compile", "achieved_gflops", "fraction_of_peak"):
      if r.get(key) is not None:
        assert math.isfinite(r[key]) and r[key] > 0, (key, r)


def test_jaxcxr_records_carry_the_roofline(records):
  measured = [r for r in records if r["peer"] == "jaxcxr" and "skipped" not in r and r["suite"] != "time_to_k_valid"]
  assert measured
  for r in measured:
    assert r["flops_per_item"] > 0 and r["achieved_gflops"] > 0 and 0 < r["fraction_of_peak"], r


def test_twins_run_or_say_why(records):
  """With torch every twin is timed; without it (and not expected) every twin says torch is missing."""
  assert not EXPECT_TORCH or torch_peer.available(), "JAXCXR_EXPECT_TORCH=1 but torch is not importable"
  twins = [r for r in records if r["peer"].startswith("torch")]
  # Every suite measured with a PyTorch twin has its record (time_to_k_valid has none: it times the CLI's samplers).
  assert {r["suite"] for r in twins} == {r["suite"] for r in records if r["peer"] == "jaxcxr" and "skipped" not in r}
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


def test_a_failing_measurement_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
  """An exception in a suite (e.g. out of GPU memory) is a failed record with its reason; the exit status is 1."""
  def suite(bench):
    with bench.guard("healthygan", "score", "jaxcxr", dtype="float32", batch=512):
      raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.1GiB")
    bench.log("the suite went on")
    raise ValueError("after the guarded part")

  monkeypatch.setattr(run, "_suites", lambda: {"healthygan": suite})
  out = tmp_path / "failed.jsonl"
  assert run.main(["--quick", "--suite", "healthygan", "--json", "--out", str(out)]) == 1
  failed = _lines(out)
  assert [(r["suite"], r["name"], r["peer"], r.get("batch")) for r in failed] == [
      ("healthygan", "score", "jaxcxr", 512), ("healthygan", "*", "*", None)]
  assert all(r["failed"] is True for r in failed)
  assert failed[0]["skipped"] == ("failed: RuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                                  "9.1GiB")
  assert failed[1]["skipped"] == "failed: ValueError: after the guarded part"
  assert "2 measurement(s) failed" in table.markdown(failed)
  with pytest.raises(SystemExit):
    run.main(["--gpu-dry-run", "--update-readme"])       # a dry run's records never go into the README


def test_core_scaling_pairs_records_on_the_fewest_cores():
  ctx = {"schema": 1}
  rec = lambda cores, median, batch=8, dtype="float32": {
      **measure.record(ctx, suite="anogan", name="search", peer="jaxcxr", dtype=dtype, batch=batch,
                       timing=measure.Timing(1.0, median, median, 3), items=batch, unit="images/s"), "cores": cores}
  one, two, two_other_batch = rec(1, 3.0), rec(2, 2.0), rec(2, 1.0, batch=64)
  records = [one, two, two_other_batch, {**ctx, "suite": "anogan", "skipped": "time budget spent", "cores": 2}]
  core_scaling.add_scaling(records)
  assert one["scaling"] == 1.0 and two["scaling"] == 1.5 and "scaling" not in two_other_batch
  assert "scaling" not in records[-1]
  assert "| anogan | search | float32 | 8 | 2 |" in core_scaling.table(records)
  assert core_scaling.parse_cores("2, 1") == [1, 2]
  for bad in ("", "0,1", "one"):
    with pytest.raises(ValueError, match="--cores"):
      core_scaling.parse_cores(bad)


def test_readme_table_is_replaced_between_markers(tmp_path, quick_records):
  readme = tmp_path / "README.md"
  readme.write_text(f"intro\n{table.START}\nold\n{table.END}\noutro\n")
  table.update_readme(readme, quick_records)
  text = readme.read_text()
  assert text.startswith("intro\n") and text.endswith("outro\n") and "\nold\n" not in text   # (records say "cold")
  assert "| healthygan |" in text and "DRY RUN" not in text
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
