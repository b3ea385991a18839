"""Getting a dataset onto disk: official archives (md5-checked) or local copies.

``dataset.source`` is either ``download`` (fetch ``dataset.url`` with torchvision's
``download_url`` and verify ``dataset.md5`` when given) or a local path: an archive
(.tar, .tar.gz, .tgz, .zip; md5-checked when ``dataset.md5`` is set) or a folder already in
the dataset's layout. Archives are extracted with torchvision's ``extract_archive``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from torchvision.datasets.utils import check_integrity, download_url, extract_archive

from zs3core.io import Zs3Error

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip", ".tar.xz", ".tar.bz2")


def is_archive(path: Path) -> bool:
    """True when the file name ends in a suffix that torchvision's extract_archive reads."""
    return any(str(path).endswith(s) for s in ARCHIVE_SUFFIXES)


def verify_md5(path: Path, md5: str | None) -> None:
    """Raise Zs3Error naming the file when ``md5`` is given and does not match."""
    if md5 and not check_integrity(str(path), md5):
        raise Zs3Error(f"{path}: md5 checksum mismatch (expected {md5}); the archive is corrupt or not the official one. Delete it and download again.")


def fetch(source: str, dest: Path, url: str | None = None, md5: str | None = None, cache_dir: Path | None = None) -> Path:
    """Materialise the dataset under ``dest`` (a folder that must not exist yet).

    Args:
        source: ``download`` or a local archive/folder path.
        dest: output folder; filled with the extracted or copied dataset.
        url, md5: the official archive and its checksum (md5 None = not checked).
        cache_dir: where downloaded archives are kept between runs (default: dest's parent
            ``.downloads``), so that a re-run does not fetch them again.

    Returns:
        ``dest``.

    Raises:
        Zs3Error: missing local path, unsupported file, checksum mismatch, failed download.
    """
    dest = Path(dest)
    if source == "download":
        if not url:
            raise Zs3Error("dataset.url: no download address for this dataset; set dataset.source to a local copy")
        cache_dir = Path(cache_dir or dest.parent / ".downloads")
        cache_dir.mkdir(parents=True, exist_ok=True)
        filename = url.rstrip("/").split("/")[-1]
        archive = cache_dir / filename
        if archive.exists() and md5 and not check_integrity(str(archive), md5):
            archive.unlink()  # corrupt or partial cached copy: fetch it again
        if not archive.exists():
            # No md5 here: torchvision would report a mismatch as a failed download
            # ("File not found or corrupted."); verify_md5 below names the file and the cause.
            try:
                download_url(url, str(cache_dir), filename=filename)
            except Exception as e:
                raise Zs3Error(f"dataset.url: download of {url} failed ({e}). Offline, set dataset.source to a local archive or folder (e.g. -S source=local).") from e
        verify_md5(archive, md5)
        extract_archive(str(archive), str(dest))
        return dest
    path = Path(source).expanduser()
    if not path.exists():
        raise Zs3Error(f"dataset.source: {path} does not exist (give 'download', an archive or a folder)")
    if path.is_dir():
        shutil.copytree(path, dest, symlinks=False)
        return dest
    if is_archive(path):
        verify_md5(path, md5)
        extract_archive(str(path), str(dest))
        return dest
    raise Zs3Error(f"dataset.source: {path} is neither a folder nor an archive ({', '.join(ARCHIVE_SUFFIXES)})")
