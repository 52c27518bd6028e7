"""The input contract: what a user hands in, as the model call needs it.

Every wrapper checks its ``X`` here, once, and gets back what its models run
on; the frozen-output cache asks the same package for the keys of those rows.
A kind of input is one module holding one :class:`InputKind` subclass -- how
one of its rows is described (:attr:`~InputKind.row_format`), sized, sliced
and keyed -- and the ``check_*`` function that the wrappers call for it.
:func:`kind_of` finds the kind of checked rows by asking each registered kind
(:data:`KINDS`), so a new kind of input is a new module, never a branch in
each wrapper or in the cache.

- **Numeric rows** (:mod:`._numeric`, :class:`NumericRows`): 2-D tables and
  N-D tensors ``(n, ...)``, checked by :func:`check_rows` with scikit-learn's
  ``validate_data`` into C-ordered float32.
- **Texts** (:mod:`._text`, :class:`TextRows`): :func:`check_texts` turns a
  list, array, Series or one-column DataFrame of strings into a list of
  ``str``.
- **Dask collections** (:mod:`._dask`, :class:`DaskRows`): a dask array,
  DataFrame or Series of either kind above, not loaded;
  :func:`check_dask_rows` checks what is known without computing it, and
  each block is checked as its kind when it is computed.
- **Images** (:mod:`._images`, :class:`ImageRows`): image file paths, PIL
  images and pixel arrays for the embedders; :func:`check_images` checks
  them without decoding.

Row keys (:meth:`InputKind.keys`) are what the cache stores outputs under:
equal rows give equal keys in any process.

The error vocabulary is shared: every check raises ``TypeError`` for input of
the wrong type and ``ValueError`` for wrong values or shapes, naming the row,
file or shape at fault and the fix; :func:`module_refuses` is the message for
a module that cannot take rows of the checked shape.
"""

from ._dask import DaskRows, check_dask_rows, is_dask
from ._images import ImageRows, check_images, open_image, size_message
from ._kind import KINDS, InputKind, register
from ._numeric import (
    VALIDATION_ATTRIBUTES,
    NumericRows,
    all_finite,
    check_finite_input,
    check_rows,
    check_rows_deferred,
    module_refuses,
    validate_numeric,
)
from ._text import TextRows, check_texts

__all__ = [
    "KINDS",
    "VALIDATION_ATTRIBUTES",
    "DaskRows",
    "ImageRows",
    "InputKind",
    "NumericRows",
    "TextRows",
    "all_finite",
    "check_dask_rows",
    "check_finite_input",
    "check_images",
    "check_rows",
    "check_rows_deferred",
    "check_texts",
    "is_dask",
    "kind_of",
    "module_refuses",
    "open_image",
    "register",
    "size_message",
    "validate_numeric",
]


def kind_of(rows):
    """Checked ``rows`` wrapped in the :class:`InputKind` that describes them:
    the registered kind that accepts them (an ``InputKind`` is returned as it is)."""
    if isinstance(rows, InputKind):
        return rows
    for kind in KINDS:
        if kind.accepts(rows):
            return kind(rows)
    raise TypeError(
        f"No input kind describes rows of type {type(rows).__name__}; check them "
        "with the input contract first (check_rows, check_texts, check_images)."
    )
