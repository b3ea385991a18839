"""Graph-context generator, "ZS3Net + GC" (ZS3Net §2.2 "Graph-context encoding", §3.1, Table 3).

The GMMN's two linear layers are replaced by graph convolutions (Kipf & Welling, ICLR 2017):
each node of a segmentation mask's connected-component graph (:mod:`zs3core.graphs`) enters
as [class embedding a_v ; noise z_v], and the generator outputs one feature per node. Hidden
size, LeakyReLU, dropout and the MMD loss are the GMMN's ("no change in other
hyper-parameters", §3.1).
"""
from __future__ import annotations

import torch
from torch import nn


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

    graph_conditioned = True

    def __init__(self, embed_dim: int, noise_dim: int, feature_dim: int, hidden: int = 256,
                 leaky_slope: float = 0.2, dropout: float = 0.5):
        super().__init__()
        self.noise_dim = noise_dim
        self.gc1 = GraphConv(embed_dim + noise_dim, hidden)
        self.act = nn.LeakyReLU(leaky_slope)
        self.drop = nn.Dropout(dropout)
        self.gc2 = GraphConv(hidden, feature_dim)

    def forward(self, emb: torch.Tensor, prop: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        if prop is None:
            prop = torch.eye(emb.shape[0], device=emb.device, dtype=emb.dtype)
        z = torch.randn(emb.shape[0], self.noise_dim, generator=generator, device=emb.device, dtype=emb.dtype)
        h = self.drop(self.act(self.gc1(torch.cat([emb, z], dim=1), prop)))
        return self.gc2(h, prop)
