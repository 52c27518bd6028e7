"""Texts: a collection of strings, checked once, keyed by their UTF-8 bytes.

:func:`check_texts` turns a list, array, Series or one-column DataFrame of
strings into a list of ``str`` (refusing missing values, non-strings, bytes
and strings UTF-8 cannot encode); :class:`TextRows` is that list to the cache.
Texts are keyed by a 128-bit BLAKE2b of their UTF-8 bytes: encoding a text
costs far more than hashing it.
"""

import hashlib

import numpy as np

from ._kind import KEY_SIZE, InputKind, register

__all__ = ["TextRows", "check_texts"]

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


@register
class TextRows(InputKind):
    """A sequence of ``str`` (see :func:`check_texts`)."""

    def __init__(self, rows):
        self.rows = rows

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
