"""dvc.yaml's deps follow the imports: editing any project module a stage runs reruns that stage."""
from __future__ import annotations

import ast
from pathlib import Path

import yaml

from zs3core.stagedeps import closure, missing_deps, stage_code

REPO = Path(__file__).resolve().parents[1]


def test_every_stage_covers_its_transitive_imports():
    """For every stage, each project file its command runs (imports inside functions included)
    is a dep in dvc.yaml. The fix: ``python -m zs3core.stagedeps --write``."""
    gaps = missing_deps(yaml.safe_load((REPO / "dvc.yaml").read_text()), REPO)
    assert not gaps, f"dvc.yaml deps miss imported files (run python -m zs3core.stagedeps --write): {gaps}"


def test_every_stage_module_is_a_stage_and_every_stage_runs_a_module():
    d = yaml.safe_load((REPO / "dvc.yaml").read_text())
    code = stage_code(d, REPO)
    assert set(code) == set(d["stages"])
    modules = {p.stem for p in (REPO / "stages").glob("*.py") if p.stem != "__init__"}
    assert modules == set(d["stages"]), "a stage script without a dvc.yaml stage, or the reverse"


def _walk_imports(path: Path) -> set[str]:
    """An independent import walk: every ``zs3core``/``stages`` module named anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("zs3core", "stages"):
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] in ("zs3core", "stages")}
    return names


def test_closure_against_an_independent_walk():
    """The closure of evaluate contains every module a plain recursive walk finds, __init__ files included."""
    start = REPO / "stages" / "evaluate.py"
    todo, found = [start], set()
    while todo:
        f = todo.pop()
        if f in found:
            continue
        found.add(f)
        for m in _walk_imports(f):
            parts = m.split(".")
            for i in range(1, len(parts) + 1):
                base = REPO.joinpath(*parts[:i])
                for cand in (base.with_suffix(".py"), base / "__init__.py"):
                    if cand.exists() and cand not in found:
                        todo.append(cand)
    assert found == closure(start, REPO)
    rel = {str(p.relative_to(REPO)) for p in found}
    assert {"zs3core/evaluation.py", "zs3core/calibration.py", "zs3core/models/deeplab.py", "zs3core/stage.py"} <= rel


def test_a_missing_dep_is_reported(tmp_path):
    d = yaml.safe_load((REPO / "dvc.yaml").read_text())
    d["stages"]["evaluate"]["deps"] = [x for x in d["stages"]["evaluate"]["deps"] if x != "zs3core/metrics.py"]
    assert missing_deps(d, REPO) == {"evaluate": ["zs3core/metrics.py"]}


def test_stages_stay_thin():
    """A stage reads params, calls zs3core and writes outputs: under 60 lines each (the science
    lives in zs3core/, one module per concept)."""
    for path in sorted((REPO / "stages").glob("*.py")):
        n = len(path.read_text().splitlines())
        assert n < 60, f"{path.name}: {n} lines; move the logic into zs3core/"
