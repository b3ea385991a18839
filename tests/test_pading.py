"""PADing primitive generator, disentangler and losses, against hand / brute-force computations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import dataclasses

import yaml

from zs3core.compose import compose
from zs3core.config import GeneratorParams, MMDParams, parse
from zs3core.generators.pading import (
    FeatureDisentangler,
    PrimitiveGenerator,
    disentangle_losses,
    fit_pading,
    relation_alignment_loss,
    softmax_kl,
)
from zs3core.mmd import MMDLoss

CPU = torch.device("cpu")
CONF = __import__("pathlib").Path(__file__).resolve().parents[1] / "conf"


def gen_net(d_a, d_x, num_primitives=10, layers=2, heads=4, ff_dim=32, dropout=0.3, output_head="layernorm"):
    return PrimitiveGenerator(d_a, d_x, num_primitives, layers, heads, ff_dim, dropout, output_head)


@pytest.fixture(scope="module")
def pading_params():
    """The ``generator`` view of the composed ``generator=pading`` group (official values)."""
    raw = yaml.safe_load(compose(["+experiment=camvid_tiny", "generator=pading"], config_dir=CONF))
    return parse(GeneratorParams, raw["generator"], "generator")


@pytest.fixture
def one_thread():
    """Tiny ops: one intra-op thread is fastest and keeps the tests quick on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def _softmax(row, tau):
    e = [math.exp(x / tau) for x in row]
    return [x / sum(e) for x in e]


def alignment_brute(x: torch.Tensor, labels: torch.Tensor, emb: torch.Tensor, tau: float) -> float:
    """Explicit loops: sum_i sum_j P_ij log(P_ij / Q_ij) / n^2, P from embedding cosines, Q from feature cosines."""
    xs, es, n = x.double().tolist(), emb.double().tolist(), len(x)
    total = 0.0
    for i in range(n):
        s_x = [_cos(xs[i], xs[j]) for j in range(n)]
        s_a = [_cos(es[int(labels[i])], es[int(labels[j])]) for j in range(n)]
        p, q = _softmax(s_a, tau), _softmax(s_x, tau)
        total += sum(p[j] * math.log(p[j] / q[j]) for j in range(n))
    return total / (n * n)


def test_relation_alignment_matches_brute_force():
    """Loss equals the loop computation, for several temperatures and with repeated labels."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=g)
    emb = F.normalize(torch.randn(4, 3, generator=g), dim=1)
    labels = torch.tensor([0, 1, 1, 2, 3, 0, 2])
    for tau in (0.1, 0.5, 2.0):
        got = relation_alignment_loss(x, labels, emb, tau)
        assert got.ndim == 0
        assert float(got) == pytest.approx(alignment_brute(x, labels, emb, tau), rel=1e-4, abs=1e-6)
        assert float(got) > 0


def test_relation_alignment_zero_when_similarities_match():
    """Features = rotated, rescaled copies of their embeddings have the embeddings' cosines: loss 0."""
    g = torch.Generator().manual_seed(1)
    emb = F.normalize(torch.randn(5, 4, generator=g), dim=1)
    labels = torch.tensor([0, 1, 2, 3, 4, 1, 2])
    rot, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))
    scale = torch.rand(7, 1, generator=g) * 5 + 0.5
    x = (emb[labels] @ rot) * scale
    assert abs(float(relation_alignment_loss(x, labels, emb, 0.1))) < 1e-5
    assert float(relation_alignment_loss(torch.randn(7, 4, generator=g), labels, emb, 0.1)) > 1e-3


def test_relation_alignment_gradient_and_errors():
    """Gradients reach the features; malformed inputs raise ValueError."""
    x = torch.randn(4, 3, requires_grad=True)
    emb = torch.eye(3)
    relation_alignment_loss(x, torch.tensor([0, 1, 2, 0]), emb).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for args in [(torch.randn(4), torch.tensor([0, 1, 2, 0])),         # 1-D features
                 (torch.randn(4, 3), torch.tensor([0, 1, 2])),         # label count differs
                 (torch.randn(4, 3), torch.tensor([0, 1, 2, 3])),      # label out of range
                 (torch.randn(0, 3), torch.zeros(0, dtype=torch.long))]:
        with pytest.raises(ValueError):
            relation_alignment_loss(args[0], args[1], emb)


