"""Stage devise: the DeViSE projection baseline (ZS3Net Tables 1-2), trained on cached seen features.

Uses the ``classifier`` settings (epochs, batch size, lr) on the same real seen features as
ZS3Net's classifier. Outputs: data/devise/devise.pt, plots/devise/ (DVCLive loss curve).
"""
from __future__ import annotations

from pathlib import Path

import torch

from zs3core.stage import run
from zs3core.checkpoint import stage_checkpoint
from zs3core.config import as_dict
from zs3core.devise import save_devise, train_devise
from zs3core.embeddings import load_class_embeddings
from zs3core.features import load_cache
from zs3core.io import LiveCurves
from zs3core.splits import read_class_split

CLASSES, EMBED, LABELLED = Path("data/split/classes.json"), Path("data/embed/class_embeddings.pt"), Path("data/features/labelled")
DEVISE = Path("data/devise/devise.pt")


def main(st) -> None:
    c, cs, labelled = st.cfg.classifier, read_class_split(CLASSES), load_cache(LABELLED)
    keep = torch.isin(labelled["labels"], torch.tensor(list(cs.seen)))
    ckpt = stage_checkpoint("devise", [as_dict(c), st.cfg.seed], [LABELLED, EMBED], every=1)
    with st.outputs() as out:
        live = LiveCurves(out.path("plots/devise/dvclive"))
        head, losses = train_devise(labelled["features"][keep], labelled["labels"][keep], load_class_embeddings(EMBED),
                                    c.epochs, c.batch_size, c.lr, st.rng, st.device, ckpt, live)
        live.close()
        save_devise(head, out.path(DEVISE), losses)
    ckpt.clear()
    print(f"DeViSE: {int(keep.sum())} seen features, final cosine loss {losses[-1]:.4f}")


if __name__ == "__main__":
    run(main)
