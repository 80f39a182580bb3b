"""What a loss takes, checked and prepared the same way for every entry point (layers,
classes, functions): the scores' shape and class axis, the labels, the weights and the
per-class parameters.

Shapes follow Caffe: scores have the class axis ``axis`` (default 1), so a blob of
shape ``(N, C)`` or ``(N, C, H, W)`` has ``N * H * W`` *locations*, each with ``C``
class scores, and ``N * C * H * W`` *elements*. Every array is viewed in the *work
shape* ``(outer, C)`` or ``(outer, C, inner)``, with ``outer = prod(shape[:axis])`` and
``inner = prod(shape[axis + 1:])``, as Caffe's own softmax does.

Labels come in two layouts: *dense*, one label per score, and *sparse*, one integer
class index per location (shape ``N`` or ``N x 1 x H x W``), as Caffe's
``SoftmaxWithLoss`` takes (:func:`label_shape_error` says which shapes fit); a
distillation loss takes a teacher's scores in their place (:func:`teacher_shape_error`,
:func:`teacher_scores`). Their values come in four kinds, one preparer each:
:func:`dense_labels` (non-negative),
:func:`binary_labels` (in [0, 1]), :func:`zero_one_labels` (0 or 1) and
:func:`sparse_labels` (class indices); the last three skip ``ignore_label``
(:func:`ignore_mask`). Weights (an optional third input) hold one value per sample, per
location or, for the element-wise losses, per element (:func:`weights_error`).

The checks that count offending values run only once something is wrong: a valid
input costs a min or a max.
"""
from functools import reduce
from operator import mul

import numpy as np


# -- shapes ---------------------------------------------------------------------------

def split_axis(shape, axis):
    """Return ``(outer, C, inner)`` for a blob shape and its class axis."""
    ndim = len(shape)
    if not -ndim <= axis < ndim:
        raise ValueError("axis %d is out of range for a blob of shape %s; set 'axis' to the "
                         "class axis of the scores" % (axis, tuple(shape)))
    axis %= ndim
    outer = reduce(mul, shape[:axis], 1)
    inner = reduce(mul, shape[axis + 1:], 1)
    return int(outer), int(shape[axis]), int(inner)


def work_shape(shape, axis):
    """The shape every array is viewed as: ``(outer, C)`` or ``(outer, C, inner)``."""
    outer, c, inner = split_axis(shape, axis)
    return (outer, c) if inner == 1 else (outer, c, inner)


def location_shape(ws):
    """The shape of a per-location array that broadcasts against ``ws``."""
    return (ws[0], 1) + tuple(ws[2:])


def class_shape(ws):
    """The shape of a per-class array that broadcasts against ``ws``."""
    return (1, ws[1]) + (1,) * (len(ws) - 2)


def squeezed(shape):
    """``shape`` without its size-1 axes."""
    return tuple(d for d in shape if d != 1)


def label_shape_error(labels, scores, axis, sparse, inputs="scores"):
    """Why labels of shape ``labels`` do not fit ``inputs`` of shape ``scores``, or None.

    Dense labels have the scores' shape; sparse ones, one class index per location, the
    scores' shape without the class axis (``N x 1 x H x W``, or ``N``). Size-1 axes do not
    count (``N x C x 1 x 1`` labels from HDF5 for ``N x C`` scores), and a flat vector of
    as many values fits too, as Caffe takes labels by their count; other shapes of that
    count (``C x N`` labels of ``N x C`` scores, one-hot labels where class indices
    belong) do not."""
    axis %= len(scores)
    expected = tuple(scores[:axis]) + (1,) + tuple(scores[axis + 1:]) if sparse else tuple(scores)
    count = reduce(mul, expected, 1)
    got = squeezed(labels)
    if got == squeezed(expected) or (len(got) <= 1 and reduce(mul, labels, 1) == count):
        return None
    if sparse:
        what = "one class index per location: labels of shape %s or %s" % (
            expected, expected[:axis] + expected[axis + 1:])
    else:
        what = "one label per score: labels of shape %s" % (expected,)
    return ("labels have shape %s but %s of shape %s (class axis %d) take %s, size-1 axes "
            "aside, or a flat vector of %d values" % (tuple(labels), inputs, tuple(scores), axis,
                                                       what, count))


