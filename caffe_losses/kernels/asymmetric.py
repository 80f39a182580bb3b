"""Kernels of the asymmetric loss (:mod:`caffe_losses.losses.asymmetric`), element-wise,
over rows.

One kernel. Per row, loops of their own make, in the scores' precision: exp(-|s|) and
log(1 + exp(-|s|)), as the sigmoid kernels do; q^gamma_pos = exp(-gamma_pos softplus(s))
where gamma_pos is not 0; and the negative term's loss and gradient factor, which hold
its logs, power and divisions. The element loop then combines them in float64 with one
division. The parameters act through numbers only (``margin_on`` is 0 or 1; x^0 =
exp(0 log x) = 1).
"""
import math

import numpy as np

from . import jit
from .jit import _exp_as, _log1p_as, _log_as
from .plan import Plan, element_rows, or_nan, per_column

# the rows of ``terms``, per column of a row: exp(-|s|), log(1 + exp(-|s|)), q^gamma_pos,
# the negative term's loss and its factor
EXPS, LOG1PS, FOCUS_POS, LOSS_NEG, FACTOR_NEG = range(5)
# the items of ``typed``: the parameters in the scores' dtype
MARGIN, MARGIN_ON, GAMMA_POS, GAMMA_NEG, TINY, ONE = range(6)


def plan(ws, dtype, gamma_pos, gamma_neg, margin, focal_grad, class_weight, ignore_label):
    """The kernel for scores of work shape ``ws`` (rows as in
    :func:`caffe_losses.kernels.sigmoid.plan`); ``margin``: the clip m of p_m."""
    rows = element_rows(ws)
    if len(ws) == 3 and np.ndim(class_weight):
        return None
    typed = np.empty(6, dtype)
    typed[[MARGIN, MARGIN_ON, GAMMA_POS, GAMMA_NEG, TINY, ONE]] = (
        margin, margin != 0, gamma_pos, gamma_neg, np.finfo(dtype).tiny, 1)
    return Plan(_rows, ws, labels=rows, scores=rows, dtype=dtype,
                class_weights=per_column(class_weight, rows[1]), gamma_pos=float(gamma_pos),
                focal_grad=bool(focal_grad), ignore=or_nan(ignore_label), typed=typed,
                terms=np.ones((5, rows[1]), dtype), grad=np.empty(rows, dtype))


@jit.inline
def _negative_term(s, e, log1p_e, margin, margin_on, gamma_neg, focal, one, tiny):
    """The negative term of one element in the scores' dtype: (-p_m^gamma_neg log(1 -
    p_m), its derivative over p) (both 0 where p_m = 0)."""
    inv = one / (one + e)
    p = (one if s >= 0 else e) * inv
    q = (e if s >= 0 else one) * inv
    shift = p - margin
    on = one if shift > 0 else 0 * s
    p_m = on * shift    # (a product, and max() below, rather than a select of p - margin)
    # log(1 - p_m): log(q + margin) with a margin (0 where p_m = 0), else -softplus(s)
    log_1m_pm = margin_on * on * _log_as(q + margin) - (one - margin_on) * (
        (s if s > 0 else 0 * s) + log1p_e)
    r = -log_1m_pm / (p_m + (one - on))                   # -log(1 - p_m) / p_m
    focus = _exp_as(gamma_neg * _log_as(max(shift, tiny)))
    return -focus * log_1m_pm, on * focus * (q / (q + margin) + focal * gamma_neg * q * r)


@jit.inline
def _element(s, e, log1p_e, focus_pos, loss_neg, d_neg, label, wv, ac, gamma_pos, focal,
             ignore):
    """(loss, gradient, counted weight, positive weight, bad) of one element, given
    e = exp(-|s|), log(1 + e), q^gamma_pos and the negative term's loss and factor.
    Selects only: an ignored element gets weight 0 (a NaN score stays NaN, as in the
    reference); ``bad`` flags a label outside [0, 1] or a negative (or NaN) weight."""
    ignored = label == ignore
    bad = (not ignored) & (not ((label >= 0) & (label <= 1))) | (not wv >= 0)
    label = 0.0 if ignored else np.float64(label)
    wv = 0.0 if ignored else np.float64(wv)
    s, e, log1p_e = np.float64(s), np.float64(e), np.float64(log1p_e)
    softplus_neg = (-s if s < 0 else 0.0) + log1p_e       # -log p
    inv = 1.0 / (1.0 + e)
    p = (1.0 if s >= 0 else e) * inv
    q = (e if s >= 0 else 1.0) * inv
    focus_pos = np.float64(focus_pos)
    loss = label * focus_pos * softplus_neg + (1.0 - label) * np.float64(loss_neg)
    g_pos = focus_pos * (-q - focal * gamma_pos * p * softplus_neg)
    grad = label * g_pos + (1.0 - label) * p * np.float64(d_neg)
    f = wv * ac
    return f * loss, f * grad, wv, label * wv, bad


@jit.kernel
def _rows(x, y, w, class_weights, gamma_pos, focal_grad, ignore, typed, terms, grad):
    """On (rows, cols) arrays: ok, loss sum, valid sum, positive label sum; the gradient
    into ``grad``. ``w`` is (rows, cols), (rows, 1) or (1, 1); ``class_weights`` holds one
    value per column; no ignore label is NaN, which equals no label. ``terms`` (6 x cols,
    the scores' dtype) takes a row's terms (its row of q^gamma_pos holds ones when
    gamma_pos is 0); ``typed`` the parameters in that dtype. The weights go into the
    gradient row first, which the element loop reads and overwrites."""
    rows, cols = x.shape
    per_element, per_row = w.shape[1] > 1, w.shape[0] > 1
    focal = 1.0 if focal_grad else 0.0
    total = valid = positives = 0.0
    bad = False
    exps, log1ps, focus_pos = terms[EXPS], terms[LOG1PS], terms[FOCUS_POS]
    loss_neg, factor_neg = terms[LOSS_NEG], terms[FACTOR_NEG]
    margin, margin_on, one, tiny = typed[MARGIN], typed[MARGIN_ON], typed[ONE], typed[TINY]
    gp, gn = typed[GAMMA_POS], typed[GAMMA_NEG]
    focal_t = one if focal_grad else 0 * one
    for n in range(rows):
        xr, yr, gr = x[n], y[n], grad[n]
        for c in range(cols):
            v = _exp_as(-abs(xr[c]))
            exps[c] = v
            log1ps[c] = _log1p_as(v)
        if gamma_pos != 0.0:
            for c in range(cols):
                v = xr[c]
                focus_pos[c] = _exp_as(-gp * ((v if v > 0 else 0 * v) + log1ps[c]))
        for c in range(cols):
            loss_neg[c], factor_neg[c] = _negative_term(xr[c], exps[c], log1ps[c], margin,
                                                        margin_on, gn, focal_t, one, tiny)
        if per_element:
            for c in range(cols):
                gr[c] = w[n, c]
        else:
            wn = w[n, 0] if per_row else w[0, 0]
            for c in range(cols):
                gr[c] = wn
        for c in range(cols):
            loss, g, counted, pos, wrong = _element(
                xr[c], exps[c], log1ps[c], focus_pos[c], loss_neg[c], factor_neg[c], yr[c],
                gr[c], class_weights[c], gamma_pos, focal, ignore)
            total += loss
            gr[c] = g
            valid += counted
            positives += pos
            bad |= wrong
    return not bad and math.isfinite(total), total, valid, positives
