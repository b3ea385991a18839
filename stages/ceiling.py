"""Stage ceiling (diagnostic): the real-feature ceiling of ZS3Net with this backbone.

The 1x1 classifier retrained with ZS3Net's step-2 recipe on real seen features and *real*
unseen features of the unlabelled pool, chosen by the pool's ground truth
(:mod:`zs3core.ceiling`): what a perfect generator could reach. It reads unseen ground truth,
so it never feeds training or selection; evaluate reports it as ``real_feature_ceiling``.
Output: data/ceiling/real_feature_ceiling.pt.
"""
from __future__ import annotations

from stages.common import CEILING, class_split, device, feature_cache, params, run, set_threads
from zs3core.ceiling import real_unseen_features
from zs3core.io import StageOutputs
from zs3core.models.classifier import save_classifier
from zs3core.params import get
from zs3core.retrain import ClassifierConfig, fit_classifier
from zs3core.train import seed_everything


def main() -> None:
    set_threads()
    p = params()
    cfg = ClassifierConfig.from_params(p["classifier"])
    rng = seed_everything(int(get(p, "seed")))
    cs, dev = class_split(), device(p)
    labelled, pool = feature_cache("labelled"), feature_cache("pool")
    extra = real_unseen_features(pool, cs.unseen, cfg.generated_per_unseen, rng)
    clf, losses, n = fit_classifier(labelled["features"], labelled["labels"], cs.num_classes, cs.seen, cs.unseen, None,
                                    cfg, rng, dev, extra=extra, desc="real-feature ceiling")
    with StageOutputs() as out:
        out.write(CEILING, lambda f: save_classifier(clf, f, losses))
    print(f"real-feature ceiling: {n} training features, {len(extra[1])} real unseen "
          f"({ {cs.classes[u]: int((extra[1] == u).sum()) for u in cs.unseen} })")


if __name__ == "__main__":
    run(main)
