r"""Asymmetric loss (Ben-Baruch, Ridnik et al., ICCV 2021), element-wise on sigmoid scores.

For each element with score :math:`s`, label :math:`y \in [0, 1]`, :math:`p = \sigma(s)`,
the shifted probability :math:`p_m = \max(p - m, 0)` (``clip`` :math:`m`; 0 turns it
off) and class weight :math:`a_c` (``class_weight``, one number or one per class):

.. math::

    \ell = -a_c \left[ y\, (1-p)^{\gamma_+} \log p
                     + (1-y)\, p_m^{\gamma_-} \log(1 - p_m) \right]

(``gamma_pos`` :math:`\gamma_+`, ``gamma_neg`` :math:`\gamma_-`). Soft labels use the
formula as written. With :math:`\gamma_\pm = 0` and :math:`m = 0` it is binary
cross-entropy with logits. The gradient, with :math:`q = 1 - p`,
:math:`\mathrm{d}p/\mathrm{d}s = p q` and
:math:`r = -\log(1 - p_m) / p_m` (which tends to 1 as :math:`p_m \to 0`):

.. math::

    \frac{\partial \ell}{\partial s} = a_c \left[
        y\, q^{\gamma_+} \bigl(\gamma_+ p \log p - q\bigr)
      + (1-y)\, [p_m > 0]\; p_m^{\gamma_-}\, p \left(\frac{q}{1 - p_m} + \gamma_- q\, r\right)
    \right]

``focal_grad=True`` (default) is this exact gradient. ``focal_grad=False`` holds the
focusing weights :math:`q^{\gamma_+}` and :math:`p_m^{\gamma_-}` constant in backward
(the terms with :math:`\gamma_\pm` drop out of the bracket), as the paper's code trains
by default (``disable_torch_grad_focal_loss``); the loss value is the same.

Every finite score gives a finite loss and gradient: :math:`\log p = -\mathrm{softplus}(-s)`,
:math:`\log(1 - p) = -\mathrm{softplus}(s)`, and with a clip, where :math:`p_m > 0`,
:math:`1 - p_m = q + m \ge m` (taken in that form: it keeps the digits of a :math:`p_m`
near 1).

Elements whose label is ``ignore_label`` are skipped. Weights (a third bottom) hold one
value per sample, location or element. Normalization defaults to ``"batch_size"``;
``"valid"`` counts the elements not ignored (times their weights), ``"full"`` every
element, ``"positive"`` the sum of the positive labels (times the weights), at least 1.
"""
import math

import numpy as np

from .. import jit
from ..core import ElementLoss, kernel_per_class, per_class, times
from ..jit import _exp_as, _log1p_as, _log_as
from ..params import (AXIS, IGNORE_LABEL, Layer, Param, boolean, normalization, number,
                      per_class_param)

def asymmetric_reference(s, y, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, focal_grad=True, a=None):
    """The formula above in numpy: per-element loss and gradient (before weights and
    normalization). ``a`` broadcasts against the scores, or is None."""
    softplus_pos = np.maximum(s, 0) + np.log(1 + np.exp(-np.abs(s)))  # -log(1 - p)
    softplus_neg = softplus_pos - s                                     # -log p
    p, q = np.exp(-softplus_neg), np.exp(-softplus_pos)
    p_m = np.maximum(p - clip, 0)
    shifted = p_m > 0
    if clip:
        log_1m_pm = np.where(shifted, np.log(q + clip), 0)  # 1 - p_m = q + clip
        q_share = q / (q + clip)                             # q / (1 - p_m) where p_m > 0
    else:
        log_1m_pm, q_share = -softplus_pos, 1.0
    focus_pos, focus_neg = q ** gamma_pos, p_m ** gamma_neg
    loss = y * focus_pos * softplus_neg - (1 - y) * focus_neg * log_1m_pm
    r = np.divide(-log_1m_pm, p_m, out=np.ones_like(p_m), where=shifted)
    g_pos = -q - (gamma_pos * p * softplus_neg if focal_grad else 0)
    g_neg = p * (q_share + (gamma_neg * q * r if focal_grad else 0))
    grad = y * focus_pos * g_pos + (1 - y) * np.where(shifted, focus_neg * g_neg, 0)
    return times(loss, a), times(grad, a)


