"""Kernels of the distillation loss (:mod:`caffe_losses.losses.distillation`): the
softmax form on rows (``(N, C)`` blobs) and planes (N x C x H x W), the sigmoid form on
rows of elements.

Each kernel takes the student's scores ``x``, the teacher's ``t`` and weights ``w`` (1
where counted, 0 where the labels say ignore, or ones that broadcast) and makes the
gradient T (p - q) in forward, for backward to scale: it needs both blobs' softened
probabilities, which forward has made. ``typed`` holds 1/T in the scores' dtype, so
that the loops over scores run in it, and a row's gradient factors.
"""
import math

import numpy as np

from . import jit
from .jit import PLANE_BLOCK, PLANE_CLASSES, _exp_as, _log, _log1p_as, _row_max, _row_weight
from .plan import Plan, element_rows

# the rows of the planes kernel's ``part`` (the scores' dtype): per location of a block
# the two maxima, the partial sums over PLANE_CLASSES classes, then the gradient's factors
MAX_S, MAX_T, PART_S, PART_T, PART_DOT = (np.uint64(k * PLANE_BLOCK) for k in range(5))
FACTOR, RATIO = PART_S, PART_T
# ... and of ``acc`` (float64): the sums of exp((s - max s) / T), of exp((t - max t) / T)
# and of q_c (t_c - s_c)
SUM_S, SUM_T, DOT = (np.uint64(k * PLANE_BLOCK) for k in range(3))
# the rows of the sigmoid kernel's ``terms``: per element of a row exp(-|s'|),
# log(1 + exp(-|s'|)), the same of t'
EXP_S, LOG_S, EXP_T, LOG_T = 0, 1, 2, 3


def plan(ws, dtype, temperature, softmax):
    """The kernel for student scores of work shape ``ws`` at ``temperature``; ``softmax``:
    the softmax form (else the sigmoid one)."""
    typed = np.empty(3, dtype)
    typed[0] = 1.0 / temperature
    rows = element_rows(ws)
    common = dict(typed=typed, temperature=float(temperature), dtype=dtype,
                  grad=np.empty(rows if not softmax else ws, dtype))
    if not softmax:
        terms = np.empty((4, rows[1]), dtype)
        if len(ws) == 2:
            return Plan(_sigmoid_rows, ws, labels=ws, terms=terms, **common)
        return Plan(_sigmoid_planes, ws, labels=rows, scores=rows, classes=ws[1], terms=terms,
                    counted=np.empty(ws[2]), **common)
    if len(ws) == 2:
        return Plan(_softmax_rows, ws, labels=ws, q=np.empty(ws[1], dtype), **common)
    return Plan(_softmax_planes, ws, labels=ws, part=np.empty(5 * PLANE_BLOCK, dtype),
                acc=np.empty(3 * PLANE_BLOCK), q=np.empty((ws[1], PLANE_BLOCK), dtype), **common)


@jit.kernel
def _softmax_rows(x, t, w, typed, temperature, q, grad):
    """The softmax form on (N, C) scores: ok, KL sum, counted rows; the gradient into
    ``grad``. ``w``: (N, 1) or (1, 1); ``q``: a row's buffer."""
    rows, classes = x.shape
    inv_t = typed[0]
    total = valid = 0.0
    for n in range(rows):
        wn = np.float64(_row_weight(w, n))
        ms, mt = _row_max(x, n), _row_max(t, n)
        for c in range(classes):
            grad[n, c] = _exp_as((x[n, c] - ms) * inv_t)
        for c in range(classes):
            q[c] = _exp_as((t[n, c] - mt) * inv_t)
        zs = zt = dot = 0.0
        for c in range(classes):
            zs += grad[n, c]
            zt += q[c]
            dot += q[c] * (np.float64(t[n, c]) - np.float64(x[n, c]))
        # KL(q || p) = sum_c q_c (t_c - s_c) / T - (max t - max s) / T + log(zs / zt): 0
        # where s = t (zs / zt, within [1/C, C], rather than log zs - log zt, which the
        # compiler may round apart)
        total += wn * ((dot / zt - (np.float64(mt) - np.float64(ms))) / temperature
                       + _log(zs / zt))
        valid += wn
        typed[1] = wn * temperature / zs
        typed[2] = zs / zt
        f, r = typed[1], typed[2]
        for c in range(classes):  # T (p - q) = T / zs (e_s - e_t zs / zt): 0 where s = t
            grad[n, c] = (grad[n, c] - q[c] * r) * f
    total *= temperature * temperature
    return math.isfinite(total), total, valid


