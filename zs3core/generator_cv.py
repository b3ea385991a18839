"""Generator and step-2 settings chosen without unseen labels: rank candidates by the seen-class zero-shot CV.

The protocol rule (README "Protocol"): val and test report, they never choose. ZS3Net chose its
GMMN settings by a zero-shot cross-validation on the seen classes (§3.1, after Bucher et al.,
ICCV 2017); this command does the same for any generator or step-2 classifier setting (e.g.
``classifier.unseen_weight``: official ZS3Net 100, PADing 5). Every candidate (a list of
``generator.*`` / ``classifier.*`` overrides on the workspace's ``params.yaml``) is scored by
:func:`zs3core.crossval.select_gammas` for ZS3Net: on each fold, seen classes play the unseen
ones, a fresh generator is fitted with the candidate's settings and the *final model's budget*
(``generator.steps``, not ``calibration.generator_steps``), the step-2 classifier is retrained,
and the fold-validation images are scored. The ranking key is the cross-validated hIoU at the
candidate's own CV-chosen γ (the calibrated model is the one reported), the uncalibrated CV hIoU
beside it. Every candidate sees the same folds (the generator is reseeded with ``seed``).

It reads the labelled feature cache, label maps and class embeddings of a finished
``extract_features`` / ``embed`` run; the unseen classes' rows, pixels and counts are dropped
before anything else (:func:`zs3core.crossval.select_gammas`; a test poisons them).

Usage::

    python -m zs3core.generator_cv "generator.lr=0.0002 generator.samples_per_class=128" \\
        "generator.lr=0.001" "generator.lr=0.002" --out metrics/generator_cv.json
    python -m zs3core.generator_cv "classifier.unseen_weight=100" "classifier.unseen_weight=5"
    python -m zs3core.generator_cv "" "generator=gc" "generator=pading" \
        "generator.relation.listwise_weight=1" "generator=pading generator.relation.pairwise_weight=1"

``--self-training`` ranks ZS5Net's pseudo-label selection rules instead (``self_training.rule``,
``.top_p``, ``.threshold``) on the same folds (:func:`zs3core.crossval.rank_self_training`):

    python -m zs3core.generator_cv --self-training "" "self_training.top_p=10" \
        "self_training.rule=class_top_p" "self_training.rule=threshold self_training.threshold=0.9"

A candidate may switch the kind with ``generator=<group>`` (a file of ``conf/generator/``): the
group's own values (kind, lr, primitive.*) replace the workspace's, the rest (the scale's steps,
the relation block) is kept (:func:`group_delta`).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import yaml

CLASSES, MANIFEST, EMBED = Path("data/split/classes.json"), Path("data/split/manifest.csv"), Path("data/embed/class_embeddings.pt")
LABELLED, MAPS = Path("data/features/labelled"), Path("data/features/label_maps.pt")
CALIBRATION = Path("metrics/calibration.json")


BLOCKS = ("generator", "classifier", "self_training")
"""The params blocks a candidate may override."""


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def group_delta(group: str, config_dir: Path = Path("conf")) -> dict:
    """What selecting ``conf/generator/<group>.yaml`` changes in the ``generator`` block, relative
    to the default group: {dotted key under ``generator``: value} for every key the group adds or
    sets differently (e.g. ``kind``, ``lr`` and ``primitive.*`` for ``pading``). Applied on top of
    the workspace's block, it keeps what the scale and the user set on keys the group leaves alone
    (``steps``, ``samples_per_class``), as ``dvc exp run -S generator=<group>`` composes.

    Raises:
        Zs3Error: no such group (naming the groups in ``conf/generator``).
    """
    from zs3core.compose import compose
    from zs3core.io import Zs3Error

    groups = sorted(f.stem for f in (Path(config_dir) / "generator").glob("*.yaml"))
    if group not in groups:
        raise Zs3Error(f"generator_cv: generator={group}: no conf/generator/{group}.yaml; groups: {groups}")
    base = _flatten(yaml.safe_load(compose([], config_dir))["generator"])
    new = _flatten(yaml.safe_load(compose([f"generator={group}"], config_dir))["generator"])
    return {k: v for k, v in new.items() if k not in base or base[k] != v}


def apply_overrides(params: dict, overrides: list[str], config_dir: Path = Path("conf")) -> dict:
    """A copy of the params mapping with ``generator.a.b=value`` / ``classifier.a=value``
    overrides applied (values: integers, floats such as ``2e-4``, else YAML scalars), and
    ``generator=<group>`` switching the generator kind (:func:`group_delta`; applied first).

    Raises:
        Zs3Error: an override is not ``<block>.<key>=<value>`` with a block of :data:`BLOCKS`
            or ``generator=<group>``, names an unknown key, or an unknown group.
    """
    from zs3core.io import Zs3Error

    out = copy.deepcopy(params)
    groups = [o for o in overrides if o.startswith("generator=")]
    for o in groups:
        for key, value in group_delta(o.partition("=")[2], config_dir).items():
            node = out["generator"]
            *parents, last = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = copy.deepcopy(value)
    for o in overrides:
        if o in groups:
            continue
        key, eq, value = o.partition("=")
        parts = key.split(".")
        if not eq or parts[0] not in BLOCKS or len(parts) < 2 or not isinstance(out.get(parts[0]), dict):
            raise Zs3Error(f"generator_cv: '{o}' is not a generator=<group>, generator.<key>=<value> or "
                           f"classifier.<key>=<value> override")
        node = out[parts[0]]
        for p in parts[1:-1]:
            if not isinstance(node.get(p), dict):
                raise Zs3Error(f"generator_cv: '{key}' names no {parts[0]} parameter")
            node = node[p]
        if parts[-1] not in node:
            raise Zs3Error(f"generator_cv: '{key}' names no {parts[0]} parameter; known: {sorted(node)}")
        node[parts[-1]] = _scalar(value)
    return out


def _scalar(text: str):
    """An override value: int, then float (``2e-4``, which YAML 1.1 reads as a string), then YAML."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def rank_candidates(candidates: list[list[str]], raw_params: dict, labelled: dict, label_maps: dict, pixel_counts,
                    split, embeddings: torch.Tensor, device: torch.device) -> list[dict]:
    """Score every candidate by the seen-class zero-shot CV (module docstring), best first.

    Args:
        candidates: lists of ``generator.*`` / ``classifier.*`` overrides (an empty list = the
            params as they are).
        raw_params: params.yaml as a dict. labelled / label_maps / pixel_counts: as
            :func:`zs3core.crossval.select_gammas`. split: the :class:`zs3core.splits.ClassSplit`.
        embeddings: (C, d_a) float class embeddings. device: where to fit.

    Returns:
        [{"overrides", "cv_hIoU" (at the candidate's γ, %), "cv_uncalibrated_hIoU" (%), "gamma",
        "folds", "seconds", "rank"}], sorted by ``cv_hIoU`` descending.

    Raises:
        Zs3Error: a bad override or parameter value (named by key).
    """
    from zs3core.config import config_from_dict
    from zs3core.crossval import select_gammas
    from zs3core.generators import get_kind

    rows = []
    for overrides in candidates:
        raw = apply_overrides(raw_params, overrides)
        cfg = config_from_dict(raw)
        c = cfg.calibration
        t0 = time.time()
        torch.manual_seed(cfg.seed)   # the same folds and streams for every candidate (global RNG: dropout)
        r = select_gammas(labelled, label_maps, pixel_counts, split.seen, split.unseen, (split.ignore_index, 255),
                          embeddings, get_kind(cfg.generator.kind), cfg.generator, cfg.classifier, ["zs3net"], c.folds,
                          c.val_fraction, c.grid, torch.Generator().manual_seed(cfg.seed), device)["zs3net"]
        rows.append({"overrides": list(overrides), "cv_hIoU": round(r["hIoU"], 3),
                     "cv_uncalibrated_hIoU": round(r["uncalibrated_hIoU"], 3), "gamma": round(r["gamma"], 6),
                     "folds": [[split.classes[u] for u in f["pseudo_unseen"]] for f in r["folds"]],
                     "seconds": round(time.time() - t0, 1)})
        print(f"  {' '.join(overrides) or '(params.yaml)':<60s} CV hIoU {r['hIoU']:6.2f} "
              f"(uncalibrated {r['uncalibrated_hIoU']:6.2f}, γ {r['gamma']:.3g}) {time.time() - t0:5.0f} s", flush=True)
    rows.sort(key=lambda x: -x["cv_hIoU"])
    return [{**x, "rank": i + 1} for i, x in enumerate(rows)]


