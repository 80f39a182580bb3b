"""MultiLabelSoftmaxLoss inside real Caffe nets (Debian's Caffe 1.0, CPU)."""
import warnings

import numpy as np
import pytest

import reference
from nets import input_layer, loss_net, make_net, numeric_net_gradient, python_loss, run
from caffe_losses import ParamError

LAYER = "MultiLabelSoftmaxLoss"


def multi_hot(rng, shape, p=0.4):
    labels = (rng.random(shape) < p).astype(np.float32)
    return labels


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 2, 3)])
@pytest.mark.parametrize("target", ["sum", "count"])
@pytest.mark.parametrize("normalization", ["batch_size", "valid"])
def test_backward_matches_finite_differences_with_loss_weight(shape, target, normalization):
    rng = np.random.default_rng(10)
    scores = rng.normal(0, 1.5, size=shape).astype(np.float32)
    labels = multi_hot(rng, shape) * rng.uniform(0.5, 2, size=shape).astype(np.float32)
    labels[0] = 0
    param = "{'target': '%s', 'normalization': '%s'}" % (target, normalization)
    net = loss_net(LAYER, {"score": scores, "label": labels}, param, loss_weight=2.5)
    run(net)
    analytic = net.blobs["score"].diff.copy()
    # Caffe does not scale the reported loss by loss_weight; the gradient it must be.
    numeric = 2.5 * numeric_net_gradient(net, "score")
    np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=5e-4)
    assert np.abs(analytic).max() > 1e-2  # the check is not vacuous
    assert not analytic[0].any()  # no positive label, no gradient


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 2, 2)])
@pytest.mark.parametrize("normalization", ["batch_size", "valid", "full", "none"])
def test_forward_matches_plain_reference(shape, normalization):
    rng = np.random.default_rng(11)
    scores = rng.normal(0, 3, size=shape).astype(np.float32)
    labels = multi_hot(rng, shape) * rng.uniform(0.5, 2, size=shape).astype(np.float32)
    labels[1] = 0
    net = loss_net(LAYER, {"score": scores, "label": labels},
                   "{'normalization': '%s'}" % normalization)
    loss = run(net)
    expected = reference.multilabel_softmax_loss(scores.astype(np.float64), labels.astype(np.float64),
                                                 normalization=normalization)
    assert loss == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("weights_shape", [(3,), (3, 1, 2, 2)])
def test_weights_bottom_scales_each_location(weights_shape):
    rng = np.random.default_rng(12)
    shape = (3, 4, 2, 2)
    scores = rng.normal(size=shape).astype(np.float32)
    labels = multi_hot(rng, shape, 0.5)
    labels[:, 0] = 1
    weights = rng.uniform(0.2, 2, size=weights_shape).astype(np.float32)
    net = loss_net(LAYER, {"score": scores, "label": labels, "weight": weights},
                   "{'normalization': 'none'}", loss_weight=1.5)
    loss = run(net)
    w = weights.reshape(3) if len(weights_shape) == 1 else weights.reshape(3, 2, 2)
    expected = reference.multilabel_softmax_loss(scores.astype(np.float64), labels.astype(np.float64),
                                                 w.astype(np.float64), normalization="none")
    assert loss == pytest.approx(expected, rel=1e-5)
    analytic = net.blobs["score"].diff.copy()
    np.testing.assert_allclose(analytic, 1.5 * numeric_net_gradient(net, "score"), rtol=2e-2, atol=5e-4)
    # labels and weights get no gradient, even though force_backward asks for one
    assert not net.blobs["label"].diff.any() and not net.blobs["weight"].diff.any()


@pytest.mark.parametrize("normalization", ["valid", "batch_size", "full", "none"])
@pytest.mark.parametrize("shape", [(8, 10), (2, 5, 3, 4)])
def test_one_hot_labels_match_caffe_softmax_with_loss(normalization, shape):
    rng = np.random.default_rng(13)
    n, c = shape[:2]
    spatial = shape[2:]
    scores = rng.normal(0, 4, size=shape).astype(np.float32)
    classes = rng.integers(0, c, size=(n,) + spatial)
    one_hot = np.moveaxis(np.eye(c, dtype=np.float32)[classes], -1, 1)
    label_shape = (n, 1) + spatial if spatial else (n,)

    ours = loss_net(LAYER, {"score": scores, "label": one_hot},
                    "{'normalization': '%s'}" % normalization)
    text = ("force_backward: true\n" + input_layer("score", shape) + input_layer("label", label_shape)
            + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"\n'
            + '  loss_param { normalization: %s } }\n' % normalization.upper())
    theirs = make_net(text)
    theirs.blobs["score"].data[...] = scores
    theirs.blobs["label"].data[...] = classes.reshape(label_shape)

    assert run(ours) == pytest.approx(run(theirs), rel=1e-5)
    np.testing.assert_allclose(ours.blobs["score"].diff, theirs.blobs["score"].diff,
                               rtol=1e-5, atol=1e-7)


def test_batch_with_no_positive_label_gives_zero_loss_and_gradient():
    net = loss_net(LAYER, {"score": np.ones((3, 4), np.float32), "label": np.zeros((3, 4), np.float32)},
                   "{'normalization': 'valid'}")
    assert run(net) == 0.0
    assert not net.blobs["score"].diff.any()


