"""Sphinx configuration of the skchain documentation.

Build (warnings are errors, as in CI)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The API reference is generated from ``skchain.__all__`` when the build starts
(:func:`write_api_pages`): a public name added to ``__all__`` gets its page and
its row in ``api.rst`` without editing the docs.
"""

import inspect
import os
import re
from pathlib import Path

# The gallery runs offline: sentence-transformers models come from installed
# packages, never from the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Keras reads its backend at its first import; skchain runs Keras 3 models on torch.
os.environ.setdefault("KERAS_BACKEND", "torch")

import skchain  # noqa: E402

# -- Project -------------------------------------------------------------------

project = "skchain"
author = "the skchain developers"
copyright = "the skchain developers"
release = skchain.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
default_role = "literal"

# -- HTML ----------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"skchain {release}"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_show_sourcelink = False

# -- API docs ------------------------------------------------------------------

autosummary_generate = True
autodoc_typehints = "none"  # the numpydoc "Parameters" section says it better
add_module_names = False
numpydoc_show_class_members = False  # autoclass :members: documents them once
numpydoc_class_members_toctree = False

# -- Cross references ------------------------------------------------------------

# The build must work offline (CI has no network), and an inventory that cannot
# be fetched is a warning, i.e. an error under -W. Links to the scikit-learn,
# NumPy and torch docs are turned on only for an online build:
#   SKCHAIN_DOCS_INTERSPHINX=1 python -m sphinx -W -b html docs docs/_build/html
intersphinx_mapping = {}
if os.environ.get("SKCHAIN_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
        "skorch": ("https://skorch.readthedocs.io/en/stable", None),
        "pandas": ("https://pandas.pydata.org/docs", None),
    }

# -- Gallery -------------------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": "/plot_",  # other scripts are shown, not run
    "abort_on_example_error": True,
    "within_subsection_order": "FileNameSortKey",
    "doc_module": ("skchain",),
    "backreferences_dir": "generated/backreferences",
    "reference_url": {"skchain": None},
    "download_all_examples": False,
    "remove_config_comments": True,
}

# -- API reference generated from skchain.__all__ -------------------------------

API_DIR = "generated"
API_LIST = "api_list.inc"  # included by api.rst; not a document of its own


def public_api():
    """``(name, object)`` for every documented public name, in ``__all__`` order.

    Dunder names (``__version__``) are left out: they are not API to document.
    """
    return [
        (name, getattr(skchain, name))
        for name in skchain.__all__
        if not (name.startswith("__") and name.endswith("__"))
    ]


def _section_title(module_name):
    """First line of the module's docstring, or its name when it has none."""
    import importlib

    doc = inspect.getdoc(importlib.import_module(module_name)) or ""
    first = doc.strip().splitlines()[0].rstrip(".") if doc.strip() else ""
    return first or module_name


def _stub(name, obj):
    title = f"skchain.{name}"
    if inspect.isclass(obj):
        # Only the class's own members: the inherited scikit-learn ones
        # (get_params, set_output, ...) are documented by scikit-learn, and
        # their docstrings refer to labels of its docs that do not exist here.
        body = f".. autoclass:: {name}\n   :members:\n"
    elif callable(obj):
        body = f".. autofunction:: {name}\n"
    else:
        body = f".. autodata:: {name}\n   :no-value:\n"
    return (
        f"{title}\n{'=' * len(title)}\n\n.. currentmodule:: skchain\n\n{body}\n"
        f".. minigallery:: skchain.{name}\n"
        f"   :add-heading: Examples using ``{title}``\n"
    )


def api_pages():
    """The generated files: ``{relative path: text}``.

    One page per public name (``generated/skchain.<name>.rst``) and the
    autosummary tables for ``api.rst``, one per defining module, titled with the
    module's docstring.
    """
    pages = {f"{API_DIR}/skchain.{name}.rst": _stub(name, obj) for name, obj in public_api()}
    by_module = {}
    for name, obj in public_api():
        by_module.setdefault(getattr(obj, "__module__", "skchain"), []).append(name)
    sections = [".. currentmodule:: skchain\n"]
    for module_name in sorted(by_module):
        title = _section_title(module_name)
        rows = "".join(f"   {name}\n" for name in sorted(by_module[module_name]))
        sections.append(
            f"{title}\n{'-' * len(title)}\n\n"
            f".. autosummary::\n   :toctree: {API_DIR}\n   :nosignatures:\n\n{rows}"
        )
    pages[f"{API_DIR}/{API_LIST}"] = "\n".join(sections)
    return pages


def write_api_pages(srcdir):
    """Write :func:`api_pages` under ``srcdir``; drop pages of names now gone.

    Unchanged files are not rewritten, so an incremental build re-reads
    nothing it does not have to.
    """
    srcdir = Path(srcdir)
    pages = api_pages()
    (srcdir / API_DIR).mkdir(exist_ok=True)
    for stale in (srcdir / API_DIR).glob("skchain.*.rst"):
        if f"{API_DIR}/{stale.name}" not in pages:
            stale.unlink()
    for relative, text in pages.items():
        path = srcdir / relative
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def _skip_metadata_requests(app, what, name, obj, skip, options):
    # scikit-learn adds set_<method>_request to classes whose methods take extra
    # arguments (metadata routing); they are generic and documented there.
    if re.fullmatch(r"set_\w+_request", name):
        return True
    return None


def setup(app):
    # Before autosummary (priority 500) and before the sources are read.
    app.connect("builder-inited", lambda app: write_api_pages(app.srcdir), priority=100)
    app.connect("autodoc-skip-member", _skip_metadata_requests)
