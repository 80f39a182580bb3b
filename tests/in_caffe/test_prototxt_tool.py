"""The prototxt tool on the shapes of real model-zoo nets, in small nets of our own: several
heads with loss weights (GoogLeNet), a TRAIN-only loss (SqueezeNet), Python data layers with
several label tops (FCN), unnamed losses and custom data layers (HED), two losses of one name
(BVLC's mnist_autoencoder). Deploy nets must load in Caffe; swapped nets must give the losses
and parameter gradients of Caffe's own C++ layers."""
import ast
import os
import subprocess
import sys

import caffe
import numpy as np
import pytest
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from caffe_losses import prototxt
from caffe_losses.prototxt import PrototxtError
from nets import make_net
from opencv_runs import assert_opencv_agrees

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ToyData(caffe.Layer):
    """A Python data layer (no bottoms), as FCN's: the same random tops on every forward.

    param_str: {'seed': 0, 'tops': [[what, shape], ...]}, ``what`` one of "normal", "unit"
    (uniform in [0, 1)), "binary", "classes:C" or "classes:C:IGNORE" (some locations IGNORE).
    """

    def setup(self, bottom, top):
        spec = ast.literal_eval(self.param_str)
        rng = np.random.default_rng(spec.get("seed", 0))
        self.arrays = []
        for what, shape in spec["tops"]:
            if what == "normal":
                array = rng.normal(size=shape)
            elif what == "unit":
                array = rng.random(shape)
            elif what == "binary":
                array = rng.random(shape) < 0.3
            else:
                parts = what.split(":")
                array = rng.integers(0, int(parts[1]), size=shape)
                if len(parts) > 2:
                    array[rng.random(shape) < 0.2] = int(parts[2])
            self.arrays.append(array.astype(np.float32))
        if len(top) != len(self.arrays):
            raise ValueError("ToyData: %d tops, param_str gives %d" % (len(top), len(self.arrays)))

    def reshape(self, bottom, top):
        for i, array in enumerate(self.arrays):
            top[i].reshape(*array.shape)

    def forward(self, bottom, top):
        for i, array in enumerate(self.arrays):
            top[i].data[...] = array

    def backward(self, top, propagate_down, bottom):
        pass


def toy_data(tops, name="data", seed=0):
    """A ToyData layer: ``tops`` is [(top, what, shape)]."""
    spec = {"seed": seed, "tops": [[what, list(shape)] for _, what, shape in tops]}
    return ('layer { name: "%s" type: "Python" %s\n  python_param { module: "%s" layer: "ToyData" '
            'param_str: "%s" } }\n' % (name, " ".join('top: "%s"' % t for t, _, _ in tops), __name__,
                                       repr(spec).replace('"', '\\"')))


def data_layers(tops, type_="Data", param='data_param { source: "absent_lmdb" batch_size: 2 backend: LMDB }'):
    """A TRAIN and a TEST data layer of ``type_``, as the model zoo writes them."""
    return "".join('layer { name: "data" type: "%s" %s include { phase: %s } %s }\n'
                   % (type_, " ".join('top: "%s"' % t for t in tops), phase, param)
                   for phase in ("TRAIN", "TEST"))


def parse(text):
    return text_format.Merge(text, caffe_pb2.NetParameter())


def layer_list(net):
    return [(l.name, l.type) for l in net.layer]


def deploy_text(text, *args, **kwargs):
    return prototxt.net_text(prototxt.deploy(parse(text), *args, **kwargs))


def swapped(text, to, layer=None, every=False, params=None):
    """The swapped net's text and the notes; the swapped net must pass ``check``."""
    net = parse(text)
    notes = prototxt.swap(net, to, layer, params, every=every)
    assert prototxt.check(net) == []
    return prototxt.net_text(net), notes


def load_deploy(text, shapes, weights=None, feeds=None):
    """Load a deploy net in Caffe (TEST phase), give it ``weights`` (a caffe.Net whose layers of
    the same names have them) or random ones, fill its inputs (``feeds``, or random arrays of
    ``shapes``) and run it; OpenCV must give the same outputs (or fail where the tool warns
    that it cannot run the net). Returns the outputs."""
    net = make_net(text, caffe.TEST)
    assert sorted(net.inputs) == sorted(shapes)
    rng = np.random.default_rng(1)
    if weights is None:
        random_weights(net, rng)
    else:
        for name, blobs in net.params.items():
            for mine, theirs in zip(blobs, weights.params[name]):
                mine.data[...] = theirs.data
    for name, shape in shapes.items():
        assert net.blobs[name].data.shape == tuple(shape)
        net.blobs[name].data[...] = feeds[name] if feeds else rng.normal(size=shape)
    outputs = {k: v.copy() for k, v in net.forward().items()}
    assert_opencv_agrees(text, net, {name: net.blobs[name].data for name in shapes})
    return outputs


