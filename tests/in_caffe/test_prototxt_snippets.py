"""The ready-to-paste snippets in prototxt/: each builds in a real net, and each shows
every parameter of its layer at its default, so none can rot."""
import glob
import os

import caffe
import numpy as np
import pytest
from caffe.proto import caffe_pb2
from google.protobuf import text_format

import caffe_losses
from caffe_losses.params import parse_params
from nets import input_layer, make_net, run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SNIPPETS = sorted(glob.glob(os.path.join(REPO, "prototxt", "*.prototxt")))


def test_there_is_one_snippet_per_layer():
    named = set()
    for path in SNIPPETS:
        net = text_format.Merge(open(path).read(), caffe_pb2.NetParameter())
        named.update(layer.python_param.layer for layer in net.layer if layer.type == "Python")
    assert named == set(caffe_losses.LAYERS + caffe_losses.METRICS)


@pytest.mark.parametrize("path", SNIPPETS, ids=os.path.basename)
def test_snippet_shows_every_parameter_at_its_default(path):
    net = text_format.Merge(open(path).read(), caffe_pb2.NetParameter())
    (layer,) = net.layer
    assert layer.type == "Python" and layer.python_param.module == "caffe_losses"
    is_metric = layer.python_param.layer in caffe_losses.METRICS
    assert list(layer.loss_weight) == ([] if is_metric else [1.0])
    cls = getattr(caffe_losses, layer.python_param.layer)
    given = caffe_losses.params.parse_literal(layer.python_param.param_str)
    assert set(given) == set(cls.PARAMS)
    defaults = {key: param.default for key, param in cls.PARAMS.items()}
    assert parse_params(cls.__name__, layer.python_param.param_str, cls.PARAMS) == defaults


@pytest.mark.parametrize("path", SNIPPETS, ids=os.path.basename)
def test_snippet_builds_and_runs_in_a_net(path):
    text = open(path).read()
    layer = text_format.Merge(text, caffe_pb2.NetParameter()).layer[0]
    if layer.python_param.layer in caffe_losses.METRICS:
        net = make_net(input_layer(layer.bottom[0], (4, 3)) + input_layer(layer.bottom[1], (4, 3)) + text,
                       caffe.TEST)
        net.blobs[layer.bottom[0]].data[...] = np.eye(3)[[0, 1, 2, 1]]
        net.blobs[layer.bottom[1]].data[...] = np.eye(3)[[0, 1, 2, 1]]
        assert float(net.forward()["map"]) == 1.0
        return
    sparse = getattr(caffe_losses, layer.python_param.layer).LABELS == "sparse"
    scores, labels = layer.bottom[0], layer.bottom[1]
    net = make_net("force_backward: true\n" + input_layer(scores, (4, 3))
                   + input_layer(labels, (4,) if sparse else (4, 3)) + text)
    net.blobs[scores].data[...] = np.full((4, 3), 1 / 3.0)
    net.blobs[labels].data[...] = [0, 1, 2, 1] if sparse else np.eye(3)[[0, 1, 2, 1]]
    loss = run(net)
    assert np.isfinite(loss) and loss > 0
    assert np.abs(net.blobs[scores].diff).max() > 0
