"""Block-wise work (functional.block_plan) gives the same results as a single block.

Large blobs are processed in blocks of about ``functional.BLOCK`` elements. Here
BLOCK is made tiny so that small arrays are cut into many blocks, along rows and,
for N x C x H x W blobs, along H x W with a short last block; the results must
match the reference implementation and the same loss computed in one block.
"""
import numpy as np
import pytest

import reference
from caffe_losses import functional as F

SHAPES = [(7, 5), (3, 4, 5, 3), (2, 3, 11)]
BLOCKS = [1, 6, 13, 40]


def case(shape, seed=0, ignore=None, extreme=False):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 3, size=shape).astype(np.float32)
    if extreme:  # one element that overflows exp(s): its block takes the stable path
        scores.reshape(-1)[rng.integers(scores.size)] = 95.0
    labels = (rng.random(shape) < 0.3).astype(np.float32)
    if ignore is not None:
        labels[rng.random(shape) < 0.2] = ignore
    return rng, scores, labels


def in_blocks(monkeypatch, block, fn):
    monkeypatch.setattr(F, "BLOCK", block)
    return fn()


def location_weights(rng, shape):
    return rng.uniform(0, 2, size=(shape[0],) + tuple(shape[2:])).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("kwargs", [
    dict(gamma=0.0, alpha=None),
    dict(gamma=2.0, alpha=0.25),
    dict(gamma=0.5, alpha=0.75, normalization="positive"),
    dict(gamma=2.0, alpha=None, ignore_label=-1, normalization="valid"),
])
@pytest.mark.parametrize("weighted", [None, "element", "location"])
@pytest.mark.parametrize("extreme", [False, True])
def test_sigmoid_focal_in_blocks_matches_reference(monkeypatch, shape, block, kwargs, weighted,
                                                   extreme):
    rng, scores, labels = case(shape, ignore=kwargs.get("ignore_label"), extreme=extreme)
    weights = None
    if weighted == "element":
        weights = rng.uniform(0, 2, size=shape).astype(np.float32)
    elif weighted == "location":
        weights = location_weights(rng, shape)
    loss, grad = in_blocks(monkeypatch, block,
                           lambda: F.sigmoid_focal_loss(scores, labels, weights, **kwargs))
    monkeypatch.setattr(F, "BLOCK", 1 << 20)
    whole_loss, whole = F.sigmoid_focal_loss(scores, labels, weights, **kwargs)
    np.testing.assert_allclose(grad, whole, rtol=1e-6, atol=1e-6 * np.abs(whole).max())
    if extreme:  # the one block is all stable path; in blocks, only one block is
        assert loss == pytest.approx(whole_loss, rel=1e-6)
    else:        # (the reference cannot take log(1 - p) at s = 95)
        expected = reference.sigmoid_focal_loss(scores.astype(np.float64), labels, weights,
                                                **kwargs)
        assert loss == pytest.approx(expected, rel=2e-6)
    assert np.isfinite(grad).all()


@pytest.mark.parametrize("block", BLOCKS)
def test_sigmoid_weights_per_class_in_blocks(monkeypatch, block):
    shape = (3, 4, 5, 3)
    rng, scores, labels = case(shape, seed=2)
    kwargs = dict(pos_weight=[0.5, 1.0, 2.0, 4.0], class_weight=[1.0, 0.0, 2.0, 0.5],
                  normalization="valid")
    loss, grad = in_blocks(monkeypatch, block,
                           lambda: F.sigmoid_cross_entropy(scores, labels, **kwargs))
    expected = reference.sigmoid_focal_loss(scores.astype(np.float64), labels, gamma=0.0,
                                            alpha=None, **kwargs)
    assert loss == pytest.approx(expected, rel=2e-6)
    monkeypatch.setattr(F, "BLOCK", 1 << 20)
    np.testing.assert_allclose(grad, F.sigmoid_cross_entropy(scores, labels, **kwargs)[1],
                               rtol=1e-6, atol=1e-7)


def test_bad_labels_in_later_blocks_are_all_counted(monkeypatch):
    _, scores, labels = case((7, 5))
    labels[6, 4] = labels[3, 0] = 2.0
    monkeypatch.setattr(F, "BLOCK", 5)
    with pytest.raises(ValueError, match="labels must be <= 1; 2 values are above"):
        F.sigmoid_cross_entropy(scores, labels)


def test_block_plan_covers_every_element_once(monkeypatch):
    for ws in [(7, 5), (3, 4, 15), (2, 3, 11), (1, 1), (4, 1, 9), (35,), (1,)]:
        for block in [1, 2, 6, 13, 1000]:
            monkeypatch.setattr(F, "BLOCK", block)
            plan = F.block_plan(F.Workspace(), ws, np.float32, 2)
            seen = np.zeros(ws, np.int32)
            for index, (view, other) in plan:
                seen[index] += 1
                assert view.shape == other.shape == seen[index].shape
            assert (seen == 1).all(), (ws, block)


def test_nan_scores_in_blocks_are_named_without_numpy_warnings(monkeypatch):
    import warnings
    _, scores, labels = case((7, 5))
    scores[5, 2] = np.nan
    monkeypatch.setattr(F, "BLOCK", 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="scores contain 1 NaN or Inf values"):
            F.sigmoid_focal_loss(scores, labels)
