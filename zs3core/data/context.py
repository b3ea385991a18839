"""Pascal-Context (Mottaghi et al., CVPR 2014), 59 classes + background, built from the archives.

Inputs:

* the VOC2010 devkit ``VOCtrainval_03-May-2010.tar`` (``VOCdevkit/VOC2010/{JPEGImages,
  ImageSets/Main/{train,val}.txt}``: 4,998 / 5,105 ids);
* the Context annotations ``trainval.tar.gz`` (``trainval/<id>.mat``, one per VOC2010 trainval
  image, each holding ``LabelMap``: H x W uint16 ids of the 459 full-context classes, 0 =
  unlabelled; and ``labels.txt``, one ``id: name`` line per class, ids from 1).

:func:`convert_context` writes, inside the VOC2010 root (the layout ``context`` of
:mod:`zs3core.data.layouts`, with the folder names mmsegmentation uses):

* ``SegmentationClassContext/<id>.png``: VOC-palette PNG, value c = ``classes[c]``; every
  full-context class outside the 59 (and the unlabelled 0) becomes background 0, as in the
  official ZS3Net ``context.py`` (there is no void value);
* ``ImageSets/SegmentationContext/{train,val}.txt``: the VOC2010 Main train / val ids that have
  a Context annotation.

Each class name is looked up in ``labels.txt`` as the official ZS3Net code does (spaces removed;
``diningtable`` / ``bedcloth`` / ``clothes`` are ``table`` / ``bedclothes`` / ``cloth`` there) and
checked against :data:`OFFICIAL_IDS`, the 59 ids of the standard benchmark (mmsegmentation's
``tools/dataset_converters/pascal_context.py`` ``_mapping``, whose sorted order is the
alphabetical class order of its ``PascalContextDataset``).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from zs3core.data.layouts import CONTEXT_LABELS, CONTEXT_SETS, write_label_png
from zs3core.io import Zs3Error

# Full-context (labels.txt) id of each of the 59 benchmark classes.
OFFICIAL_IDS: dict[str, int] = {
    "aeroplane": 2, "bag": 9, "bed": 18, "bedclothes": 19, "bench": 22, "bicycle": 23, "bird": 25,
    "boat": 31, "book": 33, "bottle": 34, "building": 44, "bus": 45, "cabinet": 46, "car": 59,
    "cat": 65, "ceiling": 68, "chair": 72, "cloth": 80, "computer": 85, "cow": 98, "cup": 104,
    "curtain": 105, "dog": 113, "door": 115, "fence": 144, "floor": 158, "flower": 159, "food": 162,
    "grass": 187, "ground": 189, "horse": 207, "keyboard": 220, "light": 232, "motorbike": 258,
    "mountain": 259, "mouse": 260, "person": 284, "plate": 295, "platform": 296, "pottedplant": 308,
    "road": 324, "rock": 326, "sheep": 347, "shelves": 349, "sidewalk": 354, "sign": 355, "sky": 360,
    "snow": 366, "sofa": 368, "table": 397, "track": 415, "train": 416, "tree": 420, "truck": 424,
    "tvmonitor": 427, "wall": 440, "water": 445, "window": 454, "wood": 458,
}
# Names of the 59-class list that labels.txt spells differently (official ZS3Net context.py).
ALIASES = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}


def _norm(name: str) -> str:
    key = re.sub(r"[\s_\-]+", "", str(name).lower())
    return ALIASES.get(key, key)


def read_labels_txt(path: Path) -> dict[int, str]:
    """Parse the Context ``labels.txt``: ``{id: name}`` from lines ``id: name``.

    Raises:
        Zs3Error: a line that is not ``<integer>: <name>`` (named with its line number), or a
            repeated id.
    """
    out: dict[int, str] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        m = re.fullmatch(r"\s*(\d+)\s*:\s*(.+?)\s*", line)
        if not m:
            raise Zs3Error(f"{path}:{n}: expected 'id: name', got {line!r}")
        i = int(m.group(1))
        if i in out:
            raise Zs3Error(f"{path}:{n}: id {i} appears twice")
        out[i] = m.group(2)
    return out


def context_ids(classes: list[str], labels: dict[int, str] | None) -> list[int]:
    """Full-context id of each of ``classes[1:]`` (``classes[0]`` is background).

    Args:
        classes: class names in label order; the first must be ``background``.
        labels: ``{id: name}`` of ``labels.txt``, or None to use :data:`OFFICIAL_IDS` alone.

    Returns:
        ids, one per class after background.

    Raises:
        Zs3Error: first class not background, a name found neither in labels.txt nor in
            :data:`OFFICIAL_IDS`, or a labels.txt id that differs from the official one.
    """
    if not classes or _norm(classes[0]) != "background":
        raise Zs3Error(f"dataset.classes: the first Context class must be 'background' (got {classes[:1]}); "
                       "it receives every full-context class outside the list")
    by_name: dict[str, int] = {}
    if labels is not None:
        for i, name in labels.items():
            by_name.setdefault(_norm(name), i)
    ids, missing, wrong = [], [], []
    for c in classes[1:]:
        key = _norm(c)
        in_file, official = by_name.get(key), OFFICIAL_IDS.get(key)
        if in_file is None and official is None:
            missing.append(c)
            continue
        if in_file is not None and official is not None and in_file != official:
            wrong.append(f"'{c}': {in_file} (official {official})")
        ids.append(in_file if in_file is not None else official)
    where = "labels.txt nor in the official 59-class list" if labels is not None else "the official 59-class list"
    if missing:
        raise Zs3Error(f"dataset.classes: class(es) {missing} not found in {where}; use the Context class names "
                       "(or give the release's labels.txt for other full-context classes)")
    if wrong:
        raise Zs3Error(f"labels.txt: ids differ from the official Pascal-Context release for {', '.join(wrong)}; "
                       "is this the official trainval.tar.gz?")
    return ids


def lookup_table(ids: list[int]) -> np.ndarray:
    """(65536,) uint8 table: full-context id ``ids[c-1]`` -> c, every other value -> 0."""
    lut = np.zeros(65536, dtype=np.uint8)
    for c, i in enumerate(ids, 1):
        lut[i] = c
    return lut


def read_label_map(path: Path) -> np.ndarray:
    """The ``LabelMap`` of one Context ``<id>.mat``: (H, W) integer array of full-context ids.

    Raises:
        Zs3Error: unreadable file, no ``LabelMap``, not a 2-D integer map or a value outside
            0..65535 (named with the file).
    """
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as e:
        raise Zs3Error(f"{path}: cannot be read as a MATLAB file ({e}); re-extract trainval.tar.gz") from e
    if "LabelMap" not in mat:
        raise Zs3Error(f"{path}: no variable LabelMap (keys: {sorted(k for k in mat if not k.startswith('__'))}); "
                       "not a Pascal-Context annotation")
    lab = np.asarray(mat["LabelMap"])
    if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
        raise Zs3Error(f"{path}: LabelMap is {lab.dtype} of shape {lab.shape}; expected a 2-D integer map")
    if lab.size and (lab.min() < 0 or lab.max() > 65535):
        raise Zs3Error(f"{path}: LabelMap holds values outside 0..65535")
    return lab


def find_annotations(folder: Path) -> tuple[Path, Path | None]:
    """(folder of the ``<id>.mat`` files, ``labels.txt`` or None) inside an extracted
    ``trainval.tar.gz`` (``trainval/`` and ``labels.txt``) or a local copy.

    Raises:
        Zs3Error: no .mat file under ``folder``.
    """
    folder = Path(folder)
    mats = folder / "trainval"
    if not (mats.is_dir() and any(mats.glob("*.mat"))):
        first = next(iter(sorted(folder.rglob("*.mat"))), None)
        if first is None:
            raise Zs3Error(f"{folder}: no Pascal-Context annotation (.mat) found; is this the official trainval.tar.gz?")
        mats = first.parent
    labels = next((p for p in [mats.parent / "labels.txt", mats / "labels.txt"] if p.is_file()), None)
    if labels is None:
        labels = next(iter(sorted(folder.rglob("labels.txt"))), None)
    return mats, labels


def convert_context(mat_dir: Path, labels_path: Path | None, voc_root: Path, classes: list[str],
                    progress: bool = True) -> dict:
    """Write ``SegmentationClassContext/`` and ``ImageSets/SegmentationContext/`` into ``voc_root``.

    Args:
        mat_dir: folder of the ``<id>.mat`` annotations.
        labels_path: the release's ``labels.txt`` (None: :data:`OFFICIAL_IDS` only).
        voc_root: the VOC2010 devkit root (``.../VOCdevkit/VOC2010``), modified in place.
        classes: class names in label order (``dataset.classes``), background first.
        progress: show a tqdm bar.

    Returns:
        Counts: ``train``, ``val`` (ids listed), ``missing`` (Main ids without an annotation).

    Raises:
        Zs3Error: missing VOC2010 Main lists, no annotated id at all, bad class names or
            labels.txt (see :func:`context_ids`), unreadable .mat (see :func:`read_label_map`).
    """
    mat_dir, voc_root = Path(mat_dir), Path(voc_root)
    labels = read_labels_txt(labels_path) if labels_path is not None else None
    lut = lookup_table(context_ids(list(classes), labels))
    out_dir = voc_root / CONTEXT_LABELS
    sets_dir = voc_root / CONTEXT_SETS
    out_dir.mkdir(parents=True, exist_ok=True)
    sets_dir.mkdir(parents=True, exist_ok=True)
    counts = {"missing": 0}
    for split in ("train", "val"):
        main = voc_root / "ImageSets" / "Main" / f"{split}.txt"
        if not main.is_file():
            raise Zs3Error(f"{main}: VOC2010 split list missing; is this the official VOCtrainval_03-May-2010.tar?")
        ids = [ln.strip() for ln in main.read_text().splitlines() if ln.strip()]
        kept = [i for i in ids if (mat_dir / f"{i}.mat").is_file()]
        counts["missing"] += len(ids) - len(kept)
        for i in tqdm(kept, desc=f"context: write {split} labels", disable=not progress):
            write_label_png(out_dir / f"{i}.png", lut[read_label_map(mat_dir / f"{i}.mat")])
        (sets_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in kept))
        counts[split] = len(kept)
    if counts["train"] + counts["val"] == 0:
        raise Zs3Error(f"{mat_dir}: none of the VOC2010 train/val ids has a Context annotation (<id>.mat)")
    return counts
