"""Plain-data round trips for trees of frozen config dataclasses (model and training configs).

* :func:`to_plain` -- nested dicts/lists/scalars (what yaml and json hold);
* :func:`from_plain` -- back to the dataclass tree, type hints deciding which values are nested
  dataclasses; lists become tuples; numbers written ``1e-4`` (a string to PyYAML) become floats
  where the field is a float; unknown keys are an error;
* :func:`with_dotted_overrides` -- a copy with ``{"section.key": value}`` overrides applied;
* :func:`parse_dotted_overrides` -- ``KEY=VALUE`` command-line items as such overrides.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")


def to_plain(value: Any) -> Any:
    """Dataclasses, dicts, lists and tuples as nested dicts and lists of plain values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def _as_tuple(value: list[Any]) -> tuple[Any, ...]:
    return tuple(_as_tuple(v) if isinstance(v, list) else v for v in value)


def from_plain(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build ``cls`` (a dataclass) from plain data; nested sections build their own dataclass."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise KeyError(f"unknown key {key!r} for {cls.__name__}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            kwargs[key] = from_plain(hint, value)
        elif isinstance(value, list):
            kwargs[key] = _as_tuple(value)
        elif hint is float and isinstance(value, str):
            kwargs[key] = _float(value, cls.__name__, key)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def _float(text: str, owner: str, key: str) -> float:
    """YAML 1.1 (PyYAML) reads ``1e-4`` as a string (it wants ``1.0e-4``): accept it for a float."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{owner}.{key} must be a number, got {text!r}") from None


def with_dotted_overrides(instance: T, overrides: Mapping[str, Any], what: str = "config") -> T:
    """A copy of ``instance`` with dotted-path overrides; unknown sections or keys raise KeyError."""
    data = to_plain(instance)
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise KeyError(f"unknown {what} section {part!r} in {dotted!r}")
            node = node[part]
        if leaf not in node:
            raise KeyError(f"unknown {what} key {dotted!r}")
        node[leaf] = value
    return from_plain(type(instance), data)


def parse_dotted_overrides(items: typing.Iterable[str], option: str = "--set") -> dict[str, Any]:
    """``["tracker.iters=2", ...]`` -> ``{"tracker.iters": 2}``, each value read as YAML."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{option} expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides
