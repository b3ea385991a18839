"""Diagnostics that read unseen ground truth: the real-feature ceiling and transfer efficiency.

Nothing here feeds training of the zero-shot models or any selection (γ, checkpoints,
hyper-parameters); the stages that use it write its outputs under names that say so
(``data/ceiling/``, ``real_feature_ceiling`` in ``metrics/evaluate.json``).

* **Real-feature ceiling**: the 1x1 classifier retrained with ZS3Net's step-2 recipe (same
  epochs, learning rate, unseen class weight, real seen features) but with *real* features of
  the unseen classes, taken from the unlabelled pool with their ground truth, in place of
  generated ones. It is what a perfect generator could reach with this backbone's features.
* **Transfer efficiency** = a model's unseen mIoU / the ceiling's unseen mIoU (same protocol,
  same calibration setting): the share of the backbone's attainable unseen score that the
  generator delivers.
"""
from __future__ import annotations

import torch


def real_unseen_features(pool: dict, unseen, n_per_class: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``n_per_class`` random pool features of each unseen class, by their ground truth.

    Args:
        pool: the pool feature cache (``features`` (N, d_x), ``labels`` (N,) ground truth).
        unseen: unseen class ids. n_per_class: cap per class (> 0). rng: seeded CPU generator.

    Returns:
        ((m, d_x) float32, (m,) int64), grouped by class in the order of ``unseen``; a class
        absent from the pool contributes nothing.
    """
    xs, ys = [], []
    for u in unseen:
        idx = torch.nonzero(pool["labels"] == int(u)).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=rng)[:int(n_per_class)]]
        xs.append(pool["features"][idx].float())
        ys.append(torch.full((len(idx),), int(u), dtype=torch.long))
    d = pool["features"].shape[1]
    return (torch.cat(xs), torch.cat(ys)) if xs else (torch.zeros(0, d), torch.zeros(0, dtype=torch.long))


def transfer_efficiency(model_unseen_miou: float, ceiling_unseen_miou: float) -> float | None:
    """100 * model / ceiling unseen mIoU (%), or None when the ceiling is 0 (nothing to transfer)."""
    return None if ceiling_unseen_miou <= 0 else 100.0 * float(model_unseen_miou) / float(ceiling_unseen_miou)
