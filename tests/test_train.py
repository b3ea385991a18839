"""Backbone shapes, checkpoint/resume of backbone training, generator and classifier loops."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from zs3core.generation import generate, train_generator
from zs3core.mmd import MMDLoss, mmd2
from zs3core.models.deeplab import DeepLabV3Plus
from zs3core.models.gmmn import GMMN
from zs3core.retrain import train_classifier
from zs3core.train import BackboneConfig, build_backbone, train_backbone


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


def test_output_stride_dilates_resnet18():
    """With output stride 16 the high-level map is 1/16 of the input (not 1/32)."""
    m = DeepLabV3Plus(3, "resnet18", 16, 32)
    x = torch.randn(1, 3, 64, 64)
    b = m.body
    with torch.no_grad():
        h = b["layer4"](b["layer3"](b["layer2"](b["layer1"](b["stem"](x)))))
    assert h.shape[-2:] == (4, 4)


class _Stop(Exception):
    pass


def _loader(seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randn(4, 3, 32, 32, generator=g)
    targets = torch.randint(0, 3, (4, 32, 32), generator=g)
    targets[:, :4] = 255
    ds = TensorDataset(imgs, targets, torch.arange(4))
    return DataLoader(ds, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(seed))


def test_backbone_resume_matches_uninterrupted_run(tmp_path):
    """An interrupted run resumed from its checkpoint ends with the same losses and weights as an uninterrupted one."""
    cfg = BackboneConfig(name="resnet18", feature_dim=16, batch_size=2, epochs=3, lr=0.01, amp=False)
    torch.manual_seed(0)
    ref_model = build_backbone(3, cfg)
    torch.manual_seed(1)
    ref = train_backbone(ref_model, _loader(), None, cfg, torch.device("cpu"), tmp_path / "a.pt", "h")

    torch.manual_seed(0)
    model = build_backbone(3, cfg)
    loader = _loader()

    def stop_after_two(rec):
        if rec["epoch"] == 2:
            raise _Stop

    torch.manual_seed(1)
    try:
        train_backbone(model, loader, None, cfg, torch.device("cpu"), tmp_path / "b.pt", "h", stop_after_two)
    except _Stop:
        pass
    assert torch.load(tmp_path / "b.pt", weights_only=False)["epoch"] == 2
    torch.manual_seed(0)
    model2 = build_backbone(3, cfg)
    # a fresh loader, as in a new process: the checkpoint restores its shuffling state
    seen = []
    resumed = train_backbone(model2, _loader(), None, cfg, torch.device("cpu"), tmp_path / "b.pt", "h", seen.append)
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    assert [r["epoch"] for r in seen] == [1, 2, 3]
    assert resumed[0]["loss"] == ref[0]["loss"] and resumed[1]["loss"] == ref[1]["loss"]
    assert abs(resumed[2]["loss"] - ref[2]["loss"]) < 1e-5
    for (n, a), (_, b) in zip(ref_model.state_dict().items(), model2.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), n


def test_checkpoint_of_other_settings_is_ignored(tmp_path):
    """A checkpoint with another run hash is not resumed from."""
    cfg = BackboneConfig(name="resnet18", feature_dim=16, batch_size=2, epochs=1, lr=0.01, amp=False)
    train_backbone(build_backbone(3, cfg), _loader(), None, cfg, torch.device("cpu"), tmp_path / "c.pt", "one")
    hist = train_backbone(build_backbone(3, cfg), _loader(), None, cfg, torch.device("cpu"), tmp_path / "c.pt", "two")
    assert len(hist) == 1 and torch.load(tmp_path / "c.pt", weights_only=False)["run_hash"] == "two"


def test_gmmn_learns_class_conditional_means():
    """After MMD training, generated features of each class are closer (in MMD) to that class's real features than to the other class's."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    d = 8
    real = torch.cat([torch.randn(400, d) * 0.5 + 3.0, torch.randn(400, d) * 0.5 - 3.0])
    labels = torch.cat([torch.zeros(400), torch.ones(400)]).long()
    emb = torch.eye(2)
    gen = GMMN(2, 2, d, hidden=32, dropout=0.0)
    before = mmd2(generate(gen, emb, [0], 200, torch.device("cpu"))[0], real[:400], [1, 2, 5])
    losses = train_generator(gen, real, labels, emb, [0, 1], MMDLoss("paper", (1.0, 2.0, 5.0)), 300, 64, 0.01, g,
                             torch.device("cpu"))
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
