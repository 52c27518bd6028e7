"""Mini-batches cut from whole tensors: skorch's iterator without per-row work.

skorch hands its ``Dataset`` to a ``torch.utils.data.DataLoader``, which fetches
every row with ``dataset[i]`` and stacks the rows again with ``collate``: for
small nets that per-row path costs as much as the training itself. A raw torch
loop instead converts the data to tensors once and slices a shuffled index.
:class:`TensorBatches` is that loop as an iterator skorch accepts through
``iterator_train``/``iterator_valid``, so callbacks, history, the validation
split and early stopping work as before.

It handles what skorch builds from arrays -- a ``skorch.dataset.Dataset`` over
NumPy arrays, tensors or a dict of them, or a ``torch.utils.data.Subset`` of
one (the validation split) -- and hands anything else (DataFrames, custom datasets,
``num_workers``, a ``collate_fn``) to a ``DataLoader`` unchanged.
"""

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

__all__ = ["TensorBatches"]

# DataLoader options that only mean something for the per-row path; asking for
# any of them with a non-default value keeps the DataLoader.
_LOADER_ONLY = {
    "num_workers": 0,
    "collate_fn": None,
    "pin_memory": False,
    "sampler": None,
    "batch_sampler": None,
    "worker_init_fn": None,
    "prefetch_factor": None,
    "persistent_workers": False,
    "timeout": 0,
}


def _as_tensor(values):
    if isinstance(values, torch.Tensor):
        return values
    if isinstance(values, np.ndarray) and values.dtype != object:
        return torch.from_numpy(np.ascontiguousarray(values))
    return None


def _tensors(dataset):
    """``(X, y, rows)`` as tensors for a plain skorch Dataset (or a Subset of
    one); ``None`` when the dataset is anything else."""
    from skorch.dataset import Dataset

    rows = None
    if isinstance(dataset, Subset):
        rows = torch.as_tensor(np.asarray(dataset.indices), dtype=torch.int64)
        dataset = dataset.dataset
    if type(dataset) is not Dataset:
        return None
    if isinstance(dataset.X, dict):
        # A dict of arrays (as skchain's weighted training passes) is cut
        # key by key, rows aligned, as skorch's multi_indexing does.
        X = {key: _as_tensor(values) for key, values in dataset.X.items()}
        if any(value is None for value in X.values()):
            return None
    else:
        X = _as_tensor(dataset.X)
        if X is None:
            return None
    y = None
    if dataset.y is not None:
        y = _as_tensor(dataset.y)
        if y is None:
            return None
    return X, y, rows


class TensorBatches:
    """Iterate over ``(X_batch, y_batch)`` slices of a skorch dataset.

    Takes the arguments skorch passes to its iterators (``batch_size``,
    ``shuffle``, ``drop_last``, ``generator``, and any ``DataLoader`` option).
    Each epoch draws one permutation (from ``generator``, or torch's global
    generator as ``DataLoader`` does) and yields index-selected slices.

    The order of the rows differs from a ``DataLoader`` with the same seed
    (``DataLoader`` draws its permutation through a derived generator), so
    results for one seed are repeatable but not equal to skorch's default
    iterator's. Without shuffling the batches are the same.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False,
                 generator=None, **loader_kwargs):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator
        self.loader_kwargs = loader_kwargs
        per_row = any(
            loader_kwargs.get(key, default) != default for key, default in _LOADER_ONLY.items()
        )
        unknown = set(loader_kwargs) - set(_LOADER_ONLY)
        self._data = None if per_row or unknown else _tensors(dataset)

    def _loader(self):
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            drop_last=self.drop_last,
            generator=self.generator,
            **self.loader_kwargs,
        )

    def __len__(self):
        if self._data is None:
            return len(self._loader())
        n = self._n_rows()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _n_rows(self):
        X, _, rows = self._data
        if rows is not None:
            return len(rows)
        return len(next(iter(X.values()))) if isinstance(X, dict) else len(X)

    def __iter__(self):
        if self._data is None:
            yield from self._loader()
            return
        X, y, rows = self._data
        n = self._n_rows()
        order = None
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
            if rows is not None:
                order = rows[order]
        elif rows is not None:
            order = rows
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            if order is None:
                # A copy, as DataLoader's collate makes: a module with an
                # in-place first op must not write into the caller's array.
                index = slice(start, start + self.batch_size)
                Xb, yb = _take(X, index, copy=True), _take(y, index, copy=True)
            else:
                index = order[start : start + self.batch_size]
                Xb, yb = _take(X, index), _take(y, index)
            if yb is None:
                # skorch's Dataset gives a 0 placeholder per row when y is None.
                first = next(iter(Xb.values())) if isinstance(Xb, dict) else Xb
                yb = torch.zeros(len(first), 1)
            yield Xb, yb


def _take(values, index, copy=False):
    if values is None:
        return None
    if isinstance(values, dict):
        return {key: _take(value, index, copy) for key, value in values.items()}
    part = values[index]
    return part.clone() if copy else part
