"""Kernels of the cross-entropy on probabilities (:mod:`caffe_losses.losses.cross_entropy`),
categorical mode: rows of ``(N, C)`` blobs and planes of N x C x H x W ones. Binary mode
takes the reference."""
import math

import numpy as np

from . import jit
from .jit import _log, _row_targets, _row_weight
from .plan import Plan

# the kernels' log takes normal numbers only (above 2.2e-308): a smaller clip declines
P_MIN_LEAST = 1e-300
# the rows of the planes kernel's ``sums``, per location of a plane (float64)
LABEL_SUM, NONZERO, COEF = 0, 1, 2


def plan(ws, dtype, p_min, count_target):
    """The kernel for probabilities of work shape ``ws``, clipped below at ``p_min``;
    ``count_target``: targets y / M (M the number of non-zero labels) rather than y / sum y."""
    if p_min < P_MIN_LEAST:
        return None
    if len(ws) == 2:
        return Plan(_rows, ws, labels=ws, dtype=dtype, p_min=p_min, count_target=count_target,
                    grad=np.empty(ws, dtype))
    return Plan(_planes, ws, labels=ws, dtype=dtype, p_min=p_min, count_target=count_target,
                sums=np.empty((3, ws[2])), grad=np.empty(ws, dtype))


@jit.kernel
def _rows(x, y, w, p_min, count_target, grad):
    """On (N, C) probabilities: ok, loss sum, valid sum; the gradient into ``grad``.
    ``w``: (N, 1) or (1, 1)."""
    rows, classes = x.shape
    total = 0.0
    valid = 0.0
    for n in range(rows):
        wn = _row_weight(w, n)
        if not wn >= 0:
            return False, 0.0, 0.0
        wrong, _, denom = _row_targets(y, n, count_target)
        for c in range(classes):
            wrong |= not (x[n, c] >= 0 and x[n, c] <= 1)
        if wrong:
            return False, 0.0, 0.0
        coef = wn / denom if denom > 0 else 0.0
        if denom > 0:
            valid += wn
        for c in range(classes):
            q = np.float64(x[n, c])
            q = p_min if q < p_min else q
            total -= coef * y[n, c] * _log(q)  # q >= p_min: a label of 0 adds 0
            grad[n, c] = -coef * y[n, c] / q
    return math.isfinite(total), total, valid


@jit.kernel
def _planes(x, y, w, p_min, count_target, sums, grad):
    """On (outer, C, inner) probabilities: ok, loss sum, valid sum; the gradient into
    ``grad``. ``w``: (outer, 1, inner) or (1, 1, 1). Per plane, along the contiguous inner
    axis: the label sums (and counts) of its locations into ``sums``, then their
    coefficients, then the loss and gradient."""
    outer, classes, inner = x.shape
    per_outer, per_inner = w.shape[0] > 1, w.shape[2] > 1
    label_sum, nonzero, coef = sums[LABEL_SUM], sums[NONZERO], sums[COEF]
    total = valid = 0.0
    bad = False
    for n in range(outer):
        for i in range(inner):
            label_sum[i] = nonzero[i] = 0.0
        for c in range(classes):
            xc, yc = x[n, c], y[n, c]
            for i in range(inner):
                v = yc[i]
                bad |= (not v >= 0) | (not ((xc[i] >= 0) & (xc[i] <= 1)))
                label_sum[i] += v
                nonzero[i] += 1.0 if v != 0 else 0.0
        wr = w[n if per_outer else 0, 0]
        for i in range(inner):
            wv = np.float64(wr[i if per_inner else 0])
            bad |= not wv >= 0
            denom = nonzero[i] if count_target else label_sum[i]
            counted = denom > 0
            coef[i] = wv / denom if counted else 0.0
            valid += wv if counted else 0.0
        if bad:
            return False, 0.0, 0.0
        for c in range(classes):
            xc, yc, gc = x[n, c], y[n, c], grad[n, c]
            for i in range(inner):
                q = np.float64(xc[i])
                q = p_min if q < p_min else q
                t = coef[i] * yc[i]
                total -= t * _log(q)
                gc[i] = -t / q
    return math.isfinite(total), total, valid
