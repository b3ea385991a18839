"""Group metrics (PA, MA, mIoU, hIoU) and the confusion matrix, against hand arithmetic."""
from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest
import torch

from zs3core.metrics import (
    confusion_matrix,
    group_scores,
    harmonic_iou,
    per_class_accuracy,
    per_class_iou,
    zsl_scores,
)

# 5 classes; seen = {0, 1, 2}, unseen = {3, 4}. Rows = ground truth, columns = prediction.
#   class 2 (seen)   never in the ground truth but predicted 3 times -> IoU 0, left out of MA
#   class 4 (unseen) absent from both ground truth and prediction   -> left out of every mean
CONF = np.array([
    [8, 1, 1, 0, 0],   # GT 0: 10 pixels
    [2, 5, 0, 3, 0],   # GT 1: 10 pixels
    [0, 0, 0, 0, 0],   # GT 2: 0 pixels
    [1, 0, 2, 3, 0],   # GT 3: 6 pixels
    [0, 0, 0, 0, 0],   # GT 4: 0 pixels
])
SEEN, UNSEEN = [0, 1, 2], [3, 4]

# By hand. Predicted-pixel totals (column sums): P0 = 11, P1 = 6, P2 = 3, P3 = 6, P4 = 0.
IOU = {0: F(8, 10 + 11 - 8),   # 8/13
       1: F(5, 10 + 6 - 5),    # 5/11
       2: F(0, 0 + 3 - 0),     # 0
       3: F(3, 6 + 6 - 3)}     # 3/9 = 1/3
ACC = {0: F(8, 10), 1: F(5, 10), 3: F(3, 6)}

SEEN_PA = F(8 + 5 + 0, 10 + 10 + 0)                    # 13/20
SEEN_MA = (F(8, 10) + F(5, 10)) / 2                    # class 2 has no GT pixel: 13/20
SEEN_MIOU = (F(8, 13) + F(5, 11) + F(0)) / 3           # class 2 counts as 0
UNSEEN_PA = F(3, 6)
UNSEEN_MA = F(3, 6)                                    # class 4 left out
UNSEEN_MIOU = F(1, 3)                                  # class 4 left out
ALL_PA = F(8 + 5 + 0 + 3, 10 + 10 + 0 + 6)             # 16/26
ALL_MA = (F(8, 10) + F(5, 10) + F(3, 6)) / 3           # 3/5
ALL_MIOU = (F(8, 13) + F(5, 11) + F(0) + F(1, 3)) / 4
HIOU = 2 * SEEN_MIOU * UNSEEN_MIOU / (SEEN_MIOU + UNSEEN_MIOU)


def pct(x: F) -> float:
    return float(100 * x)


def test_per_class_iou_and_accuracy_by_hand():
    """IoU/recall per class; NaN exactly where the class is absent (GT and prediction / GT)."""
    iou = per_class_iou(CONF)
    acc = per_class_accuracy(CONF)
    for c, v in IOU.items():
        assert iou[c] == pytest.approx(pct(v))
    assert np.isnan(iou[4])
    for c, v in ACC.items():
        assert acc[c] == pytest.approx(pct(v))
    assert np.isnan(acc[2]) and np.isnan(acc[4])


def test_zsl_scores_by_hand():
    """Seen / unseen / all PA, MA, mIoU and hIoU equal the fractions computed by hand."""
    s = zsl_scores(CONF, SEEN, UNSEEN)
    expected = {
        "seen": {"PA": SEEN_PA, "MA": SEEN_MA, "mIoU": SEEN_MIOU},
        "unseen": {"PA": UNSEEN_PA, "MA": UNSEEN_MA, "mIoU": UNSEEN_MIOU},
        "all": {"PA": ALL_PA, "MA": ALL_MA, "mIoU": ALL_MIOU},
    }
    for group, vals in expected.items():
        for k, v in vals.items():
            assert s[group][k] == pytest.approx(pct(v)), (group, k)
    assert s["hIoU"] == pytest.approx(pct(HIOU))


