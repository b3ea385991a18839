"""The paper's tables and figures, regenerated from DVC experiments.

Every ``dvc exp run`` leaves a git commit under ``refs/exps/``; its metrics files
(``metrics/*.json``, ``metrics/per_class_iou.csv``) and plots (``plots/generator/tsne.png``) are
DVC outputs recorded in that commit's ``dvc.lock``. This module reads them through
``dvc.api.read`` at each experiment's commit (and optionally from the workspace) and writes,
with pandas and matplotlib:

* ``seeds.{md,csv}``: runs that differ only in ``seed`` grouped, mean ± std (n), with the
  pretraining protocol of each row (:func:`seed_table`);
* ``table1.{md,csv}``: the layout of ZS3Net Table 1 (Pascal-VOC) / Table 3 (Pascal-Context):
  per dataset, protocol and K, the supervised oracle, seen-only, DeViSE, ZS3Net and ZS3Net + GC
  rows with seen / unseen / overall PA, MA, mIoU and hIoU;
* ``table4.{md,csv}``: ZS3Net Table 4 (ZS5Net, self-training), same columns;
* ``generators.{md,csv}``: every model and generator side by side (seen, unseen, overall
  mIoU, hIoU, vanilla unseen mIoU), PADing Table 1's ablation included;
* ``vanilla.{md,csv}``: generalized vs vanilla unseen scores (ZS3Net Table 2);
* ``self_training_curve.png``: unseen and overall mIoU against top-p (ZS3Net Fig. 5);
* ``per_class_iou_<setting>.png``: per-class IoU of every model, seen and unseen shaded apart;
* ``tsne_<setting>.png``: the t-SNE panels of every generator (PADing Fig. 5).

Usage: ``python -m zs3core.report [--out reports] [--workspace] [--names a b ...]``.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from zs3core.evaluation import MODEL_TITLES
from zs3core.io import Zs3Error

GROUPS = (("seen", "Seen"), ("unseen", "Unseen"), ("all", "Overall"))
METRICS = ("PA", "MA", "mIoU")


def _git(args: list[str], repo: Path) -> str | None:
    r = subprocess.run(["git", *args], cwd=repo, capture_output=True, check=False)
    return r.stdout.decode() if r.returncode == 0 else None


def list_experiments(repo: Path = Path(".")) -> dict[str, str]:
    """{experiment name: commit sha} of every DVC experiment ref (``refs/exps/<xx>/<baseline>/<name>``)."""
    out = _git(["for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"], repo) or ""
    exps = {}
    for line in out.splitlines():
        ref, sha = line.split()
        parts = ref.split("/")
        if len(parts) == 5 and parts[2] not in ("exec", "celery", "temp", "runs"):
            exps[parts[4]] = sha
    return exps


def read_file(rev: str | None, path: str, repo: Path = Path("."), binary: bool = False):
    """A file at an experiment's commit (``rev``) or in the workspace (``rev`` None); None when absent.

    Git-tracked files and DVC outputs alike (``dvc.api.read`` looks outputs up in the DVC cache).
    """
    if rev is None:
        p = repo / path
        if not p.exists():
            return None
        return p.read_bytes() if binary else p.read_text()
    import dvc.api

    try:
        return dvc.api.read(path, repo=str(repo), rev=rev, mode="rb" if binary else "r")
    except Exception:  # noqa: BLE001 - absent at that commit (older experiment, other stage set)
        return None


def default_budget(config_dir: Path = Path("conf")) -> tuple[int, int]:
    """(steps, samples_per_class) of the default generator in ``conf/`` (the budget not shown in labels)."""
    from zs3core.compose import compose

    g = yaml.safe_load(compose([], config_dir))["generator"]
    return int(g["steps"]), int(g["samples_per_class"])


def generator_label(params: dict, budget: tuple[int, int] | None = None) -> str:
    """Human name of the generator variant of a run (the registry's label: GMMN, GC, primitives
    (+ alignment (+ disentanglement))), with the training budget appended when it is not
    ``budget`` (default: :func:`default_budget`). ``params``: a run's params.yaml as a dict."""
    from types import SimpleNamespace

    from zs3core.generators import KINDS

    g = params.get("generator", {})
    kind = KINDS.get(g.get("kind", "gmmn"))
    view = json.loads(json.dumps(g), object_hook=lambda d: SimpleNamespace(**d))   # attribute access, as the views
    name = kind.label(view) if kind else str(g.get("kind"))
    steps, samples = budget or default_budget()
    run_budget = (int(g.get("steps", steps)), int(g.get("samples_per_class", samples)))
    return name + ("" if run_budget == (steps, samples) else f" [{run_budget[0]} steps x {run_budget[1]}/class]")


