"""Zero-shot cross-validation folds: each calibrated model fitted on a fold as the pipeline fits it.

:func:`zs3core.calibration.cross_validate` calls one ``fit_scorer(fold, train_mask)`` per fold;
this module builds them for ZS3Net (any generator kind of :mod:`zs3core.generators`), DeViSE
and the real-feature ceiling. Kept apart from :mod:`zs3core.calibration` so that applying γ
(evaluation, pseudo-labelling) does not depend on the training code.
"""
from __future__ import annotations

import numpy as np
import torch

from zs3core.calibration import Fold, Scorer
from zs3core.ceiling import real_unseen_features
from zs3core.devise import train_devise
from zs3core.generators import FitData, SampleContext, sample_context
from zs3core.retrain import fit_classifier


def fold_scorers(kind, generator_params, cfg, data, num_classes: int, rng: torch.Generator,
                 device: torch.device, self_training=None) -> dict:
    """The ``fit_scorer`` of each calibrated model, for :func:`zs3core.calibration.cross_validate`:
    {"zs3net" | "devise" | "real_feature_ceiling" | "zs5net": fit_scorer(fold, train_mask) -> scorer}.

    Each one trains its model on a fold exactly as the pipeline trains it on the real split,
    with the fold's seen classes as seen and its pseudo-unseen classes as unseen:

    * ``zs3net``: a fresh generator of ``kind`` (:mod:`zs3core.generators`) fitted on the
      fold-train features, then :func:`zs3core.retrain.fit_classifier` with its synthetic
      features (graph-context kinds sample their graphs from the masks of the fold-train
      images only, so that nothing of the images a fold scores reaches its model);
    * ``devise``: :func:`zs3core.devise.train_devise` on the fold-train features;
    * ``real_feature_ceiling``: :func:`zs3core.retrain.fit_classifier` with *real* features of
      the pseudo-unseen classes from the fold-train images (at most ``generated_per_unseen``
      per class), as :mod:`zs3core.ceiling` does with the pool;
    * ``zs3net_parts``: as ``zs3net`` but returns (classifier, ``sampler(rng)`` giving the fitted
      generator's sampler on a random stream, the fold-train :class:`FitData`); memoised per
      fold, so that ZS5Net's fold reuses the very ZS3Net model the ``zs3net`` CV scored;
    * ``zs5net``: that fold's ZS3Net pseudo-labels the fold-train images with ZS3Net's γ (set
      ``scorers["zs5net"].zs3net_gamma`` first; :func:`select_gammas` does) by the rule of
      ``self_training`` (:func:`zs5net_fold`), and the classifier is retrained with them.

    Args:
        kind: the :class:`zs3core.generators.GeneratorKind`. generator_params: its params
            (:class:`zs3core.config.GeneratorParams`). cfg: the ``classifier`` view.
        data: :class:`zs3core.generators.FitData` of the labelled cache (seen-class rows).
        num_classes: C. rng: seeded CPU generator. device: where to train.
        self_training: {"rule", "top_p", "threshold", "protocol", "pool_annotation"} for ``zs5net``.
    """
    memo: dict = {}
    def subset(mask):
        return FitData(data.features[mask], data.labels[mask], data.image[mask], data.embeddings, data.label_maps,
                       data.void)

    def fold_seen(d) -> list[int]:
        return sorted(int(c) for c in torch.unique(d.labels))

    def zs3net_parts(fold: Fold, train_mask: torch.Tensor):
        if fold in memo:
            return memo[fold]
        d = subset(train_mask)
        gen = kind.build(generator_params, d.embeddings.shape[1], d.features.shape[1])
        kind.fit(gen, d, fold_seen(d), generator_params, rng, device, None, unseen=fold.pseudo_unseen)
        ctx = sample_context(data.label_maps, fold.train_rows, data.void) if kind.needs_graphs else SampleContext()

        def sampler(r: torch.Generator):
            return lambda classes, n: kind.sample(gen, d.embeddings, classes, n, ctx, r, device)

        clf, _, _ = fit_classifier(d.features, d.labels, num_classes, fold_seen(d), fold.pseudo_unseen, sampler(rng), cfg,
                                   rng, device, desc="calibration fold: ZS3Net")
        memo[fold] = (clf, sampler, d)
        return memo[fold]

    def zs3net(fold: Fold, train_mask: torch.Tensor) -> Scorer:
        return zs3net_parts(fold, train_mask)[0]

    def zs5net(fold: Fold, train_mask: torch.Tensor) -> Scorer:
        if zs5net.zs3net_gamma is None:
            raise ValueError("fold_scorers: set scorers['zs5net'].zs3net_gamma (ZS3Net's γ) before the zs5net CV")
        clf, sampler, d = zs3net_parts(fold, train_mask)
        return zs5net_fold(clf, sampler, d, data, fold, zs5net.zs3net_gamma, self_training, cfg, num_classes, rng,
                           device)[0]

    zs5net.zs3net_gamma = None

    def devise(fold: Fold, train_mask: torch.Tensor) -> Scorer:
        d = subset(train_mask)
        head, _ = train_devise(d.features, d.labels, d.embeddings, cfg.epochs, cfg.batch_size, cfg.lr, rng, device)
        return head

    def ceiling(fold: Fold, train_mask: torch.Tensor) -> Scorer:
        d = subset(train_mask)
        in_train = torch.isin(data.image, torch.as_tensor(fold.train_rows, dtype=torch.long))
        real_u = {"features": data.features[in_train], "labels": data.labels[in_train]}
        extra = real_unseen_features(real_u, fold.pseudo_unseen, cfg.generated_per_unseen, rng)
        clf, _, _ = fit_classifier(d.features, d.labels, num_classes, fold_seen(d), fold.pseudo_unseen, None, cfg,
                                   rng, device, extra=extra, desc="calibration fold: ceiling")
        return clf

    return {"zs3net": zs3net, "devise": devise, "real_feature_ceiling": ceiling, "zs5net": zs5net,
            "zs3net_parts": zs3net_parts}


