"""How :class:`skchain.ImageEmbedder` turns images into its model's input:
the preprocessing (convert, crop, resize, normalise) and the batches that
decode it, here or in ``DataLoader`` worker processes.

Images are decoded with Pillow and streamed: a ``transform`` holds one batch
of decoded pixels at a time (and, with ``n_jobs``, the few batches that
torch's ``DataLoader`` workers have ready), never all images. What an image
must be to get here (a readable file, pixels of a known layout and dtype) is
the input contract's (:mod:`skchain._inputs._images`).
"""

import math
import os

import numpy as np
import torch

from ._fingerprint import callable_id
from ._inputs import open_image, size_message

__all__ = ["MODES", "Batches", "Failed", "Preprocessing", "workers"]

#: The colour modes a model can take, and their channels.
MODES = {"RGB": 3, "L": 1}



class Preprocessing:
    """How one image becomes the model's input: a picklable description
    (worker processes get a copy) with the decoding itself."""

    def __init__(self, mode, size, crop, mean, std, resample, preprocess):
        self.mode = mode
        self.channels = MODES[mode]
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


class Batches(torch.utils.data.Dataset):
    """Batch ``i`` of the images: their decoded, preprocessed pixels.

    A dataset of batches (``DataLoader(batch_size=None)``), so each worker
    process decodes a whole batch as torch's own batching does. A decoding
    error comes back as a :class:`Failed` value and is raised by the main
    process, so that the message names the file, not torch's worker.
    """

    def __init__(self, rows, batch_size, prep, shape):
        self.rows = rows  # ImageRows: the items and the user's row of each
        self.batch_size = batch_size
        self.prep = prep
        self.shape = tuple(shape)  # (C, H, W) every image must have

    def __len__(self):
        return math.ceil(len(self.rows) / self.batch_size)

    def __getitem__(self, index):
        start = index * self.batch_size
        try:
            stop = min(start + self.batch_size, len(self.rows))
            return start, torch.from_numpy(self.decode(range(start, stop)))
        except (ValueError, TypeError) as exc:
            return start, Failed(type(exc), str(exc))

    def decode(self, indices):
        """The model's input for the images at ``indices``, float32 (n, C, H, W)."""
        out = None
        custom = self.prep.preprocess is not None
        for i, index in enumerate(indices):
            item = self.rows.rows[index]
            image = open_image(item) if isinstance(item, str) else item
            pixels = self.prep.pixels(image)
            if pixels.shape != self.shape:
                row = self.rows.positions[index]
                raise ValueError(size_message(item, row, pixels.shape, self.shape, custom))
            if out is None:
                out = np.empty((len(indices), *pixels.shape), dtype=np.float32)
            out[i] = pixels
        return out


class Failed:
    __slots__ = ("kind", "message")

    def __init__(self, kind, message):
        self.kind = kind
        self.message = message


def workers(n_jobs):
    if n_jobs is None or n_jobs == 0:
        return 0
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return int(n_jobs)
