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


BLOCKS = ("generator", "classifier")
"""The params blocks a candidate may override."""


def apply_overrides(params: dict, overrides: list[str]) -> dict:
    """A copy of the params mapping with ``generator.a.b=value`` / ``classifier.a=value``
    overrides applied (values: integers, floats such as ``2e-4``, else YAML scalars).

    Raises:
        Zs3Error: an override is not ``<block>.<key>=<value>`` with a block of :data:`BLOCKS`,
            or names an unknown key.
    """
    from zs3core.io import Zs3Error

    out = copy.deepcopy(params)
    for o in overrides:
        key, eq, value = o.partition("=")
        parts = key.split(".")
        if not eq or parts[0] not in BLOCKS or len(parts) < 2 or not isinstance(out.get(parts[0]), dict):
            raise Zs3Error(f"generator_cv: '{o}' is not a generator.<key>=<value> or classifier.<key>=<value> override")
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


def main(argv: list[str] | None = None) -> None:
    from zs3core.embeddings import load_class_embeddings
    from zs3core.features import load_cache
    from zs3core.io import Zs3Error
    from zs3core.splits import pixel_count_matrix, read_class_split, read_manifest

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("candidates", nargs="+", help='space-separated generator.* / classifier.* overrides per candidate, e.g. '
                                                  '"generator.lr=0.001 generator.steps=5000" ("" = params.yaml as is)')
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--out", type=Path, default=Path("metrics/generator_cv.json"))
    a = ap.parse_args(argv)
    try:
        raw = yaml.safe_load(a.params.read_text())
        cs, df = read_class_split(CLASSES), read_manifest(MANIFEST)
        if not cs.unseen:
            raise Zs3Error(f"{CLASSES}: no unseen class; the CV ranks zero-shot settings")
        train = df[df.split == raw["dataset"]["train_split"]]
        ranking = rank_candidates([c.split() for c in a.candidates], raw, load_cache(LABELLED),
                                  torch.load(MAPS, weights_only=False)["maps"], pixel_count_matrix(train, cs.classes),
                                  cs, load_class_embeddings(EMBED), torch.device("cpu"))
    except Zs3Error as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".tmp")
    tmp.write_text(json.dumps({"criterion": "seen-class zero-shot CV hIoU at the candidate's CV γ "
                                                      "(no unseen label read)", "ranking": ranking}, indent=2) + "\n")
    tmp.replace(a.out)   # atomic: a reader never sees half a file
    print(f"best: {' '.join(ranking[0]['overrides']) or '(params.yaml)'}; written to {a.out}")


if __name__ == "__main__":
    main()
