"""The ImageNet leak report (zs3core/leak.py), against rules applied by hand."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from gensim.models import KeyedVectors

from zs3core.embeddings import class_vectors, load_keyed_vectors
from zs3core.leak import head_word, leak_free, leak_report, words_match


def test_head_words_and_name_rule_by_hand():
    assert head_word("tree frog") == "frog"
    assert head_word("bicycle-built-for-two") == "bicycle"
    assert head_word("potter's wheel") == "wheel"
    assert head_word("chainlink fence") == "fence"
    assert words_match("bicyclist", "bicycle")          # prefix bicycl: 6 of 7 letters
    assert not words_match("pedestrian", "pedestal")    # prefix pedest: 6 of 8 letters = 75 %
    assert not words_match("car", "cart")               # short words match by equality only
    assert not words_match("pole", "polecat")
    assert words_match("car", "car")


def test_report_on_toy_vectors():
    """Three 2-d words: 'fence' (1, 0), 'wall' at 60 degrees (cosine 0.5), 'gate' at 30 degrees
    (cosine 0.866). With threshold 0.7: 'picket fence' by name (cosine 1), 'iron gate' by vector,
    'stone wall' neither; 'sky' has no vector neighbour and no name match."""
    kv = KeyedVectors(2)
    kv.add_vectors(["fence", "wall", "gate", "sky"],
                   np.array([[1, 0], [0.5, np.sqrt(3) / 2], [np.sqrt(3) / 2, 0.5], [0, -1]], dtype=np.float32))
    imagenet = ["picket fence", "stone wall", "iron gate", "tree frog"]
    cv = np.array([[1, 0], [0, -1]], dtype=np.float32)
    rep = leak_report(["fence", "sky"], cv, kv, 0.7, imagenet=imagenet)
    fence = rep["classes"]["fence"]
    assert [r["imagenet"] for r in fence] == ["picket fence", "iron gate"]
    assert fence[0]["by"] == ["name", "vector"] and fence[0]["cosine"] == pytest.approx(1.0)
    assert fence[1]["by"] == ["vector"] and fence[1]["cosine"] == pytest.approx(np.sqrt(3) / 2, abs=1e-3)
    assert rep["classes"]["sky"] == []
    assert leak_free(rep) == ["sky"]
    assert rep["rule"]["imagenet_names_without_vector"] == 1       # 'frog'
    with pytest.raises(KeyError, match=r"leak_words: \['bike'\]"):
        leak_report(["fence"], cv[:1], kv, 0.7, {"bike": ["x"]}, imagenet=imagenet)


def test_camvid_leak_report_on_real_glove(shared_data):
    """On GloVe-100 and ImageNet-1k's names: the K=2 preset's unseen classes leak through the
    ImageNet classes everybody knows (three fences; two bicycles), car through passenger car;
    tree and pedestrian, the leak-free preset's unseen classes, have no close ImageNet class."""
    conf = yaml.safe_load(open("conf/dataset/camvid.yaml"))
    classes = conf["dataset"]["classes"]
    kv = load_keyed_vectors(str(shared_data / conf["embedding"]["local_file"]))
    emb, _ = class_vectors(classes, kv, {})
    rep = leak_report(classes, emb, kv, 0.7, conf["embedding"]["leak_words"])
    names = {c: {r["imagenet"] for r in rows} for c, rows in rep["classes"].items()}
    assert {"picket fence", "chainlink fence", "worm fence"} <= names["fence"]
    assert {"mountain bike", "bicycle-built-for-two"} <= names["bicyclist"]
    assert {"passenger car", "sports car"} <= names["car"]
    assert "street sign" in names["sign symbol"]
    assert "tree frog" not in names["tree"]
    assert names["tree"] == set() and names["pedestrian"] == set()
    unseen_free = yaml.safe_load(open("conf/experiment/camvid_cpu_leakfree.yaml"))["split"]["unseen"]
    assert set(unseen_free) <= set(leak_free(rep))
