"""Stage devise: the DeViSE projection baseline (ZS3Net Tables 1-2), trained on cached seen features.

Uses the ``classifier`` settings (epochs, batch size, lr) on the same real seen features as
ZS3Net's classifier. Output: data/devise/devise.pt.
"""
from __future__ import annotations

import torch

from stages.common import (
    DEVISE,
    EMBED,
    FEATURES_DIR,
    class_embeddings,
    class_split,
    device,
    feature_cache,
    params,
    run,
    set_threads,
    stage_checkpoint,
)
from zs3core.devise import save_devise, train_devise
from zs3core.io import StageOutputs
from zs3core.params import get
from zs3core.train import seed_everything


def main() -> None:
    set_threads()
    p = params()
    c = p["classifier"]
    rng = seed_everything(int(get(p, "seed")))
    cs = class_split()
    labelled = feature_cache("labelled")
    keep = torch.isin(labelled["labels"], torch.tensor(list(cs.seen)))
    ckpt = stage_checkpoint("devise", p, ["classifier", "seed"], [FEATURES_DIR / "labelled.pt", EMBED], every=1)
    head, losses = train_devise(labelled["features"][keep], labelled["labels"][keep], class_embeddings(),
                                int(c["epochs"]), int(c["batch_size"]), float(c["lr"]), rng, device(p), ckpt)
    with StageOutputs() as out:
        out.write(DEVISE, lambda f: save_devise(head, f, losses))
    ckpt.clear()
    print(f"DeViSE: {int(keep.sum())} seen features, final cosine loss {losses[-1]:.4f}")


if __name__ == "__main__":
    run(main)
