"""Relation terms after CSRL (zs3core/generators/relation.py): brute force on hand-made prototypes,
their effect on a fitted generator, and that the default (off) changes nothing."""
from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from zs3core.compose import compose
from zs3core.config import GeneratorParams, MMDParams, RelationParams, parse
from zs3core.generators import FitData, get_kind
from zs3core.generators.relation import (RelationTerms, class_prototypes, cosine_matrix, listwise_relation_loss,
                                         pairwise_relation_loss)
from zs3core.io import Zs3Error

CPU = torch.device("cpu")
CONF = __import__("pathlib").Path(__file__).resolve().parents[1] / "conf"


def _cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def pairwise_brute(protos, emb, tau):
    """Explicit loops over anchors i and ordered pairs (j, k) of other distinct classes:
    p log(p/q) + (1-p) log((1-p)/(1-q)), p from the embeddings' cosines, q from the prototypes'."""
    k = len(protos)
    r = [[_cos(protos[i], protos[j]) for j in range(k)] for i in range(k)]
    s = [[_cos(emb[i], emb[j]) for j in range(k)] for i in range(k)]
    total, n = 0.0, 0
    for i, j, m in itertools.permutations(range(k), 3):
        p, q = _sig((s[i][j] - s[i][m]) / tau), _sig((r[i][j] - r[i][m]) / tau)
        total += p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
        n += 1
    return total / n


def listwise_brute(protos, emb, tau):
    """Explicit loops: for each anchor i, softmax over j != i of cos/τ; KL(word || feature); mean over i."""
    k = len(protos)
    total = 0.0
    for i in range(k):
        others = [j for j in range(k) if j != i]
        es = [math.exp(_cos(emb[i], emb[j]) / tau) for j in others]
        er = [math.exp(_cos(protos[i], protos[j]) / tau) for j in others]
        p = [x / sum(es) for x in es]
        q = [x / sum(er) for x in er]
        total += sum(a * math.log(a / b) for a, b in zip(p, q))
    return total / k


# hand-made: 4 class prototypes in 3-d and 4 word vectors in 2-d (relations disagree on purpose)
PROTOS = [[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 1.0, 0.2], [0.3, -0.2, 1.0]]
EMB = [[1.0, 0.1], [0.2, 1.0], [0.9, 0.5], [-0.7, 0.4]]


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_pairwise_and_listwise_match_brute_force(tau):
    r = cosine_matrix(torch.tensor(PROTOS, dtype=torch.float64))
    s = cosine_matrix(torch.tensor(EMB, dtype=torch.float64))
    assert float(pairwise_relation_loss(r, s, tau)) == pytest.approx(pairwise_brute(PROTOS, EMB, tau), rel=1e-9)
    assert float(listwise_relation_loss(r, s, tau)) == pytest.approx(listwise_brute(PROTOS, EMB, tau), rel=1e-9)


def test_zero_when_relations_agree_positive_when_order_swaps():
    s = cosine_matrix(torch.tensor(EMB, dtype=torch.float64))
    assert float(pairwise_relation_loss(s.clone(), s, 0.1)) == pytest.approx(0.0, abs=1e-12)
    assert float(listwise_relation_loss(s.clone(), s, 0.1)) == pytest.approx(0.0, abs=1e-12)
    # a constant shift of every relation changes neither the order nor the softmax
    assert float(listwise_relation_loss(s + 0.3, s, 0.1)) == pytest.approx(0.0, abs=1e-12)
    perm = [1, 0, 2, 3]                      # classes 0 and 1 swap their relations
    r = s[perm][:, perm]
    assert float(pairwise_relation_loss(r, s, 0.1)) > 0.05
    assert float(listwise_relation_loss(r, s, 0.1)) > 0.05


