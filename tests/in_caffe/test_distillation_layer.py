"""DistillationLoss in real Caffe nets: its gradient through net.backward() against finite
differences, every normalization, a sequence net (axis 2), ignore_label, the loss weight,
no gradient for the teacher (force_backward), the errors at net construction, and what the
prototxt tool does with it. (The function against references and PyTorch, and its
kernels: tests/host/.)"""
import caffe
import numpy as np
import pytest
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from caffe_losses import prototxt
from caffe_losses.functional import distillation_loss
from nets import input_layer, loss_net, make_net, numeric_net_gradient, python_loss, run

LAYER = "DistillationLoss"
IGNORE = 255


def scores(seed, shape):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1.5, size=shape).astype(np.float32) for _ in range(2)]


@pytest.mark.parametrize("activation,shape,axis", [("softmax", (4, 3), 1), ("sigmoid", (4, 3), 1),
                                                   ("softmax", (3, 2, 4), 2)])  # T x N x C
def test_backward_is_the_gradient_of_the_reported_loss_times_the_loss_weight(activation, shape,
                                                                              axis):
    student, teacher = scores(1, shape)
    params = {"activation": activation, "temperature": 2.0, "axis": axis}
    net = loss_net(LAYER, {"student": student, "teacher": teacher}, repr(params), loss_weight=0.7)
    value = run(net)
    expected, grad = distillation_loss(student, teacher, **params)
    assert value == pytest.approx(expected, rel=1e-5) and value > 0.05  # the top: the loss
    np.testing.assert_allclose(net.blobs["student"].diff, 0.7 * grad, rtol=1e-5, atol=1e-8)
    numeric = 0.7 * numeric_net_gradient(net, "student", step=1e-2)
    np.testing.assert_allclose(net.blobs["student"].diff, numeric, rtol=3e-2, atol=5e-4)
    assert not net.blobs["teacher"].diff.any()


HEADS = ["valid", "full", "batch_size", "none"]


@pytest.fixture(scope="module")
def heads_net():
    """One net, a head per normalization and form, on N x C x H x W scores with labels
    that ignore some locations (softmax) or elements (sigmoid)."""
    shape = (2, 3, 2, 2)
    rng = np.random.default_rng(2)
    student, teacher = scores(2, shape)
    sparse = rng.integers(0, 3, size=(2, 1, 2, 2)).astype(np.float32)
    sparse[0, 0, 1, 1] = IGNORE
    dense = (rng.random(shape) < 0.5).astype(np.float32)
    dense[1, :, 0, 0] = IGNORE  # a whole location
    dense[0, 1, 1, 1] = IGNORE  # one element of another
    text = "force_backward: true\n" + "".join(
        input_layer(name, a.shape) for name, a in (("student", student), ("teacher", teacher),
                                                   ("sparse", sparse), ("dense", dense)))
    for activation, labels in (("softmax", "sparse"), ("sigmoid", "dense")):
        for normalization in HEADS:
            params = {"activation": activation, "normalization": normalization,
                      "ignore_label": IGNORE, "temperature": 3.0}
            text += python_loss(LAYER, ["student", "teacher", labels], repr(params),
                                top="%s_%s" % (activation, normalization))
    net = make_net(text)
    for name, array in (("student", student), ("teacher", teacher), ("sparse", sparse),
                        ("dense", dense)):
        net.blobs[name].data[...] = array
    net.forward()
    net.backward()
    return net, student, teacher, {"softmax": sparse, "sigmoid": dense}


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_every_normalization_with_ignored_labels(heads_net, activation):
    net, student, teacher, labels = heads_net
    grads = 0
    for normalization in HEADS:
        expected, grad = distillation_loss(student, teacher, labels[activation],
                                           activation=activation, normalization=normalization,
                                           ignore_label=IGNORE, temperature=3.0)
        top = float(net.blobs["%s_%s" % (activation, normalization)].data)
        assert top == pytest.approx(expected, rel=1e-5)
        grads = grads + grad
    divisors = [expected / float(net.blobs["%s_%s" % (activation, n)].data) for n in HEADS]
    # ("none", the last, is the sum) valid: the 7 counted locations of 8 (softmax: one
    # ignored; sigmoid: one location wholly ignored, one element of another), full: 8,
    # batch_size: 2
    np.testing.assert_allclose(divisors, [7, 8, 2, 1], rtol=1e-5)
    if activation == "softmax":  # (the net's student diff sums both forms' heads)
        _, other = zip(*[distillation_loss(student, teacher, labels["sigmoid"],
                                           activation="sigmoid", normalization=n,
                                           ignore_label=IGNORE, temperature=3.0) for n in HEADS])
        np.testing.assert_allclose(net.blobs["student"].diff, grads + sum(other), rtol=1e-4,
                                   atol=1e-7)


