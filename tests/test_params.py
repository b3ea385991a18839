"""params.yaml is the composition of conf/ defaults; every composition loads through the typed views,
and a bad value is one error naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from zs3core.compose import compose
from zs3core.io import Zs3Error
from zs3core.config import config_from_dict, load_config

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_committed_params_are_the_default_composition():
    """The committed params.yaml equals compose([]) of conf/ (regenerate it when conf/ changes)."""
    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    composed = yaml.safe_load(compose([], config_dir=CONF))
    a, b = flatten(committed), flatten(composed)
    diff = {k: (a.get(k, "<absent>"), b.get(k, "<absent>"))
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")}
    assert committed == composed, (
        f"params.yaml is stale (key: (committed, composed)): {diff}; "
        "regenerate it with `python -m zs3core.compose > params.yaml`")


def test_camvid_cpu_local_composition():
    """dataset=camvid scale=cpu source=local resolves the local paths under ../shared/data."""
    p = yaml.safe_load(compose(["dataset=camvid", "scale=cpu", "source=local"], config_dir=CONF))
    assert p["data_root"] == "../shared/data"
    assert p["dataset"]["source"] == "../shared/data/camvid"
    assert p["embedding"]["source"] == "../shared/data/embeddings/glove-wiki-gigaword-100-top50k.bin"
    assert p["dataset"]["name"] == "camvid" and p["dataset"]["ignore_index"] == 11
    assert p["scale"]["name"] == "cpu"


DATASETS, SCALES = ("voc2012", "context", "camvid"), ("paper", "cpu", "tiny")
GENERATORS = tuple(sorted(p.stem for p in (CONF / "generator").glob("*.yaml")))


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("generator", GENERATORS)
def test_every_composition_loads_through_the_typed_views(dataset, scale, generator):
    """dataset x scale x generator: every key present, typed and in range, nothing unknown."""
    cfg = config_from_dict(yaml.safe_load(compose([f"dataset={dataset}", f"scale={scale}", f"generator={generator}"],
                                                  config_dir=CONF)))
    assert cfg.dataset.name == dataset and cfg.scale.name == scale
    assert (cfg.generator.primitive is not None) == generator.startswith("pading")
    from zs3core.generators import get_kind

    get_kind(cfg.generator.kind)   # every group names a registered kind


def _bad(key: str, value):
    raw = yaml.safe_load(compose([], config_dir=CONF))
    node = raw
    *path, last = key.split(".")
    for part in path:
        node = node[part]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return raw


@pytest.mark.parametrize("key,value,message", [
    ("backbone.lr", "fast", r"backbone\.lr must be a number > 0, got 'fast'"),
    ("split.k", "two", r"split\.k must be an integer >= 1 or null, got 'two'"),
    ("classifier.epochs", -1, r"classifier\.epochs must be an integer >= 1, got -1"),
    ("scale.max_train_images", -1, r"scale\.max_train_images must be an integer >= 1 or null, got -1"),
    ("split.filter", "dorp", r"split\.filter must be one of 'drop', 'ignore', 'oracle', got 'dorp'"),
    ("self_training.top_p", 120, r"self_training\.top_p must be a number >= 0 and <= 100, got 120"),
    ("backbone.amp", "yes", r"backbone\.amp must be true or false, got 'yes'"),
    ("generator.mmd.bandwidths", [2, -1], r"generator\.mmd\.bandwidths must all be > 0"),
    ("classifier.lr", KeyError, r"missing key 'classifier\.lr'"),
    ("classifier.lrr", 0.1, r"unknown key\(s\) classifier\.lrr"),
])
def test_bad_values_name_the_key(key, value, message):
    with pytest.raises(Zs3Error, match=message):
        config_from_dict(_bad(key, value))


def test_committed_params_load(tmp_path):
    cfg = load_config(REPO / "params.yaml")
    assert cfg.dataset.name == "camvid" and cfg.scale.name == "cpu" and cfg.generator.kind == "gmmn"
    (tmp_path / "p.yaml").write_text("- a list\n")
    with pytest.raises(Zs3Error, match="expected a mapping"):
        load_config(tmp_path / "p.yaml")


@pytest.mark.parametrize("dataset,top_p", [("voc2012", 25), ("camvid", 25), ("context", 75)])
def test_self_training_top_p_per_dataset(dataset, top_p):
    """ZS5Net's p: conf/config.yaml's 25 (paper, VOC) unless the dataset overrides it (Context: 75)."""
    p = yaml.safe_load(compose([f"dataset={dataset}"], config_dir=CONF))
    assert p["self_training"]["top_p"] == top_p
    p = yaml.safe_load(compose([f"dataset={dataset}", "self_training.top_p=50"], config_dir=CONF))
    assert p["self_training"]["top_p"] == 50          # a command-line override still wins


def test_context_local_composition():
    """dataset=context source=local: the converted copy and the official ZS3Net vectors under ../shared/data."""
    p = yaml.safe_load(compose(["dataset=context", "source=local"], config_dir=CONF))
    assert p["dataset"]["source"] == "../shared/data/context"
    assert p["embedding"]["source"] == "../shared/data/embeddings/context-word2vec-zs3.txt"
    assert p["dataset"]["layout"] == "context" and len(p["dataset"]["classes"]) == 60
    assert p["dataset"]["classes"][11] == "table" and p["dataset"]["classes"][-1] == "wood"
    assert [e["name"] for e in p["dataset"]["extra"]] == ["context"]
