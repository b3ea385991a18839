"""The report command: paper-layout tables rebuilt from experiment commits (refs/exps/...)."""
from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest
import yaml

from zs3core.io import Zs3Error
from zs3core.report import collect, list_experiments, tables, write_report


def _scores(seen, unseen, van=None):
    def grp(m):
        return {"PA": m + 1.0, "MA": m + 2.0, "mIoU": m}
    h = 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)
    s = {"seen": grp(seen), "unseen": grp(unseen), "all": grp((seen + unseen) / 2), "hIoU": h}
    if van is not None:
        s["vanilla"] = grp(van)
    return s


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin:/usr/local/bin"})


def _experiment(repo, name, k, kind, top_p, zs3_unseen, primitive=None, oracle=False):
    params = {"dataset": {"name": "camvid"}, "split": {"k": k, "filter": "oracle" if oracle else "drop"},
              "scale": {"name": "cpu"}, "seed": 0, "self_training": {"top_p": top_p},
              "generator": {"kind": kind, **({"primitive": primitive} if primitive else {})}}
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    (repo / "metrics/split.json").write_text(json.dumps({"unseen": ["a", "b", "c", "d"][:k]}))
    ev = {"oracle": _scores(80.0, 70.0, 90.0)} if oracle else {
        "seen_only": _scores(40.0, 0.0), "devise": _scores(30.0, 5.0, 50.0),
        "zs3net": _scores(38.0, zs3_unseen, 60.0), "zs5net": _scores(39.0, zs3_unseen + top_p / 10, 61.0),
        "real_feature_ceiling": _scores(37.0, 20.0, 70.0)}
    extra = {}
    if not oracle:   # calibrated scores (γ) for the models that score unseen classes, and TE
        for m, g in (("devise", 0.1), ("zs3net", 1.5), ("zs5net", 1.5), ("real_feature_ceiling", 0.5)):
            ev[m]["calibrated"] = {"gamma": g, **_scores(ev[m]["seen"]["mIoU"] - 5, ev[m]["unseen"]["mIoU"] + 4)}
        extra = {"transfer_efficiency": {m: {"uncalibrated": 100 * ev[m]["unseen"]["mIoU"] / 20.0,
                                             "calibrated": 100 * (ev[m]["unseen"]["mIoU"] + 4) / 24.0}
                                         for m in ("devise", "zs3net", "zs5net")}}
    (repo / "metrics/evaluate.json").write_text(json.dumps({"val": {**ev, **extra, "images": 10}}))
    pc = pd.DataFrame({"split": "val", "class": ["x", "y"], "group": ["seen", "unseen"], "pixels": [5, 6],
                       **{m: [40.0, zs3_unseen] for m in ev},
                       **{f"{m}@calibrated": [35.0, zs3_unseen + 1] for m in ev if "calibrated" in ev[m]}})
    pc.to_csv(repo / "metrics/per_class_iou.csv", index=False)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", name)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    _git(repo, "update-ref", f"refs/exps/ab/cdef0123/{name}", sha)
    _git(repo, "reset", "-q", "--hard", "HEAD~1")


@pytest.fixture
def repo(tmp_path):
    _git(tmp_path, "init", "-q")
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "README").write_text("x")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "base")
    _experiment(tmp_path, "k2-gmmn", 2, "gmmn", 25, 10.0)
    _experiment(tmp_path, "k2-gc", 2, "gc", 25, 12.0)
    _experiment(tmp_path, "k2-pading", 2, "pading", 25, 14.0, {"alignment": True, "disentangle": True})
    _experiment(tmp_path, "k2-prim", 2, "pading", 25, 13.0, {"alignment": False, "disentangle": False})
    for p in (0, 50, 100):
        _experiment(tmp_path, f"k2-p{p}", 2, "gmmn", p, 10.0)
    _experiment(tmp_path, "k4-gmmn", 4, "gmmn", 25, 3.0)
    _experiment(tmp_path, "oracle", 2, "gmmn", 25, 0.0, oracle=True)
    _git(tmp_path, "update-ref", "refs/exps/exec/EXEC_HEAD", "HEAD")  # DVC's own refs are not experiments
    return tmp_path


def test_experiments_are_found_from_refs(repo):
    exps = list_experiments(repo)
    assert sorted(exps) == sorted(["k2-gmmn", "k2-gc", "k2-pading", "k2-prim", "k2-p0", "k2-p50", "k2-p100",
                                   "k4-gmmn", "oracle"])


def test_tables_follow_the_paper_layout(repo):
    df = collect(repo)
    t = tables(df)
    t1 = t["table1"]
    row = t1.loc[("camvid", "val", "drop", 2, "ZS3Net + GC")]
    assert row[("Unseen", "mIoU")] == 12.0 and row[("Seen", "PA")] == 39.0
    assert row[("", "hIoU")] == pytest.approx(round(2 * 38 * 12 / 50, 1))
    assert t1.loc[("camvid", "val", "oracle", 2, "supervised oracle")][("Overall", "mIoU")] == 75.0
    assert ("camvid", "val", "drop", 4, "ZS3Net") in t1.index
    gens = t["generators"]
    assert gens.loc[("camvid", "val", "drop", 2, "ZS3Net, PADing (primitives + alignment + disentanglement)"), "unseen_mIoU"] == 14.0
    assert gens.loc[("camvid", "val", "drop", 2, "ZS3Net, primitives only"), "unseen_mIoU"] == 13.0
    assert gens.loc[("camvid", "val", "drop", 2, "DeViSE"), "vanilla_mIoU"] == 50.0
    t4 = t["table4"]
    assert t4.loc[("camvid", "val", "drop", 2, "ZS5Net (GMMN, p=50)")][("Unseen", "mIoU")] == 15.0


