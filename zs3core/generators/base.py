"""What every generator kind shares: the fitting data, the sampling context, the interface,
sampling "as fitted", and the diagnostics that compare synthetic with real features.

ZS3Net step 1 (paper §2.2 "Generative model"): a generator G(a, z) maps a class embedding a
and noise z to pixel features; every kind is fitted with the class-wise MMD of
:mod:`zs3core.mmd` between real and generated seen-class features.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from zs3core.checkpoint import Checkpoint
from zs3core.graphs import RegionGraph, mask_graphs
from zs3core.generators.relation import RelationTerms
from zs3core.mmd import MMDLoss, median_sq_distance


@dataclass
class FitData:
    """Real features a generator is fitted to.

    Attributes:
        features: (N, d_x) float16/float32 cached pixel features.
        labels: (N,) int64 class ids. image: (N,) int64 image row of each feature.
        embeddings: (C, d_a) float32 class embeddings, row = class id.
        label_maps: {image row: (h, w) uint8 label map at feature resolution}, for the
            images of ``image`` (graph-context kind); may be empty for the others.
        void: label values that form no graph node (void, 255).
    """

    features: torch.Tensor
    labels: torch.Tensor
    image: torch.Tensor
    embeddings: torch.Tensor
    label_maps: dict = field(default_factory=dict)
    void: tuple[int, ...] = (255,)


@dataclass
class SampleContext:
    """What sampling may read: the graphs to generate from (graph-context kind only)."""

    graphs: list[RegionGraph] = field(default_factory=list)


def sample_context(label_maps: dict, rows, void) -> SampleContext:
    """Generate from the masks of ``rows`` (every class a node; ``void`` values form none). The
    stages pass the unlabelled pool's rows (ZS3Net §2.2: "we simply exploit true segmentation
    masks"); the masks are read, never the images' features."""
    return SampleContext(list(mask_graphs(label_maps, rows, set(void)).values()))


