"""Pixel-feature extraction and the feature cache (ZS3Net §2.2 "step 0").

With the trained backbone in eval mode, each image yields its (d_x, h, w) decoder features
at stride 4; the label map is downsampled to (h, w) by nearest neighbour so that every
feature location gets a class ("pixel" = location of the down-sampled image, paper §2.2).

Two caches are written, each a folder (:class:`CacheWriter`): the features as one raw
float16 file written image by image (bounded memory at any data size) and memory-mapped when
read (:func:`load_cache`), and an index of labels and image rows:

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


FEATURES_FILE, INDEX_FILE = "features.f16", "index.pt"


class CacheWriter:
    """Append-only writer of one feature cache folder, in bounded memory.

    A cache folder holds ``features.f16``, the (N, d_x) float16 features row after row (raw
    bytes, C order), and ``index.pt``, a ``torch.save`` dict with ``labels`` (N,) int64,
    ``image`` (N,) int64 (dataset row of each feature), ``feature_dim`` and ``manifest_ids``.
    Features go to disk image by image, so writing holds one image's features at a time
    whatever the size of the cache; :func:`load_cache` maps the file back lazily.

    Args:
        folder: the cache folder (created). feature_dim: d_x.
    """

    def __init__(self, folder, feature_dim: int):
        from pathlib import Path

        self.folder, self.dim = Path(folder), int(feature_dim)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._file = open(self.folder / FEATURES_FILE, "wb")
        self.labels: list[torch.Tensor] = []
        self.image: list[torch.Tensor] = []

    def append(self, features: torch.Tensor, labels: torch.Tensor, image) -> None:
        """Add (n, d_x) features (stored as float16) with their (n,) class ids; ``image`` is the
        dataset row of all of them (int) or of each (an (n,) tensor)."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"CacheWriter({self.folder}): features of shape {tuple(features.shape)}, expected (n, {self.dim})")
        self._file.write(features.detach().to(torch.float16).contiguous().numpy().tobytes())
        self.labels.append(labels.long().reshape(-1))
        self.image.append(torch.as_tensor(image, dtype=torch.long).expand(len(labels)).clone())

    def close(self, manifest_ids) -> None:
        """Finish the features file and write the index."""
        self._file.close()
        cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0, dtype=torch.long)  # noqa: E731
        save_index(self.folder, cat(self.labels), cat(self.image), self.dim, manifest_ids)


def save_index(folder, labels: torch.Tensor, image: torch.Tensor, feature_dim: int, manifest_ids) -> None:
    """Write a cache folder's ``index.pt`` (:class:`CacheWriter`)."""
    torch.save({"labels": labels, "image": image, "feature_dim": int(feature_dim), "manifest_ids": list(manifest_ids)},
               folder / INDEX_FILE)


def write_cache(folder, cache: dict) -> None:
    """Write a cache dict (``features`` (N, d_x), ``labels``, ``image``, ``manifest_ids``) as a
    cache folder (:class:`CacheWriter`); for small caches built in memory (tests, tools)."""
    w = CacheWriter(folder, cache["features"].shape[1])
    w.append(cache["features"], cache["labels"], cache["image"])
    w.close(cache.get("manifest_ids") or [])


def image_generator(seed: int, row: int) -> torch.Generator:
    """The pixel-sampling generator of one image in a distributed extraction: seeded by
    (``seed``, dataset row), so that the cache does not depend on which process took the image."""
    return torch.Generator().manual_seed(int(seed) * 2**32 + int(row))


@torch.no_grad()
def extract(model, dataset, rows, seen, pixels_per_class: int, pool_rows, pool_pixels: int,
            rng: torch.Generator, device: torch.device, labelled_dir, pool_dir, manifest_ids,
            channels_last: bool = False, images=None, image_seed: int | None = None) -> dict:
    """Run the backbone over images, sample pixel features and write the two caches.

    Args:
        model: DeepLabV3Plus with ``features``.
        dataset: evaluation-mode SegDataset whose targets are raw class ids (255 = void).
        rows: dataset indices of the labelled images; seen: seen class ids to sample there.
        pool_rows: dataset indices of the unlabelled pool (may overlap ``rows`` under the
            ``ignore`` protocol).
        pixels_per_class / pool_pixels: sampling budgets.
        rng: draws the sampled locations, image after image (a single process).
        labelled_dir / pool_dir: cache folders to write (:class:`CacheWriter`).
        manifest_ids: the manifest id of every dataset row (stored in the index).
        images: the dataset indices to process, in order (default: every labelled and pool
            image, ascending); a process of a distributed run passes its block.
        image_seed: when set, each image's locations are drawn from
            :func:`image_generator` (``image_seed``, row) instead of ``rng``, so that any split
            of the images over processes gives the same cache.

    Returns:
        {dataset index: (h, w) uint8 label map at feature resolution} of the processed images
        (module docstring). Peak memory is one image's features plus these maps and the
        (N,) label and row vectors.
    """
    model.to(device).eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    rows, pool_rows = set(rows), set(pool_rows)
    todo = sorted(rows | pool_rows) if images is None else list(images)
    dim = model.feature_dim
    lab, pool = CacheWriter(labelled_dir, dim), CacheWriter(pool_dir, dim)
    maps = {}
    for i in tqdm(todo, desc="extract features"):
        g = rng if image_seed is None else image_generator(image_seed, i)
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
            idx = sample_per_class(t, seen, pixels_per_class, g)
            lab.append(f[idx], t[idx], i)
        if i in pool_rows:
            idx = torch.randperm(h * w, generator=g)[:pool_pixels]
            pool.append(f[idx], t[idx], i)
    lab.close(manifest_ids)
    pool.close(manifest_ids)
    return maps


