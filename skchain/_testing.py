"""Small nets shared by the tests, the benchmarks and the examples (public as
:mod:`skchain.datasets`).

They are module-level classes so that nets built from them pickle, and the
lazy first layer lets one net accept any number of input features (which the
scikit-learn estimator checks need).
"""

import torch
from torch import nn

__all__ = ["MLP", "RowStats", "make_classifier_net", "make_regressor_net", "train_module"]


class MLP(nn.Module):
    """``LazyLinear -> ReLU -> Linear -> ReLU -> Linear``: a tiny tabular net.

    Parameters
    ----------
    hidden : int, default=32
        Width of the two hidden layers.
    n_out : int, default=2
        Number of outputs (classes, or regression targets).
    dropout : float, default=0.0
    """

    def __init__(self, hidden=32, n_out=2, dropout=0.0):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.LazyLinear(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.head(self.encoder(x))


class RowStats(nn.Module):
    """A "pretrained" module that takes any number of features.

    It summarises each row by its mean, standard deviation, min and max and
    maps them through a fixed random linear layer: a stand-in for a frozen
    feature extractor in tests that vary the input width.
    """

    def __init__(self, n_out=3, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(4, n_out)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(n_out, 4, generator=generator))
            self.proj.bias.copy_(torch.randn(n_out, generator=generator))

    def forward(self, x):
        stats = torch.stack([x.mean(1), x.std(1, unbiased=False), x.amin(1), x.amax(1)], dim=1)
        return self.proj(stats)


def make_classifier_net(n_classes=2, hidden=16, max_epochs=5, lr=0.05, **kwargs):
    """A skorch ``NeuralNetClassifier`` over :class:`MLP` with logits output."""
    from skorch import NeuralNetClassifier

    params = dict(
        module=MLP,
        module__hidden=hidden,
        module__n_out=n_classes,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        max_epochs=max_epochs,
        lr=lr,
        batch_size=64,
        train_split=None,
        verbose=0,
    )
    params.update(kwargs)
    return NeuralNetClassifier(**params)


def make_regressor_net(n_targets=1, hidden=16, max_epochs=5, lr=0.01, **kwargs):
    """A skorch ``NeuralNetRegressor`` over :class:`MLP`."""
    from skorch import NeuralNetRegressor

    params = dict(
        module=MLP,
        module__hidden=hidden,
        module__n_out=n_targets,
        optimizer=torch.optim.Adam,
        max_epochs=max_epochs,
        lr=lr,
        batch_size=64,
        train_split=None,
        verbose=0,
    )
    params.update(kwargs)
    return NeuralNetRegressor(**params)


def train_module(module, X, y, epochs, lr=0.01):
    """Train ``module`` in place as a classifier with skorch; return the module.

    For building "pretrained" models in tests and benchmarks: Adam, logits
    with cross entropy, shuffled batches of 64, no validation split.
    """
    from skorch import NeuralNetClassifier

    net = NeuralNetClassifier(
        module,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=lr,
        max_epochs=epochs,
        batch_size=64,
        train_split=None,
        iterator_train__shuffle=True,
        verbose=0,
    )
    return net.fit(X, y).module_
