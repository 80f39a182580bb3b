"""deploy and swap on nets whose layers are chosen by the net state, as `caffe train -stage S
-level N` chooses them (NetStateRule stage, not_stage, min_level), and on sequence nets
(T x N x C scores, `axis: 2`) whose inputs a DummyData layer shapes. Each deploy net is built
in Caffe and compared with the training net built in the same state."""
import caffe
import numpy as np
import pytest

from caffe_losses import cli, prototxt
from caffe_losses.prototxt import PrototxtError
from nets import make_net
from test_prototxt_tool import assert_same_as_cpp, layer_list, load_deploy, parse, python_losses, toy_data

# A two-task net whose heads are chosen by stage, as multi-task nets trained one task at a time
# are: the classifier in stage "cls", the edge map in stage "seg"; an auxiliary classifier from
# level 1 on; Accuracy in TEST only.
STAGED_BODY = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 pad: 1 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool_cls" type: "Pooling" bottom: "conv1" top: "pool_cls"
  pooling_param { pool: AVE global_pooling: true } include { stage: "cls" } }
layer { name: "cls_score" type: "InnerProduct" bottom: "pool_cls" top: "cls_score"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } include { stage: "cls" } }
layer { name: "cls_loss" type: "SoftmaxWithLoss" bottom: "cls_score" bottom: "label" top: "cls_loss"
  include { stage: "cls" } }
layer { name: "cls_accuracy" type: "Accuracy" bottom: "cls_score" bottom: "label" top: "cls_accuracy"
  include { phase: TEST stage: "cls" } }
layer { name: "seg_score" type: "Convolution" bottom: "conv1" top: "seg_score"
  convolution_param { num_output: 1 kernel_size: 1 weight_filler { type: "xavier" } }
  include { stage: "seg" } }
layer { name: "seg_loss" type: "SigmoidCrossEntropyLoss" bottom: "seg_score" bottom: "edges" top: "seg_loss"
  include { stage: "seg" } }
layer { name: "aux_score" type: "InnerProduct" bottom: "conv1" top: "aux_score"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } include { min_level: 1 } }
layer { name: "aux_loss" type: "SoftmaxWithLoss" bottom: "aux_score" bottom: "label" top: "aux_loss"
  loss_weight: 0.3 include { min_level: 1 } }
