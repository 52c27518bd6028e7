import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Keras reads its backend once, at its first import: skchain runs Keras 3
# models on the torch backend (tests/test_keras.py).
os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

# CI has 2 cores; torch intra-op and BLAS/OpenMP threads above one per process
# only add contention (tiny matrices, and joblib workers running beside us).
torch.set_num_threads(1)
threadpool_limits(limits=1)


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True, scope="session")
def _cache_key_outside_home(tmp_path_factory):
    """The disk cache's key lives in the user's config folder: tests use a
    temporary one (inherited by the subprocesses and joblib workers they
    start), never the real home, and no team key from the environment."""
    config = tmp_path_factory.mktemp("config")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(config))
        patch.delenv("SKCHAIN_CACHE_KEY_FILE", raising=False)
        yield config