def teacher_shape_error(teacher, student):
    """Why teacher scores of shape ``teacher`` do not fit student scores of shape
    ``student`` (a distillation loss's labels kind ``"scores"``), or None: the same shape,
    size-1 axes aside (a teacher whose global pooling leaves N x C x 1 x 1 for a student's
    N x C: the same values in the same order)."""
    if squeezed(teacher) == squeezed(student):
        return None
    return ("teacher scores have shape %s but the student scores have shape %s; give both "
            "nets' scores of one shape (size-1 axes aside)" % (tuple(teacher), tuple(student)))


# -- weights and per-class parameters ------------------------------------------------------

def weights_error(count, scores, axis, per_element, inputs="scores", shape=None):
    """Why ``count`` weights do not fit ``inputs`` of shape ``scores``, or None: they hold
    one value per sample, one per location or, where ``per_element``, one per element.
    Given the weights' ``shape``, in the words of a layer, whose weights are bottom[2]."""
    outer, classes, inner = split_axis(scores, axis)
    n, elements = scores[0], outer * classes * inner
    if (count == outer * inner or (per_element and count == elements)
            or (count == n != 0 and outer % n == 0)):
        return None
    if shape is None:
        return "weights have %d values; expected one per sample (%d) or one per location (%d)%s" % (
            count, n, outer * inner, " or one per element (%d)" % elements if per_element else "")
    return ("bottom[2] (weights) has shape %s (%d values) but %s have shape %s: give one weight "
            "per sample (%d values) or per location (%d values, N x 1 x H x W)%s" % (
                tuple(shape), count, inputs, tuple(scores), n, outer * inner,
                " or per element (%d values)" % elements if per_element else ""))


def weights_layout(count, ws, n):
    """For ``count`` weights that fit (:func:`weights_error`): the shape in which they
    broadcast against ``ws``, and how many locations each value stands for (more than
    one for per-sample weights where the class axis is not 1)."""
    locations = ws[0] * (ws[2] if len(ws) == 3 else 1)
    if count == locations:
        return location_shape(ws), 1
    if count != n:
        return ws, 1
    return location_shape(ws), locations // n


def per_class_error(value, classes):
    """Why a per-class parameter does not fit scores of ``classes`` classes, or None:
    one number, or one per class."""
    count = np.size(value)
    if value is None or np.ndim(value) == 0 or count == classes:
        return None
    return "has %d values but the scores have %d classes" % (count, classes)


def per_class(value, ws, dtype=np.float64):
    """None, one number, or one value per class shaped to broadcast against ``ws``."""
    if value is None:
        return None
    v = np.asarray(value, dtype=dtype)
    return float(v) if v.ndim == 0 else v.reshape(class_shape(ws))


# -- value checks -------------------------------------------------------------------------

def check_finite(name, array):
    """Raise ValueError if ``array`` holds NaN or Inf, saying how many."""
    if array is None:
        return
    bad = array.size - np.count_nonzero(np.isfinite(array))
    if bad:
        raise ValueError("%s contain %d NaN or Inf values; they must be finite" % (name, bad))


def check_range(name, array, lo, hi=None, hint=""):
    """Raise ValueError unless every value is finite, >= lo and (if given) <= hi."""
    if array.size == 0:
        return
    amin, amax = array.min(), array.max()
    if amin >= lo and (amax <= hi if hi is not None else np.isfinite(amax)):
        return
    check_finite(name, array)
    if amin < lo:
        raise ValueError("%s must be >= %g; %d values are below (smallest %g)%s"
                         % (name, lo, np.count_nonzero(array < lo), amin, hint))
    raise ValueError("%s must be <= %g; %d values are above (largest %g)%s"
                     % (name, hi, np.count_nonzero(array > hi), amax, hint))