def test_gradient_reaches_the_features_only():
    s = cosine_matrix(torch.tensor(EMB))
    x = torch.tensor(PROTOS, requires_grad=True)
    labels = torch.arange(4)
    r = cosine_matrix(class_prototypes(x, labels, labels))
    (pairwise_relation_loss(r, s, 0.1) + listwise_relation_loss(r, s, 0.1)).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_class_prototypes_are_class_means_and_errors():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0], [5.0, 6.0]])
    labels = torch.tensor([7, 7, 2, 7])
    got = class_prototypes(x, labels, torch.tensor([2, 7]))
    assert got.tolist() == [[10.0, 0.0], [3.0, 4.0]]
    with pytest.raises(ValueError, match=r"\[5\]"):
        class_prototypes(x, labels, torch.tensor([2, 5]))
    s = torch.eye(2)
    with pytest.raises(ValueError, match="at least 3"):
        pairwise_relation_loss(s, s, 0.1)
    with pytest.raises(ValueError, match="same"):
        listwise_relation_loss(torch.eye(3), torch.eye(4), 0.1)


@pytest.fixture(scope="module")
def gmmn_params():
    raw = yaml.safe_load(compose(["+experiment=camvid_tiny"], config_dir=CONF))
    return parse(GeneratorParams, raw["generator"], "generator")


def _toy(seed=0):
    """5 seen + 2 unseen classes; feature means are a linear map of the embeddings (so the word
    relations are also the feature relations a perfect generator would give)."""
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(7, 6, generator=g), dim=1)
    means = emb @ (torch.randn(6, 8, generator=g) * 2)
    labels = torch.arange(5).repeat_interleave(200)
    feats = means[labels] + 0.2 * torch.randn(1000, 8, generator=g)
    return FitData(feats, labels, torch.zeros(1000, dtype=torch.long), emb), emb


def _fit(params, data, seed=0):
    torch.manual_seed(seed)
    kind = get_kind(params.kind)
    gen = kind.build(params, data.embeddings.shape[1], data.features.shape[1])
    curves = kind.fit(gen, data, [0, 1, 2, 3, 4], params, torch.Generator().manual_seed(seed), CPU, unseen=[5, 6])
    return gen, curves


def _listwise_of(gen, emb):
    """The brute-force list-wise loss of the fitted generator's prototypes (400 draws per class)."""
    torch.manual_seed(99)
    with torch.no_grad():
        protos = [gen(emb[c].expand(400, -1)).mean(0).tolist() for c in range(7)]
    return listwise_brute(protos, emb.tolist(), 0.1)


