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
from sklearn.ensemble import VotingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import accuracy_score, log_loss
from skorch import NeuralNetClassifier
from torch import nn

from skchain import ModuleClassifier, OutputEnsembleClassifier

torch.manual_seed(0)
torch.set_num_threads(1)
X, y = load_digits(return_X_y=True)
X = X / 16.0  # float64, as scikit-learn loads it: the ensemble converts for the nets
idx = np.random.RandomState(0).permutation(len(y))
large, medium, small, noise, held_out, test = np.split(idx, [400, 600, 700, 900, 1300])


def mlp(hidden):
    return nn.Sequential(
        nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def net(rows, epochs, hidden, labels=None):
    """A skorch net trained on its own rows (someone else's pretrained model)."""
    labels = y[rows] if labels is None else labels
    return NeuralNetClassifier(
        mlp(hidden), criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=0.01,
        max_epochs=epochs, batch_size=64, train_split=None, iterator_train__shuffle=True,
        verbose=0,
    ).fit(X[rows].astype(np.float32), labels)


# The medium member is kept as a bare torch module, as if loaded with
# load_state_dict: ModuleClassifier says which label each output column is.
medium_module = net(medium, 15, 32).module_
members = [
    ("large", net(large, 30, 64)),
    ("medium (torch module)", ModuleClassifier(medium_module, classes=range(10))),
    ("small", net(small, 8, 16)),
    ("noise", net(noise, 30, 32, labels=np.random.RandomState(1).permutation(y[noise]))),
]
X32 = X.astype(np.float32)  # the members themselves take float32 only
for name, member in members:
    print(f"{name:>22}: test accuracy {accuracy_score(y[test], member.predict(X32[test])):.3f}")

# %%
# Ways to combine them
# --------------------
# Every ensemble is fitted on the same 400 held-out rows that no member saw;
# fitting trains no member and copies none. X stays float64: the ensemble
# validates it once and hands the torch members float32 rows.
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
member_scores = {n: accuracy_score(y[test], m.predict(X32[test])) for n, m in members}
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

# %%
# The plain scikit-learn alternative
# ----------------------------------
# scikit-learn's own ``VotingClassifier`` over members wrapped in
# :class:`sklearn.frozen.FrozenEstimator` also averages prefit members without
# refitting them. With equal weights it gives the same probabilities as the
# "mean" ensemble above -- when it is handed float32 rows, since it passes X to
# the skorch nets unchecked. What it lacks is the learned weights, the
# alignment of members whose ``classes_`` are ordered differently, and plain
# torch modules as members.
frozen = VotingClassifier([(n, FrozenEstimator(m)) for n, m in members], voting="soft")
frozen.fit(X32[held_out], y[held_out])
diff = np.abs(frozen.predict_proba(X32[test]) - ensembles["mean"].predict_proba(X[test])).max()
print(f"VotingClassifier(FrozenEstimator) vs mean ensemble: max difference {diff:.1e}")
