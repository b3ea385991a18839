"""Class-name embeddings a[c] (ZS3Net §2.2: word2vec, d_a = 300).

Vectors are read with gensim's ``KeyedVectors``: either a gensim-data name
(``word2vec-google-news-300``, ``glove-wiki-gigaword-100``; downloaded by
``gensim.downloader`` when online) or a local file in word2vec format (``.txt`` text,
``.bin`` binary) or gensim's native ``.kv``.

Name resolution, per class: an alias from the dataset preset replaces the name; then a
whole-name key wins (``pottedplant``, ``sign_symbol``, ``tvmonitor``); otherwise a
multi-word name (``sign symbol``) is the mean of its word vectors. A word that is missing
is an error that lists every missing word of every class at once.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from zs3core.io import Zs3Error


def load_keyed_vectors(source: str):
    """Load gensim KeyedVectors from a local file or a gensim-data name.

    Raises:
        Zs3Error: the file does not exist, or the name is not a file and gensim-data cannot
            provide it (offline, or unknown name), with what to do.
    """
    from gensim.models import KeyedVectors

    path = Path(str(source))
    looks_like_path = path.suffix in (".txt", ".bin", ".kv", ".gz") or "/" in str(source)
    if path.exists():
        if path.suffix == ".kv":
            return KeyedVectors.load(str(path))
        binary = path.suffix == ".bin" or str(path).endswith(".bin.gz")
        try:
            return KeyedVectors.load_word2vec_format(str(path), binary=binary)
        except Exception as e:  # gensim raises ValueError/UnicodeDecodeError on bad files
            raise Zs3Error(f"{path}: not a word2vec-format vector file ({e})") from e
    if looks_like_path:
        raise Zs3Error(f"embedding.source: file {path} does not exist")
    try:
        import gensim.downloader as api

        return api.load(str(source))
    except Exception as e:
        raise Zs3Error(
            f"embedding.source: cannot load gensim-data vectors '{source}' ({e}). Offline, point "
            "embedding.source at a local word2vec file (e.g. -S source=local)."
        ) from e


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[\s_\-]+", name) if w]


def class_vectors(classes: list[str], kv, aliases: dict | None = None, normalize: bool = True) -> tuple[np.ndarray, list[str]]:
    """Embedding matrix of the classes.

    Args:
        classes: class names in label order.
        kv: a gensim KeyedVectors (anything with ``__contains__`` and ``__getitem__``).
        aliases: {class name: replacement name} from the dataset preset.
        normalize: L2-normalise each row.

    Returns:
        (C, d_a) float32 matrix, and for each class how it was resolved ("key 'x'" or
        "mean of 'a', 'b'").

    Raises:
        Zs3Error: listing every missing word, per class.
    """
    aliases = aliases or {}
    rows, how, missing = [], [], {}
    for c in classes:
        name = str(aliases.get(c, c))
        keys = [name, name.replace(" ", "_"), name.replace(" ", ""), name.lower(),
                name.lower().replace(" ", "_"), name.lower().replace(" ", "")]
        key = next((k for k in keys if k in kv), None)
        if key is not None:
            rows.append(np.asarray(kv[key], dtype=np.float32))
            how.append(f"key '{key}'")
            continue
        words = _words(name)
        found = []
        for w in words:
            k = w if w in kv else (w.lower() if w.lower() in kv else None)
            if k is None:
                missing.setdefault(c, []).append(w)
            else:
                found.append(k)
        if c not in missing:
            rows.append(np.mean([np.asarray(kv[k], dtype=np.float32) for k in found], axis=0))
            how.append("mean of " + ", ".join(f"'{k}'" for k in found))
    if missing:
        detail = "; ".join(f"class '{c}': {ws}" for c, ws in missing.items())
        raise Zs3Error(f"embedding: words missing from the vectors: {detail}. Add an alias in the dataset preset (embedding.aliases) or use other vectors.")
    emb = np.stack(rows).astype(np.float32)
    if normalize:
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return emb, how


def cosine_similarity(emb: np.ndarray) -> np.ndarray:
    """(C, C) cosine similarity of the rows of a (C, d) matrix."""
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return e @ e.T
