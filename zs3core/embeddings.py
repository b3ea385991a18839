"""Class-name embeddings a[c] (ZS3Net §2.2: word2vec, d_a = 300).

Vectors are read with gensim's ``KeyedVectors``: either a gensim-data name
(``word2vec-google-news-300``, ``glove-wiki-gigaword-100``; downloaded by
``gensim.downloader`` when online, else from gensim-data's GitHub release files with the
resumable downloader of :mod:`zs3core.data.download`) or a local file in word2vec format
(``.txt`` text, ``.bin`` binary) or gensim's native ``.kv``.

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


# gensim-data publishes each model as a GitHub release asset ``<name>/<name>.gz`` (the gzipped
# word2vec-format file that gensim.downloader saves; its release __init__.py reads it with
# KeyedVectors.load_word2vec_format). gensim.downloader.DOWNLOAD_BASE_URL is the first base; the
# repository now lives at piskvorky/gensim-data, whose release URLs serve the same assets.
GENSIM_DATA_RELEASES = ("https://github.com/RaRe-Technologies/gensim-data/releases/download",
                        "https://github.com/piskvorky/gensim-data/releases/download")
# md5 of <name>.gz, from gensim-data's list.json ("checksum"; gensim.downloader checks the same value).
GENSIM_DATA_MD5 = {
    "word2vec-google-news-300": "a5e5354d40acb95f9ec66d5977d140ef",
    "glove-wiki-gigaword-100": "40ec481866001177b8cd4cb0df92924f",
}
GENSIM_CACHE = Path("data/.downloads/gensim-data")


def gensim_data_urls(name: str) -> list[str]:
    """Release-asset addresses of the gensim-data model ``name`` (``<base>/<name>/<name>.gz``)."""
    return [f"{base}/{name}/{name}.gz" for base in GENSIM_DATA_RELEASES]


def _is_binary_word2vec(path: Path) -> bool:
    """True for word2vec's binary format: after the ``<count> <dim>`` header, the first entry is
    not a text line of a word and ``dim`` numbers. Reads .gz transparently."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        header = f.readline().split()
        head = f.read(65536)
    if len(header) != 2 or not all(h.isdigit() for h in header):
        raise ValueError(f"no '<count> <dimension>' header line (got {b' '.join(header)[:60]!r})")
    dim = int(header[1])
    line = head.split(b"\n", 1)[0]
    try:
        parts = line.decode("utf-8").split()
        [float(x) for x in parts[1:]]
    except (UnicodeDecodeError, ValueError):
        return True
    return len(parts) != dim + 1


def _load_word2vec(path: Path, binary: bool | None = None):
    """KeyedVectors from a word2vec-format file (.txt, .bin, or either gzipped); binary sniffed when None."""
    from gensim.models import KeyedVectors

    if binary is None:
        binary = _is_binary_word2vec(path)
    return KeyedVectors.load_word2vec_format(str(path), binary=binary)


def load_keyed_vectors(source: str, cache_dir: Path | None = None, urls: list[str] | None = None,
                       md5: str | None = None, local_file: str | None = None, progress: bool = True,
                       log=print, timeout: float | None = None):
    """Load gensim KeyedVectors from a local file or a gensim-data name.

    A file: ``.kv`` (gensim native) or word2vec format (``.txt`` text, ``.bin`` binary, ``.gz``
    of either). A name (``word2vec-google-news-300``, ``glove-wiki-gigaword-100``): first
    ``gensim.downloader.load(name)``; when that fails (host down, no route, proxy), the
    release asset ``<name>.gz`` is fetched with the resumable, md5-checked downloader
    (:func:`zs3core.data.download.download_file`) from ``urls`` (default
    :func:`gensim_data_urls`) into ``cache_dir`` (default ``data/.downloads/gensim-data``) and read
    as word2vec format (binary or text, sniffed), which is what gensim-data's reader does.

    Args:
        source: ``embedding.source``: a path or a gensim-data name.
        cache_dir, urls: where the fallback download goes and the addresses tried, in order.
        md5: checksum of ``<name>.gz`` (default: gensim-data's, for the names in GENSIM_DATA_MD5;
            None for other names = not checked).
        local_file: ``embedding.local_file``, named in the offline advice.
        progress, log, timeout: as :func:`zs3core.data.download.download_file`.

    Returns:
        gensim KeyedVectors.

    Raises:
        Zs3Error: the file does not exist or is not a vector file; or the name cannot be had
            from gensim-data nor from any release address: the message names
            ``embedding.source``, what gensim.downloader said, every URL tried with its error,
            and the local alternatives (``-S source=local``, ``-S embedding.source=/path``).
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
    from zs3core.data.download import DEFAULT_TIMEOUT_S, DownloadError, download_file

    name = str(source)
    timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
    try:
        import socket

        import gensim.downloader as api

        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(timeout)   # gensim's urlopen has none: a silent host would hang
        try:
            return api.load(name)
        finally:
            socket.setdefaulttimeout(old)
    except Exception as e:
        first = f"gensim.downloader.load failed ({type(e).__name__}: {e})"
    log(f"embedding.source: {first}; trying the gensim-data release files")
    urls = list(urls) if urls else gensim_data_urls(name)
    md5 = md5 if md5 is not None else GENSIM_DATA_MD5.get(name)
    local = f"${{data_root}}/{local_file}" if local_file else "${data_root}/<embedding.local_file>"
    hint = (f"Offline, use a local vector file: -S source=local (reads {local}) or "
            "-S embedding.source=/path/to/vectors.bin (word2vec .bin/.txt, or gensim .kv).")
    gz = Path(cache_dir or GENSIM_CACHE) / f"{name}.gz"
    try:
        download_file(urls, gz, md5, key="embedding.source", timeout=timeout, progress=progress, log=log)
    except DownloadError as e:
        tried = "; ".join(f"{u} ({err})" for u, err in e.errors)
        raise Zs3Error(f"embedding.source: cannot load the gensim-data vectors '{name}': {first}; "
                       f"release files tried: {tried}. {hint}") from e
    try:
        return _load_word2vec(gz)
    except Exception as e:
        gz.unlink(missing_ok=True)   # our cached download: fetched again next time
        raise Zs3Error(f"embedding.source: {gz} (gensim-data '{name}', downloaded) is not a word2vec-format "
                       f"file ({e}); the cached copy was deleted: run again, or {hint[0].lower()}{hint[1:]}") from e


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


def load_class_embeddings(path) -> "torch.Tensor":
    """(C, d_a) float32 class embeddings written by the embed stage (``data/embed/class_embeddings.pt``).

    Raises:
        Zs3Error: the file is missing.
    """
    import torch

    if not Path(path).exists():
        raise Zs3Error(f"{path}: missing; run the embed stage first (dvc repro embed)")
    return torch.load(path, weights_only=False)["embeddings"].float()