class Asymmetric(ElementLoss):
    """Asymmetric loss (see the module docstring). Per-class array: ``class_weight`` (see
    :class:`ElementLoss` for the blobs the kernel takes)."""

    def __init__(self, *, axis=1, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, ignore_label=None,
                 class_weight=None, normalization="batch_size", focal_grad=True):
        ElementLoss.__init__(self, axis, normalization)
        self.gamma_pos = gamma_pos
        self.gamma_neg = gamma_neg
        self.clip = clip
        self.ignore_label = ignore_label
        self.class_weight = class_weight
        self.focal_grad = focal_grad

    def on_new_shape(self):
        self.a = per_class(self.class_weight, self.ws, "class_weight", self.dtype)
        self.set_rows(isinstance(self.a, np.ndarray))
        if self.use_jit:
            self.kernel_a = kernel_per_class(self.a, self.rows[1])
            # q^gamma_pos is 1 for gamma_pos = 0: its row is then not made per call
            self.terms = self.work.get("terms", (5, self.rows[1]), self.dtype)
            self.terms[...] = 1
            self.typed = np.array([self.clip, self.clip != 0, self.gamma_pos, self.gamma_neg,
                                   np.finfo(self.dtype).tiny, 1], self.dtype)

    def element_reference(self, x, y):
        return asymmetric_reference(x, y, self.gamma_pos, self.gamma_neg, self.clip,
                                    self.focal_grad, self.a)

    def kernel_call(self):
        return _rows, (self.kernel_a, float(self.gamma_pos), bool(self.focal_grad),
                       jit.ignore_value(self.ignore_label), self.typed, self.terms)


def asymmetric_loss(scores, labels, weights=None, **params):
    """Asymmetric loss (see the module docstring); returns ``(loss, grad)``.
    ``params``: the keyword arguments of :class:`Asymmetric`."""
    return Asymmetric(**params)(scores, labels, weights)


# -- the kernel family --------------------------------------------------------------
# One kernel. Per row, loops of their own make in the scores' precision (on SIMD units,
# 16 float32 to a register): exp(-|s|) and log(1 + exp(-|s|)), as the sigmoid kernel
# does; q^gamma_pos = exp(-gamma_pos softplus(s)) where gamma_pos is not 0; and the
# negative term's loss and gradient factor, which hold its logs, power and divisions.
# The element loop then combines them in float64 with one division. In these loops the
# parameters act through numbers only (clip_on is 0 or 1, x^0 = exp(0 log x) = 1) and
# a choice on the data is a select of two cheap values or a product with 0 or 1: a
# branch, even a uniform one, or a select of a costly value (which the compiler turns
# into a branch) kept them off the SIMD units.