def rank_self_training_candidates(candidates: list[list[str]], raw_params: dict, labelled: dict, label_maps: dict,
                                  pixel_counts, split, embeddings: torch.Tensor, gamma: float,
                                  device: torch.device) -> list[dict]:
    """Rank ZS5Net selection rules (``self_training.*`` overrides) on the seen-class folds
    (:func:`zs3core.crossval.rank_self_training`), with the workspace's generator and step 2.

    Raises:
        Zs3Error: a candidate overrides anything but ``self_training.rule``, ``.top_p`` or
            ``.threshold``, or a bad value.
    """
    from zs3core.config import config_from_dict
    from zs3core.crossval import rank_self_training
    from zs3core.self_training import selection_rule
    from zs3core.generators import get_kind
    from zs3core.io import Zs3Error

    cands = []
    for overrides in candidates:
        bad = [o for o in overrides if not o.startswith(("self_training.rule=", "self_training.top_p=",
                                                         "self_training.threshold="))]
        if bad:
            raise Zs3Error(f"generator_cv --self-training: {bad} is not a self_training.rule / .top_p / .threshold "
                           f"override (the generator and step 2 are the workspace's)")
        c = config_from_dict(apply_overrides(raw_params, overrides))
        cands.append({"overrides": list(overrides), **selection_rule(c.self_training, c.split.filter)})
    cfg = config_from_dict(raw_params)
    c = cfg.calibration
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    rows = rank_self_training(labelled, label_maps, pixel_counts, split.seen, split.unseen, (split.ignore_index, 255),
                              embeddings, get_kind(cfg.generator.kind), cfg.generator, cfg.classifier, cands, gamma,
                              c.folds, c.val_fraction, c.grid, torch.Generator().manual_seed(cfg.seed), device)
    for r in rows:
        print(f"  {' '.join(r['overrides']) or '(params.yaml)':<60s} CV hIoU {r['cv_hIoU']:6.2f} at γ {r['gamma']:.3g} "
              f"(uncalibrated {r['cv_uncalibrated_hIoU']:6.2f}; ZS3Net {r['zs3net_cv_hIoU']:6.2f}) "
              f"precision {r['precision']} % of {r['pseudo_labels']}", flush=True)
    print(f"  {time.time() - t0:.0f} s")
    return rows


