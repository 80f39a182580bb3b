"""AsymmetricLoss and ZLPRLoss: reference values, exact gradients, properties, errors."""
import numpy as np
import pytest

import reference
from gradcheck import numeric_gradient
from caffe_losses.functional import asymmetric_loss, sigmoid_cross_entropy, zlpr_loss

NORMALIZATIONS = ["batch_size", "valid", "full", "none"]


def case(seed, shape, soft=False, ignore=None):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 2, size=shape)
    labels = rng.random(shape) if soft else (rng.random(shape) < 0.3).astype(np.float64)
    if ignore is not None:
        labels[rng.random(shape) < 0.2] = ignore
    return rng, scores, labels


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# -- AsymmetricLoss ---------------------------------------------------------------------

ASL_PARAMS = [
    {},
    dict(gamma_pos=1.0, gamma_neg=2.0, clip=0.0),
    dict(gamma_pos=0.5, gamma_neg=3.5, clip=0.2),
    dict(gamma_pos=2.0, gamma_neg=0.0, clip=0.05),
    dict(gamma_pos=0.0, gamma_neg=1.0, clip=0.1, class_weight=[1.0, 2.0, 0.5, 1.0, 3.0]),
]


# every parameter set at the default normalization, every normalization (the core's
# divisor: the same for every parameter set) with the defaults
ASL_RUNS = [(params, normalization) for params in ASL_PARAMS
            for normalization in NORMALIZATIONS + ["positive"]
            if not params or normalization == "batch_size"]


@pytest.mark.parametrize("params,normalization", ASL_RUNS)
@pytest.mark.parametrize("shape", [(4, 5), (2, 5, 2, 2)])
@pytest.mark.parametrize("ignore", [None, -1])
@pytest.mark.parametrize("soft", [False, True])
def test_asymmetric_matches_reference(params, shape, normalization, ignore, soft):
    _, scores, labels = case(0, shape, soft, ignore)
    loss, _ = asymmetric_loss(scores, labels, ignore_label=ignore, normalization=normalization,
                              **params)
    expected = reference.asymmetric_loss(scores, labels, ignore_label=ignore,
                                         normalization=normalization, **params)
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("weights_kind", ["sample", "location", "element"])
def test_asymmetric_weights_match_reference(weights_kind):
    rng, scores, labels = case(1, (3, 4, 5), soft=True)
    shape = {"sample": (3,), "location": (3, 5), "element": (3, 4, 5)}[weights_kind]
    weights = rng.uniform(0, 2, size=shape)
    loss, _ = asymmetric_loss(scores, labels, weights, gamma_pos=1.0, normalization="valid")
    # the reference takes per-sample weights as per-location ones
    ref_w = np.repeat(weights[:, None], 5, axis=1) if weights_kind == "sample" else weights
    expected = reference.asymmetric_loss(scores, labels, ref_w, gamma_pos=1.0, normalization="valid")
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("params", ASL_PARAMS)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_asymmetric_gradient_matches_finite_differences(params, soft, weighted):
    rng, scores, labels = case(4, (4, 5, 2), soft=soft, ignore=None if soft else -1)
    weights = rng.uniform(0.5, 2, size=(4, 5, 2)) if weighted else None
    clip = params.get("clip", 0.05)
    # keep p away from the kink of max(p - clip, 0), where the difference quotient straddles it
    p = sigmoid(scores)
    scores[np.abs(p - clip) < 1e-4] += 0.01
    kwargs = dict(params, ignore_label=None if soft else -1)

    def f():
        return asymmetric_loss(scores, labels, weights, **kwargs)[0]

    _, grad = asymmetric_loss(scores, labels, weights, **kwargs)
    # atol: the difference quotient's rounding, about eps |loss| / step
    np.testing.assert_allclose(grad, numeric_gradient(f, scores, 1e-6), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("params", ASL_PARAMS)
def test_asymmetric_focal_grad_false_holds_the_focusing_weights(params):
    # the gradient of a surrogate whose focusing weights are constants taken at the scores
    _, scores, labels = case(5, (3, 5), soft=True)
    gp, gn = params.get("gamma_pos", 0.0), params.get("gamma_neg", 4.0)
    clip = params.get("clip", 0.05)
    a = np.asarray(params.get("class_weight", 1.0))
    p0 = sigmoid(scores)
    focus_pos = (1 - p0) ** gp
    focus_neg = np.maximum(p0 - clip, 0) ** gn
    scores[np.abs(p0 - clip) < 1e-4] += 0.01
    x = scores.copy()

    def surrogate():
        p = sigmoid(x)
        p_m = np.maximum(p - clip, 0)
        return (a * -(labels * focus_pos * np.log(p)
                      + (1 - labels) * focus_neg * np.log(1 - p_m))).sum() / 3

    loss, grad = asymmetric_loss(scores, labels, focal_grad=False, **params)
    assert loss == pytest.approx(asymmetric_loss(scores, labels, **params)[0], rel=1e-15)
    np.testing.assert_allclose(grad, numeric_gradient(surrogate, x, 1e-6), rtol=1e-6, atol=1e-9)


def test_asymmetric_focal_grad_false_independent_formula():
    # d/ds of -y w+ log p - (1-y) w- log(1 - p_m), the weights w constant: -y w+ (1-p) +
    # (1-y) w- p (1-p) / (1 - p_m) where p > clip
    _, scores, labels = case(6, (4, 6), soft=True)
    p = sigmoid(scores)
    p_m = np.maximum(p - 0.05, 0)
    expected = (-labels * (1 - p) + (1 - labels) * p_m ** 4 * p * (1 - p) / (1 - p_m)) / 4
    _, grad = asymmetric_loss(scores, labels, focal_grad=False)
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-15)


