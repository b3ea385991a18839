"""Stage retrain_classifier: the ZS3Net classifier over all classes (ZS3Net step 2).

Trained (:func:`zs3core.retrain.fit_classifier`) on the cached real features of seen classes,
generated features of the seen classes (with their seen labels) and of the unseen classes,
with the official unseen class weight; no unseen ground truth. Outputs: data/classifier/zs3net.pt,
plots/classifier/ (DVCLive loss), metrics/retrain.json (the "generated, therefore unseen"
shortcut: % of fresh generated seen features, and of real seen features, called unseen).
"""
from __future__ import annotations

from pathlib import Path

import torch

from zs3core.stage import run
from zs3core.checkpoint import stage_checkpoint
from zs3core.config import as_dict
from zs3core.embeddings import load_class_embeddings
from zs3core.features import load_cache
from zs3core.generators import get_kind, load_generator, pool_context
from zs3core.io import LiveCurves
from zs3core.models.classifier import save_classifier
from zs3core.retrain import fit_classifier, shortcut_rate
from zs3core.splits import read_class_split

CLASSES, EMBED = Path("data/split/classes.json"), Path("data/embed/class_embeddings.pt")
LABELLED, MAPS, GENERATOR = Path("data/features/labelled"), Path("data/features/label_maps.pt"), Path("data/generator/generator.pt")
ZS3NET = Path("data/classifier/zs3net.pt")
SHORTCUT_SAMPLES = 500  # fresh generated features per seen class for the shortcut diagnostic


def main(st) -> None:
    cs, emb, labelled = read_class_split(CLASSES), load_class_embeddings(EMBED), load_cache(LABELLED)
    gen, g = load_generator(GENERATOR)
    kind = get_kind(g.kind)
    ctx = pool_context(MAPS, (cs.ignore_index, 255)) if kind.needs_graphs else None

    def sample(classes, n):
        return kind.sample(gen, emb, classes, n, ctx, st.rng, st.device)

    ckpt = stage_checkpoint("retrain_classifier", [as_dict(st.cfg.classifier), st.cfg.seed], [GENERATOR, LABELLED], every=1)
    with st.outputs() as out:
        live = LiveCurves(out.path("plots/classifier/dvclive"))
        clf, losses, n = fit_classifier(labelled["features"], labelled["labels"], cs.num_classes, cs.seen, cs.unseen,
                                        sample, st.cfg.classifier, st.rng, st.device, ckpt=ckpt, desc="ZS3Net classifier",
                                        on_epoch=live)
        live.close()
        real_seen = labelled["features"][torch.isin(labelled["labels"], torch.tensor(cs.seen))]
        metrics = {"training_features": n, "final_loss": losses[-1],
                   "generated_seen_called_unseen": round(shortcut_rate(clf, sample(list(cs.seen), SHORTCUT_SAMPLES)[0], cs.unseen), 2),
                   "real_seen_called_unseen": round(shortcut_rate(clf, real_seen, cs.unseen), 2)}
        save_classifier(clf, out.path(ZS3NET), losses)
        out.json("metrics/retrain.json", metrics)
    ckpt.clear()
    print(f"ZS3Net classifier: {metrics}")


if __name__ == "__main__":
    run(main)
