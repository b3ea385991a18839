"""MMD^2 with the multi-bandwidth Gaussian kernel, against a brute-force python double sum, in both
kernel conventions (paper: σ, MMD²; official ZS3Net GMMNLoss: v, sqrt(MMD²))."""
from __future__ import annotations

import math

import pytest
import torch

from zs3core.io import Zs3Error
from zs3core.mmd import MMDLoss, gaussian_kernel, median_sq_distance, mmd2

SIGMAS = [2, 5, 10, 20, 40, 60]


def k_brute(a: list[float], b: list[float], sigmas, convention: str = "paper") -> float:
    d2 = sum((ai - bi) ** 2 for ai, bi in zip(a, b))
    if convention == "paper":
        return sum(math.exp(-d2 / (2.0 * s * s)) for s in sigmas)
    return sum(math.exp(-d2 / (2.0 * v)) for v in sigmas)   # official: exp((x.y - |x|²/2 - |y|²/2) / v)


def mean_k(xs, ys, sigmas, convention: str = "paper") -> float:
    total = 0.0
    for a in xs:            # loop 1: first sample
        for b in ys:        # loop 2: second sample
            total += k_brute(a, b, sigmas, convention)  # loop 3 (inside): bandwidths
    return total / (len(xs) * len(ys))


def mmd2_brute(x: torch.Tensor, y: torch.Tensor, sigmas, convention: str = "paper") -> float:
    """Biased V-statistic: each double sum divided by its number of pairs (float64 python)."""
    xs, ys = x.double().tolist(), y.double().tolist()
    return (mean_k(xs, xs, sigmas, convention) + mean_k(ys, ys, sigmas, convention)
            - 2.0 * mean_k(xs, ys, sigmas, convention))


def sample(n, d, scale, shift, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * scale + shift


@pytest.mark.parametrize("n,m,d,scale,shift", [(6, 4, 3, 5.0, 3.0), (3, 7, 5, 15.0, -10.0), (1, 1, 2, 1.0, 4.0)])
def test_mmd2_against_brute_force(n, m, d, scale, shift):
    """mmd2 equals mean k(x,x') + mean k(y,y') - 2 mean k(x,y) over all pairs."""
    x = sample(n, d, scale, 0.0, 0)
    y = sample(m, d, scale, shift, 1)
    got = mmd2(x, y, SIGMAS)
    assert got.ndim == 0
    assert float(got) == pytest.approx(mmd2_brute(x, y, SIGMAS), rel=1e-5, abs=1e-5)
    assert float(got) > 0


def test_gaussian_kernel_against_brute_force():
    """The kernel matrix entry (i, j) is sum_σ exp(-||x_i - y_j||^2 / (2σ^2))."""
    x, y = sample(4, 3, 8.0, 0.0, 2), sample(5, 3, 8.0, 1.0, 3)
    k = gaussian_kernel(x, y, SIGMAS)
    assert k.shape == (4, 5)
    for i in range(4):
        for j in range(5):
            assert float(k[i, j]) == pytest.approx(k_brute(x[i].tolist(), y[j].tolist(), SIGMAS), rel=1e-5)


def test_single_bandwidth():
    """One bandwidth and one point each: 2 - 2 exp(-||x-y||^2 / (2σ^2))."""
    x, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    assert float(mmd2(x, y, [5])) == pytest.approx(2 - 2 * math.exp(-25 / 50), rel=1e-6)


def test_mmd2_of_sample_with_itself_is_zero_and_symmetric():
    """mmd2(x, x) == 0 and mmd2(x, y) == mmd2(y, x)."""
    x, y = sample(8, 4, 6.0, 0.0, 4), sample(5, 4, 6.0, 2.0, 5)
    assert abs(float(mmd2(x, x, SIGMAS))) < 1e-6
    assert float(mmd2(x, y, SIGMAS)) == pytest.approx(float(mmd2(y, x, SIGMAS)), rel=1e-6)


def test_gradients_flow_and_match_explicit_formula():
    """Gradients reach both inputs, are finite (zero distances included) and equal autograd
    through an explicit-difference implementation of the same loss."""
    base = sample(5, 3, 4.0, 0.0, 6)
    x = torch.cat([base, base[:2]]).requires_grad_(True)   # duplicated rows: zero distances
    y = sample(4, 3, 4.0, 1.5, 7).requires_grad_(True)
    mmd2(x, y, SIGMAS).backward()

    x2, y2 = x.detach().clone().requires_grad_(True), y.detach().clone().requires_grad_(True)

    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return sum(torch.exp(-d2 / (2.0 * s ** 2)) for s in SIGMAS)

    (k(x2, x2).mean() + k(y2, y2).mean() - 2 * k(x2, y2).mean()).backward()
    for got, ref in ((x.grad, x2.grad), (y.grad, y2.grad)):
        assert got is not None and torch.isfinite(got).all()
        assert got.abs().sum() > 0
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)


