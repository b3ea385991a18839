"""Run helpers every stage shares: seeding, device choice, CPU threads, a settings hash."""
from __future__ import annotations

import hashlib
import json
import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU ``torch.Generator`` (the stage's ``rng``) seeded alike."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cpu' / 'cuda' / 'cuda:N' as given.

    Raises:
        RuntimeError: CUDA asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("scale.device is 'cuda' but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def set_threads() -> None:
    """Use every core this process may run on for intra-op parallelism (deterministic on CPU for
    a fixed count). Under torchrun, ``OMP_NUM_THREADS`` wins when set: torchrun sets it to 1 per
    process when it starts several, so that the processes do not oversubscribe the cores."""
    from zs3core.distributed import launched_by_torchrun

    if not (launched_by_torchrun() and "OMP_NUM_THREADS" in os.environ):
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))


def config_hash(obj) -> str:
    """Short stable hash of a JSON-able settings object (identifies a resumable run)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
