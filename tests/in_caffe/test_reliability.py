"""Bad input, degenerate batches, the loss-weight trap and exact resume, in real Caffe."""
import os
import re
import subprocess
import warnings

import caffe
import h5py
import numpy as np
import pytest

from nets import input_layer, loss_net, make_net, python_loss, run
from test_training import LOSSES, REPO, net_text, write_data

SPARSE = ("SoftmaxCrossEntropyLoss", "SoftmaxFocalLoss")


def caffe_env():
    return dict(os.environ, PYTHONPATH=REPO, GLOG_minloglevel="0", GLOG_logtostderr="1")


def caffe_train(directory, net, iterations):
    """`caffe train` on ``net`` (prototxt text) for ``iterations``; the finished process."""
    with open(os.path.join(directory, "net.prototxt"), "w") as f:
        f.write(net)
    solver = os.path.join(directory, "solver.prototxt")
    with open(solver, "w") as f:
        f.write('net: "%s/net.prototxt"\nbase_lr: 0.05\nlr_policy: "fixed"\ndisplay: 5\nmax_iter: %d\n'
                'snapshot_after_train: false\nsolver_mode: CPU\n' % (directory, iterations))
    result = subprocess.run(["caffe", "train", "-solver", solver], env=caffe_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    return result


# -- value errors at forward ------------------------------------------------------

@pytest.mark.parametrize("layer", sorted(LOSSES))
def test_nan_scores_name_the_bottom_and_the_count(layer):
    scores = np.full((4, 3), 0.3, np.float32)
    scores[1, 2] = np.nan
    scores[3, 0] = np.inf
    labels = np.zeros(4, np.float32) if layer in SPARSE else np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    net = loss_net(layer, {"score": scores, "label": labels})
    with pytest.raises(ValueError) as info:
        net.forward()
    message = str(info.value)
    assert message.startswith(layer + ": ")
    assert ("scores contain 2 NaN or Inf values" in message
            or "probabilities contain 2 NaN or Inf values" in message), message


@pytest.mark.parametrize("layer", ["MultiLabelSoftmaxLoss", "SigmoidCrossEntropyLoss", "CrossEntropyLoss"])
def test_nan_labels_name_the_bottom(layer):
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    labels[2, 1] = np.nan
    net = loss_net(layer, {"score": np.full((4, 3), 0.3, np.float32), "label": labels})
    with pytest.raises(ValueError, match=layer + ": labels contain 1 NaN or Inf values"):
        net.forward()


@pytest.mark.parametrize("bad,message", [(-1.0, "weights must be >= 0; 1 values are below"),
                                         (np.inf, "weights contain 1 NaN or Inf values")])
@pytest.mark.parametrize("layer", sorted(LOSSES))
def test_bad_weights_are_rejected(layer, bad, message):
    labels = np.zeros(4, np.float32) if layer in SPARSE else np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    weights = np.ones(4, np.float32)
    weights[2] = bad
    net = loss_net(layer, {"score": np.full((4, 3), 0.3, np.float32), "label": labels, "weight": weights})
    with pytest.raises(ValueError, match=layer + ": " + message):
        net.forward()


def test_two_tops_are_rejected():
    text = (input_layer("score", (2, 3)) + input_layer("label", (2, 3))
            + python_loss("SigmoidCrossEntropyLoss", ["score", "label"]).replace(
                'top: "loss"', 'top: "loss" top: "extra"'))
    with pytest.raises(ValueError, match="SigmoidCrossEntropyLoss: has one top \\(the loss\\), got 2"):
        make_net(text)


# -- batches where nothing counts ----------------------------------------------------

EMPTY_BATCHES = [
    ("MultiLabelSoftmaxLoss", "{}", np.zeros((4, 3), np.float32)),
    ("SigmoidCrossEntropyLoss", "{'ignore_label': -1}", np.full((4, 3), -1, np.float32)),
    ("SigmoidFocalLoss", "{'ignore_label': -1}", np.full((4, 3), -1, np.float32)),
    ("SoftmaxCrossEntropyLoss", "{'ignore_label': 255}", np.full(4, 255, np.float32)),
    ("SoftmaxFocalLoss", "{'ignore_label': 255}", np.full(4, 255, np.float32)),
    ("CrossEntropyLoss", "{}", np.zeros((4, 3), np.float32)),
]


@pytest.mark.parametrize("layer,param_str,labels", EMPTY_BATCHES)
@pytest.mark.parametrize("normalization", ["valid", "batch_size", "full", "none"])
def test_batch_where_nothing_counts_gives_zero_and_warns_once(layer, param_str, labels, normalization):
    param_str = param_str[:-1] + ("%s'normalization': '%s'}" % (", " if len(param_str) > 2 else "",
                                                                normalization))
    scores = np.random.default_rng(0).uniform(0.1, 0.9, size=(4, 3)).astype(np.float32)
    net = loss_net(layer, {"score": scores, "label": labels}, param_str)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = [run(net) for _ in range(3)]
    assert losses == [0.0, 0.0, 0.0]
    assert not net.blobs["score"].diff.any()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "nothing in this batch counts" in messages[0], messages


def degenerate_data(directory, kind):
    rng = np.random.default_rng(1)
    n = 64
    data = rng.normal(size=(n, 16)).astype(np.float32)
    if kind == "all negative":
        labels = np.zeros((n, 6), np.float32)
    elif kind == "all ignored":
        labels = np.full((n,), 255, np.float32)
    else:  # a single class
        labels = np.zeros((n,), np.float32)
    path = os.path.join(directory, "data.h5")
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["label"] = labels
    with open(os.path.join(directory, "list.txt"), "w") as f:
        f.write(path + "\n")


@pytest.mark.parametrize("layer,param_str,kind", [
    ("SigmoidCrossEntropyLoss", "{}", "all negative"),
    ("SigmoidFocalLoss", "{'normalization': 'positive'}", "all negative"),
    ("MultiLabelSoftmaxLoss", "{'normalization': 'valid'}", "all negative"),
    ("SoftmaxCrossEntropyLoss", "{'ignore_label': 255}", "all ignored"),
    ("SoftmaxFocalLoss", "{'ignore_label': 255}", "all ignored"),
    ("SoftmaxCrossEntropyLoss", "{'label_smoothing': 0.1}", "single class"),
])
def test_degenerate_batches_keep_caffe_train_running(layer, param_str, kind, tmp_path):
    directory = str(tmp_path)
    degenerate_data(directory, kind)
    result = caffe_train(directory, net_text(directory, layer, "label", param_str, None), 40)
    losses = [float(v) for v in re.findall(r"\] Iteration \d+.*?, loss = (\S+)", result.stdout)]
    assert len(losses) >= 8 and np.isfinite(losses).all()
    assert result.stdout.count("nothing in this batch counts") <= 1


# -- the silent no-training trap, under the CLI ----------------------------------------

def test_missing_loss_weight_warns_once_in_the_caffe_log(tmp_path):
    directory = str(tmp_path)
    write_data(directory)
    text = net_text(directory, "SigmoidCrossEntropyLoss", "multi", "{}", None).replace(" loss_weight: 1", "")
    result = caffe_train(directory, text, 20)
    assert result.stdout.count("add 'loss_weight: 1' to the layer in the prototxt") == 1


# -- exact resume -------------------------------------------------------------------

def write_resume_files(directory, layer):
    write_data(directory)  # 512 samples: 16 batches of 32, so iteration 16 starts a new pass
    label, param_str, activation = LOSSES[layer]
    text = net_text(directory, layer, label, param_str, activation).replace("shuffle: true", "shuffle: false")
    with open(os.path.join(directory, "net.prototxt"), "w") as f:
        f.write(text)
    solver = os.path.join(directory, "solver.prototxt")
    with open(solver, "w") as f:
        f.write('net: "%s/net.prototxt"\nbase_lr: 0.05\nmomentum: 0.9\nweight_decay: 0.001\n'
                'lr_policy: "step"\nstepsize: 20\ngamma: 0.5\ndisplay: 0\nmax_iter: 32\n'
                'snapshot: 16\nsnapshot_prefix: "%s/snap"\nrandom_seed: 7\nsolver_mode: CPU\n'
                % (directory, directory))
    return solver


def weights_of(net):
    return {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}


@pytest.mark.parametrize("layer", sorted(LOSSES))
def test_resume_from_solverstate_is_bit_identical(layer, tmp_path):
    directory = str(tmp_path)
    solver_path = write_resume_files(directory, layer)
    caffe.set_random_seed(7)
    straight = caffe.get_solver(solver_path)
    straight.step(32)
    expected = weights_of(straight.net)

    caffe.set_random_seed(7)
    resumed = caffe.get_solver(solver_path)
    resumed.restore(os.path.join(directory, "snap_iter_16.solverstate"))
    assert resumed.iter == 16
    resumed.step(16)
    got = weights_of(resumed.net)
    for name in expected:
        for a, b in zip(expected[name], got[name]):
            assert np.array_equal(a, b), name


def test_resume_with_the_caffe_cli_matches_an_uninterrupted_run(tmp_path):
    directory = str(tmp_path)
    solver = write_resume_files(directory, "MultiLabelSoftmaxLoss")
    env = caffe_env()

    def train(*extra):
        result = subprocess.run(["caffe", "train", "-solver", solver] + list(extra), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:]

    train()
    os.rename(os.path.join(directory, "snap_iter_32.caffemodel"), os.path.join(directory, "straight.caffemodel"))
    train("-snapshot", os.path.join(directory, "snap_iter_16.solverstate"))
    nets = [caffe.Net(os.path.join(directory, "net.prototxt"), os.path.join(directory, name), caffe.TEST)
            for name in ("straight.caffemodel", "snap_iter_32.caffemodel")]
    a, b = (weights_of(n) for n in nets)
    for name in a:
        for x, y in zip(a[name], b[name]):
            assert np.array_equal(x, y), name