def test_write_report_outputs(repo):
    out = repo / "reports"
    write_report(out, repo)
    for f in ("table1.md", "table1.csv", "table4.md", "generators.md", "vanilla.csv", "runs.csv",
              "self_training_curve.png", "per_class_iou_camvid_K2_drop.png", "README.md"):
        assert (out / f).exists(), f
    assert "ZS3Net + GC" in (out / "table1.md").read_text()
    with pytest.raises(Zs3Error, match="no experiment named"):
        collect(repo, ["nope"])


def test_zeroshot_table_has_calibrated_scores_ceilings_and_unseen_classes(repo):
    """One row per model with uncalibrated and calibrated scores, γ, transfer efficiency, the
    unseen class's IoU (calibrated where there is a γ), and the oracle of the same K appended."""
    z = tables(collect(repo))["zeroshot"]
    row = z.loc[("camvid", "val", "drop", 2, "ZS3Net")]
    assert row["unseen"] == 10.0 and row["cal. unseen"] == 14.0 and row["γ"] == 1.5
    assert row["TE %"] == pytest.approx(50.0) and row["cal. TE %"] == pytest.approx(100 * 14 / 24, abs=0.05)
    assert row["y IoU"] == 11.0                                  # calibrated per-class column
    # seen-only has no γ: its uncalibrated IoU (its row comes from the last run, k2-prim: 13)
    assert z.loc[("camvid", "val", "drop", 2, "seen-only (w/o ZSL)")]["y IoU"] == 13.0
    models = list(z.loc[("camvid", "val", "drop", 2)].index)
    assert models[-2:] == ["real-feature ceiling (diagnostic)", "supervised oracle"]
    assert z.loc[("camvid", "val", "drop", 2, "supervised oracle")]["unseen"] == 70.0
    assert ("camvid", "val", "drop", 4, "supervised oracle") not in z.index   # no K=4 oracle was run


def test_seed_table_groups_runs_that_differ_only_in_seed():
    """Three seeds of one config become mean ± sample std (n = 3), worked out with the statistics
    module; a fourth run with another config (another key) stays on its own row."""
    import statistics

    import pandas as pd

    from zs3core.report import seed_table

    base = {"dataset": "camvid", "split": "val", "protocol": "drop", "K": 2, "pretraining": "scratch",
            "model_key": "zs3net", "model": "ZS3Net", "cal_seen_mIoU": float("nan")}
    unseen = [12.0, 10.0, 14.5]
    rows = [{**base, "run": f"s{i}", "seed": i, "config": "aaa", "seen_mIoU": 40.0 + i, "unseen_mIoU": u, "hIoU": 18.0}
            for i, u in enumerate(unseen)]
    rows.append({**base, "run": "other", "seed": 0, "config": "bbb", "seen_mIoU": 30.0, "unseen_mIoU": 5.0, "hIoU": 8.0})
    t = seed_table(pd.DataFrame(rows))
    three = t[t.n == 3].iloc[0]
    assert three["unseen"] == f"{statistics.mean(unseen):.1f} ± {statistics.stdev(unseen):.1f}"   # 12.2 ± 2.3
    assert three["seen"] == "41.0 ± 1.0" and three["hIoU"] == "18.0 ± 0.0"
    one = t[t.n == 1].iloc[0]
    assert one["unseen"] == "5.0"                                  # one seed: no spread
    assert "cal. seen" not in t.columns                             # all-NaN columns are left out
    assert t.index.names == ["dataset", "split", "protocol", "K", "pretraining", "model"]


def test_config_key_ignores_keys_added_later_at_inert_values():
    """A run made before generator.relation and self_training.rule/threshold existed and a run
    made after, with them at values that change nothing, share a key; an active value does not."""
    from zs3core.report import config_key

    old = {"seed": 0, "generator": {"kind": "gmmn", "lr": 0.0002}, "self_training": {"top_p": 25, "pool_annotation": "none"}}
    new = {"seed": 1, "generator": {"kind": "gmmn", "lr": 0.0002,
                                    "relation": {"pairwise_weight": 0.0, "listwise_weight": 0.0, "temperature": 0.1,
                                                 "samples_per_class": 32}},
           "self_training": {"top_p": 25, "rule": "image_top_p", "threshold": 0.9, "pool_annotation": "none"}}
    assert config_key(old) == config_key(new)
    active = json.loads(json.dumps(new))
    active["generator"]["relation"]["listwise_weight"] = 1.0
    per_class = json.loads(json.dumps(new))
    per_class["self_training"]["rule"] = "class_top_p"
    thresh = json.loads(json.dumps(new))
    thresh["self_training"]["rule"] = "threshold"
    keys = {config_key(x) for x in (new, active, per_class, thresh)}
    assert len(keys) == 4
    assert new["generator"]["relation"]["pairwise_weight"] == 0.0 and "rule" in new["self_training"]   # input unchanged
