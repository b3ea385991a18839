"""Seen/unseen class splits and the training-set filter (ZS3Net §3.1, "Zero-shot setups").

The unseen set U is given by name or by the dataset's cumulative preset of size K; every
other class is seen (background included for VOC). Three training protocols:

* ``drop`` (ZS3Net): every training image that contains even one unseen pixel is removed
  from the labelled set; those images form the unlabelled pool of ZS5Net self-training
  (their labels are never used for training).
* ``ignore`` (SPNet/CaGNet): every image is kept and unseen pixels are ignored in training.
* ``oracle``: the supervised upper bound (ZS3Net Table 1, first row): every image is kept and
  every class is trained on; the K preset only decides how the scores are grouped.

Validation and test splits are never filtered.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from zs3core.io import Zs3Error

FILTERS = ("drop", "ignore", "oracle")


@dataclass(frozen=True)
class ClassSplit:
    """Class names in label order and the unseen subset.

    Attributes:
        classes: all class names, index = label value.
        unseen: sorted label values of the unseen classes (K = len(unseen)).
        ignore_index: label value that is never scored nor trained on.
    """

    classes: tuple[str, ...]
    unseen: tuple[int, ...]
    ignore_index: int

    @property
    def seen(self) -> tuple[int, ...]:
        """Sorted label values of the seen classes (every class not unseen)."""
        return tuple(i for i in range(len(self.classes)) if i not in self.unseen)

    @property
    def num_classes(self) -> int:
        """C, the number of classes (seen + unseen)."""
        return len(self.classes)

    def to_dict(self) -> dict:
        """JSON-ready form (written to data/split/classes.json)."""
        return {
            "classes": list(self.classes),
            "seen": list(self.seen),
            "unseen": list(self.unseen),
            "seen_names": [self.classes[i] for i in self.seen],
            "unseen_names": [self.classes[i] for i in self.unseen],
            "ignore_index": self.ignore_index,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ClassSplit:
        """Inverse of ``to_dict``."""
        return cls(tuple(d["classes"]), tuple(d["unseen"]), int(d["ignore_index"]))

    def train_lut(self) -> np.ndarray:
        """Lookup table (256,) int64 from raw label value to the backbone's training target.

        Seen classes map to their index among the seen classes (0..|S|-1, the outputs of the
        seen-only classifier). Unseen classes (present only under the ``ignore`` protocol) and
        void map to 255, which ``cross_entropy(ignore_index=255)`` skips.
        """
        lut = np.full(256, 255, dtype=np.int64)
        for j, c in enumerate(self.seen):
            lut[c] = j
        return lut


def resolve_unseen(classes: list[str], presets: dict, k: int | None, names: list[str] | None) -> tuple[int, ...]:
    """Resolve the unseen classes from explicit names or from preset K.

    Args:
        classes: class names in label order.
        presets: {K: [names]} of the dataset (cumulative, as in the paper).
        k: preset size, used when ``names`` is empty.
        names: explicit unseen class names.

    Returns:
        Sorted label values of the unseen classes.

    Raises:
        Zs3Error: unknown name or preset, empty unseen set, or every class unseen.
    """
    presets = {int(key): v for key, v in (presets or {}).items()}
    if names:
        chosen, key = list(names), "split.unseen"
    else:
        if k is None or int(k) not in presets:
            raise Zs3Error(f"split.k: no preset K={k} for this dataset; presets: {sorted(presets)} (or name classes in split.unseen)")
        chosen, key = list(presets[int(k)]), f"dataset.split_presets[{k}]"
    unknown = [n for n in chosen if n not in classes]
    if unknown:
        raise Zs3Error(f"{key}: unknown class name(s) {unknown}; the classes are {list(classes)}")
    ids = tuple(sorted({classes.index(n) for n in chosen}))
    if not ids:
        raise Zs3Error(f"{key}: the unseen set is empty; name at least one class")
    if len(ids) >= len(classes):
        raise Zs3Error(f"{key}: every class is unseen; at least one class must stay seen")
    return ids


def pixel_counts(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels of each class in a (H, W) label map: (num_classes,) int64; void not counted."""
    counts = np.bincount(label.ravel(), minlength=256)
    return counts[:num_classes].astype(np.int64)


