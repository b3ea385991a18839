"""Seen/unseen class resolution, the training-image filter, the training LUT and the manifest."""
from __future__ import annotations

import numpy as np
import pytest

from zs3core.data.layouts import Sample
from zs3core.io import Zs3Error
from zs3core.splits import (
    ClassSplit,
    build_manifest,
    filter_training,
    pixel_counts,
    resolve_unseen,
)

PRESETS = {2: ["bicyclist", "fence"], 4: ["bicyclist", "fence", "car", "pavement"]}


# ---------------------------------------------------------------- resolve_unseen

def test_resolve_by_names_sorted_label_values(camvid_classes):
    """Explicit names give their sorted label values, replace the preset, and duplicates merge."""
    assert resolve_unseen(camvid_classes, PRESETS, 2, ["car", "sky"]) == (0, 8)
    assert resolve_unseen(camvid_classes, PRESETS, None, ["sign symbol", "sign symbol"]) == (6,)


@pytest.mark.parametrize("k,names", [(2, ["bicyclist", "fence"]),
                                     (4, ["bicyclist", "fence", "car", "pavement"])])
def test_resolve_by_preset(camvid_classes, k, names):
    """Preset K gives the label values of its class names (int or str keys, as from YAML/JSON)."""
    expected = tuple(sorted(camvid_classes.index(n) for n in names))
    assert resolve_unseen(camvid_classes, PRESETS, k, []) == expected
    assert resolve_unseen(camvid_classes, {str(key): v for key, v in PRESETS.items()}, k, None) == expected
    assert len(expected) == k


def test_resolve_unknown_name_is_named(camvid_classes):
    """An unknown class name is an error that names it and the key it came from."""
    with pytest.raises(Zs3Error, match=r"split\.unseen.*'bus'"):
        resolve_unseen(camvid_classes, PRESETS, 2, ["car", "bus"])
    with pytest.raises(Zs3Error, match=r"split_presets\[2\].*'cyclist'"):
        resolve_unseen(camvid_classes, {2: ["cyclist", "fence"]}, 2, [])


def test_resolve_unknown_k(camvid_classes):
    """K without a preset (and no names) is an error naming split.k, the K and the presets."""
    with pytest.raises(Zs3Error, match=r"split\.k.*K=3.*\[2, 4\]"):
        resolve_unseen(camvid_classes, PRESETS, 3, [])
    with pytest.raises(Zs3Error, match=r"split\.k"):
        resolve_unseen(camvid_classes, PRESETS, None, None)


def test_resolve_empty_unseen_set(camvid_classes):
    """Empty names with an empty preset is an 'empty unseen set' error; empty names and no preset too."""
    with pytest.raises(Zs3Error, match="empty"):
        resolve_unseen(camvid_classes, {3: []}, 3, [])
    with pytest.raises(Zs3Error):
        resolve_unseen(camvid_classes, {}, None, [])


def test_resolve_every_class_unseen(camvid_classes):
    """Every class unseen leaves nothing to train on: error."""
    with pytest.raises(Zs3Error, match="every class"):
        resolve_unseen(camvid_classes, PRESETS, None, list(camvid_classes))
    with pytest.raises(Zs3Error, match="every class"):
        resolve_unseen(["a", "b"], {1: ["b", "a"]}, 1, [])


# ---------------------------------------------------------------- pixel counts and filter

# Four classes (0, 1 seen; 2, 3 unseen), void = 255 (VOC style). Hand-made label maps:
V = 255
LABELS = {
    "all_seen": np.array([[0, 0], [1, V]]),            # seen + void
    "one_unseen_px": np.array([[0, 0, 0], [0, 3, 0]]),  # a single unseen pixel -> dropped
    "void_only": np.full((2, 2), V),                   # nothing but void -> kept
    "unseen_only": np.array([[2, 2], [2, 2]]),         # dropped
    "seen_and_void": np.array([[1, V, V], [V, V, 0]]),  # kept: void never matters
}
HAND_COUNTS = {   # classes 0, 1, 2, 3, counted by eye
    "all_seen": [2, 1, 0, 0],
    "one_unseen_px": [5, 0, 0, 1],
    "void_only": [0, 0, 0, 0],
    "unseen_only": [0, 0, 4, 0],
    "seen_and_void": [1, 1, 0, 0],
}
DROP_KEPT = [True, False, True, False, True]


def counts_matrix():
    return np.stack([pixel_counts(lab.astype(np.uint8), 4) for lab in LABELS.values()])


def test_pixel_counts_by_hand():
    """Per-class pixel counts of each hand-made map; void is not counted."""
    counts = counts_matrix()
    assert counts.dtype == np.int64
    assert counts.tolist() == list(HAND_COUNTS.values())


