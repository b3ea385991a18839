"""Typed access to ``params.yaml`` with clear errors.

``params.yaml`` is the composition of ``conf/`` (Hydra, via ``dvc exp run -S``); stages read
it through :func:`load_params` and ask for keys with :func:`get`, which names the missing
or ill-typed key instead of failing with a bare ``KeyError``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from zs3core.io import Zs3Error, read_yaml

_MISSING = object()


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read params.yaml as a nested dict.

    Raises:
        Zs3Error: the file is missing or not a mapping.
    """
    p = read_yaml(path)
    if not isinstance(p, dict):
        raise Zs3Error(f"{path}: expected a mapping of parameter groups")
    return p


def get(params: dict, key: str, default: Any = _MISSING, types: tuple | type | None = None) -> Any:
    """Value of a dotted key such as ``'backbone.lr'``.

    Raises:
        Zs3Error: the key is missing (and no default) or its value has the wrong type.
    """
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not _MISSING:
                return default
            raise Zs3Error(f"params.yaml: missing key '{key}'")
        node = node[part]
    if types is not None and node is not None and not isinstance(node, types):
        names = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        raise Zs3Error(f"params.yaml: '{key}' must be {names}, got {node!r}")
    return node


def stage_params(params: dict, *groups: str) -> dict:
    """The named top-level groups (for hashing the settings a stage depends on)."""
    return {g: params.get(g) for g in groups}
