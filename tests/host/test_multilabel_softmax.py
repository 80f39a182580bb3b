"""multilabel_softmax_loss: values against a plain reference, exact gradients, properties."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import reference
from gradcheck import numeric_gradient
from caffe_losses.functional import multilabel_softmax_loss

NORMALIZATIONS = ["batch_size", "valid", "full", "none"]


def random_case(rng, shape, real_valued=False, empty_rows=True):
    scores = rng.normal(0, 2, size=shape)
    labels = (rng.random(shape) < 0.4).astype(np.float64)
    if real_valued:
        labels *= rng.uniform(0.1, 3.0, size=shape)
    if empty_rows:
        labels[0] = 0  # a sample (or all its locations) with no positive label
    return scores, labels


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 2, 3)])
@pytest.mark.parametrize("target", ["sum", "count"])
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("real_valued", [False, True])
def test_loss_matches_plain_reference(shape, target, normalization, real_valued):
    rng = np.random.default_rng(0)
    scores, labels = random_case(rng, shape, real_valued)
    loss, _ = multilabel_softmax_loss(scores, labels, target=target, normalization=normalization)
    expected = reference.multilabel_softmax_loss(scores, labels, target=target,
                                                 normalization=normalization)
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("per", ["sample", "location"])
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_weighted_loss_matches_plain_reference(per, normalization):
    rng = np.random.default_rng(1)
    scores, labels = random_case(rng, (4, 5, 2, 3), real_valued=True)
    weights = rng.uniform(0, 2, size=(4,) if per == "sample" else (4, 2, 3))
    loss, _ = multilabel_softmax_loss(scores, labels, weights, normalization=normalization)
    expected = reference.multilabel_softmax_loss(scores, labels, weights,
                                                 normalization=normalization)
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("shape,axis", [((6, 5), 1), ((2, 4, 3, 2), 1), ((2, 3, 4), 2), ((4, 3), 0)])
@pytest.mark.parametrize("target", ["sum", "count"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_matches_finite_differences(shape, axis, target, weighted):
    # Real-valued labels: the case where 'count' targets do not sum to one and
    # a gradient of the form (p - t) would be wrong.
    rng = np.random.default_rng(2)
    scores = rng.normal(0, 2, size=shape)
    labels = (rng.random(shape) < 0.5) * rng.uniform(0.2, 3.0, size=shape)
    per_location = int(np.prod(shape)) // shape[axis]
    weights = rng.uniform(0.5, 2, size=shape[0] if axis else per_location) if weighted else None

    def f():
        return multilabel_softmax_loss(scores, labels, weights, axis=axis, target=target,
                                       normalization="valid")[0]

    _, grad = multilabel_softmax_loss(scores, labels, weights, axis=axis, target=target,
                                      normalization="valid")
    np.testing.assert_allclose(grad, numeric_gradient(f, scores, 1e-6), rtol=1e-6, atol=1e-8)


def test_one_hot_labels_give_the_ordinary_softmax_cross_entropy():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(8, 6))
    classes = rng.integers(0, 6, size=8)
    labels = np.eye(6)[classes]
    loss, grad = multilabel_softmax_loss(scores, labels)
    p = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(8), classes])), rel=1e-12)
    np.testing.assert_allclose(grad, (p - labels) / 8, rtol=1e-10, atol=1e-15)


def test_count_target_scales_by_one_over_number_of_positives():
    scores = np.array([[0.0, 0.0, 0.0, 0.0]])
    labels = np.array([[1.0, 3.0, 0.0, 0.0]])
    loss_count, _ = multilabel_softmax_loss(scores, labels, target="count")
    loss_sum, _ = multilabel_softmax_loss(scores, labels, target="sum")
    # uniform softmax: -log p = log 4 for every class
    assert loss_count == pytest.approx((1 + 3) / 2 * np.log(4))
    assert loss_sum == pytest.approx(np.log(4))


def test_rows_without_positive_labels_contribute_nothing_and_get_no_gradient():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(4, 5))
    labels = (rng.random((4, 5)) < 0.5).astype(np.float64)
    labels[:, 0] = 1
    labels[2] = 0
    for target in ("sum", "count"):
        loss, grad = multilabel_softmax_loss(scores, labels, target=target, normalization="none")
        rest, _ = multilabel_softmax_loss(np.delete(scores, 2, 0), np.delete(labels, 2, 0),
                                          target=target, normalization="none")
        assert np.isfinite(loss) and loss == pytest.approx(rest)
        assert not grad[2].any()


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_all_empty_batch_gives_zero_not_nan(normalization):
    loss, grad = multilabel_softmax_loss(np.ones((3, 4)), np.zeros((3, 4)),
                                         normalization=normalization)
    assert loss == 0.0 and not grad.any()


def test_normalizers_relate_as_caffe_defines_them():
    rng = np.random.default_rng(5)
    scores, labels = random_case(rng, (4, 3, 2, 5))
    total = multilabel_softmax_loss(scores, labels, normalization="none")[0]
    valid = np.count_nonzero(labels.sum(axis=1))
    assert multilabel_softmax_loss(scores, labels, normalization="full")[0] == pytest.approx(total / 40)
    assert multilabel_softmax_loss(scores, labels, normalization="batch_size")[0] == pytest.approx(total / 4)
    assert multilabel_softmax_loss(scores, labels, normalization="valid")[0] == pytest.approx(total / valid)


def test_valid_with_weights_divides_by_the_weight_of_counted_locations():
    scores = np.zeros((3, 2))
    labels = np.array([[1.0, 0], [0, 1], [0, 0]])
    weights = np.array([2.0, 3.0, 100.0])  # the last sample has no label: not counted
    loss, _ = multilabel_softmax_loss(scores, labels, weights, normalization="valid")
    assert loss == pytest.approx(np.log(2))


def test_float32_input_keeps_float32_gradient():
    scores = np.zeros((2, 3), dtype=np.float32)
    labels = np.eye(3, dtype=np.float32)[:2]
    _, grad = multilabel_softmax_loss(scores, labels)
    assert grad.dtype == np.float32


@pytest.mark.parametrize("bad,message", [
    (-1.0, "labels must be >= 0; 1 values are below .smallest -1."),
    (np.nan, "labels contain 1 NaN or Inf values"),
    (np.inf, "labels contain 1 NaN or Inf values"),
])
def test_invalid_labels_are_rejected(bad, message):
    labels = np.eye(3)
    labels[1, 2] = bad
    with pytest.raises(ValueError, match=message):
        multilabel_softmax_loss(np.zeros((3, 3)), labels)


def test_weights_of_the_wrong_size_are_rejected():
    with pytest.raises(ValueError, match="one per sample .3. or one per location .6."):
        multilabel_softmax_loss(np.zeros((3, 4, 2)), np.ones((3, 4, 2)), np.ones(5))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 6), spatial=st.integers(1, 3),
       magnitude=st.sampled_from([1.0, 30.0, 1e4]), seed=st.integers(0, 2 ** 16),
       target=st.sampled_from(["sum", "count"]), normalization=st.sampled_from(NORMALIZATIONS))
def test_extreme_float32_scores_stay_finite(n, c, spatial, magnitude, seed, target, normalization):
    rng = np.random.default_rng(seed)
    scores = (rng.uniform(-1, 1, size=(n, c, spatial)) * magnitude).astype(np.float32)
    labels = (rng.random((n, c, spatial)) < 0.5).astype(np.float32)
    loss, grad = multilabel_softmax_loss(scores, labels, target=target, normalization=normalization)
    # N x C x H x W blobs may share one softmax shift (see Softmax.shift): a certain
    # prediction then rounds to a loss within float32 resolution of the scores, either side
    assert np.isfinite(loss) and loss >= -1e-6 * max(1.0, magnitude)
    assert np.isfinite(grad).all()
    # softmax gradients of one location sum to zero over the classes
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-5)


def test_shift_of_scores_does_not_change_loss():
    rng = np.random.default_rng(6)
    scores, labels = random_case(rng, (3, 5))
    a = multilabel_softmax_loss(scores, labels)
    b = multilabel_softmax_loss(scores + 1000.0, labels)
    assert a[0] == pytest.approx(b[0], rel=1e-9)
    np.testing.assert_allclose(a[1], b[1], atol=1e-12)
