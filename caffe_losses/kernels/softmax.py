"""Kernels of the softmax losses with sparse labels (:mod:`caffe_losses.losses.softmax`):
softmax cross-entropy and the softmax focal loss.

One loop over rows (``(N, C)`` blobs, :func:`_rows`) and one over planes (N x C x H x W,
:func:`_planes`), shared by the two losses; each loss gives only its per-location step
(:func:`_cross_entropy_step`, :func:`_focal_step`), which maps log p_y and p_y to the
loss, the valid count and the gradient's coefficients: the gradient is
``coef_exp p_c - coef_smooth a_c``, and ``at_label`` at c = y. :func:`plan` picks the
loss's two kernels, module-level functions that call the loops with the step as a
constant, so that numba compiles each loop once per loss, the other loss's step gone.
"""
import math

import numpy as np

from . import jit
from .jit import (EXP_SUM_MAX, EXP_SUM_MIN, PLANE_BLOCK, PLANE_CLASSES, _class_index, _exp_as,
                  _log_as, _row_softmax, _row_weight, _skip_row)
from .plan import Plan, or_nan, per_column

CROSS_ENTROPY, FOCAL = 0, 1  # the per-location steps

# the rows of the planes kernel's per-location numbers in ``acc`` (float64) ...
SUMS, DOTS, SCORE_Y, EXP_Y, A_Y, LOG_Z, WEIGHT = (np.uint64(k * PLANE_BLOCK) for k in range(7))
# ... and in ``part`` (the scores' dtype): the exp sums as summed, then the sums and the
# labelled scores again, for the log and exp in that dtype
PART_S, PART_SY = np.uint64(2 * PLANE_BLOCK), np.uint64(3 * PLANE_BLOCK)
# the rows of ``coefs``, what the planes kernel keeps per location for the gradient
COEF_EXP, COEF_SMOOTH, AT_LABEL = 0, 1, 2


def plan(ws, dtype, step, class_weight, label_smoothing, gamma, poly, ignore_label):
    """The kernel of ``step`` (CROSS_ENTROPY or FOCAL) for scores of work shape ``ws``:
    rows, which make the gradient in forward, or planes, which keep three numbers per
    location and make it in backward. ``class_weight``: a_c of either loss (the focal
    loss's alpha), None, one number or one per class."""
    class_weights = per_column(class_weight, ws[1])
    common = dict(class_weights=class_weights, label_smoothing=float(label_smoothing),
                  gamma=float(gamma), poly=float(poly), ignore=or_nan(ignore_label), dtype=dtype)
    if len(ws) == 2:
        kernel = _rows_cross_entropy if step == CROSS_ENTROPY else _rows_focal
        return Plan(kernel, ws, labels=(ws[0],), grad=np.empty(ws, dtype), **common)
    kernel = _planes_cross_entropy if step == CROSS_ENTROPY else _planes_focal
    return Plan(kernel, ws, labels=(ws[0], ws[2]), backward=_planes_grad,
                typed_class_weights=class_weights.astype(dtype),
                part=np.empty(4 * PLANE_BLOCK, dtype), acc=np.empty(8 * PLANE_BLOCK),
                coefs=np.empty((3, ws[0], ws[2]), dtype), **common)


@jit.inline
def _cross_entropy_step(log_p, p, wn, a_y, a_sum, a_logp, smoothing, poly, classes):
    """Softmax cross-entropy at one location: (loss, valid, coef_exp, coef_smooth,
    at_label), all times its weight ``wn``."""
    smooth = smoothing / classes
    picked = (1.0 - smoothing) * a_y
    mass = picked + smooth * a_sum                   # Q
    loss = -(picked * log_p + smooth * a_logp)
    coef_exp = mass
    at_label = mass * p - picked - smooth * a_y
    if poly != 0.0:  # (the same for every location: the compiler takes it out of the loop)
        # Poly-1: + poly a_y (1 - p_t), p_t = (1 - smoothing) p_y + smoothing / C; its
        # gradient is poly a_y (1 - smoothing) p_y (p_c - [c = y])
        loss += poly * a_y * (1.0 - ((1.0 - smoothing) * p + smooth))
        extra = poly * a_y * (1.0 - smoothing) * p
        coef_exp += extra
        at_label += extra * (p - 1.0)
    return wn * loss, wn * a_y, wn * coef_exp, wn * smooth, wn * at_label


