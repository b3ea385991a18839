"""PADing losses and generator training loop for pixel features (He et al., CVPR 2023, §3.2-3.4).

Official code: github.com/heshuting555/PADing, ``PADing/PADing_model.py``
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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from zs3core.checkpoint import Checkpoint
from zs3core.io import require_finite
from zs3core.mmd import MMDLoss
from zs3core.models.primitive import FeatureDisentangler

RELATION_CE_SCALE = 0.2  # official: relation_loss = 0.2 * (relation_seen + relation_unseen) / 2

PRIMITIVE_DEFAULTS = {
    "num_primitives": 400,       # TRANS_MEMORY_NUM_QUERY
    "layers": 3,                 # TRANS_NUM_LAYER (semantic-segmentation config)
    "heads": 8,                  # TransformerDecoderLayer(256, 8, ...)
    "ff_dim": 1024,              # TransformerDecoderLayer(256, 8, 1024, ...)
    "dropout": 0.3,              # TRANS_DROP_RATE (semantic-segmentation config)
    "alignment": True,
    "disentangle": True,
    "temperature": 0.1,          # T in kl_loss
    "structure_weight": 0.001,   # STRUCTURE_WEIGHT
    "align_weight": 1.0,         # WEIGHT_1
    "kl_weight": 0.5,            # hard-coded 0.5 on the unrelated-part KL
    "relation_weight": 1.0,      # WEIGHT_2
    "recon_weight": 0.5,         # WEIGHT_3
    "disentangle_dropout": 0.2,  # DROP_OUT_ED
}
"""The ``generator.primitive`` params with the official semantic-segmentation values."""


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


def train_primitive(gen: nn.Module, feats: torch.Tensor, labels: torch.Tensor, emb: torch.Tensor,
                    seen, unseen, cfg: dict, generator: torch.Generator, device: torch.device,
                    ckpt: Checkpoint | None = None) -> dict[str, list[float]]:
    """Fit PADing's generator to real seen features (PADing §3.4, Algorithm 1 step 2).

    Each step samples ``samples_per_class`` real features per seen class (with ``generator``,
    exactly as :func:`zs3core.generation.train_generator`), generates as many synthetic
    features per seen class and, if alignment or disentanglement is on, as many per unseen
    class. Loss (see the module docstring for the weights):

        MMDLoss.classwise(real seen, fake seen)
        + structure_weight * ( align_weight * ([alignment] relation_alignment_loss(rows)
                                               + [disentangle] kl_weight * kl)
                             + [disentangle] (relation_weight * 0.2 * relation + recon_weight * recon) )

    rows = [real seen; fake seen; fake unseen], through the disentangler's related part if
    ``disentangle`` else raw. recon, kl (:func:`disentangle_losses`, noise drawn with
    ``generator`` on the CPU) and relation (mean of :func:`relation_ce` over the seen rows
    against the seen classes and over the unseen rows against the unseen classes, as the
    official seen / unseen terms) are taken on all rows. One Adam optimiser (default
    betas, no weight decay, as the official ``torch.optim.Adam`` at ``GENERATOR_LR``,
    5e-4 in the semantic-segmentation config) at ``cfg['lr']`` updates the generator and the
    disentangler (a fresh :class:`FeatureDisentangler`, part size d_x, discarded afterwards).
    Generator noise and dropout use the global RNG, as in train_generator.

    Args:
        gen: module mapping (n, d_a) embeddings to (n, d_x) features (draws its own noise),
            e.g. :class:`zs3core.models.primitive.PrimitiveGenerator`.
        feats: (N, d_x) real features (any float dtype); labels: (N,) int class ids.
        emb: (C, d_a) float class embeddings, row = class id.
        seen: seen class ids to fit (those without features are skipped). unseen: unseen ids.
        cfg: the ``generator`` params: mmd, lr, steps, samples_per_class and ``primitive``
            (keys of :data:`PRIMITIVE_DEFAULTS`).
        generator: seeded CPU torch.Generator. device: where to train.
        ckpt: optional :class:`zs3core.checkpoint.Checkpoint` (resume after an interruption).

    Returns:
        Per-step curves: 'total', 'mmd', plus 'alignment' (if alignment) and 'kl',
        'relation', 'recon' (if disentangle): unweighted term values.

    Raises:
        ValueError: missing ``primitive`` keys, seen and unseen overlap, or no seen class
        has features.
    """
    p = cfg.get("primitive") or {}
    missing = sorted(set(PRIMITIVE_DEFAULTS) - set(p))
    if missing:
        raise ValueError(f"generator.primitive: missing {missing}")
    seen, unseen = [int(c) for c in seen], [int(c) for c in unseen]
    if set(seen) & set(unseen):
        raise ValueError(f"train_primitive: classes both seen and unseen: {sorted(set(seen) & set(unseen))}")
    align, dis_on, tau = bool(p["alignment"]), bool(p["disentangle"]), float(p["temperature"])
    spc, loss_fn = int(cfg["samples_per_class"]), MMDLoss.from_params(cfg["mmd"])
    pools = {c: torch.nonzero(labels == c).squeeze(1) for c in seen}
    pools = {c: idx for c, idx in pools.items() if len(idx)}
    if not pools:
        raise ValueError("train_primitive: no seen class has features")

    gen.to(device).train()
    emb = emb.to(device).float()
    params = list(gen.parameters())
    dis = None
    if dis_on:
        dis = FeatureDisentangler(feats.shape[1], emb.shape[1], dropout=float(p["disentangle_dropout"])).to(device).train()
        params += list(dis.parameters())
    opt = torch.optim.Adam(params, lr=float(cfg["lr"]))
    unseen_l = torch.tensor(unseen, dtype=torch.long).repeat_interleave(spc).to(device)
    curves: dict[str, list[float]] = {k: [] for k in ["total", "mmd"] + ["alignment"] * align
                                      + ["kl", "relation", "recon"] * dis_on}
    state = {"gen": gen, "opt": opt, **({"dis": dis} if dis is not None else {})}
    start, extra = ckpt.restore(state, generator) if ckpt else (0, {})
    curves = extra.get("curves", curves)
    steps = int(cfg["steps"])
    bar = tqdm(range(start, steps), desc="generator (PADing)", leave=False, initial=start, total=steps)
    for step in bar:
        reals, cls = [], []
        for c, idx in pools.items():
            pick = idx[torch.randint(len(idx), (spc,), generator=generator)]
            reals.append(feats[pick].float())
            cls.append(torch.full((spc,), c))
        real = torch.cat(reals).to(device)
        seen_l = torch.cat(cls).to(device)
        structural = align or dis_on
        fake = gen(emb[torch.cat([seen_l, unseen_l]) if structural else seen_l])
        terms = {"mmd": loss_fn.classwise(real, seen_l, fake[:len(seen_l)], seen_l)}
        if structural:
            rows = torch.cat([real, fake])
            row_l = torch.cat([seen_l, seen_l, unseen_l])
            rel = rows
            if dis_on:
                rel, unrel, rec = dis(rows)
                noise = torch.randn(unrel.shape, generator=generator).to(device, unrel.dtype)
                terms["recon"], terms["kl"] = disentangle_losses(rows, unrel, rec, noise, tau)
                n_seen = 2 * len(seen_l)
                ce = [relation_ce(dis, rel[:n_seen], row_l[:n_seen], emb, pools)]
                if unseen:
                    ce.append(relation_ce(dis, rel[n_seen:], row_l[n_seen:], emb, unseen))
                terms["relation"] = sum(ce) / len(ce)
            if align:
                terms["alignment"] = relation_alignment_loss(rel, row_l, emb, tau)
        zero = terms["mmd"].new_zeros(())
        structure = (float(p["align_weight"]) * (terms.get("alignment", zero) + float(p["kl_weight"]) * terms.get("kl", zero))
                     + float(p["relation_weight"]) * RELATION_CE_SCALE * terms.get("relation", zero)
                     + float(p["recon_weight"]) * terms.get("recon", zero))
        total = terms["mmd"] + float(p["structure_weight"]) * structure
        require_finite(total, "fit_generator (PADing)", step + 1)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        curves["total"].append(total.item())
        for k, v in terms.items():
            curves[k].append(v.item())
        bar.set_postfix(loss=f"{np.mean(curves['total'][-50:]):.4f}", mmd=f"{np.mean(curves['mmd'][-50:]):.4f}")
        if ckpt and ckpt.due(step + 1):
            ckpt.save(step + 1, state, generator, {"curves": curves})
    gen.eval()
    return curves
