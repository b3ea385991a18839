"""DeepLabv3+ segmentation network (the ZS3Net backbone, paper §2.2 "step 0" and §3.1).

Chen et al., "Encoder-Decoder with Atrous Separable Convolution" (ECCV 2018): a ResNet body
run at output stride 16 (or 8), an ASPP head (dilations 6/12/18 at stride 16), and a decoder
that fuses the ASPP output with the stride-4 low-level features and yields the 256-d
feature map that the final 1x1 classifier reads. Those 256-d stride-4 features are the
"pixel features" ZS3Net generates for unseen classes.

The body (encoder) comes from :mod:`zs3core.models.bodies`: torchvision ResNets or timm's
EfficientNet-Lite. The network takes images in [0, 1] and applies the normalisation its body's
weights expect, so callers never ask which body it is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zs3core.models.bodies import build_body


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


class DeepLabV3Plus(nn.Module):
    """DeepLabv3+ with a separate 1x1 pixel classifier on the 256-d decoder features.

    Args:
        num_classes: outputs of the final 1x1 classifier (the seen classes for ZS3Net).
        backbone: body name (:data:`zs3core.models.bodies.BODIES`).
        output_stride: 16 or 8 (ASPP dilations are doubled at 8).
        feature_dim: channels of the decoder output (256 in the paper).
        pretrained: ImageNet-initialised body. A user's body checkpoint is loaded afterwards
            with :func:`zs3core.models.bodies.load_body_weights`.

    ``forward(x)`` takes (B, 3, H, W) float32 images with values in [0, 1] (normalised inside
    with the body's ``input_mean`` / ``input_std``, non-persistent buffers) and returns logits (B, num_classes, H/4,
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
        self.body = build_body(backbone, output_stride, pretrained)
        high_ch, low_ch = self.body.high_channels, self.body.low_channels
        self.register_buffer("input_mean", torch.tensor(self.body.input_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(self.body.input_std).view(1, 3, 1, 1), persistent=False)
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
        """(B, 3, H, W) float in [0, 1] -> (B, feature_dim, ceil(H/4), ceil(W/4)) float decoder features."""
        low, x = self.body((x - self.input_mean) / self.input_std)
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
