"""The feature-generator registry (ZS3Net step 1): one entry per ``generator.kind``.

Every stage, the retraining (step 2), the zero-shot cross-validation of the calibration, the
prediction command and the report reach a generator only through this registry, never
through a string test or an attribute. A kind (:class:`zs3core.generators.base.GeneratorKind`)
provides ``build``, ``fit`` and ``sample`` (graph-conditioned sampling included) and its
display ``label``:

* ``gmmn``: ZS3Net's GMMN (:mod:`zs3core.generators.gmmn`);
* ``gc``: ZS3Net + GC, graph convolutions over the masks' connected components
  (:mod:`zs3core.generators.gc`);
* ``pading``: PADing's primitive generator and structure losses (:mod:`zs3core.generators.pading`).

Adding a kind: one module (network, fit loop, a :class:`GeneratorKind` subclass), one line in
:data:`KINDS`, one ``conf/generator/<name>.yaml``.
"""
from __future__ import annotations

import torch
from torch import nn

from zs3core.generators.base import FitData, GeneratorKind, SampleContext, pool_context, sample_context
from zs3core.generators.gc import GCKind
from zs3core.generators.gmmn import GMMNKind
from zs3core.generators.pading import PADingKind
from zs3core.io import Zs3Error

KINDS: dict[str, GeneratorKind] = {k.name: k for k in (GMMNKind(), GCKind(), PADingKind())}
"""Every generator kind, by its ``generator.kind`` value."""

__all__ = ["KINDS", "FitData", "GeneratorKind", "SampleContext", "pool_context", "sample_context", "get_kind", "build_generator",
           "save_generator", "load_generator"]


def get_kind(name: str) -> GeneratorKind:
    """The registered kind named ``name``.

    Raises:
        Zs3Error: unknown kind (naming ``generator.kind`` and the registered kinds).
    """
    if name not in KINDS:
        raise Zs3Error(f"generator.kind: unknown generator '{name}'; available: {sorted(KINDS)}")
    return KINDS[name]


def build_generator(params, embed_dim: int, feature_dim: int) -> nn.Module:
    """The network of ``params.kind`` (``params``: the ``generator`` view of :mod:`zs3core.config`)."""
    return get_kind(params.kind).build(params, embed_dim, feature_dim)


def save_generator(gen: nn.Module, params, embed_dim: int, feature_dim: int, path) -> None:
    """Save a fitted generator with what :func:`load_generator` needs (its params as plain data).

    Raises:
        Zs3Error: a weight is NaN or infinite (nothing is written).
    """
    from zs3core.config import as_dict
    from zs3core.io import check_finite

    check_finite(gen, str(path))
    torch.save({"state_dict": gen.state_dict(), "params": as_dict(params), "embed_dim": embed_dim,
                "feature_dim": feature_dim}, path)


def load_generator(path):
    """Rebuild a generator saved by :func:`save_generator`: (network on cpu, its ``generator`` view)."""
    from zs3core.config import GeneratorParams, parse

    ck = torch.load(path, map_location="cpu", weights_only=False)
    params = parse(GeneratorParams, ck["params"], "generator")
    gen = build_generator(params, ck["embed_dim"], ck["feature_dim"])
    gen.load_state_dict(ck["state_dict"])
    return gen, params
