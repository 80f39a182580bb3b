r"""ZLPR loss, the multi-label categorical cross-entropy (Su et al., arXiv 2208.02955).

Per location, with scores :math:`s_c` and labels :math:`y_c \in \{0, 1\}` over the
:math:`C` classes, :math:`\Omega_- = \{c : y_c = 0\}` and :math:`\Omega_+ = \{c : y_c =
1\}` (a class whose label is ``ignore_label`` is in neither):

.. math::

    \ell = \log\Bigl(1 + \sum_{c \in \Omega_-} e^{s_c}\Bigr)
         + \log\Bigl(1 + \sum_{c \in \Omega_+} e^{-s_c}\Bigr)

It pushes every positive score above 0 and every negative one below, so a class is
predicted where :math:`s > 0` (:math:`\sigma(s) > 0.5`: ``deploy`` puts a Sigmoid in its
place). Each term is a log-sum-exp with an implicit 0 term,
:math:`\log(1 + \sum e^{t}) = \mathrm{logsumexp}([0, t_1, \dots])`, taken with the
largest of them subtracted, so every finite score gives a finite loss. The gradient is
a softmax over that list:

.. math::

    \frac{\partial \ell}{\partial s_c} = \frac{e^{s_c}}{1 + \sum_{k \in \Omega_-} e^{s_k}}
    \;(c \in \Omega_-), \qquad
    -\frac{e^{-s_c}}{1 + \sum_{k \in \Omega_+} e^{-s_k}} \;(c \in \Omega_+)

Weights (a third bottom) hold one value per sample or per location. Normalization
defaults to ``"batch_size"``; ``"full"`` counts the locations, ``"valid"`` the locations
with at least one label not ignored (times their weights), ``"none"`` is the plain sum.
"""
import math

import numpy as np

from .. import jit
from ..core import (EXP_SUM_MAX, Loss, broadcast_weights, check_finite, check_nonnegative,
                    times)
from ..jit import _exp, _exp_as, _log, _weight
from ..params import AXIS, IGNORE_LABEL, Layer, normalization


def log1p_sum_exp(t):
    """``log(1 + sum_c exp(t_c))`` per location (class axis 1; -inf for a class left out),
    as logsumexp([0, t...]) with the largest term subtracted, and its gradient."""
    m = np.maximum(t.max(axis=1, keepdims=True), 0)
    e = np.exp(t - m)
    z = np.exp(-m) + e.sum(axis=1, keepdims=True)
    return m + np.log(z), e / z


def zlpr_reference(s, y, counted=None):
    """The formula above in numpy on ``(outer, C[, inner])`` arrays: the loss per location
    and the gradient (before weights and normalization). ``counted``: the mask of the
    labels not ignored, or None."""
    negative, positive = y == 0, y == 1
    if counted is not None:
        negative, positive = negative & counted, positive & counted
    loss_neg, grad_neg = log1p_sum_exp(np.where(negative, s, -np.inf))
    loss_pos, grad_pos = log1p_sum_exp(np.where(positive, -s, -np.inf))
    return loss_neg + loss_pos, grad_neg - grad_pos


def zero_one_labels(labels, ws, ignore_label):
    """Labels in the work shape, and the mask of the counted ones (None: all). Raises
    ValueError for a label that is neither 0, 1 nor the ignore label."""
    y = np.asarray(labels).reshape(ws)
    counted = None if ignore_label is None else y != ignore_label
    if counted is not None and counted.all():
        counted = None
    ok = (y == 0) | (y == 1)
    if counted is not None:
        ok |= ~counted
    if not ok.all():
        bad = y[~ok]
        check_finite("labels", bad)
        ignore = ("" if ignore_label is None else " or the ignore_label %g" % ignore_label)
        hint = "" if ignore_label is not None else "; set ignore_label to skip a label value"
        raise ValueError("labels must be 0 or 1%s; found %d other values (first: %g)%s"
                         % (ignore, bad.size, bad[0], hint))
    return y, counted


