"""
=========================================================
Hidden layers of a small net as features, layer by layer
=========================================================

:class:`skchain.NeuralTransformer` can hand on any layer of a net, not only
its predictions: ``output="body.1"`` is the output of the submodule called
``body.1``, read with a forward hook while the net runs as usual.

Here a small MLP is trained on half of the digits dataset. We then read its
hidden layers on the other half -- rows the net never saw -- and ask two
questions:

* what does each layer look like? (a 2-D PCA map of each, coloured by digit)
* how much does a linear model get out of each layer? (a *linear probe*: the
  cross-validated accuracy of a logistic regression on that layer's outputs)

The same probes on the same architecture with random, untrained weights show
how much of it is the training and how much the architecture.
"""

# %%
# Data and net
# ------------
# The net has a two-layer body and a linear head; ``named_modules()`` lists
# the names ``output`` accepts.
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier
from torch import nn

from skchain import NeuralTransformer

torch.set_num_threads(1)  # tiny net: more threads only add overhead

X, y = load_digits(return_X_y=True)
X = X / 16.0  # pixels from 0..16 to 0..1
X_net, X_probe, y_net, y_probe = train_test_split(X, y, test_size=0.5, stratify=y, random_state=0)


class MLP(nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU()
        )
        self.head = nn.Linear(hidden // 2, 10)

    def forward(self, x):
        return self.head(self.body(x))


print([name for name, _ in MLP().named_modules() if name])

# %%
# Train the net inside ``NeuralTransformer``
# ------------------------------------------
# ``fit`` trains a clone of the skorch net (``random_state`` makes it
# repeatable). The fitted net is ``net_``; wrapping it again with
# ``frozen=True`` reads any of its layers without training it again.
net = NeuralNetClassifier(
    MLP,
    criterion=nn.CrossEntropyLoss,
    optimizer=torch.optim.Adam,
    lr=0.01,
    max_epochs=30,
    batch_size=64,
    train_split=None,
    verbose=0,
)
trained = NeuralTransformer(net, output="proba", random_state=0).fit(X_net, y_net)
accuracy = (trained.transform(X_probe).argmax(axis=1) == y_probe).mean()
print(f"the net's own accuracy on the held-out half: {accuracy:.3f}")

# %%
# Several layers at once, as a DataFrame
# --------------------------------------
# A list of layer names gives their outputs side by side; the column names
# say which layer each column comes from. ``"embedding"`` is the input of the
# last linear layer -- here the same tensor as the output of ``body.3``.
layers = NeuralTransformer(trained.net_, frozen=True, output=["body.1", "body.3"])
layers.set_output(transform="pandas")
frame = layers.fit(X_net).transform(X_probe)
print(frame.shape)
print(frame.columns[[0, 1, -2, -1]].tolist())

embedding = NeuralTransformer(trained.net_, frozen=True, output="embedding").fit(X_net)
print(np.array_equal(embedding.transform(X_probe), frame.filter(like="body.3_").to_numpy()))

# %%
# What the layers look like
# -------------------------
# Each panel shows the first two principal components of one layer's outputs
# on the held-out rows. In the pixels the ten digits overlap; layer after
# layer, the trained net pulls them apart, most clearly in the logits. (Two
# components show only part of it: the probes below use every unit.)
stages = {
    "pixels": X_probe,
    "body.1 (64 units)": frame.filter(like="body.1_").to_numpy(),
    "body.3 (32 units)": frame.filter(like="body.3_").to_numpy(),
    "logits (10)": NeuralTransformer(trained.net_, frozen=True, output="logits")
    .fit(X_net)
    .transform(X_probe),
}
fig, axes = plt.subplots(1, len(stages), figsize=(12, 3.6), layout="constrained")
for ax, (title, values) in zip(axes, stages.items(), strict=True):
    xy = PCA(n_components=2, random_state=0).fit_transform(values)
    points = ax.scatter(xy[:, 0], xy[:, 1], c=y_probe, cmap="tab10", s=6)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
fig.colorbar(points, ax=axes, ticks=range(10), label="digit")
fig.suptitle("PCA of each layer on the held-out digits")

# %%
# Linear probes: trained net vs random weights
# --------------------------------------------
# A plain ``torch.nn.Module`` is pretrained by definition: ``NeuralTransformer``
# never trains it, so the untrained MLP below keeps its random weights. Every
# probe is a pipeline ``NeuralTransformer -> StandardScaler ->
# LogisticRegression`` scored with 5-fold cross-validation on the held-out half.
torch.manual_seed(0)
random_module = MLP()


def probe(net, output, frozen):
    model = make_pipeline(
        NeuralTransformer(net, frozen=frozen, output=output),
        StandardScaler(),
        LogisticRegression(max_iter=2000),
    )
    return cross_val_score(model, X_probe, y_probe, cv=5).mean()


probe_layers = ["body.1", "body.3", "logits"]
pixel_score = cross_val_score(
    make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), X_probe, y_probe, cv=5
).mean()
scores = {
    "trained": [probe(trained.net_, layer, True) for layer in probe_layers],
    "random weights": [probe(random_module, layer, True) for layer in probe_layers],
}
print(f"pixels: {pixel_score:.3f}")
for kind, values in scores.items():
    print(kind, " ".join(f"{layer}={s:.3f}" for layer, s in zip(probe_layers, values, strict=True)))

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
positions = np.arange(len(probe_layers))
ax.bar(positions - 0.2, scores["trained"], width=0.4, label="trained net")
ax.bar(positions + 0.2, scores["random weights"], width=0.4, label="random weights")
ax.axhline(pixel_score, color="black", linestyle="--", label="pixels")
ax.set_xticks(positions, probe_layers)
ax.set_ylim(min(min(v) for v in scores.values()) - 0.05, 1.0)
ax.set_ylabel("5-fold accuracy of a logistic regression")
ax.set_title("Linear probe on each layer (held-out digits)")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)

# %%
# What the probes say (the numbers are printed above; seeds make them repeatable):
#
# * every layer of the trained net scores a little above the pixels (about
#   0.97 against 0.96), down to the logits: ten numbers keep about everything
#   a linear model needs;
# * with random weights, the first layer is a random ReLU expansion of the
#   pixels and keeps about what the pixels give, but every further random layer
#   loses information (32 and then 10 random directions): it is the training,
#   not the architecture, that makes the deeper layers worth chaining.
#
# The probe rows were never used to train the net, so these scores are
# honest. A net trained on the very rows it is probed on would look better
# than it is -- the leak that cross fitting prevents, see :ref:`chaining`.
