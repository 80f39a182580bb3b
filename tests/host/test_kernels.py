"""The kernels (numba loops) against the numpy references they stand in for: loss and
gradient agree, bad input gets the reference's message, and the blobs a kernel does not
take go to the reference. Needs numba: `make test` runs these on the host with the
`fast` extra (today's numba) and in the image (Debian's numba); without numba they skip.
"""
import importlib.util
import warnings

import numpy as np
import pytest

from caffe_losses import functional as F
from caffe_losses import jit

# (skipped without numba, not where numba is installed but does not load: that fails)
pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None or jit.SWITCHED_OFF,
                                reason="needs numba (pip install .[fast])")


def test_numba_loads_where_it_is_installed():
    import numba  # noqa: F401  (the error, if it does not load with this numpy)
    assert jit.ENABLED


def run(loss, scores, labels, weights, use_jit, scale=0.7):
    loss.prepare(scores)
    loss.use_jit = use_jit
    value = loss.forward(scores, labels, weights)
    assert loss.jitted == use_jit
    grad = np.full(loss.ws, np.nan, loss.dtype)
    loss.backward(grad, scale)
    return value, grad.reshape(scores.shape)


def agree(make, scores, labels, weights=None):
    # labels and weights in the scores' dtype, as Caffe gives them (all float32)
    labels = labels.astype(scores.dtype)
    weights = None if weights is None else weights.astype(scores.dtype)
    fast = run(make(), scores, labels, weights, True)
    slow = run(make(), scores, labels, weights, False)
    rtol = 2e-5 if scores.dtype == np.float32 else 1e-10
    assert fast[0] == pytest.approx(slow[0], rel=rtol, abs=1e-7)
    np.testing.assert_allclose(fast[1], slow[1], rtol=rtol,
                               atol=rtol * max(1e-3, np.abs(slow[1]).max()))


def assert_same_error(make, scores, labels, weights):
    """Both paths raise ValueError on this input, with the same message."""
    messages = []
    for use_jit in (True, False):
        loss = make()
        loss.prepare(scores)
        loss.use_jit = use_jit
        with pytest.raises(ValueError) as info:
            loss.forward(scores, labels, weights)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def sparse_labels(rng, shape, ignore=None):
    n, c = shape[:2]
    labels = rng.integers(0, c, (n, 1) + shape[2:] if len(shape) > 2 else (n,)).astype(np.float32)
    if ignore is not None:
        labels.reshape(-1)[::3] = ignore
    return labels


def multi_hot(rng, shape, soft=False):
    y = (rng.random(shape) < 0.3).astype(np.float32)
    if soft:
        y *= rng.random(shape).astype(np.float32)
    y[0] = 0  # a location with no positive label
    return y


DTYPES = [np.float32, np.float64]
C = 5

