"""The GMMN generator kind (ZS3Net §2.2 "Generative model (step 1)" and §3.1): network, fitting, sampling.

G(a, z) maps a class embedding a (d_a) and Gaussian noise z ~ N(0, I) (d_z, the paper uses
d_z = d_a = 300) to a pixel feature x^ in R^{d_x} (d_x = 256, the DeepLabv3+ decoder
output). Architecture of the paper: one hidden layer of 256 units, LeakyReLU(0.2), dropout
0.5. It is trained with the class-wise multi-bandwidth MMD of :mod:`zs3core.mmd`.
"""
from __future__ import annotations

import torch
from torch import nn

from zs3core.checkpoint import Checkpoint
from zs3core.generators.base import FitData, GeneratorKind, class_rows, draw_real
from zs3core.generators.relation import RelationTerms
from zs3core.loop import descend, run_steps
from zs3core.mmd import MMDLoss


class GMMN(nn.Module):
    """Generative moment matching network conditioned on a class embedding.

    Args:
        embed_dim: d_a. noise_dim: d_z. feature_dim: d_x. hidden: hidden units (256).
        leaky_slope: LeakyReLU slope (0.2). dropout: dropout after the hidden layer (0.5).

    ``forward(emb)`` takes (n, d_a) float embeddings (one row per sample to generate),
    draws fresh noise (n, d_z) and returns (n, d_x) float features.
    """

    def __init__(self, embed_dim: int, noise_dim: int, feature_dim: int, hidden: int, leaky_slope: float,
                 dropout: float):
        super().__init__()
        self.noise_dim = noise_dim
        self.net = nn.Sequential(
            nn.Linear(embed_dim + noise_dim, hidden),
            nn.LeakyReLU(leaky_slope),
            nn.Dropout(dropout),
            nn.Linear(hidden, feature_dim),
        )

    def forward(self, emb: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(emb.shape[0], self.noise_dim, generator=rng, device=emb.device, dtype=emb.dtype)
        return self.net(torch.cat([emb, z], dim=1))


def fit_generator(gen: nn.Module, feats: torch.Tensor, labels: torch.Tensor, emb: torch.Tensor, classes,
                  loss_fn: MMDLoss, steps: int, samples_per_class: int, lr: float, rng: torch.Generator,
                  device: torch.device, ckpt: Checkpoint | None = None, on_step=None,
                  relation: RelationTerms | None = None) -> dict[str, list[float]]:
    """Fit G(a, z) to real seen features with the class-wise MMD (ZS3Net §2.2, eq. L_GMMN).

    Each Adam step draws ``samples_per_class`` real features of every class (with ``rng``,
    with replacement) and as many generated ones from the class's embedding, and minimises
    the sum over classes of :meth:`zs3core.mmd.MMDLoss.class_loss`. The official code makes
    one step per class and image instead (``zs3/train_pascal_GMMN.py`` L209-240).

    Args:
        gen: module mapping (n, d_a) embeddings to (n, d_x) features (draws its own noise).
        feats: (N, d_x) real features (any float dtype); labels: (N,) int class ids.
        emb: (C, d_a) float32 class embeddings, row = class id.
        classes: the seen class ids to fit (those without features are skipped).
        loss_fn: the class-wise MMD loss. steps: Adam steps at ``lr``.
        samples_per_class: real and generated features per class per step.
        rng: seeded torch.Generator for the real-feature draws.
        ckpt: optional checkpoint (resume after an interruption). on_step: see :func:`zs3core.loop.run_steps`.
        relation: optional :class:`zs3core.generators.relation.RelationTerms`, added to the MMD
            when enabled (features for it drawn as ``gen(emb[labels])``).

    Returns:
        {"mmd": the loss of every step}; with relation terms on, also "total",
        "relation_pairwise" and "relation_listwise" (unweighted).

    Raises:
        Zs3Error: a non-finite loss (nothing is returned).
    """
    gen.to(device).train()
    opt = torch.optim.Adam(gen.parameters(), lr=lr)
    emb = emb.to(device)
    pools = class_rows(labels, classes)

    def step(i: int) -> dict:
        real, batch_l = draw_real(feats, pools, samples_per_class, rng)
        real, batch_l = real.to(device), batch_l.to(device)   # same classes and counts for real and generated
        loss = loss_fn.classwise(real, batch_l, gen(emb[batch_l]), batch_l)
        if relation is None:
            return {"mmd": descend(opt, loss, "fit_generator (MMD)", i + 1)}
        return relation.descend(opt, loss, lambda lab: gen(emb[lab]), "fit_generator (MMD)", i + 1)

    return run_steps(step, steps, {"gen": gen, "opt": opt}, rng, ckpt, "generator (MMD)", on_step, summary_every=1000)


class GMMNKind(GeneratorKind):
    """ZS3Net's GMMN: one feature per class embedding."""

    name = "gmmn"

    def build(self, params, embed_dim, feature_dim):
        return GMMN(embed_dim, params.noise_dim or embed_dim, feature_dim, params.hidden, params.leaky_slope,
                    params.dropout)

    def fit(self, gen, data: FitData, classes, params, rng, device, ckpt=None, unseen=(), on_step=None):
        present = list(class_rows(data.labels, classes))
        return fit_generator(gen, data.features, data.labels, data.embeddings, classes,
                             MMDLoss.from_params(params.mmd), params.steps, params.samples_per_class, params.lr,
                             rng, device, ckpt, on_step,
                             relation=self.relation_terms(params, data.embeddings, present, unseen, device))

    def label(self, params):
        return "GMMN"
