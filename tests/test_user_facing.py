"""What a new user meets (issue 13): every README / RESULTS.md command composes the params its
comment promises; the training curves DVCLive writes exist and are declared as DVC plots; the
models are DVC artifacts that ``dvc`` can resolve."""
from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from conftest import sh

from zs3core.compose import compose
from zs3core.config import config_from_dict
from zs3core.report import list_experiments

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "RESULTS.md"]
GROUPS = {"dataset", "scale", "source", "generator", "experiment"}
# preset -> (dataset.name, scale.name, split.k, split.filter): what the preset's comment promises
PRESETS = {"camvid_cpu": ("camvid", "cpu", 2, "drop"), "camvid_cpu_k4": ("camvid", "cpu", 4, "ignore"),
           "camvid_cpu_leakfree": ("camvid", "cpu", 2, "ignore"), "camvid_cpu_scratch": ("camvid", "cpu", 2, "drop"),
           "camvid_tiny": ("camvid", "tiny", 2, "drop"), "voc_paper": ("voc2012", "paper", 2, "drop"),
           "context_paper": ("context", "paper", 2, "drop")}


def doc_commands() -> list[tuple[str, str]]:
    """(document, command) for every ``dvc exp run`` and ``pipeline_timing.py`` command in the
    docs' bash blocks and inline code, comments stripped."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        lines = [ln for block in re.findall(r"```bash\n(.*?)```", text, re.S) for ln in block.splitlines()]
        lines += re.findall(r"`((?:dvc exp run|python benchmarks/pipeline_timing.py) [^`]+)`", text)
        for ln in lines:
            ln = ln.strip()
            if ln.startswith(("dvc exp run", "python benchmarks/pipeline_timing.py")) and " -S " in f" {ln} ":
                out.append((doc.name, ln))
    return out


def overrides_of(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-S"]


def expand(overrides: list[str]) -> list[list[str]]:
    """Hydra choice sweeps (``key=a,b,c``) expanded into one override list per combination."""
    runs = [[]]
    for o in overrides:
        key, _, value = o.partition("=")
        choices = value.split(",") if ("," in value and not re.search(r"[\[\]{}]", value)) else [value]
        runs = [r + [f"{key}={c}"] for r in runs for c in choices]
    return runs


def lookup(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        node = node[part]
    return node


COMMANDS = doc_commands()


def test_the_docs_hold_commands():
    assert len(COMMANDS) >= 15, COMMANDS            # the parser finds the README's and RESULTS.md's commands


@pytest.mark.parametrize("doc,command", COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_doc_command_composes_what_it_says(doc, command):
    """Each command's overrides compose, load through the typed views, keep the context (the
    CamVid cpu default, or the preset's dataset and scale) and set every value they name."""
    for ovr in expand(overrides_of(command)):
        params = yaml.safe_load(compose(ovr, config_dir=REPO / "conf"))
        config_from_dict(params)                                # validates every key
        keys = {o.partition("=")[0].lstrip("+") for o in ovr}
        preset = next((o.partition("=")[2] for o in ovr if o.startswith("+experiment=")), "camvid_cpu")
        name, scale, k, filt = PRESETS[preset]
        if "dataset" not in keys:
            assert params["dataset"]["name"] == name, (command, params["dataset"]["name"])
        if "scale" not in keys:
            assert params["scale"]["name"] == scale, (command, params["scale"]["name"])
        if "split.k" not in keys:
            assert params["split"]["k"] == k, command
        if "split.filter" not in keys:
            assert params["split"]["filter"] == filt, command
        for o in ovr:
            key, _, value = o.partition("=")
            key = key.lstrip("+")
            if key == "generator":
                within = [x for x in ovr if x.lstrip("+").startswith("generator.")]   # e.g. generator.primitive.output_head
                alone = yaml.safe_load(compose([f"generator={value}", *within], config_dir=REPO / "conf"))["generator"]
                assert params["generator"]["kind"] == alone["kind"], command
                assert params["generator"].get("primitive") == alone.get("primitive"), command
            elif key == "source":
                assert (params["dataset"]["source"] == "download") == (value == "download"), command
            elif key not in GROUPS:
                assert lookup(params, key) == yaml.safe_load(value), (command, key)


