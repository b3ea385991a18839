"""Stage 4, train_backbone: DeepLabv3+ trained with cross-entropy on seen classes (ZS3Net step 0).

Only the kept training images are used (``drop``), or every training image with unseen pixels
ignored (``ignore``). A checkpoint is written to data/.work after every epoch; re-running
after an interruption resumes from it. Outputs: data/backbone/model.pt, metrics/backbone.json,
plots/backbone/ (DVCLive curves and a PNG of loss and val seen mIoU).
"""
from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader

from stages.common import (
    BACKBONE,
    WORK,
    class_split,
    device,
    manifest,
    params,
    raw_root,
    run,
    samples,
    set_threads,
)
from zs3core.balancing import class_weights
from zs3core.data.dataset import SegDataset
from zs3core.io import StageOutputs, Zs3Error, check_finite
from zs3core.params import get, stage_params
from zs3core.train import (
    BackboneConfig,
    build_backbone,
    config_hash,
    seed_everything,
    train_backbone,
)
from zs3core.viz import save_curve

CFG_KEYS = ("name", "pretrained", "output_stride", "feature_dim", "batch_size", "epochs", "lr", "head_lr_mult",
            "momentum", "weight_decay", "poly_power", "amp", "channels_last", "val_every", "class_weighting",
            "class_weight_cap")


def main() -> None:
    set_threads()
    p = params()
    b = p["backbone"]
    cfg = BackboneConfig(**{k: b[k] for k in CFG_KEYS if k in b})
    gen = seed_everything(int(get(p, "seed")))
    dev = device(p)
    cs = class_split()
    df = manifest()
    root = raw_root(p)
    train_df = df[df.status == "kept"]
    if len(train_df) == 0:
        raise Zs3Error("split: no training image is kept; use split.filter=ignore or fewer unseen classes")
    val_df = df[df.split == "val"]
    vmax = get(p, "backbone.val_max_images", None)
    if vmax:
        val_df = val_df.iloc[:: max(1, len(val_df) // int(vmax))].iloc[: int(vmax)]
    lut = cs.train_lut()
    common = dict(num_classes=cs.num_classes, ignore_index=cs.ignore_index, lut=lut)
    train_ds = SegDataset(root, samples(train_df), train=True, crop_size=int(b["crop_size"]),
                          scale_range=b.get("scale_range", (0.5, 2.0)), hflip=bool(b.get("hflip", True)),
                          blur=bool(b.get("blur", False)), **common)
    val_ds = SegDataset(root, samples(val_df), train=False, eval_short_side=b.get("eval_short_side"), **common)
    workers = int(get(p, "scale.num_workers", 0))
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, drop_last=len(train_ds) > cfg.batch_size,
                              num_workers=workers, generator=gen, pin_memory=dev.type == "cuda")
    val_loader = DataLoader(val_ds, batch_size=1, num_workers=workers) if len(val_ds) else None
    if b.get("iterations"):
        cfg.epochs = max(1, round(int(b["iterations"]) / len(train_loader)))
        print(f"backbone.iterations={b['iterations']}: {cfg.epochs} epochs of {len(train_loader)} batches")
    elif not cfg.epochs:
        raise Zs3Error("params.yaml: set backbone.epochs or backbone.iterations")
    counts = train_df[[f"px_{cs.classes[c].replace(' ', '_')}" for c in cs.seen]].to_numpy()
    weights = class_weights(counts, cfg.class_weighting, cfg.class_weight_cap)
    print("backbone class weights (" + cfg.class_weighting + "): "
          + ", ".join(f"{cs.classes[c]} {w:.2f}" for c, w in zip(cs.seen, weights)))
    model = build_backbone(len(cs.seen), cfg)
    run_hash = config_hash({**stage_params(p, "backbone", "seed", "split", "dataset", "scale"), "n_train": len(train_ds)})
    t0 = time.time()
    with StageOutputs() as out:
        from dvclive import Live

        live = Live(dir=str(out.path("plots/backbone/dvclive")), save_dvc_exp=False, dvcyaml=None, report=None)

        def log(rec: dict) -> None:
            live.log_metric("train/loss", rec["loss"])
            live.log_metric("train/lr", rec["lr"])
            if rec["val_seen_mIoU"] is not None:
                live.log_metric("val/seen_mIoU", rec["val_seen_mIoU"])
            live.next_step()

        history = train_backbone(model, train_loader, val_loader, cfg, dev, WORK / "backbone_checkpoint.pt", run_hash, log,
                                 torch.tensor(weights, dtype=torch.float32))
        live.end()
        model.cpu()
        if cfg.channels_last:
            model = model.to(memory_format=torch.contiguous_format)
        check_finite(model, str(BACKBONE))
        out.write(BACKBONE, lambda f: torch.save({"state_dict": model.state_dict(), "config": cfg.__dict__,
                                                 "num_seen": len(cs.seen), "seen": list(cs.seen)}, f))
        vals = [r["val_seen_mIoU"] for r in history]
        final = next((v for v in reversed(vals) if v is not None), None)
        final_iou = next((r["val_seen_IoU"] for r in reversed(history) if r.get("val_seen_IoU")), None)
        out.json("metrics/backbone.json", {"val_seen_mIoU": final, "epochs": len(history),
                                           "train_images": len(train_ds), "final_loss": history[-1]["loss"],
                                           "train_seconds": round(sum(r["seconds"] for r in history), 1),
                                           "class_weights": {cs.classes[c]: round(float(w), 4) for c, w in zip(cs.seen, weights)},
                                           "val_seen_IoU": dict(zip((cs.classes[c] for c in cs.seen), final_iou))
                                           if final_iou else None})
        save_curve(out.path("plots/backbone/curves.png"),
                   {"train loss": [r["loss"] for r in history]}, "epoch", "cross-entropy", "backbone training loss")
        save_curve(out.path("plots/backbone/val_seen_miou.png"), {"val seen mIoU": vals}, "epoch", "mIoU (%)",
                   f"seen-class mIoU on {len(val_ds)} val images")
    (WORK / "backbone_checkpoint.pt").unlink(missing_ok=True)
    print(f"backbone trained in {time.time() - t0:.0f}s; val seen mIoU {final}")


if __name__ == "__main__":
    run(main)