@jit.inline
def _negative_term(s, e, log1p_e, clip, clip_on, gamma_neg, focal, one, tiny):
    """The negative term of one element in the scores' dtype: (-p_m^gamma_neg log(1 -
    p_m), its derivative over p) (both 0 where p_m = 0)."""
    inv = one / (one + e)
    p = (one if s >= 0 else e) * inv
    q = (e if s >= 0 else one) * inv
    shift = p - clip
    on = one if shift > 0 else 0 * s
    p_m = on * shift    # (a product, and max() below: "p - clip if p > clip" was slow)
    # log(1 - p_m): log(q + clip) with a clip (0 where p_m = 0), else -softplus(s)
    log_1m_pm = clip_on * on * _log_as(q + clip) - (one - clip_on) * ((s if s > 0 else 0 * s)
                                                                       + log1p_e)
    r = -log_1m_pm / (p_m + (one - on))                   # -log(1 - p_m) / p_m
    focus = _exp_as(gamma_neg * _log_as(max(shift, tiny)))
    return -focus * log_1m_pm, on * focus * (q / (q + clip) + focal * gamma_neg * q * r)


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
def _rows(x, y, w, a, gamma_pos, focal_grad, ignore, typed, terms, g):
    """On (rows, cols) arrays: status, loss sum, valid sum, positive label sum; the
    gradient into g. ``w`` is (rows, cols), (rows, 1) or (1, 1) (no weights); ``a`` holds
    one value per column; no ignore label is NaN, which equals no label. ``terms`` (5 x
    cols, the scores' dtype) takes a row's terms (its row of q^gamma_pos holds ones when
    gamma_pos is 0); ``typed`` holds clip, 0 or 1 (no clip or a clip), gamma_pos,
    gamma_neg, the dtype's smallest normal number and 1, in that dtype."""
    rows, cols = x.shape
    per_element, per_row = w.shape[1] > 1, w.shape[0] > 1
    focal = 1.0 if focal_grad else 0.0
    total = valid = positives = 0.0
    bad = False
    te, tl, tp, tn, td = terms[0], terms[1], terms[2], terms[3], terms[4]
    clip, clip_on, gp, gn, tiny, one = typed[0], typed[1], typed[2], typed[3], typed[4], typed[5]
    focal_t = one if focal_grad else 0 * one
    for n in range(rows):
        xr = x[n]
        for c in range(cols):
            v = _exp_as(-abs(xr[c]))
            te[c] = v
            tl[c] = _log1p_as(v)
        if gamma_pos != 0.0:
            for c in range(cols):
                v = xr[c]
                tp[c] = _exp_as(-gp * ((v if v > 0 else 0 * v) + tl[c]))
        for c in range(cols):
            tn[c], td[c] = _negative_term(xr[c], te[c], tl[c], clip, clip_on, gn, focal_t,
                                          one, tiny)
        # two copies of the row loop, so that neither indexes the weights through a
        # run-time switch (which kept it off the SIMD units)
        if per_element:
            for c in range(cols):
                loss, grad, counted, pos, wrong = _element(
                    xr[c], te[c], tl[c], tp[c], tn[c], td[c], y[n, c], w[n, c], a[c],
                    gamma_pos, focal, ignore)
                total += loss
                g[n, c] = grad
                valid += counted
                positives += pos
                bad |= wrong
        else:
            wn = w[n, 0] if per_row else w[0, 0]
            for c in range(cols):
                loss, grad, counted, pos, wrong = _element(
                    xr[c], te[c], tl[c], tp[c], tn[c], td[c], y[n, c], wn, a[c],
                    gamma_pos, focal, ignore)
                total += loss
                g[n, c] = grad
                valid += counted
                positives += pos
                bad |= wrong
    if bad:
        return jit.BAD_LABEL, 0.0, 0.0, 0.0
    if not math.isfinite(total):
        return jit.NOT_FINITE, 0.0, 0.0, 0.0
    return jit.OK, total, valid, positives


# -- the layers ---------------------------------------------------------------------

LAYERS = [
    Layer("AsymmetricLoss", Asymmetric, labels="dense", deploy="Sigmoid",
          counted="element", per_element_weights=True, params={
              "axis": AXIS,
              "gamma_pos": Param(0.0, number(minimum=0), "focusing exponent of the positives"),
              "gamma_neg": Param(4.0, number(minimum=0), "focusing exponent of the negatives"),
              "clip": Param(0.05, number(minimum=0, maximum=1),
                            "probability margin m of the negatives, p_m = max(p - m, 0); 0: off"),
              "ignore_label": IGNORE_LABEL,
              "class_weight": per_class_param("weight of every term of a class"),
              "normalization": normalization("batch_size", extra=("positive",)),
              "focal_grad": Param(True, boolean(),
                                  "false: the focusing weights are constants in backward"),
          }),
]
