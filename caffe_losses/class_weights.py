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
"""
import argparse
import os
import sys

import numpy as np

PROG = "python3 -m caffe_losses.class_weights"
KINDS = ("class_weight", "pos_weight")
BLOCK = 1 << 16  # rows read at a time


class LabelError(ValueError):
    """Labels that cannot be counted as given."""


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


def h5_files(path):
    """The HDF5 files ``path`` stands for: itself, or those its lines list."""
    import h5py
    if not os.path.isfile(path):
        raise LabelError("%s: no such file" % path)
    if h5py.is_hdf5(path):
        return [path]
    try:
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError:
        names = []
    if not names:
        raise LabelError("%s is neither an HDF5 file nor a list of HDF5 files (one path a line, "
                         "as the source of Caffe's HDF5Data layer)" % path)
    for i, name in enumerate(names):
        if not os.path.isfile(name) or not h5py.is_hdf5(name):
            raise LabelError("%s, line %d: %r is %s" % (path, i + 1, name, "not an HDF5 file"
                                                         if os.path.isfile(name) else "not found"))
    return names


def count(path, dataset="label"):
    """``(positives per class, samples)`` over the files ``path`` stands for."""
    import h5py
    positives, samples = None, 0
    for name in h5_files(path):
        with h5py.File(name, "r") as f:
            if dataset not in f:
                found = []
                f.visititems(lambda key, item: found.append(key) if isinstance(item, h5py.Dataset) else None)
                raise LabelError("%s has no dataset %r; its datasets: %s (choose one with --dataset)"
                                 % (name, dataset, ", ".join(found) or "none"))
            data = f[dataset]
            shape = data.shape
            if len(shape) < 2 or any(d != 1 for d in shape[2:]):
                raise LabelError(
                    "%s: dataset %r has shape %s; class-weights needs N x C multi-hot labels (one "
                    "column per class)%s" % (name, dataset, shape, " -- one class index per sample "
                                             "is not supported" if len(shape) < 2 else ""))
            if positives is None:
                positives = np.zeros(shape[1], dtype=np.int64)
            elif shape[1] != len(positives):
                raise LabelError("%s: dataset %r has %d classes but the files before it have %d"
                                 % (name, dataset, shape[1], len(positives)))
            for start in range(0, shape[0], BLOCK):
                block = np.asarray(data[start:start + BLOCK]).reshape(-1, shape[1])
                bad = (block != 0) & (block != 1)
                if bad.any():
                    i, c = np.argwhere(bad)[0]
                    raise LabelError(
                        "%s: dataset %r has the value %r at sample %d, class %d; class-weights "
                        "takes 0/1 labels only (remove or fill ignored entries first)"
                        % (name, dataset, block[i, c].item(), start + i, c))
                positives += (block == 1).sum(axis=0)
            samples += shape[0]
    if not samples:
        raise LabelError("%s: dataset %r has no samples" % (path, dataset))
    return positives, samples


def number_list(values):
    return "[%s]" % ", ".join("%.6g" % v for v in values)


def main(argv=None, prog=PROG):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("labels", metavar="LABELS.h5",
                        help="an HDF5 file, or a text file listing HDF5 files (HDF5Data's source)")
    parser.add_argument("--dataset", default="label", help="the N x C 0/1 labels (default: label)")
    parser.add_argument("--beta", type=float, default=0.999,
                        help="class_weight: beta of the effective number, in [0, 1) (default: 0.999)")
    parser.add_argument("--kind", choices=KINDS, default="class_weight",
                        help="class_weight: effective number (Cui et al. 2019), summing to C; "
                             "pos_weight: negatives / positives (PyTorch)")
    args = parser.parse_args(argv)
    if not 0 <= args.beta < 1:
        parser.error("--beta must be in [0, 1), got %r" % args.beta)
    try:
        import h5py  # noqa: F401
    except ImportError:
        sys.stderr.write("%s: needs h5py to read HDF5 files (Debian: apt-get install python3-h5py; "
                         "or pip install h5py)\n" % prog)
        return 2
    try:
        positives, samples = count(args.labels, args.dataset)
        try:
            if args.kind == "class_weight":
                weights = effective_number_weights(positives, args.beta)
            else:
                weights = pos_weights(positives, samples)
        except LabelError as exc:
            raise LabelError("%s (dataset %r of %s); drop the class or add samples of it"
                             % (exc, args.dataset, args.labels))
    except (LabelError, OSError) as exc:
        sys.stderr.write("%s: %s\n" % (prog, exc))
        return 2
    print("%s: dataset %r, %d samples, %d classes%s" % (
        args.labels, args.dataset, samples, len(positives),
        ", beta %g" % args.beta if args.kind == "class_weight" else ""))
    print("%5s %10s %10s %10s" % ("class", "positives", "negatives", args.kind))
    for c, (n, w) in enumerate(zip(positives, weights)):
        print("%5d %10d %10d %10.6g" % (c, n, samples - n, w))
    full = np.flatnonzero(positives == samples)
    if args.kind == "pos_weight" and full.size:
        sys.stderr.write("%s: note: class %s: every sample is positive, so its pos_weight is 0 (its "
                         "positive term counts for nothing)\n" % (prog, ", ".join(map(str, full))))
    print("'%s': %s" % (args.kind, number_list(weights)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
