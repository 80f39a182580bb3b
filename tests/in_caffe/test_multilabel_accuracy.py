"""MultiLabelAccuracy in a real net against scikit-learn on the same arrays (to 1e-6)."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from nets import input_layer, make_net


def accuracy_net(shape, param_str="{}", tops=("precision", "recall", "f1", "map")):
    text = input_layer("score", shape) + input_layer("label", shape)
    text += ('layer { name: "acc" type: "Python" bottom: "score" bottom: "label" %s\n'
             '  include { phase: TEST }\n'
             '  python_param { module: "caffe_losses" layer: "MultiLabelAccuracy" param_str: "%s" } }\n'
             % (" ".join('top: "%s"' % t for t in tops), param_str))
    import caffe
    return make_net(text, caffe.TEST)


def reference(scores, labels, k=None):
    """scikit-learn on the samples with a positive label; top-k of each sample as prediction."""
    keep = labels.sum(axis=1) > 0
    s, y = scores[keep], labels[keep].astype(int)
    kk = y.sum(axis=1) if k is None else np.full(len(y), k)
    order = np.argsort(-s, axis=1, kind="stable")
    predicted = np.zeros_like(y)
    for i, row in enumerate(order):
        predicted[i, row[:kk[i]]] = 1
    present = [c for c in range(y.shape[1]) if y[:, c].any()]
    ap = np.mean([average_precision_score(labels[:, c], scores[:, c]) for c in present])
    return (precision_score(y, predicted, average="samples", zero_division=0),
            recall_score(y, predicted, average="samples", zero_division=0),
            f1_score(y, predicted, average="samples", zero_division=0), ap)


@pytest.mark.parametrize("k", [None, 1, 3])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_scikit_learn(k, ties):
    rng = np.random.default_rng(30)
    scores = rng.normal(size=(64, 10)).astype(np.float32)
    if ties:
        scores = np.round(scores * 2) / 2  # many tied scores: ties form one step of the curve
    labels = (rng.random((64, 10)) < 0.25).astype(np.float32)
    labels[3] = 0  # a sample without positives: left out of the per-sample averages
    net = accuracy_net(scores.shape, "{'k': %s}" % k)
    net.blobs["score"].data[...] = scores
    net.blobs["label"].data[...] = labels
    out = net.forward()
    expected = reference(scores.astype(np.float64), labels, k)
    got = [float(out[t]) for t in ("precision", "recall", "f1", "map")]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_ignored_entries_are_left_out():
    rng = np.random.default_rng(31)
    scores = rng.normal(size=(40, 6)).astype(np.float32)
    labels = (rng.random((40, 6)) < 0.3).astype(np.float32)
    ignored = rng.random((40, 6)) < 0.2
    net = accuracy_net(scores.shape, "{'ignore_label': -1}")
    net.blobs["score"].data[...] = scores
    net.blobs["label"].data[...] = np.where(ignored, -1, labels)
    out = net.forward()
    # per class, the ignored samples are simply not there
    aps = [average_precision_score(labels[~ignored[:, c], c], scores[~ignored[:, c], c])
           for c in range(6) if labels[~ignored[:, c], c].any()]
    assert float(out["map"]) == pytest.approx(np.mean(aps), abs=1e-6)


def test_fewer_tops_and_spatial_input():
    rng = np.random.default_rng(32)
    scores = rng.normal(size=(2, 5, 3, 3)).astype(np.float32)
    labels = (rng.random((2, 5, 3, 3)) < 0.4).astype(np.float32)
    net = accuracy_net(scores.shape, tops=("precision",))
    net.blobs["score"].data[...] = scores
    net.blobs["label"].data[...] = labels
    flat_s = np.moveaxis(scores, 1, -1).reshape(-1, 5).astype(np.float64)
    flat_y = np.moveaxis(labels, 1, -1).reshape(-1, 5)
    assert float(net.forward()["precision"]) == pytest.approx(reference(flat_s, flat_y)[0], abs=1e-6)


def test_wrong_number_of_tops_is_rejected():
    with pytest.raises(ValueError, match="MultiLabelAccuracy: has 1 to 4 tops"):
        accuracy_net((2, 3), tops=("a", "b", "c", "d", "e"))
