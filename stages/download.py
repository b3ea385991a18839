"""Stage download: fetch the dataset archive (md5-checked, official host then mirrors, resumable)
or copy a local copy to data/raw (ZS3Net §3.1 datasets).

Layouts that need more than one archive are completed here (``dataset.extra``): VOC 2012 + SBD
gives the ``train_aug`` set, VOC2010 + the Pascal-Context annotations the Context labels.
``data/raw_source.json`` records where data/raw came from, so that later stages can name the
user's file rather than the copy.
"""
from __future__ import annotations

from pathlib import Path

from zs3core.stage import run
from zs3core.data.download import SOURCE_RECORD, prepare_dataset, source_record

RAW = Path("data/raw")
CACHE = Path("data/.downloads")


def main(st) -> None:
    d = st.cfg.dataset
    with st.outputs() as out:
        dest = out.path(RAW)
        root = prepare_dataset(d.source, dest, d.layout, urls=list(d.urls), md5=d.md5, extras=list(d.extra),
                               classes=list(d.classes), cache_dir=CACHE)
        out.json(SOURCE_RECORD, source_record(d.source, dest, root, list(d.urls), CACHE))
        print(f"{d.name}: dataset root {root.relative_to(dest.parent)}")


if __name__ == "__main__":
    run(main)
