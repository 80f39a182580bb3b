"""sigmoid_cross_entropy and sigmoid_focal_loss: reference values, exact gradients, properties;
the label checks that AsymmetricLoss shares with them (inputs.binary_labels)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import reference
from gradcheck import numeric_gradient
from caffe_losses.functional import asymmetric_loss, sigmoid_cross_entropy, sigmoid_focal_loss

NORMALIZATIONS = ["batch_size", "valid", "full", "none"]


def case(seed, shape, soft=False, ignore=None):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 2, size=shape)
    labels = rng.random(shape) if soft else (rng.random(shape) < 0.3).astype(np.float64)
    if ignore is not None:
        labels[rng.random(shape) < 0.2] = ignore
    return rng, scores, labels


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 2, 2)])
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("ignore", [None, -1])
@pytest.mark.parametrize("soft", [False, True])
def test_sigmoid_cross_entropy_matches_reference(shape, normalization, ignore, soft):
    _, scores, labels = case(0, shape, soft, ignore)
    loss, _ = sigmoid_cross_entropy(scores, labels, ignore_label=ignore, normalization=normalization)
    expected = reference.sigmoid_focal_loss(scores, labels, ignore_label=ignore, gamma=0, alpha=None,
                                            normalization=normalization)
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("pos_weight", [None, 3.0, [0.5, 1.0, 2.0, 4.0, 1.5]])
@pytest.mark.parametrize("class_weight", [None, [1.0, 0.0, 2.0, 0.5, 1.0]])
def test_sigmoid_cross_entropy_weights_match_reference(pos_weight, class_weight):
    rng, scores, labels = case(1, (4, 5, 3), soft=True, ignore=None)
    weights = rng.uniform(0, 2, size=(4, 5, 3))
    loss, _ = sigmoid_cross_entropy(scores, labels, weights, pos_weight=pos_weight,
                                    class_weight=class_weight, normalization="valid")
    expected = reference.sigmoid_focal_loss(scores, labels, weights, gamma=0, alpha=None,
                                            pos_weight=pos_weight, class_weight=class_weight,
                                            normalization="valid")
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("alpha", [None, 0.25, 0.9])
@pytest.mark.parametrize("normalization", ["batch_size", "positive", "valid"])
def test_sigmoid_focal_matches_reference(gamma, alpha, normalization):
    _, scores, labels = case(2, (3, 4, 2, 2), soft=False, ignore=-1)
    loss, _ = sigmoid_focal_loss(scores, labels, ignore_label=-1, gamma=gamma, alpha=alpha,
                                 normalization=normalization)
    expected = reference.sigmoid_focal_loss(scores, labels, ignore_label=-1, gamma=gamma, alpha=alpha,
                                            normalization=normalization)
    assert loss == pytest.approx(expected, rel=1e-12)


def test_sigmoid_focal_with_soft_labels_and_weights_matches_reference():
    rng, scores, labels = case(3, (3, 4, 5), soft=True)
    weights = rng.uniform(0, 2, size=(3, 5))  # per location
    loss, _ = sigmoid_focal_loss(scores, labels, weights, gamma=1.5, alpha=0.3,
                                 pos_weight=2.0, class_weight=[1, 2, 0.5, 1], normalization="positive")
    expected = reference.sigmoid_focal_loss(scores, labels, weights, gamma=1.5, alpha=0.3, pos_weight=2.0,
                                            class_weight=[1, 2, 0.5, 1], normalization="positive")
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kwargs", [
    dict(gamma=0.0, alpha=None),
    dict(gamma=2.0, alpha=0.25),
    dict(gamma=0.5, alpha=0.75, pos_weight=[1.0, 2.0, 0.5]),
    dict(gamma=1.0, alpha=None, class_weight=[0.2, 1.0, 3.0]),
    dict(gamma=3.0, alpha=0.5, normalization="positive"),
])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_sigmoid_focal_gradient_matches_finite_differences(kwargs, soft, weighted):
    rng, scores, labels = case(4, (4, 3, 2), soft=soft, ignore=None if soft else -1)
    weights = rng.uniform(0.5, 2, size=(4, 3, 2)) if weighted else None
    kwargs = dict(kwargs, ignore_label=None if soft else -1)

    def f():
        return sigmoid_focal_loss(scores, labels, weights, **kwargs)[0]

    _, grad = sigmoid_focal_loss(scores, labels, weights, **kwargs)
    np.testing.assert_allclose(grad, numeric_gradient(f, scores, 1e-6), rtol=1e-6, atol=1e-9)


def test_focal_with_gamma_zero_and_no_alpha_is_exactly_sigmoid_cross_entropy():
    rng, scores, labels = case(5, (6, 7), soft=True)
    a = sigmoid_focal_loss(scores.astype(np.float32), labels.astype(np.float32), gamma=0, alpha=None)
    b = sigmoid_cross_entropy(scores.astype(np.float32), labels.astype(np.float32))
    assert a[0] == b[0]
    assert np.array_equal(a[1], b[1])


def test_sigmoid_cross_entropy_gradient_is_sigmoid_minus_label_over_batch():
    _, scores, labels = case(6, (5, 3))
    _, grad = sigmoid_cross_entropy(scores, labels)
    np.testing.assert_allclose(grad, (1 / (1 + np.exp(-scores)) - labels) / 5, rtol=1e-12)


def test_ignored_elements_get_no_gradient_and_do_not_count():
    _, scores, labels = case(7, (4, 6), ignore=255)
    ignored = labels == 255
    loss, grad = sigmoid_cross_entropy(scores, labels, ignore_label=255, normalization="valid")
    assert not grad[ignored].any()
    kept = reference.sigmoid_focal_loss(scores, labels, ignore_label=255, gamma=0, alpha=None,
                                        normalization="none") / np.count_nonzero(~ignored)
    assert loss == pytest.approx(kept, rel=1e-12)


def test_positive_normalization_divides_by_number_of_positives():
    scores = np.zeros((2, 4))
    labels = np.array([[1.0, 0, 0, 0], [1, 1, 0, 0]])
    total = sigmoid_focal_loss(scores, labels, normalization="none")[0]
    assert sigmoid_focal_loss(scores, labels, normalization="positive")[0] == pytest.approx(total / 3)
    # no positive at all: divided by 1, not 0
    assert sigmoid_focal_loss(scores, np.zeros((2, 4)), normalization="positive")[0] == pytest.approx(
        sigmoid_focal_loss(scores, np.zeros((2, 4)), normalization="none")[0])


@pytest.mark.parametrize("bad,message", [
    (1.5, "labels must be <= 1; 1 values are above .largest 1.5.; set ignore_label"),
    (-0.5, "labels must be >= 0; 1 values are below"),
    (np.nan, "labels contain 1 NaN or Inf values"),
])
@pytest.mark.parametrize("loss", [sigmoid_cross_entropy, sigmoid_focal_loss, asymmetric_loss])
def test_labels_outside_zero_one_are_rejected(bad, message, loss):
    labels = np.zeros((2, 3))
    labels[0, 1] = bad
    with pytest.raises(ValueError, match=message):
        loss(np.zeros((2, 3)), labels)


def test_per_class_parameter_of_wrong_length_is_rejected():
    with pytest.raises(ValueError, match="pos_weight has 2 values but the scores have 3 classes"):
        sigmoid_cross_entropy(np.zeros((2, 3)), np.zeros((2, 3)), pos_weight=[1.0, 2.0])


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 5), spatial=st.integers(1, 3),
       magnitude=st.sampled_from([1.0, 50.0, 1e4]), seed=st.integers(0, 2 ** 16),
       gamma=st.sampled_from([0.0, 0.5, 2.0]), alpha=st.sampled_from([None, 0.25]),
       soft=st.booleans(), pos_weight=st.sampled_from([None, 3.0]),
       normalization=st.sampled_from(NORMALIZATIONS + ["positive"]))
def test_extreme_float32_scores_stay_finite(n, c, spatial, magnitude, seed, gamma, alpha, soft,
                                            pos_weight, normalization):
    rng = np.random.default_rng(seed)
    scores = (rng.uniform(-1, 1, size=(n, c, spatial)) * magnitude).astype(np.float32)
    labels = (rng.random((n, c, spatial)) if soft else rng.random((n, c, spatial)) < 0.5).astype(np.float32)
    loss, grad = sigmoid_focal_loss(scores, labels, gamma=gamma, alpha=alpha, pos_weight=pos_weight,
                                    normalization=normalization)
    assert np.isfinite(loss) and loss >= 0
    assert np.isfinite(grad).all() and grad.dtype == np.float32
