"""Cost as the data grows: the `cpu` pipeline on 25 %, 50 % and 100 % of the CamVid training images.

For each fraction it runs ``dvc exp run`` (a named experiment ``scaling-<pct>``) and prints,
per stage, wall time, peak resident memory and time per training image, plus the feature
cache size per image. A stage whose cost grows linearly (or better) with the data has a
roughly constant (or falling) "s / image" column.

The backbone runs a fixed number of *epochs* here (``--epochs``, default 2) instead of the
`cpu` scale's fixed iteration budget, so that its cost depends on the data size; the
``ignore`` protocol keeps every selected image labelled (K = 4 unseen classes).

Usage (repository root, ../shared/data present):

    python benchmarks/scaling.py                      # 25, 50, 100 %
    python benchmarks/scaling.py --fractions 0.25 1.0 --epochs 1
    python benchmarks/scaling.py --until extract_features   # only the data-dependent stages
    python benchmarks/scaling.py --cache              # the feature cache alone (minutes, no training)
    python benchmarks/scaling.py --cache --legacy-tree /tmp/old   # the same with an older checkout's code
    python benchmarks/scaling.py --cache -S features.pixels_per_class=1000 -S features.pool_pixels_per_image=5120

``--cache`` measures the feature cache without DVC or training: for each fraction a fresh
process runs the cpu-scale backbone (random weights: memory and sizes do not depend on them)
over that share of the CamVid training images (``ignore``, K = 4: every image labelled and
in the pool), writes both caches, then reopens them as the later stages do and draws a
GMMN-style batch. It prints the peak resident memory of each phase, the cache size per
image and a projection to Pascal VOC (10,582 train_aug images) and Pascal Context (4,998).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

import pandas as pd

CAMVID_TRAIN = 367
LINE = re.compile(r"\[(\w+)\] done in ([\d.]+) s, peak RSS (\d+) MB")


def run_fraction(frac: float, epochs: int, extra: list[str], until: str | None) -> tuple[list[dict], dict]:
    n = max(1, round(frac * CAMVID_TRAIN))
    name = f"scaling-{round(100 * frac)}"
    cmd = ["dvc", "exp", "run", "-f", "-n", name, "-S", "dataset=camvid", "-S", "scale=cpu", "-S", "source=local",
           "-S", "split.k=4", "-S", "split.filter=ignore", "-S", f"scale.max_train_images={n}",
           "-S", "backbone.iterations=null", "-S", f"backbone.epochs={epochs}", *[x for s in extra for x in ("-S", s)],
           *([until] if until else [])]
    print(f"\n== {round(100 * frac)} % ({n} training images): {' '.join(cmd)}", flush=True)
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rows = []
    assert proc.stdout is not None
    for line in proc.stdout:
        m = LINE.search(line)
        if m:
            rows.append({"fraction": frac, "images": n, "stage": m.group(1), "seconds": float(m.group(2)),
                         "peak_MB": int(m.group(3))})
            print(f"  {m.group(1):<20s} {float(m.group(2)):7.1f} s  {int(m.group(3)):6d} MB", flush=True)
    if proc.wait():
        sys.exit(f"{' '.join(cmd)} failed")
    feats = json.loads(open("metrics/features.json").read())
    return rows, {"fraction": frac, "images": n, "total_s": round(time.time() - t0, 1), "cache_MB": feats["cache_mb"],
                  "cache_MB_per_image": round(feats["cache_mb"] / n, 3)}


CHILD = r"""
import inspect, json, resource, sys, time
from pathlib import Path
import torch, yaml
from zs3core.backbone import build_backbone
from zs3core.compose import compose
from zs3core.config import config_from_dict
from zs3core.data.dataset import SegDataset
from zs3core.data.layouts import list_samples
from zs3core import features as F

n, out, data = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
cfg = config_from_dict(yaml.safe_load(compose(["scale=cpu", *sys.argv[5:]], config_dir=sys.argv[4])))
torch.manual_seed(0)
seen = [0, 1, 2, 3, 5, 6, 9]                     # CamVid K=4: car, pavement, fence, bicyclist unseen
ds = SegDataset(data, list_samples(data, "camvid", "train")[:n], 11, 11, eval_short_side=cfg.backbone.eval_short_side)
model = build_backbone(len(seen), cfg.backbone, pretrained=False)
rows = list(range(n))
t0 = time.time()
if "labelled_dir" in inspect.signature(F.extract).parameters:        # sharded, streamed cache (this checkout)
    F.extract(model, ds, rows, seen, cfg.features.pixels_per_class, rows, cfg.features.pool_pixels_per_image,
              torch.Generator().manual_seed(0), torch.device("cpu"), out / "labelled", out / "pool", [], True)
    paths = [out / "labelled" / F.FEATURES_FILE, out / "pool" / F.FEATURES_FILE]
    opener = lambda name: F.load_cache(out / name)
