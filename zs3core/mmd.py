"""Maximum mean discrepancy with a multi-bandwidth Gaussian kernel (ZS3Net §2.2, GMMN loss).

ZS3Net's generator loss for one class embedding a is

    L_GMMN(a) = sum_{x,x' in X} k(x,x') + sum_{x^,x^' in X^} k(x^,x^') - 2 sum_{x in X, x^ in X^} k(x,x^)

with k(x, x') = exp(-||x - x'||^2 / (2 sigma^2)). Following GMMN (Li et al. 2015) and the
official ZS3 code, k is the sum of Gaussian kernels over several bandwidths
sigma in {2, 5, 10, 20, 40, 60}, and each double sum is normalised by its number of pairs
(the biased V-statistic estimate of MMD^2), so that the loss does not grow with the batch.
"""
from __future__ import annotations

import torch


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor, sigmas) -> torch.Tensor:
    """Sum of Gaussian kernels over bandwidths.

    Args:
        x: (n, d) float. y: (m, d) float. sigmas: iterable of bandwidths σ (> 0), in feature units.

    Returns:
        (n, m) float: sum_σ exp(-||x_i - y_j||^2 / (2 σ^2)).
    """
    x, y = x.float(), y.float()
    d2 = (x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None, :] - 2.0 * x @ y.T).clamp_min(0.0)
    return sum(torch.exp(-d2 / (2.0 * float(s) ** 2)) for s in sigmas)


def mmd2(x: torch.Tensor, y: torch.Tensor, sigmas) -> torch.Tensor:
    """Biased estimate of MMD^2 between samples ``x`` (n, d) and ``y`` (m, d).

    mean k(x, x') + mean k(y, y') - 2 mean k(x, y), a scalar float tensor, >= 0 up to
    rounding, differentiable in both arguments.

    Raises:
        ValueError: empty sample or mismatched feature sizes.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd2 needs (n, d) and (m, d) samples, got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) == 0 or len(y) == 0:
        raise ValueError("mmd2 needs non-empty samples")
    return (
        gaussian_kernel(x, x, sigmas).mean()
        + gaussian_kernel(y, y, sigmas).mean()
        - 2.0 * gaussian_kernel(x, y, sigmas).mean()
    )


def classwise_mmd2(real: torch.Tensor, real_labels: torch.Tensor, fake: torch.Tensor, fake_labels: torch.Tensor, sigmas) -> torch.Tensor:
    """Sum over classes c present in both sets of mmd2(real[c], fake[c]): ZS3Net's loss summed over a batch of seen classes.

    Args:
        real: (n, d) float, real_labels: (n,) int; fake: (m, d), fake_labels: (m,).
    """
    total = real.new_zeros(())
    for c in torch.unique(fake_labels):
        r = real[real_labels == c]
        f = fake[fake_labels == c]
        if len(r) and len(f):
            total = total + mmd2(r, f, sigmas)
    return total
