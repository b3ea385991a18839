"""Typed, validated views of ``params.yaml``: one frozen dataclass per parameter group.

``params.yaml`` is the composition of ``conf/`` (Hydra, through ``dvc exp run -S``); every
default lives there and nowhere else. :func:`load_config` reads it once, at a stage's start,
and checks every key of every group before any work is done: a missing key, an unknown key
(a typo), a value of the wrong type or out of range is one :class:`zs3core.io.Zs3Error` that
names the key, the allowed values and what was found, e.g.

    params.yaml: backbone.lr must be a number > 0, got 'fast'

Each field is declared with :func:`spec` (type, bounds, choices, whether null is allowed);
nested groups are dataclasses themselves. The views are frozen: a stage cannot change a
parameter behind DVC's back.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zs3core.io import Zs3Error, read_yaml

_NUM = (int, float)


def spec(kind: Any, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
         le: float | None = None, choices: tuple | None = None, null: bool = False, item: Any = None,
         min_items: int = 0, optional: bool = False, doc: str = ""):
    """A dataclass field carrying its validation rule.

    Args:
        kind: ``int``, ``float``, ``bool``, ``str``, ``list``, ``dict`` or a nested view class.
        gt / ge / lt / le: numeric bounds. choices: allowed values. null: ``None`` allowed.
        item: for lists, the type of each element (``int``, ``float``, ``str``).
        min_items: for lists, the minimum length. optional: the key may be absent (then None).
        doc: one line shown in errors.
    """
    return field(metadata={"kind": kind, "gt": gt, "ge": ge, "lt": lt, "le": le, "choices": choices,
                           "null": null or optional, "item": item, "min_items": min_items, "optional": optional,
                           "doc": doc})


def _describe(m: dict) -> str:
    kind = m["kind"]
    if m["choices"] is not None:
        text = "one of " + ", ".join(repr(c) for c in m["choices"])
    elif kind is bool:
        text = "true or false"
    elif kind in (int, float):
        text = "an integer" if kind is int else "a number"
        bounds = [f"{op} {v:g}" for op, v in ((">", m["gt"]), (">=", m["ge"]), ("<", m["lt"]), ("<=", m["le"]))
                  if v is not None]
        if bounds:
            text += " " + " and ".join(bounds)
    elif kind is list:
        text = "a list" + (f" of {m['item'].__name__}" if m["item"] else "")
        if m["min_items"]:
            text += f" with at least {m['min_items']} item(s)"
    elif kind is dict:
        text = "a mapping"
    else:
        text = getattr(kind, "__name__", str(kind))
    return text + (" or null" if m["null"] else "")


def _check_scalar(value: Any, kind: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, _NUM) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    return True


def _value(key: str, value: Any, m: dict) -> Any:
    """Validate one value against its rule; return it converted (floats, tuples)."""
    def bad() -> Zs3Error:
        return Zs3Error(f"params.yaml: {key} must be {_describe(m)}, got {value!r}")

    if value is None:
        if m["null"]:
            return None
        raise bad()
    kind = m["kind"]
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise bad()
        return parse(kind, value, key)
    if kind is list:
        if not isinstance(value, list) or len(value) < m["min_items"]:
            raise bad()
        if m["item"] is not None and not all(_check_scalar(v, m["item"]) for v in value):
            raise bad()
        items = [float(v) for v in value] if m["item"] is float else list(value)
        for v in items:
            if m["choices"] is not None and v not in m["choices"]:
                raise bad()
        return tuple(items)
    if kind is dict:
        if not isinstance(value, dict):
            raise bad()
        return dict(value)
    if not _check_scalar(value, kind):
        raise bad()
    if m["choices"] is not None and value not in m["choices"]:
        raise bad()
    if kind in (int, float):
        v = float(value)
        if ((m["gt"] is not None and not v > m["gt"]) or (m["ge"] is not None and not v >= m["ge"])
                or (m["lt"] is not None and not v < m["lt"]) or (m["le"] is not None and not v <= m["le"])):
            raise bad()
        return float(value) if kind is float else int(value)
    return value


def parse(cls, raw: dict, prefix: str):
    """Build the view ``cls`` from the mapping ``raw`` found at ``prefix`` in params.yaml.

    Raises:
        Zs3Error: a missing or unknown key, or a bad value (naming ``prefix.key``).
    """
    if not isinstance(raw, dict):
        raise Zs3Error(f"params.yaml: {prefix} must be a mapping, got {raw!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise Zs3Error(f"params.yaml: unknown key(s) {', '.join(f'{prefix}.{k}' for k in unknown)}; "
                       f"{prefix} has {', '.join(sorted(names))}")
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        if f.name not in raw:
            if f.metadata.get("optional"):
                values[f.name] = None
                continue
            raise Zs3Error(f"params.yaml: missing key '{key}' ({_describe(f.metadata)})")
        values[f.name] = _value(key, raw[f.name], f.metadata)
    view = cls(**values)
    check = getattr(view, "check", None)
    if check:
        check(prefix)
    return view


def as_dict(view) -> dict:
    """The view as plain JSON-able data (tuples become lists), e.g. to save beside a model."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(view)