else:                                                                 # older checkouts: in memory, one torch.save
    lab, pool, maps = F.extract(model, ds, rows, seen, cfg.features.pixels_per_class, rows,
                                cfg.features.pool_pixels_per_image, torch.Generator().manual_seed(0),
                                torch.device("cpu"), True)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(lab, out / "labelled.pt"); torch.save(pool, out / "pool.pt")
    del lab, pool
    paths = [out / "labelled.pt", out / "pool.pt"]
    opener = lambda name: F.load_cache(out / f"{name}.pt")
extract_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
seconds = time.time() - t0
print(json.dumps({"images": n, "extract_peak_MB": round(extract_peak), "extract_s": round(seconds, 1),
                  "cache_MB": round(sum(p.stat().st_size for p in paths) / 2**20, 2)}))
"""

READER = r"""
import json, resource, sys
from pathlib import Path
import torch
from zs3core import features as F
out = Path(sys.argv[1])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
lab = F.load_cache(out / "labelled") if (out / "labelled").is_dir() else F.load_cache(out / "labelled.pt")
g = torch.Generator().manual_seed(0)
for c in torch.unique(lab["labels"]).tolist():                      # a GMMN step: 64 features per class
    idx = torch.nonzero(lab["labels"] == c).squeeze(1)
    x = lab["features"][idx[torch.randperm(len(idx), generator=g)[:64]]].float()
print(json.dumps({"read_peak_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "read_base_MB": round(base)}))
"""


def cache_scaling(fractions: list[float], legacy_tree: str | None, overrides: list[str]) -> None:
    """The ``--cache`` measurement (module docstring); ``legacy_tree``: run an older checkout's
    code; ``overrides``: Hydra overrides of the sampling (e.g. ``features.pixels_per_class=1000``)."""
    import os
    import tempfile
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    tree = Path(legacy_tree).resolve() if legacy_tree else repo
    data = (repo / ".." / "shared" / "data" / "camvid").resolve()
    env = {**os.environ, "PYTHONPATH": str(tree), "MPLBACKEND": "Agg"}
    rows = []
    for f in fractions:
        n = max(1, round(f * CAMVID_TRAIN))
        with tempfile.TemporaryDirectory(dir=repo) as tmp:
            r = subprocess.run([sys.executable, "-c", CHILD, str(n), tmp, str(data), str(tree / "conf"), *overrides], env=env,
                               capture_output=True, text=True, cwd=tree)
            if r.returncode:
                sys.exit(r.stderr[-3000:])
            row = json.loads(r.stdout.strip().splitlines()[-1])
            r = subprocess.run([sys.executable, "-c", READER, tmp], env=env, capture_output=True, text=True, cwd=tree)
            if r.returncode:
                sys.exit(r.stderr[-3000:])
            row.update(json.loads(r.stdout.strip().splitlines()[-1]))
        row["fraction"] = f
        row["MB_per_image"] = round(row["cache_MB"] / n, 4)
        rows.append(row)
        print(row, flush=True)
    df = pd.DataFrame(rows).set_index("fraction")
    pd.set_option("display.width", 200)
    print(f"\nfeature cache ({tree}):")
    print(df.to_string())
    per = df.MB_per_image.iloc[-1]
    print("\nprojection (cache size = MB per image x images; the peak of the streamed writer does not grow with it):")
    for name, n in (("Pascal VOC train_aug", 10582), ("Pascal Context train", 4998)):
        print(f"  {name:<22s} {n:6d} images x {per:.4f} MB = {per * n / 1024:.2f} GB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", action="store_true", help="measure the feature cache alone (no DVC, no training)")
    ap.add_argument("--legacy-tree", help="with --cache: a checkout of older code to measure instead")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--epochs", type=int, default=2, help="backbone epochs (cost proportional to images)")
    ap.add_argument("-S", "--set-param", action="append", default=[], help="extra Hydra override")
    ap.add_argument("--until", help="last stage to run (e.g. extract_features: the stages whose cost depends on the "
                                    "number of training images; later ones run a fixed number of steps on a fixed val set)")
    a = ap.parse_args()
    if a.cache:
        cache_scaling(a.fractions, a.legacy_tree, a.set_param)
        return
    rows, totals = [], []
    for f in a.fractions:
        r, t = run_fraction(f, a.epochs, a.set_param, a.until)
        rows += r
        totals.append(t)
    df = pd.DataFrame(rows)
    df["s_per_image"] = df.seconds / df.images
    pd.set_option("display.width", 200)
    print("\nwall time per stage (s):")
    print(df.pivot(index="stage", columns="images", values="seconds").round(1).to_string())
    print("\ntime per training image (s / image):")
    print(df.pivot(index="stage", columns="images", values="s_per_image").round(3).to_string())
    print("\npeak RSS per stage (MB):")
    print(df.pivot(index="stage", columns="images", values="peak_MB").to_string())
    print("\ntotals and feature cache:")
    print(pd.DataFrame(totals).to_string(index=False))


if __name__ == "__main__":
    main()
