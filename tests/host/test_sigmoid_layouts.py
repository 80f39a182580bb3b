"""The sigmoid losses on blobs of every layout, with weights of every kind and scores
that overflow exp(s): the same results as the float64 reference, no NaN, and bad values
named and counted over the whole blob."""
import numpy as np
import pytest

import reference
from caffe_losses import functional as F

SHAPES = [(7, 5), (3, 4, 5, 3), (2, 3, 11)]


def case(shape, seed=0, ignore=None, extreme=False):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 3, size=shape).astype(np.float32)
    if extreme:  # one element that overflows exp(s): its block takes the stable path
        scores.reshape(-1)[rng.integers(scores.size)] = 95.0
    labels = (rng.random(shape) < 0.3).astype(np.float32)
    if ignore is not None:
        labels[rng.random(shape) < 0.2] = ignore
    return rng, scores, labels


def location_weights(rng, shape):
    return rng.uniform(0, 2, size=(shape[0],) + tuple(shape[2:])).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kwargs", [
    dict(gamma=0.0, alpha=None),
    dict(gamma=2.0, alpha=0.25),
    dict(gamma=0.5, alpha=0.75, normalization="positive"),
    dict(gamma=2.0, alpha=None, ignore_label=-1, normalization="valid"),
])
@pytest.mark.parametrize("weighted", [None, "element", "location"])
@pytest.mark.parametrize("extreme", [False, True])
def test_sigmoid_focal_matches_reference(shape, kwargs, weighted, extreme):
    rng, scores, labels = case(shape, ignore=kwargs.get("ignore_label"), extreme=extreme)
    weights = None
    if weighted == "element":
        weights = rng.uniform(0, 2, size=shape).astype(np.float32)
    elif weighted == "location":
        weights = location_weights(rng, shape)
    loss, grad = F.sigmoid_focal_loss(scores, labels, weights, **kwargs)
    if not extreme:  # (the reference cannot take log(1 - p) at s = 95)
        expected = reference.sigmoid_focal_loss(scores.astype(np.float64), labels, weights,
                                                **kwargs)
        assert loss == pytest.approx(expected, rel=2e-6)
    assert np.isfinite(grad).all()


def test_sigmoid_weights_per_class_on_planes():
    shape = (3, 4, 5, 3)
    rng, scores, labels = case(shape, seed=2)
    kwargs = dict(pos_weight=[0.5, 1.0, 2.0, 4.0], class_weight=[1.0, 0.0, 2.0, 0.5],
                  normalization="valid")
    loss, grad = F.sigmoid_cross_entropy(scores, labels, **kwargs)
    expected = reference.sigmoid_focal_loss(scores.astype(np.float64), labels, gamma=0.0,
                                            alpha=None, **kwargs)
    assert loss == pytest.approx(expected, rel=2e-6)


def test_bad_labels_are_all_counted():
    _, scores, labels = case((7, 5))
    labels[6, 4] = labels[3, 0] = 2.0
    with pytest.raises(ValueError, match="labels must be <= 1; 2 values are above"):
        F.sigmoid_cross_entropy(scores, labels)


def test_nan_scores_are_named_without_numpy_warnings():
    import warnings
    _, scores, labels = case((7, 5))
    scores[5, 2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="scores contain 1 NaN or Inf values"):
            F.sigmoid_focal_loss(scores, labels)
