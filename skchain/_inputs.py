"""The input contract: what a user hands in, as the model call needs it.

Every wrapper checks its ``X`` here, once, and gets back what its models run
on; the frozen-output cache asks the same module for the keys of those rows.
A kind of input is one class (:class:`InputKind`): how one of its rows is
described (:meth:`~InputKind.row_format`), sized, sliced and keyed. A new kind
of input is a new class in :data:`KINDS` and, for the wrappers, a ``check_*``
function beside :func:`check_rows` -- never a branch in each wrapper.

- **Numeric rows** (:class:`NumericRows`): 2-D tables (arrays, DataFrames,
  lists) and N-D tensors of shape ``(n, ...)`` -- images ``(n, C, H, W)`` or
  ``(n, H, W, C)``, sequences ``(n, T, F)`` -- handed to the module unchanged.
  :func:`check_rows` validates them with scikit-learn's ``validate_data``
  (numeric, at least one row, finite, feature names) and converts them once to
  C-ordered float32. As in scikit-learn, ``n_features_in_`` is ``X.shape[1]``
  (the channels of an image batch); the whole row shape seen in ``fit`` is
  kept as well, and a row of another shape is refused naming both.
- **Texts** (:class:`TextRows`): :func:`check_texts` turns a list, array,
  Series or one-column DataFrame of strings into a list of ``str``.
- **Dask collections** (:class:`DaskRows`): a dask array, DataFrame or Series
  of either kind above, not loaded. :func:`check_dask_rows` checks what is
  known without computing (dimensions, row shape, dtype, feature names, known
  chunk sizes, one chunk across the columns); each block is then checked as
  its kind when it is computed, so a NaN in a block raises there exactly what
  the NumPy path raises. :meth:`DaskRows.map_blocks` runs a wrapper's NumPy
  method block by block into a lazy dask array.

Row keys (:meth:`InputKind.keys`) are what the cache stores outputs under:
equal rows give equal keys in any process.

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
measured in ``benchmarks/bench_cache.py``). Texts are keyed by a 128-bit
BLAKE2b of their UTF-8 bytes: encoding a text costs far more than hashing it.
"""

import functools
import hashlib
import math
import sys
import uuid
import warnings

import numpy as np
import torch
from sklearn import get_config
from sklearn.utils import assert_all_finite
from sklearn.utils.validation import validate_data

__all__ = [
    "KINDS",
    "VALIDATION_ATTRIBUTES",
    "DaskRows",
    "InputKind",
    "NumericRows",
    "TextRows",
    "all_finite",
    "check_finite_input",
    "check_dask_rows",
    "check_rows",
    "check_rows_deferred",
    "check_texts",
    "is_dask",
    "kind_of",
    "module_refuses",
    "validate_numeric",
]

#: What checking ``X`` in ``fit`` records on the estimator: a fit that fails
#: gives the previous values back (see ``NeuralTransformer._all_or_nothing``).
VALIDATION_ATTRIBUTES = ("n_features_in_", "feature_names_in_", "_row_shape")

KEY_SIZE = 16


# -- numeric rows: tables and tensors -------------------------------------------


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


# -- texts -----------------------------------------------------------------------


def _is_missing(value):
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return value != value  # NaN
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False
    return value is pd.NA or value is pd.NaT


