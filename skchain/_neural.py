"""``NeuralTransformer``: a neural net as a scikit-learn ``fit``/``transform`` step."""

import copy
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from ._cache import CACHE_CONSTRAINT, cached_outputs, callable_id, model_fingerprint
from ._crossfit import cross_fit_transform, resolve_cv
from ._outputs import describe_net, feature_names, plan_output, target_aligned
from ._runner import eval_mode, module_device, resolve_device, run_module

__all__ = ["NeuralTransformer"]


def _seed_context(random_state):
    """A torch RNG scope seeded from ``random_state``; the global state is kept.

    Weight initialisation and batch shuffling both draw from torch's global
    generator, so seeding it inside ``fork_rng`` makes a fit repeatable without
    changing the RNG stream the user's own code sees.
    """
    if random_state is None:
        return _NullContext()
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    return _SeededRNG(int(seed))


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _SeededRNG:
    def __init__(self, seed):
        self.seed = seed

    def __enter__(self):
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        self._fork = torch.random.fork_rng(devices=devices)
        self._fork.__enter__()
        torch.manual_seed(self.seed)
        return self

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)


class NeuralTransformer(TransformerMixin, BaseEstimator):
    """Turn a neural net into a ``fit``/``transform`` step of a pipeline.

    The net's outputs -- class probabilities, logits, predictions, the
    embedding before its last linear layer, or any hidden layer -- become
    features for the next step (a scaler, PCA, a final estimator).

    Parameters
    ----------
    net : skorch net or torch.nn.Module
        - A skorch ``NeuralNetClassifier``, ``NeuralNetBinaryClassifier``,
          ``NeuralNetRegressor`` or ``NeuralNet``: ``fit(X, y)`` trains a clone
          of it (``fit(X)`` for a net without target, e.g. an autoencoder). Its
          parameters route through pipelines and searches
          (``nn__net__lr``, ``nn__net__module__hidden``).
        - A plain ``torch.nn.Module`` instance: taken as pretrained and used
          as it is. ``fit`` only validates and records the input width.
    output : str or list of str, default="auto"
        What ``transform`` returns:

        - ``"auto"``: ``"proba"`` for classifiers, ``"predict"`` for
          regressors, the raw final output for any other net.
        - ``"proba"``: class probabilities, as the net's ``predict_proba``
          (plain modules: softmax of the output, which is assumed to be logits).
        - ``"logits"``: pre-softmax scores (the log of the probabilities for a
          skorch classifier whose module returns probabilities, skorch's
          ``NLLLoss`` default).
        - ``"predict"``: classifiers give the predicted class **one-hot
          encoded**, one column per class in ``classes_`` order; regressors
          their predictions.
        - ``"embedding"``: the input of the net's last ``nn.Linear`` layer.
        - any other string: the output of the submodule with that name
          (``"encoder.2"``); a list: several submodules, flattened and
          concatenated. A list always names submodules, so
          ``["embedding"]`` selects a layer called ``embedding``.

        Layers are read with forward hooks; the module is never copied or cut.
    frozen : bool, default=False
        Use an already fitted skorch net as it is: ``fit`` never trains it.
        Plain modules are always frozen. A frozen net's weights are bitwise
        unchanged by ``fit``, ``clone``, ``cross_val_score`` or ``GridSearchCV``.
    device : {"auto", "cpu", "cuda"}, str or None, default=None
        Where the net runs. ``None`` keeps the skorch net's ``device`` (or the
        plain module's current device); ``"auto"`` picks CUDA when available.
    batch_size : int, default=1024
        Rows per forward pass in ``transform``.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation and batch shuffling of a trained net, so two
        fits give identical outputs. The user's global torch RNG is untouched.
    cv : "auto", int, cross-validation generator, iterable or None, default="auto"
        Cross fitting in ``fit_transform``, which is what a pipeline calls on
        its intermediate steps. A net trained on ``(X, y)`` and then run on
        the same rows gives in-sample outputs, more confident than what it
        gives on new data, and the next step would learn to trust them too
        much. With cross fitting, each training row's output comes from a net
        that never saw that row; the net trained on all rows is kept for
        ``transform``. Values are as in scikit-learn (an int is stratified
        k-fold for classifiers, k-fold otherwise); the splits must hold each
        row out exactly once.

        - ``"auto"``: 5 folds whenever the net is trained here with a target
          and ``output`` is ``"auto"``, ``"proba"``, ``"logits"`` or
          ``"predict"``. No cross fitting for a net used as it is (pretrained
          or ``frozen=True``: its outputs do not depend on the rows ``fit``
          saw), a net trained without ``y`` (nothing to leak), or an
          embedding or hidden layer: each fold's net learns its own hidden
          coordinates, so out-of-fold embeddings from several nets would not
          form one feature space (an explicit ``cv`` with such an output is
          an error). An embedding trained in the pipeline is in-sample for
          the training rows; the cross-validated score of the whole pipeline
          stays honest because every outer fold retrains the net.
        - ``None``: never cross-fit (``fit_transform`` is
          ``fit(X, y).transform(X)``), e.g. when the next step is meant to
          see in-sample outputs, or to save the extra fits.

        Cross fitting trains ``n_folds + 1`` nets; ``fit`` alone trains one.
    n_jobs : int or None, default=None
        Folds trained in parallel through joblib (``-1``: all cores). Each
        worker limits torch and BLAS to its share of the cores.
    cache : "auto", bool, str, os.PathLike or joblib.Memory, default="auto"
        Reuse the outputs of a net used as it is (a plain module, or
        ``frozen=True``): a row's output is the same in every fold and every
        candidate of a search, so each distinct row is computed once. Entries
        are keyed by a fingerprint of the weights, the structure and
        ``output``, and by a hash of each row's bytes: changed weights or rows
        are computed afresh, never served stale. A net trained here is never
        cached.

        - ``"auto"``: in memory (1 GiB per process, least recently used rows
          evicted first), for nets that are slower to run than to look up; a
          tiny net that computes a row in about a microsecond is just run.
        - ``True``: in memory, always. ``False``: never.
        - a folder path or a :class:`joblib.Memory`: in memory and on disk
          there, shared by processes (joblib workers, later sessions).

        The cache assumes the net is deterministic in eval mode.

    Attributes
    ----------
    net_ : skorch net or None
        The fitted clone of ``net`` (``net`` itself when frozen; ``None`` for a
        plain module).
    module_ : torch.nn.Module
        The module that ``transform`` runs.
    classes_ : ndarray of shape (n_classes,)
        Class labels, for classifier nets.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when X has string column names.

    Notes
    -----
    What skorch leaves to its user is done here: X of any numeric dtype is
    converted to float32 once; class labels of any type are encoded for the
    net and decoded in ``classes_``; a regressor's 1-D ``y`` becomes a column
    (skorch would broadcast it against an ``(n, 1)`` output and learn a
    constant); training batches are shuffled unless the net sets
    ``iterator_train__shuffle`` itself.

    Examples
    --------
    >>> import torch
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skorch import NeuralNetClassifier
    >>> from skchain import NeuralTransformer
    >>> X, y = load_iris(return_X_y=True)
    >>> module = torch.nn.Sequential(
    ...     torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> net = NeuralNetClassifier(module, criterion=torch.nn.CrossEntropyLoss,
    ...                           max_epochs=20, lr=0.1, train_split=None, verbose=0)
    >>> pipe = make_pipeline(StandardScaler(),
    ...                      NeuralTransformer(net, output="embedding", random_state=0),
    ...                      LogisticRegression())
    >>> pipe.fit(X, y).score(X, y) > 0.9
    True
    >>> pipe[1].get_feature_names_out()[:3]
    array(['embedding_0', 'embedding_1', 'embedding_2'], dtype=object)
    """

    _parameter_constraints: dict = {
        "net": [nn.Module, HasMethods(["initialize", "partial_fit", "get_params"])],
        "output": [str, list, tuple],
        "frozen": ["boolean"],
        "device": [StrOptions({"auto", "cpu", "cuda"}), str, torch.device, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "cv": [StrOptions({"auto"}), "cv_object", None],
        "n_jobs": [Integral, None],
        "cache": CACHE_CONSTRAINT,
    }

    def __init__(
        self,
        net,
        *,
        output="auto",
        frozen=False,
        device=None,
        batch_size=1024,
        random_state=None,
        cv="auto",
        n_jobs=None,
        cache="auto",
    ):
        self.net = net
        self.output = output
        self.frozen = frozen
        self.device = device
        self.batch_size = batch_size
        self.random_state = random_state
        self.cv = cv
        self.n_jobs = n_jobs
        self.cache = cache

    # -- scikit-learn protocol -------------------------------------------------

    @property
    def _uses_pretrained(self):
        return isinstance(self.net, nn.Module) or self.frozen

    def _net_kind(self):
        from skorch import NeuralNetBinaryClassifier, NeuralNetClassifier, NeuralNetRegressor

        if isinstance(self.net, (NeuralNetClassifier, NeuralNetBinaryClassifier)):
            return "classifier"
        if isinstance(self.net, NeuralNetRegressor):
            return "regressor"
        return "module"

    def __sklearn_clone__(self):
        if isinstance(self.net, nn.Module) or not self.frozen:
            return super().__sklearn_clone__()
        # scikit-learn's clone would rebuild the skorch net from its parameters,
        # i.e. without its weights; a frozen net is copied whole instead.
        params = self.get_params(deep=False)
        params = {k: clone(v, safe=False) for k, v in params.items() if k != "net"}
        other = type(self)(net=copy.deepcopy(self.net), **params)
        if hasattr(self, "_sklearn_output_config"):
            other._sklearn_output_config = copy.deepcopy(self._sklearn_output_config)
        return other

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float32"]
        trains = not (isinstance(self.net, nn.Module) or self.frozen)
        tags.target_tags.required = trains and self._net_kind() != "module"
        tags.non_deterministic = trains and self.random_state is None
        return tags

    # -- fit -------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, **fit_params):
        """Train the net on ``(X, y)`` (a frozen net is only checked).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows; any numeric dtype, converted to float32 once.
        y : array-like of shape (n_samples,) or (n_samples, n_targets), default=None
            Targets. Class labels of any type for classifiers; ``None`` for a
            net trained without target. Ignored by a frozen net.
        **fit_params : dict
            Passed to the skorch net's ``fit``.

        Returns
        -------
        self : NeuralTransformer
        """
        X = validate_data(self, X, dtype=np.float32, ensure_min_samples=1)
        return self._fit(X, y, fit_params)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None, **fit_params):
        """Fit the net and return outputs for ``X`` -- out of fold when cross-fitting.

        When the net is trained here on a target and ``cv`` is not ``None``
        (the default ``"auto"`` means 5 folds), each row's output comes from a
        net trained on the other folds, and the net trained on all rows is
        kept for ``transform``. So ``fit_transform(X, y)`` differs from
        ``fit(X, y).transform(X)``: that is the point, as in
        :class:`sklearn.preprocessing.TargetEncoder`. A net used as it is, or
        trained without ``y``, gives ``fit(X, y).transform(X)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets), default=None
        **fit_params : dict
            Passed to each net's ``fit``; per-row arrays are split with the folds.

        Returns
        -------
        Xt : ndarray of shape (n_samples, n_outputs)
        """
        X = validate_data(self, X, dtype=np.float32, ensure_min_samples=1)
        cv = resolve_cv(
            self.cv,
            y,
            trains=not self._uses_pretrained,
            classifier=self._net_kind() == "classifier",
            aligned=target_aligned(self.output),
        )
        if cv is None:
            return self._fit(X, y, fit_params)._run(X)
        # Labels are encoded once for all folds: a fold that misses a class
        # must still give its column the same meaning.
        self._encode_target(y, X.shape[0])
        return cross_fit_transform(self, X, np.asarray(y), cv, fit_params, n_jobs=self.n_jobs)

    def _fit(self, X, y, fit_params, classes=None):
        """Fit on validated float32 ``X``; ``classes`` fixes the label set."""
        if self._uses_pretrained:
            self._fit_pretrained()
        else:
            self._fit_trainable(X, y, classes=classes, **fit_params)
        self._probe(X)
        return self

    def _fit_pretrained(self):
        if isinstance(self.net, nn.Module):
            self.net_ = None
            self.module_ = self.net
            self._info = describe_net(self.net)
        else:
            if not getattr(self.net, "initialized_", False):
                raise ValueError(
                    "frozen=True uses the net as it is, but this skorch net is not "
                    "initialized. Fit it first (net.fit(X, y)) or load its weights "
                    "(net.initialize(); net.load_params(...)), or set frozen=False "
                    "to train it here."
                )
            self.net_ = self.net
            self.module_ = self.net.module_
            self._info = describe_net(self.net)
        if self._info.classes is not None:
            self.classes_ = self._info.classes
        if self.device is not None:
            self.module_.to(resolve_device(self.device))

    def _encode_target(self, y, n_samples, classes=None):
        kind = self._net_kind()
        if y is None:
            if kind != "module":
                raise ValueError(
                    f"NeuralTransformer with a {type(self.net).__name__} requires y to "
                    "be passed, but the target y is None: call fit(X, y), or use "
                    "frozen=True to use a fitted net without training it."
                )
            return None
        y = np.asarray(y)
        if y.shape[0] != n_samples:
            raise ValueError(
                f"X has {n_samples} rows but y has {y.shape[0]}; they must match."
            )
        if kind == "classifier":
            check_classification_targets(y)
            if y.ndim != 1:
                y = np.ravel(y) if y.ndim == 2 and y.shape[1] == 1 else y
            encoder = LabelEncoder().fit(y if classes is None else classes)
            self.classes_ = encoder.classes_
            from skorch import NeuralNetBinaryClassifier

            if isinstance(self.net, NeuralNetBinaryClassifier):
                if len(self.classes_) > 2:
                    raise ValueError(
                        "NeuralNetBinaryClassifier needs two classes, y has "
                        f"{len(self.classes_)}; use NeuralNetClassifier instead."
                    )
                return encoder.transform(y).astype(np.float32)
            return encoder.transform(y).astype(np.int64)
        if kind == "regressor":
            y = np.asarray(y, dtype=np.float32)
            if not np.isfinite(y).all():
                raise ValueError("y contains NaN or infinity; clean or impute it first.")
            # A 1-D target against an (n, 1) output is broadcast by MSELoss into an
            # (n, n) difference and the net learns a constant: make it a column.
            return y.reshape(-1, 1) if y.ndim == 1 else y
        return y

    def _training_net(self):
        net = clone(self.net)
        params = net.get_params(deep=False)
        if "iterator_train__shuffle" not in params:
            net.set_params(iterator_train__shuffle=True)
        if self.device is not None:
            net.set_params(device=resolve_device(self.device))
        return net

    def _fit_trainable(self, X, y, classes=None, **fit_params):
        y_enc = self._encode_target(y, X.shape[0], classes)
        net = self._training_net()
        with _seed_context(self.random_state):
            net.initialize()
            self._check_output_fits_target(net, X, y_enc)
            net.partial_fit(X, y_enc, **fit_params)
        self.net_ = net
        self.module_ = net.module_
        self._info = describe_net(net, classes=getattr(self, "classes_", None))

    def _check_output_fits_target(self, net, X, y):
        """Fail before training when the module's output cannot fit the target."""
        if y is None:
            return
        out = _raw_output(net.module_, X[:2])
        kind = self._net_kind()
        if kind == "classifier" and y.dtype == np.int64:
            n_classes = len(self.classes_)
            if out.ndim != 2 or out.shape[1] < n_classes:
                raise ValueError(
                    f"The module returns shape {tuple(out.shape)} per batch but y has "
                    f"{n_classes} classes; its last layer needs {n_classes} outputs "
                    "(set the output size through net__module__<param>)."
                )
        elif kind == "regressor":
            n_targets = y.shape[1]
            if out.ndim != 2 or out.shape[1] != n_targets:
                raise ValueError(
                    f"The module returns shape {tuple(out.shape)} but y has "
                    f"{n_targets} target column(s); the module must return "
                    f"(n_samples, {n_targets})."
                )

    def _probe(self, X):
        """Run two rows through the chosen output: catches a module that does not
        fit the input width, and gives the output's feature names."""
        self._plan = plan_output(self.output, self._info)
        head = X[:2]
        try:
            if self._plan.layers and self._plan.keyword is None:
                widths = [
                    run_module(self.module_, head, layers=[name]).shape[1]
                    for name in self._plan.layers
                ]
            else:
                widths = [self._run(head).shape[1]]
        except RuntimeError as exc:
            raise ValueError(
                f"The module failed on input of shape (n, {X.shape[1]}): {exc}. "
                "Check that its first layer takes that many features (or use "
                "torch.nn.LazyLinear)."
            ) from exc
        self._feature_names_out = feature_names(self._plan, self._info, widths)

    # -- transform -------------------------------------------------------------

    def _run(self, X):
        if self._uses_pretrained:
            # A net used as it is gives a row the same output in every fold and
            # candidate of a search: each distinct row is computed once.
            return cached_outputs(self.cache, self._output_fingerprint, X, self._forward)
        return self._forward(X)

    def _forward(self, X):
        return run_module(
            self.module_,
            X,
            batch_size=self.batch_size,
            device=self._run_device(),
            **self._plan.run_kwargs(),
        )

    def _run_device(self):
        return None if self.device is None else resolve_device(self.device)

    def _output_fingerprint(self):
        """What decides the outputs besides the rows: the module (weights and
        structure), the selected output with its post-processing, the device."""
        plan, info = self._plan, self._info
        device = self._run_device()
        device = module_device(self.module_) if device is None else torch.device(device)
        return model_fingerprint(
            self.module_,
            "NeuralTransformer",
            info.kind,
            info.outputs_proba,
            callable_id(info.to_proba),
            plan.keyword,
            tuple(plan.layers or ()),
            plan.layer_inputs,
            callable_id(plan.postprocess),
            device.type,
        )

    def transform(self, X):
        """Run the net on ``X`` and return the selected output.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        Xt : ndarray of shape (n_samples, n_outputs)
            float32 (a DataFrame with ``set_output(transform="pandas")``).
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return self._run(X)

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns, e.g. ``proba_<class>``, ``embedding_0``,
        ``encoder.2_0``.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only checked against the names seen in ``fit``.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self)
        from sklearn.utils.validation import _check_feature_names_in

        _check_feature_names_in(self, input_features, generate_names=False)
        return self._feature_names_out.copy()

    def __sklearn_is_fitted__(self):
        return hasattr(self, "module_")


def _raw_output(module, X):
    with torch.inference_mode(), eval_mode(module):
        out = module(torch.from_numpy(X).to(module_device(module)))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out
