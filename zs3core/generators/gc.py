"""The graph-context generator kind, "ZS3Net + GC" (ZS3Net §2.2 "Graph-context encoding", §3.1,
Table 3): network, fitting on the masks' graphs, sampling from graphs.

The GMMN's two linear layers are replaced by graph convolutions (Kipf & Welling, ICLR 2017):
each node of a segmentation mask's connected-component graph (:mod:`zs3core.graphs`) enters
as [class embedding a_v ; noise z_v], and the generator outputs one feature per node. Hidden
size, LeakyReLU, dropout and the MMD loss are the GMMN's ("no change in other
hyper-parameters", §3.1).

Training graphs come from the label maps of the labelled images, fitted classes only. The
graphs for generating (unseen, and seen for step 2) features come, as in the paper, from the
*masks* of the unlabelled pool's images; their image features are never used.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zs3core.checkpoint import Checkpoint
from zs3core.generators.base import FitData, GeneratorKind, SampleContext
from zs3core.graphs import RegionGraph, mask_graphs, normalized_adjacency, stack_graphs
from zs3core.io import Zs3Error
from zs3core.loop import descend, run_steps
from zs3core.mmd import MMDLoss


class GraphConv(nn.Module):
    """One graph convolution H' = Â H W (+ b): (N, d_in) -> (N, d_out) with a (N, N) propagation matrix Â."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, h: torch.Tensor, prop: torch.Tensor) -> torch.Tensor:
        h = self.linear(h)
        return torch.sparse.mm(prop, h) if prop.is_sparse else prop @ h


class GCGenerator(nn.Module):
    """Graph-context feature generator.

    Args:
        embed_dim: d_a. noise_dim: d_z. feature_dim: d_x. hidden: hidden units (256).
        leaky_slope: LeakyReLU slope (0.2). dropout: dropout after the hidden layer (0.5).

    ``forward(emb, prop)`` takes (N, d_a) node embeddings and the (N, N) float propagation
    matrix of a (batched) graph, draws noise (N, d_z) and returns (N, d_x) node features.
    With ``prop`` = identity (isolated nodes) it is exactly a GMMN.
    """

    def __init__(self, embed_dim: int, noise_dim: int, feature_dim: int, hidden: int, leaky_slope: float,
                 dropout: float):
        super().__init__()
        self.noise_dim = noise_dim
        self.gc1 = GraphConv(embed_dim + noise_dim, hidden)
        self.act = nn.LeakyReLU(leaky_slope)
        self.drop = nn.Dropout(dropout)
        self.gc2 = GraphConv(hidden, feature_dim)

    def forward(self, emb: torch.Tensor, prop: torch.Tensor | None = None,
                rng: torch.Generator | None = None) -> torch.Tensor:
        if prop is None:
            prop = torch.eye(emb.shape[0], device=emb.device, dtype=emb.dtype)
        z = torch.randn(emb.shape[0], self.noise_dim, generator=rng, device=emb.device, dtype=emb.dtype)
        h = self.drop(self.act(self.gc1(torch.cat([emb, z], dim=1), prop)))
        return self.gc2(h, prop)


def fit_graph_generator(gen: nn.Module, feats: torch.Tensor, labels: torch.Tensor, image: torch.Tensor,
                        graphs: dict[int, RegionGraph], emb: torch.Tensor, loss_fn: MMDLoss, steps: int, graphs_per_step: int,
                        samples_per_class: int, lr: float, rng: torch.Generator,
                        device: torch.device, ckpt: Checkpoint | None = None, on_step=None,
                        relation=None) -> dict[str, list[float]]:
    """Fit the graph-context generator with the class-wise MMD (ZS3Net §2.2 and §3.1, "ZS3Net + GC").

    Each step draws ``graphs_per_step`` training graphs, generates one feature per node
    (input [a_v ; z_v]) and compares, class by class, the node features with the real cached
    pixel features of the same images (at most ``samples_per_class`` per class).

    Args:
        gen: :class:`GCGenerator`.
        feats: (N, d_x) real features; labels: (N,) int64 class ids; image: (N,) int64 row of
            each feature (the keys of ``graphs``).
        graphs: {row: RegionGraph} of the labelled images, seen classes only.
        emb: (C, d_a) float32 class embeddings.
        rng: seeded torch.Generator (graph and feature draws).
        ckpt: optional checkpoint (resume after an interruption). on_step: see :func:`zs3core.loop.run_steps`.
        relation: optional :class:`zs3core.generators.relation.RelationTerms`, added to the MMD
            when enabled; its features are generated as isolated nodes (``gen(emb[labels])``,
            identity propagation), since an unseen class has no graph to be drawn from.

    Returns:
        {"mmd": the loss of every step}; with relation terms on, also "total",
        "relation_pairwise" and "relation_listwise" (unweighted).

    Raises:
        Zs3Error: no graph has cached features.
    """
    rows = [r for r in graphs if (image == r).any()]
    if not rows:
        raise Zs3Error("fit_generator: no labelled image has both a graph and cached features")
    by_row = {r: torch.nonzero(image == r).squeeze(1) for r in rows}
    props = {r: normalized_adjacency(torch.from_numpy(graphs[r].adjacency)) for r in rows}
    gen.to(device).train()
    opt = torch.optim.Adam(gen.parameters(), lr=lr)
    emb = emb.to(device)
    def step(i: int) -> dict:
        pick = [rows[j] for j in torch.randperm(len(rows), generator=rng)[:graphs_per_step].tolist()]
        cls, prop = stack_graphs([graphs[r] for r in pick], [props[r] for r in pick])
        idx = torch.cat([by_row[r] for r in pick])
        idx = idx[torch.randperm(len(idx), generator=rng)]
        real_l = labels[idx]
        keep = torch.cat([torch.nonzero(real_l == c).squeeze(1)[:samples_per_class] for c in torch.unique(cls)])
        real, real_l = feats[idx[keep]].float().to(device), real_l[keep].to(device)
        fake = gen(emb[cls.to(device)], prop.to(device))
        loss = loss_fn.classwise(real, real_l, fake, cls.to(device))
        if relation is None:
            return {"mmd": descend(opt, loss, "fit_generator (GC, MMD)", i + 1)}
        return relation.descend(opt, loss, lambda lab: gen(emb[lab]), "fit_generator (GC, MMD)", i + 1)

    return run_steps(step, steps, {"gen": gen, "opt": opt}, rng, ckpt, "GC generator (MMD)", on_step, summary_every=500)


