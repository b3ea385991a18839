"""Calibrated stacking with γ chosen by zero-shot cross-validation on the seen classes.

Generalized zero-shot models favour the seen classes. Calibrated stacking (Chao, Changpinyo,
Gong & Sha, "An empirical study and analysis of generalized zero-shot learning for object
recognition in the wild", ECCV 2016, arXiv:1605.04253) subtracts a calibration factor γ from
the score of every seen class at test time:

    ŷ = argmax_c  s_c(x) - γ · 1[c ∈ S]

γ = 0 is the uncalibrated model; γ > 0 favours the unseen classes, γ < 0 the seen ones. For a
classifier the scores are its logits (γ on the log-softmax is the same, the log-partition
being shared by all classes); for DeViSE its cosine similarities. SPNet, ZegFormer and ZegCLIP
subtract a hand-set constant; here γ is *selected* without any unseen label, by zero-shot
cross-validation on the seen classes: seen classes are held out as pseudo-unseen, the way
ZS3Net chose its GMMN settings ("zero-shot cross-validation procedure" of Bucher et al.,
ICCV 2017, cited in ZS3Net §3.1):

1. :func:`make_folds`: in each fold, K' seen classes (K' = the number of unseen classes,
   capped to leave at least two seen ones) play the unseen classes; the labelled images are
   split into fold-train and fold-validation images.
2. The caller's ``fit_scorer`` trains the model as the pipeline does (generator on the fold's
   seen classes, retraining with generated features of its pseudo-unseen classes, or DeViSE on
   the fold's seen classes) on the fold-train features, pseudo-unseen features removed.
3. :func:`hiou_curve`: the fold-validation features of every seen class are scored, and the
   hIoU between the fold's seen and pseudo-unseen classes is computed for every γ of a grid.
   Each feature counts for the pixels it stands for (the cache holds at most a few features
   per class and image, so a plain count would hide how often a frequent class like road is
   mistaken for a pseudo-unseen one): the weight of a feature of class c is
   (pixels of c in the fold-validation images) / (cached features of c there).
4. :func:`select_gamma`: the γ with the best hIoU averaged over the folds (among equals, the
   one closest to 0).

Only seen-class labels are read: the real unseen classes are neither trained nor scored in a
fold (tests/test_calibration.py poisons their labels and shows that γ does not change).
Known bias: the backbone was trained on the pseudo-unseen classes, so their features are
better separated than those of real unseen classes; the chosen γ is a protocol, not an oracle.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from zs3core.metrics import zsl_scores


def calibrate(scores: torch.Tensor, seen, gamma: float) -> torch.Tensor:
    """Subtract ``gamma`` from the seen classes' scores.

    Args:
        scores: (N, C) or (B, C, H, W) float scores over all C classes (class dimension 1).
        seen: seen class ids. gamma: the calibration constant (0 = unchanged).

    Returns:
        A new tensor of the same shape and dtype.
    """
    out = scores.clone()
    idx = torch.as_tensor([int(c) for c in seen], dtype=torch.long, device=scores.device)
    out.index_add_(1, idx, torch.full_like(out.index_select(1, idx), -float(gamma)))
    return out


def margins(scores: torch.Tensor, seen, unseen) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each prediction switches from seen to unseen as γ grows.

    Args:
        scores: (N, C) float scores. seen / unseen: the class ids competing (other columns
            are left out).

    Returns:
        (margin (N,) float64 = best seen score - best unseen score, best seen class (N,)
        int64, best unseen class (N,) int64). At γ the prediction is the best unseen class
        iff margin < γ (a tie keeps the seen class).
    """
    s = torch.as_tensor([int(c) for c in seen], dtype=torch.long)
    u = torch.as_tensor([int(c) for c in unseen], dtype=torch.long)
    sv, si = scores[:, s].float().max(1)
    uv, ui = scores[:, u].float().max(1)
    return (sv - uv).double().numpy(), s[si].numpy(), u[ui].numpy()


