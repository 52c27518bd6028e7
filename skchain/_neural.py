"""``NeuralTransformer``: a neural net as a scikit-learn ``fit``/``transform`` step.

Size (over 600 lines): one estimator class, of which about 170 lines are its
numpydoc docstring and the rest the scikit-learn protocol it must speak
(clone, params, tags, fit, fit_transform, transform). What stands alone lives
beside it: the input contract (``_inputs``), the module it runs for a net used
as it is (``_pretrained``), the target a net trains on (``_targets``), the
output plan (``_outputs``), cross fitting (``_crossfit``), the run (``_runner``).
"""

import copy
import functools
import warnings
from contextlib import contextmanager
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from torch.utils.data import DataLoader

from ._batches import TensorBatches
from ._cache import CACHE_CONSTRAINT, cached_outputs, callable_id, model_fingerprint
from ._crossfit import check_splits, cross_fit, resolve_cv
from ._dask import blockwise, dask_fit, dask_fit_transform
from ._outputs import describe_net, feature_names, net_kind, plan_output, target_aligned
from ._params import ParamsChecked
from ._repr import DocLinkMixin
from ._inputs import VALIDATION_ATTRIBUTES, check_rows, check_rows_deferred, module_refuses
from ._models import MODEL_CONSTRAINT, check_trainable, is_pretrained_model
from ._pretrained import module_to_run
from ._targets import check_output_fits_target, encode_target
from ._runner import (
    first_output,
    check_finite_output,
    module_device,
    resolve_device,
    run_module,
)
from ._sklearn_compat import (
    HasMethods,
    Interval,
    StrOptions,
    _check_feature_names_in,
    _check_sample_weight,
    _fit_context,
)
from ._training import draw_seed, train_net

__all__ = ["NeuralTransformer"]

# The attributes one fit sets, all together or not at all (see _set_state).
_FITTED = ("net_", "module_", "classes_", "_info", "_plan", "_feature_names_out")


