"""AsymmetricLoss and ZLPRLoss in the image: the kernels against the references, the
layers in real nets (loss and net.backward() against the functional API), and the
param_str errors."""
import numpy as np
import pytest

from caffe_losses import ParamError
from caffe_losses import functional as F
from caffe_losses import jit
from nets import loss_net, make_net, input_layer, python_loss, run, numeric_net_gradient
from test_jit import agree, assert_same_error

DTYPES = [np.float32, np.float64]
C = 5


def test_numba_is_there():
    assert jit.ENABLED


ASL_CASES = [
    {},
    {"focal_grad": False},
    {"gamma_pos": 1.0, "gamma_neg": 2.0, "clip": 0.0},
    {"gamma_pos": 0.5, "gamma_neg": 3.5, "clip": 0.2, "normalization": "positive"},
    {"gamma_pos": 2.0, "gamma_neg": 0.0, "ignore_label": -1, "normalization": "valid"},
    {"gamma_neg": 3.0, "class_weight": [1, 2, 3, 0.5, 1], "focal_grad": False},
    {"gamma_neg": 0.5, "clip": 0.0, "class_weight": 2.0},
]
ASL_RUNS = [(params, weights_kind, shape)
            for params in ASL_CASES
            for weights_kind in (None, "sample", "element")
            for shape in ((12, C), (256, 1000), (4, C, 5, 7))
            # (planes with per-class weights or per-sample weights take the reference: below;
            # the five class weights fit the shapes of C classes only)
            if not (len(shape) > 2 and (isinstance(params.get("class_weight"), list)
                                        or weights_kind == "sample"))
            and not (isinstance(params.get("class_weight"), list) and shape[1] != C)]


def dense(rng, shape, soft):
    labels = rng.random(shape).astype(np.float32)
    if not soft:
        labels = (labels < 0.3).astype(np.float32)
    return labels


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("params,weights_kind,shape", ASL_RUNS)
def test_asymmetric_kernel_agrees_with_reference(params, weights_kind, shape, dtype):
    rng = np.random.default_rng(3)
    scores = rng.normal(0, 3, shape).astype(dtype)
    scores.reshape(-1)[3] = 95.0
    scores.reshape(-1)[4] = -95.0
    labels = dense(rng, shape, soft=True)
    labels.reshape(-1)[::4] = np.round(labels.reshape(-1)[::4])
    if params.get("ignore_label") is not None:
        labels.reshape(-1)[::5] = params["ignore_label"]
    weights = {None: None, "sample": rng.random(shape[0]), "element": rng.random(shape)}[weights_kind]
    agree(lambda: F.Asymmetric(**params), scores, labels, weights)


@pytest.mark.parametrize("shape,params,expected", [
    ((32, C), {}, True), ((256, 1000), {"gamma_neg": 2.5}, True), ((2, C, 3, 3), {}, True),
    ((2, C, 3, 3), {"class_weight": [1, 2, 3, 4, 5]}, False), ((2, C, 3, 3), {"weights": 1}, False)])
def test_which_asymmetric_blobs_take_the_kernel(shape, params, expected):
    rng = np.random.default_rng(8)
    weights = np.ones(shape[0]) if params.pop("weights", None) else None
    loss = F.Asymmetric(**params)
    loss.forward(rng.normal(size=shape).astype(np.float32), dense(rng, shape, False), weights)
    assert loss.jitted == expected


ZLPR_CASES = [{}, {"ignore_label": -1}, {"ignore_label": 255, "normalization": "valid"},
              {"normalization": "full"}, {"normalization": "none"}]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weights_kind", [None, "sample", "location"])
@pytest.mark.parametrize("params", ZLPR_CASES)
@pytest.mark.parametrize("shape", [(12, C), (256, 1000), (3, C, 30, 40), (4, 37, 5, 7)])
@pytest.mark.parametrize("overflow", [False, True])
def test_zlpr_kernel_agrees_with_reference(shape, params, weights_kind, dtype, overflow):
    rng = np.random.default_rng(4)
    scores = rng.normal(0, 3, shape).astype(dtype)
    labels = dense(rng, shape, soft=False)
    if overflow:  # a wrong-signed score whose exp overflows without a shift
        scores.reshape(-1)[3] = 95.0 if labels.reshape(-1)[3] == 0 else -95.0
    ignore = params.get("ignore_label")
    if ignore is not None:
        labels.reshape(-1)[::5] = ignore
        labels[1] = ignore  # a sample with nothing counted
    loc = (shape[0], 1) + shape[2:]
    weights = {None: None, "sample": rng.random(shape[0]), "location": rng.random(loc)}[weights_kind]
    if not (overflow and len(shape) > 2):
        agree(lambda: F.ZLPR(**params), scores, labels, weights)
    loss = F.ZLPR(**params)
    loss.forward(scores, labels.astype(dtype), weights)
    # rows make an overflowing row again with a shift; planes hand the call to numpy
    assert loss.jitted == (not overflow or len(shape) == 2)


@pytest.mark.parametrize("cls,what,value", [
    (F.Asymmetric, "label", 2.0), (F.Asymmetric, "label", np.nan), (F.Asymmetric, "score", np.nan),
    (F.Asymmetric, "weight", -1.0),
    (F.ZLPR, "label", 0.5), (F.ZLPR, "label", np.nan), (F.ZLPR, "score", np.inf),
    (F.ZLPR, "weight", -1.0)])
@pytest.mark.parametrize("shape", [(6, C), (2, C, 3, 4)])
def test_bad_input_gets_the_numpy_message(cls, what, value, shape):
    rng = np.random.default_rng(5)
    scores = rng.random(shape).astype(np.float32)
    labels = dense(rng, shape, False)
    weights = np.ones(shape[0], np.float32) if len(shape) == 2 else np.ones(shape, np.float32)
    if cls is F.ZLPR and len(shape) > 2:
        weights = np.ones((shape[0], 1) + shape[2:], np.float32)
    {"score": scores, "label": labels, "weight": weights}[what].reshape(-1)[1] = value
    if what == "score":
        labels.reshape(-1)[1] = 0  # (+inf on a positive class is a loss of 0, and no error)
    assert_same_error(cls, scores, labels, weights)


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
