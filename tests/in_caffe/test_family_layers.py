"""Every loss layer in real Caffe nets: gradients through net.backward(), parity with
Caffe's C++ loss layers, and the documented errors."""
import caffe
import numpy as np
import pytest
from caffe.proto import caffe_pb2
from google.protobuf import text_format

import caffe_losses
import reference
from nets import input_layer, loss_net, make_net, numeric_net_gradient, python_loss, run
from caffe_losses import ParamError, prototxt


def sparse_labels(rng, n, c, spatial, ignore=None):
    labels = rng.integers(0, c, size=(n, 1) + spatial if spatial else (n,)).astype(np.float32)
    if ignore is not None:
        labels[rng.random(labels.shape) < 0.25] = ignore
    return labels


def inputs_for(layer, shape, rng, ignore=None):
    """Scores (or probabilities) and labels fitting ``layer``."""
    n, c, spatial = shape[0], shape[1], tuple(shape[2:])
    scores = rng.normal(0, 1.5, size=shape).astype(np.float32)
    if layer in ("SoftmaxCrossEntropyLoss", "SoftmaxFocalLoss"):
        return scores, sparse_labels(rng, n, c, spatial, ignore)
    labels = (rng.random(shape) < 0.4).astype(np.float32)
    if layer == "CrossEntropyLoss":
        scores = rng.uniform(0.05, 0.95, size=shape).astype(np.float32)
    if ignore is not None:
        labels[rng.random(shape) < 0.2] = ignore
    return scores, labels


GRADIENT_CASES = [
    ("MultiLabelSoftmaxLoss", "{'target': 'count', 'normalization': 'valid'}", None),
    ("SigmoidCrossEntropyLoss", "{}", None),
    ("SigmoidCrossEntropyLoss", "{'ignore_label': -1, 'pos_weight': 2.5, 'normalization': 'valid'}", -1),
    ("SigmoidCrossEntropyLoss", "{'pos_weight': [1, 2, 3], 'class_weight': [0.5, 1, 2]}", None),
    ("SigmoidFocalLoss", "{}", None),
    ("SigmoidFocalLoss", "{'gamma': 0.5, 'alpha': None, 'ignore_label': -1, 'normalization': 'positive'}", -1),
    ("SoftmaxCrossEntropyLoss", "{}", None),
    ("SoftmaxCrossEntropyLoss", "{'ignore_label': 255, 'class_weight': [0.5, 2, 1], 'label_smoothing': 0.1}", 255),
    ("SoftmaxFocalLoss", "{'gamma': 2, 'alpha': [0.25, 0.5, 1.0], 'ignore_label': 255}", 255),
    ("CrossEntropyLoss", "{'mode': 'categorical'}", None),
    ("CrossEntropyLoss", "{'mode': 'binary', 'ignore_label': -1, 'normalization': 'valid'}", -1),
]


@pytest.mark.parametrize("layer,param_str,ignore", GRADIENT_CASES)
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2)])
def test_backward_matches_finite_differences_with_loss_weight(layer, param_str, ignore, shape):
    rng = np.random.default_rng(20)
    scores, labels = inputs_for(layer, shape, rng, ignore)
    net = loss_net(layer, {"score": scores, "label": labels}, param_str, loss_weight=0.7)
    loss = run(net)
    assert np.isfinite(loss) and loss > 0
    analytic = net.blobs["score"].diff.copy()
    step = 1e-3 if layer == "CrossEntropyLoss" else 1e-2
    numeric = 0.7 * numeric_net_gradient(net, "score", step=step)
    np.testing.assert_allclose(analytic, numeric, rtol=3e-2, atol=5e-4)
    assert np.abs(analytic).max() > 1e-2
    assert not net.blobs["label"].diff.any()


