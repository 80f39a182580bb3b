r"""Multi-label softmax cross-entropy: a softmax against multi-hot or real-valued labels.

Per location, with non-negative labels :math:`y_c` over the :math:`C` classes, the target
distribution is

* ``target="sum"`` (default): :math:`t_c = y_c / \sum_k y_k`
* ``target="count"``: :math:`t_c = y_c / M`, :math:`M` the number of non-zero labels
  (the 1/M scaling of Mahajan et al., 2018)

and the loss is :math:`\ell = -\sum_c t_c \log \mathrm{softmax}(s)_c`. A location with no
positive label has no target: it contributes nothing and is not counted as valid. With
location weights :math:`w` and the normalizer :math:`Z`,

.. math:: L = \frac{1}{Z} \sum_{\text{locations}} w\, \ell, \qquad
          \frac{\partial L}{\partial s_c} = \frac{w}{Z}\,(T p_c - t_c),
          \quad T = \sum_k t_k,\; p = \mathrm{softmax}(s)

(:math:`T` is 1 for ``target="sum"``, but not, with real-valued labels, for
``"count"``). ``"batch_size"`` (default) is the mean over the batch; ``"valid"`` counts
the locations with a positive label, or sums their weights.
"""
import math

import numpy as np

from .. import jit
from ..core import EXP_SUM_MAX, EXP_SUM_MIN, Loss, broadcast_weights, dense_targets, log_softmax
from ..jit import (PLANE_BLOCK, PLANE_CLASSES, ROW1, ROW2, ROW3, ROW4, ROW_CLASSES, _exp,
                   _exp_as, _log, _row_softmax, _row_targets, _skip_row, _status, _weight)
from ..params import AXIS, Layer, Param, normalization, one_of

TARGETS = ("sum", "count")
# (N, C) blobs up to this many elements take _small_rows, which makes the gradient in
# forward for backward to scale: on them a second kernel call in backward would cost more
# than its arithmetic. Larger ones take _rows, which keeps two factors per row (see below)
GRAD_IN_FORWARD_MAX = 8192


def multilabel_softmax_reference(s, y, w=None, target="sum"):
    """The formula above in numpy on ``(outer, C[, inner])`` arrays: the loss per
    location (times ``w``), the gradient (times ``w``) and the valid count."""
    coef, label_sum, valid = dense_targets(y, w, target)  # coef = w / (sum or count)
    log_p = log_softmax(s)
    t = coef * y                                           # w t_c
    loss = -(t * log_p).sum(axis=1, keepdims=True)
    grad = coef * label_sum * np.exp(log_p) - t            # w (T p_c - t_c)
    return loss, grad, valid


class MultiLabelSoftmax(Loss):
    """Multi-label softmax cross-entropy (see the module docstring).

    On large blobs the kernels keep two factors per location, and backward makes the
    gradient from them in one more pass, making exp(s) again; so ``backward`` reads the
    scores and labels given to ``forward`` again, as Caffe's own layers read their
    bottoms in backward.
    """

    def __init__(self, *, axis=1, target="sum", normalization="batch_size"):
        Loss.__init__(self, axis, normalization)
        self.target = target

    def on_new_shape(self):
        ws = self.ws
        self.factors = self.work.get("factors", (2, ws[0]) + tuple(ws[2:]), np.float64)
        if len(ws) == 2:
            self.shifts = self.work.get("shifts", (ws[0],), np.float64)
            self.part = self.work.get("part", (3,), self.dtype)
        else:
            self.part = self.work.get("part", (4 * PLANE_BLOCK,), self.dtype)
            self.acc = self.work.get("acc", (5 * PLANE_BLOCK,), np.float64)

    def reference(self, x, labels, weights):
        y = np.asarray(labels).reshape(self.ws)
        w = broadcast_weights(weights, self.shape, self.axis)
        loss, grad, valid = multilabel_softmax_reference(x, y, w, self.target)
        self.grad[...] = grad
        return loss.sum(dtype=np.float64), self.locations, valid

    def kernel(self, x, labels, weights):
        y = np.asarray(labels).reshape(self.ws)
        w = broadcast_weights(weights, self.shape, self.axis)
        count = self.target == "count"
        if x.ndim == 2 and x.size <= GRAD_IN_FORWARD_MAX:
            w_rows = self.no_weights[0] if w is None else w.reshape(-1)
            out = self.run_kernel(_small_rows, x, y, w_rows, count, self.grad)
            return None if out is None else (out[0], self.locations, out[1])
        coefs, factors = self.factors
        if x.ndim == 2:
            w_rows = self.no_weights[0] if w is None else w.reshape(-1)
            out = self.run_kernel(_rows, x, y, w_rows, count, coefs, factors, self.shifts,
                                  self.part)
            backward = lambda grad, k: _rows_grad(x, y, coefs, factors, self.shifts, k, grad,
                                                  self.part)
        else:
            out = self.run_kernel(_planes, x, y, self.no_weights[2] if w is None else w, count,
                                  coefs, factors, self.part, self.acc)
            backward = lambda grad, k: _planes_grad(x, y, coefs, factors, k, grad, self.part)
        if out is None:
            return None
        self.make_grad = backward
        return out[0], self.locations, out[1]


