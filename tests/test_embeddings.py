"""Class-name vectors: key lookup, multi-word means, aliases, normalisation, missing words, loading."""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from gensim.models import KeyedVectors

from zs3core.embeddings import class_vectors, cosine_similarity, gensim_data_urls, load_keyed_vectors
from zs3core.io import Zs3Error

WORDS = {
    "pottedplant": [1.0, 0.0, 0.0, 0.0],
    "potted": [0.0, 2.0, 0.0, 0.0],
    "plant": [0.0, 0.0, 3.0, 0.0],
    "sign": [1.0, 2.0, 0.0, 0.0],
    "symbol": [0.0, 4.0, 2.0, 2.0],
    "tv": [3.0, 0.0, 0.0, 4.0],
    "monitor": [1.0, 1.0, 1.0, 1.0],
    "sky": [0.5, -0.5, 0.5, -0.5],
    "car": [-2.0, 0.0, 0.0, 0.0],
}


@pytest.fixture
def kv() -> KeyedVectors:
    k = KeyedVectors(vector_size=4)
    k.add_vectors(list(WORDS), np.array(list(WORDS.values()), dtype=np.float32))
    return k


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_whole_key_wins_over_word_mean(kv):
    """'potted plant' resolves to the key 'pottedplant', not to the mean of 'potted' and 'plant'."""
    emb, how = class_vectors(["pottedplant", "potted plant"], kv, normalize=False)
    np.testing.assert_allclose(emb[0], WORDS["pottedplant"])
    np.testing.assert_allclose(emb[1], WORDS["pottedplant"])
    assert how == ["key 'pottedplant'", "key 'pottedplant'"]


def test_multi_word_is_mean_of_words(kv):
    """'sign symbol' (no whole key) is the mean of 'sign' and 'symbol', then L2-normalised."""
    mean = (np.array(WORDS["sign"]) + np.array(WORDS["symbol"])) / 2  # [0.5, 3, 1, 1]
    raw, how = class_vectors(["sign symbol"], kv, normalize=False)
    np.testing.assert_allclose(raw[0], mean, rtol=1e-6)
    assert how == ["mean of 'sign', 'symbol'"]
    emb, _ = class_vectors(["sign symbol"], kv)
    np.testing.assert_allclose(emb[0], unit(mean), rtol=1e-6)


def test_rows_are_unit_length_and_in_class_order(kv):
    """Normalised matrix: float32 (C, d), unit rows, rows follow the class order."""
    classes = ["car", "Sky", "sign_symbol", "tv monitor"]
    emb, how = class_vectors(classes, kv)
    assert emb.shape == (4, 4) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(emb[0], [-1, 0, 0, 0])
    np.testing.assert_allclose(emb[1], unit(WORDS["sky"]), rtol=1e-6)       # case folded
    assert how[1] == "key 'sky'"
    np.testing.assert_allclose(emb[2], unit(np.add(WORDS["sign"], WORDS["symbol"])), rtol=1e-6)
    np.testing.assert_allclose(emb[3], unit(np.add(WORDS["tv"], WORDS["monitor"])), rtol=1e-6)
    sim = cosine_similarity(emb)
    np.testing.assert_allclose(np.diag(sim), 1.0, rtol=1e-6)
    assert sim[0, 1] == pytest.approx(float(unit([-1, 0, 0, 0]) @ unit(WORDS["sky"])), rel=1e-6)


def test_alias_replaces_name(kv):
    """An alias is looked up instead of the class name."""
    emb, how = class_vectors(["tvmonitor", "automobile"], kv, aliases={"tvmonitor": "tv monitor", "automobile": "car"},
                             normalize=False)
    np.testing.assert_allclose(emb[0], (np.array(WORDS["tv"]) + np.array(WORDS["monitor"])) / 2)
    np.testing.assert_allclose(emb[1], WORDS["car"])
    assert how == ["mean of 'tv', 'monitor'", "key 'car'"]


def test_missing_words_all_listed(kv):
    """One error lists every missing word of every class ('bicyclist'; 'traffic' and 'light')."""
    with pytest.raises(Zs3Error) as e:
        class_vectors(["sky", "bicyclist", "sign symbol", "traffic light"], kv)
    msg = str(e.value)
    for part in ("'bicyclist'", "'traffic light'", "traffic", "light"):
        assert part in msg
    assert "'sign symbol'" not in msg and "'sky'" not in msg


def test_missing_word_in_multi_word_name(kv):
    """A multi-word name with one missing word names that word only."""
    with pytest.raises(Zs3Error, match=r"class 'sign pole': \['pole'\]"):
        class_vectors(["sign pole"], kv)


@pytest.mark.parametrize("suffix,binary", [(".txt", False), (".bin", True)])
def test_load_word2vec_file(tmp_path, kv, suffix, binary):
    """Text and binary word2vec files written by gensim load back with the same vectors."""
    path = tmp_path / f"vectors{suffix}"
    kv.save_word2vec_format(str(path), binary=binary)
    loaded = load_keyed_vectors(str(path))
    assert set(loaded.index_to_key) == set(WORDS)
    for w, v in WORDS.items():
        np.testing.assert_allclose(loaded[w], v, rtol=1e-6)


def test_load_native_kv(tmp_path, kv):
    """gensim's native .kv format loads too."""
    path = tmp_path / "vectors.kv"
    kv.save(str(path))
    np.testing.assert_allclose(load_keyed_vectors(str(path))["symbol"], WORDS["symbol"])


def test_load_missing_file(tmp_path):
    """A missing vector file is an error naming the path (never a download attempt)."""
    path = tmp_path / "nope" / "vectors.bin"
    with pytest.raises(Zs3Error, match=r"embedding\.source.*nope/vectors\.bin.*does not exist"):
        load_keyed_vectors(str(path))


