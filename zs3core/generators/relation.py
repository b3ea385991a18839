"""Relation terms between classes for any generator kind, after CSRL (Li, Wei, Yang, *Consistent
Structural Relation Learning for Zero-Shot Segmentation*, NeurIPS 2020).

CSRL's idea (its abstract): the relations between the classes of the *generated* visual features
should agree with the relations between their word embeddings, over the seen **and** the unseen
classes, so that the seen-unseen relations of the word space constrain the unseen features the
generator produces, although no unseen feature is ever seen. The unseen classes enter only through
their word vectors.

**What could and could not be checked.** The paper's text past its introduction, its equations
and its code could not be read from this workplace (no official code is published; the stored
copies of the paper stop after the introduction). Second-hand (a review of the paper) confirms
three consistency terms, point-wise, pair-wise and list-wise, and class prototypes taken as the
mean of a class's generated features. The formulas below are therefore **this project's**, built
from those words with the standard learning-to-rank losses that the names "pair-wise" and
"list-wise" refer to; they carry no CSRL equation number, and their figures are not CSRL's:

* class prototype μ_c = mean of the generated features of class c (n per class, one fresh draw
  per step);
* visual relation R_ij = cos(μ_i, μ_j); semantic relation S_ij = cos(a_i, a_j) of the class
  embeddings; i, j range over the fitted seen classes and the unseen classes;
* **pair-wise** (RankNet, Burges et al. ICML 2005): for each anchor i and each ordered pair of
  other classes (j, k), j ≠ k, the probability that j is closer to i than k,
  σ((S_ij − S_ik)/τ) in the word space and σ((R_ij − R_ik)/τ) in the feature space, compared by
  the binary KL divergence; mean over all (i, j, k) triples (:func:`pairwise_relation_loss`);
* **list-wise** (ListNet's top-one probability, Cao et al. ICML 2007): for each anchor i, the
  softmax over the other classes of S_i·/τ against that of R_i·/τ, KL(p_S ‖ p_R); mean over
  anchors (:func:`listwise_relation_loss`);
* the point-wise term is the generator's own fitting loss (the class-wise MMD of every kind).

Both terms are 0 exactly when every anchor orders (pair-wise) or weighs (list-wise) the other
classes as the word space does; neither needs R and S on the same scale beyond τ.

**How it differs from PADing's alignment** (:func:`zs3core.generators.pading.relation_alignment_loss`;
PADing §3.3 eq. 6, official ``PADing/PADing_model.py`` L695-722): PADing compares cosine
similarities of *individual* feature rows (real and generated, one row per sample) with those of a
*trainable* projection of the embeddings, by a row-softmax KL at τ = 0.1, only for its own
generator and through its disentangled "semantic-related" part. The terms here compare *class
prototypes* of generated features with the *fixed* word-embedding relations, add a pair-wise
ranking term, and are added to any kind's loss (GMMN, GC, PADing) by
:class:`RelationTerms`; they read no real feature.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def class_prototypes(x: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Mean feature of each class: (K, d) float, row k = mean of the rows of ``x`` labelled ``classes[k]``.

    Args:
        x: (n, d) float features. labels: (n,) int64 class ids. classes: (K,) int64 class ids.

    Raises:
        ValueError: a class of ``classes`` has no row in ``labels``.
    """
    onehot = (labels[None, :] == classes[:, None]).to(x.dtype)        # (K, n)
    counts = onehot.sum(1, keepdim=True)
    if bool((counts == 0).any()):
        missing = classes[(counts == 0).squeeze(1)].tolist()
        raise ValueError(f"class_prototypes: no generated feature for class id(s) {missing}")
    return onehot @ x / counts


def cosine_matrix(v: torch.Tensor) -> torch.Tensor:
    """(K, K) cosine similarities of the rows of ``v`` (K, d); a zero row has similarity 0."""
    u = F.normalize(v, dim=1, eps=1e-8)
    return u @ u.T


