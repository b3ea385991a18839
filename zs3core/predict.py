"""Segment your own images with the pipeline's trained models; add class names at prediction time.

``python -m zs3core.predict IMG [IMG ...] --out DIR [--model zs3net|zs5net] [--no-calibrated]
[--classes NAME ...] [--repo .]``

Reads the outputs of ``dvc repro`` under the repository root ``--repo`` (default: the current
folder): the backbone (``data/backbone/model.pt``), the ZS3Net or ZS5Net 1x1 classifier
(``data/classifier/zs3net.pt``, ``data/self_training/zs5net.pt``), the class split
(``data/split/classes.json``), γ of calibrated stacking (``metrics/calibration.json``) and
``params.yaml``. Per image (:meth:`Predictor.segment`): the evaluation preprocessing of the
evaluate stage (short side resized to ``backbone.eval_short_side`` when set, ImageNet
normalisation), the backbone's decoder features, the classifier's logits, bilinear upsampling
to the image's size, calibrated stacking (γ subtracted from the seen classes' logits) and the
argmax. Written to ``--out`` (:func:`predict_images`), each file complete or absent:

* ``<stem>_labels.png``: (H, W) uint8 class ids, at the image's own size and orientation;
* ``<stem>_labels.json``: the class names by id (``classes``), which are seen, unseen or
  added, the pixel count of every class present, the model, γ and the settings used;
* ``<stem>_overlay.png``: the image blended with the class colours and a legend of the classes
  present (:func:`zs3core.viz.save_overlay`).

``--classes NAME ...`` adds classes the dataset does not have, the point of zero-shot
segmentation (:func:`extend_classifier`): their word vectors are read from the embed stage's
vectors with its settings (``embedding.source``, ``.normalize``, ``.aliases``), the trained
generator produces their features (GC: from one-node graphs, no mask holding them), and the
1x1 classifier is retrained with ZS3Net's step-2 recipe (``classifier`` params) over the old
classes and the new ones: real seen features, generated features of the seen classes, of the
dataset's unseen classes and of the new ones. It is calibrated with ZS3Net's γ (the new
classes compete as unseen classes). ``NAME=WORDS`` names a class by other words for the vector
look-up (``tram=streetcar``, ``traffic_light="traffic light"``). ZS5Net cannot be extended:
its self-training needs unlabelled images that hold the new classes.

Errors the user can fix (a missing pipeline output, an unreadable image, a word missing from
the vectors, a name the dataset already has) raise :class:`zs3core.io.Zs3Error`; the command
prints ``error: <message>`` on one line and exits with status 2. Every image is decoded before
anything is computed or written, so a bad file stops the run with nothing written.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zs3core.calibration import calibrate
from zs3core.data.dataset import resize_short_side, to_float
from zs3core.features import load_cache
from zs3core.io import StageOutputs, Zs3Error, read_json
from zs3core.models.classifier import PixelClassifier, load_classifier
from zs3core.models.deeplab import upsample_logits
from zs3core.splits import ClassSplit

MODELS = {"zs3net": "data/classifier/zs3net.pt", "zs5net": "data/self_training/zs5net.pt"}
PARAMS = "params.yaml"
CLASSES = "data/split/classes.json"
BACKBONE = "data/backbone/model.pt"
EMBED = "data/embed/class_embeddings.pt"
GENERATOR = "data/generator/generator.pt"
LABELLED = "data/features/labelled"
LABEL_MAPS = "data/features/label_maps.pt"
CALIBRATION = "metrics/calibration.json"
MAX_CLASSES = 255  # label PNGs are uint8
LABEL_MAP_BYTES = 256 * 2**20  # upsampled logits held at once by label_map


def _need(repo: Path, rel: str) -> Path:
    """``repo / rel``, or Zs3Error naming it when it does not exist."""
    path = Path(repo) / rel
    if not path.exists():
        raise Zs3Error(f"{path}: missing; run the pipeline first (dvc repro) in {Path(repo).resolve()}, "
                       "or point --repo at a repository where it ran")
    return path


# ------------------------------------------------------------------ images
def read_image_file(path: str | Path) -> torch.Tensor:
    """Decode an image file completely: (3, H, W) uint8 RGB.

    The EXIF orientation is applied (photographs come out as they are displayed); palette,
    grey, 16-bit and alpha images are converted to RGB.

    Raises:
        Zs3Error: the file is missing, is not a file, or cannot be decoded (truncated,
            corrupt, not an image), naming it.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise Zs3Error(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = ImageOps.exif_transpose(im).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise Zs3Error(f"{path}: cannot read the image: corrupt, truncated or not an image ({e})") from e
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()


# ------------------------------------------------------------------ logits -> labels
def label_map(logits: torch.Tensor, size: tuple[int, int], seen, gamma: float | None = None,
              max_bytes: int = LABEL_MAP_BYTES) -> torch.Tensor:
    """Class ids at image resolution from feature-resolution logits, with calibrated stacking.

    The logits are bilinearly upsampled to ``size`` (:func:`zs3core.models.deeplab.upsample_logits`),
    γ is subtracted from the seen classes' logits (:func:`zs3core.calibration.calibrate`;
    ``None`` or 0 = the plain argmax) and the argmax taken over classes (ties: lowest id).
    Upsampling is per class, so classes are processed in groups holding at most ``max_bytes``
    of upsampled logits: the result equals upsampling all classes at once, without the
    (C, H, W) tensor of a large photograph.

    Args:
        logits: (C, h, w) float scores over all C classes. size: (H, W) of the output.
        seen: seen class ids (in [0, C)). gamma: the calibration constant.

    Returns:
        (H, W) int64 class ids in [0, C).

    Raises:
        ValueError: ``logits`` is not 3-D or has no class.
    """
    if logits.ndim != 3 or logits.shape[0] == 0:
        raise ValueError(f"logits must be (C, h, w) with C >= 1, got shape {tuple(logits.shape)}")
    num_classes = logits.shape[0]
    h, w = int(size[0]), int(size[1])
    step = max(1, min(num_classes, int(max_bytes) // max(1, 4 * h * w)))
    seen = [int(c) for c in seen]
    best_v = best_i = None
    for c0 in range(0, num_classes, step):
        up = upsample_logits(logits[None, c0:c0 + step].float(), (h, w))
        group_seen = [c - c0 for c in seen if c0 <= c < c0 + step]
        if gamma and group_seen:
            up = calibrate(up, group_seen, float(gamma))
        v, i = up[0].max(0)
        if best_v is None:
            best_v, best_i = v, i + c0
        else:
            better = v > best_v  # strict: ties keep the lower class id, as argmax does
            best_v, best_i = torch.where(better, v, best_v), torch.where(better, i + c0, best_i)
    return best_i.long()


# ------------------------------------------------------------------ the model
@dataclass
class Predictor:
    """A trained backbone and 1x1 classifier over named classes, ready to segment images.

    Attributes:
        backbone: DeepLabv3+ whose ``features()`` gives (1, d_x, h, w) decoder features.
        head: the 1x1 classifier, (1, d_x, h, w) -> (1, C, h, w) logits over ``classes``.
        classes: C class names, index = class id = label PNG value.
        seen / unseen / added: class ids; ``unseen`` holds the dataset's unseen classes and the
            ``added`` ones (classes named with ``--classes``).
        gamma: γ of calibrated stacking, None = uncalibrated argmax.
        short_side: short side the image is resized to before the backbone (None = native).
        model: ``zs3net`` or ``zs5net``. dataset: the dataset name (palette). device: where it runs.
        retraining: what :func:`extend_classifier` reports, None without added classes.
    """

    backbone: nn.Module
    head: PixelClassifier
    classes: list[str]
    seen: list[int]
    unseen: list[int]
    added: list[int] = field(default_factory=list)
    gamma: float | None = None
    short_side: int | None = None
    model: str = "zs3net"
    dataset: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    retraining: dict | None = None

    @property
    def palette(self) -> np.ndarray:
        """(C, 3) uint8 class colours (:func:`zs3core.viz.palette`; added classes extend it)."""
        from zs3core.viz import palette

        return palette(len(self.classes), self.dataset)

    @torch.no_grad()
    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 RGB image -> (C, h, w) float32 logits on the cpu, at the feature
        resolution of the resized image (stride 4 of ``short_side``)."""
        x = to_float(resize_short_side(image, self.short_side))[None].to(self.device)
        feats = self.backbone.features(x).float()
        return self.head(feats)[0].float().cpu()

    def segment(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 RGB image -> (H, W) int64 class ids (:func:`label_map` with ``gamma``)."""
        return label_map(self.logits(image), tuple(image.shape[1:]), self.seen, self.gamma)


def parse_class_specs(specs) -> tuple[list[str], dict[str, str]]:
    """``NAME`` or ``NAME=WORDS`` items of ``--classes`` -> (names, {name: words for the look-up}).

    Raises:
        Zs3Error: an empty name or words, or a name given twice.
    """
    names, words = [], {}
    for spec in specs:
        name, sep, alias = str(spec).partition("=")
        name, alias = name.strip(), alias.strip()
        if not name or (sep and not alias):
            raise Zs3Error(f"--classes: '{spec}' is not NAME or NAME=WORDS")
        if name in names:
            raise Zs3Error(f"--classes: '{name}' is given twice")
        names.append(name)
        if sep:
            words[name] = alias
    return names, words


@functools.lru_cache(maxsize=1)
def _keyed_vectors(source: str):
    """:func:`zs3core.embeddings.load_keyed_vectors`, kept for the next call in the same process."""
    from zs3core.embeddings import load_keyed_vectors

    return load_keyed_vectors(source)


def _vector_source(params, repo: Path) -> str:
    """``embedding.source`` of params.yaml; a relative file path is taken relative to ``repo``."""
    source = params.embedding.source
    p = Path(source)
    return str(Path(repo) / p) if not p.is_absolute() and (Path(repo) / p).exists() else source


def new_class_vectors(names: list[str], words: dict[str, str], params, repo: Path,
                      reference: dict | None = None, log=print) -> tuple[torch.Tensor, str]:
    """Word vectors of new class names, as the embed stage makes them.

    Uses ``embedding.source`` (:func:`zs3core.embeddings.load_keyed_vectors`),
    ``embedding.normalize`` and ``embedding.aliases`` (then ``words``, the NAME=WORDS of the
    user) with :func:`zs3core.embeddings.class_vectors`: a whole-name key, else the mean of its
    words. When ``reference`` (the embed stage's ``class_embeddings.pt``) is given, the dataset's
    own class vectors are recomputed from the same file and settings and must match it, so
    that new and old vectors live in the same space.

    Args:
        names: the new class names. words: {name: words to look up instead}.

    Returns:
        ((K, d_a) float32 vectors, the vector file or gensim-data name read).

    Raises:
        Zs3Error: a word is not in the vectors (naming the word, its class and the vector
            file), the vectors cannot be loaded, or they do not reproduce ``reference``.
    """
    from zs3core.embeddings import _words, class_vectors

    source = _vector_source(params, repo)
    aliases = {**params.embedding.aliases, **words}
    norm = params.embedding.normalize
    t0 = time.time()
    kv = _keyed_vectors(source)
    log(f"word vectors: {source} ({len(kv)} words) loaded in {time.time() - t0:.1f} s")
    rows = []
    for name in names:
        try:
            vec, how = class_vectors([name], kv, aliases, norm)
        except Zs3Error:
            look = str(aliases.get(name, name))
            missing = [w for w in _words(look) if w not in kv and w.lower() not in kv] or [look]
            which = ", ".join(f"'{w}'" for w in missing)
            raise Zs3Error(f"--classes: {which} (class '{name}') not in the word vectors {source} "
                           "(embedding.source); check the spelling, or name the class by known words with "
                           "NAME=WORDS (e.g. tram=streetcar)") from None
        log(f"  new class '{name}': {how[0]}")
        rows.append(torch.from_numpy(vec[0]))
    if reference is not None:
        old = list(reference.get("classes", []))
        ref = reference["embeddings"].float()
        again, _ = class_vectors(old, kv, params.embedding.aliases, norm)
        if again.shape != tuple(ref.shape) or not np.allclose(again, ref.numpy(), atol=1e-5):
            raise Zs3Error(f"{source}: these vectors (embedding.source, .normalize, .aliases of params.yaml) do not "
                           f"reproduce the class vectors in {EMBED}; rerun the pipeline (dvc repro) after changing "
                           "the embedding settings")
    return torch.stack(rows).float(), source


def extend_classifier(repo: Path, params, cs: ClassSplit, specs, device: torch.device,
                      log=print) -> tuple[PixelClassifier, list[str], list[int], dict]:
    """Retrain the 1x1 classifier over the dataset's classes plus new ones (ZS3Net step 2).

    The new classes get ids C .. C+K-1. Their vectors come from :func:`new_class_vectors`; the
    trained generator (``data/generator/generator.pt``, any registered kind,
    :func:`zs3core.generators.get_kind`) samples their features (the GC kind from one-node
    graphs: no mask of the dataset holds them; the dataset's unseen classes from the pool's
    masks, as in the retrain_classifier stage); :func:`zs3core.retrain.fit_classifier`
    retrains with the ``classifier`` params on the real seen features of
    ``data/features/labelled``, generated seen features, and generated features of the
    dataset's unseen classes and of the new ones (all weighted as unseen), seeded by ``seed``.

    Args:
        specs: ``NAME`` or ``NAME=WORDS`` items (:func:`parse_class_specs`).

    Returns:
        (classifier (d_x -> C+K) on cpu in eval mode, the C+K class names, the ids of the new
        classes, a report: {added, words, vectors, generator, training_features, epochs,
        final_loss, seconds and cpu_seconds (wall-clock and process time of the retraining
        alone), generated_recall (% of fresh generated features of each new class it assigns
        to that class, uncalibrated)}).

    Raises:
        Zs3Error: a bad or already existing name, more than 255 classes, a word missing from
            the vectors, or a missing pipeline output.
    """
    from zs3core.generators import get_kind, load_generator, sample_context
    from zs3core.retrain import fit_classifier
    from zs3core.runtime import seed_everything

    names, words = parse_class_specs(specs)
    known = {c.lower(): c for c in cs.classes}
    for n in names:
        if n.lower() in known:
            raise Zs3Error(f"--classes: '{n}' is already a class of the dataset ('{known[n.lower()]}'); "
                           "--classes takes new names only")
    if cs.num_classes + len(names) > MAX_CLASSES:
        raise Zs3Error(f"--classes: {cs.num_classes} + {len(names)} classes exceed the {MAX_CLASSES} of a uint8 label PNG")
    ref = torch.load(_need(repo, EMBED), map_location="cpu", weights_only=False)
    if len(ref["embeddings"]) != cs.num_classes:
        raise Zs3Error(f"{Path(repo) / EMBED}: {len(ref['embeddings'])} class vectors for {cs.num_classes} classes in "
                       f"{CLASSES}; rerun the pipeline (dvc repro)")
    new, source = new_class_vectors(names, words, params, Path(repo), ref, log)
    emb = torch.cat([ref["embeddings"].float(), new])
    gen, g = load_generator(_need(repo, GENERATOR))
    kind = get_kind(g.kind)
    ctx = None
    if kind.needs_graphs:
        log(f"generator '{g.kind}': the new classes are in no mask, so their features come from one-node graphs "
            "(no context)")
        lm = torch.load(_need(repo, LABEL_MAPS), map_location="cpu", weights_only=False)
        ctx = sample_context(lm["maps"], lm["pool_rows"], (cs.ignore_index, 255))
    labelled = load_cache(_need(repo, LABELLED))
    cfg = params.classifier
    rng = seed_everything(params.seed)
    added = list(range(cs.num_classes, cs.num_classes + len(names)))
    unseen = list(cs.unseen) + added

    def sample(classes, n):
        return kind.sample(gen, emb, classes, n, ctx, rng, device)

    t0, c0 = time.time(), time.process_time()
    clf, losses, n = fit_classifier(labelled["features"], labelled["labels"], cs.num_classes + len(names), cs.seen,
                                    unseen, sample, cfg, rng, device, desc="classifier with the new classes")
    seconds, cpu = time.time() - t0, time.process_time() - c0
    with torch.no_grad():
        x, y = sample(added, 200)
        pred = clf(x.float()).argmax(1)
        recall = {names[a - cs.num_classes]: round(100.0 * float((pred[y == a] == a).float().mean()), 1) for a in added}
    report = {"added": names, "words": words, "vectors": source, "generator": g.kind, "training_features": n,
              "epochs": cfg.epochs, "final_loss": round(float(losses[-1]), 4), "seconds": round(seconds, 2),
              "cpu_seconds": round(cpu, 2), "generated_recall": recall}
    log(f"classifier retrained over {cs.num_classes} + {len(names)} classes in {seconds:.1f} s (cpu time {cpu:.1f} s; "
        f"{n} features, {cfg.epochs} epochs); fresh generated features called their own class: "
        + ", ".join(f"{k} {v:.0f}%" for k, v in recall.items()))
    return clf, list(cs.classes) + names, added, report


def load_predictor(repo: str | Path = ".", model: str = "zs3net", calibrated: bool = True, classes=(),
                   device: str | None = None, short_side: int | None = None, log=print) -> Predictor:
    """The pipeline's trained model, read from the repository root ``repo``.

    Args:
        model: ``zs3net`` or ``zs5net`` (its classifier file, its γ).
        calibrated: subtract the model's γ from ``metrics/calibration.json`` (with ``classes``:
            ZS3Net's γ) from the seen classes' logits. ZS5Net has no γ of its own and is always
            uncalibrated (a line is logged).
        classes: new class names (``NAME`` or ``NAME=WORDS``): :func:`extend_classifier`.
        device: ``auto``, ``cpu``, ``cuda``... (None = params ``scale.device``).
        short_side: short side of the images given to the backbone (None = params
            ``backbone.eval_short_side``, 0 = native resolution).

    Raises:
        Zs3Error: a missing or out-of-date pipeline output, no γ for the model while
            ``calibrated``, ``classes`` with ``zs5net``, an unavailable device, or as
            :func:`extend_classifier`.
    """
    from zs3core.backbone import load_backbone
    from zs3core.config import load_config
    from zs3core.runtime import pick_device

    repo = Path(repo)
    if model not in MODELS:
        raise Zs3Error(f"--model: unknown model '{model}'; use one of {sorted(MODELS)}")
    if classes and model != "zs3net":
        raise Zs3Error("--classes retrains a ZS3Net classifier (generated features only); ZS5Net's self-training would "
                       "need unlabelled images holding the new classes. Use --model zs3net")
    params = load_config(_need(repo, PARAMS))
    cs = ClassSplit.from_dict(read_json(_need(repo, CLASSES)))
    if not cs.unseen:
        raise Zs3Error(f"{repo / CLASSES}: no unseen class (split.filter=oracle?); predict needs a zero-shot run")
    try:
        dev = pick_device(str(device or params.scale.device))
    except RuntimeError as e:
        raise Zs3Error(f"--device: {e}") from None
    gamma = None
    if calibrated and model == "zs5net":
        log("zs5net: no γ is chosen for ZS5Net (ZS3Net's was chosen for ZS3Net); segmenting uncalibrated")
    elif calibrated:
        entry = read_json(_need(repo, CALIBRATION)).get(model) or {}
        if "gamma" not in entry:
            raise Zs3Error(f"{repo / CALIBRATION}: no γ for {model}; run the calibrate stage (dvc repro), "
                           "or pass --no-calibrated")
        gamma = float(entry["gamma"])
    _need(repo, BACKBONE)
    names, added, report = list(cs.classes), [], None
    if classes:  # first: a word missing from the vectors is reported before the backbone is read
        head, names, added, report = extend_classifier(repo, params, cs, classes, dev, log)
    else:
        path = _need(repo, MODELS[model])
        head = load_classifier(path)
        if head.linear.out_features != cs.num_classes:
            raise Zs3Error(f"{path}: {head.linear.out_features} outputs for the {cs.num_classes} classes of "
                           f"{repo / CLASSES}; rerun the pipeline (dvc repro)")
    backbone, ck = load_backbone(repo / BACKBONE)
    seen_names = [cs.classes[c] for c in cs.seen]     # the backbone records its seen classes by name
    if "seen" in ck and list(ck["seen"]) != seen_names:
        raise Zs3Error(f"{repo / BACKBONE}: trained on seen classes {ck['seen']}, but {repo / CLASSES} has "
                       f"{seen_names}; rerun the pipeline (dvc repro)")
    feat_dim = int(ck["params"]["feature_dim"])
    if head.linear.in_features != feat_dim:
        raise Zs3Error(f"{repo / MODELS[model]}: reads {head.linear.in_features}-d features, the backbone gives "
                       f"{feat_dim}-d; rerun the pipeline (dvc repro)")
    side = params.backbone.eval_short_side if short_side is None else (int(short_side) or None)
    return Predictor(backbone.to(dev).eval(), head.to(dev).eval(), names, list(cs.seen),
                     list(cs.unseen) + added, added, gamma, int(side) if side else None, model,
                     params.dataset.name, dev, report)


# ------------------------------------------------------------------ files
def check_images(paths) -> list[Path]:
    """Decode every image once (:func:`read_image_file`) and check that their file stems differ.

    Returns:
        The paths, as ``Path`` objects.

    Raises:
        Zs3Error: an unreadable image (naming it), or two images with the same stem (their
            output files would collide).
    """
    paths = [Path(p) for p in paths]
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise Zs3Error(f"{p}: same file name stem as {stems[p.stem]}; their output files would collide")
        stems[p.stem] = p
    for p in paths:
        read_image_file(p)
    return paths


def predict_images(paths, out_dir: str | Path, predictor: Predictor, alpha: float = 0.5, log=print,
                   check: bool = True) -> list[dict]:
    """Segment images and write ``<stem>_labels.png``, ``<stem>_labels.json`` and
    ``<stem>_overlay.png`` for each into ``out_dir`` (created when needed).

    Every image is decoded first (:func:`check_images`; ``check=False`` when the caller did),
    so an unreadable one stops the run before anything is written; each image's three files are
    staged and moved into place together (:class:`zs3core.io.StageOutputs`), so none is ever
    half-written.

    Returns:
        One record per image: the contents of its JSON file (``image``, ``size`` [W, H],
        ``classes``, ``seen``, ``unseen``, ``added``, ``pixels`` {name: count},
        ``model``, ``gamma``, ``seconds`` and ``cpu_seconds`` of the segmentation, ...) and ``files``, the paths written.

    Raises:
        Zs3Error: an unreadable image, two images with the same file stem, or an ``out_dir``
            that is a file.
    """
    from PIL import Image

    from zs3core.viz import save_overlay

    paths = check_images(paths) if check else [Path(p) for p in paths]
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise Zs3Error(f"--out {out_dir}: exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    out_abs = out_dir.resolve()
    pal = predictor.palette
    records = []
    for p in paths:
        t0, c0 = time.time(), time.process_time()
        img = read_image_file(p)
        labels = predictor.segment(img)
        lab = labels.numpy().astype(np.uint8)
        seconds, cpu = time.time() - t0, time.process_time() - c0
        ids, counts = np.unique(lab, return_counts=True)
        rec = {"image": str(p), "size": [int(img.shape[2]), int(img.shape[1])], "labels": f"{p.stem}_labels.png",
               "overlay": f"{p.stem}_overlay.png", "model": predictor.model, "calibrated": predictor.gamma is not None,
               "gamma": predictor.gamma, "classes": list(predictor.classes), "seen": list(predictor.seen),
               "unseen": list(predictor.unseen), "added": list(predictor.added),
               "pixels": {predictor.classes[int(c)]: int(n) for c, n in zip(ids, counts)},
               "short_side": predictor.short_side, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
               "retraining": predictor.retraining}
        files = {k: out_abs / f"{p.stem}{s}" for k, s in
                 (("labels", "_labels.png"), ("json", "_labels.json"), ("overlay", "_overlay.png"))}
        with StageOutputs(out_abs) as out:
            Image.fromarray(lab).save(out.path(files["labels"]))
            save_overlay(out.path(files["overlay"]), img.permute(1, 2, 0).numpy(), lab, predictor.classes, pal,
                         predictor.unseen, predictor.added, alpha)
            out.text(files["json"], json.dumps(rec, indent=2) + "\n")
        share = ", ".join(f"{predictor.classes[int(c)]} {100 * n / lab.size:.0f}%"
                          for c, n in sorted(zip(ids, counts), key=lambda t: -t[1]))
        log(f"{p}: {rec['size'][0]}x{rec['size'][1]} in {seconds:.2f} s (cpu {cpu:.2f} s) -> {files['labels'].name}, "
            f"{files['overlay'].name} ({share})")
        records.append({**rec, "files": {k: str(v) for k, v in files.items()}})
    return records


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m zs3core.predict",
        description="Segment images with the pipeline's trained ZS3Net / ZS5Net; --classes adds class names "
                    "(zero-shot: generator -> features -> retrained classifier).")
    ap.add_argument("images", nargs="+", metavar="IMG", help="image files (any format Pillow reads)")
    ap.add_argument("--out", required=True, metavar="DIR", help="output folder (created when needed)")
    ap.add_argument("--model", choices=sorted(MODELS), default="zs3net", help="classifier to use (default: zs3net)")
    ap.add_argument("--calibrated", action=argparse.BooleanOptionalAction, default=True,
                    help="calibrated stacking: subtract the model's γ (metrics/calibration.json) from the seen "
                         "classes' logits (default: on)")
    ap.add_argument("--classes", nargs="+", default=[], metavar="NAME",
                    help="new class names to add (NAME or NAME=WORDS for the word-vector look-up); give the "
                         "images before this option")
    ap.add_argument("--repo", default=".", help="repository root holding the pipeline's outputs (default: .)")
    ap.add_argument("--device", default=None, help="auto, cpu, cuda (default: params.yaml scale.device)")
    ap.add_argument("--short-side", type=int, default=None, metavar="PX",
                    help="resize images to this short side for the backbone (default: params.yaml "
                         "backbone.eval_short_side; 0 = native resolution)")
    ap.add_argument("--alpha", type=float, default=0.5, help="colour weight of the overlay, in [0, 1] (default: 0.5)")
    return ap


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status (0, or 2 after ``error: ...`` for a Zs3Error)."""
    args = build_parser().parse_args(argv)
    t0 = time.time()
    try:
        if not 0.0 <= args.alpha <= 1.0:
            raise Zs3Error(f"--alpha: must be in [0, 1], got {args.alpha}")
        stray = [c for c in args.classes if Path(c).is_file()]
        if stray:
            raise Zs3Error(f"--classes: '{stray[0]}' is a file; give the images before --classes")
        paths = check_images(args.images)  # before the (possibly retrained) model: fail fast, write nothing
        predictor = load_predictor(args.repo, args.model, args.calibrated, args.classes, args.device, args.short_side)
        print(f"{predictor.model} over {len(predictor.classes)} classes (unseen: "
              f"{', '.join(predictor.classes[u] for u in predictor.unseen)}); "
              + (f"calibrated, γ = {predictor.gamma:.4g}" if predictor.gamma is not None else "uncalibrated")
              + f"; short side {predictor.short_side or 'native'}; {predictor.device}")
        recs = predict_images(paths, args.out, predictor, args.alpha, check=False)
    except Zs3Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = max(1, len(recs))
    wall, cpu = (sum(r[k] for r in recs) / n for k in ("seconds", "cpu_seconds"))
    print(f"{len(recs)} image(s) -> {args.out} in {time.time() - t0:.1f} s (segmentation {wall:.2f} s, "
          f"cpu time {cpu:.2f} s per image)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