def filter_training(counts: np.ndarray, unseen: tuple[int, ...], filter: str) -> np.ndarray:
    """Which training images stay labelled.

    Args:
        counts: (N, C) int per-image class pixel counts.
        unseen: unseen label values.
        filter: ``drop``, ``ignore`` or ``oracle``.

    Returns:
        (N,) bool, True = kept in the labelled set. With ``drop`` an image is kept iff it has
        zero pixels of every unseen class; with ``ignore`` and ``oracle`` every image is kept.

    Raises:
        Zs3Error: unknown filter.
    """
    if filter not in FILTERS:
        raise Zs3Error(f"split.filter: unknown value '{filter}'; use one of {FILTERS}")
    if filter in ("ignore", "oracle"):
        return np.ones(len(counts), dtype=bool)
    return counts[:, list(unseen)].sum(axis=1) == 0


def drop_by_k(counts: np.ndarray, classes: list[str], presets: dict) -> dict[str, dict[str, int]]:
    """What the ``drop`` filter does for every preset K of a dataset.

    Args:
        counts: (N, C) int per-image class pixel counts of the training images.
        classes: class names in label order.
        presets: {K: [names]} (``dataset.split_presets``); keys int or str.

    Returns:
        {str(K): {"kept": images with no pixel of the K unseen classes, "pool": the others}},
        K ascending. A preset that does not resolve (unknown name) is left out: only the selected
        K has to be valid, and :func:`resolve_unseen` reports it.
    """
    out = {}
    for k in sorted(presets, key=int):
        try:
            unseen = resolve_unseen(classes, presets, int(k), [])
        except Zs3Error:
            continue
        kept = filter_training(counts, unseen, "drop")
        out[str(k)] = {"kept": int(kept.sum()), "pool": int((~kept).sum())}
    return out


def carve_dev(ids, kept: np.ndarray, sequence: str | None, size: int) -> np.ndarray:
    """The dev split: kept (labelled) training images held out for choosing backbone settings.

    The protocol rule (README "Protocol"): val and test report, dev chooses. Dev images are
    never trained on (the backbone, the feature cache and the calibration folds skip them) and
    only their seen-class labels are scored. A whole video sequence is the honest choice for
    CamVid (frames of one sequence flatter each other): ``sequence`` holds out every kept image
    whose id starts with it; ``size`` then holds out that many more kept images, evenly spaced.

    Args:
        ids: (N,) image ids of the training split. kept: (N,) bool, the labelled images.
        sequence: id prefix (e.g. CamVid's ``0006R0``) or None. size: >= 0.

    Returns:
        (N,) bool, True = dev (always a subset of ``kept``).

    Raises:
        Zs3Error: ``sequence`` matches no kept image, or dev would leave no image to train on.
    """
    ids, kept = [str(i) for i in ids], np.asarray(kept, dtype=bool)
    dev = np.zeros(len(ids), dtype=bool)
    if sequence:
        dev = kept & np.array([i.startswith(sequence) for i in ids], dtype=bool)
        if not dev.any():
            prefixes = sorted({i.split("_")[0] for i, k in zip(ids, kept) if k})
            raise Zs3Error(f"params.yaml: split.dev_sequence '{sequence}' matches no kept training image; "
                           f"kept ids start with {prefixes[:10]}")
    rest = np.flatnonzero(kept & ~dev)
    if size:
        dev[rest[np.linspace(0, len(rest) - 1, min(int(size), len(rest))).round().astype(int)]] = True
    if dev.any() and not (kept & ~dev).any():
        raise Zs3Error(f"params.yaml: the dev split (split.dev_sequence={sequence}, split.dev_size={size}) takes all "
                       f"{int(kept.sum())} kept training images; make it smaller")
    return dev


def build_manifest(samples, counts: np.ndarray, classes: list[str], kept: np.ndarray | None,
                   dev: np.ndarray | None = None) -> pd.DataFrame:
    """One row per image: id, split, image, label, per-class pixel counts, status.

    ``status`` is ``kept`` / ``dropped`` / ``dev`` for training images (dropped = unlabelled
    pool, dev = :func:`carve_dev`) and ``eval`` for every other split.
    """
    df = pd.DataFrame(
        {"id": [s.id for s in samples], "split": [s.split for s in samples],
         "image": [s.image for s in samples], "label": [s.label for s in samples]}
    )
    px = pd.DataFrame(counts, columns=[f"px_{c.replace(' ', '_')}" for c in classes])
    df = pd.concat([df, px], axis=1)
    if kept is None:
        df["status"] = "eval"
    else:
        df["status"] = np.where(kept, "kept", "dropped")
        if dev is not None:
            df.loc[np.asarray(dev, dtype=bool), "status"] = "dev"
    return df


