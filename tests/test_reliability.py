"""Pipeline state you can trust, through the real stage subprocesses and DVC (issue 9):

* a local source changed in place, added to or pruned reruns download; an unchanged one does not;
* empty split lists and bad params exit 2 naming the file or key, before any work, writing nothing;
* a non-finite feature cache stops fit_generator naming the cache and the image id;
* params changed while a stage runs: exit 2, nothing published;
* staging folders left by a killed stage are removed by the next run; a later clean run works.

Unit-level checks of the same guarantees live in test_finite.py, test_params.py and
test_bad_input.py (one bad data file per case).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import _make_camvid, make_project_repo, sh, write_label
from PIL import Image
from test_bad_input import SPLIT_OUTPUTS, STAGE_ENV, WORDS, Project, assert_clean_failure, labels, write_vectors
from test_bad_input import base_params, project  # noqa: F401  (fixtures used here)

from zs3core.compose import compose
from zs3core.features import load_cache, write_cache

REPO = Path(__file__).resolve().parents[1]


def dvc(args: list[str], repo: Path) -> str:
    return sh([sys.executable, "-m", "dvc", *args], repo).stdout


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> hex), to prove nothing changed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------ 1. a local source that changes reruns download

@pytest.fixture
def source_repo(tmp_path):
    """A git+DVC repo of this project whose params read a tiny CamVid under tmp/user_data."""
    lab = np.zeros((6, 8), dtype=np.uint8)
    src = _make_camvid(tmp_path / "user_data" / "camvid", {"train": {"a": lab, "b": lab + 3}, "val": {"c": lab + 1}})
    repo = make_project_repo(tmp_path / "repo")
    (repo / "params.yaml").write_text(compose(["dataset=camvid", "scale=tiny", "source=local",
                                               f"data_root={tmp_path / 'user_data'}"], config_dir=REPO / "conf"))
    return repo, src


def copied(repo: Path, rel: str) -> Path:
    hits = sorted((repo / "data" / "raw").rglob(rel))
    assert len(hits) <= 1, hits
    return hits[0] if hits else None


def test_local_source_changes_rerun_download(source_repo):
    repo, src = source_repo
    assert "Running stage 'download'" in dvc(["repro", "download"], repo)
    assert "Running stage 'download'" not in dvc(["repro", "download"], repo)   # unchanged source: no-op
    assert "Data and pipelines are up to date" in dvc(["status", "download"], repo)

    write_label(src / "trainannot" / "a.png", np.full((6, 8), 2, dtype=np.uint8))   # fixed in place
    assert "Running stage 'download'" in dvc(["repro", "download"], repo)
    assert np.array(Image.open(copied(repo, "trainannot/a.png"))).tolist() == np.full((6, 8), 2).tolist()

    (src / "notes.txt").write_text("added")                                         # files added
    (src / "more.txt").write_text("added too")
    assert "Running stage 'download'" in dvc(["repro", "download"], repo)
    assert copied(repo, "notes.txt").read_text() == "added"

    (src / "notes.txt").unlink()                                                     # one removed
    assert "Running stage 'download'" in dvc(["repro", "download"], repo)
    assert copied(repo, "notes.txt") is None and copied(repo, "more.txt").read_text() == "added too"
    assert "Running stage 'download'" not in dvc(["repro", "download"], repo)

    (src / "more.txt").unlink()   # back to a state seen before: DVC may restore that run's copy, which is right
    out = dvc(["repro", "download"], repo)
    assert "Running stage 'download'" in out or "Stage 'download' is cached" in out, out
    assert copied(repo, "more.txt") is None
    assert np.array(Image.open(copied(repo, "trainannot/a.png"))).max() == 2


def test_local_vector_file_change_reruns_embed(source_repo):
    repo, src = source_repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    vectors = Path(params["embedding"]["source"])
    vectors.parent.mkdir(parents=True, exist_ok=True)
    write_vectors(vectors, WORDS)
    assert "Running stage 'embed'" in dvc(["repro", "embed"], repo)
    assert "Running stage 'embed'" not in dvc(["repro", "embed"], repo)
    first = torch.load(repo / "data/embed/class_embeddings.pt", weights_only=False)["embeddings"]
    write_vectors(vectors, WORDS, seed=1)                  # the user replaces the vectors in place
    assert "Running stage 'embed'" in dvc(["repro", "embed"], repo)
    second = torch.load(repo / "data/embed/class_embeddings.pt", weights_only=False)["embeddings"]
    assert not torch.allclose(first, second)


# ------------------------------------------------ 3, 5, 7: split and params, in a throw-away project

def empty_val(p: Project):
    (p.raw / "val.txt").write_text("\n")


def empty_train(p: Project):
    (p.raw / "train.txt").write_text("")


@pytest.mark.parametrize("breaker,fragments", [
    (empty_val, ["val.txt", "the split list is empty"]),
    (empty_train, ["train.txt", "the split list is empty"]),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_empty_split_list_fails_naming_it_then_a_fixed_run_works(project, make_camvid, breaker, fragments):
    breaker(project)
    assert_clean_failure(project.run("split"), project, fragments, SPLIT_OUTPUTS)
    make_camvid(project.raw, labels())                       # the user restores the list
    res = project.run("split")
    assert res.returncode == 0, res.stderr
    assert (project.root / "metrics" / "split.json").exists()


@pytest.mark.parametrize("stage,key,value,fragment", [
    ("split", "split.k", "two", "split.k must be an integer >= 1 or null, got 'two'"),
    ("train_backbone", "backbone.lr", "fast", "backbone.lr must be a number > 0, got 'fast'"),
    ("devise", "classifier.epochs", -1, "classifier.epochs must be an integer >= 1, got -1"),
    ("retrain_classifier", "classifier.epochs", -1, "classifier.epochs must be an integer >= 1, got -1"),
    ("split", "scale.max_train_images", -1, "scale.max_train_images must be an integer >= 1 or null, got -1"),
])
def test_bad_params_exit_2_before_any_work(project, stage, key, value, fragment):
    """Every stage validates the whole params.yaml when it starts: the key and the allowed values
    are named, and nothing is written, not even for stages whose inputs do not exist yet."""
    project.set(key, value)
    before = digest(project.root)
    res = project.run(stage)
    assert_clean_failure(res, project, ["params.yaml", fragment], ["models", "metrics", "data/split", "data/devise"])
    assert digest(project.root) == before


def test_stale_staging_of_a_killed_stage_is_removed(project):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = project.root / f".zs3-stage-{dead.pid}-abcd1234"
    (stale / "data" / "split").mkdir(parents=True)
    (stale / "data" / "split" / "manifest.csv").write_text("half-written")
    live = project.root / f".zs3-stage-{os.getpid()}-live0000"          # a running stage's folder stays
    live.mkdir()
    res = project.run("split")
    assert res.returncode == 0, res.stderr
    assert f"removed {stale.name}" in res.stdout
    assert not stale.exists() and live.exists()
    live.rmdir()


# ------------------------------------------------ 4, 6: on the tiny pipeline's workspace

@pytest.fixture
def workspace(tiny_pipeline, tmp_path):
    """A private copy of the tiny pipeline's workspace (stages run in it directly)."""
    _, snapshot, _ = tiny_pipeline
    ws = tmp_path / "ws"
    shutil.copytree(snapshot, ws, symlinks=True)
    return ws


