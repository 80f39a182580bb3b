"""Caffe's snapshot files: their names, what a file holds, and whether it fits a net.

A snapshot is a pair: the weights (``PREFIX_iter_N.caffemodel``, Caffe's binary
NetParameter) and the solver state (``PREFIX_iter_N.solverstate``: the iteration, the
weights file's path and one history blob per learnable blob), or both in HDF5 with
``snapshot_format: HDF5`` (``.caffemodel.h5``, ``.solverstate.h5``). Caffe aborts with a
C++ stack dump on a file it cannot read or that does not fit its net;
:func:`weights_problem` and :func:`state_problem` say why in one line instead.
"""
import glob
import os
import warnings

from .prototxt import caffe_proto

SUFFIXES = {0: (".caffemodel.h5", ".solverstate.h5"),  # SolverParameter.SnapshotFormat: HDF5
            1: (".caffemodel", ".solverstate")}        # BINARYPROTO (the default)
# solvers that keep two history blobs per learnable blob (both moments)
TWO_MOMENTS = ("AdaDelta", "Adam")


class SnapshotError(Exception):
    """A file that is not the snapshot file asked for, in one line (what it is instead)."""


def names(prefix, iteration, snapshot_format=1):
    """The weights and the state file Caffe writes at ``iteration``."""
    return ["%s_iter_%d%s" % (prefix, iteration, suffix) for suffix in SUFFIXES[snapshot_format]]


def earlier_snapshots(prefix):
    """The snapshot files at ``prefix``."""
    endings = tuple(s for pair in SUFFIXES.values() for s in pair)
    return [path for path in glob.glob(glob.escape(prefix) + "_iter_*") if path.endswith(endings)]


def dims(shape):
    return " x ".join(map(str, shape)) or "a scalar"


def blob_shape(blob):
    """A BlobProto's shape; the deprecated 4-D fields (num, channels, height, width) as they are."""
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(blob.shape.dim)


def same_shape(shape, stored):
    """Caffe's Blob::ShapeEquals: a shape written in the 4-D fields matches with leading 1s."""
    if len(stored) == 4 and len(shape) < 4:
        shape = (1,) * (4 - len(shape)) + tuple(shape)
    return tuple(shape) == tuple(stored)


def read_weights(path):
    """``[(layer name, [blob shapes])]`` of a weights file; SnapshotError naming what the file
    is instead."""
    if path.endswith(".h5"):
        return _weights_h5(path)
    caffe_pb2, _ = caffe_proto()
    data = _read(path)
    net = _parse(caffe_pb2.NetParameter(), data)
    layers = [(l.name, [blob_shape(b) for b in l.blobs])
              for l in list(net.layer) + list(net.layers) if len(l.blobs)] if net else []
    if layers:
        return layers
    if _is_state(data):
        raise SnapshotError("%s is a solver state, not weights: continue its run with --resume %s"
                            % (path, path))
    raise SnapshotError("%s holds no weights: %s" % (path, _what(data, "a .caffemodel")))


def read_state(path):
    """``(history blob shapes, the weights file it names or None)`` of a solver state."""
    if path.endswith(".h5"):
        return _state_h5(path)
    caffe_pb2, _ = caffe_proto()
    data = _read(path)
    net = _parse(caffe_pb2.NetParameter(), data)
    if net is not None and any(len(l.blobs) for l in list(net.layer) + list(net.layers)):
        raise SnapshotError("%s is weights, not a solver state: start from them with --weights %s"
                            % (path, path))
    if not _is_state(data):
        raise SnapshotError("%s is not a solver state: %s" % (path, _what(data, "a .solverstate")))
    state = _parse(caffe_pb2.SolverState(), data)
    return [blob_shape(b) for b in state.history], state.learned_net or None


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _parse(message, data):
    try:
        with warnings.catch_warnings():  # the C++ parser warns about some bytes it skips
            warnings.simplefilter("ignore", RuntimeWarning)
            message.ParseFromString(data)
    except Exception:  # protobuf's DecodeError, whichever module it comes from
        return None
    return message


def _is_state(data):
    state = _parse(caffe_proto()[0].SolverState(), data)
    return state is not None and bool(len(state.history) or state.learned_net)


def _what(data, expected):
    if not data:
        return "it is empty"
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        return "it is an HDF5 file, and Caffe reads HDF5 snapshots only from files ending in .h5"
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return "Caffe cannot read it as %s" % expected
    return "it is a text file (a prototxt?), not %s" % expected


def _h5(path):
    try:
        import h5py
    except ImportError:
        return None
    try:
        return h5py.File(path, "r")
    except OSError:
        raise SnapshotError("%s is not an HDF5 file (its name ends in .h5)" % path) from None


