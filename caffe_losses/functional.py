"""Cross-entropy losses as pure numpy: no Caffe import.

Each loss is a small class whose ``forward(scores, labels, weights)`` returns
the loss and keeps what ``backward(out, scale)`` needs to write the gradient
(times ``scale``, the top diff) into ``out``; and a function of the same
name in lower case that returns ``(loss, grad)`` for a top diff of 1. The
Caffe layers call ``forward`` and ``backward`` from their own; buffers are
reused from one call to the next. When numba is installed, most calls run
through compiled loops instead (small blobs of every loss but binary
cross-entropy; the sigmoid losses and the multi-label softmax at every size;
see :mod:`caffe_losses.jit`); the numpy code below is the reference they agree
with, and what runs without numba. The softmax losses and cross-entropy on
probabilities compute the gradient in ``backward``, so a test net that never
runs backward never computes it. The sigmoid losses compute it in
``forward``, block by block while the block's values are in cache (see
:func:`block_plan`), and ``backward`` only scales it: their element-wise
chain is long enough that a second pass over the blob would cost more.

Shapes follow Caffe: scores have the class axis ``axis`` (default 1), so a
blob of shape ``(N, C)`` or ``(N, C, H, W)`` has ``N * H * W`` *locations*,
each with ``C`` class scores, and ``N * C * H * W`` *elements*. Internally
every array is viewed as ``(outer, C, inner)``, with
``outer = prod(shape[:axis])`` and ``inner = prod(shape[axis + 1:])``, as
Caffe's own softmax does (as ``(outer, C)`` when ``inner`` is 1).

Labels come in two kinds:

* dense: one label per score (multi-hot, soft or real-valued), for the
  multi-label softmax, the sigmoid losses and cross-entropy on probabilities;
* sparse: one integer class index per location (shape ``N`` or
  ``N x 1 x H x W``), for the single-label softmax losses, as Caffe's
  ``SoftmaxWithLoss``.

Weights (an optional array) hold one value per sample (``N``), per location
(``N * H * W``) or, for the element-wise losses, per element.

Normalization (the divisor of the summed loss) uses Caffe's LossParameter
vocabulary, see :func:`normalizer`. As in Caffe the divisor is never below 1,
so a batch with nothing to count gives a loss of 0 and a zero gradient, not
NaN.
"""
import math
from contextlib import nullcontext
from functools import reduce
from operator import mul

import numpy as np

from . import jit

NORMALIZATIONS = ("full", "valid", "batch_size", "none")
TARGETS = ("sum", "count")
MODES = ("categorical", "binary")
EPS = {"categorical": 1e-20, "binary": 1e-7}


# -- shapes, weights, normalization --------------------------------------------

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


def location_shape(ws):
    """The shape of a per-location array that broadcasts against ``ws``."""
    return (ws[0], 1) + tuple(ws[2:])


def class_shape(ws):
    """The shape of a per-class array that broadcasts against ``ws``."""
    return (1, ws[1]) + (1,) * (len(ws) - 2)


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
    if w.size == n and outer % n == 0:  # the class axis is not the batch axis
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


def at_labels(value, index):
    """A per-class value (None, a number or an array) at each location's class index."""
    if value is None or isinstance(value, float):
        return value
    return value.reshape(-1)[index]


def normalizer(normalization, batch_size, full_count, valid_count):
    """The divisor of a summed loss, after Caffe's ``LossLayer::GetNormalizer``.

    ============== ===========================================================
    ``full``       every location (element, for element-wise losses)
    ``valid``      what counts: locations (elements) not ignored, with a
                   target; with weights, the sum of their weights
    ``batch_size`` N, the first dimension
    ``none``       1: the plain sum
    ============== ===========================================================

    Never below 1.
    """
    if normalization == "full":
        value = full_count
    elif normalization == "valid":
        value = valid_count
    elif normalization == "batch_size":
        value = batch_size
    elif normalization == "none":
        value = 1.0
    else:
        raise ValueError("unknown normalization %r; expected one of %s"
                         % (normalization, ", ".join(NORMALIZATIONS)))
    return max(1.0, float(value))


def product(*factors):
    """The product of the factors that are not None (None when all are)."""
    out = None
    for f in factors:
        if f is not None:
            out = f if out is None else out * f
    return out


def total_of(factor, count):
    """Sum of a per-location factor, or ``count`` when the factor is None (all ones)."""
    return float(count) if factor is None else float(factor.sum(dtype=np.float64))


# -- input checks ----------------------------------------------------------------
# Cheap checks run on every call (a min or max over the labels); the detailed
# ones that count the offending values run only once something is wrong.

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
    """Raise ValueError unless ``array`` is >= 0 (NaN fails too). One pass when it is."""
    if array.size and not array.min() >= 0:
        check_finite(name, array)
        raise ValueError("%s must be >= 0; %d values are below (smallest %g)"
                         % (name, np.count_nonzero(array < 0), array.min()))


def not_finite(**inputs):
    """The error for a loss that came out NaN or Inf: name the input that made it so."""
    for name, array in inputs.items():
        check_finite(name, array)
    return ValueError("the loss is not finite although every input is; please report this")


def sparse_index(labels, ws, ignore_label):
    """Integer class indices shaped per location, and the mask of counted locations.

    Ignored locations get index 0 (and False in the mask; the mask is None when
    nothing is ignored). Raises ValueError for labels that are not integers
    in ``[0, C)`` (or the ignore label).
    """
    lab = np.asarray(labels).reshape(location_shape(ws))
    if ignore_label is None:
        mask = None
        counted = lab
    else:
        mask = lab != ignore_label
        if mask.all():
            mask, counted = None, lab
        else:
            counted = np.where(mask, lab, 0)
    classes = ws[1]
    if counted.size < 4096:
        # Held within [0, C - 1] (NaN goes to 0), a label equals its integer part only if it
        # was a valid class index: one comparison checks range and integrality, in the fewest
        # numpy calls, which is what counts for few labels
        index = np.fmin(np.fmax(counted, 0), classes - 1).astype(np.intp)
        if np.logical_and.reduce(index == counted, None):
            return index, mask
    # Many labels: fmin and fmax have no fast loop in numpy 1.19, min and max have (NaN fails)
    elif counted.min() >= 0 and counted.max() <= classes - 1 and (
            counted.dtype.kind != "f" or np.logical_and.reduce(np.trunc(counted) == counted, None)):
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


class Workspace(object):
    """Named buffers kept from one call to the next, reallocated only when a shape changes."""

    def __init__(self):
        self.buffers = {}

    def get(self, name, shape, dtype):
        buf = self.buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self.buffers[name] = np.empty(shape, dtype)
        return buf


BLOCK = 1 << 15  # elements per block: the arrays of a block stay in a core's L2 cache


