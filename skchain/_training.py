"""Training a skorch net for ``NeuralTransformer``: seeded, serialised, interruptible.

Three things skorch's own ``fit`` does not give a pipeline step:

- **Reproducible seeds under threads.** Weight initialisation, batch shuffling
  and dropout draw from torch's one process-wide generator. ``random_state``
  seeds that generator inside :func:`torch.random.fork_rng` (so the user's own
  torch stream is left as it was), but two fits running in two threads (joblib's
  threading backend, dask's threaded scheduler, a ``ThreadPoolExecutor``) would
  interleave their draws and each would get a different net than when run
  alone. A per-fit ``torch.Generator`` can drive the ``DataLoader`` shuffle, but
  not module constructors nor ``nn.Dropout``, which only know the global one.
  So the whole training -- initialisation, the epochs, the probe of the output
  width -- holds one process-wide lock, :data:`TRAINING_LOCK`. Fits in one
  process therefore train one at a time (each still uses torch's intra-op
  threads); fits in separate processes (joblib's default ``loky`` backend,
  ``dask.distributed``) are not affected. Unseeded fits take the lock too: a
  fit without ``random_state`` drawing beside a seeded one would change it.
- **Ctrl+C stops the fit.** skorch's ``partial_fit`` catches
  ``KeyboardInterrupt`` and returns a half-trained net that looks fitted; a
  search would carry on with it. :func:`train_net` calls the same steps
  (``on_train_begin``, ``fit_loop``, ``on_train_end``) and re-raises.
- **All or nothing.** The net is trained here on a private clone; the caller
  assigns its fitted attributes only once this returns.
- **A diverged training is an error where it happens.** skorch trains on
  through a NaN loss (``lr`` far too high, exploding gradients) and returns a
  net whose outputs are all NaN. :func:`train_net` checks the losses and
  weights at the end of every epoch and raises :class:`DivergedError`
  naming the epoch, the loss and the fix; every net skchain trains
  (``NeuralTransformer.fit``, its cross-fitting folds, the chain searches'
  candidates) goes through it. A search keeps going past such a candidate
  with scikit-learn's ``error_score`` (the default ``np.nan`` gives a
  ``FitFailedWarning`` carrying the message), as for any failed fit.
"""

import functools
import math
import threading
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.utils import check_random_state
from skorch.callbacks import Callback

from ._loop import lean_loop

__all__ = [
    "TRAINING_LOCK",
    "DivergedError",
    "draw_seed",
    "epoch_checkpoints",
    "seeded",
    "train_net",
    "weighted_training",
]

#: Held around every training in this process (see the module docstring).
#: Re-entrant, so a callback that trains another net in the same thread does
#: not deadlock.
TRAINING_LOCK = threading.RLock()


# The checkpoint request of this thread (see epoch_checkpoints): the next
# training in the thread takes it. Thread-local, so a search's task never
# hands its request to a training running in another thread.
_REQUEST = threading.local()


@contextmanager
def epoch_checkpoints(epochs):
    """Keep the module's weights at the end of the given epochs of the next training.

    Within the block, the next :func:`train_net` call in this thread copies
    ``module_.state_dict()`` at the end of each epoch whose number (1-based,
    ``len(net.history)``) is in ``epochs``. Yields ``{epoch: state_dict}``,
    filled as the training passes those epochs. Used by ``ChainSearchCV``
    to evaluate shorter trainings from one long one: after ``k`` epochs of a
    training for ``n > k`` epochs, the weights are those of a training for
    ``k`` epochs, as long as nothing in the training depends on ``n``.
    The optimizer state is not kept: the snapshots are for evaluation.
    """
    snapshots = {}
    _REQUEST.value = (frozenset(epochs), snapshots)
    try:
        yield snapshots
    finally:
        _REQUEST.value = None


def _take_request():
    request = getattr(_REQUEST, "value", None)
    _REQUEST.value = None
    return request


class _Checkpoints(Callback):
    """Copies the module's weights at the end of the requested epochs."""

    def __init__(self, epochs, snapshots):
        self.epochs = epochs
        self.snapshots = snapshots

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        if epoch in self.epochs:
            self.snapshots[epoch] = {
                key: value.detach().clone() for key, value in net.module_.state_dict().items()
            }


