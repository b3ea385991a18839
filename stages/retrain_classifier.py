"""Stage 7, retrain_classifier: the ZS3Net classifier over all classes (ZS3Net step 2).

Trained (:func:`zs3core.retrain.fit_classifier`) on the cached real features of seen classes,
generated features of the seen classes (with their seen labels) and of the unseen classes,
with the unseen class weight of the official code. No unseen ground truth is used.
Outputs: data/classifier/zs3net.pt, metrics/retrain.json (the "generated, therefore unseen"
shortcut: % of fresh generated seen features, and of real seen features, called unseen).
"""
from __future__ import annotations

import torch

from stages.common import (FEATURES_DIR, GENERATOR, LABEL_MAPS, ZS3_CLF, class_embeddings, class_split, device,
                           feature_cache, params, run, set_threads, stage_checkpoint)
from zs3core.generation import sample_context
from zs3core.generators import get_kind, load_generator
from zs3core.io import StageOutputs
from zs3core.models.classifier import save_classifier
from zs3core.params import get
from zs3core.retrain import ClassifierConfig, fit_classifier, shortcut_rate
from zs3core.train import seed_everything

SHORTCUT_SAMPLES = 500  # fresh generated features per seen class for the shortcut diagnostic


def main() -> None:
    set_threads()
    p = params()
    cfg = ClassifierConfig.from_params(p["classifier"])
    rng = seed_everything(int(get(p, "seed")))
    cs, emb, dev = class_split(), class_embeddings(), device(p)
    labelled = feature_cache("labelled")
    gen, g = load_generator(GENERATOR)
    kind = get_kind(g["kind"])
    lm = torch.load(LABEL_MAPS, weights_only=False) if kind.needs_graphs else None
    ctx = sample_context(lm["maps"], lm["pool_rows"], (cs.ignore_index, 255)) if lm else None

    def sample(classes, n):
        return kind.sample(gen, emb, classes, n, ctx, rng, dev)

    ckpt = stage_checkpoint("retrain_classifier", p, ["classifier", "seed"], [GENERATOR, FEATURES_DIR / "labelled.pt"],
                            every=1)
    clf, losses, n = fit_classifier(labelled["features"], labelled["labels"], cs.num_classes, cs.seen, cs.unseen, sample,
                                    cfg, rng, dev, ckpt=ckpt, desc="ZS3Net classifier")
    fake_seen, _ = sample(list(cs.seen), SHORTCUT_SAMPLES)
    real_seen = labelled["features"][torch.isin(labelled["labels"], torch.tensor(cs.seen))]
    metrics = {"training_features": n, "final_loss": losses[-1],
               "generated_seen_called_unseen": round(shortcut_rate(clf, fake_seen, cs.unseen), 2),
               "real_seen_called_unseen": round(shortcut_rate(clf, real_seen, cs.unseen), 2)}
    with StageOutputs() as out:
        out.write(ZS3_CLF, lambda f: save_classifier(clf, f, losses))
        out.json("metrics/retrain.json", metrics)
    ckpt.clear()
    print(f"ZS3Net classifier: {metrics}")


if __name__ == "__main__":
    run(main)
