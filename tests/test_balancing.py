"""Class-balanced cross-entropy weights against values computed by hand from a label histogram."""
from __future__ import annotations

import math

import numpy as np
import pytest

from zs3core.balancing import class_weights
from zs3core.io import Zs3Error

# 3 images x 3 trained classes (pixels per class and image). Totals: 60, 30, 10 (100 pixels).
COUNTS = np.array([[40, 10, 0],
                   [20, 0, 10],
                   [0, 20, 0]])


def test_enet_weights_by_hand():
    """w_c = 1 / ln(1.02 + p_c), p = (0.6, 0.3, 0.1)."""
    w = class_weights(COUNTS, "enet")
    expected = [1 / math.log(1.02 + 0.6), 1 / math.log(1.02 + 0.3), 1 / math.log(1.02 + 0.1)]
    np.testing.assert_allclose(w, expected, rtol=1e-12)


def test_median_frequency_weights_by_hand():
    """f_c = pixels of c / pixels of the images holding c; w_c = median(f) / f_c.

    Image totals: 50, 30, 20. Class 0 is in images 0, 1: f0 = 60 / 80 = 0.75; class 1 in
    images 0, 2: f1 = 30 / 70; class 2 in image 1: f2 = 10 / 30. median = 30 / 70.
    """
    f = np.array([60 / 80, 30 / 70, 10 / 30])
    np.testing.assert_allclose(class_weights(COUNTS, "median_freq"), (30 / 70) / f, rtol=1e-12)


def test_cap_none_and_absent_class():
    """The cap bounds every weight; 'none' gives ones; a class without pixels gets 0."""
    counts = np.array([[99, 1, 0]])
    w = class_weights(counts, "enet", cap=10.0)
    assert w[0] == pytest.approx(1 / math.log(1.02 + 0.99))
    assert w[1] == 10.0            # 1 / ln(1.03) = 33.8, capped
    assert w[2] == 0.0
    np.testing.assert_array_equal(class_weights(counts, "none"), [1.0, 1.0, 0.0])


@pytest.mark.parametrize("method,cap,match", [("balanced", None, "backbone.class_weighting"),
                                              ("enet", 0.0, "backbone.class_weight_cap")])
def test_bad_settings_name_the_key(method, cap, match):
    with pytest.raises(Zs3Error, match=match):
        class_weights(COUNTS, method, cap)
