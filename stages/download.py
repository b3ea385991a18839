"""Stage 1, download: fetch the dataset archive (md5-checked) or copy a local copy to data/raw."""
from __future__ import annotations

from pathlib import Path

from stages.common import RAW, params, run
from zs3core.data.download import fetch
from zs3core.data.layouts import find_root
from zs3core.io import StageOutputs
from zs3core.params import get


def main() -> None:
    p = params()
    with StageOutputs() as out:
        dest = out.path(RAW)
        fetch(str(get(p, "dataset.source")), dest, url=get(p, "dataset.url", None), md5=get(p, "dataset.md5", None),
              cache_dir=Path("data/.downloads"))
        root = find_root(dest, get(p, "dataset.layout"))
        print(f"{get(p, 'dataset.name')}: dataset root {root.relative_to(dest.parent)}")


if __name__ == "__main__":
    run(main)
