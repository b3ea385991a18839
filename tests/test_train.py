"""Backbone shapes, checkpoint/resume and poly lr of backbone training, generator and classifier loops."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import dataclasses

from zs3core.backbone import build_backbone, train_backbone
from zs3core.checkpoint import Checkpoint
from zs3core.generators.base import generate
from zs3core.generators.gmmn import GMMN, fit_generator
from zs3core.mmd import MMDLoss, mmd2
from zs3core.models.deeplab import DeepLabV3Plus
from zs3core.retrain import train_classifier


def test_deeplab_features_are_stride4_and_feature_dim():
    """DeepLabv3+ yields (B, 256, H/4, W/4) non-negative features and logits at stride 4, for OS 16 and 8."""
    for os_ in (16, 8):
        m = DeepLabV3Plus(5, "resnet18", os_, 256).eval()
        x = torch.randn(2, 3, 64, 96)
        with torch.no_grad():
            f = m.features(x)
            logits = m(x)
        assert f.shape == (2, 256, 16, 24)
        assert logits.shape == (2, 5, 16, 24)
        assert (f >= 0).all()


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
@pytest.mark.parametrize("stride", [16, 8])
def test_output_stride_dilates_the_body(name, stride):
    """The low-level map is 1/4 of the input and the high-level map 1/output_stride (not 1/32)."""
    m = DeepLabV3Plus(3, name, stride, 32).eval()
    with torch.no_grad():
        low, high = m.body(torch.randn(1, 3, 64, 96))
    assert low.shape[-2:] == (16, 24)
    assert high.shape[-2:] == (64 // stride, 96 // stride)
    assert (low.shape[1], high.shape[1]) == (m.body.low_channels, m.body.high_channels)


class _Stop(Exception):
    pass


def _loader(seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randn(4, 3, 32, 32, generator=g)
    targets = torch.randint(0, 3, (4, 32, 32), generator=g)
    targets[:, :4] = 255
    ds = TensorDataset(imgs, targets, torch.arange(4))
    return DataLoader(ds, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(seed))


def _bb(tiny_config):
    return dataclasses.replace(tiny_config.backbone, name="resnet18", feature_dim=16, batch_size=2, lr=0.01, amp=False,
                               channels_last=False)


def test_backbone_resume_matches_uninterrupted_run(tmp_path, tiny_config):
    """An interrupted run resumed from its checkpoint ends with the same losses and weights as an uninterrupted one."""
    b = _bb(tiny_config)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    ref_model = build_backbone(3, b)
    torch.manual_seed(1)
    ref = train_backbone(ref_model, _loader(), None, b, 3, cpu, Checkpoint(tmp_path / "a.pt", "h", every=1))

    torch.manual_seed(0)
    model = build_backbone(3, b)

    def stop_after_two(epoch, values):
        if epoch == 2:
            raise _Stop

    torch.manual_seed(1)
    ck = Checkpoint(tmp_path / "b.pt", "h", every=1)
    try:
        train_backbone(model, _loader(), None, b, 3, cpu, ck, stop_after_two)
    except _Stop:
        pass
    assert torch.load(tmp_path / "b.pt", weights_only=False)["step"] == 2
    torch.manual_seed(0)
    model2 = build_backbone(3, b)
    # a fresh loader, as in a new process: the checkpoint restores its shuffling state
    seen = []
    resumed = train_backbone(model2, _loader(), None, b, 3, cpu, ck, lambda e, v: seen.append(e))
    assert seen == [1, 2, 3] and len(resumed["loss"]) == 3
    assert resumed["loss"][:2] == ref["loss"][:2]
    assert abs(resumed["loss"][2] - ref["loss"][2]) < 1e-5
    assert resumed["lr"] == ref["lr"]
    for (n, x), (_, y) in zip(ref_model.state_dict().items(), model2.state_dict().items()):
        assert torch.allclose(x.float(), y.float(), atol=1e-5), n


def test_poly_learning_rate_by_hand(tiny_config):
    """The lr of each iteration t is lr_0 (1 - t / T)^0.9 (body) and 10x that (head): LambdaLR's poly."""
    b = dataclasses.replace(_bb(tiny_config), lr=0.01, head_lr_mult=10.0, poly_power=0.9)
    model = build_backbone(3, b)
    seen = []
    orig = torch.optim.SGD.step

    def spy(self, *a, **k):
        seen.append([g["lr"] for g in self.param_groups])
        return orig(self, *a, **k)

    torch.optim.SGD.step = spy
    try:
        train_backbone(model, _loader(), None, b, 2, torch.device("cpu"))
    finally:
        torch.optim.SGD.step = orig
    total = 2 * 2   # 2 epochs x 2 batches
    assert len(seen) == total
    for t, (body, head) in enumerate(seen):
        assert body == pytest.approx(0.01 * (1 - t / total) ** 0.9, rel=1e-12)
        assert head == pytest.approx(0.1 * (1 - t / total) ** 0.9, rel=1e-12)


def test_checkpoint_of_other_settings_is_ignored(tmp_path, tiny_config):
    """A checkpoint with another run hash is not resumed from (and is replaced)."""
    b = _bb(tiny_config)
    train_backbone(build_backbone(3, b), _loader(), None, b, 1, torch.device("cpu"), Checkpoint(tmp_path / "c.pt", "one", 1))
    hist = train_backbone(build_backbone(3, b), _loader(), None, b, 1, torch.device("cpu"), Checkpoint(tmp_path / "c.pt", "two", 1))
    assert len(hist["loss"]) == 1 and torch.load(tmp_path / "c.pt", weights_only=False)["run_hash"] == "two"


def test_gmmn_learns_class_conditional_means():
    """After MMD training, generated features of each class are closer (in MMD) to that class's real features than to the other class's."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    d = 8
    real = torch.cat([torch.randn(400, d) * 0.5 + 3.0, torch.randn(400, d) * 0.5 - 3.0])
    labels = torch.cat([torch.zeros(400), torch.ones(400)]).long()
    emb = torch.eye(2)
    gen = GMMN(2, 2, d, hidden=32, leaky_slope=0.2, dropout=0.0)
    before = mmd2(generate(gen, emb, [0], 200, torch.device("cpu"))[0], real[:400], [1, 2, 5])
    losses = fit_generator(gen, real, labels, emb, [0, 1], MMDLoss("paper", (1.0, 2.0, 5.0)), 300, 64, 0.01, g,
                           torch.device("cpu"))["mmd"]
    assert losses[-1] < losses[0]
    f0, _ = generate(gen, emb, [0], 200, torch.device("cpu"))
    after = mmd2(f0, real[:400], [1, 2, 5])
    assert after < before / 5
    assert mmd2(f0, real[:400], [1, 2, 5]) < mmd2(f0, real[400:], [1, 2, 5])


def test_classifier_separates_linearly_separable_features():
    """The 1x1 classifier reaches perfect accuracy on two well-separated Gaussian blobs."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(200, 4, generator=g) + 4, torch.randn(200, 4, generator=g) - 4])
    y = torch.cat([torch.zeros(200), torch.ones(200)]).long()
    clf, losses = train_classifier(x, y, 2, 10, 64, 0.05, 0.0, g, torch.device("cpu"))
    assert (clf(x).argmax(1) == y).all()
    assert losses[-1] < losses[0]
    maps = x[:6].T.reshape(1, 4, 2, 3)
    assert torch.allclose(clf(maps).permute(0, 2, 3, 1).reshape(6, 2), clf(x[:6]), atol=1e-5)
