"""DistillationLoss as a function and class: reference values, exact gradients, what the
labels do, the shapes and errors, and finite results at the edges of float32.
(PyTorch parity: test_torch_parity.py; the kernels: test_kernels.py.)"""
import numpy as np
import pytest

import reference
from gradcheck import numeric_gradient
from caffe_losses.functional import Distillation, distillation_loss
from caffe_losses.params import ParamError

NORMALIZATIONS = ["valid", "full", "batch_size", "none"]


def case(seed, shape, activation=None, ignore=None):
    """Student and teacher scores of ``shape``, and labels (None without ``ignore``) with
    about a fifth of them ``ignore``: class indices (softmax) or 0/1 per score (sigmoid)."""
    rng = np.random.default_rng(seed)
    student, teacher = rng.normal(0, 2, size=shape), rng.normal(0, 2, size=shape)
    labels = None
    if ignore is not None:
        if activation == "softmax":
            labels = rng.integers(0, shape[1], size=(shape[0],) + shape[2:]).astype(np.float64)
        else:
            labels = (rng.random(shape) < 0.5).astype(np.float64)
        labels[rng.random(labels.shape) < 0.2] = ignore
    return student, teacher, labels


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("shape", [(4, 5), (2, 5, 2, 3)])
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("ignore", [None, 255])
def test_matches_the_reference_loop(activation, shape, normalization, ignore):
    student, teacher, labels = case(0, shape, activation, ignore)
    params = dict(activation=activation, normalization=normalization, temperature=2.5,
                  ignore_label=ignore)
    loss, _ = distillation_loss(student, teacher, labels, **params)
    assert loss == pytest.approx(reference.distillation_loss(student, teacher, labels, **params),
                                 rel=1e-12)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("temperature", [0.5, 4.0])
@pytest.mark.parametrize("ignore", [None, -1])
def test_gradient_matches_finite_differences(activation, temperature, ignore, path):
    student, teacher, labels = case(1, (3, 4, 2), activation, ignore)
    params = dict(activation=activation, temperature=temperature, ignore_label=ignore)

    def f():
        return distillation_loss(student, teacher, labels, **params)[0]

    _, grad = distillation_loss(student, teacher, labels, **params)
    # atol: the difference quotient's rounding, about eps |loss| / step
    np.testing.assert_allclose(grad, numeric_gradient(f, student, 1e-6), rtol=1e-6, atol=1e-8)
    assert np.abs(grad).max() > 0.02


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_gradient_is_t_times_student_minus_teacher_probabilities(activation):
    student, teacher, _ = case(2, (5, 4))
    t = 3.0
    if activation == "softmax":
        soft = lambda v: np.exp(v / t) / np.exp(v / t).sum(axis=1, keepdims=True)
    else:
        soft = lambda v: 1 / (1 + np.exp(-v / t))
    _, grad = distillation_loss(student, teacher, activation=activation, temperature=t)
    # "valid" without labels divides by the 5 locations
    np.testing.assert_allclose(grad, t * (soft(student) - soft(teacher)) / 5, rtol=1e-12,
                               atol=1e-15)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_zero_where_student_and_teacher_agree(activation, path):
    student, _, _ = case(3, (6, 5, 3))
    for dtype in (np.float32, np.float64):
        s = student.astype(dtype)
        loss, grad = distillation_loss(s, s.copy(), activation=activation)
        assert loss == 0.0 and not grad.any()
    if activation == "softmax":  # a softmax does not see a shift of a location's scores
        loss, grad = distillation_loss(student, student + 7.5)
        assert loss == pytest.approx(0, abs=1e-12) and np.abs(grad).max() < 1e-12


def test_temperature_squared_keeps_the_gradient_size():
    # Hinton et al.: for large T the gradient of T^2 KL tends to (s - t) / C (zero-mean
    # logits), whatever T
    rng = np.random.default_rng(4)
    student, teacher = rng.normal(size=(1, 6)), rng.normal(size=(1, 6))
    student -= student.mean()
    teacher -= teacher.mean()
    _, grad = distillation_loss(student, teacher, temperature=100.0)
    assert np.abs(grad - (student - teacher) / 6).max() < 1e-2 * np.abs(grad).max()


def test_sequence_scores_with_axis_2():
    # T x N x C scores of a sequence net: locations are the T * N time steps
    student, teacher, _ = case(5, (3, 2, 4))
    loss, grad = distillation_loss(student, teacher, axis=2, normalization="batch_size")
    moved = [np.moveaxis(a, 2, 1) for a in (student, teacher)]  # (T, C, N): class axis 1
    expected = reference.distillation_loss(*moved, normalization="none") / 6
    assert loss == pytest.approx(expected, rel=1e-12)
    _, grad_moved = distillation_loss(*moved, normalization="none")
    np.testing.assert_allclose(grad, np.moveaxis(grad_moved, 1, 2) / 6, rtol=1e-12)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_ignored_labels_leave_the_loss_and_the_divisor(activation):
    student, teacher, _ = case(6, (4, 3))
    if activation == "softmax":
        labels = np.array([0, 255, 2, 255.0])
        kept = [0, 2]
    else:
        labels = np.array([[1, 0, 1], [255, 255, 255], [0, 0, 1], [1, 1, 1.0]])
        kept = [0, 2, 3]
    loss, grad = distillation_loss(student, teacher, labels, activation=activation,
                                   ignore_label=255)
    alone, alone_grad = distillation_loss(student[kept], teacher[kept], activation=activation)
    assert loss == pytest.approx(alone, rel=1e-12)
    np.testing.assert_allclose(grad[kept], alone_grad, rtol=1e-12)
    assert not np.delete(grad, kept, axis=0).any()
    if activation == "sigmoid":  # an element: out of its location's sum, not the divisor
        labels[0, 1] = 255
        part, part_grad = distillation_loss(student, teacher, labels, activation="sigmoid",
                                            ignore_label=255, normalization="none")
        assert part_grad[0, 1] == 0 and part_grad[0, 0] != 0
        assert part == pytest.approx(reference.distillation_loss(
            student, teacher, labels, activation="sigmoid", ignore_label=255,
            normalization="none"), rel=1e-12)