def zs5net_fold(clf, sampler, d, data, fold: Fold, gamma: float, rule: dict, cfg, num_classes: int,
                rng: torch.Generator, device: torch.device):
    """ZS5Net on one seen-class fold: pseudo-label the fold's pool with its ZS3Net, retrain.

    The pool is the fold-train images, all their rows (the pseudo-unseen ones included, their
    labels hidden from the selection; with ``pool_annotation: seen`` under ``ignore`` only the
    rows without a fold-seen label are eligible, :func:`zs3core.self_training.unlabelled`):
    the ``ignore`` protocol's pool. Under ``drop`` the folds cannot copy the real pool (the
    images holding a pseudo-unseen class such as road or sky are nearly all of them and would
    leave nothing to train on), so the fold is a proxy there, on a pool whose seen pixels the
    classifier was trained on. ZS3Net's probabilities, calibrated with ``gamma``, are selected by
    :func:`zs3core.self_training.select_pseudo_labels` with ``rule``; the classifier is retrained
    with ZS3Net's recipe plus the pseudo-labelled features, as the self_training stage does.

    Args:
        clf, sampler, d: the fold's ZS3Net classifier, generator sampler factory and fold-train
            :class:`FitData` (``fold_scorers(...)["zs3net_parts"]``).
        data: the seen-class :class:`FitData` of the whole labelled cache. fold: the fold.
        gamma: ZS3Net's γ. rule: {"rule", "top_p", "threshold", "protocol", "pool_annotation"}.
        cfg: the ``classifier`` view. num_classes: C. rng / device: the retraining's stream and device.

    Returns:
        (retrained classifier, {"pseudo_unseen", "precision" (% of pseudo-labels equal to the
        pseudo-unseen ground truth; None when none is selected), "pseudo_labels"}).
    """
    from zs3core.calibration import calibrate, score_rows
    from zs3core.self_training import select_pseudo_labels, unlabelled

    fs = sorted(int(c) for c in torch.unique(d.labels))
    in_train = torch.isin(data.image, torch.as_tensor(fold.train_rows, dtype=torch.long))
    pool_x, pool_y, pool_img = data.features[in_train].float(), data.labels[in_train], data.image[in_train]
    eligible = unlabelled(pool_y, fs, rule.get("protocol", "drop"), rule.get("pool_annotation", "none"))
    probs = calibrate(score_rows(clf, pool_x, num_classes), fs, gamma).softmax(1)
    sel = select_pseudo_labels(probs, pool_img, fold.pseudo_unseen, rule.get("top_p", 0.0), eligible,
                               rule.get("rule", "image_top_p"), rule.get("threshold", 1.0))
    pseudo = probs[sel].argmax(1)
    prec = float((pseudo == pool_y[sel]).float().mean()) * 100 if bool(sel.any()) else None
    clf2, _, _ = fit_classifier(d.features, d.labels, num_classes, fs, fold.pseudo_unseen, sampler(rng), cfg, rng,
                                device, extra=(pool_x[sel], pseudo), desc="calibration fold: ZS5Net")
    return clf2, {"pseudo_unseen": list(fold.pseudo_unseen), "precision": prec, "pseudo_labels": int(sel.sum())}


