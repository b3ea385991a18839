"""Stage 6, fit_generator: train the feature generator on real seen features (ZS3Net step 1).

``generator.kind`` names a kind of :mod:`zs3core.generators` (GMMN, GC, PADing's primitive
generator); all are fitted with the class-wise MMD on the same cached features. Outputs:
data/generator/generator.pt, plots/generator/{loss.csv,loss.png,tsne.png},
metrics/generator.json. The unseen MMD² and the t-SNE compare synthetic unseen features with
real pool features by their ground truth: a diagnostic that feeds nothing back.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from stages.common import (EMBED, FEATURES_DIR, GENERATOR, LABEL_MAPS, class_embeddings, class_split, device,
                           feature_cache, params, run, set_threads, stage_checkpoint)
from zs3core.generation import generator_diagnostics, sample_context
from zs3core.generators import FitData, get_kind, save_generator
from zs3core.io import StageOutputs, Zs3Error
from zs3core.mmd import MMDLoss
from zs3core.params import get
from zs3core.train import seed_everything
from zs3core.viz import palette, save_curve, save_tsne, tsne_2d


def main() -> None:
    set_threads()
    p = params()
    g = p["generator"]
    kind = get_kind(g["kind"])
    loss_fn = MMDLoss.from_params(g["mmd"])
    rng = seed_everything(int(get(p, "seed")))
    cs, emb, dev = class_split(), class_embeddings(), device(p)
    labelled, pool = feature_cache("labelled"), feature_cache("pool")
    lm = torch.load(LABEL_MAPS, weights_only=False)
    void = (cs.ignore_index, 255)
    data = FitData(labelled["features"], labelled["labels"], labelled["image"], emb, lm["maps"], void)
    present = [c for c in cs.seen if (data.labels == c).any()]
    missing = [cs.classes[c] for c in cs.seen if c not in present]
    if missing:
        print(f"note: no cached features for seen classes {missing}; the generator is fitted on the others")
    if not present:
        raise Zs3Error(f"{FEATURES_DIR / 'labelled.pt'}: no seen-class features; check the split and extract_features")
    gen = kind.build(g, emb.shape[1], data.features.shape[1])
    ckpt = stage_checkpoint("fit_generator", p, ["generator", "seed"], [FEATURES_DIR / "labelled.pt", LABEL_MAPS, EMBED],
                            every=200)
    t0 = time.time()
    curves = kind.fit(gen, data, present, g, rng, dev, ckpt, unseen=cs.unseen)
    seconds = time.time() - t0
    gen.cpu()
    ctx = sample_context(lm["maps"], lm["pool_rows"], void) if kind.needs_graphs else None
    metrics, tsne = generator_diagnostics(
        lambda classes, n: kind.sample(gen, emb, classes, n, ctx, rng, torch.device("cpu")),
        labelled, pool, present, cs.unseen, loss_fn, cs.classes, rng)
    metrics = {"kind": g["kind"], "label": kind.label(g), "seconds": round(seconds, 1),
               "final_loss": float(np.mean(curves[next(iter(curves))][-50:])), **metrics}
    xy = tsne_2d(tsne["x"], int(get(p, "seed")))
    with StageOutputs() as out:
        out.write(GENERATOR, lambda f: save_generator(gen, g, emb.shape[1], data.features.shape[1], f))
        n = max(len(v) for v in curves.values())
        pd.DataFrame({"step": range(1, n + 1), **curves}).to_csv(out.path("plots/generator/loss.csv"), index=False)
        save_curve(out.path("plots/generator/loss.png"), curves, "step", "loss",
                   f"{kind.label(g)} generator losses ({len(present)} seen classes)",
                   logy=all(min(v) > 0 for v in curves.values()))
        save_tsne(out.path("plots/generator/tsne.png"), xy, tsne["labels"], tsne["synthetic"], list(cs.classes), cs.unseen,
                  palette(cs.num_classes, get(p, "dataset.name")),
                  f"t-SNE, {kind.label(g)}: real (o) vs synthetic (x); * = unseen (real unseen from the pool, diagnostic)")
        out.json("metrics/generator.json", metrics)
    ckpt.clear()
    print(f"generator '{g['kind']}' trained in {seconds:.0f}s; seen MMD² {metrics['seen_mmd2']}, unseen MMD² "
          f"{metrics['unseen_mmd2']}; median squared distance of real features {metrics['median_sq_distance']}")


if __name__ == "__main__":
    run(main)