def test_a_batch_where_everything_is_ignored_gives_zero():
    student, teacher, _ = case(7, (3, 4))
    loss, grad = distillation_loss(student, teacher, np.full(3, -1.0), ignore_label=-1)
    assert loss == 0.0 and not grad.any()


def test_teacher_scores_with_size_1_axes_fit():
    # a teacher whose global pooling leaves N x C x 1 x 1 for a student's N x C
    student, teacher, _ = case(8, (4, 5))
    loss, grad = distillation_loss(student, teacher.reshape(4, 5, 1, 1))
    expected = distillation_loss(student, teacher)
    assert loss == expected[0] and np.array_equal(grad, expected[1])


@pytest.mark.parametrize("teacher_shape", [(5, 4), (4, 6), (20,)])
def test_a_teacher_of_another_shape_is_an_error_naming_both(teacher_shape):
    with pytest.raises(ValueError, match=r"^teacher scores have shape %s but the student scores "
                                         r"have shape \(4, 5\); give both nets' scores of one "
                                         r"shape" % re_shape(teacher_shape)):
        distillation_loss(np.zeros((4, 5)), np.zeros(teacher_shape))


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


def test_labels_without_ignore_label_are_an_error_saying_what_to_do():
    with pytest.raises(ValueError, match="labels are given but ignore_label is not set: the "
                                         "labels only mark what to skip. Set ignore_label, or "
                                         "drop the labels"):
        distillation_loss(np.zeros((4, 3)), np.zeros((4, 3)), np.zeros(4))


@pytest.mark.parametrize("activation,labels,message", [
    ("softmax", np.zeros((4, 3)), r"labels have shape \(4, 3\) but student scores of shape "
                                  r"\(4, 3\) \(class axis 1\) take one class index per location"),
    ("sigmoid", np.zeros(4), r"labels have shape \(4,\) but student scores of shape \(4, 3\) "
                             r"\(class axis 1\) take one label per score"),
    ("softmax", [0, 1, 3, 255], r"labels must be integer class indices in \[0, 3\) or be the "
                                r"ignore_label 255; found 1 other values \(first: 3\)"),
    ("sigmoid", [[0, 1, 2]] * 4, r"labels must be <= 1; 4 values are above"),
])
def test_bad_labels_are_errors_as_in_the_layers_they_follow(activation, labels, message, path):
    with pytest.raises(ValueError, match=message):
        distillation_loss(np.zeros((4, 3)), np.ones((4, 3)), np.asarray(labels, np.float64),
                          activation=activation, ignore_label=255)


@pytest.mark.parametrize("which", ["student", "teacher"])
def test_nan_scores_name_the_input(which, path):
    student, teacher, _ = case(9, (4, 3))
    {"student": student, "teacher": teacher}[which][1, 2] = np.nan
    with pytest.raises(ValueError, match="^%s scores contain 1 NaN or Inf values" % which):
        distillation_loss(student, teacher)


@pytest.mark.parametrize("params,message", [
    ({"temperature": 0}, "key 'temperature' must be > 0, got 0"),
    ({"temperature": 250}, "key 'temperature' must be <= 100, got 250"),
    ({"activation": "sigmod"}, "key 'activation' must be one of 'softmax', 'sigmoid', got "
                               "'sigmod' (did you mean 'sigmoid'?)"),
])
def test_bad_parameters_are_refused_with_the_layers_message(params, message):
    with pytest.raises(ParamError) as info:
        Distillation(**params)
    assert str(info.value).startswith("DistillationLoss: param_str ") and message in str(info.value)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_finite_student_and_teacher_give_a_finite_loss_and_gradient(activation, dtype, path):
    # (test_input_edges.py gives extreme student scores to every loss; here the teacher's too)
    rng = np.random.default_rng(10)
    for shape in ((6, 3), (2, 3, 4, 2)):
        signs = [np.where(rng.random(shape) < 0.5, -1, 1) for _ in range(2)]
        for big, small in ((3.4e38, 3.4e38), (3.4e38, 1e-38), (1e-38, 3.4e38), (1e-38, 1e-38)):
            student = (signs[0] * big).astype(dtype)
            teacher = (signs[1] * small).astype(dtype)
            for temperature in (0.5, 4.0):
                loss, grad = distillation_loss(student, teacher, activation=activation,
                                               temperature=temperature)
                assert np.isfinite(loss) and np.isfinite(grad).all(), (shape, big, small)
                assert np.abs(grad).max() <= temperature
