"""A net whose training diverges at a known epoch, shared by the tests of
diverged trainings (training, cross fitting, searches, the bad-input matrix)."""

import torch

from skchain._testing import MLP


class DivergingMLP(MLP):
    """An :class:`~skchain._testing.MLP` whose outputs in training turn NaN from
    its ``nan_from``-th training forward call on (so do the loss, the
    gradients and, after the optimizer's step, the weights).

    With ``b`` batches per epoch, the training diverges at epoch
    ``(nan_from - 1) // b + 1``. Eval-mode calls (transform) are plain.
    """

    def __init__(self, nan_from=1, **kwargs):
        super().__init__(**kwargs)
        self.nan_from = nan_from
        self.calls = 0

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.nan_from:
                out = out * torch.tensor(float("nan"))
        return out
