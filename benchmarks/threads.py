"""Several heavy jobs on few cores: seconds per generator step, by jobs at once and threads per job.

Usage (from the repository root; run it alone on the machine):

    python benchmarks/threads.py                          # 1 job x all cores, 2 jobs x all cores, 2 jobs x 1 thread
    python benchmarks/threads.py --steps 60 --generator gmmn
    python benchmarks/threads.py --setups 1x2 2x2 2x1     # JOBSxTHREADS

Each job is a separate process that fits the chosen generator (``conf/generator/<name>.yaml``,
the cpu scale's 128-d features) to random features for ``--steps`` steps, with
``ZS3_THREADS`` set as the setup asks (:func:`zs3core.runtime.set_threads`), after 5 warm-up
steps. The figure is wall seconds per step of each job: with J jobs at once each job
advances at that rate, so J jobs finish J experiments in that time per step.

What it answers: ``dvc queue start -j 2`` on a 2-core machine runs two stages at once. Each
stage uses every core by default, so 4 threads compete for 2 cores (RESULTS.md, "Two jobs on
two cores").
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def job(generator: str, steps: int) -> None:
    """One job: build and fit the generator on random features, print 's/step=<float>'."""
    from dataclasses import replace

    import torch
    import yaml

    from zs3core.compose import compose
    from zs3core.config import config_from_dict
    from zs3core.generators import KINDS
    from zs3core.generators.base import FitData
    from zs3core.runtime import seed_everything, set_threads

    set_threads()
    cfg = config_from_dict(yaml.safe_load(compose(["scale=cpu", f"generator={generator}"], config_dir=ROOT / "conf")))
    rng = seed_everything(0)
    d_x, d_a, seen, unseen = cfg.backbone.feature_dim, 100, list(range(9)), [9, 10]
    labels = torch.arange(9).repeat_interleave(400)
    feats = torch.rand(len(labels), d_x, generator=rng).relu().half()
    data = FitData(feats, labels, torch.zeros_like(labels), torch.randn(11, d_a, generator=rng), {}, ())
    kind = KINDS[cfg.generator.kind]
    gen = kind.build(cfg.generator, d_a, d_x)
    warm = 5
    t0 = 0.0

    def on_step(i: int, _values: dict) -> None:
        nonlocal t0
        if i == warm:   # on_step gets the number of steps done
            t0 = time.perf_counter()

    kind.fit(gen, data, seen, replace(cfg.generator, steps=warm + steps), rng, torch.device("cpu"), unseen=unseen,
             on_step=on_step)
    t1 = time.perf_counter()
    print(f"s/step={(t1 - t0) / steps:.4f} threads={torch.get_num_threads()}", flush=True)


def setup(jobs: int, threads: int, generator: str, steps: int) -> list[float]:
    env = dict(os.environ, ZS3_THREADS=str(threads), PYTHONPATH=str(ROOT), TQDM_DISABLE="1")
    procs = [subprocess.Popen([sys.executable, __file__, "--job", "--generator", generator, "--steps", str(steps)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(jobs)]
    out = []
    for p in procs:
        o, e = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"job failed ({p.returncode}):\n{e[-2000:]}")
        out.append(float(o.split("s/step=")[1].split()[0]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="pading", help="conf/generator/<name>.yaml (default: pading)")
    ap.add_argument("--steps", type=int, default=40, help="timed steps per job (after 5 warm-up steps)")
    cores = len(os.sched_getaffinity(0))
    ap.add_argument("--setups", nargs="+", default=[f"1x{cores}", f"2x{cores}", "2x1"],
                    help="JOBSxTHREADS settings to time, in order")
    ap.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.job:
        job(a.generator, a.steps)
        return
    print(f"{cores} cores; generator {a.generator}; {a.steps} timed steps per job")
    print(f"{'jobs':>4} {'threads/job':>11} {'s/step per job':>15} {'steps/s, all jobs':>18}")
    for s in a.setups:
        jobs, threads = (int(x) for x in s.split("x"))
        rates = setup(jobs, threads, a.generator, a.steps)
        print(f"{jobs:>4} {threads:>11} {max(rates):>15.3f} {sum(1 / r for r in rates):>18.2f}", flush=True)


if __name__ == "__main__":
    main()
