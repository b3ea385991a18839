"""ZS5Net pseudo-label selection (ZS3Net §2.2 "Zero-shot learning and self-training", §3.3).

The ZS3Net model labels the unlabelled pool (the training images dropped because they hold
unseen pixels; their ground truth is never read). Among the pool pixels whose predicted class
is unseen, a selection rule (``self_training.rule``, :data:`RULES`) keeps the most confident
(softmax probability of the predicted class) as pseudo-labels for their predicted unseen class;
the classifier is then retrained with them.

* ``image_top_p`` (the paper's ZS5Net, §2.2): the top p % of each image's unseen-predicted
  pixels. The paper uses p = 25 on Pascal-VOC and p = 75 on Pascal-Context. A class that the
  model over-predicts takes most of the pseudo-labels (on CamVid K=2, 99.5 % fence).
* ``class_top_p``: the top p % of the unseen-predicted pixels of *each unseen class*, over the
  whole pool, so that every unseen class keeps the same share of its own predictions. This
  project's rule. (CaGNet's self-training, often described as per-class, is per pixel: a pixel
  is pseudo-labelled with the best-ranked unseen class among its ``top_p`` highest-scoring
  classes, raw scores, no share; official ``tools.py`` L84-98 ``construct_gt_st`` at commit
  249305b of bcmi/CaGNet-Zero-Shot-Semantic-Segmentation, ``top_p: 1`` for VOC in
  ``configs_st_voc.yaml`` L143; only pixels ``ignore`` in the training labels are filled,
  ``gt_new = where(gt == ignore, p6, gt)``, L97. With ``top_p: 1`` that is ``image_top_p`` at
  p = 100 with ``pool_annotation: seen`` under ``ignore``.)
* ``threshold``: every unseen-predicted pixel whose probability is at least
  ``self_training.threshold``.

Which rule and which p or threshold: chosen by the seen-class folds
(:func:`zs3core.crossval.rank_self_training`, ``python -m zs3core.generator_cv --self-training``),
where the pseudo-unseen classes have ground truth; never on val.
"""
from __future__ import annotations

import math

import torch


RULES = ("image_top_p", "class_top_p", "threshold")
"""``self_training.rule`` values (module docstring)."""

POOL_ANNOTATION = {"none": "every pool pixel eligible (the paper's ZS5Net)",
                   "seen": "uses the pool's seen annotation"}
"""``self_training.pool_annotation`` values and the label every metric and table gives them."""


def unlabelled(labels: torch.Tensor, seen, protocol: str, pool_annotation: str = "none") -> torch.Tensor:
    """(N,) bool: the pool pixels that may receive a pseudo-label.

    ``pool_annotation="none"`` (default, the paper's ZS5Net, §2.2): every pool pixel may, and
    ``labels`` is not read. ``"seen"`` under ``ignore``: the pool is every training image, whose
    seen pixels are labelled, and only pixels without a seen label (unseen or void in the
    training annotation) may. That mask is close to a pixel-exact map of the unseen objects:
    information the paper's ZS5Net does not have, so the rows it produces are labelled
    "uses the pool's seen annotation" (:data:`POOL_ANNOTATION`). Under ``drop`` the pool images
    carry no annotation, and ``"seen"`` changes nothing.

    Args:
        labels: (N,) int the pool pixels' training labels (only their seen / not-seen status
            is read, and only for ``"seen"`` under ``ignore``). seen: seen class ids.
        protocol: ``split.filter``. pool_annotation: ``none`` or ``seen``.

    Raises:
        ValueError: unknown ``pool_annotation``.
    """
    if pool_annotation not in POOL_ANNOTATION:
        raise ValueError(f"self_training.pool_annotation must be one of {sorted(POOL_ANNOTATION)}, got '{pool_annotation}'")
    if pool_annotation == "none" or protocol == "drop":
        return torch.ones(len(labels), dtype=torch.bool)
    return ~torch.isin(labels, torch.as_tensor([int(c) for c in seen], dtype=labels.dtype))


def selection_rule(params, protocol: str) -> dict:
    """The ``self_training`` view as the plain rule the folds apply (:func:`zs3core.crossval.zs5net_fold`):
    {"rule", "top_p", "threshold", "protocol", "pool_annotation"}. A params.yaml older than
    ``rule`` / ``threshold`` gives the paper's per-image top-p."""
    return {"rule": params.rule or "image_top_p", "top_p": params.top_p,
            "threshold": 1.0 if params.threshold is None else params.threshold, "protocol": protocol,
            "pool_annotation": params.pool_annotation}


