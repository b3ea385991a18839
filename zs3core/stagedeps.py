"""Which project files each DVC stage runs: the transitive imports of its ``stages/<name>.py``.

DVC reruns a stage when one of its ``deps`` changes, so every project module a stage imports,
directly or through other modules, imports inside functions included, must be a dep; otherwise
editing it leaves stale results that ``dvc status`` calls up to date.
tests/test_stage_deps.py checks ``dvc.yaml`` against :func:`stage_code`, and

    python -m zs3core.stagedeps            # list what is missing
    python -m zs3core.stagedeps --write    # rewrite the code deps of every stage in dvc.yaml

keeps it in step (data deps such as ``data/features/labelled`` are left as they are).
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import yaml

PACKAGES = ("zs3core", "stages")


def module_file(name: str, root: Path) -> Path | None:
    """The file of a dotted project module (``pkg/mod.py`` or ``pkg/__init__.py``), or None."""
    p = root.joinpath(*name.split("."))
    for c in (p.with_suffix(".py"), p / "__init__.py"):
        if c.exists():
            return c
    return None


def imported_modules(path: Path, root: Path) -> set[str]:
    """Dotted names of the project modules ``path`` imports anywhere in its body (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    pkg = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    out: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - n.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in n.names}   # `from pkg import module`
    return {m for m in out if m.split(".")[0] in PACKAGES}


def closure(path: Path, root: Path) -> set[Path]:
    """Every project file ``path`` runs: itself, its imports, theirs, and the packages' ``__init__``."""
    seen: set[Path] = set()
    todo = [path]
    while todo:
        cur = todo.pop()
        if cur in seen:
            continue
        seen.add(cur)
        for m in imported_modules(cur, root):
            parts = m.split(".")
            for i in range(1, len(parts) + 1):   # importing a.b.c runs a/__init__ and a/b/__init__ too
                f = module_file(".".join(parts[:i]), root)
                if f and f not in seen:
                    todo.append(f)
    return seen


def stage_code(dvc_yaml: dict, root: Path) -> dict[str, list[str]]:
    """{stage: sorted project files its command runs}, for the ``python -m stages.<name>`` stages
    (also when started through ``python -m zs3core.launch stages.<name>``: both modules count)."""
    out = {}
    for name, st in dvc_yaml.get("stages", {}).items():
        cmd = st.get("cmd", "")
        cmd = " ".join(cmd) if isinstance(cmd, list) else cmd
        mods = [w for w in cmd.split() if w.startswith(("stages.", "zs3core."))]
        files = [f for f in (module_file(m, root) for m in mods) if f]
        if any(m.startswith("stages.") for m in mods) and files:
            out[name] = sorted({str(p.relative_to(root)) for f in files for p in closure(f, root)})
    return out


def missing_deps(dvc_yaml: dict, root: Path) -> dict[str, list[str]]:
    """{stage: files it runs that no dep of it covers (a dep folder covers what is under it)}."""
    out = {}
    for name, files in stage_code(dvc_yaml, root).items():
        deps = [str(d).rstrip("/") for d in dvc_yaml["stages"][name].get("deps", [])]
        gaps = [f for f in files if not any(f == d or f.startswith(d + "/") for d in deps)]
        if gaps:
            out[name] = gaps
    return out


def write_deps(path: Path, root: Path) -> None:
    """Rewrite the code deps of every stage in ``path`` (dvc.yaml) to :func:`stage_code`, keeping
    the data deps; the file is re-dumped with blank lines between stages, comments dropped."""
    d = yaml.safe_load(path.read_text())
    code = stage_code(d, root)
    for name, files in code.items():
        data = [x for x in d["stages"][name].get("deps", []) if str(x).split("/")[0] not in PACKAGES]
        d["stages"][name]["deps"] = files + data
    text = yaml.safe_dump(d, sort_keys=False, width=120)
    lines, out = text.splitlines(), []
    for ln in lines:
        if ln.startswith("  ") and not ln.startswith("   ") and ln.endswith(":") and out and out[-1] != "stages:":
            out.append("")
        if not ln.startswith((" ", "-")) and out:
            out.append("")
        out.append(ln)
    header = "".join(l + "\n" for l in path.read_text().splitlines() if l.startswith("#"))
    path.write_text(header + "\n".join(out).lstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="check (or --write) dvc.yaml code deps against each stage's imports")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    a = ap.parse_args(argv)
    root = a.dvc_yaml.resolve().parent
    if a.write:
        write_deps(a.dvc_yaml, root)
    gaps = missing_deps(yaml.safe_load(a.dvc_yaml.read_text()), root)
    for k, v in gaps.items():
        print(f"{k}: imports not in deps: {', '.join(v)}")
    print("every stage's deps cover its imports" if not gaps else f"{sum(map(len, gaps.values()))} missing")
    return 1 if gaps else 0


if __name__ == "__main__":
    sys.exit(main())
