"""Segmentation metrics by class group (ZS3Net §3.1 "Evaluation metrics", Tables 1-4).

Pixel accuracy (PA), mean class accuracy (MA) and mean IoU (mIoU) as in Long et al. (FCN,
§5), computed from one confusion matrix over every labelled pixel at label resolution, and
restricted to the seen, unseen or all classes; hIoU is the harmonic mean of seen and unseen
mIoU (Xian et al., as used by ZS3Net).

Group restriction follows the generalized ZSL protocol: predictions range over *all* classes
and a group's scores use the ground-truth pixels of that group, so an unseen pixel predicted
as a seen class counts against the unseen group. For a group G:

* PA_G  = sum_{c in G} TP_c / sum_{c in G} GT_c
* MA_G  = mean_{c in G, GT_c > 0} TP_c / GT_c
* mIoU_G = mean_{c in G, GT_c + P_c > 0} TP_c / (GT_c + P_c - TP_c)

where P_c counts every pixel predicted as c (whatever its true class). A class absent from the
ground truth but predicted has IoU 0. A class absent from both ground truth and prediction
(its IoU is 0/0) follows one of two rules, ``absent``:

* ``skip`` (default): left out of the group's mean, so the mean is over the classes present.
* ``zero``: counted as 0, the official ZS3 code's rule: ``np.nanmean(np.nan_to_num(x))``
  turns the NaN into 0 before the mean (github:valeoai/ZS3, zs3/utils/metrics.py L28-31 for
  MA, L42-47 for mIoU). Use it to compare with the paper's tables. It lowers a group's mean
  whenever a class of it is absent from the scored images (tiny runs, calibration folds).

The two agree whenever every class of the group appears in the ground truth or the prediction.
All values are percentages in [0, 100].
"""
from __future__ import annotations

import numpy as np
import torch


def confusion_matrix(target: torch.Tensor, pred: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Accumulate a confusion matrix.

    Args:
        target: (...,) integer ground truth at label resolution.
        pred: (...,) integer predictions, same shape.
        num_classes: C.
        ignore_index: target value skipped (255 VOC, 11 CamVid).

    Returns:
        (C, C) int64, rows = ground truth, columns = prediction.

    Raises:
        ValueError: shapes differ.
    """
    if target.shape != pred.shape:
        raise ValueError(f"target {tuple(target.shape)} and prediction {tuple(pred.shape)} differ in shape")
    t = target.reshape(-1).long()
    p = pred.reshape(-1).long()
    keep = (t != ignore_index) & (t >= 0) & (t < num_classes)
    idx = t[keep] * num_classes + p[keep]
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


ABSENT_RULES = ("skip", "zero")
"""How a class absent from ground truth and prediction enters a group mean (module docstring)."""


def _nanmean(x: np.ndarray, absent: str = "skip") -> float:
    if absent not in ABSENT_RULES:
        raise ValueError(f"absent-class rule must be one of {ABSENT_RULES}, got '{absent}'")
    x = np.nan_to_num(x, nan=0.0) if absent == "zero" else x[~np.isnan(x)]
    return float(x.mean()) if x.size else 0.0


def per_class_iou(conf: np.ndarray) -> np.ndarray:
    """(C,) IoU in % from a (C, C) confusion matrix; NaN for a class absent from both GT and prediction."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, 100.0 * tp / union, np.nan)


def per_class_accuracy(conf: np.ndarray) -> np.ndarray:
    """(C,) recall in % from a (C, C) confusion matrix; NaN for a class absent from the GT."""
    conf = np.asarray(conf, dtype=np.float64)
    gt = conf.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gt > 0, 100.0 * np.diag(conf) / gt, np.nan)


def harmonic_iou(miou_seen: float, miou_unseen: float) -> float:
    """hIoU = 2 s u / (s + u), 0 when both are 0 (ZS3Net §3.1)."""
    s, u = float(miou_seen), float(miou_unseen)
    return 0.0 if s + u == 0 else 2 * s * u / (s + u)


def group_scores(conf: np.ndarray, classes: list[int] | tuple[int, ...], absent: str = "skip") -> dict[str, float]:
    """PA, MA and mIoU (in %) of a class group, from a full (C, C) confusion matrix; ``absent``
    is the rule for classes absent from ground truth and prediction (module docstring).

    Raises:
        ValueError: unknown ``absent`` rule."""
    conf = np.asarray(conf, dtype=np.float64)
    idx = list(classes)
    gt = conf.sum(1)[idx]
    tp = np.diag(conf)[idx]
    pa = 100.0 * tp.sum() / gt.sum() if gt.sum() > 0 else 0.0
    return {
        "PA": float(pa),
        "MA": _nanmean(per_class_accuracy(conf)[idx], absent),
        "mIoU": _nanmean(per_class_iou(conf)[idx], absent),
    }


def zsl_scores(conf: np.ndarray, seen, unseen, absent: str = "skip") -> dict:
    """Every ZS3Net table column: {'seen': {PA, MA, mIoU}, 'unseen': {...}, 'all': {...}, 'hIoU'}.

    Source: ZS3Net Tables 1, 3, 4 (columns Seen / Unseen / Overall, hIoU). ``absent``: see
    :func:`group_scores`.
    """
    seen, unseen = list(seen), list(unseen)
    out = {
        "seen": group_scores(conf, seen, absent),
        "unseen": group_scores(conf, unseen, absent),
        "all": group_scores(conf, sorted(seen + unseen), absent),
    }
    out["hIoU"] = harmonic_iou(out["seen"]["mIoU"], out["unseen"]["mIoU"])
    return out
