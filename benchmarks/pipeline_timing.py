"""Run the pipeline and print per-stage wall times, the feature cache size and the metrics table.

Usage (from the repository root):

    python benchmarks/pipeline_timing.py -S source=local          # the main job (CamVid, cpu, K=2) on local data
    python benchmarks/pipeline_timing.py -S +experiment=camvid_cpu_k4 -S source=local
    python benchmarks/pipeline_timing.py --force        # dvc repro -f on the current params.yaml
    python benchmarks/pipeline_timing.py --report-only  # just print the tables of the workspace

Each stage prints "[name] done in N s" (zs3core/stage.py); this script collects those lines.
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def metrics_table(path: Path = Path("metrics/evaluate.json")) -> pd.DataFrame:
    """Rows: model x split; columns: (group, metric) and hIoU, in %."""
    m = json.loads(path.read_text())
    rows = {}
    for split, models in m.items():
        for model, sc in models.items():
            if not isinstance(sc, dict) or "seen" not in sc:
                continue
            for name, s in ((model, sc), (f"{model} (calibrated)", sc.get("calibrated"))):
                if s:
                    row = {f"{g} {k}": s[g][k] for g in ("seen", "unseen", "all") for k in ("PA", "MA", "mIoU")}
                    row["hIoU"] = s["hIoU"]
                    rows[(split, name)] = row
    return pd.DataFrame(rows).T.round(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-S", "--set-param", action="append", default=[], help="Hydra override passed to dvc exp run")
    ap.add_argument("-n", "--name", help="experiment name (dvc exp run -n)")
    ap.add_argument("--force", action="store_true", help="dvc repro -f instead of dvc exp run")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()
    times: dict[str, float] = {}
    if not a.report_only:
        cmd = ["dvc", "repro", "-f"] if a.force else ["dvc", "exp", "run", *(["-n", a.name] if a.name else []),
                                                      *[x for s in a.set_param for x in ("-S", s)]]
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            mt = re.search(r"\[(\w+)\] done in ([\d.]+) s", line)  # "..., peak RSS N MB" follows
            if mt:
                times[mt.group(1)] = float(mt.group(2))
                print(f"  {mt.group(1):<20s} {float(mt.group(2)):7.1f} s", flush=True)
        rc = proc.wait()
        total = time.time() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if rc:
            sys.exit(f"{' '.join(cmd)} failed with status {rc}")
        print("\nper-stage wall time (s), stage code only (DVC bookkeeping adds the rest):")
        print(pd.Series(times, name="seconds").round(1).to_string())
        print(f"\ntotal wall time: {total:.1f} s ({total / 60:.1f} min); peak RSS of one stage: {peak:.0f} MB")
    feats = Path("metrics/features.json")
    if feats.exists():
        f = json.loads(feats.read_text())
        print(f"feature cache: {f['cache_mb']} MB ({f['labelled_pixels']} labelled + {f['pool_pixels']} pool pixels)")
    for name in ("split", "backbone", "retrain", "calibration", "self_train"):
        p = Path(f"metrics/{name}.json")
        if p.exists():
            print(f"{name}: {p.read_text().strip()}")
    if Path("metrics/evaluate.json").exists():
        print("\n" + metrics_table().to_string())


if __name__ == "__main__":
    main()
