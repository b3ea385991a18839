"""Stage 1, download: fetch the dataset archive (md5-checked) or copy a local copy to data/raw.

Layouts that need more than one archive are completed here (``dataset.extra``): VOC 2012 + SBD
gives the ``train_aug`` set, VOC2010 + the Pascal-Context annotations the Context labels.
"""
from __future__ import annotations

from pathlib import Path

from stages.common import RAW, params, run
from zs3core.data.download import prepare_dataset
from zs3core.io import StageOutputs
from zs3core.params import get


def main() -> None:
    p = params()
    with StageOutputs() as out:
        dest = out.path(RAW)
        root = prepare_dataset(str(get(p, "dataset.source")), dest, str(get(p, "dataset.layout")),
                               url=get(p, "dataset.url", None), md5=get(p, "dataset.md5", None),
                               extras=get(p, "dataset.extra", None, types=list),
                               classes=list(get(p, "dataset.classes", [], types=list)),
                               cache_dir=Path("data/.downloads"))
        print(f"{get(p, 'dataset.name')}: dataset root {root.relative_to(dest.parent)}")


if __name__ == "__main__":
    run(main)