def random_weights(net, rng):
    """Random parameters, BatchNorm's statistics valid (a positive variance, a factor of 1)."""
    for name, layer in zip(net._layer_names, net.layers):
        blobs = layer.blobs
        for blob in blobs:
            blob.data[...] = rng.normal(scale=0.5, size=blob.data.shape)
        if layer.type == "BatchNorm":
            blobs[1].data[...] = np.abs(blobs[1].data) + 0.5
            blobs[2].data[...] = 1


def assert_same_as_cpp(cpp_text, our_text, phase, tops):
    """The two nets (the same but for the loss layers) give the same losses (``tops``: names, or
    (ours, Caffe's) pairs) and parameter gradients."""
    cpp, ours = make_net(cpp_text, phase), make_net(our_text, phase)
    assert list(cpp.params) == list(ours.params)
    for name, blobs in cpp.params.items():
        for a, b in zip(blobs, ours.params[name]):
            b.data[...] = a.data
    cpp.forward()
    cpp.backward()
    ours.forward()
    ours.backward()
    expected = {k: b.data.copy() for k, b in cpp.blobs.items()}
    got = {k: b.data.copy() for k, b in ours.blobs.items()}
    for top in tops:
        ours_top, cpp_top = top if isinstance(top, tuple) else (top, top)
        np.testing.assert_allclose(got[ours_top], expected[cpp_top], rtol=1e-5, atol=1e-6, err_msg=ours_top)
    moved = 0
    for name, blobs in cpp.params.items():
        for i, (a, b) in enumerate(zip(blobs, ours.params[name])):
            np.testing.assert_allclose(b.diff, a.diff, rtol=1e-4, atol=1e-6, err_msg="%s[%d]" % (name, i))
            moved += bool(np.abs(a.diff).max() > 0)
    assert moved > 0


def python_losses(text):
    return {l.top[0]: (l.python_param.layer, [round(w, 6) for w in l.loss_weight], l.name)
            for l in parse(text).layer if l.type == "Python" and l.python_param.module == "caffe_losses"}


def run_cli(tmp_path, text, *args):
    path = os.path.join(str(tmp_path), "net.prototxt")
    with open(path, "w") as f:
        f.write(text)
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "caffe_losses"] + [a if a != "NET" else path for a in args],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def error_line(result, command):
    assert result.returncode > 0 and not result.stdout, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("caffe-losses %s: " % command), lines[0]
    return lines[0]


# -- GoogLeNet's shape: three heads, two auxiliary ones with loss weight 0.3 -------------------

def aux_head(n, bottom, weight):
    p = "loss%d/" % n
    return """layer { name: "%(p)save_pool" type: "Pooling" bottom: "%(b)s" top: "%(p)save_pool"
  pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "%(p)sfc" type: "InnerProduct" bottom: "%(p)save_pool" top: "%(p)sfc"
  inner_product_param { num_output: 8 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.2 } } }
layer { name: "%(p)srelu_fc" type: "ReLU" bottom: "%(p)sfc" top: "%(p)sfc" }
layer { name: "%(p)sdrop_fc" type: "Dropout" bottom: "%(p)sfc" top: "%(p)sfc" dropout_param { dropout_ratio: 0.7 } }
layer { name: "%(p)sclassifier" type: "InnerProduct" bottom: "%(p)sfc" top: "%(p)sclassifier"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "%(p)sloss" type: "SoftmaxWithLoss" bottom: "%(p)sclassifier" bottom: "label" top: "%(p)sloss%(n)d"
  loss_weight: %(w)s }
layer { name: "%(p)stop-1" type: "Accuracy" bottom: "%(p)sclassifier" bottom: "label" top: "%(p)stop-1"
  include { phase: TEST } }
""" % dict(p=p, b=bottom, n=n, w=weight)


