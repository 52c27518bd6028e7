"""skorch's training loop without the calls that do nothing.

Per batch, skorch's ``run_single_epoch`` and ``train_step`` notify every
callback three times (``on_batch_begin``, ``on_grad_computed``,
``on_batch_end``) and switch every module to training mode again. With the
default callbacks almost all of those calls land in ``Callback``'s empty
methods, and ``Module.train`` walks the module tree through
``Module.__setattr__`` (about 30 us for a 3-layer MLP here, 2 us for the
check below). At every epoch's end ``PrintLog`` formats its table even when
``verbose=0`` drops it (about 0.25 ms). Together: some 5% of a small net's
training against a raw torch loop (``benchmarks/bench_neural.py``).

:func:`lean_loop` swaps in, for one training and on the instance only (the
way :func:`skchain._training.weighted_training` swaps ``infer``), versions of
``notify``, ``run_single_epoch``, ``train_step`` and ``_set_training`` that do
what skorch's do, in the same order, except:

- a callback's hook is called only when the callback defines it beyond
  ``Callback``'s empty method (the net's own hooks always are); which batch
  hooks are defined is looked up once per epoch;
- a ``PrintLog`` that prints nothing (``verbose=0``, the default ``print``
  sink) does not format the epoch's table;
- the modules are switched to training/evaluation mode only when one of them
  is not in that mode already; a net with a module class that defines its own
  ``train`` (to keep batch norm frozen, say) is switched at every batch, as
  skorch does. The modules are listed once per epoch: one added to the net in
  the middle of an epoch is switched from the next epoch on.

A method is swapped only when the net's class does not override it (nor
``notify``), so a subclass's own loop runs unchanged. Results are the same as
skorch's own loop for the same seed (``tests/test_loop.py``): nothing here
draws random numbers.
"""

from contextlib import contextmanager

import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, PrintLog
from skorch.dataset import get_len

__all__ = ["lean_loop"]


def _hooks(net, name):
    """The net's own ``name`` hook, then those of its callbacks that do
    something (not ``Callback``'s empty method)."""
    base = getattr(Callback, name)
    # The net's own always runs: its on_batch_begin and on_epoch_begin open
    # the history's entries, and a subclass may do anything in the others.
    hooks = [getattr(net, name)]
    for _, cb in net.callbacks_:
        if name in vars(cb) or getattr(type(cb), name, None) is not base:
            if name == "on_epoch_end" and _prints_nothing(net, cb):
                continue
            hooks.append(getattr(cb, name))
    return hooks


def _prints_nothing(net, cb):
    # PrintLog formats the epoch's table (about 0.25 ms) and then, with
    # verbose=0 and the default sink, drops it.
    return type(cb) is PrintLog and cb.sink is print and not net.verbose


def _notify(net, method_name, **cb_kwargs):
    for hook in _hooks(net, method_name):
        hook(net, **cb_kwargs)


def _parts(net):
    """Every module and submodule of the net's modules and criteria, or
    ``None`` when one of them has its own ``train`` (which must then run at
    every switch, whatever the flags say)."""
    parts = []
    for name in net._modules + net._criteria:
        module = getattr(net, name + "_", None)
        if isinstance(module, torch.nn.Module):
            parts.extend(module.modules())
    if any(type(part).train is not torch.nn.Module.train for part in parts):
        return None
    return parts


def _set_training(net, training=True):
    epoch = vars(net).get(_EPOCH)
    parts = _parts(net) if epoch is None else epoch[1]
    # A flat list: walking module.modules() per batch measured 3-4% of a small
    # net's training.
    if parts is not None and all(part.training is training for part in parts):
        return
    type(net)._set_training(net, training)


# What run_single_epoch looked up for the epoch's batches.
_EPOCH = "_skchain_epoch"


def _run_single_epoch(net, iterator, training, prefix, step_fn, **fit_params):
    if iterator is None:
        return
    begin, end = _hooks(net, "on_batch_begin"), _hooks(net, "on_batch_end")
    vars(net)[_EPOCH] = (_hooks(net, "on_grad_computed"), _parts(net))
    batch_count = 0
    for batch in iterator:
        for hook in begin:
            hook(net, batch=batch, training=training)
        step = step_fn(batch, **fit_params)
        net.history.record_batch(prefix + "_loss", step["loss"].item())
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        # len() of a tensor is what skorch's get_len finds, 5x quicker.
        net.history.record_batch(
            prefix + "_batch_size", len(first) if type(first) is torch.Tensor else get_len(first)
        )
        for hook in end:
            hook(net, batch=batch, training=training, **step)
        batch_count += 1
    net.history.record(prefix + "_batch_count", batch_count)


def _train_step(net, batch, **fit_params):
    accumulator = net.get_train_step_accumulator()
    epoch = vars(net).get(_EPOCH)
    hooks = _hooks(net, "on_grad_computed") if epoch is None else epoch[0]

    def step_fn():
        net._zero_grad_optimizer()
        step = net.train_step_single(batch, **fit_params)
        accumulator.store_step(step)
        for hook in hooks:
            hook(net, named_parameters=net.get_all_learnable_params(), batch=batch,
                 training=True)
        return step["loss"]

    net._step_optimizer(step_fn)
    return accumulator.get_step()


_SWAPS = {
    "notify": (_notify, ("notify",)),
    "run_single_epoch": (_run_single_epoch, ("run_single_epoch", "notify")),
    "train_step": (_train_step, ("train_step", "notify")),
    "_set_training": (_set_training, ("_set_training",)),
}


# A net pickled in the middle of a training (skorch's Checkpoint with
# f_pickle) carries these bound methods; pickle saves a bound method as
# getattr(net, its name), so each takes the name it stands in for, and the
# loaded net gets its class's own method.
for _name, (_fn, _) in _SWAPS.items():
    _fn.__name__ = _name


@contextmanager
def lean_loop(net):
    """Train ``net`` (a skorch net) through the lean loop within the block."""
    state = vars(net)
    swapped = []
    for name, (fn, needs) in _SWAPS.items():
        if name in state or any(
            getattr(type(net), need) is not getattr(NeuralNet, need) for need in needs
        ):
            continue
        state[name] = fn.__get__(net)
        swapped.append(name)
    try:
        yield net
    finally:
        for name in swapped:
            state.pop(name, None)
        state.pop(_EPOCH, None)
