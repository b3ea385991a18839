"""ZS3Net step 2 (and ZS5Net's retraining): the 1x1 pixel classifier over all classes.

The classifier f reads d_x-dimensional pixel features. ZS3Net retrains it on real seen
features plus generated features (paper §2.2 "Classification model (step 2)"); ZS5Net adds
the pseudo-labelled pool features (§2.2 "Zero-shot learning and self-training"). Real unseen
features never enter (the real-feature ceiling of :mod:`zs3core.ceiling` is a diagnostic that
does, and is labelled so).

Two settings follow the official code (valeoai/ZS3 ``zs3/train_pascal_GMMN.py``):

* **Unseen class weight** (``classifier.unseen_weight``, default 100): the cross-entropy weight
  of every unseen class, 1 for seen classes (L69-75: ``class_weight[unseen] =
  args.unseen_weight``, default 100 at L581-583). PADing uses 5 (``CLASS_ECO``,
  ``PADing/PADing_model.py`` L452-453, ``configs/semantic-segmentation/PADing.yaml`` L40).
* **Generated seen features** (``classifier.generated_per_seen``): synthetic features of the
  seen classes, with their seen labels, beside the real ones. The official code replaces every
  pixel of an image that holds an unseen class by a generated feature, seen pixels included
  (L242-258, ``real_seen_features`` only keeps real features for images *without* unseen
  pixels). Without them a linear classifier can learn "generated, therefore unseen": real
  features are post-ReLU (non-negative), generated ones are not. :func:`shortcut_rate`
  measures that shortcut.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from zs3core.checkpoint import Checkpoint
from zs3core.loop import descend, run_steps
from zs3core.models.classifier import PixelClassifier

Sampler = Callable[[list[int], int], tuple[torch.Tensor, torch.Tensor]]
"""``sample(classes, n_per_class)`` -> ((n*K, d_x) float32 features, (n*K,) int64 labels)."""


def loss_weights(num_classes: int, unseen, unseen_weight: float) -> torch.Tensor:
    """(C,) float32 cross-entropy weights: ``unseen_weight`` for the unseen classes, 1 for the others.

    Raises:
        ValueError: ``unseen_weight`` <= 0 or an unseen id outside [0, C).
    """
    if not unseen_weight > 0:
        raise ValueError(f"classifier.unseen_weight must be > 0, got {unseen_weight}")
    w = torch.ones(num_classes)
    for u in unseen:
        if not 0 <= int(u) < num_classes:
            raise ValueError(f"unseen class id {u} outside [0, {num_classes})")
        w[int(u)] = float(unseen_weight)
    return w


def retraining_set(real_x: torch.Tensor, real_y: torch.Tensor, seen, unseen, sample: Sampler | None,
                   generated_per_seen: int, generated_per_unseen: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ZS3Net step 2 training data: real seen features, generated seen and generated unseen features.

    Args:
        real_x: (N, d_x) cached real features (any float dtype); real_y: (N,) int64 labels.
            Only rows of ``seen`` classes are used: no unseen ground truth enters training.
        seen / unseen: class ids. sample: the generator's sampler (None when nothing is
            generated, e.g. the oracle). generated_per_seen / generated_per_unseen: synthetic
            features per class (0 = none).

    Returns:
        (features (M, d_x) float32, labels (M,) int64, generated (M,) bool), real rows first,
        then generated seen, then generated unseen.
    """
    keep = torch.isin(real_y, torch.tensor([int(c) for c in seen], dtype=torch.long))
    xs, ys = [real_x[keep].float()], [real_y[keep].long()]
    for classes, n in ((list(seen), generated_per_seen), (list(unseen), generated_per_unseen)):
        if sample is not None and classes and n > 0:
            x, y = sample([int(c) for c in classes], int(n))
            xs.append(x.float())
            ys.append(y.long())
    generated = torch.zeros(sum(len(y) for y in ys), dtype=torch.bool)
    generated[len(ys[0]):] = True
    return torch.cat(xs), torch.cat(ys), generated


