"""Stage 7, retrain_classifier: the ZS3Net classifier over all classes (ZS3Net step 2).

Trained on the cached real features of seen classes plus ``classifier.generated_per_unseen``
synthetic features per unseen class. No unseen ground truth is used (the official code reads
unseen label layouts here; this project does not). Output: data/classifier/zs3net.pt.
"""
from __future__ import annotations

from stages.common import (
    FEATURES_DIR,
    GENERATOR,
    ZS3_CLF,
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
from zs3core.io import StageOutputs
from zs3core.models import load_generator
from zs3core.models.classifier import save_classifier
from zs3core.params import get
from zs3core.retrain import train_classifier, zs3_training_set
from zs3core.train import seed_everything


def main() -> None:
    set_threads()
    p = params()
    c = p["classifier"]
    rng = seed_everything(int(get(p, "seed")))
    cs = class_split()
    emb = class_embeddings()
    labelled = feature_cache("labelled")
    dev = device(p)
    gen = load_generator(GENERATOR)
    graphs = pool_graphs(cs) if getattr(gen, "graph_conditioned", False) else None
    x, y = zs3_training_set(labelled, gen, emb, cs.seen, cs.unseen, int(c["generated_per_unseen"]), dev, graphs, rng)
    ckpt = stage_checkpoint("retrain_classifier", p, ["classifier", "self_training", "seed"], [GENERATOR, FEATURES_DIR / "labelled.pt"], every=1)
    clf, losses = train_classifier(x, y, cs.num_classes, int(c["epochs"]), int(c["batch_size"]), float(c["lr"]),
                                   float(c["weight_decay"]), rng, dev, ckpt=ckpt, desc="ZS3Net classifier")
    with StageOutputs() as out:
        out.write(ZS3_CLF, lambda f: save_classifier(clf, f, losses))
    ckpt.clear()
    print(f"ZS3Net classifier: {len(x)} training features, final loss {losses[-1]:.4f}")


if __name__ == "__main__":
    run(main)