def test_load_bad_file(tmp_path):
    """A file that is not in word2vec format is an error naming the file."""
    path = tmp_path / "garbage.txt"
    path.write_text("this is not\na vector file\n")
    with pytest.raises(Zs3Error, match="garbage.txt"):
        load_keyed_vectors(str(path))


@pytest.fixture
def gensim_offline(monkeypatch):
    """gensim.downloader.load fails as it does offline; records the names asked for."""
    import gensim.downloader as api

    calls: list[str] = []

    def load(name, return_path=False):
        calls.append(name)
        raise OSError("<urlopen error [Errno 101] Network is unreachable>")

    monkeypatch.setattr(api, "load", load)
    return calls


def release_asset(kv, tmp_path: Path, binary: bool) -> bytes:
    """The bytes of a gensim-data release asset <name>.gz: a gzipped word2vec-format file."""
    raw = tmp_path / ("asset.bin" if binary else "asset.txt")
    kv.save_word2vec_format(str(raw), binary=binary)
    return gzip.compress(raw.read_bytes())


def test_gensim_data_release_addresses():
    """The fallback addresses are the release assets <base>/<name>/<name>.gz, gensim's own base first."""
    assert gensim_data_urls("glove-wiki-gigaword-100") == [
        "https://github.com/RaRe-Technologies/gensim-data/releases/download/glove-wiki-gigaword-100/"
        "glove-wiki-gigaword-100.gz",
        "https://github.com/piskvorky/gensim-data/releases/download/glove-wiki-gigaword-100/"
        "glove-wiki-gigaword-100.gz"]


@pytest.mark.parametrize("binary", [True, False])
def test_gensim_data_fallback_resumes_and_loads(tmp_path, kv, gensim_offline, range_server, dead_url, binary):
    """gensim.downloader fails; the release asset comes from the third address, in two interrupted
    pieces (resumed with a Range request), md5-checked, and reads back (binary or text) with the
    same vectors."""
    name = "word2vec-google-news-300" if binary else "glove-wiki-gigaword-100"
    data = release_asset(kv, tmp_path, binary)
    path = f"/releases/download/{name}/{name}.gz"
    range_server.files[path] = data
    range_server.cut[path] = len(data) // 2
    urls = [dead_url, range_server.url(f"/gone/{name}.gz"), range_server.url(path)]
    cache = tmp_path / "cache"
    loaded = load_keyed_vectors(name, cache_dir=cache, urls=urls, md5=hashlib.md5(data).hexdigest(),
                                progress=False, log=lambda m: None)
    assert gensim_offline == [name]                                   # gensim-data was tried first
    assert range_server.ranges(path) == [None, f"bytes={len(data) // 2}-"]
    assert (cache / f"{name}.gz").read_bytes() == data
    assert set(loaded.index_to_key) == set(WORDS)
    for w, v in WORDS.items():
        np.testing.assert_allclose(loaded[w], v, rtol=1e-6)


def test_gensim_data_known_name_checked_against_its_md5(tmp_path, kv, gensim_offline, range_server):
    """For a known gensim-data name the published md5 is checked: a file with other content is refused."""
    name = "glove-wiki-gigaword-100"
    data = release_asset(kv, tmp_path, binary=False)
    range_server.files[f"/{name}.gz"] = data
    with pytest.raises(Zs3Error, match=rf"got {hashlib.md5(data).hexdigest()}, expected 40ec481866001177b8cd4cb0df92924f"):
        load_keyed_vectors(name, cache_dir=tmp_path / "cache", urls=[range_server.url(f"/{name}.gz")],
                           progress=False, log=lambda m: None)
    assert list((tmp_path / "cache").iterdir()) == []


def test_gensim_data_all_fail_message(tmp_path, gensim_offline, range_server, dead_url):
    """Nothing reachable: one error naming embedding.source, gensim's failure, each release URL
    with its error, and the local alternatives."""
    name = "word2vec-google-news-300"
    urls = [dead_url, range_server.url(f"/{name}/{name}.gz")]
    with pytest.raises(Zs3Error) as e:
        load_keyed_vectors(name, cache_dir=tmp_path / "cache", urls=urls,
                           local_file="embeddings/voc2012-word2vec-zs3.txt", progress=False, log=lambda m: None)
    msg = str(e.value)
    assert msg.startswith(f"embedding.source: cannot load the gensim-data vectors '{name}': "
                          "gensim.downloader.load failed (OSError: <urlopen error [Errno 101] Network is unreachable>)")
    assert f"{urls[0]} (ConnectionRefusedError" in msg and f"{urls[1]} (HTTP 404 Not Found)" in msg
    assert "-S source=local (reads ${data_root}/embeddings/voc2012-word2vec-zs3.txt)" in msg
    assert "-S embedding.source=/path/to/vectors.bin" in msg
    assert gensim_offline == [name]


def test_real_glove_resolves_every_camvid_class(shared_data):
    """Every CamVid class of conf/dataset/camvid.yaml resolves in the shipped GloVe subset."""
    conf = yaml.safe_load((Path(__file__).parents[1] / "conf" / "dataset" / "camvid.yaml").read_text())
    classes = conf["dataset"]["classes"]
    aliases = conf["embedding"].get("aliases") or {}
    kv = load_keyed_vectors(str(shared_data / conf["embedding"]["local_file"]))
    emb, how = class_vectors(classes, kv, aliases)
    assert emb.shape == (len(classes), 100)
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    i = classes.index("sign symbol")
    expected = unit((kv["sign"].astype(np.float64) + kv["symbol"].astype(np.float64)) / 2)
    np.testing.assert_allclose(emb[i], expected, rtol=1e-4, atol=1e-6)
    assert how[classes.index("bicyclist")] == "key 'bicyclist'"
