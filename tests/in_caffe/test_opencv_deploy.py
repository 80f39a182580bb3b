"""Deploy nets in OpenCV's DNN module (cv2.dnn.readNetFromCaffe; Debian 11's OpenCV 4.5): what
caffe_losses.prototxt.opencv says OpenCV cannot take, it cannot take (it fails, or gives other
numbers), and every other layer type of this Caffe gives Caffe's outputs within 1e-5; deploy
and check say so before OpenCV does; the digits example's deploy net runs in OpenCV."""
import os

import caffe
import cv2
import numpy as np
import pytest

from caffe_losses import cli, prototxt
from caffe_losses.prototxt.net import CPP_LOSSES, DATA_LAYERS
from caffe_losses.prototxt.opencv import OPENCV_TYPES
from nets import make_net
from opencv_runs import assert_opencv_agrees, opencv_outputs
from test_prototxt_tool import REPO, load_deploy, parse, random_weights


def inputs(*shapes, names="xyz"):
    return "".join('layer { name: "%s" type: "Input" top: "%s" input_param { shape { %s } } }\n'
                   % (n, n, " ".join("dim: %d" % d for d in shape)) for n, shape in zip(names, shapes))


X = inputs((2, 4, 6, 6))
# one net per layer type of this Caffe that OpenCV has: (prototxt, what its inputs hold)
OPENCV_HAS = {
    "AbsVal": "", "BNLL": "", "ELU": "", "Dropout": "", "MVN": "", "PReLU": "", "ReLU": "relu_param { negative_slope: 0.1 }",
    "Sigmoid": "", "Softmax": "softmax_param { axis: 3 }", "Swish": "", "TanH": "", "LRN": "",
    "BatchNorm": "", "Scale": "scale_param { bias_term: true }", "Flatten": "flatten_param { axis: 2 }",
    "Power": "power_param { power: 2 scale: 0.5 shift: 1 }", "Reshape": "reshape_param { shape { dim: 0 dim: -1 } }",
    "Convolution": "convolution_param { num_output: 4 kernel_size: 3 group: 2 dilation: 2 pad: 1 }",
    "Deconvolution": "convolution_param { num_output: 3 kernel_size: 2 stride: 2 }",
    "InnerProduct": "inner_product_param { num_output: 5 axis: 2 }",
    "Pooling": "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }",
    "Concat": (inputs((2, 4, 6, 6), (2, 3, 6, 6)), 'bottom: "y" concat_param { axis: 1 }'),
    "Eltwise": (inputs((2, 4, 6, 6), (2, 4, 6, 6)), 'bottom: "y" eltwise_param { operation: SUM coeff: 0.5 coeff: 2 }'),
    "Crop": (inputs((2, 4, 6, 6), (2, 4, 4, 4)), 'bottom: "y" crop_param { axis: 2 offset: 1 }'),
    "Slice": (X, 'top: "second" slice_param { axis: 1 slice_point: 1 }'),
    "Split": (X, 'top: "second"'),  # (each top goes through a ReLU: OpenCV names a layer's first)
    "Silence": (X, ""),
}


def one_layer_net(type_, spec):
    head, param = spec if isinstance(spec, tuple) else (X, spec)
    if type_ == "Silence":  # no top: a ReLU beside it gives the net an output
        return head + 'layer { name: "l" type: "Silence" bottom: "x" }\nlayer { name: "r" type: "ReLU" bottom: "x" top: "out" }\n'
    text = head + 'layer { name: "l" type: "%s" bottom: "x" top: "out" %s }\n' % (type_, param)
    if 'top: "second"' in param:
        text += "".join('layer { name: "relu_%s" type: "ReLU" bottom: "%s" top: "relu_%s" }\n' % (t, t, t)
                        for t in ("out", "second"))
    return text


def caffe_types():
    """This Caffe's layer types that can be in a deploy net (not data layers, not losses)."""
    return {t for t in caffe.layer_type_list() if t not in DATA_LAYERS and t not in CPP_LOSSES
            and t not in ("Accuracy", "Input") and not t.endswith("Data")}


def test_every_layer_type_opencv_has_is_in_this_table():
    assert set(OPENCV_HAS) == (caffe_types() & OPENCV_TYPES) - {"LSTM"}  # LSTM: a warning of its own


@pytest.mark.parametrize("type_", sorted(OPENCV_HAS))
def test_a_layer_type_opencv_has_gives_caffes_outputs(type_):
    text = one_layer_net(type_, OPENCV_HAS[type_])
    net = make_net(text, caffe.TEST)
    rng = np.random.default_rng(0)
    random_weights(net, rng)
    for name in net.inputs:
        net.blobs[name].data[...] = rng.normal(size=net.blobs[name].data.shape)
    net.forward()
    assert assert_opencv_agrees(text, net, {n: net.blobs[n].data for n in net.inputs}) == []


@pytest.mark.parametrize("type_", sorted(caffe_types() - OPENCV_TYPES))
def test_a_layer_type_opencv_lacks_is_named_and_fails_in_opencv(type_, tmp_path):
    text = X + 'layer { name: "l" type: "%s" bottom: "x" top: "out" }\n' % type_
    assert prototxt.opencv_warnings(parse(text)) == [
        "layer 'l' (%s, top 'out'): OpenCV's Caffe importer has no %s layer" % (type_, type_)]
    (tmp_path / "net.prototxt").write_text(text)
    opencv = cv2.dnn.readNetFromCaffe(str(tmp_path / "net.prototxt"))
    opencv.setInput(np.ones((2, 4, 6, 6), np.float32), "x")
    with pytest.raises(cv2.error, match="Can't create layer \"l\" of type \"%s\"" % type_):
        opencv.forward()