def load_yaml_params(path: str | Path = "params.yaml") -> dict:
    """params.yaml as a nested dict.

    Raises:
        Zs3Error: the file is missing or not a mapping.
    """
    p = read_yaml(path)
    if not isinstance(p, dict):
        raise Zs3Error(f"{path}: expected a mapping of parameter groups")
    return p


# ----------------------------------------------------------------------------- the groups
POS = {"gt": 0}


@dataclass(frozen=True)
class DatasetParams:
    """``dataset``: which dataset, where it comes from, its classes and split presets (conf/dataset/)."""

    name: str = spec(str)
    urls: tuple = spec(list, item=str, doc="download addresses, official first")
    md5: str | None = spec(str, null=True)
    extra: tuple = spec(list, doc="further archives: [{name, urls, md5, source}]")
    local_dir: str = spec(str)
    layout: str = spec(str, choices=("voc", "context", "camvid"))
    use_aug: bool = spec(bool)
    train_split: str = spec(str)
    classes: tuple = spec(list, item=str, min_items=2)
    ignore_index: int = spec(int, ge=0, le=255)
    split_presets: dict = spec(dict)
    source: str = spec(str, doc="'download' or a local archive / folder")

    def check(self, prefix: str) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise Zs3Error(f"params.yaml: {prefix}.classes holds a name twice: {list(self.classes)}")
        for k, names in self.split_presets.items():
            if not isinstance(k, int) or isinstance(k, bool) or not isinstance(names, list):
                raise Zs3Error(f"params.yaml: {prefix}.split_presets must map an integer K to a list of class names, "
                               f"got {k!r}: {names!r}")


@dataclass(frozen=True)
class ScaleParams:
    """``scale``: image limits, device and workers of a scale (conf/scale/)."""

    name: str = spec(str)
    max_train_images: int | None = spec(int, ge=1, null=True)
    max_eval_images: int | None = spec(int, ge=1, null=True)
    device: str = spec(str, doc="auto, cpu, cuda or cuda:N")
    num_workers: int = spec(int, ge=0)
    launcher: str = spec(str, choices=("none", "torchrun"), doc="how dvc repro starts train_backbone and extract_features")
    nproc_per_node: int = spec(int, ge=1, doc="processes (GPUs) per machine under torchrun")
    sync_bn: bool = spec(bool, doc="SyncBatchNorm in distributed backbone training (CUDA only)")

    def check(self, prefix: str) -> None:
        d = self.device
        if not (d in ("auto", "cpu", "cuda") or (d.startswith("cuda:") and d[5:].isdigit())):
            raise Zs3Error(f"params.yaml: {prefix}.device must be auto, cpu, cuda or cuda:N, got {d!r}")


@dataclass(frozen=True)
class SplitParams:
    """``split``: the unseen classes (preset K or names) and the training protocol."""

    k: int | None = spec(int, ge=1, null=True)
    unseen: tuple = spec(list, item=str)
    filter: str = spec(str, choices=("drop", "ignore", "oracle"))
    min_kept_warning: int = spec(int, ge=0)
    dev_sequence: str | None = spec(str, null=True, doc="hold out the kept training images of this video sequence "
                                                          "(file-name prefix) as the dev split")
    dev_size: int = spec(int, ge=0, doc="hold out this many kept training images, evenly spaced, as the dev split")


@dataclass(frozen=True)
class EmbeddingParams:
    """``embedding``: the class-name vectors."""

    normalize: bool = spec(bool)
    gensim_name: str = spec(str)
    local_file: str = spec(str)
    aliases: dict = spec(dict)
    source: str = spec(str)
    leak_cosine: float = spec(float, ge=-1, le=1, doc="leak report: vector-rule threshold (zs3core/leak.py)")
    leak_words: dict = spec(dict, doc="leak report: {class: [word, ...]} for the name rule")


