"""Benchmark suites: each module's `run(bench)` measures one pipeline and emits its records."""