@pytest.mark.parametrize("layer", ["SigmoidCrossEntropyLoss", "SigmoidFocalLoss", "CrossEntropyLoss"])
def test_per_element_weights(layer):
    rng = np.random.default_rng(21)
    shape = (2, 3, 2, 2)
    scores, labels = inputs_for(layer, shape, rng)
    weights = rng.uniform(0, 2, size=shape).astype(np.float32)
    param = "{'mode': 'binary'}" if layer == "CrossEntropyLoss" else "{}"
    net = loss_net(layer, {"score": scores, "label": labels, "weight": weights}, param, loss_weight=2)
    run(net)
    analytic = net.blobs["score"].diff.copy()
    step = 1e-3 if layer == "CrossEntropyLoss" else 1e-2
    np.testing.assert_allclose(analytic, 2 * numeric_net_gradient(net, "score", step=step),
                               rtol=3e-2, atol=5e-4)
    assert not net.blobs["weight"].diff.any()


# -- parity with Caffe's C++ layers --------------------------------------------

def cpp_net(layer_type, shapes, loss_param=""):
    text = "force_backward: true\n" + "".join(input_layer(n, s) for n, s in shapes.items())
    text += ('layer { name: "loss" type: "%s" %s top: "loss" %s }\n'
             % (layer_type, " ".join('bottom: "%s"' % n for n in shapes),
                "loss_param { %s }" % loss_param if loss_param else ""))
    return make_net(text)


def relative_difference(ours, theirs):
    """Largest difference relative to the largest magnitude of Caffe's values.

    For a gradient blob this is the float32-meaningful measure: an element near
    zero (sigmoid(x) - 1 for large x) carries the absolute rounding error of
    its neighbours in both implementations, so element-wise ratios measure noise.
    """
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-30))


# -- Caffe's loss layers swapped by the prototxt tool: the same loss and gradient -------
# One net per blob shape and class axis, with a head of the C++ layer for each way of
# normalizing (loss_param), each with and without an ignore_label, all with a loss
# weight of 2.5 and a scores blob of their own; the tool (prototxt.swap, as `caffe-losses
# swap --all`) makes our layer of every head; the two nets then run on the same inputs.

LOSS_PARAMS = ["", "normalization: VALID", "normalization: BATCH_SIZE", "normalization: FULL",
               "normalization: NONE", "normalize: true", "normalize: false"]
IGNORE = 255


def heads_net(layer_type, shape, labels_shape, axis=None):
    """The C++ net: Inputs score_0, score_1, ... (one per head), label and label_ignore."""
    text = "force_backward: true\n" + input_layer("label", labels_shape)
    text += input_layer("label_ignore", labels_shape)
    heads = [(loss_param, ignore) for loss_param in LOSS_PARAMS for ignore in (False, True)]
    for i, (loss_param, ignore) in enumerate(heads):
        text += input_layer("score_%d" % i, shape)
        loss_param += " ignore_label: %d" % IGNORE if ignore else ""
        text += ('layer { name: "loss_%d" type: "%s" bottom: "score_%d" bottom: "%s" '
                 'top: "loss_%d" loss_weight: 2.5 %s loss_param { %s } }\n'
                 % (i, layer_type, i, "label_ignore" if ignore else "label", i,
                    "" if axis is None else "softmax_param { axis: %d }" % axis, loss_param))
    return text, len(heads)


def swapped(text, to, params=None):
    net = text_format.Merge(text, caffe_pb2.NetParameter())
    prototxt.swap(net, to, params=params, every=True)
    assert not [l for l in net.layer if l.type != "Input" and l.type != "Python"]
    return make_net(text_format.MessageToString(net))


def same_loss_and_gradient(nets, heads, scores, labels, ignored):
    """Each head of our nets gives the loss and gradient of the C++ net's (nets[0])."""
    results = []
    for net in nets:
        net.blobs["label"].data[...] = labels
        net.blobs["label_ignore"].data[...] = ignored
        for i in range(heads):
            net.blobs["score_%d" % i].data[...] = scores
        out = net.forward()
        net.backward()
        results.append([(float(out["loss_%d" % i]), net.blobs["score_%d" % i].diff.copy())
                        for i in range(heads)])
    theirs = results[0]
    for ours in results[1:]:
        for i, ((loss, grad), (cpp_loss, cpp_grad)) in enumerate(zip(ours, theirs)):
            assert relative_difference(loss, cpp_loss) <= 1e-5, (i, loss, cpp_loss)
            assert relative_difference(grad, cpp_grad) <= 1e-5, i
            assert np.abs(cpp_grad).max() > 0


