"""Kernels of the multi-label softmax (:mod:`caffe_losses.losses.multilabel_softmax`).

Small ``(N, C)`` blobs take :func:`_small_rows`, one pass per row (in cache) that makes
the gradient for backward to scale: there a second kernel call in backward would cost
more than its arithmetic. Memory, not arithmetic, bounds the loops on large blobs, so
:func:`_rows` and :func:`_planes` read the scores and labels once and make exp(s)
themselves (in the scores' precision) rather than write a blob of exponentials and read
it back. They keep two factors per location, from which :func:`_rows_grad` and
:func:`_planes_grad` make the gradient in backward, making exp(s) again.
"""
import math

import numpy as np

from . import jit
from .jit import (EXP_SUM_MAX, EXP_SUM_MIN, PLANE_BLOCK, PLANE_CLASSES, ROW_CLASSES, _exp,
                  _exp_as, _log, _row_softmax, _row_targets, _row_weight, _skip_row)
from .plan import Plan

# (N, C) blobs up to this many elements take _small_rows
GRAD_IN_FORWARD_MAX = 8192

# the rows of the planes kernel's block sums in ``part`` (the scores' dtype) and ``acc``
# (float64): label sums, label-score products, exp sums, non-zero labels; weights (acc)
LABEL_SUM, DOT, EXP_SUM, NONZERO, WEIGHT = (np.uint64(k * PLANE_BLOCK) for k in range(5))


def plan(ws, dtype, count_target):
    """The kernels for scores of work shape ``ws``; ``count_target``: targets y / M (M the
    number of non-zero labels) rather than y / sum y."""
    if len(ws) == 2 and ws[0] * ws[1] <= GRAD_IN_FORWARD_MAX:
        return Plan(_small_rows, ws, labels=ws, dtype=dtype, count_target=count_target,
                    grad=np.empty(ws, dtype))
    factors = dict(coefs=np.empty((ws[0],) + ws[2:]), factors=np.empty((ws[0],) + ws[2:]))
    if len(ws) == 2:
        return Plan(_rows, ws, labels=ws, backward=_rows_grad, dtype=dtype,
                    count_target=count_target, shifts=np.empty(ws[0]),
                    part=np.empty(3, dtype), **factors)
    return Plan(_planes, ws, labels=ws, backward=_planes_grad, dtype=dtype,
                count_target=count_target, part=np.empty(4 * PLANE_BLOCK, dtype),
                acc=np.empty(5 * PLANE_BLOCK), **factors)


@jit.kernel
def _small_rows(x, y, w, count_target, grad):
    """On small (N, C) blobs: ok, loss sum, valid sum; the gradient into ``grad``, in one
    pass over each row with exp(s - max). ``w``: (N, 1) or (1, 1)."""
    rows, classes = x.shape
    total = 0.0
    valid = 0.0
    for n in range(rows):
        wn = _row_weight(w, n)
        if not wn >= 0:
            return False, 0.0, 0.0
        negative, label_sum, denom = _row_targets(y, n, count_target)
        if negative:
            return False, 0.0, 0.0
        if not denom > 0:  # no positive label: the location does not count
            if not _skip_row(x, n, grad):
                return False, 0.0, 0.0
            continue
        coef = wn / denom
        dot = 0.0
        for c in range(classes):
            dot += y[n, c] * x[n, c]
        m, s = _row_softmax(x, n, grad)
        f = coef * label_sum / s
        for c in range(classes):  # coef (label_sum p_c - y_c)
            grad[n, c] = grad[n, c] * f - coef * y[n, c]
        total += coef * (label_sum * (m + math.log(s)) - dot)
        valid += wn
    return math.isfinite(total), total, valid


@jit.inline
def _row_sums(x, y, n, count_target, part):
    """Row n of (N, C) arrays: (any label negative or NaN, label sum, sum of labels times
    scores, sum of exp(s), number of non-zero labels if ``count_target``). ``part`` is an
    array in the scores' dtype, for the type of the partial sums."""
    classes = x.shape[1]
    label_sum = dot = exp_sum = nonzero = 0.0
    negative = False
    zero = part[0] * 0
    for c0 in range(0, classes, ROW_CLASSES):
        c1 = min(c0 + ROW_CLASSES, classes)
        xr, yr = x[n, c0:c1], y[n, c0:c1]  # (slices: indexing x[n, c] is slower)
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
def _rows(x, y, w, count_target, coefs, factors, shifts, part):
    """On large (N, C) blobs: ok, loss sum, valid sum; per row the two factors and the
    shift of the scores that :func:`_rows_grad` takes. A row whose sum of exp(s) leaves
    [EXP_SUM_MIN, EXP_SUM_MAX] (overflow, or every score very negative) is summed again
    with its max subtracted (its shift; else 0)."""
    rows, classes = x.shape
    total = 0.0
    valid = 0.0
    for n in range(rows):
        wn = _row_weight(w, n)
        if not wn >= 0:
            return False, 0.0, 0.0
        negative, label_sum, dot, s, nonzero = _row_sums(x, y, n, count_target, part)
        if negative or not math.isfinite(dot):  # (an infinite score: 0 x inf is NaN)
            return False, 0.0, 0.0
        shift = 0.0
        if not (s >= EXP_SUM_MIN and s <= EXP_SUM_MAX):
            shift = -np.inf
            for c in range(classes):
                shift = max(shift, np.float64(x[n, c]))
            s = 0.0
            for c in range(classes):
                s += _exp(x[n, c] - shift)
            if not (s >= 1.0 and s < np.inf):  # a NaN or infinite score
                return False, 0.0, 0.0
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
    return math.isfinite(total), total, valid


