"""VOC + SBD (train_aug) and Pascal-Context (59 classes) built from archives in the official formats.

Tiny archives are written in tmp_path with the layouts of the official releases:

* ``VOCtrainval_11-May-2012.tar``: ``VOCdevkit/VOC2012/{JPEGImages, SegmentationClass (palette
  PNG), ImageSets/Segmentation/{train,val,trainval}.txt}``;
* ``benchmark.tgz``: ``benchmark_RELEASE/dataset/{img, cls, inst, train.txt, val.txt}``, each
  ``cls/<id>.mat`` a MATLAB struct ``GTcls`` (Boundaries, Segmentation, CategoriesPresent) and
  each ``inst/<id>.mat`` a struct ``GTinst``, written with ``scipy.io.savemat``;
* ``VOCtrainval_03-May-2010.tar``: ``VOCdevkit/VOC2010/{JPEGImages, ImageSets/Main/{train,val}.txt}``;
* the Context ``trainval.tar.gz``: ``trainval/<id>.mat`` (uint16 ``LabelMap``) and ``labels.txt``
  (``id: name`` lines).

The download, split and embed stages then run as subprocesses in a throw-away project, and
every output is compared with values written down by hand.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse
import torch
import yaml
from gensim.models import KeyedVectors
from PIL import Image

from zs3core.compose import compose
from zs3core.data.context import context_ids, convert_context, read_labels_txt
from zs3core.data.download import parse_extras, prepare_dataset
from zs3core.data.layouts import find_root, list_samples, read_label
from zs3core.data.sbd import convert_sbd, read_sbd_class_map
from zs3core.io import Zs3Error
from zs3core.splits import resolve_unseen

REPO = Path(__file__).resolve().parents[1]
H, W = 12, 16
V = 255

# ------------------------------------------------------------------ hand-made VOC 2012 + SBD

VOC_TRAIN = ["2007_000032", "2007_000039"]
VOC_VAL = ["2007_000033", "2007_000042"]
SBD_TRAIN = ["2007_000039", "2008_000002", "2008_000003", "2007_000033"]
SBD_VAL = ["2008_000008", "2008_000009"]
# (VOC train | SBD train | SBD val) - VOC val, sorted, worked out by hand:
TRAIN_AUG = ["2007_000032", "2007_000039", "2008_000002", "2008_000003", "2008_000008", "2008_000009"]
NO_VOC_JPEG = "2008_000009"          # in SBD only: its image must come from SBD img/


def _map(fill: int, blocks: list[tuple[slice, slice, int]]) -> np.ndarray:
    a = np.full((H, W), fill, dtype=np.uint8)
    for rows, cols, v in blocks:
        a[rows, cols] = v
    return a


def voc_masks() -> dict[str, np.ndarray]:
    """Official VOC masks (with 255 borders). VOC classes: 10 cow, 14 motorbike, 15 person."""
    return {
        "2007_000032": _map(0, [(slice(2, 8), slice(3, 9), 15), (slice(1, 2), slice(2, 10), V)]),
        "2007_000039": _map(0, [(slice(4, 10), slice(0, 6), 10), (slice(3, 4), slice(0, 7), V)]),
        "2007_000033": _map(0, [(slice(0, 5), slice(10, 16), 10), (slice(5, 6), slice(9, 16), V)]),
        "2007_000042": _map(0, [(slice(6, 12), slice(6, 12), 19)]),
    }


def sbd_maps() -> dict[str, np.ndarray]:
    """SBD class maps (0..20, no void). 2007_000039 and 2007_000033 differ from the official masks."""
    return {
        "2007_000039": _map(13, []),                                                   # all horse
        "2007_000033": _map(12, []),                                                   # all dog
        "2008_000002": _map(0, [(slice(0, 6), slice(0, 8), 14)]),                      # motorbike
        "2008_000003": _map(0, [(slice(0, 4), slice(0, 4), 1), (slice(8, 12), slice(8, 16), 18)]),  # aeroplane, sofa
        "2008_000008": _map(8, [(slice(0, 2), slice(0, 2), 0)]),                       # cat
        "2008_000009": _map(0, [(slice(0, 6), slice(0, 6), 9), (slice(6, 8), slice(0, 2), 5)]),  # chair, bottle
    }


def write_jpg(path: Path, seed: int, size=(W, H)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


def write_palette_png(path: Path, lab: np.ndarray) -> None:
    """A palette PNG like the devkit's SegmentationClass (indices = class values)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(lab.astype(np.uint8))
    im.putpalette([(v * 37) % 256 for v in range(768)])   # colours are irrelevant to the indices
    im.save(path)


