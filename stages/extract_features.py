"""Stage extract_features: cache the trained backbone's d_x-dimensional stride-4 decoder features.

Labelled cache: kept training images, at most ``features.pixels_per_class`` locations per seen
class and image. Pool cache: the unlabelled pool (the dropped images; under ``ignore`` every
training image), ``features.pool_pixels_per_image`` random locations each. Features are float16;
every training image's label map at feature resolution is kept too (graph-context generator).
Outputs: data/features/{labelled,pool,label_maps}.pt, metrics/features.json.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from zs3core.stage import run
from zs3core.backbone import load_backbone
from zs3core.data.dataset import SegDataset
from zs3core.data.layouts import find_root
from zs3core.features import cache_report, check_cache, extract
from zs3core.splits import labelled_and_pool_rows, manifest_samples, read_class_split, read_manifest

RAW, MANIFEST, CLASSES = Path("data/raw"), Path("data/split/manifest.csv"), Path("data/split/classes.json")
BACKBONE, FEATURES = Path("data/backbone/model.pt"), Path("data/features")


def main(st) -> None:
    cfg, cs, df = st.cfg, read_class_split(CLASSES), read_manifest(MANIFEST)
    train = df[df.split == cfg.dataset.train_split]
    ds = SegDataset(find_root(RAW, cfg.dataset.layout), manifest_samples(train), cs.num_classes, cs.ignore_index,
                    eval_short_side=cfg.backbone.eval_short_side)
    rows, pool_rows = labelled_and_pool_rows(train, cfg.split.filter)
    model, _ = load_backbone(BACKBONE)
    t0 = time.time()
    labelled, pool, maps = extract(model, ds, rows, cs.seen, cfg.features.pixels_per_class, pool_rows,
                                   cfg.features.pool_pixels_per_image, st.rng, st.device,
                                   cfg.backbone.channels_last and st.device.type == "cpu")
    for name, cache in (("labelled", labelled), ("pool", pool)):
        cache["manifest_ids"] = list(train.id)
        check_cache(cache, FEATURES / f"{name}.pt")
    with st.outputs() as out:
        lp, pp = out.path(FEATURES / "labelled.pt"), out.path(FEATURES / "pool.pt")
        torch.save(labelled, lp)
        torch.save(pool, pp)
        torch.save({"maps": maps, "labelled_rows": rows, "pool_rows": pool_rows, "manifest_ids": list(train.id)},
                   out.path(FEATURES / "label_maps.pt"))
        metrics = cache_report(labelled, pool, rows, pool_rows, cs.classes, cs.seen,
                               (os.path.getsize(lp) + os.path.getsize(pp)) / 2**20, time.time() - t0)
        out.json("metrics/features.json", metrics)
    print(metrics)


if __name__ == "__main__":
    run(main)
