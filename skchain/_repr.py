"""The "?" link of the HTML repr: each skchain estimator points to its API page.

scikit-learn's ``_HTMLDocumentationLinkMixin`` builds the link from
``_doc_link_module`` and ``_doc_link_template``; its default URL parameters use
the module path up to the first private part (``skchain.heads``), but every
public skchain name lives at the top level and its page is
``generated/skchain.<Name>.html``, so the name alone fills the template.
"""

DOCS_URL = "https://skchain.readthedocs.io/en/latest/"


class DocLinkMixin:
    """Put first in the bases of a public estimator (before ``BaseEstimator``)."""

    _doc_link_module = "skchain"
    _doc_link_template = DOCS_URL + "generated/skchain.{estimator_name}.html"

    def _doc_link_url_param_generator(self):
        return {"estimator_name": type(self).__name__}
