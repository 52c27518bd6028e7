"""Merge classifier heads that share one frozen backbone into one model.

Transfer learning often leaves several classifiers behind that differ only in
their last layers: each is a *head* trained at its own time, on its own data and
its own labels, on top of the same frozen base model. :func:`merge_heads` joins
them into one ``torch.nn.Module`` that runs the backbone once per batch and
returns logits over the union of the labels.

Concatenating the heads' logits is not yet a classifier, though: the heads were
never trained against each other, so their scales are unrelated, and each head
is confident on inputs of labels it never saw. :class:`MergedHeadsClassifier`
learns, on held-out rows that cover all labels, how much to trust each head --
a temperature and bias per head, or a combiner model over all head outputs --
without changing a single weight of the backbone or the heads.

Modules: ``_cut`` (a complete model cut before its head), ``_merge`` (the
merged module), ``_calibration`` (temperatures, biases, the linear combiner as
an ``nn.Linear``), ``_classifier`` (the scikit-learn estimator).
"""

from ._classifier import MergedHeadsClassifier
from ._cut import CutModel
from ._merge import MergedHeads, merge_heads

__all__ = ["CutModel", "MergedHeads", "MergedHeadsClassifier", "merge_heads"]
