"""Training loops: the DeepLabv3+ backbone on seen classes (ZS3Net step 0), the feature
generator (step 1) and the pixel classifier (step 2, and ZS5Net's retraining).

Every loop is seeded by its caller, runs on the device chosen by :func:`pick_device`, uses
mixed precision on CUDA when asked, and shows a tqdm progress bar. The backbone loop writes a
checkpoint after every epoch and resumes from it when restarted with the same settings.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from zs3core.metrics import confusion_matrix, group_scores
from zs3core.mmd import classwise_mmd2
from zs3core.models.classifier import PixelClassifier
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
def seen_miou(model: DeepLabV3Plus, loader: DataLoader, num_seen: int, device: torch.device, channels_last=False) -> float:
    """mIoU (%) of the seen-only model on seen-class pixels of a loader whose targets are seen indices (255 ignored)."""
    model.eval()
    conf = torch.zeros(num_seen, num_seen, dtype=torch.int64)
    for img, target, _ in loader:
        img = img.to(device)
        if channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        logits = upsample_logits(model(img).float(), target.shape[-2:])
        conf += confusion_matrix(target, logits.argmax(1).cpu(), num_seen, 255)
    return group_scores(conf.numpy(), range(num_seen))["mIoU"]


def train_backbone(model: DeepLabV3Plus, train_loader: DataLoader, val_loader: DataLoader | None,
                   cfg: BackboneConfig, device: torch.device, ckpt_path: Path, run_hash: str,
                   on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train with cross-entropy on seen classes; SGD, poly lr, 10x lr on the head.

    Args:
        model: network with ``num_seen`` outputs; targets are seen indices, 255 ignored.
        train_loader / val_loader: training batches; validation (seen mIoU) every
            ``cfg.val_every`` epochs and at the last epoch (None = no validation).
        ckpt_path: where the per-epoch checkpoint goes; if it exists with the same
            ``run_hash`` training resumes after its last finished epoch.
        on_epoch: called with each epoch's record (also for replayed epochs on resume).

    Returns:
        One record per epoch: {epoch, loss, lr, val_seen_mIoU (or None), seconds}.
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
                loss = F.cross_entropy(logits.float(), target, ignore_index=255)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        val = None
        if val_loader is not None and ((epoch + 1) % max(1, cfg.val_every) == 0 or epoch + 1 == cfg.epochs):
            val = seen_miou(model, val_loader, num_seen, device, cfg.channels_last)
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
               "lr": base_lrs[0] * factor if losses else base_lrs[0], "val_seen_mIoU": val,
               "seconds": time.time() - t0}
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


# --------------------------------------------------------------------------- generator (step 1)
def train_generator(gen: nn.Module, feats: torch.Tensor, labels: torch.Tensor, emb: torch.Tensor,
                    classes, sigmas, steps: int, samples_per_class: int, lr: float,
                    generator: torch.Generator, device: torch.device) -> list[float]:
    """Fit G(a, z) to real seen features with the class-wise MMD (ZS3Net §2.2, eq. L_GMMN).

    Args:
        gen: module mapping (n, d_a) embeddings to (n, d_x) features (draws its own noise).
        feats: (N, d_x) real features (any float dtype); labels: (N,) int class ids.
        emb: (C, d_a) float32 class embeddings, row = class id.
        classes: the seen class ids to fit (each must have features).
        sigmas: kernel bandwidths σ. steps: Adam steps at ``lr``.
        samples_per_class: real and generated features per class per step.
        generator: seeded torch.Generator for the real-feature sampling.

    Returns:
        The loss of every step.
    """
    gen.to(device).train()
    opt = torch.optim.Adam(gen.parameters(), lr=lr)
    emb = emb.to(device)
    pools = {int(c): torch.nonzero(labels == c).squeeze(1) for c in classes}
    pools = {c: idx for c, idx in pools.items() if len(idx)}
    losses = []
    bar = tqdm(range(steps), desc="generator (MMD)", leave=False)
    for _ in bar:
        reals, cls = [], []
        for c, idx in pools.items():
            pick = idx[torch.randint(len(idx), (samples_per_class,), generator=generator)]
            reals.append(feats[pick].float())
            cls.append(torch.full((samples_per_class,), c))
        real = torch.cat(reals).to(device)
        batch_l = torch.cat(cls).to(device)  # same classes and counts for real and generated
        fake = gen(emb[batch_l])
        loss = classwise_mmd2(real, batch_l, fake, batch_l, sigmas)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(mmd=f"{np.mean(losses[-50:]):.4f}")
    gen.eval()
    return losses


@torch.no_grad()
def generate(gen: nn.Module, emb: torch.Tensor, classes, n_per_class: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``n_per_class`` synthetic features for each class id: ((n*K, d_x) float32, (n*K,) int64)."""
    gen.to(device).eval()
    labels = torch.cat([torch.full((n_per_class,), int(c)) for c in classes]).long()
    feats = torch.cat([gen(emb[labels[i:i + 65536]].to(device)).cpu() for i in range(0, len(labels), 65536)])
    return feats.float(), labels


# --------------------------------------------------------------------------- classifier (step 2)
def train_classifier(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, epochs: int,
                     batch_size: int, lr: float, weight_decay: float, generator: torch.Generator,
                     device: torch.device, desc: str = "classifier") -> tuple[PixelClassifier, list[float]]:
    """Train the 1x1 classifier f on (N, d_x) features with labels (N,) in 0..C-1 (Adam, CE).

    Returns:
        (classifier on cpu in eval mode, mean loss per epoch).
    """
    clf = PixelClassifier(feats.shape[1], num_classes).to(device)
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
    feats = feats.float()
    losses = []
    for _ in tqdm(range(epochs), desc=desc, leave=False):
        perm = torch.randperm(len(feats), generator=generator)
        tot, n = 0.0, 0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            x, y = feats[idx].to(device), labels[idx].to(device)
            loss = F.cross_entropy(clf(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
            n += len(idx)
        losses.append(tot / max(n, 1))
    return clf.cpu().eval(), losses


def zs3_training_set(labelled: dict, gen: nn.Module, emb: torch.Tensor, seen, unseen, n_per_unseen: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ZS3Net step 2 training data: real seen features plus generated unseen ones.

    Args:
        labelled: feature cache (``features`` (N, d_x) float16, ``labels`` (N,) int64).
        gen: trained generator. emb: (C, d_a) class embeddings.
        seen / unseen: class ids. n_per_unseen: synthetic features per unseen class.

    Returns:
        (features (N + n*K, d_x) float32, labels (N + n*K,) int64). Only seen-class real
        features are used: no unseen ground truth enters training.
    """
    keep = torch.isin(labelled["labels"], torch.tensor(list(seen)))
    fake, fake_l = generate(gen, emb, unseen, n_per_unseen, device)
    return torch.cat([labelled["features"][keep].float(), fake]), torch.cat([labelled["labels"][keep], fake_l])