def write_sbd_cls(path: Path, seg: np.ndarray) -> None:
    """An SBD cls file: MATLAB struct GTcls {Boundaries: 20x1 cell of sparse, Segmentation, CategoriesPresent}."""
    bounds = np.empty((20, 1), dtype=object)
    for c in range(20):
        edge = np.zeros(seg.shape)
        ys, xs = np.nonzero(seg == c + 1)
        edge[ys[:1], xs[:1]] = 1.0
        bounds[c, 0] = scipy.sparse.csc_matrix(edge)
    cats = np.unique(seg[seg > 0]).astype(np.uint8).reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"GTcls": {"Boundaries": bounds, "Segmentation": seg.astype(np.uint8),
                                           "CategoriesPresent": cats}})


def write_sbd_inst(path: Path, seg: np.ndarray) -> None:
    """An SBD inst file: struct GTinst {Segmentation (instance ids), Boundaries, Categories}."""
    inst = (seg > 0).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    bounds = np.empty((1, 1), dtype=object)
    bounds[0, 0] = scipy.sparse.csc_matrix(np.zeros(seg.shape))
    scipy.io.savemat(str(path), {"GTinst": {"Segmentation": inst, "Boundaries": bounds,
                                            "Categories": np.array([[int(seg.max())]], dtype=np.uint8)}})


def make_voc2012(root: Path) -> Path:
    """``root/VOCdevkit/VOC2012`` with JPEGs (not for NO_VOC_JPEG), official masks and lists."""
    voc = root / "VOCdevkit" / "VOC2012"
    ids = sorted(set(VOC_TRAIN) | set(VOC_VAL) | set(SBD_TRAIN) | set(SBD_VAL) | {"2009_000001"})
    for n, i in enumerate(ids):
        if i != NO_VOC_JPEG:
            write_jpg(voc / "JPEGImages" / f"{i}.jpg", n)
    for i, lab in voc_masks().items():
        write_palette_png(voc / "SegmentationClass" / f"{i}.png", lab)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    for name, ids_ in [("train", VOC_TRAIN), ("val", VOC_VAL), ("trainval", sorted(VOC_TRAIN + VOC_VAL))]:
        (sets / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids_))
    return voc


def make_sbd(root: Path) -> Path:
    """``root/benchmark_RELEASE/dataset`` with img/, cls/, inst/, train.txt, val.txt."""
    ds = root / "benchmark_RELEASE" / "dataset"
    for n, (i, seg) in enumerate(sbd_maps().items()):
        write_jpg(ds / "img" / f"{i}.jpg", 100 + n)
        write_sbd_cls(ds / "cls" / f"{i}.mat", seg)
        write_sbd_inst(ds / "inst" / f"{i}.mat", seg)
    (ds / "train.txt").write_text("".join(f"{i}\n" for i in SBD_TRAIN))
    (ds / "val.txt").write_text("".join(f"{i}\n" for i in SBD_VAL))
    return ds


def tar_of(src: Path, out: Path) -> Path:
    """Pack the children of ``src`` at the archive root (as the official archives are)."""
    with tarfile.open(out, "w:gz" if out.name.endswith(("gz", ".tgz")) else "w") as t:
        for child in sorted(src.iterdir()):
            t.add(child, arcname=child.name)
    return out


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ hand-made VOC2010 + Context

# labels.txt of the Context release: "id: name", ids from 1 (a subset of the 459 lines:
# the 59 benchmark classes at their official ids plus a few others).
CONTEXT_LABELS = {
    1: "accordion", 2: "aeroplane", 3: "air conditioner", 9: "bag", 18: "bed", 19: "bedclothes",
    22: "bench", 23: "bicycle", 25: "bird", 31: "boat", 33: "book", 34: "bottle", 44: "building",
    45: "bus", 46: "cabinet", 59: "car", 65: "cat", 68: "ceiling", 72: "chair", 80: "cloth",
    85: "computer", 98: "cow", 104: "cup", 105: "curtain", 113: "dog", 115: "door", 144: "fence",
    158: "floor", 159: "flower", 162: "food", 187: "grass", 189: "ground", 207: "horse",
    220: "keyboard", 232: "light", 258: "motorbike", 259: "mountain", 260: "mouse", 284: "person",
    295: "plate", 296: "platform", 300: "pole", 308: "pottedplant", 324: "road", 326: "rock",
    347: "sheep", 349: "shelves", 354: "sidewalk", 355: "sign", 360: "sky", 366: "snow", 368: "sofa",
    397: "table", 415: "track", 416: "train", 420: "tree", 424: "truck", 427: "tvmonitor", 440: "wall",
    445: "water", 454: "window", 458: "wood", 459: "zebra",
}
# Full-context id -> 59-class label value (index in conf/dataset/context.yaml), by hand;
# unlabelled 0 and every id outside the 59 (accordion, pole, zebra) -> background 0.
EXPECTED_VALUE = {0: 0, 1: 0, 300: 0, 459: 0, 2: 1, 98: 10, 397: 11, 258: 14, 427: 20, 9: 21, 144: 32,
                  220: 38, 458: 59}
