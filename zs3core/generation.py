"""ZS3Net step 1: fitting the feature generator to real seen features, and sampling from it.

``generator.kind`` picks the network (:mod:`zs3core.models`); every kind is trained with the
class-wise multi-bandwidth MMD of :mod:`zs3core.mmd` between real and generated seen-class
features (ZS3Net §2.2, L_GMMN).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from zs3core.mmd import classwise_mmd2


def train_generator(gen: nn.Module, feats: torch.Tensor, labels: torch.Tensor, emb: torch.Tensor,
                    classes, sigmas, steps: int, samples_per_class: int, lr: float,
                    generator: torch.Generator, device: torch.device) -> list[float]:
    """Fit G(a, z) to real seen features with the class-wise MMD (ZS3Net §2.2, eq. L_GMMN).

    Args:
        gen: module mapping (n, d_a) embeddings to (n, d_x) features (draws its own noise).
        feats: (N, d_x) real features (any float dtype); labels: (N,) int class ids.
        emb: (C, d_a) float32 class embeddings, row = class id.
        classes: the seen class ids to fit (each must have features).
        sigmas: kernel bandwidths σ. steps: Adam steps at ``lr``.
        samples_per_class: real and generated features per class per step.
        generator: seeded torch.Generator for the real-feature sampling.

    Returns:
        The loss of every step.
    """
    gen.to(device).train()
    opt = torch.optim.Adam(gen.parameters(), lr=lr)
    emb = emb.to(device)
    pools = {int(c): torch.nonzero(labels == c).squeeze(1) for c in classes}
    pools = {c: idx for c, idx in pools.items() if len(idx)}
    losses = []
    bar = tqdm(range(steps), desc="generator (MMD)", leave=False)
    for _ in bar:
        reals, cls = [], []
        for c, idx in pools.items():
            pick = idx[torch.randint(len(idx), (samples_per_class,), generator=generator)]
            reals.append(feats[pick].float())
            cls.append(torch.full((samples_per_class,), c))
        real = torch.cat(reals).to(device)
        batch_l = torch.cat(cls).to(device)  # same classes and counts for real and generated
        fake = gen(emb[batch_l])
        loss = classwise_mmd2(real, batch_l, fake, batch_l, sigmas)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(mmd=f"{np.mean(losses[-50:]):.4f}")
    gen.eval()
    return losses


@torch.no_grad()
def generate(gen: nn.Module, emb: torch.Tensor, classes, n_per_class: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``n_per_class`` synthetic features for each class id: ((n*K, d_x) float32, (n*K,) int64)."""
    gen.to(device).eval()
    labels = torch.cat([torch.full((n_per_class,), int(c)) for c in classes]).long()
    feats = torch.cat([gen(emb[labels[i:i + 65536]].to(device)).cpu() for i in range(0, len(labels), 65536)])
    return feats.float(), labels