def test_both_absent_class_rules_by_hand():
    """Unseen class 4 is absent from ground truth and prediction. ``skip`` leaves it out of the
    unseen means; ``zero`` (official ZS3 code, np.nanmean(np.nan_to_num(x))) counts it as 0.
    Class 2 (seen, no GT, predicted 3 times) is 0 in mIoU under both rules; in MA it has no
    accuracy (no GT pixel), so ``skip`` leaves it out and ``zero`` counts it as 0."""
    skip = zsl_scores(CONF, SEEN, UNSEEN, absent="skip")
    zero = zsl_scores(CONF, SEEN, UNSEEN, absent="zero")
    assert skip["unseen"]["mIoU"] == pytest.approx(pct(F(1, 3)))                 # (1/3) / 1
    assert zero["unseen"]["mIoU"] == pytest.approx(pct(F(1, 3) / 2))             # (1/3 + 0) / 2
    assert skip["unseen"]["MA"] == pytest.approx(pct(F(1, 2)))                   # 3/6
    assert zero["unseen"]["MA"] == pytest.approx(pct(F(1, 4)))                   # (1/2 + 0) / 2
    assert skip["seen"]["mIoU"] == zero["seen"]["mIoU"] == pytest.approx(pct(SEEN_MIOU))
    assert zero["seen"]["MA"] == pytest.approx(pct((F(8, 10) + F(5, 10) + 0) / 3))
    assert skip["unseen"]["PA"] == zero["unseen"]["PA"] == pytest.approx(pct(F(3, 6)))
    s_, u_ = SEEN_MIOU, F(1, 3) / 2
    assert zero["hIoU"] == pytest.approx(pct(2 * s_ * u_ / (s_ + u_)))
    with pytest.raises(ValueError, match="absent-class rule"):
        group_scores(CONF, UNSEEN, absent="nan")


def test_group_scores_by_hand():
    """group_scores of the unseen group, skip rule, against the hand values above."""
    got = group_scores(CONF, UNSEEN)
    assert got["PA"] == pytest.approx(pct(F(3, 6)))
    assert got["MA"] == pytest.approx(pct(ACC[3]))
    assert got["mIoU"] == pytest.approx(pct(IOU[3]))


def test_unseen_predicted_as_seen_counts_against_unseen():
    """GZSL protocol: moving unseen pixels to a seen prediction lowers unseen PA/MA and seen IoU."""
    conf = np.array([[4, 0], [3, 1]])  # class 1 (unseen): 3 of 4 pixels predicted as class 0
    s = zsl_scores(conf, [0], [1])
    assert s["unseen"]["PA"] == pytest.approx(pct(F(1, 4)))
    assert s["unseen"]["mIoU"] == pytest.approx(pct(F(1, 4 + 1 - 1)))
    assert s["seen"]["PA"] == pytest.approx(100.0)
    assert s["seen"]["mIoU"] == pytest.approx(pct(F(4, 4 + 7 - 4)))


def test_hiou_zero_when_both_mious_zero():
    """Every pixel wrong: both mIoUs are 0 and hIoU is 0 (not NaN)."""
    conf = np.array([[0, 3], [2, 0]])
    s = zsl_scores(conf, [0], [1])
    assert s["seen"]["mIoU"] == 0.0 and s["unseen"]["mIoU"] == 0.0
    assert s["hIoU"] == 0.0
    assert harmonic_iou(0.0, 0.0) == 0.0
    assert harmonic_iou(50.0, 0.0) == 0.0
    assert harmonic_iou(40.0, 60.0) == pytest.approx(2 * 40 * 60 / 100)


def test_group_absent_everywhere_scores_zero():
    """A group none of whose classes appears in GT or prediction scores 0 (empty nanmean)."""
    conf = np.array([[5, 0], [0, 0]])
    assert group_scores(conf, [1]) == {"PA": 0.0, "MA": 0.0, "mIoU": 0.0}


def brute_confusion(target, pred, num_classes, ignore_index):
    m = [[0] * num_classes for _ in range(num_classes)]
    for t, p in zip(target.reshape(-1).tolist(), pred.reshape(-1).tolist()):
        if t == ignore_index or not 0 <= t < num_classes:
            continue
        m[t][p] += 1
    return m


@pytest.mark.parametrize("num_classes,ignore_index,seed", [(4, 255, 0), (11, 11, 1), (3, 255, 2)])
def test_confusion_matrix_against_loop(num_classes, ignore_index, seed):
    """Random (2, 7, 9) maps with ignored pixels: bincount result equals a python double loop."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, (2, 7, 9), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.2] = ignore_index
    pred = torch.randint(0, num_classes, (2, 7, 9), generator=g)
    conf = confusion_matrix(target, pred, num_classes, ignore_index)
    assert conf.shape == (num_classes, num_classes)
    assert conf.dtype == torch.int64
    assert conf.tolist() == brute_confusion(target, pred, num_classes, ignore_index)
    assert int(conf.sum()) == int((target != ignore_index).sum())


def test_confusion_matrix_uint8_targets():
    """uint8 label maps (as read from PNG) with 255 borders are handled like int64."""
    target = torch.tensor([[0, 1, 255], [2, 2, 1]], dtype=torch.uint8)
    pred = torch.tensor([[0, 2, 1], [2, 0, 1]])
    conf = confusion_matrix(target, pred, 3, 255)
    assert conf.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]


def test_confusion_matrix_shape_mismatch():
    """Different target/prediction shapes raise ValueError naming both shapes."""
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 2, 255)