class DivergedError(ValueError):
    """A training whose loss or weights stopped being finite; ``epoch`` is
    the (1-based) epoch at whose end it was seen."""

    def __init__(self, message, epoch):
        super().__init__(message)
        self.epoch = epoch

    def __reduce__(self):
        # Raised in joblib's worker processes (cross fitting, searches) and
        # pickled back: the default would call DivergedError(message) alone.
        return type(self), (self.args[0], self.epoch)


class _FiniteTraining(Callback):
    """Raises :class:`DivergedError` at the end of the first epoch whose
    losses or weights are NaN or infinite, instead of training on."""

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        row = net.history[-1]
        found = _bad_loss(row)
        if found is None:
            found = _bad_tensor(net)
        if found is not None:
            raise DivergedError(_diverged_message(net, epoch, found), epoch)


_LOSSES = {"train_loss": "training loss", "valid_loss": "validation loss"}


def _bad_loss(row):
    """What is not finite among an epoch's losses (``None``: all finite)."""
    # The epoch's train_loss (skorch's PassthroughScoring) is the mean of its
    # batches' losses: finite exactly when they all are, barring overflow.
    # The batches are read only to say which one (or when a net's callbacks
    # were disabled and the epoch has no mean).
    if all(math.isfinite(row[key]) for key in _LOSSES if key in row):
        if "train_loss" in row:
            return None
    for i, batch in enumerate(row.get("batches", ()), start=1):
        for key, what in _LOSSES.items():
            loss = batch.get(key)
            if loss is not None and not math.isfinite(loss):
                return f"the {what} is {loss} (first at batch {i} of the epoch)"
    for key, what in _LOSSES.items():
        if key in row and not math.isfinite(row[key]):
            return f"the {what} is {row[key]}"
    return None


def _bad_tensor(net):
    """The first learnable parameter (or float buffer) that is not finite."""
    with torch.no_grad():
        for name, param in net.get_all_learnable_params():
            if not bool(torch.isfinite(param).all()):
                return f"the weights {name!r} hold NaN or infinity"
        module = getattr(net, "module_", None)
        if isinstance(module, torch.nn.Module):
            for name, buffer in module.named_buffers():
                if buffer.is_floating_point() and not bool(torch.isfinite(buffer).all()):
                    return f"the buffer {name!r} holds NaN or infinity"
    return None


def _diverged_message(net, epoch, found):
    lr = getattr(net, "lr", None)
    try:
        shown = f"{float(lr):g}"
    except (TypeError, ValueError):  # None, or a schedule object
        shown = None if lr is None else repr(lr)
    now = "" if shown is None else f" (now lr={shown}; net__lr in a NeuralTransformer)"
    return (
        f"The training of {type(net).__name__} diverged at epoch {epoch}: {found}, so "
        "its outputs would be NaN or meaningless. Lower the learning rate"
        f"{now}, clip the gradients with skorch's GradientNormClipping callback "
        "(callbacks=[GradientNormClipping(gradient_clip_value=1.0)]), or scale the "
        "input (StandardScaler) and, for a regressor, the target."
    )


def draw_seed(random_state):
    """An int seed drawn from ``random_state`` (``None`` stays ``None``)."""
    if random_state is None:
        return None
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