CTX_TRAIN = ["2008_000002", "2008_000003", "2008_000007"]     # 2008_000007: no annotation
CTX_VAL = ["2008_000008", "2008_000009"]


def ctx_maps() -> dict[str, np.ndarray]:
    def m(fill, blocks):
        a = np.full((H, W), fill, dtype=np.uint16)
        for rows, cols, v in blocks:
            a[rows, cols] = v
        return a
    return {
        "2008_000002": m(300, [(slice(0, 6), slice(0, 8), 98), (slice(6, 12), slice(0, 3), 2)]),    # cow, aeroplane, pole
        "2008_000003": m(0, [(slice(0, 3), slice(0, 16), 9), (slice(3, 6), slice(0, 5), 458),        # bag, wood,
                             (slice(6, 9), slice(0, 16), 397), (slice(9, 12), slice(0, 2), 220),      # table, keyboard,
                             (slice(9, 12), slice(2, 4), 1)]),                                        # accordion
        "2008_000008": m(144, [(slice(0, 4), slice(0, 4), 427), (slice(4, 5), slice(4, 5), 459)]),   # fence, tvmonitor, zebra
        "2008_000009": m(0, [(slice(0, 12), slice(8, 16), 258)]),                                    # motorbike
        "2008_000010": m(2, []),                                                                     # not in Main lists
    }


def expected_context(labelmap: np.ndarray) -> np.ndarray:
    out = np.zeros(labelmap.shape, dtype=np.uint8)
    for full_id, value in EXPECTED_VALUE.items():
        out[labelmap == full_id] = value
    return out


def make_voc2010(root: Path) -> Path:
    voc = root / "VOCdevkit" / "VOC2010"
    for n, i in enumerate(CTX_TRAIN + CTX_VAL + ["2008_000010"]):
        write_jpg(voc / "JPEGImages" / f"{i}.jpg", 200 + n)
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_text("".join(f"{i}\n" for i in CTX_TRAIN))
    (main / "val.txt").write_text("".join(f"{i}\n" for i in CTX_VAL))
    (main / "trainval.txt").write_text("".join(f"{i}\n" for i in sorted(CTX_TRAIN + CTX_VAL)))
    seg = voc / "ImageSets" / "Segmentation"       # the VOC2010 segmentation lists exist too
    seg.mkdir(parents=True)
    (seg / "train.txt").write_text("2008_000002\n")
    return voc


def make_context_annotations(root: Path) -> Path:
    """``root/trainval/<id>.mat`` (uint16 LabelMap) and ``root/labels.txt``."""
    for i, lab in ctx_maps().items():
        (root / "trainval").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(str(root / "trainval" / f"{i}.mat"), {"LabelMap": lab})
    (root / "labels.txt").write_text("".join(f"{k}: {v}\n" for k, v in sorted(CONTEXT_LABELS.items())))
    return root


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "P", f"{path}: {im.mode}"
        return np.array(im)


# ------------------------------------------------------------------ unit level

def test_sbd_mat_reads_as_the_official_struct(tmp_path):
    """A GTcls struct written by savemat reads back (the loadmat access of torchvision/ZS3Net)."""
    seg = sbd_maps()["2008_000003"]
    write_sbd_cls(tmp_path / "x.mat", seg)
    raw = scipy.io.loadmat(str(tmp_path / "x.mat"))["GTcls"]
    assert raw.shape == (1, 1) and set(raw.dtype.names) == {"Boundaries", "Segmentation", "CategoriesPresent"}
    out = read_sbd_class_map(tmp_path / "x.mat")
    assert out.dtype == np.uint8 and np.array_equal(out, seg)


