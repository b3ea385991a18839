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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--epochs", type=int, default=2, help="backbone epochs (cost proportional to images)")
    ap.add_argument("-S", "--set-param", action="append", default=[], help="extra Hydra override")
    ap.add_argument("--until", help="last stage to run (e.g. extract_features: the stages whose cost depends on the "
                                    "number of training images; later ones run a fixed number of steps on a fixed val set)")
    a = ap.parse_args()
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
