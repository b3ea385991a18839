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
                 device: torch.device) -> dict:
    """The ``fit_scorer`` of each calibrated model, for :func:`zs3core.calibration.cross_validate`:
    {"zs3net" | "devise" | "real_feature_ceiling": fit_scorer(fold, train_mask) -> scorer}.

    Each one trains its model on a fold exactly as the pipeline trains it on the real split,
    with the fold's seen classes as seen and its pseudo-unseen classes as unseen:

    * ``zs3net``: a fresh generator of ``kind`` (:mod:`zs3core.generators`) fitted on the
      fold-train features, then :func:`zs3core.retrain.fit_classifier` with its synthetic
      features (graph-context kinds sample their graphs from the masks of the fold-train
      images only, so that nothing of the images a fold scores reaches its model);
    * ``devise``: :func:`zs3core.devise.train_devise` on the fold-train features;
    * ``real_feature_ceiling``: :func:`zs3core.retrain.fit_classifier` with *real* features of
      the pseudo-unseen classes from the fold-train images (at most ``generated_per_unseen``
      per class), as :mod:`zs3core.ceiling` does with the pool.

    Args:
        kind: the :class:`zs3core.generators.GeneratorKind`. generator_params: its params
            (:class:`zs3core.config.GeneratorParams`). cfg: the ``classifier`` view.
        data: :class:`zs3core.generators.FitData` of the labelled cache (seen-class rows).
        num_classes: C. rng: seeded CPU generator. device: where to train.
    """
    def subset(mask):
        return FitData(data.features[mask], data.labels[mask], data.image[mask], data.embeddings, data.label_maps,
                       data.void)

    def fold_seen(d) -> list[int]:
        return sorted(int(c) for c in torch.unique(d.labels))

    def zs3net(fold: Fold, train_mask: torch.Tensor) -> Scorer:
        d = subset(train_mask)
        gen = kind.build(generator_params, d.embeddings.shape[1], d.features.shape[1])
        kind.fit(gen, d, fold_seen(d), generator_params, rng, device, None, unseen=fold.pseudo_unseen)
        ctx = sample_context(data.label_maps, fold.train_rows, data.void) if kind.needs_graphs else SampleContext()

        def sample(classes, n):
            return kind.sample(gen, d.embeddings, classes, n, ctx, rng, device)

        clf, _, _ = fit_classifier(d.features, d.labels, num_classes, fold_seen(d), fold.pseudo_unseen, sample, cfg,
                                   rng, device, desc="calibration fold: ZS3Net")
        return clf

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

    return {"zs3net": zs3net, "devise": devise, "real_feature_ceiling": ceiling}


def select_gammas(labelled: dict, label_maps: dict, pixel_counts, seen, unseen, void, embeddings: torch.Tensor,
                  kind, generator_params, cfg, models, folds: int, val_fraction: float, grid: int,
                  rng: torch.Generator, device: torch.device) -> dict:
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
        models: names among ``zs3net``, ``devise``, ``real_feature_ceiling``.
        folds, val_fraction, grid: :func:`zs3core.calibration.make_folds`, :func:`cross_validate`.

    Returns:
        {model: the dict of :func:`zs3core.calibration.cross_validate`}.
    """
    from zs3core.calibration import cross_validate, make_folds

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
    scorers = fold_scorers(kind, generator_params, cfg, data, embeddings.shape[0], rng, device)
    return {m: cross_validate(data.features, data.labels, data.image, counts, fold_list, scorers[m], grid) for m in models}
