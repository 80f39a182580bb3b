"""cross_entropy on probabilities: categorical and binary modes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import reference
from gradcheck import numeric_gradient
from caffe_losses.functional import cross_entropy, multilabel_softmax_loss, sigmoid_cross_entropy


def softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 2, 2)])
@pytest.mark.parametrize("target", ["sum", "count"])
@pytest.mark.parametrize("normalization", ["batch_size", "valid", "full", "none"])
def test_categorical_matches_reference(shape, target, normalization):
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(0, 2, size=shape))
    labels = (rng.random(shape) < 0.4) * rng.uniform(0.5, 2, size=shape)
    labels[0] = 0
    loss, _ = cross_entropy(probs, labels, target=target, normalization=normalization)
    assert loss == pytest.approx(reference.cross_entropy_categorical(
        probs, labels, target=target, normalization=normalization), rel=1e-12)


@pytest.mark.parametrize("normalization", ["batch_size", "valid", "full", "none"])
@pytest.mark.parametrize("ignore", [None, -1])
def test_binary_matches_reference(normalization, ignore):
    rng = np.random.default_rng(1)
    probs = rng.uniform(0, 1, size=(4, 3, 2))
    probs[0, 0, 0] = 0.0  # clipped at eps
    probs[0, 1, 0] = 1.0
    labels = rng.random((4, 3, 2))
    if ignore is not None:
        labels[rng.random(labels.shape) < 0.3] = ignore
    loss, _ = cross_entropy(probs, labels, mode="binary", ignore_label=ignore, normalization=normalization)
    assert loss == pytest.approx(reference.cross_entropy_binary(
        probs, labels, ignore_label=ignore, normalization=normalization), rel=1e-12)


@pytest.mark.parametrize("mode", ["categorical", "binary"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_matches_finite_differences_inside_the_clip(mode, weighted):
    rng = np.random.default_rng(2)
    probs = rng.uniform(0.05, 0.95, size=(4, 3, 2))
    labels = rng.random((4, 3, 2)) if mode == "binary" else (rng.random((4, 3, 2)) < 0.5) * 1.0
    weights = rng.uniform(0.5, 2, size=4) if weighted else None

    def f():
        return cross_entropy(probs, labels, weights, mode=mode, target="count")[0]

    _, grad = cross_entropy(probs, labels, weights, mode=mode, target="count")
    np.testing.assert_allclose(grad, numeric_gradient(f, probs, 1e-7), rtol=1e-5, atol=1e-8)


def test_categorical_on_softmax_equals_multilabel_softmax_loss():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(6, 5))
    labels = (rng.random((6, 5)) < 0.5) * 1.0
    a = cross_entropy(softmax(scores), labels, normalization="valid")[0]
    b = multilabel_softmax_loss(scores, labels, normalization="valid")[0]
    assert a == pytest.approx(b, rel=1e-10)


def test_binary_on_sigmoid_equals_sigmoid_cross_entropy():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(6, 5))
    labels = rng.random((6, 5))
    a = cross_entropy(1 / (1 + np.exp(-scores)), labels, mode="binary")[0]
    b = sigmoid_cross_entropy(scores, labels)[0]
    assert a == pytest.approx(b, rel=1e-10)


def test_clipping_keeps_zero_probabilities_finite():
    probs = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    labels = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    # categorical: one wrong row of two, clipped at 1e-20; binary: two wrong elements in
    # one row of two, clipped at 1e-7 (float32 rounds 1 - 1e-7, hence the looser tolerance)
    for mode, eps, wrong in (("categorical", 1e-20, 1), ("binary", 1e-7, 2)):
        loss, grad = cross_entropy(probs, labels, mode=mode)
        assert np.isfinite(loss) and np.isfinite(grad).all()
        assert loss == pytest.approx(-np.log(eps) * wrong / 2, rel=1e-2)
    loss, _ = cross_entropy(probs, labels, eps=1e-3)
    assert loss == pytest.approx(-np.log(1e-3) / 2, rel=1e-5)


@pytest.mark.parametrize("bad,message", [
    (1.5, "probabilities must be <= 1; 1 values are above .largest 1.5.; feed the output of a Softmax"),
    (-0.1, "probabilities must be >= 0; 1 values are below"),
    (np.nan, "probabilities contain 1 NaN or Inf values"),
])
def test_values_that_are_not_probabilities_are_rejected(bad, message):
    probs = np.full((2, 2), 0.5)
    probs[1, 1] = bad
    with pytest.raises(ValueError, match=message):
        cross_entropy(probs, np.eye(2))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 16), mode=st.sampled_from(["categorical", "binary"]),
       c=st.integers(1, 5), saturate=st.booleans())
def test_float32_probabilities_at_the_edges_stay_finite(seed, mode, c, saturate):
    rng = np.random.default_rng(seed)
    probs = rng.random((3, c)).astype(np.float32)
    if saturate:
        probs = np.round(probs)
    labels = (rng.random((3, c)) < 0.5).astype(np.float32)
    loss, grad = cross_entropy(probs, labels, mode=mode)
    assert np.isfinite(loss) and np.isfinite(grad).all()
