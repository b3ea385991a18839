"""ZS3Net step 2 (and ZS5Net's retraining): the 1x1 pixel classifier over all classes.

The classifier f reads 256-d pixel features. ZS3Net retrains it on real seen features plus
generated unseen ones (paper §2.2 "Classification model (step 2)"); ZS5Net adds the
pseudo-labelled pool features (§2.3). Real unseen features never enter.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from zs3core.checkpoint import Checkpoint
from zs3core.generation import generate, generate_from_graphs
from zs3core.models.classifier import PixelClassifier


def train_classifier(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, epochs: int,
                     batch_size: int, lr: float, weight_decay: float, generator: torch.Generator,
                     device: torch.device, desc: str = "classifier",
                     ckpt: Checkpoint | None = None) -> tuple[PixelClassifier, list[float]]:
    """Train the 1x1 classifier f on (N, d_x) features with labels (N,) in 0..C-1 (Adam, CE).

    ``ckpt`` (optional :class:`zs3core.checkpoint.Checkpoint`) saves every ``ckpt.every``
    epochs and resumes an interrupted run.

    Returns:
        (classifier on cpu in eval mode, mean loss per epoch).
    """
    clf = PixelClassifier(feats.shape[1], num_classes).to(device)
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
    feats = feats.float()
    state = {"clf": clf, "opt": opt}
    start, extra = ckpt.restore(state, generator) if ckpt else (0, {})
    losses = extra.get("losses", [])
    for epoch in tqdm(range(start, epochs), desc=desc, leave=False, initial=start, total=epochs):
        perm = torch.randperm(len(feats), generator=generator)
        tot, n = 0.0, 0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            x, y = feats[idx].to(device), labels[idx].to(device)
            loss = F.cross_entropy(clf(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
            n += len(idx)
        losses.append(tot / max(n, 1))
        if ckpt and ckpt.due(epoch + 1):
            ckpt.save(epoch + 1, state, generator, {"losses": losses})
    return clf.cpu().eval(), losses


def zs3_training_set(labelled: dict, gen: nn.Module, emb: torch.Tensor, seen, unseen, n_per_unseen: int,
                     device: torch.device, graphs: list | None = None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ZS3Net step 2 training data: real seen features plus generated unseen ones.

    Args:
        labelled: feature cache (``features`` (N, d_x) float16, ``labels`` (N,) int64).
        gen: trained generator. emb: (C, d_a) class embeddings.
        seen / unseen: class ids. n_per_unseen: synthetic features per unseen class.
        graphs: for a graph-context generator, the RegionGraphs to generate from (masks of
            the unlabelled pool); ``generator`` then seeds the choice of graphs.

    Returns:
        (features (N + n*K, d_x) float32, labels (N + n*K,) int64). Only seen-class real
        features are used: no unseen ground truth enters training.
    """
    keep = torch.isin(labelled["labels"], torch.tensor(list(seen)))
    real, real_l = labelled["features"][keep].float(), labelled["labels"][keep]
    if not len(unseen):  # oracle: nothing to generate
        return real, real_l
    if getattr(gen, "graph_conditioned", False):
        if graphs is None:
            raise ValueError("a graph-context generator needs the pool's graphs")
        fake, fake_l = generate_from_graphs(gen, emb, graphs, unseen, n_per_unseen, generator, device)
    else:
        fake, fake_l = generate(gen, emb, unseen, n_per_unseen, device)
    return torch.cat([labelled["features"][keep].float(), fake]), torch.cat([labelled["labels"][keep], fake_l])
