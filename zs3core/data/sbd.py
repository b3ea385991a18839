"""Pascal VOC 2012 + SBD: the 10,582-image ``train_aug`` set ("VOC aug"), built from the archives.

SBD (Semantic Boundaries Dataset, Hariharan et al., ICCV 2011) ships as ``benchmark.tgz``:
``benchmark_RELEASE/dataset/{img/<id>.jpg, cls/<id>.mat, inst/<id>.mat, train.txt, val.txt}``
(8,498 + 2,857 ids). Each ``cls/<id>.mat`` holds a MATLAB struct ``GTcls`` with fields
``Segmentation`` (H x W uint8 class map, 0 = background, 1..20 the VOC classes, no void),
``Boundaries`` (20 x 1 cell of sparse edge maps) and ``CategoriesPresent``. It is read with
``scipy.io.loadmat`` as ``loadmat(f)["GTcls"][0]["Segmentation"][0]`` (the access of
torchvision's ``SBDataset`` and of the official ZS3Net ``sbd.py``).

:func:`convert_sbd` turns an extracted SBD plus the official VOC devkit into the widely used
layout that :mod:`zs3core.data.layouts` reads (``use_aug``):

* ``SegmentationClassAug/<id>.png`` for every id of VOC trainval, SBD train and SBD val
  (12,031 ids): the official ``SegmentationClass`` mask where VOC has one (copied byte for
  byte: official masks win, with their 255 borders), the SBD class map otherwise, written as a
  VOC-palette PNG;
* ``ImageSets/Segmentation/train_aug.txt`` = sorted((VOC train | SBD train | SBD val) - VOC val),
  10,582 ids for the official archives: no val image is ever trained on;
* ``JPEGImages/<id>.jpg`` copied from SBD ``img/`` for the (rare) ids the devkit lacks.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from zs3core.data.layouts import write_label_png
from zs3core.io import Zs3Error

AUG_DIR = "SegmentationClassAug"
AUG_LIST = "ImageSets/Segmentation/train_aug.txt"
VOC_NUM_CLASSES = 21


def has_aug(voc_root: Path) -> bool:
    """True when ``voc_root`` already holds the converted aug layout (``SegmentationClassAug/``
    and ``ImageSets/Segmentation/train_aug.txt``), as a local pre-converted copy does."""
    return (voc_root / AUG_DIR).is_dir() and (voc_root / AUG_LIST).is_file()


def find_sbd_dir(folder: Path) -> Path:
    """The SBD ``dataset`` folder (holding ``cls/`` and ``train.txt``) inside an extracted
    ``benchmark.tgz`` (``benchmark_RELEASE/dataset``) or a local copy.

    Raises:
        Zs3Error: no such folder under ``folder``.
    """
    folder = Path(folder)
    for c in [folder] + sorted(p.parent for p in folder.rglob("train.txt")):
        if (c / "cls").is_dir() and (c / "train.txt").is_file():
            return c
    raise Zs3Error(f"{folder}: no SBD dataset found (looked for benchmark_RELEASE/dataset/{{cls/,train.txt}}); "
                   "is this the official benchmark.tgz?")


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise Zs3Error(f"{path}: split list missing; the archive is incomplete or not the official one")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def read_sbd_class_map(path: Path) -> np.ndarray:
    """The class map of one SBD ``cls/<id>.mat``.

    Returns:
        (H, W) uint8, values 0..20 (0 = background).

    Raises:
        Zs3Error: unreadable file, no ``GTcls.Segmentation``, not a 2-D map, or a value above 20
            (each named with the file).
    """
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as e:  # scipy raises ValueError / MatReadError / OSError on bad files
        raise Zs3Error(f"{path}: cannot be read as a MATLAB file ({e}); re-extract benchmark.tgz") from e
    try:
        seg = np.asarray(mat["GTcls"][0]["Segmentation"][0])
    except (KeyError, IndexError, ValueError) as e:
        raise Zs3Error(f"{path}: no struct GTcls with a field Segmentation (keys: "
                       f"{sorted(k for k in mat if not k.startswith('__'))}); not an SBD cls file") from e
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        raise Zs3Error(f"{path}: GTcls.Segmentation is {seg.dtype} of shape {seg.shape}; expected a 2-D integer class map")
    if seg.size and (seg.min() < 0 or seg.max() >= VOC_NUM_CLASSES):
        bad = np.unique(seg[(seg < 0) | (seg >= VOC_NUM_CLASSES)])
        raise Zs3Error(f"{path}: GTcls.Segmentation holds value(s) {bad.tolist()} outside the VOC classes 0..20")
    return seg.astype(np.uint8)


def aug_ids(voc_train: list[str], voc_val: list[str], sbd_train: list[str], sbd_val: list[str]) -> list[str]:
    """``train_aug``: sorted((VOC train | SBD train | SBD val) - VOC val)."""
    return sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))


def convert_sbd(sbd_dir: Path, voc_root: Path, progress: bool = True) -> dict:
    """Write ``SegmentationClassAug/``, ``train_aug.txt`` and missing JPEGs into ``voc_root``.

    Args:
        sbd_dir: the SBD ``dataset`` folder (see :func:`find_sbd_dir`).
        voc_root: the VOC 2012 devkit root (``.../VOCdevkit/VOC2012``), modified in place.
        progress: show a tqdm bar.

    Returns:
        Counts: ``train_aug`` (ids listed), ``masks`` (aug masks written), ``from_voc`` (official
        masks copied), ``from_sbd`` (converted .mat files), ``images_copied``.

    Raises:
        Zs3Error: a split list is missing, an id has neither an official mask nor an SBD .mat, a
            .mat file is unreadable or malformed (see :func:`read_sbd_class_map`).
    """
    sbd_dir, voc_root = Path(sbd_dir), Path(voc_root)
    sets = voc_root / "ImageSets" / "Segmentation"
    voc_train, voc_val = _read_ids(sets / "train.txt"), _read_ids(sets / "val.txt")
    sbd_train, sbd_val = _read_ids(sbd_dir / "train.txt"), _read_ids(sbd_dir / "val.txt")
    train_aug = aug_ids(voc_train, voc_val, sbd_train, sbd_val)
    every = sorted(set(voc_train) | set(voc_val) | set(sbd_train) | set(sbd_val))
    out_dir = voc_root / AUG_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    n_voc = n_sbd = n_img = 0
    for i in tqdm(every, desc="sbd: write SegmentationClassAug", disable=not progress):
        official = voc_root / "SegmentationClass" / f"{i}.png"
        if official.is_file():
            shutil.copyfile(official, out_dir / f"{i}.png")
            n_voc += 1
        else:
            mat = sbd_dir / "cls" / f"{i}.mat"
            if not mat.is_file():
                raise Zs3Error(f"{mat}: id '{i}' is listed in the SBD/VOC splits but has neither an official VOC "
                               "mask nor an SBD class map; the archives are incomplete")
            write_label_png(out_dir / f"{i}.png", read_sbd_class_map(mat))
            n_sbd += 1
        jpg = voc_root / "JPEGImages" / f"{i}.jpg"
        if not jpg.is_file() and (sbd_dir / "img" / f"{i}.jpg").is_file():
            jpg.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sbd_dir / "img" / f"{i}.jpg", jpg)
            n_img += 1
    (voc_root / AUG_LIST).write_text("\n".join(train_aug) + "\n")
    return {"train_aug": len(train_aug), "masks": len(every), "from_voc": n_voc, "from_sbd": n_sbd,
            "images_copied": n_img}
