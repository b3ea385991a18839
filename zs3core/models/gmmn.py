"""GMMN feature generator (ZS3Net §2.2 "Generative model (step 1)" and §3.1).

G(a, z) maps a class embedding a (d_a) and Gaussian noise z ~ N(0, I) (d_z, the paper uses
d_z = d_a = 300) to a pixel feature x^ in R^{d_x} (d_x = 256, the DeepLabv3+ decoder
output). Architecture of the paper: one hidden layer of 256 units, LeakyReLU(0.2), dropout
0.5. It is trained with the class-wise multi-bandwidth MMD of :mod:`zs3core.mmd`.
"""
from __future__ import annotations

import torch
from torch import nn


class GMMN(nn.Module):
    """Generative moment matching network conditioned on a class embedding.

    Args:
        embed_dim: d_a. noise_dim: d_z. feature_dim: d_x. hidden: hidden units (256).
        leaky_slope: LeakyReLU slope (0.2). dropout: dropout after the hidden layer (0.5).

    ``forward(emb)`` takes (n, d_a) float embeddings (one row per sample to generate),
    draws fresh noise (n, d_z) and returns (n, d_x) float features.
    """

    def __init__(self, embed_dim: int, noise_dim: int, feature_dim: int, hidden: int = 256,
                 leaky_slope: float = 0.2, dropout: float = 0.5):
        super().__init__()
        self.noise_dim = noise_dim
        self.net = nn.Sequential(
            nn.Linear(embed_dim + noise_dim, hidden),
            nn.LeakyReLU(leaky_slope),
            nn.Dropout(dropout),
            nn.Linear(hidden, feature_dim),
        )

    def forward(self, emb: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(emb.shape[0], self.noise_dim, generator=generator, device=emb.device, dtype=emb.dtype)
        return self.net(torch.cat([emb, z], dim=1))
