"""Shared plumbing of the stage scripts: paths of the pipeline's files, params, error exit.

Stages stay thin: read params, call ``zs3core``, write outputs through ``StageOutputs``.
"""
from __future__ import annotations

import sys
import traceback
from pathlib import Path

import pandas as pd
import torch

from zs3core.data.layouts import Sample, find_root
from zs3core.io import Zs3Error, read_json
from zs3core.params import get, load_params
from zs3core.splits import ClassSplit

RAW = Path("data/raw")
SPLIT_DIR = Path("data/split")
MANIFEST = SPLIT_DIR / "manifest.csv"
CLASSES = SPLIT_DIR / "classes.json"
EMBED = Path("data/embed/class_embeddings.pt")
BACKBONE = Path("data/backbone/model.pt")
FEATURES_DIR = Path("data/features")
LABEL_MAPS = FEATURES_DIR / "label_maps.pt"
GENERATOR = Path("data/generator/generator.pt")
ZS3_CLF = Path("data/classifier/zs3net.pt")
ZS5_CLF = Path("data/self_train/zs5net.pt")
DEVISE = Path("data/devise/devise.pt")
CEILING = Path("data/ceiling/real_feature_ceiling.pt")
WORK = Path("data/.work")  # checkpoints of interrupted runs (not a DVC output)


def params() -> dict:
    return load_params("params.yaml")


def raw_root(p: dict) -> Path:
    return find_root(RAW, get(p, "dataset.layout"))


def class_split() -> ClassSplit:
    return ClassSplit.from_dict(read_json(CLASSES))


def report_split(p: dict) -> ClassSplit:
    """The seen/unseen grouping used for scores: the trained split, except under
    ``split.filter=oracle`` where every class is trained on and the K preset groups the scores."""
    cs = class_split()
    if get(p, "split.filter") != "oracle":
        return cs
    from zs3core.splits import resolve_unseen

    unseen = resolve_unseen(list(cs.classes), get(p, "dataset.split_presets", {}), get(p, "split.k", None),
                            get(p, "split.unseen", []))
    return ClassSplit(cs.classes, unseen, cs.ignore_index)


def stage_checkpoint(name: str, p: dict, keys: list[str], inputs: list[Path], every: int):
    """A :class:`zs3core.checkpoint.Checkpoint` in data/.work for one stage's training loop,
    bound to the stage's params and to the size and modification time of its input files."""
    import os

    from zs3core.checkpoint import Checkpoint
    from zs3core.params import stage_params
    from zs3core.train import config_hash

    stamp = [(str(f), os.path.getsize(f), os.path.getmtime(f)) for f in inputs if Path(f).exists()]
    return Checkpoint(WORK / f"{name}_checkpoint.pt", config_hash({"params": stage_params(p, *keys), "inputs": stamp}), every)


def manifest() -> pd.DataFrame:
    if not MANIFEST.exists():
        raise Zs3Error(f"{MANIFEST}: missing; run the split stage first (dvc repro split)")
    return pd.read_csv(MANIFEST, dtype={"id": str})


def samples(df: pd.DataFrame) -> list[Sample]:
    return [Sample(r.id, r.split, r.image, r.label) for r in df.itertuples()]


def class_embeddings() -> torch.Tensor:
    """(C, d_a) float32 class embeddings written by the embed stage."""
    return torch.load(EMBED, weights_only=False)["embeddings"].float()


def feature_cache(name: str) -> dict:
    """The ``labelled`` or ``pool`` feature cache written by extract_features, checked (finite)."""
    from zs3core.features import load_cache

    return load_cache(FEATURES_DIR / f"{name}.pt")


def device(p: dict) -> torch.device:
    from zs3core.train import pick_device

    return pick_device(str(get(p, "scale.device", "auto")))


def set_threads() -> None:
    """Use every core for intra-op parallelism (deterministic on CPU for a fixed count)."""
    import os

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))


def run(main) -> None:
    """Run a stage's main(); an input error prints one clear line and exits with status 2."""
    import time

    t0 = time.time()
    try:
        main()
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        print(f"[{Path(sys.argv[0]).stem}] done in {time.time() - t0:.1f} s, peak RSS {peak:.0f} MB")
    except Zs3Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; outputs left untouched", file=sys.stderr)
        sys.exit(130)
    except Exception:
        traceback.print_exc()
        sys.exit(1)
