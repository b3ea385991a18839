"""Adjacency graphs of semantic connected components (ZS3Net §2.2 "Graph-context encoding", Fig. 3).

A label map is turned into the graph G = (V, E) of its semantic connected components: each
node is one 4-connected region of a single class, and two nodes are joined when their regions
share a boundary (they are then of different classes). The graph-context generator
(:mod:`zs3core.generators.gc`) is conditioned on such graphs; the graph convolution uses Kipf and
Welling's renormalised adjacency D^-1/2 (A + I) D^-1/2 (ICLR 2017, eq. 2).

Connected components come from ``scipy.ndimage.label``; everything else is numpy/torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage


@dataclass
class RegionGraph:
    """Connected-component graph of one label map.

    Attributes:
        components: (h, w) int64 node id of every pixel, -1 for void/ignored pixels.
        node_class: (n,) int64 class id of each node.
        adjacency: (n, n) bool, symmetric, False on the diagonal.
    """

    components: np.ndarray
    node_class: np.ndarray
    adjacency: np.ndarray

    @property
    def num_nodes(self) -> int:
        return len(self.node_class)


def region_graph(label_map: np.ndarray, ignore=(255,)) -> RegionGraph:
    """Build the region adjacency graph of a (h, w) integer label map.

    Args:
        label_map: (h, w) int class ids (any int dtype).
        ignore: label values that form no node (void; under the ``ignore`` protocol also the
            unseen classes of training images).

    Returns:
        :class:`RegionGraph`; nodes are numbered class by class (ascending class id), then in
        scipy's raster order within a class.

    Raises:
        ValueError: ``label_map`` is not 2-D.
    """
    lab = np.asarray(label_map)
    if lab.ndim != 2:
        raise ValueError(f"region_graph needs a (h, w) label map, got shape {lab.shape}")
    comp = np.full(lab.shape, -1, dtype=np.int64)
    node_class: list[int] = []
    skip = {int(v) for v in ignore}
    for c in np.unique(lab):
        if int(c) in skip:
            continue
        regions, k = ndimage.label(lab == c)  # 4-connectivity
        comp[regions > 0] = regions[regions > 0] - 1 + len(node_class)
        node_class.extend([int(c)] * k)
    n = len(node_class)
    adj = np.zeros((n, n), dtype=bool)
    for a, b in ((comp[:, :-1], comp[:, 1:]), (comp[:-1, :], comp[1:, :])):
        m = (a != b) & (a >= 0) & (b >= 0)
        adj[a[m], b[m]] = True
    adj |= adj.T
    return RegionGraph(comp, np.array(node_class, dtype=np.int64), adj)


def normalized_adjacency(adj: torch.Tensor) -> torch.Tensor:
    """Kipf & Welling's propagation matrix D^-1/2 (A + I) D^-1/2 for a (n, n) 0/1 adjacency.

    Returns:
        (n, n) float32, symmetric; row i mixes node i with its neighbours.
    """
    a = adj.float() + torch.eye(adj.shape[0], device=adj.device)
    d = a.sum(1).rsqrt()
    return d[:, None] * a * d[None, :]


def stack_graphs(graphs: list[RegionGraph], props: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack graphs into one block-diagonal graph, sparse.

    Args:
        graphs: the graphs; props: their (n_i, n_i) propagation matrices
            (:func:`normalized_adjacency`, computed once per graph by the caller).

    Returns:
        (node_class (N,) int64, coalesced sparse COO (N, N) float32 block-diagonal propagation matrix).
    """
    cls = torch.cat([torch.from_numpy(g.node_class) for g in graphs])
    idx, val, off = [], [], 0
    for p in props:
        nz = p.nonzero().T
        idx.append(nz + off)
        val.append(p[nz[0], nz[1]])
        off += p.shape[0]
    prop = torch.sparse_coo_tensor(torch.cat(idx, 1), torch.cat(val), (off, off), check_invariants=False).coalesce()
    return cls, prop


def batch_graphs(graphs: list[RegionGraph]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack graphs into one block-diagonal graph, dense.

    Returns:
        (node_class (N,) int64, propagation matrix (N, N) float32 from
        :func:`normalized_adjacency`, graph index of each node (N,) int64).
    """
    cls, prop = stack_graphs(graphs, [normalized_adjacency(torch.from_numpy(g.adjacency)) for g in graphs])
    owner = torch.cat([torch.full((g.num_nodes,), i, dtype=torch.long) for i, g in enumerate(graphs)])
    return cls, prop.to_dense(), owner


def mask_graphs(maps: dict, rows, ignore) -> dict[int, RegionGraph]:
    """Connected-component graphs of label maps.

    Args:
        maps: {row: (h, w) uint8 label map at feature resolution} (extract_features).
        rows: which rows to use. ignore: class ids that form no node (void; for training
            graphs also the unseen classes).

    Returns:
        {row: RegionGraph} for the rows whose graph has at least one node.
    """
    out = {}
    for r in rows:
        g = region_graph(maps[r].numpy(), ignore=tuple(ignore))
        if g.num_nodes:
            out[int(r)] = g
    return out