def test_sbd_mat_errors_name_the_file(tmp_path):
    """Not a GTcls file, a class value above 20, or garbage: Zs3Error naming the file."""
    scipy.io.savemat(str(tmp_path / "inst.mat"), {"GTinst": {"Segmentation": np.zeros((2, 2), np.uint8)}})
    with pytest.raises(Zs3Error, match=r"inst\.mat: no struct GTcls.*GTinst"):
        read_sbd_class_map(tmp_path / "inst.mat")
    write_sbd_cls(tmp_path / "big.mat", np.full((2, 2), 21, np.uint8))
    with pytest.raises(Zs3Error, match=r"big\.mat.*\[21\].*0\.\.20"):
        read_sbd_class_map(tmp_path / "big.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(Zs3Error, match=r"junk\.mat: cannot be read"):
        read_sbd_class_map(tmp_path / "junk.mat")


def test_convert_sbd_by_hand(tmp_path):
    """Aug masks: official where VOC has one (byte-identical), SBD map otherwise; train_aug by hand."""
    voc = make_voc2012(tmp_path / "voc")
    sbd = make_sbd(tmp_path / "sbd")
    stats = convert_sbd(sbd, voc, progress=False)
    assert (voc / "ImageSets/Segmentation/train_aug.txt").read_text().split() == TRAIN_AUG
    assert stats == {"train_aug": 6, "masks": 8, "from_voc": 4, "from_sbd": 4, "images_copied": 1}
    aug = voc / "SegmentationClassAug"
    assert sorted(p.stem for p in aug.glob("*.png")) == sorted(set(voc_masks()) | set(sbd_maps()))
    for i, lab in voc_masks().items():   # official masks win, 255 borders kept
        assert (aug / f"{i}.png").read_bytes() == (voc / "SegmentationClass" / f"{i}.png").read_bytes()
        assert np.array_equal(read_png(aug / f"{i}.png"), lab)
    for i, seg in sbd_maps().items():
        if i not in voc_masks():
            assert np.array_equal(read_png(aug / f"{i}.png"), seg), i
    assert (voc / "JPEGImages" / f"{NO_VOC_JPEG}.jpg").read_bytes() == \
        (sbd / "img" / f"{NO_VOC_JPEG}.jpg").read_bytes()
    # The layout then lists train_aug with the aug masks, val with the official masks.
    train = list_samples(voc, "voc", "train", use_aug=True)
    assert [s.id for s in train] == TRAIN_AUG
    assert {s.label for s in train} == {f"SegmentationClassAug/{i}.png" for i in TRAIN_AUG}
    assert [s.label for s in list_samples(voc, "voc", "val", use_aug=True)] == \
        [f"SegmentationClass/{i}.png" for i in VOC_VAL]


def test_convert_sbd_id_without_mask(tmp_path):
    """An id listed by SBD with no .mat and no official mask: error naming it."""
    voc = make_voc2012(tmp_path / "voc")
    sbd = make_sbd(tmp_path / "sbd")
    (sbd / "cls" / "2008_000002.mat").unlink()
    with pytest.raises(Zs3Error, match=r"2008_000002\.mat: id '2008_000002'.*neither"):
        convert_sbd(sbd, voc, progress=False)


@pytest.fixture(scope="module")
def context_classes() -> list[str]:
    return yaml.safe_load(compose(["dataset=context"], config_dir=REPO / "conf"))["dataset"]["classes"]


def test_context_conversion_by_hand(tmp_path, context_classes):
    """59-class PNGs equal the hand mapping; classes outside the 59 -> 0; lists = Main ids with a .mat."""
    voc = make_voc2010(tmp_path / "voc")
    ann = make_context_annotations(tmp_path / "ann")
    stats = convert_context(ann / "trainval", ann / "labels.txt", voc, context_classes, progress=False)
    assert stats == {"train": 2, "val": 2, "missing": 1}
    sets = voc / "ImageSets" / "SegmentationContext"
    assert (sets / "train.txt").read_text().split() == ["2008_000002", "2008_000003"]
    assert (sets / "val.txt").read_text().split() == CTX_VAL
    maps = ctx_maps()
    for i in ["2008_000002", "2008_000003"] + CTX_VAL:
        got = read_png(voc / "SegmentationClassContext" / f"{i}.png")
        assert np.array_equal(got, expected_context(maps[i])), i
    assert not (voc / "SegmentationClassContext" / "2008_000010.png").exists()
    # a few values by eye: accordion and pole are background, zebra too
    got3 = read_png(voc / "SegmentationClassContext" / "2008_000003.png")
    assert got3[0, 0] == 21 and got3[4, 0] == 59 and got3[7, 0] == 11 and got3[10, 0] == 38 and got3[10, 3] == 0
    assert find_root(tmp_path / "voc", "context") == voc
    smp = list_samples(voc, "context", "val")
    assert [(s.image, s.label) for s in smp] == [(f"JPEGImages/{i}.jpg", f"SegmentationClassContext/{i}.png")
                                                 for i in CTX_VAL]
    assert np.array_equal(read_label(voc, smp[0], 60, 255), expected_context(maps["2008_000008"]))


def test_context_class_ids_match_the_hand_table(context_classes):
    """Every class name resolves through labels.txt to the id written by hand above."""
    ids = context_ids(context_classes, CONTEXT_LABELS)
    by_name = {v: k for k, v in CONTEXT_LABELS.items()}
    assert ids == [by_name[c] for c in context_classes[1:]]
    assert context_ids(context_classes, None) == ids           # the built-in official table agrees
    assert len(set(ids)) == 59


def test_context_bad_names_and_labels(tmp_path, context_classes):
    """Unknown class, background not first, wrong id, malformed labels.txt: named errors."""
    with pytest.raises(Zs3Error, match=r"dataset\.classes.*\['spaceship'\]"):
        context_ids(context_classes + ["spaceship"], CONTEXT_LABELS)
    with pytest.raises(Zs3Error, match=r"first Context class must be 'background'"):
        context_ids(context_classes[1:], CONTEXT_LABELS)
    shifted = {k + 1 if v == "cow" else k: v for k, v in CONTEXT_LABELS.items()}
    with pytest.raises(Zs3Error, match=r"labels\.txt: ids differ.*'cow': 99 \(official 98\)"):
        context_ids(context_classes, shifted)
    bad = tmp_path / "labels.txt"
    bad.write_text("1: accordion\n2 aeroplane\n")
    with pytest.raises(Zs3Error, match=r"labels\.txt:2: expected 'id: name'"):
        read_labels_txt(bad)


def test_context_labelmap_missing(tmp_path, context_classes):
    """A .mat without LabelMap is refused, naming the file."""
    voc = make_voc2010(tmp_path / "voc")
    ann = make_context_annotations(tmp_path / "ann")
    scipy.io.savemat(str(ann / "trainval" / "2008_000003.mat"), {"Label": np.zeros((H, W), np.uint16)})
    with pytest.raises(Zs3Error, match=r"2008_000003\.mat: no variable LabelMap"):
        convert_context(ann / "trainval", ann / "labels.txt", voc, context_classes, progress=False)


def test_parse_extras_errors():
    """dataset.extra entries are validated and named by index."""
    assert parse_extras([], "voc") == {}
    assert parse_extras([{"name": "sbd", "urls": ["u", "v"], "md5": None}], "voc") == \
        {"sbd": {"urls": ["u", "v"], "md5": None, "source": None}}
    with pytest.raises(Zs3Error, match=r"dataset\.extra\[0\]\.name: unknown extra archive 'coco'"):
        parse_extras([{"name": "coco"}], "voc")
    with pytest.raises(Zs3Error, match=r"dataset\.extra\[0\]\.name: 'sbd' completes the 'voc' layout, not 'context'"):
        parse_extras([{"name": "sbd"}], "context")
    with pytest.raises(Zs3Error, match=r"dataset\.extra\[1\].*listed twice"):
        parse_extras([{"name": "sbd"}, {"name": "sbd"}], "voc")
    with pytest.raises(Zs3Error, match=r"dataset\.extra\[0\]: unknown key\(s\) \['sha'\]"):
        parse_extras([{"name": "sbd", "sha": "x"}], "voc")


def test_preconverted_local_folder_is_copied_unchanged(tmp_path):
    """A local VOC folder that already holds SegmentationClassAug + train_aug.txt: copied as is,
    even when an SBD archive is listed (nothing fetched)."""
    voc = make_voc2012(tmp_path / "src")
    convert_sbd(make_sbd(tmp_path / "sbd"), voc, progress=False)
    before = {p.relative_to(tmp_path / "src"): p.read_bytes() for p in (tmp_path / "src").rglob("*") if p.is_file()}
    msgs = []
    root = prepare_dataset(str(tmp_path / "src"), tmp_path / "raw", "voc",
                           extras=[{"name": "sbd", "urls": ["http://127.0.0.1:9/none.tgz"], "md5": "0" * 32,
                                    "source": "download"}], log=msgs.append, progress=False)
    assert root == tmp_path / "raw" / "VOCdevkit" / "VOC2012"
    after = {p.relative_to(tmp_path / "raw"): p.read_bytes() for p in (tmp_path / "raw").rglob("*") if p.is_file()}
    assert after == before
    assert "already holds SegmentationClassAug" in msgs[0]


def test_context_local_without_annotations_is_a_clear_error(tmp_path, context_classes):
    """A VOC2010 folder without converted Context labels and no annotation archive: error saying what to give."""
    make_voc2010(tmp_path / "src")
    with pytest.raises(Zs3Error, match=r"no converted Pascal-Context labels.*trainval\.tar\.gz"):
        prepare_dataset(str(tmp_path / "src"), tmp_path / "raw", "context", extras=[], classes=context_classes)


# ------------------------------------------------------------------ stages end to end

class Project:
    """A throw-away pipeline folder: stages/ and params.yaml; stages run as subprocesses."""

    def __init__(self, root: Path, params: dict):
        self.root, self.params = root, copy.deepcopy(params)
        root.mkdir(parents=True, exist_ok=True)
        shutil.copytree(REPO / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
        (root / "params.yaml").write_text(yaml.safe_dump(self.params, sort_keys=False))

    def run(self, stage: str) -> subprocess.CompletedProcess:
        # PYTHONPATH: the stages import this checkout's zs3core, whatever copy pip has installed
        pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONPATH=pythonpath)
        return subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=self.root, env=env,
                              capture_output=True, text=True, timeout=300, check=False)

    def ok(self, stage: str) -> str:
        res = self.run(stage)
        assert res.returncode == 0, f"{stage} exit {res.returncode}\n{res.stdout}\n{res.stderr}"
        assert not list(self.root.glob(".zs3-stage-*"))
        return res.stdout


