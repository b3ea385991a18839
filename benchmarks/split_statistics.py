"""Split statistics at full scale: what the ``drop`` filter leaves of Pascal VOC train_aug for each K.

For every preset K of ``conf/dataset/voc2012.yaml`` (cumulative unseen sets, ZS3Net §3.1) it
reports how many of the 10,582 train_aug images keep no pixel of the K unseen classes (the
labelled training set under ``split.filter=drop``) and how many contain one (the unlabelled
pool of ZS5Net self-training), plus the time taken. Every mask is read once, with the
project's own ``read_label`` (value check included) and ``pixel_counts``; the filter is
``filter_training`` on those counts, exactly as the split stage does.

Usage (repository root; the labels are ``../shared/data/voc2012-labels``, masks only):

    python benchmarks/split_statistics.py                 # 2 worker processes
    python benchmarks/split_statistics.py --workers 1 --labels /data/VOCdevkit/VOC2012
"""
from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from zs3core.compose import compose  # noqa: E402
from zs3core.data.layouts import Sample, find_root, list_samples, read_label  # noqa: E402
from zs3core.splits import filter_training, pixel_counts, resolve_unseen  # noqa: E402


def _counts(sample: Sample, root: Path, num_classes: int, ignore: int) -> np.ndarray:
    return pixel_counts(read_label(root, sample, num_classes, ignore), num_classes)


def read_counts(root: Path, samples: list[Sample], num_classes: int, ignore: int, workers: int) -> np.ndarray:
    """(N, C) int64 class pixel counts, one mask read per sample, in ``samples`` order."""
    fn = functools.partial(_counts, root=root, num_classes=num_classes, ignore=ignore)
    bar = {"total": len(samples), "desc": "read masks", "unit": "mask", "mininterval": 1.0}
    if workers <= 1:
        rows = [fn(s) for s in tqdm(samples, **bar)]
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            rows = list(tqdm(pool.imap(fn, samples, chunksize=64), **bar))
    return np.stack(rows).astype(np.int64)


def statistics(counts: np.ndarray, classes: list[str], presets: dict) -> pd.DataFrame:
    """One row per preset K: unseen classes, kept (labelled) and pool images under ``drop``."""
    rows, previous = [], set()
    for k in sorted(presets, key=int):
        unseen = resolve_unseen(classes, presets, int(k), [])
        t0 = time.perf_counter()
        kept = filter_training(counts, unseen, "drop")
        dt = time.perf_counter() - t0
        names = [classes[u] for u in unseen]
        rows.append({"K": int(k), "unseen added": ", ".join(n for n in presets[k] if n not in previous),
                     "kept (labelled)": int(kept.sum()), "pool (unlabelled)": int((~kept).sum()),
                     "kept %": round(100.0 * kept.mean(), 1), "filter ms": round(1000 * dt, 2)})
        previous |= set(names)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", default=str(REPO / ".." / "shared" / "data" / "voc2012-labels"),
                    help="VOC folder with SegmentationClassAug/ and ImageSets/Segmentation/train_aug.txt")
    ap.add_argument("--workers", type=int, default=2, help="processes reading masks (default 2)")
    a = ap.parse_args()
    p = yaml.safe_load(compose(["dataset=voc2012"], config_dir=REPO / "conf"))
    classes, ignore = p["dataset"]["classes"], int(p["dataset"]["ignore_index"])
    presets = p["dataset"]["split_presets"]
    labels = Path(a.labels).resolve()
    if not labels.is_dir():
        sys.exit(f"{labels}: not found (give --labels: a VOC folder with SegmentationClassAug/ and train_aug.txt)")
    root = find_root(labels, "voc")
    t0 = time.perf_counter()
    samples = list_samples(root, "voc", "train", use_aug=True)
    if not all(s.label.startswith("SegmentationClassAug/") for s in samples):
        sys.exit(f"{root}: no train_aug.txt + SegmentationClassAug/ (the aug layout); nothing to measure")
    t_list = time.perf_counter() - t0
    t0 = time.perf_counter()
    counts = read_counts(root, samples, len(classes), ignore, a.workers)
    t_read = time.perf_counter() - t0
    df = statistics(counts, classes, presets)
    print(f"\n`python benchmarks/split_statistics.py --workers {a.workers}`: {len(samples)} train_aug masks "
          f"under {root}, split.filter=drop\n")
    print(df.to_markdown(index=False))
    print(f"\nlist {t_list:.2f} s; read + count {len(samples)} masks {t_read:.1f} s "
          f"({len(samples) / t_read:.0f} masks/s, {a.workers} worker(s)); "
          f"filter for all {len(df)} K {df['filter ms'].sum():.1f} ms")


if __name__ == "__main__":
    main()