def _plain_gmmn_fit(gen, data, classes, params, seed):
    """A second, plain implementation of the MMD-only GMMN loop as it stood before the relation
    terms (draw_real per class, one Adam step on the class-wise MMD), to compare bitwise."""
    from zs3core.generators.base import class_rows, draw_real
    from zs3core.mmd import MMDLoss

    rng = torch.Generator().manual_seed(seed)
    loss_fn, pools = MMDLoss.from_params(params.mmd), class_rows(data.labels, classes)
    opt = torch.optim.Adam(gen.parameters(), lr=params.lr)
    gen.train()
    losses = []
    for _ in range(params.steps):
        real, lab = draw_real(data.features, pools, params.samples_per_class, rng)
        loss = loss_fn.classwise(real, lab, gen(data.embeddings[lab]), lab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_off_by_default_changes_nothing(gmmn_params):
    """The composed default has both weights 0: the fit equals, bitwise, a plain MMD-only loop
    written here (no extra random draw, no extra term), and a params without the block."""
    assert gmmn_params.relation is not None
    assert gmmn_params.relation.pairwise_weight == 0 and gmmn_params.relation.listwise_weight == 0
    data, _ = _toy()
    p = dataclasses.replace(gmmn_params, mmd=MMDParams("paper", (1.0, 2.0, 5.0)), lr=0.01, steps=20, samples_per_class=16)
    g1, c1 = _fit(p, data)
    g2, c2 = _fit(dataclasses.replace(p, relation=None), data)
    torch.manual_seed(0)
    g3 = get_kind("gmmn").build(p, data.embeddings.shape[1], data.features.shape[1])
    plain = _plain_gmmn_fit(g3, data, [0, 1, 2, 3, 4], p, 0)
    assert set(c1) == {"mmd"} and c1 == c2 and c1["mmd"] == plain
    for g in (g2, g3):
        assert all(torch.equal(a, b) for a, b in zip(g1.state_dict().values(), g.state_dict().values()))


def test_graph_context_kind_takes_the_relation_terms(gmmn_params):
    """GC: the terms are added (isolated nodes for the relation draw) and lower the list-wise
    disagreement of its prototypes, on masks with one stripe per seen class."""
    data, emb = _toy()
    maps = {r: torch.arange(5, dtype=torch.uint8).repeat_interleave(2)[:, None].expand(10, 6).contiguous()
            for r in range(10)}
    data = FitData(data.features, data.labels, torch.arange(1000) % 10, emb, maps)
    base = dataclasses.replace(gmmn_params, kind="gc", mmd=MMDParams("paper", (1.0, 2.0, 5.0)), lr=0.01, steps=200,
                               samples_per_class=32, graphs_per_step=4)
    on = dataclasses.replace(base, relation=RelationParams(1.0, 1.0, 0.1, 32))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g_off, c_off = _fit(base, data)
        g_on, c_on = _fit(on, data)
    finally:
        torch.set_num_threads(n)
    assert set(c_off) == {"mmd"} and {"total", "relation_pairwise", "relation_listwise"} <= set(c_on)
    assert _listwise_of(g_on, emb) < 0.7 * _listwise_of(g_off, emb)


@pytest.mark.parametrize("kind", ["gmmn", "pading"])
def test_relation_terms_pull_unseen_prototypes_to_the_word_relations(kind, gmmn_params):
    """Same toy, same seed, 300 steps: with the relation terms on, the list-wise disagreement of
    the fitted generator's prototypes (seen and unseen, computed by brute force) is lower than
    without them, and the curves report the terms."""
    data, emb = _toy()
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if kind == "pading":
            raw = yaml.safe_load(compose(["+experiment=camvid_tiny", "generator=pading_primitives"], config_dir=CONF))
            base = parse(GeneratorParams, raw["generator"], "generator")
            base = dataclasses.replace(base, primitive=dataclasses.replace(
                base.primitive, num_primitives=16, layers=1, heads=2, ff_dim=32, dropout=0.1))
        else:
            base = gmmn_params
        p = dataclasses.replace(base, mmd=MMDParams("paper", (1.0, 2.0, 5.0)), lr=0.01, steps=300, samples_per_class=32)
        on = dataclasses.replace(p, relation=RelationParams(pairwise_weight=1.0, listwise_weight=1.0, temperature=0.1,
                                                            samples_per_class=32))
        g_off, _ = _fit(p, data)
        g_on, curves = _fit(on, data)
    finally:
        torch.set_num_threads(n)
    assert {"total", "mmd", "relation_pairwise", "relation_listwise"} <= set(curves)
    assert curves["total"][0] == pytest.approx(curves["mmd"][0] + curves["relation_pairwise"][0]
                                               + curves["relation_listwise"][0], rel=1e-4)
    before, after = _listwise_of(g_off, emb), _listwise_of(g_on, emb)
    assert after < 0.7 * before, (before, after)


def test_relation_terms_need_three_classes_and_valid_params():
    emb = torch.eye(3)
    rp = RelationParams(1.0, 0.0, 0.1, 4)
    with pytest.raises(ValueError, match="at least 3"):
        RelationTerms(rp, emb, [0], [1], CPU)
    assert not RelationTerms(RelationParams(0.0, 0.0, 0.1, 4), emb, [0], [1], CPU).enabled
    with pytest.raises(Zs3Error, match="generator.relation.pairwise_weight"):
        parse(RelationParams, {"pairwise_weight": -1, "listwise_weight": 0, "temperature": 0.1, "samples_per_class": 4},
              "generator.relation")