class ZLPR(Loss):
    """ZLPR loss (see the module docstring). The kernels cover ``(N, C)`` blobs (rows) and
    ``N x C x H x W`` ones (planes); a plane whose sums of exponentials overflow without a
    shift takes the reference."""

    def __init__(self, *, axis=1, ignore_label=None, normalization="batch_size"):
        Loss.__init__(self, axis, normalization)
        self.ignore_label = ignore_label

    def on_new_shape(self):
        ws = self.ws
        self.typed = self.work.get("typed", (2,), self.dtype)
        self.typed[...] = 0, 1
        if len(ws) == 3:
            self.acc = self.work.get("acc", (3, ws[2]), np.float64)
            self.factors = self.work.get("factors", (2, ws[2]), self.dtype)
        else:
            self.factors = self.work.get("factors", (2,), self.dtype)

    def reference(self, x, labels, weights):
        y, counted = zero_one_labels(labels, self.ws, self.ignore_label)
        w = broadcast_weights(weights, self.shape, self.axis)
        check_nonnegative("weights", w)
        loss, grad = zlpr_reference(x, y, counted)
        self.grad[...] = times(grad, w)
        # a location counts in "valid" if any of its labels does
        any_counted = 1.0 if counted is None else counted.any(axis=1, keepdims=True)
        valid = np.broadcast_to(times(any_counted, w), loss.shape).sum(dtype=np.float64)
        return times(loss, w).sum(dtype=np.float64), self.locations, valid

    def kernel(self, x, labels, weights):
        y = np.asarray(labels).reshape(self.ws)
        w = broadcast_weights(weights, self.shape, self.axis)
        ignore = jit.ignore_value(self.ignore_label)
        if x.ndim == 2:
            w_rows = self.no_weights[0] if w is None else w.reshape(-1)
            out = self.run_kernel(_rows, x, y, w_rows, ignore, self.typed, self.factors, self.grad)
        else:
            out = self.run_kernel(_planes, x, y, self.no_weights[2] if w is None else w, ignore,
                                  self.typed, self.acc, self.factors, self.grad)
        return None if out is None else (out[0], self.locations, out[1])


def zlpr_loss(scores, labels, weights=None, **params):
    """ZLPR loss (see the module docstring); returns ``(loss, grad)``.
    ``params``: the keyword arguments of :class:`ZLPR`."""
    return ZLPR(**params)(scores, labels, weights)


# -- the kernel family --------------------------------------------------------------
# Both kernels make exp(t), t = s on a negative and -s on a positive, into the gradient
# buffer and sum it per location in one pass, unshifted (the implicit term 1 keeps each
# sum at least 1: no underflow to mind); then scale it by the location's factor. A
# sum above EXP_SUM_MAX overflowed: the rows kernel makes its row again with the largest
# term subtracted, the planes kernel hands the call to the reference.

@jit.kernel
def _rows(x, y, w, ignore, typed, factors, g):
    """ZLPR on (N, C) arrays: status, loss sum, valid sum; the gradient into g. ``w``
    holds one weight per row, or none; ``typed`` is (0, 1) and ``factors`` two values in
    the scores' dtype, so that the loops run in it."""
    rows, classes = x.shape
    zero = typed[0]
    total = valid = 0.0
    bad_label = bad_weight = False
    for n in range(rows):
        wn = _weight(w, n)
        bad_weight |= not wn >= 0
        xr, yr, gr = x[n], y[n], g[n]
        # the exponentials in a loop of their own: a select of one just made became a
        # branch, which kept the loop off the SIMD units
        for c in range(classes):
            gr[c] = _exp_as(-xr[c] if yr[c] == 1 else xr[c])
        neg = pos = counted = 0.0  # (a float count: an integer sum kept the loop off SIMD)
        for c in range(classes):
            label = yr[c]
            ignored = label == ignore
            bad_label |= not (ignored | (label == 0) | (label == 1))
            positive = (label == 1) & (not ignored)
            v = zero if ignored else gr[c]  # (a select: a NaN score of an ignored class is unused)
            gr[c] = v
            neg += zero if positive else v
            pos += v if positive else zero
            counted += 0.0 if ignored else 1.0
        m_neg = m_pos = 0.0
        if not (neg <= EXP_SUM_MAX and pos <= EXP_SUM_MAX):  # overflow (or NaN): shift
            for c in range(classes):
                label = yr[c]
                if label != ignore:
                    if label == 1:
                        m_pos = max(m_pos, -np.float64(xr[c]))
                    else:
                        m_neg = max(m_neg, np.float64(xr[c]))
            neg = pos = 0.0
            for c in range(classes):
                label = yr[c]
                positive = label == 1
                v = 0.0
                if label != ignore:
                    v = _exp(-xr[c] - m_pos) if positive else _exp(xr[c] - m_neg)
                gr[c] = v
                if positive:
                    pos += v
                else:
                    neg += v
        z_neg, z_pos = _exp(-m_neg) + neg, _exp(-m_pos) + pos
        total += wn * (m_neg + math.log(z_neg) + m_pos + math.log(z_pos))
        valid += wn if counted > 0 else 0.0
        factors[0] = wn / z_neg
        factors[1] = -wn / z_pos
        f_neg, f_pos = factors[0], factors[1]
        for c in range(classes):
            positive = (yr[c] == 1) & (yr[c] != ignore)
            gr[c] = gr[c] * (f_pos if positive else f_neg)
    if bad_label:
        return jit.BAD_LABEL, 0.0, 0.0
    if bad_weight:
        return jit.BAD_WEIGHT, 0.0, 0.0
    if not math.isfinite(total):
        return jit.NOT_FINITE, 0.0, 0.0
    return jit.OK, total, valid