SPARSE_CASES = [
    (F.SoftmaxCrossEntropy, {}),
    (F.SoftmaxCrossEntropy, {"class_weight": [1, 2, 0.5, 1, 3]}),
    (F.SoftmaxCrossEntropy, {"label_smoothing": 0.1}),
    (F.SoftmaxCrossEntropy, {"label_smoothing": 0.2, "class_weight": [1, 2, 0.5, 1, 3],
                             "ignore_label": 255}),
    (F.SoftmaxCrossEntropy, {"normalization": "batch_size", "ignore_label": 255}),
    (F.SoftmaxFocal, {}),
    (F.SoftmaxFocal, {"gamma": 0.5, "alpha": 0.25}),
    (F.SoftmaxFocal, {"gamma": 0.0, "ignore_label": 255}),
    (F.SoftmaxFocal, {"gamma": 3.0, "alpha": [0.1, 0.2, 0.3, 0.4, 0.5], "normalization": "full"}),
    (F.SoftmaxCrossEntropy, {"poly_eps": 1.0, "label_smoothing": 0.1, "class_weight": [1, 2, 0.5, 1, 3]}),
    (F.SoftmaxFocal, {"poly_eps": -0.5, "gamma": 0.5, "alpha": 0.25}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("cls,params", SPARSE_CASES)
def test_sparse_softmax_losses(cls, params, weighted, dtype):
    rng = np.random.default_rng(1)
    scores = rng.normal(0, 3, (12, C)).astype(dtype)
    scores[1, 2] = 95.0  # exp overflows float32 without a shift
    labels = sparse_labels(rng, scores.shape, params.get("ignore_label"))
    weights = rng.random(12).astype(np.float32) if weighted else None
    agree(lambda: cls(**params), scores, labels, weights)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [10, 3000])  # 3000 x 5 is above jit.MAX_SIZE: numpy's exp
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("params,soft", [({}, False), ({}, True), ({"target": "count"}, False),
                                         ({"normalization": "valid"}, True)])
def test_multilabel_softmax(params, soft, weighted, rows, dtype):
    rng = np.random.default_rng(2)
    scores = rng.normal(0, 3, (rows, C)).astype(dtype)
    scores[1, 2] = 95.0  # exp overflows float32: that row is made again with a shift
    scores[2] = -120.0  # every exp underflows: the same
    labels = multi_hot(rng, scores.shape, soft)
    labels[1:3, 0] = 1
    weights = rng.random(rows).astype(np.float32) if weighted else None
    agree(lambda: F.MultiLabelSoftmax(**params), scores, labels, weights)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("params,soft", [({}, False), ({"target": "count"}, True),
                                         ({"normalization": "valid"}, True)])
def test_multilabel_softmax_on_planes(params, soft, weighted, dtype):
    rng = np.random.default_rng(11)
    shape = (3, C, 4, 6)
    scores = rng.normal(0, 3, shape).astype(dtype)
    labels = multi_hot(rng, shape, soft)
    weights = rng.random((3, 1, 4, 6)) if weighted else None
    agree(lambda: F.MultiLabelSoftmax(**params), scores, labels, weights)


# Blobs larger than one block of the loops: planes of 30 x 40 locations (two full blocks of
# jit.PLANE_BLOCK and part of a third), rows of 600 classes (two full blocks of
# jit.ROW_CLASSES and a part), 37 classes (sums over jit.PLANE_CLASSES classes, three times)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weights_kind", [None, "sample", "location"])
@pytest.mark.parametrize("params,soft", [({}, False), ({"target": "count"}, True),
                                         ({"normalization": "valid"}, True)])
@pytest.mark.parametrize("shape", [(2, 37, 30, 40), (3, 5, 1200), (20, 600)])
def test_multilabel_softmax_on_large_blobs(shape, params, soft, weights_kind, dtype):
    assert 30 * 40 > 2 * jit.PLANE_BLOCK and 600 > 2 * jit.ROW_CLASSES and 37 > 2 * jit.PLANE_CLASSES
    rng = np.random.default_rng(13)
    scores = rng.normal(0, 3, shape).astype(dtype)
    labels = (rng.random(shape) < 0.1).astype(np.float32)
    if soft:
        labels *= rng.random(shape).astype(np.float32)
    labels[0] = 0  # locations with no positive label
    weights = {None: None, "sample": rng.random(shape[0]),
               "location": rng.random((shape[0], 1) + shape[2:])}[weights_kind]
    agree(lambda: F.MultiLabelSoftmax(**params), scores, labels, weights)


@pytest.mark.parametrize("shape", [(2, 37, 30, 40), (20, 600)])
@pytest.mark.parametrize("what,value", [("score", np.inf), ("score", -np.inf),
                                        ("score", np.nan), ("label", -1.0),
                                        ("label", np.nan), ("weight", -1.0)])
@pytest.mark.parametrize("where", ["counted", "not counted"])
def test_multilabel_softmax_on_large_blobs_bad_input(shape, what, value, where):
    # the large-blob loops hand bad input to numpy, which names it; also where the
    # location has no positive label (a score there still has to be finite)
    rng = np.random.default_rng(14)
    scores = rng.normal(0, 3, shape).astype(np.float32)
    labels = (rng.random(shape) < 0.3).astype(np.float32)
    labels[:, 0] = 1  # every location counts...
    if where == "not counted":
        labels[1] = 0  # ...but those of sample 1, where the bad value goes
    weights = np.ones((shape[0],), np.float32)
    at = (1, 5, 7, 9)[:len(shape)] if what != "weight" else (1,)
    {"score": scores, "label": labels, "weight": weights}[what][at] = value
    assert_same_error(F.MultiLabelSoftmax, scores, labels, weights)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("overflow", [False, True])
@pytest.mark.parametrize("cls,params", SPARSE_CASES)
def test_sparse_softmax_losses_on_planes(cls, params, weighted, overflow, dtype):
    # the planes kernel, with an unshifted exp, against the reference
    rng = np.random.default_rng(15)
    shape = (2, C, 30, 40)
    scores = rng.normal(0, 3, shape).astype(dtype)
    if overflow:
        scores[1, 2, 3, 4] = 95.0  # the kernel's sum overflows: the reference shifts the scores
    labels = sparse_labels(rng, shape, params.get("ignore_label"))
    weights = rng.random((2, 1, 30, 40)).astype(np.float32) if weighted else None
    results = []
    for use_loops in (True, False):
        loss = cls(**params)
        loss.prepare(scores)
        assert loss.use_jit
        loss.use_jit = use_loops
        value = loss.forward(scores, labels, weights)
        assert loss.jitted == (use_loops and not overflow)
        grad = np.full(loss.ws, np.nan, loss.dtype)
        loss.backward(grad, 0.7)
        results.append((value, grad))
    rtol = 2e-5 if dtype == np.float32 else 1e-10
    assert results[0][0] == pytest.approx(results[1][0], rel=rtol, abs=1e-7)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=rtol,
                               atol=rtol * np.abs(results[1][1]).max())