def select_gammas(labelled: dict, label_maps: dict, pixel_counts, seen, unseen, void, embeddings: torch.Tensor,
                  kind, generator_params, cfg, models, folds: int, val_fraction: float, grid: int,
                  rng: torch.Generator, device: torch.device, self_training: dict | None = None) -> dict:
    """γ of every model in ``models`` by zero-shot cross-validation, reading no unseen label.

    Whatever the inputs hold about the unseen classes is dropped before anything else: the
    labelled rows of unseen classes, the unseen pixels of the label maps (made void, so that a
    graph-context generator sees no unseen node) and the unseen columns of ``pixel_counts``
    are never read (tests/test_calibration.py poisons them all).

    Args:
        labelled: the labelled feature cache (``features``, ``labels``, ``image``).
        label_maps: {row: (h, w) uint8} label maps at feature resolution.
        pixel_counts: (R, C) pixels per class and image row (manifest).
        seen / unseen / void: class ids. embeddings: (C, d_a).
        kind, generator_params, cfg: the generator kind, its params and the
            ``classifier`` views of :mod:`zs3core.config`, as in the pipeline.
        models: names among ``zs3net``, ``devise``, ``real_feature_ceiling``, ``zs5net`` (needs
            ``zs3net``; scored last, on the ``zs3net`` fold models, pseudo-labelling with the γ the
            ``zs3net`` CV chose: ZS5Net's own γ).
        self_training: the ZS5Net rule for ``zs5net`` (:func:`zs5net_fold`).
        folds, val_fraction, grid: :func:`zs3core.calibration.make_folds`, :func:`cross_validate`.

    Returns:
        {model: the dict of :func:`zs3core.calibration.cross_validate`}.
    """
    from zs3core.calibration import cross_validate

    data, counts, fold_list = seen_only_folds(labelled, label_maps, pixel_counts, seen, unseen, void, embeddings, folds,
                                              val_fraction, rng)
    scorers = fold_scorers(kind, generator_params, cfg, data, embeddings.shape[0], rng, device, self_training)
    if "zs5net" in models and "zs3net" not in models:
        raise ValueError("calibration.models: zs5net needs zs3net (ZS5Net pseudo-labels with ZS3Net's fold models and γ)")
    out = {m: cross_validate(data.features, data.labels, data.image, counts, fold_list, scorers[m], grid)
           for m in models if m != "zs5net"}
    if "zs5net" in models:                                  # last: the other models' streams are as before
        scorers["zs5net"].zs3net_gamma = out["zs3net"]["gamma"]
        out["zs5net"] = cross_validate(data.features, data.labels, data.image, counts, fold_list, scorers["zs5net"],
                                       grid)
    return {m: out[m] for m in models}


def seen_only_folds(labelled: dict, label_maps: dict, pixel_counts, seen, unseen, void, embeddings: torch.Tensor,
                    folds: int, val_fraction: float, rng: torch.Generator):
    """Drop everything of the unseen classes, then draw the folds (:func:`select_gammas`'s first step).

    Returns:
        (:class:`FitData` of the seen-class rows, with unseen pixels of the label maps made void;
        (R, C) float64 pixel counts with the unseen columns zeroed; the folds of
        :func:`zs3core.calibration.make_folds`). ``rng`` is advanced as the calibrate stage does,
        so the same seed gives the same folds.
    """
    from zs3core.calibration import make_folds

    keep = torch.isin(labelled["labels"], torch.as_tensor([int(c) for c in seen], dtype=torch.long))
    hidden = [int(u) for u in unseen]
    lut = torch.arange(256, dtype=torch.uint8)
    lut[hidden] = 255
    maps = {r: lut[m.long()] for r, m in label_maps.items()}
    counts = np.array(pixel_counts, dtype=np.float64, copy=True)
    counts[:, hidden] = 0.0
    data = FitData(labelled["features"][keep], labelled["labels"][keep], labelled["image"][keep], embeddings, maps,
                   tuple(void))
    present = sorted(int(x) for x in torch.unique(data.labels))
    fold_list = make_folds(present, len(hidden), folds, sorted(set(data.image.tolist())), val_fraction, rng)
    return data, counts, fold_list


