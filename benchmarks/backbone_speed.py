"""Seconds per backbone training iteration, split into data loading and compute.

Runs a few SGD iterations of the backbone of a scale on real CamVid frames, timing the
DataLoader (decode, rescale, crop, flip) apart from forward + backward + step, so that a
scale's schedule (``backbone.iterations``) can be sized to a time budget.

    python benchmarks/backbone_speed.py --scale cpu --iterations 12 [--workers 1]
    python benchmarks/backbone_speed.py --scale cpu -S backbone.feature_dim=256

Prints one line per setting: data s/it, compute s/it, total s/it (after a warm-up iteration). Time it alone: a second heavy
job on the same cores halves the figures.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zs3core.compose import compose  # noqa: E402
from zs3core.backbone import build_backbone  # noqa: E402
from zs3core.config import BackboneParams, parse  # noqa: E402
from zs3core.data.dataset import Augment, SegDataset  # noqa: E402
from zs3core.data.layouts import list_samples  # noqa: E402
from zs3core.models.deeplab import upsample_logits  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "camvid")
    ap.add_argument("--iterations", type=int, default=12)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the scale's)")
    ap.add_argument("-S", dest="overrides", action="append", default=[], help="Hydra override, e.g. backbone.feature_dim=256")
    a = ap.parse_args()
    p = yaml.safe_load(compose([f"scale={a.scale}", "dataset=camvid", *a.overrides], ROOT / "conf"))
    b = p["backbone"]
    torch.set_num_threads(2)
    torch.manual_seed(0)
    lut = np.arange(256)
    lut[11] = 255
    bp = parse(BackboneParams, b, "backbone")
    ds = SegDataset(a.data, list_samples(a.data, "camvid", "train"), 11, 11, lut=lut, augment=Augment.from_params(bp))
    workers = p["scale"]["num_workers"] if a.workers is None else a.workers
    loader = DataLoader(ds, batch_size=b["batch_size"], shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0)
    model = build_backbone(11, bp).train()   # with the body's ImageNet / user weights when the scale asks
    if b["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data_t, comp_t = [], []
    it = iter(loader)
    for i in range(a.iterations + 1):
        t0 = time.perf_counter()
        img, target, _ = next(it)
        t1 = time.perf_counter()
        if b["channels_last"]:
            img = img.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(upsample_logits(model(img), target.shape[-2:]), target, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if i:   # the first iteration warms up
            data_t.append(t1 - t0)
            comp_t.append(t2 - t1)
    d, c = float(np.mean(data_t)), float(np.mean(comp_t))
    print(f"scale={a.scale} {' '.join(a.overrides)} workers={workers}: "
          f"data {d:.3f} s/it, compute {c:.3f} s/it, total {d + c:.3f} s/it "
          f"(batch {b['batch_size']} x {b['crop_size']}², feature_dim {b['feature_dim']})")


if __name__ == "__main__":
    main()