@pytest.mark.parametrize("shape,axis,labels_shape", [
    ((6, 5), 1, (6,)), ((2, 5, 3, 3), 1, (2, 1, 3, 3)),
    ((3, 4, 5), 2, (3, 4)),  # a sequence net: T x N x C scores, T x N labels
    ((2, 3, 2, 5), 3, (2, 3, 2)), ((3, 4, 5), -1, (3, 4, 1))])
def test_softmax_with_loss_swapped_gives_its_loss_and_gradient(shape, axis, labels_shape):
    # SoftmaxCrossEntropyLoss and SoftmaxFocalLoss with gamma 0; BATCH_SIZE divides by
    # outer_num, the product of the dimensions before the axis, as Caffe's
    text, heads = heads_net("SoftmaxWithLoss", shape, labels_shape, axis)
    nets = [make_net(text), swapped(text, "SoftmaxCrossEntropyLoss"),
            swapped(text, "SoftmaxFocalLoss", {"gamma": 0.0})]
    rng = np.random.default_rng(28)
    classes = shape[axis]
    for _ in range(2):
        labels = rng.integers(0, classes, labels_shape).astype(np.float32)
        ignored = np.where(rng.random(labels_shape) < 0.3, IGNORE, labels).astype(np.float32)
        scores = rng.normal(0, 4, shape).astype(np.float32)
        same_loss_and_gradient(nets, heads, scores, labels, ignored)


@pytest.mark.parametrize("shape", [(6, 5), (2, 5, 3, 3), (3, 4, 5)])
def test_sigmoid_cross_entropy_swapped_gives_its_loss_and_gradient(shape):
    # (Caffe's layer has no axis: BATCH_SIZE divides by shape(0), ours by the dimensions
    # before axis 1, the same)
    text, heads = heads_net("SigmoidCrossEntropyLoss", shape, shape)
    text = text.replace("ignore_label: %d" % IGNORE, "ignore_label: -1")
    nets = [make_net(text), swapped(text, "SigmoidCrossEntropyLoss")]
    rng = np.random.default_rng(29)
    for _ in range(2):
        labels = (rng.random(shape) < 0.4).astype(np.float32)
        ignored = np.where(rng.random(shape) < 0.3, -1, labels).astype(np.float32)
        scores = rng.normal(0, 4, shape).astype(np.float32)
        same_loss_and_gradient(nets, heads, scores, labels, ignored)


def test_cross_entropy_matches_multinomial_logistic_loss_for_one_hot_targets():
    rng = np.random.default_rng(24)
    n, c = 8, 6
    probs = rng.dirichlet(np.ones(c), size=n).astype(np.float32)
    classes = rng.integers(0, c, size=n)
    ours = loss_net("CrossEntropyLoss", {"score": probs, "label": np.eye(c, dtype=np.float32)[classes]})
    theirs = cpp_net("MultinomialLogisticLoss", {"score": (n, c), "label": (n,)})
    theirs.blobs["score"].data[...] = probs
    theirs.blobs["label"].data[...] = classes
    assert relative_difference(run(ours), run(theirs)) <= 1e-5
    assert relative_difference(ours.blobs["score"].diff, theirs.blobs["score"].diff) <= 1e-5


@pytest.mark.parametrize("pair", [
    ("SigmoidFocalLoss", "{'gamma': 0, 'alpha': None, 'ignore_label': -1}",
     "SigmoidCrossEntropyLoss", "{'ignore_label': -1}"),
    ("SoftmaxFocalLoss", "{'gamma': 0, 'alpha': None, 'ignore_label': -1}",
     "SoftmaxCrossEntropyLoss", "{'ignore_label': -1}"),
])
def test_focal_losses_reduce_to_cross_entropy(pair):
    focal, focal_param, plain, plain_param = pair
    rng = np.random.default_rng(25)
    scores, labels = inputs_for(focal, (3, 4, 2, 2), rng, ignore=-1)
    a = loss_net(focal, {"score": scores, "label": labels}, focal_param)
    b = loss_net(plain, {"score": scores, "label": labels}, plain_param)
    assert run(a) == pytest.approx(run(b), rel=1e-6)
    np.testing.assert_allclose(a.blobs["score"].diff, b.blobs["score"].diff, rtol=1e-5, atol=1e-9)


