"""ZS5Net pseudo-label selection on a hand-made confidence map."""
from __future__ import annotations

import math

import pytest
import torch

from zs3core.self_training import select_pseudo_labels

UNSEEN = [1, 2]   # class 0 is seen
# Two pool images, pixels interleaved. Each row: probabilities of classes 0, 1, 2.
ROWS = [
    # image, probabilities          predicted class, confidence
    (0, [0.10, 0.70, 0.20]),   # p0: 1 (unseen) 0.70
    (1, [0.40, 0.55, 0.05]),   # p1: 1 (unseen) 0.55
    (0, [0.95, 0.03, 0.02]),   # p2: 0 (seen)   0.95  -> never selected
    (0, [0.20, 0.20, 0.60]),   # p3: 2 (unseen) 0.60
    (1, [0.90, 0.05, 0.05]),   # p4: 0 (seen)   0.90  -> never selected
    (0, [0.05, 0.90, 0.05]),   # p5: 1 (unseen) 0.90
    (1, [0.30, 0.20, 0.50]),   # p6: 2 (unseen) 0.50
]
PROBS = torch.tensor([r[1] for r in ROWS])
IMAGE = torch.tensor([r[0] for r in ROWS])
# Unseen-predicted pixels by image, by descending confidence:
#   image 0: p5 (0.90), p0 (0.70), p3 (0.60)   -> 3 candidates
#   image 1: p1 (0.55), p6 (0.50)              -> 2 candidates


def selected(top_p) -> list[int]:
    mask = select_pseudo_labels(PROBS, IMAGE, UNSEEN, top_p)
    assert mask.dtype == torch.bool and mask.shape == (len(ROWS),)
    return torch.nonzero(mask).squeeze(1).tolist()


@pytest.mark.parametrize("top_p,expected", [
    (0, []),                         # nothing
    (100, [0, 1, 3, 5, 6]),          # every unseen-predicted pixel, no seen one
    (50, [0, 1, 5]),                 # image 0: ceil(1.5) = 2 -> p5, p0; image 1: ceil(1.0) = 1 -> p1
    (10, [1, 5]),                    # ceil(0.3) = 1 and ceil(0.2) = 1: the best of each image
    (34, [0, 1, 5]),                 # image 0: ceil(1.02) = 2; image 1: ceil(0.68) = 1
    (60, [0, 1, 5, 6]),              # image 0: ceil(1.8) = 2 -> p5, p0; image 1: ceil(1.2) = 2 -> p1, p6
    (67, [0, 1, 3, 5, 6]),           # image 0: ceil(2.01) = 3 (all); image 1: ceil(1.34) = 2 (all)
])
def test_top_p_per_image_with_ceil(top_p, expected):
    """The top ceil(p% x n_img) unseen-predicted pixels of each image by confidence."""
    assert selected(top_p) == expected


def test_selection_is_per_image_not_global():
    """Image 1's best pixel (0.55) is chosen although image 0 has three more confident ones."""
    assert 1 in selected(30)   # global top-30% would pick only image-0 pixels


def test_seen_predictions_never_selected():
    """Pixels predicted as a seen class are never pseudo-labelled, however confident."""
    for p in (0, 1, 25, 50, 75, 100):
        assert 2 not in selected(p) and 4 not in selected(p)


def test_ties_keep_lower_pixel_index():
    """Equal confidences: the pixel with the lower index wins."""
    probs = torch.tensor([[0.2, 0.8, 0.0], [0.2, 0.0, 0.8], [0.2, 0.8, 0.0]])
    mask = select_pseudo_labels(probs, torch.tensor([0, 0, 0]), UNSEEN, 50)   # ceil(1.5) = 2
    assert mask.tolist() == [True, True, False]
    mask = select_pseudo_labels(probs, torch.tensor([0, 0, 0]), UNSEEN, 1)    # ceil(0.03) = 1
    assert mask.tolist() == [True, False, False]


def test_no_unseen_classes_selects_nothing():
    """An empty unseen set selects no pixel."""
    assert not select_pseudo_labels(PROBS, IMAGE, [], 100).any()


