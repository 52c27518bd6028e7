"""Constructor parameters validated where they are used, not only in ``fit``.

scikit-learn validates an estimator's parameters against its
``_parameter_constraints`` when ``fit`` starts (``_fit_context`` calls
``_validate_params``). Parameters set on a fitted estimator --
``set_params(batch_size=0)`` in a notebook, a search's refit tooling -- are
then used by ``transform`` or ``predict`` without any check, and fail deep
inside torch or give a wrong answer. :class:`ParamsChecked` makes the one
validation routine of each estimator (scikit-learn's own, the same messages
as in ``fit``) run again at every use whose parameters have changed since
they were last validated.

A full ``_validate_params`` costs tens of microseconds, as much as a small
net's 1-row forward pass, so a use first compares the current parameter
values with the ones last validated by identity (``is``): about half a
microsecond. Any ``set_params`` or attribute assignment puts a new object in
place and so validates once more; a value changed in place (an element of a
list) keeps its type, which is all the constraints check.
"""

from operator import attrgetter, is_

__all__ = ["ParamsChecked"]

# Where an instance keeps the parameter values last validated: private (not a
# fitted attribute, so check_is_fitted ignores it) and set by fit, so that a
# transform with unchanged parameters leaves the instance's __dict__ as it is.
_SEEN = "_validated_params"

# type -> callable returning the tuple of that type's constrained parameters.
_GETTERS = {}


def _getter(cls):
    get = _GETTERS.get(cls)
    if get is None:
        names = tuple(cls._parameter_constraints)
        if len(names) == 1:
            one = attrgetter(names[0])
            get = lambda est: (one(est),)  # noqa: E731 - attrgetter of one name is no tuple
        elif names:
            get = attrgetter(*names)
        else:
            get = lambda est: ()  # noqa: E731
        _GETTERS[cls] = get
    return get


class ParamsChecked:
    """Mixin (before ``BaseEstimator``): ``_check_params()`` at every use.

    ``_validate_params`` -- which ``fit`` calls through ``_fit_context`` --
    also records the values it validated; ``_check_params`` re-runs it only
    when a parameter is no longer the object validated last.
    """

    def _validate_params(self):
        super()._validate_params()
        vars(self)[_SEEN] = _getter(type(self))(self)

    def _check_params(self):
        """Validate the parameters if any changed since they were last
        validated: scikit-learn's ``InvalidParameterError`` (a ``ValueError``
        and ``TypeError``), the same as ``fit`` raises."""
        seen = vars(self).get(_SEEN)
        if seen is not None:
            try:
                current = _getter(type(self))(self)
            except AttributeError:
                current = None
            if (current is not None and len(current) == len(seen)
                    and all(map(is_, current, seen))):
                return
        self._validate_params()