def read_class_split(path) -> ClassSplit:
    """The ClassSplit written by the split stage (``data/split/classes.json``)."""
    from zs3core.io import read_json

    return ClassSplit.from_dict(read_json(path))


def read_manifest(path) -> pd.DataFrame:
    """The manifest written by the split stage (one row per image; ids kept as strings).

    Raises:
        Zs3Error: the file is missing.
    """
    from pathlib import Path

    if not Path(path).exists():
        raise Zs3Error(f"{path}: missing; run the split stage first (dvc repro split)")
    return pd.read_csv(path, dtype={"id": str})


def manifest_samples(df: pd.DataFrame) -> list:
    """The :class:`zs3core.data.layouts.Sample` of each manifest row, in row order."""
    from zs3core.data.layouts import Sample

    return [Sample(r.id, r.split, r.image, r.label) for r in df.itertuples()]


def pixel_count_matrix(df: pd.DataFrame, classes) -> np.ndarray:
    """(rows, C) int64 pixels of each class per manifest row (the ``px_<class>`` columns)."""
    return df[[f"px_{c.replace(' ', '_')}" for c in classes]].to_numpy()


def labelled_and_pool_rows(train: pd.DataFrame, protocol: str) -> tuple[list[int], list[int]]:
    """Positions (in ``train``, the training split's manifest rows) of the labelled images and of
    the unlabelled pool of ZS5Net: under ``drop`` the pool is the dropped images; under
    ``ignore`` (and ``oracle``) every training image, whose unseen pixels are unlabelled. Dev
    images (:func:`carve_dev`) are in neither."""
    status = train.status.to_numpy()
    rows = [i for i in range(len(train)) if status[i] == "kept"]
    pool = [i for i in range(len(train)) if status[i] == "dropped" or (protocol != "drop" and status[i] == "kept")]
    return rows, pool


def scoring_split(trained: ClassSplit, protocol: str, presets: dict, k: int | None, names) -> ClassSplit:
    """The seen/unseen grouping used for scores: the trained split, except under ``oracle``
    where every class is trained on and the K preset (or ``split.unseen``) groups the scores."""
    if protocol != "oracle":
        return trained
    return ClassSplit(trained.classes, resolve_unseen(list(trained.classes), presets, k, list(names)), trained.ignore_index)


def scan_labels(root, samples, num_classes: int, ignore_index: int, desc: str = "read labels") -> np.ndarray:
    """Read every label map once, checking its values and its image's size; (N, C) pixel counts.

    Raises:
        Zs3Error: an unreadable or mismatched image or label (named by file and id).
    """
    from tqdm import tqdm

    from zs3core.data.layouts import check_same_size, image_size, read_label

    counts = np.zeros((len(samples), num_classes), dtype=np.int64)
    for n, s in enumerate(tqdm(samples, desc=desc)):
        lab = read_label(root, s, num_classes, ignore_index)
        w, h = image_size(root, s)
        check_same_size(root, s, (h, w), lab.shape)
        counts[n] = pixel_counts(lab, num_classes)
    return counts


def split_summary(frames: list[pd.DataFrame], train_split: str, eval_splits, classes, unseen,
                  protocol: str) -> tuple[pd.DataFrame, dict]:
    """The manifest of all splits and the split stage's metrics (image counts per status and split).

    Raises:
        Zs3Error: no training image is kept (the backbone would have nothing to learn from).
    """
    df = pd.concat(frames, ignore_index=True)
    train = df[df.split == train_split]
    kept = int((train.status == "kept").sum())
    if kept == 0:
        raise Zs3Error(f"split.filter={protocol}: no training image of '{train_split}' is kept (every one holds an "
                       "unseen pixel); use split.filter=ignore or fewer unseen classes")
    return df, {"unseen": [classes[u] for u in unseen], "k": len(unseen), "filter": protocol,
                "train_images": len(train), "oracle": protocol == "oracle", "kept": kept,
                "dropped_to_pool": int((train.status == "dropped").sum()), "dev": int((train.status == "dev").sum()),
                "eval_images": {s: int((df.split == s).sum()) for s in eval_splits}}
