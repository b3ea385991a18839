"""DeViSE baseline: projection of pixel features to the embedding space (ZS3Net Tables 1-2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from zs3core.devise import DeViSEHead, load_devise, save_devise, train_devise


def test_devise_scores_are_cosines_in_both_layouts():
    torch.manual_seed(0)
    emb = torch.randn(4, 3)
    head = DeViSEHead(5, emb)
    x = torch.randn(6, 5)
    expected = torch.stack([torch.stack([F.cosine_similarity(head.proj(x[i:i + 1]), emb[c:c + 1])[0] for c in range(4)])
                            for i in range(6)])
    torch.testing.assert_close(head(x), expected)
    fmap = x.T.reshape(1, 5, 2, 3)  # pixel (h, w) = x[h * 3 + w]
    torch.testing.assert_close(head(fmap)[0].reshape(4, 6).T, expected)


def test_devise_transfers_to_an_unseen_class(tmp_path):
    # features are a fixed linear image of the class embedding plus noise; DeViSE learns the
    # inverse map from 4 seen classes and must recognise the 5th (unseen) class in vanilla mode
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(5, 4, generator=g), dim=1)
    lift = torch.randn(4, 12, generator=g)

    def sample(c, n):
        return emb[c] @ lift + 0.05 * torch.randn(n, 12, generator=g)

    seen = [0, 1, 2, 3]
    x = torch.cat([sample(c, 200) for c in seen])
    y = torch.cat([torch.full((200,), c) for c in seen])
    head, losses = train_devise(x, y, emb, epochs=60, batch_size=64, lr=1e-2, rng=g, device=torch.device("cpu"))
    assert losses[-1] < 0.5 * losses[0]
    test = sample(4, 100)
    sims = head(test)
    assert (sims[:, 4] > 0.8).float().mean() > 0.9  # the projection lands near the unseen embedding
    path = tmp_path / "d.pt"
    save_devise(head, path, losses)
    torch.testing.assert_close(load_devise(path)(test), sims)
