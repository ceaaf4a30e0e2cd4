"""Where a compiled jaxcxr call spends its time: XLA's own per-operation trace, grouped by component.

    python -m benchmarks.profile --program NAME [--steps-per-call N] [--conv-path custom_vjp|xla]
        [--repeats N] [--top N] [--json] [--out FILE]

Programs: `gan_train` (the shipped base GAN's recipe, `gan_64_resize_cpu`), `unet_train`
(`unet_256_cpu`), `encoder_train` (`cxr_encoder_cpu`, VICReg), on the train-step suite's random data
(`benchmarks/suites/train_step.py`), and `healthygan_score` (the shipped translator's scoring call on
64 random images).

How: the call is compiled ahead of time, run once untimed, then `repeats` times under
`jax.profiler.trace`. XLA:CPU records one trace event per executed operation (thunk), named as
the operation of the optimised HLO module. Each operation is attributed through its HLO metadata
(the JAX primitive's name stack and source line) to a component:

| component | what it holds |
|---|---|
| `r1` | the R1 penalty: the discriminator's input gradient and its own gradient (double backward) |
| `spectral_norm` | the power iteration and the division of every kernel by its norm, forward and backward |
| `group_norm` | the generator's GroupNorm, forward and backward |
| `optimiser` | optax's Adam updates and the EMA of the generator |
| `augmentation` | the differentiable augmentation of reals and fakes; the encoder's views |
| `conv_forward` / `conv_backward` | convolutions and matmuls (1x1, dense) of the forward passes / the gradients |
| `other` | everything else (activations, losses, bias adds, up- and down-sampling, copies) |

and to an operation kind (convolution, dot, fusion, copy, ...). Event time is wall time of one
thread; operations run one after another on the CPU's thunk executor, so the shares add up to
about the call's time (`coverage` says how much of it the events explain).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import glob
import gzip
import json
import re
import sys
import tempfile
import time

import jax
import numpy as np

from benchmarks import models as models_lib
from benchmarks.suites import train_step
from jaxcxr.anomaly import healthygan
from jaxcxr.models import layers
from jaxcxr.train import cxr_encoder, gan, segmentation

PROGRAMS = ("gan_train", "unet_train", "encoder_train", "healthygan_score")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?\b([a-z][\w\-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_FRAME = re.compile(r"stack_frame_id=(\d+)")
# The functions of the encoder's views (`jaxcxr.train.cxr_encoder`); the stack frames of an operation hold only the
# innermost calls, so `augment_views` itself is rarely among them.
_ENCODER_VIEWS = frozenset({"augment_views", "draw_views", "apply_views", "_view_draws", "_view", "_blur"})


@dataclasses.dataclass(frozen=True)
class Operation:
  """One instruction of the optimised HLO module: its opcode, JAX name stack and Python call stack."""
  opcode: str
  op_name: str
  functions: tuple[str, ...]   # qualified names of the Python functions that made it, innermost first
  files: tuple[str, ...]


def _stack_tables(hlo_text: str) -> dict[int, tuple[tuple[str, ...], tuple[str, ...]]]:
  """stack frame id -> (function names, file names), innermost first, from the module's frame tables."""
  section, files, functions, locations, frames = None, {}, {}, {}, {}
  for line in hlo_text.splitlines():
    if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
      section = line
      continue
    if section is None or not line.strip() or not line[0].isdigit():
      if section and not line.strip():
        section = None
      continue
    key, _, rest = line.partition(" ")
    if section == "FileNames":
      files[int(key)] = rest.strip('"')
    elif section == "FunctionNames":
      functions[int(key)] = rest.strip('"')
    elif section == "FileLocations":
      fields = dict(re.findall(r"(\w+)=(\d+)", rest))
      locations[int(key)] = (files.get(int(fields["file_name_id"]), ""),
                             functions.get(int(fields["function_name_id"]), ""))
    else:
      fields = dict(re.findall(r"(\w+)=(\d+)", rest))
      frames[int(key)] = (int(fields["file_location_id"]), int(fields.get("parent_frame_id", 0)))
  chains = {}
  for frame_id in frames:
    names, paths, seen, current = [], [], set(), frame_id
    while current in frames and current not in seen:
      seen.add(current)
      location, parent = frames[current]
      path, function = locations.get(location, ("", ""))
      names.append(function)
      paths.append(path)
      current = parent
    chains[frame_id] = (tuple(names), tuple(paths))
  return chains