def multilabel_softmax_loss(scores, labels, weights=None, **params):
    """Multi-label softmax cross-entropy (see the module docstring); returns ``(loss, grad)``.

    Args:
        scores: float array, ``(N, C)`` or ``(N, C, H, W)``; class axis ``axis``.
        labels: non-negative array with one label per score.
        weights: optional, one value per sample or per location.
        params: the keyword arguments of :class:`MultiLabelSoftmax`: ``axis`` (1),
            ``target`` (``"sum"`` or ``"count"``), ``normalization`` (``"batch_size"``,
            ``"valid"``, ``"full"`` or ``"none"``).
    """
    return MultiLabelSoftmax(**params)(scores, labels, weights)


# -- the kernel family --------------------------------------------------------------
# Small (N, C) blobs: _small_rows. Memory, not arithmetic, bounds the loops on large
# blobs, so _rows and _planes read the scores and labels once per pass and make exp(s)
# themselves (in the scores' precision) rather than write a blob of exponentials and
# read it back. They keep two factors per location; _rows_grad and _planes_grad make
# the gradient from them, making exp(s) again.

@jit.kernel
def _small_rows(x, y, w, count_target, g):
    """MultiLabelSoftmax on small (N, C) blobs: status, loss sum, valid sum; the gradient
    into g, in one pass over each row (kept in cache) with exp(s - max)."""
    rows, classes = x.shape
    total = 0.0
    valid = 0.0
    for n in range(rows):
        wn = _weight(w, n)
        if not wn >= 0:
            return jit.BAD_WEIGHT, 0.0, 0.0
        negative, label_sum, denom = _row_targets(y, n, count_target)
        if negative:
            return jit.BAD_LABEL, 0.0, 0.0
        if not denom > 0:  # no positive label: the location does not count
            if not _skip_row(x, n, g):
                return jit.NOT_FINITE, 0.0, 0.0
            continue
        coef = wn / denom
        dot = 0.0
        for c in range(classes):
            dot += y[n, c] * x[n, c]
        m, s = _row_softmax(x, n, g)
        f = coef * label_sum / s
        for c in range(classes):  # coef (label_sum p_c - y_c)
            g[n, c] = g[n, c] * f - coef * y[n, c]
        total += coef * (label_sum * (m + math.log(s)) - dot)
        valid += wn
    if not math.isfinite(total):
        return jit.NOT_FINITE, 0.0, 0.0
    return jit.OK, total, valid


@jit.inline
def _row_sums(x, y, n, count_target, typed):
    """Row n of (N, C) arrays: (any label negative or NaN, label sum, sum of labels times
    scores, sum of exp(s), number of non-zero labels if ``count_target``). ``typed`` is
    an array in the scores' dtype, for the type of the partial sums."""
    classes = x.shape[1]
    label_sum = dot = exp_sum = nonzero = 0.0
    negative = False
    zero = typed[0] * 0
    for c0 in range(0, classes, ROW_CLASSES):
        c1 = min(c0 + ROW_CLASSES, classes)
        xr, yr = x[n, c0:c1], y[n, c0:c1]  # slices: x[n, c] kept the loop off SIMD units
        labels, products, exps = zero, zero, zero
        for c in range(c1 - c0):
            v = yr[c]
            negative |= not v >= 0
            labels += v
            products += v * xr[c]
            exps += _exp_as(xr[c])
        label_sum += labels
        dot += products
        exp_sum += exps
        if count_target:
            for c in range(c1 - c0):
                nonzero += yr[c] != 0
    return negative, label_sum, dot, exp_sum, nonzero


