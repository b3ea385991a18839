"""Stage calibrate: γ of calibrated stacking for every model, by zero-shot cross-validation on the seen classes.

For ZS3Net (the ``generator.kind`` of the run), DeViSE and the real-feature ceiling, the model is
retrained on folds where seen classes play the unseen ones (:mod:`zs3core.calibration`,
:mod:`zs3core.crossval`), and the γ with the best mean hIoU on held-out labelled features is
kept. Only seen-class labels are read. ZS5Net is reported uncalibrated (no γ of its own). Outputs:
metrics/calibration.json, plots/calibration/{hiou_vs_gamma.csv,hiou_vs_gamma.png}.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from zs3core.stage import run
from zs3core.calibration import calibration_report
from zs3core.crossval import select_gammas
from zs3core.embeddings import load_class_embeddings
from zs3core.features import load_cache
from zs3core.generators import get_kind
from zs3core.splits import pixel_count_matrix, read_class_split, read_manifest
from zs3core.viz import save_calibration_curves

CLASSES, MANIFEST, EMBED = Path("data/split/classes.json"), Path("data/split/manifest.csv"), Path("data/embed/class_embeddings.pt")
LABELLED, MAPS = Path("data/features/labelled"), Path("data/features/label_maps.pt")


def main(st) -> None:
    c, cs, df = st.cfg.calibration, read_class_split(CLASSES), read_manifest(MANIFEST)
    g = dataclasses.replace(st.cfg.generator, steps=c.generator_steps or st.cfg.generator.steps)
    kind, found = get_kind(g.kind), {}
    if cs.unseen:
        found = select_gammas(load_cache(LABELLED), torch.load(MAPS, weights_only=False)["maps"],
                              pixel_count_matrix(df[df.split == st.cfg.dataset.train_split], cs.classes), cs.seen,
                              cs.unseen, (cs.ignore_index, 255), load_class_embeddings(EMBED), kind, g,
                              st.cfg.classifier, list(c.models), c.folds, c.val_fraction, c.grid, st.rng, st.device)
    results, curves = calibration_report(found, cs.classes)
    with st.outputs() as out:
        out.json("metrics/calibration.json", results)
        curves.to_csv(out.path("plots/calibration/hiou_vs_gamma.csv"), index=False)
        save_calibration_curves(out.path("plots/calibration/hiou_vs_gamma.png"),
                                {m: (r["gammas"], r["curves"]) for m, r in found.items()},
                                {m: r["gamma"] for m, r in found.items()},
                                "zero-shot cross-validation of γ on the seen classes (pseudo-unseen folds)")
    for m, r in results.items():
        print(f"{m}: γ = {r.get('gamma')}, cross-validated hIoU {r.get('cv_hIoU')} (uncalibrated {r.get('cv_uncalibrated_hIoU')})")


if __name__ == "__main__":
    run(main)
