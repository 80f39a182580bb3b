"""Every loss layer in real Caffe nets: gradients through net.backward(), parity with
Caffe's C++ loss layers, and the documented errors."""
import caffe
import numpy as np
import pytest

import reference
from nets import input_layer, loss_net, make_net, numeric_net_gradient, python_loss, run
from caffe_losses import ParamError


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


def compare(ours, theirs, scores, labels):
    for net in (ours, theirs):
        net.blobs["score"].data[...] = scores
        net.blobs["label"].data[...] = labels
    ours_loss, theirs_loss = run(ours), run(theirs)
    assert relative_difference(ours_loss, theirs_loss) <= 1e-5
    assert relative_difference(ours.blobs["score"].diff, theirs.blobs["score"].diff) <= 1e-5


CPP_NORMALIZATIONS = ["valid", "batch_size", "full", "none"]


def same_settings(normalization, ignore):
    """Our param_str dict and the C++ layer's loss_param text for the same settings."""
    params, loss_param = {}, []
    if normalization:
        params["normalization"] = normalization
        loss_param.append("normalization: %s" % normalization.upper())
    if ignore is not None:
        params["ignore_label"] = ignore
        loss_param.append("ignore_label: %d" % ignore)
    return params, " ".join(loss_param)


@pytest.mark.parametrize("normalization", [None] + CPP_NORMALIZATIONS)
@pytest.mark.parametrize("ignore", [None, -1])
@pytest.mark.parametrize("shape", [(8, 5), (2, 3, 4, 4)])
def test_sigmoid_cross_entropy_matches_caffe(normalization, ignore, shape):
    rng = np.random.default_rng(22)
    scores = rng.normal(0, 4, size=shape).astype(np.float32)
    labels = (rng.random(shape) < 0.4).astype(np.float32)
    if ignore is not None:
        labels[rng.random(shape) < 0.2] = ignore
    params, loss_param = same_settings(normalization, ignore)
    ours = loss_net("SigmoidCrossEntropyLoss", {"score": scores, "label": labels}, repr(params))
    theirs = cpp_net("SigmoidCrossEntropyLoss", {"score": shape, "label": shape}, loss_param)
    compare(ours, theirs, scores, labels)


@pytest.mark.parametrize("normalization", [None] + CPP_NORMALIZATIONS)
@pytest.mark.parametrize("ignore", [None, 255])
@pytest.mark.parametrize("shape", [(8, 5), (2, 6, 4, 3)])
def test_softmax_cross_entropy_matches_softmax_with_loss(normalization, ignore, shape):
    rng = np.random.default_rng(23)
    scores = rng.normal(0, 4, size=shape).astype(np.float32)
    labels = sparse_labels(rng, shape[0], shape[1], tuple(shape[2:]), ignore)
    params, loss_param = same_settings(normalization, ignore)
    ours = loss_net("SoftmaxCrossEntropyLoss", {"score": scores, "label": labels}, repr(params))
    theirs = cpp_net("SoftmaxWithLoss", {"score": shape, "label": labels.shape}, loss_param)
    compare(ours, theirs, scores, labels)


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


@pytest.mark.parametrize("layer,labels,weights,message", [
    ("SoftmaxCrossEntropyLoss", (4, 3), None,
     r"bottom\[1\] \(labels\) has shape \(4, 3\) \(12 values\) but bottom\[0\] \(scores\) has shape "
     r"\(4, 3\): give one class index per location, 4 values"),
    ("SigmoidCrossEntropyLoss", (4, 2), None,
     r"bottom\[1\] \(labels\) has shape \(4, 2\) but bottom\[0\] \(scores\) has shape \(4, 3\)"),
    ("SoftmaxFocalLoss", (4,), (4, 3), r"give one weight per sample \(4 values\) or per location \(4 values"),
    ("SigmoidFocalLoss", (4, 3), (5,), r"or per element \(12 values\)"),
])
def test_mismatched_bottoms_fail_at_net_construction(layer, labels, weights, message):
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
