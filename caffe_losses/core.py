"""What every loss shares: :class:`Loss`, which takes the inputs, runs the loss's plan
(its kernels) or its numpy reference, and divides by Caffe's normalizer.

A call, for every entry point (a layer, a class, a function)::

    forward(scores, labels, weights)
      check_shapes  on new input shapes: axis, per-class keys, labels, weights
      prepare       on a new shape or dtype of the scores: the work shape and the plan
      plan.forward  the loss's kernels (numba installed, a plan for this shape): the sums,
                    or None where the kernel declines
      reference     otherwise: labels prepared, ignored items out of the weights, the
                    loss's numpy formula, the sums
      normalize     the loss sum over the normalizer (at least 1), checked finite
    backward(out, scale)  the gradient times scale / normalizer, into out

Normalization uses Caffe's ``LossParameter`` vocabulary (:func:`normalizer`); the
divisor is never below 1, so a batch where nothing counts gives a loss of 0 and a zero
gradient, not NaN. A batch of no scores at all (N = 0) gives the same.
"""
import collections
import math
import threading

import numpy as np

from . import inputs
from .kernels import jit
from .kernels.plan import SCORE_DTYPES
from .params import ParamError

# (1 - p_t)^(gamma - 1) with gamma < 1 is infinite where 1 - p_t rounds to 0; the terms
# it multiplies vanish there, so the base is held above this instead (the focal losses'
# references and kernels).
FOCAL_BASE_MIN = 1e-30


def normalizer(normalization, outer, full_count, valid_count, positive_sum=None):
    """The divisor of a summed loss, after Caffe's ``LossLayer::GetNormalizer``.

    ============== ===========================================================
    ``full``       every location (element, for element-wise losses)
    ``valid``      what counts: locations (elements) not ignored, with a
                   target; with weights, the sum of their weights
    ``batch_size`` outer_num, the product of the dimensions before the class axis
                   (N for ``axis`` 1), as Caffe's ``SoftmaxWithLoss``
    ``none``       1: the plain sum
    ``positive``   the sum of the positive labels (times the weights): the focal
                   losses' RetinaNet convention, where a loss offers it
    ============== ===========================================================

    Never below 1. (Each loss's row of the table says which of these it takes.)
    """
    value = {"full": full_count, "valid": valid_count, "batch_size": outer, "none": 1.0,
             "positive": positive_sum}[normalization]
    return max(1.0, float(value))


# -- the plain functions: one loss object per parameters, shape and dtype, reused ------------

REUSED = 8  # the loss objects the plain functions keep, per thread
_reused = threading.local()


def call(cls, params, scores, labels, weights=None):
    """``cls(**params)(scores, labels, weights)``, with the loss object (its plan and
    buffers) kept for the next call with the same parameters, scores shape and dtype: the
    last :data:`REUSED` per thread. The gradient returned is a new array at every call."""
    scores = np.asarray(scores)
    params = cls.ROW.validate(params)
    key = (cls, tuple(sorted(params.items())), scores.shape, scores.dtype, jit.ENABLED)
    losses = getattr(_reused, "losses", None)
    if losses is None:
        losses = _reused.losses = collections.OrderedDict()
    loss = losses.pop(key, None)
    if loss is None:
        loss = type.__call__(cls, **params)  # (checked above)
    losses[key] = loss
    if len(losses) > REUSED:
        losses.popitem(last=False)
    return loss(scores, labels, weights)


# -- numpy helpers of the references -----------------------------------------------------

def log_softmax(x):
    """``log softmax(s)`` over the class axis (1), shifted by each location's max."""
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def times(value, factor):
    """``value * factor``, where a None factor means 1."""
    return value if factor is None else value * factor


# -- the base class -------------------------------------------------------------------------

class CheckedArguments(type):
    """The type of the loss classes: a loss class takes keyword arguments only, the keys of
    its row of the table of layers (its ``ROW``, :class:`caffe_losses.params.Layer`), and
    gets them as the layer gets its ``param_str``: checked by the row (what the layer
    refuses, the class refuses, with the same message), defaults filled in, numpy values as
    Python ones."""

    def __call__(cls, **params):
        return type.__call__(cls, **cls.ROW.validate(params))


