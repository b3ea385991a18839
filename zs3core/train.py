"""Backbone training (ZS3Net step 0): DeepLabv3+ supervised on the seen classes.

Also the run helpers every training stage shares (seeding, device choice, settings hash).
The loop is seeded by its caller, runs on the device chosen by :func:`pick_device`, uses
mixed precision on CUDA when asked, shows a tqdm progress bar, writes a checkpoint after every
epoch and resumes from it when restarted with the same settings. The generator (step 1) lives
in :mod:`zs3core.generation`, the classifier retraining (step 2) in :mod:`zs3core.retrain`.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from zs3core.io import require_finite
from zs3core.metrics import confusion_matrix, group_scores, per_class_iou
from zs3core.models.deeplab import DeepLabV3Plus, upsample_logits


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch.Generator seeded alike."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cpu'/'cuda' as given.

    Raises:
        RuntimeError: 'cuda' asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("scale.device is 'cuda' but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def config_hash(obj) -> str:
    """Short stable hash of a JSON-able settings object (identifies a resumable run)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- backbone (step 0)
@dataclass
class BackboneConfig:
    """Settings of the supervised DeepLabv3+ training on seen classes (params ``backbone.*``)."""

    name: str = "resnet101"
    pretrained: bool = False
    output_stride: int = 16
    feature_dim: int = 256
    batch_size: int = 16
    epochs: int = 200
    lr: float = 0.007
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    amp: bool = True
    channels_last: bool = False
    val_every: int = 1
    class_weighting: str = "none"
    class_weight_cap: float | None = None


def build_backbone(num_seen: int, cfg: BackboneConfig) -> DeepLabV3Plus:
    """DeepLabv3+ with ``num_seen`` outputs, built from the backbone settings."""
    return DeepLabV3Plus(num_seen, cfg.name, cfg.output_stride, cfg.feature_dim, cfg.pretrained)


def load_backbone(path: Path) -> tuple[DeepLabV3Plus, dict]:
    """Load a trained backbone saved by the train_backbone stage: (model on cpu in eval mode, checkpoint dict).

    Raises:
        FileNotFoundError: no such file.
    """
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = BackboneConfig(**ck["config"])
    cfg.pretrained = False  # the weights come from the checkpoint
    model = build_backbone(ck["num_seen"], cfg)
    model.load_state_dict(ck["state_dict"])
    return model.eval(), ck


@torch.no_grad()
def seen_confusion(model: DeepLabV3Plus, loader: DataLoader, num_seen: int, device: torch.device,
                   channels_last=False) -> np.ndarray:
    """(S, S) int64 confusion of the seen-only model over a loader whose targets are seen indices (255 ignored)."""
    model.eval()
    conf = torch.zeros(num_seen, num_seen, dtype=torch.int64)
    for img, target, _ in loader:
        img = img.to(device)
        if channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        logits = upsample_logits(model(img).float(), target.shape[-2:])
        conf += confusion_matrix(target, logits.argmax(1).cpu(), num_seen, 255)
    return conf.numpy()


def seen_miou(model: DeepLabV3Plus, loader: DataLoader, num_seen: int, device: torch.device, channels_last=False) -> float:
    """mIoU (%) of the seen-only model on seen-class pixels of a loader whose targets are seen indices (255 ignored)."""
    return group_scores(seen_confusion(model, loader, num_seen, device, channels_last), range(num_seen))["mIoU"]


def train_backbone(model: DeepLabV3Plus, train_loader: DataLoader, val_loader: DataLoader | None,
                   cfg: BackboneConfig, device: torch.device, ckpt_path: Path, run_hash: str,
                   on_epoch: Callable[[dict], None] | None = None,
                   class_weight: torch.Tensor | None = None) -> list[dict]:
    """Train with cross-entropy on seen classes; SGD, poly lr, 10x lr on the head.

    Args:
        model: network with ``num_seen`` outputs; targets are seen indices, 255 ignored.
        train_loader / val_loader: training batches; validation (seen mIoU) every
            ``cfg.val_every`` epochs and at the last epoch (None = no validation).
        ckpt_path: where the per-epoch checkpoint goes; if it exists with the same
            ``run_hash`` training resumes after its last finished epoch.
        on_epoch: called with each epoch's record (also for replayed epochs on resume).
        class_weight: (S,) float32 cross-entropy weight of each seen output
            (:func:`zs3core.balancing.class_weights`); None = unweighted.

    Returns:
        One record per epoch: {epoch, loss, lr, val_seen_mIoU (or None), val_seen_IoU (per seen
        output, % or None), seconds}.
    """
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.param_groups(cfg.lr, cfg.head_lr_mult), lr=cfg.lr,
                          momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in opt.param_groups]
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict] = []
    start = 0
    loader_rng = getattr(train_loader, "generator", None)  # shuffling order continues exactly on resume
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck.get("run_hash") == run_hash:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            scaler.load_state_dict(ck["scaler"])
            torch.set_rng_state(ck["rng"])
            if loader_rng is not None and ck.get("loader_rng") is not None:
                loader_rng.set_state(ck["loader_rng"])
            history, start = ck["history"], ck["epoch"]
            print(f"resuming backbone training from {ckpt_path} after epoch {start}")
        else:
            print(f"ignoring {ckpt_path}: it belongs to other settings")
    for rec in history:
        if on_epoch:
            on_epoch(rec)
    total_iters = max(1, cfg.epochs * len(train_loader))
    num_seen = model.classifier.out_channels
    weight = class_weight.float().to(device) if class_weight is not None else None
    for epoch in range(start, cfg.epochs):
        model.train()
        t0, losses = time.time(), []
        bar = tqdm(train_loader, desc=f"backbone epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for it, (img, target, _) in enumerate(bar):
            step = epoch * len(train_loader) + it
            factor = (1 - step / total_iters) ** cfg.poly_power
            for g, lr0 in zip(opt.param_groups, base_lrs):
                g["lr"] = lr0 * factor
            img, target = img.to(device, non_blocking=True), target.to(device, non_blocking=True)
            if cfg.channels_last:
                img = img.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits = model(img)
                logits = upsample_logits(logits, target.shape[-2:])
                loss = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=255)
            require_finite(loss, f"train_backbone (epoch {epoch + 1})", step + 1)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        val, val_iou = None, None
        if val_loader is not None and ((epoch + 1) % max(1, cfg.val_every) == 0 or epoch + 1 == cfg.epochs):
            conf = seen_confusion(model, val_loader, num_seen, device, cfg.channels_last)
            val = group_scores(conf, range(num_seen))["mIoU"]
            val_iou = [None if np.isnan(v) else round(float(v), 2) for v in per_class_iou(conf)]
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
               "lr": base_lrs[0] * factor if losses else base_lrs[0], "val_seen_mIoU": val,
               "val_seen_IoU": val_iou, "seconds": time.time() - t0}
        history.append(rec)
        print(json.dumps(rec))
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"run_hash": run_hash, "epoch": epoch + 1, "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                    "rng": torch.get_rng_state(), "loader_rng": loader_rng.get_state() if loader_rng else None,
                    "history": history}, tmp)
        os.replace(tmp, ckpt_path)
        if on_epoch:
            on_epoch(rec)
    return history
