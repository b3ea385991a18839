"""ZS5Net pseudo-label selection (ZS3Net §2.2 "Zero-shot learning and self-training", §3.3).

The ZS3Net model labels the unlabelled pool (the training images dropped because they hold
unseen pixels; their ground truth is never read). In each image, among the pixels whose
predicted class is unseen, the top p % by confidence (softmax probability of the predicted
class) become pseudo-labels for their predicted unseen class; the classifier is then
retrained with them. The paper uses p = 25 on Pascal-VOC and p = 75 on Pascal-Context.
"""
from __future__ import annotations

import math

import torch


def select_pseudo_labels(probs: torch.Tensor, image_index: torch.Tensor, unseen, top_p: float) -> torch.Tensor:
    """Pick pseudo-labelled pixels.

    Args:
        probs: (N, C) float class probabilities of N pool pixels (rows sum to 1).
        image_index: (N,) int, which pool image each pixel comes from.
        unseen: label values of the unseen classes.
        top_p: percentage in [0, 100] of each image's unseen-predicted pixels to keep; the
            count is ceil(top_p / 100 * n) (0 when top_p is 0). Ties keep the lower pixel index.

    Returns:
        (N,) bool mask of the selected pixels; their pseudo-label is ``probs.argmax(1)``.

    Raises:
        ValueError: top_p outside [0, 100] or mismatched lengths.
    """
    if not 0 <= float(top_p) <= 100:
        raise ValueError(f"self_training.top_p must be in [0, 100], got {top_p}")
    if probs.shape[0] != image_index.shape[0]:
        raise ValueError(f"probs has {probs.shape[0]} rows but image_index {image_index.shape[0]}")
    conf, pred = probs.max(dim=1)
    is_unseen = torch.zeros(probs.shape[1], dtype=torch.bool)
    is_unseen[list(unseen)] = True
    candidate = is_unseen[pred]
    selected = torch.zeros(len(probs), dtype=torch.bool)
    for img in torch.unique(image_index[candidate]):
        idx = torch.nonzero(candidate & (image_index == img)).squeeze(1)
        k = math.ceil(float(top_p) / 100.0 * len(idx))
        if k == 0:
            continue
        order = torch.sort(conf[idx], descending=True, stable=True).indices
        selected[idx[order[:k]]] = True
    return selected