def test_teacher_and_labels_get_no_gradient_with_force_backward(heads_net):
    net = heads_net[0]
    assert np.abs(net.blobs["student"].diff).max() > 1e-2
    for name in ("teacher", "sparse", "dense"):
        assert not net.blobs[name].diff.any(), name


SEQUENCE = """force_backward: true
layer { name: "data" type: "Input" top: "features" top: "label"
  input_param { shape { dim: 3 dim: 2 dim: 5 } shape { dim: 3 dim: 2 } } }
layer { name: "student" type: "InnerProduct" bottom: "features" top: "student"
  inner_product_param { num_output: 4 axis: 2 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "teacher" type: "InnerProduct" bottom: "features" top: "teacher"
  param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }
  inner_product_param { num_output: 4 axis: 2 weight_filler { type: "gaussian" std: 2 }
                        bias_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "student" bottom: "label" top: "loss"
  softmax_param { axis: 2 } loss_param { ignore_label: 255 } }
layer { name: "distill" type: "Python" bottom: "student" bottom: "teacher" bottom: "label"
  top: "distill" loss_weight: 2
  python_param { module: "caffe_losses" layer: "DistillationLoss"
                 param_str: "{'axis': 2, 'ignore_label': 255, 'normalization': 'batch_size'}" } }
"""


def test_a_sequence_net_with_axis_2_trains_the_student_only():
    # T x N x C scores of two InnerProducts over the time steps, the student's own loss beside
    caffe.set_random_seed(3)
    net = make_net(SEQUENCE)
    rng = np.random.default_rng(3)
    net.blobs["features"].data[...] = rng.normal(size=(3, 2, 5))
    label = rng.integers(0, 4, size=(3, 2)).astype(np.float32)
    label[1, 0] = IGNORE
    net.blobs["label"].data[...] = label
    net.forward()
    net.backward()
    student, teacher = net.blobs["student"].data.copy(), net.blobs["teacher"].data.copy()
    # batch_size: T * N = 6 time steps; the ignored one counts in the divisor, not the sum
    counted = np.ones((3, 2), bool)
    counted[1, 0] = False
    expected, grad = distillation_loss(student[counted], teacher[counted], normalization="none")
    assert float(net.blobs["distill"].data) == pytest.approx(expected / 6, rel=1e-5)
    # the student's diff: SoftmaxWithLoss's (over the 5 counted steps) + 2 x the distillation's
    p = np.exp(student) / np.exp(student).sum(axis=2, keepdims=True)
    own = (p - np.eye(4)[np.where(counted, label, 0).astype(int)]) * counted[..., None] / 5
    distill = np.zeros_like(student)
    distill[counted] = grad / 6
    np.testing.assert_allclose(net.blobs["student"].diff, own + 2 * distill, rtol=1e-4, atol=1e-7)
    # no gradient reaches the teacher's weights: its top's diff stays zero
    assert not net.blobs["teacher"].diff.any()
    assert not net.params["teacher"][0].diff.any() and not net.params["teacher"][1].diff.any()
    assert np.abs(net.params["student"][0].diff).max() > 1e-3


