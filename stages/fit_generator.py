"""Stage 6, fit_generator: train the feature generator on real seen features (ZS3Net step 1).

``generator.kind``: ``gmmn`` (the paper's GMMN), ``gc`` (ZS3Net + GC: graph convolutions
over the masks' connected-component graphs) or ``primitive`` (PADing's primitive generator
with relationship alignment and feature disentanglement). All are trained with the
multi-bandwidth MMD on the same cached features.

Outputs: data/generator/generator.pt, plots/generator/{loss.csv,loss.png,tsne.png},
metrics/generator.json. The t-SNE and the unseen MMD² compare synthetic unseen features
with real unseen pool features: a diagnostic that reads the pool's ground truth and feeds
nothing back into training.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from stages.common import (
    EMBED,
    FEATURES_DIR,
    GENERATOR,
    LABEL_MAPS,
    class_embeddings,
    class_split,
    device,
    feature_cache,
    params,
    pool_graphs,
    run,
    set_threads,
    stage_checkpoint,
)
from zs3core.generation import (
    generate,
    generate_from_graphs,
    mask_graphs,
    train_generator,
    train_graph_generator,
)
from zs3core.io import StageOutputs, Zs3Error
from zs3core.mmd import mmd2
from zs3core.models import build_generator
from zs3core.params import get
from zs3core.train import seed_everything
from zs3core.viz import palette, save_curve, save_tsne, tsne_2d

TSNE_PER_CLASS = 120


def per_class(feats: torch.Tensor, labels: torch.Tensor, classes, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``n`` random rows of each class: ((m, d) float32, (m,) int64)."""
    idx = [torch.nonzero(labels == c).squeeze(1) for c in classes]
    idx = torch.cat([i[torch.randperm(len(i), generator=rng)[:n]] for i in idx]) if idx else torch.zeros(0, dtype=torch.long)
    return feats[idx].float(), labels[idx]