@jit.kernel
def _rows(x, y, w, count_target, coefs, factors, shifts, typed):
    """MultiLabelSoftmax on large (N, C) blobs: status, loss sum, valid sum; per row the
    two factors and the shift of the scores that :func:`_rows_grad` takes. A row whose sum of exp(s) leaves [EXP_SUM_MIN, EXP_SUM_MAX] (overflow, or every
    score very negative) is summed again with its max subtracted (its shift; else 0)."""
    rows, classes = x.shape
    total = 0.0
    valid = 0.0
    for n in range(rows):
        wn = _weight(w, n)
        if not wn >= 0:
            return jit.BAD_WEIGHT, 0.0, 0.0
        negative, label_sum, dot, s, nonzero = _row_sums(x, y, n, count_target, typed)
        if negative:
            return jit.BAD_LABEL, 0.0, 0.0
        if not math.isfinite(dot):  # an infinite score (0 x inf is NaN), or NaN
            return jit.NOT_FINITE, 0.0, 0.0
        shift = 0.0
        if not (s >= EXP_SUM_MIN and s <= EXP_SUM_MAX):
            shift = -np.inf
            for c in range(classes):
                shift = max(shift, np.float64(x[n, c]))
            s = 0.0
            for c in range(classes):
                s += _exp(x[n, c] - shift)
            if not (s >= 1.0 and s < np.inf):  # a NaN or infinite score
                return jit.NOT_FINITE, 0.0, 0.0
        shifts[n] = shift
        denom = nonzero if count_target else label_sum
        if not denom > 0:  # no positive label: the location does not count
            coefs[n] = factors[n] = 0.0
            continue
        coef = wn / denom
        coefs[n] = coef
        factors[n] = coef * label_sum / s
        total += coef * (label_sum * (shift + math.log(s)) - dot)
        valid += wn
    if not math.isfinite(total):
        return jit.NOT_FINITE, 0.0, 0.0
    return jit.OK, total, valid


@jit.kernel
def _rows_grad(x, y, coefs, factors, shifts, k, out, typed):
    """The gradient of MultiLabelSoftmax on (N, C) arrays from the factors of
    :func:`_rows`, times ``k``, into ``out``: k (factor exp(s - shift)
    - coef y). ``typed`` (3 values in the scores' dtype) takes a row's numbers, so that the
    loop runs in that dtype."""
    for n in range(x.shape[0]):
        typed[0] = factors[n] * k
        typed[1] = coefs[n] * k
        typed[2] = shifts[n]
        f, cf, shift = typed[0], typed[1], typed[2]
        xr, yr, row = x[n], y[n], out[n]
        for c in range(x.shape[1]):
            row[c] = _exp_as(xr[c] - shift) * f - cf * yr[c]