def test_asymmetric_with_gammas_and_clip_zero_is_binary_cross_entropy():
    _, scores, labels = case(7, (5, 6), soft=True)
    for focal_grad in (True, False):
        a = asymmetric_loss(scores, labels, gamma_pos=0, gamma_neg=0, clip=0, focal_grad=focal_grad)
        b = sigmoid_cross_entropy(scores, labels)
        assert a[0] == pytest.approx(b[0], rel=1e-14)
        np.testing.assert_allclose(a[1], b[1], rtol=1e-13, atol=1e-16)


def test_asymmetric_clip_zero_has_no_margin():
    # clip 0: the negatives' term is p^g- log(1 - p), with no probability shifted away
    scores = np.array([[-3.0, 0.01, 2.0]])
    labels = np.zeros((1, 3))
    loss, _ = asymmetric_loss(scores, labels, gamma_neg=2, clip=0, normalization="none")
    p = sigmoid(scores)
    assert loss == pytest.approx(-(p ** 2 * np.log(1 - p)).sum(), rel=1e-13)
    # with a clip, a negative with p <= clip costs nothing and gets no gradient
    loss, grad = asymmetric_loss(np.array([[-4.0]]), np.zeros((1, 1)), clip=0.05)
    assert loss == 0 and grad[0, 0] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("params", ASL_PARAMS + [dict(gamma_neg=0.5, clip=0.0)])
@pytest.mark.parametrize("focal_grad", [True, False])
def test_asymmetric_extreme_scores_stay_finite(dtype, params, focal_grad):
    scores = np.array([[1e4, -1e4, 80.0, -80.0, 0.0]] * 2, dtype)
    labels = np.array([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype)
    loss, grad = asymmetric_loss(scores, labels, focal_grad=focal_grad, **params)
    assert np.isfinite(loss) and loss >= 0
    assert np.isfinite(grad).all() and grad.dtype == dtype
    # a confident wrong score: the gradient stays at its limit, a right one: 0 (the
    # reference) or, where the compiled kernel runs (in the image), e^-87 or e^-708 at
    # most, where its exp stops (jit._exp32, jit._exp)
    if params.get("gamma_pos", 0.0) == 0:
        assert grad[0, 1] == pytest.approx(-0.5 * params.get("class_weight", [1, 1])[1])
    assert abs(grad[0, 0]) < 1e-37 and abs(grad[1, 1]) < 1e-37


def test_asymmetric_ignored_elements_get_no_gradient_and_do_not_count():
    _, scores, labels = case(8, (4, 6), ignore=255)
    ignored = labels == 255
    loss, grad = asymmetric_loss(scores, labels, ignore_label=255, normalization="valid")
    assert not grad[ignored].any()
    kept = reference.asymmetric_loss(scores, labels, ignore_label=255,
                                     normalization="none") / np.count_nonzero(~ignored)
    assert loss == pytest.approx(kept, rel=1e-12)


def test_asymmetric_negative_weights_and_wrong_class_weight_are_rejected():
    with pytest.raises(ValueError, match="weights must be >= 0"):
        asymmetric_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="class_weight has 2 values but the scores have 3"):
        asymmetric_loss(np.zeros((2, 3)), np.zeros((2, 3)), class_weight=[1.0, 2.0])