GOOGLENET_BODY = """
layer { name: "conv1/7x7_s2" type: "Convolution" bottom: "data" top: "conv1/7x7_s2"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 pad: 1 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "conv1/relu_7x7" type: "ReLU" bottom: "conv1/7x7_s2" top: "conv1/7x7_s2" }
layer { name: "pool1/3x3_s2" type: "Pooling" bottom: "conv1/7x7_s2" top: "pool1/3x3_s2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "inception_4a/output" type: "Convolution" bottom: "pool1/3x3_s2" top: "inception_4a/output"
  convolution_param { num_output: 6 kernel_size: 1 weight_filler { type: "xavier" } } }
""" + aux_head(1, "inception_4a/output", 0.3) + """
layer { name: "inception_4d/output" type: "Convolution" bottom: "inception_4a/output" top: "inception_4d/output"
  convolution_param { num_output: 6 pad: 1 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "inception_4d/relu" type: "ReLU" bottom: "inception_4d/output" top: "inception_4d/output" }
""" + aux_head(2, "inception_4d/output", 0.3) + """
layer { name: "pool5/7x7_s1" type: "Pooling" bottom: "inception_4d/output" top: "pool5/7x7_s1"
  pooling_param { pool: AVE global_pooling: true } }
layer { name: "pool5/drop_7x7_s1" type: "Dropout" bottom: "pool5/7x7_s1" top: "pool5/7x7_s1"
  dropout_param { dropout_ratio: 0.4 } }
layer { name: "loss3/classifier" type: "InnerProduct" bottom: "pool5/7x7_s1" top: "loss3/classifier"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "loss3/loss3" type: "SoftmaxWithLoss" bottom: "loss3/classifier" bottom: "label" top: "loss3/loss3"
  loss_weight: 1 }
layer { name: "loss3/top-1" type: "Accuracy" bottom: "loss3/classifier" bottom: "label" top: "loss3/top-1"
  include { phase: TEST } }
layer { name: "loss3/top-5" type: "Accuracy" bottom: "loss3/classifier" bottom: "label" top: "loss3/top-5"
  include { phase: TEST } accuracy_param { top_k: 5 } }
"""
GOOGLENET = 'name: "MiniGoogLeNet"\n' + data_layers(["data", "label"]) + GOOGLENET_BODY
GOOGLENET_TOY = 'name: "MiniGoogLeNet"\n' + toy_data([("data", "normal", (2, 3, 8, 8)),
                                                       ("label", "classes:5", (2,))]) + GOOGLENET_BODY
# the layers of the official deploy.prototxt, for the same shape
GOOGLENET_DEPLOY = [("data", "Input"), ("conv1/7x7_s2", "Convolution"), ("conv1/relu_7x7", "ReLU"),
                    ("pool1/3x3_s2", "Pooling"), ("inception_4a/output", "Convolution"),
                    ("inception_4d/output", "Convolution"), ("inception_4d/relu", "ReLU"),
                    ("pool5/7x7_s1", "Pooling"), ("pool5/drop_7x7_s1", "Dropout"),
                    ("loss3/classifier", "InnerProduct"), ("prob", "Softmax")]


@pytest.mark.parametrize("output", ["loss3/classifier", "loss3/loss3"])
def test_deploy_of_the_main_head_is_the_official_deploy(output):
    text = deploy_text(GOOGLENET, [2, 3, 8, 8], outputs=output)
    assert layer_list(parse(text)) == GOOGLENET_DEPLOY
    prob = load_deploy(text, {"data": (2, 3, 8, 8)})["prob"]
    np.testing.assert_allclose(prob.sum(axis=1), 1, rtol=1e-5)


def test_deploy_gives_every_head_its_own_probability_layer():
    net = parse(deploy_text(GOOGLENET, [2, 3, 8, 8]))
    probs = [(l.name, l.type, list(l.bottom), list(l.top)) for l in net.layer if l.type == "Softmax"]
    assert probs == [("%s_prob" % s, "Softmax", [s], ["%s_prob" % s])
                     for s in ("loss1/classifier", "loss2/classifier", "loss3/classifier")]
    names = [l.name for l in net.layer]
    assert names.index("loss1/classifier_prob") == names.index("loss1/classifier") + 1
    assert not [l for l in net.layer if l.type in ("Accuracy", "SoftmaxWithLoss", "Data")]
    outputs = load_deploy(prototxt.net_text(net), {"data": (2, 3, 8, 8)})
    assert sorted(outputs) == ["loss1/classifier_prob", "loss2/classifier_prob", "loss3/classifier_prob"]
    for prob in outputs.values():
        np.testing.assert_allclose(prob.sum(axis=1), 1, rtol=1e-5)


def test_deploy_outputs_of_two_heads_prunes_the_third(tmp_path):
    result = run_cli(tmp_path, GOOGLENET, "deploy", "NET", "--input-shape", "2,3,8,8",
                     "--outputs", "loss1/loss,loss3/classifier")
    assert result.returncode == 0, result.stderr
    names = [l.name for l in parse(result.stdout).layer]
    assert "loss1/classifier_prob" in names and "loss3/classifier_prob" in names
    assert not [n for n in names if n.startswith("loss2/")]


def test_deploy_names_an_unknown_output(tmp_path):
    line = error_line(run_cli(tmp_path, GOOGLENET, "deploy", "NET", "--input-shape", "2,3,8,8",
                              "--outputs", "loss4/classifier"), "deploy")
    assert "loss4/classifier" in line and "loss3/classifier ('loss3/loss3'" in line


