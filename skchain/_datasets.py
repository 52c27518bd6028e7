"""Kept for imports written before :mod:`skchain.datasets` was public.

Use ``from skchain.datasets import load_topics``; this module only re-exports.
"""

from .datasets import TOPICS, load_topics

__all__ = ["TOPICS", "load_topics"]
