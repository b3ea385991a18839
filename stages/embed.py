"""Stage 3, embed: class-name vectors a[c] with gensim KeyedVectors, and their similarity heatmap."""
from __future__ import annotations

import torch

from stages.common import EMBED, params, run
from zs3core.embeddings import class_vectors, cosine_similarity, load_keyed_vectors
from zs3core.io import StageOutputs
from zs3core.params import get
from zs3core.viz import save_heatmap


def main() -> None:
    p = params()
    classes = list(get(p, "dataset.classes", types=list))
    source = str(get(p, "embedding.source"))
    kv = load_keyed_vectors(source, local_file=get(p, "embedding.local_file", None))
    emb, how = class_vectors(classes, kv, get(p, "embedding.aliases", {}) or {}, bool(get(p, "embedding.normalize", True)))
    for c, h in zip(classes, how):
        print(f"  {c:>14s}: {h}")
    with StageOutputs() as out:
        out.write(EMBED, lambda f: torch.save({"embeddings": torch.from_numpy(emb), "classes": classes,
                                              "resolved": how, "source": source}, f))
        save_heatmap(out.path("plots/embed/similarity.png"), cosine_similarity(emb), classes,
                     f"cosine similarity of class embeddings ({source.split('/')[-1]})", cmap="magma")
    print(f"{len(classes)} class vectors of size {emb.shape[1]} from {source}")


if __name__ == "__main__":
    run(main)
