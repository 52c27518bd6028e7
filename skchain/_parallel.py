"""joblib parallelism that does not oversubscribe the cores.

Every parallel loop in skchain (cross-fitted folds, chain search) goes through
:func:`parallel_map`, so it runs on whatever joblib backend is active --
processes by default, a ``dask.distributed`` cluster inside
``joblib.parallel_backend("dask")`` -- and each task limits torch's and the BLAS
libraries' threads to its share of the machine. Without that, two workers with
a full set of threads each run several times slower than one worker alone.
"""

import os
from contextlib import contextmanager

import torch
from joblib import effective_n_jobs
from sklearn.utils.parallel import Parallel, delayed
from threadpoolctl import threadpool_limits

__all__ = ["parallel_map", "limit_threads", "threads_per_task"]


def threads_per_task(n_jobs):
    """Threads each of ``n_jobs`` concurrent tasks may use: the cores, shared."""
    n_workers = max(1, effective_n_jobs(n_jobs))
    if n_workers == 1:
        return None  # sequential: leave the user's own settings alone
    return max(1, (os.cpu_count() or 1) // n_workers)


@contextmanager
def limit_threads(n_threads):
    """Limit torch intra-op and BLAS/OpenMP threads inside the block."""
    if n_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        with threadpool_limits(limits=n_threads):
            yield
    finally:
        torch.set_num_threads(previous)


def _call_limited(fn, n_threads, caller_pid, args, kwargs):
    if os.getpid() == caller_pid:
        # A thread of the caller's own process (joblib's threading backend,
        # dask's threaded scheduler): torch's thread count is process-wide, so
        # tasks setting and restoring it at once would leave it wrong.
        return fn(*args, **kwargs)
    with limit_threads(n_threads):
        return fn(*args, **kwargs)


def parallel_map(fn, tasks, *, n_jobs=None, verbose=0, pre_dispatch="2*n_jobs"):
    """``[fn(*args, **kwargs) for args, kwargs in tasks]`` through joblib.

    Parameters
    ----------
    fn : callable
    tasks : iterable of (tuple, dict)
        Positional and keyword arguments of each call.
    n_jobs : int or None
        As in scikit-learn: ``None`` is 1 unless a joblib context says
        otherwise, ``-1`` all cores.
    """
    n_threads = threads_per_task(n_jobs)
    parallel = Parallel(n_jobs=n_jobs, verbose=verbose, pre_dispatch=pre_dispatch)
    return parallel(
        delayed(_call_limited)(fn, n_threads, os.getpid(), args, kwargs)
        for args, kwargs in tasks
    )
