"""Getting a dataset onto disk: official archives (md5-checked) or local copies.

``dataset.source`` is either ``download`` (fetch ``dataset.url`` with torchvision's
``download_url`` and verify ``dataset.md5`` when given) or a local path: an archive
(.tar, .tar.gz, .tgz, .zip; md5-checked when ``dataset.md5`` is set) or a folder already in
the dataset's layout. Archives are extracted with torchvision's ``extract_archive``.

Some layouts are completed from further archives, listed in ``dataset.extra`` as
``{name, url, md5, source}`` (see :func:`prepare_dataset`): ``sbd`` (``benchmark.tgz``) builds the
VOC ``train_aug`` set (:mod:`zs3core.data.sbd`), ``context`` (the Pascal-Context
``trainval.tar.gz``) the Context labels on top of the VOC2010 devkit (:mod:`zs3core.data.context`).
A local folder that is already converted needs none of them.
"""
from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

from torchvision.datasets.utils import check_integrity, download_url, extract_archive

from zs3core.io import Zs3Error

EXTRA_LAYOUT = {"sbd": "voc", "context": "context"}   # extra archive name -> layout it completes
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip", ".tar.xz", ".tar.bz2")


def is_archive(path: Path) -> bool:
    """True when the file name ends in a suffix that torchvision's extract_archive reads."""
    return any(str(path).endswith(s) for s in ARCHIVE_SUFFIXES)


def verify_md5(path: Path, md5: str | None) -> None:
    """Raise Zs3Error naming the file when ``md5`` is given and does not match."""
    if md5 and not check_integrity(str(path), md5):
        raise Zs3Error(f"{path}: md5 checksum mismatch (expected {md5}); the archive is corrupt or not the official one. Delete it and download again.")


def _extract(archive: Path, dest: Path) -> None:
    """torchvision's extract_archive; a truncated or corrupt archive is a Zs3Error naming it."""
    try:
        extract_archive(str(archive), str(dest))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        raise Zs3Error(f"{archive}: cannot be extracted ({e}); the archive is truncated or corrupt. "
                       "Delete it and download again.") from e


def fetch(source: str, dest: Path, url: str | None = None, md5: str | None = None, cache_dir: Path | None = None,
          key: str = "dataset") -> Path:
    """Materialise the dataset under ``dest`` (a folder that must not exist yet).

    Args:
        source: ``download`` or a local archive/folder path.
        dest: output folder; filled with the extracted or copied dataset.
        url, md5: the official archive and its checksum (md5 None = not checked).
        cache_dir: where downloaded archives are kept between runs (default: dest's parent
            ``.downloads``), so that a re-run does not fetch them again.
        key: the params key named in errors (``dataset``, or ``dataset.extra[<name>]``).

    Returns:
        ``dest``.

    Raises:
        Zs3Error: missing local path, unsupported file, checksum mismatch, failed download,
            archive that cannot be extracted.
    """
    dest = Path(dest)
    if source == "download":
        if not url:
            raise Zs3Error(f"{key}.url: no download address for this dataset; set {key}.source to a local copy")
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
                archive.unlink(missing_ok=True)  # never keep a partial file (unchecked when md5 is None)
                hint = " (e.g. -S source=local)" if key == "dataset" else ""
                raise Zs3Error(f"{key}.url: download of {url} failed ({e}). Offline, set {key}.source to a local archive or folder{hint}.") from e
        verify_md5(archive, md5)
        _extract(archive, dest)
        return dest
    path = Path(source).expanduser()
    if not path.exists():
        raise Zs3Error(f"{key}.source: {path} does not exist (give 'download', an archive or a folder)")
    if path.is_dir():
        shutil.copytree(path, dest, symlinks=False)
        return dest
    if is_archive(path):
        verify_md5(path, md5)
        _extract(path, dest)
        return dest
    raise Zs3Error(f"{key}.source: {path} is neither a folder nor an archive ({', '.join(ARCHIVE_SUFFIXES)})")


def parse_extras(extras, layout: str) -> dict[str, dict]:
    """Validate ``dataset.extra``: a list of ``{name, url, md5, source}`` mappings.

    Returns:
        {name: {"url", "md5", "source"}} (missing keys are None).

    Raises:
        Zs3Error: not a list of mappings, an unknown or repeated name, or a name that does not
            apply to ``layout`` (each named as ``dataset.extra[i]``).
    """
    if extras is None:
        return {}
    if not isinstance(extras, (list, tuple)):
        raise Zs3Error(f"dataset.extra: expected a list of {{name, url, md5}} mappings, got {extras!r}")
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
        unknown = sorted(set(e) - {"name", "url", "md5", "source"})
        if unknown:
            raise Zs3Error(f"{key}: unknown key(s) {unknown} (name, url, md5, source)")
        out[name] = {"url": e.get("url"), "md5": e.get("md5"), "source": e.get("source")}
    return out


def _extra_folder(name: str, extra: dict, dataset_source: str, work: Path, cache_dir: Path | None):
    """Folder holding the extracted extra archive, or None when there is nothing to fetch.

    ``extra.source`` wins (``download`` or a local archive/folder); without it the archive is
    downloaded only when the dataset itself is (``dataset.source=download``). A local folder is
    read in place; an archive is fetched (md5-checked) and extracted into ``work``.
    """
    src = extra.get("source") or ("download" if dataset_source == "download" else None)
    if src is None:
        return None
    if src != "download" and Path(src).expanduser().is_dir():
        return Path(src).expanduser()
    if work.exists():
        shutil.rmtree(work)
    key = f"dataset.extra[{name}]"
    try:
        return fetch(str(src), work, url=extra.get("url"), md5=extra.get("md5"), cache_dir=cache_dir, key=key)
    except Zs3Error as e:
        if str(e).startswith(key):
            raise
        raise Zs3Error(f"{key}: {e}") from e


def prepare_dataset(source: str, dest: Path, layout: str, url: str | None = None, md5: str | None = None,
                    extras=None, classes: list[str] | None = None, cache_dir: Path | None = None,
                    log=print, progress: bool = True) -> Path:
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
    fetch(source, dest, url=url, md5=md5, cache_dir=cache_dir)
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
            folder = _extra_folder("sbd", found["sbd"], source, work, cache_dir)
            if folder is None:
                log("voc: SBD not fetched (dataset.source is local; give benchmark.tgz as 'source' in the sbd "
                    "entry of dataset.extra to build train_aug); training uses the official train list")
                return root
            stats = convert_sbd(find_sbd_dir(folder), root, progress=progress)
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
            folder = _extra_folder("context", found["context"], source, work, cache_dir) if "context" in found else None
            if folder is None:
                raise Zs3Error(
                    f"dataset.source: {source} holds no converted Pascal-Context labels (ImageSets/SegmentationContext) "
                    "and no Context annotations can be fetched: use source=download, or give trainval.tar.gz "
                    "as 'source' in the context entry of dataset.extra")
            mats, labels = find_annotations(folder)
            if labels is None:
                log(f"context: no labels.txt next to {mats}; using the official 59-class ids")
            stats = convert_context(mats, labels, voc_root, list(classes or []), progress=progress)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log(f"context: converted the Context annotations: {stats}")
        return find_root(dest, "context")
    return find_root(dest, layout)
