"""Numeric rows: 2-D tables and N-D tensors, checked once, keyed by their bytes.

Tables (arrays, DataFrames, lists) and tensors of shape ``(n, ...)`` --
images ``(n, C, H, W)`` or ``(n, H, W, C)``, sequences ``(n, T, F)`` -- are
handed to the module unchanged. :func:`check_rows` validates them with
scikit-learn's ``validate_data`` (numeric, at least one row, finite, feature
names) and converts them once to C-ordered float32. As in scikit-learn,
``n_features_in_`` is ``X.shape[1]`` (the channels of an image batch); the
whole row shape seen in ``fit`` is kept as well, and a row of another shape
is refused naming both. :class:`NumericRows` is such an array to the cache.

Row keys
--------
A numeric row's key is a universal hash computed for all rows at once by one
matrix product: the row's bytes, read as ``w`` unsigned words, times a fixed
pseudo-random integer matrix ``R`` (``w x c``), in float64. Every term and
partial sum is an integer below 2**53, so the product is exact -- the same key
on any CPU, BLAS, batch size or process. For two different rows ``x != y`` and
one column ``r`` of ``R`` with entries drawn from ``[0, 2**b)``, ``(x - y) . r
== 0`` holds for at most one value of ``r_i`` at a coordinate where the rows
differ, so with probability at most ``2**-b``; ``c`` columns with ``b * c >=
128`` bound a collision of two given rows by ``2**-128``, as a 128-bit
cryptographic digest would. ``R`` comes from SHAKE-256 of a fixed label (not
from the data), so that bound holds for any data not built against ``R``. It is
3-5x cheaper than hashing each row with ``hashlib`` (a Python call per row;
measured in ``benchmarks/bench_cache.py``).
"""

import functools
import hashlib
import math

import numpy as np
import torch
from sklearn import get_config
from sklearn.utils import assert_all_finite
from sklearn.utils.validation import validate_data

from ._kind import InputKind, register

__all__ = [
    "VALIDATION_ATTRIBUTES",
    "NumericRows",
    "all_finite",
    "check_finite_input",
    "check_rows",
    "check_rows_deferred",
    "module_refuses",
    "validate_numeric",
]

#: What checking ``X`` in ``fit`` records on the estimator: a fit that fails
#: gives the previous values back (see ``NeuralTransformer._all_or_nothing``).
VALIDATION_ATTRIBUTES = ("n_features_in_", "feature_names_in_", "_row_shape")


def check_rows(estimator, X, *, reset, allow_nan=False):
    """Validate ``X`` for ``estimator`` and return it as C-ordered float32.

    scikit-learn's ``validate_data`` does the checking (at least 2-D, at
    least one row, numeric, finite unless ``allow_nan``, ``n_features_in_``
    and ``feature_names_in_``); any numeric dtype, memory order or container
    gives the same array, so the same result. Rows of more than one dimension
    (images, sequences) are accepted and must keep the shape seen in ``fit``.
    Values beyond float32's range become infinity in the conversion and are
    reported as such, naming the fix.
    """
    X, scanned = _check_rows(estimator, X, reset=reset, allow_nan=allow_nan)
    if not scanned:
        check_finite_input(estimator, X)
    return X


def check_rows_deferred(estimator, X):
    """:func:`check_rows` at transform time, leaving the scan for NaN and
    infinity to the run, where X already is float32.

    ``run_module(..., check_input=estimator)`` scans each chunk of rows just
    before running it, while the chunk is in the CPU's cache: on a small net
    a separate pass over a large X costs more than 5% of the whole run.

    Returns
    -------
    X : ndarray of float32, C order
    scanned : bool
        Whether X was already checked for NaN and infinity (by
        ``validate_data``); if not, the caller must have it checked.
    """
    return _check_rows(estimator, X, reset=False, allow_nan=False)


