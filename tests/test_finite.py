"""No NaN or Inf written as a score or a weight, and no empty list scored (unit level)."""
from __future__ import annotations

import math
import shutil

import pytest
import torch

from zs3core.data.layouts import list_samples
from zs3core.features import load_cache, write_cache
from zs3core.io import StageOutputs, Zs3Error, check_finite, finite_json, require_finite
from zs3core.models.classifier import PixelClassifier, save_classifier
from zs3core.retrain import train_classifier


def test_finite_json_names_the_key_path():
    assert finite_json({"a": [1.0, {"b": 2}]}) == {"a": [1.0, {"b": 2}]}
    with pytest.raises(Zs3Error, match=r"val\.zs3net\.seen\.mIoU"):
        finite_json({"val": {"zs3net": {"seen": {"mIoU": math.nan}}}})
    with pytest.raises(Zs3Error, match=r"x\[1\]"):
        finite_json({"x": [0.0, math.inf]})


def test_stage_outputs_refuse_nan_metrics_and_write_nothing(tmp_path):
    dest = tmp_path / "metrics" / "m.json"
    with pytest.raises(Zs3Error, match="m.json"):
        with StageOutputs(tmp_path) as out:
            out.json(tmp_path / "metrics" / "ok.json", {"x": 1.0})
            out.json(dest, {"x": float("nan")})
    assert not dest.exists() and not (tmp_path / "metrics" / "ok.json").exists()
    assert not list(tmp_path.glob(".zs3-stage-*"))


def test_feature_cache_with_nan_names_file_and_image(tmp_path):
    feats = torch.zeros(4, 3, dtype=torch.float16)
    feats[2, 1] = float("nan")
    path = tmp_path / "labelled"
    write_cache(path, {"features": feats, "labels": torch.zeros(4, dtype=torch.long),
                       "image": torch.tensor([0, 0, 1, 1]), "manifest_ids": ["0001TP_006690", "Seq05VD_f00030"]})
    with pytest.raises(Zs3Error, match=r"labelled.*Seq05VD_f00030"):
        load_cache(path)
    shutil.rmtree(path)
    write_cache(path, {"features": torch.zeros(4, 3), "labels": torch.zeros(4, dtype=torch.long),
                       "image": torch.zeros(4, dtype=torch.long), "manifest_ids": ["a"]})
    assert load_cache(path)["features"].shape == (4, 3)


def test_non_finite_weights_are_never_saved(tmp_path):
    clf = PixelClassifier(3, 2)
    with torch.no_grad():
        clf.linear.bias[1] = float("inf")
    with pytest.raises(Zs3Error, match="linear.bias"):
        save_classifier(clf, tmp_path / "c.pt", [0.1])
    assert not (tmp_path / "c.pt").exists()
    check_finite({"w": torch.ones(2), "steps": torch.tensor([3])}, "x")   # finite and integer tensors pass


def test_training_stops_at_the_first_non_finite_loss():
    feats = torch.randn(64, 3)
    feats[10, 0] = float("nan")
    with pytest.raises(Zs3Error, match="step 1"):
        train_classifier(feats, torch.zeros(64, dtype=torch.long), 2, 3, 64, 0.01, 0.0, torch.Generator().manual_seed(0),
                         torch.device("cpu"), desc="ZS3Net classifier")
    with pytest.raises(Zs3Error, match="my loop.*step 7"):
        require_finite(torch.tensor(float("nan")), "my loop", 7)


def test_empty_split_list_is_rejected_by_name(tmp_path):
    (tmp_path / "val.txt").write_text("\n  \n")
    (tmp_path / "train.txt").write_text("")
    for split in ("val", "train"):
        with pytest.raises(Zs3Error, match=rf"{split}\.txt: the split list is empty"):
            list_samples(tmp_path, "camvid", split)