@jit.inline
def _focal_step(log_p, p, wn, alpha_y, gamma, poly):
    """The softmax focal loss at one location, as :func:`_cross_entropy_step` (selects,
    not branches, so that a loop over locations runs on SIMD units)."""
    log_p = min(log_p, 0.0)  # a shift can round log p_y a hair above 0
    p = min(p, 1.0)
    rest = 1.0 - p
    modulation = rest * rest if gamma == 2.0 else rest ** gamma
    ratio = log_p / rest if rest > 0 else -1.0  # log(p) / (1 - p) -> -1 as p -> 1
    # Poly-1: + poly (1 - p_y)^(gamma + 1), whose factor is poly (gamma + 1) (1 - p_y)^gamma p_y
    factor = modulation * (1.0 - gamma * p * ratio + poly * (gamma + 1.0) * p)
    f = wn * alpha_y * factor
    loss = modulation * (poly * rest - log_p)
    return wn * alpha_y * loss, wn, f, 0.0, f * (p - 1.0)


@jit.inline
def _step(step, log_p, p, wn, a_y, a_sum, a_logp, label_smoothing, gamma, poly, classes):
    """The per-location step of the loss ``step``, a constant of each kernel."""
    if step == CROSS_ENTROPY:
        return _cross_entropy_step(log_p, p, wn, a_y, a_sum, a_logp, label_smoothing, poly,
                                   classes)
    return _focal_step(log_p, p, wn, a_y, gamma, poly)


@jit.kernel
def _rows(step, x, y, w, class_weights, label_smoothing, gamma, poly, ignore, grad):
    """On (N, C) scores: ok, loss sum, valid sum; the gradient into ``grad``. ``y``: one
    label per row; ``w``: (N, 1) or (1, 1); no ignore label is NaN, which equals no label."""
    n_rows, classes = x.shape
    a = class_weights
    a_sum = 0.0
    for c in range(classes):
        a_sum += a[c]
    total = valid = 0.0
    for n in range(n_rows):
        wn = _row_weight(w, n)
        if not wn >= 0:
            return False, 0.0, 0.0
        label = y[n]
        if label == ignore:
            if not _skip_row(x, n, grad):
                return False, 0.0, 0.0
            continue
        k = _class_index(label, classes)
        if k < 0:
            return False, 0.0, 0.0
        m, s = _row_softmax(x, n, grad)
        log_z = m + math.log(s)
        a_logp = 0.0
        if label_smoothing != 0.0:
            dot = 0.0
            for c in range(classes):
                dot += a[c] * x[n, c]
            a_logp = dot - a_sum * log_z
        loss, counted, coef_exp, coef_smooth, at_label = _step(
            step, x[n, k] - log_z, grad[n, k] / s, np.float64(wn), a[k], a_sum, a_logp,
            label_smoothing, gamma, poly, classes)
        total += loss
        valid += counted
        f = coef_exp / s
        for c in range(classes):
            grad[n, c] = grad[n, c] * f - coef_smooth * a[c]
        grad[n, k] = at_label
    return math.isfinite(total), total, valid


