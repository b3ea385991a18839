"""Stage embed: class-name vectors a[c] (ZS3Net §2.2, word2vec) with gensim KeyedVectors, and their
cosine-similarity heatmap. Also the ImageNet leak report (zs3core/leak.py): the ImageNet-1k classes close to each class.
Outputs: data/embed/class_embeddings.pt, plots/embed/similarity.png, metrics/leak.json."""
from __future__ import annotations

from pathlib import Path

import torch

from zs3core.stage import run
from zs3core.embeddings import class_vectors, cosine_similarity, load_keyed_vectors
from zs3core.leak import leak_report
from zs3core.viz import save_heatmap

EMBED = Path("data/embed/class_embeddings.pt")
LEAK = Path("metrics/leak.json")


def main(st) -> None:
    e, classes = st.cfg.embedding, list(st.cfg.dataset.classes)
    kv = load_keyed_vectors(e.source, local_file=e.local_file)
    emb, how = class_vectors(classes, kv, e.aliases, e.normalize)
    leak = leak_report(classes, emb, kv, e.leak_cosine, e.leak_words)
    for c, h in zip(classes, how):
        close = [r["imagenet"] for r in leak["classes"][c]]
        print(f"  {c:>14s}: {h}; close ImageNet-1k classes: {', '.join(close[:6]) or 'none'}"
              f"{' ...' if len(close) > 6 else ''}")
    with st.outputs() as out:
        out.write(EMBED, lambda f: torch.save({"embeddings": torch.from_numpy(emb), "classes": classes,
                                              "resolved": how, "source": e.source}, f))
        save_heatmap(out.path("plots/embed/similarity.png"), cosine_similarity(emb), classes,
                     f"cosine similarity of class embeddings ({e.source.split('/')[-1]})", cmap="magma")
        out.json(LEAK, leak)
    print(f"{len(classes)} class vectors of size {emb.shape[1]} from {e.source}")


if __name__ == "__main__":
    run(main)
