"""Dask in, dask out: lazy results with the right chunks and metadata, equal to
the NumPy path, computed block by block (skchain/_dask.py, _inputs.DaskRows)."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from skorch import NeuralNetRegressor
from torch import nn

da = pytest.importorskip("dask.array", reason="dask is not installed (extra 'dask')")
dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")

from skchain import (  # noqa: E402
    MergedHeadsClassifier,
    ModuleClassifier,
    NeuralTransformer,
    OutputEnsembleClassifier,
    OutputEnsembleRegressor,
)
from skchain._inputs import DaskRows, check_rows, kind_of  # noqa: E402

N, D = 230, 6
CHUNK = 64


def _mlp(n_out=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 8), nn.ReLU(), nn.Linear(8, n_out))


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.randn(N, D).astype(np.float32)
    y = rng.randint(0, 3, N)
    return X, y


def _estimators(X, y):
    """name -> (fitted estimator, its dask methods)."""
    module = _mlp()
    torch.manual_seed(1)
    backbone = nn.Sequential(nn.Linear(D, 4), nn.Tanh())
    heads = [("a", nn.Linear(4, 2), [0, 1]), ("b", nn.Linear(4, 2), [1, 2])]
    mc = ModuleClassifier(module, classes=["a", "b", "c"])
    lr = LogisticRegression().fit(X, np.array(["a", "b", "c"])[y])
    torch.manual_seed(2)
    net = NeuralNetRegressor(_mlp, module__n_out=1, verbose=0).initialize()
    ridge = OutputEnsembleRegressor([("net", net), ("ridge", Ridge().fit(X, y))])
    return {
        "nt": (NeuralTransformer(module, output="embedding").fit(X), ["transform"]),
        "nt_proba": (NeuralTransformer(module, output="proba").fit(X), ["transform"]),
        "module_classifier": (mc, ["predict", "predict_proba"]),
        "merged_heads": (
            MergedHeadsClassifier(backbone, heads, calibration="temperature").fit(X, y),
            ["predict", "predict_proba"],
        ),
        "ensemble_soft": (
            OutputEnsembleClassifier([("mc", mc), ("lr", lr)]).fit(X),
            ["predict", "predict_proba", "transform"],
        ),
        "ensemble_hard": (
            OutputEnsembleClassifier([("mc", mc), ("lr", lr)], voting="hard").fit(X),
            ["predict", "transform"],
        ),
        "ensemble_regressor": (ridge.fit(X), ["predict", "transform"]),
    }


@pytest.fixture(scope="module")
def estimators(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _estimators(*data)


CASES = [
    (name, method)
    for name, methods in {
        "nt": ["transform"],
        "nt_proba": ["transform"],
        "module_classifier": ["predict", "predict_proba"],
        "merged_heads": ["predict", "predict_proba"],
        "ensemble_soft": ["predict", "predict_proba", "transform"],
        "ensemble_hard": ["predict", "transform"],
        "ensemble_regressor": ["predict", "transform"],
    }.items()
    for method in methods
]


def _assert_equal(result, expected):
    assert result.shape == expected.shape
    assert result.dtype == expected.dtype
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-7)
    else:
        np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("name,method", CASES)
def test_dask_in_lazy_dask_out_equal_to_numpy(estimators, data, name, method):
    X, _ = data
    est = estimators[name][0]
    expected = getattr(est, method)(X)
    # Column chunks too: merged into whole rows, the row chunks kept.
    Xd = da.from_array(X, chunks=(CHUNK, 4))
    result = getattr(est, method)(Xd)
    assert isinstance(result, da.Array)
    # Shape, dtype, metadata and chunks are right before anything is computed.
    assert result.shape == expected.shape
    assert result.dtype == expected.dtype
    assert isinstance(result._meta, np.ndarray) and result._meta.dtype == expected.dtype
    assert result.chunks[0] == Xd.chunks[0]
    assert all(len(c) == 1 for c in result.chunks[1:])
    computed = result.compute()
    _assert_equal(computed, expected)
    # Each block is the NumPy result of its rows.
    first = result.blocks[1].compute()
    _assert_equal(first, getattr(est, method)(X[CHUNK : 2 * CHUNK]))


@pytest.mark.parametrize("name,method", CASES)
def test_dask_dataframe_in(estimators, data, name, method):
    X, _ = data
    est = estimators[name][0]
    frame = dd.from_pandas(pd.DataFrame(X), npartitions=3)
    result = getattr(est, method)(frame)
    assert isinstance(result, da.Array)
    assert result.chunks[0] == tuple(frame.map_partitions(len).compute())
    _assert_equal(result.compute(), getattr(est, method)(X))


def _counted(X, chunks):
    """A dask array of X whose blocks count how often each one is computed."""
    counts = {}

    def load(block, block_info=None):
        start = block_info[0]["array-location"][0][0]
        counts[start] = counts.get(start, 0) + 1
        return block

    return da.from_array(X, chunks=chunks).map_blocks(load, dtype=X.dtype), counts


class _Recorder(nn.Module):
    """A linear layer that records the batch sizes it is run on."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(D, 3)
        self.batches = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.linear(x)


