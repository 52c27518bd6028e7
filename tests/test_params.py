"""Parameters validated in fit are validated again at every use (skchain._params).

Each estimator has one validation routine, scikit-learn's ``_validate_params``
over its ``_parameter_constraints``: ``fit`` runs it, and so does every later
use whose parameters are no longer the objects it last validated.
"""

import copy
import pickle

import numpy as np
import pytest
import sklearn.utils._param_validation as param_validation
import torch
from sklearn.datasets import load_iris
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn

from skchain import (
    MergedHeadsClassifier,
    ModuleClassifier,
    NeuralTransformer,
    OutputEnsembleClassifier,
    to_onnx,
    to_torch,
)
from skchain._params import ParamsChecked


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X).astype(np.float32), y


def _module():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


@pytest.fixture
def validations(monkeypatch):
    """How many times scikit-learn's parameter validation ran."""
    calls = []
    real = param_validation.validate_parameter_constraints

    def counting(*args, **kwargs):
        calls.append(args[2] if len(args) > 2 else kwargs.get("caller_name"))
        return real(*args, **kwargs)

    # BaseEstimator._validate_params looks the function up in sklearn.base.
    import sklearn.base

    monkeypatch.setattr(sklearn.base, "validate_parameter_constraints", counting)
    return calls


def test_unchanged_params_are_not_validated_again(iris, validations):
    X, _ = iris
    nt = NeuralTransformer(_module(), cache=False).fit(X)
    assert validations == ["NeuralTransformer"]
    state = dict(vars(nt))
    for _ in range(3):
        nt.transform(X[:1])
    assert validations == ["NeuralTransformer"]
    # transform leaves the instance as it was (scikit-learn's check_dict_unchanged).
    assert vars(nt).keys() == state.keys()
    assert all(vars(nt)[k] is v for k, v in state.items())


def test_a_changed_param_is_validated_once_at_its_next_use(iris, validations):
    X, _ = iris
    nt = NeuralTransformer(_module(), cache=False).fit(X)
    expected = nt.transform(X)
    nt.set_params(batch_size=7)
    np.testing.assert_array_equal(nt.transform(X), expected)
    nt.transform(X)
    assert validations == ["NeuralTransformer"] * 2
    nt.set_params(batch_size=0)
    with pytest.raises(InvalidParameterError, match="'batch_size' parameter of "
                                                    "NeuralTransformer must be an int"):
        nt.transform(X)
    with pytest.raises(InvalidParameterError):  # and every call after it
        nt.transform(X)
    # Plain attribute assignment counts too.
    nt.batch_size = 1024
    np.testing.assert_array_equal(nt.transform(X), expected)


def test_the_error_at_use_is_the_error_of_fit(iris):
    X, y = iris
    fitted = NeuralTransformer(_module()).fit(X)
    fitted.set_params(batch_size=-1)
    with pytest.raises(InvalidParameterError) as at_use:
        fitted.transform(X)
    with pytest.raises(InvalidParameterError) as at_fit:
        NeuralTransformer(_module(), batch_size=-1).fit(X)
    assert str(at_use.value) == str(at_fit.value)
    assert isinstance(at_use.value, ValueError) and isinstance(at_use.value, TypeError)


def test_copies_and_pickles_keep_checking(iris):
    X, _ = iris
    nt = NeuralTransformer(_module(), cache=False).fit(X)
    for other in (copy.deepcopy(nt), pickle.loads(pickle.dumps(nt))):
        np.testing.assert_array_equal(other.transform(X), nt.transform(X))
        other.set_params(batch_size="x")
        with pytest.raises(InvalidParameterError):
            other.transform(X)
    np.testing.assert_array_equal(nt.transform(X), nt.transform(X))  # the original untouched


def test_a_pipeline_step_changed_after_fit(iris):
    X, y = iris
    pipe = make_pipeline(NeuralTransformer(_module()), StandardScaler()).fit(X, y)
    pipe.set_params(neuraltransformer__batch_size=0)
    with pytest.raises(InvalidParameterError, match="batch_size"):
        pipe.transform(X)


def _heads():
    torch.manual_seed(1)
    backbone = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
    return backbone, [("ab", nn.Linear(6, 2), [0, 1]), ("c", nn.Linear(6, 2), [1, 2])]


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score"])
@pytest.mark.parametrize("value", [0, -1, "x"])
def test_merged_heads_batch_size_after_fit(iris, method, value):
    # batch_size=-1 used to give predictions for all rows but the last.
    X, y = iris
    clf = MergedHeadsClassifier(*_heads(), calibration="temperature").fit(X, y)
    clf.set_params(batch_size=value)
    args = (X, y) if method == "score" else (X,)
    with pytest.raises(InvalidParameterError, match="batch_size"):
        getattr(clf, method)(*args)


@pytest.mark.parametrize("value", [0, -1, "x"])
def test_module_classifier_in_an_ensemble_after_fit(iris, value):
    X, y = iris
    member = ModuleClassifier(_module(), [0, 1, 2])
    ens = OutputEnsembleClassifier([("m", member)]).fit(X, y)
    member.set_params(batch_size=value)
    with pytest.raises(InvalidParameterError, match="batch_size.*ModuleClassifier"):
        ens.predict(X)


def test_ensemble_voting_and_members_changed_after_fit(iris):
    X, y = iris
    members = [("a", ModuleClassifier(_module(), [0, 1, 2])),
               ("b", ModuleClassifier(_module(), [2, 1, 0]))]
    ens = OutputEnsembleClassifier(members).fit(X, y)
    expected = ens.predict_proba(X)
    ens.set_params(voting="sofft")
    assert hasattr(ens, "predict_proba")  # and it says what is wrong:
    for method in ("predict", "predict_proba", "transform"):
        with pytest.raises(InvalidParameterError, match="'voting' parameter"):
            getattr(ens, method)(X)
    ens.set_params(voting="soft", estimators=members[::-1])
    with pytest.raises(ValueError, match="estimators .* changed since fit.*fit again"):
        ens.predict_proba(X)
    ens.set_params(estimators=list(members))  # the same members again: as fitted
    np.testing.assert_array_equal(ens.predict_proba(X), expected)


def test_export_validates_like_predict(iris):
    X, y = iris
    nt = NeuralTransformer(_module()).fit(X)
    clf = ModuleClassifier(_module(), [0, 1, 2], output="logits")
    clf.set_params(output="logit")
    nt.set_params(batch_size=0)
    for est in (nt, clf):
        with pytest.raises(InvalidParameterError):
            to_torch(est)
    pytest.importorskip("skl2onnx")
    pytest.importorskip("onnxscript")
    with pytest.raises(InvalidParameterError):
        to_onnx(make_pipeline(nt), X[:1])


def test_every_public_estimator_checks_its_params():
    import skchain

    for name in skchain.__all__:
        obj = getattr(skchain, name)
        if isinstance(obj, type) and hasattr(obj, "_parameter_constraints"):
            if name.startswith("Chain"):
                continue  # searches: predict delegates to best_estimator_, checked there
            assert issubclass(obj, ParamsChecked), name
