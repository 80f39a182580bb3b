"""Kernels of the sigmoid losses (:mod:`caffe_losses.losses.sigmoid`): sigmoid cross-entropy
and the sigmoid focal loss, element-wise, over rows.

One loop over rows, :func:`_rows`, specialized per focal term: ``focus`` 0 (gamma 0, no
focal term), 1 and 2 (gamma 1 and 2: the power without exp or log) or 3 (any other gamma,
a power by exp and log). :func:`plan` picks the kernel from gamma: the four kernels are
module-level functions that call the loop with their focus as a constant, so that numba
compiles the loop once per focus, the other focuses' code gone.
"""
import math

import numpy as np

from ..core import FOCAL_BASE_MIN
from . import jit
from .jit import _exp_as, _log1p_as, _log_as
from .plan import Plan, element_rows, or_nan, per_column

# the rows of ``terms``: per column of a row, exp(-|s|), log(1 + exp(-|s|)) and the focal
# power (focus 3)
EXPS, LOG1PS, POWERS = 0, 1, 2


def plan(ws, dtype, gamma, balance, pos_weight, class_weight, poly, ignore_label):
    """The kernel for scores of work shape ``ws``: rows of an ``(N, C)`` blob as they are,
    or the ``N * C`` rows of ``H * W`` elements of an N x C x H x W one (there, every
    element of a row is one class: no per-class arrays, and weights per element only).
    ``balance``: the alpha of the focal loss, or None."""
    rows = element_rows(ws)
    if len(ws) == 3 and (np.ndim(pos_weight) or np.ndim(class_weight)):
        return None
    kernel = {0.0: _rows_gamma0, 1.0: _rows_gamma1, 2.0: _rows_gamma2}.get(gamma, _rows_any_gamma)
    return Plan(kernel, ws, labels=rows, scores=rows, dtype=dtype,
                pos_weights=per_column(pos_weight, rows[1]),
                class_weights=per_column(class_weight, rows[1]), gamma=float(gamma),
                poly=float(poly), balance=or_nan(balance),
                ignore=or_nan(ignore_label), terms=np.empty((3, rows[1]), dtype),
                grad=np.empty(rows, dtype))


@jit.inline
def _focal_power(s, e, label, ignore, gamma):
    """(1 - p_t)^(gamma - 1) of one element, given e = exp(-|s|), for a gamma other than
    0, 1 and 2; an ignored element counts as label 0, so that its power stays finite."""
    e = np.float64(e)
    p = (1.0 if s >= 0 else e) / (1.0 + e)
    y = 0.0 if label == ignore else np.float64(label)
    rest = p + y * (1.0 - 2.0 * p)
    return _exp_as((gamma - 1.0) * _log_as(max(rest, FOCAL_BASE_MIN)))


@jit.inline
def _element(focus, s, e, log1p_e, power, label, wv, rc, ac, gamma, poly, alpha_pos,
             alpha_neg, ignore):
    """(loss, gradient, counted weight, positive weight, bad) of one element, given
    e = exp(-|s|), log(1 + e) and, for focus 3, ``power`` = :func:`_focal_power`. An
    ignored element gets weight 0 (which keeps a NaN score NaN, as the reference does);
    ``bad`` flags a label outside [0, 1] or a negative (or NaN) weight."""
    ignored = label == ignore
    bad = (not ignored) & (not ((label >= 0) & (label <= 1))) | (not wv >= 0)
    log1p_e = np.float64(log1p_e)
    label = 0.0 if ignored else np.float64(label)
    wv = 0.0 if ignored else np.float64(wv)
    e = np.float64(e)
    s = np.float64(s)
    softplus = (s if s > 0 else 0.0) + log1p_e
    p = (1.0 if s >= 0 else e) / (1.0 + e)
    ry = rc * label
    ce = ry * (softplus - s) + (1.0 - label) * softplus
    d_ce = p * (1.0 - label + ry) - ry
    rest = p + label * (1.0 - 2.0 * p)                  # 1 - p_t
    d_rest = (1.0 - 2.0 * label) * p * (1.0 - p)
    if focus:
        if focus == 2:
            power = rest
        elif focus == 1:
            power = 1.0
        else:
            power = np.float64(power)
        d_ce = power * (rest * d_ce + gamma * d_rest * ce)
        ce = power * rest * ce
        rest_gamma = power * rest                       # (1 - p_t)^gamma
    else:
        rest_gamma = 1.0
    ce += poly * rest_gamma * rest                      # Poly-1
    d_ce += poly * (gamma + 1.0) * rest_gamma * d_rest
    f = wv * ac * (alpha_pos * label + alpha_neg * (1.0 - label))
    return f * ce, f * d_ce, wv, label * wv, bad