MODEL_NAMES = {**MODEL_TITLES, "seen_only": "seen-only (w/o ZSL)"}


def st_rule(st: dict) -> str:
    """ZS5Net's selection rule as a table label: ``p=25`` (the paper's per-image top-p, also for
    runs older than ``self_training.rule``), ``per-class p=25`` or ``prob>=0.9``."""
    rule = st.get("rule", "image_top_p")
    if rule == "threshold":
        return f"prob>={st.get('threshold')}"
    return ("per-class " if rule == "class_top_p" else "") + f"p={st.get('top_p')}"


def run_rows(name: str, rev: str | None, repo: Path = Path("."), budget: tuple[int, int] | None = None) -> list[dict]:
    """One row per (split, model) of one run: setting, model label, every score, the calibrated
    scores and γ, the transfer efficiency and the IoU of each unseen class (``iou:<class>``,
    calibrated when the model has a γ: ``iou_cal:<class>``)."""
    ev = read_file(rev, "metrics/evaluate.json", repo)
    pr = read_file(rev, "params.yaml", repo)
    if ev is None or pr is None:
        return []
    ev, params = json.loads(ev), yaml.safe_load(pr)
    split_m = json.loads(read_file(rev, "metrics/split.json", repo) or "{}")
    pc_text = read_file(rev, "metrics/per_class_iou.csv", repo)
    pc = pd.read_csv(io.StringIO(pc_text)) if pc_text else None
    gen = generator_label(params, budget)
    kind = params.get("generator", {}).get("kind", "gmmn")
    bb = json.loads(read_file(rev, "metrics/backbone.json", repo) or "{}")
    pool_rule = json.loads(read_file(rev, "metrics/self_training.json", repo) or "{}").get("pool_annotation")
    top_p = params.get("self_training", {}).get("top_p")
    base = {"run": name, "dataset": params["dataset"]["name"], "K": len(split_m.get("unseen", [])) or params["split"].get("k"),
            "protocol": params["split"]["filter"], "scale": params.get("scale", {}).get("name"), "generator": gen, "kind": kind,
            "top_p": top_p, "seed": params.get("seed"), "pretraining": bb.get("protocol") or pretraining_of(params),
            "config": config_key(params)}
    names = {**MODEL_NAMES,
             "zs3net": {"gmmn": "ZS3Net" + gen[len("GMMN"):], "gc": "ZS3Net + GC" + gen[len("GC"):]}.get(kind, f"ZS3Net, {gen}"),
             "zs5net": f"ZS5Net ({gen}, {st_rule(params.get('self_training', {}))}"
                       + (", uses the pool's seen annotation)" if pool_rule == "uses the pool's seen annotation" else ")")}
    rows = []
    for split, models in ev.items():
        te = models.get("transfer_efficiency", {})
        for m, s in models.items():
            if not isinstance(s, dict) or "seen" not in s:
                continue
            row = {**base, "split": split, "model_key": m, "model": names.get(m, m)}
            for g, _ in GROUPS:
                for k in METRICS:
                    row[f"{g}_{k}"] = s[g][k]
            row["hIoU"] = s["hIoU"]
            for k in METRICS:
                row[f"vanilla_{k}"] = s.get("vanilla", {}).get(k, np.nan)
            cal = s.get("calibrated")
            row["gamma"] = cal["gamma"] if cal else np.nan
            for g in ("seen", "unseen"):
                row[f"cal_{g}_mIoU"] = cal[g]["mIoU"] if cal else np.nan
            row["cal_hIoU"] = cal["hIoU"] if cal else np.nan
            for t in ("uncalibrated", "calibrated"):
                v = te.get(m, {}).get(t)
                row[f"te_{t}"] = np.nan if v is None else v
            if pc is not None:
                sp = pc[(pc.split == split) & (pc.group == "unseen")]
                for col, key in ((m, "iou"), (f"{m}@calibrated", "iou_cal")):
                    if col in sp:
                        row.update({f"{key}:{c}": v for c, v in zip(sp["class"], sp[col])})
            rows.append(row)
    return rows


