"""Maximum mean discrepancy with a multi-bandwidth Gaussian kernel (ZS3Net §2.2, GMMN loss).

ZS3Net's generator loss for one class embedding a (paper §2.2, eq. 1) is

    L_GMMN(a) = sum_{x,x' in X} k(x,x') + sum_{x^,x^' in X^} k(x^,x^') - 2 sum_{x in X, x^ in X^} k(x,x^)

with a Gaussian kernel summed over several bandwidths. Each double sum is normalised here by
its number of pairs (the biased V-statistic estimate of MMD^2), so that the loss does not grow
with the batch; the official code does the same through its ±1/N scale matrix.

Two kernel conventions (params ``generator.mmd.convention``), which differ in what a
"bandwidth" b means and in the loss taken per class:

* ``official`` (default): k(x, x') = sum_v exp(-||x - x'||^2 / (2 v)), v in
  {2, 5, 10, 20, 40, 80}, and the loss of a class is sqrt(MMD^2): the official
  ``GMMNLoss.moment_loss`` (valeoai/ZS3 ``zs3/utils/loss_GMMN.py`` L19-35: ``exp(exp / v)``
  with ``exp = XX - 0.5 X2 - 0.5 X2^T`` = -d^2 / 2, then ``torch.sqrt(loss)``), with the
  bandwidths of ``train_pascal_GMMN.py`` L80 (``sigma=[2, 5, 10, 20, 40, 80]``).
* ``paper``: k(x, x') = sum_σ exp(-||x - x'||^2 / (2 σ^2)), σ in {2, 5, 10, 20, 40, 60}
  (paper eq. 1 and §3.1 "kernel bandwidths {2, 5, 10, 20, 40, 60}"), loss MMD^2.

The two differ by orders of magnitude at a given feature scale: with v, a kernel sees
squared distances of about 2v; with σ, about 2σ^2. :func:`median_sq_distance` tells which fits
the features (``metrics/generator.json`` logs it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from zs3core.io import Zs3Error

CONVENTIONS = ("official", "paper")


def sq_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n, d), (m, d) float -> (n, m) float32 squared Euclidean distances (clamped at 0)."""
    x, y = x.float(), y.float()
    return (x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None, :] - 2.0 * x @ y.T).clamp_min(0.0)


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor, bandwidths, convention: str = "paper") -> torch.Tensor:
    """Sum of Gaussian kernels over bandwidths.

    Args:
        x: (n, d) float. y: (m, d) float. bandwidths: iterable of b > 0, in feature units
            (σ for ``paper``), or squared feature units (v for ``official``).
        convention: ``paper``: exp(-d^2 / (2 b^2)); ``official``: exp(-d^2 / (2 b)).

    Returns:
        (n, m) float32: sum_b k_b(x_i, y_j).

    Raises:
        ValueError: unknown convention.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown MMD convention '{convention}'; use one of {CONVENTIONS}")
    d2 = sq_distances(x, y)
    scale = [float(b) ** 2 if convention == "paper" else float(b) for b in bandwidths]
    return sum(torch.exp(-d2 / (2.0 * s)) for s in scale)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths, convention: str = "paper") -> torch.Tensor:
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
        gaussian_kernel(x, x, bandwidths, convention).mean()
        + gaussian_kernel(y, y, bandwidths, convention).mean()
        - 2.0 * gaussian_kernel(x, y, bandwidths, convention).mean()
    )


@dataclass(frozen=True)
class MMDLoss:
    """The class-wise generator loss of one convention (params ``generator.mmd``).

    Attributes:
        convention: ``official`` or ``paper`` (module docstring).
        bandwidths: v (official) or σ (paper), each > 0.

    Raises:
        Zs3Error: unknown convention or a bandwidth <= 0 (naming ``generator.mmd``).
    """

    convention: str
    bandwidths: tuple[float, ...]

    def __post_init__(self):
        if self.convention not in CONVENTIONS:
            raise Zs3Error(f"generator.mmd.convention: unknown value '{self.convention}'; use one of {list(CONVENTIONS)}")
        if not self.bandwidths or min(float(b) for b in self.bandwidths) <= 0:
            raise Zs3Error(f"generator.mmd.bandwidths: need at least one bandwidth, all > 0; got {list(self.bandwidths)}")

    @classmethod
    def from_params(cls, p) -> MMDLoss:
        """From the ``generator.mmd`` view (:class:`zs3core.config.MMDParams`)."""
        return cls(str(p.convention), tuple(float(b) for b in p.bandwidths))

    def mmd2(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Biased MMD^2 of two samples under this kernel (scalar float tensor)."""
        return mmd2(x, y, self.bandwidths, self.convention)

    def class_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Loss of one class: MMD^2 (paper) or sqrt(MMD^2) (official; MMD^2 clamped at 1e-12 so
        that the gradient stays finite when the two samples coincide)."""
        m = self.mmd2(real, fake)
        return m.clamp_min(1e-12).sqrt() if self.convention == "official" else m

    def classwise(self, real: torch.Tensor, real_labels: torch.Tensor, fake: torch.Tensor,
                  fake_labels: torch.Tensor) -> torch.Tensor:
        """Sum over classes c present in both sets of ``class_loss(real[c], fake[c])``.

        When every shared class has the same number of real rows and the same number of fake
        rows (the GMMN and PADing steps draw ``samples_per_class`` of each), all classes are
        computed at once as (C, n, m) batched kernels (:func:`batched_mmd2`): the same sums as
        a loop over classes, in a few large kernels instead of C small ones (what a GPU wants;
        on 2 CPU cores the loss + backward of 9 classes x 128 x 128-d takes 14.0 vs 17.5 ms,
        ``benchmarks/mmd_speed.py``, and a whole GMMN step about the same time either way);
        otherwise class by class.

        Args:
            real: (n, d) float, real_labels: (n,) int; fake: (m, d), fake_labels: (m,).

        Returns:
            Scalar float tensor (0 when no class is shared).
        """
        shared = [c for c in torch.unique(fake_labels).tolist() if bool((real_labels == c).any())]
        if not shared:
            return real.new_zeros((), dtype=torch.float32)
        r_idx = [torch.nonzero(real_labels == c).squeeze(1) for c in shared]
        f_idx = [torch.nonzero(fake_labels == c).squeeze(1) for c in shared]
        if len({len(i) for i in r_idx}) == 1 and len({len(i) for i in f_idx}) == 1:
            m = batched_mmd2(real[torch.stack(r_idx)], fake[torch.stack(f_idx)], self.bandwidths, self.convention)
            return (m.clamp_min(1e-12).sqrt() if self.convention == "official" else m).sum()
        total = real.new_zeros((), dtype=torch.float32)
        for r, f in zip(r_idx, f_idx):
            total = total + self.class_loss(real[r], fake[f])
        return total


def batched_mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths, convention: str = "paper") -> torch.Tensor:
    """Biased MMD^2 of C pairs of samples at once: :func:`mmd2` of ``x[c]`` and ``y[c]`` for each c.

    Args:
        x: (C, n, d) float. y: (C, m, d) float. bandwidths, convention: as :func:`gaussian_kernel`.

    Returns:
        (C,) float32, differentiable in both arguments.

    Raises:
        ValueError: unknown convention, empty samples or mismatched shapes.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown MMD convention '{convention}'; use one of {CONVENTIONS}")
    if x.ndim != 3 or y.ndim != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"batched_mmd2 needs (C, n, d) and (C, m, d) samples, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError("batched_mmd2 needs non-empty samples")
    x, y = x.float(), y.float()
    inv = torch.tensor([1.0 / (2.0 * (float(b) ** 2 if convention == "paper" else float(b))) for b in bandwidths],
                       device=x.device)

    def mean_k(a, b):
        d2 = (a.pow(2).sum(2)[:, :, None] + b.pow(2).sum(2)[:, None, :] - 2.0 * a @ b.transpose(1, 2)).clamp_min(0.0)
        return torch.exp(-d2[..., None] * inv).sum(3).mean((1, 2))

    return mean_k(x, x) + mean_k(y, y) - 2.0 * mean_k(x, y)


def median_sq_distance(x: torch.Tensor, max_rows: int = 2000, generator: torch.Generator | None = None) -> float:
    """Median pairwise squared distance of the rows of ``x`` (n, d), over at most ``max_rows``
    random rows (the "median heuristic" for kernel bandwidths, Gretton et al., JMLR 2012 §8).
    Compare it with 2v (official convention) or 2σ^2 (paper convention). 0.0 for n < 2."""
    if len(x) < 2:
        return 0.0
    if len(x) > max_rows:
        x = x[torch.randperm(len(x), generator=generator)[:max_rows]]
    d2 = sq_distances(x, x)
    iu = torch.triu_indices(len(x), len(x), offset=1)
    return float(d2[iu[0], iu[1]].median())
