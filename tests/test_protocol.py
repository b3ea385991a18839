"""The protocol rule: the dev split, the pretraining protocol and user weights, and generator
settings ranked by the seen-class CV without reading unseen labels."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from zs3core.compose import compose
from zs3core.io import Zs3Error
from zs3core.splits import carve_dev, labelled_and_pool_rows


# ------------------------------------------------------------------ dev split
IDS = ["0001TP_1", "0006R0_1", "0006R0_2", "0016E5_1", "0016E5_2", "0016E5_3", "0006R0_3", "0016E5_4"]
KEPT = np.array([True, True, False, True, True, True, True, True])   # 0006R0_2 holds an unseen pixel


def test_dev_sequence_holds_out_the_kept_frames_of_that_sequence():
    dev = carve_dev(IDS, KEPT, "0006R0", 0)
    assert [i for i, d in zip(IDS, dev) if d] == ["0006R0_1", "0006R0_3"]     # 0006R0_2 is not kept


def test_dev_size_takes_evenly_spaced_kept_images():
    # kept rows: 0, 1, 3, 4, 5, 6, 7 (7 rows); 3 evenly spaced: positions 0, 3, 6 of them -> rows 0, 4, 7
    assert np.flatnonzero(carve_dev(IDS, KEPT, None, 3)).tolist() == [0, 4, 7]
    # after the sequence: kept rest 0, 3, 4, 5, 7; 2 evenly spaced: positions 0, 4 -> rows 0, 7
    assert np.flatnonzero(carve_dev(IDS, KEPT, "0006R0", 2)).tolist() == [0, 1, 6, 7]
    assert not carve_dev(IDS, KEPT, None, 0).any()


def test_dev_split_errors_name_the_key():
    with pytest.raises(Zs3Error, match=r"split.dev_sequence 'Seq05VD' matches no kept.*0001TP"):
        carve_dev(IDS, KEPT, "Seq05VD", 0)
    with pytest.raises(Zs3Error, match="takes all 7 kept"):
        carve_dev(IDS, KEPT, None, 50)


def test_dev_images_are_neither_labelled_nor_pool():
    import pandas as pd

    train = pd.DataFrame({"status": ["kept", "dev", "dropped", "kept"]})
    assert labelled_and_pool_rows(train, "drop") == ([0, 3], [2])
    assert labelled_and_pool_rows(train, "ignore") == ([0, 3], [0, 2, 3])


# ------------------------------------------------------------------ pretraining protocol, user weights
def _params(tiny_config, **kw):
    return dataclasses.replace(tiny_config.backbone, name="resnet18", output_stride=16, feature_dim=8, **kw)


def test_official_zs3_checkpoint_layout_loads_tensor_for_tensor(tiny_config, tmp_path):
    """A checkpoint written here in the official layout ({'state_dict': {'module.conv1.weight':
    ...}} with an ImageNet fc) loads into the body: every body tensor equals the source's."""
    import torchvision

    from zs3core.backbone import build_backbone, pretraining_protocol

    torch.manual_seed(3)
    src = torchvision.models.resnet18()
    for p in src.parameters():
        p.data.normal_()
    path = tmp_path / "resnet_backbone_pretrained_imagenet_wo_pascalvoc.pth.tar"
    torch.save({"epoch": 90, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    params = _params(tiny_config, pretrained=False, weights=str(path))
    assert pretraining_protocol(params) == "imagenet-without-unseen (user weights)"
    body = build_backbone(3, params).body.state_dict()
    ref = src.state_dict()
    assert torch.equal(body["stem.0.weight"], ref["conv1.weight"])
    assert torch.equal(body["stem.1.running_var"], ref["bn1.running_var"])
    assert torch.equal(body["layer4.1.conv2.weight"], ref["layer4.1.conv2.weight"])
    for k, v in body.items():
        name = k.replace("stem.0.", "conv1.").replace("stem.1.", "bn1.")
        assert torch.equal(v, ref[name]), k
    # a trained model is rebuilt without reading the weights file again
    path.unlink()
    assert build_backbone(3, params, pretrained=False) is not None


def test_bad_user_weights_name_the_file(tiny_config, tmp_path):
    from zs3core.backbone import build_backbone, pretraining_protocol

    with pytest.raises(Zs3Error, match=r"backbone.weights: .*missing.pt does not exist"):
        build_backbone(3, _params(tiny_config, pretrained=False, weights=str(tmp_path / "missing.pt")))
    bad = tmp_path / "resnet50.pt"
    import torchvision

    torch.save(torchvision.models.resnet50().state_dict(), bad)                 # another body
    with pytest.raises(Zs3Error, match=r"resnet50.pt does not fit the .*-tensor body"):
        build_backbone(3, _params(tiny_config, pretrained=False, weights=str(bad)))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(Zs3Error, match=r"junk.pt cannot be read"):
        build_backbone(3, _params(tiny_config, pretrained=False, weights=str(junk)))
    assert pretraining_protocol(_params(tiny_config, pretrained=False, weights=None)) == "scratch"
    assert pretraining_protocol(_params(tiny_config, pretrained=True, weights=None)) == "imagenet-1k"


def test_pretrained_and_weights_together_are_refused(tiny_config):
    from zs3core.config import as_dict, config_from_dict

    raw = as_dict(tiny_config)
    raw["backbone"] = {**raw["backbone"], "pretrained": True, "weights": "w.pth"}
    with pytest.raises(Zs3Error, match=r"backbone.pretrained .* and backbone.weights \(w.pth\) are both set"):
        config_from_dict(raw)


# ------------------------------------------------------------------ generator settings by the seen-class CV
def test_generator_cv_ranking_never_reads_unseen_labels(tiny_config):
    """Poisoning every unseen label, feature, pixel and count leaves the ranking and its scores
    unchanged, relation-term candidates included (their unseen classes are the folds'
    pseudo-unseen ones); the candidates get different scores (the poison is the only thing that
    could move them)."""
    from test_calibration import _toy_cache

    from zs3core.config import as_dict
    from zs3core.generator_cv import rank_candidates
    from zs3core.splits import ClassSplit

    raw = as_dict(tiny_config)
    raw["generator"] = {**raw["generator"], "kind": "gmmn", "hidden": 16, "noise_dim": 2, "dropout": 0.0, "steps": 30,
                        "samples_per_class": 16, "mmd": {"convention": "paper", "bandwidths": [1.0, 2.0]}}
    raw["classifier"] = {**raw["classifier"], "epochs": 3, "batch_size": 64, "lr": 0.05, "generated_per_seen": 20,
                         "generated_per_unseen": 20}
    raw["calibration"] = {**raw["calibration"], "folds": 2, "val_fraction": 0.25, "grid": 21}
    split = ClassSplit(tuple("abcdef"), (4, 5), 255)
    got = []
    for poison in (False, True):
        cache, maps, counts = _toy_cache(poison)
        r = rank_candidates([["generator.lr=0.0001"], ["generator.lr=0.05"],
                             ["generator.lr=0.0001", "generator.relation.listwise_weight=1",
                              "generator.relation.pairwise_weight=1"]], raw, cache, maps, counts, split,
                            torch.eye(6), torch.device("cpu"))
        got.append([(x["overrides"], x["cv_hIoU"], x["gamma"]) for x in r])
    assert got[0] == got[1]
    scores = [x[1] for x in got[0]]
    assert len(set(scores)) > 1
    assert scores == sorted(scores, reverse=True)                    # best first


def test_self_training_rules_ranked_on_folds_never_read_unseen_labels(tiny_config):
    """ZS5Net's rules ranked on the seen-class folds: poisoning the unseen classes leaves every
    score unchanged; p = 0 selects nothing; ZS3Net's fold score equals the generator CV's (a
    second code path over the same folds); best first; a candidate that overrides anything but
    the rule is refused."""
    from test_calibration import _toy_cache

    from zs3core.config import as_dict
    from zs3core.generator_cv import rank_candidates, rank_self_training_candidates
    from zs3core.splits import ClassSplit

    raw = as_dict(tiny_config)
    raw["generator"] = {**raw["generator"], "kind": "gmmn", "hidden": 16, "noise_dim": 2, "dropout": 0.0, "steps": 60,
                        "lr": 0.01, "samples_per_class": 16, "mmd": {"convention": "paper", "bandwidths": [1.0, 2.0]}}
    raw["classifier"] = {**raw["classifier"], "epochs": 4, "batch_size": 64, "lr": 0.05, "generated_per_seen": 20,
                         "generated_per_unseen": 20}
    raw["calibration"] = {**raw["calibration"], "folds": 2, "val_fraction": 0.25, "grid": 21}
    split = ClassSplit(tuple("abcdef"), (4, 5), 255)
    # embeddings that carry the toy's class centres, so that the folds transfer
    emb = torch.tensor([[4.0, 0], [0, 4.0], [-4.0, 0], [0, -4.0], [3, 3], [-3, -3]]) / 4
    cands = [["self_training.top_p=0"], ["self_training.top_p=50"], ["self_training.rule=class_top_p", "self_training.top_p=50"],
             ["self_training.rule=threshold", "self_training.threshold=0.5"]]
    got = []
    for poison in (False, True):
        cache, maps, counts = _toy_cache(poison)
        r = rank_self_training_candidates(cands, raw, cache, maps, counts, split, emb, 1.0, torch.device("cpu"))
        got.append([(x["overrides"], x["cv_hIoU"], x["gamma"], x["precision"], x["pseudo_labels"], x["zs3net_cv_hIoU"])
                    for x in r])
    assert got[0] == got[1]
    by = {tuple(x[0]): x[1:] for x in got[0]}
    assert by[("self_training.top_p=0",)][2:4] == (None, 0)
    assert all(n > 0 and 0 <= p <= 100 for o, (h, g, p, n, z) in by.items() if o != ("self_training.top_p=0",))
    scores = [x[1] for x in got[0]]
    assert len(set(scores)) > 1 and scores == sorted(scores, reverse=True)
    base = rank_candidates([[]], raw, *_toy_cache(False), split, emb, torch.device("cpu"))[0]["cv_hIoU"]
    assert base > 0 and {x[5] for x in got[0]} == {base}
    with pytest.raises(Zs3Error, match="is not a self_training.rule"):
        rank_self_training_candidates([["generator.lr=0.1"]], raw, *_toy_cache(False), split, emb, 0.0,
                                      torch.device("cpu"))


def test_generator_cv_overrides_are_checked():
    from zs3core.generator_cv import apply_overrides

    g = {"generator": {"lr": 0.001, "mmd": {"convention": "official"}}, "classifier": {"unseen_weight": 100},
         "backbone": {"lr": 0.01}}
    assert apply_overrides(g, ["generator.lr=2e-4", "generator.mmd.convention=paper", "classifier.unseen_weight=5"]) == \
        {"generator": {"lr": 0.0002, "mmd": {"convention": "paper"}}, "classifier": {"unseen_weight": 5},
         "backbone": {"lr": 0.01}}
    assert g["generator"]["lr"] == 0.001 and g["classifier"]["unseen_weight"] == 100   # the input is not changed
    for bad, msg in (("generator.lrr=1", "names no generator parameter"), ("backbone.lr=1", "is not a generator"),
                     ("classifier.unseen=1", "names no classifier parameter"), ("generator.lr", "is not a generator")):
        with pytest.raises(Zs3Error, match=msg):
            apply_overrides(g, [bad])


def test_generator_cv_candidates_switch_the_kind_and_keep_the_scale_values():
    """``generator=pading`` takes the group's kind, lr and primitive block (read here from the
    yaml files themselves) and keeps the workspace's steps and relation weights; a bad group is named."""
    from zs3core.generator_cv import apply_overrides

    conf = Path(__file__).resolve().parents[1] / "conf"
    raw = yaml.safe_load(compose(["+experiment=camvid_tiny"], config_dir=conf))
    raw["generator"]["steps"] = 1234
    prim = yaml.safe_load((conf / "generator" / "pading_primitives.yaml").read_text())
    full = yaml.safe_load((conf / "generator" / "pading.yaml").read_text())
    out = apply_overrides(raw, ["generator.relation.listwise_weight=2", "generator=pading"], conf)
    g = out["generator"]
    assert g["kind"] == "pading" and g["lr"] == prim["lr"] and g["steps"] == 1234
    assert g["primitive"] == {**prim["primitive"], **full["primitive"]}
    assert g["relation"]["listwise_weight"] == 2 and g["relation"]["temperature"] == raw["generator"]["relation"]["temperature"]
    assert raw["generator"]["kind"] == "gmmn"                            # the input is not changed
    assert apply_overrides(raw, ["generator=gc"], conf)["generator"] == {**raw["generator"], "kind": "gc"}
    with pytest.raises(Zs3Error, match=r"generator=nope: no conf/generator/nope.yaml; groups: \['gc', 'gmmn'"):
        apply_overrides(raw, ["generator=nope"], conf)


def test_graph_context_folds_sample_graphs_from_fold_train_images_only(tiny_config, monkeypatch):
    """A graph-context kind's fold model samples its graphs from the fold-train images' masks,
    never from the fold-validation images it is scored on (fold rows by hand: train 0-5, val 6-7)."""
    from types import SimpleNamespace

    import zs3core.crossval as cv
    from test_calibration import _toy_cache

    from zs3core.calibration import Fold
    from zs3core.generators import FitData, SampleContext

    seen_rows = []
    monkeypatch.setattr(cv, "sample_context", lambda maps, rows, void: seen_rows.append(tuple(rows)) or SampleContext())
    kind = SimpleNamespace(needs_graphs=True, build=lambda *a: None, fit=lambda *a, **k: None,
                           sample=lambda gen, emb, classes, n, ctx, rng, dev: (
                               torch.randn(len(classes) * n, 2), torch.tensor(classes).repeat_interleave(n)))
    cache, maps, _ = _toy_cache(False)
    keep = cache["labels"] < 4
    data = FitData(cache["features"][keep], cache["labels"][keep], cache["image"][keep], torch.eye(6), maps, (255,))
    cfg = dataclasses.replace(tiny_config.classifier, epochs=1, batch_size=64, generated_per_seen=4, generated_per_unseen=4)
    scorer = cv.fold_scorers(kind, tiny_config.generator, cfg, data, 6, torch.Generator().manual_seed(0),
                             torch.device("cpu"))["zs3net"]
    fold = Fold((3,), tuple(range(6)), (6, 7))
    scorer(fold, torch.isin(data.image, torch.arange(6)) & (data.labels != 3))
    assert seen_rows == [tuple(range(6))]