@jit.kernel
def _rows_grad(x, y, coefs, factors, shifts, part, k, out):
    """The gradient on (N, C) arrays from what :func:`_rows` kept, times ``k``, into
    ``out``: k (factor exp(s - shift) - coef y). ``part`` (3 values in the scores' dtype)
    takes a row's numbers, so that the loop runs in that dtype."""
    for n in range(x.shape[0]):
        part[0] = factors[n] * k
        part[1] = coefs[n] * k
        part[2] = shifts[n]
        f, cf, shift = part[0], part[1], part[2]
        xr, yr, row = x[n], y[n], out[n]
        for c in range(x.shape[1]):
            row[c] = _exp_as(xr[c] - shift) * f - cf * yr[c]


@jit.kernel
def _planes(x, y, w, count_target, coefs, factors, part, acc):
    """On (outer, C, inner) blobs: ok, loss sum, valid sum; each location's two factors
    into ``coefs`` and ``factors`` (outer x inner, float64), from which
    :func:`_planes_grad` makes the gradient. ``w``: (outer, 1, inner) or (1, 1, 1).

    Every loop runs along the contiguous inner axis, over a block of locations at a time,
    with the block's sums in the rows of ``part`` (4 x PLANE_BLOCK, the scores' dtype)
    and ``acc`` (5 x PLANE_BLOCK, float64). A location whose exponentials overflow or all
    but underflow declines the call (the reference shifts the scores)."""
    outer, classes, inner = x.shape
    per_outer, per_inner = w.shape[0] > 1, w.shape[2] > 1
    blk = part.shape[0] // 4  # PLANE_BLOCK, as a bound known only at run time
    total = 0.0
    valid = 0.0
    bad = False
    for n in range(outer):
        for i0 in range(0, inner, blk):
            m = min(blk, inner - i0)
            mu = np.uint64(m)  # unsigned indices: no negative-index fix-up
            for i in range(mu):
                acc[LABEL_SUM + i] = acc[DOT + i] = acc[EXP_SUM + i] = acc[NONZERO + i] = 0.0
            for c0 in range(0, classes, PLANE_CLASSES):
                for i in range(mu):
                    part[LABEL_SUM + i] = part[DOT + i] = part[EXP_SUM + i] = 0
                    part[NONZERO + i] = 0
                for c in range(c0, min(c0 + PLANE_CLASSES, classes)):
                    yc, xc = y[n, c, i0:i0 + m], x[n, c, i0:i0 + m]
                    for i in range(mu):
                        v = yc[i]
                        bad |= not v >= 0
                        part[LABEL_SUM + i] += v
                        part[DOT + i] += v * xc[i]
                        part[EXP_SUM + i] += _exp_as(xc[i])
                    if count_target:
                        for i in range(mu):
                            part[NONZERO + i] += yc[i] != 0
                for i in range(mu):
                    acc[LABEL_SUM + i] += part[LABEL_SUM + i]
                    acc[DOT + i] += part[DOT + i]
                    acc[EXP_SUM + i] += part[EXP_SUM + i]
                if count_target:
                    for i in range(mu):
                        acc[NONZERO + i] += part[NONZERO + i]
            # the weights, in a loop of their own so that the next one runs on SIMD units
            if per_inner:
                weights = w[n * per_outer, 0, i0:i0 + m]
                for i in range(mu):
                    acc[WEIGHT + i] = weights[i]
            else:
                wn = np.float64(w[n * per_outer, 0, 0])
                for i in range(mu):
                    acc[WEIGHT + i] = wn
            coef, factor = coefs[n, i0:i0 + m], factors[n, i0:i0 + m]
            for i in range(mu):  # no short-circuit "and"; one division
                wv = acc[WEIGHT + i]
                s = acc[EXP_SUM + i]
                bad |= (not wv >= 0) | (s < EXP_SUM_MIN) | (s > EXP_SUM_MAX) | (s != s)
                denom = acc[NONZERO + i] if count_target else acc[LABEL_SUM + i]
                counted = denom > 0
                r = wv / (denom * s) if counted else 0.0
                coef[i] = r * s  # w / denom
                factor[i] = r * acc[LABEL_SUM + i]  # coef label_sum / s
                valid += wv if counted else 0.0
            for i in range(mu):  # a loop of its own, so that both run on SIMD units
                total += coef[i] * (acc[LABEL_SUM + i] * _log(acc[EXP_SUM + i]) - acc[DOT + i])
        if bad:
            return False, 0.0, 0.0
    return math.isfinite(total), total, valid


@jit.kernel
def _planes_grad(x, y, coefs, factors, part, k, out):
    """The gradient on (outer, C, inner) arrays from the factors of :func:`_planes`,
    times ``k``, into ``out``: k (factor exp(s) - coef y), with exp(s) made again
    (reading the scores costs what reading kept exponentials would). ``part`` (4 x
    PLANE_BLOCK, the scores' dtype) holds a block's factors."""
    outer, classes, inner = x.shape
    b = part.shape[0] // 4  # PLANE_BLOCK, as a bound known only at run time
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
