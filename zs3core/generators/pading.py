"""The PADing generator kind (He et al., CVPR 2023, §3.2-3.4): the primitive generator, the
feature disentangler, the structure losses and their fitting loop, for pixel features.

Official code: github.com/heshuting555/PADing, ``PADing/PADing_model.py`` (module wiring,
``forward_train_generator``), ``PADing/modeling/transformer_decoder/transformer.py``
(``TransformerDecoderLayer`` with the ``noise`` flag), ``PADing/utils/network_utils.py``
(``Encoder``, ``Decoder``, ``RelationNet``), ``configs/semantic-segmentation/PADing.yaml``.

Here the generated "features" are pixel features (d_x = 256, DeepLabv3+ decoder) instead of
PADing's Mask2Former mask embeddings; d_model of the transformer is d_x, as in the official
code (``embedding_size = 256``).

Losses and training: official github.com/heshuting555/PADing, ``PADing/PADing_model.py``
(``forward_train_generator``, ``kl_loss``, ``cal_similarity``), ``engine_ours/defaults.py``
(optimizer), ``configs/semantic-segmentation/PADing.yaml`` (weights).

Objective of one step, with the official weight names (``MODEL.MASK_FORMER.*``):

    total = MMD
          + structure_weight * ( align_weight * (alignment + kl_weight * kl)      # WEIGHT_1, hard-coded 0.5
                               + relation_weight * 0.2 * relation                 # WEIGHT_2, hard-coded 0.2
                               + recon_weight * recon )                           # WEIGHT_3

semantic-segmentation values: STRUCTURE_WEIGHT 0.001, WEIGHT_1 1.0, WEIGHT_2 1.0, WEIGHT_3 0.5
(the issue's "structure 1e-3, alignment 1.0, relation 1.0, reconstruction 0.5"). "relation"
(WEIGHT_2) is the relation-network cross-entropy, not the relation *alignment* KL, which is
under WEIGHT_1 together with the unrelated-part KL.

Where this differs from the official code (which trains on Mask2Former mask embeddings):
  * MMD: :meth:`zs3core.mmd.MMDLoss.classwise`, a sum over seen classes, as ZS3Net. With
    the default ``generator.mmd.convention: official`` each class term is the official
    ``GMMNLoss`` (sqrt(MMD^2), kernels exp(-||x-y||^2 / (2 v)), v in [2, 5, 10, 20, 40, 80]);
    the official PADing code takes one such term over the whole batch of fake-vs-real
    embeddings instead of one per class. The 1e-3 structure weight was tuned against that.
  * Rows: the official alignment / disentanglement terms see only synthetic features (fake
    seen, fake unseen); real features enter the MMD only. Here (PADing §3.3: "x_i^s of the
    seen group is from either real features or synthetic features") the rows are
    [real seen; fake seen; fake unseen] and one similarity matrix covers all pairs. The
    official code sums three blocks instead: fake-seen x fake-seen, unseen x unseen and
    fake-seen x unseen (the last one row-softmaxed over the unseen columns only), / 3.
  * Alignment target: the official target similarity uses the generator's *projected*
    embeddings (``fc_projection(vec)``, trainable, not detached); here it uses the given
    class embeddings, as eq. 6 of the paper.
  * Not ported: the auxiliary 0.001 * cross-entropy of a jointly trained classifier on fake
    seen features (``cls_loss``), AMP, the WarmupPolyLR schedule.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zs3core.checkpoint import Checkpoint
from zs3core.generators.base import FitData, GeneratorKind, class_rows, draw_real
from zs3core.io import Zs3Error
from zs3core.loop import descend, run_steps
from zs3core.mmd import MMDLoss


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

    def forward(self, x: torch.Tensor, memory: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
        """x: (n, d) float queries; memory: (P, d) primitives. Returns (n, d)."""
        x = self.norm1(x + self.drop1(self._self_attention(x)))
        m = memory.unsqueeze(0)
        x = x + self.drop2(self.cross_attn(x.unsqueeze(0), m, m, need_weights=False)[0].squeeze(0))
        x = x + torch.randn(x.shape, generator=rng, device=x.device, dtype=x.dtype)
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
      that vary with the pixel). Measured on CamVid K=2, cpu scale (RESULTS.md, "PADing's
      output head"): seen MMD² 0.109 against 0.082 for ``linear_relu``; the ZS3Net hIoU is
      the same within 0.3 (20.1 vs 19.8).
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

    ``forward(emb, rng=None)``: emb (n, d_a) float, one row per sample to generate;
    returns (n, d_x) float (same dtype). ``rng`` (a torch.Generator on emb's device)
    makes the noise reproducible; dropout (train mode) still uses the global RNG, so a
    seeded generator reproduces outputs exactly in eval mode. Raises ValueError when emb is
    not (n, d_a).
    """

    def __init__(self, embed_dim: int, feature_dim: int, num_primitives: int, layers: int, heads: int, ff_dim: int,
                 dropout: float, output_head: str):
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

    def forward(self, emb: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        if emb.ndim != 2 or emb.shape[1] != self.embed_dim:
            raise ValueError(f"PrimitiveGenerator: expected (n, {self.embed_dim}) embeddings, got {tuple(emb.shape)}")
        x = self.query(emb)
        for layer in self.layers:
            x = layer(x, self.primitives, rng)
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
      pair; used for the official relation cross-entropy (:func:`relation_ce`).
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

    def __init__(self, feature_dim: int, embed_dim: int, dropout: float, part_dim: int | None = None,
                 leaky_slope: float = 0.2):
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


RELATION_CE_SCALE = 0.2  # official: relation_loss = 0.2 * (relation_seen + relation_unseen) / 2




def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, d), (m, d) float -> (n, m) cosine similarities (official ``cal_similarity``, method 'cosine')."""
    return F.normalize(a, p=2, dim=1) @ F.normalize(b, p=2, dim=1).T


def softmax_kl(pred: torch.Tensor, target: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Row-softmax KL divergence, official ``kl_loss`` (``PADing_model.py``).

    With P_i = softmax(target_i / τ) and Q_i = softmax(pred_i / τ) over each row's m entries:

        sum_i KL(P_i || Q_i) / (n * m) = sum_{i,j} P_ij (log P_ij - log Q_ij) / numel

    (the official code divides the summed KL by ``prediction.numel()``, not by the row count).

    Args:
        pred, target: (n, m) float of the same shape. temperature: τ > 0.

    Returns:
        Scalar float tensor >= 0, differentiable in both arguments.

    Raises:
        ValueError: shapes differ, not 2-D, empty, or τ <= 0.
    """
    if pred.ndim != 2 or pred.shape != target.shape or pred.numel() == 0:
        raise ValueError(f"softmax_kl needs two equal non-empty (n, m) tensors, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if temperature <= 0:
        raise ValueError(f"softmax_kl: temperature must be > 0, got {temperature}")
    return F.kl_div(F.log_softmax(pred / temperature, dim=1), F.log_softmax(target / temperature, dim=1),
                    reduction="sum", log_target=True) / pred.numel()


def relation_alignment_loss(related: torch.Tensor, labels: torch.Tensor, emb: torch.Tensor,
                            temperature: float = 0.1) -> torch.Tensor:
    """Semantic-visual relationship alignment (PADing §3.3, eq. 6).

    S^x_ij = cos(x_i, x_j) over the n *per-sample* feature rows (not class means: the
    official code also works on individual features, one per matched mask), S^a_ij =
    cos(a_[i], a_[j]) over their class embeddings; the loss is
    :func:`softmax_kl` (S^x, S^a, τ) = sum_i KL(softmax(S^a_i/τ) || softmax(S^x_i/τ)) / n^2.
    The diagonal (self-similarity, 1 on both sides) is not masked, as in the official code.
    Every pair of rows is included, so a batch holding seen and unseen rows covers
    seen-seen, unseen-unseen and seen-unseen (intra- and inter-group) alignment. It is 0
    exactly when the two similarity matrices are equal.

    Args:
        related: (n, d) float features (the semantic-related part, or raw features).
        labels: (n,) int64 class ids, rows of ``emb``. emb: (C, d_a) float class embeddings.
        temperature: τ (official T = 0.1).

    Returns:
        Scalar float tensor >= 0.

    Raises:
        ValueError: malformed shapes, n = 0, or a label outside [0, C).
    """
    if related.ndim != 2 or labels.ndim != 1 or len(labels) != len(related) or len(related) == 0 or emb.ndim != 2:
        raise ValueError(f"relation_alignment_loss needs (n, d) features, (n,) labels and (C, d_a) embeddings, "
                         f"got {tuple(related.shape)}, {tuple(labels.shape)}, {tuple(emb.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) >= len(emb):
        raise ValueError(f"relation_alignment_loss: labels must lie in [0, {len(emb)})")
    a = emb.to(related.device, related.dtype)[labels.to(related.device)]
    return softmax_kl(cosine_similarity_matrix(related, related), cosine_similarity_matrix(a, a), temperature)


def disentangle_losses(x: torch.Tensor, unrelated: torch.Tensor, reconstruction: torch.Tensor,
                       noise: torch.Tensor, temperature: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction and unrelated-part terms of the disentanglement (official ``forward_train_generator``).

    recon = mean |reconstruction - x| (``F.l1_loss``, mean over all n * d_x entries).
    kl = :func:`softmax_kl` (unrelated, noise, τ): the official "KL to N(0, 1)" is neither a
    VAE KL on mean / log-variance nor a moment match. A fresh sample ``noise`` ~ N(0, I) of
    the unrelated part's shape is drawn, and each row's softmax(noise_i / τ) is the target
    distribution for softmax(unrelated_i / τ).

    Args:
        x: (n, d_x) float features; reconstruction: (n, d_x). unrelated, noise: (n, d_p).

    Returns:
        (recon, kl): two scalar float tensors.

    Raises:
        ValueError: shape mismatch.
    """
    if x.shape != reconstruction.shape:
        raise ValueError(f"disentangle_losses: reconstruction {tuple(reconstruction.shape)} != features {tuple(x.shape)}")
    return F.l1_loss(reconstruction, x), softmax_kl(unrelated, noise, temperature)


def relation_ce(dis: FeatureDisentangler, related: torch.Tensor, labels: torch.Tensor, emb: torch.Tensor, classes) -> torch.Tensor:
    """Official relation-network loss for one group: cross-entropy of the relation scores of
    ``related`` (n, d_p) against the candidate ``classes`` (their rows of ``emb``), the target
    being each label's position in ``classes``. As in the official code, the sigmoid scores
    (in (0, 1)) are fed to ``F.cross_entropy`` as logits. Returns a scalar float tensor.
    """
    cls = torch.as_tensor(list(classes), device=related.device, dtype=torch.long)
    target = (labels[:, None] == cls[None, :]).float().argmax(1)
    return F.cross_entropy(dis.relation_scores(related, emb[cls]), target)


def fit_pading(gen: nn.Module, feats: torch.Tensor, labels: torch.Tensor, emb: torch.Tensor, seen, unseen,
               params, rng: torch.Generator, device: torch.device, ckpt: Checkpoint | None = None,
               on_step=None, relation=None) -> dict[str, list[float]]:
    """Fit PADing's generator to real seen features (PADing §3.4, Algorithm 1 step 2).

    Each step draws ``samples_per_class`` real features per seen class (with ``rng``, as
    :func:`zs3core.generators.gmmn.fit_generator`), generates as many synthetic features per
    seen class and, if alignment or disentanglement is on, as many per unseen class. Loss (see
    the module docstring for the weights):

        MMDLoss.classwise(real seen, fake seen)
        + structure_weight * ( align_weight * ([alignment] relation_alignment_loss(rows)
                                               + [disentangle] kl_weight * kl)
                             + [disentangle] (relation_weight * 0.2 * relation + recon_weight * recon) )

    rows = [real seen; fake seen; fake unseen], through the disentangler's related part if
    ``disentangle`` else raw. recon, kl (:func:`disentangle_losses`, noise drawn with ``rng``
    on the CPU) and relation (mean of :func:`relation_ce` over the seen rows against the seen
    classes and over the unseen rows against the unseen classes, as the official seen / unseen
    terms) are taken on all rows. One Adam optimiser (default betas, no weight decay, as the
    official ``torch.optim.Adam`` at ``GENERATOR_LR``) at ``params.lr`` updates the generator
    and the disentangler (a fresh :class:`FeatureDisentangler`, part size d_x, discarded
    afterwards). Generator noise and dropout use the global RNG.

    Args:
        gen: :class:`PrimitiveGenerator` (any module mapping (n, d_a) embeddings to (n, d_x)).
        feats: (N, d_x) real features (any float dtype); labels: (N,) int class ids.
        emb: (C, d_a) float class embeddings, row = class id.
        seen: seen class ids to fit (those without features are skipped). unseen: unseen ids.
        params: the ``generator`` view (:class:`zs3core.config.GeneratorParams`): mmd, lr,
            steps, samples_per_class and ``primitive``.
        rng: seeded CPU torch.Generator. device: where to train.
        ckpt: optional checkpoint (resume). on_step: see :func:`zs3core.loop.run_steps`.
        relation: optional :class:`zs3core.generators.relation.RelationTerms` (the CSRL-style
            terms, ``generator.relation``), added unscaled by ``structure_weight`` when enabled.

    Returns:
        Per-step curves: 'total', 'mmd', plus 'alignment' (if alignment) and 'recon', 'kl',
        'relation' (if disentangle): unweighted term values; 'relation_pairwise' and
        'relation_listwise' with the relation terms on.

    Raises:
        ValueError: no ``primitive`` params, seen and unseen overlap, or no seen class has features.
        Zs3Error: a non-finite loss.
    """
    p = params.primitive
    if p is None:
        raise ValueError("generator.primitive: missing; select the group with -S generator=pading (or a variant)")
    seen, unseen = [int(c) for c in seen], [int(c) for c in unseen]
    if set(seen) & set(unseen):
        raise ValueError(f"fit_pading: classes both seen and unseen: {sorted(set(seen) & set(unseen))}")
    align, dis_on, tau = p.alignment, p.disentangle, p.temperature
    spc, loss_fn = params.samples_per_class, MMDLoss.from_params(params.mmd)
    pools = class_rows(labels, seen)
    if not pools:
        raise ValueError("fit_pading: no seen class has features")

    gen.to(device).train()
    emb = emb.to(device).float()
    trained = list(gen.parameters())
    dis = None
    if dis_on:
        dis = FeatureDisentangler(feats.shape[1], emb.shape[1], dropout=p.disentangle_dropout).to(device).train()
        trained += list(dis.parameters())
    opt = torch.optim.Adam(trained, lr=params.lr)
    unseen_l = torch.tensor(unseen, dtype=torch.long).repeat_interleave(spc).to(device)
    structural = align or dis_on

    def step(i: int) -> dict:
        real, seen_l = draw_real(feats, pools, spc, rng)
        real, seen_l = real.to(device), seen_l.to(device)
        fake = gen(emb[torch.cat([seen_l, unseen_l]) if structural else seen_l])
        terms = {"mmd": loss_fn.classwise(real, seen_l, fake[:len(seen_l)], seen_l)}
        if structural:
            rows = torch.cat([real, fake])
            row_l = torch.cat([seen_l, seen_l, unseen_l])
            rel = rows
            if dis_on:
                rel, unrel, rec = dis(rows)
                noise = torch.randn(unrel.shape, generator=rng).to(device, unrel.dtype)
                terms["recon"], terms["kl"] = disentangle_losses(rows, unrel, rec, noise, tau)
                n_seen = 2 * len(seen_l)
                ce = [relation_ce(dis, rel[:n_seen], row_l[:n_seen], emb, pools)]
                if unseen:
                    ce.append(relation_ce(dis, rel[n_seen:], row_l[n_seen:], emb, unseen))
                terms["relation"] = sum(ce) / len(ce)
            if align:
                terms["alignment"] = relation_alignment_loss(rel, row_l, emb, tau)
        zero = terms["mmd"].new_zeros(())
        structure = (p.align_weight * (terms.get("alignment", zero) + p.kl_weight * terms.get("kl", zero))
                     + p.relation_weight * RELATION_CE_SCALE * terms.get("relation", zero)
                     + p.recon_weight * terms.get("recon", zero))
        total = terms["mmd"] + p.structure_weight * structure
        extra = {}
        if relation is not None and relation.enabled:
            rel, extra = relation(lambda lab: gen(emb[lab]))
            total = total + rel
        return {"total": descend(opt, total, "fit_generator (PADing)", i + 1), **{k: v.item() for k, v in terms.items()},
                **extra}

    state = {"gen": gen, "opt": opt, **({"dis": dis} if dis is not None else {})}
    return run_steps(step, params.steps, state, rng, ckpt, "generator (PADing)", on_step, summary_every=500)


class PADingKind(GeneratorKind):
    """PADing's primitive generator; ``generator.primitive.alignment`` / ``.disentangle`` give the
    rows of PADing's Table 1 (conf/generator/pading_primitives.yaml, pading_alignment.yaml, pading.yaml)."""

    name = "pading"

    def build(self, params, embed_dim, feature_dim):
        if params.primitive is None:
            raise Zs3Error("generator.primitive: missing; select the group with -S generator=pading (or a variant)")
        p = params.primitive
        return PrimitiveGenerator(embed_dim, feature_dim, p.num_primitives, p.layers, p.heads, p.ff_dim, p.dropout,
                                  p.output_head)

    def fit(self, gen, data: FitData, classes, params, rng, device, ckpt=None, unseen=(), on_step=None):
        present = list(class_rows(data.labels, classes))
        return fit_pading(gen, data.features, data.labels, data.embeddings, classes, unseen, params, rng, device,
                          ckpt, on_step, relation=self.relation_terms(params, data.embeddings, present, unseen, device))

    def label(self, params):
        pr = params.primitive
        name = {(True, True): "PADing (primitives + alignment + disentanglement)", (True, False): "primitives + alignment",
                (False, True): "primitives + disentanglement"}.get((pr.alignment, pr.disentangle), "primitives only")
        return name + (", linear+ReLU head" if getattr(pr, "output_head", None) == "linear_relu" else "")
