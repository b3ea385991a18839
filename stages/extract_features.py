"""Stage 5, extract_features: cache 256-d stride-4 decoder features of the trained backbone.

Labelled cache: kept training images, at most ``features.pixels_per_class`` locations per
seen class and image. Pool cache: the unlabelled pool (images dropped by the split; under
``ignore`` every training image), ``features.pool_pixels_per_image`` random locations each.
Features are stored as float16. Also the label map of every training image at feature
resolution (for the graph-context generator). Outputs: data/features/{labelled,pool,label_maps}.pt,
metrics/features.json.
"""
from __future__ import annotations

import os
import time

import torch

from stages.common import (
    BACKBONE,
    FEATURES_DIR,
    LABEL_MAPS,
    class_split,
    device,
    manifest,
    params,
    raw_root,
    run,
    samples,
    set_threads,
)
from zs3core.data.dataset import SegDataset
from zs3core.features import check_cache, extract
from zs3core.io import StageOutputs
from zs3core.params import get
from zs3core.train import load_backbone, seed_everything


def main() -> None:
    set_threads()
    p = params()
    gen = seed_everything(int(get(p, "seed")))
    cs = class_split()
    df = manifest()
    train_split = get(p, "dataset.train_split", "train")
    train = df[df.split == train_split]
    ds = SegDataset(raw_root(p), samples(train), cs.num_classes, cs.ignore_index, train=False,
                    eval_short_side=get(p, "backbone.eval_short_side", None))
    status = train.status.to_numpy()
    rows = [i for i in range(len(train)) if status[i] == "kept"]
    # drop: the pool is the dropped images; ignore: every training image (unseen pixels are unlabelled)
    pool_rows = [i for i in range(len(train)) if status[i] == "dropped"] if get(p, "split.filter") == "drop" else list(range(len(train)))
    model, _ = load_backbone(BACKBONE)
    t0 = time.time()
    dev = device(p)
    labelled, pool, maps = extract(model, ds, rows, cs.seen, int(get(p, "features.pixels_per_class")), pool_rows,
                             int(get(p, "features.pool_pixels_per_image")), gen, dev,
                             bool(get(p, "backbone.channels_last", False)) and dev.type == "cpu")
    labelled["manifest_ids"] = list(train.id)
    pool["manifest_ids"] = list(train.id)
    for name, cache in (("labelled", labelled), ("pool", pool)):
        check_cache(cache, FEATURES_DIR / f"{name}.pt")
    with StageOutputs() as out:
        lp, pp = out.path(FEATURES_DIR / "labelled.pt"), out.path(FEATURES_DIR / "pool.pt")
        torch.save(labelled, lp)
        torch.save(pool, pp)
        torch.save({"maps": maps, "labelled_rows": rows, "pool_rows": pool_rows, "manifest_ids": list(train.id)},
                   out.path(LABEL_MAPS))
        per_class = {cs.classes[c]: int((labelled["labels"] == c).sum()) for c in cs.seen}
        metrics = {
            "labelled_pixels": len(labelled["labels"]),
            "pool_pixels": len(pool["labels"]),
            "labelled_images": len(rows),
            "pool_images": len(pool_rows),
            "cache_mb": round((os.path.getsize(lp) + os.path.getsize(pp)) / 2**20, 2),
            "feature_dim": int(labelled["features"].shape[1]),
            "seconds": round(time.time() - t0, 1),
            "labelled_pixels_per_class": per_class,
        }
        out.json("metrics/features.json", metrics)
    print(metrics)


if __name__ == "__main__":
    run(main)
