"""The input contract: checking rows of every kind, and their keys."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from skchain._inputs import (
    NumericRows,
    TextRows,
    _numeric,
    all_finite,
    check_rows,
    check_texts,
    kind_of,
)


def row_digests(rows):
    return kind_of(rows).keys()


# -- row keys --------------------------------------------------------------------


def test_row_keys_follow_row_content():
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    keys = row_digests(X)
    assert len(set(keys)) == 4 and len({len(k) for k in keys}) == 1
    assert row_digests(X.copy()) == keys
    assert row_digests(X[[2, 0]]) == [keys[2], keys[0]]
    # Fortran order or a strided view keys the row values, not the memory layout.
    assert row_digests(np.asfortranarray(X)) == keys
    assert row_digests(np.vstack([X, X])[::2]) == keys[:1] + keys[2:3] + keys[:1] + keys[2:3]
    bumped = X.copy()
    bumped[1, 2] = np.nextafter(bumped[1, 2], np.float32(np.inf))
    assert row_digests(bumped)[1] != keys[1]
    assert row_digests(bumped)[0] == keys[0]
    texts = ["a cat", "a dog", "a cat"]
    digests = row_digests(texts)
    assert digests[0] == digests[2] != digests[1]


def _exact_keys(X):
    """The keys computed with Python integers: what the float64 product must equal."""
    flat = np.ascontiguousarray(X).reshape(len(X), -1)
    word, matrix = _numeric._key_plan(flat.shape[1] * flat.dtype.itemsize)
    matrix = matrix.numpy()
    words = flat.view(np.uint8).view(word)
    R = [[int(v) for v in row] for row in matrix]
    return [
        [sum(int(w) * R[i][j] for i, w in enumerate(row)) for j in range(matrix.shape[1])]
        for row in words
    ]


@pytest.mark.parametrize(
    "X",
    [
        np.random.RandomState(0).rand(5, 37).astype(np.float32),
        np.full((2, 300), np.float32(np.nan)).view(np.uint32) | np.uint32(0xFFFFFFFF),
        np.random.RandomState(1).randint(-128, 127, size=(4, 7)).astype(np.int8),
        np.random.RandomState(2).rand(3, 5).astype(np.float16),
        np.random.RandomState(3).rand(2, 3, 4),
    ],
    ids=["float32", "all-ones-bits", "int8-odd-width", "float16-odd-width", "float64-3d"],
)
def test_row_keys_are_exact_integers(X):
    """Every sum in the product stays below 2**53, so the key is exact: the same
    on any BLAS, in any batch, for the largest possible words."""
    keys = row_digests(X)
    exact = _exact_keys(X)
    for key, values in zip(keys, exact, strict=True):
        assert np.frombuffer(key, dtype=np.float64).tolist() == [float(v) for v in values]
        assert all(v < 2**53 for v in values)
    one_by_one = [row_digests(X[i : i + 1])[0] for i in range(len(X))]
    assert one_by_one == keys


def test_row_keys_have_128_bits_or_more():
    for row_bytes in (4, 12, 256, 2048, 4096, 600_000, 7):
        matrix = _numeric._key_plan(row_bytes)[1].numpy()
        words, cols = matrix.shape
        largest_word = 2 ** (8 * row_bytes // words) - 1
        # Entries drawn from [0, 2**bits), as large as exactness allows.
        bits = 53 - int(np.ceil(np.log2(words * largest_word + 1)))
        assert matrix.max() < 2**bits and bits * cols >= 128, row_bytes
        assert words * largest_word * (2**bits - 1) < 2**53
        assert np.all(matrix == np.floor(matrix))


def test_row_keys_tell_one_bit_apart():
    base = np.zeros((1, 64), dtype=np.float32)
    rows = np.repeat(base, 64 * 32, axis=0)
    bits = rows.view(np.uint32)
    for i in range(64 * 32):
        bits[i, i // 32] = np.uint32(1) << np.uint32(i % 32)
    keys = row_digests(np.vstack([base, rows]))
    assert len(set(keys)) == len(keys)


def test_row_keys_are_the_same_in_another_process():
    X = np.random.RandomState(0).rand(3, 5).astype(np.float32)
    script = (
        "import numpy as np; from skchain._inputs import kind_of; row_digests = lambda r: kind_of(r).keys();"
        "X = np.random.RandomState(0).rand(3, 5).astype(np.float32);"
        "print([k.hex() for k in row_digests(X)] + [k.hex() for k in row_digests(['a b'])])"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    expected = [k.hex() for k in row_digests(X)] + [k.hex() for k in row_digests(["a b"])]
    assert out.stdout.strip() == repr(expected)



# -- finiteness -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 3), (10, 30), (1000, 40)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_all_finite_is_exact(shape, dtype):
    """Three paths (a Python sum, np.isfinite, torch's sum): each finds one
    bad value anywhere, and values too large for the sum are still finite;
    a read-only array (a joblib memmap) is read without torch's warning."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=shape).astype(dtype)
    assert all_finite(X)
    big = X.copy()
    big.flat[rng.randint(big.size)] = np.finfo(dtype).max
    big.flat[0] = np.finfo(dtype).max
    assert all_finite(big)
    for value in (np.nan, np.inf, -np.inf):
        bad = X.copy()
        bad.flat[rng.randint(bad.size)] = value
        assert not all_finite(bad)
        assert not all_finite(np.asfortranarray(bad))
        bad.flags.writeable = False
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not all_finite(bad)
            good = X.copy()
            good.flags.writeable = False
            assert all_finite(good)




# -- numeric rows of any shape ---------------------------------------------------


class _Estimator(BaseEstimator):
    pass


@pytest.mark.parametrize("shape", [(6, 4), (6, 3, 5, 5), (6, 7, 2)])
def test_check_rows_takes_rows_of_any_shape_and_keeps_it(shape):
    X = np.random.RandomState(0).normal(size=shape)
    est = _Estimator()
    out = check_rows(est, X, reset=True)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == shape
    np.testing.assert_allclose(out, X, rtol=1e-6)
    assert est.n_features_in_ == shape[1]  # as scikit-learn counts N-D input
    assert est._row_shape == shape[1:]
    # The fitted shape, in any dtype or memory order, passes again.
    again = check_rows(est, np.asfortranarray(X[:2]).astype(np.float32), reset=False)
    np.testing.assert_array_equal(again, out[:2])


@pytest.mark.parametrize(
    "fitted, given",
    [((3, 4, 4), (3, 5, 5)), ((3, 4, 4), (3, 16)), ((3,), (3, 1, 1)), ((3, 4, 4), (4, 3, 4))],
)
def test_rows_of_another_shape_are_refused_naming_both(fitted, given):
    est = _Estimator()
    check_rows(est, np.zeros((2, *fitted)), reset=True)
    for dtype in (np.float32, np.float64):  # the fast path and validate_data's
        with pytest.raises(ValueError, match=r"rows of shape .*fitted on rows of shape"):
            check_rows(est, np.zeros((2, *given), dtype=dtype), reset=False)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_in_an_image_batch_is_refused(value):
    X = np.zeros((3, 2, 4, 4))
    X[1, 1, 2, 3] = value
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        check_rows(_Estimator(), X, reset=True)


def test_ragged_and_non_numeric_rows_are_refused():
    with pytest.raises(ValueError):
        check_rows(_Estimator(), [np.zeros((2, 2)), np.zeros((3, 3))], reset=True)
    with pytest.raises(ValueError):
        check_rows(_Estimator(), np.array([["a", "b"]]), reset=True)
    with pytest.raises(ValueError, match="at least one|0 sample"):
        check_rows(_Estimator(), np.zeros((0, 3, 2, 2)), reset=True)


# -- kinds -------------------------------------------------------------------------


def test_each_checked_input_has_its_kind():
    X = np.zeros((4, 3, 2, 2), dtype=np.float32)
    rows = kind_of(X)
    assert isinstance(rows, NumericRows) and kind_of(rows) is rows
    assert rows.row_format == ("array", "<f4", (3, 2, 2)) and rows.row_bytes == 48
    assert rows.take([2]).shape == (1, 3, 2, 2) and len(rows.keys()) == 4
    texts = kind_of(check_texts(["a", "b c"]))
    assert isinstance(texts, TextRows) and texts.row_format == ("text",)
    assert texts.take([1]) == ["b c"] and texts.row_bytes == 1
    with pytest.raises(TypeError, match="No input kind"):
        kind_of({"a": 1})


def test_image_rows_are_keyed_by_all_their_values():
    X = np.zeros((3, 2, 4, 4), dtype=np.float32)
    X[1, 1, 3, 3] = 1.0
    keys = row_digests(X)
    assert keys[0] == keys[2] != keys[1]
    # A row's key depends on its values, the format (in the namespace) on its shape.
    assert row_digests(X.reshape(3, -1)) == keys
    assert kind_of(X).row_format != kind_of(X.reshape(3, -1)).row_format


def test_kind_of_asks_each_registered_kind():
    """One kind per module, found by asking each kind (no branch per kind)."""
    from skchain._inputs import KINDS, DaskRows, ImageRows

    assert {NumericRows, TextRows, DaskRows, ImageRows} <= set(KINDS)
    assert type(kind_of(np.zeros((2, 3)))) is NumericRows
    assert type(kind_of(["a", "b"])) is TextRows
    assert type(kind_of([np.zeros((4, 4, 3), np.uint8)])) is ImageRows
    da = pytest.importorskip("dask.array")
    assert type(kind_of(da.zeros((4, 3), chunks=2))) is DaskRows


def test_a_new_kind_is_a_registered_class():
    from skchain._inputs import KINDS, InputKind, register

    class Sets(InputKind):
        def __init__(self, rows):
            self.rows = rows

        accepts = staticmethod(lambda rows: isinstance(rows, frozenset))

    with pytest.raises(TypeError, match="No input kind"):
        kind_of(frozenset({1}))
    register(Sets)
    try:
        rows = kind_of(frozenset({1}))
        assert type(rows) is Sets and rows.rows == frozenset({1})
    finally:
        KINDS.remove(Sets)
