"""Kernels of the ZLPR loss (:mod:`caffe_losses.losses.zlpr`): rows of ``(N, C)`` blobs and
planes of N x C x H x W ones.

Both make exp(t), t = s on a negative and -s on a positive, into the gradient buffer and
sum it per location in one pass, unshifted (the implicit term 1 keeps each sum at least
1: no underflow to mind); then scale it by the location's factor. A sum above
EXP_SUM_MAX overflowed: the rows kernel makes its row again with the largest term
subtracted, the planes kernel declines the call.
"""
import math

import numpy as np

from . import jit
from .jit import EXP_SUM_MAX, _exp, _exp_as, _log, _row_weight
from .plan import Plan, or_nan

# the rows of ``factors`` (the scores' dtype): per location, the negative and positive
# terms' factors of the gradient; of the planes kernel's ``sums`` (float64): per location,
# the two sums of exponentials and the number of labels counted
F_NEG, F_POS = 0, 1
NEG, POS, COUNT = 0, 1, 2


def plan(ws, dtype, ignore_label):
    """The kernel for scores of work shape ``ws``."""
    ignore = or_nan(ignore_label)
    if len(ws) == 2:
        return Plan(_rows, ws, labels=ws, dtype=dtype, ignore=ignore,
                    factors=np.empty(2, dtype), grad=np.empty(ws, dtype))
    return Plan(_planes, ws, labels=ws, dtype=dtype, ignore=ignore,
                sums=np.empty((3, ws[2])), factors=np.empty((2, ws[2]), dtype),
                grad=np.empty(ws, dtype))


@jit.kernel
def _rows(x, y, w, ignore, factors, grad):
    """On (N, C) arrays: ok, loss sum, valid sum; the gradient into ``grad``. ``w``: (N, 1)
    or (1, 1); ``factors`` holds a row's two factors in the scores' dtype, so that the
    loops run in it."""
    rows, classes = x.shape
    zero = factors[0] * 0
    total = valid = 0.0
    bad_label = bad_weight = False
    for n in range(rows):
        wn = np.float64(_row_weight(w, n))
        bad_weight |= not wn >= 0
        xr, yr, gr = x[n], y[n], grad[n]
        for c in range(classes):  # the exponentials in a loop of their own
            gr[c] = _exp_as(-xr[c] if yr[c] == 1 else xr[c])
        neg = pos = counted = 0.0  # (a float count, not an integer one)
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
        factors[F_NEG] = wn / z_neg
        factors[F_POS] = -wn / z_pos
        f_neg, f_pos = factors[F_NEG], factors[F_POS]
        for c in range(classes):
            positive = (yr[c] == 1) & (yr[c] != ignore)
            gr[c] = gr[c] * (f_pos if positive else f_neg)
    return not (bad_label or bad_weight) and math.isfinite(total), total, valid


@jit.kernel
def _planes(x, y, w, ignore, sums, factors, grad):
    """On (outer, C, inner) arrays: ok, loss sum, valid sum; the gradient into ``grad``.
    Along the contiguous inner axis, each location's two sums and count in ``sums`` (3 x
    inner, float64), its two factors in ``factors`` (2 x inner, the scores' dtype). ``w``:
    (outer, 1, inner) or (1, 1, 1)."""
    outer, classes, inner = x.shape
    per_outer, per_inner = w.shape[0] > 1, w.shape[2] > 1
    zero = factors[0, 0] * 0
    neg, pos, count = sums[NEG], sums[POS], sums[COUNT]
    f_neg, f_pos = factors[F_NEG], factors[F_POS]
    total = valid = 0.0
    bad = False
    for n in range(outer):
        for i in range(inner):
            neg[i] = pos[i] = count[i] = 0.0
        for c in range(classes):
            xc, yc, gc = x[n, c], y[n, c], grad[n, c]
            for i in range(inner):  # (the exponentials apart, as in _rows)
                gc[i] = _exp_as(-xc[i] if yc[i] == 1 else xc[i])
            for i in range(inner):
                label = yc[i]
                ignored = label == ignore
                bad |= not (ignored | (label == 0) | (label == 1))
                positive = (label == 1) & (not ignored)
                v = zero if ignored else gc[i]
                gc[i] = v
                neg[i] += zero if positive else v
                pos[i] += v if positive else zero
                count[i] += 0.0 if ignored else 1.0
        wr = w[n if per_outer else 0, 0]
        for i in range(inner):
            wv = np.float64(wr[i if per_inner else 0])
            bad |= (not wv >= 0) | (not ((neg[i] <= EXP_SUM_MAX) & (pos[i] <= EXP_SUM_MAX)))
            z_neg, z_pos = 1.0 + neg[i], 1.0 + pos[i]
            total += wv * (_log(z_neg) + _log(z_pos))
            valid += wv if count[i] > 0 else 0.0
            f_neg[i] = wv / z_neg
            f_pos[i] = -wv / z_pos
        if bad:
            return False, 0.0, 0.0
        for c in range(classes):
            yc, gc = y[n, c], grad[n, c]
            for i in range(inner):
                positive = (yc[i] == 1) & (yc[i] != ignore)
                gc[i] = gc[i] * (f_pos[i] if positive else f_neg[i])
    return math.isfinite(total), total, valid
