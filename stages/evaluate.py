"""Stage evaluate: PA, MA, mIoU of seen/unseen/all classes and hIoU, generalized, vanilla, calibrated.

Models: seen-only ("w/o ZSL"), DeViSE, ZS3Net, ZS5Net and the real-feature ceiling (diagnostic);
under ``split.filter=oracle`` the supervised oracle, scored with the K preset's grouping.
Calibrated scores use each model's γ (calibrate stage; ZS5Net has none: uncalibrated); the rule
``evaluation.absent_classes`` is named in the output; transfer efficiency = unseen mIoU over the
ceiling's (:func:`zs3core.evaluation.summarize`). Outputs: metrics/evaluate.json, per_class_iou.csv, plots/evaluate/.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from zs3core.stage import run
from zs3core.backbone import load_backbone
from zs3core.data.dataset import SegDataset
from zs3core.data.layouts import find_root
from zs3core.devise import load_devise
from zs3core.evaluation import MODEL_TITLES, evaluate_split, score_lines, summarize
from zs3core.io import read_json
from zs3core.models.classifier import load_classifier
from zs3core.splits import manifest_samples, read_class_split, read_manifest, scoring_split
from zs3core.viz import evaluation_figures, palette

RAW, MANIFEST, CLASSES, BACKBONE = Path("data/raw"), Path("data/split/manifest.csv"), Path("data/split/classes.json"), Path("data/backbone/model.pt")
CALIBRATION = Path("metrics/calibration.json")
HEADS = {"devise": Path("data/devise/devise.pt"), "zs3net": Path("data/classifier/zs3net.pt"),
         "zs5net": Path("data/self_training/zs5net.pt"), "real_feature_ceiling": Path("data/ceiling/real_feature_ceiling.pt")}


def main(st) -> None:
    cfg, trained, df, oracle = st.cfg, read_class_split(CLASSES), read_manifest(MANIFEST), st.cfg.split.filter == "oracle"
    cs = scoring_split(trained, cfg.split.filter, cfg.dataset.split_presets, cfg.split.k, cfg.split.unseen)
    titles = {m: t for m, t in MODEL_TITLES.items() if (m == "oracle") == oracle}
    heads = {} if oracle else {m: (load_devise if m == "devise" else load_classifier)(p) for m, p in HEADS.items()}
    gammas = {} if oracle else {m: float(r["gamma"]) for m, r in read_json(CALIBRATION).items() if "gamma" in r}
    backbone, root, results, per_class = load_backbone(BACKBONE)[0], find_root(RAW, cfg.dataset.layout), {}, []
    with st.outputs() as out:
        for split in cfg.evaluation.splits:
            ds = SegDataset(root, manifest_samples(df[df.split == split]), cs.num_classes, cs.ignore_index,
                            eval_short_side=cfg.backbone.eval_short_side)
            rows = np.linspace(0, len(ds) - 1, min(cfg.evaluation.panels, len(ds))).round().astype(int) if split == "val" else []
            conf, panels = evaluate_split(backbone, heads, ds, trained.seen, cs.unseen, cs.num_classes, st.device, list(rows),
                                          f"evaluate {split}", "oracle" if oracle else "seen_only", gammas)
            results[split], pc = summarize(conf, cs.seen, cs.unseen, titles, gammas, cs.classes, cfg.evaluation.absent_classes)
            results[split]["images"] = len(ds)
            per_class += [{"split": split, **r} for r in pc]
            evaluation_figures(out, split, conf, pc, panels, ds, titles, list(cs.classes), cs.unseen,
                               palette(cs.num_classes, cfg.dataset.name),
                               ["oracle"] if oracle else ["seen_only", "zs3net", "zs3net@calibrated", "zs5net"])
        pd.DataFrame(per_class).to_csv(out.path("metrics/per_class_iou.csv"), index=False)
        out.json("metrics/evaluate.json", results)
    print("\n".join(f"{s}: {r['images']} images\n" + "\n".join(score_lines(r, titles)) for s, r in results.items()))


if __name__ == "__main__":
    run(main)
