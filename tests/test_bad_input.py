"""Bad input end to end: the split and embed stages, run as subprocesses on a tiny CamVid copy.

Each bad case must exit with status 2 (a clear input error, no traceback), name the file,
id or key in stderr together with what is wrong, and leave no output behind.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from gensim.models import KeyedVectors

from zs3core.compose import compose
from zs3core.io import Zs3Error
from zs3core.splits import resolve_unseen

REPO = Path(__file__).resolve().parents[1]
H, W = 24, 32
VOID = 11
FENCE, BICYCLIST = 7, 10           # the K=2 CamVid preset


def labels() -> dict[str, dict[str, np.ndarray]]:
    """Hand-made (24, 32) label maps; with unseen {fence, bicyclist} a and d are kept."""
    base = np.zeros((H, W), dtype=np.uint8)
    for c, cols in enumerate([range(4), range(4, 8), range(8, 12), range(12, 16), range(16, 20),
                              range(20, 24), range(24, 28)]):
        base[:, list(cols)] = c                      # classes 0..6 in vertical bands
    base[:, 28:30] = 8                               # car
    base[:, 30:32] = 9                               # pedestrian
    base[0:3, :] = VOID                              # void rows
    a = base.copy()
    b = base.copy()
    b[10, 10] = BICYCLIST                            # one single unseen pixel -> dropped
    c = base.copy()
    c[5:9, 0:6] = FENCE                              # a block of fence -> dropped
    d = np.full((H, W), VOID, dtype=np.uint8)
    d[20:, 28:] = 8                                  # void and car only -> kept
    e = base.copy()
    e[4:6, 4:6] = FENCE
    e[7, 7] = BICYCLIST
    return {"train": {"a": a, "b": b, "c": c, "d": d}, "val": {"e": e}}


EXPECTED_STATUS = {"a": "kept", "b": "dropped", "c": "dropped", "d": "kept", "e": "eval"}


@pytest.fixture(scope="module")
def base_params(tmp_path_factory) -> dict:
    """params.yaml content for dataset=camvid scale=tiny source=local (composed once)."""
    data_root = tmp_path_factory.mktemp("shared") / "data"
    text = compose(["dataset=camvid", "scale=tiny", "source=local", f"data_root={data_root}"],
                   config_dir=REPO / "conf")
    p = yaml.safe_load(text)
    assert p["dataset"]["source"] == f"{data_root}/camvid"
    return p


STAGE_ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
                 PYTHONPATH=str(REPO))  # stage subprocesses: zs3core from this checkout, installed or not


class Project:
    """A throw-away pipeline folder: stages/, params.yaml and data/raw (a tiny CamVid)."""

    def __init__(self, root: Path, params: dict):
        self.root, self.params = root, copy.deepcopy(params)
        self.raw = root / "data" / "raw"
        shutil.copytree(REPO / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
        self.save_params()

    def save_params(self) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(self.params, sort_keys=False))

    def set(self, key: str, value) -> None:
        node = self.params
        *parents, last = key.split(".")
        for k in parents:
            node = node[k]
        node[last] = value
        self.save_params()

    def run(self, stage: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=self.root, env=STAGE_ENV,
                              capture_output=True, text=True, timeout=300)

    def leftovers(self) -> list[Path]:
        return sorted(self.root.rglob(".zs3-stage-*"))


@pytest.fixture
def project(tmp_path, base_params, make_camvid) -> Project:
    proj = Project(tmp_path / "proj", base_params)
    make_camvid(proj.raw, labels())
    return proj


def assert_clean_failure(res: subprocess.CompletedProcess, proj: Project, fragments, outputs) -> None:
    assert res.returncode == 2, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error: ") or "\nerror: " in res.stderr, res.stderr
    for f in fragments:
        assert f in res.stderr, f"{f!r} not in stderr:\n{res.stderr}"
    for out in outputs:
        assert not (proj.root / out).exists(), f"{out} was written by a failing stage"
    assert proj.leftovers() == []


SPLIT_OUTPUTS = ["data/split", "metrics/split.json", "metrics"]


def corrupt_image(p: Project):
    (p.raw / "train" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a real PNG stream")


def label_out_of_range(p: Project):
    lab = labels()["train"]["c"]
    lab[3, 3] = 42
    from PIL import Image
    Image.fromarray(lab, mode="L").save(p.raw / "trainannot" / "c.png")


def size_mismatch(p: Project):
    from PIL import Image
    Image.new("RGB", (30, H), (10, 20, 30)).save(p.raw / "train" / "a.png")


def id_without_files(p: Project):
    with open(p.raw / "train.txt", "a") as f:
        f.write("train/ghost.png trainannot/ghost.png\n")


def missing_image(p: Project):
    (p.raw / "val" / "e.png").unlink()


def malformed_list(p: Project):
    lines = (p.raw / "train.txt").read_text().splitlines()
    lines[1] += " extra"
    (p.raw / "train.txt").write_text("\n".join(lines) + "\n")


def unknown_class(p: Project):
    p.set("split.unseen", ["car", "bus"])


def empty_unseen(p: Project):
    p.set("split.unseen", [])
    p.set("split.k", 3)          # CamVid has presets 2 and 4 only


def every_class(p: Project):
    p.set("split.unseen", list(p.params["dataset"]["classes"]))


@pytest.mark.parametrize("breaker,fragments", [
    (corrupt_image, ["train/b.png", "id 'b'", "corrupt"]),
    (label_out_of_range, ["trainannot/c.png", "id 'c'", "[42]", "outside"]),
    (size_mismatch, ["train/a.png", "id 'a'", "30x24", "32x24", "must match"]),
    (id_without_files, ["trainannot/ghost.png", "id 'ghost'", "does not exist"]),
    (missing_image, ["val/e.png", "id 'e'", "does not exist"]),
    (malformed_list, ["train.txt:2", "expected 'IMAGE LABEL'"]),
    (unknown_class, ["split.unseen", "'bus'", "unknown class"]),
    (empty_unseen, ["split.k", "K=3", "no preset"]),
    (every_class, ["split.unseen", "every class is unseen"]),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_split_rejects_bad_input(project, breaker, fragments):
    """split: exit 2, stderr names the culprit and the problem, no data/split nor metrics written."""
    breaker(project)
    res = project.run("split")
    assert_clean_failure(res, project, fragments, SPLIT_OUTPUTS)


def test_resolve_unseen_empty_directly(camvid_classes):
    """Empty names with an empty preset, and empty names with no such preset, are errors."""
    with pytest.raises(Zs3Error, match="unseen set is empty"):
        resolve_unseen(camvid_classes, {2: []}, 2, [])
    with pytest.raises(Zs3Error, match="no preset K=3"):
        resolve_unseen(camvid_classes, {2: ["fence"]}, 3, [])


@pytest.mark.parametrize("image_ext", [".png", ".jpg"])
def test_split_good_manifest(tmp_path, base_params, make_camvid, image_ext):
    """split on hand-made labels: one manifest row per image, hand-checked status and counts.

    With .jpg the lists still name .png images (as the SegNet lists do) and the re-encoded
    .jpg files are found instead.
    """
    proj = Project(tmp_path / "proj", base_params)
    labs = labels()
    make_camvid(proj.raw, labs, image_ext=image_ext)
    res = proj.run("split")
    assert res.returncode == 0, res.stderr
    assert proj.leftovers() == []

    df = pd.read_csv(proj.root / "data/split/manifest.csv", dtype={"id": str})
    assert df["id"].tolist() == ["a", "b", "c", "d", "e"]
    assert df["split"].tolist() == ["train"] * 4 + ["val"]
    assert dict(zip(df["id"], df["status"])) == EXPECTED_STATUS
    assert df.loc[df.id == "a", "image"].item() == f"train/a{image_ext}"
    assert df.loc[df.id == "e", "label"].item() == "valannot/e.png"
    classes = proj.params["dataset"]["classes"]
    for split, items in labs.items():
        for sid, lab in items.items():
            row = df[df.id == sid].iloc[0]
            for c, name in enumerate(classes):
                assert row[f"px_{name.replace(' ', '_')}"] == int((lab == c).sum()), (sid, name)

    cls = json.loads((proj.root / "data/split/classes.json").read_text())
    assert cls["unseen"] == [FENCE, BICYCLIST]
    assert cls["unseen_names"] == ["fence", "bicyclist"]
    m = json.loads((proj.root / "metrics/split.json").read_text())
    assert (m["train_images"], m["kept"], m["dropped_to_pool"]) == (4, 2, 2)
    assert m["eval_images"] == {"val": 1}


# ---------------------------------------------------------------- embed

EMBED_OUTPUTS = ["data/embed", "plots/embed", "plots"]
WORDS = ["sky", "building", "pole", "road", "pavement", "tree", "sign", "symbol", "fence", "car",
         "pedestrian", "bicyclist"]


def write_vectors(path: Path, words: list[str], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = {w: rng.normal(size=8).astype(np.float32) for w in words}
    kv = KeyedVectors(vector_size=8)
    kv.add_vectors(list(vecs), np.stack(list(vecs.values())))
    kv.save_word2vec_format(str(path), binary=path.suffix == ".bin")
    return vecs


def test_embed_missing_word(project, tmp_path):
    """embed: a class word absent from the vectors fails naming it; nothing written."""
    vec_file = tmp_path / "vectors.txt"
    write_vectors(vec_file, [w for w in WORDS if w != "bicyclist"])
    project.set("embedding.source", str(vec_file))
    res = project.run("embed")
    assert_clean_failure(res, project, ["embedding", "missing", "class 'bicyclist'", "['bicyclist']"], EMBED_OUTPUTS)


def test_embed_missing_vector_file(project, tmp_path):
    """embed: a vector file that does not exist fails naming the key and the path."""
    project.set("embedding.source", str(tmp_path / "nowhere" / "vectors.bin"))
    res = project.run("embed")
    assert_clean_failure(res, project, ["embedding.source", "nowhere/vectors.bin", "does not exist"], EMBED_OUTPUTS)


def test_embed_good(project, tmp_path):
    """embed with every word present: unit rows, 'sign symbol' = normalised mean of its words."""
    vec_file = tmp_path / "vectors.txt"
    write_vectors(vec_file, WORDS)
    project.set("embedding.source", str(vec_file))
    res = project.run("embed")
    assert res.returncode == 0, res.stderr
    saved = torch.load(project.root / "data/embed/class_embeddings.pt", weights_only=False)
    classes = project.params["dataset"]["classes"]
    assert saved["classes"] == classes
    emb = saved["embeddings"].numpy()
    assert emb.shape == (11, 8)
    loaded = KeyedVectors.load_word2vec_format(str(vec_file))   # text format rounds the values
    for i, name in enumerate(classes):
        v = np.mean([loaded[w].astype(np.float64) for w in name.split()], axis=0)
        np.testing.assert_allclose(emb[i], v / np.linalg.norm(v), rtol=1e-5, atol=1e-6)
    assert (project.root / "plots/embed/similarity.png").is_file()
    assert project.leftovers() == []
