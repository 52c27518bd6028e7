"""Training length shared in a search: one training per fold for many ``max_epochs``.

Candidates that configure a :class:`~skchain.NeuralTransformer` step
identically except for ``net__max_epochs`` train the same net: epochs are
run one after the other, so after ``k`` epochs a training for ``n > k``
epochs holds exactly the weights a training for ``k`` epochs ends with --
provided nothing in the training looks at ``n`` or at held-out rows.
:func:`shares_epochs` says when that holds; :func:`share_keys` groups such
candidates together; :func:`fit_epochs` trains once for the longest length
and gives one fitted step per length, the shorter ones from checkpoints
(:func:`skchain._training.epoch_checkpoints`).

Sharing is off (each length trains on its own, as in ``GridSearchCV``) when
the net could behave differently within the first ``k`` epochs of a longer
training:

- ``warm_start=True`` (a training continues the previous one);
- ``train_split`` not ``None`` (validation-driven callbacks, e.g. early
  stopping, would see held-out scores);
- any callback of the user's (``callbacks`` other than ``None``, ``[]`` or
  ``"disable"``): a learning-rate schedule may depend on the total length
  (``LRScheduler`` with ``CosineAnnealingLR(T_max=max_epochs)``),
  ``EarlyStopping`` ends trainings early; skchain cannot tell which do not;
- a step that cross-fits in ``fit_transform`` (``cv`` not ``None`` with a
  target-aligned output): its fold nets would each need checkpoints;
- a net used as it is (plain module, ``frozen=True``: nothing is trained), a
  ``max_epochs`` that is not a positive integer.
"""

import copy
import time
from numbers import Integral

from sklearn.base import clone
from skorch import NeuralNet
from skorch.history import History

from .._inputs import VALIDATION_ATTRIBUTES
from .._neural import NeuralTransformer
from .._outputs import target_aligned
from .._training import epoch_checkpoints
from ._prefix_tree import prefix_ids

__all__ = ["EPOCHS", "fit_epochs", "share_keys", "shares_epochs"]

#: The NeuralTransformer parameter whose values share one training.
EPOCHS = "net__max_epochs"


def shares_epochs(step):
    """Whether trainings of ``step`` for different ``max_epochs`` can share one."""
    if type(step) is not NeuralTransformer or step._uses_pretrained:
        return False
    net = step.net
    if not isinstance(net, NeuralNet):
        return False
    epochs = net.max_epochs
    if not isinstance(epochs, Integral) or isinstance(epochs, bool) or epochs < 1:
        return False
    callbacks = net.callbacks
    no_callbacks = callbacks is None or (isinstance(callbacks, str) and callbacks == "disable")
    no_callbacks = no_callbacks or (isinstance(callbacks, list | tuple) and not callbacks)
    cross_fits = not (
        step.cv is None
        or (isinstance(step.cv, str) and step.cv == "auto" and not target_aligned(step.output))
    )
    return (
        no_callbacks
        and net.warm_start is False
        and net.train_split is None
        and not cross_fits
    )


def share_keys(candidate_params, step_names, steps, ids):
    """``keys[c][d]``: candidates with equal keys at ``d`` may share step ``d``'s fit.

    Equal to ``("fit", ids[c][d])`` (the same prefix, see
    :func:`~._prefix_tree.prefix_ids`), except at a non-final step whose
    ``max_epochs`` the candidate sets and that :func:`shares_epochs`: there
    the key ignores ``max_epochs`` at that step, so candidates that train
    the same net for different lengths (same steps before it) get one key.
    """
    relaxed_params = []
    relaxed = []
    for params, pipe_steps in zip(candidate_params, steps, strict=True):
        depths = set()
        for depth, (name, step) in enumerate(pipe_steps[:-1]):
            if f"{name}__{EPOCHS}" in params and shares_epochs(step):
                depths.add(depth)
        drop = {f"{pipe_steps[d][0]}__{EPOCHS}" for d in depths}
        relaxed_params.append({k: v for k, v in params.items() if k not in drop})
        relaxed.append(depths)
    loose = prefix_ids(relaxed_params, step_names)
    keys = []
    for row, loose_row, depths in zip(ids, loose, relaxed, strict=True):
        keys.append(
            [
                ("epochs", row[d - 1] if d else -1, loose_row[d]) if d in depths else ("fit", i)
                for d, i in enumerate(row)
            ]
        )
    return keys


def fit_epochs(steps, fit, X_fit):
    """Train once for the longest ``max_epochs`` of ``steps``; one fitted step per length.

    ``steps`` maps ``max_epochs`` to an unfitted step (configured identically
    otherwise). ``fit(step)`` fits a clone's ``fit_transform`` on the fold
    and returns ``(outputs, fitted step)``. Returns ``{max_epochs: (fitted
    step, fit_transform outputs)}`` and the seconds spent: the longest length
    is the trained step; a shorter ``k`` is a copy with the weights of the
    end of epoch ``k`` and ``net_.history`` cut to ``k`` epochs. Its outputs
    are its ``transform`` of ``X_fit``, which is its ``fit_transform``
    output, since a step that shares epochs does not cross-fit.
    """
    longest = max(steps)
    start = time.time()
    with epoch_checkpoints(set(steps) - {longest}) as snapshots:
        Xt_longest, trained = fit(clone(steps[longest]))
    missing = set(steps) - {longest} - set(snapshots)
    if missing:  # pragma: no cover - a training that ends before max_epochs
        raise RuntimeError(
            f"The training for {longest} epochs stopped before epochs {sorted(missing)}; "
            "set net__max_epochs separately or use GridSearchCV."
        )
    fitted = {longest: (trained, Xt_longest)}
    for epochs in sorted(set(steps) - {longest}):
        step = _at_epoch(trained, clone(steps[epochs]), snapshots[epochs], epochs)
        fitted[epochs] = (step, step.transform(X_fit))
    return fitted, time.time() - start


def _at_epoch(trained, step, weights, epochs):
    """``step`` (unfitted, ``max_epochs=epochs``) fitted as ``trained`` was
    after ``epochs`` epochs. Nothing of ``trained`` is changed."""
    module = copy.deepcopy(trained.module_)
    module.load_state_dict(weights)
    # A shallow copy of the trained skorch net, with its own module and
    # history (copy.copy would go through skorch's pickling __getstate__).
    # The optimizer is the long training's: it is not used to transform.
    net = object.__new__(type(trained.net_))
    vars(net).update(vars(trained.net_))
    vars(net)["module_"] = module
    vars(net)["history_"] = History(copy.deepcopy(list(trained.net_.history)[:epochs]))
    vars(net)["max_epochs"] = epochs
    state = trained._state()
    state.update(net_=net, module_=module)
    step._set_state(state)
    for attr in VALIDATION_ATTRIBUTES:
        if hasattr(trained, attr):
            setattr(step, attr, getattr(trained, attr))
    return step