def test_gradient_descent_reduces_mmd():
    """A few Adam steps on y lower mmd2(x, y): the loss trains a generator."""
    x, y = sample(16, 2, 3.0, 0.0, 8), sample(16, 2, 3.0, 6.0, 9).requires_grad_(True)
    opt = torch.optim.Adam([y], lr=0.3)
    first = mmd2(x, y, SIGMAS).item()
    for _ in range(60):
        opt.zero_grad()
        loss = mmd2(x, y, SIGMAS)
        loss.backward()
        opt.step()
    assert mmd2(x, y.detach(), SIGMAS).item() < 0.5 * first


@pytest.mark.parametrize("convention", ["paper", "official"])
def test_classwise_loss_is_sum_over_shared_classes(convention):
    """Sum of per-class brute-force losses over classes present in both sets; others skipped.
    Paper: MMD² per class; official: sqrt(MMD²) per class (GMMNLoss.moment_loss)."""
    real = sample(9, 3, 5.0, 0.0, 10)
    real_labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 0])   # class 2 only in real
    fake = sample(7, 3, 5.0, 1.0, 11)
    fake_labels = torch.tensor([1, 0, 3, 1, 0, 3, 0])          # class 3 only in fake
    expected = 0.0
    for c in (0, 1):
        r = torch.stack([real[i] for i in range(9) if int(real_labels[i]) == c])
        f = torch.stack([fake[i] for i in range(7) if int(fake_labels[i]) == c])
        m = mmd2_brute(r, f, SIGMAS, convention)
        expected += m if convention == "paper" else math.sqrt(m)
    got = MMDLoss(convention, tuple(SIGMAS)).classwise(real, real_labels, fake, fake_labels)
    assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("convention", ["paper", "official"])
def test_classwise_loss_with_interleaved_classes_matches_brute_force_and_loop_gradient(convention):
    """Equal counts per class (as the GMMN step draws them), classes interleaved: the loss equals
    the brute-force per-class sum, and its gradient equals that of a plain loop of class_loss."""
    real = sample(12, 3, 4.0, 0.0, 30)
    real_labels = torch.tensor([2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1])   # 4 rows per class
    fake0 = sample(6, 3, 4.0, 1.0, 31)
    fake_labels = torch.tensor([1, 1, 0, 2, 0, 2])                       # 2 rows per class
    expected = 0.0
    for c in (0, 1, 2):
        m = mmd2_brute(real[real_labels == c], fake0[fake_labels == c], SIGMAS, convention)
        expected += m if convention == "paper" else math.sqrt(m)
    loss = MMDLoss(convention, tuple(SIGMAS))
    fake = fake0.clone().requires_grad_(True)
    got = loss.classwise(real, real_labels, fake, fake_labels)
    got.backward()
    assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    ref_fake = fake0.clone().requires_grad_(True)
    sum(loss.class_loss(real[real_labels == c], ref_fake[fake_labels == c]) for c in (0, 1, 2)).backward()
    assert torch.allclose(fake.grad, ref_fake.grad, rtol=1e-4, atol=1e-6)


