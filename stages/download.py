"""Stage 1, download: fetch the dataset archive (md5-checked, official host then mirrors, resumable)
or copy a local copy to data/raw.

Layouts that need more than one archive are completed here (``dataset.extra``): VOC 2012 + SBD
gives the ``train_aug`` set, VOC2010 + the Pascal-Context annotations the Context labels.
``data/raw_source.json`` records where data/raw came from (``dataset.source``, the archive or the
addresses), so that later stages can name the user's file rather than the copy under data/raw.
"""
from __future__ import annotations

from pathlib import Path

from stages.common import RAW, params, run
from zs3core.data.download import SOURCE_RECORD, dataset_urls, prepare_dataset, source_record
from zs3core.io import StageOutputs
from zs3core.params import get

CACHE = Path("data/.downloads")


def main() -> None:
    p = params()
    source = str(get(p, "dataset.source"))
    # dataset.urls: ordered list (official first); a params.yaml of older checkouts has dataset.url
    urls = dataset_urls(get(p, "dataset.urls", None, types=(list, str)), get(p, "dataset.url", None, types=str))
    with StageOutputs() as out:
        dest = out.path(RAW)
        root = prepare_dataset(source, dest, str(get(p, "dataset.layout")),
                               urls=urls, md5=get(p, "dataset.md5", None),
                               extras=get(p, "dataset.extra", None, types=list),
                               classes=list(get(p, "dataset.classes", [], types=list)),
                               cache_dir=CACHE)
        out.json(SOURCE_RECORD, source_record(source, dest, root, urls, CACHE))
        print(f"{get(p, 'dataset.name')}: dataset root {root.relative_to(dest.parent)}")


if __name__ == "__main__":
    run(main)
