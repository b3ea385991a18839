"""Stage 6, fit_generator: train the feature generator on real seen features (ZS3Net step 1).

``generator.kind: gmmn`` is the paper's GMMN trained with the multi-bandwidth MMD.
Outputs: data/generator/generator.pt, plots/generator/{loss.csv,loss.png}.
"""
from __future__ import annotations

import time

import pandas as pd
import torch

from stages.common import (
    FEATURES_DIR,
    GENERATOR,
    class_embeddings,
    class_split,
    device,
    feature_cache,
    params,
    run,
    set_threads,
)
from zs3core.generation import train_generator
from zs3core.io import StageOutputs, Zs3Error
from zs3core.models import build_generator
from zs3core.params import get
from zs3core.train import seed_everything
from zs3core.viz import save_curve


def main() -> None:
    set_threads()
    p = params()
    g = p["generator"]
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
    t0 = time.time()
    losses = train_generator(gen, feats, labels, emb, present, [float(s) for s in g["sigmas"]], int(g["steps"]),
                             int(g["samples_per_class"]), float(g["lr"]), rng, device(p))
    gen.cpu()
    with StageOutputs() as out:
        out.write(GENERATOR, lambda f: torch.save({"state_dict": gen.state_dict(), "params": g,
                                                  "embed_dim": emb.shape[1], "feature_dim": feats.shape[1]}, f))
        pd.DataFrame({"step": range(1, len(losses) + 1), "mmd": losses}).to_csv(out.path("plots/generator/loss.csv"), index=False)
        save_curve(out.path("plots/generator/loss.png"), {"MMD": losses}, "step", "sum of class-wise MMD²",
                   f"{g['kind']} generator loss ({len(present)} seen classes)", logy=True)
    print(f"generator trained in {time.time() - t0:.0f}s; final MMD {sum(losses[-50:]) / len(losses[-50:]):.4f}")


if __name__ == "__main__":
    run(main)
