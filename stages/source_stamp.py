"""Stage source_stamp (runs on every ``dvc repro``): the fingerprint of a local dataset source.

With ``source=local`` (or ``dataset.source`` set to a folder or an archive) DVC cannot see the
user's files: data/source_stamp.json (and data/embedding_stamp.json, for a local vector file) records each file's path, size and modification time
(:func:`zs3core.data.download.source_fingerprint`). The download stage depends on the first, embed on the second, so a
fixed, added or removed file reruns download (or embed) and everything after it, while an unchanged
source changes nothing (DVC compares the stamp's hash). Light: no torch, well under a second.
"""
from __future__ import annotations

from pathlib import Path

from zs3core.data.download import source_fingerprint
from zs3core.stage import run

STAMP, EMBEDDING_STAMP = Path("data/source_stamp.json"), Path("data/embedding_stamp.json")


def main(st) -> None:
    stamp = source_fingerprint(st.cfg.dataset.source, list(st.cfg.dataset.extra))
    vectors = source_fingerprint(st.cfg.embedding.source)   # a local vector file (a gensim-data name: fixed)
    with st.outputs() as out:
        out.json(STAMP, stamp)
        out.json(EMBEDDING_STAMP, vectors)


if __name__ == "__main__":
    run(main, light=True)
