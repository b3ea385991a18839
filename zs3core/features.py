"""Pixel-feature extraction and the feature cache (ZS3Net §2.2 "step 0").

With the trained backbone in eval mode, each image yields its (d_x, h, w) decoder features
at stride 4; the label map is downsampled to (h, w) by nearest neighbour so that every
feature location gets a class ("pixel" = location of the down-sampled image, paper §2.2).

Two caches are written, both as dicts of tensors saved with ``torch.save``:

* ``labelled``: from the kept training images, at most ``pixels_per_class`` random
  locations per seen class and image. Keys: ``features`` (N, d_x) float16, ``labels``
  (N,) int64 class ids, ``image`` (N,) int64 row of the manifest.
* ``pool``: the unlabelled pool for ZS5Net, ``pool_pixels_per_image`` random locations per
  image, drawn without looking at the labels. Keys as above, where ``labels`` holds the
  ground truth for *diagnostics only* (pseudo-label precision); no training step reads it.

``extract`` also returns the label map of every training image at feature resolution
((h, w) uint8, raw class ids, 255 = void): the graph-context generator builds its
connected-component graphs from them (ZS3Net §2.2 uses the segmentation masks, not images).

Unlike the official code, which generates features online during classifier training, the
features are cached once so that every generator and classifier variant reuses the same
real features (and DVC can skip re-extraction when only the generator changes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm


def downsample_labels(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour downsampling of a (H, W) int label map to ``size`` = (h, w)."""
    return F.interpolate(target[None, None].float(), size=size, mode="nearest")[0, 0].long()


def sample_per_class(labels: torch.Tensor, classes, k: int, rng: torch.Generator) -> torch.Tensor:
    """Indices of at most ``k`` random positions of each class in a flat (n,) label vector."""
    picks = []
    for c in classes:
        idx = torch.nonzero(labels == c).squeeze(1)
        if len(idx) > k:
            idx = idx[torch.randperm(len(idx), generator=rng)[:k]]
        picks.append(idx)
    return torch.cat(picks) if picks else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def extract(model, dataset, rows, seen, pixels_per_class: int, pool_rows, pool_pixels: int,
            rng: torch.Generator, device: torch.device, channels_last: bool = False) -> tuple[dict, dict, dict]:
    """Run the backbone over images and sample pixel features.

    Args:
        model: DeepLabV3Plus with ``features``.
        dataset: evaluation-mode SegDataset whose targets are raw class ids (255 = void).
        rows: dataset indices of the labelled images; seen: seen class ids to sample there.
        pool_rows: dataset indices of the unlabelled pool (may overlap ``rows`` under the
            ``ignore`` protocol).
        pixels_per_class / pool_pixels: sampling budgets.

    Returns:
        (labelled cache, pool cache, {dataset index: (h, w) uint8 label map}) as described in
        the module docstring.
    """
    model.to(device).eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    rows, pool_rows = set(rows), set(pool_rows)
    todo = sorted(set(rows) | pool_rows)
    lab = {"features": [], "labels": [], "image": []}
    pool = {"features": [], "labels": [], "image": []}
    maps = {}
    for i in tqdm(todo, desc="extract features"):
        img, target, _ = dataset[i]
        x = img[None].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        f = model.features(x)[0].float().cpu()
        d, h, w = f.shape
        f = f.reshape(d, h * w).T
        t2 = downsample_labels(target, (h, w))
        maps[i] = t2.clamp(0, 255).to(torch.uint8)
        t = t2.reshape(-1)
        if i in rows:
            idx = sample_per_class(t, seen, pixels_per_class, rng)
            lab["features"].append(f[idx].half())
            lab["labels"].append(t[idx])
            lab["image"].append(torch.full((len(idx),), i))
        if i in pool_rows:
            idx = torch.randperm(h * w, generator=rng)[:pool_pixels]
            pool["features"].append(f[idx].half())
            pool["labels"].append(t[idx])
            pool["image"].append(torch.full((len(idx),), i))

    def pack(c, d):
        if not c["features"]:
            return {"features": torch.zeros(0, d, dtype=torch.float16), "labels": torch.zeros(0, dtype=torch.long),
                    "image": torch.zeros(0, dtype=torch.long)}
        return {k: torch.cat(v) for k, v in c.items()}

    dim = model.feature_dim
    return pack(lab, dim), pack(pool, dim), maps



def load_cache(path) -> dict:
    """Load a feature cache written by :func:`extract` (``torch.save`` of a dict) and check it.

    Returns:
        The cache dict (``features`` (N, d_x) float16, ``labels`` (N,), ``image`` (N,),
        ``manifest_ids``).

    Raises:
        Zs3Error: the file is missing, or a feature is NaN or infinite (naming the file and the
            manifest id of the first image concerned).
    """
    from pathlib import Path

    from zs3core.io import Zs3Error

    path = Path(path)
    if not path.exists():
        raise Zs3Error(f"{path}: missing; run the extract_features stage first (dvc repro extract_features)")
    cache = torch.load(path, weights_only=False)
    check_cache(cache, path)
    return cache


def check_cache(cache: dict, path) -> None:
    """Raise Zs3Error naming ``path`` and the manifest id of the first image whose cached
    features hold NaN or infinite values."""
    from zs3core.io import Zs3Error

    bad = ~torch.isfinite(cache["features"].float()).all(1)
    if bool(bad.any()):
        row = int(cache["image"][torch.nonzero(bad)[0, 0]])
        ids = cache.get("manifest_ids") or []
        name = ids[row] if row < len(ids) else f"row {row}"
        raise Zs3Error(f"{path}: {int(bad.sum())} non-finite feature(s) (NaN/Inf), first in image id '{name}'; "
                       "the backbone or the image is broken: rerun extract_features (dvc repro -f extract_features)")


def cache_report(labelled: dict, pool: dict, rows, pool_rows, names, seen, sizes_mb: float, seconds: float) -> dict:
    """metrics/features.json: how many features and images each cache holds, its size, time taken."""
    return {"labelled_pixels": len(labelled["labels"]), "pool_pixels": len(pool["labels"]),
            "labelled_images": len(rows), "pool_images": len(pool_rows), "cache_mb": round(sizes_mb, 2),
            "feature_dim": int(labelled["features"].shape[1]), "seconds": round(seconds, 1),
            "labelled_pixels_per_class": {names[c]: int((labelled["labels"] == c).sum()) for c in seen}}
