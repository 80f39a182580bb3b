"""MultiLabelAccuracy's `metrics` key in a real net: the tops come in the order named, and
CP ... OF1 agree with scikit-learn (micro averages for OP/OR/OF1, per-class scores for
CP/CR averaged over the classes the definitions keep) to 1e-6."""
import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from nets import make_net
from test_multilabel_accuracy import accuracy_net


def predictions(scores, threshold=0.0, topk=None):
    pred = scores > threshold
    if topk is not None:
        for i, row in enumerate(scores):
            keep = np.zeros(len(row), dtype=bool)
            keep[np.argsort(-row, kind="stable")[:topk]] = True
            pred[i] &= keep
    return pred.astype(int)


def sklearn_metrics(scores, labels, threshold=0.0, topk=None):
    y, pred = labels.astype(int), predictions(scores, threshold, topk)
    active = (y.sum(axis=0) > 0) | (pred.sum(axis=0) > 0)
    labelled = y.sum(axis=0) > 0
    cp = precision_score(y, pred, average=None, zero_division=0)[active].mean()
    cr = recall_score(y, pred, average=None, zero_division=0)[labelled].mean()
    return {"cp": cp, "cr": cr, "cf1": 2 * cp * cr / (cp + cr),
            "op": precision_score(y, pred, average="micro", zero_division=0),
            "or": recall_score(y, pred, average="micro", zero_division=0),
            "of1": f1_score(y, pred, average="micro", zero_division=0)}


def batch(seed, shape=(64, 10)):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=shape).astype(np.float32)
    labels = (rng.random(shape) < 0.25).astype(np.float32)
    return scores, labels


@pytest.mark.parametrize("topk, threshold", [(None, 0.0), (3, 0.0), (3, -0.5), (None, 0.8)])
def test_tops_in_the_order_of_metrics_match_scikit_learn(topk, threshold):
    scores, labels = batch(40)
    labels[:, 7] = 0  # a class without labels (predictions only: in CP, not in CR)
    order = ["of1", "cr", "cp", "map", "op", "cf1", "or"]
    net = accuracy_net(scores.shape, "{'metrics': %r, 'topk': %s, 'threshold': %r}"
                       % (order, topk, threshold), tops=order)
    net.blobs["score"].data[...] = scores
    net.blobs["label"].data[...] = labels
    out = net.forward()
    expected = sklearn_metrics(scores.astype(np.float64), labels, threshold, topk)
    for name in order:
        if name != "map":
            assert float(out[name]) == pytest.approx(expected[name], abs=1e-6), name
    # the tops are filled in order: the blob named "map" holds the mean AP, not a neighbour
    from sklearn.metrics import average_precision_score
    aps = [average_precision_score(labels[:, c], scores[:, c]) for c in range(10) if labels[:, c].any()]
    assert float(out["map"]) == pytest.approx(np.mean(aps), abs=1e-6)


def test_fewer_tops_take_the_first_metrics():
    scores, labels = batch(41)
    net = accuracy_net(scores.shape, "{'metrics': ['op', 'of1', 'map']}", tops=("a", "b"))
    net.blobs["score"].data[...] = scores
    net.blobs["label"].data[...] = labels
    out = net.forward()
    expected = sklearn_metrics(scores.astype(np.float64), labels)
    assert float(out["a"]) == pytest.approx(expected["op"], abs=1e-6)
    assert float(out["b"]) == pytest.approx(expected["of1"], abs=1e-6)


def test_more_tops_than_metrics_is_rejected():
    with pytest.raises(ValueError, match=r"MultiLabelAccuracy: has 1 to 2 tops \(cp, of1\), got 3"):
        accuracy_net((2, 3), "{'metrics': ['cp', 'of1']}", tops=("a", "b", "c"))


def test_bad_metric_name_is_rejected_at_setup():
    with pytest.raises(ValueError, match="'metrics' has 'ap', which is not a metric"):
        accuracy_net((2, 3), "{'metrics': ['ap']}", tops=("a",))


def test_ignored_entries_and_spatial_blob():
    rng = np.random.default_rng(42)
    scores = rng.normal(size=(3, 5, 2, 2)).astype(np.float32)
    labels = (rng.random((3, 5, 2, 2)) < 0.4).astype(np.float32)
    ignored = rng.random(labels.shape) < 0.2
    net = accuracy_net(scores.shape, "{'metrics': ['op', 'or'], 'ignore_label': -1}", tops=("op", "or"))
    net.blobs["score"].data[...] = scores
    net.blobs["label"].data[...] = np.where(ignored, -1, labels)
    out = net.forward()
    keep = ~ignored
    pred = scores > 0
    nc = (pred & (labels > 0) & keep).sum()
    assert float(out["op"]) == pytest.approx(nc / (pred & keep).sum(), abs=1e-6)
    assert float(out["or"]) == pytest.approx(nc / ((labels > 0) & keep).sum(), abs=1e-6)


def test_nothing_predicted_gives_zeros_not_nan():
    scores, labels = batch(43, (8, 4))
    names = ["cp", "cr", "cf1", "op", "or", "of1"]
    net = accuracy_net(scores.shape, "{'metrics': %r, 'threshold': 100}" % names, tops=names)
    net.blobs["score"].data[...] = scores
    net.blobs["label"].data[...] = labels
    out = net.forward()
    assert [float(out[n]) for n in names] == [0.0] * 6


# -- the training script: the chosen metrics over the whole test set ------------------------

