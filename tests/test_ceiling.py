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


def test_transfer_efficiency_from_confusions_by_hand():
    """summarize() reports ZS3Net's unseen mIoU as a percentage of the ceiling's, uncalibrated and
    calibrated, from hand-made confusions (2 classes: 0 seen, 1 unseen; rows = ground truth).

    ZS3Net: unseen IoU 2 / (4 + 3 - 2) = 2/5; calibrated 3 / (4 + 4 - 3) = 3/5.
    Ceiling: unseen IoU 3 / (4 + 5 - 3) = 1/2; calibrated 4 / (4 + 4 - 4) = 1.
    TE = 100 * (2/5) / (1/2) = 80 %; calibrated 100 * (3/5) / 1 = 60 %.
    """
    import numpy as np

    from zs3core.evaluation import summarize

    c = lambda rows: np.array(rows, dtype=np.int64)   # noqa: E731
    conf = {"zs3net": {"generalized": c([[5, 1], [2, 2]]), "calibrated": c([[5, 1], [1, 3]])},
            "real_feature_ceiling": {"generalized": c([[4, 2], [1, 3]]), "calibrated": c([[6, 0], [0, 4]])}}
    res, _ = summarize(conf, [0], [1], ["zs3net", "real_feature_ceiling"], {"zs3net": 0.5, "real_feature_ceiling": -1.0},
                       ["a", "b"])
    assert res["zs3net"]["unseen"]["mIoU"] == pytest.approx(40.0)
    assert res["real_feature_ceiling"]["calibrated"]["unseen"]["mIoU"] == pytest.approx(100.0)
    assert res["transfer_efficiency"]["zs3net"]["uncalibrated"] == pytest.approx(80.0)
    assert res["transfer_efficiency"]["zs3net"]["calibrated"] == pytest.approx(60.0)
    assert transfer_efficiency(3.0, 0.0) is None          # no ceiling to compare with
