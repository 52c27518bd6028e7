"""The input contract's images (skchain/_inputs/_images.py): ImageRows' keys,
subsets and sizes, and the cache seeing images as one more kind of rows."""

import numpy as np
import pytest
import torch
from torch import nn

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from skchain import ImageEmbedder, _cache  # noqa: E402
from skchain._cache import _MemoryStore  # noqa: E402
from skchain._inputs import ImageRows, check_images, kind_of  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_process_cache(monkeypatch):
    monkeypatch.setattr(_cache, "_MEMORY", _MemoryStore())


@pytest.fixture(scope="module")
def pixels():
    """Four distinct 9x7 RGB images, uint8 (n, H, W, C)."""
    return np.random.RandomState(0).randint(0, 256, size=(4, 9, 7, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def files(pixels, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rows")
    paths = []
    for i, p in enumerate(pixels):
        paths.append(str(folder / f"image_{i}.png"))
        Image.fromarray(p).save(paths[-1])
    # A second copy of image 0's file, under another name.
    copy = folder / "copy_of_0.png"
    copy.write_bytes(open(paths[0], "rb").read())
    return paths, str(copy)


def keys(X, layout="auto"):
    return check_images(X, layout).keys()


# -- keys ----------------------------------------------------------------------------


def test_equal_pixels_give_equal_keys_in_every_container(pixels):
    batch = keys(pixels)
    assert len(set(batch)) == len(pixels)
    assert all(isinstance(k, bytes) and len(k) == 16 for k in batch)
    # The same pixels as a list of arrays, a copy, a channels-first batch (keyed
    # as its channels-last view), a Fortran-ordered copy: the same keys.
    assert keys(list(pixels)) == batch
    assert keys(pixels.copy()) == batch
    assert keys(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)), "channels_first") == batch
    assert keys(np.asfortranarray(pixels)) == batch
    assert keys(pixels[[2, 0, 2]]) == [batch[2], batch[0], batch[2]]
    # PIL images with equal pixels share a key.
    pil = [Image.fromarray(p) for p in pixels]
    assert keys(pil) == keys([im.copy() for im in pil])
    assert len(set(keys(pil))) == len(pixels)


def test_one_changed_value_or_format_changes_the_key(pixels):
    batch = keys(pixels)
    bumped = pixels.copy()
    bumped[1, 8, 6, 2] ^= 1
    changed = keys(bumped)
    assert changed[1] != batch[1] and changed[0] == batch[0]
    # Other pixel values in another dtype: float pixels are resized without
    # rounding, so they are other rows than their uint8 values.
    assert not set(keys(pixels / 255.0)) & set(batch)
    assert keys(pixels / 255.0) != keys((pixels / 255.0).astype(np.float32))
    # Grey is not RGB, and a PIL image is keyed apart from an array (it carries
    # metadata, e.g. EXIF, that a preprocess may read).
    grey = pixels[:, :, :, 0]
    assert not set(keys(grey)) & set(batch)
    pil = [Image.fromarray(p) for p in pixels]
    assert not set(keys(pil)) & set(batch)


def test_files_are_keyed_by_their_bytes(files, pixels):
    paths, copy = files
    by_file = keys(paths + [copy])
    assert by_file[-1] == by_file[0]  # the same bytes under another name
    assert len(set(by_file[:-1])) == len(paths)
    # A file is not decoded to key it: its pixels' key is another.
    assert not set(by_file) & set(keys(pixels))


def test_keys_are_the_same_in_another_process(pixels):
    import subprocess
    import sys

    script = (
        "import numpy as np; from skchain._inputs import check_images;"
        "X = np.random.RandomState(0).randint(0, 256, size=(4, 9, 7, 3)).astype(np.uint8);"
        "print([k.hex() for k in check_images(X).keys()])"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == repr([k.hex() for k in keys(pixels)])


# -- the kind ------------------------------------------------------------------------


def test_kind_of_picks_image_rows_for_decoded_images(pixels, files):
    rows = kind_of(list(pixels))
    assert isinstance(rows, ImageRows)
    assert isinstance(kind_of([Image.fromarray(p) for p in pixels]), ImageRows)
    # Paths are str, so only check_images can tell them from texts: it
    # returns the kind itself, which kind_of hands back.
    checked = check_images(files[0])
    assert isinstance(checked, ImageRows) and kind_of(checked) is checked
    assert checked.rows == files[0]


def test_format_size_and_subsets(pixels, files):
    rows = check_images(pixels)
    assert rows.row_format == ("image",) and len(rows) == 4
    assert rows.row_bytes == 9 * 7 * 3  # its pixels, without the model's shape
    assert check_images(pixels, shape=(3, 16, 16)).row_bytes == 3 * 16 * 16 * 4
    assert check_images(files[0]).row_bytes == 9 * 7 * 3
    sub = rows.take([3, 1])
    assert isinstance(sub, ImageRows) and list(sub.positions) == [3, 1]
    np.testing.assert_array_equal(sub.rows[0], pixels[3])
    assert sub.keys() == [rows.keys()[3], rows.keys()[1]]
    assert list(sub.take([1]).positions) == [1]


def test_mixed_sizes_name_the_users_row(pixels, files):
    narrow = np.ascontiguousarray(pixels[0, :, :5])
    rows = check_images(list(pixels[:2]) + [narrow])
    with pytest.raises(ValueError, match=r"row 2 is 5x9 .*first image is 7x9"):
        rows.check_sizes((3, 9, 7))
    rows.take([0, 1]).check_sizes((3, 9, 7))


# -- through the cache -----------------------------------------------------------------


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_the_cache_runs_only_the_distinct_images_it_does_not_hold(pixels):
    module = _net()
    seen = []
    module.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    embedder = ImageEmbedder(module, output="auto", cache=True).fit(pixels[:1])
    seen.clear()
    out = embedder.transform(pixels[[0, 1, 1, 2]])
    assert sum(seen) == 2  # image 0 was run by fit; images 1 and 2 once each
    np.testing.assert_array_equal(out[1], out[2])
    plain = ImageEmbedder(module, output="auto", cache=False).fit(pixels[:1])
    np.testing.assert_allclose(out, plain.transform(pixels[[0, 1, 1, 2]]), rtol=1e-5, atol=1e-6)


def test_a_bad_image_among_cached_ones_names_its_own_row(pixels):
    embedder = ImageEmbedder(_net(), output="auto", cache=True).fit(pixels)
    embedder.transform(pixels)  # every image cached
    narrow = np.ascontiguousarray(pixels[0, :, :5])
    # Only the narrow image is run, alone: the error names its row in X.
    with pytest.raises(ValueError, match=r"Image row 4 is 5x9 .*fitted on are 7x9"):
        embedder.transform(list(pixels) + [narrow])
