"""ZS3Net step 0: DeepLabv3+ trained with cross-entropy on the seen classes.

Builds the training and validation data of the kept images, trains with SGD and a poly
learning rate (``torch.optim.lr_scheduler.LambdaLR``), 10x lr on ASPP / decoder / classifier,
class-balanced cross-entropy (:mod:`zs3core.balancing`) and mixed precision on CUDA when asked,
validates the seen-class mIoU every ``val_every`` epochs, and resumes an interrupted run from
its per-epoch checkpoint (:mod:`zs3core.loop`, :mod:`zs3core.checkpoint`). The generator
(step 1) lives in :mod:`zs3core.generators`, the classifier retraining (step 2) in
:mod:`zs3core.retrain`.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from zs3core.checkpoint import Checkpoint
from zs3core.distributed import SINGLE, DistEnv, all_reduce_sum, block, mean_over_processes, per_process_batch, wrap_model
from zs3core.io import require_finite
from zs3core.loop import run_steps
from zs3core.metrics import confusion_matrix, group_scores, per_class_iou
from zs3core.models.bodies import load_body_weights
from zs3core.models.deeplab import DeepLabV3Plus, upsample_logits


# --------------------------------------------------------------------------- backbone (step 0)
PROTOCOLS = ("scratch", "imagenet-1k", "imagenet-without-unseen (user weights)")
"""Pretraining protocols of a backbone (README "Protocol")."""


def pretraining_protocol(params) -> str:
    """The pretraining protocol of the ``backbone`` view, one of :data:`PROTOCOLS`: ``scratch``
    (random init), ``imagenet-1k`` (``pretrained``: full ImageNet-1k, which holds classes close
    to unseen ones, e.g. bicycles, fences, cars), ``imagenet-without-unseen (user weights)``
    (``weights``: a body the user pretrained without the unseen classes, as ZS3Net §2.2 does)."""
    if getattr(params, "weights", None):
        return PROTOCOLS[2]
    return PROTOCOLS[1] if params.pretrained else PROTOCOLS[0]


def build_backbone(num_outputs: int, params, pretrained: bool | None = None) -> DeepLabV3Plus:
    """DeepLabv3+ with ``num_outputs`` classifier outputs, from the ``backbone`` view
    (:class:`zs3core.config.BackboneParams`); ``pretrained=False`` (loading a trained model)
    skips both ImageNet and user weights, otherwise ``params.pretrained`` / ``params.weights``
    initialise the body.

    Raises:
        Zs3Error: ``backbone.weights`` is missing, unreadable or does not fit the body.
    """
    from zs3core.io import Zs3Error

    init = pretrained is None
    model = DeepLabV3Plus(num_outputs, params.name, params.output_stride, params.feature_dim,
                          params.pretrained if init else pretrained)
    weights = getattr(params, "weights", None) if init else None
    if weights:
        try:
            load_body_weights(model.body, weights)
        except (FileNotFoundError, ValueError) as e:
            raise Zs3Error(f"params.yaml: {e}") from None
    return model


def save_backbone(model: DeepLabV3Plus, params, seen: list[str], path) -> None:
    """Save trained weights with the ``backbone`` params and the names of its outputs.

    Raises:
        Zs3Error: a weight is NaN or infinite (nothing is written).
    """
    from zs3core.config import as_dict
    from zs3core.io import check_finite

    check_finite(model, str(path))
    torch.save({"state_dict": model.state_dict(), "params": as_dict(params), "num_seen": len(seen), "seen": list(seen)},
               path)


def load_backbone(path: Path) -> tuple[DeepLabV3Plus, dict]:
    """Load a backbone saved by :func:`save_backbone`: (model on cpu in eval mode, checkpoint dict).

    Raises:
        Zs3Error: the file is missing.
    """
    from zs3core.config import BackboneParams, parse
    from zs3core.io import Zs3Error

    if not Path(path).exists():
        raise Zs3Error(f"{path}: missing; run the train_backbone stage first (dvc repro train_backbone)")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = build_backbone(ck["num_seen"], parse(BackboneParams, ck["params"], "backbone"), pretrained=False)
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


def train_backbone(model: DeepLabV3Plus, train_loader: DataLoader, val_loader: DataLoader | None, params,
                   epochs: int, device: torch.device, ckpt: Checkpoint | None = None, on_epoch=None,
                   class_weight: torch.Tensor | None = None, dist: DistEnv = SINGLE,
                   sync_bn: bool = False) -> dict[str, list]:
    """Train with cross-entropy on seen classes; SGD, poly lr, 10x lr on the head.

    Distributed (``dist.enabled``, under torchrun; :mod:`zs3core.distributed`): the model is
    wrapped in ``DistributedDataParallel`` (gradients averaged over processes), the loaders
    come from :func:`training_loaders` with the same ``dist`` (a ``DistributedSampler`` whose
    epoch is set before each epoch; each process validates its block of the val images and
    the confusion matrices are summed), and the epoch loss is the mean over every batch of
    every process. Checkpoints hold the unwrapped model, so a run resumes with any world size.

    Args:
        model: network with ``num_seen`` outputs; targets are seen indices, 255 ignored.
        train_loader / val_loader: training batches (its ``generator`` is the shuffling RNG,
            checkpointed); validation (seen mIoU) every ``params.val_every`` epochs and at the
            last epoch (None = no validation).
        params: the ``backbone`` view (lr, head_lr_mult, momentum, weight_decay, poly_power,
            amp, channels_last, val_every).
        epochs: number of epochs. ckpt: per-epoch checkpoint; a run restarted with the same
            settings resumes after its last finished epoch. on_epoch: (epoch, values) callback
            (:func:`zs3core.loop.run_steps`).
        class_weight: (S,) float32 cross-entropy weight of each seen output
            (:func:`zs3core.balancing.class_weights`); None = unweighted.
        dist: this process's place in a distributed run. sync_bn: SyncBatchNorm (CUDA only).

    Returns:
        Per-epoch curves: loss, lr (of the last iteration), val_seen_mIoU (or None),
        val_seen_IoU (per seen output, % or None), seconds.

    Raises:
        Zs3Error: a non-finite loss (nothing is saved); ``sync_bn`` on the CPU.
    """
    model.to(device)
    if params.channels_last:
        model.to(memory_format=torch.channels_last)
    net = wrap_model(model, dist, device, sync_bn)
    opt = torch.optim.SGD(model.param_groups(params.lr, params.head_lr_mult), lr=params.lr,
                          momentum=params.momentum, weight_decay=params.weight_decay)
    total_iters = max(1, epochs * len(train_loader))
    # poly decay (DeepLab): lr_t = lr_0 (1 - t / T)^power, set before iteration t
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: (1 - t / total_iters) ** params.poly_power)
    use_amp = params.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    num_seen = model.classifier.out_channels
    weight = class_weight.float().to(device) if class_weight is not None else None

    sampler = getattr(train_loader, "sampler", None)

    def epoch_step(epoch: int) -> dict:
        net.train()
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)   # a new permutation each epoch, the same on every process
        t0, losses, lr = time.time(), [], opt.param_groups[0]["lr"]
        for img, target, _ in train_loader:
            lr = opt.param_groups[0]["lr"]
            img, target = img.to(device, non_blocking=True), target.to(device, non_blocking=True)
            if params.channels_last:
                img = img.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits = upsample_logits(net(img), target.shape[-2:])
                loss = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=255)
            require_finite(loss, f"train_backbone (epoch {epoch + 1})", len(losses) + 1)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(loss.item())
        val, val_iou = None, None
        if val_loader is not None and ((epoch + 1) % params.val_every == 0 or epoch + 1 == epochs):
            conf = seen_confusion(model, val_loader, num_seen, device, params.channels_last)
            conf = all_reduce_sum(torch.from_numpy(conf), dist).numpy()   # each process scored its block
            val = group_scores(conf, range(num_seen))["mIoU"]
            val_iou = [None if np.isnan(v) else round(float(v), 2) for v in per_class_iou(conf)]
        loss = mean_over_processes(float(np.mean(losses)) if losses else float("nan"), len(losses), dist)
        return {"loss": loss, "lr": lr, "val_seen_mIoU": val,
                "val_seen_IoU": val_iou, "seconds": time.time() - t0}

    state = {"model": model, "opt": opt, "sched": sched, "scaler": scaler}
    return run_steps(epoch_step, epochs, state, getattr(train_loader, "generator", None), ckpt, "backbone",
                     on_epoch, summary_every=1, unit="epoch")


def evenly_spaced(items: list, n: int | None) -> list:
    """At most ``n`` items spread evenly over ``items`` (all when n is None), in order."""
    if not n or n >= len(items):
        return list(items)
    return list(items[:: max(1, len(items) // n)][:n])


def training_loaders(root, train_samples, val_samples, split, params, workers: int, rng: torch.Generator,
                     device: torch.device, dist: DistEnv = SINGLE, seed: int = 0) -> tuple[DataLoader, DataLoader | None]:
    """The training loader (augmented, shuffled with ``rng``; targets are seen indices, unseen
    and void pixels 255) and the validation loader (``val_max_images`` evenly spaced images).

    Args:
        split: the trained :class:`zs3core.splits.ClassSplit`. params: the ``backbone`` view.
        dist: distributed run (:mod:`zs3core.distributed`): the training loader then draws
            from a ``DistributedSampler`` (permutation seeded by ``seed`` + epoch, so the images
            of global step t do not depend on the world size) in batches of
            ``batch_size / world_size``, and the val loader holds this process's block of the
            val images. A single process keeps the ``rng``-shuffled loader.

    Raises:
        Zs3Error: ``backbone.batch_size`` is not a multiple of the world size.
    """
    from zs3core.data.dataset import Augment, SegDataset

    common = dict(num_classes=split.num_classes, ignore_index=split.ignore_index, lut=split.train_lut())
    train_ds = SegDataset(root, train_samples, augment=Augment.from_params(params), **common)
    val_samples = evenly_spaced(val_samples, params.val_max_images)
    val_ds = SegDataset(root, block(val_samples, dist), eval_short_side=params.eval_short_side, **common)
    drop_last, pin = len(train_ds) > params.batch_size, device.type == "cuda"
    if dist.enabled:
        sampler = DistributedSampler(train_ds, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed)
        train = DataLoader(train_ds, batch_size=per_process_batch(params.batch_size, dist), sampler=sampler,
                           drop_last=drop_last, num_workers=workers, pin_memory=pin)
    else:
        train = DataLoader(train_ds, batch_size=params.batch_size, shuffle=True, drop_last=drop_last,
                           num_workers=workers, generator=rng, pin_memory=pin)
    val = DataLoader(val_ds, batch_size=1, num_workers=workers) if len(val_samples) else None
    return train, val


def epochs_for(params, batches_per_epoch: int) -> int:
    """``backbone.epochs``, or round(``backbone.iterations`` / batches per epoch) when iterations is set."""
    return max(1, round(params.iterations / batches_per_epoch)) if params.iterations else int(params.epochs)


def training_report(curves: dict, seen_names: list[str], weights, train_images: int, check_split: str = "val",
                    protocol: str = "scratch") -> dict:
    """metrics/backbone.json: the pretraining ``protocol``, final seen mIoU and per-class IoU on
    ``check_split`` (``dev`` when the split stage carved one: the figure that chooses backbone
    settings; else ``val``, a report that chooses nothing), epochs, images, final loss,
    training seconds and the class weights used."""
    final = next((v for v in reversed(curves["val_seen_mIoU"]) if v is not None), None)
    iou = next((v for v in reversed(curves["val_seen_IoU"]) if v), None)
    return {"protocol": protocol, "check_split": check_split, f"{check_split}_seen_mIoU": final,
            "epochs": len(curves["loss"]), "train_images": train_images,
            "final_loss": curves["loss"][-1], "train_seconds": round(sum(curves["seconds"]), 1),
            "class_weights": {c: round(float(w), 4) for c, w in zip(seen_names, weights)},
            f"{check_split}_seen_IoU": dict(zip(seen_names, iou)) if iou else None}
