"""An ONNX model, run by onnxruntime, as a frozen torch module.

:class:`OnnxModel` is what every wrapper runs when it is given an ONNX file or
an ``onnx.ModelProto`` (through :func:`skchain._models.as_module`): a
``torch.nn.Module`` whose forward hands the batch to an onnxruntime
``InferenceSession`` on the CPU and returns its first graph output as a
tensor. So the runner batches it, the cache keys it and the ensembles combine
it like any module.

- **Frozen**: it has no parameters; a forward that would need gradients
  through it is an error (training a head *on top of* it is fine).
- **Named values as layers** (:class:`OnnxNaming`): every value a node of the
  graph computes is a layer, named as in the graph (``"/fc1/Gemm_output_0"``,
  ``"relu_1"``). A requested value is returned by adding it as a graph output
  of a private copy of the model; the user's ``ModelProto`` and file are
  never changed. Each layer is an identity module ("tap") that the forward
  calls with the value, so :mod:`skchain._capture`'s hooks read it like any
  torch layer.
- **Fingerprint**: its ``repr`` holds a digest of the model's bytes, which is
  what the cache's fingerprint of a module without weights reads.
- **External data** (:mod:`skchain._onnx_data`): a model saved with its
  weights in files beside it (``save_as_external_data=True``, the format of
  models over 2 GB) is kept without them; onnxruntime reads them from the
  model's folder, the digest covers their bytes, and a file that changes
  after it was read is an error, never a silently mixed model.
- **Parts of the graph** (:mod:`skchain._onnx_parts`): the graph after a
  value, the head of ``(model, value)`` in :func:`~skchain.merge_heads`.
"""

import hashlib
import os
import threading

import numpy as np
import torch
from torch import nn

from ._capture import LayerNaming
from ._onnx_data import FOLDER_OPTION, ExternalFiles, external_locations, load_external_data

__all__ = ["OnnxModel", "OnnxNaming", "is_onnx_source", "load_onnx_bytes"]

# ONNX element types onnxruntime reports as "tensor(<name>)" -> NumPy dtypes.
_FLOAT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}
# Integer inputs (images as uint8, say): fed when X's values are exactly
# such integers, never rounded.
_INT_TYPES = {
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}
_LINEAR_OPS = ("Gemm", "MatMul")


def _import_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ImportError(
            f"ONNX models need onnx and onnxruntime ({exc}); install them with: "
            "pip install 'skchain[onnx]'."
        ) from None
    return onnx, onnxruntime


def _unreadable(source, exc):
    return ValueError(
        f"{source} could not be read as an ONNX model ({type(exc).__name__}: "
        f"{str(exc)[:200]}); pass a valid .onnx file (e.g. from "
        "torch.onnx.export or tf2onnx)."
    )


def _is_model_proto(obj):
    return type(obj).__name__ == "ModelProto" and hasattr(obj, "SerializeToString")


def _is_protobuf(obj):
    return hasattr(obj, "SerializeToString") and hasattr(obj, "ParseFromString")


def is_onnx_source(obj):
    """Whether ``obj`` is given as an ONNX model: a path or an
    ``onnx.ModelProto`` (any protobuf message: :func:`load_onnx_bytes` refuses
    the other ones by name)."""
    return isinstance(obj, (str, os.PathLike)) or _is_protobuf(obj)


