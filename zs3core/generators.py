"""The feature-generator registry (ZS3Net step 1): one entry per ``generator.kind``.

Every stage, the retraining (step 2), the zero-shot cross-validation of the calibration and
the report reach a generator only through this registry, never through a string test or an
attribute. A kind provides:

* ``build(params, embed_dim, feature_dim)``: the network;
* ``fit(gen, data, classes, params, rng, device, ckpt)``: train it on real features of
  ``classes`` with the class-wise MMD (:mod:`zs3core.mmd`), returning per-step loss curves;
* ``sample(gen, emb, classes, n, context, rng, device)``: ``n`` synthetic features per class,
  in training mode ("sampled as fitted", :func:`zs3core.generation.generate`);
* ``label(params)``: its display name in tables and figures.

``FitData`` carries what fitting may read: cached real features of the labelled images, their
labels and image rows, and the images' label maps at feature resolution (the graph-context
kind builds its graphs from them). ``SampleContext`` carries what sampling may read: for the
graph-context kind, the graphs of the masks to generate from (ZS3Net §2.2: the masks of the
unlabelled pool's images, never their features).

Adding a kind: one module with its network and training loop, one :class:`GeneratorKind`
subclass here, one line in :data:`KINDS`, and one ``conf/generator/<name>.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from zs3core.checkpoint import Checkpoint
from zs3core.graphs import RegionGraph
from zs3core.io import Zs3Error
from zs3core.mmd import MMDLoss


@dataclass
class FitData:
    """Real features a generator is fitted to.

    Attributes:
        features: (N, d_x) float16/float32 cached pixel features.
        labels: (N,) int64 class ids. image: (N,) int64 image row of each feature.
        embeddings: (C, d_a) float32 class embeddings, row = class id.
        label_maps: {image row: (h, w) uint8 label map at feature resolution}, for the
            images of ``image`` (graph-context kind); may be empty for the others.
        void: label values that form no graph node (void, 255).
    """

    features: torch.Tensor
    labels: torch.Tensor
    image: torch.Tensor
    embeddings: torch.Tensor
    label_maps: dict = field(default_factory=dict)
    void: tuple[int, ...] = (255,)


@dataclass
class SampleContext:
    """What sampling may read: the graphs to generate from (graph-context kind only)."""

    graphs: list[RegionGraph] = field(default_factory=list)


class GeneratorKind:
    """Interface of one generator kind (see the module docstring)."""

    name: str = ""
    needs_graphs: bool = False

    def build(self, params: dict, embed_dim: int, feature_dim: int) -> nn.Module:
        raise NotImplementedError

    def fit(self, gen: nn.Module, data: FitData, classes, params: dict, rng: torch.Generator,
            device: torch.device, ckpt: Checkpoint | None = None, unseen=()) -> dict[str, list[float]]:
        raise NotImplementedError

    def sample(self, gen: nn.Module, emb: torch.Tensor, classes, n_per_class: int, context: SampleContext,
               rng: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        from zs3core.generation import generate

        return generate(gen, emb, classes, n_per_class, device)

    def label(self, params: dict) -> str:
        return self.name


def _present(data: FitData, classes) -> list[int]:
    return [int(c) for c in classes if bool((data.labels == int(c)).any())]


class GMMNKind(GeneratorKind):
    """ZS3Net's GMMN (paper §2.2, §3.1): :class:`zs3core.models.gmmn.GMMN`."""

    name = "gmmn"

    def build(self, params, embed_dim, feature_dim):
        from zs3core.models.gmmn import GMMN

        return GMMN(embed_dim, int(params.get("noise_dim") or embed_dim), feature_dim, int(params["hidden"]),
                    float(params["leaky_slope"]), float(params["dropout"]))

    def fit(self, gen, data, classes, params, rng, device, ckpt=None, unseen=()):
        from zs3core.generation import train_generator

        return {"mmd": train_generator(gen, data.features, data.labels, data.embeddings, _present(data, classes),
                                       MMDLoss.from_params(params["mmd"]), int(params["steps"]),
                                       int(params["samples_per_class"]), float(params["lr"]), rng, device, ckpt)}

    def label(self, params):
        return "GMMN"


