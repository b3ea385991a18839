"""DeepLabv3+ segmentation network (the ZS3Net backbone, paper §2.2 "step 0" and §3.1).

Chen et al., "Encoder-Decoder with Atrous Separable Convolution" (ECCV 2018): a ResNet body
run at output stride 16 (or 8), an ASPP head (dilations 6/12/18 at stride 16), and a decoder
that fuses the ASPP output with the stride-4 low-level features and yields the 256-d
feature map that the final 1x1 classifier reads. Those 256-d stride-4 features are the
"pixel features" ZS3Net generates for unseen classes.

The ResNet body comes from torchvision (``resnet18/34/50/101``); ``pretrained=True`` loads
torchvision's ImageNet weights (users with internet; none are available in the offline
workplace).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

_BODIES = {
    "resnet18": ("resnet18", "ResNet18_Weights", 512, 64),
    "resnet34": ("resnet34", "ResNet34_Weights", 512, 64),
    "resnet50": ("resnet50", "ResNet50_Weights", 2048, 256),
    "resnet101": ("resnet101", "ResNet101_Weights", 2048, 256),
}


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


def build_resnet_body(name: str, output_stride: int, pretrained: bool) -> tuple[nn.Module, int, int]:
    """Build a torchvision ResNet body returning (low-level stride-4, high-level) features.

    Args:
        name: one of ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``.
        output_stride: 16 (last stage dilated) or 8 (last two stages dilated).
        pretrained: load torchvision's ImageNet weights (needs internet or a torch hub cache).

    Returns:
        (body, high_channels, low_channels).

    Raises:
        ValueError: unknown name or output stride.
    """
    if name not in _BODIES:
        raise ValueError(f"backbone.name: unknown ResNet '{name}'; choose one of {sorted(_BODIES)}")
    if output_stride not in (8, 16):
        raise ValueError(f"backbone.output_stride must be 8 or 16, got {output_stride}")
    fn_name, weights_name, high_ch, low_ch = _BODIES[name]
    weights = getattr(torchvision.models, weights_name).DEFAULT if pretrained else None
    net = getattr(torchvision.models, fn_name)(weights=weights)
    _dilate_layer(net.layer4, 2 if output_stride == 16 else 4)
    if output_stride == 8:
        _dilate_layer(net.layer3, 2)
    body = nn.ModuleDict(
        {
            "stem": nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
            "layer1": net.layer1,
            "layer2": net.layer2,
            "layer3": net.layer3,
            "layer4": net.layer4,
        }
    )
    return body, high_ch, low_ch


def _conv_bn_relu(cin: int, cout: int, k: int, dilation: int = 1) -> nn.Sequential:
    pad = 0 if k == 1 else dilation
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (DeepLabv3, Chen et al. 2017, §3.3).

    Input (B, C_in, h, w) float; output (B, channels, h, w) float. Branches: one 1x1 conv,
    three 3x3 convs at ``dilations`` and an image-level pooling branch.
    """

    def __init__(self, in_channels: int, channels: int = 256, dilations: tuple[int, ...] = (6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(in_channels, channels, 1)]
            + [_conv_bn_relu(in_channels, channels, 3, d) for d in dilations]
        )
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.project = nn.Sequential(
            _conv_bn_relu(channels * (len(dilations) + 2), channels, 1), nn.Dropout(0.5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.project(torch.cat(outs + [pooled], dim=1))


def body_state_dict(path) -> dict[str, torch.Tensor]:
    """A user's ResNet weights as a state dict of :func:`build_resnet_body`'s body.

    Reads a file saved with ``torch.save``: a plain torchvision ResNet state dict, or the
    official ZS3 layout (``resnet_backbone_pretrained_imagenet_wo_pascalvoc.pth.tar``): a dict
    whose ``"state_dict"`` holds keys prefixed with ``module.``, which the official
    ``ResNet._load_pretrained_model`` strips with ``k[7:]`` (github:valeoai/ZS3,
    zs3/modeling/backbone/resnet.py L211-226). ``conv1`` / ``bn1`` become ``stem.0`` /
    ``stem.1``; the ImageNet classifier (``fc``) is dropped.

    Args:
        path: the weights file.

    Returns:
        {body key: tensor} (``stem.*``, ``layer1.*`` ... ``layer4.*``).

    Raises:
        FileNotFoundError: no such file. ValueError: the file holds no tensor mapping.
    """
    from pathlib import Path

    if not Path(path).is_file():
        raise FileNotFoundError(f"backbone.weights: {path} does not exist; give the path of a ResNet checkpoint "
                                "(torchvision state dict or the official ZS3 .pth.tar)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one message naming it
        raise ValueError(f"backbone.weights: {path} cannot be read by torch.load ({e})") from None
    sd = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"backbone.weights: {path} holds no state dict of tensors (expected a ResNet state dict "
                         "or {'state_dict': ...} as the official ZS3 checkpoints)")
    out = {}
    for k, v in sd.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if k.startswith("fc."):
            continue
        for old, new in (("conv1.", "stem.0."), ("bn1.", "stem.1.")):
            if k.startswith(old):
                k = new + k[len(old):]
        out[k] = v
    return out


def load_body_weights(body: nn.Module, path) -> None:
    """Load :func:`body_state_dict` of ``path`` into ``body``, every tensor matched by name and shape.

    Raises:
        ValueError: keys missing from the file, unknown keys, or shapes that differ (the
            message names the file and the first offending keys).
    """
    sd = body_state_dict(path)
    own = body.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    shapes = [k for k in set(own) & set(sd) if own[k].shape != sd[k].shape]
    if missing or extra or shapes:
        raise ValueError(f"backbone.weights: {path} does not fit the {len(own)}-tensor body of backbone.name: "
                         f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected "
                         f"{extra[:3]}{'...' if len(extra) > 3 else ''}, other shape {sorted(shapes)[:3]}")
    body.load_state_dict(sd)


class DeepLabV3Plus(nn.Module):
    """DeepLabv3+ with a separate 1x1 pixel classifier on the 256-d decoder features.

    Args:
        num_classes: outputs of the final 1x1 classifier (the seen classes for ZS3Net).
        backbone: torchvision ResNet name.
        output_stride: 16 or 8 (ASPP dilations are doubled at 8).
        feature_dim: channels of the decoder output (256 in the paper).
        pretrained: ImageNet-initialised body (torchvision weights). A user's body checkpoint
            is loaded afterwards with :func:`load_body_weights`.

    ``forward(x)`` takes (B, 3, H, W) float images and returns logits (B, num_classes, H/4,
    W/4) at stride 4; ``features(x)`` returns the (B, feature_dim, H/4, W/4) features that
    the classifier reads (non-negative: they leave a ReLU). Upsampling to label resolution
    is left to the caller (``upsample_logits``), so that evaluation is always at label size.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet101",
        output_stride: int = 16,
        feature_dim: int = 256,
        pretrained: bool = False,
    ):
        super().__init__()
        self.body, high_ch, low_ch = build_resnet_body(backbone, output_stride, pretrained)
        dil = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        self.aspp = ASPP(high_ch, 256, dil)
        self.low_proj = _conv_bn_relu(low_ch, 48, 1)
        self.decoder = nn.Sequential(
            _conv_bn_relu(256 + 48, feature_dim, 3),
            nn.Dropout(0.5),
            _conv_bn_relu(feature_dim, feature_dim, 3),
            nn.Dropout(0.1),
        )
        self.classifier = nn.Conv2d(feature_dim, num_classes, 1)
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float -> (B, feature_dim, ceil(H/4), ceil(W/4)) float decoder features."""
        x = self.body["stem"](x)
        low = self.body["layer1"](x)
        x = self.body["layer4"](self.body["layer3"](self.body["layer2"](low)))
        x = self.aspp(x)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.decoder(torch.cat([x, self.low_proj(low)], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def param_groups(self, lr: float, head_lr_mult: float) -> list[dict]:
        """SGD parameter groups: the ResNet body at ``lr``, ASPP/decoder/classifier at
        ``lr * head_lr_mult`` (10x in the official ZS3Net/DeepLabv3+ training)."""
        head = [p for n, p in self.named_parameters() if not n.startswith("body.")]
        return [
            {"params": list(self.body.parameters()), "lr": lr},
            {"params": head, "lr": lr * head_lr_mult},
        ]


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly upsample (B, C, h, w) logits to label resolution ``size`` = (H, W)."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