def _check_rows(estimator, X, *, reset, allow_nan):
    if (
        not reset
        and type(X) is np.ndarray
        and X.dtype == np.float32
        and X.flags.c_contiguous
        and X.shape[0] >= 1
        and X.shape[1:] == _fitted_shape(estimator)
        and not hasattr(estimator, "feature_names_in_")
    ):
        # Already what validate_data would return (float32, C order, the
        # fitted shape, no names to compare): its checks cost several times a
        # small net's forward pass, so a 1-row transform skips them.
        return X, allow_nan
    X = validate_numeric(estimator, X, reset=reset, dtype=np.float32, allow_nan=allow_nan)
    return np.ascontiguousarray(X), True


def _fitted_shape(estimator):
    """The row shape ``estimator`` was fitted on, or ``None`` if it never saw
    rows (a pretrained model used without ``fit``)."""
    shape = getattr(estimator, "_row_shape", None)
    if shape is None and hasattr(estimator, "n_features_in_"):
        return (estimator.n_features_in_,)  # fitted by an older skchain: tables
    return shape


def validate_numeric(estimator, X, *, reset, dtype, allow_nan=False, allow_nd=True):
    """``validate_data`` for rows of any number of dimensions (2-D only with
    ``allow_nd=False``), recording (on ``reset``) or checking the shape of one
    row. ``dtype`` as in ``validate_data``."""
    if not reset:
        given = getattr(X, "shape", None)
        expected = getattr(estimator, "_row_shape", None)
        if given is not None and expected is not None and len(given) >= 2 and (
            len(given) > 2 or len(expected) > 1
        ):
            # Before validate_data, whose message would count channels as features.
            _check_row_shape(estimator, tuple(given[1:]), expected)
    X = validate_data(
        estimator,
        X,
        reset=reset,
        dtype=dtype,
        ensure_all_finite="allow-nan" if allow_nan else True,
        ensure_min_samples=1,
        allow_nd=allow_nd,
    )
    shape = tuple(X.shape[1:])
    if reset:
        estimator._row_shape = shape
        return X
    expected = _fitted_shape(estimator)
    if expected is not None:
        _check_row_shape(estimator, shape, expected)
    return X


def _check_row_shape(estimator, shape, expected):
    if shape != tuple(expected):
        raise ValueError(
            f"X has rows of shape {shape}, but {type(estimator).__name__} was fitted "
            f"on rows of shape {tuple(expected)}: pass rows of that shape (the same "
            "columns, or images resized to the same size and layout)."
        )


def module_refuses(X, exc, who="The module"):
    """The ``ValueError`` for a module that failed (``exc``) on rows of ``X``'s shape."""
    shape = "(" + ", ".join(["n", *map(str, X.shape[1:])]) + ")"
    return ValueError(
        f"{who} failed on input of shape {shape}: {exc}. Check that its first "
        "layer takes rows of that shape (that many features, or those channels "
        "and image size; or use torch.nn.LazyLinear)."
    )


def check_finite_input(estimator, X):
    """Raise scikit-learn's ``ValueError`` if X holds NaN or infinity.

    Skipped, as in ``validate_data``, inside
    ``sklearn.config_context(assume_finite=True)``.
    """
    if get_config()["assume_finite"]:
        return
    if not all_finite(X):
        assert_all_finite(X, estimator_name=type(estimator).__name__, input_name="X")


# Up to this many values a Python sum decides (no NumPy call's overhead);
# below the second bound np.isfinite is quicker than torch's sum.
_SUM_CHECK_SIZE = 256
_TORCH_CHECK_SIZE = 1 << 10


def all_finite(array):
    """Whether every value of a float array is finite, in one quick pass.

    The sum of the values is finite exactly when they all are: NaN and
    infinity carry through, and inf - inf is NaN. Only finite values too large
    for the sum make it infinite; the exact test then decides. torch sums a
    large array several times faster than ``np.isfinite(X).all()``, which
    also writes a mask as big as X; in a ``transform``, right after the
    module ran, it also measured quicker than torch's dot product (about 2%
    against 5% of a 1,000-row call, for the output check). Not NumPy's
    reductions: OpenBLAS's dot wakes a second thread whose spinning slows the
    next forward pass on a 2-core machine, and ``np.add.reduce`` is slower.
    """
    size = array.size
    if size <= _SUM_CHECK_SIZE:
        if math.isfinite(sum(array.ravel().tolist())):
            return True
    elif (size >= _TORCH_CHECK_SIZE and array.dtype.kind == "f"
          and array.flags.c_contiguous and array.flags.writeable):
        # (torch warns about a read-only array: joblib's memmaps take np.isfinite.)
        if math.isfinite(torch.from_numpy(array.reshape(-1)).sum().item()):
            return True
    return bool(np.isfinite(array).all())


