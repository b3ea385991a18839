"""Torch dataset of (image, label map) pairs with joint augmentation (torchvision transforms.v2).

Training augmentation follows the official ZS3Net / DeepLabv3+ recipe: random rescale of the
short side by a factor in ``scale_range``, random crop (padded with the ignore value),
horizontal flip, optional Gaussian blur. Images leave as float32 in [0, 1]: the network
normalises them as its body's weights expect (:mod:`zs3core.models.bodies`).
Label maps travel as ``tv_tensors.Mask`` so that every geometric op uses nearest
interpolation and never blends class ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from zs3core.data.layouts import Sample, check_same_size, read_image, read_label

IGNORE = 255


def to_float(img_uint8: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, H, W) float32 in [0, 1] (the network applies its body's normalisation)."""
    return TF.to_dtype(img_uint8, torch.float32, scale=True)


def resize_short_side(img: torch.Tensor, short: int | None) -> torch.Tensor:
    """Resize a (3, H, W) image so its short side is ``short`` (bilinear); None = unchanged."""
    if not short:
        return img
    return TF.resize(tv_tensors.Image(img), short, antialias=True).as_subclass(torch.Tensor)


@dataclass(frozen=True)
class Augment:
    """Training augmentation (params ``backbone``): random rescale of the short side by a factor
    in ``scale_range``, random ``crop_size`` crop (padded with the ignore value), horizontal
    flip, optional Gaussian blur."""

    crop_size: int
    scale_range: tuple[float, float]
    hflip: bool
    blur: bool

    @classmethod
    def from_params(cls, b) -> Augment:
        """From the ``backbone`` view (:class:`zs3core.config.BackboneParams`)."""
        return cls(b.crop_size, tuple(b.scale_range), b.hflip, b.blur)


class SegDataset(Dataset):
    """Images and label maps of a list of samples.

    Args:
        root: dataset root (paths of the samples are relative to it).
        samples: the samples to serve.
        num_classes, ignore_index: for label validation (see ``read_label``).
        lut: (256,) int64 map from raw label value to target (255 = ignored); None keeps
            raw values with ``ignore_index`` mapped to 255.
        augment: training augmentation (:class:`Augment`); None = evaluation: images are only
            resized to ``eval_short_side`` (if set) and labels stay at full resolution.
        eval_short_side: short side of images at evaluation time (None = native).

    ``__getitem__`` returns (image (3, H, W) float32, target (H', W') int64, index).
    In training H = H' = crop_size; in evaluation the target keeps the label's resolution.
    """

    def __init__(self, root: Path, samples: list[Sample], num_classes: int, ignore_index: int,
                 lut: np.ndarray | None = None, augment: Augment | None = None, eval_short_side: int | None = None):
        self.root, self.samples = Path(root), list(samples)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        if lut is None:
            lut = np.arange(256, dtype=np.int64)
            lut[ignore_index] = IGNORE
        self.lut = torch.as_tensor(lut, dtype=torch.int64)
        self.train, self.eval_short_side = augment is not None, eval_short_side
        self.scale_range = augment.scale_range if augment else (1.0, 1.0)
        ops = []
        if augment:
            ops.append(v2.RandomCrop(augment.crop_size, pad_if_needed=True,
                                     fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}))
            if augment.hflip:
                ops.append(v2.RandomHorizontalFlip())
            if augment.blur:
                ops.append(v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 2.0))], p=0.5))
        self.augment = v2.Compose(ops) if ops else None

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (3, H, W) uint8 image and (H, W) int64 target of sample i (LUT applied)."""
        s = self.samples[i]
        img = torch.from_numpy(np.array(read_image(self.root, s))).permute(2, 0, 1).contiguous()
        lab = torch.from_numpy(read_label(self.root, s, self.num_classes, self.ignore_index)).long()
        check_same_size(self.root, s, tuple(img.shape[1:]), tuple(lab.shape))
        return img, self.lut[lab]

    def __getitem__(self, i: int):
        img, target = self.load(i)
        if not self.train:
            return to_float(resize_short_side(img, self.eval_short_side)), target, i
        lo, hi = self.scale_range
        s = lo + (hi - lo) * torch.rand(()).item()
        short = max(8, round(min(img.shape[1:]) * s))
        img_t = TF.resize(tv_tensors.Image(img), short, antialias=True)
        mask_t = TF.resize(tv_tensors.Mask(target), short)
        img_t, mask_t = self.augment(img_t, mask_t)
        return to_float(img_t.as_subclass(torch.Tensor)), mask_t.as_subclass(torch.Tensor).long(), i
