"""The prefix tree of a pipeline search, as a pure algorithm (no estimator is fitted)."""

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.model_selection import ParameterGrid

from skchain.search._prefix_tree import (
    common_depth,
    group_by_prefix,
    prefix_ids,
    same_value,
    step_signatures,
)

STEPS = ["scale", "nn", "pca", "clf"]


def _ids(grid, names=STEPS):
    params = list(ParameterGrid(grid))
    return params, prefix_ids(params, [names] * len(params))


def test_candidates_grouped_by_shared_step_params():
    params, ids = _ids({"nn__lr": [0.1, 0.2], "pca__n_components": [2, 3], "clf__C": [1, 10]})
    assert len(ids) == 8 and all(len(row) == 4 for row in ids)
    for a, pa in enumerate(params):
        for b, pb in enumerate(params):
            # depth 0 (scale) is unconfigured: shared by all
            assert ids[a][0] == ids[b][0]
            assert (ids[a][1] == ids[b][1]) == (pa["nn__lr"] == pb["nn__lr"])
            same_pca = pa["nn__lr"] == pb["nn__lr"] and (
                pa["pca__n_components"] == pb["pca__n_components"]
            )
            assert (ids[a][2] == ids[b][2]) == same_pca
            assert (ids[a][3] == ids[b][3]) == (pa == pb)
    # 1 scaler, 2 nets, 4 PCAs, 8 final steps: as many distinct ids per depth
    assert [len({row[d] for row in ids}) for d in range(4)] == [1, 2, 4, 8]


def test_ids_are_a_tree_equal_below_a_difference_are_not_shared():
    """Same configuration of a later step under different parents: different ids."""
    params = [{"nn__lr": 0.1, "pca__n_components": 2}, {"nn__lr": 0.2, "pca__n_components": 2}]
    ids = prefix_ids(params, [STEPS] * 2)
    assert ids[0][1] != ids[1][1]
    assert ids[0][2] != ids[1][2]


def test_common_depth():
    _, ids = _ids({"pca__n_components": [2, 3], "clf__C": [1, 10]})
    assert common_depth(ids) == 2  # scale and nn shared
    _, ids = _ids({"clf__C": [1, 10]})
    assert common_depth(ids) == 3  # everything but the final step
    _, ids = _ids({"scale__with_mean": [True, False]})
    assert common_depth(ids) == 0
    # one candidate: still never the final step
    _, ids = _ids({"clf__C": [1]})
    assert common_depth(ids) == 3
    assert common_depth([]) == 0


def test_group_by_prefix_keeps_order():
    params, ids = _ids({"nn__lr": [0.1, 0.2], "clf__C": [1, 10, 100]})
    groups = group_by_prefix(ids, range(len(ids)), 1)
    assert sorted(len(g) for g in groups) == [3, 3]
    for group in groups:
        assert group == sorted(group)
        assert len({params[i]["nn__lr"] for i in group}) == 1
    # a subset of candidates, given in another order
    # (ParameterGrid varies the last key fastest: odd candidates have lr=0.2)
    assert group_by_prefix(ids, [5, 0, 1], 1) == [[5, 1], [0]]
    # ids as a mapping (what a task holds)
    mapping = {i: ids[i] for i in (2, 4)}
    assert sum(len(g) for g in group_by_prefix(mapping, [2, 4], 3)) == 2


def test_step_list_grids_differ_at_depth_zero():
    short = ["pca", "clf"]
    long = ["sc", "p", "clf"]
    params = [
        {"steps": "A", "clf__C": 1},
        {"steps": "A", "clf__C": 10},
        {"steps": "B", "clf__C": 1},
    ]
    ids = prefix_ids(params, [short, short, long])
    assert [len(row) for row in ids] == [2, 2, 3]
    assert ids[0][0] == ids[1][0] != ids[2][0]
    assert common_depth(ids) == 0
    # unknown keys (steps, memory) go on the first step
    assert step_signatures({"steps": "A", "clf__C": 1, "memory": None}, short) == [
        [("memory", None), ("steps", "A")],
        [("clf__C", 1)],
    ]


def test_whole_step_replacement_belongs_to_that_step():
    pca = PCA(2)
    params = [
        {"pca": pca, "clf__C": 1},
        {"pca": pca, "clf__C": 10},
        {"pca": "passthrough", "clf__C": 1},
    ]
    ids = prefix_ids(params, [STEPS] * 3)
    assert ids[0][:3] == ids[1][:3]
    assert ids[0][2] != ids[2][2]
    assert ids[0][1] == ids[2][1]


@pytest.mark.parametrize(
    "a, b, same",
    [
        (1, 1, True),
        (1, 1.0, False),  # types differ: never merged
        (float("nan"), float("nan"), True),
        ("a", "a", True),
        (None, None, True),
        (np.array([1.0, np.nan]), np.array([1.0, np.nan]), True),
        (np.array([1.0, 2.0]), np.array([1.0, 3.0]), False),
        (np.array([1, 2]), np.array([1.0, 2.0]), False),  # dtype
        (np.array([1, 2]), np.array([[1, 2]]), False),  # shape
        ([1, np.array([2])], [1, np.array([2])], True),
        ((1, 2), (1, 2), True),
        ([1, 2], [1, 2, 3], False),
        ({"a": np.arange(3)}, {"a": np.arange(3)}, True),
        ({"a": 1}, {"b": 1}, False),
        (PCA(2), PCA(2), False),  # distinct estimators: never merged
    ],
)
def test_same_value(a, b, same):
    assert same_value(a, b) is same
    assert same_value(b, a) is same


def test_same_value_identical_objects_and_odd_eq():
    pca = PCA(2)
    assert same_value(pca, pca)

    class NoTruth:
        def __eq__(self, other):
            return np.array([True, False])  # ambiguous truth value

    assert not same_value(NoTruth(), NoTruth())


def test_arrays_and_estimators_in_ids():
    w = np.arange(3.0)
    pca = PCA(2)
    params = [
        {"nn__w": w, "pca": pca},
        {"nn__w": w.copy(), "pca": pca},  # equal array, same estimator: shared
        {"nn__w": w, "pca": PCA(2)},  # equal-looking estimator: not shared
    ]
    ids = prefix_ids(params, [STEPS] * 3)
    assert ids[0][:3] == ids[1][:3]
    assert ids[0][1] == ids[2][1]
    assert ids[0][2] != ids[2][2]