def write_vectors(path: Path, words: list[str]) -> None:
    rng = np.random.default_rng(1)
    kv = KeyedVectors(vector_size=6)
    kv.add_vectors(list(words), rng.normal(size=(len(words), 6)).astype(np.float32))
    kv.save_word2vec_format(str(path), binary=False)


def check_embed(proj: Project, vec_file: Path, classes: list[str]) -> None:
    """embed: one unit row per class, equal to the file's vector of that name, normalised."""
    proj.ok("embed")
    saved = torch.load(proj.root / "data/embed/class_embeddings.pt", weights_only=False)
    assert saved["classes"] == classes
    kv = KeyedVectors.load_word2vec_format(str(vec_file))
    emb = saved["embeddings"].numpy()
    for n, c in enumerate(classes):
        v = kv[c].astype(np.float64)
        np.testing.assert_allclose(emb[n], v / np.linalg.norm(v), rtol=1e-5, atol=1e-6)




def test_voc_sbd_download_split_embed_over_http(tmp_path, http_server):
    """VOC tar + benchmark.tgz served over HTTP: download builds train_aug, split and embed agree
    with the hand-made maps."""
    www, base = http_server
    voc_tar = tar_of(make_voc2012(tmp_path / "vocsrc").parents[1], www / "VOCtrainval_11-May-2012.tar")
    sbd_tgz = tar_of(make_sbd(tmp_path / "sbdsrc").parents[1], www / "benchmark.tgz")
    p = yaml.safe_load(compose(["dataset=voc2012", "scale=tiny"], config_dir=REPO / "conf"))
    p["dataset"]["urls"], p["dataset"]["md5"] = [f"{base}/{voc_tar.name}"], md5_of(voc_tar)
    assert [e["name"] for e in p["dataset"]["extra"]] == ["sbd"]
    p["dataset"]["extra"][0].update(urls=[f"{base}/benchmark.tgz"], md5=md5_of(sbd_tgz))
    vec_file = tmp_path / "vectors.txt"
    write_vectors(vec_file, p["dataset"]["classes"])
    p["embedding"]["source"] = str(vec_file)
    proj = Project(tmp_path / "proj", p)

    out = proj.ok("download")
    assert "built train_aug from SBD" in out
    voc = proj.root / "data/raw/VOCdevkit/VOC2012"
    assert (voc / "ImageSets/Segmentation/train_aug.txt").read_text().split() == TRAIN_AUG
    assert (proj.root / "data/.downloads/benchmark.tgz").is_file()     # cached for re-runs
    assert json.loads((proj.root / "data/raw_source.json").read_text()) == {
        "source": "download", "dataset_root": "VOCdevkit/VOC2012", "kind": "download",
        "urls": [f"{base}/{voc_tar.name}"], "archive": f"data/.downloads/{voc_tar.name}"}
    assert not list((proj.root / "data").glob("**/benchmark_RELEASE"))  # extracted SBD removed

    proj.ok("split")
    df = pd.read_csv(proj.root / "data/split/manifest.csv", dtype={"id": str})
    assert df[df.split == "train"]["id"].tolist() == TRAIN_AUG
    assert df[df.split == "val"]["id"].tolist() == VOC_VAL
    # K=2 (cow, motorbike): 2007_000039 (official mask: cow) and 2008_000002 (motorbike) -> pool
    status = dict(zip(df.id, df.status))
    assert [i for i in TRAIN_AUG if status[i] == "dropped"] == ["2007_000039", "2008_000002"]
    truth = {**{i: m for i, m in sbd_maps().items()}, **voc_masks()}   # official masks win
    classes = p["dataset"]["classes"]
    for row in df.itertuples():
        for c, name in enumerate(classes):
            assert getattr(row, f"px_{name}") == int((truth[row.id] == c).sum()), (row.id, name)
    m = json.loads((proj.root / "metrics/split.json").read_text())
    assert (m["train_images"], m["kept"], m["dropped_to_pool"]) == (6, 4, 2)
    # every preset by hand: +aeroplane/sofa drops 2008_000003, +cat 2008_000008, +bottle 2008_000009
    assert m["drop_by_k"] == {"2": {"kept": 4, "pool": 2}, "4": {"kept": 3, "pool": 3},
                              "6": {"kept": 2, "pool": 4}, "8": {"kept": 1, "pool": 5},
                              "10": {"kept": 1, "pool": 5}}
    check_embed(proj, vec_file, classes)


