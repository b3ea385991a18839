"""Stage split: seen/unseen classes, the training-image filter and the manifest (ZS3Net §3.1).

Reads every label map once (values and image/label sizes checked, :func:`zs3core.splits.scan_labels`),
keeps or drops training images (``split.filter``) and writes data/split/manifest.csv (one row per
image with its class pixel counts), data/split/classes.json and metrics/split.json (with
``drop_by_k``: for every preset K, how many training images ``drop`` keeps and pools).
"""
from __future__ import annotations

import sys
from pathlib import Path

from zs3core.stage import run
from zs3core.data.layouts import find_root, list_samples, require_splits
from zs3core.splits import (ClassSplit, build_manifest, carve_dev, drop_by_k, filter_training, resolve_unseen, scan_labels,
                            split_summary)

RAW, MANIFEST, CLASSES = Path("data/raw"), Path("data/split/manifest.csv"), Path("data/split/classes.json")


def main(st) -> None:
    d, s, sc = st.cfg.dataset, st.cfg.split, st.cfg.scale
    root, classes = find_root(RAW, d.layout), list(d.classes)
    unseen = resolve_unseen(classes, d.split_presets, s.k, list(s.unseen))
    # oracle: every class is trained on; the written split has no unseen class (one backbone for every K)
    cs = ClassSplit(tuple(classes), () if s.filter == "oracle" else unseen, d.ignore_index)
    eval_splits = require_splits(root, d.layout, [x for x in st.cfg.evaluation.splits if x != d.train_split])
    frames, train_counts = [], None
    for split in [d.train_split, *eval_splits]:
        limit = sc.max_train_images if split == d.train_split else sc.max_eval_images
        smp = list_samples(root, d.layout, split, d.use_aug)[:limit]
        counts = scan_labels(root, smp, len(classes), d.ignore_index, f"split: read {split} labels")
        kept = filter_training(counts, unseen, s.filter) if split == d.train_split else None
        dev = carve_dev([x.id for x in smp], kept, s.dev_sequence, s.dev_size) if kept is not None else None
        train_counts = counts if split == d.train_split else train_counts
        frames.append(build_manifest(smp, counts, classes, kept, dev))
    df, metrics = split_summary(frames, d.train_split, eval_splits, classes, unseen, s.filter)
    metrics["drop_by_k"] = drop_by_k(train_counts, classes, d.split_presets)
    if metrics["kept"] < s.min_kept_warning:
        print(f"{'!' * 78}\nWARNING: only {metrics['kept']} training images keep no unseen pixel; the seen-class "
              f"backbone will be weak.\nConsider split.filter=ignore or a smaller K.\n{'!' * 78}", file=sys.stderr)
    with st.outputs() as out:
        df.to_csv(out.path(MANIFEST), index=False)
        out.json(CLASSES, cs.to_dict())
        out.json("metrics/split.json", metrics)
    print(metrics)


if __name__ == "__main__":
    run(main)