@jit.kernel
def _planes(x, y, w, count_target, coefs, factors, part, acc):
    """MultiLabelSoftmax on (outer, C, inner) blobs: status, loss sum, valid sum; each
    location's two factors into ``coefs`` and ``factors`` (outer x inner, float64), from
    which :func:`_planes_grad` makes the gradient.

    Memory, not arithmetic, bounds a loop over a large blob, so this one reads the scores
    and labels once and makes exp(s) itself (:func:`_exp_as`, in the scores' precision)
    rather than have numpy write them out and read them back. Every loop runs along the
    contiguous inner axis, over a block of locations at a time, with the sums of the
    block's locations in ``part`` (4 x PLANE_BLOCK values in the scores' dtype, the rows at
    fixed offsets so that the compiler sees they do not overlap) and ``acc`` (5 x
    PLANE_BLOCK, float64). ``w`` is (outer, 1, inner) or (1, 1, 1) (none). A location whose exponentials
    overflow or all but underflow sends the call to numpy, which shifts the scores."""
    outer, classes, inner = x.shape
    per_outer, per_inner = w.shape[0] > 1, w.shape[2] > 1
    b = PLANE_BLOCK  # the rows' offsets, fixed
    blk = part.shape[0] // 4  # the same number, as bound of the loops: a fixed bound kept
    # them off the SIMD units
    total = 0.0
    valid = 0.0
    negative = False
    bad_weight = False
    out_of_range = False
    for n in range(outer):
        for i0 in range(0, inner, blk):
            m = min(blk, inner - i0)
            # (loops over m, not over 4 * b: a fixed bound keeps them off SIMD units)
            for i in range(m):
                acc[i] = acc[b + i] = acc[2 * b + i] = acc[3 * b + i] = 0.0
            for c0 in range(0, classes, PLANE_CLASSES):
                for i in range(m):
                    part[i] = part[b + i] = part[2 * b + i] = part[3 * b + i] = 0
                for c in range(c0, min(c0 + PLANE_CLASSES, classes)):
                    yc, xc = y[n, c, i0:i0 + m], x[n, c, i0:i0 + m]
                    for i in range(m):
                        v = yc[i]
                        negative |= not v >= 0
                        part[i] += v
                        part[b + i] += v * xc[i]
                        part[2 * b + i] += _exp_as(xc[i])
                    if count_target:
                        for i in range(m):
                            part[3 * b + i] += yc[i] != 0
                for i in range(m):
                    acc[i] += part[i]
                    acc[b + i] += part[b + i]
                    acc[2 * b + i] += part[2 * b + i]
                if count_target:
                    for i in range(m):
                        acc[3 * b + i] += part[3 * b + i]
            # acc now holds label sums, dot products, exp sums and non-zero labels; then the
            # weights, in a loop of their own so that the next one runs on SIMD units.
            # Unsigned indices from here: numba then adds no negative-index fix, which the
            # compiler failed to rule out here and which kept these loops off SIMD units.
            if per_inner:
                weights = w[n * per_outer, 0, i0:i0 + m]
                for i in range(np.uint64(m)):
                    acc[ROW4 + i] = weights[i]
            else:
                wn = np.float64(w[n * per_outer, 0, 0])
                for i in range(np.uint64(m)):
                    acc[ROW4 + i] = wn
            coef, factor = coefs[n, i0:i0 + m], factors[n, i0:i0 + m]
            for i in range(np.uint64(m)):  # no short-circuit "and"; one division
                wv = acc[ROW4 + i]
                s = acc[ROW2 + i]
                bad_weight |= not wv >= 0
                out_of_range |= (s < EXP_SUM_MIN) | (s > EXP_SUM_MAX) | (s != s)
                denom = acc[ROW3 + i] if count_target else acc[i]
                counted = denom > 0
                r = wv / (denom * s) if counted else 0.0
                coef[i] = r * s  # w / denom
                factor[i] = r * acc[i]  # coef label_sum / s
                valid += wv if counted else 0.0
            for i in range(np.uint64(m)):  # a loop of its own, so that both run on SIMD units
                total += coef[i] * (acc[i] * _log(acc[ROW2 + i]) - acc[ROW1 + i])
        status = _status(negative, bad_weight, out_of_range)
        if status != jit.OK:
            return status, 0.0, 0.0
    return _status(False, False, not math.isfinite(total)), total, valid



@jit.kernel
def _planes_grad(x, y, coefs, factors, k, out, part):
    """The gradient of MultiLabelSoftmax on (outer, C, inner) arrays from the factors of
    :func:`_planes`, times ``k``, into ``out``: k (factor exp(s) -
    coef y), with exp(s) made again (reading the scores costs what reading kept
    exponentials would). ``part`` (4 x PLANE_BLOCK, scores' dtype) holds a block's factors."""
    outer, classes, inner = x.shape
    b = part.shape[0] // 4  # PLANE_BLOCK (as a fixed number, it kept the loop off SIMD units)
    f, cf = part[:b], part[b:2 * b]
    for n in range(outer):
        for i0 in range(0, inner, b):
            m = min(b, inner - i0)
            for i in range(m):
                f[i] = factors[n, i0 + i] * k
                cf[i] = coefs[n, i0 + i] * k
            for c in range(classes):
                xc, yc, oc = x[n, c, i0:i0 + m], y[n, c, i0:i0 + m], out[n, c, i0:i0 + m]
                for i in range(m):
                    oc[i] = _exp_as(xc[i]) * f[i] - cf[i] * yc[i]


# -- the layer ----------------------------------------------------------------------

LAYERS = [
    Layer("MultiLabelSoftmaxLoss", MultiLabelSoftmax, labels="dense", deploy="Softmax", params={
        "axis": AXIS,
        "target": Param("sum", one_of(*TARGETS),
                        "labels divided by their sum, or by the number of non-zero labels"),
        "normalization": normalization("batch_size"),
    }),
]
