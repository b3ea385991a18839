"""Typed, validated views of ``params.yaml``: one frozen dataclass per parameter group.

``params.yaml`` is the composition of ``conf/`` (Hydra, through ``dvc exp run -S``); every
default lives there and nowhere else. :func:`load_config` reads it once, at a stage's start,
and checks every key of every group before any work is done: a missing key, an unknown key
(a typo), a value of the wrong type or out of range is one :class:`zs3core.io.Zs3Error` that
names the key, the allowed values and what was found, e.g.

    params.yaml: backbone.lr must be a number > 0, got 'fast'

Each field is declared with :func:`spec` (type, bounds, choices, whether null is allowed);
nested groups are dataclasses themselves. The views are frozen: a stage cannot change a
parameter behind DVC's back.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zs3core.io import Zs3Error, read_yaml

_NUM = (int, float)


def spec(kind: Any, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
         le: float | None = None, choices: tuple | None = None, null: bool = False, item: Any = None,
         min_items: int = 0, doc: str = ""):
    """A dataclass field carrying its validation rule.

    Args:
        kind: ``int``, ``float``, ``bool``, ``str``, ``list``, ``dict`` or a nested view class.
        gt / ge / lt / le: numeric bounds. choices: allowed values. null: ``None`` allowed.
        item: for lists, the type of each element (``int``, ``float``, ``str``).
        min_items: for lists, the minimum length. doc: one line shown in errors.
    """
    return field(metadata={"kind": kind, "gt": gt, "ge": ge, "lt": lt, "le": le, "choices": choices,
                           "null": null, "item": item, "min_items": min_items, "doc": doc})


def _describe(m: dict) -> str:
    kind = m["kind"]
    if m["choices"] is not None:
        text = "one of " + ", ".join(repr(c) for c in m["choices"])
    elif kind is bool:
        text = "true or false"
    elif kind in (int, float):
        text = "an integer" if kind is int else "a number"
        bounds = [f"{op} {v:g}" for op, v in ((">", m["gt"]), (">=", m["ge"]), ("<", m["lt"]), ("<=", m["le"]))
                  if v is not None]
        if bounds:
            text += " " + " and ".join(bounds)
    elif kind is list:
        text = "a list" + (f" of {m['item'].__name__}" if m["item"] else "")
        if m["min_items"]:
            text += f" with at least {m['min_items']} item(s)"
    elif kind is dict:
        text = "a mapping"
    else:
        text = getattr(kind, "__name__", str(kind))
    return text + (" or null" if m["null"] else "")


def _check_scalar(value: Any, kind: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, _NUM) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    return True


def _value(key: str, value: Any, m: dict) -> Any:
    """Validate one value against its rule; return it converted (floats, tuples)."""
    def bad() -> Zs3Error:
        return Zs3Error(f"params.yaml: {key} must be {_describe(m)}, got {value!r}")

    if value is None:
        if m["null"]:
            return None
        raise bad()
    kind = m["kind"]
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise bad()
        return parse(kind, value, key)
    if kind is list:
        if not isinstance(value, list) or len(value) < m["min_items"]:
            raise bad()
        if m["item"] is not None and not all(_check_scalar(v, m["item"]) for v in value):
            raise bad()
        items = [float(v) for v in value] if m["item"] is float else list(value)
        for v in items:
            if m["choices"] is not None and v not in m["choices"]:
                raise bad()
        return tuple(items)
    if kind is dict:
        if not isinstance(value, dict):
            raise bad()
        return dict(value)
    if not _check_scalar(value, kind):
        raise bad()
    if m["choices"] is not None and value not in m["choices"]:
        raise bad()
    if kind in (int, float):
        v = float(value)
        if ((m["gt"] is not None and not v > m["gt"]) or (m["ge"] is not None and not v >= m["ge"])
                or (m["lt"] is not None and not v < m["lt"]) or (m["le"] is not None and not v <= m["le"])):
            raise bad()
        return float(value) if kind is float else int(value)
    return value


def parse(cls, raw: dict, prefix: str):
    """Build the view ``cls`` from the mapping ``raw`` found at ``prefix`` in params.yaml.

    Raises:
        Zs3Error: a missing or unknown key, or a bad value (naming ``prefix.key``).
    """
    if not isinstance(raw, dict):
        raise Zs3Error(f"params.yaml: {prefix} must be a mapping, got {raw!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise Zs3Error(f"params.yaml: unknown key(s) {', '.join(f'{prefix}.{k}' for k in unknown)}; "
                       f"{prefix} has {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        if f.name not in raw:
            if "kind" in f.metadata and f.metadata["null"] and "Optional" in str(hints.get(f.name, "")):
                values[f.name] = None
                continue
            raise Zs3Error(f"params.yaml: missing key '{key}' ({_describe(f.metadata)})")
        values[f.name] = _value(key, raw[f.name], f.metadata)
    view = cls(**values)
    check = getattr(view, "check", None)
    if check:
        check(prefix)
    return view


def as_dict(view) -> dict:
    """The view as plain JSON-able data (tuples become lists), e.g. to save beside a model."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(view)


def load_yaml_params(path: str | Path = "params.yaml") -> dict:
    """params.yaml as a nested dict.

    Raises:
        Zs3Error: the file is missing or not a mapping.
    """
    p = read_yaml(path)
    if not isinstance(p, dict):
        raise Zs3Error(f"{path}: expected a mapping of parameter groups")
    return p