def select_pseudo_labels(probs: torch.Tensor, image_index: torch.Tensor, unseen, top_p: float,
                         eligible: torch.Tensor | None = None, rule: str = "image_top_p",
                         threshold: float = 0.5) -> torch.Tensor:
    """Pick pseudo-labelled pixels by ``rule`` (module docstring).

    Args:
        probs: (N, C) float class probabilities of N pool pixels (rows sum to 1).
        image_index: (N,) int, which pool image each pixel comes from.
        unseen: label values of the unseen classes.
        top_p: percentage in [0, 100] kept by the ``*_top_p`` rules: of each image's
            unseen-predicted pixels (``image_top_p``) or of each unseen class's predicted pixels
            over the pool (``class_top_p``); the count is ceil(top_p / 100 * n) (0 when top_p
            is 0). Ties keep the lower pixel index.
        eligible: (N,) bool pixels that may be pseudo-labelled (:func:`unlabelled`); None = all.
        rule: one of :data:`RULES`. threshold: probability in [0, 1] for ``threshold``.

    Returns:
        (N,) bool mask of the selected pixels; their pseudo-label is ``probs.argmax(1)``.

    Raises:
        ValueError: top_p outside [0, 100], threshold outside [0, 1], unknown rule, or
            mismatched lengths.
    """
    if not 0 <= float(top_p) <= 100:
        raise ValueError(f"self_training.top_p must be in [0, 100], got {top_p}")
    if rule not in RULES:
        raise ValueError(f"self_training.rule must be one of {list(RULES)}, got '{rule}'")
    if not 0 <= float(threshold) <= 1:
        raise ValueError(f"self_training.threshold must be in [0, 1], got {threshold}")
    if probs.shape[0] != image_index.shape[0]:
        raise ValueError(f"probs has {probs.shape[0]} rows but image_index {image_index.shape[0]}")
    conf, pred = probs.max(dim=1)
    is_unseen = torch.zeros(probs.shape[1], dtype=torch.bool)
    is_unseen[list(unseen)] = True
    candidate = is_unseen[pred]
    if eligible is not None:
        candidate &= eligible.bool()
    if rule == "threshold":
        return candidate & (conf >= float(threshold))
    groups = image_index if rule == "image_top_p" else pred
    selected = torch.zeros(len(probs), dtype=torch.bool)
    for g in torch.unique(groups[candidate]):
        idx = torch.nonzero(candidate & (groups == g)).squeeze(1)
        k = math.ceil(float(top_p) / 100.0 * len(idx))
        if k == 0:
            continue
        order = torch.sort(conf[idx], descending=True, stable=True).indices
        selected[idx[order[:k]]] = True
    return selected


@torch.no_grad()
def pseudo_label(scorer, pool: dict, seen, unseen, top_p: float, protocol: str, gamma: float = 0.0,
                 chunk: int = 65536, pool_annotation: str = "none", rule: str = "image_top_p",
                 threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """ZS5Net's pseudo-labels of the unlabelled pool.

    The ZS3Net classifier scores every cached pool feature; its scores are calibrated with
    ``gamma`` (:func:`zs3core.calibration.calibrate`, the γ chosen for ZS3Net), turned into
    probabilities, and :func:`select_pseudo_labels` keeps the eligible pixels (:func:`unlabelled`)
    that ``rule`` (with ``top_p`` or ``threshold``) selects.

    Args:
        scorer: maps (n, d_x) float features to (n, C) logits (the ZS3Net classifier).
        pool: the pool feature cache: ``features`` (N, d_x), ``image`` (N,), ``labels`` (N,)
            (only their seen / not-seen status is read, and only for ``pool_annotation="seen"``
            under ``ignore``).
        protocol: ``split.filter`` (``drop`` or ``ignore``). pool_annotation: :func:`unlabelled`.

    Returns:
        (selected (N,) bool, pseudo-labels (n_selected,) int64 unseen class ids).
    """
    from zs3core.calibration import calibrate

    feats = pool["features"]
    if len(feats) == 0:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.long)
    probs = torch.cat([calibrate(scorer(feats[i:i + chunk].float()), seen, gamma).softmax(1)
                       for i in range(0, len(feats), chunk)])
    sel = select_pseudo_labels(probs, pool["image"], unseen, top_p,
                               unlabelled(pool["labels"], seen, protocol, pool_annotation), rule, threshold)
    return sel, probs[sel].argmax(1)


def pseudo_label_report(sel: torch.Tensor, pseudo_y: torch.Tensor, gt: torch.Tensor, split, top_p: float,
                        gamma: float, training_features: int, pool_annotation: str = "none",
                        rule: str = "image_top_p", threshold: float | None = None) -> dict:
    """metrics/self_training.json: the selection rule, the pool rule (:data:`POOL_ANNOTATION`), how
    many pseudo-labels of each unseen class, and their precision against the pool's ground truth,
    overall and per class (a diagnostic, never used for training; pixels void in the ground truth
    are left out). ``gamma``: ZS3Net's γ, used to pseudo-label."""
    g = gt[sel]
    valid = g != 255

    def precision(mask):
        m = mask & valid
        return round(100.0 * float((pseudo_y[m] == g[m]).float().mean()), 2) if m.any() else None

    return {"rule": rule, "top_p": top_p, "threshold": threshold if rule == "threshold" else None,
            "zs3net_gamma": gamma, "pool_annotation": POOL_ANNOTATION[pool_annotation],
            "pool_pixels": len(sel), "pseudo_labels": int(sel.sum()),
            "pseudo_labels_per_class": {split.classes[u]: int((pseudo_y == u).sum()) for u in split.unseen},
            "training_features": training_features,
            "pseudo_label_precision": precision(torch.ones_like(valid)),
            "pseudo_label_precision_per_class": {split.classes[u]: precision(pseudo_y == u) for u in split.unseen}}
