import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier, NeuralNetRegressor
from skorch.callbacks import EarlyStopping
from skorch.dataset import Dataset, ValidSplit
from torch import nn
from torch.utils.data import Subset

from skchain._batches import TensorBatches


@pytest.fixture
def data():
    rng = np.random.RandomState(0)
    X = rng.randn(103, 5).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    return X, y


def _all(iterator):
    batches = list(iterator)
    return batches, torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


@pytest.mark.parametrize("drop_last", [False, True])
def test_without_shuffle_the_batches_are_the_dataloaders(data, drop_last):
    X, y = data
    ds = Dataset(X, y)
    ours = TensorBatches(ds, batch_size=10, drop_last=drop_last)
    theirs = torch.utils.data.DataLoader(ds, batch_size=10, drop_last=drop_last)
    assert len(ours) == len(theirs) == (10 if drop_last else 11)
    for (xa, ya), (xb, yb) in zip(ours, theirs, strict=True):
        assert torch.equal(xa, xb)
        assert torch.equal(ya, yb)


def test_shuffle_covers_every_row_once_per_epoch_and_follows_the_generator(data):
    X, y = data
    ds = Dataset(X, y)
    gen = torch.Generator().manual_seed(5)
    first = _all(TensorBatches(ds, batch_size=16, shuffle=True, generator=gen))[1]
    assert sorted(first[:, 0].tolist()) == sorted(X[:, 0].tolist())
    again = _all(
        TensorBatches(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(5))
    )[1]
    assert torch.equal(first, again)
    assert not torch.equal(first, torch.from_numpy(X))


def test_a_subset_yields_only_its_rows(data):
    X, y = data
    rows = [3, 7, 50, 51, 99]
    _, Xs, ys = _all(TensorBatches(Subset(Dataset(X, y), rows), batch_size=2))
    assert torch.equal(Xs, torch.from_numpy(X[rows]))
    assert torch.equal(ys, torch.from_numpy(y[rows]))


def test_batches_are_copies_of_the_callers_array(data):
    X, y = data
    X = X.copy()
    before = X.copy()
    for Xb, _ in TensorBatches(Dataset(X, y), batch_size=8):
        Xb.mul_(0)
    np.testing.assert_array_equal(X, before)


def test_no_target_gives_skorchs_placeholder(data):
    X, _ = data
    (Xb, yb), *_ = TensorBatches(Dataset(X, None), batch_size=4)
    assert Xb.shape == (4, 5)
    assert yb.shape == (4, 1)


def test_anything_else_goes_to_the_dataloader(data):
    X, y = data
    listed = Dataset([X[:, :2], X[:, 2:]], y)
    batches = list(TensorBatches(listed, batch_size=50))
    assert isinstance(batches[0][0], list)
    assert len(batches) == 3
    collated = list(TensorBatches(Dataset(X, y), batch_size=50, collate_fn=lambda rows: rows))
    assert isinstance(collated[0], list)


def _net(cls=NeuralNetClassifier, **kwargs):
    kwargs = {"iterator_train": TensorBatches, "iterator_valid": TensorBatches,
              "max_epochs": 4, **kwargs}
    return cls(
        nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2)),
        criterion=nn.CrossEntropyLoss,
        lr=0.1,
        iterator_train__shuffle=True,
        verbose=0,
        **kwargs,
    )


def test_skorch_trains_with_it_and_keeps_history_validation_and_callbacks(data):
    X, y = data
    torch.manual_seed(0)
    net = _net(train_split=ValidSplit(4), callbacks=[EarlyStopping(patience=1, threshold=1e9)])
    net.fit(X, y)
    # Early stopping with an impossible threshold stops after patience epochs.
    assert len(net.history) == 2
    assert net.history[-1, "batches", 0, "train_batch_size"] > 0
    assert "valid_loss" in net.history[-1]
    # The same rows are trained and validated as with skorch's DataLoader.
    torch.manual_seed(0)
    reference = _net(train_split=ValidSplit(4), iterator_train=torch.utils.data.DataLoader,
                     iterator_valid=torch.utils.data.DataLoader).fit(X, y)
    for key in ("train_batch_size", "valid_batch_size"):
        ours = [b[key] for b in net.history[0, "batches"] if key in b]
        theirs = [b[key] for b in reference.history[0, "batches"] if key in b]
        assert ours == theirs


def test_same_seed_same_net(data):
    X, y = data
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append(_net(train_split=None).fit(X, y).predict_proba(X))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_regressor_learns(data):
    X, _ = data
    target = X[:, :1] * 2
    torch.manual_seed(0)
    net = NeuralNetRegressor(
        nn.Linear(5, 1), lr=0.1, max_epochs=30, train_split=None, verbose=0,
        iterator_train=TensorBatches, iterator_train__shuffle=True, batch_size=16,
    ).fit(X, target)
    assert net.history[-1, "train_loss"] < 0.1 * net.history[0, "train_loss"]


def test_a_dict_of_arrays_is_cut_key_by_key(data):
    X, y = data
    ds = Dataset({"a": X[:, :2], "b": X[:, 2:]}, y)
    ours = list(TensorBatches(ds, batch_size=40))
    theirs = list(torch.utils.data.DataLoader(ds, batch_size=40))
    assert len(ours) == len(theirs) == 3
    for (xa, ya), (xb, yb) in zip(ours, theirs, strict=True):
        assert xa.keys() == xb.keys()
        for key in xa:
            assert torch.equal(xa[key], xb[key])
        assert torch.equal(ya, yb)
