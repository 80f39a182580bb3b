"""softmax_cross_entropy and softmax_focal_loss (sparse labels): reference values, gradients."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import reference
from gradcheck import numeric_gradient
from caffe_losses.functional import softmax_cross_entropy, softmax_focal_loss

NORMALIZATIONS = ["valid", "batch_size", "full", "none"]


def case(seed, shape, ignore=None):
    """scores (N, C, *spatial) and labels (N, *spatial)."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 2, size=shape)
    labels = rng.integers(0, shape[1], size=(shape[0],) + shape[2:]).astype(np.float64)
    if ignore is not None:
        labels[rng.random(labels.shape) < 0.25] = ignore
    return rng, scores, labels


@pytest.mark.parametrize("shape", [(6, 5), (2, 4, 3, 2)])
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("ignore", [None, 255])
@pytest.mark.parametrize("class_weight", [None, [0.5, 2.0, 1.0, 0.0, 3.0][:4] + [1.0]])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_matches_reference(shape, normalization, ignore, class_weight,
                                                 label_smoothing):
    cw = None if class_weight is None else class_weight[:shape[1]]
    _, scores, labels = case(0, shape, ignore)
    loss, _ = softmax_cross_entropy(scores, labels, ignore_label=ignore, class_weight=cw,
                                    label_smoothing=label_smoothing, normalization=normalization)
    expected = reference.softmax_focal_loss(scores, labels, ignore_label=ignore, class_weight=cw,
                                            label_smoothing=label_smoothing, normalization=normalization)
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, 0.25, [0.1, 0.2, 0.3, 0.4]])
@pytest.mark.parametrize("normalization", ["valid", "batch_size"])
def test_softmax_focal_matches_reference(gamma, alpha, normalization):
    _, scores, labels = case(1, (3, 4, 2, 3), ignore=-1)
    loss, _ = softmax_focal_loss(scores, labels, ignore_label=-1, gamma=gamma, alpha=alpha,
                                 normalization=normalization)
    expected = reference.softmax_focal_loss(scores, labels, ignore_label=-1, gamma=gamma,
                                            alpha=alpha if alpha is not None or gamma else 1.0,
                                            normalization=normalization)
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("weights_shape", [(3,), (3, 2, 2)])
def test_location_weights_match_reference(weights_shape):
    rng, scores, labels = case(2, (3, 5, 2, 2), ignore=255)
    weights = rng.uniform(0, 2, size=weights_shape)
    for normalization in NORMALIZATIONS:
        loss, _ = softmax_cross_entropy(scores, labels, weights, ignore_label=255,
                                        class_weight=[1, 2, 3, 4, 5], normalization=normalization)
        expected = reference.softmax_focal_loss(scores, labels, weights, ignore_label=255,
                                                class_weight=[1, 2, 3, 4, 5], normalization=normalization)
        assert loss == pytest.approx(expected, rel=1e-12)
        loss, _ = softmax_focal_loss(scores, labels, weights, ignore_label=255, gamma=1.5,
                                     normalization=normalization)
        expected = reference.softmax_focal_loss(scores, labels, weights, ignore_label=255, gamma=1.5,
                                                alpha=1.0, normalization=normalization)
        assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(class_weight=[0.5, 2.0, 1.0, 3.0]),
    dict(label_smoothing=0.2),
    dict(class_weight=[0.5, 2.0, 1.0, 3.0], label_smoothing=0.3, normalization="batch_size"),
])
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy_gradient_matches_finite_differences(kwargs, weighted):
    rng, scores, labels = case(3, (3, 4, 2), ignore=-1)
    weights = rng.uniform(0.5, 2, size=(3, 2)) if weighted else None

    def f():
        return softmax_cross_entropy(scores, labels, weights, ignore_label=-1, **kwargs)[0]

    _, grad = softmax_cross_entropy(scores, labels, weights, ignore_label=-1, **kwargs)
    np.testing.assert_allclose(grad, numeric_gradient(f, scores, 1e-6), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("alpha", [None, 0.5, [1.0, 0.2, 3.0, 0.7]])
def test_softmax_focal_gradient_matches_finite_differences(gamma, alpha):
    rng, scores, labels = case(4, (4, 4, 3), ignore=-1)
    weights = rng.uniform(0.5, 2, size=4)

    def f():
        return softmax_focal_loss(scores, labels, weights, ignore_label=-1, gamma=gamma, alpha=alpha)[0]

    _, grad = softmax_focal_loss(scores, labels, weights, ignore_label=-1, gamma=gamma, alpha=alpha)
    np.testing.assert_allclose(grad, numeric_gradient(f, scores, 1e-6), rtol=1e-6, atol=1e-9)


def test_focal_with_gamma_zero_and_no_alpha_equals_softmax_cross_entropy():
    _, scores, labels = case(5, (5, 6, 2), ignore=255)
    s32 = scores.astype(np.float32)
    a = softmax_focal_loss(s32, labels, ignore_label=255, gamma=0, alpha=None)
    b = softmax_cross_entropy(s32, labels, ignore_label=255)
    assert a[0] == pytest.approx(b[0], rel=1e-6)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-8)


