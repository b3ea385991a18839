"""Connected-component graphs and the graph-context (GC) generator (ZS3Net §2.2)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zs3core.generators.gc import GCGenerator, fit_graph_generator, generate_from_graphs
from zs3core.graphs import batch_graphs, mask_graphs, normalized_adjacency, region_graph
from zs3core.mmd import MMDLoss, mmd2


def test_region_graph_by_hand():
    # class 1 forms two separate regions (top right, bottom middle); 255 is void
    m = np.array([[0, 0, 1, 1],
                  [0, 2, 2, 1],
                  [0, 0, 1, 255]])
    g = region_graph(m)
    # nodes class by class: 0 -> node 0; class 1 -> nodes 1 (top right), 2 (bottom); class 2 -> node 3
    assert g.node_class.tolist() == [0, 1, 1, 2]
    expected_comp = np.array([[0, 0, 1, 1],
                              [0, 3, 3, 1],
                              [0, 0, 2, -1]])
    np.testing.assert_array_equal(g.components, expected_comp)
    edges = {(0, 1), (0, 3), (1, 3), (2, 3), (0, 2)}
    expected = np.zeros((4, 4), bool)
    for a, b in edges:
        expected[a, b] = expected[b, a] = True
    np.testing.assert_array_equal(g.adjacency, expected)


def test_region_graph_ignores_given_classes():
    m = np.array([[0, 5, 1]])
    g = region_graph(m, ignore=(5, 255))
    assert g.node_class.tolist() == [0, 1]
    assert not g.adjacency.any()  # the ignored class separates them
    with pytest.raises(ValueError, match="label map"):
        region_graph(np.zeros((2, 2, 2)))


def test_normalized_adjacency_path_graph():
    adj = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    # A + I degrees: 2, 3, 2
    d = [2.0, 3.0, 2.0]
    expected = torch.zeros(3, 3)
    for i in range(3):
        for j in range(3):
            if i == j or adj[i, j]:
                expected[i, j] = 1.0 / (d[i] * d[j]) ** 0.5
    torch.testing.assert_close(normalized_adjacency(adj), expected)


def test_batch_graphs_block_diagonal():
    g1 = region_graph(np.array([[0, 1]]))
    g2 = region_graph(np.array([[2]]))
    cls, prop, owner = batch_graphs([g1, g2])
    assert cls.tolist() == [0, 1, 2] and owner.tolist() == [0, 0, 1]
    assert prop[0, 2] == 0 and prop[1, 2] == 0 and prop[2, 2] == 1.0
    assert prop[0, 1] == pytest.approx(0.5)


def test_gc_generator_uses_neighbours_only():
    torch.manual_seed(0)
    gen = GCGenerator(4, 3, 5, hidden=8, leaky_slope=0.2, dropout=0.0).eval()
    emb = torch.randn(3, 4)
    path = normalized_adjacency(torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 0]]))  # node 2 isolated
    z = torch.Generator().manual_seed(1)
    out = gen(emb, path, rng=z)
    emb2 = emb.clone()
    emb2[0] += 1.0  # change node 0: its neighbour 1 must change, isolated node 2 must not
    out2 = gen(emb2, path, rng=torch.Generator().manual_seed(1))
    assert not torch.allclose(out[1], out2[1])
    torch.testing.assert_close(out[2], out2[2])
    assert out.shape == (3, 5)


def _toy_graph_data(rng: np.random.Generator):
    """Label maps of 3 classes in vertical stripes; a feature of class c is mean_c + small noise."""
    means = torch.tensor([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 4.0, 0], [0, 0, 0, 4.0]])
    maps, feats, labels, image = {}, [], [], []
    for r in range(12):
        cls = rng.choice(3, size=3, replace=False)
        m = np.repeat(np.repeat(cls[None], 4, axis=0), 2, axis=1)  # (4, 6) three stripes
        maps[r] = torch.from_numpy(m.astype(np.uint8))
        for c in cls:
            feats.append(means[c] + 0.3 * torch.randn(10, 4))
            labels.append(torch.full((10,), int(c)))
            image.append(torch.full((10,), r))
    return maps, torch.cat(feats), torch.cat(labels), torch.cat(image), means


def test_train_graph_generator_reduces_mmd_and_generates():
    torch.manual_seed(0)
    maps, feats, labels, image, means = _toy_graph_data(np.random.default_rng(0))
    graphs = mask_graphs(maps, list(maps), {255})
    emb = torch.eye(4)
    gen = GCGenerator(4, 4, 4, hidden=32, leaky_slope=0.2, dropout=0.0)
    sig = [1.0, 2.0, 4.0]

    def seen_mmd():
        f, lab = generate_from_graphs(gen, emb, list(graphs.values()), [0, 1, 2], 60, torch.Generator().manual_seed(0),
                                      torch.device("cpu"), graphs_per_step=4)
        return sum(float(mmd2(feats[labels == c], f[lab == c], sig)) for c in range(3))

    before = seen_mmd()
    losses = fit_graph_generator(gen, feats, labels, image, graphs, emb, MMDLoss("paper", tuple(sig)), steps=300, graphs_per_step=4,
                                 samples_per_class=20, lr=1e-2, rng=torch.Generator().manual_seed(0),
                                 device=torch.device("cpu"))["mmd"]
    after = seen_mmd()
    assert len(losses) == 300
    assert after < 0.3 * before, (before, after)
    f, lab = generate_from_graphs(gen, emb, list(graphs.values()), [2, 0], 7, torch.Generator().manual_seed(0),
                                  torch.device("cpu"))
    assert lab.tolist() == [2] * 7 + [0] * 7 and f.shape == (14, 4)
    # class 3 is in no mask: one-node graphs, i.e. the generator without neighbours
    f3, lab3 = generate_from_graphs(gen, emb, list(graphs.values()), [3], 5, torch.Generator(), torch.device("cpu"))
    assert lab3.tolist() == [3] * 5 and f3.shape == (5, 4)
    single = normalized_adjacency(torch.zeros(1, 1, dtype=torch.bool))
    assert single.item() == 1.0
