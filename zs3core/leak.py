"""The ImageNet leak: which ImageNet-1k classes are close to each dataset class.

A body pretrained on ImageNet-1k has seen labelled images of ``mountain bike``, ``picket
fence`` or ``passenger car``; an "unseen" class close to one of those is not unseen by the
features (ZS3Net §2.2 retrains its ImageNet backbone without the Pascal classes for this
reason). This module names the close ImageNet-1k classes of every dataset class by two
stated rules, applied to the ImageNet class's *head word* (the last word of its name, e.g.
``frog`` in ``tree frog``; the first part of a hyphenated name, e.g. ``bicycle`` in
``bicycle-built-for-two``):

- **name**: the head word equals a word of the class name or of its extra words
  (``embedding.leak_words``), or both are at least 5 letters long and share a prefix covering
  at least 80 % of the shorter one (``bicycl-e`` / ``bicycl-ist``; ``pedest-al`` /
  ``pedest-rian`` is 75 % and does not count);
- **vector**: the cosine of the class vector (:mod:`zs3core.embeddings`, aliases applied) and
  the head word's vector is at least ``embedding.leak_cosine`` (needs a full vocabulary;
  sources that hold class vectors only, such as the official ZS3Net files, skip this rule).

The ImageNet-1k names are torchvision's (``ResNet18_Weights.IMAGENET1K_V1.meta["categories"]``,
1000 names, one per class). Output of :func:`leak_report`: ``metrics/leak.json`` (stage embed).
"""
from __future__ import annotations

import os
import re

import numpy as np

PREFIX_SHARE = 0.8
"""Share of the shorter word that a common prefix must cover for the name rule."""
MIN_PREFIX_WORD = 5
"""Words shorter than this match by equality only (``pole`` must not match ``polecat``)."""


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order (torchvision's, offline)."""
    import torchvision

    return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def head_word(name: str) -> str:
    """Head word of an ImageNet class name, lower case: ``tree frog`` -> ``frog``,
    ``bicycle-built-for-two`` -> ``bicycle``, ``potter's wheel`` -> ``wheel``."""
    name = name.lower().strip()
    if " " not in name and "-" in name:
        return name.split("-")[0]
    return re.split(r"[ \-]+", name)[-1]


def words_match(a: str, b: str) -> bool:
    """The name rule for two lower-case words (module docstring)."""
    if a == b:
        return True
    if min(len(a), len(b)) < MIN_PREFIX_WORD:
        return False
    return len(os.path.commonprefix([a, b])) >= PREFIX_SHARE * min(len(a), len(b))


def leak_report(classes: list[str], class_vectors: np.ndarray, kv, cosine: float,
                extra_words: dict | None = None, imagenet: list[str] | None = None) -> dict:
    """Close ImageNet-1k classes of every dataset class.

    Args:
        classes: dataset class names (C).
        class_vectors: (C, D) float class vectors, as the embed stage computes them.
        kv: gensim KeyedVectors of the same space (``kv[word]`` -> (D,)); words it lacks
            skip the vector rule.
        cosine: threshold of the vector rule (``embedding.leak_cosine``).
        extra_words: {class: [word, ...]} more words for the name rule (``embedding.leak_words``).
        imagenet: ImageNet class names (default :func:`imagenet_classes`).

    Returns:
        ``{"rule": {...}, "classes": {class: [{"imagenet": name, "index": i, "by": [...],
        "cosine": float | None}, ...]}}``, each list sorted by cosine (name matches first).

    Raises:
        KeyError: ``extra_words`` names a class that is not in ``classes``.
    """
    imagenet = imagenet_classes() if imagenet is None else imagenet
    extra_words = dict(extra_words or {})
    unknown = sorted(set(extra_words) - set(classes))
    if unknown:
        raise KeyError(f"embedding.leak_words: {unknown} are not classes of the dataset ({classes})")
    heads = [head_word(n) for n in imagenet]
    has = [h in kv for h in heads]
    hv = np.zeros((len(heads), class_vectors.shape[1]), dtype=np.float64)
    for i, h in enumerate(heads):
        if has[i]:
            v = np.asarray(kv[h], dtype=np.float64)
            hv[i] = v / max(np.linalg.norm(v), 1e-12)
    out = {}
    for c, vec in zip(classes, class_vectors):
        words = [w.lower() for w in re.split(r"[ \-_]+", c) if w] + [w.lower() for w in extra_words.get(c, [])]
        v = np.asarray(vec, dtype=np.float64)
        sims = hv @ (v / max(np.linalg.norm(v), 1e-12))
        rows = []
        for i, name in enumerate(imagenet):
            by = []
            if any(words_match(w, heads[i]) for w in words):
                by.append("name")
            if has[i] and sims[i] >= cosine:
                by.append("vector")
            if by:
                rows.append({"imagenet": name, "index": i, "by": by,
                             "cosine": round(float(sims[i]), 3) if has[i] else None})
        rows.sort(key=lambda r: ("name" not in r["by"], -(r["cosine"] or 0.0)))
        out[c] = rows
    rule = {"head_word": "last word of the ImageNet name (first part of a hyphenated one)",
            "name": f"equal words, or a common prefix over >= {PREFIX_SHARE:.0%} of the shorter word "
                    f"(both >= {MIN_PREFIX_WORD} letters)",
            "vector": f"cosine(class vector, head-word vector) >= {cosine}",
            "extra_words": extra_words,
            "imagenet_names_without_vector": int(len(heads) - sum(has))}
    return {"rule": rule, "classes": out}


def leak_free(report: dict) -> list[str]:
    """Classes of a :func:`leak_report` with no close ImageNet-1k class."""
    return [c for c, rows in report["classes"].items() if not rows]