@pytest.mark.parametrize("top_p", [-1, 100.5, 250])
def test_invalid_top_p(top_p):
    """top_p outside [0, 100] raises ValueError naming the key."""
    with pytest.raises(ValueError, match="top_p"):
        select_pseudo_labels(PROBS, IMAGE, UNSEEN, top_p)


def test_length_mismatch():
    """probs and image_index of different lengths raise ValueError."""
    with pytest.raises(ValueError):
        select_pseudo_labels(PROBS, IMAGE[:-1], UNSEEN, 50)


def test_ignore_protocol_never_pseudo_labels_a_known_seen_pixel():
    """With ``pool_annotation="seen"``, under ``ignore`` only pixels without a seen label are
    eligible; under ``drop`` all are.

    Training labels of the 7 pixels: p0, p4, p5 seen (0), the others unseen or void (255): all
    of those are eligible. With top_p 100, image 0 keeps p3 only (p0 and p5 carry a seen label;
    p2 is predicted seen), image 1 keeps p1, p6.
    """
    from zs3core.self_training import unlabelled

    labels = torch.tensor([0, 1, 255, 2, 0, 0, 255])
    elig = unlabelled(labels, [0], "ignore", "seen")
    assert elig.tolist() == [False, True, True, True, False, False, True]
    assert unlabelled(labels, [0], "drop", "seen").all()
    assert unlabelled(labels, [0], "ignore").all()            # the default reads no annotation
    mask = select_pseudo_labels(PROBS, IMAGE, UNSEEN, 100, eligible=elig)
    assert torch.nonzero(mask).squeeze(1).tolist() == [1, 3, 6]


def test_pseudo_label_uses_the_calibrated_scores():
    """pseudo_label softmaxes the scorer's logits after subtracting γ from the seen class.

    Logits (class 0 seen, 1 unseen) of 3 pixels of one image: (2, 1), (3, 0), (0, 1).
    γ = 0: only pixel 2 is predicted unseen. γ = 1.5: pixels 0 (0.5 < 1) and 2; pixel 1 (1.5 > 0)
    stays seen. top_p 100 keeps every unseen-predicted pixel; labels are the predicted class.
    """
    from zs3core.self_training import pseudo_label

    logits = torch.tensor([[2.0, 1.0], [3.0, 0.0], [0.0, 1.0]])
    pool = {"features": logits, "image": torch.zeros(3, dtype=torch.long), "labels": torch.full((3,), 255)}
    sel0, y0 = pseudo_label(lambda x: x, pool, [0], [1], 100, "drop", 0.0)
    sel1, y1 = pseudo_label(lambda x: x, pool, [0], [1], 100, "drop", 1.5)
    assert sel0.tolist() == [False, False, True] and y0.tolist() == [1]
    assert sel1.tolist() == [True, False, True] and y1.tolist() == [1, 1]


@pytest.mark.parametrize("protocol", ["drop", "ignore"])
def test_default_pseudo_labels_do_not_read_the_pool_annotation(protocol):
    """The default rule (the paper's ZS5Net) reads nothing of the pool's labels: poisoning them
    (every pixel seen, then every pixel unseen, then the true pattern) leaves the pseudo-labels
    unchanged, under both filters. The "seen" rule under ``ignore`` does change with them
    (p5, the most confident, is dropped once it is labelled seen), which shows the poison bites.

    Expected by hand with top_p 100 (see ROWS): every unseen-predicted pixel, p0, p1, p3, p5, p6,
    labelled by its argmax: 1, 1, 2, 1, 2.
    """
    from zs3core.self_training import pseudo_label

    logits = PROBS.log()
    results, seen_rule = [], []
    for labels in (torch.zeros(7, dtype=torch.long), torch.full((7,), 2), torch.tensor([0, 1, 255, 2, 0, 0, 255])):
        pool = {"features": logits, "image": IMAGE, "labels": labels}
        sel, y = pseudo_label(lambda x: x, pool, [0], UNSEEN, 100, protocol, 0.0)
        results.append((torch.nonzero(sel).squeeze(1).tolist(), y.tolist()))
        seen_rule.append(torch.nonzero(pseudo_label(lambda x: x, pool, [0], UNSEEN, 100, protocol, 0.0,
                                                    pool_annotation="seen")[0]).squeeze(1).tolist())
    assert results == [([0, 1, 3, 5, 6], [1, 1, 2, 1, 2])] * 3
    if protocol == "ignore":
        assert seen_rule == [[], [0, 1, 3, 5, 6], [1, 3, 6]]
    else:
        assert seen_rule == [[0, 1, 3, 5, 6]] * 3