def pretraining_of(params: dict) -> str:
    """The pretraining protocol of a run from its params (runs older than the ``protocol`` field
    of metrics/backbone.json): :func:`zs3core.backbone.pretraining_protocol`."""
    from types import SimpleNamespace

    from zs3core.backbone import pretraining_protocol

    b = params.get("backbone", {})
    return pretraining_protocol(SimpleNamespace(pretrained=bool(b.get("pretrained")), weights=b.get("weights")))


def _without_inert_defaults(params: dict) -> dict:
    """Params with the keys added after a run was made, at values that change nothing, taken
    out: a ``generator.relation`` block whose weights are 0, ``self_training.rule: image_top_p``
    and a ``self_training.threshold`` that only ``rule: threshold`` reads. A run made before
    those keys existed and one made after with them inert get the same :func:`config_key`."""
    import copy

    out = copy.deepcopy(params)
    rel = out.get("generator", {}).get("relation")
    if isinstance(rel, dict) and not rel.get("pairwise_weight") and not rel.get("listwise_weight"):
        del out["generator"]["relation"]
    st = out.get("self_training")
    if isinstance(st, dict):
        if st.get("rule") != "threshold":
            st.pop("threshold", None)
        if st.get("rule") == "image_top_p":
            st.pop("rule")
    return out


def config_key(params: dict) -> str:
    """A short hash of a run's params without ``seed`` and ``data_root``: runs with the same key
    differ only in their seed (and where the data lie), and are grouped by :func:`seed_table`.
    Keys added later at inert values do not count (:func:`_without_inert_defaults`)."""
    import hashlib

    rest = {k: v for k, v in params.items() if k not in ("seed", "data_root")}
    rest = _without_inert_defaults(rest)
    return hashlib.sha1(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:10]


SPREAD_COLUMNS = {"seen_mIoU": "seen", "unseen_mIoU": "unseen", "hIoU": "hIoU", "cal_seen_mIoU": "cal. seen",
                  "cal_unseen_mIoU": "cal. unseen", "cal_hIoU": "cal. hIoU", "te_uncalibrated": "TE %",
                  "te_calibrated": "cal. TE %"}


def seed_table(df: pd.DataFrame) -> pd.DataFrame:
    """Runs that differ only in ``seed`` (same :func:`config_key`), as mean ± sample std (n seeds).

    Index (dataset, split, protocol, K, pretraining, model); one column per score of
    :data:`SPREAD_COLUMNS` holding ``"mean ± std"`` (std with n - 1 degrees of freedom; ``"mean"``
    alone for one seed) and ``n``. A model shared by several configs of one setting (seen-only,
    DeViSE, the ceiling of a GC and of a GMMN run) is listed once per config.
    """
    if df.empty:
        return pd.DataFrame()
    keys = ["dataset", "split", "protocol", "K", "pretraining", "config", "model"]
    rows = []
    for k, g in df.drop_duplicates(["config", "seed", "split", "model_key"], keep="last").groupby(keys, sort=False):
        row = dict(zip(keys, k))
        row["n"] = int(g.seed.nunique())
        for col, title in SPREAD_COLUMNS.items():
            v = g[col].dropna().to_numpy(dtype=float) if col in g else np.zeros(0)
            row[title] = "" if not len(v) else (f"{v.mean():.1f}" if len(v) == 1 else f"{v.mean():.1f} ± {v.std(ddof=1):.1f}")
        row["_o"] = 12 if row["model"] == "supervised oracle" else _model_rank(row["model"])
        rows.append(row)
    t = pd.DataFrame(rows).sort_values(["dataset", "split", "protocol", "K", "pretraining", "_o", "model", "config"])
    t = t.drop(columns=["_o", "config"]).set_index(["dataset", "split", "protocol", "K", "pretraining", "model"])
    return t[[c for c in t.columns if (t[c] != "").any()]]