def test_gradient_is_softmax_minus_one_hot_over_valid_count():
    _, scores, labels = case(6, (6, 3), ignore=-1)
    _, grad = softmax_cross_entropy(scores, labels, ignore_label=-1)
    counted = labels != -1
    p = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    expected = p - np.eye(3)[np.where(counted, labels, 0).astype(int)]
    expected[~counted] = 0
    np.testing.assert_allclose(grad, expected / counted.sum(), rtol=1e-10, atol=1e-15)


def test_all_ignored_gives_zero_not_nan():
    for fn in (softmax_cross_entropy, softmax_focal_loss):
        loss, grad = fn(np.ones((3, 4)), np.full(3, 255.0), ignore_label=255)
        assert loss == 0.0 and not grad.any()


@pytest.mark.parametrize("labels,message", [
    ([0, 4, 1], r"labels must be integer class indices in \[0, 4\); found 1 other values \(first: 4\)"),
    ([0, -1, 1], r"labels must be integer class indices in \[0, 4\) or be the ignore_label 255; found 1"),
    ([0, 1.5, 1], r"found 1 other values \(first: 1.5\)"),
    ([0, np.nan, 1], "labels contain 1 NaN or Inf values"),
])
def test_out_of_range_labels_are_rejected(labels, message):
    ignore = 255 if "ignore_label" in message else None
    with pytest.raises(ValueError, match=message):
        softmax_cross_entropy(np.zeros((3, 4)), np.array(labels, dtype=np.float64), ignore_label=ignore)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 6), spatial=st.integers(1, 3),
       magnitude=st.sampled_from([1.0, 50.0, 1e4]), seed=st.integers(0, 2 ** 16),
       gamma=st.sampled_from([0.0, 0.5, 2.0]), smoothing=st.sampled_from([0.0, 0.1]),
       ignore_some=st.booleans(), normalization=st.sampled_from(NORMALIZATIONS))
def test_extreme_float32_scores_stay_finite(n, c, spatial, magnitude, seed, gamma, smoothing,
                                            ignore_some, normalization):
    rng = np.random.default_rng(seed)
    scores = (rng.uniform(-1, 1, size=(n, c, spatial)) * magnitude).astype(np.float32)
    labels = rng.integers(0, c, size=(n, spatial)).astype(np.float32)
    if ignore_some:
        labels[rng.random(labels.shape) < 0.5] = -1
    for loss, grad in (
            softmax_cross_entropy(scores, labels, ignore_label=-1, label_smoothing=smoothing,
                                  normalization=normalization),
            softmax_focal_loss(scores, labels, ignore_label=-1, gamma=gamma, normalization=normalization)):
        # N x C x H x W blobs may share one softmax shift (see Softmax.shift): a certain
        # prediction then rounds to a loss within float32 resolution of the scores, either side
        assert np.isfinite(loss) and loss >= -1e-6 * max(1.0, magnitude)
        assert np.isfinite(grad).all() and grad.dtype == np.float32
