"""What every loss does with the inputs at the edges, on the kernel path (with numba) and
on the numpy path: labels whose shape does not fit the scores (an error naming both,
before any kernel), the label layouts Caffe nets feed (accepted), a batch of no scores,
the largest and smallest float32 scores, and backward() before forward(). (A loss whose
second input is a teacher's scores, DistillationLoss, gets them where the others get
labels.)

The losses come from the table of layers, so a new loss is covered without a change here.
"""
import numpy as np
import pytest

from caffe_losses import table
from caffe_losses.core import label_shape_error
from caffe_losses.losses.distillation import teacher_shape_error

LOSSES = [row.name for row in table.LOSSES]
# a setting besides the defaults, with the per-class arrays and extra terms of each loss
# (C = 3 classes)
VARIANTS = {
    "AsymmetricLoss": {"gamma_pos": 1.0, "clip": 0.0, "class_weight": [1, 2, 3]},
    "CrossEntropyLoss": {"mode": "binary", "ignore_label": -1},
    "DistillationLoss": {"activation": "sigmoid", "temperature": 0.5},
    "MultiLabelSoftmaxLoss": {"target": "count"},
    "SigmoidCrossEntropyLoss": {"pos_weight": 3.0, "class_weight": [1, 2, 3], "poly_eps": 1.0},
    "SigmoidFocalLoss": {"gamma": 0.5, "poly_eps": 1.0},
    "SoftmaxCrossEntropyLoss": {"label_smoothing": 0.1, "class_weight": [1, 2, 3], "poly_eps": 1.0},
    "SoftmaxFocalLoss": {"gamma": 0.5, "alpha": [0.2, 0.3, 0.5], "poly_eps": -1.0},
    "ZLPRLoss": {"ignore_label": -1},
}


def inputs(row, shape, rng, axis=1, dtype=np.float32):
    """Scores (or probabilities) of ``shape`` and labels in the layout Caffe's own layers
    take: dense labels of the scores' shape, class indices of shape N x 1 x H x W."""
    scores = rng.normal(0, 2, shape)
    if row.inputs == "probabilities":
        scores = np.exp(scores) / np.exp(scores).sum(axis=axis, keepdims=True)
    if row.labels == "sparse":
        labels = rng.integers(0, shape[axis], shape[:axis] + (1,) + shape[axis + 1:])
    else:
        labels = rng.random(shape) < 0.4
    return scores.astype(dtype), labels.astype(dtype)


def forward_backward(row, params, scores, labels):
    loss = row.cls(**params)
    value = loss.forward(scores, labels)
    grad = np.full(loss.ws, np.nan, loss.dtype)
    loss.backward(grad, 1.0)
    return value, grad.reshape(scores.shape), loss


# -- label shapes ---------------------------------------------------------------------

# (scores shape, axis, labels shape) that fit: size-1 axes aside, or flat
ACCEPTED = {
    "dense": [((4, 3), 1, (4, 3, 1, 1)), ((4, 3), 1, (12,)), ((2, 3, 2, 2), 1, (2, 3, 1, 2, 2)),
              ((3, 2, 3), 2, (3, 2, 3, 1))],
    "sparse": [((4, 3), 1, (4,)), ((4, 3), 1, (4, 1, 1, 1)), ((2, 3, 2, 2), 1, (2, 2, 2)),
               ((2, 3, 2, 2), 1, (8,)), ((3, 2, 3), 2, (3, 2)), ((2, 2, 2, 3), 3, (2, 2, 2, 1))],
    "scores": [((4, 3), 1, (4, 3, 1, 1)), ((2, 3, 2, 2), 1, (2, 3, 1, 2, 2)),
               ((3, 2, 3), 2, (3, 2, 3, 1)), ((4, 3, 1, 1), 1, (4, 3))],
}
# ... and that do not, though their count may be right
REFUSED = {
    "dense": [((4, 3), 1, (3, 4)), ((2, 3, 2, 2), 1, (2, 2, 2, 3)), ((4, 3), 1, (4, 1)),
              ((3, 2, 3), 2, (2, 3, 3))],
    "sparse": [((4, 3), 1, (4, 3)), ((2, 3, 2, 2), 1, (2, 3, 2, 2)), ((3, 2, 3), 2, (2, 3)),
               ((4, 3), 1, (2, 2))],
    "scores": [((4, 3), 1, (3, 4)), ((4, 3), 1, (12,)), ((2, 3, 2, 2), 1, (2, 2, 2, 3)),
               ((4, 3), 1, (4, 1))],
}