def _weights_h5(path):
    f = _h5(path)
    if f is None:
        return None
    with f:
        if "data" not in f:
            if "history" in f:
                raise SnapshotError("%s is a solver state, not weights: continue its run with "
                                    "--resume %s" % (path, path))
            raise SnapshotError("%s holds no weights (no group 'data')" % path)
        return [(name, [f["data"][name][str(i)].shape for i in range(len(f["data"][name]))])
                for name in f["data"]]


def _state_h5(path):
    f = _h5(path)
    if f is None:
        return None, None
    with f:
        if "history" not in f:
            if "data" in f:
                raise SnapshotError("%s is weights, not a solver state: start from them with "
                                    "--weights %s" % (path, path))
            raise SnapshotError("%s is not a solver state (no group 'history')" % path)
        learned = f["learned_net"][()] if "learned_net" in f else b""
        learned = learned.decode() if isinstance(learned, bytes) else str(learned)
        return [f["history"][str(i)].shape for i in range(len(f["history"]))], learned or None


def layer_shapes(net):
    """``{layer name: [blob shapes]}`` of a pycaffe Net's layers with blobs."""
    return {name: [tuple(b.data.shape) for b in layer.blobs]
            for name, layer in zip(net._layer_names, net.layers) if len(layer.blobs)}


def learnable_shapes(net):
    """``[(layer name, blob index, shape)]`` in the order of Caffe's learnable_params (a
    solver's history): every blob of every layer, a blob shared by name once."""
    seen, shapes = set(), []
    for name, layer in zip(net._layer_names, net.layers):
        for i, blob in enumerate(layer.blobs):
            memory = blob.data.__array_interface__["data"][0]  # shared blobs share memory
            if memory not in seen:
                seen.add(memory)
                shapes.append((name, i, tuple(blob.data.shape)))
    return shapes


def weights_problem(path, net):
    """Why the weights file ``path`` does not fit ``net`` (Caffe copies the layers of the same
    name and aborts on a blob of another shape), or None."""
    try:
        stored = read_weights(path)
    except SnapshotError as exc:
        return str(exc)
    if stored is None:  # an HDF5 file without h5py to read it: Caffe will tell
        return None
    here = layer_shapes(net)
    common = [(name, shapes) for name, shapes in stored if name in here]
    if not common:
        return ("%s shares no layer name with the net: it holds %s; the net's layers with weights "
                "are %s" % (path, _some(n for n, _ in stored), _some(here)))
    differ = []
    for name, shapes in common:
        if len(shapes) != len(here[name]):
            differ.append("%r has %d blobs there, %d here" % (name, len(shapes), len(here[name])))
        else:
            differ += ["%r blob %d is %s there, %s here" % (name, i, dims(s), dims(h))
                       for i, (s, h) in enumerate(zip(shapes, here[name])) if not same_shape(h, s)]
    if differ:
        return ("%s does not fit the net: layer %s; rename a layer in the net to train it from "
                "scratch instead" % (path, "; ".join(differ[:3]) + ("; and %d more" % (len(differ) - 3)
                                                                  if len(differ) > 3 else "")))
    return None


def state_problem(path, net, solver_type):
    """Why the solver state ``path`` cannot continue training ``net`` with a solver of
    ``solver_type``, or None."""
    try:
        history, learned = read_state(path)
    except SnapshotError as exc:
        return str(exc)
    if history is None:  # an HDF5 file without h5py to read it: Caffe will tell
        return None
    params = learnable_shapes(net)
    need = len(params) * (2 if solver_type in TWO_MOMENTS else 1)
    if len(history) != need:
        return ("%s holds %d history blobs, but this net and solver (%s, %d learnable blobs) need %d: "
                "it was written for another net or solver" % (path, len(history), solver_type,
                                                              len(params), need))
    for i, shape in enumerate(history):
        name, blob, here = params[i % len(params)]
        if not same_shape(here, shape):
            return ("%s does not fit the net: its history blob %d is %s, layer %r blob %d here is %s"
                    % (path, i, dims(shape), name, blob, dims(here)))
    if learned and not os.path.isfile(learned):
        return ("%s names its weights %s, which is not there (relative to %s); Caffe writes that path "
                "as the snapshot named it: run from the folder training ran in" % (path, learned,
                                                                                   os.getcwd()))
    return weights_problem(learned, net) if learned else None


def _some(names, most=6):
    names = list(names)
    return ", ".join(names[:most]) + (" and %d more" % (len(names) - most) if len(names) > most else "")