def test_context_download_split_embed_from_local_archives(tmp_path):
    """VOC2010 tar + Context trainval.tar.gz given as local archives (md5-checked)."""
    voc_tar = tar_of(make_voc2010(tmp_path / "vocsrc").parents[1], tmp_path / "VOCtrainval_03-May-2010.tar")
    ann_tgz = tar_of(make_context_annotations(tmp_path / "annsrc"), tmp_path / "trainval.tar.gz")
    p = yaml.safe_load(compose(["dataset=context", "scale=tiny"], config_dir=REPO / "conf"))
    assert p["self_training"]["top_p"] == 75
    p["dataset"]["source"], p["dataset"]["md5"] = str(voc_tar), md5_of(voc_tar)
    p["dataset"]["extra"][0].update(source=str(ann_tgz), md5=md5_of(ann_tgz))
    vec_file = tmp_path / "vectors.txt"
    classes = p["dataset"]["classes"]
    write_vectors(vec_file, classes)
    p["embedding"]["source"] = str(vec_file)
    proj = Project(tmp_path / "proj", p)

    assert "converted the Context annotations" in proj.ok("download")
    proj.ok("split")
    df = pd.read_csv(proj.root / "data/split/manifest.csv", dtype={"id": str})
    assert df[["id", "split", "status"]].values.tolist() == [
        ["2008_000002", "train", "dropped"], ["2008_000003", "train", "kept"],
        ["2008_000008", "val", "eval"], ["2008_000009", "val", "eval"]]
    maps = ctx_maps()
    for row in df.itertuples():
        truth = expected_context(maps[row.id])
        assert row.label == f"SegmentationClassContext/{row.id}.png"
        for c, name in enumerate(classes):
            assert getattr(row, f"px_{name}") == int((truth == c).sum()), (row.id, name)
    m = json.loads((proj.root / "metrics/split.json").read_text())
    assert m["unseen"] == ["cow", "motorbike"]
    # 2008_000002 holds cow; 2008_000003 holds keyboard (unseen from K=10 on)
    assert m["drop_by_k"] == {"2": {"kept": 1, "pool": 1}, "4": {"kept": 1, "pool": 1},
                              "6": {"kept": 1, "pool": 1}, "8": {"kept": 1, "pool": 1},
                              "10": {"kept": 0, "pool": 2}}
    check_embed(proj, vec_file, classes)


