"""Stage 8, self_train (ZS5Net): pseudo-label the unlabelled pool with ZS3Net, retrain the classifier.

Per pool image, the top ``self_training.top_p`` % most confident pixels among those predicted
as unseen become pseudo-labels; the classifier is retrained on real seen features, generated
unseen features and the pseudo-labelled pool features. The pool's ground truth is read only to
report the pseudo-labels' precision (metrics/self_train.json), never for training.
Output: data/self_train/zs5net.pt, metrics/self_train.json.
"""
from __future__ import annotations

import torch

from stages.common import (
    FEATURES_DIR,
    GENERATOR,
    ZS3_CLF,
    ZS5_CLF,
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
from zs3core.models.classifier import load_classifier, save_classifier
from zs3core.params import get
from zs3core.retrain import train_classifier, zs3_training_set
from zs3core.selftrain import select_pseudo_labels
from zs3core.train import seed_everything


def main() -> None:
    set_threads()
    p = params()
    c = p["classifier"]
    top_p = float(get(p, "self_training.top_p"))
    rng = seed_everything(int(get(p, "seed")))
    cs = class_split()
    emb = class_embeddings()
    labelled = feature_cache("labelled")
    pool = feature_cache("pool")
    dev = device(p)
    zs3 = load_classifier(ZS3_CLF)
    with torch.no_grad():
        probs = torch.cat([zs3(pool["features"][i:i + 65536].float()).softmax(1) for i in range(0, len(pool["features"]), 65536)]) \
            if len(pool["features"]) else torch.zeros(0, cs.num_classes)
    sel = select_pseudo_labels(probs, pool["image"], cs.unseen, top_p)
    pseudo_x = pool["features"][sel].float()
    pseudo_y = probs[sel].argmax(1) if sel.any() else torch.zeros(0, dtype=torch.long)
    gen = load_generator(GENERATOR)
    graphs = pool_graphs(cs) if getattr(gen, "graph_conditioned", False) else None
    x, y = zs3_training_set(labelled, gen, emb, cs.seen, cs.unseen, int(c["generated_per_unseen"]), dev, graphs, rng)
    x, y = torch.cat([x, pseudo_x]), torch.cat([y, pseudo_y])
    ckpt = stage_checkpoint("self_train", p, ["classifier", "self_training", "seed"], [GENERATOR, FEATURES_DIR / "labelled.pt"], every=1)
    clf, losses = train_classifier(x, y, cs.num_classes, int(c["epochs"]), int(c["batch_size"]), float(c["lr"]),
                                   float(c["weight_decay"]), rng, dev, ckpt=ckpt, desc="ZS5Net classifier")
    gt = pool["labels"][sel]
    valid = gt != 255
    metrics = {
        "top_p": top_p,
        "pool_pixels": len(sel),
        "pseudo_labels": int(sel.sum()),
        "pseudo_labels_per_class": {cs.classes[u]: int((pseudo_y == u).sum()) for u in cs.unseen},
        # diagnostic only: share of pseudo-labels that agree with the (never trained on) ground truth
        "pseudo_label_precision": round(100.0 * float((pseudo_y[valid] == gt[valid]).float().mean()), 2) if valid.any() else None,
    }
    with StageOutputs() as out:
        out.write(ZS5_CLF, lambda f: save_classifier(clf, f, losses))
        out.json("metrics/self_train.json", metrics)
    ckpt.clear()
    print(metrics)


if __name__ == "__main__":
    run(main)