def test_transform_is_lazy_and_computes_block_by_block(data):
    X, _ = data
    module = _Recorder()
    nt = NeuralTransformer(module, cache=False, batch_size=1000).fit(X[:5])
    module.batches.clear()
    Xd, counts = _counted(X, CHUNK)
    with dask.config.set(scheduler="synchronous"):
        result = nt.transform(Xd)
        assert counts == {} and module.batches == []  # nothing ran yet
        out = result.compute()
    batches = sorted(module.batches)
    np.testing.assert_allclose(out, nt.transform(X), rtol=1e-5)
    # Every input block computed once; the module saw one block at a time,
    # so memory is bounded by a block, not by X.
    assert counts == {start: 1 for start in range(0, N, CHUNK)}
    assert batches == sorted([CHUNK] * (N // CHUNK) + [N % CHUNK])


def test_fit_of_a_pretrained_model_reads_only_the_first_rows(data):
    X, y = data
    Xd, counts = _counted(X, CHUNK)
    with dask.config.set(scheduler="synchronous"):
        nt = NeuralTransformer(_mlp(), output="embedding").fit(Xd)
        assert counts == {0: 1}
        clf = ModuleClassifier(_mlp(), classes=[0, 1, 2]).fit(Xd, y)
        assert counts == {0: 2}
    assert nt.n_features_in_ == D and clf.n_features_in_ == D
    reference = NeuralTransformer(nt.net, output="embedding").fit(X)
    np.testing.assert_array_equal(nt.get_feature_names_out(), reference.get_feature_names_out())
    # fit_transform: a streaming fit and a lazy result
    out = NeuralTransformer(nt.net, output="embedding").fit_transform(Xd)
    assert isinstance(out, da.Array)
    np.testing.assert_allclose(out.compute(), reference.transform(X), rtol=1e-5)


def test_fit_that_needs_all_rows_refuses_a_dask_array(data):
    from skorch import NeuralNetClassifier

    X, y = data
    Xd = da.from_array(X, chunks=CHUNK)
    net = NeuralNetClassifier(_mlp, max_epochs=1, train_split=None, verbose=0)
    backbone = nn.Sequential(nn.Linear(D, 4), nn.Tanh())
    heads = [("a", nn.Linear(4, 3), [0, 1, 2])]
    mc = ModuleClassifier(_mlp(), classes=[0, 1, 2])
    for est in [
        NeuralTransformer(net),
        MergedHeadsClassifier(backbone, heads),
        OutputEnsembleClassifier([("mc", mc)], weights="learn"),
        OutputEnsembleRegressor([("r", Ridge().fit(X, y))], weights="learn"),
    ]:
        with pytest.raises(TypeError, match=r"X\.compute\(\)"):
            est.fit(Xd, y)
        assert not hasattr(est, "n_features_in_")
    # The same estimators without learning from the rows stream instead.
    clf = MergedHeadsClassifier(backbone, heads, calibration=None).fit(Xd, y)
    np.testing.assert_allclose(
        clf.predict_proba(Xd).compute(), clf.predict_proba(X), rtol=1e-6
    )


def test_nan_found_at_compute_time_is_the_numpy_error(estimators, data):
    X, _ = data
    est = estimators["nt"][0]
    bad = X.copy()
    bad[150, 2] = np.nan
    with pytest.raises(ValueError) as numpy_error:
        est.transform(bad)
    lazy = est.transform(da.from_array(bad, chunks=CHUNK))  # not computed: no error
    with pytest.raises(ValueError) as dask_error:
        lazy.compute()
    assert str(dask_error.value) == str(numpy_error.value)
    # The blocks without the NaN still compute.
    np.testing.assert_allclose(lazy.blocks[0].compute(), est.transform(X[:CHUNK]), rtol=1e-5)


@pytest.mark.parametrize("name,method", CASES)
def test_bad_dask_input_is_a_clear_error_before_computing(estimators, data, name, method):
    X, _ = data
    est = estimators[name][0]
    Xd = da.from_array(X, chunks=CHUNK)
    call = getattr(est, method)
    with pytest.raises(ValueError, match=r"compute_chunk_sizes\(\)"):
        call(Xd[Xd[:, 0] > 0])
    if hasattr(est, "n_features_in_"):
        with pytest.raises(ValueError, match="features"):
            call(Xd[:, :-1])
    else:  # a ModuleClassifier used without fit: its module decides, per block
        lazy = call(Xd[:, :-1])
        with pytest.raises(ValueError, match="could not run on X of shape"):
            lazy.compute()
    with pytest.raises(ValueError, match="2D"):
        call(Xd[:, 0])
    with pytest.raises(ValueError, match="0 sample"):
        call(Xd[:0])
    with pytest.raises(ValueError, match="numeric"):
        call(Xd.astype("U8"))
    bag = pytest.importorskip("dask.bag")
    with pytest.raises(TypeError, match="dask array, DataFrame or Series"):
        call(bag.from_sequence([1, 2]))


def test_dask_dataframe_feature_names_are_checked(data):
    X, _ = data
    columns = [f"c{i}" for i in range(D)]
    nt = NeuralTransformer(_mlp()).fit(pd.DataFrame(X, columns=columns))
    good = dd.from_pandas(pd.DataFrame(X, columns=columns), npartitions=2)
    expected = nt.transform(pd.DataFrame(X, columns=columns))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the blocks keep their names: no warning
        np.testing.assert_allclose(nt.transform(good).compute(), expected, rtol=1e-5)
    renamed = dd.from_pandas(pd.DataFrame(X, columns=columns[::-1]), npartitions=2)
    with pytest.raises(ValueError, match="feature names"):
        nt.transform(renamed)


def test_set_output_pandas_with_dask_input_is_a_clear_error(data):
    X, _ = data
    nt = NeuralTransformer(_mlp()).fit(X).set_output(transform="pandas")
    with pytest.raises(ValueError, match="set_output"):
        nt.transform(da.from_array(X, chunks=CHUNK))


def test_images_and_one_d_outputs_drop_the_right_axes():
    rng = np.random.RandomState(1)
    images = rng.rand(40, 1, 4, 4).astype(np.float32)
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    nt = NeuralTransformer(module).fit(images)
    out = nt.transform(da.from_array(images, chunks=(16, 1, 2, 4)))
    assert out.shape == (40, 3) and out.chunks == ((16, 16, 8), (3,))
    np.testing.assert_allclose(out.compute(), nt.transform(images), rtol=1e-5)
    clf = ModuleClassifier(module, classes=[0, 1, 2]).fit(images)
    labels = clf.predict(da.from_array(images, chunks=16))
    assert labels.shape == (40,) and labels.chunks == ((16, 16, 8),)
    np.testing.assert_array_equal(labels.compute(), clf.predict(images))


def test_dask_rows_keys_equal_the_checked_numpy_rows(data):
    X, _ = data
    nt = NeuralTransformer(_mlp()).fit(X)
    from skchain._inputs import check_dask_rows

    rows = check_dask_rows(nt, da.from_array(X.astype(np.float64), chunks=CHUNK))
    assert isinstance(kind_of(rows), DaskRows)
    numpy_rows = kind_of(check_rows(nt, X.astype(np.float64), reset=False))
    assert rows.row_format == numpy_rows.row_format
    assert rows.row_bytes == numpy_rows.row_bytes
    assert len(rows) == N
    assert rows.keys() == numpy_rows.keys()


def test_the_lazy_result_pickles_with_its_estimator(data):
    X, _ = data
    nt = NeuralTransformer(_mlp(), output="embedding").fit(X)
    lazy = nt.transform(da.from_array(X, chunks=CHUNK))
    again = pickle.loads(pickle.dumps(lazy))
    np.testing.assert_allclose(again.compute(), nt.transform(X), rtol=1e-5)


def _wide(seed=0):
    """A model that cache="auto" keeps (far more FLOPs per row than a row's bytes)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, 4))


class _Rows(nn.Module):
    """Counts the rows that its module's forward passes run."""

    def __init__(self, module):
        super().__init__()
        self.module = module
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.module(x)


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_a_dask_transform_keeps_no_block_in_the_memory_store(monkeypatch, tmp_path, scheduler):
    from skchain import _cache

    store = _cache._MemoryStore()
    monkeypatch.setattr(_cache, "_MEMORY", store)
    X = np.random.RandomState(3).randn(2000, D).astype(np.float32)
    module = _Rows(_wide())
    nt = NeuralTransformer(module).fit(X[:2])  # the default cache="auto"
    held = store.nbytes
    with dask.config.set(scheduler=scheduler):
        out = nt.transform(da.from_array(X, chunks=250)).compute()
    # The cache was on (judged worth it), and the 8 blocks left no byte behind.
    assert True in store._decisions.values()
    assert store.nbytes == held
    expected = nt.transform(X)  # NumPy: kept in memory as before
    assert store.nbytes >= held + expected.nbytes
    held = store.nbytes
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # Rows the store holds are still served to dask blocks: nothing runs.
    module.rows = 0
    with dask.config.set(scheduler=scheduler):
        again = nt.transform(da.from_array(X, chunks=250)).compute()
    assert module.rows == 0 and store.nbytes == held
    np.testing.assert_array_equal(again, expected)
    # A disk cache given by the user is still written by the blocks.
    store.clear()
    disk = NeuralTransformer(module, cache=tmp_path / "cache").fit(X[:2])
    held = store.nbytes
    with dask.config.set(scheduler=scheduler):
        disk.transform(da.from_array(X, chunks=250)).compute()
    assert store.nbytes == held
    module.rows = 0
    np.testing.assert_allclose(disk.transform(X), expected, rtol=1e-5, atol=1e-6)
    assert module.rows == 0  # every row read back from the folder


@pytest.fixture(scope="module")
def client():
    """A 2-process cluster on 127.0.0.1 without dashboard, shared by the tests
    below (starting one takes seconds), closed after them."""
    distributed = pytest.importorskip("dask.distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def test_two_process_local_cluster_computes_the_same(data, client):
    distributed = pytest.importorskip("dask.distributed")
    X, _ = data
    nt = NeuralTransformer(_mlp(), output="embedding", cache=False).fit(X)
    expected = nt.transform(X)
    lazy = nt.transform(da.from_array(X, chunks=CHUNK))
    with distributed.get_task_stream(client) as stream:
        out = client.compute(lazy).result()
    workers = {task["worker"] for task in stream.data}
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert workers and all(w.startswith("tcp://127.0.0.1:") for w in workers)


class CountingLinear(nn.Module):
    """A linear layer that appends the rows of each forward pass to a file:
    counts passes over every process of a cluster."""

    def __init__(self, path, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(D, 4)
        self.path = str(path)

    def forward(self, x):
        with open(self.path, "a") as f:
            f.write(f"{x.shape[0]}\n")
        return self.linear(x)


def _rows_run(path):
    return sum(int(line) for line in open(path)) if path.exists() else 0


@pytest.mark.parametrize("search", ["grid", "chain"])
def test_search_on_a_cluster_computes_each_row_once(data, client, tmp_path, search):
    import joblib
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    from skchain import ChainSearchCV

    X, y = data
    grid = {"logisticregression__C": [0.1, 1.0, 10.0]}
    Search = GridSearchCV if search == "grid" else ChainSearchCV
    # Fresh weights per test: the workers' in-memory caches outlive a test.
    seed = {"grid": 11, "chain": 12}[search]
    local = Search(
        make_pipeline(NeuralTransformer(CountingLinear(tmp_path / "local", seed)),
                      LogisticRegression()),
        grid, cv=3,
    ).fit(X, y)
    counter = tmp_path / "cluster"
    nt = NeuralTransformer(CountingLinear(counter, seed), cache=tmp_path / "cache")
    # Nothing is filled first. GridSearchCV's (candidate, fold) tasks start at
    # once on the two workers and miss the same rows: each claims the rows no
    # one computes and waits for the block of the others (skchain._claims).
    # ChainSearchCV runs the frozen step over all rows once, in disjoint
    # pieces, before its fold tasks. The refit reads the shared folder.
    with joblib.parallel_backend("dask"):
        remote = Search(make_pipeline(nt, LogisticRegression()), grid, cv=3, n_jobs=2).fit(X, y)
    # every row ran (the counter counts), and once over all the workers
    assert N <= _rows_run(counter) <= 1.1 * N
    if search == "chain":
        assert remote.prefix_fits_ == {"neuraltransformer": 1}
    np.testing.assert_array_equal(
        remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )


def test_chain_search_scores_are_the_same_bits_on_every_backend(data, client):
    """The frozen head's pieces start at multiples of batch_size: its outputs
    are those of one transform of all rows, whichever process ran a piece."""
    import joblib
    from sklearn.pipeline import make_pipeline

    from skchain import ChainSearchCV

    X, y = data
    grid = {"logisticregression__C": [0.1, 1.0, 10.0]}

    def search(n_jobs):
        # A float score sees the outputs' last bits; batches of 32 rows put
        # piece boundaries inside the rows (2 pieces of 128 and 102 rows).
        nt = NeuralTransformer(_wide(5), batch_size=32, cache=False)
        pipe = make_pipeline(nt, LogisticRegression(max_iter=500))
        return ChainSearchCV(pipe, grid, cv=3, n_jobs=n_jobs, scoring="neg_log_loss",
                             refit=False).fit(X, y)

    # A forward pass on 1 thread and on 2 may differ in the last bits: a
    # process-based task runs on its share of the cores (1 of 2 here), a
    # new thread of this process on OpenMP's default (torch's thread count
    # is per thread): each reference runs one process, the same way.
    from concurrent.futures import ThreadPoolExecutor

    from skchain._parallel import limit_threads, threads_per_task

    with limit_threads(threads_per_task(2)):
        per_task = search(None)
    with ThreadPoolExecutor(1) as pool:
        in_process = pool.submit(search, None).result()
    for backend, reference in [("loky", per_task), ("dask", per_task),
                               ("threading", in_process)]:
        with joblib.parallel_backend(backend):
            other = search(2)
        for key in ("mean_test_score", "split0_test_score", "split2_test_score"):
            np.testing.assert_array_equal(
                other.cv_results_[key], reference.cv_results_[key], err_msg=backend
            )


def test_text_embedder_takes_dask_texts():
    pytest.importorskip("sentence_transformers")
    from skchain import TextEmbedder

    texts = ["The striker scored twice.", "Whisk the eggs.", "A late penalty.",
             "Simmer the sauce.", "The keeper saved it."]
    embedder = TextEmbedder(cache=False)
    series = dd.from_pandas(pd.Series(texts, name="text"), npartitions=2)
    embedder.fit(series)  # streams: nothing is learned from the texts
    expected = embedder.transform(texts)
    frame = dd.from_pandas(pd.DataFrame({"text": texts}), npartitions=2)
    for X in [da.from_array(np.array(texts, dtype=object), chunks=2), series, frame["text"]]:
        out = embedder.transform(X)
        assert isinstance(out, da.Array)
        assert out.shape == expected.shape and out.dtype == np.float32
        assert len(out.chunks[1]) == 1
        np.testing.assert_allclose(out.compute(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="strings"):
        embedder.transform(da.ones((5,), chunks=2))
    with pytest.raises(ValueError, match="one text column"):
        embedder.transform(da.from_array(np.array([texts, texts], dtype=object).T, chunks=2))
    missing = np.array(texts, dtype=object)
    missing[3] = None
    with pytest.raises(ValueError, match="missing value"):
        embedder.transform(da.from_array(missing, chunks=2)).compute()