def check_texts(X, who="TextEmbedder"):
    """The texts of ``X`` as a list of ``str``.

    ``X`` is a list or tuple of strings, a 1-D array, a pandas Series, a
    one-column DataFrame or a one-column 2-D array.
    """
    if isinstance(X, (str, bytes)):
        raise TypeError(
            f"{who} takes a collection of texts (a list, array or pandas "
            "Series of strings), not a single string; wrap it in a list: [text]."
        )
    if hasattr(X, "iloc") and getattr(X, "ndim", 1) == 2:  # DataFrame
        if X.shape[1] != 1:
            raise ValueError(
                f"{who} takes one text column, but X has {X.shape[1]} columns "
                f"({list(X.columns)[:5]}). Select the text column, e.g. with "
                f"ColumnTransformer([('text', {who}(), 'column_name')])."
            )
        values = X.iloc[:, 0].to_numpy(dtype=object)
    elif hasattr(X, "iloc"):  # Series
        values = X.to_numpy(dtype=object)
    else:
        try:
            values = np.asarray(X, dtype=object)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{who} takes a collection of strings; got {type(X).__name__}."
            ) from exc
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        elif values.ndim != 1:
            raise ValueError(
                f"{who} takes a 1-D collection of texts (or one column), got "
                f"an array of shape {values.shape}."
            )
    if values.shape[0] == 0:
        raise ValueError(f"{who} got 0 texts; at least one is required.")
    missing = [i for i, v in enumerate(values) if _is_missing(v)]
    if missing:
        raise ValueError(
            f"X contains {len(missing)} missing value(s) (None or NaN), the first at "
            f"row {missing[0]}. Fill them (e.g. X.fillna('')) or drop those rows."
        )
    for i, value in enumerate(values):
        if not isinstance(value, str):
            if isinstance(value, (bytes, bytearray)):
                raise TypeError(
                    f"{who} embeds strings, but row {i} is {type(value).__name__} "
                    f"({value[:40]!r}). Decode the texts first, with the encoding they "
                    "were written in: [b.decode('utf-8') for b in X]."
                )
            raise TypeError(
                f"{who} embeds strings, but row {i} is {type(value).__name__} "
                f"({value!r:.80}). Convert the column (X.astype(str)) or send numeric "
                "columns to another transformer with ColumnTransformer."
            )
        if not value.isascii():
            _check_encodable(value, i)
    return [str(v) for v in values]


