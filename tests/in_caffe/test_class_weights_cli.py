"""`python3 -m caffe_losses.class_weights` on .h5 files it writes: the counts, the line to
paste (it parses with parse_literal and SigmoidCrossEntropyLoss takes it), the list-file
source, and the errors (a class without positives, values other than 0/1, a missing
dataset)."""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from caffe_losses.params import parse_literal
from nets import loss_net, run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def command(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "caffe_losses.class_weights"] + [str(a) for a in args],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)


def write_labels(path, labels, dataset="label"):
    with h5py.File(str(path), "w") as f:
        f[dataset] = labels
        f["data"] = np.zeros((len(labels), 2), dtype=np.float32)
    return path


def labels_with_counts(counts, n=200):
    labels = np.zeros((n, len(counts)), dtype=np.float32)
    for c, k in enumerate(counts):
        labels[:k, c] = 1
    return labels


def pasted(stdout, kind):
    line = stdout.strip().splitlines()[-1]
    assert line.startswith("'%s': [" % kind)
    return parse_literal("{%s}" % line)[kind]


@pytest.mark.parametrize("kind", ["class_weight", "pos_weight"])
def test_pasted_line_is_accepted_by_sigmoid_cross_entropy(tmp_path, kind):
    counts = [5, 50, 150, 200]
    path = write_labels(tmp_path / "train.h5", labels_with_counts(counts))
    result = command(path, "--kind", kind, "--beta", "0.99")
    assert result.returncode == 0, result.stderr
    assert "200 samples, 4 classes" in result.stdout
    for c, k in enumerate(counts):
        assert ("%5d %10d %10d" % (c, k, 200 - k)) in result.stdout
    weights = pasted(result.stdout, kind)
    if kind == "class_weight":
        raw = [(1 - 0.99) / (1 - 0.99 ** k) for k in counts]
        expected = [w * 4 / sum(raw) for w in raw]
    else:
        expected = [(200 - k) / k for k in counts]
        assert "class 3: every sample is positive" in result.stderr
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    # pasted into the loss's param_str, the layer takes it and computes a finite loss
    rng = np.random.default_rng(0)
    net = loss_net("SigmoidCrossEntropyLoss",
                   {"score": rng.normal(size=(6, 4)).astype(np.float32),
                    "label": (rng.random((6, 4)) < 0.5).astype(np.float32)},
                   "{%s}" % result.stdout.strip().splitlines()[-1])
    assert np.isfinite(run(net))


def test_list_file_of_h5_paths_and_another_dataset(tmp_path):
    first = write_labels(tmp_path / "a.h5", labels_with_counts([3, 10], n=20), dataset="multi")
    second = write_labels(tmp_path / "b.h5", labels_with_counts([7, 0], n=30), dataset="multi")
    listing = tmp_path / "train.txt"
    listing.write_text("%s\n%s\n" % (first, second))
    result = command(listing, "--dataset", "multi", "--kind", "pos_weight")
    assert result.returncode == 0, result.stderr
    assert "50 samples, 2 classes" in result.stdout
    assert pasted(result.stdout, "pos_weight") == pytest.approx([40 / 10.0, 40 / 10.0])


def test_a_class_without_positives_is_an_error_naming_it_and_the_file(tmp_path):
    path = write_labels(tmp_path / "train.h5", labels_with_counts([4, 0, 9]))
    result = command(path)
    assert result.returncode == 2
    assert "class 1 has no positive sample" in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", [-1, 2, 0.5])
def test_values_other_than_zero_and_one_are_an_error(tmp_path, value):
    labels = labels_with_counts([4, 6, 9])
    labels[3, 2] = value
    path = write_labels(tmp_path / "train.h5", labels)
    result = command(path)
    assert result.returncode == 2
    assert "at sample 3, class 2" in result.stderr and "0/1 labels only" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_dataset_names_the_ones_there(tmp_path):
    path = write_labels(tmp_path / "train.h5", labels_with_counts([4, 6]))
    result = command(path, "--dataset", "labels")
    assert result.returncode == 2
    assert "has no dataset 'labels'; its datasets: data, label" in result.stderr


def test_sparse_labels_and_not_hdf5_are_clear_errors(tmp_path):
    path = write_labels(tmp_path / "train.h5", np.arange(5, dtype=np.float32))
    result = command(path)
    assert result.returncode == 2 and "needs N x C multi-hot labels" in result.stderr
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    result = command(text)
    assert result.returncode == 2 and "line 1: 'hello' is not found" in result.stderr


def test_main_returns_the_exit_code(tmp_path, capsys):
    from caffe_losses import class_weights
    path = write_labels(tmp_path / "train.h5", labels_with_counts([4, 6]))
    assert class_weights.main([str(path), "--beta", "0"]) == 0
    assert capsys.readouterr().out.strip().endswith("'class_weight': [1, 1]")


def bad_input(folder, which):
    """A path to something that is not N x C labels in HDF5."""
    path = folder / {"prototxt": "train_val.prototxt", "folder": "data", "list_with_folder": "train.txt",
                     "binary": "weights.caffemodel"}.get(which, "labels.h5")
    if which == "prototxt":
        path.write_text('name: "net"\nlayer {\n  name: "data"\n  type: "HDF5Data"\n  top: "data"\n}\n')
    elif which == "folder":
        path.mkdir()
    elif which == "list_with_folder":
        (folder / "shards").mkdir()
        path.write_text("%s\n" % (folder / "shards"))
    elif which == "binary":
        path.write_bytes(b"\n\x05conv1\x12\x00\x1a\x04\x00\x00\x80\x3f")
    elif which == "empty":
        path.write_text("")
    else:
        with h5py.File(str(path), "w") as f:
            if which == "group":
                f["label/a"] = np.zeros((4, 2))
                f["label/b"] = np.zeros((4, 2))
            elif which == "strings":
                f["label"] = np.array([b"cat", b"dog"])
            elif which == "no_classes":
                f["label"] = np.zeros((4, 0))
    return path


@pytest.mark.parametrize("which, message", [
    ("prototxt", "{path} is a prototxt, not labels: give the HDF5 file (or the list file) that its "
                 "HDF5Data layer's source names"),
    ("folder", "{path} is a folder; give an HDF5 file, or a text file listing HDF5 files"),
    ("list_with_folder", "{path}, line 1: '{folder}/shards' is a folder"),
    ("binary", "{path} is neither an HDF5 file nor a list of HDF5 files (one path a line, as the source "
               "of Caffe's HDF5Data layer)"),
    ("empty", "{path} is neither an HDF5 file nor a list of HDF5 files (one path a line, as the source "
              "of Caffe's HDF5Data layer)"),
    ("group", "{path}: 'label' is a group (holding a, b), not a dataset; name the labels with "
              "--dataset label/..."),
    ("strings", "{path}: dataset 'label' holds |S3, not numbers"),
    ("no_classes", "{path}: dataset 'label' has shape (4, 0); class-weights needs N x C multi-hot labels"),
])
def test_every_bad_input_is_one_line_naming_the_path(which, message, tmp_path, capsys):
    from caffe_losses import cli
    path = bad_input(tmp_path, which)
    before = path.read_bytes() if path.is_file() else None
    assert cli.main(["class-weights", str(path)]) == 2
    out, err = capsys.readouterr()
    assert not out and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("caffe-losses class-weights: " + message.format(path=path, folder=tmp_path))
    assert (path.read_bytes() if path.is_file() else None) == before
