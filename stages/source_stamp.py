"""Stage source_stamp (runs on every ``dvc repro``): the fingerprint of a local dataset source.

With ``source=local`` (or ``dataset.source`` set to a folder or an archive) DVC cannot see the
user's files: data/source_stamp.json records each file's path, size and modification time
(:func:`zs3core.data.download.source_fingerprint`). The download stage depends on it, so a
fixed, added or removed file reruns download and everything after it, while an unchanged
source changes nothing (DVC compares the stamp's hash). Light: no torch, well under a second.
"""
from __future__ import annotations

from pathlib import Path

from zs3core.data.download import source_fingerprint
from zs3core.stage import run

STAMP = Path("data/source_stamp.json")


def main(st) -> None:
    stamp = source_fingerprint(st.cfg.dataset.source, list(st.cfg.dataset.extra))
    with st.outputs() as out:
        out.json(STAMP, stamp)


if __name__ == "__main__":
    run(main, light=True)
