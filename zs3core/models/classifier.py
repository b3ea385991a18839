"""The final 1x1 pixel classifier f of DeepLabv3+ (ZS3Net §2.2 "Classification model (step 2)").

A 1x1 convolution over d_x-dimensional features is a linear map per pixel, so the
classifier is stored as ``nn.Linear(d_x, C)`` and applied either to (N, d_x) feature
vectors (training on cached real and generated features) or to (B, d_x, h, w) feature maps
(inference), giving logits over all C classes in label order.
"""
from __future__ import annotations

import torch
from torch import nn

from zs3core.io import check_finite


class PixelClassifier(nn.Module):
    """Linear classifier over pixel features.

    Args:
        feature_dim: d_x. num_classes: C (all classes, label order).

    ``forward(x)``: (N, d_x) -> (N, C) logits, or (B, d_x, h, w) -> (B, C, h, w) logits.
    """

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            return torch.einsum("bdhw,cd->bchw", x, self.linear.weight) + self.linear.bias[None, :, None, None]
        return self.linear(x)


def save_classifier(clf: PixelClassifier, path, losses: list[float]) -> None:
    """Save a classifier with what ``load_classifier`` needs and its per-epoch training losses.

    Raises:
        Zs3Error: a weight is NaN or infinite (nothing is written).
    """
    check_finite(clf, str(path))
    torch.save({"state_dict": clf.state_dict(), "num_classes": clf.linear.out_features,
                "feature_dim": clf.linear.in_features, "losses": losses}, path)


def load_classifier(path) -> PixelClassifier:
    """Rebuild a classifier saved by retrain_classifier / self_train (cpu, eval mode)."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    clf = PixelClassifier(ck["feature_dim"], ck["num_classes"])
    clf.load_state_dict(ck["state_dict"])
    return clf.eval()