@contextmanager
def seeded(seed):
    """Seed torch's global generators for the block and restore them after.

    ``seed=None`` leaves the generators alone (an unseeded fit). Hold
    :data:`TRAINING_LOCK` around it: the generators are process-wide.
    """
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def train_net(
    net, X, y, *, seed=None, fit_params=None, after_initialize=None, sample_weight=None
):
    """Initialise and train the skorch ``net`` in place; return it.

    Parameters
    ----------
    net : skorch.NeuralNet
        A private clone (it is re-initialised).
    X, y : arrays as skorch takes them.
    seed : int or None
        Seeds initialisation, shuffling and dropout (see :func:`seeded`).
    fit_params : dict or None
        Passed to skorch's ``fit_loop`` (its ``forward`` and ``train_split``).
    after_initialize : callable or None
        Called with the initialised net before the first epoch, inside the
        seeded section (e.g. a check that the output fits the target; a lazy
        layer it materialises draws its initial weights from the seed).
    sample_weight : ndarray of shape (n_samples,) or None
        Weights of the rows in the loss: see :func:`weighted_training`.

    Raises
    ------
    KeyboardInterrupt
        Propagates: unlike skorch's ``partial_fit``, an interrupted training is
        not returned as if it were done. ``on_train_end`` is still called so
        callbacks can close what they opened.
    """
    fit_params = {} if fit_params is None else fit_params
    if sample_weight is not None:
        net.set_params(criterion__reduction="none")
    with TRAINING_LOCK, seeded(seed):
        try:
            net.initialize()
        except TypeError as exc:
            if sample_weight is None or "reduction" not in str(exc):
                raise
            raise ValueError(
                f"sample_weight needs a criterion that gives one loss per row "
                f"(reduction='none'); {net.criterion!r} does not take 'reduction' "
                f"({exc}). Use a torch loss, or train without sample_weight."
            ) from exc
        if after_initialize is not None:
            after_initialize(net)
        # After the net's own callbacks (its epoch's train_loss is theirs);
        # before the checkpoints, so no diverged epoch is kept.
        net.callbacks_.append((_FINITE, _FiniteTraining()))
        request = _take_request()
        if request is not None:
            # Last, so the epoch's own callbacks (history, timers) have run.
            net.callbacks_.append((_CHECKPOINTS, _Checkpoints(*request)))
        try:
            with weighted_training(net, X, sample_weight) as X_fit, lean_loop(net):
                net.notify("on_train_begin", X=X, y=y)
                try:
                    net.fit_loop(X_fit, y, **fit_params)
                except KeyboardInterrupt:
                    net.notify("on_train_end", X=X, y=y)
                    raise
                net.notify("on_train_end", X=X, y=y)
        finally:
            # The fitted net keeps only its own callbacks.
            net.callbacks_ = [(n, cb) for n, cb in net.callbacks_
                              if n not in (_FINITE, _CHECKPOINTS)]
    return net


_FINITE, _CHECKPOINTS = "skchain_finite", "skchain_checkpoints"


_X, _WEIGHT = "X", "skchain_sample_weight"


@contextmanager
def weighted_training(net, X, sample_weight):
    """Train ``net`` with a loss weighted per row by ``sample_weight``.

    skorch batches a dict of arrays row by row, so the weights travel beside X
    as ``{"X": X, "skchain_sample_weight": w}`` and every batch keeps its own
    weights. For the training only, the net's ``infer`` hands the module the
    bare X (the module never sees the weights), and its ``get_loss`` turns the
    criterion's per-row losses (``reduction="none"``) into ``mean(w * loss)``:
    weights of one give the unweighted mean, and the loss scales with them as
    scikit-learn's ``sample_weight`` does. Yields what to pass to ``fit_loop``.
    """
    if sample_weight is None:
        yield X
        return
    state = vars(net)
    state["infer"] = functools.partial(_infer_bare, net)
    state["get_loss"] = functools.partial(_weighted_loss, net)
    try:
        yield {_X: X, _WEIGHT: sample_weight}
    finally:
        # The fitted net keeps its class's own methods (and pickles as before).
        state.pop("infer", None)
        state.pop("get_loss", None)


def _infer_bare(net, x, **fit_params):
    return type(net).infer(net, x[_X], **fit_params)


def _weighted_loss(net, y_pred, y_true, X=None, training=False):
    weight = X[_WEIGHT]
    loss = type(net).get_loss(net, y_pred, y_true, X=X[_X], training=training)
    n = weight.shape[0]
    if loss.ndim == 0 or loss.shape[0] != n:
        raise ValueError(
            f"sample_weight needs one loss per row, but {type(net).__name__}.get_loss "
            f"returned shape {tuple(loss.shape)} for a batch of {n} rows; its "
            "criterion must honour reduction='none' (a custom get_loss must not "
            "reduce the criterion's output)."
        )
    loss = loss.reshape(n, -1).mean(dim=1)
    return (loss * weight.to(loss.device, loss.dtype)).mean()
