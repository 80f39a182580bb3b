"""The ready-to-paste snippets in prototxt/: each builds in a real net, and each shows
every parameter of its layer at its default, so none can rot."""
import glob
import os

import caffe
import cv2
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
    assert named == set(caffe_losses.LAYERS + caffe_losses.METRICS + caffe_losses.DATA)


@pytest.mark.parametrize("path", SNIPPETS, ids=os.path.basename)
def test_snippet_shows_every_parameter_at_its_default(path):
    net = text_format.Merge(open(path).read(), caffe_pb2.NetParameter())
    (layer,) = net.layer
    assert layer.type == "Python" and layer.python_param.module == "caffe_losses"
    is_loss = layer.python_param.layer in caffe_losses.LAYERS
    assert list(layer.loss_weight) == ([1.0] if is_loss else [])
    cls = getattr(caffe_losses, layer.python_param.layer)
    given = caffe_losses.params.parse_literal(layer.python_param.param_str)
    assert set(given) == set(cls.PARAMS)
    # the keys a layer needs (a data layer's source) show an example, the others their default
    defaults = {key: param.default for key, param in cls.PARAMS.items() if not param.required}
    parsed = parse_params(cls.__name__, layer.python_param.param_str, cls.PARAMS)
    assert {key: parsed[key] for key in defaults} == defaults


@pytest.mark.parametrize("path", SNIPPETS, ids=os.path.basename)
def test_snippet_builds_and_runs_in_a_net(path, tmp_path):
    text = open(path).read()
    layer = text_format.Merge(text, caffe_pb2.NetParameter()).layer[0]
    if layer.python_param.layer in caffe_losses.DATA:
        params = caffe_losses.params.parse_literal(layer.python_param.param_str)
        folder = tmp_path / "images"
        folder.mkdir()
        lines = []
        for i in range(3):  # three 8 x 6 BGR images
            cv2.imwrite(str(folder / ("%d.png" % i)), np.full((8, 6, 3), (i, 50, 200), np.uint8))
            lines.append("%d.png %d\n" % (i, i))
        (tmp_path / "list.txt").write_text("".join(lines))
        params.update(source=str(tmp_path / "list.txt"), root_folder=str(folder) + "/")
        layer.python_param.param_str = repr(params)
        net = make_net(text_format.MessageToString(layer).join(["layer {\n", "}\n"]), caffe.TEST)
        out = net.forward()
        assert out["data"].shape == (params["batch_size"], 3, 8, 6)
        np.testing.assert_array_equal(out["data"][0, :, 0, 0], [0, 50, 200])
        assert out["label"].shape == (params["batch_size"], params["num_classes"])
        assert out["label"][0].tolist() == [1] + [0] * (params["num_classes"] - 1)
        return
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
    loss = run(net, layer.top[0])
    assert np.isfinite(loss) and loss > 0
    assert np.abs(net.blobs[scores].diff).max() > 0