def test_pixel_counts_camvid_void():
    """CamVid: value 11 (void) is outside the 11 classes and is not counted."""
    lab = np.array([[0, 11, 10], [11, 11, 3]], dtype=np.uint8)
    expected = [0] * 11
    expected[0], expected[10], expected[3] = 1, 1, 1
    assert pixel_counts(lab, 11).tolist() == expected


def test_filter_drop_keeps_only_images_without_unseen_pixels():
    """drop: kept iff zero unseen pixels (one unseen pixel is enough to drop; void never matters)."""
    kept = filter_training(counts_matrix(), (2, 3), "drop")
    assert kept.dtype == bool
    assert kept.tolist() == DROP_KEPT
    # Same decision computed directly from the label maps.
    assert kept.tolist() == [not np.isin(lab, [2, 3]).any() for lab in LABELS.values()]


def test_filter_drop_depends_on_unseen_set():
    """With only class 2 unseen, the image with a class-3 pixel stays."""
    assert filter_training(counts_matrix(), (2,), "drop").tolist() == [True, True, True, False, True]


def test_filter_ignore_keeps_all():
    """ignore: every image stays labelled."""
    kept = filter_training(counts_matrix(), (2, 3), "ignore")
    assert kept.tolist() == [True] * len(LABELS)


def test_filter_unknown_value():
    """An unknown split.filter value is an error naming the key and the value."""
    with pytest.raises(Zs3Error, match=r"split\.filter.*'keep'"):
        filter_training(counts_matrix(), (2,), "keep")


# ---------------------------------------------------------------- ClassSplit

def test_train_lut_maps_seen_to_contiguous_ids(camvid_classes):
    """Seen classes -> 0..|S|-1 in label order; unseen, void and every other value -> 255."""
    cs = ClassSplit(tuple(camvid_classes), (7, 10), 11)
    lut = cs.train_lut()
    assert lut.shape == (256,) and lut.dtype == np.int64
    seen = [c for c in range(11) if c not in (7, 10)]
    assert list(cs.seen) == seen
    for j, c in enumerate(seen):
        assert lut[c] == j
    assert sorted(lut[seen].tolist()) == list(range(9))
    for v in [7, 10, 11] + list(range(12, 256)):
        assert lut[v] == 255, v


def test_class_split_dict_roundtrip(camvid_classes):
    """to_dict names seen/unseen classes; from_dict restores the same split."""
    cs = ClassSplit(tuple(camvid_classes), (6, 8), 11)
    d = cs.to_dict()
    assert d["unseen_names"] == ["sign symbol", "car"]
    assert d["seen_names"] == [c for c in camvid_classes if c not in ("sign symbol", "car")]
    assert d["ignore_index"] == 11
    assert ClassSplit.from_dict(d) == cs
    assert cs.num_classes == 11


# ---------------------------------------------------------------- manifest

def test_build_manifest_columns_and_status():
    """One row per sample with id/split/paths, px_<class> counts (spaces -> _) and status."""
    classes = ["sky", "sign symbol", "car", "bicyclist"]
    samples = [Sample(f"s{i}", "train", f"train/s{i}.png", f"trainannot/s{i}.png") for i in range(5)]
    counts = counts_matrix()
    kept = filter_training(counts, (2, 3), "drop")
    df = build_manifest(samples, counts, classes, kept)
    assert list(df.columns) == ["id", "split", "image", "label", "px_sky", "px_sign_symbol", "px_car",
                                "px_bicyclist", "status"]
    assert df["id"].tolist() == [f"s{i}" for i in range(5)]
    assert df["image"].tolist()[1] == "train/s1.png"
    assert df["status"].tolist() == ["kept" if k else "dropped" for k in DROP_KEPT]
    assert df[["px_sky", "px_sign_symbol", "px_car", "px_bicyclist"]].to_numpy().tolist() == list(HAND_COUNTS.values())

    ev = build_manifest([Sample("v", "val", "val/v.png", "valannot/v.png")], np.array([[1, 2, 3, 4]]), classes, None)
    assert ev["status"].tolist() == ["eval"] and ev["split"].tolist() == ["val"]


# ---------------------------------------------------------------- drop_by_k

def test_drop_by_k_counts_every_preset():
    """Kept / pool per preset K from the hand-made maps; a preset with an unknown name is left out."""
    from zs3core.splits import drop_by_k

    classes = ["bg", "a", "b", "c"]                  # label values 0..3 of LABELS
    presets = {2: ["b", "c"], "1": ["b"], 3: ["b", "c", "nope"]}
    out = drop_by_k(counts_matrix(), classes, presets)
    assert list(out) == ["1", "2"]                  # ascending K, invalid preset 3 omitted
    # K=1 (b): only 'unseen_only' holds b; K=2 (b, c): 'one_unseen_px' (c) and 'unseen_only' (b).
    assert out["1"] == {"kept": 4, "pool": 1}
    assert out["2"] == {"kept": sum(DROP_KEPT), "pool": len(DROP_KEPT) - sum(DROP_KEPT)} == {"kept": 3, "pool": 2}
