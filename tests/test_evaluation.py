"""Generalized, vanilla (ZS3Net Table 2) and calibrated evaluation through evaluate_split, with a stub backbone."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zs3core.evaluation import evaluate_split

# 3 classes: 0 seen, 1 seen, 2 unseen. One 1x3 image; the "features" are the logits themselves.


class Slice(nn.Module):  # a "classifier" that picks score columns
    def __init__(self, cols):
        super().__init__()
        self.cols = cols

    def forward(self, x):
        return x[:, self.cols]


class StubBackbone(nn.Module):
    def __init__(self, feats, cols):
        super().__init__()
        self.feats = feats
        self.classifier = Slice(cols)

    def features(self, image):
        return self.feats


class OneImage(torch.utils.data.Dataset):
    def __init__(self, target):
        self.target = target

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return torch.zeros(3, 1, 3), self.target, {}


def test_generalized_and_vanilla_confusions_by_hand():
    # per-pixel scores over classes (0, 1, 2), pixels left to right; ground truth (2, 2, 0)
    scores = torch.tensor([[5.0, 1.0, 0.0],    # rows = pixels, columns = classes. GT 2: generalized -> 0; among unseen only -> 2
                           [0.0, 1.0, 3.0],    # GT 2: generalized -> 2
                           [1.0, 9.0, 2.0]]).T.reshape(1, 3, 1, 3)  # GT 0: generalized -> 1
    target = torch.tensor([[2, 2, 0]])
    bb = StubBackbone(scores, [0, 1])  # seen-only backbone: outputs for classes 0, 1
    heads = {"zs3net": Slice([0, 1, 2])}
    res, _ = evaluate_split(bb, heads, OneImage(target), trained=[0, 1], unseen=[2], num_classes=3,
                            device=torch.device("cpu"))
    conf = {m: r["generalized"] for m, r in res.items()}
    vconf = {m: r["vanilla"] for m, r in res.items() if "vanilla" in r}
    exp_zs3 = np.zeros((3, 3), int)
    exp_zs3[2, 0] += 1
    exp_zs3[2, 2] += 1
    exp_zs3[0, 1] += 1
    np.testing.assert_array_equal(conf["zs3net"], exp_zs3)
    exp_seen_only = np.zeros((3, 3), int)
    exp_seen_only[2, 0] += 1   # pixel 0: argmax(5, 1) -> 0
    exp_seen_only[2, 1] += 1   # pixel 1: argmax(0, 1) -> 1
    exp_seen_only[0, 1] += 1
    np.testing.assert_array_equal(conf["seen_only"], exp_seen_only)
    # vanilla: only the two unseen pixels, classified among {2}: both correct; the seen-only
    # model has no unseen output, so it has no vanilla score
    exp_v = np.zeros((3, 3), int)
    exp_v[2, 2] = 2
    np.testing.assert_array_equal(vconf["zs3net"], exp_v)
    assert "seen_only" not in vconf


def test_oracle_backbone_gets_vanilla_scores():
    scores = torch.tensor([[0.0, 2.0, 1.0], [0.0, 1.0, 2.0], [3.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 3)
    target = torch.tensor([[2, 1, 0]])
    # the oracle's outputs are in the order (2, 0, 1): logits column j scores class trained[j]
    bb = StubBackbone(scores, [2, 0, 1])
    res, _ = evaluate_split(bb, {}, OneImage(target), trained=[2, 0, 1], unseen=[1, 2], num_classes=3,
                            device=torch.device("cpu"), backbone_name="oracle")
    conf = {m: r["generalized"] for m, r in res.items()}
    vconf = {m: r["vanilla"] for m, r in res.items() if "vanilla" in r}
    # rows of `scores` are pixels: pixel 0 (GT 2) scores (0, 2, 1) -> 1; pixel 1 (GT 1) (0, 1, 2) -> 2;
    # pixel 2 (GT 0) (3, 0, 0) -> 0
    exp = np.zeros((3, 3), int)
    exp[2, 1] = exp[1, 2] = exp[0, 0] = 1
    np.testing.assert_array_equal(conf["oracle"], exp)
    # vanilla among {1, 2}: pixel 0 (GT 2): (2, 1) -> 1; pixel 1 (GT 1): (1, 2) -> 2; pixel 2 is seen: skipped
    expv = np.zeros((3, 3), int)
    expv[2, 1] = expv[1, 2] = 1
    np.testing.assert_array_equal(vconf["oracle"], expv)


def test_calibrated_protocol_by_hand():
    """γ is subtracted from the seen classes' scores before the argmax, per model.

    Scores (classes 0, 1 seen, 2 unseen) of three pixels with ground truth (2, 2, 0):
    pixel 0: (5, 1, 0) -> seen margin 5; pixel 1: (0, 1, 3) -> unseen already;
    pixel 2: (1, 9, 2) -> margin 7. With γ = 6 pixel 0 becomes class 2 (5 - 6 < 0), pixel 2
    stays class 1 (9 - 6 = 3 > 2). The seen-only backbone has no unseen output: no calibrated score.
    """
    scores = torch.tensor([[5.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 9.0, 2.0]]).T.reshape(1, 3, 1, 3)
    target = torch.tensor([[2, 2, 0]])
    bb = StubBackbone(scores, [0, 1])
    res, panels = evaluate_split(bb, {"zs3net": Slice([0, 1, 2])}, OneImage(target), trained=[0, 1], unseen=[2],
                                 num_classes=3, device=torch.device("cpu"), panel_rows=[0], gammas={"zs3net": 6.0})
    exp = np.zeros((3, 3), int)
    exp[2, 2] = 2   # pixels 0 and 1
    exp[0, 1] = 1   # pixel 2
    np.testing.assert_array_equal(res["zs3net"]["calibrated"], exp)
    assert "calibrated" not in res["seen_only"]
    np.testing.assert_array_equal(panels[0]["zs3net@calibrated"], [[2, 2, 1]])
    np.testing.assert_array_equal(panels[0]["zs3net"], [[0, 2, 1]])
