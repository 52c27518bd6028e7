"""A user's own table and models file for ``skchain bench --data/--models``.

- :func:`read_table`: a CSV or Parquet file with a target column -> ``X, y``;
- :func:`infer_task`: classification or regression, from the target;
- :func:`default_preprocessor`: the column preprocessing the bundled models
  put in front of themselves (numeric: median imputation and scaling;
  categorical: imputation and one-hot; text: TF-IDF), decided per column;
- :func:`load_models`: ``models()`` of a Python file, checked.

Everything the user can get wrong raises :class:`UsageError` with one line
that names the problem and the fix; the command line prints it and exits 2.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

__all__ = [
    "UsageError",
    "read_table",
    "infer_task",
    "default_preprocessor",
    "load_models",
    "is_chain",
]

# A target with at most this many distinct integer values is a class label.
MAX_INTEGER_CLASSES = 20
# A string column whose values have at least this many words (median) is text.
TEXT_MIN_WORDS = 3
TFIDF_MAX_FEATURES = 300


class UsageError(ValueError):
    """A problem with the user's arguments, files or data: one line, exit 2."""


def _columns(names, limit=8):
    names = [str(n) for n in names]
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def read_table(path, target, *, drop=()):
    """``X`` (a DataFrame of the other columns) and ``y`` from a CSV or Parquet file.

    Rows whose target is missing are dropped; the caller is told how many.

    Returns
    -------
    X : pandas.DataFrame
    y : pandas.Series
    n_dropped : int
        Rows dropped for a missing target.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--data {path}: no such file.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise UsageError(
                f"--data {path}: unknown file type {suffix or '(none)'!r}; give a .csv, "
                ".tsv or .parquet file."
            )
    except UsageError:
        raise
    except pd.errors.EmptyDataError:
        raise UsageError(f"--data {path}: the file is empty.") from None
    except ImportError as exc:
        raise UsageError(
            f"--data {path}: reading Parquet needs pyarrow ({exc}); pip install pyarrow."
        ) from None
    except Exception as exc:  # parser, encoding, corrupt parquet: all one line
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UsageError(
            f"--data {path}: cannot read it as {suffix[1:].upper()}: "
            f"{type(exc).__name__}: {first}"
        ) from None
    if frame.columns.size == 0 or len(frame) == 0:
        raise UsageError(f"--data {path}: the file has no rows.")
    frame.columns = [str(c) for c in frame.columns]
    if target not in frame.columns:
        raise UsageError(
            f"--target {target!r}: no such column in {path.name}; its columns are "
            f"{_columns(frame.columns)}."
        )
    unknown = [c for c in drop if c not in frame.columns]
    if unknown:
        raise UsageError(f"--drop: no column {_columns(unknown)} in {path.name}.")
    if target in drop:
        raise UsageError(f"--drop: {target!r} is the target; it cannot be dropped.")
    y = frame[target]
    keep = y.notna().to_numpy()
    n_dropped = int((~keep).sum())
    if not keep.any():
        raise UsageError(f"--target {target!r}: every value of the column is missing.")
    X = frame.loc[keep].drop(columns=[target, *drop]).reset_index(drop=True)
    if X.columns.size == 0:
        raise UsageError(f"--data {path}: no column is left besides the target {target!r}.")
    return X, y[keep].reset_index(drop=True), n_dropped


def infer_task(y, task="auto"):
    """``"classification"`` or ``"regression"``, and why, as ``(task, reason)``.

    Strings, booleans and categories are class labels; numbers are a
    regression target unless they are integers with at most
    ``MAX_INTEGER_CLASSES`` distinct values.
    """
    numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
    n_unique = int(y.nunique())
    if task == "regression" and not numeric:
        raise UsageError(
            f"--task regression: the target {y.name!r} is not numeric "
            f"(dtype {y.dtype}); use --task classification."
        )
    if task == "auto":
        if not numeric:
            task, reason = "classification", f"non-numeric target with {n_unique} values"
        elif np.all(np.mod(y.to_numpy(dtype=float), 1) == 0) and n_unique <= MAX_INTEGER_CLASSES:
            task, reason = "classification", f"integer target with {n_unique} values"
        else:
            task, reason = "regression", f"numeric target with {n_unique} values"
    else:
        reason = "--task"
    if task == "classification" and n_unique < 2:
        raise UsageError(f"--target {y.name!r}: one class only ({y.iloc[0]!r}); nothing to learn.")
    return task, reason


def _fill_text(column):
    # Module level, not a lambda, so the preprocessor pickles to joblib workers.
    return pd.Series(column).fillna("").astype(str)


def _is_text(values):
    words = values.astype(str).str.split().str.len()
    return float(words.median()) >= TEXT_MIN_WORDS


def default_preprocessor(X):
    """The column preprocessing of the bundled models for the table ``X``.

    - numeric (and boolean) columns: median imputation, then standard scaling;
    - string or category columns of short values: the most frequent value
      imputed, then one-hot encoding (unseen values ignored);
    - string columns whose values have 3 words or more (median): text,
      TF-IDF of words (300 terms at most per column).

    Returns
    -------
    preprocessor : sklearn.compose.ColumnTransformer
        Dense output (the nets need it).
    plan : dict of {str: list of str}
        The columns of each kind, to tell the user.
    """
    numeric, categorical, text = [], [], []
    for name in X.columns:
        column = X[name]
        present = column.dropna()
        if present.empty:
            raise UsageError(
                f"column {name!r} has no values (all missing); drop it with --drop {name}."
            )
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
            numeric.append(name)
        elif pd.api.types.is_datetime64_any_dtype(column) or pd.api.types.is_timedelta64_dtype(
            column
        ):
            raise UsageError(
                f"column {name!r} holds dates or times, which skchain bench does not turn into "
                f"features; convert it to numbers in the file or drop it with --drop {name}."
            )
        elif present.map(lambda v: isinstance(v, (list, tuple, dict, set, np.ndarray))).any():
            raise UsageError(
                f"column {name!r} holds lists or mappings, not single values; flatten it in "
                f"the file or drop it with --drop {name}."
            )
        elif _is_text(present):
            text.append(name)
        elif present.nunique() == len(X) and len(X) > 20:
            raise UsageError(
                f"column {name!r} has a different short value on every row (an identifier?), "
                f"which no model can learn from; drop it with --drop {name}."
            )
        else:
            categorical.append(name)
    steps = []
    if numeric:
        steps.append(
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric)
        )
    if categorical:
        steps.append(
            (
                "categorical",
                make_pipeline(
                    FunctionTransformer(_as_strings, feature_names_out="one-to-one"),
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                categorical,
            )
        )
    for name in text:
        steps.append(
            (
                f"text_{name}",
                make_pipeline(
                    FunctionTransformer(_fill_text),
                    TfidfVectorizer(max_features=TFIDF_MAX_FEATURES, sublinear_tf=True),
                ),
                name,  # a scalar: the vectorizer gets the column as 1-D strings
            )
        )
    preprocessor = ColumnTransformer(steps, remainder="drop", sparse_threshold=0.0)
    return preprocessor, {"numeric": numeric, "categorical": categorical, "text": text}


def _as_strings(frame):
    # Mixed columns (numbers and strings) cannot be sorted by OneHotEncoder;
    # missing values stay missing for the imputer.
    frame = pd.DataFrame(frame)
    return frame.astype(object).where(frame.notna(), np.nan).map(
        lambda v: v if isinstance(v, str) or pd.isna(v) else str(v)
    )


# -- the user's models ----------------------------------------------------------


def load_models(path):
    """``{name: estimator}`` from the ``models()`` function of a Python file.

    The file is imported as a module (its classes then pickle to joblib
    workers by value). Each value must be an unfitted scikit-learn estimator.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--models {path}: no such file.")
    if path.suffix != ".py":
        raise UsageError(f"--models {path}: give a Python file (.py) defining models().")
    name = f"skchain_bench_models_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise UsageError(f"--models {path}: importing it failed: {_one_line(exc)}") from None
    _pickle_by_value(module)
    factory = getattr(module, "models", None)
    if not callable(factory):
        raise UsageError(
            f"--models {path}: it defines no models() function; add one returning "
            "{name: unfitted estimator}."
        )
    try:
        models = factory()
    except Exception as exc:
        raise UsageError(f"--models {path}: models() raised {_one_line(exc)}") from None
    if not isinstance(models, dict) or not models:
        raise UsageError(
            f"--models {path}: models() returned {type(models).__name__}"
            f"{' (empty)' if isinstance(models, dict) else ''}; it must return a non-empty "
            "dict {name: unfitted estimator}."
        )
    for key, estimator in models.items():
        if not isinstance(key, str) or not key:
            raise UsageError(f"--models {path}: model names must be strings; got {key!r}.")
        if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
            raise UsageError(
                f"--models {path}: models()[{key!r}] is a {type(estimator).__name__}, not a "
                "scikit-learn estimator (no fit/get_params)."
            )
    return models


def _pickle_by_value(module):
    """Let joblib's process workers unpickle classes defined in the models file.

    The file is no importable module in a worker, so its classes must travel
    by value; joblib pickles with cloudpickle (vendored before joblib 1.6).
    """
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - older joblib
        try:
            from joblib.externals import cloudpickle
        except ImportError:
            return
    cloudpickle.register_pickle_by_value(module)


def _one_line(exc):
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}".rstrip(": ")


def is_chain(estimator):
    """Whether ``estimator`` holds a skchain estimator anywhere inside it."""
    seen = [estimator]
    if hasattr(estimator, "get_params"):
        seen += list(estimator.get_params(deep=True).values())
    return any(type(obj).__module__.startswith("skchain.") for obj in seen)