def write_h5(directory, scores, labels):
    import h5py
    path = directory / "data.h5"
    with h5py.File(str(path), "w") as f:
        f["score"] = scores
        f["label"] = labels
    listing = directory / "list.txt"
    listing.write_text("%s\n" % path)
    return listing


def test_evaluate_computes_over_the_whole_test_set_not_per_batch(tmp_path):
    import caffe
    from caffe_losses import train
    scores, labels = batch(44, (30, 6))
    listing = write_h5(tmp_path, scores, labels)
    net = make_net('layer { name: "d" type: "HDF5Data" top: "score" top: "label"\n'
                   '  hdf5_data_param { source: "%s" batch_size: 10 } }\n' % listing, caffe.TEST)
    names = ("cf1", "map", "op", "cp", "f1@k")
    got = train.evaluate(net, 3, "score", "label", names, topk=3, threshold=-0.2)
    assert sorted(got) == ["cf1", "cp", "f1", "map", "op"]
    expected = sklearn_metrics(scores.astype(np.float64), labels, -0.2, 3)
    for name in ("cf1", "op", "cp"):
        assert got[name] == pytest.approx(expected[name], abs=1e-6)
    from sklearn.metrics import average_precision_score
    assert got["map"] == pytest.approx(np.mean([average_precision_score(labels[:, c], scores[:, c])
                                                for c in range(6) if labels[:, c].any()]), abs=1e-6)


def training_files(tmp_path, accuracy_param_str=None):
    rng = np.random.default_rng(45)
    n, classes = 200, 5
    labels = (rng.random((n, classes)) < 0.3).astype(np.float32)
    labels[np.arange(n), rng.integers(0, classes, n)] = 1
    data = (labels @ rng.normal(size=(classes, 8)) + rng.normal(0, 0.5, (n, 8))).astype(np.float32)
    import h5py
    with h5py.File(str(tmp_path / "d.h5"), "w") as f:
        f["data"], f["label"] = data, labels
    (tmp_path / "list.txt").write_text("%s\n" % (tmp_path / "d.h5"))
    text = ('layer { name: "d" type: "HDF5Data" top: "data" top: "label"\n'
            '  hdf5_data_param { source: "%s/list.txt" batch_size: 50 } }\n'
            'layer { name: "score" type: "InnerProduct" bottom: "data" top: "score"\n'
            '  inner_product_param { num_output: %d weight_filler { type: "xavier" } } }\n'
            'layer { name: "loss" type: "Python" bottom: "score" bottom: "label" top: "loss" loss_weight: 1\n'
            '  python_param { module: "caffe_losses" layer: "SigmoidCrossEntropyLoss" } }\n'
            % (tmp_path, classes))
    if accuracy_param_str is not None:
        text += ('layer { name: "acc" type: "Python" bottom: "score" bottom: "label" top: "a" top: "b"\n'
                 '  include { phase: TEST }\n'
                 '  python_param { module: "caffe_losses" layer: "MultiLabelAccuracy" param_str: "%s" } }\n'
                 % accuracy_param_str)
    (tmp_path / "net.prototxt").write_text(text)
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s/net.prototxt"\ntest_iter: 4\ntest_interval: 20\nbase_lr: 0.05\n'
                      'momentum: 0.9\nlr_policy: "fixed"\nmax_iter: 40\nsnapshot: 0\n'
                      'snapshot_prefix: "%s/out/m"\nrandom_seed: 1\nsolver_mode: CPU\n'
                      % (tmp_path, tmp_path))
    return solver


def train_script(*args):
    import os
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, "-m", "caffe_losses.train", "--quiet"] + [str(a) for a in args],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=600)


def test_train_script_metrics_option(tmp_path):
    import json
    import re
    solver = training_files(tmp_path)
    result = train_script("--solver", solver, "--metrics", "map,CP,of1", "--topk", "3")
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"iteration 20: test mAP \d\.\d{4}, CP \d\.\d{4}, OF1 \d\.\d{4}\n", result.stdout)
    assert re.search(r"final test: mAP \d\.\d{4}, CP \d\.\d{4}, OF1 \d\.\d{4}\n", result.stdout)
    history = json.load(open(str(tmp_path / "out" / "curves.json")))
    assert [sorted(row) for row in history["test"]] == [["cp", "iter", "map", "of1"]] * 2
    assert (tmp_path / "out" / "curves.png").stat().st_size > 1000


def test_train_script_default_lines_are_unchanged(tmp_path):
    import re
    result = train_script("--solver", training_files(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"iteration 40: test mAP \d\.\d{4}, F1@k \d\.\d{4}, precision \d\.\d{4}, "
                     r"recall \d\.\d{4}\n", result.stdout)
    assert re.search(r"final test: mAP \d\.\d{4}, F1@k \d\.\d{4}, precision@k \d\.\d{4}, "
                     r"recall@k \d\.\d{4}\n", result.stdout)


def test_train_script_takes_the_metrics_of_the_test_nets_layer(tmp_path):
    import re
    solver = training_files(tmp_path, "{'metrics': ['of1', 'cf1'], 'topk': 2}")
    result = train_script("--solver", solver)
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"final test: OF1 \d\.\d{4}, CF1 \d\.\d{4}\n", result.stdout)


def test_train_script_rejects_an_unknown_metric(tmp_path):
    result = train_script("--solver", training_files(tmp_path), "--metrics", "map,accuracy")
    assert result.returncode == 2
    assert "'accuracy', which is not a metric" in result.stdout
