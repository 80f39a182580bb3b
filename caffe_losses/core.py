"""What every loss shares: shapes, weights, normalization, input checks, buffers, and
:class:`Loss`, the base class that runs a loss's kernel or its numpy reference.

Shapes follow Caffe: scores have the class axis ``axis`` (default 1), so a blob of
shape ``(N, C)`` or ``(N, C, H, W)`` has ``N * H * W`` *locations*, each with ``C``
class scores, and ``N * C * H * W`` *elements*. Every array is viewed in the *work
shape* ``(outer, C)`` or ``(outer, C, inner)``, with ``outer = prod(shape[:axis])`` and
``inner = prod(shape[axis + 1:])``, as Caffe's own softmax does.

Labels come in two kinds: *dense*, one label per score (multi-hot, soft or real), and
*sparse*, one integer class index per location (shape ``N`` or ``N x 1 x H x W``), as
Caffe's ``SoftmaxWithLoss`` takes; :func:`label_shape_error` says which shapes fit.
Weights (an optional third bottom) hold one value per sample, per location or, for the
element-wise losses, per element.

Normalization, the divisor of the summed loss, uses Caffe's ``LossParameter``
vocabulary (:func:`normalizer`); it is never below 1, so a batch where nothing counts
gives a loss of 0 and a zero gradient, not NaN. A batch of no scores at all (N = 0)
gives the same.
"""
import math
from functools import reduce
from operator import mul

import numpy as np

from . import jit
from .params import NORMALIZATIONS

# A location's sum of exp(s) outside this range means exp over- or underflowed without
# a shift; the kernels that skip the shift then hand the call to the shifted reference.
EXP_SUM_MIN, EXP_SUM_MAX = 1e-20, 1e30

# (1 - p_t)^(gamma - 1) with gamma < 1 is infinite where 1 - p_t rounds to 0; the terms
# it multiplies vanish there, so the base is held above this instead.
FOCAL_BASE_MIN = 1e-30


# -- shapes -------------------------------------------------------------------------

def split_axis(shape, axis):
    """Return ``(outer, C, inner)`` for a blob shape and its class axis."""
    ndim = len(shape)
    if not -ndim <= axis < ndim:
        raise ValueError("axis %d is out of range for a blob of shape %s" % (axis, tuple(shape)))
    axis %= ndim
    outer = reduce(mul, shape[:axis], 1)
    inner = reduce(mul, shape[axis + 1:], 1)
    return int(outer), int(shape[axis]), int(inner)


def work_shape(shape, axis):
    """The shape every array is viewed as: ``(outer, C)`` or ``(outer, C, inner)``."""
    outer, c, inner = split_axis(shape, axis)
    return (outer, c) if inner == 1 else (outer, c, inner)


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


def location_shape(ws):
    """The shape of a per-location array that broadcasts against ``ws``."""
    return (ws[0], 1) + tuple(ws[2:])


def class_shape(ws):
    """The shape of a per-class array that broadcasts against ``ws``."""
    return (1, ws[1]) + (1,) * (len(ws) - 2)


# -- weights ------------------------------------------------------------------------