def test_softmax_kl_and_recon_by_hand():
    """2x2 case computed by hand: sum_ij P_ij log(P_ij/Q_ij) / 4; L1 reconstruction = mean |r - x|."""
    pred = torch.tensor([[0.0, 0.1], [0.3, -0.2]])
    target = torch.tensor([[0.2, 0.0], [0.0, 0.0]])
    tau = 0.1
    expected = 0.0
    for pr, tr in zip(pred.tolist(), target.tolist()):
        q = [math.exp(v / tau) / sum(math.exp(w / tau) for w in pr) for v in pr]
        p = [math.exp(v / tau) / sum(math.exp(w / tau) for w in tr) for v in tr]
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    expected /= 4
    assert float(softmax_kl(pred, target, tau)) == pytest.approx(expected, rel=1e-5)
    assert float(softmax_kl(target, target, tau)) == pytest.approx(0.0, abs=1e-7)

    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    rec = torch.tensor([[1.5, 2.0, 2.0], [0.0, 1.0, 4.0]])
    recon, kl = disentangle_losses(x, pred, rec, target, tau)
    assert float(recon) == pytest.approx((0.5 + 0 + 1 + 0 + 2 + 0) / 6)
    assert float(kl) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError):
        softmax_kl(pred, target[:1])
    with pytest.raises(ValueError):
        disentangle_losses(x, pred, rec[:, :2], target)


def test_generator_and_disentangler_shapes():
    """(n, d_a) -> (n, d_x); disentangler parts (n, d_p), reconstruction (n, d_x), relation scores (n, K)."""
    gen = gen_net(6, 16)
    out = gen(torch.randn(5, 6))
    assert out.shape == (5, 16) and out.dtype == torch.float32
    dis = FeatureDisentangler(16, 6, 0.2, part_dim=8)
    r, u, rec = dis(out)
    assert r.shape == (5, 8) and u.shape == (5, 8) and rec.shape == (5, 16)
    s = dis.relation_scores(r, torch.randn(3, 6))
    assert s.shape == (5, 3) and ((s > 0) & (s < 1)).all()
    with pytest.raises(ValueError):
        gen(torch.randn(5, 7))
    with pytest.raises(ValueError):
        dis(torch.randn(5, 15))
    with pytest.raises(ValueError):
        gen_net(6, 18, heads=4)


def test_noise_and_seeded_generator():
    """Two draws differ (noise, eval mode); a seeded torch.Generator reproduces them; rows are independent samples."""
    torch.manual_seed(0)
    gen = gen_net(6, 16).eval()
    emb = torch.randn(4, 6)
    with torch.no_grad():
        a, b = gen(emb), gen(emb)
        assert not torch.allclose(a, b)
        c = gen(emb, torch.Generator().manual_seed(3))
        d = gen(emb, torch.Generator().manual_seed(3))
        assert torch.equal(c, d)
        emb2 = emb.clone()
        emb2[1:] = torch.randn(3, 6)          # change every other query row
        e = gen(emb2, torch.Generator().manual_seed(3))
    assert torch.allclose(c[0], e[0], atol=1e-6)   # row 0 is unaffected: no mixing across samples
    assert not torch.allclose(c[1], e[1])


def _toy(seed=0):
    """3 seen + 1 unseen class; feature means are a linear function of the embeddings."""
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(4, 5, generator=g), dim=1)
    w = torch.randn(5, 8, generator=g) * 3
    means = emb @ w
    labels = torch.arange(3).repeat_interleave(300)
    feats = means[labels] + 0.3 * torch.randn(900, 8, generator=g)
    return feats, labels, emb


def _params(base, steps, **prim):
    p = dataclasses.replace(base.primitive, **{"num_primitives": 16, "layers": 1, "heads": 2, "ff_dim": 32,
                                              "dropout": 0.1, "output_head": "layernorm", **prim})
    return dataclasses.replace(base, mmd=MMDParams("paper", (1.0, 2.0, 5.0)), lr=0.02, steps=steps, samples_per_class=32,
                               primitive=p)


def _seen_mmd(gen, feats, labels, emb):
    """Class-wise MMD^2 of 200 eval-mode samples per seen class (fixed noise seed) to the real features."""
    fl = torch.arange(3).repeat_interleave(200)
    with torch.no_grad():
        fake = gen.eval()(emb[fl], torch.Generator().manual_seed(123))
    return float(MMDLoss("paper", (1.0, 2.0, 5.0)).classwise(feats, labels, fake, fl))


def test_fit_pading_reduces_seen_mmd(one_thread, pading_params):
    """Full PADing objective (alignment + disentanglement) on the toy problem: seen-class MMD drops clearly."""
    torch.manual_seed(0)
    feats, labels, emb = _toy()
    gen = gen_net(5, 8, num_primitives=16, layers=1, heads=2, ff_dim=32, dropout=0.1)
    before = _seen_mmd(gen, feats, labels, emb)
    curves = fit_pading(gen, feats, labels, emb, [0, 1, 2], [3], _params(pading_params, 200),
                        torch.Generator().manual_seed(0), CPU)
    assert set(curves) == {"total", "mmd", "alignment", "kl", "relation", "recon"}
    assert all(len(v) == 200 for v in curves.values())
    after = _seen_mmd(gen, feats, labels, emb)
    assert after < before / 5, (before, after)
    assert sum(curves["mmd"][-10:]) < sum(curves["mmd"][:10])


