"""Thresholding and small-component removal."""

import numpy as np

from segbench.postprocess import binarize, remove_small_components


def test_components_below_the_area_go_and_the_rest_stay_untouched():
    mask = np.zeros((20, 20), dtype=bool)
    mask[1:3, 1:3] = True  # 4 px
    mask[10:15, 10:15] = True  # 25 px
    mask[5, 5] = mask[6, 6] = True  # diagonal neighbours: one 8-connected component of 2 px
    out = remove_small_components(mask, 4)
    assert out[1:3, 1:3].all() and out[10:15, 10:15].all()
    assert not out[5, 5] and not out[6, 6]
    assert out.sum() == 29
    assert remove_small_components(mask, 2)[5, 5]  # 2 px is not below 2
    np.testing.assert_array_equal(remove_small_components(mask, 0), mask)
    assert not remove_small_components(mask, 26).any()


def test_binarize_thresholds_inclusively_then_filters():
    proba = np.array([[0.2, 0.5, 0.7], [0.49, 0.9, 0.1], [0.0, 0.0, 0.95]], dtype=np.float32)
    np.testing.assert_array_equal(binarize(proba, 0.5), proba >= 0.5)
    # The lone 0.95 at the corner touches the rest diagonally: one component of 4.
    assert binarize(proba, 0.5, min_area=4).sum() == 4
    assert binarize(proba, 0.5, min_area=5).sum() == 0