def test_swap_all_keeps_each_loss_weight_and_matches_caffe():
    text, notes = swapped(GOOGLENET_TOY, "SoftmaxCrossEntropyLoss", every=True)
    assert python_losses(text) == {
        "loss1/loss1": ("SoftmaxCrossEntropyLoss", [0.3], "loss1/loss"),
        "loss2/loss2": ("SoftmaxCrossEntropyLoss", [0.3], "loss2/loss"),
        "loss3/loss3": ("SoftmaxCrossEntropyLoss", [1.0], "loss3/loss3")}
    assert notes[0].startswith("swapped 3 layers")
    # TEST: Dropout passes through, so both nets see the same numbers
    assert_same_as_cpp(GOOGLENET_TOY, text, caffe.TEST, ["loss1/loss1", "loss2/loss2", "loss3/loss3"])


def test_swap_of_several_losses_asks_which(tmp_path):
    line = error_line(run_cli(tmp_path, GOOGLENET, "swap", "NET", "--to", "SoftmaxFocalLoss"), "swap")
    assert "3 losses that SoftmaxFocalLoss can replace" in line
    assert "'loss2/loss' (SoftmaxWithLoss, top 'loss2/loss2')" in line
    assert "--layer" in line and "--all" in line
    result = run_cli(tmp_path, GOOGLENET, "swap", "NET", "--to", "SoftmaxFocalLoss", "--layer", "loss2/loss2")
    assert result.returncode == 0, result.stderr
    assert list(python_losses(result.stdout)) == ["loss2/loss2"]


# -- SqueezeNet v1.0's shape: SoftmaxWithLoss in TRAIN only, Accuracy in TEST -------------------

SQUEEZENET_BODY = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu_conv1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv10" type: "Convolution" bottom: "conv1" top: "conv10"
  convolution_param { num_output: 5 pad: 1 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "pool10" type: "Pooling" bottom: "conv10" top: "pool10" pooling_param { pool: AVE global_pooling: true } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "pool10" bottom: "label" top: "loss" include { phase: TRAIN } }
layer { name: "accuracy" type: "Accuracy" bottom: "pool10" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "accuracy_top5" type: "Accuracy" bottom: "pool10" bottom: "label" top: "accuracy_top5"
  include { phase: TEST } accuracy_param { top_k: 5 } }
"""
SQUEEZENET = data_layers(["data", "label"]) + SQUEEZENET_BODY
SQUEEZENET_TOY = toy_data([("data", "normal", (3, 3, 6, 6)), ("label", "classes:5", (3,))]) + SQUEEZENET_BODY


def test_deploy_keeps_the_head_of_a_train_only_loss():
    text = deploy_text(SQUEEZENET, [3, 3, 6, 6])
    assert layer_list(parse(text)) == [("data", "Input"), ("conv1", "Convolution"), ("relu_conv1", "ReLU"),
                                       ("conv10", "Convolution"), ("pool10", "Pooling"), ("prob", "Softmax")]
    prob = load_deploy(text, {"data": (3, 3, 6, 6)})["prob"]
    np.testing.assert_allclose(prob.sum(axis=1), 1, rtol=1e-5)


def test_swap_of_a_train_only_loss_matches_caffe():
    text, _ = swapped(SQUEEZENET_TOY, "SoftmaxCrossEntropyLoss")
    loss = [l for l in parse(text).layer if l.name == "loss"][0]
    assert [r.phase for r in loss.include] == [caffe.TRAIN] and list(loss.loss_weight) == [1.0]
    assert_same_as_cpp(SQUEEZENET_TOY, text, caffe.TRAIN, ["loss"])


# -- FCN's shape: a Python data layer; several inputs and several label tops (NYUD, SIFT Flow) --

MULTITASK_BODY = """
layer { name: "data" type: "Concat" bottom: "color" bottom: "depth" top: "data" }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 pad: 1 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "score_sem" type: "Convolution" bottom: "conv1" top: "score_sem"
  convolution_param { num_output: 5 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score_sem" bottom: "sem" top: "loss"
  loss_param { ignore_label: 255 normalize: false } }
layer { name: "score_geo" type: "Convolution" bottom: "conv1" top: "score_geo"
  convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "loss_geo" type: "SoftmaxWithLoss" bottom: "score_geo" bottom: "geo" top: "loss_geo"
  loss_param { ignore_label: 255 normalize: false } }
