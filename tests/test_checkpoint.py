"""Interrupted and resumed training loops end exactly where an uninterrupted run ends."""
from __future__ import annotations

import torch

from zs3core.checkpoint import Checkpoint
from zs3core.generators.gmmn import GMMN, fit_generator
from zs3core.mmd import MMDLoss
from zs3core.retrain import train_classifier

CPU = torch.device("cpu")


def _data():
    g = torch.Generator().manual_seed(0)
    feats = torch.cat([torch.randn(50, 6, generator=g) + 3 * c for c in range(3)])
    labels = torch.arange(3).repeat_interleave(50)
    return feats, labels, torch.eye(3)


def _gmmn_run(steps, ckpt, lr=1e-2):
    feats, labels, emb = _data()
    torch.manual_seed(1)
    gen = GMMN(3, 3, 6, hidden=16, leaky_slope=0.2, dropout=0.2)
    losses = fit_generator(gen, feats, labels, emb, [0, 1, 2], MMDLoss("paper", (1.0, 4.0)), steps, 16, lr,
                           torch.Generator().manual_seed(2), CPU, ckpt)["mmd"]
    return gen, losses


def test_generator_resume_matches_uninterrupted(tmp_path):
    ref_gen, ref = _gmmn_run(60, None)
    ck = Checkpoint(tmp_path / "g.pt", "h", every=20)
    _gmmn_run(40, ck)                      # "interrupted" after 40 steps (checkpoints at 20 and 40)
    gen, losses = _gmmn_run(60, ck)        # restart: resumes after step 40
    assert losses == ref
    for a, b in zip(gen.state_dict().values(), ref_gen.state_dict().values()):
        torch.testing.assert_close(a, b)
    ck.clear()
    assert not (tmp_path / "g.pt").exists()


def test_checkpoint_of_other_settings_is_ignored(tmp_path):
    """A checkpoint written by a run with other settings (here another learning rate, hash
    'settings-A') is not resumed from by a run whose hash is 'settings-B': that run equals a run
    from scratch. Resuming it would give other losses (checked first), so this test can fail."""
    _gmmn_run(40, Checkpoint(tmp_path / "g.pt", "settings-A", every=20), lr=5e-2)
    _, ref = _gmmn_run(60, None)
    _, wrongly_resumed = _gmmn_run(60, Checkpoint(tmp_path / "g.pt", "settings-A", every=20))
    assert wrongly_resumed[40:] != ref[40:]          # resuming A's state would change the run
    _gmmn_run(40, Checkpoint(tmp_path / "g.pt", "settings-A", every=20), lr=5e-2)
    _, losses = _gmmn_run(60, Checkpoint(tmp_path / "g.pt", "settings-B", every=20))
    assert losses == ref


def test_classifier_resume_matches_uninterrupted(tmp_path):
    feats, labels, _ = _data()

    def run(epochs, ck):
        torch.manual_seed(3)
        return train_classifier(feats, labels, 3, epochs, 32, 1e-2, 0.0, torch.Generator().manual_seed(4), CPU, ckpt=ck)

    ref_clf, ref = run(6, None)
    ck = Checkpoint(tmp_path / "c.pt", "h", every=1)
    run(4, ck)
    clf, losses = run(6, ck)
    assert losses == ref
    torch.testing.assert_close(clf.linear.weight, ref_clf.linear.weight)