@jit.kernel
def _planes(step, x, y, w, class_weights, label_smoothing, gamma, poly, ignore, part, acc,
            coefs):
    """On (outer, C, inner) scores: ok, loss sum, valid sum; per location the gradient's
    coefficients into ``coefs`` (coef_exp / sum exp(s), coef_smooth, at_label), for
    :func:`_planes_grad`. ``y``: (outer, inner); ``w``: (outer, 1, inner) or (1, 1, 1).
    Reads the scores once, along the contiguous inner axis, a block of locations at a
    time, with an unshifted exp: a location whose sum of exp(s) leaves [EXP_SUM_MIN,
    EXP_SUM_MAX] declines the call (the reference shifts)."""
    outer, classes, inner = x.shape
    a = class_weights
    per_outer, per_inner = w.shape[0] > 1, w.shape[2] > 1
    blk = part.shape[0] // 4  # PLANE_BLOCK, as a bound known only at run time
    a_sum = 0.0
    for c in range(classes):
        a_sum += a[c]
    total = valid = 0.0
    bad = False
    for n in range(outer):
        for i0 in range(0, inner, blk):
            m = min(blk, inner - i0)
            mu = np.uint64(m)
            lab = y[n, i0:i0 + m]
            for i in range(mu):
                acc[SUMS + i] = acc[DOTS + i] = 0.0
            for c0 in range(0, classes, PLANE_CLASSES):
                for i in range(m):
                    part[i] = 0
                for c in range(c0, min(c0 + PLANE_CLASSES, classes)):
                    xc = x[n, c, i0:i0 + m]
                    for i in range(m):
                        part[i] += _exp_as(xc[i])
                for i in range(mu):
                    acc[SUMS + i] += part[i]
            if label_smoothing != 0.0:  # sum_c a_c s_c
                for c in range(classes):
                    xc, ac = x[n, c, i0:i0 + m], a[c]
                    for i in range(mu):
                        acc[DOTS + i] += ac * xc[i]
            # the labelled class (a gather), checks and weights; an ignored location gets
            # weight 0, so it adds nothing
            for i in range(mu):
                s = acc[SUMS + i]
                bad |= (s < EXP_SUM_MIN) | (s > EXP_SUM_MAX) | (s != s)
                label = lab[i]
                ignored = label == ignore
                k = _class_index(label, classes)
                bad |= (k < 0) & (not ignored)
                k = 0 if k < 0 else k
                wv = np.float64(w[n if per_outer else 0, 0, i0 + i if per_inner else 0])
                bad |= not wv >= 0
                acc[WEIGHT + i] = 0.0 if ignored else wv
                acc[A_Y + i] = a[k]
                acc[SCORE_Y + i] = x[n, k, i0 + i]
                part[PART_S + i] = s
                part[PART_SY + i] = x[n, k, i0 + i]
            for i in range(mu):
                acc[LOG_Z + i] = _log_as(part[PART_S + i])
                acc[EXP_Y + i] = _exp_as(part[PART_SY + i])
            cf_exp, cf_smooth = coefs[COEF_EXP, n, i0:i0 + m], coefs[COEF_SMOOTH, n, i0:i0 + m]
            cf_label = coefs[AT_LABEL, n, i0:i0 + m]
            for i in range(mu):
                s = acc[SUMS + i]
                log_z = acc[LOG_Z + i]
                loss, counted, coef_exp, coef_smooth, at_label = _step(
                    step, acc[SCORE_Y + i] - log_z, acc[EXP_Y + i] / s, acc[WEIGHT + i],
                    acc[A_Y + i], a_sum, acc[DOTS + i] - a_sum * log_z, label_smoothing, gamma,
                    poly, classes)
                total += loss
                valid += counted
                cf_exp[i] = coef_exp / s
                cf_smooth[i] = coef_smooth
                cf_label[i] = at_label
        if bad:
            return False, 0.0, 0.0
    return math.isfinite(total), total, valid


@jit.kernel
def _rows_cross_entropy(x, y, w, class_weights, label_smoothing, gamma, poly, ignore, grad):
    """:func:`_rows` for softmax cross-entropy."""
    return _rows(CROSS_ENTROPY, x, y, w, class_weights, label_smoothing, gamma, poly, ignore,
                 grad)


@jit.kernel
def _planes_cross_entropy(x, y, w, class_weights, label_smoothing, gamma, poly, ignore, part,
                          acc, coefs):
    """:func:`_planes` for softmax cross-entropy."""
    return _planes(CROSS_ENTROPY, x, y, w, class_weights, label_smoothing, gamma, poly, ignore,
                   part, acc, coefs)


@jit.kernel
def _rows_focal(x, y, w, class_weights, label_smoothing, gamma, poly, ignore, grad):
    """:func:`_rows` for the softmax focal loss (``class_weights``: its alpha)."""
    return _rows(FOCAL, x, y, w, class_weights, label_smoothing, gamma, poly, ignore, grad)


@jit.kernel
def _planes_focal(x, y, w, class_weights, label_smoothing, gamma, poly, ignore, part, acc,
                  coefs):
    """:func:`_planes` for the softmax focal loss."""
    return _planes(FOCAL, x, y, w, class_weights, label_smoothing, gamma, poly, ignore, part,
                   acc, coefs)


@jit.kernel
def _planes_grad(x, y, ignore, typed_class_weights, coefs, part, k, out):
    """The gradient times ``k`` into ``out`` from what :func:`_planes` kept: k (coef_exp
    exp(s) - coef_smooth a_c), and k at_label at the labelled class; exp(s) made again
    (reading the scores costs what reading kept exponentials would). The class weights,
    ``coefs`` and ``part`` (whose first value takes k) are in the scores' dtype, so that
    the loop runs in it."""
    outer, classes, inner = x.shape
    part[0] = k
    kt = part[0]
    for n in range(outer):
        f, sm = coefs[COEF_EXP, n], coefs[COEF_SMOOTH, n]
        for c in range(classes):
            ac = typed_class_weights[c]
            xc, oc = x[n, c], out[n, c]
            for i in range(inner):
                oc[i] = (_exp_as(xc[i]) * f[i] - sm[i] * ac) * kt
        at, lab = coefs[AT_LABEL, n], y[n]
        for i in range(inner):
            if lab[i] != ignore:  # (forward checked that it is a class index)
                out[n, int(lab[i]), i] = at[i] * kt