# ------------------------------------------------ DVCLive curves and artifacts, on the tiny pipeline run

def declared_plot_files() -> set[str]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    files = set()
    for entry in spec["plots"]:
        if isinstance(entry, str):          # an image or a file with its own defaults
            files.add(entry)
            continue
        (_, props), = entry.items()
        if not props:
            continue
        for axis in ("x", "y"):
            if isinstance(props.get(axis), dict):
                files |= set(props[axis])
    return files


def test_dvclive_curves_written_and_declared(tiny_pipeline):
    _, snapshot, _ = tiny_pipeline
    written = {str(p.relative_to(snapshot)) for p in snapshot.glob("plots/*/dvclive/plots/metrics/*.tsv")}
    stages = {p.split("/")[1] for p in written}
    assert {"backbone", "generator", "devise", "classifier", "self_training"} <= stages, written
    declared = declared_plot_files()
    assert written <= declared, f"written but not declared in dvc.yaml plots: {sorted(written - declared)}"
    for f in declared:
        path = snapshot / f
        assert path.exists(), f"dvc.yaml declares {f}, the run did not write it"
        if path.suffix in (".tsv", ".csv"):
            rows = path.read_text().strip().splitlines()
            assert len(rows) >= 2, f"{f}: no data row"
    shown = json.loads(sh([sys.executable, "-m", "dvc", "plots", "show", "--json"], tiny_pipeline[0]).stdout)
    failed = {e["name"] for e in shown.get("errors", [])}   # the key is absent when nothing failed
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    curves = [title for e in spec if isinstance(e, dict) for title, props in e.items()
              if any("dvclive" in f for f in (props or {}).get("y", {}))]
    assert len(curves) >= 6, curves
    for title in curves:
        assert title in shown["data"] and title not in failed, f"dvc plots show cannot draw '{title}'"


def test_models_are_dvc_artifacts(tiny_pipeline, tmp_path):
    """Each model of dvc.yaml's ``artifacts:`` is found by DVC's model registry once a version is
    tagged (GTO convention ``<name>@v<semver>``), and ``dvc artifacts get`` downloads the very
    file whose md5 dvc.lock records for that commit."""
    import hashlib

    import dvc.api

    repo, _, _ = tiny_pipeline
    # experiment refs only: refs/exps/exec/EXEC_HEAD points at the baseline, which has no dvc.lock
    revs = [sha for name, sha in list_experiments(repo).items() if name != "oracle"]
    assert revs, "the tiny run left no experiment commit"
    rev = revs[0]
    lock = yaml.safe_load(sh(["git", "show", f"{rev}:dvc.lock"], repo).stdout)
    md5 = {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())["artifacts"]
    assert set(spec) == {"backbone", "generator", "zs3net-classifier", "zs5net-classifier"}
    for name, a in spec.items():
        assert a["type"] == "model" and a["desc"] and a["labels"], name
        tag = f"{name}@v0.1.0"
        sh(["git", "tag", "-a", tag, rev, "-m", "test"], repo)
        try:
            shown = dvc.api.artifacts_show(name, repo=str(repo))
            assert shown == {"rev": rev, "path": a["path"]}, (name, shown)
            dest = tmp_path / name
            sh([sys.executable, "-m", "dvc", "artifacts", "get", str(repo), name, "-o", str(dest)], tmp_path)
            owner = next(p for p in md5 if a["path"] == p or a["path"].startswith(p.rstrip("/") + "/"))
            expected = md5[owner]
            if expected.endswith(".dir"):   # a folder out: its listing in the cache gives the file's md5
                h = expected[:-4]
                listing = json.loads((repo / ".dvc/cache/files/md5" / h[:2] / (h[2:] + ".dir")).read_text())
                rel = a["path"][len(owner.rstrip("/")) + 1:]
                expected = next(e["md5"] for e in listing if e["relpath"] == rel)
            assert hashlib.md5(dest.read_bytes()).hexdigest() == expected, name
            listed = sh([sys.executable, "-m", "dvc", "ls", "--rev", rev, str(repo), str(Path(a["path"]).parent)],
                        tmp_path).stdout
            assert Path(a["path"]).name in listed, (name, listed)
        finally:
            sh(["git", "tag", "-d", tag], repo)
