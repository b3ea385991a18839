"""Stage train_backbone: DeepLabv3+ trained with cross-entropy on the seen classes (ZS3Net step 0).

Kept training images only (``drop``), or all with unseen pixels ignored (``ignore``); class weights
from kept labels (:mod:`zs3core.balancing`); a per-epoch checkpoint in data/.work resumes a run;
DDP under torchrun (:mod:`zs3core.distributed`). Rank 0 writes data/backbone/model.pt,
metrics/backbone.json (seen mIoU on dev, else val), plots/backbone/ (DVCLive curves, PNGs).
"""
from __future__ import annotations

from pathlib import Path

import torch

from zs3core.stage import run
from zs3core.backbone import (build_backbone, epochs_for, evenly_spaced, pretraining_protocol, save_backbone, train_backbone,
                              training_loaders, training_report)
from zs3core.balancing import class_weights
from zs3core.checkpoint import stage_checkpoint
from zs3core.config import as_dict
from zs3core.data.layouts import find_root
from zs3core.distributed import decorrelate_ranks, resume_settings
from zs3core.io import LiveCurves
from zs3core.splits import manifest_samples, pixel_count_matrix, read_class_split, read_manifest
from zs3core.viz import backbone_figures

RAW, MANIFEST, CLASSES, BACKBONE = (Path("data/raw"), Path("data/split/manifest.csv"), Path("data/split/classes.json"),
                                    Path("data/backbone/model.pt"))


def main(st) -> None:
    b, cs, df = st.cfg.backbone, read_class_split(CLASSES), read_manifest(MANIFEST)
    check = "dev" if (df.status == "dev").any() else "val"   # dev chooses settings; val only reports
    train, val_samples = df[df.status == "kept"], manifest_samples(df[(df.status if check == "dev" else df.split) == check])
    loader, val = training_loaders(find_root(RAW, st.cfg.dataset.layout), manifest_samples(train), val_samples, cs, b,
                                   st.cfg.scale.num_workers, st.rng, st.device, st.dist, st.cfg.seed)
    epochs = epochs_for(b, len(loader))
    seen = [cs.classes[c] for c in cs.seen]
    weights = class_weights(pixel_count_matrix(train, seen), b.class_weighting, b.class_weight_cap)
    print(f"{epochs} epochs of {len(loader)} batches; class weights ({b.class_weighting}): "
          + ", ".join(f"{c} {w:.2f}" for c, w in zip(seen, weights)))
    model = build_backbone(len(cs.seen), b)
    decorrelate_ranks(st.cfg.seed, st.dist)
    ckpt = stage_checkpoint("train_backbone", {**resume_settings(as_dict(st.cfg), st.dist), "n_train": len(train)},
                            [MANIFEST], every=1, writer=st.dist.is_main)
    with st.outputs() as out:
        live = LiveCurves(out.path("plots/backbone/dvclive"))
        curves = train_backbone(model, loader, val, b, epochs, st.device, ckpt, live, torch.tensor(weights, dtype=torch.float32),
                                st.dist, st.cfg.scale.sync_bn)
        live.close()
        save_backbone(model.cpu().to(memory_format=torch.contiguous_format), b, seen, out.path(BACKBONE))
        report = training_report(curves, seen, weights, len(train), check, pretraining_protocol(b))
        out.json("metrics/backbone.json", report)
        backbone_figures(out, curves, len(evenly_spaced(val_samples, b.val_max_images)), check)
    ckpt.clear()
    print(f"backbone trained ({report['protocol']}); {check} seen mIoU {report[f'{check}_seen_mIoU']}")


if __name__ == "__main__":
    run(main)
