"""Stage self_training (ZS5Net): pseudo-label the unlabelled pool with ZS3Net, retrain the classifier.

ZS3Net (calibrated with its cross-validated γ) labels the pool; ``self_training.rule`` keeps the
most confident unseen predictions (default, the paper's: the top ``top_p`` % of each image's),
among every pool pixel unless ``pool_annotation=seen`` under ``ignore`` (:mod:`zs3core.self_training`).
The classifier is retrained with ZS3Net's recipe plus those features; ZS5Net has no γ of its own
(reported uncalibrated). The pool's ground truth is read only for the pseudo-labels' precision.
Outputs: data/self_training/zs5net.pt, plots/self_training/ (DVCLive), metrics/self_training.json.
"""
from __future__ import annotations

from pathlib import Path

from zs3core.stage import run
from zs3core.checkpoint import stage_checkpoint
from zs3core.config import as_dict
from zs3core.embeddings import load_class_embeddings
from zs3core.features import load_cache
from zs3core.generators import get_kind, load_generator, pool_context
from zs3core.io import LiveCurves, read_json
from zs3core.models.classifier import load_classifier, save_classifier
from zs3core.retrain import fit_classifier
from zs3core.self_training import pseudo_label, pseudo_label_report, selection_rule
from zs3core.splits import read_class_split

CLASSES, EMBED, CALIBRATION = Path("data/split/classes.json"), Path("data/embed/class_embeddings.pt"), Path("metrics/calibration.json")
LABELLED, POOL, MAPS = Path("data/features/labelled"), Path("data/features/pool"), Path("data/features/label_maps.pt")
GENERATOR, ZS3NET, ZS5NET = Path("data/generator/generator.pt"), Path("data/classifier/zs3net.pt"), Path("data/self_training/zs5net.pt")


def main(st) -> None:
    cs, emb, labelled, pool = read_class_split(CLASSES), load_class_embeddings(EMBED), load_cache(LABELLED), load_cache(POOL)
    t, gamma = st.cfg.self_training, float(read_json(CALIBRATION).get("zs3net", {}).get("gamma", 0.0))
    rule = selection_rule(t, st.cfg.split.filter)
    sel, pseudo_y = pseudo_label(load_classifier(ZS3NET), pool, cs.seen, cs.unseen, t.top_p, st.cfg.split.filter, gamma,
                                 pool_annotation=t.pool_annotation, rule=rule["rule"], threshold=rule["threshold"])
    gen, g = load_generator(GENERATOR)
    kind = get_kind(g.kind)
    ctx = pool_context(MAPS, (cs.ignore_index, 255)) if kind.needs_graphs else None
    ckpt = stage_checkpoint("self_training", [as_dict(st.cfg.classifier), t.top_p, t.rule, t.threshold, t.pool_annotation, st.cfg.seed],
                            [GENERATOR, ZS3NET, LABELLED, POOL, CALIBRATION], every=1)
    with st.outputs() as out:
        live = LiveCurves(out.path("plots/self_training/dvclive"))
        clf, losses, n = fit_classifier(labelled["features"], labelled["labels"], cs.num_classes, cs.seen, cs.unseen,
                                        lambda classes, k: kind.sample(gen, emb, classes, k, ctx, st.rng, st.device),
                                        st.cfg.classifier, st.rng, st.device, extra=(pool["features"][sel], pseudo_y),
                                        ckpt=ckpt, desc="ZS5Net classifier", on_epoch=live)
        live.close()
        metrics = pseudo_label_report(sel, pseudo_y, pool["labels"], cs, t.top_p, gamma, n, t.pool_annotation,
                                      rule["rule"], t.threshold)
        save_classifier(clf, out.path(ZS5NET), losses)
        out.json("metrics/self_training.json", metrics)
    ckpt.clear()
    print(metrics)


if __name__ == "__main__":
    run(main)