class GCKind(GMMNKind):
    """ZS3Net + GC (paper §2.2 "Graph-context encoding", Table 3): :class:`zs3core.models.gcn.GCGenerator`."""

    name = "gc"
    needs_graphs = True

    def build(self, params, embed_dim, feature_dim):
        from zs3core.models.gcn import GCGenerator

        return GCGenerator(embed_dim, int(params.get("noise_dim") or embed_dim), feature_dim, int(params["hidden"]),
                           float(params["leaky_slope"]), float(params["dropout"]))

    def fit(self, gen, data, classes, params, rng, device, ckpt=None, unseen=()):
        from zs3core.generation import mask_graphs, train_graph_generator

        keep = {int(c) for c in classes}
        other = tuple(v for v in range(256) if v not in keep)  # only the fitted classes form nodes
        rows = sorted({int(r) for r in torch.unique(data.image)} & set(data.label_maps))
        graphs = mask_graphs(data.label_maps, rows, other)
        return {"mmd": train_graph_generator(gen, data.features, data.labels, data.image, graphs, data.embeddings,
                                             MMDLoss.from_params(params["mmd"]), int(params["steps"]),
                                             int(params["graphs_per_step"]), int(params["samples_per_class"]),
                                             float(params["lr"]), rng, device, ckpt)}

    def sample(self, gen, emb, classes, n_per_class, context, rng, device):
        from zs3core.generation import generate_from_graphs

        return generate_from_graphs(gen, emb, context.graphs, classes, n_per_class, rng, device)

    def label(self, params):
        return "GC"


class PrimitiveKind(GeneratorKind):
    """PADing's primitive generator (He et al. CVPR 2023 §3.2-3.4): :mod:`zs3core.pading`."""

    name = "primitive"

    def build(self, params, embed_dim, feature_dim):
        from zs3core.models.primitive import PrimitiveGenerator

        if "primitive" not in params:
            raise Zs3Error("generator.primitive: missing; select the group with -S generator=primitive (or pading)")
        return PrimitiveGenerator.from_params(params["primitive"], embed_dim, feature_dim)

    def fit(self, gen, data, classes, params, rng, device, ckpt=None, unseen=()):
        from zs3core.pading import train_primitive

        return train_primitive(gen, data.features, data.labels, data.embeddings, _present(data, classes), list(unseen),
                               params, rng, device, ckpt)

    def label(self, params):
        pr = params.get("primitive", {})
        name = {(True, True): "PADing (primitives + alignment + disentanglement)", (True, False): "primitives + alignment",
                (False, True): "primitives + disentanglement"}.get((bool(pr.get("alignment")), bool(pr.get("disentangle"))),
                                                                   "primitives only")
        return name + (", linear+ReLU head" if pr.get("output_head") == "linear_relu" else "")


KINDS: dict[str, GeneratorKind] = {k.name: k for k in (GMMNKind(), GCKind(), PrimitiveKind())}
"""Every generator kind, by its ``generator.kind`` value."""


def get_kind(name: str) -> GeneratorKind:
    """The registered kind named ``name``.

    Raises:
        Zs3Error: unknown kind (naming ``generator.kind`` and the registered kinds).
    """
    if name not in KINDS:
        raise Zs3Error(f"generator.kind: unknown generator '{name}'; available: {sorted(KINDS)}")
    return KINDS[name]


def build_generator(params: dict, embed_dim: int, feature_dim: int) -> nn.Module:
    """The network of ``params['kind']`` (the ``generator`` params group)."""
    return get_kind(params.get("kind")).build(params, embed_dim, feature_dim)


def save_generator(gen: nn.Module, params: dict, embed_dim: int, feature_dim: int, path) -> None:
    """Save a fitted generator with what :func:`load_generator` needs.

    Raises:
        Zs3Error: a weight is NaN or infinite (nothing is written).
    """
    from zs3core.io import check_finite

    check_finite(gen, str(path))
    torch.save({"state_dict": gen.state_dict(), "params": params, "embed_dim": embed_dim,
                "feature_dim": feature_dim}, path)


def load_generator(path) -> tuple[nn.Module, dict]:
    """Rebuild a generator saved by :func:`save_generator`: (network on cpu, its ``generator`` params)."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    gen = build_generator(ck["params"], ck["embed_dim"], ck["feature_dim"])
    gen.load_state_dict(ck["state_dict"])
    return gen, ck["params"]