def test_class_axis_other_than_one():
    rng = np.random.default_rng(14)
    scores = rng.normal(size=(2, 3, 5)).astype(np.float32)
    labels = multi_hot(rng, (2, 3, 5), 0.5)
    labels[..., 0] = 1
    net = loss_net(LAYER, {"score": scores, "label": labels}, "{'axis': 2}")
    loss = run(net)
    # 2 x 3 locations of 5 classes; "batch_size" divides by outer_num, 6, as Caffe's softmax
    rows = scores.reshape(6, 5).astype(np.float64), labels.reshape(6, 5).astype(np.float64)
    assert loss == pytest.approx(reference.multilabel_softmax_loss(*rows), rel=1e-5)


def test_reshape_follows_input_shape_changes():
    rng = np.random.default_rng(15)
    net = loss_net(LAYER, {"score": np.zeros((2, 3), np.float32), "label": np.eye(3, dtype=np.float32)[:2]})
    for n in (5, 1, 7):
        net.blobs["score"].reshape(n, 3)
        net.blobs["label"].reshape(n, 3)
        net.blobs["score"].data[...] = rng.normal(size=(n, 3))
        net.blobs["label"].data[...] = np.eye(3)[rng.integers(0, 3, size=n)]
        net.reshape()
        run(net)
        assert net.blobs["score"].diff.shape == (n, 3)
        assert np.isfinite(net.blobs["score"].diff).all()


def test_without_loss_weight_warns_that_the_net_will_not_learn():
    net = loss_net(LAYER, {"score": np.zeros((2, 3), np.float32), "label": np.eye(3, dtype=np.float32)[:2]},
                   loss_weight=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net.forward()
        net.forward()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "add 'loss_weight: 1'" in messages[0]


# -- errors -------------------------------------------------------------------

def net_text(scores_shape, labels_shape, param_str="", n_bottoms=2):
    names = ["score", "label", "weight"][:n_bottoms]
    shapes = [scores_shape, labels_shape, (scores_shape[0],)][:n_bottoms]
    return ("".join(input_layer(n, s) for n, s in zip(names, shapes))
            + python_loss(LAYER, names, param_str))


@pytest.mark.parametrize("param_str,message", [
    ("{'normalisation': 'valid'}", "unknown param_str key 'normalisation'. Did you mean 'normalization'?"),
    ("{'normalization': 'mean'}", "key 'normalization' must be one of 'full', 'valid', 'batch_size', 'none'"),
    ("{'target': 3}", "key 'target' must be one of 'sum', 'count', got 3"),
    ("{'axis': 1.5}", "key 'axis' must be an integer, got 1.5"),
    ("normalization=valid", "is not a dict literal"),
    ("[1, 2]", "must be a dict literal"),
    ("__import__('os').system('false')", "is not a dict literal"),
])
def test_bad_param_str_fails_at_net_construction_with_a_clear_message(param_str, message):
    with pytest.raises(ParamError) as info:
        make_net(net_text((2, 3), (2, 3), param_str))
    assert str(info.value).startswith(LAYER + ": ")
    assert message in str(info.value)


def test_json_and_python_literal_param_str_both_work():
    for param_str in ('{"normalization": "none", "target": "count"}', "{'normalization': 'none', 'target': 'count'}"):
        net = make_net(net_text((2, 3), (2, 3), param_str))
        net.blobs["label"].data[...] = [[1, 1, 0], [0, 0, 2]]
        # uniform scores: (1 + 1)/2 * log 3 + 2/1 * log 3
        assert float(net.forward()["loss"]) == pytest.approx(3 * np.log(3), rel=1e-6)


def test_mismatched_label_shape_names_both_shapes():
    with pytest.raises(ValueError, match=r"MultiLabelSoftmaxLoss: labels have shape \(2, 4\) but "
                                         r"scores of shape \(2, 3\) \(class axis 1\) take one label "
                                         r"per score: labels of shape \(2, 3\)"):
        make_net(net_text((2, 3), (2, 4)))


def test_wrong_number_of_bottoms():
    text = input_layer("score", (2, 3)) + python_loss(LAYER, ["score"])
    with pytest.raises(ValueError, match=r"MultiLabelSoftmaxLoss: takes 2 or 3 bottoms \(scores, "
                                         r"labels, \[weights\]\), got 1"):
        make_net(text)


def test_weights_of_the_wrong_count():
    text = (input_layer("score", (2, 3, 4)) + input_layer("label", (2, 3, 4)) + input_layer("weight", (3,))
            + python_loss(LAYER, ["score", "label", "weight"]))
    with pytest.raises(ValueError, match=r"bottom\[2\] \(weights\) has shape \(3,\) \(3 values\) .* one "
                                         r"weight per sample \(2 values\) or per location \(8 values"):
        make_net(text)


def test_axis_out_of_range():
    with pytest.raises(ValueError, match="axis 3 is out of range for a blob of shape \\(2, 3\\); set 'axis'"):
        make_net(net_text((2, 3), (2, 3), "{'axis': 3}"))


def test_negative_labels_fail_at_forward():
    net = make_net(net_text((2, 3), (2, 3)))
    net.blobs["label"].data[...] = [[1, -1, 0], [0, 1, 0]]
    with pytest.raises(ValueError, match="MultiLabelSoftmaxLoss: labels must be >= 0; 1 values are below"):
        net.forward()