def collect(repo: Path = Path("."), names: list[str] | None = None, workspace: bool = False) -> pd.DataFrame:
    """Long table of every run's scores (one row per run, split and model).

    Raises:
        Zs3Error: no experiment with metrics was found.
    """
    exps = list_experiments(repo)
    if names:
        missing = [n for n in names if n not in exps]
        if missing:
            raise Zs3Error(f"report: no experiment named {missing}; `dvc exp list` shows {sorted(exps)}")
        exps = {n: exps[n] for n in names}
    budget = default_budget(repo / "conf") if (repo / "conf").is_dir() else None
    rows = [r for n, rev in sorted(exps.items()) for r in run_rows(n, rev, repo, budget)]
    if workspace:
        rows += run_rows("workspace", None, repo, budget)
    if not rows:
        raise Zs3Error("report: no experiment with metrics/evaluate.json found; run `dvc exp run ...` first")
    return pd.DataFrame(rows)


def _paper_layout(df: pd.DataFrame) -> pd.DataFrame:
    """Index (dataset, protocol, K, model); columns (Seen/Unseen/Overall x PA/MA/mIoU, hIoU)."""
    cols = {f"{g}_{k}": (title, k) for g, title in GROUPS for k in METRICS}
    t = df.drop_duplicates(["dataset", "protocol", "K", "split", "model"], keep="last")
    t = t.set_index(["dataset", "split", "protocol", "K", "model"])[[*cols, "hIoU"]]
    t.columns = pd.MultiIndex.from_tuples([*cols.values(), ("", "hIoU")])
    return t.round(1)


def _model_rank(model: str) -> int:
    """Row order of the generator table: oracle, baselines, ZS3Net generators (PADing ablation order), ZS5Net."""
    keys = ["supervised oracle", "real-feature ceiling", "seen-only", "DeViSE", "ZS5Net", "PADing",
            "primitives + alignment", "primitives only", "GMMN [", "ZS3Net + GC", "ZS3Net"]
    ranks = [0, 11, 1, 2, 9, 8, 7, 6, 5, 4, 3]
    return next((r for k, r in zip(keys, ranks) if k in model), 10)


def tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The report's tables from :func:`collect`'s long table."""
    paper_rows = df.model_key.isin(["oracle", "seen_only", "devise"]) | ((df.model_key == "zs3net") & df.kind.isin(["gmmn", "gc"]))
    t1 = df[paper_rows].copy()
    t1["_o"] = [_model_rank(m) for m in t1.model]
    t1 = t1.sort_values(["dataset", "split", "protocol", "K", "_o", "model"])
    zs5 = df[df.model_key == "zs5net"].sort_values(["dataset", "split", "protocol", "K", "generator", "top_p"])
    gens = df.drop_duplicates(["dataset", "split", "protocol", "K", "model"], keep="last").copy()
    gens["_o"] = [_model_rank(m) for m in gens.model]
    gens = gens.sort_values(["dataset", "split", "protocol", "K", "_o", "model"])
    gens = gens.set_index(["dataset", "split", "protocol", "K", "model"])[
        ["seen_mIoU", "unseen_mIoU", "all_mIoU", "hIoU", "vanilla_mIoU"]].round(1)
    van = df[df.vanilla_mIoU.notna()].drop_duplicates(["dataset", "split", "protocol", "K", "model"], keep="last")
    van = van.set_index(["dataset", "split", "protocol", "K", "model"])[
        ["unseen_PA", "unseen_MA", "unseen_mIoU", "vanilla_PA", "vanilla_MA", "vanilla_mIoU"]].round(1).sort_index()
    return {"seeds": seed_table(df), "zeroshot": zeroshot_table(df),
            "table1": _paper_layout(t1) if len(t1) else pd.DataFrame(),
            "table4": _paper_layout(zs5) if len(zs5) else pd.DataFrame(),
            "generators": gens, "vanilla": van}


def zeroshot_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every model of every zero-shot setting, uncalibrated and calibrated, with the ceilings.

    Index (dataset, split, protocol, K, model); columns: seen / unseen mIoU and hIoU,
    uncalibrated and calibrated, γ, transfer efficiency (% of the real-feature ceiling's unseen
    mIoU) and the IoU of each unseen class (calibrated when the model has a γ). The supervised
    oracle of the same dataset and K (its own experiment, ``split.filter=oracle``) is added to
    every setting of that K.
    """
    zs = df[df.protocol != "oracle"]
    if zs.empty:
        return pd.DataFrame()
    oracle = df[df.model_key == "oracle"]
    parts = []
    for (ds, split, proto, k), g in zs.groupby(["dataset", "split", "protocol", "K"]):
        o = oracle[(oracle.dataset == ds) & (oracle.split == split) & (oracle.K == k)].assign(protocol=proto)
        parts.append(pd.concat([g, o]).drop_duplicates(["model"], keep="last"))
    t = pd.concat(parts).copy()
    t["_o"] = [12 if m == "supervised oracle" else _model_rank(m) for m in t.model]   # the ceilings last
    t = t.sort_values(["dataset", "split", "protocol", "K", "_o", "model"])
    classes = sorted({c.split(":", 1)[1] for c in t.columns if c.startswith("iou:")})
    for c in classes:
        cal = t[f"iou_cal:{c}"] if f"iou_cal:{c}" in t else pd.Series(np.nan, index=t.index)
        t[f"{c} IoU"] = cal.fillna(t[f"iou:{c}"])
    cols = {"seen_mIoU": "seen", "unseen_mIoU": "unseen", "hIoU": "hIoU", "cal_seen_mIoU": "cal. seen",
            "cal_unseen_mIoU": "cal. unseen", "cal_hIoU": "cal. hIoU", "gamma": "γ",
            "te_uncalibrated": "TE %", "te_calibrated": "cal. TE %", **{f"{c} IoU": f"{c} IoU" for c in classes}}
    t = t.set_index(["dataset", "split", "protocol", "K", "model"])[[c for c in cols if c in t]].rename(columns=cols)
    return t.round({c: 3 if c == "γ" else 1 for c in t.columns})