def _check_encodable(text, row):
    """Raise a ``ValueError`` naming ``row`` if ``text`` has no UTF-8 encoding.

    A Python string can hold lone surrogates (U+D800 to U+DFFF): half of an
    emoji split by a truncation, JSON's ``"\\ud83d"`` escapes, bytes decoded
    with ``errors="surrogateescape"``. The tokenizer needs UTF-8, which has no
    encoding for them. They are refused, not replaced: which repair is right
    (join the halves, drop them, a replacement character) depends on where they
    came from, and an embedding of silently altered text is a wrong answer.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"Row {row} of X cannot be encoded as UTF-8, which the tokenizer needs: "
            f"{text[exc.start:exc.end]!r} at position {exc.start} ({exc.reason}), e.g. "
            "a lone surrogate from a truncated emoji or a bad decoding. Repair the "
            "texts first: ftfy.fix_text(t) joins surrogate pairs and replaces lone "
            "ones, or t.encode('utf-8', 'replace').decode('utf-8') replaces each "
            "unencodable character with '?'."
        ) from None


# -- dask collections -------------------------------------------------------------


def _dask_array_type(X):
    # dask is an optional extra: what it has not imported cannot be a dask array.
    if "dask.array" not in sys.modules:
        return False
    import dask.array as da

    return isinstance(X, da.Array)


def is_dask(X):
    """Whether ``X`` is a dask collection (array, DataFrame, Series, bag...)."""
    if "dask" not in sys.modules:
        return False
    import dask

    return dask.is_dask_collection(X)


def check_dask_rows(estimator, X, *, texts=False, reset=False):
    """Check a dask collection ``X`` without computing it; return :class:`DaskRows`.

    Numeric rows: a dask array of at least 2 dimensions or a dask DataFrame;
    texts (``texts=True``): a 1-D dask array, a dask Series or one column.
    Checked here: dimensions, dtype, at least one row, and (unless ``reset``:
    ``fit`` checks its first rows as NumPy and records from them) the row
    shape and a DataFrame's feature names against those seen in ``fit``;
    nothing is recorded on ``estimator``. A DataFrame's
    partition lengths are computed (``to_dask_array(lengths=True)``: one pass,
    one partition at a time). Chunks across the columns are merged (a block
    must hold whole rows); unknown chunk sizes are an error.
    """
    who = type(estimator).__name__
    columns, series = None, False
    if not _dask_array_type(X):
        if not hasattr(X, "to_dask_array"):
            raise TypeError(
                f"{who} takes a dask array, DataFrame or Series; got a dask "
                f"{type(X).__name__}. Convert it (e.g. bag.to_dataframe(), "
                "dask.array.from_delayed) or compute it."
            )
        from sklearn.utils.validation import _check_feature_names

        series = getattr(X, "ndim", 2) == 1
        if not series:
            if not reset:
                import pandas as pd

                # An empty frame of the same columns: scikit-learn reads no
                # names off a dask DataFrame itself.
                _check_feature_names(estimator, pd.DataFrame(columns=X.columns), reset=False)
            columns = list(X.columns)
        else:
            columns = [X.name]
        with warnings.catch_warnings():
            # pandas' string and nullable dtypes become object blocks, which
            # the blocks' own checks read as the NumPy path reads them.
            warnings.filterwarnings("ignore", message="Dask currently has limited support")
            X = X.to_dask_array(lengths=True)
    if any(math.isnan(c) for c in X.chunks[0]):
        raise ValueError(
            f"X is a dask array of unknown chunk sizes (shape {X.shape}), as a "
            "boolean mask or a DataFrame's .values gives; the result's shape "
            "could not be known. Call X.compute_chunk_sizes() first (or "
            "df.to_dask_array(lengths=True))."
        )
    if texts:
        if X.ndim == 2 and X.shape[1] != 1:
            raise ValueError(
                f"{who} takes one text column, but X has {X.shape[1]} columns. "
                "Select the text column first (X[:, i] or df['column'])."
            )
        if X.ndim not in (1, 2):
            raise ValueError(
                f"{who} takes a 1-D dask array of texts (or one column), got "
                f"shape {X.shape}."
            )
        if X.dtype.kind not in "OUS":
            raise TypeError(
                f"{who} embeds strings, but X is a dask array of {X.dtype}. "
                "Convert it (X.astype(str)) or send numeric columns to another "
                "transformer."
            )
        kind = TextRows
    else:
        if X.ndim < 2:
            raise ValueError(
                f"Expected a 2D array, got a {X.ndim}D dask array of shape "
                f"{X.shape} instead: reshape it, e.g. X.reshape(-1, 1) for one "
                "feature or X.reshape(1, -1) for one sample."
            )
        if X.dtype.kind not in "biufO":
            raise ValueError(
                f"{who} takes numeric rows, but X is a dask array of {X.dtype}; "
                "convert it to numbers (X.astype('float32')) first."
            )
        kind = NumericRows
        shape = tuple(int(s) for s in X.shape[1:])
        if not reset:
            expected = _fitted_shape(estimator)
            if expected is not None and len(expected) == 1 == len(shape):
                if shape != tuple(expected):
                    raise ValueError(
                        f"X has {shape[0]} features, but {who} is expecting "
                        f"{expected[0]} features as input."
                    )
            elif expected is not None:
                _check_row_shape(estimator, shape, expected)
    if X.shape[0] == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 "
            f"is required by {who}: X is an empty dask array."
        )
    if any(len(c) > 1 for c in X.chunks[1:]):
        # A block must hold whole rows; merging the column chunks keeps the
        # memory of one block per row chunk.
        X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
    return DaskRows(X, kind, columns, series)


# -- kinds of rows: what the cache needs to know ---------------------------------


class InputKind:
    """Checked input rows of one kind, as the cache and the model see them.

    ``kind_of(rows)`` wraps checked rows in the subclass that describes them;
    the cache then asks only this object about the rows (their format, size,
    keys, a subset), never the rows themselves. Subclasses say which rows
    they describe (:meth:`accepts`) and define the rest.
    """

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    @staticmethod
    def accepts(rows):
        """Whether this kind describes ``rows``."""
        raise NotImplementedError

    @property
    def row_format(self):
        """What a row's key depends on besides its content (hashable)."""
        raise NotImplementedError

    @property
    def row_bytes(self):
        """Bytes of one row as the model sees it (the cache's "auto" rule)."""
        raise NotImplementedError

    def take(self, indices):
        """The rows at ``indices``, as the model takes them."""
        raise NotImplementedError

    def keys(self):
        """One ``bytes`` key per row; equal rows give equal keys in any process."""
        raise NotImplementedError


class NumericRows(InputKind):
    """A numeric ndarray, one row per sample (a table or an N-D tensor).

    The rows' bytes are keyed, so pass the array in the dtype the model sees;
    memory order does not matter.
    """

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


class TextRows(InputKind):
    """A sequence of ``str`` (see :func:`check_texts`)."""

    @staticmethod
    def accepts(rows):
        return isinstance(rows, (list, tuple)) and all(isinstance(r, str) for r in rows[:1])

    @property
    def row_format(self):
        return ("text",)

    @property
    def row_bytes(self):
        return len(self.rows[0].encode("utf-8", "surrogatepass"))

    def take(self, indices):
        return [self.rows[i] for i in indices]

    def keys(self):
        blake2b = hashlib.blake2b
        return [
            blake2b(text.encode("utf-8", "surrogatepass"), digest_size=KEY_SIZE).digest()
            for text in self.rows
        ]