def load_onnx_bytes(source):
    """The serialized model of ``source`` (path, ``ModelProto`` or bytes),
    and a description of where it came from (for messages and ``repr``)."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "<bytes>"
    if _is_model_proto(source):
        try:
            return source.SerializeToString(), "<ModelProto>"
        except ValueError as exc:  # protobuf refuses messages over 2 GB
            raise ValueError(
                f"This onnx.ModelProto cannot be serialized ({exc}): a model over 2 GB "
                "keeps its weights in external files. Save it with "
                "onnx.save_model(model, path, save_as_external_data=True) and pass "
                "the path."
            ) from None
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ValueError(
                f"ONNX model file {path!r} does not exist (or is not a file): a model "
                "given as a string is the path of an .onnx file. Pass an existing "
                "path, an onnx.ModelProto or a torch.nn.Module."
            )
        with open(path, "rb") as f:
            return f.read(), path
    raise TypeError(
        "An ONNX model is given as a path to an .onnx file, an onnx.ModelProto or "
        f"its serialized bytes; got {type(source).__name__}."
    )


class _Tap(nn.Module):
    """One named value of the graph, as a layer: the forward calls it with the
    value, so forward hooks see it."""

    def __init__(self, name):
        super().__init__()
        self.value_name = name

    def forward(self, x):
        return x

    def extra_repr(self):
        return repr(self.value_name)


class OnnxModel(nn.Module):
    """An ONNX model, run by onnxruntime, as a frozen ``torch.nn.Module``.

    skchain's wrappers build one when given an ONNX file or an
    ``onnx.ModelProto`` (``NeuralTransformer("model.onnx")``,
    ``ModuleClassifier("model.onnx", classes)``); build one yourself to choose
    onnxruntime's providers or the graph output, or to share one session
    between wrappers.

    The model is read once: later changes to the file or the ``ModelProto``
    do not reach this object (build a new one). It is never trained: it has
    no parameters, and a forward through which gradients would have to flow
    raises a ``ValueError``. ``copy.deepcopy`` and pickling keep the model's
    bytes and open a new session.

    A model saved with external data (``onnx.save_model(model, path,
    save_as_external_data=True, location=...)``, how models over 2 GB are
    stored) is given by its path: the weights files are found in the model's
    folder, as onnx and onnxruntime find them, and read by onnxruntime (the
    graph is kept without them, so its size does not matter). They are part
    of :attr:`digest`; a weights file that changes after this object read it
    is a ``ValueError`` at the next forward (build a new one), and a
    ``ModelProto`` whose external data was not loaded is refused, naming the
    file. Copies and pickles refer to the same files.

    Parameters
    ----------
    model : str, os.PathLike, onnx.ModelProto or bytes
        The ONNX model. It must take one input, of shape ``(batch, ...)``
        with a dynamic (or matching) batch dimension.
    output : str or None, default=None
        The graph output the forward returns; ``None``: the first one. Any
        other value the graph computes can be read as a layer by its name
        (``NeuralTransformer(model, output="<value name>")``).
    providers : list or None, default=None
        onnxruntime execution providers; ``None`` means
        ``["CPUExecutionProvider"]``, so results do not depend on the machine.

    Attributes
    ----------
    input_name : str
        Name of the graph's input.
    input_shape : tuple or None
        Its shape, ``None`` or a name for a dynamic dimension (``None`` when
        the graph gives no shape).
    output_names : list of str
        Names of the graph's outputs.
    digest : str
        BLAKE2b digest of the model's bytes and of its external data files
        (what the cache's fingerprint reads).

    Examples
    --------
    >>> import os, tempfile, warnings
    >>> import numpy as np
    >>> import torch
    >>> from skchain import OnnxModel
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
    ...                           torch.nn.Linear(8, 3)).eval()
    >>> path = os.path.join(tempfile.mkdtemp(), "net.onnx")
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     torch.onnx.export(net, (torch.zeros(1, 4),), path, dynamo=False,
    ...                       input_names=["x"], output_names=["logits"],
    ...                       dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    >>> model = OnnxModel(path)
    >>> model.input_shape, model.output_names
    (('n', 4), ['logits'])
    >>> x = torch.randn(5, 4)
    >>> bool(torch.allclose(model(x), net(x), atol=1e-6))
    True
    """

    def __init__(self, model, *, output=None, providers=None):
        super().__init__()
        onnx, _ = _import_onnx()
        data, source = load_onnx_bytes(model)
        try:
            proto = onnx.load_from_string(data)
        except Exception as exc:
            raise _unreadable(source, exc) from None
        # Weights in external files (models over 2 GB): found in the model's
        # folder, as onnx and onnxruntime find them (skchain._onnx_data).
        locations = external_locations(proto)
        files = None
        if locations:
            folder = None
            if isinstance(model, (str, os.PathLike)):
                folder = os.path.dirname(os.path.abspath(os.fspath(model)))
            files = ExternalFiles(locations, folder, source)
        try:
            # A file with external data is checked from its path, where the
            # checker finds the files (and a model over 2 GB is not loaded).
            onnx.checker.check_model(source if files is not None else proto)
        except Exception as exc:
            raise _unreadable(source, exc) from None
        self._init_from(proto, data, source, files, output=output, providers=providers)

    def _init_from(self, proto, data, source, files, *, output, providers):
        self.source = source
        self.providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        # Of the parsed model, so that a file and the ModelProto read from it
        # (or the same model saved elsewhere) give one digest; and of the
        # external files' bytes, which the graph only names.
        hasher = hashlib.blake2b(proto.SerializeToString(deterministic=True), digest_size=16)
        if files is not None:
            files.update(hasher, external_locations(proto))
        self.digest = hasher.hexdigest()
        self._bytes = data
        self._files = files
        self._setup(proto, output)

    def _proto(self, *, with_data=False):
        """A private copy of the model; ``with_data``: with the external
        files' weights loaded into it (the files checked unchanged)."""
        onnx, _ = _import_onnx()
        proto = onnx.load_from_string(self._bytes)
        return load_external_data(proto, self._files) if with_data else proto

    @property
    def external_files(self):
        """Paths of the files that hold weights of the model outside it
        (``onnx.save_model(..., save_as_external_data=True)``); empty for a
        model that holds all its weights."""
        return [] if self._files is None else [self._files.paths[loc]
                                                for loc in self._files.locations]

    def _setup(self, proto, output):
        graph = proto.graph
        initializers = {init.name for init in graph.initializer}
        inputs = [i for i in graph.input if i.name not in initializers]
        if len(inputs) != 1:
            raise ValueError(
                f"{self.source} has {len(inputs)} inputs ({[i.name for i in inputs]}); "
                "skchain feeds a model one array, so it needs a model with one input."
            )
        self.input_name = inputs[0].name
        tensor_type = inputs[0].type.tensor_type
        # No shape in the graph (unknown rank): onnxruntime checks the batch.
        self.input_shape = None if not tensor_type.HasField("shape") else tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in tensor_type.shape.dim
        )
        self.output_names = [o.name for o in graph.output]
        if output is not None and output not in self.output_names:
            raise ValueError(
                f"output={output!r} is not an output of {self.source}; its outputs "
                f"are {self.output_names} (other values are read as layers by name)."
            )
        self.output = output
        # The graph's values, in node order, each once: the layer names.
        values, seen = [], set(initializers) | {self.input_name}
        for node in graph.node:
            for name in node.output:
                if name and name not in seen:
                    seen.add(name)
                    values.append(name)
        self.value_names = values
        self._last_linear = None
        for node in graph.node:
            if (node.op_type in _LINEAR_OPS and len(node.input) >= 2
                    and node.input[1] in initializers and node.input[0] in seen
                    and node.input[0] != self.input_name):
                self._last_linear = node.input[0]
        self._reset_runtime()

    def _reset_runtime(self):
        self._sessions = {}  # frozenset of extra value names -> session
        self._taps = {}  # value name -> _Tap (not submodules: no state, no repr)
        # Caches of skchain._onnx_parts, by value name.
        self._heads = {}
        self._weight_digests = {}
        self._lock = threading.Lock()

    # -- sessions --------------------------------------------------------------

    def _session(self, extra):
        """The session returning the graph outputs and the values ``extra``."""
        key = frozenset(extra)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                return session
            onnx, ort = _import_onnx()
            data = self._bytes
            if key:
                # A private copy with the values as extra graph outputs: the
                # user's ModelProto (and file) stay as they were.
                proto = onnx.load_from_string(data)
                for name in sorted(key - set(self.output_names)):
                    proto.graph.output.append(onnx.ValueInfoProto(name=name))
                data = proto.SerializeToString()
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if self._files is not None:
                # The graph is given as bytes: onnxruntime reads the weights
                # from the model's folder, once they are checked unchanged.
                self._files.check_unchanged()
                options.add_session_config_entry(FOLDER_OPTION, self._files.folder)
            try:
                session = ort.InferenceSession(data, options, providers=self.providers)
            except Exception as exc:  # onnxruntime's own exception types
                raise ValueError(
                    f"onnxruntime could not load {self.source} ({type(exc).__name__}: "
                    f"{str(exc)[:300]}); check that its operators and opset are ones "
                    "onnxruntime supports, or re-export the model."
                ) from None
            self._sessions[key] = session
            return session

    @property
    def input_dtype(self):
        """NumPy dtype of the graph's input."""
        kind = self._session(()).get_inputs()[0].type
        dtype = _FLOAT_TYPES.get(kind, _INT_TYPES.get(kind))
        if dtype is None:
            raise ValueError(
                f"{self.source} takes {kind} input; skchain feeds models numeric "
                "arrays, so it runs ONNX models whose input is a float or integer "
                "tensor."
            )
        return dtype

    def _as_input(self, array):
        """The batch in the graph's input dtype; integers only when exact."""
        dtype = np.dtype(self.input_dtype)
        if dtype.kind == "f":
            return array.astype(dtype, copy=False)
        info = np.iinfo(dtype)
        if not (np.array_equal(array, np.round(array))
                and array.min() >= info.min and array.max() <= info.max):
            raise ValueError(
                f"{self.source} takes {dtype.name} input, but X holds values that "
                f"are not integers in [{info.min}, {info.max}] (from {array.min():.4g} "
                f"to {array.max():.4g}); pass X as the model expects it (e.g. images "
                "as 0..255 pixel values, not scaled to 0..1)."
            )
        return array.astype(dtype)

    def tap(self, name):
        """The layer (an identity module) that stands for the value ``name``."""
        if name not in self.value_names:
            raise ValueError(
                f"{self.source} computes no value named {name!r}; its values are "
                f"{self.value_names[:50]}."
            )
        with self._lock:
            tap = self._taps.get(name)
            if tap is None:
                tap = self._taps[name] = _Tap(name)
            return tap

    # -- the forward -----------------------------------------------------------

    def check_input_shape(self, shape):
        """Raise a ``ValueError`` naming both shapes if a batch of ``shape``
        does not fit the graph's input."""
        expected = self.input_shape
        if expected is None:
            return
        fits = len(shape) == len(expected) and all(
            not isinstance(e, int) or e == 0 or e == g
            for e, g in zip(expected[1:], shape[1:], strict=True)
        )
        shown = "(" + ", ".join("n" if not isinstance(e, int) else str(e)
                                for e in expected) + ")"
        if not fits:
            given = "(" + ", ".join(["n", *map(str, shape[1:])]) + ")"
            hint = ""
            if len(shape) == len(expected) and sorted(map(str, shape[1:])) == sorted(
                    map(str, expected[1:])):
                hint = (" The dimensions are the same in another order: transpose X "
                        "(e.g. X.transpose(0, 3, 1, 2) turns (n, H, W, C) into "
                        "(n, C, H, W)).")
            raise ValueError(
                f"{self.source} takes input {self.input_name!r} of shape {shown}, but "
                f"X has shape {given}.{hint} Pass X in the shape the model was "
                "exported with."
            )
        batch = expected[0] if expected else None
        if isinstance(batch, int) and batch > 0 and shape[0] != batch:
            raise ValueError(
                f"{self.source} was exported with a fixed batch size of {batch}, but "
                f"was given a batch of {shape[0]} rows. Export it with a dynamic batch "
                "dimension (torch.onnx.export(..., dynamic_axes={'x': {0: 'n'}}) or "
                f"dynamic_shapes), or set batch_size={batch}."
            )

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            raise ValueError(
                f"OnnxModel({self.source}) is frozen: onnxruntime computes no "
                "gradients, so nothing before it can be trained through it. Train "
                "only layers after it, or use the original torch model."
            )
        self.check_input_shape(tuple(x.shape))
        if self._files is not None:
            # A session holds the weights it read; a rewritten file must not
            # pass for the model this object stands for (its digest).
            self._files.check_unchanged()
        # The values whose layers are hooked (being read right now).
        hooked = [name for name, tap in list(self._taps.items())
                  if tap._forward_hooks or tap._forward_pre_hooks]
        session = self._session(hooked)
        final = self.output or self.output_names[0]
        names = [final, *[n for n in hooked if n != final]]
        array = self._as_input(x.detach().cpu().numpy())
        values = session.run(names, {self.input_name: array})
        device = x.device
        for name, value in zip(names[1:], values[1:], strict=True):
            self._taps[name](torch.from_numpy(np.asarray(value)).to(device))
        if final in hooked:
            self._taps[final](torch.from_numpy(np.asarray(values[0])).to(device))
        return torch.from_numpy(np.asarray(values[0])).to(device)

    # -- copies, pickles, repr -------------------------------------------------

    def __getstate__(self):
        state = dict(self.__dict__)
        for key in ("_sessions", "_taps", "_heads", "_weight_digests", "_lock"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        state.setdefault("_files", None)  # pickled before external data was read
        super().__setstate__(state)
        self._reset_runtime()

    def extra_repr(self):
        # What decides the outputs (the cache's fingerprint reads it), not
        # where the model was read from.
        out = f", output={self.output!r}" if self.output is not None else ""
        shape = "(?)" if self.input_shape is None else "(" + ", ".join(
            str(d) if isinstance(d, int) else "n" for d in self.input_shape) + ")"
        return (f"input={self.input_name!r} {shape}, outputs={self.output_names!r}{out}, "
                f"providers={self.providers!r}, digest={self.digest!r}")


class OnnxNaming(LayerNaming):
    """The values an ONNX graph computes, by name, as layers (see the module doc)."""

    @staticmethod
    def accepts(module):
        return isinstance(module, OnnxModel)

    def names(self, module):
        return list(module.value_names)

    def get(self, module, name):
        return module.tap(name)

    def last_linear(self, module):
        # The input of the last Gemm/MatMul with a weight: read through the
        # tap of that value (a tap's input is its output).
        return module._last_linear
