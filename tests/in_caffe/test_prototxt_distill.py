"""caffe-losses distill on nets shaped like other people's: a VGG-style teacher (Dropout in
place and not, BatchNorm + Scale, shared weights, a final Softmax) whose Input is named
otherwise than the student's data, an RGB-D teacher of two inputs ending in an in-place
Sigmoid, a V1 teacher with a V1 caffemodel of 4-D blobs, a sequence student (T x N x C,
axis 2) whose loss is chosen by stage. The renamed weights load and give the teacher's own
outputs bit for bit; `caffe train` on the distill net leaves the teacher's blobs as they
were; every bad input is one line, a non-zero exit, and nothing written."""
import ast
import os
import re
import subprocess

import caffe
import numpy as np
import pytest
from caffe.proto import caffe_pb2

from caffe_losses import cli, prototxt
from caffe_losses.prototxt import PrototxtError
from nets import make_net
from test_prototxt_tool import layer_list, parse, random_weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VGG_TEACHER = """name: "MiniVGG"
layer { name: "image" type: "Input" top: "image" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "stem" type: "Convolution" bottom: "image" top: "stem"
  convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "conv1" type: "Convolution" bottom: "stem" top: "conv1" param { name: "shared_w" } param { name: "shared_b" }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" param { name: "shared_w" } param { name: "shared_b" }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "pool" type: "Pooling" bottom: "conv2" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool" top: "fc6" inner_product_param { num_output: %(fc7)d } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7" inner_product_param { num_output: %(fc7)d } }
layer { name: "drop7" type: "Dropout" bottom: "fc7" top: "drop7" }
layer { name: "score" type: "InnerProduct" bottom: "drop7" top: "score" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }
"""
# a student of the usual train_val shape; its layers share names with the teacher's
STUDENT = """name: "MiniStudent"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 dim: %(side)d dim: %(side)d } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "score" type: "InnerProduct" bottom: "pool" top: "score"
  inner_product_param { num_output: %(classes)d weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "score" bottom: "label" top: "accuracy" include { phase: TEST } }
"""
VGG_DISTILLED = [("data", "DummyData"), ("teacher_stem", "Convolution"), ("teacher_conv1", "Convolution"),
                 ("teacher_bn1", "BatchNorm"), ("teacher_scale1", "Scale"), ("teacher_relu1", "ReLU"),
                 ("teacher_conv2", "Convolution"), ("teacher_pool", "Pooling"), ("teacher_fc6", "InnerProduct"),
                 ("teacher_relu6", "ReLU"), ("teacher_fc7", "InnerProduct"), ("teacher_score", "InnerProduct"),
                 ("conv1", "Convolution"), ("relu1", "ReLU"), ("pool", "Pooling"), ("score", "InnerProduct"),
                 ("loss", "SoftmaxWithLoss"), ("distill_loss", "Python"), ("accuracy", "Accuracy")]


def student(side=8, classes=5):
    return STUDENT % dict(side=side, classes=classes)


