"""PADing's primitive generator and feature disentangler (He et al., CVPR 2023, §3.2-3.3).

Official code: github.com/heshuting555/PADing, ``PADing/PADing_model.py`` (module wiring,
``forward_train_generator``), ``PADing/modeling/transformer_decoder/transformer.py``
(``TransformerDecoderLayer`` with the ``noise`` flag), ``PADing/utils/network_utils.py``
(``Encoder``, ``Decoder``, ``RelationNet``), ``configs/semantic-segmentation/PADing.yaml``.

Here the generated "features" are pixel features (d_x = 256, DeepLabv3+ decoder) instead of
PADing's Mask2Former mask embeddings; d_model of the transformer is d_x, as in the official
code (``embedding_size = 256``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OUTPUT_HEADS = ("layernorm", "linear_relu")


class _PrimitiveDecoderLayer(nn.Module):
    """One post-norm DETR decoder layer with PADing's noise injection (official
    ``TransformerDecoderLayer.forward_post`` with ``noise=True``, ``normalize_before=False``):

        x = norm1(x + drop(self_attn(x)))
        x = norm2(x + drop(cross_attn(x, primitives)) + z),   z ~ N(0, I)
        x = norm3(x + drop(W2 drop(relu(W1 x))))

    Self-attention: the official generator is called as ``generator(q.unsqueeze(0), memory)``
    with nn.MultiheadAttention's (L, N, E) layout, i.e. every query is its own batch element
    with a sequence of length 1. Its self-attention therefore attends to nothing but itself
    (softmax over one key = 1, then attention dropout) and reduces to a per-sample map
    out_proj(v_proj(x)); samples are never mixed. We keep that exactly: rows go through
    self-attention as (n, 1, d) batches. Cross-attention is computed with the n rows as one
    sequence against the shared primitives (1, n, d) x (1, P, d): each query row has its own
    softmax over the P keys, so this equals the official per-sample computation without
    copying the memory n times.
    """

    def __init__(self, d: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, d))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop1, self.drop2, self.drop3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def _self_attention(self, x: torch.Tensor) -> torch.Tensor:
        """``self_attn`` over length-1 sequences, computed directly: out_proj(dropout(1) * v_proj(x)).

        With one key the softmax weight is 1, so nn.MultiheadAttention reduces to this; its
        attention dropout then drops a head's whole value with probability p (scaling the
        rest by 1 / (1 - p)). Same parameters and result as calling ``self_attn`` on (n, 1, d)
        batches (tests check it), without n separate tiny attention products.
        """
        attn = self.self_attn
        d = x.shape[1]
        v = F.linear(x, attn.in_proj_weight[2 * d:], attn.in_proj_bias[2 * d:])
        if self.training and attn.dropout > 0:
            h = attn.num_heads
            keep = F.dropout(torch.ones(x.shape[0], h, 1, device=x.device, dtype=x.dtype), attn.dropout, True)
            v = (v.reshape(-1, h, d // h) * keep).reshape(-1, d)
        return attn.out_proj(v)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """x: (n, d) float queries; memory: (P, d) primitives. Returns (n, d)."""
        x = self.norm1(x + self.drop1(self._self_attention(x)))
        m = memory.unsqueeze(0)
        x = x + self.drop2(self.cross_attn(x.unsqueeze(0), m, m, need_weights=False)[0].squeeze(0))
        x = x + torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = self.norm2(x)
        return self.norm3(x + self.drop3(self.ff(x)))


class PrimitiveGenerator(nn.Module):
    """Primitive cross-modal generator (PADing §3.2, eq. 2-3; official ``PADing_model.py``).

    A class embedding a (d_a) is projected by a linear layer (official ``fc_projection``,
    ω1 in eq. 2) to a d_x query; ``num_primitives`` learned primitives (official
    ``dict_feature = nn.Embedding(400, 256)``, initialised N(0, 1)) are the memory of a
    ``layers``-deep post-norm transformer decoder (8 heads, feed-forward 1024, ReLU,
    dropout 0.3 in the semantic-segmentation config: ``TRANS_NUM_LAYER: 3``,
    ``TRANS_DROP_RATE: 0.3``, ``TRANS_MEMORY_NUM_QUERY: 400``) followed by a final LayerNorm
    (official ``decoder_norm``). Gaussian noise N(0, 1) is added after the cross-attention
    of every layer (official ``noise=True``); this is the generator's only source of
    randomness besides dropout (there is no noise input as in GMMN). Noise is also drawn in
    eval mode, as in the official code, so sampling is stochastic.

    Differences from the official code: layers are initialised independently (official
    ``_get_clones`` deep-copies one layer, so its layers start identical); no AMP.

    Output head (``output_head``, params ``generator.primitive.output_head``):

    * ``layernorm`` (official ``decoder_norm``): every output is a zero-mean, unit-variance
      vector across its d_x entries, then scaled and shifted per entry. That suits
      Mask2Former's query embeddings. It puts every synthetic feature on the same shell, while
      our targets are post-ReLU pixel features (non-negative, about half exact zeros, norms
      that vary with the pixel), so the seen MMD stays high.
    * ``linear_relu``: the final LayerNorm is replaced by Linear(d_x, d_x) followed by ReLU,
      the shape of the DeepLabv3+ decoder's last layer, so outputs are non-negative with
      free norms, like the real pixel features. Every decoder layer still ends in its own
      LayerNorm, as in the official post-norm layers.

    Args:
        embed_dim: d_a. feature_dim: d_x (= d_model; must be divisible by ``heads``).
        num_primitives: P. layers, heads, ff_dim, dropout: decoder settings.
        output_head: ``layernorm`` or ``linear_relu`` (above).

    Raises:
        ValueError: feature_dim not divisible by heads, a non-positive size, or an unknown
        output head.

    ``forward(emb, generator=None)``: emb (n, d_a) float, one row per sample to generate;
    returns (n, d_x) float (same dtype). ``generator`` (a torch.Generator on emb's device)
    makes the noise reproducible; dropout (train mode) still uses the global RNG, so a
    seeded generator reproduces outputs exactly in eval mode. Raises ValueError when emb is
    not (n, d_a).
    """

    def __init__(self, embed_dim: int, feature_dim: int, num_primitives: int = 400, layers: int = 3,
                 heads: int = 8, ff_dim: int = 1024, dropout: float = 0.3, output_head: str = "layernorm"):
        super().__init__()
        if output_head not in OUTPUT_HEADS:
            raise ValueError(f"generator.primitive.output_head: unknown value '{output_head}'; use one of {list(OUTPUT_HEADS)}")
        if min(embed_dim, feature_dim, num_primitives, layers, heads, ff_dim) <= 0:
            raise ValueError("PrimitiveGenerator: all sizes must be positive")
        if feature_dim % heads:
            raise ValueError(f"PrimitiveGenerator: feature_dim {feature_dim} is not divisible by heads {heads}")
        self.embed_dim = embed_dim
        self.query = nn.Linear(embed_dim, feature_dim)
        self.primitives = nn.Parameter(torch.randn(num_primitives, feature_dim))
        self.layers = nn.ModuleList(_PrimitiveDecoderLayer(feature_dim, heads, ff_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(feature_dim) if output_head == "layernorm" else \
            nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.ReLU())

    @classmethod
    def from_params(cls, p: dict, embed_dim: int, feature_dim: int) -> PrimitiveGenerator:
        """Build from the ``generator.primitive`` params (num_primitives, layers, heads, ff_dim, dropout, output_head)."""
        return cls(embed_dim, feature_dim, int(p["num_primitives"]), int(p["layers"]), int(p["heads"]),
                   int(p["ff_dim"]), float(p["dropout"]), str(p["output_head"]))

    def forward(self, emb: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if emb.ndim != 2 or emb.shape[1] != self.embed_dim:
            raise ValueError(f"PrimitiveGenerator: expected (n, {self.embed_dim}) embeddings, got {tuple(emb.shape)}")
        x = self.query(emb)
        for layer in self.layers:
            x = layer(x, self.primitives, generator)
        return self.norm(x)


def _encoder(d_in: int, d_out: int, slope: float, dropout: float) -> nn.Sequential:
    """Official ``network_utils.Encoder``: Linear, Linear, LeakyReLU(0.2), Dropout (no activation between the Linears)."""
    return nn.Sequential(nn.Linear(d_in, d_out), nn.Linear(d_out, d_out), nn.LeakyReLU(slope), nn.Dropout(dropout))


class FeatureDisentangler(nn.Module):
    """Semantic-related / semantic-unrelated disentanglement (PADing §3.3; official
    ``projection_related``, ``projection_unrelated`` = ``Encoder``, ``decoder`` = ``Decoder``,
    ``relation`` = ``RelationNet`` in ``network_utils.py``; dropout ``DROP_OUT_ED`` = 0.2).

    - related, unrelated: each Linear(d_x, d_p), Linear(d_p, d_p), LeakyReLU(0.2), Dropout.
    - decoder: Linear(2 d_p, d_x), LeakyReLU(0.2), Dropout, Linear(d_x, d_x), LeakyReLU(0.2),
      Dropout (the official decoder also ends with LeakyReLU + dropout).
    - relation net: score(r, a) = sigmoid(fc2(relu(fc1([r; a])))) for every (feature, class)
      pair; used for the official relation cross-entropy (see :mod:`zs3core.pading`).
      Deviation: the official net scores against the generator's projected embeddings
      (``fc_projection(vec)``, 256-d); here it takes the raw class embeddings (d_a), so the
      disentangler does not depend on the generator's internals.

    Args:
        feature_dim: d_x. embed_dim: d_a (for the relation net). part_dim: d_p of each part
        (default d_x, as the official code where everything is 256). leaky_slope, dropout.

    ``forward(x)``: x (n, d_x) float -> (related (n, d_p), unrelated (n, d_p),
    reconstruction (n, d_x)). Raises ValueError when x is not (n, d_x).
    It is a training-time aid: only the generator is needed to sample features afterwards.
    """

    def __init__(self, feature_dim: int, embed_dim: int, part_dim: int | None = None,
                 leaky_slope: float = 0.2, dropout: float = 0.2):
        super().__init__()
        p = part_dim or feature_dim
        self.feature_dim = feature_dim
        self.related = _encoder(feature_dim, p, leaky_slope, dropout)
        self.unrelated = _encoder(feature_dim, p, leaky_slope, dropout)
        self.decoder = nn.Sequential(
            nn.Linear(2 * p, feature_dim), nn.LeakyReLU(leaky_slope), nn.Dropout(dropout),
            nn.Linear(feature_dim, feature_dim), nn.LeakyReLU(leaky_slope), nn.Dropout(dropout),
        )
        self.relation = nn.Sequential(nn.Linear(p + embed_dim, p), nn.ReLU(), nn.Linear(p, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(f"FeatureDisentangler: expected (n, {self.feature_dim}) features, got {tuple(x.shape)}")
        r, u = self.related(x), self.unrelated(x)
        return r, u, self.decoder(torch.cat([r, u], dim=1))

    def relation_scores(self, related: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """related (n, d_p), emb (K, d_a) candidate class embeddings -> (n, K) scores in (0, 1)."""
        n, k = related.shape[0], emb.shape[0]
        pairs = torch.cat([related[:, None, :].expand(n, k, -1), emb[None, :, :].expand(n, k, -1)], dim=2)
        return self.relation(pairs).squeeze(2)
