"""Dask collections: a dask array, DataFrame or Series of numeric rows or
texts, checked without computing it.

:func:`check_dask_rows` checks what is known without computing (dimensions,
row shape, dtype, feature names, known chunk sizes, one chunk across the
columns); each block is then checked as its kind when it is computed, so a
NaN in a block raises there exactly what the NumPy path raises.
:meth:`DaskRows.map_blocks` runs a wrapper's NumPy method block by block into
a lazy dask array. dask is an optional extra: nothing here imports it before
the user did.
"""

import math
import sys
import uuid
import warnings

import numpy as np

from ._kind import InputKind, register
from ._numeric import NumericRows, _array_keys, _check_row_shape, _fitted_shape
from ._text import TextRows, check_texts

__all__ = ["DaskRows", "check_dask_rows", "is_dask"]

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


@register
class DaskRows(InputKind):
    """A dask collection of rows, chunked along the rows only (see
    :func:`check_dask_rows`).

    ``rows`` is a dask array with known chunk sizes and one chunk across
    every other axis; each of its blocks, once computed (and rebuilt as a
    DataFrame or Series when the input was one), is rows of ``block_kind``.
    Only :meth:`keys` computes the rows, one block at a time.
    """

    def __init__(self, rows, block_kind=NumericRows, columns=None, series=False):
        self.rows = rows
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
