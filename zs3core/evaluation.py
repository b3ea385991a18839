"""Evaluation of every model on labelled splits (ZS3Net §3.1, Tables 1-4).

What is scored is separate from how. All models share the backbone's features: one forward
pass per image, then each model's scorer (the backbone's own classifier, the retrained 1x1
classifiers, DeViSE's cosine scores) gives per-pixel scores, bilinearly upsampled to the
label's resolution; every labelled pixel is scored (void ignored), labels are never
downsampled. The protocols are then applied to those scores (:func:`predict`):

* **generalized** (default): every pixel is classified among all classes;
* **vanilla**: only pixels whose ground truth is unseen are scored, and they are classified
  among the unseen classes only (ZS3Net Table 2, Xian et al. 2018). Defined for models that
  score every unseen class;
* **calibrated**: generalized, after subtracting the model's γ from the seen classes' scores
  (calibrated stacking, :mod:`zs3core.calibration`). Defined for models given a γ.

A new protocol is one more branch of :func:`predict`.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from zs3core.calibration import calibrate
from zs3core.metrics import confusion_matrix
from zs3core.models.deeplab import upsample_logits

PROTOCOLS = ("generalized", "vanilla", "calibrated")
MODEL_TITLES = {"seen_only": "seen-only", "devise": "DeViSE", "zs3net": "ZS3Net", "zs5net": "ZS5Net",
                "real_feature_ceiling": "real-feature ceiling (diagnostic)", "oracle": "supervised oracle"}
"""Display name of every scored model (stages, figures, report)."""


def full_scores(logits: torch.Tensor, ids, num_classes: int) -> torch.Tensor:
    """(C', H, W) scores of the classes ``ids`` -> (C, H, W) over all classes, -inf for the others."""
    if list(ids) == list(range(num_classes)):
        return logits
    out = torch.full((num_classes, *logits.shape[1:]), float("-inf"), dtype=logits.dtype, device=logits.device)
    out[torch.as_tensor(list(ids), device=logits.device)] = logits
    return out


def predict(scores: torch.Tensor, protocol: str, seen, unseen, gamma: float = 0.0) -> torch.Tensor:
    """Class ids (H, W) int64 from (C, H, W) scores over all classes under one protocol.

    ``vanilla`` returns unseen class ids (argmax over the unseen rows only); ``calibrated``
    subtracts ``gamma`` from the seen rows first.

    Raises:
        ValueError: unknown protocol.
    """
    if protocol == "generalized":
        return scores.argmax(0)
    if protocol == "vanilla":
        u = torch.as_tensor(list(unseen), device=scores.device)
        return u[scores[u].argmax(0)]
    if protocol == "calibrated":
        return calibrate(scores[None], seen, gamma)[0].argmax(0)
    raise ValueError(f"unknown protocol '{protocol}'; use one of {PROTOCOLS}")


@torch.no_grad()
def model_scores(backbone, heads: dict, trained, image: torch.Tensor, label_size: tuple[int, int],
                 num_classes: int, backbone_name: str = "seen_only") -> dict[str, tuple[torch.Tensor, list[int]]]:
    """Per-pixel scores of every model on one image, at label resolution.

    Args:
        backbone: DeepLabV3Plus whose own classifier outputs the classes it was trained on.
        heads: {name: module mapping (B, d_x, h, w) features to (B, C, h, w) scores over all C classes}.
        trained: class ids of the backbone's outputs, in output order.
        image: (1, 3, H', W') normalised float image. label_size: (H, W) of the label map.
        backbone_name: key of the backbone's own scores (``seen_only``, or ``oracle``).

    Returns:
        {model: ((C, H, W) float scores over all classes, -inf for classes it does not
        score, the class ids it scores)}.
    """
    feats = backbone.features(image).float()
    out = {backbone_name: (backbone.classifier(feats), list(trained))}
    for name, head in heads.items():
        logits = head(feats)
        out[name] = (logits, list(range(logits.shape[1])))
    return {k: (full_scores(upsample_logits(v, label_size)[0], ids, num_classes), ids) for k, (v, ids) in out.items()}


def evaluate_split(backbone, heads: dict, dataset, trained, unseen, num_classes: int, device: torch.device,
                   panel_rows=(), desc: str = "evaluate", backbone_name: str = "seen_only",
                   gammas: dict[str, float] | None = None) -> tuple[dict[str, dict[str, np.ndarray]], dict[int, dict]]:
    """Confusion matrices of every model and protocol over a dataset in evaluation mode.

    Args:
        dataset: SegDataset in evaluation mode (targets in raw class ids, void = 255).
        trained / backbone_name: see :func:`model_scores`. unseen: unseen class ids.
        gammas: {model: γ} for the calibrated protocol (models absent get none).
        panel_rows: dataset rows whose predictions are returned for figures.

    Returns:
        ({model: {protocol: (C, C) int64 confusion}}, {row: {'target': (H, W),
        model: (H, W) generalized prediction, model + '@calibrated': calibrated prediction}}).
        ``vanilla`` is present for models that score every unseen class and is non-zero only on
        unseen rows and columns; ``calibrated`` for the models of ``gammas``.
    """
    gammas = dict(gammas or {})
    backbone.to(device).eval()
    heads = {k: h.to(device).eval() for k, h in heads.items()}
    unseen = [int(u) for u in unseen]
    seen = [c for c in range(num_classes) if c not in unseen]
    conf: dict[str, dict[str, torch.Tensor]] = {}
    is_unseen = torch.zeros(256, dtype=torch.bool)
    is_unseen[unseen] = True
    panels = {}
    panel_rows = set(panel_rows)
    for i in tqdm(range(len(dataset)), desc=desc):
        img, target, _ = dataset[i]
        vt = torch.where(is_unseen[target.clamp(0, 255)], target, torch.full_like(target, 255))
        panel = {"target": target.numpy()} if i in panel_rows else None
        for name, (scores, ids) in model_scores(backbone, heads, trained, img[None].to(device), tuple(target.shape),
                                                num_classes, backbone_name).items():
            protos = {"generalized": target}
            if unseen and set(unseen) <= set(ids):
                protos["vanilla"] = vt
            if name in gammas:
                protos["calibrated"] = target
            for proto, t in protos.items():
                pred = predict(scores, proto, seen, unseen, gammas.get(name, 0.0)).cpu()
                c = conf.setdefault(name, {}).setdefault(proto, torch.zeros(num_classes, num_classes, dtype=torch.int64))
                c += confusion_matrix(t, pred, num_classes, 255)
                if panel is not None and proto != "vanilla":
                    panel[name if proto == "generalized" else f"{name}@calibrated"] = pred.numpy()
        if panel is not None:
            panels[i] = panel
    return {k: {p: c.numpy() for p, c in v.items()} for k, v in conf.items()}, panels


def summarize(conf: dict, seen, unseen, models, gammas: dict, names, absent: str = "skip") -> tuple[dict, list[dict]]:
    """The scores of one split and its per-class IoU rows, from :func:`evaluate_split`'s confusions;
    ``absent`` is the absent-class rule of the means (:mod:`zs3core.metrics`), recorded in the
    result as ``absent_classes``.

    Returns:
        ({model: {seen, unseen, all, hIoU, vanilla?, calibrated?: {gamma, seen, unseen, all,
        hIoU}}, transfer_efficiency?: {model: {uncalibrated, calibrated}}}, [{class, group,
        pixels, <model>: IoU, <model>@calibrated: IoU}]). Transfer efficiency is reported when
        the real-feature ceiling was scored (:mod:`zs3core.ceiling`).
    """
    from zs3core.ceiling import transfer_efficiency
    from zs3core.metrics import group_scores, per_class_iou, zsl_scores

    res = {"absent_classes": absent}
    for m in models:
        res[m] = zsl_scores(conf[m]["generalized"], seen, unseen, absent)
        if "vanilla" in conf[m]:
            res[m]["vanilla"] = group_scores(conf[m]["vanilla"], unseen, absent)
        if "calibrated" in conf[m]:
            res[m]["calibrated"] = {"gamma": gammas[m], **zsl_scores(conf[m]["calibrated"], seen, unseen, absent)}
    ceil = res.get("real_feature_ceiling")
    if ceil is not None:
        res["transfer_efficiency"] = {
            m: {"uncalibrated": transfer_efficiency(res[m]["unseen"]["mIoU"], ceil["unseen"]["mIoU"]),
                "calibrated": transfer_efficiency(res[m]["calibrated"]["unseen"]["mIoU"], ceil["calibrated"]["unseen"]["mIoU"])
                if "calibrated" in res[m] and "calibrated" in ceil else None}
            for m in models if m in ("devise", "zs3net", "zs5net")}
    ious = {f"{m}{s}": per_class_iou(conf[m][p]) for m in models
            for s, p in (("", "generalized"), ("@calibrated", "calibrated")) if p in conf[m]}
    first = next(iter(models))
    rows = [{"class": name, "group": "unseen" if c in unseen else "seen", "pixels": int(conf[first]["generalized"][c].sum()),
             **{k: None if np.isnan(v[c]) else round(float(v[c]), 2) for k, v in ious.items()}}
            for c, name in enumerate(names)]
    return res, rows


def score_lines(res: dict, titles: dict) -> list[str]:
    """One printed line per model: seen / unseen mIoU and hIoU, uncalibrated and calibrated."""
    lines = []
    for m, title in titles.items():
        r = res[m]
        line = f"  {title:>36s}: seen {r['seen']['mIoU']:5.1f} unseen {r['unseen']['mIoU']:5.1f} hIoU {r['hIoU']:5.1f}"
        if "calibrated" in r:
            c = r["calibrated"]
            line += f" | calibrated (γ={c['gamma']:.3g}) seen {c['seen']['mIoU']:5.1f} unseen {c['unseen']['mIoU']:5.1f} hIoU {c['hIoU']:5.1f}"
        lines.append(line)
    return lines
