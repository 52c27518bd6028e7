"""The external-data files of an ONNX model: found, checked, digested.

A model over 2 GB (protobuf's limit on one message) keeps its weights in files
beside the model, ``onnx.save_model(model, "m.onnx",
save_as_external_data=True, location="m.onnx.data")``: each such tensor names
its file by a path relative to the model's folder (``location``), an offset
and a length, and onnx and onnxruntime look for the file in that folder.
skchain does the same, and:

- :class:`~skchain.OnnxModel` keeps the graph *without* those weights in
  memory and gives onnxruntime the model's folder (a session option), so no
  model is ever put into one protobuf, whatever its size;
- a file that is not there (or a ``ModelProto`` whose data was never loaded)
  is a ``ValueError`` naming the file and the fix, before onnxruntime runs;
- the model's digest covers the bytes of its files (the cache's fingerprint
  reads the digest), and their sizes and modification times are part of the
  key under which :func:`skchain._models.as_module` shares one model and are
  checked before every run: a rewritten weights file is a new model, never
  cached old outputs nor a session half old, half new.
"""

import functools
import hashlib
import os

__all__ = [
    "FOLDER_OPTION",
    "ExternalFiles",
    "external_locations",
    "files_of_path",
    "load_external_data",
]

_CHUNK = 1 << 22
#: The onnxruntime session option that says where a model given as bytes
#: finds its external files.
FOLDER_OPTION = "session.model_external_initializers_file_folder_path"


def _graph_tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _graph_tensors(sub)


def external_locations(proto):
    """``{location: [tensor names]}`` of the tensors of ``proto`` whose data
    lives in an external file, in the model's order."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    out = {}
    for tensor in _graph_tensors(proto.graph):
        if uses_external_data(tensor):
            out.setdefault(ExternalDataInfo(tensor).location, []).append(tensor.name)
    return out


def _stat(path):
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)


class ExternalFiles:
    """The external files of one model: where they are, their digests, and the
    state (size, modification time) they were read in.

    Parameters
    ----------
    locations : dict
        :func:`external_locations` of the model.
    folder : str or None
        The model's folder; ``None`` for a model given as a ``ModelProto`` or
        bytes (which has no folder, so no external file can be found).
    source : str
        The model, for messages.
    """

    def __init__(self, locations, folder, source):
        self.folder = folder
        self.source = source
        self.locations = sorted(locations)
        if folder is None:
            location, names = next(iter(locations.items()))
            kind = "ModelProto" if source == "<ModelProto>" else "serialized model"
            raise ValueError(
                f"{source} keeps the weights of {_tensors(names)} in the external "
                f"data file {location!r}, which this {kind} does not hold (its "
                f"external data was not loaded, and a {kind} has no folder to "
                "find the file in). Pass the path of the .onnx file instead (the "
                "file is found in the model's folder), or load the data into the "
                "proto first: onnx.load(path) (load_external_data=True, the "
                "default), or onnx.external_data_helper.load_external_data_for_model("
                "proto, folder)."
            )
        self.paths = {}
        for location, names in locations.items():
            path = os.path.join(folder, location)
            if not os.path.isfile(path):
                raise ValueError(
                    f"{source} keeps the weights of {_tensors(names)} in the external "
                    f"data file {location!r}, which is not in the model's folder: "
                    f"{path} does not exist. Put the file next to the model (ONNX "
                    "finds external data relative to the model's folder), or save "
                    "the model again with onnx.save_model(model, path, "
                    "save_as_external_data=True, location=...)."
                )
            self.paths[location] = path
        self.states = {loc: _stat(path) for loc, path in self.paths.items()}
        self.digests = {loc: _file_digest(path) for loc, path in self.paths.items()}

    def check_unchanged(self):
        """Raise a ``ValueError`` naming the file when one changed since read."""
        for location, path in self.paths.items():
            if _stat(path) != self.states[location]:
                raise ValueError(
                    f"The external data file {path} of {self.source} changed (or "
                    "disappeared) after this OnnxModel read it, so its outputs would "
                    "mix the old and the new weights. Build a new OnnxModel (a "
                    "wrapper given the model's path does so at its next fit)."
                )

    def update(self, hasher, locations=None):
        """Feed the digests of ``locations`` (default: all) to ``hasher``."""
        for location in sorted(self.locations if locations is None else locations):
            hasher.update(location.encode() + b"\0" + self.digests[location].encode())


def _tensors(names):
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return f"tensor {names[0]!r}{more}"


def _file_digest(path):
    hasher = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


@functools.lru_cache(maxsize=64)
def _locations_of_file(path, size, mtime_ns):
    try:
        import onnx

        proto = onnx.load(path, load_external_data=False)
    except Exception:  # not a model: OnnxModel raises the message naming the path
        return ()
    return tuple(sorted(external_locations(proto)))


def files_of_path(path):
    """``((file, size, mtime_ns), ...)`` of the external files of the model at
    ``path`` (``None`` for a file not there): part of the key a model file is
    shared under, so a rewritten weights file gives a new model."""
    state = _stat(path)
    if state is None:
        return ()
    folder = os.path.dirname(os.path.abspath(path))
    return tuple(
        (location, _stat(os.path.join(folder, location)))
        for location in _locations_of_file(path, *state)
    )


def load_external_data(proto, files):
    """Load the external data of ``proto`` (a private copy) into it, from the
    folder ``files`` was read in, checking the files did not change."""
    from onnx.external_data_helper import load_external_data_for_model

    if files is not None:
        files.check_unchanged()
        load_external_data_for_model(proto, files.folder)
    return proto