class GeneratorKind:
    """Interface of one generator kind (see :mod:`zs3core.generators`).

    ``params`` is the ``generator`` view of :mod:`zs3core.config` (:class:`GeneratorParams`).
    """

    name: str = ""
    needs_graphs: bool = False

    def build(self, params, embed_dim: int, feature_dim: int) -> nn.Module:
        """The untrained network for d_a-dimensional embeddings and d_x-dimensional features."""
        raise NotImplementedError

    def fit(self, gen: nn.Module, data: FitData, classes, params, rng: torch.Generator, device: torch.device,
            ckpt: Checkpoint | None = None, unseen=(), on_step=None) -> dict[str, list[float]]:
        """Fit ``gen`` to the real features of ``classes``; returns per-step loss curves.
        ``unseen``: class ids whose embeddings structure losses may use (never their features)."""
        raise NotImplementedError

    def sample(self, gen: nn.Module, emb: torch.Tensor, classes, n_per_class: int, context: SampleContext | None,
               rng: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``n_per_class`` synthetic features of each class: ((n*K, d_x) float32, (n*K,) int64)."""
        return generate(gen, emb, classes, n_per_class, device)

    def label(self, params) -> str:
        """Display name in tables and figures."""
        return self.name

    def relation_terms(self, params, embeddings: torch.Tensor, classes, unseen, device: torch.device) -> RelationTerms:
        """The ``generator.relation`` terms every kind adds to its fitting loss
        (:mod:`zs3core.generators.relation`): over the fitted ``classes`` and the ``unseen`` ids
        (their embeddings only). Disabled (draws nothing) when both weights are 0 or the block is absent."""
        return RelationTerms(getattr(params, "relation", None), embeddings, classes, unseen, device)


@torch.no_grad()
def generate(gen: nn.Module, emb: torch.Tensor, classes, n_per_class: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``n_per_class`` synthetic features for each class id: ((n*K, d_x) float32, (n*K,) int64).

    Sampled as fitted: the generator runs in training mode (dropout on), so that synthetic
    features keep the spread the MMD fitted. The official code never calls
    ``generator.eval()`` (valeoai/ZS3 ``zs3/train_pascal_GMMN.py`` L136-258: features are
    generated inside ``training()``, where the GMMN's dropout stays active).
    """
    gen.to(device).train()
    if not len(classes):
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    labels = torch.cat([torch.full((n_per_class,), int(c)) for c in classes]).long()
    feats = torch.cat([gen(emb[labels[i:i + 65536]].to(device)).cpu() for i in range(0, len(labels), 65536)])
    return feats.float(), labels


def draw_real(feats: torch.Tensor, pools: dict[int, torch.Tensor], n: int,
              rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` real features of each class drawn with replacement: ((n*K, d) float32, (n*K,) int64),
    class by class in the order of ``pools`` ({class id: (m,) row indices of that class})."""
    reals, cls = [], []
    for c, idx in pools.items():
        pick = idx[torch.randint(len(idx), (n,), generator=rng)]
        reals.append(feats[pick].float())
        cls.append(torch.full((n,), c))
    return torch.cat(reals), torch.cat(cls)


def class_rows(labels: torch.Tensor, classes) -> dict[int, torch.Tensor]:
    """{class id: (m,) indices of its rows} for the classes of ``classes`` that have rows."""
    pools = {int(c): torch.nonzero(labels == c).squeeze(1) for c in classes}
    return {c: idx for c, idx in pools.items() if len(idx)}


# ------------------------------------------------------------------ diagnostics (read pool ground truth)
def per_class_rows(feats: torch.Tensor, labels: torch.Tensor, classes, n: int,
                   rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``n`` random rows of each class: ((m, d) float32, (m,) int64), grouped by class."""
    idx = [torch.nonzero(labels == int(c)).squeeze(1) for c in classes]
    idx = torch.cat([i[torch.randperm(len(i), generator=rng)[:n]] for i in idx]) if idx else torch.zeros(0, dtype=torch.long)
    return feats[idx].float(), labels[idx]


def generator_diagnostics(sample, labelled: dict, pool: dict, seen, unseen, loss_fn: MMDLoss, names,
                          rng: torch.Generator, n_per_class: int = 120) -> tuple[dict, dict]:
    """How close synthetic features are to real ones, per class, and the inputs of the t-SNE figure.

    Seen classes are compared with the labelled cache; unseen classes with the pool cache by
    its ground truth (a diagnostic: nothing here feeds training or selection).

    Args:
        sample: the fitted generator's sampler, ``sample(classes, n)`` (see :mod:`zs3core.retrain`).
        labelled / pool: feature caches. seen / unseen: class ids. loss_fn: its kernel gives
            the MMD^2 reported. names: class names by id. n_per_class: rows per class.

    Returns:
        (metrics: {seen_mmd2, unseen_mmd2 (means), seen_mmd2_per_class, unseen_mmd2_per_class,
        median_sq_distance (of the real seen features), kernel_bandwidths, mmd_convention},
        t-SNE inputs: {x (n, d) float32 ndarray, labels (n,), synthetic (n,) bool}).
    """
    d = labelled["features"].shape[1]
    empty = (torch.zeros(0, d), torch.zeros(0, dtype=torch.long))
    real_s = per_class_rows(labelled["features"], labelled["labels"], seen, n_per_class, rng)
    real_u = per_class_rows(pool["features"], pool["labels"], unseen, n_per_class, rng)
    fake_s = sample(list(seen), n_per_class) if len(seen) else empty
    fake_u = sample(list(unseen), n_per_class) if len(unseen) else empty

    def class_mmd(real, fake, classes) -> dict:
        out = {}
        for c in classes:
            r, f = real[0][real[1] == c], fake[0][fake[1] == c]
            if len(r) > 1 and len(f) > 1:
                out[names[c]] = round(float(loss_fn.mmd2(r, f)), 4)
        return out

    mmd_s, mmd_u = class_mmd(real_s, fake_s, seen), class_mmd(real_u, fake_u, unseen)
    metrics = {"seen_mmd2": round(float(np.mean(list(mmd_s.values()))), 4) if mmd_s else None,
               "unseen_mmd2": round(float(np.mean(list(mmd_u.values()))), 4) if mmd_u else None,
               "seen_mmd2_per_class": mmd_s, "unseen_mmd2_per_class": mmd_u,
               "median_sq_distance": round(median_sq_distance(real_s[0], generator=rng), 3),
               "mmd_convention": loss_fn.convention, "kernel_bandwidths": list(loss_fn.bandwidths)}
    parts = [real_s, fake_s, real_u, fake_u]
    tsne = {"x": torch.cat([p[0].float() for p in parts]).numpy(), "labels": torch.cat([p[1] for p in parts]).numpy(),
            "synthetic": np.concatenate([np.full(len(p[1]), s) for p, s in zip(parts, (False, True, False, True))])}
    return metrics, tsne


def present_classes(labels: torch.Tensor, seen, names, path) -> list[int]:
    """The seen classes that have cached features (a note names the others).

    Raises:
        Zs3Error: no seen class has any feature (naming the cache file).
    """
    from zs3core.io import Zs3Error

    present = [int(c) for c in seen if bool((labels == c).any())]
    missing = [names[c] for c in seen if c not in present]
    if missing:
        print(f"note: no cached features for seen classes {missing}; the generator is fitted on the others")
    if not present:
        raise Zs3Error(f"{path}: no seen-class features; check the split and extract_features")
    return present


def pool_context(label_maps_file, void) -> SampleContext:
    """:func:`sample_context` of the unlabelled pool, from the label maps file of
    extract_features (``data/features/label_maps.pt``: ``maps`` and ``pool_rows``)."""
    lm = torch.load(label_maps_file, weights_only=False)
    return sample_context(lm["maps"], lm["pool_rows"], void)
