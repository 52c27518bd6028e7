"""
===================================================================
A conv net trained in the pipeline on images: out-of-fold outputs
===================================================================

*User story 1, with images.* A small convolutional net is trained *inside* a
scikit-learn pipeline on image tensors ``(n, 1, 8, 8)``, and its class
probabilities become features of a final logistic regression, next to the
pixels. :class:`skchain.NeuralTransformer` takes the images as they are --
no flattening, no ``nn.Unflatten`` in front of the net -- and, because the net
is trained on the target, hands the next step **out-of-fold** probabilities
(cross fitting, ``cv=...``): the probabilities of each training image come
from a net that did not see it, as they will for new images.

We cross-validate three pipelines on the same folds:

* the baseline: logistic regression on the pixels;
* the net's probabilities and the pixels, with the net's **in-sample**
  outputs (``cv=None``): the final model learns from probabilities of images
  the net was trained on;
* the same with **out-of-fold** outputs (``cv=3``).
"""

# %%
# Images and a conv net
# ---------------------
# scikit-learn's 8x8 digits, as a batch of one-channel images on the 0-1
# scale. The net is a skorch classifier over a plain torch conv net; skorch
# trains it, skchain calls it.
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate, train_test_split
from sklearn.pipeline import make_pipeline, make_union
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from skorch import NeuralNetClassifier
from torch import nn

from skchain import NeuralTransformer

torch.manual_seed(0)
torch.set_num_threads(1)
digits = load_digits()
images = (digits.images / 16.0).astype(np.float32)[:, None]  # (n, 1, 8, 8)
y = digits.target
images, _, y, _ = train_test_split(images, y, train_size=900, stratify=y, random_state=0)
print("images:", images.shape, images.dtype)


class ConvNet(nn.Module):
    def __init__(self, channels=16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()
        )
        self.head = nn.Linear(channels * 4 * 4, 10)

    def forward(self, x):
        return self.head(self.features(x))


def conv_net():
    return NeuralNetClassifier(
        ConvNet,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=0.01,
        max_epochs=20,
        batch_size=64,
        train_split=None,
        iterator_train__shuffle=True,
        verbose=0,
    )


def flatten(X):
    return X.reshape(len(X), -1)


def net_and_pixels(cv):
    """The net's probabilities (in-sample or out-of-fold) next to the pixels."""
    net = NeuralTransformer(conv_net(), output="proba", cv=cv, random_state=0)
    return make_pipeline(
        make_union(net, FunctionTransformer(flatten)),
        StandardScaler(),
        LogisticRegression(max_iter=2000),
    )


# %%
# What the final estimator is trained on
# --------------------------------------
# One training split, looked at closely: the probability each output gives
# to the *true* class of a training image, in-sample and out-of-fold, next to
# what the net gives new images. The in-sample net has seen every training
# image and is sure of nearly all of them; the out-of-fold probabilities look
# like those of new images, which is what the final estimator will receive
# when it predicts.
train, test = next(StratifiedKFold(5, shuffle=True, random_state=0).split(images, y))
in_sample = NeuralTransformer(conv_net(), output="proba", cv=None, random_state=0)
out_of_fold = NeuralTransformer(conv_net(), output="proba", cv=3, random_state=0)
rows = np.arange(len(train))
p_in = in_sample.fit_transform(images[train], y[train])[rows, y[train]]
p_oof = out_of_fold.fit_transform(images[train], y[train])[rows, y[train]]
# ``transform`` of new images uses the net trained on all training images.
p_new = out_of_fold.transform(images[test])[np.arange(len(test)), y[test]]
for name, p in [("in-sample", p_in), ("out-of-fold", p_oof), ("new images", p_new)]:
    print(f"{name:12s} mean probability of the true class {p.mean():.3f}, "
          f"below 0.5 for {np.mean(p < 0.5):.1%} of the images")  # fmt: skip

# %%
# Cross-validated, end to end
# ---------------------------
# Every outer fold trains the nets again: the in-sample pipeline one net per
# fold, the out-of-fold one three on the inner folds plus the one kept for
# ``transform``. Accuracy and log loss of the final predictions.
outer = StratifiedKFold(5, shuffle=True, random_state=0)
models = {
    "pixels only\n(baseline)": make_pipeline(
        FunctionTransformer(flatten), StandardScaler(), LogisticRegression(max_iter=2000)
    ),
    "conv net + pixels,\nin-sample (cv=None)": net_and_pixels(cv=None),
    "conv net + pixels,\nout-of-fold (cv=3)": net_and_pixels(cv=3),
}
scores = {
    name: cross_validate(
        model, images, y, cv=outer, scoring=["accuracy", "neg_log_loss"], return_estimator=True
    )
    for name, model in models.items()
}
for name, s in scores.items():
    print(
        f"{name.replace(chr(10), ' '):40s} accuracy {s['test_accuracy'].mean():.3f} "
        f"± {s['test_accuracy'].std():.3f}, log loss {-s['test_neg_log_loss'].mean():.3f}"
    )

# %%
# How much the final estimator leans on the net: the share of its (scaled)
# coefficients' weight on the net's ten probability columns, against the 64
# pixel columns, averaged over the outer folds. Trained on in-sample
# probabilities, which look better than the net will be on new images, it
# leans on them more than the out-of-fold pipeline does. How much that costs
# at the end depends on how far the net overfits and on what else the final
# estimator has: here the pixels are good features, and the scores above are
# close.
for name in list(models)[1:]:
    shares = [
        np.abs(fitted[-1].coef_[:, :10]).sum() / np.abs(fitted[-1].coef_).sum()
        for fitted in scores[name]["estimator"]
    ]
    print(f"{name.replace(chr(10), ' '):40s} weight on the net's columns {np.mean(shares):.1%}")

# %%
# The plots: the probabilities of the true class on the left (training images
# in-sample and out-of-fold, new images), the cross-validated scores on the
# right.
fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(12, 3.6), width_ratios=[1.2, 1, 1])
bins = np.linspace(0, 1, 21)
for name, p, color in [
    ("in-sample (training images)", p_in, "C3"),
    ("out-of-fold (training images)", p_oof, "C2"),
    ("new images", p_new, "grey"),
]:
    ax0.hist(p, bins=bins, histtype="step", density=True, lw=2, color=color, label=name)
ax0.set_yscale("log")
ax0.set_xlabel("probability of the true class")
ax0.set_title("what the final estimator sees")
ax0.legend(fontsize="small", loc="upper left")
names = list(scores)
colors = ["grey", "C3", "C2"]
for ax, key, label, sign in [
    (ax1, "test_accuracy", "accuracy", 1),
    (ax2, "test_neg_log_loss", "log loss (lower is better)", -1),
]:
    values = [sign * scores[n][key] for n in names]
    ax.barh(names, [v.mean() for v in values], xerr=[v.std() for v in values], color=colors)
    ax.set_xlabel(f"{label}, 5-fold CV")
    ax.invert_yaxis()
ax1.set_xlim(0.8, 1.0)
ax2.set_yticks([])
fig.tight_layout()
plt.show()
