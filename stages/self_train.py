"""Stage 8, self_train (ZS5Net): pseudo-label the unlabelled pool with ZS3Net, retrain the classifier.

Per pool image, the top ``self_training.top_p`` % most confident pixels among those that
ZS3Net (calibrated with its cross-validated γ) predicts as unseen become pseudo-labels; under
``ignore`` only pixels without a seen label may. The classifier is retrained with ZS3Net's
recipe plus the pseudo-labelled features (:func:`zs3core.retrain.fit_classifier`). The pool's
ground truth is read only to report the pseudo-labels' precision. Outputs:
data/self_train/zs5net.pt, metrics/self_train.json.
"""
from __future__ import annotations

import torch

from stages.common import (FEATURES_DIR, GENERATOR, LABEL_MAPS, ZS3_CLF, ZS5_CLF, class_embeddings, class_split,
                           device, feature_cache, params, run, set_threads, stage_checkpoint)
from zs3core.generation import sample_context
from zs3core.generators import get_kind, load_generator
from zs3core.io import StageOutputs, read_json
from zs3core.models.classifier import load_classifier, save_classifier
from zs3core.params import get
from zs3core.retrain import ClassifierConfig, fit_classifier
from zs3core.selftrain import pseudo_label
from zs3core.train import seed_everything

CALIBRATION = "metrics/calibration.json"


def main() -> None:
    set_threads()
    p = params()
    cfg = ClassifierConfig.from_params(p["classifier"])
    top_p = float(get(p, "self_training.top_p"))
    rng = seed_everything(int(get(p, "seed")))
    cs, emb, dev = class_split(), class_embeddings(), device(p)
    labelled, pool = feature_cache("labelled"), feature_cache("pool")
    gamma = float(read_json(CALIBRATION).get("zs3net", {}).get("gamma", 0.0))
    sel, pseudo_y = pseudo_label(load_classifier(ZS3_CLF), pool, cs.seen, cs.unseen, top_p, get(p, "split.filter"), gamma)
    gen, g = load_generator(GENERATOR)
    kind = get_kind(g["kind"])
    lm = torch.load(LABEL_MAPS, weights_only=False) if kind.needs_graphs else None
    ctx = sample_context(lm["maps"], lm["pool_rows"], (cs.ignore_index, 255)) if lm else None
    ckpt = stage_checkpoint("self_train", p, ["classifier", "self_training", "seed"],
                            [GENERATOR, ZS3_CLF, FEATURES_DIR / "labelled.pt", FEATURES_DIR / "pool.pt", CALIBRATION], every=1)
    clf, losses, n = fit_classifier(labelled["features"], labelled["labels"], cs.num_classes, cs.seen, cs.unseen,
                                    lambda classes, k: kind.sample(gen, emb, classes, k, ctx, rng, dev), cfg, rng, dev,
                                    extra=(pool["features"][sel], pseudo_y), ckpt=ckpt, desc="ZS5Net classifier")
    gt = pool["labels"][sel]
    valid = gt != 255
    metrics = {
        "top_p": top_p,
        "gamma": gamma,
        "pool_pixels": len(sel),
        "pseudo_labels": int(sel.sum()),
        "pseudo_labels_per_class": {cs.classes[u]: int((pseudo_y == u).sum()) for u in cs.unseen},
        "training_features": n,
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