def rank_self_training(labelled: dict, label_maps: dict, pixel_counts, seen, unseen, void, embeddings: torch.Tensor,
                       kind, generator_params, cfg, candidates: list[dict], gamma: float, folds: int,
                       val_fraction: float, grid: int, rng: torch.Generator, device: torch.device) -> list[dict]:
    """Score ZS5Net selection rules on the seen-class folds, where pseudo-unseen ground truth exists.

    The folds are :func:`select_gammas`'s (same seed, same folds). In each fold, ZS3Net is
    fitted as the calibration fits it (generator and step 2 on the fold-train images, pseudo-unseen
    rows removed); the fold-train images then play the unlabelled pool (all their rows, the
    pseudo-unseen ones included, labels hidden from the selection; with ``pool_annotation: seen``
    only the rows without a fold-seen label are eligible, :func:`zs3core.self_training.unlabelled`).
    That is the ``ignore`` protocol's pool. Under ``drop`` the folds cannot copy the real pool
    (the images holding a pseudo-unseen class such as road or sky are nearly all of them, and
    would leave nothing to train on), so the ranking is a proxy there: it scores the rules on an
    ``ignore``-like pool, whose seen pixels the classifier was trained on (fewer false unseen
    picks than on unseen images).
    For every candidate, :func:`zs3core.self_training.select_pseudo_labels` picks pseudo-labels
    from ZS3Net's probabilities calibrated with ``gamma``, the classifier is retrained with them
    (ZS3Net's recipe plus the pseudo-labelled features, as the self_training stage does; every
    candidate on the same random streams, which leave the folds' own streams untouched, so that
    ZS3Net's figures equal :func:`select_gammas`'s), and the fold-validation images are scored over a γ
    grid exactly as :func:`zs3core.calibration.cross_validate` scores a model: the key is the
    fold-mean hIoU at the candidate's own best γ, which is also the γ a calibrated ZS5Net would
    use. Nothing of the real unseen classes is read (:func:`seen_only_folds`).

    Args:
        labelled ... rng, device: as :func:`select_gammas`. grid: γ grid size.
        candidates: [{"rule", "top_p", "threshold", "protocol", "pool_annotation", ...}]
            (:func:`zs3core.self_training.selection_rule`; :data:`zs3core.self_training.RULES`).
        gamma: ZS3Net's γ used to pseudo-label (the calibrate stage's).

    Returns:
        One dict per candidate, best first: {**candidate, "cv_hIoU" (fold-mean hIoU at the
        candidate's γ, %), "gamma", "cv_uncalibrated_hIoU" (at γ = 0, %), "zs3net_cv_hIoU" and
        "zs3net_gamma" (ZS3Net without self-training on the same folds), "precision" (mean over
        folds of the pseudo-labels' precision against the pseudo-unseen truth, %; None where no
        fold selects any), "pseudo_labels" (total over folds), "folds": per fold
        {pseudo_unseen, precision, pseudo_labels}, "rank"}.
    """
    from zs3core.calibration import fold_validation, pick_gamma, score_rows

    data, counts, fold_list = seen_only_folds(labelled, label_maps, pixel_counts, seen, unseen, void, embeddings, folds,
                                              val_fraction, rng)
    parts = fold_scorers(kind, generator_params, cfg, data, embeddings.shape[0], rng, device)["zs3net_parts"]
    num_classes = embeddings.shape[0]
    scored = {i: [] for i in range(-1, len(candidates))}      # -1: ZS3Net; per fold (y, w, scores, fold seen)
    stats = {i: [] for i in range(len(candidates))}
    for fold in fold_list:
        held = torch.as_tensor(fold.pseudo_unseen, dtype=torch.long)
        in_train = torch.isin(data.image, torch.as_tensor(fold.train_rows, dtype=torch.long))
        clf, sampler, d = parts(fold, in_train & ~torch.isin(data.labels, held))
        val_idx, val_y, w, val_seen = fold_validation(data.labels, data.image, counts, fold)   # as cross_validate
        val_x = data.features[val_idx]
        scored[-1].append((val_y, w, score_rows(clf, val_x, num_classes), val_seen))
        cand_seed = 1000 + len(scored[-1])
        outer = rng.get_state()
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):         # the next fold's ZS3Net as the calibration fits it
            for i, cand in enumerate(candidates):
                torch.manual_seed(cand_seed)                 # every candidate retrains on the same streams
                clf2, st = zs5net_fold(clf, sampler, d, data, fold, gamma, cand, cfg, num_classes,
                                       torch.Generator().manual_seed(cand_seed), device)
                scored[i].append((val_y, w, score_rows(clf2, val_x, num_classes), val_seen))
                stats[i].append(st)
        rng.set_state(outer)

    def cv(runs) -> tuple[float, float, float]:
        _, curves, g, best, zero, _ = pick_gamma(runs, fold_list, grid)
        return g, best, float(curves[:, zero].mean())

    g0, base, _ = cv(scored[-1])
    out = []
    for i, cand in enumerate(candidates):
        g, best, unc = cv(scored[i])
        precs = [r["precision"] for r in stats[i] if r["precision"] is not None]
        out.append({**cand, "cv_hIoU": round(best, 3), "gamma": round(g, 6), "cv_uncalibrated_hIoU": round(unc, 3),
                    "zs3net_cv_hIoU": round(base, 3), "zs3net_gamma": round(g0, 6),
                    "precision": round(float(np.mean(precs)), 2) if precs else None,
                    "pseudo_labels": int(sum(r["pseudo_labels"] for r in stats[i])), "folds": stats[i]})
    out.sort(key=lambda x: -x["cv_hIoU"])
    return [{**x, "rank": i + 1} for i, x in enumerate(out)]
