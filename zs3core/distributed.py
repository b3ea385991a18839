"""Multi-process training and extraction with ``torch.distributed`` (DDP), launched by ``torchrun``.

Nothing here imports torch at module level: the light stages (``source_stamp``) import this
module through :mod:`zs3core.stage` on every ``dvc repro``.

A stage started by ``torchrun --nproc_per_node N -m stages.<name>`` (or by ``dvc repro`` when
``scale.launcher: torchrun``, see :mod:`zs3core.launch`) finds torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and joins the process group: ``nccl`` on CUDA
(one GPU per process, ``cuda:LOCAL_RANK``), ``gloo`` on the CPU. Without that environment
everything here is a no-op and a stage runs as a single process, exactly as before.

What each distributed stage does (the rules of PyTorch's DDP tutorial and
``torch.nn.parallel.DistributedDataParallel``'s documentation):

* every process seeds alike, so the models start identical (DDP also broadcasts rank 0's
  weights when it wraps the model);
* ``train_backbone``: the global batch ``backbone.batch_size`` is split over the processes
  (``batch_size / world_size`` each) and ``torch.utils.data.DistributedSampler`` gives each
  process its share of one permutation per epoch (``seed + epoch``), so that the images of
  global step *t* are the same for any world size; DDP averages the gradients;
  ``scale.sync_bn`` turns BatchNorm into ``SyncBatchNorm`` (CUDA only);
* ``extract_features``: each process takes a contiguous block of images and writes its part
  of the cache; rank 0 concatenates the parts in image order;
* only rank 0 writes outputs, checkpoints and logs; checkpoints hold the unwrapped model, so
  a run resumes with any world size.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in a distributed run.

    Attributes:
        rank: global rank (0 = the process that writes outputs). world_size: processes.
        local_rank: rank on this machine (picks the GPU). enabled: a process group is
            initialised (True under torchrun, also with one process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        """True for the process that writes outputs, checkpoints and logs."""
        return self.rank == 0


SINGLE = DistEnv()
"""A single process without a process group (plain ``python -m stages.<name>``)."""


def launched_by_torchrun(environ=os.environ) -> bool:
    """True when torchrun's variables ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` are all set."""
    return all(k in environ for k in ENV_KEYS)


def init_from_env(device: torch.device) -> tuple[DistEnv, torch.device]:
    """Join torchrun's process group when launched by it; otherwise return (:data:`SINGLE`, device).

    Args:
        device: the stage's device (``scale.device``). On CUDA each process takes
            ``cuda:LOCAL_RANK`` and the ``nccl`` backend; on the CPU, ``gloo``.

    Returns:
        (DistEnv, the device this process uses).

    Raises:
        RuntimeError: more processes on this machine than visible GPUs.
    """
    import torch
    import torch.distributed as dist

    if not launched_by_torchrun():
        return SINGLE, device
    rank, world, local = (int(os.environ[k]) for k in ENV_KEYS)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} visible GPU(s): "
                               "use --nproc_per_node <= the GPU count (or set CUDA_VISIBLE_DEVICES)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank, world, local, True), device


def shutdown(env: DistEnv) -> None:
    """Leave the process group (after a final barrier)."""
    import torch.distributed as dist

    if env.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    """Wait for every process (no-op for a single process)."""
    import torch.distributed as dist

    if env.enabled:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """The element-wise sum of ``t`` over processes (``t`` itself for a single process).
    Works on a CPU copy for ``gloo``; returns a tensor of ``t``'s dtype on ``t``'s device."""
    import torch.distributed as dist

    if not env.enabled or env.world_size == 1:
        return t
    buf = (t.detach().cpu() if dist.get_backend() == "gloo" else t.detach()).clone()
    dist.all_reduce(buf)
    return buf.to(t.device)


def mean_over_processes(value: float, weight: float, env: DistEnv) -> float:
    """Weighted mean of one scalar per process: sum(value * weight) / sum(weight).

    Used for epoch losses: each process passes its mean loss and its number of batches, so
    the result is the mean loss over every batch of every process."""
    import torch

    if not env.enabled or env.world_size == 1:
        return float(value)
    s = all_reduce_sum(torch.tensor([value * weight, weight], dtype=torch.float64), env)
    return float(s[0] / s[1]) if s[1] > 0 else float("nan")


def block(items: list, env: DistEnv) -> list:
    """This process's contiguous share of ``items`` (ranks in order cover them in order).

    >>> block(list(range(5)), DistEnv(rank=1, world_size=2, enabled=True))
    [3, 4]
    """
    n, w, r = len(items), env.world_size, env.rank
    lo, hi = (n * r + w - 1) // w, (n * (r + 1) + w - 1) // w
    return list(items[lo:hi])


def per_process_batch(batch_size: int, env: DistEnv) -> int:
    """``batch_size`` (the global batch) divided over the processes.

    Raises:
        Zs3Error: the global batch is not a multiple of the world size (naming
            ``backbone.batch_size``).
    """
    from zs3core.io import Zs3Error

    if batch_size % env.world_size:
        raise Zs3Error(f"backbone.batch_size: the global batch {batch_size} must be a multiple of the number of "
                       f"processes ({env.world_size}); each process takes batch_size / world_size images")
    return batch_size // env.world_size


def sync_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every BatchNorm turned into its synchronised variant (in place below the
    non-BN root): timm's ``convert_sync_batchnorm``, which also keeps the activation of timm's
    fused ``BatchNormAct2d`` (EfficientNet-Lite bodies) where torch's
    ``SyncBatchNorm.convert_sync_batchnorm`` would drop it; plain BatchNorm becomes
    ``torch.nn.SyncBatchNorm`` either way."""
    from timm.layers import convert_sync_batchnorm

    return convert_sync_batchnorm(model)


def wrap_model(model: torch.nn.Module, env: DistEnv, device: torch.device, sync_bn: bool = False) -> torch.nn.Module:
    """The module to call in training: ``DistributedDataParallel(model)`` when distributed
    (parameters and checkpoints stay on ``model``), ``model`` itself otherwise.

    Args:
        sync_bn: convert BatchNorm layers to ``torch.nn.SyncBatchNorm`` first (in place;
            statistics over the global batch).

    Raises:
        Zs3Error: ``sync_bn`` on the CPU (PyTorch's SyncBatchNorm runs on GPUs only).
    """
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from zs3core.io import Zs3Error

    if not env.enabled:
        return model
    if sync_bn:
        if device.type != "cuda":
            raise Zs3Error("scale.sync_bn: SyncBatchNorm needs CUDA; set scale.sync_bn=false on the CPU")
        model = sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def decorrelate_ranks(seed: int, env: DistEnv) -> None:
    """Reseed torch's global RNG with ``seed + rank`` on every process of a distributed run, so
    that the processes draw different augmentations and dropout masks (call it after the model
    is built: DDP broadcasts rank 0's weights anyway). No-op for a single process, whose random
    stream stays that of a run without torchrun."""
    import torch

    if env.enabled:
        torch.manual_seed(seed + env.rank)


def resume_settings(params: dict, env: DistEnv) -> dict:
    """The params that bind a training checkpoint, without the launcher settings: a run
    resumes under torchrun with another world size (the sampler's permutation depends on the
    seed and the epoch only). Whether the run is distributed still counts: a single-process
    run shuffles with another sampler."""
    scale = {k: v for k, v in params.get("scale", {}).items() if k not in ("launcher", "nproc_per_node")}
    return {**params, "scale": scale, "distributed": env.enabled}