@pytest.mark.parametrize("layer", LOSSES)
def test_label_layouts_of_caffe_nets_give_the_loss_of_the_plain_layout(layer, path):
    row = table.BY_NAME[layer]
    rng = np.random.default_rng(1)
    for shape, axis, layout in ACCEPTED[row.labels]:
        scores, labels = inputs(row, shape, rng, axis)
        expected = forward_backward(row, {"axis": axis}, scores, labels)
        value, grad, _ = forward_backward(row, {"axis": axis}, scores, labels.reshape(layout))
        assert value == expected[0] and np.array_equal(grad, expected[1]), (shape, layout)


@pytest.mark.parametrize("layer", LOSSES)
def test_labels_of_another_shape_are_an_error_naming_both_shapes(layer, path):
    row = table.BY_NAME[layer]
    rng = np.random.default_rng(2)
    for shape, axis, wrong in REFUSED[row.labels]:
        scores, _ = inputs(row, shape, rng, axis)
        labels = np.zeros(wrong, np.float32)
        loss = row.cls(axis=axis)
        with pytest.raises(ValueError) as info:
            loss.forward(scores, labels)
        message = str(info.value)
        if row.labels == "scores":
            assert message == teacher_shape_error(wrong, shape)
            assert message.startswith("teacher scores have shape %s but the student scores have "
                                      "shape %s" % (wrong, shape)), message
            continue
        assert message == label_shape_error(wrong, shape, axis, row.labels == "sparse", row.inputs)
        assert message.startswith("labels have shape %s but %s of shape %s (class axis %d) take "
                                  % (wrong, row.inputs, shape, axis)), message


def test_the_message_says_which_shapes_fit():
    assert label_shape_error((4, 3), (4, 3), 1, True) == (
        "labels have shape (4, 3) but scores of shape (4, 3) (class axis 1) take one class index "
        "per location: labels of shape (4, 1) or (4,), size-1 axes aside, or a flat vector of 4 "
        "values")
    assert label_shape_error((3, 4), (4, 3), 1, False) == (
        "labels have shape (3, 4) but scores of shape (4, 3) (class axis 1) take one label per "
        "score: labels of shape (4, 3), size-1 axes aside, or a flat vector of 12 values")
    assert label_shape_error((2, 3), (3, 2, 5), -1, True).startswith(
        "labels have shape (2, 3) but scores of shape (3, 2, 5) (class axis 2) take one class "
        "index per location: labels of shape (3, 2, 1) or (3, 2),")


# -- no scores at all -------------------------------------------------------------------

@pytest.mark.parametrize("layer", LOSSES)
def test_a_batch_of_no_scores_gives_loss_zero_and_an_empty_gradient(layer, path):
    row = table.BY_NAME[layer]
    rng = np.random.default_rng(3)
    for shape in ((0, 3), (0, 3, 2, 2), (2, 3, 0, 4)):
        scores, labels = inputs(row, shape, rng)
        for params in ({}, VARIANTS[layer]):
            value, grad, loss = forward_backward(row, params, scores, labels)
            assert value == 0.0 and grad.shape == shape and loss.empty


# -- the largest and the smallest scores --------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", LOSSES)
def test_every_finite_input_gives_a_finite_loss_and_gradient(layer, dtype, path):
    # float32's largest scores (3.4e38) and ones below its smallest normal number (1e-38),
    # of either sign; probabilities of 1e-38 and 1 - 1e-7 (the last float32 below 1)
    row = table.BY_NAME[layer]
    rng = np.random.default_rng(4)
    for shape in ((6, 3), (2, 3, 4, 2)):
        scores, labels = inputs(row, shape, rng, dtype=dtype)
        signs = np.where(rng.random(shape) < 0.5, -1, 1)
        if row.inputs == "probabilities":
            extremes = [np.where(signs > 0, 1e-38, 1 - 1e-7)]
        else:
            extremes = [signs * 3.4e38, signs * 1e-38, np.where(signs > 0, 3.4e38, 1e-38)]
        for extreme in extremes:
            for params in ({}, VARIANTS[layer]):
                value, grad, _ = forward_backward(row, params, extreme.astype(dtype), labels)
                assert np.isfinite(value) and np.isfinite(grad).all(), (shape, params, extreme.flat[0])


# -- backward before forward ----------------------------------------------------------------

@pytest.mark.parametrize("layer", LOSSES)
def test_backward_before_forward_says_so(layer):
    row = table.BY_NAME[layer]
    loss = row.cls()
    with pytest.raises(RuntimeError, match=r"%s: backward\(\) needs a forward\(\) first"
                       % row.cls.__name__):
        loss.backward(np.zeros((2, 3), np.float32), 1.0)
    scores, labels = inputs(row, (2, 3), np.random.default_rng(5))
    with pytest.raises(ValueError):
        loss.forward(scores, np.zeros((5, 5)))  # a forward that failed
    with pytest.raises(RuntimeError, match=r"backward\(\) needs a forward\(\) first"):
        loss.backward(np.zeros((2, 3), np.float32), 1.0)
