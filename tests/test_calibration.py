"""Calibrated stacking and the zero-shot cross-validation of γ, against hand-computed values."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from zs3core.calibration import Fold, calibrate, cross_validate, gamma_grid, hiou_curve, make_folds, margins, select_gamma
from zs3core.config import MMDParams
from zs3core.crossval import select_gammas
from zs3core.generators import get_kind
from zs3core.metrics import harmonic_iou


def test_calibrate_hand_made_score_map():
    """γ = 2 is subtracted from the seen channels (0, 2) of a (1, 3, 1, 2) score map, nowhere else."""
    s = torch.tensor([[[[3.0, 0.0]], [[2.5, 1.0]], [[1.0, 4.0]]]])
    out = calibrate(s, seen=[0, 2], gamma=2.0)
    torch.testing.assert_close(out, torch.tensor([[[[1.0, -2.0]], [[2.5, 1.0]], [[-1.0, 2.0]]]]))
    assert out.argmax(1).tolist() == [[[1, 2]]]         # pixel 0 switches to the unseen class 1
    assert s.argmax(1).tolist() == [[[0, 2]]]           # input untouched
    torch.testing.assert_close(calibrate(s, [0, 2], 0.0), s)


def test_margins_and_hiou_curve_by_hand():
    """Classes 0, 1 seen, 2 unseen. Four samples (true class, weight, scores):
        a: 0, w 3, (4, 0, 1)  margin 3     b: 1, w 1, (0, 2, 1)  margin 1
        c: 2, w 2, (2, 0, 1)  margin 1     d: 2, w 2, (0, 1, 3)  margin -2
    γ = 0: predictions (0, 1, 0, 2). γ = 1.5: (0, 2, 2, 2). γ = 4: (2, 2, 2, 2).
    """
    labels = np.array([0, 1, 2, 2])
    w = np.array([3.0, 1.0, 2.0, 2.0])
    s = torch.tensor([[4.0, 0, 1], [0, 2, 1], [2, 0, 1], [0, 1, 3]])
    m, bs, bu = margins(s, [0, 1], [2])
    np.testing.assert_allclose(m, [3, 1, 1, -2])
    assert bs.tolist() == [0, 1, 0, 1] and bu.tolist() == [2, 2, 2, 2]

    def hiou(iou0, iou1, iou2):
        return harmonic_iou(100 * (iou0 + iou1) / 2, 100 * iou2)

    # γ = 0: class 0: tp 3, gt 3, pred 3+2 -> 3/5; class 1: 1/1; class 2: tp 2 (d), gt 4, pred 2 -> 2/4
    # γ = 1.5: class 0: 3/3; class 1: tp 0, gt 1, pred 0 -> 0; class 2: tp 4, gt 4, pred 5 -> 4/5
    # γ = 4: class 0: 0; class 1: 0; class 2: 4/8
    expected = [hiou(3 / 5, 1.0, 0.5), hiou(1.0, 0.0, 0.8), hiou(0.0, 0.0, 0.5)]
    np.testing.assert_allclose(hiou_curve(labels, w, s, [0, 1], [2], np.array([0.0, 1.5, 4.0])), expected, rtol=1e-9)


def test_select_gamma_prefers_the_value_closest_to_zero_among_ties():
    gammas = np.array([-1.0, 0.5, 2.0, 3.0])
    curves = np.array([[1.0, 5.0, 5.0, 2.0], [3.0, 7.0, 7.0, 0.0]])   # mean 2, 6, 6, 1
    assert select_gamma(gammas, curves) == (0.5, 6.0)


def test_gamma_grid_holds_zero_and_spans_the_margins():
    g = gamma_grid([np.array([-3.0, 1.0]), np.array([5.0])], n=5)
    assert 0.0 in g and g.min() <= -3.0 + 1e-6 and g.max() >= 5.0 and np.all(np.diff(g) > 0)


def test_make_folds_hold_out_every_seen_class_once_before_repeating():
    folds = make_folds([0, 1, 2, 3, 4, 5], 2, 3, range(10), 0.3, torch.Generator().manual_seed(0))
    held = [c for f in folds for c in f.pseudo_unseen]
    assert sorted(held) == [0, 1, 2, 3, 4, 5]
    for f in folds:
        assert len(f.val_rows) == 3 and len(f.train_rows) == 7 and not set(f.val_rows) & set(f.train_rows)
    again = make_folds([0, 1, 2, 3, 4, 5], 2, 3, range(10), 0.3, torch.Generator().manual_seed(0))
    assert again == folds
    with pytest.raises(ValueError):
        make_folds([0, 1], 1, 1, range(4), 0.5, torch.Generator())


def test_cross_validate_weights_features_by_the_pixels_they_stand_for():
    """One fold, pseudo-unseen class 2, one validation feature per class (image row 1), whose
    pixels are 1000 (class 0), 10 (class 1), 10 (class 2). A fixed scorer gives margins
    (best seen - best unseen score) 1, 2 and 0.5 to the class 0, 1, 2 features.

    γ in (0.5, 1]: every feature right, hIoU 100 -> chosen. γ in (1, 2]: class 0 goes to 2;
    weighted, IoU_2 = 10 / (10 + 1000), seen mIoU = (0 + 100) / 2; counted per feature it would be
    IoU_2 = 1/2 and hIoU 50: the curve must show the weighted value.
    """
    feats = torch.tensor([[0.0], [0.0], [1.0], [1.0], [2.0], [2.0]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    image = torch.tensor([0, 1, 0, 1, 0, 1])
    counts = np.array([[5, 5, 5], [1000, 10, 10]])
    table = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0], [1.5, 0.0, 1.0]])   # scores by feature value
    seen_masks = []

    def fit(fold, mask):
        seen_masks.append(mask.clone())
        return lambda x: table[x[:, 0].long()]

    r = cross_validate(feats, labels, image, counts, [Fold((2,), (0,), (1,))], fit, grid_size=11)
    assert 0.5 < r["gamma"] <= 1.0 and r["hIoU"] == pytest.approx(100.0)
    assert seen_masks[0].tolist() == [True, False, True, False, False, False]   # fold-train rows, class 2 removed
    i = int(np.flatnonzero((r["gammas"] > 1.0) & (r["gammas"] <= 2.0))[0])
    assert r["curves"][0, i] == pytest.approx(harmonic_iou(50.0, 100.0 * 10 / 1010), rel=1e-9)
    assert r["uncalibrated_hIoU"] == 0.0
    f = r["folds"][0]                                   # diagnostics: margins all > 0, so nothing is unseen at γ = 0
    assert f["unseen_share"] == pytest.approx(10 / 1020) and f["predicted_unseen_share_at_0"] == 0.0
    assert 0.5 < f["gamma"] <= 1.0 and f["hIoU_at_0"] == 0.0
    table[0] = torch.tensor([0.0, 0.0, 1.0])            # class-0 features now score unseen first: margin -1
    f = cross_validate(feats, labels, image, counts, [Fold((2,), (0,), (1,))], fit, grid_size=11)["folds"][0]
    assert f["predicted_unseen_share_at_0"] == pytest.approx(1000 / 1020)


def _toy_cache(poison: bool):
    """Four well separated seen classes in 2-D plus rows of two unseen classes (4, 5). With
    ``poison`` everything about the unseen classes changes: their rows swap labels (4 <-> 5) and
    get other features, their label-map pixels move, their pixel counts change."""
    g, other = torch.Generator().manual_seed(0), torch.Generator().manual_seed(99)
    centers = torch.tensor([[4.0, 0], [0, 4.0], [-4.0, 0], [0, -4.0], [3, 3], [-3, -3]])
    feats, labels, image = [], [], []
    for row in range(8):
        for c in range(6):
            x, lab = centers[c] + 0.5 * torch.randn(12, 2, generator=g), torch.full((12,), c)
            if poison and c >= 4:                                 # unseen rows: swapped labels, other features
                lab, x = torch.full((12,), 9 - c), 10 * torch.randn(12, 2, generator=other)
            feats.append(x)
            labels.append(lab)
            image.append(torch.full((12,), row))
    maps = {r: torch.full((4, 4), r % 4, dtype=torch.uint8) for r in range(8)}
    counts = np.full((8, 6), 100.0)
    if poison:
        for r in maps:
            maps[r][0, :] = 4 + r % 2                            # unseen pixels moved around
        counts[:, 4:] = np.arange(16).reshape(8, 2) * 1000.0
    return {"features": torch.cat(feats), "labels": torch.cat(labels), "image": torch.cat(image)}, maps, counts


def test_cross_validation_never_reads_unseen_labels(tiny_config):
    """Poisoning every unseen label the function is given leaves the chosen γ unchanged."""
    g = dataclasses.replace(tiny_config.generator, kind="gmmn", hidden=16, noise_dim=2, dropout=0.0, lr=0.01, steps=30,
                            samples_per_class=16, mmd=MMDParams("paper", (1.0, 2.0)))
    cfg = dataclasses.replace(tiny_config.classifier, epochs=3, batch_size=64, lr=0.05, weight_decay=0.0,
                              unseen_weight=100.0, generated_per_seen=20, generated_per_unseen=20)
    emb = torch.eye(6)
    got = []
    for poison in (False, True):
        cache, maps, counts = _toy_cache(poison)
        torch.manual_seed(0)
        r = select_gammas(cache, maps, counts, [0, 1, 2, 3], [4, 5], (255,), emb, get_kind("gmmn"), g, cfg,
                          ["zs3net", "devise", "real_feature_ceiling", "zs5net"], 2, 0.25, 21,
                          torch.Generator().manual_seed(1), torch.device("cpu"),
                          {"rule": "image_top_p", "top_p": 50.0, "threshold": 1.0, "protocol": "drop",
                           "pool_annotation": "none"})
        got.append({m: (v["gamma"], v["hIoU"]) for m, v in r.items()})
    assert got[0] == got[1]
    assert all(np.isfinite(g) for g, _ in got[0].values())


def test_zs5net_gets_its_own_gamma_and_leaves_the_other_models_as_before(tiny_config):
    """Adding zs5net to the calibrated models changes no other model's γ or CV hIoU (it is scored
    last, on the zs3net fold models); its own CV result exists; without zs3net it is refused."""
    g = dataclasses.replace(tiny_config.generator, kind="gmmn", hidden=16, noise_dim=2, dropout=0.0, lr=0.01, steps=30,
                            samples_per_class=16, mmd=MMDParams("paper", (1.0, 2.0)))
    cfg = dataclasses.replace(tiny_config.classifier, epochs=3, batch_size=64, lr=0.05, weight_decay=0.0,
                              unseen_weight=100.0, generated_per_seen=20, generated_per_unseen=20)
    emb = torch.tensor([[4.0, 0], [0, 4.0], [-4.0, 0], [0, -4.0], [3, 3], [-3, -3]]) / 4
    rule = {"rule": "image_top_p", "top_p": 50.0, "threshold": 1.0, "protocol": "drop", "pool_annotation": "none"}
    cache, maps, counts = _toy_cache(False)
    runs = []
    for models in (["zs3net", "devise", "real_feature_ceiling"], ["zs5net", "zs3net", "devise", "real_feature_ceiling"]):
        torch.manual_seed(0)
        runs.append(select_gammas(cache, maps, counts, [0, 1, 2, 3], [4, 5], (255,), emb, get_kind("gmmn"), g, cfg,
                                  models, 2, 0.25, 21, torch.Generator().manual_seed(1), torch.device("cpu"), rule))
    for m in ("zs3net", "devise", "real_feature_ceiling"):
        assert (runs[0][m]["gamma"], runs[0][m]["hIoU"]) == (runs[1][m]["gamma"], runs[1][m]["hIoU"])
    z5 = runs[1]["zs5net"]
    assert list(runs[1]) == ["zs5net", "zs3net", "devise", "real_feature_ceiling"]     # the order asked for
    assert np.isfinite(z5["gamma"]) and z5["curves"].shape == runs[1]["zs3net"]["curves"].shape
    assert not np.array_equal(z5["curves"], runs[1]["zs3net"]["curves"])          # a retrained model, not ZS3Net's
    with pytest.raises(ValueError, match="zs5net needs zs3net"):
        select_gammas(cache, maps, counts, [0, 1, 2, 3], [4, 5], (255,), emb, get_kind("gmmn"), g, cfg, ["zs5net"], 2,
                      0.25, 21, torch.Generator().manual_seed(1), torch.device("cpu"), rule)