def broadcast_weights(weights, shape, axis, per_element=False):
    """Reshape a weights array so that it broadcasts against ``work_shape(shape, axis)``.

    One value per sample (``N``), per location (``outer * inner``) or, when
    ``per_element``, per element. Returns None for None.
    """
    if weights is None:
        return None
    ws = work_shape(shape, axis)
    outer, c, inner = split_axis(shape, axis)
    w = np.asarray(weights).reshape(-1)
    n = shape[0]
    if w.size == outer * inner:
        return w.reshape(location_shape(ws))
    if per_element and w.size == outer * c * inner:
        return w.reshape(ws)
    if w.size == n != 0 and outer % n == 0:  # the class axis is not the batch axis
        return np.repeat(w, (outer * inner) // n).reshape(location_shape(ws))
    expected = "one per sample (%d) or one per location (%d)" % (n, outer * inner)
    if per_element:
        expected += " or one per element (%d)" % (outer * c * inner)
    raise ValueError("weights have %d values; expected %s" % (w.size, expected))


def per_class(value, ws, name, dtype=np.float64):
    """None, one number, or one per class shaped to broadcast against ``ws``."""
    if value is None:
        return None
    v = np.asarray(value, dtype=dtype)
    if v.ndim == 0:
        return float(v)
    if v.size != ws[1]:
        raise ValueError("%s has %d values but the scores have %d classes; give one number "
                         "or one per class" % (name, v.size, ws[1]))
    return v.reshape(class_shape(ws))


def kernel_per_class(value, classes):
    """A per-class value as the 1-d float64 array the kernels take (ones for None)."""
    value = 1.0 if value is None else value
    return np.broadcast_to(np.asarray(value, np.float64).reshape(-1), (classes,)).copy()


def masked_weights(w, mask, dtype):
    """Weights (or None) times a mask of counted items (or None); None for neither."""
    if mask is None:
        return None if w is None else w.astype(dtype, copy=False)
    return mask.astype(dtype) if w is None else np.where(mask, w, 0).astype(dtype)


def times(value, factor):
    """``value * factor``, where a None factor means 1."""
    return value if factor is None else value * factor


# -- normalization ------------------------------------------------------------------

def normalizer(normalization, outer, full_count, valid_count):
    """The divisor of a summed loss, after Caffe's ``LossLayer::GetNormalizer``.

    ============== ===========================================================
    ``full``       every location (element, for element-wise losses)
    ``valid``      what counts: locations (elements) not ignored, with a
                   target; with weights, the sum of their weights
    ``batch_size`` outer_num, the product of the dimensions before the class axis
                   (N for ``axis`` 1), as Caffe's ``SoftmaxWithLoss``
    ``none``       1: the plain sum
    ============== ===========================================================

    Never below 1.
    """
    if normalization == "full":
        value = full_count
    elif normalization == "valid":
        value = valid_count
    elif normalization == "batch_size":
        value = outer
    elif normalization == "none":
        value = 1.0
    else:
        raise ValueError("unknown normalization %r; expected one of %s"
                         % (normalization, ", ".join(NORMALIZATIONS)))
    return max(1.0, float(value))


# -- input checks -------------------------------------------------------------------
# Cheap checks run on every reference call (a min or max); the detailed ones that count
# the offending values run only once something is wrong.

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


def sparse_index(labels, ws, ignore_label):
    """Integer class indices shaped per location, and the mask of counted locations.

    Ignored locations get index 0 (and False in the mask; the mask is None when
    nothing is ignored). Raises ValueError for labels that are not integers in
    ``[0, C)`` (or the ignore label).
    """
    lab = np.asarray(labels).reshape(location_shape(ws))
    mask = None if ignore_label is None else lab != ignore_label
    if mask is not None and mask.all():
        mask = None
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


def binary_labels(labels, ws, ignore_label):
    """Element-wise labels in [0, 1] (ignored ones set to 0) and the mask of counted ones."""
    y = np.asarray(labels).reshape(ws)
    mask = None
    if ignore_label is not None:
        mask = y != ignore_label
        if mask.all():
            mask = None
        else:
            y = np.where(mask, y, 0).astype(y.dtype, copy=False)
    hint = "" if ignore_label is not None else "; set ignore_label to skip a label value"
    check_range("labels", y if mask is None else y[mask], 0, 1, hint)
    return y, mask


def dense_targets(y, w, target):
    """Targets of a softmax against dense labels: per location ``w / denom`` (0 where
    a location has no positive label), the label sums, and the valid count.

    ``denom`` is the label sum (``target="sum"``) or the number of non-zero labels
    (``"count"``). Checks that labels and weights are non-negative.
    """
    check_nonnegative("labels", y)  # (an infinite label makes the loss infinite: named then)
    check_nonnegative("weights", w)
    label_sum = y.sum(axis=1, keepdims=True, dtype=np.float64)
    if target == "sum":
        denom = label_sum
    else:
        denom = np.count_nonzero(y, axis=1).reshape(label_sum.shape).astype(np.float64)
    valid = denom > 0
    coef = np.divide(1.0 if w is None else w, denom, out=np.zeros(denom.shape), where=valid)
    count = np.count_nonzero(valid) if w is None else np.where(valid, w, 0).sum(dtype=np.float64)
    return coef, label_sum, count


def log_softmax(x):
    """``log softmax(s)`` over the class axis (1), shifted by each location's max."""
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def row_dot(a, b):
    """``sum_c a_c b_c`` per location, keeping the class axis as 1."""
    return np.einsum("ij...,ij...->i...", a, b)[:, None]


class Workspace(object):
    """Named buffers kept from one call to the next, reallocated only when a shape changes."""

    def __init__(self):
        self.buffers = {}

    def get(self, name, shape, dtype):
        buf = self.buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self.buffers[name] = np.empty(shape, dtype)
        return buf


# -- the base class -----------------------------------------------------------------

class CheckedArguments(type):
    """The type of the loss classes: a loss class takes keyword arguments only, the keys of
    its row of the table of layers (its ``ROW``, :class:`caffe_losses.params.Layer`), and
    gets them as the layer gets its ``param_str``: checked by the row (what the layer
    refuses, the class refuses, with the same message), numpy values as Python ones."""

    def __call__(cls, **params):
        row = cls.__dict__.get("ROW")  # (a subclass without a row of its own: unchecked)
        if row is not None:
            params = row.validate(params)
        return type.__call__(cls, **params)


class Loss(object, metaclass=CheckedArguments):
    """A loss with its parameters: ``forward`` then ``backward``, or call it for both.

    ``forward(scores, labels, weights)`` returns the normalized loss; ``backward(out,
    scale)`` writes the gradient times ``scale`` (the top diff) into ``out``. A subclass
    defines:

    * ``reference(x, labels, weights)``: the plain numpy formula on the work-shape
      scores ``x``; returns ``(loss sum, full count, valid count)`` and leaves the
      gradient, times everything but the top diff and the normalizer, in ``self.grad``
      (or sets ``self.make_grad``, a function ``(out, k)`` that writes the gradient
      times ``k``, where making it in backward saves a pass over a large blob). It
      checks the inputs and raises the errors that name them.
    * ``kernel(x, labels, weights)`` (optional): the same from a compiled kernel,
      through :meth:`run_kernel`; returns what ``reference`` does, or None to hand the
      call to ``reference``.
    * ``on_new_shape()`` (optional): what depends only on the input shape and dtype.

    A loss class takes the keys of its row as keyword arguments, checked
    (:class:`CheckedArguments`).
    """

    kernel = None
    ROW = None

    def __init__(self, axis=1, normalization="batch_size"):
        self.axis = axis
        self.normalization = normalization
        self.work = Workspace()
        self.shape = self.input_dtype = self.labels_shape = self.z = self._grad = None
        self.jitted = False
        self.empty = False

    def __call__(self, scores, labels, weights=None):
        scores = np.asarray(scores)
        loss = self.forward(scores, labels, weights)
        grad = np.empty(scores.shape, self.dtype)
        self.backward(grad.reshape(self.ws), 1.0)
        return loss, grad.astype(scores.dtype, copy=False)

    def prepare(self, scores):
        """A view of the scores in the work shape; shape facts recomputed on change."""
        if scores.shape != self.shape or scores.dtype != self.input_dtype:
            self.shape, self.input_dtype = scores.shape, scores.dtype
            self.ws = work_shape(scores.shape, self.axis)
            self.dtype = np.result_type(scores.dtype, np.float32)
            self.locations = self.ws[0] * (self.ws[2] if len(self.ws) == 3 else 1)
            # whether calls try the kernel; on_new_shape may narrow it
            self.use_jit = (self.kernel is not None and jit.ENABLED
                            and scores.dtype in (np.float32, np.float64))
            # (1, 2 and 3-d "no weights" for the kernels: jit.NO_WEIGHTS)
            self.no_weights = jit.NO_WEIGHTS.get(scores.dtype, (None,) * 3)
            self.labels_shape = self._grad = None
            self.on_new_shape()
        return scores.reshape(self.ws)

    def check_labels(self, shape):
        """Raise the ValueError of :func:`label_shape_error` for labels of ``shape``."""
        row = self.ROW
        sparse = row is not None and row.labels == "sparse"
        error = label_shape_error(shape, self.shape, self.axis, sparse,
                                  "scores" if row is None else row.inputs)
        if error:
            raise ValueError(error)
        self.labels_shape = shape

    def on_new_shape(self):
        """Hook for what depends only on the shape (per-class arrays, buffers)."""

    @property
    def grad(self):
        """The gradient buffer, made at its first use: the kernels that make the gradient
        in backward need none, and an unused blob-sized buffer costs a fresh object (each
        call of a plain function) page faults on the next one the process makes."""
        if self._grad is None:
            self._grad = self.work.get("grad", self.ws, self.dtype)
        return self._grad

    def forward(self, scores, labels, weights=None):
        x = self.prepare(scores)
        self.make_grad = self.z = None
        if type(labels) is not np.ndarray:
            labels = np.asarray(labels)
        if labels.shape != self.labels_shape:
            self.check_labels(labels.shape)  # before any kernel, which would take any count
        if x.size == 0:  # no scores (N = 0): nothing counts; an empty gradient
            self.jitted, self.empty, self.z = False, True, 1.0
            return 0.0
        self.inputs = x, labels, weights
        out = None
        if self.use_jit:
            # labels and weights in the scores' dtype (as Caffe gives them) where that keeps
            # their values: one compiled kernel per dtype of the scores
            dtype = x.dtype
            if labels.dtype is not dtype:
                labels = jit.in_dtype(labels, dtype)
            if weights is not None and getattr(weights, "dtype", None) is not dtype:
                weights = jit.in_dtype(weights, dtype)
            out = self.kernel(x, labels, weights)
        self.jitted = out is not None
        if out is None:
            out = self.run_reference()
        total, full, valid = out[:3]
        divisor = out[3] if len(out) > 3 else None
        return self.normalize(total, full, valid, x, labels, weights, divisor=divisor)

    def run_reference(self):
        # a NaN or Inf input shows as a loss that is not finite, which normalize() names;
        # numpy's warnings on the way would only repeat it
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            out = self.reference(*self.inputs)
            if math.isfinite(out[0]) or self.inputs[0].dtype != np.float32:
                return out
            # float32 inputs near the largest float32 overflow the float32 steps on the way
            # (s - max s, r |s|) where float64 holds them: once more in float64 (the
            # gradient, bounded by the weights, fits its float32 buffer)
            self.inputs = tuple(None if a is None else np.asarray(a, np.float64)
                                for a in self.inputs)
            return self.reference(*self.inputs)

    def backward(self, out, scale):
        if self.z is None:
            raise RuntimeError("%s: backward() needs a forward() first (a successful one), whose "
                               "gradient it scales" % type(self).__name__)
        k = float(scale) / self.z
        if self.jitted and self.make_grad is not None:
            try:
                return self.make_grad(out, k)
            except Exception as exc:  # a backward kernel failed: the reference, as forward
                jit.failed(exc)
                self.use_jit = self.jitted = False
                self.make_grad = None
                self.run_reference()
        if self.make_grad is not None:
            self.make_grad(out, k)
        else:
            np.multiply(self.grad, k, out=out)

    def run_kernel(self, kernel, *args):
        """Run a compiled kernel ``kernel(scores, labels, weights, ...)`` whose first
        output is a status. Returns its other outputs, or None when the call should go to
        the reference instead: a label or weight dtype that numba does not take, a status
        other than ``jit.OK`` (the reference then raises the error that names the input,
        or computes what the kernel's shortcut could not), or a failure of numba itself
        (warned once; the reference from then on). A backward kernel that fails is
        handled alike, in :meth:`backward`."""
        if args[1].dtype not in jit.DTYPES or args[2].dtype not in jit.DTYPES:
            return None
        try:
            out = kernel(*args)
        except Exception as exc:
            jit.failed(exc)
            self.use_jit = False
            return None
        if out[0] != jit.OK:
            return None
        return out[1:]

    def normalize(self, total, full_count, valid_count, *inputs, divisor=None):
        """Divide the summed loss by the normalizer (or ``divisor``, at least 1); check it.

        Also records whether anything counted at all (``empty``), for the layers'
        one-time warning.
        """
        self.empty = not valid_count
        if divisor is None:
            z = normalizer(self.normalization, self.ws[0], full_count, valid_count)
        else:
            z = max(1.0, float(divisor))
        loss = float(total) / z
        if not math.isfinite(loss):
            # the inputs by the names of the row's bottoms (a teacher's scores where a
            # loss takes two blobs of scores)
            names = ("scores", "labels", "weights") if self.ROW is None else self.ROW.bottoms
            for name, array in zip(names, inputs):
                check_finite(name, None if array is None else np.asarray(array))
            raise ValueError("the loss is not finite although every input is; please report this")
        self.z = z
        return loss


class ElementLoss(Loss):
    """What the losses of one term per element on 0/1 (or soft) labels share: sigmoid
    cross-entropy and focal, asymmetric. A subclass sets ``ignore_label`` and defines
    ``element_reference(x, y)``, the loss and gradient per element before any weight, and
    ``kernel_call()``, its kernel and the arguments that go between the weights and the
    gradient.

    The kernel takes rows: ``(N, C)`` blobs as they are, and ``N x C x H x W`` blobs as
    ``N * C`` rows of ``H * W`` (every element of a row one class), which it can do only
    without per-class arrays (``set_rows``) and with weights per sample or element; other
    blobs take the reference.
    """

    def set_rows(self, per_class_arrays):
        """The kernel's rows for this shape; no kernel for planes with per-class arrays."""
        ws = self.ws
        planes = len(ws) == 3
        self.use_jit = self.use_jit and not (planes and per_class_arrays)
        self.rows = (ws[0] * ws[1], ws[2]) if planes else ws

    def reference(self, x, labels, weights):
        y, mask = binary_labels(labels, self.ws, self.ignore_label)
        w = broadcast_weights(weights, self.shape, self.axis, per_element=True)
        check_nonnegative("weights", w)
        w = masked_weights(w, mask, self.dtype)
        loss, grad = self.element_reference(x, y)
        self.grad[...] = times(grad, w)
        total = times(loss, w).sum(dtype=np.float64)
        valid = x.size if w is None else np.broadcast_to(w, self.ws).sum(dtype=np.float64)
        positives = times(y, w).sum(dtype=np.float64) if self.normalization == "positive" else None
        return total, x.size, valid, positives

    def kernel(self, x, labels, weights):
        w = broadcast_weights(weights, self.shape, self.axis, per_element=True)
        if w is not None and w.size != x.size and len(self.ws) == 3:
            return None  # per-location weights of an N x C x H x W blob: not rows of it
        w = self.no_weights[1] if w is None else w.reshape(self.rows) if w.size == x.size else w
        kernel, args = self.kernel_call()
        out = self.run_kernel(kernel, x.reshape(self.rows), np.asarray(labels).reshape(self.rows),
                              w, *args, self.grad.reshape(self.rows))
        if out is None:
            return None
        total, valid, positives = out
        return total, x.size, valid, positives if self.normalization == "positive" else None
