"""Networks: DeepLabv3+ (deeplab), the feature generators (gmmn, gcn, primitive) and the pixel classifier."""
from __future__ import annotations

import torch

from zs3core.io import Zs3Error
from zs3core.models.gcn import GCGenerator
from zs3core.models.gmmn import GMMN

GENERATOR_KINDS = ("gmmn", "gc", "primitive")


def build_generator(g: dict, embed_dim: int, feature_dim: int) -> torch.nn.Module:
    """The generator named by ``generator.kind`` (params group ``generator``).

    Args:
        g: the ``generator`` params (kind, hidden, noise_dim, leaky_slope, dropout; for
            ``primitive`` the nested ``primitive`` settings).
        embed_dim: d_a, size of the class embeddings. feature_dim: d_x.

    Raises:
        Zs3Error: unknown kind.
    """
    kind = g.get("kind")
    if kind not in GENERATOR_KINDS:
        raise Zs3Error(f"generator.kind: unknown generator '{kind}'; available: {list(GENERATOR_KINDS)}")
    if kind == "primitive":
        from zs3core.models.primitive import PrimitiveGenerator

        if "primitive" not in g:
            raise Zs3Error("generator.primitive: missing; select the group with -S generator=primitive (or pading)")
        return PrimitiveGenerator.from_params(g["primitive"], embed_dim, feature_dim)
    noise = int(g.get("noise_dim") or embed_dim)
    if kind == "gc":
        return GCGenerator(embed_dim, noise, feature_dim, int(g["hidden"]), float(g["leaky_slope"]), float(g["dropout"]))
    return GMMN(embed_dim, noise, feature_dim, int(g["hidden"]), float(g["leaky_slope"]), float(g["dropout"]))


def load_generator(path) -> torch.nn.Module:
    """Rebuild a generator saved by the fit_generator stage (cpu, eval mode)."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    gen = build_generator(ck["params"], ck["embed_dim"], ck["feature_dim"])
    gen.load_state_dict(ck["state_dict"])
    return gen.eval()