@torch.no_grad()
def generate_from_graphs(gen: nn.Module, emb: torch.Tensor, graphs: list[RegionGraph], classes, n_per_class: int,
                         rng: torch.Generator, device: torch.device, graphs_per_step: int = 32,
                         max_rounds: int = 10000) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``n_per_class`` node features for each class id from graphs that contain it.

    Rounds of ``graphs_per_step`` random graphs (fresh noise each round) are run through the
    generator (in training mode, as :func:`generate`) until every class has ``n_per_class`` features. A class that is in no graph is
    generated from one-node graphs (no context), with a printed note.

    Returns:
        ((n*K, d_x) float32, (n*K,) int64), grouped by class in the order of ``classes``.
    """
    classes = [int(c) for c in classes]
    if not classes:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    have = {c: any((g.node_class == c).any() for g in graphs) for c in classes}
    missing = [c for c, ok in have.items() if not ok]
    if missing:
        # no mask carries the class: fall back to one-node graphs (no context; the GC generator
        # then reduces to a GMMN with graph-convolution weights)
        print(f"note: class id(s) {missing} appear in no mask; generated from one-node graphs without context")
        graphs = list(graphs) + [RegionGraph(np.zeros((1, 1), np.int64), np.array([c]), np.zeros((1, 1), bool))
                                 for c in missing]
    pool = [g for g in graphs if np.isin(g.node_class, classes).any()]
    props = [normalized_adjacency(torch.from_numpy(g.adjacency)) for g in pool]
    gen.to(device).train()  # sampled as fitted (dropout on), as :func:`generate`
    got = {c: [] for c in classes}
    count = dict.fromkeys(classes, 0)
    for _ in range(max_rounds):
        if all(count[c] >= n_per_class for c in classes):
            break
        pick = torch.randperm(len(pool), generator=rng)[:graphs_per_step].tolist()
        cls, prop = stack_graphs([pool[i] for i in pick], [props[i] for i in pick])
        out = gen(emb[cls].to(device), prop.to(device)).float().cpu()
        for c in classes:
            if count[c] < n_per_class:
                f = out[cls == c][: n_per_class - count[c]]
                got[c].append(f)
                count[c] += len(f)
    feats = torch.cat([torch.cat(got[c]) for c in classes])
    labels = torch.cat([torch.full((count[c],), c) for c in classes]).long()
    return feats, labels


class GCKind(GeneratorKind):
    """ZS3Net + GC: one feature per node of a mask's connected-component graph."""

    name = "gc"
    needs_graphs = True

    def build(self, params, embed_dim, feature_dim):
        return GCGenerator(embed_dim, params.noise_dim or embed_dim, feature_dim, params.hidden, params.leaky_slope,
                           params.dropout)

    def fit(self, gen, data: FitData, classes, params, rng, device, ckpt=None, unseen=(), on_step=None):
        keep = {int(c) for c in classes}
        other = tuple(v for v in range(256) if v not in keep)  # only the fitted classes form nodes
        rows = sorted({int(r) for r in torch.unique(data.image)} & set(data.label_maps))
        graphs = mask_graphs(data.label_maps, rows, other)
        present = sorted({int(c) for c in torch.unique(data.labels)} & keep)
        return fit_graph_generator(gen, data.features, data.labels, data.image, graphs, data.embeddings,
                                   MMDLoss.from_params(params.mmd), params.steps, params.graphs_per_step,
                                   params.samples_per_class, params.lr, rng, device, ckpt, on_step,
                                   relation=self.relation_terms(params, data.embeddings, present, unseen, device))

    def sample(self, gen, emb, classes, n_per_class, context: SampleContext | None, rng, device):
        return generate_from_graphs(gen, emb, context.graphs if context else [], classes, n_per_class, rng, device)

    def label(self, params):
        return "GC"
