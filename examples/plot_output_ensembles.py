"""
==============================================
Combining pretrained nets at their outputs
==============================================

Four digit classifiers have already been trained, each by someone else on
their own images: three nets of different quality and one that, through a
labelling mistake, learned nothing but noise. We want one classifier from them
-- without training any of them again.

:class:`skchain.OutputEnsembleClassifier` averages their probabilities, lets
them vote, or learns on a few held-out images how much to trust each one. One of
the members is a plain ``torch.nn.Module`` loaded "from weights", used through
:class:`skchain.ModuleClassifier`.
"""

# %%
# Four pretrained members
# -----------------------
# Each member is trained on its own disjoint rows of digits. The noise net is
# trained on shuffled labels. The medium net is kept as a bare torch module, as
# if loaded with ``load_state_dict``.
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, log_loss

from skchain import ModuleClassifier, OutputEnsembleClassifier
from skchain.datasets import MLP, make_classifier_net, train_module

torch.manual_seed(0)
torch.set_num_threads(1)
X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)
idx = np.random.RandomState(0).permutation(len(y))
large, medium, small, noise, held_out, test = np.split(idx, [400, 600, 700, 900, 1300])


def net(rows, epochs, hidden, labels=None):
    labels = y[rows] if labels is None else labels
    return make_classifier_net(
        n_classes=10, hidden=hidden, max_epochs=epochs, lr=0.01, iterator_train__shuffle=True
    ).fit(X[rows], labels)


medium_module = train_module(MLP(hidden=32, n_out=10), X[medium], y[medium], epochs=15)
members = [
    ("large", net(large, 30, 64)),
    ("medium (torch module)", ModuleClassifier(medium_module, classes=range(10))),
    ("small", net(small, 8, 16)),
    ("noise", net(noise, 30, 32, labels=np.random.RandomState(1).permutation(y[noise]))),
]
for name, member in members:
    print(f"{name:>22}: test accuracy {accuracy_score(y[test], member.predict(X[test])):.3f}")

# %%
# Ways to combine them
# --------------------
# Every ensemble is fitted on the same 400 held-out rows that no member saw;
# fitting trains no member.
ensembles = {
    "mean": OutputEnsembleClassifier(members),
    "learned weights": OutputEnsembleClassifier(members, weights="learn"),
    "hard vote": OutputEnsembleClassifier(members, voting="hard"),
}
scores = {}
for name, ensemble in ensembles.items():
    ensemble.fit(X[held_out], y[held_out])
    scores[name] = accuracy_score(y[test], ensemble.predict(X[test]))
    if ensemble.voting == "soft":
        loss = log_loss(y[test], ensemble.predict_proba(X[test]))
        print(f"{name:>16}: accuracy {scores[name]:.3f}, log loss {loss:.3f}")
    else:
        print(f"{name:>16}: accuracy {scores[name]:.3f}")

weights = ensembles["learned weights"].weights_
for (name, _), weight in zip(members, weights, strict=True):
    print(f"learned weight of {name}: {weight:.3f}")

# %%
# The learned weights go almost entirely to the good nets and nearly nothing to
# the noise net; equal weights and the majority vote give the weak members a
# say they have not earned.
member_scores = {n: accuracy_score(y[test], m.predict(X[test])) for n, m in members}
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
left.barh([n for n, _ in members], weights, color="tab:blue")
left.set_xlabel("learned weight")
left.set_title("weights learned on held-out rows")
names = list(member_scores) + list(scores)
values = list(member_scores.values()) + list(scores.values())
colors = ["tab:gray"] * len(member_scores) + ["tab:green"] * len(scores)
right.barh(names, values, color=colors)
right.set_xlim(0, 1)
right.set_xlabel("test accuracy")
right.set_title("members (gray) and ensembles (green)")
fig.tight_layout()
