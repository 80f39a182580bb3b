"""AsymmetricLoss and ZLPRLoss in the image: the layers in real nets (loss and
net.backward() against the functional API) and the param_str errors. (Their kernels
against the references: tests/host/test_kernels.py.)"""
import numpy as np
import pytest

from caffe_losses import ParamError
from caffe_losses import functional as F
from caffe_losses.kernels import jit
from nets import loss_net, make_net, input_layer, python_loss, run, numeric_net_gradient


def test_numba_is_there():
    # the image installs python3-numba: without it tests/host/test_kernels.py would skip
    assert jit.ENABLED


# -- the layers in real nets ----------------------------------------------------------

LAYER_CASES = [
    ("AsymmetricLoss", {}, None),
    ("AsymmetricLoss", {"gamma_pos": 1.0, "gamma_neg": 2.0, "clip": 0.1, "ignore_label": -1,
                        "normalization": "valid", "focal_grad": False}, -1),
    ("AsymmetricLoss", {"class_weight": [0.5, 1, 2], "normalization": "positive"}, None),
    ("ZLPRLoss", {}, None),
    ("ZLPRLoss", {"ignore_label": -1, "normalization": "valid"}, -1),
]
FUNCTIONS = {"AsymmetricLoss": F.asymmetric_loss, "ZLPRLoss": F.zlpr_loss}


@pytest.mark.parametrize("layer,params,ignore", LAYER_CASES)
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2)])
@pytest.mark.parametrize("weighted", [False, True])
def test_layer_equals_the_functional(layer, params, ignore, shape, weighted):
    rng = np.random.default_rng(20)
    scores = rng.normal(0, 1.5, size=shape).astype(np.float32)
    labels = (rng.random(shape) < 0.4).astype(np.float32)
    if ignore is not None:
        labels[rng.random(shape) < 0.2] = ignore
    inputs = {"score": scores, "label": labels}
    weights = None
    if weighted:
        weights = rng.uniform(0, 2, size=(shape[0], 1) + shape[2:]).astype(np.float32)
        inputs["weight"] = weights
    net = loss_net(layer, inputs, repr(params), loss_weight=0.7)
    value = run(net)
    expected, grad = FUNCTIONS[layer](scores, labels, weights, **params)
    assert value == pytest.approx(expected, rel=1e-5)  # the top holds the loss; its weight
    # scales the diffs
    np.testing.assert_allclose(net.blobs["score"].diff, 0.7 * grad, rtol=1e-5, atol=1e-7)
    assert np.abs(grad).max() > 1e-2
    assert not net.blobs["label"].diff.any()
    if params.get("focal_grad") is False:
        return  # (its backward holds the focusing weights: not the loss's derivative)
    # and the gradient is the loss's: finite differences through the net
    numeric = 0.7 * numeric_net_gradient(net, "score", step=1e-2)
    np.testing.assert_allclose(net.blobs["score"].diff, numeric, rtol=3e-2, atol=5e-4)


def test_asymmetric_per_element_weights_in_a_net():
    rng = np.random.default_rng(21)
    shape = (2, 3, 2, 2)
    scores = rng.normal(0, 1.5, size=shape).astype(np.float32)
    labels = rng.random(shape).astype(np.float32)
    weights = rng.uniform(0, 2, size=shape).astype(np.float32)
    net = loss_net("AsymmetricLoss", {"score": scores, "label": labels, "weight": weights}, "{}",
                   loss_weight=2)
    value = run(net)
    expected, grad = F.asymmetric_loss(scores, labels, weights)
    assert value == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(net.blobs["score"].diff, 2 * grad, rtol=1e-5, atol=1e-7)


def test_zlpr_refuses_per_element_weights():
    shape = (2, 3)
    with pytest.raises(Exception, match="ZLPRLoss: bottom\\[2\\] \\(weights\\) has shape"):
        loss_net("ZLPRLoss", {"score": np.zeros(shape, np.float32), "label": np.zeros(shape, np.float32),
                              "weight": np.ones(shape, np.float32)}, "{}")


@pytest.mark.parametrize("layer,param_str,message", [
    ("AsymmetricLoss", "{'gama_neg': 2}", "AsymmetricLoss: unknown param_str key 'gama_neg'. "
                                          "Did you mean 'gamma_neg'"),
    ("AsymmetricLoss", "{'clip': 1.5}", "AsymmetricLoss: param_str key 'clip' must be <= 1"),
    ("AsymmetricLoss", "{'gamma_pos': -1}", "AsymmetricLoss: param_str key 'gamma_pos' must be >= 0"),
    ("AsymmetricLoss", "{'focal_grad': 'yes'}", "AsymmetricLoss: param_str key 'focal_grad' must be "
                                                "true or false"),
    ("AsymmetricLoss", "{'normalization': 'mean'}", "AsymmetricLoss: param_str key 'normalization' "
                                                    "must be one of"),
    ("ZLPRLoss", "{'gamma': 2}", "ZLPRLoss: unknown param_str key 'gamma'"),
    ("ZLPRLoss", "{'normalization': 'positive'}", "ZLPRLoss: param_str key 'normalization' must be "
                                                  "one of"),
    ("ZLPRLoss", "{'ignore_label': 0.5}", "ZLPRLoss: param_str key 'ignore_label' must be an integer"),
])
def test_param_str_errors_name_the_layer(layer, param_str, message):
    text = input_layer("score", (2, 3)) + input_layer("label", (2, 3))
    text += python_loss(layer, ["score", "label"], param_str)
    with pytest.raises(ParamError, match=message):
        make_net(text)


def test_focal_grad_true_in_json_param_str():
    shape = (4, 3)
    rng = np.random.default_rng(22)
    scores = rng.normal(size=shape).astype(np.float32)
    labels = (rng.random(shape) < 0.4).astype(np.float32)
    net = loss_net("AsymmetricLoss", {"score": scores, "label": labels}, '{"focal_grad": false}')
    value = run(net)
    expected, grad = F.asymmetric_loss(scores, labels, focal_grad=False)
    assert value == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(net.blobs["score"].diff, grad, rtol=1e-5, atol=1e-7)