@jit.kernel
def _softmax_planes(x, t, w, typed, temperature, part, acc, q, grad):
    """The softmax form on (outer, C, inner) scores, in blocks of locations along the
    contiguous inner axis: ok, KL sum, counted locations; the gradient into ``grad``.
    ``w``: (outer, 1, inner) or (1, 1, 1); ``part`` and ``acc``: per location of a block
    (rows named above); ``q``: the teacher's exponentials of a block."""
    outer, classes, inner = x.shape
    per_outer, per_inner = w.shape[0] > 1, w.shape[2] > 1
    blk = q.shape[1]
    inv_t = typed[0]
    total = valid = 0.0
    for n in range(outer):
        for i0 in range(0, inner, blk):
            m = min(blk, inner - i0)
            mu = np.uint64(m)  # unsigned indices: no negative-index fix
            x0, t0 = x[n, 0, i0:i0 + m], t[n, 0, i0:i0 + m]
            for i in range(mu):
                part[MAX_S + i] = x0[i]
                part[MAX_T + i] = t0[i]
                acc[SUM_S + i] = acc[SUM_T + i] = acc[DOT + i] = 0.0
            for c in range(1, classes):
                xc, tc = x[n, c, i0:i0 + m], t[n, c, i0:i0 + m]
                for i in range(mu):
                    part[MAX_S + i] = xc[i] if xc[i] > part[MAX_S + i] else part[MAX_S + i]
                    part[MAX_T + i] = tc[i] if tc[i] > part[MAX_T + i] else part[MAX_T + i]
            for c0 in range(0, classes, PLANE_CLASSES):
                for i in range(mu):
                    part[PART_S + i] = part[PART_T + i] = part[PART_DOT + i] = 0
                for c in range(c0, min(c0 + PLANE_CLASSES, classes)):
                    xc, tc = x[n, c, i0:i0 + m], t[n, c, i0:i0 + m]
                    gc, qc = grad[n, c, i0:i0 + m], q[c]
                    for i in range(mu):
                        gc[i] = _exp_as((xc[i] - part[MAX_S + i]) * inv_t)
                    for i in range(mu):
                        qc[i] = _exp_as((tc[i] - part[MAX_T + i]) * inv_t)
                    for i in range(mu):
                        part[PART_S + i] += gc[i]
                        part[PART_T + i] += qc[i]
                        part[PART_DOT + i] += qc[i] * (tc[i] - xc[i])
                for i in range(mu):
                    acc[SUM_S + i] += part[PART_S + i]
                    acc[SUM_T + i] += part[PART_T + i]
                    acc[DOT + i] += part[PART_DOT + i]
            wr = w[n if per_outer else 0, 0]
            for i in range(mu):  # per location, as in _softmax_rows
                wv = np.float64(wr[i0 + i if per_inner else 0])
                zs, zt = acc[SUM_S + i], acc[SUM_T + i]
                total += wv * ((acc[DOT + i] / zt - (np.float64(part[MAX_T + i])
                                                     - np.float64(part[MAX_S + i]))) / temperature
                               + _log(zs / zt))
                valid += wv
                part[FACTOR + i] = wv * temperature / zs
                part[RATIO + i] = zs / zt
            for c in range(classes):
                gc, qc = grad[n, c, i0:i0 + m], q[c]
                for i in range(mu):
                    gc[i] = (gc[i] - qc[i] * part[RATIO + i]) * part[FACTOR + i]
    total *= temperature * temperature
    return math.isfinite(total), total, valid


@jit.inline
def _sigmoid_row(x, t, w, r, typed, temperature, terms, grad):
    """Row r of the sigmoid form: its loss sum, with its gradient T (p - q) into grad[r]
    (times its weights). The exponentials and logs are made in loops of their own in the
    scores' precision, into ``terms``; the sums in float64."""
    cols = x.shape[1]
    inv_t, inv_t64 = typed[0], 1.0 / temperature
    per_element = w.shape[0] > 1
    for c in range(cols):
        v = _exp_as(-abs(x[r, c] * inv_t))
        terms[EXP_S, c] = v
        terms[LOG_S, c] = _log1p_as(v)
    for c in range(cols):
        v = _exp_as(-abs(t[r, c] * inv_t))
        terms[EXP_T, c] = v
        terms[LOG_T, c] = _log1p_as(v)
    total = 0.0
    for c in range(cols):
        s, u = np.float64(x[r, c]) * inv_t64, np.float64(t[r, c]) * inv_t64
        e_s, e_t = np.float64(terms[EXP_S, c]), np.float64(terms[EXP_T, c])
        p = (1.0 if s >= 0 else e_s) / (1.0 + e_s)
        q = (1.0 if u >= 0 else e_t) / (1.0 + e_t)
        softplus_s = (s if s > 0 else 0.0) + np.float64(terms[LOG_S, c])
        softplus_t = (u if u > 0 else 0.0) + np.float64(terms[LOG_T, c])
        wc = np.float64(w[r, c] if per_element else w[0, 0])
        total += wc * (softplus_s - softplus_t - q * (s - u))
        grad[r, c] = wc * temperature * (p - q)
    return total


@jit.kernel
def _sigmoid_rows(x, t, w, typed, temperature, terms, grad):
    """The sigmoid form on (N, C) scores: ok, loss sum, counted rows (with any element
    counted); the gradient into ``grad``. ``w``: (N, C) or (1, 1)."""
    rows, classes = x.shape
    total = valid = 0.0
    for n in range(rows):
        total += _sigmoid_row(x, t, w, n, typed, temperature, terms, grad)
        if w.shape[0] > 1:
            any_counted = False
            for c in range(classes):
                any_counted |= w[n, c] > 0
            valid += 1.0 if any_counted else 0.0
        else:
            valid += 1.0
    total *= temperature * temperature
    return math.isfinite(total), total, valid


@jit.kernel
def _sigmoid_planes(x, t, w, classes, typed, temperature, terms, counted, grad):
    """The sigmoid form on N x C x H x W scores as N * C rows of H * W elements: ok, loss
    sum, counted locations (with any element counted, over the C rows of a sample);
    ``counted`` takes a sample's largest weight per location."""
    rows, inner = x.shape
    total = valid = 0.0
    for n in range(rows // classes):
        for i in range(inner):
            counted[i] = 1.0 if w.shape[0] == 1 else 0.0
        for r in range(n * classes, (n + 1) * classes):
            total += _sigmoid_row(x, t, w, r, typed, temperature, terms, grad)
            if w.shape[0] > 1:
                for i in range(inner):
                    counted[i] = w[r, i] if w[r, i] > counted[i] else counted[i]
        for i in range(inner):
            valid += 1.0 if counted[i] > 0 else 0.0
    total *= temperature * temperature
    return math.isfinite(total), total, valid