class NeuralTransformer(ParamsChecked, DocLinkMixin, TransformerMixin, BaseEstimator):
    """Turn a neural net into a ``fit``/``transform`` step of a pipeline.

    The net's outputs -- class probabilities, logits, predictions, the
    embedding before its last linear layer, or any hidden layer -- become
    features for the next step (a scaler, PCA, a final estimator).

    Parameters
    ----------
    net : skorch net, torch.nn.Module, Keras 3 model, ONNX path or onnx.ModelProto
        - A skorch ``NeuralNetClassifier``, ``NeuralNetBinaryClassifier``,
          ``NeuralNetRegressor`` or ``NeuralNet``: ``fit(X, y)`` trains a clone
          of it (``fit(X)`` for a net without target, e.g. an autoencoder). Its
          parameters route through pipelines and searches
          (``nn__net__lr``, ``nn__net__module__hidden``).
        - A plain ``torch.nn.Module`` instance: taken as pretrained and used
          as it is. ``fit`` only validates and records the input width. A
          module with lazy layers is materialised on one private copy, the
          user's module stays lazy.
        - A Keras 3 model on the torch backend (a ``torch.nn.Module``, layers
          named by their Keras names), or an ONNX model -- the path of an
          ``.onnx`` file or an ``onnx.ModelProto`` -- run by onnxruntime as a
          frozen :class:`~skchain.OnnxModel` (its layers: the values its graph
          computes). Both used as they are; see the user guide's "Keras 3 and
          ONNX models".
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
        Plain modules are always used as they are. Such a net is **shared,
        never copied**, as :class:`sklearn.frozen.FrozenEstimator` shares its
        estimator: ``clone`` (so every fold and candidate of
        ``cross_val_score`` or ``GridSearchCV``) gives a new unfitted
        ``NeuralTransformer`` holding the very same net object, and its
        weights, train flags, buffers and hooks are unchanged by ``fit`` and
        ``transform``. Its own parameters are therefore not searchable
        (``net__lr`` is an error): change the net yourself.
    device : {"auto", "cpu", "cuda"}, str or None, default=None
        Where the net runs. ``None`` keeps the skorch net's ``device`` (or the
        plain module's current device); ``"auto"`` picks CUDA when available.
        Checked at ``fit``. A net used as it is is never moved: when it lives
        elsewhere, ``fit`` runs **one private copy** of its module on
        ``device`` (``module_``); move the module yourself to avoid the copy
        (e.g. once before a search on a GPU).
    batch_size : int, default=1024
        Rows per forward pass in ``transform``.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, batch shuffling and dropout of a trained
        net, so two fits give identical outputs -- also when fits run in
        threads (see the user guide's "Threads" section: training in one
        process holds a lock). The user's global torch RNG is untouched. A
        skorch net built on a module *instance* (not a class) starts every
        fit from that instance's weights, as skorch does; pass the class (and
        its arguments as ``module__*``) to have the seed draw them. For
        a pretrained module with lazy layers (``torch.nn.LazyLinear``), which
        ``fit`` materialises on a private copy, it seeds their initial
        weights (``None``: seed 0, the same weights in every fit).
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
        The module that ``transform`` runs: the user's own module for a net
        used as it is, except for the private copy made when ``device``
        differs or lazy layers must be materialised.
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
    ``iterator_train__shuffle`` itself, and are sliced from whole tensors
    instead of skorch's row-by-row ``DataLoader`` (same batches, about twice
    as fast for small nets; with shuffling, the same seed gives another row
    order than skorch's own ``fit``). A net that sets ``iterator_train`` or
    ``iterator_valid`` keeps its own. Per batch, skorch's loop calls only the
    callback methods that do something and switches the modules to training
    mode only when one is not (same weights and history as skorch's loop).

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
        "net": [*MODEL_CONSTRAINT, HasMethods(["initialize", "partial_fit", "get_params"])],
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
        # Only a real bool counts: get_params runs on unvalidated parameters.
        frozen = isinstance(self.frozen, (bool, np.bool_)) and bool(self.frozen)
        return is_pretrained_model(self.net) or frozen

    def _net_kind(self):
        return net_kind(self.net)

    def __sklearn_clone__(self):
        if not self._uses_pretrained:
            return super().__sklearn_clone__()
        # Like sklearn.frozen.FrozenEstimator: a pretrained module (or frozen
        # skorch net) is shared by every clone -- each fold and candidate of a
        # search -- never copied. scikit-learn's clone would deep-copy a module
        # (gigabytes for a large model) and rebuild a skorch net from its
        # parameters, without its weights.
        params = {
            k: clone(v, safe=False)
            for k, v in self.get_params(deep=False).items()
            if k != "net"
        }
        other = type(self)(net=self.net, **params)
        for attr in ("_sklearn_output_config", "_metadata_request"):
            if hasattr(self, attr):
                setattr(other, attr, copy.deepcopy(getattr(self, attr)))
        return other

    def get_params(self, deep=True):
        """Get parameters for this estimator.

        A net used as it is (a plain module, ``frozen=True``) is shared, not
        copied, so its own parameters (``net__lr``, ...) are not listed: setting
        them would change the user's net for every clone.

        Parameters
        ----------
        deep : bool, default=True
            Include the parameters of a skorch net trained here
            (``net__lr``, ``net__module__hidden``).

        Returns
        -------
        params : dict
        """
        return super().get_params(deep=deep and not self._uses_pretrained)

    def set_params(self, **params):
        """Set the parameters of this estimator.

        Parameters
        ----------
        **params : dict
            Estimator parameters; ``net__<name>`` for a skorch net trained here.

        Returns
        -------
        self : NeuralTransformer
        """
        shared = "net" not in params and self._uses_pretrained
        nested = sorted(k for k in params if k.startswith("net__"))
        if nested and shared:
            raise ValueError(
                f"Cannot set {nested}: this NeuralTransformer uses its net as it is "
                "(a plain module or frozen=True), shared with every clone and with "
                "your own code, so its parameters are not set from here. Change the "
                "net yourself, or pass a new net (set_params(net=...))."
            )
        return super().set_params(**params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float32"]
        trains = not self._uses_pretrained
        tags.target_tags.required = trains and self._net_kind() != "module"
        tags.non_deterministic = trains and self.random_state is None
        return tags

    def __getstate__(self):
        state = super().__getstate__()
        in_main = _classes_in_main(self)
        if in_main:
            warnings.warn(
                f"Pickling a fitted NeuralTransformer whose net uses {in_main}, "
                "defined in __main__ (a script or notebook). pickle stores classes "
                "by reference, so loading it elsewhere fails unless those classes "
                "can be imported there under the same name: define them in an "
                "importable module (a .py file on the path) before fitting.",
                UserWarning,
                stacklevel=2,
            )
        return state

    # -- fit -------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    @dask_fit(lambda self: None if self._uses_pretrained else "it trains its net on X")
    def fit(self, X, y=None, sample_weight=None, groups=None, **fit_params):
        """Train the net on ``(X, y)`` (a net used as it is is only checked).

        A fit that fails or is interrupted (``KeyboardInterrupt`` propagates)
        leaves the estimator as it was before the call.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows; any numeric dtype, converted to float32 once. A
            dask array or DataFrame: a net used as it is reads only its
            first rows (it learns nothing from them); a net trained here
            raises a ``TypeError`` (fit on ``X.compute()`` or a subsample).
        y : array-like of shape (n_samples,) or (n_samples, n_targets), default=None
            Targets. Class labels of any type for classifiers; ``None`` for a
            net trained without target. Ignored by a net used as it is.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the rows in the training loss of a net trained here
            (``mean(weight * loss)`` over each batch; the criterion must take
            ``reduction="none"``, as torch's losses do). Ignored by a net used
            as it is, which ``fit`` does not train. With metadata routing,
            request it with ``set_fit_request(sample_weight=True)``.
        groups : array-like of shape (n_samples,), default=None
            Group labels for the cross-fitting splitter of ``fit_transform``
            (e.g. ``cv=GroupKFold(5)``). ``fit`` trains one net on all rows and
            does not use them.
        **fit_params : dict
            Passed to the skorch net's training (its module's ``forward`` and
            ``train_split``).

        Returns
        -------
        self : NeuralTransformer
        """
        with self._all_or_nothing():
            X = check_rows(self, X, reset=True)
            fit_params = self._fit_params(X, sample_weight, fit_params)
            state = self._fit_state(X, y, fit_params, draw_seed(self.random_state))
        self._set_state(state)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    @dask_fit_transform
    def fit_transform(self, X, y=None, sample_weight=None, groups=None, **fit_params):
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
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights in each net's training loss (see :meth:`fit`); split
            with the folds.
        groups : array-like of shape (n_samples,), default=None
            Group labels passed to the cross-fitting splitter, so that
            ``cv=GroupKFold(k)`` holds whole groups out.
        **fit_params : dict
            Passed to each net's training; per-row arrays are split with the folds.

        Returns
        -------
        Xt : ndarray of shape (n_samples, n_outputs)
        """
        with self._all_or_nothing():
            X = check_rows(self, X, reset=True)
            fit_params = self._fit_params(X, sample_weight, fit_params)
            cv = resolve_cv(
                self.cv,
                y,
                trains=not self._uses_pretrained,
                classifier=self._net_kind() in ("classifier", "binary"),
                aligned=target_aligned(self.output),
            )
            if cv is None:
                # The outputs of all rows name the columns: no probe run first.
                state = self._fit_state(
                    X, y, fit_params, draw_seed(self.random_state), probe=False
                )
                out = self._probe(state, X, all_rows=True)
            else:
                state, out = self._cross_fit(X, y, cv, fit_params, groups)
        self._set_state(state)
        return check_finite_output(out, "NeuralTransformer")

    def _cross_fit(self, X, y, cv, fit_params, groups=None):
        # Labels are encoded once for all folds: a fold that misses a class
        # must still give its column the same meaning.
        _, classes = self._encode_target(y, X.shape[0])
        y = np.asarray(y)
        splits = check_splits(cv, X, y, groups)
        rng = check_random_state(self.random_state)
        seeds = [None if self.random_state is None else draw_seed(rng)
                 for _ in range(len(splits) + 1)]
        # The folds fit clones: the same fitting routine as ``fit``, nothing
        # of this estimator's state is shared with (or copied back from) them.
        fitter = clone(self).set_params(cv=None, n_jobs=None)
        state, oof = cross_fit(
            functools.partial(fitter._fit_state, classes=classes),
            fitter._outputs,
            X,
            y,
            splits,
            fit_params,
            seed=seeds[0],
            fold_seeds=seeds[1:],
            n_jobs=self.n_jobs,
        )
        width = len(state["_feature_names_out"])
        if oof.shape[1] != width:
            raise ValueError(
                f"The fold nets give {oof.shape[1]} output columns but the net fitted "
                f"on all rows gives {width}; the module's output width must not "
                "depend on the training rows."
            )
        return state, oof

    def _fit_params(self, X, sample_weight, fit_params):
        """Check the fit parameters; ``sample_weight`` joins them, validated."""
        if "sample_weight" in fit_params:  # pragma: no cover - a named argument
            raise TypeError("sample_weight is given twice.")
        if sample_weight is None:
            return dict(fit_params)
        sample_weight = _check_sample_weight(
            sample_weight, X, dtype=np.float32, ensure_non_negative=True
        )
        return {**fit_params, "sample_weight": sample_weight}

    @contextmanager
    def _all_or_nothing(self):
        """Give back the input description that validation set if the fit fails,
        so a failed or interrupted fit leaves the previous fitted state whole."""
        kept = {k: v for k, v in vars(self).items()
                if k in VALIDATION_ATTRIBUTES}
        try:
            yield
        except BaseException:
            for key in VALIDATION_ATTRIBUTES:
                vars(self).pop(key, None)
            vars(self).update(kept)
            raise

    def _set_state(self, state):
        for key in _FITTED:
            if state.get(key) is None and key != "net_":
                vars(self).pop(key, None)
            else:
                setattr(self, key, state[key])

    def _fit_state(self, X, y, fit_params, seed, classes=None, probe=True):
        """The one fitting routine: fit on validated float32 ``X`` and return the
        fitted attributes (see ``_FITTED``) without setting them.

        ``classes`` fixes the label set (cross fitting: every fold's columns
        mean the same classes); ``seed`` seeds the training. ``probe=False``
        leaves the output's names to the caller's ``_probe(state, X, all_rows=True)``.
        """
        fit_params = dict(fit_params)
        sample_weight = fit_params.pop("sample_weight", None)
        if self._uses_pretrained:
            # Not trained here, so nothing to weigh (as FrozenEstimator.fit).
            net_, module_, info = self._pretrained(X)
        else:
            net_, classes = self._train(X, y, fit_params, seed, classes, sample_weight)
            module_ = net_.module_
            info = describe_net(net_, classes=classes)
        plan = plan_output(self.output, info)
        state = {
            "net_": net_,
            "module_": module_,
            "classes_": info.classes,
            "_info": info,
            "_plan": plan,
        }
        if probe:
            self._probe(state, X)
        return state

    def _pretrained(self, X):
        """The module to run for a net used as it is (see :func:`module_to_run`)."""
        net_, module_, source = module_to_run(self.net, resolve_device(self.device), X,
                                              lambda: draw_seed(self.random_state))
        return net_, module_, describe_net(source if net_ is None else net_, module=module_)

    def _encode_target(self, y, n_samples, classes=None):
        return encode_target(self.net, y, n_samples, classes)

    def _training_net(self, classes):
        net = clone(self.net)
        params = net.get_params(deep=False)
        if "iterator_train__shuffle" not in params:
            net.set_params(iterator_train__shuffle=True)
        # skorch's default DataLoader fetches and collates every row one by
        # one; batches sliced from whole tensors train at raw-loop speed. A
        # net that names its own iterator keeps it.
        for key in ("iterator_train", "iterator_valid"):
            if params.get(key) is DataLoader:
                net.set_params(**{key: TensorBatches})
        if self.device is not None:
            net.set_params(device=resolve_device(self.device))
        if classes is not None and "classes" in params and params["classes"] is None:
            # The net trains on encoded labels 0..k-1; telling skorch all k of
            # them keeps its classes_ right when a fold misses one.
            net.set_params(classes=list(range(len(classes))))
        return net

    def _train(self, X, y, fit_params, seed, classes=None, sample_weight=None):
        check_trainable(self.net.module, f"{type(self.net).__name__}(module=...)")
        y_enc, classes = self._encode_target(y, X.shape[0], classes)
        net = self._training_net(classes)
        check = functools.partial(self._check_output_fits_target, X=X, y=y_enc,
                                  classes=classes)
        train_net(net, X, y_enc, seed=seed, fit_params=fit_params, after_initialize=check,
                  sample_weight=sample_weight)
        # The net itself only knows the encoded labels 0..k-1.
        return net, classes

    def _check_output_fits_target(self, net, *, X, y, classes):
        """Fail before training when the module's output cannot fit the target."""
        if y is None:
            return
        try:
            out = first_output(net.module_, X[:2])
        except RuntimeError as exc:
            raise module_refuses(X, exc) from exc
        check_output_fits_target(self._net_kind(), tuple(out.shape), y, classes)

    def _probe(self, state, X, all_rows=False):
        """Run the chosen output on two rows of ``X`` (or on all of them) and set
        the state's output names: catches a module that does not fit the input's
        shape. Returns the outputs that ran."""
        module, plan, info = state["module_"], state["_plan"], state["_info"]
        rows = X if all_rows else X[:2]
        try:
            if plan.layers and plan.keyword is None:
                # Each layer's width names its columns.
                out = None
                widths = [
                    run_module(module, X[:2], layers=[name]).shape[1]
                    for name in plan.layers
                ]
                if all_rows:
                    out = self._outputs(state, rows)
            else:
                # Through the cache, like every later call: a pretrained module
                # runs these rows once per search, not once per fit.
                out = self._outputs(state, rows)
                widths = [out.shape[1]]
        except RuntimeError as exc:
            raise module_refuses(X, exc) from exc
        classes = info.classes
        if (
            info.kind == "classifier"
            and plan.keyword in ("proba", "logits", "predict")
            and classes is not None
            and widths[0] != len(classes)
        ):
            raise ValueError(
                f'output="{plan.keyword}" gives {widths[0]} columns, but the net has '
                f"{len(classes)} classes ({list(classes)[:5]}...): the module's last "
                "layer must have one output per class."
            )
        state["_feature_names_out"] = feature_names(plan, info, widths)
        return out

    # -- transform -------------------------------------------------------------

    def _outputs(self, state, X, scanned=True):
        """The selected output of a fitted ``state`` for validated ``X``
        (``scanned=False``: not yet checked for NaN and infinity)."""
        check = None if scanned else self
        # The module runs where it lives: a trained net's module is on the net's
        # device, a pretrained one on its own or on the copy's (see _pretrained).
        compute = functools.partial(
            run_module, state["module_"], batch_size=self.batch_size,
            **state["_plan"].run_kwargs(),
        )
        if self.cache is not False and self._uses_pretrained:
            # A net used as it is gives a row the same output in every fold and
            # candidate of a search: each distinct row is computed once.
            fingerprint = functools.partial(_output_fingerprint, state)
            return cached_outputs(
                self.cache, fingerprint, X, compute, owner=_owner(state), check_input=check
            )
        return compute(X, check_input=check)

    def _state(self):
        return {key: getattr(self, key, None) for key in _FITTED}

    @blockwise(lambda self: ((len(self._feature_names_out),), np.float32))
    def transform(self, X):
        """Run the net on ``X`` and return the selected output.

        Safe to call from several threads at once: each call gives the result
        it would give alone, and the module is left as it was.

        Parameters
        ----------
        X : array-like or dask collection of shape (n_samples, n_features)
            A dask array or DataFrame gives a lazy dask array of the same
            rows, computed block by block (user guide: *Large data and clusters*).

        Returns
        -------
        Xt : ndarray of shape (n_samples, n_outputs)
            float32 (a DataFrame with ``set_output(transform="pandas")``).
        """
        if "module_" not in vars(self):
            check_is_fitted(self)  # raises NotFittedError; skipped when fitted (µs)
        self._check_params()  # as fit does; set_params may have changed them since
        X, scanned = check_rows_deferred(self, X)
        out = self._outputs(self._state(), X, scanned=scanned)
        return check_finite_output(out, "NeuralTransformer")

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
        _check_feature_names_in(self, input_features, generate_names=False)
        return self._feature_names_out.copy()

    def __sklearn_is_fitted__(self):
        return hasattr(self, "module_")


