"""MMD^2 with the multi-bandwidth Gaussian kernel, against a brute-force python double sum."""
from __future__ import annotations

import math

import pytest
import torch

from zs3core.mmd import classwise_mmd2, gaussian_kernel, mmd2

SIGMAS = [2, 5, 10, 20, 40, 60]


def k_brute(a: list[float], b: list[float], sigmas) -> float:
    d2 = sum((ai - bi) ** 2 for ai, bi in zip(a, b))
    return sum(math.exp(-d2 / (2.0 * s * s)) for s in sigmas)


def mean_k(xs, ys, sigmas) -> float:
    total = 0.0
    for a in xs:            # loop 1: first sample
        for b in ys:        # loop 2: second sample
            total += k_brute(a, b, sigmas)  # loop 3 (inside): bandwidths
    return total / (len(xs) * len(ys))


def mmd2_brute(x: torch.Tensor, y: torch.Tensor, sigmas) -> float:
    """Biased V-statistic: each double sum divided by its number of pairs (float64 python)."""
    xs, ys = x.double().tolist(), y.double().tolist()
    return mean_k(xs, xs, sigmas) + mean_k(ys, ys, sigmas) - 2.0 * mean_k(xs, ys, sigmas)


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


def test_classwise_mmd2_is_sum_over_shared_classes():
    """Sum of per-class brute-force mmd2 over classes present in both sets; others skipped."""
    real = sample(9, 3, 5.0, 0.0, 10)
    real_labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 0])   # class 2 only in real
    fake = sample(7, 3, 5.0, 1.0, 11)
    fake_labels = torch.tensor([1, 0, 3, 1, 0, 3, 0])          # class 3 only in fake
    expected = 0.0
    for c in (0, 1):
        r = torch.stack([real[i] for i in range(9) if int(real_labels[i]) == c])
        f = torch.stack([fake[i] for i in range(7) if int(fake_labels[i]) == c])
        expected += mmd2_brute(r, f, SIGMAS)
    got = classwise_mmd2(real, real_labels, fake, fake_labels, SIGMAS)
    assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_classwise_mmd2_no_shared_class_is_zero():
    """No class in both sets: the loss is exactly 0."""
    real, fake = sample(3, 2, 1.0, 0.0, 12), sample(3, 2, 1.0, 0.0, 13)
    got = classwise_mmd2(real, torch.tensor([0, 0, 1]), fake, torch.tensor([2, 2, 3]), SIGMAS)
    assert float(got) == 0.0


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
