"""Stage calibrate: γ of calibrated stacking for every model, by zero-shot cross-validation on the seen classes.

For ZS3Net (the ``generator.kind`` of the run), DeViSE and the real-feature ceiling, the
model is retrained on folds where seen classes play the unseen ones
(:mod:`zs3core.calibration`), and the γ with the best mean hIoU on held-out labelled features
is kept. Only seen-class labels are read. ZS5Net uses ZS3Net's γ (its classifier follows the
same recipe). Outputs: metrics/calibration.json, plots/calibration/{hiou_vs_gamma.csv,.png}.
"""
from __future__ import annotations

import pandas as pd
import torch

from stages.common import (LABEL_MAPS, class_embeddings, class_split, device, feature_cache, manifest, params, run,
                           set_threads)
from zs3core.crossval import select_gammas
from zs3core.generators import get_kind
from zs3core.io import StageOutputs
from zs3core.params import get
from zs3core.retrain import ClassifierConfig
from zs3core.train import seed_everything
from zs3core.viz import save_calibration_curves


def main() -> None:
    set_threads()
    p = params()
    c = p["calibration"]
    rng = seed_everything(int(get(p, "seed")))
    cs, emb, dev = class_split(), class_embeddings(), device(p)
    labelled = feature_cache("labelled")
    lm = torch.load(LABEL_MAPS, weights_only=False)
    df = manifest()
    train = df[df.split == get(p, "dataset.train_split", "train")]
    counts = train[[f"px_{n.replace(' ', '_')}" for n in cs.classes]].to_numpy()
    g = dict(p["generator"])
    if c.get("generator_steps"):
        g["steps"] = int(c["generator_steps"])
    results, rows, panels = {}, [], {}
    if cs.unseen:
        found = select_gammas(labelled, lm["maps"], counts, cs.seen, cs.unseen, (cs.ignore_index, 255), emb,
                              get_kind(g["kind"]), g, ClassifierConfig.from_params(p["classifier"]), list(c["models"]),
                              int(c["folds"]), float(c["val_fraction"]), int(c["grid"]), rng, dev)
        for model, r in found.items():
            results[model] = {"gamma": round(r["gamma"], 6), "cv_hIoU": round(r["hIoU"], 3),
                              "cv_uncalibrated_hIoU": round(r["uncalibrated_hIoU"], 3),
                              "folds": [{**f, "pseudo_unseen": [cs.classes[u] for u in f["pseudo_unseen"]]}
                                        for f in r["folds"]]}
            rows += [{"model": model, "gamma": float(gm), "hIoU": float(h)} for gm, h in zip(r["gammas"], r["curves"].mean(0))]
            panels[model] = (r["gammas"], r["curves"])
            print(f"{model}: γ = {r['gamma']:.4f}, cross-validated hIoU {r['hIoU']:.2f} (uncalibrated "
                  f"{r['uncalibrated_hIoU']:.2f}) over folds {[f['pseudo_unseen'] for f in results[model]['folds']]}")
        results["zs5net"] = {"gamma": results["zs3net"]["gamma"], "from": "zs3net"} if "zs3net" in results else {}
    curves = pd.DataFrame(rows, columns=["model", "gamma", "hIoU"])
    with StageOutputs() as out:
        out.json("metrics/calibration.json", results)
        curves.to_csv(out.path("plots/calibration/hiou_vs_gamma.csv"), index=False)
        save_calibration_curves(out.path("plots/calibration/hiou_vs_gamma.png"), panels,
                                {m: r["gamma"] for m, r in results.items() if m in panels},
                                "zero-shot cross-validation of γ on the seen classes (pseudo-unseen folds)")

if __name__ == "__main__":
    run(main)