def _output_fingerprint(state):
    """What decides the outputs besides the rows: the module (weights and
    structure), the selected output with its post-processing, the device."""
    plan, info, module = state["_plan"], state["_info"], state["module_"]
    return model_fingerprint(
        module,
        "NeuralTransformer",
        info.kind,
        info.outputs_proba,
        callable_id(info.to_proba),
        plan.keyword,
        tuple(plan.layers or ()),
        plan.layer_inputs,
        callable_id(plan.postprocess),
        module_device(module).type,
    )


def _owner(state):
    """The module and what is read from it, for the cache's "auto" decision."""
    plan, info = state["_plan"], state["_info"]
    key = (
        info.kind,
        info.outputs_proba,
        info.to_proba,
        plan.keyword,
        tuple(plan.layers or ()),
        plan.layer_inputs,
        plan.postprocess,
    )
    return state["module_"], key


def _classes_in_main(estimator):
    """Names of classes defined in ``__main__`` that pickling ``estimator`` refers to."""
    objects = [getattr(estimator, "net_", None), estimator.net]
    module = getattr(estimator, "module_", None)
    if module is None:
        return []
    objects += list(module.modules())
    names = []
    for obj in objects:
        cls = type(obj)
        if cls.__module__ == "__main__" and cls.__qualname__ not in names:
            names.append(cls.__qualname__)
    return names
