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


THREADS_ENV = "ZS3_THREADS"


def set_threads() -> None:
    """Set torch's intra-op thread count for this stage process.

    Order of precedence:

    1. ``ZS3_THREADS`` (a positive integer), when set. Use it when several heavy jobs share the
       cores, e.g. ``ZS3_THREADS=1 dvc queue start -j 2`` on 2 cores: two stages that each
       run 2 threads on 2 cores oversubscribe them: each ran 12 (two pipeline fits) to 27
       (``benchmarks/threads.py``) times slower, not 2 (RESULTS.md, "Two jobs on two cores").
    2. Under torchrun, ``OMP_NUM_THREADS`` when set: torchrun sets it to 1 per process when it
       starts several, so that the processes do not oversubscribe the cores.
    3. Otherwise every core this process may run on.

    CPU results are deterministic for a fixed thread count; another count can change float
    reductions in the last bits, so compare metrics between runs with the same count.

    Raises:
        Zs3Error: ``ZS3_THREADS`` is not a positive integer.
    """
    from zs3core.distributed import launched_by_torchrun
    from zs3core.io import Zs3Error

    wanted = os.environ.get(THREADS_ENV)
    if wanted is not None:
        if not wanted.strip().isdigit() or int(wanted) < 1:
            raise Zs3Error(f"{THREADS_ENV}={wanted!r}: give a positive integer (threads per stage process), "
                           "or unset it to use every core")
        torch.set_num_threads(int(wanted))
    elif not (launched_by_torchrun() and "OMP_NUM_THREADS" in os.environ):
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))


def config_hash(obj) -> str:
    """Short stable hash of a JSON-able settings object (identifies a resumable run)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
