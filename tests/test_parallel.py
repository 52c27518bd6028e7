import joblib
import torch

from skchain._parallel import parallel_map


def _threads(_):
    return torch.get_num_threads()


def test_threads_of_this_process_leave_torchs_thread_count_alone():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with joblib.parallel_backend("threading", n_jobs=2):
            seen = parallel_map(_threads, [((i,), {}) for i in range(8)], n_jobs=2)
        # Tasks in threads of this process run with the process's setting and
        # do not set it: set-and-restore from several threads would race.
        assert seen == [2] * 8
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_worker_processes_get_their_share_of_the_cores():
    seen = parallel_map(_threads, [((i,), {}) for i in range(4)], n_jobs=2)
    assert all(n >= 1 for n in seen)
    assert all(n <= max(1, (joblib.cpu_count() or 1) // 2) for n in seen)
