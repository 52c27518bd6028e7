"""
=================================================================
Merging two transfer-learned heads of an image model into one
=================================================================

*User story 3, with images.* Two digit classifiers were made by transfer
learning on the same frozen conv net: model A knows the digits 0-4, model B the
digits 5-9. Each was trained at its own time, on its own images. We want one
model over all ten digits that runs the conv backbone once per image.

:class:`skchain.MergedHeadsClassifier` takes the two complete models as they
are, runs the shared backbone once and both heads on its output, and learns on a
few held-out images of all ten digits how far to trust each head. No weight of
the backbone or the heads changes. The images go in as images, ``(n, 1, 8,
8)``: no flattening, no ``nn.Unflatten`` in front of the backbone.
"""

# %%
# A frozen backbone and two complete models
# -----------------------------------------
# The images are scikit-learn's 8x8 digits, one channel on the 0-1 scale. The
# backbone is a small conv net, trained once as a 10-class classifier on 500
# images and then frozen. Each complete model is ``Sequential(backbone, head)``;
# only the head is trained, on images of its own five digits. The two sets of
# images are disjoint, and model B carries its own copy of the backbone, as it
# would after being saved and loaded separately.
import copy
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import log_loss
from skorch import NeuralNetClassifier
from torch import nn

from skchain import MergedHeadsClassifier, merge_heads

torch.manual_seed(0)
torch.set_num_threads(1)
X, y = load_digits(return_X_y=True)
X = (X / 16).astype(np.float32).reshape(-1, 1, 8, 8)  # (n, C, H, W) images
idx = np.random.RandomState(0).permutation(len(y))
pretrain, part_a, part_b, held_out, test = np.split(idx, [500, 850, 1200, 1450])


def train(module, X, y, epochs):
    net = NeuralNetClassifier(
        module,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=0.01,
        max_epochs=epochs,
        batch_size=64,
        train_split=None,
        iterator_train__shuffle=True,
        verbose=0,
    )
    return net.fit(X, y).module_


backbone = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1),
    nn.ReLU(),
    nn.Conv2d(16, 32, 3, padding=1),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Flatten(),
    nn.Linear(32 * 4 * 4, 64),
    nn.ReLU(),
)
train(nn.Sequential(backbone, nn.Linear(64, 10)), X[pretrain], y[pretrain], epochs=20)
backbone.requires_grad_(False)

rows_a = part_a[y[part_a] < 5]
rows_b = part_b[y[part_b] >= 5]
model_a = train(nn.Sequential(backbone, nn.Linear(64, 5)), X[rows_a], y[rows_a], epochs=100)
model_b = train(
    nn.Sequential(copy.deepcopy(backbone), nn.Linear(64, 5)), X[rows_b], y[rows_b] - 5, 100
)
print(f"model A: {len(rows_a)} images of digits 0-4; model B: {len(rows_b)} of 5-9")

# %%
# Merging the two complete models
# -------------------------------
# ``(model_a, "1")`` is model A cut before its layer ``"1"`` (its head): what
# that layer receives is the backbone's output. Model B's head is named the same
# way; skchain compares B's weights outside its head with A's and warns if they
# differ (e.g. a BatchNorm whose running statistics moved in train mode). Each
# head comes with the label of each of its outputs.
weights_before = {k: v.clone() for k, v in model_b.state_dict().items()}
heads = [("A", model_a[1], [0, 1, 2, 3, 4]), ("B", (model_b, "1"), [5, 6, 7, 8, 9])]

scores = {}
for calibration in [None, "temperature", "temperature_bias", "combiner"]:
    clf = MergedHeadsClassifier((model_a, "1"), heads, calibration=calibration)
    clf.fit(X[held_out], y[held_out])
    proba = clf.predict_proba(X[test])
    scores[str(calibration)] = (clf.score(X[test], y[test]), log_loss(y[test], proba))
    print(
        f"calibration={calibration!s:17} accuracy {scores[str(calibration)][0]:.3f}  "
        f"log loss {scores[str(calibration)][1]:.3f}"
    )
print("classes_:", clf.classes_)

# %%
# The upper reference: one head retrained on all ten digits, from the images A
# and B were trained on together.
rows_ab = np.concatenate([rows_a, rows_b])
model_all = train(nn.Sequential(backbone, nn.Linear(64, 10)), X[rows_ab], y[rows_ab], 100)
with torch.no_grad():
    logits = model_all(torch.from_numpy(X[test])).double()
proba_all = torch.softmax(logits, 1).numpy()
scores["retrained on all"] = ((proba_all.argmax(1) == y[test]).mean(), log_loss(y[test], proba_all))
print(f"head retrained on all labels: accuracy {scores['retrained on all'][0]:.3f}")