# -- ZLPRLoss ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 5), (2, 5, 2, 3)])
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("ignore", [None, -1])
@pytest.mark.parametrize("weights_kind", [None, "sample", "location"])
def test_zlpr_matches_reference(shape, normalization, ignore, weights_kind):
    rng, scores, labels = case(10, shape, ignore=ignore)
    if ignore is not None:
        labels[0] = ignore  # a location with nothing counted
    loc = (shape[0],) + shape[2:]
    weights = {None: None, "sample": rng.uniform(0, 2, shape[0]),
               "location": rng.uniform(0, 2, loc)}[weights_kind]
    loss, _ = zlpr_loss(scores, labels, weights, ignore_label=ignore, normalization=normalization)
    ref_w = weights
    if weights_kind == "sample" and len(shape) > 2:
        ref_w = np.broadcast_to(weights.reshape((-1,) + (1,) * (len(shape) - 2)), loc)
    expected = reference.zlpr_loss(scores, labels, ref_w, ignore_label=ignore,
                                   normalization=normalization)
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("shape", [(4, 5), (2, 4, 3)])
@pytest.mark.parametrize("ignore", [None, 255])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("normalization", ["batch_size", "valid"])
def test_zlpr_gradient_matches_finite_differences(shape, ignore, weighted, normalization):
    rng, scores, labels = case(11, shape, ignore=ignore)
    weights = rng.uniform(0.5, 2, size=(shape[0],) + shape[2:]) if weighted else None
    kwargs = dict(ignore_label=ignore, normalization=normalization)

    def f():
        return zlpr_loss(scores, labels, weights, **kwargs)[0]

    _, grad = zlpr_loss(scores, labels, weights, **kwargs)
    np.testing.assert_allclose(grad, numeric_gradient(f, scores, 1e-6), rtol=1e-6, atol=1e-9)
    if ignore is not None:
        assert not grad[labels == ignore].any()


def test_zlpr_ignored_class_is_in_neither_sum():
    scores = np.array([[2.0, -1.0, 0.5]])
    loss, _ = zlpr_loss(scores, np.array([[1.0, 0.0, 9.0]]), ignore_label=9, normalization="none")
    assert loss == pytest.approx(np.log1p(np.exp(-1.0)) + np.log1p(np.exp(-2.0)), rel=1e-14)


def test_zlpr_location_with_everything_ignored_is_not_valid():
    scores = np.zeros((2, 3))
    labels = np.array([[1.0, 0.0, 0.0], [7.0, 7.0, 7.0]])
    loss, grad = zlpr_loss(scores, labels, ignore_label=7, normalization="valid")
    assert loss == pytest.approx(np.log(3) + np.log(2), rel=1e-14)
    assert not grad[1].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zlpr_extreme_scores_stay_finite(dtype):
    scores = np.array([[1e4, -1e4, 1e4, 0.0], [-1e4, 1e4, 3.0, -1e4]], dtype)
    labels = np.array([[1, 0, 0, 1], [1, 0, 1, 0]], dtype)
    loss, grad = zlpr_loss(scores, labels, normalization="none")
    assert np.isfinite(loss) and np.isfinite(grad).all() and grad.dtype == dtype
    assert loss == pytest.approx(1e4 + np.log(2) + 2e4, rel=1e-6)
    np.testing.assert_allclose(grad[0], [0, 0, 1, -0.5], atol=1e-6)


def test_zlpr_predicts_where_the_score_is_positive():
    # the loss is lowest with positives above 0 and negatives below
    labels = np.array([[1.0, 0.0, 1.0]])
    good = zlpr_loss(np.array([[3.0, -3.0, 3.0]]), labels)[0]
    bad = zlpr_loss(np.array([[-3.0, 3.0, -3.0]]), labels)[0]
    assert good < 0.2 < bad


@pytest.mark.parametrize("bad,message", [
    (0.5, "labels must be 0 or 1; found 1 other values .first: 0.5.; set ignore_label"),
    (2.0, "labels must be 0 or 1; found 1 other values .first: 2."),
    (np.nan, "labels contain 1 NaN or Inf values"),
])
def test_zlpr_labels_not_zero_or_one_are_rejected(bad, message):
    labels = np.zeros((2, 3))
    labels[0, 1] = bad
    with pytest.raises(ValueError, match=message):
        zlpr_loss(np.zeros((2, 3)), labels)


def test_zlpr_bad_label_with_an_ignore_label_names_it():
    labels = np.array([[0.0, 1.0, 5.0], [255, 0, 1]])
    with pytest.raises(ValueError, match="labels must be 0 or 1 or the ignore_label 255; found 1"):
        zlpr_loss(np.zeros((2, 3)), labels, ignore_label=255)


def test_zlpr_weights_are_checked():
    with pytest.raises(ValueError, match="weights must be >= 0"):
        zlpr_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="weights have 6 values"):
        zlpr_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.ones(6))  # not per element
