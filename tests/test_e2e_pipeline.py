"""End to end: the whole DVC pipeline in a temporary git repo on real CamVid images.

Runs the README's local-data command (``dvc exp run -S +experiment=camvid_tiny -S source=local``:
24 training and 4 val images, a few epochs), then checks that every
stage ran, that the metrics JSON holds every key with values in [0, 100], that ``dvc status``
is clean, that a second ``dvc repro`` runs nothing, and that changing a generator parameter
invalidates exactly the stages after embed that depend on it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from conftest import sh

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data").resolve()
STAGES = ["source_stamp", "download", "split", "embed", "train_backbone", "extract_features", "fit_generator", "devise",
          "retrain_classifier", "calibrate", "ceiling", "self_training", "evaluate"]
TINY = ["-S", "+experiment=camvid_tiny", "-S", "source=local"]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline):
    repo, _, log = tiny_pipeline
    return repo, log


def test_every_stage_ran(pipeline):
    repo, log = pipeline
    for s in STAGES:
        assert f"Running stage '{s}'" in log, f"stage {s} did not run:\n{log[-3000:]}"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)


def test_metrics_complete_and_in_range(pipeline):
    repo, _ = pipeline
    m = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert set(m) == {"val"}
    for model in ("seen_only", "devise", "zs3net", "zs5net", "real_feature_ceiling"):
        scores = m["val"][model]
        for group in ("seen", "unseen", "all"):
            for key in ("PA", "MA", "mIoU"):
                v = scores[group][key]
                assert isinstance(v, float) and 0.0 <= v <= 100.0, (model, group, key, v)
        assert 0.0 <= scores["hIoU"] <= 100.0
        if model != "seen_only":  # models that score unseen classes: vanilla and calibrated protocols
            assert 0.0 <= scores["vanilla"]["mIoU"] <= 100.0
            assert 0.0 <= scores["calibrated"]["hIoU"] <= 100.0 and isinstance(scores["calibrated"]["gamma"], float)
    assert "vanilla" not in m["val"]["seen_only"]
    split = json.loads((repo / "metrics" / "split.json").read_text())
    assert split["train_images"] == 24 and split["kept"] + split["dropped_to_pool"] == 24
    assert sorted(split["unseen"]) == ["bicyclist", "fence"]
    per_class = (repo / "metrics" / "per_class_iou.csv").read_text().splitlines()
    assert len(per_class) == 1 + 11
    assert any((repo / "plots" / "evaluate" / "panels").glob("val_*.png"))
    assert (repo / "plots" / "generator" / "tsne.png").exists()
    assert (repo / "plots" / "evaluate" / "per_class_iou_val.png").exists()


def test_status_clean_and_noop_repro(pipeline):
    repo, _ = pipeline
    st = sh([sys.executable, "-m", "dvc", "status"], repo)
    assert st.stdout.split() == ["source_stamp:", "always", "changed"], st.stdout   # nothing else is stale
    r = sh([sys.executable, "-m", "dvc", "repro"], repo)
    ran = [s for s in STAGES if f"Running stage '{s}'" in r.stdout]
    assert ran == ["source_stamp"], r.stdout       # the stamp runs on every repro (always_changed), nothing else


def test_generator_param_reruns_only_downstream(pipeline):
    repo, _ = pipeline
    params_path = repo / "params.yaml"
    p = yaml.safe_load(params_path.read_text())
    p["generator"]["steps"] = int(p["generator"]["steps"]) + 1
    params_path.write_text(yaml.safe_dump(p, sort_keys=False))
    log = sh([sys.executable, "-m", "dvc", "repro"], repo).stdout
    ran = {s for s in STAGES if f"Running stage '{s}'" in log}
    assert ran == {"source_stamp", "fit_generator", "retrain_classifier", "calibrate", "self_training", "evaluate"}, log


@pytest.fixture(scope="module")
def variants(pipeline):
    """GC, PADing and the supervised oracle as named experiments on top of the first run."""
    repo, _ = pipeline
    base = [*TINY, "-S", f"data_root={SHARED}"]
    logs = {}
    for name, extra in (("gc", ["-S", "generator=gc"]), ("pading", ["-S", "generator=pading"]),
                        ("oracle", ["-S", "split.filter=oracle"])):
        r = sh([sys.executable, "-m", "dvc", "exp", "run", "-n", name, *base, *extra], repo)
        logs[name] = r.stdout + r.stderr
    return repo, logs


def test_generator_variants_reuse_the_backbone(variants):
    """DVC's run cache restores the backbone, features and DeViSE of the first run (all outputs are cached)."""
    _, logs = variants
    for name in ("gc", "pading"):
        log = logs[name]
        assert "Running stage 'fit_generator'" in log, log[-3000:]
        for stage in ("train_backbone", "extract_features", "devise"):
            assert f"Running stage '{stage}'" not in log, log[-3000:]
    assert "Running stage 'train_backbone'" in logs["oracle"]


def test_report_rebuilds_tables_from_experiments(variants):
    repo, _ = variants
    r = sh([sys.executable, "-m", "zs3core.report", "--out", "reports"], repo)
    t1 = (repo / "reports" / "table1.md").read_text()
    gens = (repo / "reports" / "generators.md").read_text()
    assert "ZS3Net + GC" in t1 and "supervised oracle" in t1 and "DeViSE" in t1, r.stdout
    assert "PADing (primitives + alignment + disentanglement)" in gens
    from zs3core.report import list_experiments, read_file

    oracle = json.loads(read_file(list_experiments(repo)["oracle"], "metrics/evaluate.json", repo))
    assert set(oracle["val"]) == {"oracle", "images"}
    assert (repo / "reports" / "tsne_camvid_K2_drop.png").exists()