def test_float32_exp_of_the_loops():
    x = np.linspace(-87, 88, 200001).astype(np.float32)
    exact = np.exp(x.astype(np.float64))
    ours = np.array([jit._exp32(v) for v in x[::97]], np.float64)
    assert np.abs(ours / exact[::97] - 1).max() < 1.2e-7  # float32 rounding is 6e-8
    assert jit._exp32(np.float32(-200)) == jit._exp32(np.float32(-87)) > 0
    assert np.isfinite(jit._exp32(np.float32(200))) and np.isnan(jit._exp32(np.float32(np.nan)))


def test_float32_log1p_of_the_sigmoid_terms():
    v = np.concatenate([np.linspace(0, 1, 20001), np.logspace(-38, 0, 2001)]).astype(np.float32)
    exact = np.log1p(v.astype(np.float64))
    ours = np.array([jit._log1p32(u) for u in v[::7]], np.float64)
    assert np.all(np.abs(ours - exact[::7]) <= 2.5e-7 * exact[::7])  # tiny v keep their digits
    assert np.isnan(jit._log1p32(np.float32(np.nan)))


def test_multilabel_softmax_on_planes_hands_overflow_to_numpy():
    rng = np.random.default_rng(12)
    shape = (2, C, 3, 3)
    scores = rng.normal(0, 3, shape).astype(np.float32)
    scores[1, 2, 1, 1] = 95.0
    labels = multi_hot(rng, shape)
    loss = F.MultiLabelSoftmax()
    value = loss.forward(scores, labels)
    assert loss.use_jit and not loss.jitted
    assert np.isfinite(value)



SIGMOID_CASES = [
    (F.SigmoidCrossEntropy, {}),
    (F.SigmoidCrossEntropy, {"pos_weight": [1, 2, 3, 0.5, 1], "class_weight": 2.0}),
    (F.SigmoidCrossEntropy, {"ignore_label": -1, "normalization": "valid"}),
    (F.SigmoidFocal, {}),
    (F.SigmoidFocal, {"gamma": 0.5, "alpha": None, "ignore_label": -1}),
    (F.SigmoidFocal, {"gamma": 1.0, "pos_weight": 3.0, "class_weight": [1, 2, 3, 0.5, 1]}),
    (F.SigmoidFocal, {"gamma": 2.5, "alpha": 0.75, "normalization": "positive"}),
    (F.SigmoidCrossEntropy, {"poly_eps": 1.0, "pos_weight": 2.0}),
    (F.SigmoidFocal, {"poly_eps": -0.5, "gamma": 2.0, "class_weight": 2.0}),
    (F.SigmoidFocal, {"poly_eps": 0.5, "gamma": 0.5, "alpha": None}),
]


def per_class_arrays(params):
    return any(isinstance(params.get(key), list) for key in ("pos_weight", "class_weight"))


