"""The real-feature ceiling's training features and transfer efficiency, by hand."""
from __future__ import annotations

import pytest
import torch

from zs3core.ceiling import real_unseen_features, transfer_efficiency


def test_real_unseen_features_by_ground_truth_capped_per_class():
    pool = {"features": torch.arange(8, dtype=torch.float16).reshape(8, 1),
            "labels": torch.tensor([3, 1, 3, 3, 0, 1, 255, 3])}
    x, y = real_unseen_features(pool, [3, 1, 2], 2, torch.Generator().manual_seed(0))
    assert y.tolist() == [3, 3, 1, 1]                      # class 2 is absent from the pool
    assert set(x[:2, 0].tolist()) <= {0.0, 2.0, 3.0, 7.0}  # rows labelled 3
    assert set(x[2:, 0].tolist()) == {1.0, 5.0}            # both rows labelled 1
    assert x.dtype == torch.float32


def test_transfer_efficiency():
    assert transfer_efficiency(6.0, 10.0) == pytest.approx(60.0)
    assert transfer_efficiency(3.0, 0.0) is None