def check_nonnegative(name, array):
    """Raise ValueError unless ``array`` is >= 0 (NaN fails too)."""
    if array is not None and array.size and not array.min() >= 0:
        check_finite(name, array)
        raise ValueError("%s must be >= 0; %d values are below (smallest %g)"
                         % (name, np.count_nonzero(array < 0), array.min()))


# -- labels: one preparer per kind --------------------------------------------------------
# Each takes the labels as given, the work shape and the ignore label, checks the values
# and returns ``(y, mask)``: the labels in the work shape (dense) or one per location
# (sparse), and the mask of what counts (None: all), which the core folds into the
# weights.

def ignore_mask(labels, ignore_label):
    """The mask of the labels that count, or None where all do (no ignore label, or no
    label equal to it)."""
    if ignore_label is None:
        return None
    mask = labels != ignore_label
    return None if mask.all() else mask


def _ignore_hint(ignore_label):
    return "" if ignore_label is not None else "; set ignore_label to skip a label value"


def teacher_scores(teacher, ws, ignore_label=None):
    """A teacher's scores, in a distillation loss's labels' place, in the work shape;
    nothing ignored (its labels, which mark what to skip, become weights)."""
    return teacher.reshape(ws), None


def dense_labels(labels, ws, ignore_label=None):
    """Non-negative labels, one per score (multi-hot, soft or counts); no ignore label."""
    y = labels.reshape(ws)
    check_nonnegative("labels", y)  # (an infinite label makes the loss infinite: named then)
    return y, None


def binary_labels(labels, ws, ignore_label):
    """Labels in [0, 1], one per score; ignored ones set to 0 (and out of the mask)."""
    y = labels.reshape(ws)
    mask = ignore_mask(y, ignore_label)
    if mask is not None:
        y = np.where(mask, y, 0).astype(y.dtype, copy=False)
    check_range("labels", y if mask is None else y[mask], 0, 1, _ignore_hint(ignore_label))
    return y, mask


def zero_one_labels(labels, ws, ignore_label):
    """Labels 0 or 1, one per score; ignored ones set to -1, which is neither. The mask is
    None: a loss of one term per location skips a class, not the location."""
    y = labels.reshape(ws)
    mask = ignore_mask(y, ignore_label)
    ok = (y == 0) | (y == 1)
    if mask is not None:
        ok |= ~mask
    if not ok.all():
        bad = y[~ok]
        check_finite("labels", bad)
        ignore = "" if ignore_label is None else " or the ignore_label %g" % ignore_label
        raise ValueError("labels must be 0 or 1%s; found %d other values (first: %g)%s"
                         % (ignore, bad.size, bad[0], _ignore_hint(ignore_label)))
    return (y if mask is None else np.where(mask, y, -1)), None


def sparse_labels(labels, ws, ignore_label):
    """Integer class indices in ``[0, C)`` shaped per location; ignored locations get
    index 0 (and are out of the mask)."""
    lab = labels.reshape(location_shape(ws))
    mask = ignore_mask(lab, ignore_label)
    counted = lab if mask is None else np.where(mask, lab, 0)
    classes = ws[1]
    if counted.size == 0 or (counted.min() >= 0 and counted.max() <= classes - 1 and (
            counted.dtype.kind != "f" or np.all(np.trunc(counted) == counted))):
        return counted.astype(np.intp), mask
    counted = lab if mask is None else lab[mask]
    check_finite("labels", counted)
    bad = counted[(counted < 0) | (counted >= classes) | (counted != np.floor(counted))]
    ignore = "" if ignore_label is None else " or be the ignore_label %g" % ignore_label
    raise ValueError("labels must be integer class indices in [0, %d)%s; found %d other values "
                     "(first: %g)" % (classes, ignore, bad.size, bad[0]))