def _markdown(t: pd.DataFrame) -> str:
    t = t.copy()
    if isinstance(t.columns, pd.MultiIndex):
        t.columns = [" ".join(c for c in col if c) for col in t.columns]
    return t.reset_index().to_markdown(index=False, floatfmt=".1f")


def self_training_curve(df: pd.DataFrame, path: Path) -> bool:
    """Unseen and overall mIoU of ZS5Net against top-p (ZS3Net Fig. 5); False when < 3 values of p."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = df[(df.model_key == "zs5net") & (df.split == "val")]
    groups = [(k, g.sort_values("top_p")) for k, g in z.groupby(["dataset", "protocol", "K", "generator"])
              if g.top_p.nunique() >= 3]
    if not groups:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (ds, proto, k, gen), g in groups:
        g = g.drop_duplicates("top_p", keep="last")
        zs3 = df[(df.model_key == "zs3net") & (df.split == "val") & (df.dataset == ds) & (df.protocol == proto)
                 & (df.K == k) & (df.generator == gen)]
        line = ax.plot(g.top_p, g.unseen_mIoU, marker="o", label=f"unseen mIoU, {ds} K={k} {proto}, {gen}")
        ax.plot(g.top_p, g.all_mIoU, marker="s", ls="--", color=line[0].get_color(), label="overall mIoU")
        if len(zs3):
            ax.axhline(zs3.unseen_mIoU.iloc[-1], color=line[0].get_color(), ls=":", lw=1, label="ZS3Net unseen (no self-training)")
    ax.set_xlabel("top-p (% of each image's unseen-predicted pixels kept as pseudo-labels)")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("ZS5Net: self-training vs p (cf. ZS3Net Fig. 5)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def per_class_figures(df: pd.DataFrame, out: Path, repo: Path, exps: dict[str, str | None]) -> list[Path]:
    """Per-class IoU bars of every model of every setting (dataset, protocol, K) on val."""
    from zs3core.viz import save_class_bars

    paths = []
    for (ds, proto, k), g in df[df.split == "val"].groupby(["dataset", "protocol", "K"]):
        series, classes, unseen = {}, None, None
        for run, rg in g.groupby("run", sort=False):
            csv = read_file(exps.get(run), "metrics/per_class_iou.csv", repo)
            if csv is None:
                continue
            pc = pd.read_csv(io.StringIO(csv))
            pc = pc[pc.split == "val"]
            classes = list(pc["class"])
            unseen = [i for i, grp in enumerate(pc.group) if grp == "unseen"]
            for r in rg.itertuples():
                if r.model not in series and r.model_key in pc:
                    series[r.model] = pc[r.model_key].to_numpy(dtype=float)
        if series:
            p = out / f"per_class_iou_{ds}_K{k}_{proto}.png"
            save_class_bars(p, classes, unseen, series, f"{ds}, K={k}, {proto}: per-class IoU on val (* = unseen)")
            paths.append(p)
    return paths


def tsne_grids(df: pd.DataFrame, out: Path, repo: Path, exps: dict[str, str | None]) -> list[Path]:
    """One figure per setting with the t-SNE panel (plots/generator/tsne.png) of each generator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    paths = []
    base = df[(df.split == "val") & (df.model_key == "zs3net")]
    for (ds, proto, k), g in base.groupby(["dataset", "protocol", "K"]):
        panels = {}
        for r in g.drop_duplicates("generator", keep="last").itertuples():
            png = read_file(exps.get(r.run), "plots/generator/tsne.png", repo, binary=True)
            if png:
                panels[r.generator] = mpimg.imread(io.BytesIO(png), format="png")
        if not panels:
            continue
        n = len(panels)
        cols = min(3, n)
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 6 * rows), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for ax, (gen, img) in zip(axes.ravel(), panels.items()):
            ax.imshow(img)
            ax.set_title(gen, fontsize=12)
        fig.suptitle(f"{ds}, K={k}, {proto}: real (o) and synthetic (x) features, t-SNE per generator", fontsize=13)
        fig.tight_layout()
        p = out / f"tsne_{ds}_K{k}_{proto}.png"
        fig.savefig(p, dpi=80)
        plt.close(fig)
        paths.append(p)
    return paths


