"""Class-balanced cross-entropy weights for the backbone (ZS3Net step 0 on small classes).

A from-scratch backbone trained with plain cross-entropy on road scenes learns the large
classes (road, sky, building) and barely the small ones (pole, sign, fence, bicyclist). Two
standard re-weightings are offered (params ``backbone.class_weighting``):

* ``enet``: w_c = 1 / ln(c + p_c), with p_c the share of class c among all labelled training
  pixels and c = 1.02 (Paszke et al., ENet, arXiv:1606.02147, §4 "Training"; the official
  ZS3Net code ships the same formula in ``zs3/utils/calculate_weights.py`` L21-25). The
  weight of a class is bounded by 1 / ln(1.02) ≈ 50.5; ``cap`` can lower that bound.
* ``median_freq``: median-frequency balancing, w_c = median_k(f_k) / f_c with
  f_c = (pixels of c) / (labelled pixels of the images where c is present)
  (Eigen & Fergus, ICCV 2015, §4.2; used by SegNet, Badrinarayanan et al., TPAMI 2017, §4).
  ``cap`` bounds the largest weight.
* ``none``: every weight 1.

Weights are computed from the kept training labels (the manifest's per-image pixel counts
at label resolution), over the classes the backbone is trained on (the seen classes; every
class under ``split.filter=oracle``). A class with no training pixel gets weight 0 (it cannot
occur as a target anyway).
"""
from __future__ import annotations

import numpy as np

from zs3core.io import Zs3Error

WEIGHTINGS = ("none", "enet", "median_freq")
ENET_C = 1.02


def class_weights(counts: np.ndarray, method: str, cap: float | None = None) -> np.ndarray:
    """Cross-entropy weights of the trained classes.

    Args:
        counts: (N, K) int per-image pixel counts of the K trained classes, at label
            resolution (void not counted), for the N training images.
        method: ``none``, ``enet`` or ``median_freq`` (module docstring).
        cap: upper bound of any weight (None = no bound); must be > 0.

    Returns:
        (K,) float64 weights, 0 for a class without any training pixel.

    Raises:
        Zs3Error: unknown method, a bad cap, or counts that are not (N, K) non-negative.
    """
    if method not in WEIGHTINGS:
        raise Zs3Error(f"backbone.class_weighting: unknown value '{method}'; use one of {list(WEIGHTINGS)}")
    if cap is not None and not cap > 0:
        raise Zs3Error(f"backbone.class_weight_cap: must be > 0 or null, got {cap}")
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or (counts < 0).any():
        raise Zs3Error(f"class weights need (images, classes) non-negative pixel counts, got shape {counts.shape}")
    total = counts.sum(0)
    present = total > 0
    w = np.zeros(counts.shape[1])
    if method == "none":
        w[present] = 1.0
    elif method == "enet":
        share = total / max(total.sum(), 1.0)
        w[present] = 1.0 / np.log(ENET_C + share[present])
    else:
        # labelled pixels of the images where each class is present
        image_px = counts.sum(1)
        denom = (counts > 0).astype(np.float64).T @ image_px
        freq = np.where(present, total / np.maximum(denom, 1.0), 0.0)
        w[present] = np.median(freq[present]) / freq[present]
    if cap is not None:
        w = np.minimum(w, float(cap))
    return w