class Loss(object, metaclass=CheckedArguments):
    """A loss with its parameters: ``forward`` then ``backward``, or call it for both.

    ``forward(scores, labels, weights)`` returns the normalized loss; ``backward(out,
    scale)`` writes the gradient times ``scale`` (the top diff) into ``out``. The
    parameters are the keys of the class's row of the table (``ROW``), kept as attributes
    of the same names. A subclass defines:

    * ``reference(s, y)``: its numpy formula on the scores ``s`` in the work shape and the
      labels ``y`` as its preparer made them; returns ``(loss per location or element,
      gradient, what each counts in "valid" or None for 1)``, before weights;
    * ``make_plan()`` (optional): its kernels for the current shape and dtype, a
      :class:`caffe_losses.kernels.plan.Plan`, or None for the reference alone;
    * ``prepare_labels``, the label preparer of :mod:`caffe_losses.inputs` for its kind of
      labels, and ``per_element``: whether it has one term (and may have one weight) per
      element rather than per location.
    """

    ROW = None
    prepare_labels = staticmethod(inputs.binary_labels)
    per_element = False
    ignore_label = None

    def __init__(self, **params):
        for key, value in params.items():
            setattr(self, key, value)
        self.checked = self.shape = self.input_dtype = self.plan = self.z = None
        self.use_jit = self.jitted = self.empty = False

    def __call__(self, scores, labels, weights=None):
        scores = np.asarray(scores)
        loss = self.forward(scores, labels, weights)
        grad = np.empty(scores.shape, self.dtype)
        self.backward(grad.reshape(self.ws), 1.0)
        return loss, grad.astype(scores.dtype, copy=False)

    def check_shapes(self, scores, labels, weights=None, bottoms=False):
        """Check the shapes of the inputs and the per-class parameters against the scores':
        ValueError naming what does not fit (ParamError for a per-class parameter). With
        ``bottoms``, the words of a layer, which names its bottoms and ``param_str``."""
        row, axis = self.ROW, self.axis
        ws = inputs.work_shape(scores, axis)
        for key in row.per_class:
            error = inputs.per_class_error(getattr(self, key), ws[1])
            if error and bottoms:
                raise ParamError("%s: param_str key %r %s (axis %d); give one number or one "
                                 "per class" % (row.name, key, error, axis))
            if error:
                raise ValueError("%s %s; give one number or one per class" % (key, error))
        error = inputs.label_shape_error(labels, scores, axis, row.labels == "sparse", row.inputs)
        if error:
            raise ValueError(error)
        if weights is not None:
            count = int(np.prod(weights, dtype=np.int64))
            error = inputs.weights_error(count, scores, axis, self.per_element, row.inputs,
                                         weights if bottoms else None)
            if error:
                raise ValueError(error)
            self.weights_layout = inputs.weights_layout(count, ws, scores[0])
        self.checked = (scores, labels, weights)

    def prepare(self, scores):
        """The scores in the work shape; on a new shape or dtype, what depends on it alone:
        the work shape, the dtype of the gradient, the fixed normalizers, the plan."""
        if scores.shape != self.shape or scores.dtype != self.input_dtype:
            self.shape, self.input_dtype = scores.shape, scores.dtype
            self.ws = ws = inputs.work_shape(scores.shape, self.axis)
            self.dtype = np.result_type(scores.dtype, np.float32)
            self.locations = ws[0] * (ws[2] if len(ws) == 3 else 1)
            full = scores.size if self.per_element else self.locations
            self.fixed_z = (None if self.normalization in ("valid", "positive") else
                            normalizer(self.normalization, ws[0], full, None))
            self._grad = None
            self.plan = (self.make_plan() if jit.ENABLED and scores.dtype in SCORE_DTYPES
                         and scores.size else None)
            self.use_jit = self.plan is not None
        return scores if scores.shape == self.ws else scores.reshape(self.ws)

    def make_plan(self):
        return None

    def weights_in_work_shape(self, weights):
        """The weights (checked) as they broadcast against the work shape."""
        shape, repeats = self.weights_layout
        if repeats == 1:
            return weights.reshape(shape)
        return np.repeat(weights.reshape(-1), repeats).reshape(shape)

    @property
    def grad(self):
        """The gradient buffer of the reference, made at its first use: where the kernels
        take every call, a blob-sized buffer would be memory (and, for the plain functions,
        page faults at each call) for nothing."""
        if self._grad is None:
            self._grad = np.empty(self.ws, self.dtype)
        return self._grad

    def forward(self, scores, labels, weights=None):
        if type(labels) is not np.ndarray:
            labels = np.asarray(labels)
        if weights is not None and type(weights) is not np.ndarray:
            weights = np.asarray(weights)
        if (scores.shape, labels.shape, None if weights is None else weights.shape) != self.checked:
            self.z = None
            self.check_shapes(scores.shape, labels.shape, None if weights is None else weights.shape)
        return self.forward_checked(scores, labels, weights)

    def forward_checked(self, scores, labels, weights=None):
        """:meth:`forward` on arrays whose shapes :meth:`check_shapes` has checked (a
        layer checks them in its reshape, once per new shape)."""
        x = self.prepare(scores)
        if x.size == 0:  # no scores (N = 0): nothing counts; an empty gradient
            self.jitted, self.empty, self.z = False, True, 1.0
            return 0.0
        if weights is not None:
            weights = self.weights_in_work_shape(weights)
        self.inputs = x, labels, weights
        out = None
        if self.use_jit:
            try:
                out = self.plan.forward(x, labels, weights)
            except Exception as exc:
                self.kernel_failed(exc)
        self.jitted = out is not None
        if out is None:
            out = self.run_reference(x, labels, weights)
        return self.normalize(out)

    def backward(self, out, scale):
        if self.z is None:
            raise RuntimeError("%s: backward() needs a forward() first (a successful one), whose "
                               "gradient it scales" % type(self).__name__)
        k = float(scale) / self.z
        if self.jitted:
            try:
                return self.plan.backward(out, k)
            except Exception as exc:  # a backward kernel failed: the reference, as forward
                self.kernel_failed(exc)
                self.run_reference(*self.inputs)
        np.multiply(self.grad, k, out=out)

    def kernel_failed(self, exc):
        """numba failed on a kernel: warn once, and use the reference from then on."""
        jit.failed(exc)
        self.use_jit = self.jitted = False

    def run_reference(self, x, labels, weights):
        """The sums of :meth:`reference_sums`; float32 inputs whose float32 steps overflow
        on the way (s - max s, r |s| near float32's largest), where float64 holds them, once
        more in float64, with the float32 labels (a teacher's scores) and weights (the
        gradient, bounded by the weights, fits its float32 buffer).
        A NaN or Inf input shows as a loss that is not finite, which :meth:`normalize`
        names: numpy's warnings on the way would only repeat it."""
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            out = self.reference_sums(x, labels, weights)
            if math.isfinite(out[0]) or x.dtype != np.float32:
                return out
            self.inputs = tuple(None if a is None else a.astype(np.float64, copy=False)
                                if a.dtype == np.float32 else a for a in (x, labels, weights))
            return self.reference_sums(*self.inputs)

    def check_scores(self, x):
        """Hook: raise ValueError for scores the loss does not take (before the labels)."""

    def reference_sums(self, x, labels, w):
        """``(loss sum, valid sum, positive sum)`` of the reference, all times the weights
        ``w`` (None, or broadcasting against ``x``); the gradient times ``w`` into
        :attr:`grad`. What the label preparer leaves out gets weight 0."""
        self.check_scores(x)
        y, mask = self.prepare_labels(labels, self.ws, self.ignore_label)
        inputs.check_nonnegative("weights", w)
        if mask is not None:
            w = mask.astype(x.dtype) if w is None else np.where(mask, w, 0)
        loss, grad, counts = self.reference(x, y)
        self.grad[...] = times(grad, w)
        total = times(loss, w).sum(dtype=np.float64)
        if counts is None and w is None:
            valid = loss.size
        else:
            valid = np.broadcast_to(times(1.0 if counts is None else counts, w),
                                    loss.shape).sum(dtype=np.float64)
        positives = times(y, w).sum(dtype=np.float64) if self.normalization == "positive" else 0
        return total, valid, positives

    def normalize(self, out):
        """The loss sum of ``out`` (``(loss sum, valid sum[, positive sum])``) over the
        normalizer; raises ValueError naming the input where it is not finite. Records
        whether anything counted (``empty``), for the layers' one-time warning."""
        total, valid = out[0], out[1]
        self.empty = not valid
        z = self.fixed_z
        if z is None:
            z = max(1.0, float(out[2] if self.normalization == "positive" else valid))
        loss = float(total) / z
        if not math.isfinite(loss):
            for name, array in zip(self.ROW.bottoms, self.inputs):
                inputs.check_finite(name, None if array is None else np.asarray(array))
            raise ValueError("the loss is not finite although every input is; please report this")
        self.z = z
        return loss