@dataclass(frozen=True)
class BackboneParams:
    """``backbone``: DeepLabv3+ and its supervised training on the seen classes (step 0)."""

    name: str = spec(str, choices=("resnet18", "resnet34", "resnet50", "resnet101",
                                   "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"))
    pretrained: bool = spec(bool)
    weights: str | None = spec(str, null=True, doc="a seen-only checkpoint of the body (user weights)")
    output_stride: int = spec(int, choices=(8, 16))
    feature_dim: int = spec(int, ge=1)
    crop_size: int = spec(int, ge=8)
    scale_range: tuple = spec(list, item=float, min_items=2)
    hflip: bool = spec(bool)
    blur: bool = spec(bool)
    eval_short_side: int | None = spec(int, ge=8, null=True)
    batch_size: int = spec(int, ge=1)
    epochs: int | None = spec(int, ge=1, null=True)
    iterations: int | None = spec(int, ge=1, null=True)
    lr: float = spec(float, gt=0)
    head_lr_mult: float = spec(float, gt=0)
    momentum: float = spec(float, ge=0, lt=1)
    weight_decay: float = spec(float, ge=0)
    poly_power: float = spec(float, ge=0)
    val_every: int = spec(int, ge=1)
    val_max_images: int | None = spec(int, ge=1, null=True)
    amp: bool = spec(bool)
    class_weighting: str = spec(str, choices=("none", "enet", "median_freq"))
    class_weight_cap: float | None = spec(float, gt=0, null=True)
    channels_last: bool = spec(bool)

    def check(self, prefix: str) -> None:
        lo, hi = self.scale_range[0], self.scale_range[-1]
        if len(self.scale_range) != 2 or not 0 < lo <= hi:
            raise Zs3Error(f"params.yaml: {prefix}.scale_range must be [low, high] with 0 < low <= high, "
                           f"got {list(self.scale_range)}")
        if self.epochs is None and self.iterations is None:
            raise Zs3Error(f"params.yaml: set {prefix}.epochs or {prefix}.iterations (both are null)")
        if self.pretrained and self.weights:
            raise Zs3Error(f"params.yaml: {prefix}.pretrained (ImageNet-1k weights) and {prefix}.weights "
                           f"({self.weights}) are both set; choose one")


@dataclass(frozen=True)
class FeatureParams:
    """``features``: how many pixel features the cache keeps."""

    pixels_per_class: int = spec(int, ge=1)
    pool_pixels_per_image: int = spec(int, ge=1)


@dataclass(frozen=True)
class MMDParams:
    """``generator.mmd``: the kernel convention and bandwidths (zs3core/mmd.py)."""

    convention: str = spec(str, choices=("official", "paper"))
    bandwidths: tuple = spec(list, item=float, min_items=1)

    def check(self, prefix: str) -> None:
        if min(self.bandwidths) <= 0:
            raise Zs3Error(f"params.yaml: {prefix}.bandwidths must all be > 0, got {list(self.bandwidths)}")


@dataclass(frozen=True)
class PrimitiveParams:
    """``generator.primitive``: PADing's primitive generator and its structure losses."""

    num_primitives: int = spec(int, ge=1)
    layers: int = spec(int, ge=1)
    heads: int = spec(int, ge=1)
    ff_dim: int = spec(int, ge=1)
    dropout: float = spec(float, ge=0, lt=1)
    alignment: bool = spec(bool)
    disentangle: bool = spec(bool)
    temperature: float = spec(float, gt=0)
    structure_weight: float = spec(float, ge=0)
    align_weight: float = spec(float, ge=0)
    kl_weight: float = spec(float, ge=0)
    relation_weight: float = spec(float, ge=0)
    recon_weight: float = spec(float, ge=0)
    disentangle_dropout: float = spec(float, ge=0, lt=1)
    output_head: str = spec(str, choices=("layernorm", "linear_relu"))


@dataclass(frozen=True)
class RelationParams:
    """``generator.relation``: relation terms between classes after CSRL, any kind (zs3core/generators/relation.py)."""

    pairwise_weight: float = spec(float, ge=0)
    listwise_weight: float = spec(float, ge=0)
    temperature: float = spec(float, gt=0)
    samples_per_class: int = spec(int, ge=1)


@dataclass(frozen=True)
class GeneratorParams:
    """``generator``: the feature generator of step 1 (conf/generator/)."""

    kind: str = spec(str)
    hidden: int = spec(int, ge=1)
    noise_dim: int | None = spec(int, ge=1, null=True)
    leaky_slope: float = spec(float, ge=0)
    dropout: float = spec(float, ge=0, lt=1)
    mmd: MMDParams = spec(MMDParams)
    lr: float = spec(float, gt=0)
    steps: int = spec(int, ge=1)
    samples_per_class: int = spec(int, ge=2)
    graphs_per_step: int = spec(int, ge=1)
    primitive: PrimitiveParams | None = spec(PrimitiveParams, optional=True)
    relation: RelationParams | None = spec(RelationParams, optional=True)   # absent (older runs) = off
    # ``kind`` is checked against the registry by the stages that use a generator
    # (zs3core.generators.get_kind, first thing), so that this module does not import them all.