@pytest.mark.parametrize("type_", sorted(OPENCV_TYPES - set(caffe.layer_type_list())))
def test_the_types_of_caffe_forks_in_the_table_are_opencv_layers(type_, tmp_path):
    # SSD's, YOLO's, R-FCN's layers: this Caffe cannot build them, OpenCV creates them
    (tmp_path / "net.prototxt").write_text(X + 'layer { name: "l" type: "%s" bottom: "x" top: "out" }\n' % type_)
    try:
        opencv = cv2.dnn.readNetFromCaffe(str(tmp_path / "net.prototxt"))
        opencv.setInput(np.ones((2, 4, 6, 6), np.float32), "x")
        opencv.forward()
    except cv2.error as exc:  # its parameters are missing; the layer itself exists
        assert "Can't create layer" not in str(exc)


# layers OpenCV has but not with these options: (net, its inputs, what the tool says)
OPTIONS = {
    "transpose": (X + 'layer { name: "l" type: "InnerProduct" bottom: "x" top: "out" '
                      'inner_product_param { num_output: 5 transpose: true } }\n',
                  "OpenCV ignores inner_product_param.transpose and computes wrong outputs"),
    "batch_statistics": (X + 'layer { name: "l" type: "BatchNorm" bottom: "x" top: "out" '
                             'batch_norm_param { use_global_stats: false } }\n',
                         "with use_global_stats: false OpenCV computes batch statistics only for a "
                         "batch of 1 (Caffe for any batch)"),
    "clip": (X + 'layer { name: "l" type: "Clip" bottom: "x" top: "out" clip_param { min: -1 max: 1 } }\n',
             "OpenCV's caffe.proto has no clip_param, so readNetFromCaffe cannot parse the file"),
    "swish_beta": (X + 'layer { name: "l" type: "Swish" bottom: "x" top: "out" swish_param { beta: 2 } }\n',
                   "OpenCV's caffe.proto has no swish_param, so readNetFromCaffe cannot parse the file"),
    "round_mode": (X + 'layer { name: "l" type: "Pooling" bottom: "x" top: "out" '
                       'pooling_param { pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR } }\n',
                   "OpenCV's caffe.proto has no pooling_param.round_mode, so readNetFromCaffe cannot parse the file"),
    "lstm": (inputs((3, 2, 4, 1), (3, 2), names="xc")
             + 'layer { name: "steps" type: "Reshape" bottom: "x" top: "steps" reshape_param { shape { dim: 0 dim: 0 dim: -1 } } }\n'
               'layer { name: "l" type: "LSTM" bottom: "steps" bottom: "c" top: "out" recurrent_param { num_output: 5 } }\n',
             "OpenCV's LSTM layer does not take Caffe's (its weights' layout and the sequence continuation input)"),
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_an_option_opencv_does_not_take_is_named_and_opencv_fails_or_differs(option):
    text, reason = OPTIONS[option]
    warnings = prototxt.opencv_warnings(parse(text))
    assert [w.split(": ", 1)[1] for w in warnings] == [reason]
    assert warnings[0].startswith("layer 'l' (")
    net = make_net(text, caffe.TEST)
    rng = np.random.default_rng(0)
    random_weights(net, rng)
    feeds = {}
    for name in net.inputs:
        feeds[name] = net.blobs[name].data[...] = np.ones(net.blobs[name].data.shape) if name == "c" \
            else rng.normal(size=net.blobs[name].data.shape)
    net.forward()
    if option == "transpose":  # OpenCV runs it, with the weights read the other way
        got = np.asarray(opencv_outputs(text, net, feeds)["out"]).reshape(net.blobs["out"].data.shape)
        assert np.abs(got - net.blobs["out"].data).max() > 0.1
    else:
        assert_opencv_agrees(text, net, feeds)  # which expects OpenCV to fail


THRESHOLD_HEAD = X + """layer { name: "fc" type: "InnerProduct" bottom: "x" top: "fc" inner_product_param { num_output: 3 } }
layer { name: "gate" type: "Threshold" bottom: "fc" top: "gate" }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


def test_deploy_and_check_say_what_opencv_cannot_load(tmp_path, capsys):
    path = tmp_path / "net.prototxt"
    path.write_text(THRESHOLD_HEAD)
    assert cli.main(["deploy", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "gate" in [l.name for l in parse(out).layer]
    assert err == ("caffe-losses deploy: note: layer 'gate' (Threshold, top 'gate'): OpenCV's Caffe "
                   "importer has no Threshold layer\n")
    assert cli.main(["check", str(path)]) == 0
    assert capsys.readouterr() == (
        "%s: warning: layer 'gate' (Threshold, top 'gate'): OpenCV's Caffe importer has no Threshold layer\n"
        "no problems found in 1 file(s), 1 warning(s) about OpenCV's importer\n" % path, "")
    # with --outputs the deploy net leaves the gate out, and so does check's view of it
    assert cli.main(["deploy", str(path), "--outputs", "loss"]) == 0
    assert capsys.readouterr()[1] == ""


def test_the_digits_example_deploy_net_gives_caffes_outputs_in_opencv(capsys):
    assert cli.main(["deploy", os.path.join(REPO, "prototxt/digits_multilabel/train_val.prototxt"),
                     "--input-shape", "4,1,24,24"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    outputs = load_deploy(out, {"data": (4, 1, 24, 24)})  # Caffe, then OpenCV within 1e-5
    assert outputs["prob"].shape == (4, 10)