def hiou_curve(labels: np.ndarray, weights: np.ndarray, scores: torch.Tensor, seen, unseen,
               gammas: np.ndarray) -> np.ndarray:
    """hIoU (%) between ``seen`` and ``unseen`` for each γ, from weighted sample scores.

    Args:
        labels: (N,) int true class of each sample (in seen ∪ unseen).
        weights: (N,) float pixels each sample stands for (>= 0).
        scores: (N, C) float scores; only the seen and unseen columns compete.
        gammas: (G,) float candidate values.

    Returns:
        (G,) float64 hIoU in % (:func:`zs3core.metrics.zsl_scores` on the weighted confusion).
    """
    labels = np.asarray(labels, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    c = int(scores.shape[1])
    m, best_s, best_u = margins(scores, seen, unseen)
    out = np.zeros(len(gammas))
    for g, gamma in enumerate(np.asarray(gammas, dtype=np.float64)):
        pred = np.where(m < gamma, best_u, best_s)
        conf = np.bincount(labels * c + pred, weights=weights, minlength=c * c).reshape(c, c)
        out[g] = zsl_scores(conf, list(seen), list(unseen))["hIoU"]
    return out


def gamma_grid(all_margins: list[np.ndarray], n: int = 201) -> np.ndarray:
    """Candidate γ: 0 and the ``n`` quantiles (0 %..100 %) of the pooled margins, nudged up by
    1e-9 so that each quantile switches its own sample; sorted, unique. The hIoU can only
    change where γ crosses a margin, so quantiles cover the range whatever the score scale."""
    pooled = np.concatenate([np.asarray(m, dtype=np.float64) for m in all_margins]) if all_margins else np.zeros(0)
    qs = np.quantile(pooled, np.linspace(0, 1, n)) + 1e-9 if len(pooled) else np.zeros(0)
    return np.unique(np.concatenate([[0.0], qs]))


def select_gamma(gammas: np.ndarray, curves: np.ndarray) -> tuple[float, float]:
    """The γ of the best mean hIoU over folds; among equal means, the one closest to 0.

    Args:
        gammas: (G,) candidates. curves: (F, G) hIoU of each fold.

    Returns:
        (γ, its mean hIoU in %).
    """
    mean = np.asarray(curves, dtype=np.float64).mean(0)
    best = np.flatnonzero(np.isclose(mean, mean.max(), rtol=0, atol=1e-9))
    i = best[np.argmin(np.abs(np.asarray(gammas)[best]))]
    return float(gammas[i]), float(mean[i])


@dataclass(frozen=True)
class Fold:
    """One zero-shot cross-validation fold: pseudo-unseen classes and the image rows of each part."""

    pseudo_unseen: tuple[int, ...]
    train_rows: tuple[int, ...]
    val_rows: tuple[int, ...]


def make_folds(seen, k_unseen: int, n_folds: int, rows, val_fraction: float, rng: torch.Generator) -> list[Fold]:
    """Seeded folds over the seen classes and the labelled images.

    Pseudo-unseen classes are drawn without replacement from a random permutation of the
    seen classes, wrapping around, so that every seen class is held out before any is held out
    twice. In each fold the images are split at random, ``val_fraction`` of them to validation.

    Args:
        seen: seen class ids present in the labelled features (at least 3).
        k_unseen: pseudo-unseen classes per fold (capped to len(seen) - 2).
        n_folds: number of folds (>= 1). rows: labelled image rows. val_fraction: in (0, 1).

    Raises:
        ValueError: fewer than 3 seen classes or 2 images, or a bad fraction / fold count.
    """
    seen, rows = [int(c) for c in seen], sorted(int(r) for r in rows)
    if len(seen) < 3:
        raise ValueError(f"zero-shot cross-validation needs at least 3 seen classes with features, got {len(seen)}")
    if len(rows) < 2:
        raise ValueError(f"zero-shot cross-validation needs at least 2 labelled images, got {len(rows)}")
    if not 0 < val_fraction < 1 or n_folds < 1:
        raise ValueError(f"calibration: need 0 < val_fraction < 1 and folds >= 1, got {val_fraction}, {n_folds}")
    k = max(1, min(int(k_unseen), len(seen) - 2))
    order = [seen[i] for i in torch.randperm(len(seen), generator=rng).tolist()]
    folds = []
    for f in range(n_folds):
        held = tuple(sorted({order[(f * k + j) % len(order)] for j in range(k)}))
        perm = [rows[i] for i in torch.randperm(len(rows), generator=rng).tolist()]
        n_val = min(len(rows) - 1, max(1, round(val_fraction * len(rows))))
        folds.append(Fold(held, tuple(sorted(perm[n_val:])), tuple(sorted(perm[:n_val]))))
    return folds


Scorer = Callable[[torch.Tensor], torch.Tensor]
"""Maps (N, d_x) features to (N, C) scores over all classes."""


def score_rows(scorer: Scorer, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(n, C) float scores of ``scorer`` on (n, d) features (any float dtype), in chunks of
    65536 rows, without gradients; (0, C) for no rows."""
    with torch.no_grad():
        return torch.cat([scorer(x[i:i + 65536].float()) for i in range(0, len(x), 65536)]) if len(x) \
            else torch.zeros(0, num_classes)


def fold_validation(labels: torch.Tensor, image: torch.Tensor, pixel_counts: np.ndarray,
                    fold: Fold) -> tuple[torch.Tensor, np.ndarray, np.ndarray, list[int]]:
    """How a fold's validation features are scored (module docstring, step 3).

    Returns:
        (val_idx (m,) int64 rows of the fold-validation images, y (m,) int64 labels, w (m,)
        float64 weight of each feature = pixels of its class in those images / its class's
        features there, the fold's seen classes present among them).
    """
    val_idx = torch.nonzero(torch.isin(image, torch.as_tensor(fold.val_rows, dtype=torch.long))).squeeze(1)
    y = labels[val_idx].numpy()
    pixels = pixel_counts[np.asarray(fold.val_rows)].sum(0)
    n_feat = np.bincount(y, minlength=pixel_counts.shape[1])
    return val_idx, y, pixels[y] / np.maximum(n_feat[y], 1), sorted(set(np.unique(y).tolist()) - set(fold.pseudo_unseen))


def pick_gamma(fold_scores: list, folds: list[Fold], grid_size: int):
    """γ from the folds' scored validation features (module docstring, step 4).

    Args:
        fold_scores: per fold (y, w, scores (m, C), fold seen classes), as :func:`fold_validation`
            and :func:`score_rows` give them. folds: the folds, same order. grid_size: :func:`gamma_grid`.

    Returns:
        (gammas (G,), curves (F, G) hIoU %, chosen γ, its mean hIoU, index of γ = 0 in the grid,
        per-fold margins of :func:`margins`).
    """
    fold_margins = [margins(s, fs, f.pseudo_unseen)[0] if len(y) else np.zeros(0)
                    for (y, w, s, fs), f in zip(fold_scores, folds)]
    gammas = gamma_grid(fold_margins, grid_size)
    curves = np.stack([hiou_curve(y, w, s, fs, f.pseudo_unseen, gammas)
                       for (y, w, s, fs), f in zip(fold_scores, folds)])
    gamma, best = select_gamma(gammas, curves)
    return gammas, curves, gamma, best, int(np.flatnonzero(gammas == 0.0)[0]), fold_margins


def cross_validate(features: torch.Tensor, labels: torch.Tensor, image: torch.Tensor, pixel_counts: np.ndarray,
                   folds: list[Fold], fit_scorer: Callable[[Fold, torch.Tensor], Scorer],
                   grid_size: int = 201) -> dict:
    """Zero-shot cross-validation of γ (module docstring, steps 2-4).

    Args:
        features: (N, d_x) labelled features; labels: (N,) int64 seen class ids; image: (N,)
            int64 image row of each feature. Only the rows of the folds' seen classes are
            read; pass seen-class rows only.
        pixel_counts: (R, C) pixels of each class in each image row (label resolution).
        folds: from :func:`make_folds`.
        fit_scorer: ``fit_scorer(fold, train_mask)`` trains the model on the rows selected by
            ``train_mask`` ((N,) bool: fold-train images, pseudo-unseen rows removed) with
            the fold's seen classes as seen and its pseudo-unseen classes as unseen, and
            returns its scorer.
        grid_size: quantiles in the γ grid (:func:`gamma_grid`).

    Returns:
        {"gamma": chosen γ, "hIoU": its mean hIoU, "gammas": (G,) grid, "curves": (F, G) hIoU,
        "uncalibrated_hIoU": mean hIoU at γ = 0, "folds": [{pseudo_unseen, train_images,
        val_images, val_features, gamma (the fold's own best γ), hIoU_at_0 (%), unseen_share
        (pixel share of the pseudo-unseen classes among the fold-validation pixels),
        predicted_unseen_share_at_0 (the share predicted pseudo-unseen at γ = 0)}]}: the last
        two tell whether a fold's model over- or under-predicts the classes it never saw.
    """
    fold_scores = []
    for fold in folds:
        held = torch.as_tensor(fold.pseudo_unseen, dtype=torch.long)
        in_train = torch.isin(image, torch.as_tensor(fold.train_rows, dtype=torch.long))
        scorer = fit_scorer(fold, in_train & ~torch.isin(labels, held))
        val_idx, y, w, fold_seen = fold_validation(labels, image, pixel_counts, fold)
        fold_scores.append((y, w, score_rows(scorer, features[val_idx], pixel_counts.shape[1]), fold_seen))
    gammas, curves, gamma, best, zero, fold_margins = pick_gamma(fold_scores, folds, grid_size)
    per_fold = []
    for f, (y, w, s, fs), m, curve in zip(folds, fold_scores, fold_margins, curves):
        total = max(float(w.sum()), 1e-12)
        per_fold.append({"pseudo_unseen": list(f.pseudo_unseen), "train_images": len(f.train_rows),
                         "val_images": len(f.val_rows), "val_features": len(y),
                         "gamma": float(select_gamma(gammas, curve[None])[0]),
                         "hIoU_at_0": float(curve[zero]),
                         "unseen_share": float(w[np.isin(y, f.pseudo_unseen)].sum() / total),
                         "predicted_unseen_share_at_0": float(w[m < 0].sum() / total)})
    return {"gamma": gamma, "hIoU": best, "gammas": gammas, "curves": curves,
            "uncalibrated_hIoU": float(curves[:, zero].mean()), "folds": per_fold}



def calibration_report(found: dict, names) -> tuple[dict, "pd.DataFrame"]:
    """metrics/calibration.json and the long (model, γ, mean hIoU) curve table, from
    {model: :func:`cross_validate` result}. ZS5Net gets no γ: a γ is chosen for the model it
    calibrates, and ZS3Net's γ was chosen for ZS3Net, so ZS5Net is reported uncalibrated."""
    import pandas as pd

    results, rows = {}, []
    for model, r in found.items():
        folds = [{k: round(v, 4) if isinstance(v, float) else v for k, v in f.items()} for f in r["folds"]]
        results[model] = {"gamma": round(r["gamma"], 6), "cv_hIoU": round(r["hIoU"], 3),
                          "cv_uncalibrated_hIoU": round(r["uncalibrated_hIoU"], 3),
                          "folds": [{**f, "pseudo_unseen": [names[u] for u in f["pseudo_unseen"]]} for f in folds]}
        rows += [{"model": model, "gamma": float(g), "hIoU": float(h)} for g, h in zip(r["gammas"], r["curves"].mean(0))]
    return results, pd.DataFrame(rows, columns=["model", "gamma", "hIoU"])