def hlo_operations(hlo_text: str) -> tuple[dict[str, Operation], dict[str, list[Operation]]]:
  """(instruction name -> Operation, fusion name -> the operations of its fused computation).

  From `compiled.as_text()`: every computation's instructions (fused ones included), each with
  its metadata's JAX name stack and, through the module's stack-frame tables, the Python
  functions that made it.
  """
  chains = _stack_tables(hlo_text)
  operations, computations, calls = {}, {}, {}
  current = None
  for line in hlo_text.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{") and " = " not in line.split("{")[0]:
      current = line.split()[0].lstrip("%")
      computations[current] = []
      continue
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, opcode = match.groups()
    op_name = _OP_NAME.search(line)
    frame = _FRAME.search(line)
    functions, files = chains.get(int(frame.group(1)), ((), ())) if frame else ((), ())
    op = Operation(opcode, op_name.group(1) if op_name else "", functions, files)
    operations[name] = op
    if current is not None:
      computations[current].append(op)
    called = re.search(r"calls=%?([\w.\-]+)", line)
    if opcode == "fusion" and called:
      calls[name] = called.group(1)
  members = {name: computations.get(computation, []) for name, computation in calls.items()}
  return operations, members


def component(op: Operation) -> str:
  """The component of this module's table that an operation belongs to (see the module docstring)."""
  functions = " ".join(op.functions)
  if "r1_penalty" in functions or "/cond/branch_1_fun/" in op.op_name:
    return "r1"   # the lazy R1 runs in the true branch of a lax.cond (the only cond of the GAN step)
  if any("optax" in f for f in op.files) or "train_step.<locals>.<lambda>" in functions:
    return "optimiser"   # Adam, and the generator's EMA (a lambda of train_step)
  if "normalized_kernel" in functions or "_l2_normalize" in functions:
    return "spectral_norm"
  if "GroupNorm" in functions:
    return "group_norm"
  if "augment" in functions or (any(f.split(".")[0] in _ENCODER_VIEWS for f in op.functions)
                                 and any(f.endswith("train/cxr_encoder.py") for f in op.files)):
    return "augmentation"
  if op.opcode in ("convolution", "dot"):
    return "conv_backward" if ("transpose(" in op.op_name or "_cpu_conv_bwd" in functions
                               or "patches" in functions) else "conv_forward"
  return "other"


def _label(name: str, operations: dict[str, Operation], members: dict[str, list[Operation]]) -> tuple[str, str]:
  """(component, kind) of a traced operation name."""
  op = operations.get(name)
  if op is None:
    return "other", "runtime"
  if op.opcode == "fusion" and members.get(name):
    inner = [o for o in members[name] if o.opcode not in ("parameter", "constant")] or [op]
    heavy = [o for o in inner if o.opcode in ("convolution", "dot")]
    if heavy:
      return component(heavy[0]), f"fusion({heavy[0].opcode})"
    comps = collections.Counter(component(o) for o in inner)
    return comps.most_common(1)[0][0], "fusion"
  return component(op), op.opcode


def _program(name: str, steps_per_call: int | None):
  m = models_lib.shipped()
  rng = np.random.default_rng(0)
  if name == "healthygan_score":   # one call scores a batch of 64 random images (the suite's largest CPU batch)
    r = m.translator.config.resolution
    return healthygan.score_program(m.translator, rng.integers(0, 256, (64, r, r), dtype=np.uint8)), 1
  trainer, config, make_data = {"gan_train": (gan, m.gan_train, train_step.gan_data),
                                 "unet_train": (segmentation, m.unet_train, train_step.unet_data),
                                 "encoder_train": (cxr_encoder, m.encoder_train, train_step.encoder_data)}[name]
  if steps_per_call:
    config = dataclasses.replace(config, steps_per_call=steps_per_call)
  return trainer.train_step_program(config, make_data(config, rng)), config.steps_per_call


def profile(program_name: str, *, steps_per_call: int | None = None, conv_path: str = "auto",
            repeats: int = 2) -> dict:
  """Profiles one program; returns the record printed by `main` (times in ms per training step)."""
  with layers.conv_path(conv_path):
    program, steps = _program(program_name, steps_per_call)
    args = program.fresh_args()
    compiled = program.fn.lower(*args).compile()
  hlo = compiled.as_text()
  operations, members = hlo_operations(hlo)
  jax.block_until_ready(compiled(*program.fresh_args()))
  with tempfile.TemporaryDirectory() as tmp:
    runs = [jax.block_until_ready(program.fresh_args()) for _ in range(repeats)]
    start = time.perf_counter()
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for args in runs:
        jax.block_until_ready(compiled(*args))
    wall = time.perf_counter() - start
    path = glob.glob(f"{tmp}/**/perfetto_trace.json.gz", recursive=True)[0]
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  by_component: dict[str, float] = collections.Counter()
  by_kind: dict[str, float] = collections.Counter()
  by_op: dict[str, float] = collections.Counter()
  unknown: dict[str, float] = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and event["name"] not in operations:
      unknown[event["name"]] += event.get("dur", 0.0)
    if event.get("ph") != "X" or event["name"] not in operations:
      continue
    if operations[event["name"]].opcode in ("while", "call", "conditional"):
      continue   # containers: their bodies' operations are traced themselves
    comp, kind = _label(event["name"], operations, members)
    us = event.get("dur", 0.0)
    by_component[comp] += us
    by_kind[kind] += us
    by_op[f"{event['name']} [{comp}, {kind}]"] += us
  per_step = lambda us: round(us / 1e3 / repeats / steps, 3)
  traced = sum(by_component.values())
  return {"program": program_name, "conv_path": layers.conv_path_in_use() if conv_path == "auto" else conv_path,
          "steps_per_call": steps, "repeats": repeats, "wall_ms_per_step": round(wall * 1e3 / repeats / steps, 3),
          "traced_ms_per_step": per_step(traced), "coverage": round(traced / 1e6 / wall, 3),
          "components_ms_per_step": {k: per_step(v) for k, v in by_component.most_common()},
          "kinds_ms_per_step": {k: per_step(v) for k, v in by_kind.most_common()},
          "top_operations_ms_per_step": {k: per_step(v) for k, v in by_op.most_common(25)},
          "other_events_ms_per_step": {k: per_step(v) for k, v in unknown.most_common(10)}}


def _print(record: dict, top: int) -> None:
  print(f"{record['program']} ({record['conv_path']} convolutions, {record['steps_per_call']} steps per call): "
        f"{record['wall_ms_per_step']} ms per step; operations traced: {record['traced_ms_per_step']} ms "
        f"(coverage {record['coverage']})")
  for title, key in (("component", "components_ms_per_step"), ("kind", "kinds_ms_per_step"),
                     ("operation", "top_operations_ms_per_step")):
    rows = list(record[key].items())[:top]
    total = record["traced_ms_per_step"] or 1.0
    print(f"\n| {title} | ms per step | share |\n|---|---|---|")
    for name, ms in rows:
      print(f"| {name} | {ms} | {ms / total:.1%} |")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
  parser.add_argument("--program", choices=PROGRAMS, required=True)
  parser.add_argument("--steps-per-call", type=int, default=None, help="override the recipe's steps per call")
  parser.add_argument("--conv-path", choices=layers.CONV_PATHS, default="auto")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--top", type=int, default=12)
  parser.add_argument("--json", action="store_true", help="print the record as one JSON line")
  parser.add_argument("--out", default=None, help="append the record as a JSON line to this file")
  args = parser.parse_args(argv)
  record = profile(args.program, steps_per_call=args.steps_per_call, conv_path=args.conv_path, repeats=args.repeats)
  if args.out:
    with open(args.out, "a") as f:
      f.write(json.dumps(record) + "\n")
  if args.json:
    print(json.dumps(record))
  else:
    _print(record, args.top)
  return 0


if __name__ == "__main__":
  with contextlib.suppress(BrokenPipeError):
    sys.exit(main())