@pytest.mark.parametrize("alignment,disentangle,keys", [
    (False, False, {"total", "mmd"}),
    (True, False, {"total", "mmd", "alignment"}),
    (False, True, {"total", "mmd", "kl", "relation", "recon"}),
])
def test_fit_pading_variants_and_total(alignment, disentangle, keys, one_thread, pading_params):
    """Curves hold the active terms; total = mmd + structure_weight * weighted terms; same seed, same curves."""
    feats, labels, emb = _toy(1)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        gen = gen_net(5, 8, num_primitives=8, layers=1, heads=2, ff_dim=16, dropout=0.1)
        cfg = _params(pading_params, 3, alignment=alignment, disentangle=disentangle, structure_weight=0.5)
        runs.append(fit_pading(gen, feats, labels, emb, [0, 1, 2], [3], cfg, torch.Generator().manual_seed(0), CPU))
    c = runs[0]
    assert set(c) == keys
    assert c == runs[1]
    p = cfg.primitive
    for i in range(3):
        s = p.align_weight * (c.get("alignment", [0] * 3)[i] + p.kl_weight * c.get("kl", [0] * 3)[i]) \
            + p.relation_weight * 0.2 * c.get("relation", [0] * 3)[i] + p.recon_weight * c.get("recon", [0] * 3)[i]
        assert c["total"][i] == pytest.approx(c["mmd"][i] + 0.5 * s, rel=1e-5)


def test_fit_pading_errors(pading_params):
    """No primitive params, overlapping seen/unseen and seen classes without features raise ValueError."""
    feats, labels, emb = _toy()
    gen = gen_net(5, 8, num_primitives=8, layers=1, heads=2, ff_dim=16)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="generator.primitive"):
        fit_pading(gen, feats, labels, emb, [0, 1, 2], [3], dataclasses.replace(pading_params, primitive=None), g, CPU)
    with pytest.raises(ValueError):
        fit_pading(gen, feats, labels, emb, [0, 1, 2], [2, 3], _params(pading_params, 1), g, CPU)
    with pytest.raises(ValueError):
        fit_pading(gen, feats, labels, emb, [3], [], _params(pading_params, 1), g, CPU)


def test_direct_self_attention_equals_multihead_attention_on_length_one_sequences():
    from zs3core.generators.pading import _PrimitiveDecoderLayer

    torch.manual_seed(0)
    layer = _PrimitiveDecoderLayer(16, 4, 32, 0.5).eval()
    x = torch.randn(7, 16)
    q = x.unsqueeze(1)
    ref = layer.self_attn(q, q, q, need_weights=False)[0].squeeze(1)
    torch.testing.assert_close(layer._self_attention(x), ref)
    layer.train()  # attention dropout drops whole heads: each head's value is 0 or scaled by 1 / (1 - p)
    torch.manual_seed(1)
    out = layer._self_attention(x)
    d = 16
    v = torch.nn.functional.linear(x, layer.self_attn.in_proj_weight[2 * d:], layer.self_attn.in_proj_bias[2 * d:])
    heads = (out - layer.self_attn.out_proj.bias) @ torch.linalg.pinv(layer.self_attn.out_proj.weight).T
    ratio = (heads.reshape(7, 4, 4) / v.reshape(7, 4, 4))
    vals = ratio.mean(2)
    assert torch.all((vals.abs() < 1e-4) | ((vals - 2.0).abs() < 1e-3))


def test_linear_relu_head_gives_non_negative_features_of_free_norm():
    """The pixel-feature head (Linear + ReLU instead of the final LayerNorm): outputs are >= 0
    and their norms vary across samples; the official LayerNorm head puts every output at the
    same norm before its affine map (identity at initialisation)."""

    torch.manual_seed(0)
    emb = torch.randn(32, 6)
    relu_head = gen_net(6, 16, num_primitives=8, layers=1, heads=2, ff_dim=32, dropout=0.0, output_head="linear_relu").eval()
    ln_head = gen_net(6, 16, num_primitives=8, layers=1, heads=2, ff_dim=32, dropout=0.0).eval()
    out = relu_head(emb, torch.Generator().manual_seed(1))
    assert (out >= 0).all() and out.norm(dim=1).std() > 0.05
    norms = ln_head(emb, torch.Generator().manual_seed(1)).norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 4.0), rtol=1e-3, atol=1e-3)   # sqrt(16)
    with pytest.raises(ValueError, match="output_head"):
        gen_net(6, 16, output_head="softplus")