def test_softmax_focal_value_in_a_net_matches_reference():
    rng = np.random.default_rng(26)
    scores, labels = inputs_for("SoftmaxFocalLoss", (3, 4, 2, 2), rng, ignore=255)
    net = loss_net("SoftmaxFocalLoss", {"score": scores, "label": labels},
                   "{'gamma': 1.5, 'alpha': 0.25, 'ignore_label': 255}")
    expected = reference.softmax_focal_loss(scores.astype(np.float64), labels.reshape(3, 2, 2),
                                            ignore_label=255, gamma=1.5, alpha=0.25)
    assert run(net) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("layer", ["SigmoidCrossEntropyLoss", "SigmoidFocalLoss", "SoftmaxCrossEntropyLoss",
                                   "SoftmaxFocalLoss", "MultiLabelSoftmaxLoss"])
def test_huge_scores_stay_finite(layer):
    rng = np.random.default_rng(27)
    scores, labels = inputs_for(layer, (4, 5), rng)
    scores = (np.sign(scores) * 1e4).astype(np.float32)
    net = loss_net(layer, {"score": scores, "label": labels})
    assert np.isfinite(run(net))
    assert np.isfinite(net.blobs["score"].diff).all()


# -- errors --------------------------------------------------------------------

def build(layer, scores_shape, labels_shape, param_str="", weights_shape=None):
    shapes = [("score", scores_shape), ("label", labels_shape)]
    if weights_shape:
        shapes.append(("weight", weights_shape))
    return make_net("".join(input_layer(n, s) for n, s in shapes)
                    + python_loss(layer, [n for n, _ in shapes], param_str))


@pytest.mark.parametrize("layer,param_str,message", [
    ("SigmoidCrossEntropyLoss", "{'pos_weight': [1, 2]}",
     "key 'pos_weight' has 2 values but the scores have 3 classes"),
    ("SigmoidCrossEntropyLoss", "{'class_weight': [1, -2, 1]}", "key 'class_weight' must be a number or a list"),
    ("SigmoidFocalLoss", "{'alpha': 1.5}", "key 'alpha' must be <= 1, got 1.5"),
    ("SigmoidFocalLoss", "{'gamma': -1}", "key 'gamma' must be >= 0, got -1"),
    ("SigmoidFocalLoss", "{'normalization': 'positives'}", "'positive'"),
    ("SoftmaxCrossEntropyLoss", "{'label_smoothing': 2}", "key 'label_smoothing' must be <= 1"),
    ("SoftmaxCrossEntropyLoss", "{'ignore_label': 'none'}", "key 'ignore_label' must be an integer or None"),
    ("SoftmaxCrossEntropyLoss", "{'normalization': 'positive'}", "key 'normalization' must be one of"),
    ("SoftmaxFocalLoss", "{'alpha': [0.5, 0.5]}", "key 'alpha' has 2 values but the scores have 3 classes"),
    ("CrossEntropyLoss", "{'mode': 'binary', 'eps': 0}", "key 'eps' must be > 0"),
    ("CrossEntropyLoss", "{'ignore_label': -1}", "'ignore_label' applies to mode 'binary' only"),
    ("CrossEntropyLoss", "{'mdoe': 'binary'}", "unknown param_str key 'mdoe'. Did you mean 'mode'?"),
])
def test_bad_parameters_fail_at_net_construction(layer, param_str, message):
    labels = (4,) if layer.startswith("Softmax") else (4, 3)
    with pytest.raises(ParamError) as info:
        build(layer, (4, 3), labels, param_str)
    assert str(info.value).startswith(layer + ": ") and message in str(info.value)


