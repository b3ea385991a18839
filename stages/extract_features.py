"""Stage extract_features: cache the trained backbone's d_x-dimensional stride-4 decoder features.

Labelled cache: kept training images, at most ``features.pixels_per_class`` locations per seen
class and image. Pool cache: the unlabelled pool (the dropped images; under ``ignore`` every
training image), ``features.pool_pixels_per_image`` random locations each. Features are float16;
every training image's label map at feature resolution is kept too (graph-context generator).
Outputs: data/features/labelled/ and data/features/pool/ (cache folders, :class:`zs3core.features.CacheWriter`),
data/features/label_maps.pt, metrics/features.json. Under torchrun each process extracts a
contiguous block of images (pixel locations drawn per image, so the cache does not depend on
the world size) and rank 0 concatenates the blocks.
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
from zs3core.checkpoint import WORK
from zs3core.features import FEATURES_FILE, cache_report, extract, extract_distributed, load_cache
from zs3core.splits import labelled_and_pool_rows, manifest_samples, read_class_split, read_manifest

RAW, MANIFEST, CLASSES = Path("data/raw"), Path("data/split/manifest.csv"), Path("data/split/classes.json")
BACKBONE, FEATURES = Path("data/backbone/model.pt"), Path("data/features")
PARTS = WORK / "extract_features"   # per-process blocks of a distributed run (torchrun)


def main(st) -> None:
    cfg, cs, df = st.cfg, read_class_split(CLASSES), read_manifest(MANIFEST)
    train = df[df.split == cfg.dataset.train_split]
    ds = SegDataset(find_root(RAW, cfg.dataset.layout), manifest_samples(train), cs.num_classes, cs.ignore_index,
                    eval_short_side=cfg.backbone.eval_short_side)
    rows, pool_rows = labelled_and_pool_rows(train, cfg.split.filter)
    model, _ = load_backbone(BACKBONE)
    f, ids, t0, cl = cfg.features, list(train.id), time.time(), cfg.backbone.channels_last and st.device.type == "cpu"
    common = (model, ds, rows, cs.seen, f.pixels_per_class, pool_rows, f.pool_pixels_per_image)
    with st.outputs() as out:
        lp, pp = out.path(FEATURES / "labelled"), out.path(FEATURES / "pool")
        if st.dist.enabled:   # torchrun: each process extracts a block of images; rank 0 joins the blocks
            maps = extract_distributed(*common, st.device, lp, pp, ids, cl, st.dist, cfg.seed, PARTS)
        else:
            maps = extract(*common, st.rng, st.device, lp, pp, ids, cl)
        if st.dist.is_main:
            labelled, pool = load_cache(lp), load_cache(pp)   # memory-mapped; checks sizes and finiteness
            torch.save({"maps": maps, "labelled_rows": rows, "pool_rows": pool_rows, "manifest_ids": ids},
                       out.path(FEATURES / "label_maps.pt"))
            size = sum(os.path.getsize(p / FEATURES_FILE) for p in (lp, pp))
            metrics = cache_report(labelled, pool, rows, pool_rows, cs.classes, cs.seen, size / 2**20, time.time() - t0)
            out.json("metrics/features.json", metrics)
            print(metrics)


if __name__ == "__main__":
    run(main)
