"""The shape of the package (docs/architecture.md): file sizes, the import graph, deferred imports.

Static checks over the source of `jaxcxr/` with `ast`; nothing is imported, so the file runs in
well under a second.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxcxr"
MAX_LINES = 800
# Files allowed over MAX_LINES, each with why. A file that shrinks below the limit must leave the list.
LONG_FILES = {
    # One concept: checkpoints on disk (model and training checkpoints, their manifest and ids, where the shipped
    # ones are); the only module that imports orbax (docs/conventions.md).
    "jaxcxr/checkpoints.py": 860,
}
# Deferred (function-level) imports that stay, as (file, imported module or its package): the measured heavy
# boundaries, each named with its import time at its first deferred import in the file (docs/conventions.md).
DEFERRED_IMPORTS = {
    ("jaxcxr/compilation_cache.py", "jax"),                 # `jaxcxr --help` imports no jax
    ("jaxcxr/data.py", "pydicom"),                          # an optional dependency (the `dicom` extra)
    ("jaxcxr/demo.py", "matplotlib"),
    ("jaxcxr/explain.py", "matplotlib"),
    ("jaxcxr/plots.py", "matplotlib"),
    ("jaxcxr/plots.py", "jaxcxr.metrics"),                  # jax and scikit-learn for a numpy-only module
    ("jaxcxr/reports.py", "matplotlib"),
    ("jaxcxr/scoring/symmetry_postfilter.py", "sklearn"),   # `import jaxcxr.scoring` imports no scikit-learn
}
# Reworked on another branch (issue 23, deliverable 2): its deferred imports are that branch's to move.
NOT_CHECKED_FOR_DEFERRED_IMPORTS = {"jaxcxr/train/cxr_encoder.py"}
# The top layer: the command line, the demo, the notebook loader. Nothing below it imports them.
# `jaxcxr.__main__` (`python -m jaxcxr`) is the command line too: it only runs `jaxcxr.cli`.
TOP_LAYER = ("jaxcxr.cli", "jaxcxr.demo", "jaxcxr.pretrained", "jaxcxr.__main__")


def _modules() -> dict[str, pathlib.Path]:
  """{dotted module name: file} of every module of the package (a package by its `__init__.py`)."""
  modules = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts = parts[:-1]
    modules[".".join(parts)] = path
  return modules


MODULES = _modules()


def _imports(path: pathlib.Path) -> list[tuple[str, bool]]:
  """(module imported, at function level?) of every `import` of the package's own modules in a file.

  `from a.b import c` counts as importing `a.b.c` when that is a module, else `a.b`.
  """
  tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  found = []

  def visit(node: ast.AST, nested: bool) -> None:
    for child in ast.iter_child_nodes(node):
      inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
      if isinstance(child, ast.Import):
        found.extend((alias.name, nested) for alias in child.names)
      elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
        for alias in child.names:
          sub = f"{child.module}.{alias.name}"
          found.append((sub if sub in MODULES else child.module, nested))
      visit(child, inner)

  visit(tree, False)
  return found


def _import_graph() -> dict[str, set[str]]:
  """Module -> the package's modules it imports (anywhere in the file), with the packages each import runs.

  Importing `a.b.c` also runs `a/__init__` and `a/b/__init__`: those count too, except the
  importer's own packages (which Python has begun to import before the importer).
  """
  graph = {}
  for name, path in MODULES.items():
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    if path.name == "__init__.py":
      own.add(name)
    edges = set()
    for module, _ in _imports(path):
      if module.split(".")[0] != "jaxcxr":
        continue
      parts = module.split(".")
      edges |= {p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if p in MODULES and p not in own}
    edges.discard(name)
    graph[name] = edges
  return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One cycle through each back edge of a depth-first search (none for an acyclic graph)."""
  state, stack, cycles = {}, [], []

  def visit(node: str) -> None:
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        cycles.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt)
    stack.pop()
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node)
  return cycles


def test_the_checks_see_the_whole_package():
  assert {"jaxcxr", "jaxcxr.cli.entry", "jaxcxr.scoring", "jaxcxr.scoring.scorer", "jaxcxr.metrics.distances",
          "jaxcxr.models.classifier", "jaxcxr.train.loop"} <= set(MODULES)
  graph = _import_graph()
  assert "jaxcxr.models.ensemble" in graph["jaxcxr.models.classifier"]
  assert "jaxcxr.checkpoints" in graph["jaxcxr.scoring.scorer"]
  assert "jaxcxr.models" in graph["jaxcxr.scoring.scorer"]                  # the package a submodule import runs


def test_cycle_finder_finds_a_cycle():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
  assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
  """No module imports, at any depth and from any function, a module that imports it back."""
  cycles = _cycles(_import_graph())
  assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_nothing_below_the_top_layer_imports_it():
  graph = _import_graph()
  top = lambda m: any(m == t or m.startswith(t + ".") for t in TOP_LAYER)
  climbing = sorted(f"{m} -> {t}" for m, targets in graph.items() if not top(m) for t in targets if top(t))
  assert not climbing, climbing


def test_no_file_over_the_limit():
  problems = []
  for path in MODULES.values():
    name = path.relative_to(ROOT).as_posix()
    n = len(path.read_text(encoding="utf-8").splitlines())
    limit = LONG_FILES.get(name, MAX_LINES)
    if n > limit:
      problems.append(f"{name}: {n} lines, over {limit}; split it by concept (docs/architecture.md)")
    elif name in LONG_FILES and n <= MAX_LINES:
      problems.append(f"{name}: {n} lines, within {MAX_LINES} now; remove it from LONG_FILES")
  assert not problems, "\n".join(problems)
  assert set(LONG_FILES) <= {p.relative_to(ROOT).as_posix() for p in MODULES.values()}


def test_deferred_imports_are_the_named_boundaries():
  deferred = set()
  for path in MODULES.values():
    name = path.relative_to(ROOT).as_posix()
    if name in NOT_CHECKED_FOR_DEFERRED_IMPORTS:
      continue
    for module, nested in _imports(path):
      if nested:
        allowed = {m for f, m in DEFERRED_IMPORTS if f == name}
        if not any(module == m or module.startswith(m + ".") for m in allowed):
          deferred.add(f"{name}: {module}")
  assert not deferred, ("function-level imports outside the measured boundaries (move them to the top of the "
                        "file, or measure and name the boundary):\n" + "\n".join(sorted(deferred)))


def test_every_named_boundary_is_used():
  used = set()
  for path in MODULES.values():
    name = path.relative_to(ROOT).as_posix()
    for module, nested in _imports(path):
      used |= {(f, m) for f, m in DEFERRED_IMPORTS if f == name and nested and (module == m or
                                                                                module.startswith(m + "."))}
  assert used == DEFERRED_IMPORTS, f"boundaries no longer deferred: {sorted(DEFERRED_IMPORTS - used)}"