# -- errors at net construction ----------------------------------------------------------

def build(shapes, param_str="{}"):
    text = "".join(input_layer(name, shape) for name, shape in shapes.items())
    return make_net(text + python_loss(LAYER, list(shapes), param_str))


@pytest.mark.parametrize("shapes,param_str,message", [
    ({"student": (4, 3), "teacher": (4, 5)}, "{}",
     r"DistillationLoss: teacher scores have shape \(4, 5\) but the student scores have shape "
     r"\(4, 3\); give both nets' scores of one shape \(size-1 axes aside\)"),
    ({"student": (4, 3), "teacher": (4, 3), "label": (4,)}, "{}",
     r"DistillationLoss: labels are given but ignore_label is not set: the labels only mark "
     r"what to skip\. Set ignore_label, or drop the labels"),
    ({"student": (4, 3), "teacher": (4, 3), "label": (4, 3)}, "{'ignore_label': 255}",
     r"DistillationLoss: labels have shape \(4, 3\) but student scores of shape \(4, 3\) "
     r"\(class axis 1\) take one class index per location"),
    ({"student": (4, 3)}, "{}",
     r"DistillationLoss: takes 2 or 3 bottoms \(student scores, teacher scores, \[labels\]\), "
     r"got 1"),
    ({"student": (4, 3), "teacher": (4, 3)}, "{'temperature': 0}",
     r"DistillationLoss: param_str key 'temperature' must be > 0, got 0"),
])
def test_errors_at_net_construction_name_the_layer_and_the_fix(shapes, param_str, message):
    with pytest.raises(ValueError, match=message):
        build(shapes, param_str)


def test_teacher_scores_of_n_c_1_1_fit_a_student_of_n_c():
    student, teacher = scores(4, (4, 3))
    net = loss_net(LAYER, {"student": student, "teacher": teacher.reshape(4, 3, 1, 1)})
    assert run(net) == pytest.approx(distillation_loss(student, teacher)[0], rel=1e-5)


# -- the prototxt tool ---------------------------------------------------------------------

DISTILL_NET = """name: "distill"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 6 } shape { dim: 2 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 3 } }
layer { name: "teacher_fc" type: "InnerProduct" bottom: "data" top: "teacher_fc"
  param { lr_mult: 0 } inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
layer { name: "distill" type: "Python" bottom: "fc" bottom: "teacher_fc" top: "distill"
  loss_weight: 1 python_param { module: "caffe_losses" layer: "DistillationLoss" } }
"""


def parse(text):
    return text_format.Merge(text, caffe_pb2.NetParameter())


def test_deploy_drops_the_distillation_head():
    # the student's own loss head gives the deploy net its Softmax; the distillation loss
    # adds nothing: the deploy net of the net without it
    without = parse(DISTILL_NET)
    del without.layer[-1]
    assert prototxt.deploy(parse(DISTILL_NET)) == prototxt.deploy(without)
    out = prototxt.deploy(parse(DISTILL_NET), outputs="loss")
    assert [(l.name, l.type) for l in out.layer] == [("data", "Input"), ("fc", "InnerProduct"),
                                                    ("prob", "Softmax")]


def test_swap_leaves_a_distillation_loss_and_cannot_make_one():
    net = parse(DISTILL_NET)
    notes = prototxt.swap(net, "SoftmaxFocalLoss")
    assert [l.python_param.layer for l in net.layer if l.type == "Python"] == [
        "SoftmaxFocalLoss", "DistillationLoss"]
    assert notes == ["left 'distill' (DistillationLoss, top 'distill'): it reads a teacher's "
                     "scores, not labels"]
    with pytest.raises(prototxt.PrototxtError, match="--to must be one of ") as info:
        prototxt.swap(parse(DISTILL_NET), "DistillationLoss")
    assert "DistillationLoss" not in str(info.value)
    assert prototxt.check(net) == []
