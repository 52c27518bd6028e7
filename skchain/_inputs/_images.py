"""Images: file paths, PIL images and pixel arrays, as the embedders take them.

:func:`check_images` checks a collection of images as far as that can be done
without decoding -- types, files that exist, pixel arrays (dtype, NaN, range,
layout) -- and returns :class:`ImageRows`: the images as a list of items,
each a path (``str``), a PIL image or an ``(H, W, C)`` pixel array (a view of
the user's array). Decoding (:func:`open_image`) and the size checks name the
file or row that fails; preprocessing for a model is the embedder's
(:mod:`skchain._image_decode`).

An image's key is a 128-bit BLAKE2b of what decides its pixels: a file's
bytes, a PIL image's mode, size and pixels, an array's dtype, shape and
pixels (after moving the channels last, so an ``(n, C, H, W)`` batch keys as
its ``(n, H, W, C)`` view). Two copies of a file, or two arrays or two PIL
images with the same pixels, share a key; a file and its decoded pixels do
not (that would need decoding to know), nor does a PIL image and an array
(a PIL image carries metadata, e.g. EXIF, that a ``preprocess`` may read).
"""

import hashlib
import os

import numpy as np

from ._kind import KEY_SIZE, InputKind, register

__all__ = ["ImageRows", "check_images", "image_size", "open_image", "size_message"]

_IMAGE_SUFFIXES = "a list of image file paths, PIL images or arrays"

# Bytes per pixel of a decoded image, when a file's mode is not read.
_RGB_BYTES = 3


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


def check_images(X, layout="auto", *, shape=None):
    """The images of ``X`` as :class:`ImageRows`: paths (str), PIL images or HWC
    arrays (views of X where X is an array), each already checked as far as
    that can be done without decoding.

    ``X`` is a list or tuple of image paths, PIL images or arrays, a 1-D
    object array, a pandas Series or one-column DataFrame of them, or a pixel
    batch ``(n, H, W)``, ``(n, H, W, C)`` or ``(n, C, H, W)`` (``layout``:
    ``"auto"``, ``"channels_last"`` or ``"channels_first"``). ``shape`` is
    passed on to :class:`ImageRows`.
    """
    return ImageRows(_check_items(X, layout), shape=shape)


def _check_items(X, layout):
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


@register
class ImageRows(InputKind):
    """Checked images (see :func:`check_images`): a list of paths (``str``),
    PIL images and ``(H, W, C)`` pixel arrays.

    ``shape``, the ``(C, H, W)`` that the model takes once an image is
    preprocessed, sizes a row as the model sees it (:attr:`row_bytes`); without
    it, a row is sized by its pixels. ``positions`` are the rows of the user's
    ``X`` that the items are (what errors name); by default ``0, 1, ...``.
    """

    def __init__(self, rows, shape=None, positions=None):
        self.rows = list(rows)
        self.shape = None if shape is None else tuple(int(s) for s in shape)
        self.positions = range(len(self.rows)) if positions is None else list(positions)

    @staticmethod
    def accepts(rows):
        # Decoded images only: a list of paths is a list of str, which only
        # check_images can tell from texts (it returns ImageRows itself).
        return (
            isinstance(rows, (list, tuple))
            and len(rows) > 0
            and all(_is_pil(r) or (isinstance(r, np.ndarray) and r.ndim == 3) for r in rows)
        )

    @property
    def row_format(self):
        return ("image",)

    @property
    def row_bytes(self):
        if self.shape is not None:
            return int(np.prod(self.shape)) * 4  # float32
        item = self.rows[0]
        if isinstance(item, np.ndarray):
            return item.nbytes
        width, height = image_size(item)
        bands = _RGB_BYTES if isinstance(item, str) else len(item.getbands())
        return width * height * bands

    def take(self, indices):
        # ImageRows again: the embedder decodes them, naming the user's rows.
        return ImageRows(
            [self.rows[i] for i in indices], self.shape, [self.positions[i] for i in indices]
        )

    def keys(self):
        return [_key(item) for item in self.rows]

    def check_sizes(self, shape):
        """Without resizing, every image must have the size of ``shape``
        ``(C, H, W)`` (the first image's); read from the files' headers."""
        expected = (shape[2], shape[1])
        for row, item in zip(self.positions, self.rows, strict=True):
            size = image_size(item)
            if tuple(size) != expected:
                raise ValueError(
                    f"Image {_describe(item, row)} is {size[0]}x{size[1]} (width x "
                    f"height) but the first image is {expected[0]}x{expected[1]}, and "
                    "image_size=None does not resize. Set image_size (e.g. "
                    "image_size=224) to resize every image to one size."
                )


def _key(item):
    """The cache's key of one image: a hash of what decides its pixels."""
    hasher = hashlib.blake2b(digest_size=KEY_SIZE)
    if isinstance(item, str):
        hasher.update(b"file\0")
        try:
            with open(item, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    hasher.update(block)
        except OSError as exc:
            raise ValueError(
                f"Cannot read image file {item!r}: {exc}. Check that it is a readable file."
            ) from exc
    elif isinstance(item, np.ndarray):
        hasher.update(f"array\0{item.dtype.str}\0{item.shape}\0".encode())
        hasher.update(np.ascontiguousarray(item).data)
    else:
        hasher.update(f"pil\0{item.mode}\0{item.size}\0".encode())
        hasher.update(item.tobytes())
    return hasher.digest()


def open_image(path):
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


def image_size(item):
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
        return open_image(item).size  # raises its error naming the file
    except OSError as exc:
        raise ValueError(f"Cannot read image file {item!r}: {exc}.") from None


def size_message(item, row, got, expected, custom):
    """Why image ``row`` (``item``), preprocessed to ``got`` (C, H, W), is refused
    where every image must be ``expected``; ``custom``: a user's ``preprocess`` made it."""
    where = _describe(item, row)
    if custom:
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
