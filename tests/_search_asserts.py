"""Comparison of two fitted searches, shared by the tests of the chain searches."""

import numpy as np


def assert_same_search(ours, ref, check_times=True):
    """Everything but timings equal; timings present and non-negative."""
    assert set(ours.cv_results_) == set(ref.cv_results_)
    for key, ref_value in ref.cv_results_.items():
        value = ours.cv_results_[key]
        if "time" in key:
            if check_times:
                assert np.all(np.asarray(value) >= 0), key
            continue
        if key == "params":
            assert value == ref_value
        elif key.startswith("param_"):
            assert list(value) == list(ref_value), key
        else:
            np.testing.assert_array_equal(value, ref_value, err_msg=key)
    for attr in ("best_index_", "best_params_", "best_score_", "n_splits_", "multimetric_"):
        if hasattr(ref, attr):
            assert getattr(ours, attr) == getattr(ref, attr), attr
