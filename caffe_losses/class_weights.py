"""Per-class weights from the label counts of an HDF5 file, ready to paste into param_str.

    caffe-losses class-weights LABELS.h5 [--dataset label] [--beta 0.999] [--kind class_weight]
    python3 -m caffe_losses.class_weights train.h5 --kind pos_weight

``LABELS`` is an HDF5 file, or a text file that lists HDF5 files one per line (the
``source`` of Caffe's HDF5Data layer; relative paths are taken from the current
directory, as Caffe does). Its dataset (``--dataset``, default ``label``) holds N x C
multi-hot labels, 0 or 1 (N x C x 1 x 1 is read as N x C); any other value is an error,
so drop or fill ignored entries first. With n_c the positives of class c among N samples:

* ``--kind class_weight`` (default): the inverse effective number of samples (Cui et
  al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019),
  w_c = (1 - beta) / (1 - beta^n_c), scaled so that the weights sum to C. ``beta`` in
  [0, 1): 0 gives equal weights, and beta -> 1 tends to inverse frequency (1/n_c).
  For the ``class_weight`` key of the sigmoid, softmax and asymmetric losses.
* ``--kind pos_weight``: PyTorch's ``BCEWithLogitsLoss(pos_weight=...)`` convention,
  negatives over positives, (N - n_c) / n_c, for the sigmoid losses' ``pos_weight``.

It prints the counts, then one line such as ``'class_weight': [0.81, 1.3, ...]`` to
paste into a ``param_str``. A class without a positive sample has no finite weight:
that is an error naming the class and the file. Exit code 0, or 2 on an error.

The functions raise LabelError, a PrototxtError; ``caffe_losses.cli`` prints.
"""
import os
import re
import sys

import numpy as np

from .prototxt.io import PrototxtError

KEYS = ("class_weight", "pos_weight")  # the param_str keys the weights are for (--kind)
BLOCK = 1 << 16  # rows read at a time
# a line of prototxt text (a brace, or "key: value" with a quoted, numeric or enum value)
PROTOTXT_LINE = re.compile(r'[{}]|^\s*[a-z_]+\s*:\s*("|-?\d|[A-Z_]+\s*$|true|false)')


class LabelError(PrototxtError, ValueError):
    """Labels that cannot be counted as given (a PrototxtError, the prototxt tool's one error)."""


class ClassWeights(object):
    """What ``from_file`` found: ``positives`` per class, ``samples``, the ``weights`` and the
    classes whose every sample is positive (``all_positive``, a pos_weight of 0)."""

    def __init__(self, positives, samples, weights):
        self.positives, self.samples, self.weights = positives, samples, weights
        self.all_positive = [int(c) for c in np.flatnonzero(positives == samples)]


def effective_number_weights(positives, beta=0.999):
    """Cui et al.'s class-balanced weights: (1 - beta) / (1 - beta^n_c), summing to C."""
    n = np.asarray(positives, dtype=np.float64)
    if not 0 <= beta < 1:
        raise ValueError("beta must be in [0, 1), got %r" % beta)
    empty(n)
    if beta == 0:
        w = np.ones_like(n)
    else:
        # 1 - beta^n as -expm1(n log beta): no cancellation for beta close to 1
        w = (1 - beta) / -np.expm1(n * np.log(beta))
    return w * (len(n) / w.sum())


def pos_weights(positives, samples):
    """PyTorch's pos_weight: negatives over positives, per class."""
    n = np.asarray(positives, dtype=np.float64)
    empty(n)
    return (samples - n) / n


def empty(positives):
    missing = np.flatnonzero(np.asarray(positives) == 0)
    if missing.size:
        raise LabelError("class%s %s %s no positive sample, so no finite weight"
                         % ("es" if missing.size > 1 else "", ", ".join(map(str, missing)),
                            "have" if missing.size > 1 else "has"))


def from_file(path, dataset="label", key="class_weight", beta=0.999):
    """The counts and weights (for the param_str ``key``: class_weight or pos_weight) of the
    labels that ``path`` (an HDF5 file or a list of them) holds in ``dataset``; raises LabelError."""
    try:
        import h5py  # noqa: F401
    except ImportError:
        raise LabelError("needs h5py to read HDF5 files (Debian: apt-get install python3-h5py; "
                         "or pip install h5py)") from None
    positives, samples = count(path, dataset)
    try:
        if key == "class_weight":
            weights = effective_number_weights(positives, beta)
        else:
            weights = pos_weights(positives, samples)
    except LabelError as exc:
        raise LabelError("%s (dataset %r of %s); drop the class or add samples of it" % (exc, dataset, path))
    return ClassWeights(positives, samples, weights)