"""
MULTITASK_TOPS = [("color", "normal", (2, 3, 6, 6)), ("depth", "normal", (2, 1, 6, 6)),
                  ("sem", "classes:5:255", (2, 1, 6, 6)), ("geo", "classes:3:255", (2, 1, 6, 6))]
# the data layer's module is not importable here, as FCN's voc_layers is not
MULTITASK = ('layer { name: "color" type: "Python" top: "color" top: "depth" top: "sem" top: "geo"\n'
             '  python_param { module: "fcn_layers_not_installed" layer: "SegDataLayer" '
             'param_str: "{\'split\': \'train\'}" } }\n' + MULTITASK_BODY)
MULTITASK_TOY = toy_data(MULTITASK_TOPS, name="color") + MULTITASK_BODY
MULTITASK_DEPLOY = [("color", "Input"), ("depth", "Input"), ("data", "Concat"), ("conv1", "Convolution"),
                    ("relu1", "ReLU"), ("score_sem", "Convolution"), ("score_sem_prob", "Softmax"),
                    ("score_geo", "Convolution"), ("score_geo_prob", "Softmax")]


@pytest.mark.parametrize("args", [
    ["--input-shape", "2,3,6,6", "--input-shape", "2,1,6,6"],
    ["--input-shape", "depth=2,1,6,6", "--input-shape", "2,3,6,6"],
    ["--input-shape", "2,3,6,6", "--input-shape", "2,1,6,6", "--input-name", "color,depth"],
])
def test_deploy_replaces_a_python_data_layer_by_inputs(args, tmp_path):
    result = run_cli(tmp_path, MULTITASK, "deploy", "NET", *args)
    assert result.returncode == 0, result.stderr
    assert layer_list(parse(result.stdout)) == MULTITASK_DEPLOY
    outputs = load_deploy(result.stdout, {"color": (2, 3, 6, 6), "depth": (2, 1, 6, 6)})
    assert sorted(outputs) == ["score_geo_prob", "score_sem_prob"]
    np.testing.assert_allclose(outputs["score_geo_prob"].sum(axis=1), 1, rtol=1e-5)


def test_deploy_asks_for_the_shape_of_each_input(tmp_path):
    line = error_line(run_cli(tmp_path, MULTITASK, "deploy", "NET", "--input-shape", "2,3,6,6"), "deploy")
    assert "no shape for input(s) depth" in line and "color, depth" in line


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_name="color", outputs="score_sem", input_shape=[[2, 3, 6, 6]]),
     "--outputs: score_sem needs blobs that are not inputs"),
    (dict(input_name="data"), "--input-name data: layer 'data' \\(Concat, top 'data'\\) computes it"),
    (dict(input_shape=[[2, 3, 6, 6], [2, 1, 6, 6], [2, 6]]), "3 --input-shape for 2 input"),
    (dict(input_shape=[("label", [2, 6])]), "--input-shape label=...: label is not an input"),
])
def test_deploy_says_what_it_cannot_do(kwargs, message):
    kwargs.setdefault("input_shape", [[2, 3, 6, 6], [2, 1, 6, 6]])
    with pytest.raises(PrototxtError, match=message):
        prototxt.deploy(parse(MULTITASK), **kwargs)


def test_deploy_of_one_head_of_a_python_data_layer_net():
    text = deploy_text(MULTITASK, [[2, 3, 6, 6], [2, 1, 6, 6]], outputs="loss_geo")
    assert layer_list(parse(text)) == [l for l in MULTITASK_DEPLOY if "sem" not in l[0]][:-1] + [("prob", "Softmax")]
    load_deploy(text, {"color": (2, 3, 6, 6), "depth": (2, 1, 6, 6)})


def test_swap_all_with_ignore_label_and_two_label_tops_matches_caffe():
    text, _ = swapped(MULTITASK_TOY, "SoftmaxCrossEntropyLoss", every=True)
    layers = {l.name: l for l in parse(text).layer}
    for name in ("loss", "loss_geo"):
        assert ast.literal_eval(layers[name].python_param.param_str) == {"ignore_label": 255,
                                                                         "normalization": "batch_size"}
    assert_same_as_cpp(MULTITASK_TOY, text, caffe.TRAIN, ["loss", "loss_geo"])


# -- HED's shape: unnamed losses, layers of one name, a custom C++ data layer ----------------

HED_BODY = """
layer { bottom: 'data' top: 'conv1_1' name: 'conv1_1' type: "Convolution"
  convolution_param { num_output: 4 pad: 1 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { bottom: 'conv1_1' top: 'conv1_1' name: 'relu1_1' type: "ReLU" }
layer { name: 'pool1' bottom: 'conv1_1' top: 'pool1' type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: 'conv2_1' bottom: 'pool1' top: 'conv2_1' type: "Convolution"
  convolution_param { num_output: 4 pad: 1 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { bottom: 'conv2_1' top: 'conv2_1' name: 'relu2_1' type: "ReLU" }
layer { name: 'score-dsn1' type: "Convolution" bottom: 'conv1_1' top: 'score-dsn1-up'
  convolution_param { num_output: 1 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { type: "Crop" name: 'crop' bottom: 'score-dsn1-up' bottom: 'data' top: 'upscore-dsn1' }
layer { type: "SigmoidCrossEntropyLoss" bottom: "upscore-dsn1" bottom: "label" top: "dsn1_loss" loss_weight: 1 }
layer { name: 'score-dsn2' type: "Convolution" bottom: 'conv2_1' top: 'score-dsn2'
  convolution_param { num_output: 1 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { type: "Deconvolution" name: 'upsample_2' bottom: 'score-dsn2' top: 'score-dsn2-up'
  param { lr_mult: 0 decay_mult: 1 } param { lr_mult: 0 decay_mult: 0 }
  convolution_param { kernel_size: 4 stride: 2 num_output: 1 weight_filler { type: "bilinear" } } }
layer { type: "Crop" name: 'crop' bottom: 'score-dsn2-up' bottom: 'data' top: 'upscore-dsn2' }
layer { type: "SigmoidCrossEntropyLoss" bottom: "upscore-dsn2" bottom: "label" top: "dsn2_loss" loss_weight: 1 }
layer { name: "concat" bottom: "upscore-dsn1" bottom: "upscore-dsn2" top: "concat-upscore" type: "Concat"
  concat_param { concat_dim: 1 } }
layer { name: 'new-score-weighting' type: "Convolution" bottom: 'concat-upscore' top: 'upscore-fuse'
  param { lr_mult: 0.001 decay_mult: 1 } param { lr_mult: 0.002 decay_mult: 0 }
  convolution_param { num_output: 1 kernel_size: 1 weight_filler { type: "constant" value: 0.2 } } }
layer { type: "SigmoidCrossEntropyLoss" bottom: "upscore-fuse" bottom: "label" top: "fuse_loss" loss_weight: 1 }
"""
# ImageLabelmapData is HED's own C++ layer, which this Caffe does not have
HED = 'name: "MiniHED"\n' + data_layers(["data", "label"], "ImageLabelmapData",
                                        'image_data_param { source: "train_pair.lst" batch_size: 1 }') + HED_BODY
HED_TOY = 'name: "MiniHED"\n' + toy_data([("data", "normal", (1, 3, 8, 8)),
                                          ("label", "binary", (1, 1, 8, 8))]) + HED_BODY


def test_deploy_of_side_outputs_names_each_probability_after_its_score():
    text = deploy_text(HED, [1, 3, 8, 8])
    assert layer_list(parse(text)) == [
        ("data", "Input"), ("conv1_1", "Convolution"), ("relu1_1", "ReLU"), ("pool1", "Pooling"),
        ("conv2_1", "Convolution"), ("relu2_1", "ReLU"), ("score-dsn1", "Convolution"), ("crop", "Crop"),
        ("upscore-dsn1_prob", "Sigmoid"), ("score-dsn2", "Convolution"), ("upsample_2", "Deconvolution"),
        ("crop", "Crop"), ("upscore-dsn2_prob", "Sigmoid"), ("concat", "Concat"),
        ("new-score-weighting", "Convolution"), ("upscore-fuse_prob", "Sigmoid")]
    outputs = load_deploy(text, {"data": (1, 3, 8, 8)})
    assert sorted(outputs) == ["upscore-dsn1_prob", "upscore-dsn2_prob", "upscore-fuse_prob"]
    assert all(((0 < p) & (p < 1)).all() for p in outputs.values())


def test_deploy_of_the_fused_output_of_unnamed_losses():
    text = deploy_text(HED, [1, 3, 8, 8], outputs="fuse_loss")
    layers = layer_list(parse(text))
    assert [l for l in layers if l[1] == "Sigmoid"] == [("prob", "Sigmoid")] and layers[-1] == ("prob", "Sigmoid")
    assert len(layers) == 14  # every side output feeds the fused one
    assert list(load_deploy(text, {"data": (1, 3, 8, 8)})) == ["prob"]


def test_swap_of_an_unnamed_loss_by_its_top():
    text, notes = swapped(HED_TOY, "SigmoidFocalLoss", layer="dsn2_loss")
    assert list(python_losses(text)) == ["dsn2_loss"] and notes == []
    assert [l.type for l in parse(text).layer if l.top[0] in ("dsn1_loss", "fuse_loss")] == \
        ["SigmoidCrossEntropyLoss"] * 2


def test_swap_all_unnamed_losses_matches_caffe():
    text, _ = swapped(HED_TOY, "SigmoidCrossEntropyLoss", every=True)
    assert python_losses(text) == {top: ("SigmoidCrossEntropyLoss", [1.0], "")
                                   for top in ("dsn1_loss", "dsn2_loss", "fuse_loss")}
    assert_same_as_cpp(HED_TOY, text, caffe.TRAIN, ["dsn1_loss", "dsn2_loss", "fuse_loss"])


def test_swap_lists_unnamed_losses_by_their_tops():
    with pytest.raises(PrototxtError, match="3 losses that SigmoidFocalLoss can replace: unnamed "
                                         r"\(SigmoidCrossEntropyLoss, top 'dsn1_loss'\), unnamed"):
        prototxt.swap(parse(HED), "SigmoidFocalLoss")


# -- mnist_autoencoder's shape: two losses named "loss", one not a cross-entropy ---------------

AUTOENCODER_BODY = """
layer { name: "flatdata" type: "Flatten" bottom: "data" top: "flatdata" }
layer { name: "encode1" type: "InnerProduct" bottom: "data" top: "encode1"
  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 1 sparse: 3 } } }
layer { name: "encode1neuron" type: "Sigmoid" bottom: "encode1" top: "encode1neuron" }
layer { name: "decode1" type: "InnerProduct" bottom: "encode1neuron" top: "decode1"
  inner_product_param { num_output: 16 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "decode1" bottom: "flatdata"
  top: "cross_entropy_loss" loss_weight: 1 }
layer { name: "decode1neuron" type: "Sigmoid" bottom: "decode1" top: "decode1neuron" }
layer { name: "loss" type: "EuclideanLoss" bottom: "decode1neuron" bottom: "flatdata" top: "l2_error"
  loss_weight: 0 }
"""
AUTOENCODER = ('name: "MiniAutoencoder"\n'
               + "".join('layer { name: "data" type: "Data" top: "data" include { %s } '
                         'data_param { source: "absent_lmdb" batch_size: 2 backend: LMDB } }\n' % rule
                         for rule in ("phase: TRAIN", 'phase: TEST stage: "test-on-train"',
                                      'phase: TEST stage: "test-on-test"'))
               + AUTOENCODER_BODY)
AUTOENCODER_TOY = 'name: "MiniAutoencoder"\n' + toy_data([("data", "unit", (2, 1, 4, 4))]) + AUTOENCODER_BODY


def test_swap_of_a_name_two_losses_share_lists_both(tmp_path):
    line = error_line(run_cli(tmp_path, AUTOENCODER, "swap", "NET", "--to", "SigmoidFocalLoss",
                              "--layer", "loss"), "swap")
    assert "--layer loss is ambiguous" in line
    assert "'loss' (SigmoidCrossEntropyLoss, top 'cross_entropy_loss')" in line
    assert "'loss' (EuclideanLoss, top 'l2_error')" in line


def test_swap_of_a_loss_that_is_not_a_cross_entropy_says_why():
    with pytest.raises(PrototxtError, match="SigmoidFocalLoss cannot replace 'loss' \\(EuclideanLoss, "
                                         "top 'l2_error'\\): a EuclideanLoss is not a cross-entropy loss"):
        prototxt.swap(parse(AUTOENCODER), "SigmoidFocalLoss", "l2_error")


@pytest.mark.parametrize("how", [dict(layer="cross_entropy_loss"), dict(every=True), dict()])
def test_swap_of_the_cross_entropy_of_two_losses_matches_caffe(how):
    text, notes = swapped(AUTOENCODER_TOY, "SigmoidCrossEntropyLoss", **how)
    assert python_losses(text) == {"cross_entropy_loss": ("SigmoidCrossEntropyLoss", [1.0], "loss")}
    euclidean = [l for l in parse(text).layer if l.type == "EuclideanLoss"]
    assert len(euclidean) == 1 and list(euclidean[0].loss_weight) == [0.0]
    if "layer" not in how:
        assert notes == ["left 'loss' (EuclideanLoss, top 'l2_error'): a EuclideanLoss is not a "
                         "cross-entropy loss"]
    assert_same_as_cpp(AUTOENCODER_TOY, text, caffe.TRAIN, ["cross_entropy_loss", "l2_error"])


def test_deploy_of_a_sigmoid_head_whose_sigmoid_the_net_has():
    # decode1neuron is already the Sigmoid of the SigmoidCrossEntropyLoss's scores: no second one
    text = deploy_text(AUTOENCODER, [2, 1, 4, 4])
    assert layer_list(parse(text)) == [
        ("data", "Input"), ("flatdata", "Flatten"), ("encode1", "InnerProduct"), ("encode1neuron", "Sigmoid"),
        ("decode1", "InnerProduct"), ("decode1neuron", "Sigmoid")]
    outputs = load_deploy(text, {"data": (2, 1, 4, 4)})
    assert ((0 < outputs["decode1neuron"]) & (outputs["decode1neuron"] < 1)).all()
    pruned = deploy_text(AUTOENCODER, [2, 1, 4, 4], outputs="cross_entropy_loss")
    assert [n for n, _ in layer_list(parse(pruned))] == ["data", "encode1", "encode1neuron", "decode1",
                                                         "decode1neuron"]
    with pytest.raises(PrototxtError, match="--outputs loss is ambiguous"):
        prototxt.deploy(parse(AUTOENCODER), [2, 1, 4, 4], outputs="loss")


# -- nets with nothing to swap, a loss per phase, a loss kept for display -------------------------

def test_swap_says_when_there_is_nothing_to_swap(tmp_path):
    only_l2 = AUTOENCODER.replace('type: "SigmoidCrossEntropyLoss"', 'type: "EuclideanLoss"')
    line = error_line(run_cli(tmp_path, only_l2, "swap", "NET", "--to", "SigmoidFocalLoss"), "swap")
    assert line.startswith("caffe-losses swap: nothing to swap: no loss here that SigmoidFocalLoss can replace")
    assert "top 'cross_entropy_loss'" in line and "top 'l2_error'" in line
    no_loss = 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 } } }\n'
    line = error_line(run_cli(tmp_path, no_loss, "swap", "NET", "--to", "SigmoidFocalLoss"), "swap")
    assert line == "caffe-losses swap: nothing to swap: the net has no loss layer"


def test_swap_all_leaves_losses_of_other_labels():
    mixed = AUTOENCODER.replace('type: "EuclideanLoss"', 'type: "SoftmaxWithLoss"')
    net = parse(mixed)
    notes = prototxt.swap(net, "SigmoidFocalLoss", every=True)
    assert [l.type for l in net.layer if l.name == "loss"] == ["Python", "SoftmaxWithLoss"]
    assert notes == ["left 'loss' (SoftmaxWithLoss, top 'l2_error'): it takes sparse labels and "
                     "SigmoidFocalLoss dense ones"]


def test_swap_replaces_the_train_and_the_test_copy_of_a_loss():
    text = SQUEEZENET_TOY.replace("include { phase: TRAIN } }", "include { phase: TRAIN } }\n"
                                  'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "pool10" bottom: "label" '
                                  'top: "loss" include { phase: TEST } loss_param { normalization: BATCH_SIZE } }')
    for layer in (None, "loss"):
        out, _ = swapped(text, "SoftmaxCrossEntropyLoss", layer)
        losses = [l for l in parse(out).layer if l.name == "loss"]
        assert [(l.type, l.include[0].phase) for l in losses] == [("Python", caffe.TRAIN), ("Python", caffe.TEST)]
        assert_same_as_cpp(text, out, caffe.TEST, ["loss"])


def test_check_accepts_a_swapped_loss_kept_for_display():
    text, _ = swapped(SQUEEZENET_TOY.replace("top: \"loss\" include", "top: \"loss\" loss_weight: 0 include"),
                      "SoftmaxCrossEntropyLoss")
    assert python_losses(text)["loss"][1] == [0.0]


# -- BVLC's imagenet_val: a Softmax the net already has; pascal_finetune: a loss without a top -----

HAS_PROB = data_layers(["data", "label"]) + """
layer { name: "fc8" type: "InnerProduct" bottom: "data" top: "fc8" inner_product_param { num_output: 4 } }
layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }
layer { name: "accuracy" type: "Accuracy" bottom: "prob" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8" bottom: "label" top: "loss" }
"""


@pytest.mark.parametrize("outputs", [None, "fc8", "prob"])
def test_deploy_keeps_the_softmax_a_net_has_and_adds_none(outputs):
    text = deploy_text(HAS_PROB, [2, 6], outputs=outputs)
    assert layer_list(parse(text)) == [("data", "Input"), ("fc8", "InnerProduct"), ("prob", "Softmax")]
    assert list(load_deploy(text, {"data": (2, 6)})) == ["prob"]


TOPLESS = toy_data([("data", "normal", (3, 6)), ("label", "classes:4", (3,))]) + """
layer { name: "fc8_pascal" type: "InnerProduct" bottom: "data" top: "fc8_pascal"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8_pascal" bottom: "label" }
"""


def test_swap_gives_a_loss_without_a_top_one():
    text, notes = swapped(TOPLESS, "SoftmaxCrossEntropyLoss")
    assert python_losses(text) == {"loss": ("SoftmaxCrossEntropyLoss", [1.0], "loss")}
    assert notes == ["gave it the top 'loss' (it had none, which only Caffe's own losses may)"]
    assert_same_as_cpp(TOPLESS, text, caffe.TRAIN, [("loss", "(automatic)")])