def train_classifier(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, epochs: int,
                     batch_size: int, lr: float, weight_decay: float, rng: torch.Generator,
                     device: torch.device, desc: str = "classifier", ckpt: Checkpoint | None = None,
                     class_weight: torch.Tensor | None = None, on_epoch=None) -> tuple[PixelClassifier, list[float]]:
    """Train the 1x1 classifier f on (N, d_x) features with labels (N,) in 0..C-1 (Adam, weighted CE).

    Args:
        rng: shuffles the features every epoch.
        class_weight: (C,) float cross-entropy weights (:func:`loss_weights`); None = 1 each.
            With weights, each batch's loss is sum_i w_{y_i} CE_i / sum_i w_{y_i}
            (``F.cross_entropy(weight=...)``; the official code's ``nn.CrossEntropyLoss(weight)``).
        ckpt: optional checkpoint, saved every ``ckpt.every`` epochs; an interrupted run resumes.
        on_epoch: see :func:`zs3core.loop.run_steps`.

    Returns:
        (classifier on cpu in eval mode, weighted mean loss per epoch).

    Raises:
        ValueError: no training feature.
        Zs3Error: a non-finite loss (the classifier is then not returned).
    """
    if len(feats) == 0:
        raise ValueError(f"{desc}: no training feature")
    clf = PixelClassifier(feats.shape[1], num_classes).to(device)
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
    feats = feats.float()
    weight = class_weight.float().to(device) if class_weight is not None else None

    def epoch_step(epoch: int) -> dict:
        perm = torch.randperm(len(feats), generator=rng)
        tot, n = 0.0, 0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            x, y = feats[idx].to(device), labels[idx].to(device)
            loss = F.cross_entropy(clf(x), y, weight=weight)
            tot += descend(opt, loss, desc, epoch + 1) * len(idx)
            n += len(idx)
        return {"loss": tot / max(n, 1)}

    curves = run_steps(epoch_step, epochs, {"clf": clf, "opt": opt}, rng, ckpt, desc, on_epoch, unit="epoch")
    return clf.cpu().eval(), curves.get("loss", [])


@torch.no_grad()
def shortcut_rate(clf: PixelClassifier, x: torch.Tensor, unseen) -> float:
    """% of the rows of ``x`` (N, d_x) that ``clf`` assigns to an unseen class (argmax, uncalibrated).

    Applied to fresh *generated seen* features it measures the "generated, therefore unseen"
    shortcut; applied to real seen features, how often seen pixels are lost to unseen classes.
    Returns 0.0 for an empty ``x``.
    """
    if len(x) == 0:
        return 0.0
    pred = torch.cat([clf(x[i:i + 65536].float()).argmax(1) for i in range(0, len(x), 65536)])
    return 100.0 * float(torch.isin(pred, torch.tensor([int(u) for u in unseen], dtype=torch.long)).float().mean())


def fit_classifier(real_x: torch.Tensor, real_y: torch.Tensor, num_classes: int, seen, unseen, sample: Sampler | None,
                   cfg, rng: torch.Generator, device: torch.device,
                   extra: tuple[torch.Tensor, torch.Tensor] | None = None, ckpt: Checkpoint | None = None,
                   desc: str = "classifier", on_epoch=None) -> tuple[PixelClassifier, list[float], int]:
    """Step 2 end to end (``cfg``: the ``classifier`` view, :class:`zs3core.config.ClassifierParams`):
    :func:`retraining_set` (+ ``extra`` features, e.g. ZS5Net's
    pseudo-labels or the ceiling's real unseen features), then :func:`train_classifier` with the
    unseen class weight (:func:`loss_weights`).

    Returns:
        (classifier on cpu in eval mode, loss per epoch, number of training features).
    """
    x, y, _ = retraining_set(real_x, real_y, seen, unseen, sample, cfg.generated_per_seen, cfg.generated_per_unseen)
    if extra is not None and len(extra[1]):
        x, y = torch.cat([x, extra[0].float()]), torch.cat([y, extra[1].long()])
    clf, losses = train_classifier(x, y, num_classes, cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, rng,
                                   device, desc, ckpt, loss_weights(num_classes, unseen, cfg.unseen_weight), on_epoch)
    return clf, losses, len(y)