def write_report(out: Path, repo: Path = Path("."), names: list[str] | None = None, workspace: bool = False) -> dict[str, pd.DataFrame]:
    """Collect runs and write every table (Markdown + CSV) and figure under ``out``; returns the tables."""
    df = collect(repo, names, workspace)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "runs.csv", index=False)
    tabs = tables(df)
    md = [f"# zs3-pipeline report\n\n{df.run.nunique()} runs: {', '.join(sorted(df.run.unique()))}\n"]
    titles = {"seeds": "Mean ± std over seeds (runs that differ only in `seed`; n = seeds). Pretraining protocol "
                       "named per row; `imagenet-1k` holds classes close to some unseen ones",
              "zeroshot": "Zero-shot results: uncalibrated and calibrated (γ by zero-shot cross-validation on seen "
                          "classes), transfer efficiency (TE, % of the real-feature ceiling) and unseen per-class IoU",
              "table1": "Table 1 / 3 layout: zero-shot segmentation per K (generalized evaluation)",
              "table4": "Table 4 layout: ZS5Net (self-training)",
              "generators": "Every model and generator (mIoU, %)",
              "vanilla": "Generalized vs vanilla unseen scores (Table 2 protocol)"}
    for name, t in tabs.items():
        if t.empty:
            continue
        t.to_csv(out / f"{name}.csv")
        (out / f"{name}.md").write_text(_markdown(t) + "\n")
        md.append(f"## {titles[name]}\n\n{_markdown(t)}\n")
    exps = {**list_experiments(repo), "workspace": None}
    figs = []
    if self_training_curve(df, out / "self_training_curve.png"):
        figs.append(out / "self_training_curve.png")
    figs += per_class_figures(df, out, repo, exps)
    figs += tsne_grids(df, out, repo, exps)
    md.append("## Figures\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in figs) + "\n")
    (out / "README.md").write_text("\n".join(md))
    return tabs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: reports)")
    ap.add_argument("--names", nargs="*", help="experiment names (default: every experiment)")
    ap.add_argument("--workspace", action="store_true", help="also include the workspace's metrics")
    a = ap.parse_args(argv)
    try:
        tabs = write_report(a.out, Path("."), a.names, a.workspace)
    except Zs3Error as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    for name, t in tabs.items():
        if not t.empty:
            print(f"\n{name}\n{_markdown(t)}")
    print(f"\nwritten to {a.out}/")


if __name__ == "__main__":
    main()
