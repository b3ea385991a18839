"""ZS3Net step 1: fitting the feature generator to real seen features, and sampling from it.

``generator.kind`` picks the network (:mod:`zs3core.models`); every kind is trained with the
class-wise multi-bandwidth MMD of :mod:`zs3core.mmd` between real and generated seen-class
features (ZS3Net §2.2, L_GMMN):

* ``gmmn``: one feature per class embedding (:func:`train_generator`, :func:`generate`);
* ``gc``: one feature per node of a mask's connected-component graph (ZS3Net + GC, §2.2
  "Graph-context encoding"; :func:`train_graph_generator`, :func:`generate_from_graphs`).
  Training graphs come from the label maps of the labelled images, seen classes only. The
  graphs for generating unseen features come, as in the paper, from the *masks* of the
  training images that hold unseen classes (the unlabelled pool); their image features are
  never used;
* ``primitive``: PADing's primitive generator (:mod:`zs3core.pading`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from zs3core.checkpoint import Checkpoint
from zs3core.graphs import RegionGraph, normalized_adjacency, region_graph, stack_graphs
from zs3core.io import Zs3Error, require_finite
from zs3core.mmd import MMDLoss


def train_generator(gen: nn.Module, feats: torch.Tensor, labels: torch.Tensor, emb: torch.Tensor,
                    classes, loss_fn: MMDLoss, steps: int, samples_per_class: int, lr: float,
                    generator: torch.Generator, device: torch.device, ckpt: Checkpoint | None = None) -> list[float]:
    """Fit G(a, z) to real seen features with the class-wise MMD (ZS3Net §2.2, eq. L_GMMN).

    Args:
        gen: module mapping (n, d_a) embeddings to (n, d_x) features (draws its own noise).
        feats: (N, d_x) real features (any float dtype); labels: (N,) int class ids.
        emb: (C, d_a) float32 class embeddings, row = class id.
        classes: the seen class ids to fit (each must have features).
        loss_fn: the class-wise MMD loss (:class:`zs3core.mmd.MMDLoss`). steps: Adam steps at ``lr``.
        samples_per_class: real and generated features per class per step.
        generator: seeded torch.Generator for the real-feature sampling.
        ckpt: optional :class:`zs3core.checkpoint.Checkpoint` (resume after an interruption).

    Returns:
        The loss of every step.
    """
    gen.to(device).train()
    opt = torch.optim.Adam(gen.parameters(), lr=lr)
    emb = emb.to(device)
    pools = {int(c): torch.nonzero(labels == c).squeeze(1) for c in classes}
    pools = {c: idx for c, idx in pools.items() if len(idx)}
    state = {"gen": gen, "opt": opt}
    start, extra = ckpt.restore(state, generator) if ckpt else (0, {})
    losses = extra.get("losses", [])
    bar = tqdm(range(start, steps), desc="generator (MMD)", leave=False, initial=start, total=steps)
    for step in bar:
        reals, cls = [], []
        for c, idx in pools.items():
            pick = idx[torch.randint(len(idx), (samples_per_class,), generator=generator)]
            reals.append(feats[pick].float())
            cls.append(torch.full((samples_per_class,), c))
        real = torch.cat(reals).to(device)
        batch_l = torch.cat(cls).to(device)  # same classes and counts for real and generated
        fake = gen(emb[batch_l])
        loss = loss_fn.classwise(real, batch_l, fake, batch_l)
        require_finite(loss, "fit_generator (MMD)", step + 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(mmd=f"{np.mean(losses[-50:]):.4f}")
        if ckpt and ckpt.due(step + 1):
            ckpt.save(step + 1, state, generator, {"losses": losses})
    gen.eval()
    return losses


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




# ------------------------------------------------------------------ graph-context generator (GC)
def mask_graphs(maps: dict, rows, ignore) -> dict[int, RegionGraph]:
    """Connected-component graphs of label maps.

    Args:
        maps: {row: (h, w) uint8 label map at feature resolution} (extract_features).
        rows: which rows to use. ignore: class ids that form no node (void; for training
            graphs also the unseen classes).

    Returns:
        {row: RegionGraph} for the rows whose graph has at least one node.
    """
    out = {}
    for r in rows:
        g = region_graph(maps[r].numpy(), ignore=tuple(ignore))
        if g.num_nodes:
            out[int(r)] = g
    return out


def train_graph_generator(gen: nn.Module, feats: torch.Tensor, labels: torch.Tensor, image: torch.Tensor,
                          graphs: dict[int, RegionGraph], emb: torch.Tensor, loss_fn: MMDLoss, steps: int, graphs_per_step: int,
                          samples_per_class: int, lr: float, generator: torch.Generator,
                          device: torch.device, ckpt: Checkpoint | None = None) -> list[float]:
    """Fit the graph-context generator with the class-wise MMD (ZS3Net §2.2 and §3.1, "ZS3Net + GC").

    Each step draws ``graphs_per_step`` training graphs, generates one feature per node
    (input [a_v ; z_v]) and compares, class by class, the node features with the real cached
    pixel features of the same images (at most ``samples_per_class`` per class).

    Args:
        gen: :class:`zs3core.models.gcn.GCGenerator`.
        feats: (N, d_x) real features; labels: (N,) int64 class ids; image: (N,) int64 row of
            each feature (the keys of ``graphs``).
        graphs: {row: RegionGraph} of the labelled images, seen classes only.
        emb: (C, d_a) float32 class embeddings.
        ckpt: optional :class:`zs3core.checkpoint.Checkpoint` (resume after an interruption).

    Returns:
        The loss of every step.

    Raises:
        Zs3Error: no graph has cached features.
    """
    rows = [r for r in graphs if (image == r).any()]
    if not rows:
        raise Zs3Error("fit_generator: no labelled image has both a graph and cached features")
    by_row = {r: torch.nonzero(image == r).squeeze(1) for r in rows}
    props = {r: normalized_adjacency(torch.from_numpy(graphs[r].adjacency)) for r in rows}
    gen.to(device).train()
    opt = torch.optim.Adam(gen.parameters(), lr=lr)
    emb = emb.to(device)
    state = {"gen": gen, "opt": opt}
    start, extra = ckpt.restore(state, generator) if ckpt else (0, {})
    losses = extra.get("losses", [])
    bar = tqdm(range(start, steps), desc="GC generator (MMD)", leave=False, initial=start, total=steps)
    for step in bar:
        pick = [rows[i] for i in torch.randperm(len(rows), generator=generator)[:graphs_per_step].tolist()]
        cls, prop = stack_graphs([graphs[r] for r in pick], [props[r] for r in pick])
        idx = torch.cat([by_row[r] for r in pick])
        idx = idx[torch.randperm(len(idx), generator=generator)]
        real_l = labels[idx]
        keep = torch.cat([torch.nonzero(real_l == c).squeeze(1)[:samples_per_class] for c in torch.unique(cls)])
        real, real_l = feats[idx[keep]].float().to(device), real_l[keep].to(device)
        fake = gen(emb[cls.to(device)], prop.to(device))
        loss = loss_fn.classwise(real, real_l, fake, cls.to(device))
        require_finite(loss, "fit_generator (GC, MMD)", step + 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(mmd=f"{np.mean(losses[-50:]):.4f}")
        if ckpt and ckpt.due(step + 1):
            ckpt.save(step + 1, state, generator, {"losses": losses})
    gen.eval()
    return losses


@torch.no_grad()
def generate_from_graphs(gen: nn.Module, emb: torch.Tensor, graphs: list[RegionGraph], classes, n_per_class: int,
                         generator: torch.Generator, device: torch.device, graphs_per_step: int = 32,
                         max_rounds: int = 10000) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``n_per_class`` node features for each class id from graphs that contain it.

    Rounds of ``graphs_per_step`` random graphs (fresh noise each round) are run through the
    generator (in training mode, as :func:`generate`) until every class has ``n_per_class`` features. A class that is in no graph is
    generated from one-node graphs (no context), with a printed note.

    Returns:
        ((n*K, d_x) float32, (n*K,) int64), grouped by class in the order of ``classes``.
    """
    classes = [int(c) for c in classes]
    if not classes:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    have = {c: any((g.node_class == c).any() for g in graphs) for c in classes}
    missing = [c for c, ok in have.items() if not ok]
    if missing:
        # no mask carries the class: fall back to one-node graphs (no context; the GC generator
        # then reduces to a GMMN with graph-convolution weights)
        print(f"note: class id(s) {missing} appear in no mask; generated from one-node graphs without context")
        graphs = list(graphs) + [RegionGraph(np.zeros((1, 1), np.int64), np.array([c]), np.zeros((1, 1), bool))
                                 for c in missing]
    pool = [g for g in graphs if np.isin(g.node_class, classes).any()]
    props = [normalized_adjacency(torch.from_numpy(g.adjacency)) for g in pool]
    gen.to(device).train()  # sampled as fitted (dropout on), as :func:`generate`
    got = {c: [] for c in classes}
    count = dict.fromkeys(classes, 0)
    for _ in range(max_rounds):
        if all(count[c] >= n_per_class for c in classes):
            break
        pick = torch.randperm(len(pool), generator=generator)[:graphs_per_step].tolist()
        cls, prop = stack_graphs([pool[i] for i in pick], [props[i] for i in pick])
        out = gen(emb[cls].to(device), prop.to(device)).float().cpu()
        for c in classes:
            if count[c] < n_per_class:
                f = out[cls == c][: n_per_class - count[c]]
                got[c].append(f)
                count[c] += len(f)
    feats = torch.cat([torch.cat(got[c]) for c in classes])
    labels = torch.cat([torch.full((count[c],), c) for c in classes]).long()
    return feats, labels


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
    from zs3core.mmd import median_sq_distance

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


def sample_context(label_maps: dict, rows, void) -> "SampleContext":
    """The :class:`zs3core.generators.SampleContext` to generate from the masks of ``rows``
    (every class a node; ``void`` values form none). The stages pass the unlabelled pool's rows
    (ZS3Net §2.2: "we simply exploit true segmentation masks")."""
    from zs3core.generators import SampleContext

    return SampleContext(list(mask_graphs(label_maps, rows, set(void)).values()))