def test_extra_archive_md5_mismatch_names_the_file(tmp_path):
    """A benchmark.tgz whose md5 differs: download exits 2 naming it; no data/raw, no leftovers."""
    voc_tar = tar_of(make_voc2012(tmp_path / "vocsrc").parents[1], tmp_path / "VOCtrainval_11-May-2012.tar")
    sbd_tgz = tar_of(make_sbd(tmp_path / "sbdsrc").parents[1], tmp_path / "benchmark.tgz")
    p = yaml.safe_load(compose(["dataset=voc2012", "scale=tiny"], config_dir=REPO / "conf"))
    p["dataset"]["source"], p["dataset"]["md5"] = str(voc_tar), md5_of(voc_tar)
    p["dataset"]["extra"][0].update(source=str(sbd_tgz), md5="0" * 32)
    proj = Project(tmp_path / "proj", p)
    res = proj.run("download")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert "dataset.extra[sbd]" in res.stderr and "benchmark.tgz: md5 checksum mismatch" in res.stderr, res.stderr
    assert not (proj.root / "data/raw").exists()
    assert not list(proj.root.glob(".zs3-stage-*"))


def test_extra_download_failure_names_the_extra(tmp_path, http_server):
    """The VOC tar downloads, benchmark.tgz is not on the server: the error names the extra and its
    URL, says what to do offline, and leaves no partial file in the cache."""
    www, base = http_server
    voc_tar = tar_of(make_voc2012(tmp_path / "vocsrc").parents[1], www / "VOCtrainval_11-May-2012.tar")
    cache = tmp_path / "cache"
    with pytest.raises(Zs3Error, match=r"dataset\.extra\[sbd\]\.urls: could not download benchmark\.tgz .*"
                                       r"http://127\.0\.0\.1:\d+/gone/benchmark\.tgz \(HTTP 404.*"
                                       r"give it as 'source' of the sbd entry"):
        prepare_dataset("download", tmp_path / "raw", "voc", urls=[f"{base}/{voc_tar.name}"], md5=md5_of(voc_tar),
                        extras=[{"name": "sbd", "urls": [f"{base}/gone/benchmark.tgz"], "md5": None}],
                        cache_dir=cache, log=lambda m: None, progress=False)
    assert sorted(q.name for q in cache.iterdir()) == [voc_tar.name]