def main(argv: list[str] | None = None) -> None:
    from zs3core.embeddings import load_class_embeddings
    from zs3core.features import load_cache
    from zs3core.io import Zs3Error
    from zs3core.splits import pixel_count_matrix, read_class_split, read_manifest

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("candidates", nargs="+", help='space-separated generator.* / classifier.* overrides per candidate, e.g. '
                                                  '"generator.lr=0.001 generator.steps=5000" ("" = params.yaml as is)')
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--out", type=Path, default=None,
                    help="default metrics/generator_cv.json (metrics/self_training_cv.json with --self-training)")
    ap.add_argument("--self-training", action="store_true",
                    help="rank ZS5Net selection rules (self_training.rule/top_p/threshold) on the seen-class folds")
    a = ap.parse_args(argv)
    a.out = a.out or Path("metrics/self_training_cv.json" if a.self_training else "metrics/generator_cv.json")
    try:
        raw = yaml.safe_load(a.params.read_text())
        cs, df = read_class_split(CLASSES), read_manifest(MANIFEST)
        if not cs.unseen:
            raise Zs3Error(f"{CLASSES}: no unseen class; the CV ranks zero-shot settings")
        train = df[df.split == raw["dataset"]["train_split"]]
        inputs = (load_cache(LABELLED), torch.load(MAPS, weights_only=False)["maps"],
                  pixel_count_matrix(train, cs.classes), cs, load_class_embeddings(EMBED))
        if a.self_training:
            if not CALIBRATION.exists():
                raise Zs3Error(f"{CALIBRATION}: missing; ZS5Net pseudo-labels with ZS3Net's γ of the calibrate stage "
                               f"(run `dvc repro calibrate` first)")
            gamma = float(json.loads(CALIBRATION.read_text()).get("zs3net", {}).get("gamma", 0.0))
            print(f"pseudo-labels with ZS3Net's γ = {gamma:.4g} ({CALIBRATION})")
            ranking = rank_self_training_candidates([c.split() for c in a.candidates], raw, *inputs, gamma,
                                                    torch.device("cpu"))
        else:
            ranking = rank_candidates([c.split() for c in a.candidates], raw, *inputs, torch.device("cpu"))
    except Zs3Error as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".tmp")
    criterion = ("ZS5Net on the seen-class folds: fold-validation hIoU at the candidate's CV γ after retraining "
                 "with the rule's pseudo-labels of the fold-train images (pseudo-labelled with ZS3Net's γ; "
                 "no unseen label read)"
                 if a.self_training else
                 "seen-class zero-shot CV hIoU at the candidate's CV γ (no unseen label read)")
    extra = {"zs3net_gamma_used_to_pseudo_label": gamma} if a.self_training else {}
    tmp.write_text(json.dumps({"criterion": criterion, **extra, "ranking": ranking}, indent=2) + "\n")
    tmp.replace(a.out)   # atomic: a reader never sees half a file
    print(f"best: {' '.join(ranking[0]['overrides']) or '(params.yaml)'}; written to {a.out}")


if __name__ == "__main__":
    main()