"""
STAGED_TOPS = [("data", "normal", (2, 3, 6, 6)), ("label", "classes:5", (2,)), ("edges", "binary", (2, 1, 6, 6))]
STAGED = 'name: "Staged"\n' + toy_data(STAGED_TOPS) + STAGED_BODY


def deploy_of(text, **kwargs):
    notes = []
    out = prototxt.deploy(parse(text), notes=notes, **kwargs)
    return prototxt.net_text(out), notes


def build_in_state(text, stages=(), level=0, tmp_path=None):
    """The training net in the TEST phase of a state, as Caffe builds it."""
    path = tmp_path / "train.prototxt"
    path.write_text(text)
    return caffe.Net(str(path), caffe.TEST, level=level, stages=list(stages))


def assert_deploy_matches(text, deploy_text, expected, stages=(), level=0, tmp_path=None):
    """The deploy net, given the training net's weights and inputs, puts out ``expected``
    ({output: function of the training net's blobs}) as Caffe computes them."""
    train = build_in_state(text, stages, level, tmp_path)
    train.forward()
    feeds = {name: train.blobs[name].data.copy() for l in parse(deploy_text).layer if l.type == "Input"
             for name in l.top}
    out = load_deploy(deploy_text, {k: v.shape for k, v in feeds.items()},
                      weights=train, feeds=feeds)
    assert sorted(out) == sorted(expected)
    for name, compute in expected.items():
        np.testing.assert_allclose(out[name], compute(train.blobs), rtol=1e-5, atol=1e-6, err_msg=name)


def softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_deploy_without_the_stage_its_heads_need_names_the_stages():
    with pytest.raises(PrototxtError) as error:
        prototxt.deploy(parse(STAGED), [2, 3, 6, 6])
    message = str(error.value)
    assert message.startswith("no loss head in the TEST net without a stage or level: ")
    assert "--stage cls gives cls_score ('cls_loss' (SoftmaxWithLoss, top 'cls_loss'))" in message
    assert "--stage seg gives seg_score ('seg_loss' (SigmoidCrossEntropyLoss, top 'seg_loss'))" in message
    assert "--level 1 gives aux_score" in message


@pytest.mark.parametrize("stages, level, layers, expected", [
    (["cls"], 0, ["pool_cls", "cls_score", "prob"], {"prob": lambda b: softmax(b["cls_score"].data)}),
    (["seg"], 0, ["seg_score", "prob"], {"prob": lambda b: sigmoid(b["seg_score"].data)}),
    (["cls", "seg"], 1, ["pool_cls", "cls_score", "cls_score_prob", "seg_score", "seg_score_prob",
                         "aux_score", "aux_score_prob"],
     {"cls_score_prob": lambda b: softmax(b["cls_score"].data), "aux_score_prob": lambda b: softmax(b["aux_score"].data),
      "seg_score_prob": lambda b: sigmoid(b["seg_score"].data)}),
])
def test_deploy_of_a_stage_is_the_net_caffe_builds_in_it(stages, level, layers, expected, tmp_path):
    text, notes = deploy_of(STAGED, input_shape=[2, 3, 6, 6], stages=stages, level=level)
    assert [name for name, _ in layer_list(parse(text))] == ["data", "conv1", "relu1"] + layers
    assert notes == []
    assert_deploy_matches(STAGED, text, expected, stages, level, tmp_path)


def test_deploy_of_the_default_state_notes_the_heads_of_other_states():
    text, notes = deploy_of(STAGED.replace('include { stage: "seg" }', ""), input_shape=[2, 3, 6, 6])
    assert [n for n, t in layer_list(parse(text)) if t in ("Softmax", "Sigmoid")] == ["prob"]
    assert notes == ["more heads in other net states: --stage cls gives cls_score ('cls_loss' "
                     "(SoftmaxWithLoss, top 'cls_loss')); --level 1 gives aux_score ('aux_loss' "
                     "(SoftmaxWithLoss, top 'aux_loss')) (the deploy net is the default state's)"]


# DIGITS' shape: one net file for training, validation and deployment; the loss is left out of
# stage "deploy", which has a Softmax of its own
DIGITS_STYLE = toy_data([("data", "normal", (2, 4)), ("label", "classes:3", (2,))]) + """
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" exclude { stage: "deploy" } }
layer { name: "accuracy" type: "Accuracy" bottom: "fc" bottom: "label" top: "accuracy" include { stage: "val" } }
layer { name: "softmax" type: "Softmax" bottom: "fc" top: "softmax" include { stage: "deploy" } }
"""


@pytest.mark.parametrize("stages, output", [([], "prob"), (["deploy"], "softmax")])
def test_deploy_of_a_digits_style_net_with_and_without_its_deploy_stage(stages, output, tmp_path):
    text, _ = deploy_of(DIGITS_STYLE, input_shape=[2, 4], stages=stages)
    assert layer_list(parse(text)) == [("data", "Input"), ("fc", "InnerProduct"), (output, "Softmax")]
    assert_deploy_matches(DIGITS_STYLE, text, {output: lambda b: softmax(b["fc"].data)}, stages, 0, tmp_path)


def test_cli_stage_and_level_options(tmp_path, capsys):
    path = tmp_path / "net.prototxt"
    path.write_text(STAGED)
    assert cli.main(["deploy", str(path), "--input-shape", "2,3,6,6", "--stage", "seg", "--level", "1"]) == 0
    out, err = capsys.readouterr()
    assert [n for n, t in layer_list(parse(out)) if t in ("Softmax", "Sigmoid")] == ["seg_score_prob", "aux_score_prob"]
    assert err == ""
    assert cli.main(["deploy", str(path), "--input-shape", "2,3,6,6"]) == 1
    out, err = capsys.readouterr()
    assert not out and err.startswith("caffe-losses deploy: no loss head in the TEST net without a stage")
    assert err.count("\n") == 1


def test_swap_of_one_stage_leaves_the_other_stages_losses():
    net = parse(STAGED)
    notes = prototxt.swap(net, "SoftmaxFocalLoss", stages=["cls"])
    assert python_losses(prototxt.net_text(net)) == {"cls_loss": ("SoftmaxFocalLoss", [1.0], "cls_loss")}
    assert notes == []
    with pytest.raises(PrototxtError, match="3 losses that SoftmaxFocalLoss can replace"):
        prototxt.swap(parse(STAGED), "SoftmaxFocalLoss", stages=["cls", "seg"], level=1)


# one loss, written once per stage: its copies never meet in one net, as a TRAIN and a TEST copy
PER_STAGE = toy_data([("data", "normal", (3, 4)), ("label", "classes:3", (3,))]) + """
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" include { stage: "a" } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" include { stage: "b" }
  loss_param { normalization: BATCH_SIZE } }
"""


@pytest.mark.parametrize("layer", [None, "loss"])
def test_swap_replaces_the_copies_of_a_loss_for_each_stage(layer):
    net = parse(PER_STAGE)
    notes = prototxt.swap(net, "SoftmaxCrossEntropyLoss", layer)
    assert len(notes) == 1 and notes[0].startswith("swapped 2 layers")
    losses = [l for l in net.layer if l.name == "loss"]
    assert [(l.python_param.layer, l.include[0].stage[0]) for l in losses] == [
        ("SoftmaxCrossEntropyLoss", "a"), ("SoftmaxCrossEntropyLoss", "b")]
    assert "'normalization': 'batch_size'" in losses[1].python_param.param_str


# A sequence net (as captioning and activity-recognition nets): T x N x C scores with the class
# axis 2, inputs and labels shaped by DummyData, a loss without a top
SEQUENCE_BODY = """
layer { name: "embed" type: "InnerProduct" bottom: "steps" top: "embed"
  inner_product_param { num_output: 8 axis: 2 weight_filler { type: "xavier" } } }
layer { name: "tanh" type: "TanH" bottom: "embed" top: "embed" }
layer { name: "predict" type: "InnerProduct" bottom: "embed" top: "predict"
  inner_product_param { num_output: 5 axis: 2 weight_filler { type: "xavier" } } }
layer { name: "cross_entropy" type: "SoftmaxWithLoss" bottom: "predict" bottom: "label"
  softmax_param { axis: 2 } loss_param { ignore_label: -1 } }
"""
SEQUENCE = """name: "Sequence"
layer { name: "data" type: "DummyData" top: "steps" top: "cont" top: "label"
  dummy_data_param { shape { dim: 4 dim: 2 dim: 6 } shape { dim: 4 dim: 2 } shape { dim: 4 dim: 2 }
    data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: 1 }
    data_filler { type: "constant" value: 2 } } }
layer { name: "silence" type: "Silence" bottom: "cont" }
""" + SEQUENCE_BODY
SEQUENCE_TOY = toy_data([("steps", "normal", (4, 2, 6)), ("cont", "binary", (4, 2)),
                         ("label", "classes:5:-1", (4, 2))]) + 'layer { name: "silence" type: "Silence" bottom: "cont" }\n' \
    + SEQUENCE_BODY
# the same with 4-D frames (T x N x F x 1, as from an HDF5 file) reshaped to T x N x F
SEQUENCE_4D = """name: "Sequence4D"
layer { name: "data" type: "DummyData" top: "frames" top: "label"
  dummy_data_param { shape { dim: 4 dim: 2 dim: 6 dim: 1 } shape { dim: 4 dim: 2 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "steps" type: "Reshape" bottom: "frames" top: "steps" reshape_param { shape { dim: 0 dim: 0 dim: -1 } } }
""" + SEQUENCE_BODY


def test_deploy_of_a_sequence_net_takes_the_shape_dummy_data_gives(tmp_path):
    text, _ = deploy_of(SEQUENCE)
    net = parse(text)
    assert layer_list(net) == [("steps", "Input"), ("embed", "InnerProduct"), ("tanh", "TanH"),
                               ("predict", "InnerProduct"), ("prob", "Softmax")]
    assert list(net.layer[0].input_param.shape[0].dim) == [4, 2, 6]
    assert net.layer[-1].softmax_param.axis == 2
    # a 3-D input: cv2's Python binding cannot feed it (load_deploy checks that OpenCV fails)
    assert prototxt.opencv_warnings(net) == [
        "layer 'steps' (Input, top 'steps'): OpenCV's Python binding turns a 3-D numpy array into a "
        "2-D image with channels, so cv2's setInput cannot feed this input (C++ can)"]
    assert_deploy_matches(SEQUENCE, text, {"prob": lambda b: softmax(b["predict"].data, axis=2)}, tmp_path=tmp_path)


def test_deploy_of_a_sequence_net_of_4d_frames_runs_in_opencv_as_in_caffe(tmp_path):
    text, _ = deploy_of(SEQUENCE_4D)
    assert layer_list(parse(text)) == [("frames", "Input"), ("steps", "Reshape"), ("embed", "InnerProduct"),
                                       ("tanh", "TanH"), ("predict", "InnerProduct"), ("prob", "Softmax")]
    assert prototxt.opencv_warnings(parse(text)) == []
    assert_deploy_matches(SEQUENCE_4D, text, {"prob": lambda b: softmax(b["predict"].data, axis=2)},
                          tmp_path=tmp_path)


def test_swap_of_a_sequence_loss_carries_its_axis_and_matches_caffe():
    net = parse(SEQUENCE_TOY)
    notes = prototxt.swap(net, "SoftmaxCrossEntropyLoss")
    assert notes == ["gave it the top 'cross_entropy' (it had none, which only Caffe's own losses may)"]
    assert python_losses(prototxt.net_text(net)) == {"cross_entropy": ("SoftmaxCrossEntropyLoss", [1.0],
                                                                       "cross_entropy")}
    assert prototxt.check(net) == []
    assert_same_as_cpp(SEQUENCE_TOY, prototxt.net_text(net), caffe.TRAIN, [("cross_entropy", "(automatic)")])


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_name="nosuch"), "--input-name nosuch: the net has no blob nosuch; the data-layer tops: "
                                "steps, cont, label"),
    (dict(input_name="steps,label"), "--input-name label: no layer of the deploy net reads it \\(they read steps\\)"),
    (dict(input_name="label"), "the deploy net would have no layer besides its input\\(s\\) label"),
    (dict(outputs="nosuch"), "--outputs nosuch: no head has that score blob"),
])
def test_deploy_refuses_inputs_and_outputs_the_net_does_not_have(kwargs, message):
    with pytest.raises(PrototxtError, match=message):
        prototxt.deploy(parse(SEQUENCE), **kwargs)


def test_cli_deploy_of_an_unknown_input_writes_nothing(tmp_path, capsys):
    path, out = tmp_path / "net.prototxt", tmp_path / "deploy.prototxt"
    path.write_text(SEQUENCE)
    assert cli.main(["deploy", str(path), "--input-name", "nosuch", "-o", str(out)]) == 1
    assert capsys.readouterr().err.startswith("caffe-losses deploy: --input-name nosuch: the net has no blob")
    assert not out.exists()
