"""Figures: class palette, qualitative panels, similarity heatmaps, confusion matrices, curves.

All figures are matplotlib PNGs written to a given path (the Agg backend, no display).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch



def voc_palette(n: int) -> np.ndarray:
    """The Pascal VOC colour map (bit interleaving of the class id): (n, 3) uint8."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def palette(num_classes: int, dataset: str = "") -> np.ndarray:
    """A fixed (C, 3) uint8 palette: VOC's own for voc2012, tab20 colours otherwise."""
    if dataset == "voc2012":
        return voc_palette(num_classes)
    cmap = plt.get_cmap("tab20")
    return (np.array([cmap(i % 20)[:3] for i in range(num_classes)]) * 255).astype(np.uint8)


def colorize(label: np.ndarray, pal: np.ndarray, ignore_value: int = 255) -> np.ndarray:
    """(H, W) int labels -> (H, W, 3) uint8 colours; ignored pixels are cream (224, 224, 192), as in VOC."""
    out = np.empty(label.shape + (3,), dtype=np.uint8)
    out[:] = (224, 224, 192)
    valid = (label != ignore_value) & (label >= 0) & (label < len(pal))
    out[valid] = pal[label[valid]]
    return out


def save_panel(path: Path, image: np.ndarray, columns: dict[str, np.ndarray], classes: list[str],
               unseen: list[int], pal: np.ndarray, title: str = "") -> None:
    """One row: the image, then one colourised label map per entry of ``columns``
    (e.g. ground truth, seen-only, ZS3Net, ZS5Net), with a legend of the classes shown
    (unseen ones marked with *)."""
    n = 1 + len(columns)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2 * image.shape[0] / image.shape[1] + 1.2))
    axes[0].imshow(image)
    axes[0].set_title("image")
    present = set()
    for ax, (name, lab) in zip(axes[1:], columns.items()):
        ax.imshow(colorize(lab, pal))
        ax.set_title(name)
        present |= set(np.unique(lab[(lab >= 0) & (lab < len(classes))]).tolist())
    for ax in axes:
        ax.axis("off")
    handles = [Patch(color=pal[c] / 255, label=("*" if c in unseen else "") + classes[c]) for c in sorted(present)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_heatmap(path: Path, matrix: np.ndarray, labels: list[str], title: str, fmt: str = "{:.2f}",
                 cmap: str = "viridis", xlabel: str = "", ylabel: str = "", marked: list[int] | None = None) -> None:
    """Annotated square heatmap (class-by-class similarity, confusion matrix)."""
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n, 0.8 + 0.45 * n))
    im = ax.imshow(matrix, cmap=cmap)
    names = [("*" if marked and i in marked else "") + c for i, c in enumerate(labels)]
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    if n <= 25:
        lo, hi = float(np.nanmin(matrix)), float(np.nanmax(matrix))
        for i in range(n):
            for j in range(n):
                bright = (matrix[i, j] - lo) / (hi - lo + 1e-12) > 0.6
                ax.text(j, i, fmt.format(matrix[i, j]), ha="center", va="center", fontsize=6,
                        color="black" if bright else "white")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_curve(path: Path, series: dict[str, list[float]], xlabel: str, ylabel: str, title: str, logy: bool = False) -> None:
    """Line plot of one or more series against their index (step, epoch)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, ys in series.items():
        xs = [i for i, y in enumerate(ys, 1) if y is not None]
        ax.plot(xs, [y for y in ys if y is not None], label=name, marker="o" if len(xs) < 40 else None)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def tsne_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE (scikit-learn, PCA init, perplexity 30) of (n, d) float features: (n, 2) float32."""
    from sklearn.manifold import TSNE

    x = np.asarray(x, dtype=np.float32)
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x).astype(np.float32)


