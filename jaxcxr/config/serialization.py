"""JSON round trip of config dataclasses: `to_dict` and `from_dict`.

Checkpoints store `to_dict(config)` next to the weights and loaders rebuild the config
with `from_dict(ConfigType, data)`; nested dataclasses, optional fields and tuples are
restored from the type hints of the config class.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

__all__ = ["from_dict", "to_dict"]

T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
  """Converts a (nested) config dataclass to JSON-ready builtins (tuples become lists)."""
  if not dataclasses.is_dataclass(config) or isinstance(config, type):
    raise TypeError(f"expected a config dataclass instance, got {type(config).__name__}")

  def convert(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
      return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
      return [convert(v) for v in value]
    return value

  return convert(config)


def from_dict(config_type: type[T], data: dict[str, Any]) -> T:
  """Builds `config_type` from `to_dict` output; nested dataclasses and tuples are restored.

  Raises:
    ValueError: for unknown or missing fields, naming them.
  """
  if not isinstance(data, dict):
    raise ValueError(f"{config_type.__name__}: expected a JSON object, got {type(data).__name__}")
  hints = typing.get_type_hints(config_type)
  names = {f.name for f in dataclasses.fields(config_type)}
  unknown = sorted(set(data) - names)
  if unknown:
    raise ValueError(f"{config_type.__name__}: unknown field(s) {unknown}")
  kwargs = {}
  for name, value in data.items():
    kwargs[name] = _restore(hints[name], value)
  try:
    return config_type(**kwargs)
  except TypeError as e:
    raise ValueError(f"{config_type.__name__}: {e}") from None


def _restore(hint: Any, value: Any) -> Any:
  origin = typing.get_origin(hint)
  if origin in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if value is None:
      return None
    if len(args) == 1:
      return _restore(args[0], value)
    # A union of config classes: the one whose fields hold every key of the saved object.
    classes = [a for a in args if dataclasses.is_dataclass(a)]
    if classes and isinstance(value, dict):
      fitting = [a for a in classes if set(value) <= {f.name for f in dataclasses.fields(a)}]
      if len(fitting) != 1:
        raise ValueError(f"{' | '.join(a.__name__ for a in classes)}: the fields {sorted(value)} fit "
                         f"{len(fitting)} of them, not exactly one")
      return from_dict(fitting[0], value)
    return value
  if dataclasses.is_dataclass(hint):
    return from_dict(hint, value)
  if origin is tuple and isinstance(value, list):
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_restore(args[0], v) for v in value)
    return tuple(_restore(a, v) for a, v in zip(args, value))
  return value
