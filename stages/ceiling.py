"""Stage ceiling (diagnostic): the real-feature ceiling of ZS3Net with this backbone.

The 1x1 classifier retrained with ZS3Net's step-2 recipe on real seen features and *real*
unseen features of the unlabelled pool, chosen by the pool's ground truth
(:mod:`zs3core.ceiling`): what a perfect generator could reach. It reads unseen ground truth,
so it never feeds training or selection; evaluate reports it as ``real_feature_ceiling``.
Outputs: data/ceiling/real_feature_ceiling.pt, metrics/ceiling.json.
"""
from __future__ import annotations

from pathlib import Path

from zs3core.stage import run
from zs3core.ceiling import real_unseen_features
from zs3core.features import load_cache
from zs3core.models.classifier import save_classifier
from zs3core.retrain import fit_classifier
from zs3core.splits import read_class_split

CLASSES, LABELLED, POOL = Path("data/split/classes.json"), Path("data/features/labelled"), Path("data/features/pool")
CEILING = Path("data/ceiling/real_feature_ceiling.pt")


def main(st) -> None:
    c, cs, labelled, pool = st.cfg.classifier, read_class_split(CLASSES), load_cache(LABELLED), load_cache(POOL)
    extra = real_unseen_features(pool, cs.unseen, c.generated_per_unseen, st.rng)
    clf, losses, n = fit_classifier(labelled["features"], labelled["labels"], cs.num_classes, cs.seen, cs.unseen, None,
                                    c, st.rng, st.device, extra=extra, desc="real-feature ceiling")
    metrics = {"training_features": n, "final_loss": losses[-1],
               "real_unseen_features": {cs.classes[u]: int((extra[1] == u).sum()) for u in cs.unseen}}
    with st.outputs() as out:
        save_classifier(clf, out.path(CEILING), losses)
        out.json("metrics/ceiling.json", metrics)
    print(f"real-feature ceiling: {metrics}")


if __name__ == "__main__":
    run(main)
