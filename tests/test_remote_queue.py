"""Sharing results between machines and running experiments in parallel, with DVC's own features
(issue 11), on the tiny pipeline's real CamVid run:

* a local-directory DVC remote: ``dvc push`` from one repository, ``git clone`` + ``dvc pull``
  on "another machine", after which ``dvc repro`` runs nothing (only the always-changed
  ``source_stamp``, whose outputs come out identical);
* the run cache: ``dvc push --run-cache`` of an experiment computed on the first machine,
  ``dvc pull --run-cache`` on a fresh clone, where the same experiment run with ``--pull``
  restores every stage from the run cache and computes nothing. (``pull --run-cache`` brings
  the records of the runs, not their outputs: without ``--pull`` DVC 3.67 finds the record,
  misses the outputs in the local cache and runs the stage again.)
* experiment queues: two experiments queued with ``dvc exp run --queue`` and run by
  ``dvc queue start -j 2``; both succeed, recompute only what their parameter changes (the
  backbone and features of the base commit are checked out from the DVC cache), give the same
  metrics as the same experiments run one after the other in a separate
  repository, and ``python -m zs3core.report`` builds its tables from them.

The experiments vary ``self_training.top_p`` (ZS5Net's p), so that they recompute only
self_training and evaluate: a few seconds each at the tiny scale.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from conftest import SHARED_DATA, sh

pytestmark = pytest.mark.e2e

DVC = [sys.executable, "-m", "dvc"]
STAGES = ["source_stamp", "download", "split", "embed", "train_backbone", "extract_features", "fit_generator", "devise",
          "retrain_classifier", "calibrate", "ceiling", "self_training", "evaluate"]


def base_overrides() -> list[str]:
    return ["-S", "+experiment=camvid_tiny", "-S", "source=local", "-S", f"data_root={SHARED_DATA.resolve()}"]


def ran(log: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in log]


def copy_repo(src: Path, dest: Path) -> Path:
    """A second repository (git history, DVC cache and workspace) copied from ``src``."""
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns("tmp", "reports"))
    return dest


@pytest.fixture(scope="module")
def origin(tiny_pipeline, tmp_path_factory):
    """A copy of the tiny pipeline's repository with its current results committed to git."""
    repo, _, _ = tiny_pipeline
    o = copy_repo(repo, tmp_path_factory.mktemp("origin") / "repo")
    sh([*DVC, "exp", "run", *base_overrides()], o)             # the committed state: the base tiny run (run cache hits)
    sh(["git", "add", "-A"], o)
    sh(["git", "commit", "-qm", "results", "--allow-empty"], o)
    return o


def test_remote_round_trip_runs_nothing(origin, tmp_path):
    remote = tmp_path / "remote"
    sh([*DVC, "remote", "add", "-d", "shared", str(remote)], origin)
    sh(["git", "commit", "-qam", "remote"], origin)
    sh([*DVC, "push"], origin)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / "data" / "backbone").exists()
    sh([*DVC, "pull"], clone)
    st = sh([*DVC, "status"], clone).stdout
    assert st.split() == ["source_stamp:", "always", "changed"], st
    log = sh([*DVC, "repro"], clone).stdout
    assert ran(log) == ["source_stamp"], log
    for f in ("metrics/evaluate.json", "metrics/backbone.json", "metrics/features.json"):
        assert json.loads((clone / f).read_text()) == json.loads((origin / f).read_text()), f
    sh(["git", "reset", "-q", "--hard", "HEAD~1"], origin)         # leave origin without the remote


def test_run_cache_pushed_elsewhere_skips_every_stage(origin, tmp_path):
    work = copy_repo(origin, tmp_path / "first")
    remote = tmp_path / "remote"
    sh([*DVC, "remote", "add", "-d", "shared", str(remote)], work)
    sh(["git", "commit", "-qam", "remote"], work)          # the clone starts from this commit (top_p = 25)
    sh([*DVC, "push"], work)                                 # its outputs, as a lab pushes its main branch
    first = sh([*DVC, "exp", "run", "-n", "p10", *base_overrides(), "-S", "self_training.top_p=10"], work).stdout
    assert ran(first) == ["source_stamp", "self_training", "evaluate"], first
    sh([*DVC, "push", "--run-cache"], work)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(work), str(clone)], tmp_path)
    sh([*DVC, "pull", "--run-cache"], clone)     # the runs' records; their outputs come with --pull below
    log = sh([*DVC, "exp", "run", "--pull", *base_overrides(), "-S", "self_training.top_p=10"], clone).stdout
    assert ran(log) == ["source_stamp"], log
    assert "Stage 'self_training' is cached - skipping run" in log, log
    assert json.loads((clone / "metrics" / "evaluate.json").read_text()) == \
        json.loads((work / "metrics" / "evaluate.json").read_text())


@pytest.fixture(scope="module")
def queued(origin, tmp_path_factory):
    """Two experiments run by ``dvc queue start -j 2``, and the same two run one after the other
    in a copy made before the queue ran (so that they are computed again, not restored)."""
    sequential = copy_repo(origin, tmp_path_factory.mktemp("sequential") / "repo")
    for p in (10, 50):
        sh([*DVC, "exp", "run", "--queue", "-n", f"q{p}", *base_overrides(), "-S", f"self_training.top_p={p}"], origin)
    t0 = time.time()
    sh([*DVC, "queue", "start", "-j", "2"], origin)
    while True:
        status = sh([*DVC, "queue", "status"], origin).stdout
        if not any(w in status for w in ("Queued", "Running")):
            break
        if time.time() - t0 > 900:
            raise AssertionError(f"queue still busy after 15 min:\n{status}")
        time.sleep(3)
    queue_seconds = time.time() - t0
    logs = {p: sh([*DVC, "queue", "logs", f"q{p}"], origin).stdout for p in (10, 50)}
    seq = {}
    for p in (10, 50):
        out = sh([*DVC, "exp", "run", *base_overrides(), "-S", f"self_training.top_p={p}"], sequential).stdout
        assert ran(out) == ["source_stamp", "self_training", "evaluate"], out
        seq[p] = json.loads((sequential / "metrics" / "evaluate.json").read_text())
    print(f"\nqueue of 2 experiments with -j 2: {queue_seconds:.1f} s")
    return origin, status, logs, seq


def test_queue_runs_every_experiment_in_parallel(queued):
    repo, status, logs, seq = queued
    assert status.count("Success") == 2, status
    from zs3core.report import list_experiments, read_file

    exps = list_experiments(repo)
    for p in (10, 50):
        assert ran(logs[p]) == ["source_stamp", "self_training", "evaluate"], logs[p]   # nothing else recomputed:
        assert "Stage 'train_backbone' didn't change, skipping" in logs[p], logs[p]      # checked out from the cache
        got = json.loads(read_file(exps[f"q{p}"], "metrics/evaluate.json", repo))
        assert got == seq[p], p                                                    # = the sequential run
    assert seq[10]["val"]["zs5net"] != seq[50]["val"]["zs5net"]                    # p changes ZS5Net


def test_report_builds_tables_from_queued_experiments(queued):
    repo = queued[0]
    r = sh([sys.executable, "-m", "zs3core.report", "--out", "reports", "--names", "q10", "q50"], repo)
    text = "\n".join(p.read_text() for p in (repo / "reports").glob("*.md"))
    assert "p=10)" in text and "p=50)" in text, r.stdout + text[:3000]
