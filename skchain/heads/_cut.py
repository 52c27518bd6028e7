"""A complete pretrained model cut before the first layer of its head."""

from torch import nn

from .._capture import CutAt, forward_captured, get_layer, layer_names

__all__ = ["CutModel"]


class CutModel(CutAt):
    """A pretrained model run up to (not including) one of its layers.

    ``CutModel(model, "fc")`` returns what ``model.fc`` receives when ``model``
    runs: the features its head was trained on, in the shape the head takes
    them (not flattened). The model is neither copied nor changed; hooks on the
    layer, present only during the call, capture its input and stop the
    forward pass there, so the layers after it cost nothing.
    :func:`~skchain.merge_heads` builds one when given ``(model, layer)``.

    This is the runner's cut at one layer's input (the one capture mechanism
    of skchain), with the messages of a head cut.

    Parameters
    ----------
    model : torch.nn.Module
        The complete model.
    layer : str
        Name of a submodule of ``model``, as in ``model.named_modules()``
        (``"fc"``, ``"classifier.1"``): the first layer of the head.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from skchain.heads import CutModel
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> cut = CutModel(model, "2")
    >>> x = torch.randn(5, 4)
    >>> torch.equal(cut(x), model[1](model[0](x)))
    True
    >>> cut.layer
    '2'
    """

    def __init__(self, model, layer):
        if not isinstance(model, nn.Module) or not isinstance(layer, str):
            raise TypeError(
                "A cut model is given as (model, layer_name) with a torch.nn.Module "
                f"and a str; got ({type(model).__name__}, {type(layer).__name__})."
            )
        check_head_layer(model, layer)
        super().__init__(model, [layer], inputs=True)

    @property
    def layer(self):
        """Name of the layer the model is cut before."""
        return self.layers[0]

    def forward(self, x):
        # CutAt flattens what it captures; a head may take feature maps
        # (a conv head after a cut at "layer4"), so the input is returned as is.
        return forward_captured(self.model, x, self.layers, inputs=True)[0]

    def extra_repr(self):
        return f"layer={self.layer!r}"


def check_head_layer(model, layer):
    """Return ``model``'s submodule ``layer``, or raise naming the valid layers."""
    valid = layer_names(model)
    if layer not in valid:
        raise ValueError(
            f"{type(model).__name__} has no submodule named {layer!r}; name the "
            f"first layer of its head, one of {valid}."
        )
    return get_layer(model, layer)
