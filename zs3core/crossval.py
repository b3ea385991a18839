"""Zero-shot cross-validation folds: each calibrated model fitted on a fold as the pipeline fits it.

:func:`zs3core.calibration.cross_validate` calls one ``fit_scorer(fold, train_mask)`` per fold;
this module builds them for ZS3Net (any generator kind of :mod:`zs3core.generators`), DeViSE
and the real-feature ceiling. Kept apart from :mod:`zs3core.calibration` so that applying γ
(evaluation, pseudo-labelling) does not depend on the training code.
"""
from __future__ import annotations

import torch

from zs3core.calibration import Fold, Scorer
from zs3core.ceiling import real_unseen_features
from zs3core.devise import train_devise
from zs3core.generation import sample_context
from zs3core.generators import FitData, SampleContext
from zs3core.retrain import fit_classifier


def fold_scorers(kind, generator_params: dict, cfg, data, num_classes: int, rng: torch.Generator,
                 device: torch.device) -> dict:
    """The ``fit_scorer`` of each calibrated model, for :func:`zs3core.calibration.cross_validate`:
    {"zs3net" | "devise" | "real_feature_ceiling": fit_scorer(fold, train_mask) -> scorer}.

    Each one trains its model on a fold exactly as the pipeline trains it on the real split,
    with the fold's seen classes as seen and its pseudo-unseen classes as unseen:

    * ``zs3net``: a fresh generator of ``kind`` (:mod:`zs3core.generators`) fitted on the
      fold-train features, then :func:`zs3core.retrain.fit_classifier` with its synthetic
      features (graph-context kinds generate from the masks of the fold-validation images,
      as the pipeline generates from the pool's masks);
    * ``devise``: :func:`zs3core.devise.train_devise` on the fold-train features;
    * ``real_feature_ceiling``: :func:`zs3core.retrain.fit_classifier` with *real* features of
      the pseudo-unseen classes from the fold-train images (at most ``generated_per_unseen``
      per class), as :mod:`zs3core.ceiling` does with the pool.

    Args:
        kind: the :class:`zs3core.generators.GeneratorKind`. generator_params: its params
            (``steps`` may be lowered for the folds). cfg: :class:`zs3core.retrain.ClassifierConfig`.
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
        ctx = sample_context(data.label_maps, fold.val_rows, data.void) if kind.needs_graphs else SampleContext()

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
