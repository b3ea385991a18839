"""ZS3Net step 2: the retraining set, the unseen-weighted loss and the shortcut diagnostic, built by hand."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zs3core.generators.base import generate
from zs3core.models.classifier import PixelClassifier
from zs3core.retrain import loss_weights, retraining_set, shortcut_rate, train_classifier


def fake_sampler(classes, n):
    """Deterministic 'generator': class c gives n rows of value 100 + c."""
    x = torch.cat([torch.full((n, 2), 100.0 + c) for c in classes])
    return x, torch.tensor(classes).repeat_interleave(n)


def test_retraining_set_by_hand():
    """Real rows of seen classes only (an unseen-labelled real row is dropped), then generated
    seen, then generated unseen, with their labels and the generated mask."""
    real_x = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]], dtype=torch.float16)
    real_y = torch.tensor([0, 2, 1, 0])          # class 2 is unseen: its real row never enters
    x, y, gen = retraining_set(real_x, real_y, seen=[0, 1], unseen=[2], sample=fake_sampler,
                               generated_per_seen=2, generated_per_unseen=3)
    expected_x = torch.tensor([[1, 1], [3, 3], [4, 4],                         # real seen
                               [100, 100], [100, 100], [101, 101], [101, 101],  # generated seen
                               [102, 102], [102, 102], [102, 102]], dtype=torch.float32)
    torch.testing.assert_close(x, expected_x)
    assert y.tolist() == [0, 1, 0, 0, 0, 1, 1, 2, 2, 2]
    assert gen.tolist() == [False] * 3 + [True] * 7
    x0, y0, g0 = retraining_set(real_x, real_y, [0, 1], [2], fake_sampler, 0, 3)   # no generated seen
    assert y0.tolist() == [0, 1, 0, 2, 2, 2] and g0.sum() == 3


def test_loss_weights_and_weighted_cross_entropy_by_hand():
    """Weights (1, 1, 100); the batch loss is sum_i w_yi CE_i / sum_i w_yi."""
    w = loss_weights(3, [2], 100)
    assert w.tolist() == [1.0, 1.0, 100.0]
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    y = torch.tensor([0, 2])
    ce = [math.log(math.exp(2) + 2) - 2, math.log(2 + math.e) - 1]
    expected = (1 * ce[0] + 100 * ce[1]) / 101
    assert float(F.cross_entropy(logits, y, weight=w)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        loss_weights(3, [2], 0)


def test_unseen_weight_moves_the_boundary():
    """Two overlapping 1-D classes; weighting class 1 by 100 makes the classifier call most of
    the overlap class 1, as the official unseen weight does for unseen classes."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(400, 1, generator=g), torch.randn(400, 1, generator=g) + 1.0])
    y = torch.cat([torch.zeros(400), torch.ones(400)]).long()

    def share_called_1(weight):
        torch.manual_seed(0)
        clf, _ = train_classifier(x, y, 2, 30, 64, 0.05, 0.0, torch.Generator().manual_seed(1), torch.device("cpu"),
                                  class_weight=weight)
        return shortcut_rate(clf, x[:400], [1])   # % of class-0 rows called 1

    plain, weighted = share_called_1(None), share_called_1(loss_weights(2, [1], 100))
    assert plain < 40 and weighted > 90, (plain, weighted)


def test_shortcut_rate_by_hand():
    clf = PixelClassifier(2, 3)
    with torch.no_grad():
        clf.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        clf.linear.bias.zero_()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [-2.0, 0.0]])   # -> 0, 1, 2, 2
    assert shortcut_rate(clf, x, [2]) == pytest.approx(50.0)
    assert shortcut_rate(clf, x[:0], [2]) == 0.0


class DropoutOnly(nn.Module):
    """A 'generator' whose output is dropout of ones: its spread reveals train vs eval mode."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, emb):
        return self.drop(torch.ones(emb.shape[0], 4))


def test_generation_samples_as_fitted():
    """Sampling keeps dropout on (training mode), as the official code: outputs are 0 or 2,
    never the eval-mode constant 1; and the module is left in training mode."""
    gen = DropoutOnly().eval()
    torch.manual_seed(0)
    x, y = generate(gen, torch.eye(2), [0, 1], 50, torch.device("cpu"))
    assert set(x.unique().tolist()) == {0.0, 2.0}
    assert y.tolist() == [0] * 50 + [1] * 50
    assert gen.training