class DaskRows(InputKind):
    """A dask collection of rows, chunked along the rows only (see
    :func:`check_dask_rows`).

    ``rows`` is a dask array with known chunk sizes and one chunk across
    every other axis; each of its blocks, once computed (and rebuilt as a
    DataFrame or Series when the input was one), is rows of ``block_kind``.
    Only :meth:`keys` computes the rows, one block at a time.
    """

    def __init__(self, rows, block_kind=NumericRows, columns=None, series=False):
        super().__init__(rows)
        self.block_kind = block_kind
        self.columns = columns
        self.series = series

    @staticmethod
    def accepts(rows):
        return _dask_array_type(rows)

    def __len__(self):
        return int(self.rows.shape[0])

    @property
    def row_format(self):
        # As the blocks' own kind, once checked: the same keys, the same cache.
        if self.block_kind is TextRows:
            return ("text",)
        return ("array", np.dtype(np.float32).str, tuple(self.rows.shape[1:]))

    @property
    def row_bytes(self):
        if self.block_kind is TextRows:
            return self.block_kind(self.head(1)).row_bytes
        return int(np.prod(self.rows.shape[1:], dtype=np.int64)) * 4

    def take(self, indices):
        return self.rows[indices]

    def block(self, block):
        """A computed block as the NumPy path takes it (a DataFrame or Series
        again when the collection was one, so that its names are checked)."""
        if self.columns is None:
            return block
        import pandas as pd

        if self.series:
            return pd.Series(block, name=self.columns[0])
        return pd.DataFrame(block, columns=self.columns)

    def head(self, n):
        """The first ``n`` rows, computed (only the blocks holding them)."""
        return self.block(np.asarray(self.rows[:n].compute()))

    def keys(self):
        keys = []
        for block in self.rows.to_delayed().ravel():
            block = np.asarray(block.compute())
            if self.block_kind is TextRows:
                keys += TextRows(check_texts(block)).keys()
            else:
                keys += _array_keys(np.ascontiguousarray(block, dtype=np.float32))
        return keys

    def map_blocks(self, func, tail, dtype, name):
        """``func`` on each block, as one lazy dask array.

        ``func`` is a wrapper's NumPy method; it gives ``(block_rows, *tail)``
        values of ``dtype`` per block, which is checked when the block is
        computed (the dask array's metadata would otherwise lie).
        """
        import dask.array as da

        X = self.rows
        tail = tuple(int(t) for t in tail)
        dtype = np.dtype(dtype)
        out_ndim = 1 + len(tail)
        axes = {}
        if out_ndim < X.ndim:
            axes["drop_axis"] = list(range(out_ndim, X.ndim))
        elif out_ndim > X.ndim:
            axes["new_axis"] = list(range(X.ndim, out_ndim))
        return da.map_blocks(
            _run_block,
            X,
            method=func,
            rows=self,
            tail=tail,
            out_dtype=dtype,
            who=name,
            dtype=dtype,
            chunks=(X.chunks[0], *((t,) for t in tail)),
            meta=np.empty((0,) * out_ndim, dtype=dtype),
            # Not dask's token of the arguments: that would pickle the
            # estimator (its whole module) only to name the result.
            name=f"{name.lower()}-{uuid.uuid4().hex}",
            **axes,
        )


def _run_block(block, *, method, rows, tail, out_dtype, who):
    out = np.asarray(method(rows.block(block)))
    if out.shape != (block.shape[0], *tail):
        raise ValueError(
            f"{who} gave a block of shape {out.shape} for {block.shape[0]} rows, "
            f"but its dask result was declared as (n, {', '.join(map(str, tail))}); "
            "this is a bug in skchain, please report it."
        )
    if out.dtype != out_dtype:
        if not np.can_cast(out.dtype, out_dtype, casting="same_kind"):
            raise TypeError(
                f"{who} gave {out.dtype} values where its dask result is {out_dtype}; "
                "compute X and call it on the NumPy array instead."
            )
        out = out.astype(out_dtype)
    return out


#: The kinds of rows the cache knows, tried in order.
KINDS = (NumericRows, TextRows, DaskRows)


def kind_of(rows):
    """Checked ``rows`` wrapped in the :class:`InputKind` that describes them."""
    if isinstance(rows, InputKind):
        return rows
    for kind in KINDS:
        if kind.accepts(rows):
            return kind(rows)
    raise TypeError(
        f"No input kind describes rows of type {type(rows).__name__}; check them "
        "with check_rows or check_texts first."
    )


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