def h5_files(path):
    """The HDF5 files ``path`` stands for: itself, or those its lines list."""
    import h5py
    if os.path.isdir(path):
        raise LabelError("%s is a folder; give an HDF5 file, or a text file listing HDF5 files" % path)
    if not os.path.isfile(path):
        raise LabelError("%s: no such file" % path)
    if h5py.is_hdf5(path):
        return [path]
    names = text_lines(path)
    if not names:
        raise LabelError("%s is neither an HDF5 file nor a list of HDF5 files (one path a line, "
                         "as the source of Caffe's HDF5Data layer)" % path)
    for i, name in enumerate(names):
        if os.path.isfile(name) and h5py.is_hdf5(name):
            continue
        if any(PROTOTXT_LINE.search(line) for line in names):
            raise LabelError("%s is a prototxt, not labels: give the HDF5 file (or the list file) that "
                             "its HDF5Data layer's source names" % path)
        raise LabelError("%s, line %d: %r is %s" % (path, i + 1, name, "not an HDF5 file" if os.path.isfile(name)
                                                     else "a folder" if os.path.isdir(name) else "not found"))
    return names


def text_lines(path):
    """The lines of a text file, stripped, empty ones and comments left out; [] for a binary file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8") if b"\0" not in data else ""
    except UnicodeDecodeError:
        text = ""
    except OSError as exc:
        raise LabelError("%s: %s" % (path, exc.strerror or exc)) from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def labels_of(f, name, dataset):
    """The N x C dataset ``dataset`` of the open HDF5 file ``f`` (of file ``name``)."""
    import h5py
    if dataset not in f:
        found = []
        f.visititems(lambda key, item: found.append(key) if isinstance(item, h5py.Dataset) else None)
        raise LabelError("%s has no dataset %r; its datasets: %s (choose one with --dataset)"
                         % (name, dataset, ", ".join(found) or "none"))
    data = f[dataset]
    if not isinstance(data, h5py.Dataset):
        raise LabelError("%s: %r is a group (holding %s), not a dataset; name the labels with --dataset %s/..."
                         % (name, dataset, ", ".join(data) or "nothing", dataset))
    shape = data.shape
    if data.dtype.kind not in "biuf":
        raise LabelError("%s: dataset %r holds %s, not numbers" % (name, dataset, data.dtype))
    if len(shape) < 2 or any(d != 1 for d in shape[2:]) or shape[1] == 0:
        raise LabelError(
            "%s: dataset %r has shape %s; class-weights needs N x C multi-hot labels (one "
            "column per class)%s" % (name, dataset, shape, " -- one class index per sample "
                                     "is not supported" if len(shape) < 2 else ""))
    return data


def count(path, dataset="label"):
    """``(positives per class, samples)`` over the files ``path`` stands for."""
    import h5py
    positives, samples = None, 0
    for name in h5_files(path):
        try:
            with h5py.File(name, "r") as f:
                data = labels_of(f, name, dataset)
                if positives is None:
                    positives = np.zeros(data.shape[1], dtype=np.int64)
                elif data.shape[1] != len(positives):
                    raise LabelError("%s: dataset %r has %d classes but the files before it have %d"
                                     % (name, dataset, data.shape[1], len(positives)))
                positives += count_block(data, name, dataset)
                samples += data.shape[0]
        except OSError as exc:
            raise LabelError("%s: cannot read it as HDF5 (%s)" % (name, exc)) from None
    if not samples:
        raise LabelError("%s: dataset %r has no samples" % (path, dataset))
    return positives, samples


def count_block(data, name, dataset):
    """The positives per class of the dataset ``data``, read BLOCK rows at a time."""
    positives = np.zeros(data.shape[1], dtype=np.int64)
    for start in range(0, data.shape[0], BLOCK):
        block = np.asarray(data[start:start + BLOCK]).reshape(-1, data.shape[1])
        bad = (block != 0) & (block != 1)
        if bad.any():
            i, c = np.argwhere(bad)[0]
            raise LabelError(
                "%s: dataset %r has the value %r at sample %d, class %d; class-weights "
                "takes 0/1 labels only (remove or fill ignored entries first)"
                % (name, dataset, block[i, c].item(), start + i, c))
        positives += (block == 1).sum(axis=0)
    return positives


def number_list(values):
    return "[%s]" % ", ".join("%.6g" % v for v in values)


def main(argv=None, prog="python3 -m caffe_losses.class_weights"):
    """The command (caffe_losses.cli.class_weights_main); returns the exit code."""
    from .cli import class_weights_main
    return class_weights_main(argv, prog)


if __name__ == "__main__":
    sys.exit(main())