# ------------------------------------------------------------------ selection rules beyond the per-image top-p
def _brute_select(probs, image, unseen, rule, top_p=0.0, threshold=0.5):
    """Second implementation with plain Python lists: group the unseen-predicted pixels (by image
    or by predicted class), sort each group by (-confidence, index), keep ceil(p/100 * n)."""
    rows = probs.tolist()
    pred = [max(range(len(r)), key=lambda c: (r[c], -c)) for r in rows]
    conf = [r[p] for r, p in zip(rows, pred)]
    cand = [i for i in range(len(rows)) if pred[i] in unseen]
    if rule == "threshold":
        return sorted(i for i in cand if conf[i] >= threshold)
    key = (lambda i: int(image[i])) if rule == "image_top_p" else (lambda i: pred[i])
    out = []
    for g in sorted({key(i) for i in cand}):
        members = sorted((i for i in cand if key(i) == g), key=lambda i: (-conf[i], i))
        out += members[:math.ceil(top_p / 100 * len(members))]
    return sorted(out)


@pytest.mark.parametrize("rule,top_p,threshold", [("image_top_p", 30, 0.5), ("class_top_p", 30, 0.5),
                                                  ("class_top_p", 100, 0.5), ("threshold", 0, 0.6),
                                                  ("threshold", 0, 0.0)])
def test_selection_rules_match_brute_force(rule, top_p, threshold):
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(3 * torch.randn(200, 5, generator=g), 1)
    image = torch.randint(4, (200,), generator=g)
    got = torch.nonzero(select_pseudo_labels(probs, image, [3, 4], top_p, rule=rule, threshold=threshold)).squeeze(1)
    assert got.tolist() == _brute_select(probs, image, [3, 4], rule, top_p, threshold)
    assert len(got) > 0


def test_class_top_p_keeps_every_unseen_class_where_image_top_p_does_not():
    """Class 3 is predicted on 9 confident pixels, class 4 on 1 less confident one, all in one
    image: the per-image top 10 % keeps one pixel of class 3 only; the per-class rule keeps one of each."""
    probs = torch.tensor([[0.0, 0.0, 0.0, 0.9, 0.1]] * 9 + [[0.0, 0.0, 0.0, 0.4, 0.6]])
    image = torch.zeros(10, dtype=torch.long)
    per_image = select_pseudo_labels(probs, image, [3, 4], 10)
    per_class = select_pseudo_labels(probs, image, [3, 4], 10, rule="class_top_p")
    assert per_image.tolist() == [True] + [False] * 9
    assert per_class.tolist() == [True] + [False] * 8 + [True]


def test_bad_rule_and_threshold():
    probs, image = torch.full((2, 3), 1 / 3), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="self_training.rule"):
        select_pseudo_labels(probs, image, [2], 10, rule="per_class")
    with pytest.raises(ValueError, match="self_training.threshold"):
        select_pseudo_labels(probs, image, [2], 10, rule="threshold", threshold=1.5)


def test_report_gives_precision_per_class_by_hand():
    from types import SimpleNamespace

    from zs3core.self_training import pseudo_label_report

    split = SimpleNamespace(classes=("a", "b", "c", "d"), unseen=(2, 3))
    sel = torch.tensor([True, True, True, True, True, False])
    pseudo = torch.tensor([2, 2, 2, 3, 3])
    gt = torch.tensor([2, 0, 255, 3, 1, 3])      # class 2: 1 right of 2 scored (void left out); class 3: 1 of 2
    r = pseudo_label_report(sel, pseudo, gt, split, 25, 0.5, 100, rule="class_top_p", threshold=0.9)
    assert r["pseudo_label_precision_per_class"] == {"c": 50.0, "d": 50.0}
    assert r["pseudo_label_precision"] == 50.0
    assert r["rule"] == "class_top_p" and r["threshold"] is None
    assert r["pseudo_labels_per_class"] == {"c": 3, "d": 2}