@dataclass(frozen=True)
class ClassifierParams:
    """``classifier``: step 2's recipe (ZS3Net, ZS5Net, the ceiling; DeViSE uses epochs, batch, lr)."""

    generated_per_unseen: int = spec(int, ge=1)
    generated_per_seen: int = spec(int, ge=0)
    unseen_weight: float = spec(float, gt=0)
    epochs: int = spec(int, ge=1)
    batch_size: int = spec(int, ge=1)
    lr: float = spec(float, gt=0)
    weight_decay: float = spec(float, ge=0)


@dataclass(frozen=True)
class CalibrationParams:
    """``calibration``: the zero-shot cross-validation of γ (zs3core/calibration.py)."""

    models: tuple = spec(list, item=str, choices=("zs3net", "devise", "real_feature_ceiling"))
    # zs5net is not offered: its fold retraining reads self_training, and a top-p sweep would then rerun
    # the calibrate stage; zs3core.crossval supports it for a stage that reuses the saved fold models
    folds: int = spec(int, ge=1)
    val_fraction: float = spec(float, gt=0, lt=1)
    grid: int = spec(int, ge=2)
    generator_steps: int | None = spec(int, ge=1, null=True)


@dataclass(frozen=True)
class SelfTrainingParams:
    """``self_training``: ZS5Net's pseudo-labels."""

    top_p: float = spec(float, ge=0, le=100)
    rule: str | None = spec(str, choices=("image_top_p", "class_top_p", "threshold"), optional=True)
    threshold: float | None = spec(float, ge=0, le=1, optional=True)
    # rule / threshold absent (a params.yaml older than them): the paper's per-image top-p (conf/config.yaml)

    def check(self, prefix: str) -> None:
        if self.rule == "threshold" and self.threshold is None:
            raise Zs3Error(f"params.yaml: {prefix}.rule is threshold but {prefix}.threshold is not set")
    pool_annotation: str = spec(str, choices=("none", "seen"), doc="none: every pool pixel may be pseudo-labelled; "
                                "seen: under ignore, only pool pixels without a seen training label")


@dataclass(frozen=True)
class EvaluationParams:
    """``evaluation``: the splits scored and the qualitative panels drawn."""

    splits: tuple = spec(list, item=str, min_items=1)
    panels: int = spec(int, ge=0)
    absent_classes: str = spec(str, choices=("skip", "zero"), doc="skip: a class absent from ground truth and "
                               "prediction is left out of the means; zero: counted as 0 (official ZS3 code)")


@dataclass(frozen=True)
class Config:
    """Every parameter group of params.yaml, validated (:func:`load_config`)."""

    seed: int = spec(int, ge=0)
    data_root: str | None = spec(str, null=True)
    dataset: DatasetParams = spec(DatasetParams)
    scale: ScaleParams = spec(ScaleParams)
    split: SplitParams = spec(SplitParams)
    embedding: EmbeddingParams = spec(EmbeddingParams)
    backbone: BackboneParams = spec(BackboneParams)
    features: FeatureParams = spec(FeatureParams)
    generator: GeneratorParams = spec(GeneratorParams)
    classifier: ClassifierParams = spec(ClassifierParams)
    calibration: CalibrationParams = spec(CalibrationParams)
    self_training: SelfTrainingParams = spec(SelfTrainingParams)
    evaluation: EvaluationParams = spec(EvaluationParams)


def config_from_dict(raw: dict) -> Config:
    """Validate a composed params mapping into a :class:`Config` (errors name the key)."""
    if not isinstance(raw, dict):
        raise Zs3Error(f"params.yaml: expected a mapping of parameter groups, got {raw!r}")
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise Zs3Error(f"params.yaml: unknown group(s) or key(s) {unknown}; known: {sorted(names)}")
    values = {}
    for f in dataclasses.fields(Config):
        if f.name not in raw:
            raise Zs3Error(f"params.yaml: missing key '{f.name}'")
        values[f.name] = _value(f.name, raw[f.name], f.metadata)
    return Config(**values)


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read and validate params.yaml (see the module docstring)."""
    return config_from_dict(load_yaml_params(path))
