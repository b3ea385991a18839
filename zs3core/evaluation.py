"""Evaluation of the seen-only model, ZS3Net and ZS5Net on labelled splits (ZS3Net §3.1, Tables 1-4).

All models share the backbone's features: one forward pass per image, then each model's 1x1
classifier; logits are bilinearly upsampled to the label's resolution and every labelled
pixel is scored (void/255 ignored). Labels are never downsampled for scoring.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from zs3core.metrics import confusion_matrix
from zs3core.models.deeplab import upsample_logits


@torch.no_grad()
def predict_all(backbone, heads: dict, seen, image: torch.Tensor, label_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Predictions of every model on one image.

    Args:
        backbone: DeepLabV3Plus whose own classifier outputs the |S| seen classes.
        heads: {name: PixelClassifier over all C classes}.
        seen: seen class ids (maps the seen-only outputs to class ids).
        image: (1, 3, H', W') normalised float image.
        label_size: (H, W) of the label map.

    Returns:
        {'seen_only': (H, W) int64, name: (H, W) int64 for each head}, in class ids.
    """
    feats = backbone.features(image).float()
    seen_ids = torch.tensor(list(seen))
    out = {"seen_only": seen_ids[upsample_logits(backbone.classifier(feats), label_size).argmax(1)[0]]}
    for name, head in heads.items():
        out[name] = upsample_logits(head(feats), label_size).argmax(1)[0]
    return out


def evaluate_split(backbone, heads: dict, dataset, seen, num_classes: int, device: torch.device,
                   panel_rows=(), desc: str = "evaluate") -> tuple[dict[str, np.ndarray], dict[int, dict]]:
    """Confusion matrices of every model over a dataset in evaluation mode (raw class ids, 255 ignored).

    Returns:
        ({model: (C, C) int64 confusion matrix}, {row: {'target': (H, W), model: (H, W)}} for
        the rows in ``panel_rows``).
    """
    backbone.to(device).eval()
    heads = {k: h.to(device).eval() for k, h in heads.items()}
    conf = {k: torch.zeros(num_classes, num_classes, dtype=torch.int64) for k in ["seen_only", *heads]}
    panels = {}
    panel_rows = set(panel_rows)
    for i in tqdm(range(len(dataset)), desc=desc):
        img, target, _ = dataset[i]
        preds = predict_all(backbone, heads, seen, img[None].to(device), tuple(target.shape))
        for k, pr in preds.items():
            conf[k] += confusion_matrix(target, pr.cpu(), num_classes, 255)
        if i in panel_rows:
            panels[i] = {"target": target.numpy(), **{k: v.cpu().numpy() for k, v in preds.items()}}
    return {k: v.numpy() for k, v in conf.items()}, panels