@pytest.mark.parametrize("layer,scores,labels", [
    ("SoftmaxCrossEntropyLoss", (4, 3), (4, 3)),  # one-hot labels where indices belong
    ("SoftmaxFocalLoss", (2, 3, 2, 2), (2, 3, 2, 2)),
    ("SigmoidCrossEntropyLoss", (4, 3), (3, 4)),  # transposed
    ("SigmoidCrossEntropyLoss", (4, 3), (4, 2)),
    ("MultiLabelSoftmaxLoss", (2, 3, 2, 2), (2, 2, 2, 3)),
])
def test_labels_of_another_shape_fail_at_net_construction_as_in_the_functions(layer, scores, labels):
    row = caffe_losses.table.BY_NAME[layer]
    inputs = np.zeros(scores, np.float32) + (0.5 if row.inputs == "probabilities" else 0)
    with pytest.raises(ValueError) as functional:
        row.cls().forward(inputs, np.zeros(labels, np.float32))
    with pytest.raises(ValueError) as layer_error:
        build(layer, scores, labels)
    assert str(layer_error.value) == "%s: %s" % (layer, functional.value)
    assert "labels have shape %s but scores of shape %s" % (labels, scores) in str(functional.value)


@pytest.mark.parametrize("layer,scores,labels", [
    ("SigmoidCrossEntropyLoss", (4, 3), (4, 3, 1, 1)),  # HDF5's N x C x 1 x 1
    ("MultiLabelSoftmaxLoss", (4, 3, 1, 1), (4, 3)),
    ("SoftmaxCrossEntropyLoss", (4, 3), (4, 1)),
    ("SoftmaxFocalLoss", (2, 3, 2, 2), (2, 2, 2)),
    ("ZLPRLoss", (4, 3), (12,)),
])
def test_label_layouts_of_caffe_nets_are_accepted(layer, scores, labels):
    rng = np.random.default_rng(30)
    row = caffe_losses.table.BY_NAME[layer]
    values = rng.normal(size=scores).astype(np.float32)
    plain = (rng.integers(0, 3, (scores[0],) + scores[2:]) if row.labels == "sparse"
             else rng.random(scores) < 0.5).astype(np.float32)
    net = loss_net(layer, {"score": values, "label": plain.reshape(labels)})
    expected, grad = row.cls()(values, plain)
    assert run(net) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(net.blobs["score"].diff, grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("layer,labels,weights,message", [
    ("SoftmaxFocalLoss", (4,), (4, 3), r"give one weight per sample \(4 values\) or per location \(4 values"),
    ("SigmoidFocalLoss", (4, 3), (5,), r"or per element \(12 values\)"),
])
def test_weights_of_another_count_fail_at_net_construction(layer, labels, weights, message):
    with pytest.raises(ValueError, match=layer + ": .*" + message):
        build(layer, (4, 3), labels, weights_shape=weights)


@pytest.mark.parametrize("layer,labels,message", [
    ("SoftmaxCrossEntropyLoss", [0, 1, 3, 2], r"labels must be integer class indices in \[0, 3\); found 1 other "
                                              r"values \(first: 3\)"),
    ("SoftmaxFocalLoss", [0, 1, -1, 2], r"labels must be integer class indices in \[0, 3\)"),
    ("SigmoidCrossEntropyLoss", [[0, 1, 2]] * 4, r"labels must be <= 1; 4 values are above"),
])
def test_bad_label_values_fail_at_forward(layer, labels, message):
    labels = np.array(labels, dtype=np.float32)
    net = build(layer, (4, 3), labels.shape)
    net.blobs["label"].data[...] = labels
    with pytest.raises(ValueError, match=layer + ": " + message):
        net.forward()


def test_probabilities_outside_zero_one_fail_at_forward():
    net = build("CrossEntropyLoss", (2, 3), (2, 3))
    net.blobs["score"].data[...] = [[0.2, 0.3, 1.5], [0.3, 0.3, 0.4]]
    net.blobs["label"].data[...] = np.eye(3)[:2]
    with pytest.raises(ValueError, match="CrossEntropyLoss: probabilities must be <= 1; 1 values are above "
                                         r"\(largest 1.5\); feed the output of a Softmax"):
        net.forward()


def test_layers_are_exported_from_the_package():
    import caffe_losses
    for name in caffe_losses.LAYERS:
        assert issubclass(getattr(caffe_losses, name), caffe.Layer)
