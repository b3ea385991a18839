"""Seconds per class-wise MMD step (forward + backward), batched vs class by class.

The GMMN's Adam step (zs3core/generators/gmmn.py) evaluates :meth:`zs3core.mmd.MMDLoss.classwise`
on ``samples_per_class`` real and generated features of each seen class. This prints the time
of that loss with its backward for the batched path and for a plain loop over classes
(:meth:`MMDLoss.class_loss` per class), and the largest difference of the two losses.

    python benchmarks/mmd_speed.py [--classes 9] [--n 128] [--dim 128] [--repeats 200]

Time it alone: a second job on the same cores changes the figures.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zs3core.mmd import MMDLoss  # noqa: E402


def loop_loss(loss: MMDLoss, real, rl, fake, fl) -> torch.Tensor:
    return sum(loss.class_loss(real[rl == c], fake[fl == c]) for c in torch.unique(fl).tolist())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=9)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args()
    torch.manual_seed(0)
    labels = torch.arange(a.classes).repeat_interleave(a.n)
    real = torch.rand(len(labels), a.dim) * 3
    loss = MMDLoss("official", (2.0, 5.0, 10.0, 20.0, 40.0, 80.0))
    for name, fn in (("batched", loss.classwise), ("loop", lambda *t: loop_loss(loss, *t))):
        fake = torch.rand(len(labels), a.dim, requires_grad=True)
        t0 = time.perf_counter()
        for _ in range(a.repeats):
            out = fn(real, labels, fake, labels)
            out.backward()
        dt = (time.perf_counter() - t0) / a.repeats
        print(f"{name:8s} {a.classes} classes x {a.n} x {a.dim}-d: {1000 * dt:.2f} ms per loss + backward (loss {float(out):.6f})")


if __name__ == "__main__":
    main()
