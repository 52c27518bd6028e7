"""What every kind of input is to the cache and the model: :class:`InputKind`
and the registry of kinds (:data:`KINDS`).

A kind module defines one subclass and registers it with :func:`register`;
:func:`skchain._inputs.kind_of` asks each registered kind whether it
describes the rows (:meth:`InputKind.accepts`). The kinds accept disjoint
types of rows, so the order of registration does not matter. No wrapper and
no cache code names a kind: a new kind of input is a new module.
"""

__all__ = ["KEY_SIZE", "KINDS", "InputKind", "register"]

#: Bytes of a row key made by a cryptographic hash (texts, images).
KEY_SIZE = 16


class InputKind:
    """Checked input rows of one kind, as the cache and the model see them.

    ``kind_of(rows)`` wraps checked rows in the subclass that describes them;
    the cache then asks only this object about the rows (their format, size,
    keys, a subset), never the rows themselves. Subclasses say which rows
    they describe (:meth:`accepts`) and define the rest, their constructor
    included: ``Kind(rows)`` keeps the checked rows as ``self.rows``.
    (The constructor is each kind's own so that the rows, once handed to a
    kind, stay in that kind's module: ``tests/test_layout.py`` counts every
    module they pass through.)
    """

    rows = None

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


#: The registered kinds, which :func:`skchain._inputs.kind_of` asks in turn.
KINDS = []


def register(kind):
    """Class decorator: ``kind`` joins the kinds that ``kind_of`` asks."""
    if kind not in KINDS:
        KINDS.append(kind)
    return kind