def test_truncated_annotation_archive_is_named(tmp_path, context_classes):
    """A truncated trainval.tar.gz (no md5 to catch it) fails extraction with an error naming it."""
    make_voc2010(tmp_path / "vocsrc")
    full = tar_of(make_context_annotations(tmp_path / "annsrc"), tmp_path / "full.tar.gz").read_bytes()
    cut = tmp_path / "trainval.tar.gz"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(Zs3Error, match=r"dataset\.extra\[context\]\.source: .*trainval\.tar\.gz: cannot be extracted"):
        prepare_dataset(str(tmp_path / "vocsrc"), tmp_path / "raw", "context",
                        extras=[{"name": "context", "source": str(cut), "md5": None}],
                        classes=context_classes, log=lambda m: None, progress=False)


# ------------------------------------------------------------------ configuration vs shared data

def test_context_preset_and_vectors_agree_with_shared_data(shared_data, context_classes):
    """Context classes = the keys of the official ZS3Net vector file, in order; presets resolve."""
    lines = (shared_data / "embeddings" / "context-word2vec-zs3.txt").read_text().splitlines()
    assert lines[0].split() == ["60", "300"]
    assert [ln.split(" ", 1)[0] for ln in lines[1:]] == context_classes
    p = yaml.safe_load(compose(["dataset=context"], config_dir=REPO / "conf"))
    presets = p["dataset"]["split_presets"]
    for k in (2, 4, 6, 8, 10):
        assert len(resolve_unseen(context_classes, presets, k, [])) == k
        if k > 2:
            assert set(presets[k - 2]) < set(presets[k])            # cumulative
    assert presets[10] == ["cow", "motorbike", "sofa", "cat", "boat", "fence", "bird", "tvmonitor",
                           "keyboard", "aeroplane"]


def test_shared_voc_mini_preconverted_is_used_as_is(tmp_path, shared_data):
    """The real pre-converted voc2012-mini (aug layout) with the default params (SBD listed):
    copied unchanged, train lists its 162 train_aug ids with the aug masks."""
    p = yaml.safe_load(compose(["dataset=voc2012", "source=local", f"data_root={shared_data}"], config_dir=REPO / "conf"))
    assert [e["name"] for e in p["dataset"]["extra"]] == ["sbd"]
    root = prepare_dataset(p["dataset"]["source"], tmp_path / "raw", "voc", extras=p["dataset"]["extra"],
                           classes=p["dataset"]["classes"], log=lambda m: None, progress=False)
    src = shared_data / "voc2012-mini" / "VOCdevkit" / "VOC2012"
    assert root == tmp_path / "raw" / "VOCdevkit" / "VOC2012"
    assert sorted(q.relative_to(root) for q in root.rglob("*") if q.is_file()) == \
        sorted(q.relative_to(src) for q in src.rglob("*") if q.is_file())
    train = list_samples(root, "voc", "train", use_aug=True)
    assert [s.id for s in train] == (src / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    assert len(train) == 162 and all(s.label.startswith("SegmentationClassAug/") for s in train)


def test_written_masks_use_the_official_voc_palette(tmp_path, shared_data):
    """Converted masks carry the palette of the real devkit masks and read back exactly."""
    from zs3core.data.layouts import write_label_png

    real = sorted((shared_data / "voc2012-mini/VOCdevkit/VOC2012/SegmentationClass").glob("*.png"))[0]
    lab = np.arange(256, dtype=np.uint8).reshape(16, 16)
    write_label_png(tmp_path / "x.png", lab)
    with Image.open(real) as a, Image.open(tmp_path / "x.png") as b:
        assert b.mode == "P" and b.getpalette() == a.getpalette()
    assert np.array_equal(read_png(tmp_path / "x.png"), lab)