@register
class NumericRows(InputKind):
    """A numeric ndarray, one row per sample (a table or an N-D tensor).

    The rows' bytes are keyed, so pass the array in the dtype the model sees;
    memory order does not matter.
    """

    def __init__(self, rows):
        self.rows = rows

    @staticmethod
    def accepts(rows):
        return isinstance(rows, np.ndarray) and rows.dtype != object

    @property
    def row_format(self):
        return ("array", self.rows.dtype.str, tuple(self.rows.shape[1:]))

    @property
    def row_bytes(self):
        return self.rows[:1].nbytes

    def take(self, indices):
        return self.rows[indices]

    def keys(self):
        return _array_keys(self.rows)


# -- keys of numeric rows ----------------------------------------------------------

# float64 represents every integer below 2**53 exactly.
_EXACT_BITS = 53
_KEY_BITS = 128
# Rows hashed per matrix product: the float64 copy of a chunk stays in cache.
_CHUNK_BYTES = 1 << 18


@functools.lru_cache(maxsize=64)
def _key_plan(row_bytes):
    """Word size, and the hashing matrix, for rows of ``row_bytes`` bytes.

    Wider words mean fewer words to convert but fewer bits per column before
    the sum could exceed 2**53; the plan with the least work is chosen.
    """
    best = None
    for word in (4, 2, 1):
        if row_bytes % word:
            continue
        n_words = row_bytes // word
        bits = _EXACT_BITS - math.ceil(math.log2(n_words * (2 ** (8 * word) - 1) + 1))
        if bits < 8:
            continue
        cols = -(-_KEY_BITS // bits)
        cost = n_words * (cols + 2)  # the product, plus converting the words
        if best is None or cost < best[0]:
            best = (cost, word, n_words, bits, cols)
    _, word, n_words, bits, cols = best
    stream = hashlib.shake_256(f"skchain-row-key:{word}:{n_words}".encode())
    raw = np.frombuffer(stream.digest(8 * n_words * cols), dtype="<u8")
    matrix = (raw >> np.uint64(64 - bits)).astype(np.float64).reshape(n_words, cols)
    return np.dtype(f"<u{word}"), torch.from_numpy(matrix)


def _array_keys(rows):
    rows = np.ascontiguousarray(rows)
    n = rows.shape[0]
    if n == 0:
        return []
    flat = rows.reshape(n, -1)
    row_bytes = flat.shape[1] * flat.dtype.itemsize
    if row_bytes == 0:
        return [b""] * n
    word, matrix = _key_plan(row_bytes)
    words = flat.view(np.uint8).view(word)
    n_words, cols = matrix.shape
    keys = np.empty((n, cols), dtype=np.float64)
    chunk = max(1, _CHUNK_BYTES // (8 * n_words))
    buffer = np.empty((min(chunk, n), n_words), dtype=np.float64)
    # torch's product, not NumPy's: OpenBLAS would wake a second thread whose
    # spinning slows the forward pass that follows (see all_finite).
    # The sums are exact, so any BLAS gives the same keys.
    keys_t = torch.from_numpy(keys)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        part = buffer[: stop - start]
        np.copyto(part, words[start:stop], casting="unsafe")
        torch.mm(torch.from_numpy(part), matrix, out=keys_t[start:stop])
    # One bytes object per row, made in C: the keys of the dictionaries.
    return keys.view(np.dtype((np.void, 8 * cols))).ravel().tolist()
