"""The "auto" rule of the frozen-output cache: is a model's row worth keeping?

The cost is counted, not timed: the floating-point operations of one row's
forward pass (torch's own FLOP formulas for matrix products, convolutions and
attention, ``torch.utils.flop_counter``), against the bytes of that row's input
and output. The decision is the same on an idle and on a busy machine, in
every run. Counted by a dispatch mode of this module rather than torch's
``FlopCounterMode``: the counts are the same, but ``FlopCounterMode`` also
installs global module hooks (its module tracker), which would run in every
other thread's forward pass while one model is judged.
"""

import sys

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

__all__ = ["row_flops", "worth_caching"]

# A miss costs hashing the input row (a float64 matrix product over its words,
# about as much as AUTO_FLOPS_PER_INPUT_BYTE / 20 flops of the net per byte),
# copying the output into the store, and a few dictionary operations per row.
# A model is cached when one row's forward pass costs at least 20 times that,
# so that a miss adds at most about 5% to running the model; hits are then far
# faster than recomputing. Calibrated with benchmarks/bench_cache.py, where
# both sides are measured in the same process: the ratio of a flop to a hashed
# byte varies much less between machines than either does.
AUTO_FLOPS_PER_INPUT_BYTE = 600
AUTO_FLOPS_PER_OUTPUT_BYTE = 100
AUTO_FLOPS_PER_ROW = 200_000

class _CountFlops(TorchDispatchMode):
    """Adds up the FLOPs of the torch operations run in this thread.

    Uses torch's own FLOP formulas (``torch.utils.flop_counter``); operations
    without one (element-wise ones, embedding lookups) count zero, so the count
    is a lower bound. Dispatch modes are thread-local: other threads' work is
    neither counted nor slowed.
    """

    def __init__(self):
        super().__init__()
        self.flops = 0

    @classmethod
    def _should_skip_dynamo(cls):
        # torch wraps a mode's __torch_dispatch__ in ``torch._dynamo.disable``,
        # whose first call imports dynamo and sympy: ~70 MB and ~1 s in every
        # process that judges a model (each dask worker, each joblib worker).
        # The wrapper only matters inside compiled code, and nothing can have
        # been compiled in a process that never imported dynamo; the subclass
        # below keeps it for the processes that did (see row_flops).
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        formula = flop_registry.get(func._overloadpacket)
        if formula is None:
            # Composite operations (aten.linear under inference_mode) reach the
            # mode whole: run their decomposition so its matrix products count.
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        return out


class _CountFlopsDynamo(_CountFlops):
    """:class:`_CountFlops` for a process where torch.compile may have run."""

    @classmethod
    def _should_skip_dynamo(cls):
        return True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return super().__torch_dispatch__(func, types, args, kwargs)


def row_flops(compute, row):
    """``(compute(row), flops)``: the output of a one-row batch and the FLOPs
    its forward pass counted."""
    counter = _CountFlopsDynamo() if "torch._dynamo" in sys.modules else _CountFlops()
    with counter:
        out = compute(row)
    return out, counter.flops


def worth_caching(flops, input_bytes, output_bytes):
    """Whether rows of a model are kept by ``cache="auto"``.

    Parameters
    ----------
    flops : int
        FLOPs counted for one row's forward pass.
    input_bytes, output_bytes : int
        Bytes of one row as the model sees it, and of one output row.

    Returns
    -------
    bool
        ``flops >= 600 * input_bytes + 100 * output_bytes + 200_000``.
    """
    threshold = (
        AUTO_FLOPS_PER_INPUT_BYTE * input_bytes
        + AUTO_FLOPS_PER_OUTPUT_BYTE * output_bytes
        + AUTO_FLOPS_PER_ROW
    )
    return flops >= threshold
