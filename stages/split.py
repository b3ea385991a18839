"""Stage 2, split: seen/unseen classes, the training-image filter and the manifest.

Reads every label map once (checking values and image/label sizes), counts class pixels per
image, keeps or drops training images (``split.filter``), and writes
``data/split/manifest.csv`` (one row per image), ``data/split/classes.json`` and
``metrics/split.json`` (with ``drop_by_k``: for every preset K, how many training images the
``drop`` filter keeps and how many go to the unlabelled pool, from the counts already read).
"""
from __future__ import annotations

import sys

import numpy as np
from tqdm import tqdm

from stages.common import CLASSES, MANIFEST, params, raw_root, run
from zs3core.data.layouts import (
    check_same_size,
    has_split,
    image_size,
    list_samples,
    read_label,
)
from zs3core.io import StageOutputs, Zs3Error
from zs3core.params import get
from zs3core.splits import (
    ClassSplit,
    build_manifest,
    drop_by_k,
    filter_training,
    pixel_counts,
    resolve_unseen,
)


def main() -> None:
    p = params()
    root = raw_root(p)
    classes = list(get(p, "dataset.classes", types=list))
    ignore = int(get(p, "dataset.ignore_index"))
    unseen = resolve_unseen(classes, get(p, "dataset.split_presets", {}), get(p, "split.k", None),
                            get(p, "split.unseen", []))
    oracle = get(p, "split.filter") == "oracle"
    # oracle: every class is trained on, so the written split has no unseen class and does not
    # depend on K (DVC then reuses one oracle backbone for every K); evaluate groups by the preset
    cs = ClassSplit(tuple(classes), () if oracle else unseen, ignore)
    layout, use_aug = get(p, "dataset.layout"), bool(get(p, "dataset.use_aug", False))
    train_split = get(p, "dataset.train_split", "train")
    eval_splits = [s for s in get(p, "evaluation.splits", ["val"]) if s != train_split]
    for s in eval_splits:
        if not has_split(root, layout, s):
            raise Zs3Error(f"evaluation.splits: the dataset at {root} has no '{s}' list")
    limits = {train_split: get(p, "scale.max_train_images", None)}
    frames = []
    train_counts = np.zeros((0, len(classes)), dtype=np.int64)
    for split in [train_split] + eval_splits:
        smp = list_samples(root, layout, split, use_aug)
        lim = limits.get(split, get(p, "scale.max_eval_images", None))
        if lim:
            smp = smp[: int(lim)]
        counts = np.zeros((len(smp), len(classes)), dtype=np.int64)
        for n, s in enumerate(tqdm(smp, desc=f"split: read {split} labels")):
            lab = read_label(root, s, len(classes), ignore)
            w, h = image_size(root, s)
            check_same_size(root, s, (h, w), lab.shape)
            counts[n] = pixel_counts(lab, len(classes))
        kept = filter_training(counts, unseen, get(p, "split.filter")) if split == train_split else None
        if split == train_split:
            train_counts = counts
        frames.append(build_manifest(smp, counts, classes, kept))
    import pandas as pd

    df = pd.concat(frames, ignore_index=True)
    train = df[df.split == train_split]
    n_kept = int((train.status == "kept").sum())
    metrics = {
        "unseen": [classes[u] for u in unseen],
        "k": len(unseen),
        "filter": get(p, "split.filter"),
        "train_images": len(train),
        "oracle": oracle,
        "kept": n_kept,
        "dropped_to_pool": int((train.status == "dropped").sum()),
        "eval_images": {s: int((df.split == s).sum()) for s in eval_splits},
        "drop_by_k": drop_by_k(train_counts, classes, get(p, "dataset.split_presets", {}) or {}),
    }
    if n_kept < int(get(p, "split.min_kept_warning", 20)):
        bar = "!" * 78
        print(f"{bar}\nWARNING: only {n_kept} training images keep no unseen pixel; the seen-class "
              f"backbone will be weak.\nConsider split.filter=ignore or a smaller K.\n{bar}", file=sys.stderr)
    with StageOutputs() as out:
        df.to_csv(out.path(MANIFEST), index=False)
        out.json(CLASSES, cs.to_dict())
        out.json("metrics/split.json", metrics)
    print(metrics)


if __name__ == "__main__":
    run(main)