def save_tsne(path: Path, xy: np.ndarray, labels: np.ndarray, synthetic: np.ndarray, classes: list[str],
              unseen, pal: np.ndarray, title: str) -> None:
    """Scatter of a 2-D embedding (PADing Fig. 5 style): colour = class, dot = real, cross = synthetic.

    Args:
        xy: (n, 2) float; labels: (n,) int class ids; synthetic: (n,) bool.
        unseen: unseen class ids (marked * in the legend).
    """
    fig, ax = plt.subplots(figsize=(8, 7))
    for c in np.unique(labels):
        col = pal[int(c)] / 255.0
        for syn, marker, size in ((False, "o", 6), (True, "x", 10)):
            m = (labels == c) & (synthetic == syn)
            if m.any():
                ax.scatter(xy[m, 0], xy[m, 1], s=size, c=[col], marker=marker, alpha=0.6, linewidths=0.8)
    handles = [Patch(color=pal[int(c)] / 255.0, label=classes[int(c)] + (" *" if int(c) in set(unseen) else ""))
               for c in np.unique(labels)]
    handles += [plt.Line2D([], [], ls="", marker="o", color="gray", label="real"),
                plt.Line2D([], [], ls="", marker="x", color="gray", label="synthetic")]
    ax.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_class_bars(path: Path, classes: list[str], unseen, series: dict[str, np.ndarray], title: str) -> None:
    """Grouped bars of per-class IoU (%), one bar per model; unseen classes on a shaded background.

    Args:
        series: {model name: (C,) float IoU in %, NaN = class absent (drawn as no bar)}.
    """
    unseen = {int(u) for u in unseen}
    n, m = len(classes), max(1, len(series))
    width = 0.8 / m
    fig, ax = plt.subplots(figsize=(min(18.0, 5 + 0.11 * n * m), 4.8))
    for c in unseen:
        ax.axvspan(c - 0.45, c + 0.45, color="#f3d9c6", zorder=0)
    cmap = plt.get_cmap("tab10")
    for j, (name, vals) in enumerate(series.items()):
        v = np.nan_to_num(np.asarray(vals, dtype=float), nan=0.0)
        ax.bar(np.arange(n) - 0.4 + width * (j + 0.5), v, width, label=name, color=cmap(j % 10), zorder=2)
    ax.set_xticks(range(n))
    ax.set_xticklabels([c + (" *" if i in unseen else "") for i, c in enumerate(classes)], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title + "; shaded = unseen", fontsize=9)
    ax.legend(fontsize=7, ncol=min(4, m), loc="upper center", bbox_to_anchor=(0.5, -0.28), frameon=False)
    ax.grid(axis="y", alpha=0.3, zorder=1)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_calibration_curves(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], chosen: dict[str, float],
                            title: str) -> None:
    """One panel per model: cross-validated hIoU (%) against γ, the chosen γ marked.

    Args:
        curves: {model: ((G,) γ grid, (F, G) hIoU of each fold)}. chosen: {model: γ}.
    """
    n = max(1, len(curves))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, (model, (gammas, folds)) in zip(axes[0], curves.items()):
        for f, ys in enumerate(np.atleast_2d(folds)):
            ax.plot(gammas, ys, color="0.7", lw=0.8, label="folds" if f == 0 else None)
        ax.plot(gammas, np.atleast_2d(folds).mean(0), color="C0", lw=2, label="mean")
        if model in chosen:
            ax.axvline(chosen[model], color="C3", ls="--", lw=1, label=f"chosen γ = {chosen[model]:.3g}")
        ax.axvline(0.0, color="k", lw=0.5)
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("γ (subtracted from seen scores)")
        ax.set_ylabel("hIoU on held-out seen classes (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if not curves:
        axes[0][0].text(0.5, 0.5, "no unseen class: nothing to calibrate", ha="center", va="center")
        axes[0][0].axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def backbone_figures(out, curves: dict, n_val: int, split: str = "val") -> None:
    """train_backbone's figures, staged in ``out``: plots/backbone/curves.png (training loss per
    epoch) and val_seen_miou.png (seen-class mIoU on ``n_val`` images of ``split``, ``dev`` or
    ``val``, where it was measured)."""
    save_curve(out.path("plots/backbone/curves.png"), {"train loss": curves["loss"]}, "epoch", "cross-entropy",
               "backbone training loss")
    save_curve(out.path("plots/backbone/val_seen_miou.png"), {f"{split} seen mIoU": curves["val_seen_mIoU"]}, "epoch",
               "mIoU (%)", f"seen-class mIoU on {n_val} {split} images")


def generator_figures(out, curves: dict, tsne: dict, label: str, classes: list[str], unseen, dataset: str,
                      seed: int) -> None:
    """fit_generator's figures, staged in ``out`` (:class:`zs3core.io.StageOutputs`):
    plots/generator/loss.csv and loss.png (every loss curve against the step) and tsne.png
    (real vs synthetic features of seen and unseen classes)."""
    import pandas as pd

    n = max(len(v) for v in curves.values())
    pd.DataFrame({"step": range(1, n + 1), **curves}).to_csv(out.path("plots/generator/loss.csv"), index=False)
    save_curve(out.path("plots/generator/loss.png"), curves, "step", "loss", f"{label} generator losses",
               logy=all(min(v) > 0 for v in curves.values()))
    save_tsne(out.path("plots/generator/tsne.png"), tsne_2d(tsne["x"], seed), tsne["labels"], tsne["synthetic"], classes,
              unseen, palette(len(classes), dataset),
              f"t-SNE, {label}: real (o) vs synthetic (x); * = unseen (real unseen from the pool, diagnostic)")


def evaluation_figures(out, split: str, conf: dict, rows: list[dict], panels: dict, dataset, titles: dict,
                       classes: list[str], unseen, pal: np.ndarray, shown: list[str]) -> None:
    """evaluate's figures for one split, staged in ``out``: row-normalised confusion matrices of every
    model and protocol, per-class IoU bars, and one qualitative panel per row of ``panels``
    (the image, the ground truth and the predictions of the models in ``shown``)."""
    for m, title in titles.items():
        for proto in ("generalized", "calibrated"):
            if proto in conf[m]:
                cm = conf[m][proto]
                suffix = "" if proto == "generalized" else "_calibrated"
                save_heatmap(out.path(f"plots/evaluate/confusion_{split}_{m}{suffix}.png"),
                             100 * cm / np.maximum(cm.sum(1, keepdims=True), 1), classes,
                             f"{title} ({proto}) on {split}: row-normalised confusion (%)", fmt="{:.0f}",
                             xlabel="predicted", ylabel="ground truth", marked=list(unseen))
    bars = {titles[k.split("@")[0]] + (" (calibrated)" if "@" in k else ""):
            np.array([np.nan if r[k] is None else r[k] for r in rows], dtype=float)
            for k in rows[0] if k not in ("class", "group", "pixels")}
    save_class_bars(out.path(f"plots/evaluate/per_class_iou_{split}.png"), classes, unseen, bars,
                    f"per-class IoU on {split} (* = unseen)")
    for i, pan in panels.items():
        img, _ = dataset.load(i)
        cols = {"ground truth": pan["target"],
                **{titles[k.split("@")[0]] + (" (cal.)" if "@" in k else ""): pan[k] for k in shown if k in pan}}
        save_panel(out.path(f"plots/evaluate/panels/{split}_{dataset.samples[i].id}.png"), img.permute(1, 2, 0).numpy(),
                   cols, classes, list(unseen), pal, f"{split} {dataset.samples[i].id} (* = unseen)")


def overlay_legend(labels: np.ndarray, classes: list[str], unseen=(), added=()) -> list[tuple[int, str]]:
    """Legend entries of a label map: (class id, text) for every class present, most pixels first.

    The text is the class name, its share of the pixels and its group: ``(unseen)`` for the
    dataset's unseen classes, ``(new)`` for classes added at prediction time.

    Args:
        labels: (H, W) int class ids in [0, len(classes)); other values are not listed.
    """
    ids, counts = np.unique(labels[(labels >= 0) & (labels < len(classes))], return_counts=True)
    total = max(int(labels.size), 1)
    unseen, added = {int(u) for u in unseen}, {int(a) for a in added}
    out = []
    for c, n in sorted(zip(ids.tolist(), counts.tolist()), key=lambda t: (-t[1], t[0])):
        tag = " (new)" if c in added else " (unseen)" if c in unseen else ""
        out.append((int(c), f"{classes[c]}{tag} {100.0 * n / total:.1f}%"))
    return out


def overlay_image(image: np.ndarray, labels: np.ndarray, classes: list[str], pal: np.ndarray, unseen=(), added=(),
                  alpha: float = 0.5) -> np.ndarray:
    """The image blended with its class colours, with a legend of the classes present.

    Pixel (y, x) is ``(1 - alpha) * image + alpha * pal[labels]``; the legend (upper right,
    half-transparent, font scaled to the image height) lists :func:`overlay_legend`.
    Rendered by matplotlib (Agg) at exactly the image's size.

    Args:
        image: (H, W, 3) uint8 RGB. labels: (H, W) int class ids (indices of ``classes``).
        pal: (C, 3) uint8 colours, C >= len(classes). alpha: colour weight in [0, 1].

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        ValueError: image and labels differ in size, or alpha outside [0, 1].
    """
    h, w = labels.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"image {image.shape[1]}x{image.shape[0]} and labels {w}x{h} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    blend = ((1.0 - alpha) * image.astype(np.float32) + alpha * colorize(labels, pal).astype(np.float32))
    blend = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    dpi = 100
    fig = plt.figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(blend, interpolation="nearest")
    ax.set_axis_off()
    entries = overlay_legend(labels, classes, unseen, added)
    if entries:
        size_pt = max(5.0, min(h / 30.0, w / 22.0) * 72.0 / dpi)  # entry height ~ 1/30 of the image
        handles = [Patch(facecolor=pal[c] / 255.0, edgecolor="black", linewidth=0.5, label=t) for c, t in entries]
        ax.legend(handles=handles, loc="upper right", fontsize=size_pt, framealpha=0.75, borderaxespad=0.3,
                  handlelength=1.0, handletextpad=0.4, labelspacing=0.25, borderpad=0.3)
    fig.canvas.draw()
    out = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    if out.shape[:2] != (h, w):  # matplotlib rounds the canvas size; never observed, kept exact anyway
        from PIL import Image

        out = np.asarray(Image.fromarray(out).resize((w, h), Image.NEAREST))
    return out


def save_overlay(path: Path, image: np.ndarray, labels: np.ndarray, classes: list[str], pal: np.ndarray, unseen=(),
                 added=(), alpha: float = 0.5) -> None:
    """Write :func:`overlay_image` as an RGB PNG of the image's size to ``path``."""
    from PIL import Image

    Image.fromarray(overlay_image(image, labels, classes, pal, unseen, added, alpha)).save(path)
