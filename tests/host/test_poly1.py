"""Poly-1 (Leng et al., ICLR 2022) on the four losses that take ``poly_eps``: the added term
against the formula written out here in plain numpy, and the gradient against finite
differences."""
import numpy as np
import pytest

from caffe_losses.functional import (sigmoid_cross_entropy, sigmoid_focal_loss,
                                     softmax_cross_entropy, softmax_focal_loss)
from gradcheck import numeric_gradient

EPS = [0.7, -0.5]


def sparse_case(seed=0, shape=(6, 4)):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 2, shape)
    labels = rng.integers(0, shape[1], (shape[0],) + shape[2:]).astype(np.float64)
    return scores, labels


def dense_case(seed=1, shape=(5, 3)):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 2, shape), rng.random(shape)


def softmax_probs(scores):
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("smoothing,class_weight", [(0.0, None), (0.2, None), (0.1, [1, 2, 0.5, 3])])
def test_softmax_cross_entropy_adds_eps_a_y_one_minus_p_t(eps, smoothing, class_weight):
    scores, labels = sparse_case()
    kwargs = dict(label_smoothing=smoothing, class_weight=class_weight, normalization="none")
    plain, _ = softmax_cross_entropy(scores, labels, **kwargs)
    poly, _ = softmax_cross_entropy(scores, labels, poly_eps=eps, **kwargs)
    p = softmax_probs(scores)
    y = labels.astype(int)
    a = np.ones(4) if class_weight is None else np.asarray(class_weight, float)
    q = np.full(p.shape, smoothing / 4) + (1 - smoothing) * np.eye(4)[y]  # the smoothed target
    p_t = (q * p).sum(axis=1)
    assert poly - plain == pytest.approx(eps * (a[y] * (1 - p_t)).sum(), rel=1e-10)


@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("gamma,alpha", [(0.0, None), (2.0, [0.2, 0.4, 0.6, 0.8]), (0.5, 0.3)])
def test_softmax_focal_adds_eps_alpha_y_one_minus_p_y_to_gamma_plus_one(eps, gamma, alpha):
    scores, labels = sparse_case(2)
    kwargs = dict(gamma=gamma, alpha=alpha, normalization="none")
    plain, _ = softmax_focal_loss(scores, labels, **kwargs)
    poly, _ = softmax_focal_loss(scores, labels, poly_eps=eps, **kwargs)
    y = labels.astype(int)
    p_y = softmax_probs(scores)[np.arange(len(y)), y]
    a = np.ones(4) if alpha is None else np.broadcast_to(np.asarray(alpha, float), (4,))
    assert poly - plain == pytest.approx(eps * (a[y] * (1 - p_y) ** (gamma + 1)).sum(), rel=1e-10)


@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("focal,gamma,alpha", [(False, 0.0, None), (True, 2.0, 0.25), (True, 0.5, None),
                                               (True, 3.0, 0.75)])
def test_sigmoid_losses_add_eps_a_alpha_t_one_minus_p_t_to_gamma_plus_one(eps, focal, gamma, alpha):
    scores, labels = dense_case()
    class_weight = [1.0, 2.0, 0.5]
    kwargs = dict(class_weight=class_weight, pos_weight=1.5, normalization="none")
    if focal:
        kwargs.update(gamma=gamma, alpha=alpha)
        fn = sigmoid_focal_loss
    else:
        fn = sigmoid_cross_entropy
    plain, _ = fn(scores, labels, **kwargs)
    poly, _ = fn(scores, labels, poly_eps=eps, **kwargs)
    p = 1 / (1 + np.exp(-scores))
    p_t = p * labels + (1 - p) * (1 - labels)
    alpha_t = 1.0 if alpha is None else alpha * labels + (1 - alpha) * (1 - labels)
    expected = eps * (np.asarray(class_weight) * alpha_t * (1 - p_t) ** (gamma + 1)).sum()
    assert poly - plain == pytest.approx(expected, rel=1e-10)


GRADIENT_CASES = [
    (softmax_cross_entropy, "sparse", {}),
    (softmax_cross_entropy, "sparse", {"label_smoothing": 0.2, "class_weight": [1, 2, 0.5, 3]}),
    (softmax_focal_loss, "sparse", {"gamma": 2.0, "alpha": [0.2, 0.4, 0.6, 0.8]}),
    (softmax_focal_loss, "sparse", {"gamma": 0.5}),
    (sigmoid_cross_entropy, "dense", {"pos_weight": 2.0, "class_weight": [1, 2, 0.5, 3]}),
    (sigmoid_focal_loss, "dense", {"gamma": 2.0, "alpha": 0.25}),
    (sigmoid_focal_loss, "dense", {"gamma": 1.5, "alpha": None, "normalization": "positive"}),
]


@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("fn,kind,kwargs", GRADIENT_CASES)
def test_poly1_gradient_matches_finite_differences(fn, kind, kwargs, eps):
    shape = (3, 4, 2, 2)
    if kind == "sparse":
        scores, labels = sparse_case(3, shape)
        labels = labels.reshape(3, 1, 2, 2)
    else:
        scores, labels = dense_case(4, shape)
    _, grad = fn(scores, labels, poly_eps=eps, **kwargs)
    # (a step of 1e-5: the sigmoid losses' log(1 + exp(-|s|)) carries one rounding of 1 + e,
    # which a smaller step would magnify)
    numeric = numeric_gradient(lambda: fn(scores, labels, poly_eps=eps, **kwargs)[0], scores, 1e-5)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
