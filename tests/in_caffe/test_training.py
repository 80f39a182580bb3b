"""Each layer trains a small net with the `caffe train` CLI: finite loss that falls."""
import os
import re
import subprocess

import h5py
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSES = 6

LOSSES = {
    # layer: (label top, param_str, activation layer type before the loss or None)
    "MultiLabelSoftmaxLoss": ("multi", "{'normalization': 'valid'}", None),
    "SigmoidCrossEntropyLoss": ("multi", "{'pos_weight': 2.0}", None),
    "SigmoidFocalLoss": ("multi", "{'gamma': 2, 'alpha': 0.25}", None),
    "SoftmaxCrossEntropyLoss": ("single", "{'label_smoothing': 0.1}", None),
    "SoftmaxFocalLoss": ("single", "{'gamma': 2}", None),
    "CrossEntropyLoss": ("multi", "{'mode': 'binary'}", "Sigmoid"),
}


def write_data(directory):
    rng = np.random.default_rng(5)
    n = 512
    single = rng.integers(0, CLASSES, size=n)
    multi = np.eye(CLASSES, dtype=np.float32)[single]
    multi[np.arange(n), rng.integers(0, CLASSES, size=n)] = 1
    prototypes = rng.normal(0, 1, size=(CLASSES, 16))
    data = (multi @ prototypes + rng.normal(0, 0.5, size=(n, 16))).astype(np.float32)
    path = os.path.join(directory, "data.h5")
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["multi"] = multi
        f["single"] = single.astype(np.float32)
    with open(os.path.join(directory, "list.txt"), "w") as f:
        f.write(path + "\n")


def net_text(directory, layer, label, param_str, activation):
    score = "score"
    text = ('layer { name: "data" type: "HDF5Data" top: "data" top: "%s"\n'
            '  hdf5_data_param { source: "%s/list.txt" batch_size: 32 shuffle: true } }\n'
            'layer { name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1"\n'
            '  inner_product_param { num_output: 32 weight_filler { type: "xavier" } } }\n'
            'layer { name: "relu" type: "ReLU" bottom: "fc1" top: "fc1" }\n'
            'layer { name: "score" type: "InnerProduct" bottom: "fc1" top: "score"\n'
            '  inner_product_param { num_output: %d weight_filler { type: "xavier" } } }\n'
            % (label, directory, CLASSES))
    if activation:
        text += 'layer { name: "prob" type: "%s" bottom: "score" top: "prob" }\n' % activation
        score = "prob"
    text += ('layer { name: "loss" type: "Python" bottom: "%s" bottom: "%s" top: "loss" loss_weight: 1\n'
             '  python_param { module: "caffe_losses" layer: "%s" param_str: "%s" } }\n'
             % (score, label, layer, param_str))
    return text


@pytest.mark.parametrize("layer", sorted(LOSSES))
def test_layer_trains_with_caffe_cli(layer, tmp_path):
    directory = str(tmp_path)
    write_data(directory)
    label, param_str, activation = LOSSES[layer]
    with open(os.path.join(directory, "net.prototxt"), "w") as f:
        f.write(net_text(directory, layer, label, param_str, activation))
    with open(os.path.join(directory, "solver.prototxt"), "w") as f:
        f.write('net: "%s/net.prototxt"\nbase_lr: 0.05\nmomentum: 0.9\nlr_policy: "fixed"\n'
                'display: 10\nmax_iter: 200\nsnapshot: 0\nsnapshot_after_train: false\n'
                'random_seed: 3\nsolver_mode: CPU\n' % directory)
    env = dict(os.environ, PYTHONPATH=REPO, GLOG_minloglevel="0", GLOG_logtostderr="1")
    result = subprocess.run(["caffe", "train", "-solver", os.path.join(directory, "solver.prototxt")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    losses = [float(v) for v in re.findall(r"\] Iteration \d+.*?, loss = (\S+)", result.stdout)]
    assert len(losses) >= 20
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:2])
    assert "Warning" not in result.stdout and "warn" not in result.stdout.lower()
