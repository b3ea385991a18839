"""Evaluation of every model on labelled splits (ZS3Net §3.1, Tables 1-4).

All models share the backbone's features: one forward pass per image, then each model's
per-pixel scorer (the backbone's own classifier, the retrained 1x1 classifiers, DeViSE's
cosine scores); logits are bilinearly upsampled to the label's resolution and every labelled
pixel is scored (void ignored). Labels are never downsampled for scoring.

Two protocols (ZS3Net Table 2, Xian et al. 2018):

* **generalized** (default): every pixel is classified among all classes;
* **vanilla**: only pixels whose ground truth is unseen are scored, and they are classified
  among the unseen classes only (seen scores ignored). Defined for models that score every
  unseen class.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from zs3core.metrics import confusion_matrix
from zs3core.models.deeplab import upsample_logits


@torch.no_grad()
def predict_all(backbone, heads: dict, trained, unseen, image: torch.Tensor, label_size: tuple[int, int],
                backbone_name: str = "seen_only") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Generalized and vanilla predictions of every model on one image.

    Args:
        backbone: DeepLabV3Plus whose own classifier outputs the classes it was trained on.
        heads: {name: module mapping (B, d_x, h, w) features to (B, C, h, w) scores over all C classes}.
        trained: class ids of the backbone's outputs, in output order.
        unseen: unseen class ids (for the vanilla protocol).
        image: (1, 3, H', W') normalised float image. label_size: (H, W) of the label map.
        backbone_name: key of the backbone's own predictions (``seen_only``, or ``oracle``).

    Returns:
        ({model: (H, W) int64 class ids}, {model: (H, W) int64 unseen class ids, vanilla}).
    """
    feats = backbone.features(image).float()
    scorers = {backbone_name: (backbone.classifier(feats), list(trained))}
    for name, head in heads.items():
        logits = head(feats)
        scorers[name] = (logits, list(range(logits.shape[1])))
    gen, van = {}, {}
    unseen = list(unseen)
    for name, (logits, ids) in scorers.items():
        up = upsample_logits(logits, label_size)[0]
        ids_t = torch.tensor(ids, device=up.device)
        gen[name] = ids_t[up.argmax(0)]
        if unseen and set(unseen) <= set(ids):
            cols = torch.tensor([ids.index(u) for u in unseen], device=up.device)
            van[name] = torch.tensor(unseen, device=up.device)[up[cols].argmax(0)]
    return gen, van


def evaluate_split(backbone, heads: dict, dataset, trained, unseen, num_classes: int, device: torch.device,
                   panel_rows=(), desc: str = "evaluate",
                   backbone_name: str = "seen_only") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[int, dict]]:
    """Confusion matrices of every model over a dataset in evaluation mode (raw class ids, 255 ignored).

    Args:
        dataset: SegDataset in evaluation mode (targets in raw class ids, void = 255).
        trained / unseen / backbone_name: see :func:`predict_all`.
        panel_rows: dataset rows whose predictions are returned for figures.

    Returns:
        ({model: (C, C) int64 generalized confusion}, {model: (C, C) int64 vanilla confusion,
        non-zero only on unseen rows and columns}, {row: {'target': (H, W), model: (H, W)}}).
    """
    backbone.to(device).eval()
    heads = {k: h.to(device).eval() for k, h in heads.items()}
    names = [backbone_name, *heads]
    conf = {k: torch.zeros(num_classes, num_classes, dtype=torch.int64) for k in names}
    vconf: dict[str, torch.Tensor] = {}
    is_unseen = torch.zeros(256, dtype=torch.bool)
    is_unseen[list(unseen)] = True
    panels = {}
    panel_rows = set(panel_rows)
    for i in tqdm(range(len(dataset)), desc=desc):
        img, target, _ = dataset[i]
        preds, vpreds = predict_all(backbone, heads, trained, unseen, img[None].to(device), tuple(target.shape), backbone_name)
        for k, pr in preds.items():
            conf[k] += confusion_matrix(target, pr.cpu(), num_classes, 255)
        vt = torch.where(is_unseen[target.clamp(0, 255)], target, torch.full_like(target, 255))
        for k, pr in vpreds.items():
            vconf.setdefault(k, torch.zeros(num_classes, num_classes, dtype=torch.int64))
            vconf[k] += confusion_matrix(vt, pr.cpu(), num_classes, 255)
        if i in panel_rows:
            panels[i] = {"target": target.numpy(), **{k: v.cpu().numpy() for k, v in preds.items()}}
    return {k: v.numpy() for k, v in conf.items()}, {k: v.numpy() for k, v in vconf.items()}, panels
