"""DeViSE baseline for zero-shot segmentation (Frome et al., NeurIPS 2013; ZS3Net Tables 1-2).

Instead of generating unseen features, a linear projection P maps each d_x-dimensional pixel
feature into the d_a-dimensional embedding space. It is trained on seen pixels only, with the
cosine loss 1 - cos(P x, a_y). At test time a pixel takes the class whose embedding is most
similar to P x (all classes: generalized; unseen classes only: vanilla). ZS3Net reports
DeViSE as its projection baseline.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zs3core.checkpoint import Checkpoint
from zs3core.loop import descend, run_steps


class DeViSEHead(nn.Module):
    """Projection to the embedding space plus cosine scoring against fixed class embeddings.

    Args:
        feature_dim: d_x. emb: (C, d_a) float class embeddings (stored, L2-normalised).

    ``forward(x)``: (N, d_x) -> (N, C) cosine similarities, or (B, d_x, h, w) -> (B, C, h, w);
    used as logits (argmax = prediction), like :class:`zs3core.models.classifier.PixelClassifier`.
    """

    def __init__(self, feature_dim: int, emb: torch.Tensor):
        super().__init__()
        self.proj = nn.Linear(feature_dim, emb.shape[1])
        self.register_buffer("emb", F.normalize(emb.float(), dim=1))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d_x) -> (N, d_a) unit-length projections."""
        return F.normalize(self.proj(x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            b, d, h, w = x.shape
            s = self.project(x.permute(0, 2, 3, 1).reshape(-1, d)) @ self.emb.T
            return s.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return self.project(x) @ self.emb.T


def train_devise(feats: torch.Tensor, labels: torch.Tensor, emb: torch.Tensor, epochs: int, batch_size: int,
                 lr: float, rng: torch.Generator, device: torch.device,
                 ckpt: Checkpoint | None = None, on_epoch=None) -> tuple[DeViSEHead, list[float]]:
    """Fit P with the cosine loss on real seen pixel features (Adam, mini-batches shuffled with ``rng``).

    Args:
        feats: (N, d_x) features of seen classes (any float dtype); labels: (N,) int64 class ids.
        emb: (C, d_a) class embeddings (all classes; only the seen rows are used in training).
        ckpt: optional checkpoint, saved every ``ckpt.every`` epochs. on_epoch: see
            :func:`zs3core.loop.run_steps`.

    Returns:
        (head on cpu in eval mode, mean loss per epoch).

    Raises:
        ValueError: no features. Zs3Error: a non-finite loss.
    """
    if len(feats) == 0:
        raise ValueError("train_devise needs at least one feature")
    head = DeViSEHead(feats.shape[1], emb).to(device)
    opt = torch.optim.Adam(head.proj.parameters(), lr=lr)
    feats = feats.float()

    def epoch_step(epoch: int) -> dict:
        perm = torch.randperm(len(feats), generator=rng)
        tot = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            x, y = feats[idx].to(device), labels[idx].to(device)
            loss = (1.0 - (head.project(x) * head.emb[y]).sum(1)).mean()
            tot += descend(opt, loss, "DeViSE projection", epoch + 1) * len(idx)
        return {"loss": tot / len(feats)}

    curves = run_steps(epoch_step, epochs, {"head": head, "opt": opt}, rng, ckpt, "DeViSE projection", on_epoch,
                       unit="epoch")
    return head.cpu().eval(), curves.get("loss", [])


def save_devise(head: DeViSEHead, path, losses: list[float]) -> None:
    """Save a DeViSE head (projection and class embeddings) with its training losses.

    Raises:
        Zs3Error: a weight is NaN or infinite (nothing is written).
    """
    from zs3core.io import check_finite

    check_finite(head, str(path))
    torch.save({"state_dict": head.state_dict(), "feature_dim": head.proj.in_features, "emb": head.emb,
                "losses": losses}, path)


def load_devise(path) -> DeViSEHead:
    """Rebuild a DeViSE head saved by the devise stage (cpu, eval mode)."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    head = DeViSEHead(ck["feature_dim"], ck["emb"])
    head.load_state_dict(ck["state_dict"])
    return head.eval()
