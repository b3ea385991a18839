"""Stage 9, evaluate: PA, MA, mIoU over seen/unseen/all classes and hIoU, generalized, vanilla and calibrated.

Models: the seen-only backbone ("w/o ZSL"), DeViSE, ZS3Net (``generator.kind``), ZS5Net and
the real-feature ceiling (a diagnostic trained on real unseen pool features); under
``split.filter=oracle`` the supervised oracle alone (the backbone trained on every class),
scored with the K preset's seen/unseen grouping. Calibrated scores use each model's γ from the
calibrate stage; transfer efficiency is a model's unseen mIoU over the ceiling's.
Outputs: metrics/evaluate.json (for ``dvc metrics diff`` / ``dvc exp show``),
metrics/per_class_iou.csv and plots/evaluate/ (confusion matrices, qualitative panels,
per-class IoU bars) for ``dvc plots``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from stages.common import (BACKBONE, CEILING, DEVISE, ZS3_CLF, ZS5_CLF, class_split, device, manifest, params,
                           raw_root, report_split, run, samples, set_threads)
from zs3core.ceiling import transfer_efficiency
from zs3core.data.dataset import SegDataset
from zs3core.devise import load_devise
from zs3core.evaluation import evaluate_split
from zs3core.io import StageOutputs, read_json
from zs3core.metrics import group_scores, per_class_iou, zsl_scores
from zs3core.models.classifier import load_classifier
from zs3core.params import get
from zs3core.train import load_backbone, seed_everything
from zs3core.viz import palette, save_class_bars, save_heatmap, save_panel

ZS_MODELS = {"seen_only": "seen-only", "devise": "DeViSE", "zs3net": "ZS3Net", "zs5net": "ZS5Net",
             "real_feature_ceiling": "real-feature ceiling (diagnostic)"}


def main() -> None:
    set_threads()
    p = params()
    seed_everything(int(get(p, "seed")))
    trained, cs = class_split(), report_split(p)
    oracle = get(p, "split.filter") == "oracle"
    df, root = manifest(), raw_root(p)
    backbone, _ = load_backbone(BACKBONE)
    if oracle:
        models, heads, bb_name, gammas = {"oracle": "supervised oracle"}, {}, "oracle", {}
    else:
        models, bb_name = dict(ZS_MODELS), "seen_only"
        heads = {"devise": load_devise(DEVISE), "zs3net": load_classifier(ZS3_CLF), "zs5net": load_classifier(ZS5_CLF),
                 "real_feature_ceiling": load_classifier(CEILING)}
        gammas = {m: float(r["gamma"]) for m, r in read_json("metrics/calibration.json").items() if "gamma" in r}
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
            conf, panels = evaluate_split(backbone, heads, ds, trained.seen, cs.unseen, cs.num_classes, dev, panel_rows,
                                          f"evaluate {split}", bb_name, gammas)
            res = {}
            for m in models:
                res[m] = zsl_scores(conf[m]["generalized"], cs.seen, cs.unseen)
                if "vanilla" in conf[m]:
                    res[m]["vanilla"] = group_scores(conf[m]["vanilla"], cs.unseen)
                if "calibrated" in conf[m]:
                    res[m]["calibrated"] = {"gamma": gammas[m], **zsl_scores(conf[m]["calibrated"], cs.seen, cs.unseen)}
            if "real_feature_ceiling" in res:
                ceil = res["real_feature_ceiling"]
                res["transfer_efficiency"] = {
                    m: {"uncalibrated": transfer_efficiency(res[m]["unseen"]["mIoU"], ceil["unseen"]["mIoU"]),
                        "calibrated": transfer_efficiency(res[m]["calibrated"]["unseen"]["mIoU"], ceil["calibrated"]["unseen"]["mIoU"])
                        if "calibrated" in res[m] and "calibrated" in ceil else None}
                    for m in ("devise", "zs3net", "zs5net")}
            res["images"] = len(ds)
            results[split] = res
            ious = {f"{m}{s}": per_class_iou(conf[m][proto]) for m in models
                    for s, proto in (("", "generalized"), ("@calibrated", "calibrated")) if proto in conf[m]}
            for c, name in enumerate(cs.classes):
                rows.append({"split": split, "class": name, "group": "unseen" if c in cs.unseen else "seen",
                             "pixels": int(conf[bb_name]["generalized"][c].sum()),
                             **{m: None if np.isnan(v[c]) else round(float(v[c]), 2) for m, v in ious.items()}})
            for m, title in models.items():
                for proto in ("generalized", "calibrated"):
                    if proto not in conf[m]:
                        continue
                    cm = conf[m][proto]
                    suffix = "" if proto == "generalized" else "_calibrated"
                    save_heatmap(out.path(f"plots/evaluate/confusion_{split}_{m}{suffix}.png"),
                                 100 * cm / np.maximum(cm.sum(1, keepdims=True), 1), list(cs.classes),
                                 f"{title} ({proto}) on {split}: row-normalised confusion (%)", fmt="{:.0f}",
                                 xlabel="predicted", ylabel="ground truth", marked=list(cs.unseen))
            bars = {models[m.split("@")[0]] + (" (calibrated)" if "@" in m else ""): v for m, v in ious.items()}
            save_class_bars(out.path(f"plots/evaluate/per_class_iou_{split}.png"), list(cs.classes), cs.unseen, bars,
                            f"per-class IoU on {split} (* = unseen)")
            shown = [bb_name] if oracle else ["seen_only", "zs3net", "zs3net@calibrated", "zs5net@calibrated"]
            for i, pan in panels.items():
                img, _ = ds.load(i)
                cols = {"ground truth": pan["target"],
                        **{models[k.split("@")[0]] + (" (cal.)" if "@" in k else ""): pan[k] for k in shown if k in pan}}
                save_panel(out.path(f"plots/evaluate/panels/{split}_{ds.samples[i].id}.png"), img.permute(1, 2, 0).numpy(),
                           cols, list(cs.classes), list(cs.unseen), pal, f"{split} {ds.samples[i].id} (* = unseen)")
        out.json("metrics/evaluate.json", results)
        pd.DataFrame(rows).to_csv(out.path("metrics/per_class_iou.csv"), index=False)
    for s, res in results.items():
        print(f"{s}: {res['images']} images")
        for m, title in models.items():
            r = res[m]
            line = f"  {title:>36s}: seen {r['seen']['mIoU']:5.1f} unseen {r['unseen']['mIoU']:5.1f} hIoU {r['hIoU']:5.1f}"
            if "calibrated" in r:
                c = r["calibrated"]
                line += f" | calibrated (γ={c['gamma']:.3g}) seen {c['seen']['mIoU']:5.1f} unseen {c['unseen']['mIoU']:5.1f} hIoU {c['hIoU']:5.1f}"
            print(line)


if __name__ == "__main__":
    run(main)