@jit.kernel
def _rows(focus, x, y, w, pos_weights, class_weights, gamma, poly, balance, ignore, terms,
          grad):
    """On (rows, cols) arrays: ok, loss sum, valid sum, positive label sum; the gradient
    into ``grad``. ``w`` is (rows, cols), (rows, 1) or (1, 1); ``pos_weights`` and
    ``class_weights`` hold one value per column; ``balance`` is alpha, or NaN for none
    (alpha_t = 1); no ignore label is NaN, which equals no label. Per row, loops of their
    own fill ``terms`` (in the scores' dtype) with exp(-|s|), log(1 + exp(-|s|)) and, for
    focus 3, the powers, and the gradient row with the weights; the element loop then
    reads them and overwrites the gradient row."""
    rows, cols = x.shape
    per_element, per_row = w.shape[1] > 1, w.shape[0] > 1
    alpha_pos, alpha_neg = (1.0, 1.0) if balance != balance else (balance, 1.0 - balance)
    total = valid = positives = 0.0
    bad = False
    exps, log1ps, powers = terms[EXPS], terms[LOG1PS], terms[POWERS]
    for n in range(rows):  # (2-d indexing: numba 0.52 keeps loops over row views scalar)
        for c in range(cols):
            v = _exp_as(-abs(x[n, c]))
            exps[c] = v
            log1ps[c] = _log1p_as(v)
        if focus == 3:
            for c in range(cols):
                powers[c] = _focal_power(x[n, c], exps[c], y[n, c], ignore, gamma)
        # two copies of the element loop, so that neither indexes the weights through a
        # switch made at run time
        if per_element:
            for c in range(cols):
                loss, g, counted, pos, wrong = _element(
                    focus, x[n, c], exps[c], log1ps[c], powers[c], y[n, c], w[n, c],
                    pos_weights[c], class_weights[c], gamma, poly, alpha_pos, alpha_neg, ignore)
                total += loss
                grad[n, c] = g
                valid += counted
                positives += pos
                bad |= wrong
        else:
            wn = w[n, 0] if per_row else w[0, 0]
            for c in range(cols):
                loss, g, counted, pos, wrong = _element(
                    focus, x[n, c], exps[c], log1ps[c], powers[c], y[n, c], wn,
                    pos_weights[c], class_weights[c], gamma, poly, alpha_pos, alpha_neg, ignore)
                total += loss
                grad[n, c] = g
                valid += counted
                positives += pos
                bad |= wrong
    return not bad and math.isfinite(total), total, valid, positives


@jit.kernel
def _rows_gamma0(x, y, w, pos_weights, class_weights, gamma, poly, balance, ignore, terms,
                 grad):
    """:func:`_rows` for gamma 0: sigmoid cross-entropy (and its Poly-1 term)."""
    return _rows(0, x, y, w, pos_weights, class_weights, gamma, poly, balance, ignore, terms,
                 grad)


@jit.kernel
def _rows_gamma1(x, y, w, pos_weights, class_weights, gamma, poly, balance, ignore, terms,
                 grad):
    """:func:`_rows` for gamma 1, where (1 - p_t)^(gamma - 1) is 1."""
    return _rows(1, x, y, w, pos_weights, class_weights, gamma, poly, balance, ignore, terms,
                 grad)


@jit.kernel
def _rows_gamma2(x, y, w, pos_weights, class_weights, gamma, poly, balance, ignore,
                 terms, grad):
    """:func:`_rows` for gamma 2 (the default), where the power is 1 - p_t."""
    return _rows(2, x, y, w, pos_weights, class_weights, gamma, poly, balance, ignore,
                 terms, grad)


@jit.kernel
def _rows_any_gamma(x, y, w, pos_weights, class_weights, gamma, poly, balance, ignore, terms,
                    grad):
    """:func:`_rows` for any other gamma: the power by exp and log, in a loop of its own."""
    return _rows(3, x, y, w, pos_weights, class_weights, gamma, poly, balance, ignore, terms,
                 grad)