# (N, C) blobs of any size take the loop, in rows; N x C x H x W ones only without per-class
# arrays and per-location weights (those run numpy alone, as the test below checks)
SIGMOID_RUNS = [(cls, params, weights_kind, shape)
                for cls, params in SIGMOID_CASES
                for weights_kind in (None, "location", "element")
                for shape in ((12, C), (3000, C), (4, 3, 5, 7))
                if len(shape) == 2 or not (weights_kind == "location" or per_class_arrays(params))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls,params,weights_kind,shape", SIGMOID_RUNS)
def test_sigmoid_losses(cls, params, weights_kind, shape, dtype):
    rng = np.random.default_rng(3)
    scores = rng.normal(0, 3, shape).astype(dtype)
    scores.reshape(-1)[3] = 95.0
    scores.reshape(-1)[4] = -95.0
    labels = rng.random(shape).astype(np.float32)  # soft labels
    labels.reshape(-1)[::4] = np.round(labels.reshape(-1)[::4])
    if params.get("ignore_label") is not None:
        labels.reshape(-1)[::5] = params["ignore_label"]
    weights = {None: None, "location": rng.random(shape[0]), "element": rng.random(shape)}[weights_kind]
    agree(lambda: cls(**params), scores, labels, weights)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("params", [{}, {"target": "count"}, {"eps": 1e-3},
                                    {"normalization": "valid"}])
def test_categorical_cross_entropy(params, weighted, dtype):
    rng = np.random.default_rng(4)
    shape = (10, C)
    e = np.exp(rng.normal(0, 2, shape))
    probs = (e / e.sum(axis=1, keepdims=True)).astype(dtype)
    labels = multi_hot(rng, shape, soft=True)
    probs.reshape(-1)[2] = 0.0  # the eps of the log
    weights = rng.random((shape[0], 1) + shape[2:]).astype(np.float32) if weighted else None
    agree(lambda: F.CrossEntropy(**params), probs, labels, weights)


BAD_INPUTS = [
    (F.SoftmaxCrossEntropy, {}, "label", 7.0),
    (F.SoftmaxCrossEntropy, {}, "label", 1.5),
    (F.SoftmaxFocal, {}, "label", np.nan),
    (F.SoftmaxFocal, {}, "score", np.nan),
    (F.SoftmaxCrossEntropy, {}, "weight", -1.0),
    (F.MultiLabelSoftmax, {}, "label", -1.0),
    (F.MultiLabelSoftmax, {}, "score", np.inf),
    (F.SigmoidFocal, {}, "label", 2.0),
    (F.SigmoidCrossEntropy, {}, "score", np.nan),
    (F.SigmoidCrossEntropy, {}, "weight", -1.0),
    (F.CrossEntropy, {}, "score", 1.5),
    (F.CrossEntropy, {}, "label", -0.5),
    (F.CrossEntropy, {}, "weight", np.nan),
]


@pytest.mark.parametrize("cls,params,what,value", BAD_INPUTS)
def test_bad_input_gets_the_numpy_message(cls, params, what, value):
    rng = np.random.default_rng(5)
    sparse = cls in (F.SoftmaxCrossEntropy, F.SoftmaxFocal)
    scores = rng.random((6, C)).astype(np.float32)
    labels = sparse_labels(rng, scores.shape) if sparse else multi_hot(rng, scores.shape)
    weights = np.ones(6, np.float32)
    {"score": scores, "label": labels, "weight": weights}[what].reshape(-1)[1] = value
    assert_same_error(lambda: cls(**params), scores, labels, weights)


@pytest.mark.parametrize("shape,expected", [((32, 20), True), ((2, 20, 3, 3), True),
                                            ((8192 // 20 + 1, 20), True)])
def test_softmax_blobs_of_every_size_take_the_kernel(shape, expected):
    rng = np.random.default_rng(6)
    scores = rng.normal(size=shape).astype(np.float32)
    loss = F.SoftmaxCrossEntropy()
    loss.forward(scores, sparse_labels(rng, shape))
    assert loss.jitted == expected


@pytest.mark.parametrize("make,shape,expected", [
    (F.SigmoidFocal, (32, C), True), (F.SigmoidFocal, (300, 1000), True),
    (F.SigmoidFocal, (2, C, 3, 3), True),
    (lambda: F.SigmoidFocal(class_weight=[1, 2, 3, 4, 5]), (2, C, 3, 3), False),
    (lambda: F.CrossEntropy(mode="binary"), (32, C), False)])
def test_which_element_wise_blobs_take_the_loop(make, shape, expected):
    rng = np.random.default_rng(8)
    loss = make()
    loss.forward(rng.random(shape), (rng.random(shape) < 0.5).astype(np.float64))
    assert loss.jitted == expected


def test_a_float16_blob_takes_numpy():
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(4, C)).astype(np.float16)
    loss = F.SoftmaxCrossEntropy()
    loss.forward(scores, rng.integers(0, C, 4).astype(np.float16))
    assert not loss.jitted


def test_a_loop_that_fails_warns_once_and_numpy_takes_over(monkeypatch):
    def broken(*args):
        raise TypeError("no matching definition")
    monkeypatch.setattr(F.SoftmaxCrossEntropy, "KERNELS", (broken, broken))
    monkeypatch.setattr(jit, "_FAILED", [])
    rng = np.random.default_rng(9)
    scores = rng.normal(size=(6, C)).astype(np.float32)
    labels = sparse_labels(rng, scores.shape)
    loss = F.SoftmaxCrossEntropy()
    with pytest.warns(RuntimeWarning, match="compiled loop failed .*no matching definition"):
        value = loss.forward(scores, labels)
    assert not loss.jitted and not loss.use_jit
    reference = F.SoftmaxCrossEntropy()
    reference.prepare(scores)
    reference.use_jit = False
    assert value == reference.forward(scores, labels)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        F.SoftmaxCrossEntropy().forward(scores, labels)  # a second loss: no second warning
    assert not [w for w in record if "compiled loop" in str(w.message)]


def test_per_location_weights_of_a_dense_sigmoid_blob_take_numpy():
    rng = np.random.default_rng(10)
    shape = (2, C, 3, 3)
    loss = F.SigmoidFocal()
    loss.forward(rng.normal(size=shape), (rng.random(shape) < 0.5).astype(np.float64),
                 rng.random(2))
    assert loss.use_jit and not loss.jitted


@pytest.mark.parametrize("shape", [(300, 40), (2, C, 6, 7)])
def test_a_backward_kernel_that_fails_warns_once_and_the_reference_takes_over(monkeypatch, shape):
    # large multi-label blobs make their gradient in a backward kernel
    from caffe_losses.losses import multilabel_softmax as mls

    def broken(*args):
        raise TypeError("no matching definition")
    monkeypatch.setattr(mls, "_rows_grad", broken)
    monkeypatch.setattr(mls, "_planes_grad", broken)
    monkeypatch.setattr(jit, "_FAILED", [])
    rng = np.random.default_rng(16)
    scores = rng.normal(size=shape).astype(np.float32)
    labels = multi_hot(rng, shape)
    loss = F.MultiLabelSoftmax()
    value = loss.forward(scores, labels)
    assert loss.jitted
    grad = np.full(loss.ws, np.nan, np.float32)
    with pytest.warns(RuntimeWarning, match="compiled loop failed .*no matching definition"):
        loss.backward(grad, 0.5)
    assert not loss.use_jit
    reference = F.MultiLabelSoftmax()
    reference.prepare(scores)
    reference.use_jit = False
    assert value == pytest.approx(reference.forward(scores, labels), rel=2e-5)
    expected = np.empty(loss.ws, np.float32)
    reference.backward(expected, 0.5)
    np.testing.assert_allclose(grad, expected, rtol=2e-5, atol=1e-7)


# -- AsymmetricLoss and ZLPRLoss --------------------------------------------------------

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
def test_asymmetric_zlpr_bad_input_gets_the_numpy_message(cls, what, value, shape):
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


# -- DistillationLoss: the teacher's scores in the labels' place, the labels in the weights' --

DISTILLATION_RUNS = [(activation, shape, ignore) for activation in ("softmax", "sigmoid")
                     for shape in ((12, C), (256, 1000), (3, C, 30, 40), (4, 37, 5, 7))
                     for ignore in (None, 255)]


def distillation_labels(rng, activation, shape, ignore):
    if ignore is None:
        return None
    if activation == "softmax":
        return sparse_labels(rng, shape, ignore)
    labels = dense(rng, shape, soft=True)
    labels.reshape(-1)[::5] = ignore
    labels[1] = ignore  # a sample with nothing counted
    return labels


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,shape,ignore", DISTILLATION_RUNS)
def test_distillation_kernels_agree_with_reference(activation, shape, ignore, dtype):
    rng = np.random.default_rng(6)
    student = rng.normal(0, 3, shape).astype(dtype)
    teacher = rng.normal(0, 3, shape).astype(dtype)
    student.reshape(-1)[3] = 400.0  # exp(s / T) overflows float32 without a shift
    teacher.reshape(-1)[4] = -400.0
    labels = distillation_labels(rng, activation, shape, ignore)
    params = dict(activation=activation, ignore_label=ignore, temperature=2.0,
                  normalization="valid" if ignore is None else "full")
    agree(lambda: F.Distillation(**params), student, teacher, labels)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("what", ["label", "teacher", "student", "ignored teacher"])
@pytest.mark.parametrize("shape", [(6, C), (2, C, 3, 4)])
def test_distillation_bad_input_gets_the_numpy_message(activation, what, shape):
    rng = np.random.default_rng(7)
    student = rng.normal(size=shape).astype(np.float32)
    teacher = rng.normal(size=shape).astype(np.float32)
    labels = distillation_labels(rng, activation, shape, 255)
    labels.reshape(-1)[1] = 255
    where = {"label": labels, "teacher": teacher, "student": student,
             "ignored teacher": teacher}[what]
    # an out-of-range label; a NaN score, also where its label is ignored (both paths
    # compute it, and name the input)
    where.reshape(-1)[0 if what == "label" else 1] = 7.0 if what == "label" else np.nan
    if what == "ignored teacher" and activation == "softmax" and len(shape) == 2:
        labels[0] = 255  # (rows: the row of the NaN)
    assert_same_error(lambda: F.Distillation(activation=activation, ignore_label=255), student,
                      teacher, labels)