def extract_distributed(model, dataset, rows, seen, pixels_per_class: int, pool_rows, pool_pixels: int,
                        device: torch.device, labelled_dir, pool_dir, manifest_ids, channels_last: bool, dist,
                        seed: int, parts_dir) -> dict | None:
    """:func:`extract` shared by the processes of a distributed run (:mod:`zs3core.distributed`).

    Each process extracts a contiguous block of the images into ``parts_dir/rank<r>/`` with
    pixel locations drawn per image from ``seed`` (:func:`image_generator`); after a barrier,
    rank 0 concatenates the blocks in rank order (so rows stay in image order) into
    ``labelled_dir`` and ``pool_dir`` and removes ``parts_dir``.

    Returns:
        On rank 0 the label maps of every image (as :func:`extract`); None on the other ranks.
    """
    import shutil
    from pathlib import Path

    from zs3core.distributed import barrier, block

    parts = [Path(parts_dir) / f"rank{r}" for r in range(dist.world_size)]
    mine = parts[dist.rank]
    shutil.rmtree(mine, ignore_errors=True)
    images = block(sorted(set(rows) | set(pool_rows)), dist)
    maps = extract(model, dataset, rows, seen, pixels_per_class, pool_rows, pool_pixels, None, device,
                   mine / "labelled", mine / "pool", manifest_ids, channels_last, images=images, image_seed=seed)
    torch.save(maps, mine / "maps.pt")
    barrier(dist)
    if not dist.is_main:
        return None
    concat_caches([p / "labelled" for p in parts], labelled_dir)
    concat_caches([p / "pool" for p in parts], pool_dir)
    maps = {k: v for p in parts for k, v in torch.load(p / "maps.pt", weights_only=False).items()}
    shutil.rmtree(parts_dir, ignore_errors=True)
    return maps


def concat_caches(parts, folder) -> None:
    """Concatenate cache folders (the blocks of a distributed extraction, in rank order) into
    ``folder``, streaming the features file by file (bounded memory).

    Raises:
        Zs3Error: the parts disagree on the feature size.
    """
    import shutil
    from pathlib import Path

    from zs3core.io import Zs3Error

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    idx = [torch.load(Path(p) / INDEX_FILE, weights_only=False) for p in parts]
    if len({i["feature_dim"] for i in idx}) > 1:
        raise Zs3Error(f"cache parts {list(map(str, parts))} have different feature sizes")
    with open(folder / FEATURES_FILE, "wb") as out:
        for p in parts:
            with open(Path(p) / FEATURES_FILE, "rb") as f:
                shutil.copyfileobj(f, out, 16 * 2**20)
    save_index(folder, torch.cat([i["labels"] for i in idx]), torch.cat([i["image"] for i in idx]),
               idx[0]["feature_dim"], idx[0]["manifest_ids"])


def load_cache(path) -> dict:
    """Open a feature cache folder written by :class:`CacheWriter` and check it.

    The features are memory-mapped (``torch.from_file``, private mapping): nothing is read
    until a stage indexes them, and a stage that uses a subset touches only those rows.

    Returns:
        {``features``: (N, d_x) float16 tensor backed by the file, ``labels`` (N,) int64,
        ``image`` (N,) int64, ``manifest_ids``}.

    Raises:
        Zs3Error: the folder or a file is missing, the features file does not hold N x d_x
            float16 values (truncated), or a feature is NaN or infinite (naming the folder and
            the manifest id of the first image concerned).
    """
    import os
    from pathlib import Path

    from zs3core.io import Zs3Error

    path = Path(path)
    if not (path / INDEX_FILE).exists() or not (path / FEATURES_FILE).exists():
        raise Zs3Error(f"{path}: missing (or incomplete: needs {INDEX_FILE} and {FEATURES_FILE}); run the "
                       "extract_features stage first (dvc repro extract_features)")
    index = torch.load(path / INDEX_FILE, weights_only=False)
    n, d = len(index["labels"]), int(index["feature_dim"])
    size = os.path.getsize(path / FEATURES_FILE)
    if size != n * d * 2:
        raise Zs3Error(f"{path / FEATURES_FILE}: {size} bytes, expected {n} x {d} float16 = {n * d * 2}; the cache is "
                       "truncated or from another run: rerun extract_features (dvc repro -f extract_features)")
    feats = (torch.from_file(str(path / FEATURES_FILE), shared=False, size=n * d, dtype=torch.float16).view(n, d)
             if n else torch.zeros(0, d, dtype=torch.float16))
    cache = {"features": feats, "labels": index["labels"], "image": index["image"],
             "manifest_ids": index["manifest_ids"]}
    check_cache(cache, path)
    return cache


def check_cache(cache: dict, path, chunk: int = 1 << 16) -> None:
    """Raise Zs3Error naming ``path`` and the manifest id of the first image whose cached
    features hold NaN or infinite values (checked ``chunk`` rows at a time: bounded memory)."""
    from zs3core.io import Zs3Error

    feats = cache["features"]
    bad = torch.cat([~torch.isfinite(feats[i:i + chunk].float()).all(1) for i in range(0, len(feats), chunk)]
                    or [torch.zeros(0, dtype=torch.bool)])
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
