"""params.yaml is the composition of conf/ defaults; source=local points at ../shared/data."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from zs3core.compose import compose
from zs3core.io import Zs3Error
from zs3core.params import get, load_params

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


def test_get_names_missing_and_mistyped_keys(tmp_path):
    """params.get returns dotted keys and names a missing or ill-typed key."""
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump({"split": {"k": 2, "unseen": []}}))
    p = load_params(f)
    assert get(p, "split.k") == 2
    assert get(p, "split.filter", "drop") == "drop"
    with pytest.raises(Zs3Error, match="missing key 'split.filter'"):
        get(p, "split.filter")
    with pytest.raises(Zs3Error, match="'split.k' must be list"):
        get(p, "split.k", types=list)


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