def run_stage(ws: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ws, env=STAGE_ENV, capture_output=True, text=True, timeout=600)


def test_non_finite_feature_cache_stops_fit_generator(workspace):
    cache = workspace / "data" / "features" / "labelled"
    c = load_cache(cache)
    c["features"] = c["features"].clone()
    row = int(torch.nonzero(c["image"] == c["image"][len(c["image"]) // 2])[0, 0])
    c["features"][row, 0] = float("nan")
    image_id = c["manifest_ids"][int(c["image"][row])]
    shutil.rmtree(cache)
    write_cache(cache, c)
    before = digest(workspace / "data" / "generator") | digest(workspace / "metrics")
    res = run_stage(workspace, "import runpy, sys; sys.argv = ['stages/fit_generator.py']; "
                               "runpy.run_module('stages.fit_generator', run_name='__main__')")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "data/features/labelled" in res.stderr and f"image id '{image_id}'" in res.stderr, res.stderr
    assert "non-finite" in res.stderr and "Traceback" not in res.stderr
    assert digest(workspace / "data" / "generator") | digest(workspace / "metrics") == before
    assert not list(workspace.glob(".zs3-stage-*"))


PARAMS_CHANGE_MID_RUN = """
import runpy, sys, yaml
import zs3core.stage as zs
sys.argv = ['stages/fit_generator.py']
original = zs.Stage.outputs
def outputs(self):   # another DVC command rewrites params.yaml after the stage read it
    p = yaml.safe_load(open('params.yaml'))
    p['generator']['steps'] = int(p['generator']['steps']) + 1
    open('params.yaml', 'w').write(yaml.safe_dump(p, sort_keys=False))
    return original(self)
zs.Stage.outputs = outputs
runpy.run_module('stages.fit_generator', run_name='__main__')
"""


def test_params_changed_mid_run_publish_nothing(workspace):
    before = digest(workspace / "data" / "generator") | digest(workspace / "metrics") | digest(workspace / "params")
    res = run_stage(workspace, PARAMS_CHANGE_MID_RUN)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "params.yaml changed while stage 'fit_generator' ran (generator.steps)" in res.stderr, res.stderr
    assert "nothing was written" in res.stderr and "--queue" in res.stderr
    after = digest(workspace / "data" / "generator") | digest(workspace / "metrics") | digest(workspace / "params")
    assert after == before
    assert not list(workspace.glob(".zs3-stage-*"))
    recorded = yaml.safe_load((workspace / "params" / "fit_generator.yaml").read_text())
    assert recorded["generator"]["steps"] == yaml.safe_load((workspace / "params.yaml").read_text())["generator"]["steps"] - 1
