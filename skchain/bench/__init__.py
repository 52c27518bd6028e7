"""The benchmark job: ``skchain bench`` and :func:`skchain.compare`.

- :func:`compare` (``_compare``): cross-validate models on shared folds;
- ``_scenarios`` and ``_zoo``: the bundled scenarios and the default models;
- ``_data``: a user's CSV/Parquet table and models file;
- ``_verdict``: the corrected paired t-test of each chain against the best
  baseline;
- ``_report`` and ``_plot``: the table, the JSON/CSV files and the PNG;
- ``_cli``: the ``skchain`` command line.
"""

from ._compare import compare

__all__ = ["compare"]