def test_official_kernel_matches_the_official_formula():
    """The official GMMNLoss writes the kernel as exp((XX^T - X²/2 - X²ᵀ/2) / v) over the
    stacked samples and weights it by s sᵀ with s = (1/N, ..., -1/M, ...): recomputed here
    literally, it equals MMD² under the official convention, and the loss is its square root."""
    gen, x = sample(5, 4, 3.0, 0.0, 20), sample(6, 4, 3.0, 1.0, 21)
    vs = [2, 5, 10, 20, 40, 80]
    X = torch.cat([gen, x]).double()
    XX = X @ X.T
    X2 = (X * X).sum(1, keepdim=True)
    expo = XX - 0.5 * X2 - 0.5 * X2.T
    s = torch.cat([torch.full((5, 1), 1.0 / 5), torch.full((6, 1), -1.0 / 6)]).double()
    S = s @ s.T
    official = sum(float((S * torch.exp(expo / v)).sum()) for v in vs)
    loss = MMDLoss("official", tuple(vs))
    assert float(loss.mmd2(gen, x)) == pytest.approx(official, rel=1e-5)
    assert float(loss.class_loss(gen, x)) == pytest.approx(math.sqrt(official), rel=1e-5)
    assert float(loss.mmd2(gen, x)) == pytest.approx(mmd2_brute(gen, x, vs, "official"), rel=1e-5)


def test_official_loss_has_finite_gradient_at_zero():
    """sqrt(MMD²) of identical samples: loss ~0 and a finite gradient (MMD² is clamped)."""
    x = sample(4, 3, 1.0, 0.0, 22)
    y = x.clone().requires_grad_(True)
    loss = MMDLoss("official", (2.0, 5.0)).class_loss(x, y)
    loss.backward()
    assert float(loss) < 1e-5 and torch.isfinite(y.grad).all()


def test_classwise_loss_no_shared_class_is_zero():
    """No class in both sets: the loss is exactly 0."""
    real, fake = sample(3, 2, 1.0, 0.0, 12), sample(3, 2, 1.0, 0.0, 13)
    got = MMDLoss("paper", tuple(SIGMAS)).classwise(real, torch.tensor([0, 0, 1]), fake, torch.tensor([2, 2, 3]))
    assert float(got) == 0.0


def test_median_sq_distance_by_hand():
    """Three points at squared distances 1, 4, 9 from each other: the median is 4."""
    x = torch.tensor([[0.0], [1.0], [3.0]])   # pairs: (0,1) 1, (0,3) 9, (1,3) 4
    assert median_sq_distance(x) == pytest.approx(4.0)
    assert median_sq_distance(x[:1]) == 0.0


@pytest.mark.parametrize("convention,bandwidths", [("nope", (1.0,)), ("paper", ()), ("official", (2.0, -1.0))])
def test_mmd_loss_rejects_bad_params(convention, bandwidths):
    with pytest.raises(Zs3Error, match="generator.mmd"):
        MMDLoss(convention, bandwidths)


@pytest.mark.parametrize("x,y", [
    (torch.zeros(4), torch.zeros(3, 4)),          # 1-D sample
    (torch.zeros(2, 3), torch.zeros(2, 4)),       # feature sizes differ
    (torch.zeros(2, 3, 1), torch.zeros(2, 3)),    # 3-D sample
    (torch.zeros(0, 3), torch.zeros(2, 3)),       # empty sample
    (torch.zeros(2, 3), torch.zeros(0, 3)),
])
def test_mmd2_bad_shapes(x, y):
    """Malformed samples raise ValueError."""
    with pytest.raises(ValueError):
        mmd2(x, y, SIGMAS)
