"""Stage fit_generator: train the feature generator on real seen features (ZS3Net step 1).

``generator.kind`` names a kind of the registry (:mod:`zs3core.generators`: GMMN, GC, PADing);
all are fitted with the class-wise MMD on the same cached features. Outputs:
data/generator/generator.pt, plots/generator/ (DVCLive loss curves, loss.png, tsne.png),
metrics/generator.json. The unseen MMD² and the t-SNE compare synthetic unseen features with
real pool features by their ground truth: a diagnostic that feeds nothing back.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from zs3core.stage import run
from zs3core.checkpoint import stage_checkpoint
from zs3core.config import as_dict
from zs3core.embeddings import load_class_embeddings
from zs3core.features import load_cache
from zs3core.generators import FitData, get_kind, sample_context, save_generator
from zs3core.generators.base import generator_diagnostics, present_classes
from zs3core.io import LiveCurves
from zs3core.mmd import MMDLoss
from zs3core.splits import read_class_split
from zs3core.viz import generator_figures

CLASSES, EMBED = Path("data/split/classes.json"), Path("data/embed/class_embeddings.pt")
LABELLED, POOL, MAPS = Path("data/features/labelled"), Path("data/features/pool"), Path("data/features/label_maps.pt")
GENERATOR = Path("data/generator/generator.pt")


def main(st) -> None:
    g, cs, emb = st.cfg.generator, read_class_split(CLASSES), load_class_embeddings(EMBED)
    kind, labelled, pool = get_kind(g.kind), load_cache(LABELLED), load_cache(POOL)
    lm = torch.load(MAPS, weights_only=False)
    data = FitData(labelled["features"], labelled["labels"], labelled["image"], emb, lm["maps"], (cs.ignore_index, 255))
    present = present_classes(data.labels, cs.seen, cs.classes, LABELLED)
    gen = kind.build(g, emb.shape[1], data.features.shape[1])
    ckpt = stage_checkpoint("fit_generator", [as_dict(g), st.cfg.seed], [LABELLED, MAPS, EMBED], every=200)
    with st.outputs() as out:
        live, t0 = LiveCurves(out.path("plots/generator/dvclive"), every=10), time.time()
        curves = kind.fit(gen, data, present, g, st.rng, st.device, ckpt, unseen=cs.unseen, on_step=live)
        live.close()
        seconds, ctx = time.time() - t0, sample_context(lm["maps"], lm["pool_rows"], data.void) if kind.needs_graphs else None
        metrics, tsne = generator_diagnostics(lambda c, n: kind.sample(gen.cpu(), emb, c, n, ctx, st.rng, torch.device("cpu")),
                                              labelled, pool, present, cs.unseen, MMDLoss.from_params(g.mmd), cs.classes, st.rng)
        metrics = {"kind": g.kind, "label": kind.label(g), "seconds": round(seconds, 1),
                   "final_loss": float(np.mean(curves[next(iter(curves))][-50:])), **metrics}
        save_generator(gen, g, emb.shape[1], data.features.shape[1], out.path(GENERATOR))
        generator_figures(out, curves, tsne, kind.label(g), list(cs.classes), cs.unseen, st.cfg.dataset.name, st.cfg.seed)
        out.json("metrics/generator.json", metrics)
    ckpt.clear()
    print(f"generator '{g.kind}': {seconds:.0f}s, seen MMD² {metrics['seen_mmd2']}, unseen MMD² {metrics['unseen_mmd2']}")


if __name__ == "__main__":
    run(main)
