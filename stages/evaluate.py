"""Stage 9, evaluate: PA, MA, mIoU over seen/unseen/all classes and hIoU, generalized and vanilla.

Models: the seen-only backbone ("w/o ZSL"), DeViSE, ZS3Net (with ``generator.kind``) and
ZS5Net; under ``split.filter=oracle`` the supervised oracle alone (the backbone trained on
every class), scored with the K preset's seen/unseen grouping.
Outputs: metrics/evaluate.json (for ``dvc metrics diff`` / ``dvc exp show``),
metrics/per_class_iou.csv and plots/evaluate/ (confusion matrices, qualitative panels,
per-class IoU bars) for ``dvc plots``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from stages.common import (
    BACKBONE,
    DEVISE,
    ZS3_CLF,
    ZS5_CLF,
    class_split,
    device,
    manifest,
    params,
    raw_root,
    report_split,
    run,
    samples,
    set_threads,
)
from zs3core.data.dataset import SegDataset
from zs3core.devise import load_devise
from zs3core.evaluation import evaluate_split
from zs3core.io import StageOutputs
from zs3core.metrics import group_scores, per_class_iou, zsl_scores
from zs3core.models.classifier import load_classifier
from zs3core.params import get
from zs3core.train import load_backbone, seed_everything
from zs3core.viz import palette, save_class_bars, save_heatmap, save_panel


def main() -> None:
    set_threads()
    p = params()
    seed_everything(int(get(p, "seed")))
    trained = class_split()
    cs = report_split(p)
    oracle = get(p, "split.filter") == "oracle"
    df = manifest()
    root = raw_root(p)
    backbone, _ = load_backbone(BACKBONE)
    if oracle:
        models, heads, bb_name = {"oracle": "supervised oracle"}, {}, "oracle"
    else:
        kind = get(p, "generator.kind")
        models = {"seen_only": "seen-only", "devise": "DeViSE", "zs3net": f"ZS3Net ({kind})", "zs5net": f"ZS5Net ({kind})"}
        heads = {"devise": load_devise(DEVISE), "zs3net": load_classifier(ZS3_CLF), "zs5net": load_classifier(ZS5_CLF)}
        bb_name = "seen_only"
    dev = device(p)
    pal = palette(cs.num_classes, get(p, "dataset.name"))
    n_panels = int(get(p, "evaluation.panels", 6))
    results, rows = {}, []
    with StageOutputs() as out:
        for split in get(p, "evaluation.splits", ["val"]):
            sdf = df[df.split == split]
            ds = SegDataset(root, samples(sdf), cs.num_classes, cs.ignore_index, train=False,
                            eval_short_side=get(p, "backbone.eval_short_side", None))
            panel_rows = np.linspace(0, len(ds) - 1, min(n_panels, len(ds))).round().astype(int).tolist() if split == "val" else []
            conf, vconf, panels = evaluate_split(backbone, heads, ds, trained.seen, cs.unseen, cs.num_classes, dev,
                                                 panel_rows, f"evaluate {split}", bb_name)
            results[split] = {m: zsl_scores(conf[m], cs.seen, cs.unseen) for m in models}
            for m in models:
                if m in vconf:
                    results[split][m]["vanilla"] = group_scores(vconf[m], cs.unseen)
            results[split]["images"] = len(ds)
            ious = {m: per_class_iou(conf[m]) for m in models}
            for c, name in enumerate(cs.classes):
                rows.append({"split": split, "class": name, "group": "unseen" if c in cs.unseen else "seen",
                             "pixels": int(conf[bb_name][c].sum()),
                             **{m: None if np.isnan(ious[m][c]) else round(float(ious[m][c]), 2) for m in models}})
            for m, title in models.items():
                norm = conf[m] / np.maximum(conf[m].sum(1, keepdims=True), 1)
                save_heatmap(out.path(f"plots/evaluate/confusion_{split}_{m}.png"), 100 * norm, list(cs.classes),
                             f"{title} on {split}: row-normalised confusion (%)", fmt="{:.0f}", xlabel="predicted",
                             ylabel="ground truth", marked=list(cs.unseen))
            save_class_bars(out.path(f"plots/evaluate/per_class_iou_{split}.png"), list(cs.classes), cs.unseen,
                            {title: ious[m] for m, title in models.items()}, f"per-class IoU on {split} (* = unseen)")
            for i, pan in panels.items():
                img, _ = ds.load(i)
                save_panel(out.path(f"plots/evaluate/panels/{split}_{ds.samples[i].id}.png"), img.permute(1, 2, 0).numpy(),
                           {"ground truth": pan["target"], **{t: pan[m] for m, t in models.items()}},
                           list(cs.classes), list(cs.unseen), pal, f"{split} {ds.samples[i].id} (* = unseen)")
        out.json("metrics/evaluate.json", results)
        pd.DataFrame(rows).to_csv(out.path("metrics/per_class_iou.csv"), index=False)
    table = pd.DataFrame({(m, g, k): [results[s][m][g][k] for s in results] for m in models for g in ("seen", "unseen", "all")
                          for k in ("PA", "MA", "mIoU")}, index=list(results)).T
    print(table.round(1).to_string())
    for s in results:
        print(s, "hIoU", {m: round(results[s][m]["hIoU"], 2) for m in models},
              "vanilla unseen mIoU", {m: round(results[s][m]["vanilla"]["mIoU"], 2) for m in models if "vanilla" in results[s][m]})


if __name__ == "__main__":
    run(main)