def _binary_kl(p: torch.Tensor, logit_q: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(Bern(p) ‖ Bern(σ(logit_q))), computed stably from the logit."""
    log_q, log_1q = F.logsigmoid(logit_q), F.logsigmoid(-logit_q)
    p = p.clamp(0.0, 1.0)
    ent = torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)
    return ent - p * log_q - (1 - p) * log_1q


def pairwise_relation_loss(r: torch.Tensor, s: torch.Tensor, temperature: float) -> torch.Tensor:
    """Pair-wise (RankNet) consistency of the visual relations ``r`` with the semantic ones ``s``.

    For every anchor i and ordered pair (j, k) of two other distinct classes:
    KL( Bern(σ((s_ij − s_ik)/τ)) ‖ Bern(σ((r_ij − r_ik)/τ)) ), averaged over the K(K−1)(K−2)
    triples. 0 when r = s (or, more generally, when r_i· − s_i· is constant for every i).
    This project's formula (module docstring): no CSRL equation could be read.

    Args:
        r, s: (K, K) float relation matrices (cosine similarities), K ≥ 3. temperature: τ > 0.

    Returns:
        A scalar float tensor (differentiable in ``r``; ``s`` is a fixed target).

    Raises:
        ValueError: K < 3 (no pair of other classes), or shapes differ.
    """
    k = r.shape[0]
    if r.shape != s.shape or r.dim() != 2 or r.shape[1] != k:
        raise ValueError(f"pairwise_relation_loss: r {tuple(r.shape)} and s {tuple(s.shape)} must be the same (K, K)")
    if k < 3:
        raise ValueError(f"pairwise_relation_loss: needs at least 3 classes, got {k}")
    dr = (r[:, :, None] - r[:, None, :]) / temperature       # [i, j, k] = r_ij - r_ik
    ds = (s[:, :, None] - s[:, None, :]) / temperature
    eye = torch.eye(k, dtype=torch.bool, device=r.device)
    valid = ~(eye[:, :, None] | eye[:, None, :] | eye[None, :, :])   # j != i, k != i, j != k
    return _binary_kl(torch.sigmoid(ds.detach()), dr)[valid].mean()


def listwise_relation_loss(r: torch.Tensor, s: torch.Tensor, temperature: float) -> torch.Tensor:
    """List-wise (ListNet top-one) consistency of the visual relations ``r`` with the semantic ones ``s``.

    For every anchor i: KL( softmax_{j≠i}(s_ij/τ) ‖ softmax_{j≠i}(r_ij/τ) ), averaged over the K
    anchors. 0 when r = s (or when r_i· − s_i· is constant over j ≠ i for every i).
    This project's formula (module docstring): no CSRL equation could be read.

    Args:
        r, s: (K, K) float relation matrices, K ≥ 2. temperature: τ > 0.

    Returns:
        A scalar float tensor (differentiable in ``r``).

    Raises:
        ValueError: K < 2, or shapes differ.
    """
    k = r.shape[0]
    if r.shape != s.shape or r.dim() != 2 or r.shape[1] != k:
        raise ValueError(f"listwise_relation_loss: r {tuple(r.shape)} and s {tuple(s.shape)} must be the same (K, K)")
    if k < 2:
        raise ValueError(f"listwise_relation_loss: needs at least 2 classes, got {k}")
    off = ~torch.eye(k, dtype=torch.bool, device=r.device)
    log_p = F.log_softmax((s.detach() / temperature)[off].view(k, k - 1), dim=1)
    log_q = F.log_softmax((r / temperature)[off].view(k, k - 1), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean()


class RelationTerms:
    """The relation terms of ``generator.relation``, added by every generator kind to its fitting loss.

    Each call draws ``samples_per_class`` generated features of every class in ``seen + unseen``
    through ``sample(labels)`` (the kind's generator on those classes' embeddings), takes their
    class prototypes and returns the weighted pair-wise and list-wise terms against the fixed
    cosine relations of the class embeddings (module docstring). No real feature is read.

    Args:
        params: the ``generator.relation`` view (:class:`zs3core.config.RelationParams`) or None.
        embeddings: (C, d_a) float class embeddings, row = class id.
        seen: the fitted seen class ids. unseen: unseen class ids (word vectors only).
        device: where the generator runs.

    ``enabled`` is False when ``params`` is None or both weights are 0: then nothing is drawn.
    """

    def __init__(self, params, embeddings: torch.Tensor, seen, unseen, device: torch.device):
        self.params = params
        self.enabled = params is not None and (params.pairwise_weight > 0 or params.listwise_weight > 0)
        classes = sorted({int(c) for c in seen} | {int(c) for c in unseen})
        if self.enabled and len(classes) < 3:
            raise ValueError(f"generator.relation: needs at least 3 classes (seen + unseen), got {len(classes)}")
        self.classes = torch.tensor(classes, dtype=torch.long, device=device)
        if self.enabled:
            self.labels = self.classes.repeat_interleave(params.samples_per_class)
            self.target = cosine_matrix(embeddings.to(device).float()[self.classes])

    def __call__(self, sample: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor | None, dict[str, float]]:
        """(weighted sum of the terms, {"relation_pairwise", "relation_listwise": unweighted values}),
        or (None, {}) when disabled. ``sample``: (n,) int64 class ids -> (n, d_x) generated features."""
        if not self.enabled:
            return None, {}
        p = self.params
        r = cosine_matrix(class_prototypes(sample(self.labels), self.labels, self.classes))
        terms = {"relation_pairwise": pairwise_relation_loss(r, self.target, p.temperature),
                 "relation_listwise": listwise_relation_loss(r, self.target, p.temperature)}
        total = p.pairwise_weight * terms["relation_pairwise"] + p.listwise_weight * terms["relation_listwise"]
        return total, {k: float(v.detach()) for k, v in terms.items()}

    def descend(self, opt, loss: torch.Tensor, sample: Callable[[torch.Tensor], torch.Tensor], loop: str,
                step: int) -> dict[str, float]:
        """One optimiser step of an MMD-fitted kind (:func:`zs3core.loop.descend`): on ``loss`` alone,
        {"mmd"}, when disabled; else on ``loss`` + the weighted terms, {"total", "mmd",
        "relation_pairwise", "relation_listwise"}. ``loop`` names the loop in a non-finite-loss error."""
        from zs3core.loop import descend

        if not self.enabled:
            return {"mmd": descend(opt, loss, loop, step)}
        rel, terms = self(sample)
        mmd = loss.item()
        return {"total": descend(opt, loss + rel, f"{loop} + relation", step), "mmd": mmd, **terms}