def block_plan(work, ws, dtype, scratch):
    """Cut arrays of work shape ``ws`` into blocks of about ``BLOCK`` elements.

    Element-wise work on a large blob goes faster block by block: the
    temporaries of a block stay in cache instead of streaming through memory
    once per operation. A block holds whole locations (all classes) of a
    ``(outer, C[, inner])`` shape, so per-class arrays broadcast against it; a
    1-d shape is cut anywhere. Returns a list of ``(index, views)``, where
    ``x[index]`` is a block of ``x`` and ``views`` are ``scratch`` workspace
    buffers in the block's shape.
    """
    flat = len(ws) == 1
    if flat:
        ws = ws + (1,)
    outer, classes = ws[0], ws[1]
    inner = ws[2] if len(ws) == 3 else 1
    if classes * inner <= BLOCK or inner == 1:
        step = max(1, BLOCK // max(1, classes * inner))
        cuts = [((slice(i, min(i + step, outer)),), (min(i + step, outer) - i,) + tuple(ws[1:]))
                for i in range(0, outer, step)]
        if flat:
            cuts = [(index, shape[:1]) for index, shape in cuts]
    else:
        step = max(1, BLOCK // classes)
        cuts = [((slice(n, n + 1), slice(None), slice(j, min(j + step, inner))),
                 (1, classes, min(j + step, inner) - j))
                for n in range(outer) for j in range(0, inner, step)]
    size = max([reduce(mul, shape, 1) for _, shape in cuts] + [0])
    buffers = [work.get("block%d" % k, (size,), dtype) for k in range(scratch)]
    views, plan = {}, []
    for index, shape in cuts:
        if shape not in views:
            views[shape] = tuple(buf[:reduce(mul, shape, 1)].reshape(shape) for buf in buffers)
        plan.append((index, views[shape]))
    return plan


class Loss(object):
    """A loss with its parameters; ``forward`` then ``backward``, or call it for both."""

    def __init__(self, axis=1, normalization="batch_size"):
        self.axis = axis
        self.normalization = normalization
        self.work = Workspace()
        self.shape = self.input_dtype = None
        self.jitted = False

    def __call__(self, scores, labels, weights=None):
        scores = np.asarray(scores)
        loss = self.forward(scores, labels, weights)
        grad = np.empty(scores.shape, self.dtype)
        self.backward(grad.reshape(self.ws), 1.0)
        return loss, grad.astype(scores.dtype, copy=False)

    def prepare(self, scores):
        """A view of the scores as ``(outer, C[, inner])``; shape facts recomputed on change."""
        if scores.shape != self.shape or scores.dtype != self.input_dtype:
            self.shape, self.input_dtype = scores.shape, scores.dtype
            self.ws = work_shape(scores.shape, self.axis)
            self.dtype = np.result_type(scores.dtype, np.float32)
            self.locations = self.ws[0] * (self.ws[2] if len(self.ws) == 3 else 1)
            # whether calls try a jit loop: on_new_shape narrows this to the blobs its loop takes
            self.use_jit = jit.ENABLED and scores.dtype in (np.float32, np.float64)
            self.on_new_shape()
        self.jitted = False
        return scores.reshape(self.ws)

    def small_rows(self):
        """Whether the blob is ``(N, C)`` with at most :data:`jit.MAX_SIZE` elements: the
        blobs whose every step the loops take on (see there for the limit)."""
        return len(self.ws) == 2 and self.ws[0] * self.ws[1] <= jit.MAX_SIZE

    def jit_result(self, kernel, *args):
        """Run a :mod:`jit` loop ``kernel(scores, labels, weights, ...)`` that writes the
        gradient into ``self.grad``. Returns its outputs after the status, or None when the
        status (or a dtype numba does not take, such as float16, or a failure of numba) sends
        the call to numpy."""
        if args[1].dtype not in jit.DTYPES or args[2].dtype not in jit.DTYPES:
            return None
        try:
            out = kernel(*args)
        except Exception as exc:  # numba failed: numpy from now on
            jit.failed(exc)
            self.use_jit = False
            return None
        if out[0] != jit.OK:
            return None
        self.jitted = True
        return out[1:]

    def scaled_grad(self, out, scale):
        """``backward`` for a gradient kept by forward: it times ``scale / Z``."""
        np.multiply(self.grad, float(scale) / self.z, out=out)

    @staticmethod
    def per_class_array(value, classes):
        """A per-class value as the 1-d float64 array the jit loops take (ones for None)."""
        value = 1.0 if value is None else value
        return np.broadcast_to(np.asarray(value, np.float64).reshape(-1), (classes,)).copy()


    def on_new_shape(self):
        """Hook for what depends only on the shape (per-class arrays, index bases)."""

    def normalize(self, total, full_count, valid_count, *inputs, divisor=None):
        """Divide the summed loss by the normalizer (or ``divisor``, at least 1); check it.

        Also records whether anything counted at all (``empty``), for the layers'
        one-time warning.
        """
        self.empty = not valid_count
        if divisor is None:
            self.z = normalizer(self.normalization, self.shape[0], full_count, valid_count)
        else:
            self.z = max(1.0, float(divisor))
        loss = float(total) / self.z
        if not math.isfinite(loss):
            raise not_finite(**dict(zip(("scores", "labels", "weights"), inputs)))
        return loss


# -- softmax losses ---------------------------------------------------------------

# A note on speed. numpy's fast (SIMD) loops for exp, log, abs and sqrt are used
# only when the output does not overlap the input (numpy 1.19, as in Debian 11):
# in place they run up to 70 times slower. log1p, expm1, tanh and power have no
# fast loop at all. So transcendental functions always write to another buffer,
# log(1 + u) stands in for log1p(u) where the difference is below float32
# resolution of the result, and powers are taken as exp(gamma log x).


FAILED = object()  # what Softmax.jit_call returns when numba failed


class Softmax(Loss):
    """Shared by the softmax losses: ``exp(s - max)``, its sum and the log-partition."""

    # whether softmax_parts tries jit.exp_sums_planes (set by the losses that take it)
    jit_exp = False

    def softmax_parts(self, x):
        """``log sum_c exp(s_c)`` per location, in the working dtype (a float32 sum's log
        gains nothing in float64); keeps the exponentials (or, after the jit loop, None:
        see :meth:`scaled_exp`) and their sums for backward."""
        if self.jit_exp:
            sums = self.work.get("exp_sums", location_shape(self.ws), self.dtype)
            status = self.jit_call(jit.exp_sums_planes, x, self.part, self.plane_sums,
                                   sums.reshape(self.ws[0], self.ws[2]))
            if status == jit.OK:
                self.exp, self.exp_sum, self.x = None, sums, x
                return np.log(sums)
        e = self.work.get("exp", self.ws, self.dtype)
        # Most blobs need no shift at all: exp(s) directly, with the sums checked afterwards.
        # Overflow is kept quiet by np.errstate on large blobs; on small ones a max over the
        # scores is cheaper than np.errstate (2 against 5 us) and rules it out beforehand.
        unshifted = True
        if x.size >= 4096:
            with np.errstate(over="ignore", under="ignore"):
                np.exp(x, out=e)
        elif np.maximum.reduce(x, None) < 88:  # exp(88) is below float32's largest value
            np.exp(x, out=e)
        else:
            unshifted = False
        if unshifted:
            sums = np.add.reduce(e, axis=1, keepdims=True)
            if np.minimum.reduce(sums, None) >= 1e-30 and np.maximum.reduce(sums, None) <= 1e30:
                self.exp, self.exp_sum = e, sums  # (inf and NaN fail the check)
                return np.log(sums)
        m = self.shift(x)
        shifted = self.work.get("shifted", self.ws, self.dtype)
        np.subtract(x, m, out=shifted)
        np.exp(shifted, out=e)
        self.exp = e
        self.exp_sum = np.add.reduce(e, axis=1, keepdims=True)
        return m + np.log(self.exp_sum)

    def plane_buffers(self):
        """The block sums the planes loops of :mod:`jit` work in."""
        self.part = self.work.get("part", (4 * jit.PLANE_BLOCK,), self.dtype)
        self.plane_sums = self.work.get("planes", (5 * jit.PLANE_BLOCK,), np.float64)

    def jit_call(self, kernel, *args):
        """A jit loop's result, or ``FAILED`` if numba failed (then numpy from now on)."""
        try:
            return kernel(*args)
        except Exception as exc:
            jit.failed(exc)
            self.jit_exp = False
            return FAILED

    def scaled_exp(self, factor, out):
        """``out = exp(s) * factor`` (one factor per location, in the working dtype) from
        what :meth:`softmax_parts` kept: its exponentials, or the scores for the jit loop."""
        if self.exp is None:
            factor = np.ascontiguousarray(np.broadcast_to(factor, location_shape(self.ws)))
            if self.jit_call(jit.exp_times_planes, self.x,
                             factor.reshape(self.ws[0], self.ws[2]), out) is not FAILED:
                return out
            self.exp = np.exp(self.x)  # (forward's sums showed it finite)
        return np.multiply(self.exp, factor, out=out)

    def flat_index(self, index):
        """Positions of each location's labelled score in the flattened blob."""
        classes = self.ws[1]
        if len(self.ws) == 2:
            base = self.work.buffers.get("base2")
            if base is None or base.shape != index.shape:
                base = self.work.buffers["base2"] = np.arange(self.ws[0])[:, None] * classes
            return base + index
        inner = self.ws[2]
        base = self.work.buffers.get("base3")
        if base is None or base.shape != index.shape:
            base = self.work.buffers["base3"] = (np.arange(self.ws[0])[:, None, None] * (classes * inner)
                                                 + np.arange(inner)[None, None, :])
        return base + index * inner

    @staticmethod
    def shift(x):
        """What to subtract from the scores before exp: their max per location, or one number.

        Any shift keeps softmax exact; it only has to keep exp from overflowing
        and a location's sum from underflowing (``softmax_parts`` first tries
        none, for blobs large enough that it pays). For N x C x H x W blobs a max
        over the class axis is slow in numpy (it is a strided reduction), so when
        the whole blob spans at most 60, its overall max serves every location:
        exp then stays within [e^-60, 1], far from float32's limits.
        """
        if x.ndim == 3:
            hi = x.max()
            if hi - x.min() <= 60:
                return hi
        return x.max(axis=1, keepdims=True)


def row_dot(a, b):
    """``sum_c a_c b_c`` per location, keeping the class axis as 1."""
    if a.ndim == 2:
        return np.einsum("ij,ij->i", a, b)[:, None]
    return np.einsum("ijk,ijk->ik", a, b)[:, None, :]


class MultiLabelSoftmax(Softmax):
    r"""Softmax cross-entropy against multi-hot or real-valued labels.

    Per location, with non-negative labels :math:`y_c`, the target is
    :math:`t_c = y_c / \sum_k y_k` (``target="sum"``) or :math:`y_c / M`, with
    :math:`M` the number of non-zero labels (``"count"``, the 1/M of Mahajan
    et al. 2018), and :math:`\ell = -\sum_c t_c \log \mathrm{softmax}(s)_c`. A
    location with no positive label contributes nothing and is not valid.
    Gradient: :math:`w (T p_c - t_c) / Z`, :math:`T = \sum_k t_k`.

    ``backward`` reads the scores and labels given to ``forward`` again (the compiled
    loops for large blobs make exp(s) anew rather than keep a blob of them), so they must
    not change in between, as for Caffe's own layers, which read their bottoms in backward.
    """

    def __init__(self, axis=1, target="sum", normalization="batch_size"):
        Loss.__init__(self, axis, normalization)
        if target not in TARGETS:
            raise ValueError("unknown target %r; expected one of %s" % (target, ", ".join(TARGETS)))
        self.target = target

    def forward(self, scores, labels, weights=None):
        x = self.prepare(scores)
        y = np.asarray(labels).reshape(self.ws)
        if self.use_jit:
            w = broadcast_weights(weights, self.shape, self.axis)
            count = self.target == "count"
            if x.ndim == 3:
                f = self.factors
                out = self.jit_result(jit.multilabel_softmax_planes, x, y,
                                      jit.ONES3 if w is None else w, count, f[0], f[1],
                                      self.part, self.plane_sums)
            elif self.small:
                out = self.jit_result(jit.multilabel_softmax, x, y,
                                      jit.NO_ARRAY if w is None else w.reshape(-1), count,
                                      self.grad)
            else:
                f = self.factors
                out = self.jit_result(jit.multilabel_softmax_rows, x, y,
                                      jit.NO_ARRAY if w is None else w.reshape(-1), count,
                                      f[0], f[1], self.shifts, self.part)
            if out is not None:
                self.x, self.labels = x, y
                return self.normalize(out[0], self.locations, out[1], x, y, weights)
        self.coef, label_sum, valid = dense_targets(y, weights, self)
        log_z = self.softmax_parts(x)
        # sum_c t_c (log Z - s_c), times w: coef (label_sum log Z - sum_c y_c s_c)
        total = (self.coef * (label_sum * log_z - row_dot(y, x))).sum()
        self.labels, self.label_sum = y, label_sum
        return self.normalize(total, self.locations, valid, x, y, weights)

    def on_new_shape(self):
        # Any blob takes a loop. Up to jit.MAX_SIZE elements it writes the gradient in
        # forward. Above, and for N x C x H x W blobs, it keeps two factors per location,
        # and backward makes the gradient from them in one pass, straight into the bottom
        # diff; both passes read the scores and labels once (see jit._multilabel_softmax_rows)
        self.small = self.small_rows()
        if not self.use_jit:
            return
        if self.small:
            self.grad = self.work.get("grad", self.ws, self.dtype)
            return
        self.factors = self.work.get("factors", (2, self.ws[0]) + tuple(self.ws[2:]), np.float64)
        if len(self.ws) == 2:
            self.shifts = self.work.get("shifts", (self.ws[0],), np.float64)
            self.part = self.work.get("part", (3,), self.dtype)
        else:
            self.plane_buffers()

    def backward(self, out, scale):
        if self.jitted:
            if self.small:  # the loop wrote the gradient in forward
                return self.scaled_grad(out, scale)
            k = float(scale) / self.z
            f = self.factors
            if out.ndim == 2:
                return jit.multilabel_softmax_rows_grad(self.x, self.labels, f[0], f[1],
                                                        self.shifts, k, out, self.part)
            return jit.multilabel_softmax_planes_grad(self.x, self.labels, f[0], f[1], k, out,
                                                      self.part)
        k = self.coef * (scale / self.z)
        tmp = self.work.get("tmp", self.ws, self.dtype)
        np.multiply(self.exp, (k * self.label_sum / self.exp_sum).astype(self.dtype), out=tmp)
        np.multiply(self.labels, k.astype(self.dtype), out=out)
        np.subtract(tmp, out, out=out)


def dense_targets(y, weights, loss):
    """Per-location ``w / denom`` (0 where a location has no positive label), label sums, valid count.

    ``denom`` is the label sum (``target="sum"``) or the number of non-zero labels
    (``"count"``). Checks that labels and weights are non-negative.
    """
    check_nonnegative("labels", y)
    w = broadcast_weights(weights, loss.shape, loss.axis)
    if w is not None:
        check_nonnegative("weights", w)
    label_sum = y.sum(axis=1, keepdims=True).astype(np.float64)
    if loss.target == "sum":
        denom = label_sum
    else:
        denom = np.count_nonzero(y, axis=1).reshape(label_sum.shape).astype(np.float64)
    valid = denom > 0
    coef = np.divide(1.0 if w is None else w, denom, out=np.zeros(denom.shape), where=valid)
    count = np.count_nonzero(valid) if w is None else np.where(valid, w, 0).sum(dtype=np.float64)
    return coef, label_sum, count


class SparseSoftmax(Softmax):
    """Shared by the sparse-label softmax losses: labels, weights, softmax, labelled scores."""

    def use_jit_now(self, scores):
        """Whether this call tries the jit loop; keeps the score view as ``self.x``."""
        self.x = self.prepare(scores)
        return self.use_jit

    def on_new_shape(self):
        # N x C x H x W blobs: numpy code, but with the exponentials' sums and backward's
        # exp(s) times a factor from jit loops that read the scores once each
        self.jit_exp = self.use_jit and len(self.ws) == 3
        if self.jit_exp:
            self.plane_buffers()
        self.use_jit = self.use_jit and self.small_rows()
        self.jit_ignore = jit.ignore_value(self.ignore_label)
        self.grad = self.work.get("grad", self.ws, self.dtype)

    def jit_forward(self, kernel, labels, weights, per_class, value):
        """The loss from a :mod:`jit` loop ``kernel(scores, labels, weights, per_class,
        value, ignore, grad)``, or None to use numpy."""
        w = broadcast_weights(weights, self.shape, self.axis)
        out = self.jit_result(kernel, self.x, np.asarray(labels).reshape(self.locations),
                              jit.NO_ARRAY if w is None else w.reshape(-1), per_class, value,
                              self.jit_ignore, self.grad)
        return None if out is None else self.normalize(out[0], self.locations, out[1], self.x,
                                                       labels, weights)

    def sparse_parts(self, scores, labels, weights):
        """Returns the score view, class indices, per-location weights (or None), the
        log-partition and each location's labelled score; keeps what backward needs."""
        x = self.prepare(scores)
        index, mask = sparse_index(labels, self.ws, self.ignore_label)
        w = location_weights(weights, mask, self)
        log_z = self.softmax_parts(x)
        self.flat = self.flat_index(index)
        return x, index, w, log_z, x.reshape(-1)[self.flat]


class SoftmaxCrossEntropy(SparseSoftmax):
    r"""Softmax cross-entropy with sparse labels (Caffe's ``SoftmaxWithLoss``, PyTorch's
    ``CrossEntropyLoss``).

    Per counted location with class :math:`y`, class weights :math:`a` and label
    smoothing :math:`\varepsilon`:
    :math:`\ell = -(1-\varepsilon) a_y \log p_y - \frac{\varepsilon}{C}\sum_c a_c \log p_c`.
    ``"valid"`` divides by :math:`\sum a_y` over the counted locations (times
    their weights). Gradient: :math:`Q p_c - q_c` with :math:`q_c` the
    coefficients of :math:`-\log p_c` above and :math:`Q = \sum_c q_c`.
    """

    def __init__(self, axis=1, ignore_label=None, class_weight=None, label_smoothing=0.0,
                 normalization="valid"):
        Loss.__init__(self, axis, normalization)
        self.ignore_label = ignore_label
        self.class_weight = class_weight
        self.label_smoothing = label_smoothing

    def forward(self, scores, labels, weights=None):
        if self.use_jit_now(scores):
            loss = self.jit_forward(jit.softmax_cross_entropy, labels, weights, self.jit_a,
                                    float(self.label_smoothing))
            if loss is not None:
                return loss
        x, index, w, log_z, s_y = self.sparse_parts(scores, labels, weights)
        a = self.a
        a_y = at_labels(a, index)
        eps, classes = self.label_smoothing, self.ws[1]
        nll = log_z - s_y  # -log p_y
        # (1 - eps) a_y (log Z - s_y) + eps / C * sum_c a_c (log Z - s_c)
        picked = (1.0 - eps) * (1.0 if a_y is None else a_y)
        per_location = picked * nll
        mass, label_target = picked, picked  # Q, and q_y: the coefficient of -log p_y
        if eps:
            a_sum = classes if a is None else a.sum()
            a_dot_s = x.sum(axis=1, keepdims=True) if a is None else row_dot(
                x, np.broadcast_to(a.astype(self.dtype), self.ws))
            per_location = per_location + eps / classes * (a_sum * log_z - a_dot_s)
            mass = mass + eps / classes * a_sum
            label_target = picked + eps / classes * (1.0 if a_y is None else a_y)
        total = (per_location if w is None else w * per_location).sum(dtype=np.float64)
        self.mass = product(mass, w)
        self.w = w
        # The gradient at the labelled class, Q p_y - q_y, is set in backward rather than
        # subtracted: no gather of the blob there
        self.at_label = product(mass * np.exp(-nll) - label_target, w)
        valid = total_of(product(w, a_y), self.locations)
        return self.normalize(total, self.locations, valid, x, labels, weights)

    def on_new_shape(self):
        self.a = per_class(self.class_weight, self.ws, "class_weight")
        self.jit_a = self.per_class_array(self.a, self.ws[1])
        SparseSoftmax.on_new_shape(self)

    def backward(self, out, scale):
        if self.jitted:
            return self.scaled_grad(out, scale)
        k = scale / self.z
        self.scaled_exp(np.asarray(self.mass * k / self.exp_sum, self.dtype), out)
        if self.label_smoothing:
            smooth = (self.label_smoothing / self.ws[1]) * (1.0 if self.a is None else self.a)
            out -= (product(self.w, k) * smooth).astype(self.dtype) if self.w is not None else \
                np.asarray(smooth * k, dtype=self.dtype)
        out.reshape(-1)[self.flat] = self.at_label * k


def location_weights(weights, mask, loss):
    """Per-location weights times the mask of counted locations, or None for neither."""
    w = broadcast_weights(weights, loss.shape, loss.axis)
    if w is not None:
        check_nonnegative("weights", w)
    if mask is None:
        return None if w is None else w.astype(np.float64)
    return mask.astype(np.float64) if w is None else np.where(mask, w.astype(np.float64), 0.0)


class SoftmaxFocal(SparseSoftmax):
    r"""Multi-class focal loss on a softmax, sparse labels (Lin et al. 2017).

    :math:`\ell = -\alpha_y (1 - p_y)^\gamma \log p_y`; gradient
    :math:`\alpha_y[(1-p_y)^\gamma - \gamma p_y (1-p_y)^{\gamma-1}\log p_y](p_k - [k=y])`.
    ``"valid"`` divides by the counted locations (times their weights).
    """

    def __init__(self, axis=1, ignore_label=None, gamma=2.0, alpha=None, normalization="valid"):
        Loss.__init__(self, axis, normalization)
        self.ignore_label = ignore_label
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, scores, labels, weights=None):
        if self.use_jit_now(scores):
            loss = self.jit_forward(jit.softmax_focal, labels, weights, self.jit_alpha,
                                    float(self.gamma))
            if loss is not None:
                return loss
        x, index, w, log_z, s_y = self.sparse_parts(scores, labels, weights)
        g = self.gamma
        log_p = s_y - log_z  # per location, in the working dtype
        np.minimum(log_p, 0, out=log_p)  # a shared shift can round log p_y a hair above 0
        p = np.exp(log_p)
        # 1 - p_y directly: as accurate as -expm1(log p_y) here, since log p_y itself carries
        # the float rounding of the scores, and much faster (numpy has no fast expm1)
        rest = 1.0 - p
        modulation = rest ** g
        if g >= 1:
            # (1 - p_y)^gamma - gamma p_y (1 - p_y)^(gamma - 1) log p_y; for gamma 2 the
            # power is rest itself
            factor = modulation - g * (p * log_p) * (rest if g == 2 else rest ** (g - 1))
        else:
            # (1 - p_y)^(gamma - 1) is infinite at p_y = 1, so it is never formed:
            # log(p_y) / (1 - p_y) tends to -1 as p_y -> 1
            ratio = np.divide(log_p, rest, out=np.full(rest.shape, -1.0, rest.dtype), where=rest > 0)
            factor = modulation * (1.0 - g * p * ratio)
        per_location = modulation * log_p
        scale = product(at_labels(self.alpha_c, index), w)
        if scale is not None:
            factor = factor * scale
            per_location = per_location * scale
        self.factor = factor
        # the gradient at the labelled class, factor (p_y - 1), is set in backward
        self.at_label = -(factor * rest)
        return self.normalize(-per_location.sum(dtype=np.float64), self.locations,
                              total_of(w, self.locations), x, labels, weights)

    def on_new_shape(self):
        self.alpha_c = per_class(self.alpha, self.ws, "alpha")
        self.jit_alpha = self.per_class_array(self.alpha_c, self.ws[1])
        SparseSoftmax.on_new_shape(self)

    def backward(self, out, scale):
        if self.jitted:
            return self.scaled_grad(out, scale)
        k = scale / self.z
        self.scaled_exp(np.asarray(self.factor * k / self.exp_sum, self.dtype), out)
        out.reshape(-1)[self.flat] = self.at_label * k


# -- sigmoid losses ----------------------------------------------------------------

class SigmoidFocal(Loss):
    r"""Sigmoid focal loss, element-wise; with ``gamma=0``, ``alpha=None``: binary CE with logits.

    With :math:`p = \sigma(s)`, label :math:`y \in [0, 1]`, positive weight
    :math:`r_c`, class weight :math:`a_c`:
    :math:`\mathrm{CE} = -r_c y \log p - (1-y)\log(1-p)`,
    :math:`\ell = a_c \alpha_t (1-p_t)^\gamma \mathrm{CE}`,
    :math:`p_t = p y + (1-p)(1-y)`, :math:`\alpha_t = \alpha y + (1-\alpha)(1-y)`.

    Without numba the work is done block by block (see :func:`block_plan`); forward
    keeps the gradient, times everything but the top diff and the normalizer, for
    ``backward``. With numba, :meth:`jit_forward` does it.
    """

    SCRATCH = 6

    def __init__(self, axis=1, ignore_label=None, gamma=2.0, alpha=0.25, pos_weight=None,
                 class_weight=None, normalization="batch_size"):
        Loss.__init__(self, axis, normalization)
        self.ignore_label = ignore_label
        self.gamma = gamma
        self.alpha = alpha
        self.pos_weight = pos_weight
        self.class_weight = class_weight
        # An ignore label outside [0, 1] can only occur in a block whose labels leave [0, 1]
        self.ignore_inside = ignore_label is not None and 0 <= ignore_label <= 1

    def on_new_shape(self):
        self.r = per_class(self.pos_weight, self.ws, "pos_weight", self.dtype)
        self.a = per_class(self.class_weight, self.ws, "class_weight", self.dtype)
        self.grad = self.work.get("grad", self.ws, self.dtype)
        # Without per-class arrays the blob can be cut anywhere, in contiguous blocks
        self.cut_anywhere = not (isinstance(self.r, np.ndarray) or isinstance(self.a, np.ndarray))
        self.plans = {}
        # The jit loop takes rows: the (N, C) blob, or an N x C x H x W one without per-class
        # arrays as N*C rows of H*W. It beats the blocks below at every size (0.5x their time
        # for the focal loss at 256x1000, 0.9x for plain cross-entropy), so it has no size limit;
        # it works through rows of about BLOCK elements, so that its temporaries stay in cache.
        self.use_jit = self.use_jit and (len(self.ws) == 2 or self.cut_anywhere)
        if self.use_jit:
            rows = self.ws[0] if len(self.ws) == 2 else self.ws[0] * self.ws[1]
            self.jit_rows = (rows, self.ws[1] if len(self.ws) == 2 else self.ws[2])
            step = max(1, BLOCK // self.jit_rows[1])
            # up to jit.MAX_SIZE elements, in one chunk, a loop makes exp(-|s|) and
            # log(1 + exp(-|s|)) in one call (0.5x the time of numpy's five at 32x20)
            self.jit_terms = rows * self.jit_rows[1] <= jit.MAX_SIZE and step >= rows
            size = min(step, rows) * self.jit_rows[1]
            buffers = [self.work.get("jit%d" % k, (size,), self.dtype) for k in range(3)]
            # (rows, views of the buffers in their shape) per chunk; one chunk takes whole arrays
            self.jit_chunks = [
                (slice(i, min(i + step, rows)) if step < rows else slice(None),
                 [b[:(min(i + step, rows) - i) * self.jit_rows[1]].reshape(
                     min(i + step, rows) - i, self.jit_rows[1]) for b in buffers])
                for i in range(0, rows, step)]
            self.jit_r = self.per_class_array(self.r, self.jit_rows[1])
            self.jit_a = self.per_class_array(self.a, self.jit_rows[1])
            self.jit_loop = jit.sigmoid_focal[jit.focus_of(self.gamma)]
            self.jit_gamma = float(self.gamma)
            if self.jit_terms:  # flat views of the one chunk's buffers, for jit.sigmoid_terms
                self.jit_flat = [b.reshape(-1) for b in self.jit_chunks[0][1][1:]]
            self.jit_ignore = jit.ignore_value(self.ignore_label)
            alpha = self.alpha
            self.jit_alpha = (1.0, 1.0) if alpha is None else (float(alpha), 1.0 - float(alpha))

    def plan(self, ws):
        """The block plan for arrays viewed as ``ws`` (made on first use, per input shape)."""
        if ws not in self.plans:
            self.plans[ws] = block_plan(self.work, ws, self.dtype, self.SCRATCH)
        return self.plans[ws]

    def forward(self, scores, labels, weights=None):
        x = self.prepare(scores)
        y = np.asarray(labels).reshape(self.ws)
        w = broadcast_weights(weights, self.shape, self.axis, per_element=True)
        if self.use_jit:
            loss = self.jit_forward(x, y, w, weights)
            if loss is not None:
                return loss
        if w is not None:
            check_nonnegative("weights", w)
            w = w.astype(self.dtype, copy=False)
        grad = self.grad
        if self.cut_anywhere and (w is None or w.shape == self.ws):
            x, y, grad = x.reshape(-1), y.reshape(-1), grad.reshape(-1)
            w = None if w is None else w.reshape(-1)
        total = valid = positives = 0.0
        plan = self.plan(x.shape)
        # Where exp(s) overflows, the fast kernel's sum comes out inf or NaN. With more than
        # one block, one np.errstate (5 us) to keep that quiet costs less than a max per block
        quiet = len(plan) > 1
        try:
            with np.errstate(over="ignore", invalid="ignore") if quiet else nullcontext():
                for index, scratch in plan:
                    t, v, pos = self.block(x[index], y[index], None if w is None else w[index],
                                           grad[index], scratch, quiet)
                    total += t
                    valid += v
                    positives += pos
        except ValueError:
            binary_labels(y, y.shape, self.ignore_label)  # the message, over all the labels
            raise
        divisor = positives if self.normalization == "positive" else None
        return self.normalize(total, x.size, valid, x, y, weights, divisor=divisor)

    def jit_forward(self, x, y, w, weights):
        """The loss from the :mod:`jit` loop, or None to use the blocks below. numpy makes
        exp(-|s|) and log(1 + exp(-|s|)) (on SIMD units), the loop the rest."""
        shape = self.jit_rows
        if w is not None and w.size != x.size and len(self.ws) == 3:
            return None  # per-location weights of an N x C x H x W blob: not rows of it
        x2, y2, g2 = x.reshape(shape), y.reshape(shape), self.grad.reshape(shape)
        w2 = jit.ONES2 if w is None else w.reshape(shape) if w.size == x.size else w
        total = valid = positives = 0.0
        whole = len(self.jit_chunks) == 1  # (no slicing then: on small blobs it shows)
        for rows, (t, e, log1p_e) in self.jit_chunks:
            xs, ys, gs = (x2, y2, g2) if whole else (x2[rows], y2[rows], g2[rows])
            if self.jit_terms:  # one chunk, the whole blob: the flat views' size
                try:
                    jit.sigmoid_terms(xs.reshape(-1), *self.jit_flat)
                except Exception as exc:  # numba failed: numpy from now on
                    jit.failed(exc)
                    self.use_jit = False
                    return None
            else:
                np.abs(xs, out=t)
                np.negative(t, out=t)
                np.exp(t, out=e)
                np.add(e, 1, out=t)
                np.log(t, out=log1p_e)
            out = self.jit_result(self.jit_loop, xs, ys,
                                  w2 if whole or w2.shape[0] == 1 else w2[rows], e, log1p_e,
                                  self.jit_r, self.jit_a, self.jit_gamma, *self.jit_alpha,
                                  self.jit_ignore, gs)
            if out is None:
                self.jitted = False
                return None
            total += out[0]
            valid += out[1]
            positives += out[2]
        divisor = positives if self.normalization == "positive" else None
        return self.normalize(total, x.size, valid, x, y, weights, divisor=divisor)

    def block(self, x, y, w, g, scratch, quiet):
        """Loss sum, valid count and positive-label sum of one block; its gradient into ``g``.

        The fast kernel is exact wherever exp(s) is finite. ``quiet`` (numpy's overflow
        warnings are off): try it, and redo the block with the stable kernel if the sum is
        not finite. Otherwise: choose beforehand from the largest score.
        """
        lo, hi = np.minimum.reduce(y, None), np.maximum.reduce(y, None)
        if self.ignore_inside or not (lo >= 0 and hi <= 1):  # NaN fails too
            y, mask = binary_labels(y, y.shape, self.ignore_label)
            if mask is not None:
                w = mask.astype(self.dtype) if w is None else \
                    np.where(mask, w, 0).astype(self.dtype)
        valid = x.size if w is None else float(w.sum(dtype=np.float64)) * (x.size // w.size)
        if quiet:
            total = self.kernel(x, y, w, g, scratch, False)
            if not math.isfinite(total):  # overflow, or NaN scores (then the stable one fails too)
                total = self.kernel(x, y, w, g, scratch, True)
        else:  # exp(88) is below float32's largest value; NaN scores take the stable kernel
            total = self.kernel(x, y, w, g, scratch, not np.maximum.reduce(x, None) < 88)
        positives = 0.0
        if self.normalization == "positive":  # RetinaNet: the number of positive labels
            positives = float((y if w is None else y * w).sum(dtype=np.float64))
        return total, valid, positives

    def kernel(self, x, y, w, g, scratch, stable):
        """The loss sum of one block; its gradient (times all but the top diff and the
        normalizer) into ``g``.

        Fast: with ``e = exp(s)``, softplus(s) = log(1 + e), p = e / (1 + e) and
        1 - p = 1 / (1 + e): exact wherever exp(s) is finite. ``stable``, for a
        block where it is not: softplus(s) = max(s, 0) + log(1 + exp(-|s|)),
        p = exp(s - softplus(s)), 1 - p = exp(-softplus(s)).
        """
        a, b, c, d, e, f = scratch
        focal = self.gamma != 0
        q = None
        if not stable:
            np.exp(x, out=a)
            np.add(a, 1, out=b)
            sp = np.log(b, out=c)
            if focal:
                q = np.divide(1, b, out=b)
                p = np.multiply(a, q, out=a)
            else:
                p = np.divide(a, b, out=a)
        else:
            absx = np.abs(x, out=d)
            np.negative(absx, out=b)
            np.exp(b, out=a)
            a += 1
            sp = np.log(a, out=c)
            np.add(x, absx, out=d)
            d *= 0.5                                # max(s, 0) = (s + |s|) / 2
            sp += d
            np.subtract(x, sp, out=d)
            p = np.exp(d, out=a)
            if focal:
                np.negative(sp, out=d)
                q = np.exp(d, out=b)
        r = self.r
        if r is None:                               # CE = softplus(s) - s y
            ce = np.subtract(sp, np.multiply(x, y, out=d), out=c)
            np.subtract(p, y, out=g)                # dCE/ds = p - y
        else:                                       # CE = r y softplus(-s) + (1 - y) softplus(s)
            ry = np.multiply(y, r, out=d)           #    = softplus(s) (1 - y + r y) - r y s
            t = np.multiply(y, r - 1, out=e)
            t += 1                                  # 1 - y + r y
            np.multiply(p, t, out=g)                # dCE/ds = p (1 - y + r y) - r y
            g -= ry
            ce = np.multiply(sp, t, out=c)
            ce -= np.multiply(ry, x, out=e)
        power = self.modulate(y, p, q, ce, g, d, e, f) if focal else None
        factor = self.factor(y, w, b, power)
        if factor is not None:
            g *= factor
            ce *= factor
        return float(np.add.reduce(ce, None))       # pairwise summation: accurate

    def modulate(self, y, p, q, ce, g, rest, e, f):
        """The focal terms, but for a common factor ``(1 - p_t)^(gamma - 1)``, which is returned
        (None for gamma 1) for :meth:`factor` to apply with the other factors.

        With r = 1 - p_t: l = r^(g-1) r CE and, by the product rule,
        dl/ds = r^(g-1) [r dCE/ds + g (1 - 2y) p (1 - p) CE], since
        dr/ds = (1 - 2y) p (1 - p). ``ce`` and ``g`` get the parts in brackets.
        """
        gamma = self.gamma
        np.subtract(q, p, out=rest)                 # r = 1 - p_t = p + y ((1 - p) - p)
        rest *= y
        rest += p
        if gamma == 2:                              # the default: no power needed
            power = rest
        elif gamma == 1:
            power = None
        else:
            # r^(gamma - 1), with r held above 1e-30 so that gamma < 1 stays finite where
            # r rounds to 0 (the terms it multiplies vanish there)
            np.maximum(rest, 1e-30, out=f)
            np.log(f, out=e)
            e *= gamma - 1
            power = np.exp(e, out=f)
        d_rest = np.multiply(q, p, out=q)           # p (1 - p)
        sign = np.multiply(y, -2 * gamma, out=e)
        sign += gamma                               # gamma (1 - 2y)
        d_rest *= sign
        d_rest *= ce
        g *= rest
        g += d_rest
        ce *= rest
        return power

    def factor(self, y, w, out, power=None):
        """alpha_t times the focal power, the class weights and the weights; None for none."""
        factors = [f for f in (power, self.a, w) if f is not None]
        if self.alpha is not None:                  # alpha y + (1 - alpha)(1 - y)
            alpha_t = np.multiply(y, 2 * self.alpha - 1, out=out)
            alpha_t += 1 - self.alpha
            factors.insert(0, alpha_t)
        if len(factors) < 2:
            return factors[0] if factors else None
        product = np.multiply(factors[0], factors[1], out=out)
        for f in factors[2:]:
            product *= f
        return product

    def backward(self, out, scale):
        self.scaled_grad(out, scale)


class SigmoidCrossEntropy(SigmoidFocal):
    """Binary cross-entropy with logits: :class:`SigmoidFocal` without the focal terms."""

    def __init__(self, axis=1, ignore_label=None, pos_weight=None, class_weight=None,
                 normalization="batch_size"):
        SigmoidFocal.__init__(self, axis, ignore_label, 0.0, None, pos_weight, class_weight,
                              normalization)


def element_weights(weights, mask, loss):
    """Per-element (or broadcastable) weights times the mask of counted elements, or None."""
    w = broadcast_weights(weights, loss.shape, loss.axis, per_element=True)
    if w is not None:
        check_nonnegative("weights", w)
    if mask is None:
        return None if w is None else w.astype(loss.dtype, copy=False)
    return mask.astype(loss.dtype) if w is None else np.where(mask, w, 0).astype(loss.dtype)


# -- cross-entropy on probabilities ------------------------------------------------

class CrossEntropy(Loss):
    r"""Cross-entropy on probabilities, categorical or binary.

    Categorical: targets as :class:`MultiLabelSoftmax`,
    :math:`\ell = -\sum_c t_c \log \max(p_c, \varepsilon)`. Binary:
    :math:`\ell = -y \log \hat p - (1-y) \log(1 - \hat p)`,
    :math:`\hat p = \mathrm{clip}(p, \varepsilon, 1-\varepsilon)`. The gradient
    uses the clipped value, as Caffe's ``MultinomialLogisticLoss``.
    """

    def __init__(self, axis=1, mode="categorical", target="sum", eps=None, ignore_label=None,
                 normalization="batch_size"):
        Loss.__init__(self, axis, normalization)
        if mode not in MODES:
            raise ValueError("unknown mode %r; expected one of %s" % (mode, ", ".join(MODES)))
        if target not in TARGETS:
            raise ValueError("unknown target %r; expected one of %s" % (target, ", ".join(TARGETS)))
        self.mode = mode
        self.target = target
        self.eps = EPS[mode] if eps is None else eps
        self.ignore_label = ignore_label

    def on_new_shape(self):
        self.grad = self.work.get("grad", self.ws, self.dtype)
        # categorical only; the jit loop's log takes normal numbers
        self.use_jit = (self.use_jit and self.small_rows() and self.mode == "categorical"
                        and self.eps >= 1e-300)

    def forward(self, probs, labels, weights=None):
        p = self.prepare(probs)
        if self.use_jit:
            out = self.jit_forward(p, labels, weights)
            if out is not None:
                return out
        check_range("probabilities", p, 0, 1,
                    "; feed the output of a Softmax (categorical) or Sigmoid (binary) layer")
        clipped = self.work.get("clipped", self.ws, self.dtype)
        log_p = self.work.get("log", self.ws, self.dtype)
        if self.mode == "categorical":
            y = np.asarray(labels).reshape(self.ws)
            self.coef, _, valid = dense_targets(y, weights, self)
            np.maximum(p, self.eps, out=clipped)
            np.log(clipped, out=log_p)
            total = -(self.coef * row_dot(y, log_p)).sum()
            full = self.locations
        else:
            y, mask = binary_labels(labels, self.ws, self.ignore_label)
            w = element_weights(weights, mask, self)
            np.clip(p, self.eps, 1 - self.eps, out=clipped)
            np.log(clipped, out=log_p)
            log_q = self.work.get("log1m", self.ws, self.dtype)
            one_minus = np.subtract(1, clipped, out=self.work.get("denom", self.ws, self.dtype))
            np.log(one_minus, out=log_q)
            # -(y log p + (1 - y) log(1 - p)) = -(log(1 - p) + y (log p - log(1 - p)))
            log_p -= log_q
            log_p *= y
            log_p += log_q
            if w is not None:
                log_p *= w
            total = -float(log_p.sum())
            self.w = w
            full = p.size
            valid = full if w is None else np.broadcast_to(w, self.ws).sum(dtype=np.float64)
        self.labels, self.clipped = y, clipped
        return self.normalize(total, full, valid, p, y, weights)

    def jit_forward(self, p, labels, weights):
        """The loss from the :mod:`jit` loop (categorical), or None to use numpy."""
        y = np.asarray(labels).reshape(self.ws)
        w = broadcast_weights(weights, self.shape, self.axis)
        out = self.jit_result(jit.categorical_cross_entropy, p, y,
                              jit.NO_ARRAY if w is None else w.reshape(-1), float(self.eps),
                              self.target == "count", self.grad)
        return None if out is None else self.normalize(out[0], self.locations, out[1], p, y, weights)

    def backward(self, out, scale):
        if self.jitted:
            return self.scaled_grad(out, scale)
        k = scale / self.z
        if self.mode == "categorical":
            np.divide(self.labels, self.clipped, out=out)
            out *= (-k * self.coef).astype(self.dtype)
        else:
            # (p - y) / (p (1 - p))
            denom = self.work.get("denom", self.ws, self.dtype)
            np.subtract(1, self.clipped, out=denom)
            denom *= self.clipped
            np.subtract(self.clipped, self.labels, out=out)
            out /= denom
            out *= k if self.w is None else self.w * np.asarray(k, self.dtype)


# -- the functions -----------------------------------------------------------------

def multilabel_softmax_loss(scores, labels, weights=None, axis=1, target="sum",
                            normalization="batch_size"):
    r"""Softmax cross-entropy against multi-hot or real-valued labels.

    Per location, with non-negative labels :math:`y_c` over the ``C`` classes,
    the target distribution is

    * ``target="sum"`` (default): :math:`t_c = y_c / \sum_k y_k`
    * ``target="count"``: :math:`t_c = y_c / M`, :math:`M` the number of
      non-zero labels (the 1/M scaling of Mahajan et al., 2018)

    and the loss is :math:`\ell = -\sum_c t_c \log \mathrm{softmax}(s)_c`.
    A location with no positive label has no target: it contributes nothing
    and is not counted as valid. With location weights :math:`w`,

    .. math:: L = \frac{1}{Z} \sum_{\text{locations}} w \, \ell

    where :math:`Z` is the normalizer (``"batch_size"`` by default: the mean
    over the batch; ``"valid"`` counts the locations with a positive label, or
    sums their weights). The gradient is exact for any non-negative labels:

    .. math:: \frac{\partial L}{\partial s_c} = \frac{w}{Z}\,(T p_c - t_c),
              \qquad T = \sum_k t_k,\; p = \mathrm{softmax}(s)

    (``T`` is 1 for ``target="sum"`` but not, with real-valued labels, for
    ``"count"``).

    Args:
        scores: float array, ``(N, C)`` or ``(N, C, H, W)``; class axis ``axis``.
        labels: non-negative array with one label per score.
        weights: optional, one value per sample or per location.
        axis: the class axis.
        target: ``"sum"`` or ``"count"``.
        normalization: ``"batch_size"``, ``"valid"``, ``"full"`` or ``"none"``.

    Returns:
        ``(loss, grad)``: a Python float and an array shaped like ``scores``.
    """
    return MultiLabelSoftmax(axis, target, normalization)(scores, labels, weights)


def softmax_cross_entropy(scores, labels, weights=None, axis=1, ignore_label=None,
                          class_weight=None, label_smoothing=0.0, normalization="valid"):
    r"""Softmax cross-entropy with sparse integer labels (Caffe's ``SoftmaxWithLoss``).

    Per counted location with class index :math:`y`, class weights
    :math:`a_c` (default 1) and label smoothing :math:`\varepsilon`:

    .. math:: \ell = -(1-\varepsilon)\, a_y \log p_y
                     - \frac{\varepsilon}{C} \sum_c a_c \log p_c,
              \qquad p = \mathrm{softmax}(s)

    as PyTorch's ``CrossEntropyLoss(weight=a, label_smoothing=eps)``.
    ``"valid"`` normalization (the default, as ``SoftmaxWithLoss``) divides by
    the summed :math:`a_y` of the counted locations (times their weights), so
    with class weights it is PyTorch's weighted mean. Locations whose label is
    ``ignore_label`` contribute nothing.

    Args:
        scores: ``(N, C)`` or ``(N, C, H, W)``.
        labels: class indices, one per location (``N`` or ``N x 1 x H x W``).
        weights: optional, one value per sample or per location.
        ignore_label: a label value to skip, or None.
        class_weight: None, or C non-negative numbers.
        label_smoothing: :math:`\varepsilon` in [0, 1].
        normalization: ``"valid"``, ``"batch_size"``, ``"full"`` or ``"none"``.
    """
    return SoftmaxCrossEntropy(axis, ignore_label, class_weight, label_smoothing,
                               normalization)(scores, labels, weights)


def softmax_focal_loss(scores, labels, weights=None, axis=1, ignore_label=None, gamma=2.0,
                       alpha=None, normalization="valid"):
    r"""Multi-class focal loss on a softmax, with sparse integer labels.

    .. math:: \ell = -\alpha_y (1 - p_y)^\gamma \log p_y,
              \qquad p = \mathrm{softmax}(s)

    (Lin et al., 2017, applied to a softmax). ``alpha`` is None (off), one
    number, or one per class. With ``gamma=0`` and ``alpha=None`` this is
    :func:`softmax_cross_entropy`. The gradient is

    .. math:: \frac{\partial \ell}{\partial s_k} = \alpha_y \left[(1-p_y)^\gamma
              - \gamma\, p_y (1-p_y)^{\gamma-1} \log p_y\right] (p_k - [k = y]).

    ``"valid"`` (default) divides by the number of counted locations (or the
    sum of their weights); alpha does not enter the normalizer.
    """
    return SoftmaxFocal(axis, ignore_label, gamma, alpha, normalization)(scores, labels, weights)


def sigmoid_cross_entropy(scores, labels, weights=None, axis=1, ignore_label=None,
                          pos_weight=None, class_weight=None, normalization="batch_size"):
    r"""Binary cross-entropy with logits, element-wise (Caffe's ``SigmoidCrossEntropyLoss``).

    For each element with score :math:`x`, label :math:`y \in [0, 1]`:

    .. math:: \ell = a_c\left[-r_c\, y \log\sigma(x) - (1-y)\log(1-\sigma(x))\right]

    with positive weight :math:`r_c` (``pos_weight``) and class weight
    :math:`a_c` (``class_weight``), both one number or one per class
    (PyTorch's ``BCEWithLogitsLoss(weight=a, pos_weight=r)``). Computed as
    :math:`r y\,\mathrm{softplus}(-x) + (1-y)\,\mathrm{softplus}(x)`, finite for
    any finite :math:`x`. Gradient: :math:`a_c[\sigma(x)(r y + 1 - y) - r y]`.

    Elements whose label equals ``ignore_label`` are skipped. Normalization
    defaults to ``"batch_size"`` as in Caffe; ``"valid"`` counts the
    non-ignored elements (times their weights; class and positive weights do
    not enter it, as in PyTorch's mean); ``"full"`` counts every element.
    """
    return SigmoidCrossEntropy(axis, ignore_label, pos_weight, class_weight,
                               normalization)(scores, labels, weights)


def sigmoid_focal_loss(scores, labels, weights=None, axis=1, ignore_label=None, gamma=2.0,
                       alpha=0.25, pos_weight=None, class_weight=None, normalization="batch_size"):
    r"""Sigmoid focal loss (Lin et al., 2017; torchvision's ``sigmoid_focal_loss``).

    Element-wise with :math:`p = \sigma(x)`, label :math:`y \in [0, 1]`:

    .. math:: \ell = \alpha_t (1 - p_t)^\gamma\, \mathrm{CE}(x, y),
              \quad p_t = p y + (1-p)(1-y),
              \quad \alpha_t = \alpha y + (1-\alpha)(1-y)

    with ``alpha=None`` meaning :math:`\alpha_t = 1`. With ``gamma=0`` and
    ``alpha=None`` this is exactly :func:`sigmoid_cross_entropy`.
    ``normalization="positive"`` divides by the number of positive labels
    (their sum, for soft labels; times the weights), at least 1, as RetinaNet
    does; the other modes are as for :func:`sigmoid_cross_entropy`.
    ``pos_weight`` and ``class_weight`` scale the positive term and every term
    of a class, as there.
    """
    return SigmoidFocal(axis, ignore_label, gamma, alpha, pos_weight, class_weight,
                        normalization)(scores, labels, weights)


def cross_entropy(probs, labels, weights=None, axis=1, mode="categorical", target="sum",
                  eps=None, ignore_label=None, normalization="batch_size"):
    r"""Cross-entropy on probabilities, for nets that end in a Softmax or Sigmoid layer.

    ``mode="categorical"``: per location, targets :math:`t` from non-negative
    labels as in :func:`multilabel_softmax_loss` (``target="sum"`` or
    ``"count"``; one-hot labels give :math:`t = y`),
    :math:`\ell = -\sum_c t_c \log \hat p_c`. Caffe's
    ``MultinomialLogisticLoss`` is the one-hot case.

    ``mode="binary"``: element-wise, labels in [0, 1] (``ignore_label``
    skips), :math:`\ell = -y \log \hat p - (1-y) \log(1-\hat p)`.

    :math:`\hat p = \max(p, \varepsilon)` (categorical) or
    :math:`\mathrm{clip}(p, \varepsilon, 1-\varepsilon)` (binary) keeps the loss
    finite. ``eps=None`` takes 1e-20 in categorical mode (the threshold of
    Caffe's ``MultinomialLogisticLoss``, so one-hot results match it) and
    1e-7 in binary mode (1 - eps must differ from 1 in float32). As in
    Caffe the gradient uses the clipped value, :math:`-t/\hat p` (binary:
    :math:`-y/\hat p + (1-y)/(1-\hat p)`), so a probability below
    :math:`\varepsilon` still gets a (bounded) push instead of none. The
    gradient is exact wherever the clip does not act.
    """
    return CrossEntropy(axis, mode, target, eps, ignore_label, normalization)(probs, labels, weights)