def main() -> None:
    set_threads()
    p = params()
    g = p["generator"]
    kind = g["kind"]
    rng = seed_everything(int(get(p, "seed")))
    cs = class_split()
    emb = class_embeddings()
    cache = feature_cache("labelled")
    feats, labels = cache["features"], cache["labels"]
    present = [c for c in cs.seen if (labels == c).any()]
    missing = [cs.classes[c] for c in cs.seen if c not in present]
    if missing:
        print(f"note: no cached features for seen classes {missing}; the generator is fitted on the others")
    if not present:
        raise Zs3Error(f"{FEATURES_DIR / 'labelled.pt'}: no seen-class features; check the split and extract_features")
    gen = build_generator(g, emb.shape[1], feats.shape[1])
    dev = device(p)
    sigmas = [float(s) for s in g["sigmas"]]
    ckpt = stage_checkpoint("fit_generator", p, ["generator", "seed"], [FEATURES_DIR / "labelled.pt", LABEL_MAPS, EMBED],
                            every=200)
    t0 = time.time()
    seen_graphs = None
    if kind == "gc":
        lm = torch.load(LABEL_MAPS, weights_only=False)
        seen_graphs = mask_graphs(lm["maps"], lm["labelled_rows"], {cs.ignore_index, 255, *cs.unseen})
        curves = {"mmd": train_graph_generator(gen, feats, labels, cache["image"], seen_graphs, emb, sigmas, int(g["steps"]),
                                               int(g["graphs_per_step"]), int(g["samples_per_class"]), float(g["lr"]), rng, dev, ckpt)}
    elif kind == "primitive":
        from zs3core.pading import train_primitive

        curves = train_primitive(gen, feats, labels, emb, present, cs.unseen, g, rng, dev, ckpt)
    else:
        curves = {"mmd": train_generator(gen, feats, labels, emb, present, sigmas, int(g["steps"]),
                                         int(g["samples_per_class"]), float(g["lr"]), rng, dev, ckpt)}
    seconds = time.time() - t0
    gen.cpu().eval()

    # diagnostics: synthetic vs real features of seen (labelled) and unseen (pool ground truth) classes
    pool = feature_cache("pool")
    real_s, real_s_l = per_class(feats, labels, present, TSNE_PER_CLASS, rng)
    real_u, real_u_l = per_class(pool["features"], pool["labels"], cs.unseen, TSNE_PER_CLASS, rng)
    if kind == "gc":
        fake_s, fake_s_l = generate_from_graphs(gen, emb, list(seen_graphs.values()), present, TSNE_PER_CLASS, rng, torch.device("cpu"))
        graphs_u = pool_graphs(cs, lm)
        fake_u, fake_u_l = generate_from_graphs(gen, emb, graphs_u, cs.unseen, TSNE_PER_CLASS, rng, torch.device("cpu")) \
            if cs.unseen else (torch.zeros(0, feats.shape[1]), torch.zeros(0, dtype=torch.long))
    else:
        fake_s, fake_s_l = generate(gen, emb, present, TSNE_PER_CLASS, torch.device("cpu"))
        fake_u, fake_u_l = generate(gen, emb, cs.unseen, TSNE_PER_CLASS, torch.device("cpu")) if cs.unseen \
            else (torch.zeros(0, feats.shape[1]), torch.zeros(0, dtype=torch.long))

    def class_mmd(real, rl, fake, fl, classes) -> dict:
        out = {}
        for c in classes:
            r, f = real[rl == c], fake[fl == c]
            if len(r) > 1 and len(f) > 1:
                out[cs.classes[c]] = round(float(mmd2(r, f, sigmas)), 4)
        return out

    mmd_s = class_mmd(real_s, real_s_l, fake_s, fake_s_l, present)
    mmd_u = class_mmd(real_u, real_u_l, fake_u, fake_u_l, cs.unseen)
    metrics = {"kind": kind, "seconds": round(seconds, 1),
               "final_loss": float(np.mean(curves[next(iter(curves))][-50:])),
               "seen_mmd2": round(float(np.mean(list(mmd_s.values()))), 4) if mmd_s else None,
               "unseen_mmd2": round(float(np.mean(list(mmd_u.values()))), 4) if mmd_u else None,
               "seen_mmd2_per_class": mmd_s, "unseen_mmd2_per_class": mmd_u}
    x = torch.cat([real_s, fake_s, real_u, fake_u]).numpy()
    lab = torch.cat([real_s_l, fake_s_l, real_u_l, fake_u_l]).numpy()
    syn = np.concatenate([np.zeros(len(real_s), bool), np.ones(len(fake_s), bool), np.zeros(len(real_u), bool),
                          np.ones(len(fake_u), bool)])
    xy = tsne_2d(x, int(get(p, "seed")))
    with StageOutputs() as out:
        out.write(GENERATOR, lambda f: torch.save({"state_dict": gen.state_dict(), "params": g,
                                                  "embed_dim": emb.shape[1], "feature_dim": feats.shape[1]}, f))
        n = max(len(v) for v in curves.values())
        pd.DataFrame({"step": range(1, n + 1), **curves}).to_csv(out.path("plots/generator/loss.csv"), index=False)
        save_curve(out.path("plots/generator/loss.png"), curves, "step", "loss",
                   f"{kind} generator losses ({len(present)} seen classes)", logy=all(min(v) > 0 for v in curves.values()))
        save_tsne(out.path("plots/generator/tsne.png"), xy, lab, syn, list(cs.classes), cs.unseen,
                  palette(cs.num_classes, get(p, "dataset.name")),
                  f"t-SNE, generator '{kind}': real (o) vs synthetic (x); * = unseen (real unseen from the pool, diagnostic)")
        out.json("metrics/generator.json", metrics)
    ckpt.clear()
    print(f"generator '{kind}' trained in {seconds:.0f}s; seen MMD² {metrics['seen_mmd2']}, unseen MMD² {metrics['unseen_mmd2']}")


if __name__ == "__main__":
    run(main)