# %%
# Where the naive merge goes wrong
# --------------------------------
# One softmax over both heads' logits lets each head speak about images it was
# never trained on, and the two heads' logits are on unrelated scales. The right
# panel shows the probability each merge gives to *the other head's* digits:
# for images of 0-4 the probability on 5-9, and the reverse. On this split,
# head B takes about a tenth of the probability of images of 0-4 under the
# naive merge; the combiner, trained on the held-out images, brings that down to
# about 1% and leaves the other direction about where it was (around 5%).
# How much the naive merge loses depends on the split: over ten
# random splits ``benchmarks/bench_heads.py`` measures 0.86 ± 0.05 accuracy for
# the naive merge and 0.96 ± 0.01 for the combiner (see the user guide).
naive = MergedHeadsClassifier((model_a, "1"), heads, calibration=None)
combined = MergedHeadsClassifier((model_a, "1"), heads)  # calibration="combiner"
low, high = test[y[test] < 5], test[y[test] >= 5]
wrong_head = {}
for name, clf in [("naive", naive), ("combiner", combined)]:
    clf.fit(X[held_out], y[held_out])
    wrong_head[name] = [
        clf.predict_proba(X[low])[:, 5:].sum(1).mean(),
        clf.predict_proba(X[high])[:, :5].sum(1).mean(),
    ]
    print(f"{name:9} probability on the other head's digits: {np.round(wrong_head[name], 3)}")

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
names = list(scores)
ax0.barh(names, [scores[n][0] for n in names], color="tab:blue")
ax0.set_xlim(0.5, 1.0)
ax0.set_xlabel("test accuracy, all ten digits")
ax0.set_title("merge calibrations")
ax0.invert_yaxis()
width = 0.35
for i, name in enumerate(wrong_head):
    ax1.bar(np.arange(2) + i * width, wrong_head[name], width, label=name)
ax1.set_xticks(
    np.arange(2) + width / 2, ["images of 0-4\n(mass on 5-9)", "images of 5-9\n(mass on 0-4)"]
)
ax1.set_ylabel("mean probability")
ax1.set_title("probability given to the other head's digits")
ax1.legend()
fig.tight_layout()

# %%
# One backbone pass instead of two
# --------------------------------
# :func:`skchain.merge_heads` gives the merged torch module alone. Its output
# on an image equals both complete models' outputs side by side, for one
# backbone pass instead of two. (``combined.merged_`` is the same module with
# the fitted combiner inside: one calibrated model to deploy.)
merged = merge_heads((model_a, "1"), heads)
big = np.repeat(X, 10, axis=0)
with torch.inference_mode():
    x = torch.from_numpy(big)
    start = time.perf_counter()
    both = torch.cat([model_a(x), model_b(x)], dim=1)
    t_two = time.perf_counter() - start
    start = time.perf_counter()
    columns = merged.columns(x)
    t_merged = time.perf_counter() - start
print(f"same outputs: {torch.allclose(both, columns, atol=1e-5)}")
print(f"{len(big)} images: two models {t_two:.2f} s, merged {t_merged:.2f} s")

# %%
# The backbone runs once per image
# --------------------------------
# A forward hook on each copy of the backbone counts the images it receives.
# To predict, the merged classifier runs model A's backbone once per new image,
# for both heads, and never model B's copy (its weights were compared with A's
# instead). To fit, once per held-out image, after a check on the first two
# that names a head that does not fit the backbone, if one does not.
seen = {"A": 0, "B": 0}


def counter(name):
    def hook(module, args, output):
        seen[name] += len(args[0])

    return hook


hooks = [model_a[0].register_forward_hook(counter("A")),
         model_b[0].register_forward_hook(counter("B"))]  # fmt: skip
clf = MergedHeadsClassifier((model_a, "1"), heads).fit(X[held_out], y[held_out])
fit_counts = dict(seen)
seen.update(A=0, B=0)
proba = clf.predict_proba(X[test])
for hook in hooks:
    hook.remove()
print(f"fit on {len(held_out)} images: backbone A ran on {fit_counts['A']}, B's copy on "
      f"{fit_counts['B']}")  # fmt: skip
print(f"predict_proba of {len(test)} images: backbone A ran on {seen['A']}, B's copy on "
      f"{seen['B']}; {proba.shape[1]} labels out")  # fmt: skip
assert fit_counts == {"A": len(held_out) + 2, "B": 0}
assert seen == {"A": len(test), "B": 0}

# %%
# Nothing was trained but the calibration:
print(all(torch.equal(v, model_b.state_dict()[k]) for k, v in weights_before.items()))