@jit.kernel
def _planes(x, y, w, ignore, typed, acc, factors, g):
    """ZLPR on (outer, C, inner) arrays: status, loss sum, valid sum; the gradient into
    g. Along the contiguous inner axis, each location's two sums and count in ``acc`` (3 x
    inner, float64), its two factors in ``factors`` (2 x inner, the scores' dtype). ``w``
    is (outer, 1, inner) or (1, 1, 1) (none)."""
    outer, classes, inner = x.shape
    per_outer, per_inner = w.shape[0] > 1, w.shape[2] > 1
    zero = typed[0]
    neg, pos, count = acc[0], acc[1], acc[2]
    f_neg, f_pos = factors[0], factors[1]
    total = valid = 0.0
    bad_label = bad_weight = out_of_range = False
    for n in range(outer):
        for i in range(inner):
            neg[i] = pos[i] = count[i] = 0.0
        for c in range(classes):
            xc, yc, gc = x[n, c], y[n, c], g[n, c]
            for i in range(inner):  # (the exponentials apart, as in _rows)
                gc[i] = _exp_as(-xc[i] if yc[i] == 1 else xc[i])
            for i in range(inner):
                label = yc[i]
                ignored = label == ignore
                bad_label |= not (ignored | (label == 0) | (label == 1))
                positive = (label == 1) & (not ignored)
                v = zero if ignored else gc[i]
                gc[i] = v
                neg[i] += zero if positive else v
                pos[i] += v if positive else zero
                count[i] += 0.0 if ignored else 1.0
        wr = w[n if per_outer else 0, 0]
        for i in range(inner):
            wv = np.float64(wr[i if per_inner else 0])
            bad_weight |= not wv >= 0
            out_of_range |= not ((neg[i] <= EXP_SUM_MAX) & (pos[i] <= EXP_SUM_MAX))
            z_neg, z_pos = 1.0 + neg[i], 1.0 + pos[i]
            total += wv * (_log(z_neg) + _log(z_pos))
            valid += wv if count[i] > 0 else 0.0
            f_neg[i] = wv / z_neg
            f_pos[i] = -wv / z_pos
        if bad_label or bad_weight or out_of_range:
            break
        for c in range(classes):
            yc, gc = y[n, c], g[n, c]
            for i in range(inner):
                positive = (yc[i] == 1) & (yc[i] != ignore)
                gc[i] = gc[i] * (f_pos[i] if positive else f_neg[i])
    if bad_label:
        return jit.BAD_LABEL, 0.0, 0.0
    if bad_weight:
        return jit.BAD_WEIGHT, 0.0, 0.0
    if out_of_range or not math.isfinite(total):
        return jit.NOT_FINITE, 0.0, 0.0
    return jit.OK, total, valid


# -- the layers ---------------------------------------------------------------------

LAYERS = [
    Layer("ZLPRLoss", ZLPR, labels="dense", deploy="Sigmoid", counted="location", params={
        "axis": AXIS,
        "ignore_label": IGNORE_LABEL,
        "normalization": normalization("batch_size"),
    }),
]