def write(folder, name, text):
    path = os.path.join(str(folder), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def trained(folder, name, text, seed=0):
    """A deploy net with random weights (BatchNorm's statistics valid), saved: (caffe.Net, path)."""
    net = make_net(text, caffe.TEST)
    random_weights(net, np.random.default_rng(seed))
    path = os.path.join(str(folder), name)
    net.save(path)
    return net, path


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    """The VGG teacher (deploy net, caffe.Net, caffemodel) distilled into the student by the
    command: (folder, teacher net, distill net path, weights path)."""
    folder = tmp_path_factory.mktemp("vgg")
    teacher_text = VGG_TEACHER % dict(fc7=8)
    teacher, weights = trained(folder, "teacher.caffemodel", teacher_text)
    paths = [write(folder, "student.prototxt", student()), write(folder, "teacher.prototxt", teacher_text), weights]
    result = subprocess.run(["python3", "-m", "caffe_losses", "distill"] + paths + ["-o", str(folder / "distill.prototxt")],
                            cwd=str(folder), env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith("wrote %s (11 teacher layers beside the student's, DistillationLoss "
                                    "'distill_loss'" % (folder / "distill.prototxt")), result.stdout
    return folder, teacher, str(folder / "distill.prototxt"), str(folder / "distill.caffemodel")


def params_of(layer):
    return [(p.lr_mult, p.decay_mult, p.name) for p in layer.param]


def test_the_teacher_stands_frozen_beside_the_student(vgg):
    _, _, net_path, weights_path = vgg
    net = prototxt.read_net(net_path)
    assert layer_list(net) == VGG_DISTILLED
    layers = {l.name: l for l in net.layer}
    assert list(layers["teacher_stem"].bottom) == ["data"]  # the student's data top feeds the Input's place
    assert list(layers["teacher_score"].bottom) == ["teacher_fc7"]  # drop7 gone, its reader rewired
    assert not layers["teacher_stem"].convolution_param.HasField("weight_filler")
    frozen = (0.0, 0.0, "")
    assert params_of(layers["teacher_stem"]) == [frozen] * 2
    assert params_of(layers["teacher_conv1"]) == [(0.0, 0.0, "teacher_shared_w"), (0.0, 0.0, "teacher_shared_b")]
    assert params_of(layers["teacher_conv2"]) == params_of(layers["teacher_conv1"])
    assert params_of(layers["teacher_bn1"]) == [frozen] * 3 and layers["teacher_bn1"].batch_norm_param.use_global_stats
    assert [params_of(layers["teacher_" + n]) for n in ("scale1", "fc6", "fc7", "score")] == [[frozen] * 2] * 4
    assert params_of(layers["teacher_relu1"]) == [] and params_of(layers["conv1"]) == []
    teacher = [l for l in net.layer if l.name.startswith("teacher_")] + [layers["distill_loss"]]
    assert all([(r.phase, list(r.stage)) for r in l.include] == [(caffe.TRAIN, [])] for l in teacher)
    loss = layers["distill_loss"]
    assert list(loss.bottom) == ["score", "teacher_score"] and list(loss.top) == ["distill_loss"]
    assert list(loss.loss_weight) == [1.0] and loss.python_param.layer == "DistillationLoss"
    # SoftmaxWithLoss normalizes by the valid locations: the distillation loss as well
    assert ast.literal_eval(loss.python_param.param_str) == {"temperature": 4.0, "activation": "softmax",
                                                             "normalization": "valid"}
    weights = caffe_pb2.NetParameter()
    with open(weights_path, "rb") as f:
        weights.ParseFromString(f.read())
    assert [(l.name, len(l.blobs)) for l in weights.layer] == [
        ("teacher_stem", 2), ("teacher_conv1", 2), ("teacher_bn1", 3), ("teacher_scale1", 2), ("teacher_conv2", 2),
        ("teacher_fc6", 2), ("teacher_fc7", 2), ("teacher_score", 2)]


def test_the_renamed_weights_give_the_teachers_own_scores_bit_for_bit(vgg):
    _, teacher, net_path, weights_path = vgg
    net = caffe.Net(net_path, caffe.TRAIN)
    net.copy_from(weights_path)
    net.forward()
    teacher.blobs["image"].reshape(*net.blobs["data"].data.shape)
    teacher.blobs["image"].data[...] = net.blobs["data"].data
    teacher.forward()
    assert np.array_equal(net.blobs["teacher_score"].data, teacher.blobs["score"].data)
    assert np.abs(net.blobs["teacher_score"].data).max() > 0.1
    assert float(net.blobs["distill_loss"].data) > 0
    test_net = caffe.Net(net_path, caffe.TEST)  # the student alone, as it is evaluated
    assert not [name for name in test_net.blobs if name.startswith("teacher_")]


def test_caffe_train_moves_the_student_and_leaves_the_teacher_as_trained(vgg, tmp_path):
    folder, _, net_path, weights_path = vgg
    solver = write(tmp_path, "solver.prototxt", 'net: "%s"\nbase_lr: 0.5\nlr_policy: "fixed"\nmomentum: 0.9\n'
                   'weight_decay: 0.01\nmax_iter: 4\ndisplay: 1\nsnapshot_prefix: "%s"\nsolver_mode: CPU\n'
                   % (net_path, tmp_path / "snap"))
    start = caffe.Net(write(tmp_path, "student.prototxt", student()), caffe.TRAIN)
    start.save(str(tmp_path / "student.caffemodel"))  # Caffe's -weights takes a list: teacher, student
    result = subprocess.run(["caffe", "train", "-solver", solver, "-weights",
                             weights_path + "," + str(tmp_path / "student.caffemodel")],
                            env=dict(os.environ, PYTHONPATH=REPO, GLOG_minloglevel="0", GLOG_logtostderr="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    losses = [float(v) for v in re.findall(r"Train net output #\d+: distill_loss = (\S+)", result.stdout)]
    assert len(losses) == 4 and all(np.isfinite(losses)) and losses[0] > 0
    after = caffe.Net(net_path, str(tmp_path / "snap_iter_4.caffemodel"), caffe.TRAIN)
    before = caffe.Net(net_path, weights_path, caffe.TRAIN)
    for name in [n for n in after.params if n.startswith("teacher_")]:
        for i, blob in enumerate(after.params[name]):
            assert np.array_equal(blob.data, before.params[name][i].data), (name, i)
    moved = [n for n in ("conv1", "score") if not np.array_equal(after.params[n][0].data, start.params[n][0].data)]
    assert moved == ["conv1", "score"]


RGBD_TEACHER = """name: "RGBDTeacher"
layer { name: "rgb" type: "Input" top: "rgb" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "depth" type: "Input" top: "depth" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
layer { name: "rgbd" type: "Concat" bottom: "rgb" bottom: "depth" top: "rgbd" }
layer { name: "fc" type: "InnerProduct" bottom: "rgbd" top: "fc" inner_product_param { num_output: 3 } }
layer { name: "sigmoid" type: "Sigmoid" bottom: "fc" top: "fc" }
"""
# a multi-label student that reads the color image alone; its loss ignores label -1
RGBD_STUDENT = """layer { name: "data" type: "DummyData" top: "color" top: "depth" top: "tags"
  dummy_data_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } shape { dim: 2 dim: 1 dim: 4 dim: 4 } shape { dim: 2 dim: 3 }
    data_filler { type: "gaussian" } data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "fc" type: "InnerProduct" bottom: "color" top: "fc" inner_product_param { num_output: 3 } }
layer { name: "loss" type: "Python" bottom: "fc" bottom: "tags" top: "loss" loss_weight: 1
  python_param { module: "caffe_losses" layer: "SigmoidCrossEntropyLoss" param_str: "{'ignore_label': -1}" } }
"""


def test_two_teacher_inputs_are_fed_by_the_data_tops_named(tmp_path):
    _, weights = trained(tmp_path, "rgbd.caffemodel", RGBD_TEACHER)
    net, renamed, notes = prototxt.distill(parse(RGBD_STUDENT), parse(RGBD_TEACHER), weights,
                                           data_top="color,depth")
    assert notes == []
    layers = {l.name: l for l in net.layer}
    assert list(layers["teacher_rgbd"].bottom) == ["color", "depth"]
    assert "teacher_sigmoid" not in layers  # the in-place Sigmoid after the scores goes
    loss = layers["distill_loss"]
    assert list(loss.bottom) == ["fc", "teacher_fc", "tags"]  # the labels, for the ignored ones
    assert ast.literal_eval(loss.python_param.param_str) == {
        "temperature": 4.0, "activation": "sigmoid", "normalization": "batch_size", "ignore_label": -1}
    assert [l.name for l in renamed.layer] == ["teacher_fc"]
    built = make_net(prototxt.net_text(net), caffe.TRAIN)
    built.copy_from(save(renamed, tmp_path / "renamed.caffemodel"))
    built.forward()
    # the teacher's own net up to its scores, with its own weights
    scores = make_net(RGBD_TEACHER.replace(RGBD_TEACHER.splitlines()[-1], ""), caffe.TEST)
    scores.copy_from(weights)
    scores.blobs["rgb"].reshape(2, 3, 4, 4)
    scores.blobs["depth"].reshape(2, 1, 4, 4)
    scores.forward(rgb=built.blobs["color"].data, depth=built.blobs["depth"].data)
    assert np.array_equal(built.blobs["teacher_fc"].data, scores.blobs["fc"].data)


def save(message, path):
    with open(str(path), "wb") as f:
        f.write(message.SerializeToString())
    return str(path)


# a V1 deploy net of the model zoo's age: input fields, blobs_lr, a shared weight by name
V1_TEACHER = """name: "V1Teacher"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" blobs_lr: 1 blobs_lr: 2
  convolution_param { num_output: 2 kernel_size: 3 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "drop" type: DROPOUT bottom: "conv" top: "conv" dropout_param { dropout_ratio: 0.5 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "conv" top: "fc" param: "fc_w" inner_product_param { num_output: 5 } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
"""


def v1_caffemodel(net, path):
    """``net``'s weights as a V1 caffemodel: ``layers`` entries, blobs in the 4-D fields."""
    old = caffe_pb2.NetParameter(name="V1Teacher")
    for name, blobs in net.params.items():
        layer = old.layers.add(name=name)
        for blob in blobs:
            shape = (1,) * (4 - blob.data.ndim) + blob.data.shape
            layer.blobs.add(num=shape[0], channels=shape[1], height=shape[2], width=shape[3],
                            data=blob.data.ravel().tolist())
    return save(old, path)


def test_a_v1_teacher_and_its_v1_caffemodel_give_its_scores(tmp_path):
    teacher, _ = trained(tmp_path, "unused.caffemodel", V1_TEACHER)
    old = v1_caffemodel(teacher, tmp_path / "v1.caffemodel")
    net, renamed, _ = prototxt.distill(parse(student()), parse(V1_TEACHER), old)
    assert [(l.name, l.type) for l in net.layer if l.name.startswith("teacher_")] == [
        ("teacher_conv", "Convolution"), ("teacher_relu", "ReLU"), ("teacher_fc", "InnerProduct")]
    assert params_of({l.name: l for l in net.layer}["teacher_fc"]) == [(0.0, 0.0, "teacher_fc_w"), (0.0, 0.0, "")]
    built = make_net(prototxt.net_text(net), caffe.TRAIN)
    built.copy_from(save(renamed, tmp_path / "renamed.caffemodel"))
    built.forward()
    reference = make_net(V1_TEACHER.replace('layers { name: "prob"', "# "), caffe.TEST)
    reference.copy_from(old)  # Caffe reads the V1 caffemodel itself
    reference.blobs["data"].reshape(*built.blobs["data"].data.shape)
    reference.forward(data=built.blobs["data"].data)
    assert np.array_equal(built.blobs["teacher_fc"].data, reference.blobs["fc"].data)


# a sequence student (T x N x C, class axis 2) with a head per stage, as multi-task nets choose them
SEQUENCE_STUDENT = """layer { name: "data" type: "DummyData" top: "frames" top: "label" top: "tags"
  dummy_data_param { shape { dim: 3 dim: 2 dim: 4 } shape { dim: 3 dim: 2 } shape { dim: 3 dim: 2 dim: 5 } } }
layer { name: "fc" type: "InnerProduct" bottom: "frames" top: "score" inner_product_param { num_output: 5 axis: 2 } }
layer { name: "cls_loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "cls_loss"
  softmax_param { axis: 2 } include { stage: "cls" } }
layer { name: "tag_loss" type: "SigmoidCrossEntropyLoss" bottom: "score" bottom: "tags" top: "tag_loss"
  include { stage: "tags" } }
"""
SEQUENCE_TEACHER = """layer { name: "frames" type: "Input" top: "frames" input_param { shape { dim: 3 dim: 1 dim: 4 } } }
layer { name: "hidden" type: "InnerProduct" bottom: "frames" top: "hidden" inner_product_param { num_output: 6 axis: 2 } }
layer { name: "score" type: "InnerProduct" bottom: "hidden" top: "score" inner_product_param { num_output: 5 axis: 2 } }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" softmax_param { axis: 2 } }
"""


@pytest.fixture(scope="module")
def sequence_weights(tmp_path_factory):
    return trained(tmp_path_factory.mktemp("sequence"), "teacher.caffemodel", SEQUENCE_TEACHER)[1]


@pytest.mark.parametrize("stage, params, notes", [
    ("cls", {"temperature": 2.0, "activation": "softmax", "axis": 2, "normalization": "valid"}, []),
    ("tags", {"temperature": 2.0, "activation": "sigmoid", "normalization": "batch_size"},
     ["the teacher's net ends in Softmax but the distillation uses a sigmoid, as the student's loss does "
      "(--activation to choose)"])])
def test_the_stage_chooses_the_students_loss_and_with_it_the_distillation(stage, params, notes, sequence_weights,
                                                                         tmp_path):
    net, _, got = prototxt.distill(parse(SEQUENCE_STUDENT), parse(SEQUENCE_TEACHER), sequence_weights,
                                   temperature=2.0, loss_weight=0.5, stages=[stage])
    assert got == notes
    loss = [l for l in net.layer if l.name == "distill_loss"][0]
    assert ast.literal_eval(loss.python_param.param_str) == params and list(loss.loss_weight) == [0.5]
    assert [(r.phase, list(r.stage)) for r in loss.include] == [(caffe.TRAIN, [stage])]
    hidden = [l for l in net.layer if l.name == "teacher_hidden"][0]
    assert [(r.phase, list(r.stage)) for r in hidden.include] == [(caffe.TRAIN, [stage])]
    built = caffe.Net(write(tmp_path, "net.prototxt", prototxt.net_text(net)), caffe.TRAIN, stages=[stage])
    built.forward()
    assert np.isfinite(float(built.blobs["distill_loss"].data))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The nets and caffemodels the bad inputs are made of, by name."""
    folder = tmp_path_factory.mktemp("inputs")
    texts = {"student": student(), "student4": student(classes=4), "student10": student(side=10),
             "vgg": VGG_TEACHER % dict(fc7=8), "rgbd": RGBD_TEACHER, "rgbd_student": RGBD_STUDENT,
             "sequence": SEQUENCE_STUDENT, "sequence_teacher": SEQUENCE_TEACHER,
             "clash": student().replace('name: "relu1"', 'name: "teacher_conv1"'),
             "two_outputs": VGG_TEACHER % dict(fc7=8) + 'layer { name: "aux" type: "InnerProduct" bottom: "pool" '
                                                          'top: "aux" inner_product_param { num_output: 2 } }\n'}
    paths = {name: write(folder, name + ".prototxt", text) for name, text in texts.items()}
    for name, text in [("vgg", texts["vgg"]), ("vgg6", VGG_TEACHER % dict(fc7=6)), ("rgbd", RGBD_TEACHER),
                       ("student", texts["student"]), ("sequence_teacher", SEQUENCE_TEACHER)]:
        paths[name + ".caffemodel"] = trained(folder, name + ".caffemodel", text)[1]
    return paths


BAD_INPUTS = {
    "no matching data top": (["rgbd_student", "rgbd", "rgbd.caffemodel"], 1,
                             "caffe-losses distill: no matching data top: the teacher's input 'rgb' is no data top "
                             "of the student (color, depth, tags); give --data-top, one student blob per teacher "
                             "input (rgb, depth)"),
    "scores of two shapes": (["student4", "vgg", "vgg.caffemodel"], 1,
                             "caffe-losses distill: the student's scores 'score' are 4 x 4 but the teacher's "
                             "'score' are 4 x 5: distillation needs one shape; name others with "
                             "--student-scores/--teacher-scores"),
    "a caffemodel blob of another shape": (["student", "vgg", "vgg6.caffemodel"], 1,
                                           "caffe-losses distill: the teacher's caffemodel does not fit the teacher's "
                                           "net: layer 'fc6' (InnerProduct) blob 0 is 6 x 64 there, 8 x 64 in the net"),
    "a caffemodel of another net": (["student", "vgg", "student.caffemodel"], 1,
                                    "caffe-losses distill: the teacher's caffemodel does not fit the teacher's net: "
                                    "it has no weights for layer 'stem' (Convolution), which Caffe would leave at "
                                    "random values"),
    "data the teacher was not made for": (["student10", "vgg", "vgg.caffemodel"], 1,
                                          "caffe-losses distill: the student's data (data 4 x 3 x 10 x 10) give the "
                                          "teacher's layer 'fc6' parameters of 8 x 100, 8, its own inputs (data 1 x 3 "
                                          "x 8 x 8) 8 x 64, 8: feed it data of its inputs' shapes"),
    "a prototxt for the caffemodel": (["student", "vgg", "vgg"], 2,
                                      "caffe-losses: %(vgg)s holds no weights: it is a text file (a prototxt?), not "
                                      "a .caffemodel"),
    "no loss head without the stage": (["sequence", "sequence_teacher", "sequence_teacher.caffemodel"], 1,
                                       "caffe-losses distill: no cross-entropy loss in the student's TRAIN net: give "
                                       "--student-scores and --activation (or --stage/--level, as caffe train's)"),
    "a prefixed name the student has": (["clash", "vgg", "vgg.caffemodel"], 1,
                                        "caffe-losses distill: the teacher's 'conv1' becomes 'teacher_conv1', which "
                                        "the student has too: choose another --prefix (now 'teacher_')"),
    "a teacher of two outputs": (["student", "two_outputs", "vgg.caffemodel"], 1,
                                 "caffe-losses distill: the teacher's net has 2 outputs (prob, aux): name its scores "
                                 "with --teacher-scores"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_a_bad_input_is_one_line_an_exit_code_and_nothing_written(case, files, tmp_path, capsys):
    names, code, expected = BAD_INPUTS[case]
    out = tmp_path / "out"
    out.mkdir()
    args = [files[n] if n in files else n for n in names]
    got = cli.main(["distill"] + args + ["-o", str(out / "distill.prototxt")])
    stdout, stderr = capsys.readouterr()
    assert (got, stdout, stderr) == (code, "", expected % files + "\n")
    assert os.listdir(str(out)) == []


def test_an_output_folder_that_is_not_there_stops_before_any_work(files, tmp_path, capsys):
    target = str(tmp_path / "nowhere" / "distill.prototxt")
    got = cli.main(["distill", files["student"], files["vgg"], files["vgg.caffemodel"], "-o", str(tmp_path / "d.prototxt"),
                    "--weights-out", target])
    assert (got, capsys.readouterr()) == (2, ("", "caffe-losses: --weights-out %s: there is no folder %s\n"
                                               % (target, os.path.dirname(target))))
    assert os.listdir(str(tmp_path)) == []


def test_the_library_raises_a_prototxt_error_and_prints_nothing(files, capsys):
    with pytest.raises(PrototxtError) as error:
        prototxt.distill(prototxt.read_net(files["student4"]), prototxt.read_net(files["vgg"]), files["vgg.caffemodel"])
    assert str(error.value).startswith("the student's scores 'score' are 4 x 4 but the teacher's 'score' are 4 x 5")
    assert capsys.readouterr() == ("", "")
