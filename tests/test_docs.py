"""The documentation's promises that can be checked without building it.

The Sphinx build itself (``sphinx-build -W``, which also runs the gallery) is a
CI step of its own; these tests run with the rest of the suite and say what is
wrong in plain words: a public name without an API page or a doctested
example, a user-guide page missing from the toctree, a reference to a page or
example that does not exist, and user-guide code that does not run.
"""

import doctest
import importlib.util
import io
import re
from pathlib import Path

import pytest

import skchain

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
USER_GUIDE = DOCS / "user_guide"
EXAMPLES = ROOT / "examples"


def _load_conf():
    spec = importlib.util.spec_from_file_location("skchain_docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


def _public_names():
    return [n for n in skchain.__all__ if not (n.startswith("__") and n.endswith("__"))]


def _rst_sources():
    return sorted(DOCS.glob("*.rst")) + sorted(USER_GUIDE.glob("*.rst"))


def _doc_sources():
    return _rst_sources() + sorted(EXAMPLES.glob("*.py")) + sorted(EXAMPLES.glob("*.rst"))


def _toctree_entries(path):
    """Entries of the ``toctree`` directives of an rst file."""
    entries, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith(".. toctree::"):
            inside = True
        elif inside and line and not line.startswith(" "):
            inside = False
        elif inside and line.strip() and not line.strip().startswith(":"):
            entries.append(line.strip())
    return entries


# -- API reference ---------------------------------------------------------------


def test_api_reference_lists_every_public_name():
    pages = _load_conf().api_pages()
    listed = re.findall(r"^   (\w+)$", pages["generated/api_list.inc"], re.M)
    assert sorted(listed) == sorted(_public_names())
    for name in _public_names():
        page = pages[f"generated/skchain.{name}.rst"]
        assert f"skchain.{name}" in page.splitlines()[0]
        assert re.search(rf"^\.\. auto(class|function|data):: {name}$", page, re.M)
    assert "generated/api_list.inc" in (DOCS / "api.rst").read_text()


def test_api_pages_of_removed_names_are_deleted(tmp_path):
    conf = _load_conf()
    (tmp_path / "generated").mkdir()
    stale = tmp_path / "generated" / "skchain.GoneEstimator.rst"
    stale.write_text("skchain.GoneEstimator\n")
    conf.write_api_pages(tmp_path)
    assert not stale.exists()
    written = sorted(p.name for p in (tmp_path / "generated").iterdir())
    assert written == sorted(p.split("/")[1] for p in conf.api_pages())
    # Unchanged pages are left alone, so incremental builds stay incremental.
    page = tmp_path / "generated" / f"skchain.{_public_names()[0]}.rst"
    before = page.stat().st_mtime_ns
    conf.write_api_pages(tmp_path)
    assert page.stat().st_mtime_ns == before


@pytest.mark.parametrize("name", _public_names())
def test_public_docstring_has_a_doctested_examples_section(name):
    doc = getattr(skchain, name).__doc__ or ""
    match = re.search(r"^\s*Examples\n\s*-{8,}\n(.*)", doc, re.M | re.S)
    assert match, f"skchain.{name} has no numpydoc 'Examples' section"
    assert ">>>" in match.group(1), f"the Examples of skchain.{name} have no >>> code"


def test_docstring_examples_run_in_the_test_suite(pytestconfig):
    # The Examples sections above run because pytest collects skchain/ with
    # --doctest-modules (pyproject.toml); the docs say so.
    assert "--doctest-modules" in pytestconfig.getini("addopts")
    assert "skchain" in pytestconfig.getini("testpaths")


# -- User guide and gallery -----------------------------------------------------


def test_every_user_guide_page_is_in_the_toctree():
    listed = set(_toctree_entries(USER_GUIDE / "index.rst"))
    pages = {p.stem for p in USER_GUIDE.glob("*.rst")} - {"index"}
    assert pages <= listed, f"add {sorted(pages - listed)} to docs/user_guide/index.rst"


def test_every_toctree_entry_exists():
    missing = [
        f"{index.relative_to(ROOT)}: {entry}"
        for index in [DOCS / "index.rst", USER_GUIDE / "index.rst"]
        for entry in _toctree_entries(index)
        # auto_examples/ is written by sphinx-gallery during the build
        if entry != "auto_examples/index" and not (index.parent / f"{entry}.rst").exists()
    ]
    assert not missing, f"toctree entries without a page: {missing}"


def test_references_point_to_existing_labels_and_examples():
    labels = set()
    for path in _rst_sources() + sorted(EXAMPLES.glob("*.rst")):
        labels.update(re.findall(r"^\.\. _([\w-]+):$", path.read_text(), re.M))
    missing = []
    for path in _doc_sources():
        for ref in re.findall(r":ref:`(?:[^`<]*<)?([\w.-]+)>?`", path.read_text()):
            example = re.fullmatch(r"sphx_glr_auto_examples_(\w+)\.py", ref)
            if example:
                ok = (EXAMPLES / f"{example.group(1)}.py").exists()
            else:
                ok = ref in labels
            if not ok:
                missing.append(f"{path.relative_to(ROOT)}: {ref}")
    assert not missing, f"references to nothing: {missing}"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_gallery_example_starts_with_an_rst_title(path):
    # sphinx-gallery takes the title from the module docstring and fails
    # without one.
    text = path.read_text()
    match = re.match(r'"""\n(?:=+\n)?(.+)\n(=+)\n', text)
    assert match, f"{path.name} must start with a docstring whose first line is a title"
    assert len(match.group(2)) >= len(match.group(1).rstrip())


_DOCTESTED_PAGES = [p for p in sorted(USER_GUIDE.glob("*.rst")) if ">>> " in p.read_text()]


@pytest.mark.parametrize("path", _DOCTESTED_PAGES, ids=lambda p: p.name)
def test_user_guide_code_runs(path):
    test = doctest.DocTestParser().get_doctest(
        path.read_text(), {"__name__": f"docs_{path.stem}"}, path.name, str(path), 0
    )
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    result = runner.run(test, out=report.write)
    assert result.attempted > 0
    assert result.failed == 0, report.getvalue()
