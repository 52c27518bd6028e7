"""
=====================================================================
Combining image classifiers from torch, Keras and an ONNX file
=====================================================================

Three digit-image classifiers have been trained elsewhere, each on its own
images: a torch conv net, a Keras 3 conv net, and a conv net that was handed
over as an ONNX file. We want one classifier from the three, without training
any of them again (user story 5, on images).

Each member is wrapped in :class:`skchain.ModuleClassifier` -- the torch
module, the Keras model and the *path* of the ONNX file alike -- and
:class:`skchain.OutputEnsembleClassifier` averages their probabilities, learns
on a few held-out images how much to trust each one, or lets them vote. See
:ref:`keras_onnx` for how Keras and ONNX models are run.
"""

# %%
# Keras on the torch backend
# --------------------------
# Keras reads its backend once, when it is first imported: on the torch
# backend a Keras model is a ``torch.nn.Module``, which skchain runs like any
# other.
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import tempfile  # noqa: E402
import warnings  # noqa: E402

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.metrics import accuracy_score, log_loss  # noqa: E402
from torch import nn  # noqa: E402

from skchain import ModuleClassifier, OnnxModel, OutputEnsembleClassifier  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(1)
keras.utils.set_random_seed(0)

# %%
# Images
# ------
# The 8x8 digits images of scikit-learn, as a batch of shape (n, C, H, W):
# the layout of torch's conv layers. Each member gets its own 250 training
# images; 300 more are held out to learn the weights, the rest are the test.
X, y = load_digits(return_X_y=True)
images = (X / 16).astype(np.float32).reshape(-1, 1, 8, 8)
idx = np.random.RandomState(0).permutation(len(y))
for_torch, for_keras, for_onnx, held_out, test = np.split(idx, [250, 500, 750, 1050])
print(f"images: {images.shape}, test images: {len(test)}")


# %%
# Three pretrained members
# ------------------------
# A torch conv net, trained with a plain loop.
class ConvNet(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(width * 16, 10)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def train_torch(rows, epochs, width):
    net = ConvNet(width)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    xb, yb = torch.from_numpy(images[rows]), torch.from_numpy(y[rows])
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xb), yb).backward()
        opt.step()
    return net.eval()


torch_net = train_torch(for_torch, epochs=60, width=8)

# %%
# A Keras conv net. Keras convolutions take channels-last images, so the
# model starts with a ``Permute`` from (C, H, W) to (H, W, C): every member of
# an ensemble takes the same ``X``.
inputs = keras.Input((1, 8, 8))
h = keras.layers.Permute((2, 3, 1), name="to_channels_last")(inputs)
h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(h)
h = keras.layers.Flatten(name="flat")(h)
outputs = keras.layers.Dense(10, activation="softmax", name="proba")(h)
keras_net = keras.Model(inputs, outputs, name="keras_cnn")
keras_net.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss="sparse_categorical_crossentropy")
keras_net.fit(images[for_keras], y[for_keras], epochs=15, batch_size=32, verbose=0)

# %%
# The third net reaches us as an ONNX file, exported from torch (any exporter
# -- tf2onnx, a vendor's tool -- gives such a file).
onnx_path = os.path.join(tempfile.mkdtemp(), "digits_convnet.onnx")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the exporter's progress messages
    torch.onnx.export(
        train_torch(for_onnx, epochs=40, width=4), (torch.zeros(1, 1, 8, 8),),
        onnx_path, dynamo=False, input_names=["images"], output_names=["logits"],
        dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}},
    )
print(OnnxModel(onnx_path))

# %%
# One wrapper for all three: the Keras model ends with a softmax, so its
# outputs are ``"proba"``; the others give logits.
classes = np.arange(10)
members = [
    ("torch", ModuleClassifier(torch_net, classes)),
    ("keras", ModuleClassifier(keras_net, classes, output="proba")),
    ("onnx", ModuleClassifier(onnx_path, classes)),
]

# %%
# Mean, learned weights and vote
# ------------------------------
# ``fit`` never trains a member: the mean and the vote only check them, the
# learned weights are fitted on the held-out images.
ensembles = {
    "mean": OutputEnsembleClassifier(members),
    "learned weights": OutputEnsembleClassifier(members, weights="learn"),
    "vote": OutputEnsembleClassifier(members, voting="hard"),
}
for ens in ensembles.values():
    ens.fit(images[held_out], y[held_out])
learned = ensembles["learned weights"].weights_.round(2).tolist()
print("learned weights:", dict(zip([n for n, _ in members], learned, strict=True)))

scores = {}
for name, member in members:
    proba = member.predict_proba(images[test])
    scores[name] = (accuracy_score(y[test], proba.argmax(1)), log_loss(y[test], proba))
for name, ens in ensembles.items():
    pred = ens.predict(images[test])
    loss = log_loss(y[test], ens.predict_proba(images[test])) if name != "vote" else np.nan
    scores[name] = (accuracy_score(y[test], pred), loss)
print(f"{'':>16}  accuracy  log loss")
for name, (acc, loss) in scores.items():
    print(f"{name:>16}  {acc:8.3f}  {loss:8.3f}")

# %%
# Each combination is compared with its members on the same test images. The
# learned weights trust the members by how well they did on the held-out
# images; a weight of zero drops a member whose information the others
# already carry.
fig, ax = plt.subplots(figsize=(6, 3))
names = list(scores)
ax.barh(names, [scores[n][0] for n in names],
        color=["0.7"] * len(members) + ["C0"] * len(ensembles))
ax.set_xlim(0.5, 1.0)
ax.set_xlabel("test accuracy")
ax.invert_yaxis()
fig.tight_layout()
plt.show()
