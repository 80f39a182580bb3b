r"""Sigmoid losses, element-wise: binary cross-entropy with logits and the focal loss.

For each element with score :math:`s`, label :math:`y \in [0, 1]`, :math:`p = \sigma(s)`,
positive weight :math:`r_c` (``pos_weight``) and class weight :math:`a_c`
(``class_weight``), both one number or one per class:

.. math::

    \mathrm{CE} = -r_c\, y \log p - (1-y) \log(1-p), \qquad
    \ell = a_c\, \alpha_t\, (1 - p_t)^\gamma\, \mathrm{CE},

    p_t = p y + (1-p)(1-y), \qquad \alpha_t = \alpha y + (1-\alpha)(1-y)

(Lin et al., 2017; torchvision's ``sigmoid_focal_loss``), with ``alpha=None`` meaning
:math:`\alpha_t = 1`. Sigmoid cross-entropy is the case :math:`\gamma = 0`,
``alpha=None``: Caffe's ``SigmoidCrossEntropyLoss`` and PyTorch's
``BCEWithLogitsLoss(weight=a, pos_weight=r)``. The gradient, with
:math:`\partial(1-p_t)/\partial s = (1-2y)\, p (1-p)`:

.. math::

    \frac{\partial \ell}{\partial s} = a_c \alpha_t (1-p_t)^{\gamma-1}
    \left[(1-p_t)\,\bigl(p\,(1 - y + r_c y) - r_c y\bigr)
          + \gamma (1-2y)\, p (1-p)\, \mathrm{CE}\right]

Poly-1 (Leng et al., ICLR 2022) adds :math:`\varepsilon\, a_c \alpha_t (1-p_t)^{\gamma+1}`
per element (``poly_eps`` :math:`\varepsilon`, default 0), whose gradient is
:math:`\varepsilon\, a_c \alpha_t (\gamma+1)(1-p_t)^\gamma (1-2y)\, p(1-p)`.

Elements whose label is ``ignore_label`` are skipped. Normalization defaults to
``"batch_size"`` as in Caffe; ``"valid"`` counts the elements not ignored (times their
weights; class and positive weights do not enter it, as in PyTorch's mean);
``"positive"`` (the focal loss's RetinaNet convention) divides by the sum of the
positive labels (times the weights), at least 1.
"""
import math

import numpy as np

from .. import jit
from ..core import FOCAL_BASE_MIN, ElementLoss, kernel_per_class, per_class, times
from ..jit import _exp_as, _log1p_as, _log_as
from ..params import AXIS, GAMMA, IGNORE_LABEL, Layer, Param, normalization, number, per_class_param


def sigmoid_focal_reference(s, y, r=None, a=None, gamma=2.0, alpha=0.25, poly_eps=0.0):
    """The formula above in numpy: per-element loss and gradient (before weights and
    normalization). ``r`` and ``a`` broadcast against the scores, or are None."""
    # softplus(s) = -log(1 - p) = max(s, 0) + log(1 + exp(-|s|)), finite for every finite s;
    # log(1 + e) rather than log1p(e): they differ by one rounding of 1 + e, below the
    # dtype's epsilon per element, and numpy's log1p has no SIMD loop
    softplus = np.maximum(s, 0) + np.log(1 + np.exp(-np.abs(s)))
    p = np.exp(s - softplus)
    ry = times(y, r)
    ce = ry * (softplus - s) + (1 - y) * softplus
    d_ce = p * (1 - y + ry) - ry
    if gamma:
        rest = p + y * (1 - 2 * p)          # 1 - p_t
        power = np.maximum(rest, FOCAL_BASE_MIN) ** (gamma - 1)
        d_ce = power * (rest * d_ce + gamma * (1 - 2 * y) * p * (1 - p) * ce)
        ce = power * rest * ce
    if poly_eps:                            # + eps (1 - p_t)^(gamma + 1)
        rest = p + y * (1 - 2 * p)
        ce = ce + poly_eps * rest ** (gamma + 1)
        d_ce = d_ce + poly_eps * (gamma + 1) * rest ** gamma * (1 - 2 * y) * p * (1 - p)
    if alpha is not None:
        alpha_t = alpha * y + (1 - alpha) * (1 - y)
        ce, d_ce = ce * alpha_t, d_ce * alpha_t
    return times(ce, a), times(d_ce, a)


class SigmoidFocal(ElementLoss):
    """Sigmoid focal loss; with ``gamma=0``, ``alpha=None``: binary cross-entropy with logits.

    Per-class arrays: ``pos_weight`` and ``class_weight`` (see :class:`ElementLoss` for
    the blobs the kernel takes).
    """

    def __init__(self, *, axis=1, ignore_label=None, gamma=2.0, alpha=0.25, pos_weight=None,
                 class_weight=None, normalization="batch_size", poly_eps=0.0):
        ElementLoss.__init__(self, axis, normalization)
        self.poly_eps = poly_eps
        self.ignore_label = ignore_label
        self.gamma = gamma
        self.alpha = alpha
        self.pos_weight = pos_weight
        self.class_weight = class_weight

    def on_new_shape(self):
        self.r = per_class(self.pos_weight, self.ws, "pos_weight", self.dtype)
        self.a = per_class(self.class_weight, self.ws, "class_weight", self.dtype)
        self.set_rows(isinstance(self.r, np.ndarray) or isinstance(self.a, np.ndarray))
        if self.use_jit:
            self.kernel_r = kernel_per_class(self.r, self.rows[1])
            self.kernel_a = kernel_per_class(self.a, self.rows[1])
            self.kernel_alpha = (1.0, 1.0) if self.alpha is None else (self.alpha, 1 - self.alpha)
            self.focal_kernel = KERNELS[focus_of(self.gamma)]
            self.terms = self.work.get("terms", (3, self.rows[1]), self.dtype)

    def element_reference(self, x, y):
        return sigmoid_focal_reference(x, y, self.r, self.a, self.gamma, self.alpha,
                                       self.poly_eps)

    def kernel_call(self):
        return self.focal_kernel, (self.kernel_r, self.kernel_a, float(self.gamma),
                                   float(self.poly_eps), *self.kernel_alpha,
                                   jit.ignore_value(self.ignore_label), self.terms)


class SigmoidCrossEntropy(SigmoidFocal):
    """Binary cross-entropy with logits: :class:`SigmoidFocal` without the focal terms."""

    def __init__(self, *, axis=1, ignore_label=None, pos_weight=None, class_weight=None,
                 normalization="batch_size", poly_eps=0.0):
        SigmoidFocal.__init__(self, axis=axis, ignore_label=ignore_label, gamma=0.0, alpha=None,
                              pos_weight=pos_weight, class_weight=class_weight,
                              normalization=normalization, poly_eps=poly_eps)


def sigmoid_cross_entropy(scores, labels, weights=None, **params):
    """Binary cross-entropy with logits (see the module docstring); returns ``(loss, grad)``.
    ``params``: the keyword arguments of :class:`SigmoidCrossEntropy`."""
    return SigmoidCrossEntropy(**params)(scores, labels, weights)


def sigmoid_focal_loss(scores, labels, weights=None, **params):
    """Sigmoid focal loss (see the module docstring); returns ``(loss, grad)``.
    ``params``: the keyword arguments of :class:`SigmoidFocal`."""
    return SigmoidFocal(**params)(scores, labels, weights)


# -- the kernel family --------------------------------------------------------------

def focus_of(gamma):
    """Which of :data:`KERNELS` a gamma takes: 0 (no focal term), 1, 2 (no power
    needed) or 3 (any other gamma)."""
    return {0.0: 0, 1.0: 1, 2.0: 2}.get(float(gamma), 3)


# One kernel per kind of focal term (see :func:`focus_of`), each a module-level function
# that calls the shared row loops, :func:`_rows`, with its kind as a constant: numba
# compiles _rows once per constant (the constant is its argument's type), so the
# compiler drops the other kinds' code and no branch on the kind stays inside the loop.
# Module-level functions rather than closures made by a factory: numba loads them from
# its disk cache in a new process, whereas it compiles a closure again in every process
# (seconds per kernel; the compile also moves C's rand(), which Caffe's HDF5Data
# shuffles with, so two trainings with the same seed would differ).

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
    e = exp(-|s|), log(1 + e) and, for focus 3, ``power`` = :func:`_focal_power`. Nothing
    branches on the data, so that the loop over
    a row runs on SIMD units: an ignored element gets weight 0 (which keeps a NaN
    score NaN, as the reference does); ``bad`` flags a label outside [0, 1] or a
    negative (or NaN) weight. ``focus`` (see :func:`focus_of`) is a constant of the
    kernel, so the branches on it are gone once it is compiled."""
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
def _rows(focus, x, y, w, r, a, gamma, poly, alpha_pos, alpha_neg, ignore, terms, g):
    """On (rows, cols) arrays: status, loss sum, valid sum, positive label sum; the
    gradient into g. ``focus`` is the kind of focal term, a constant of each kernel
    below. ``w`` is (rows, cols), (rows, 1) or (1, 1) (no weights); ``r`` and ``a``
    hold one value per column; no alpha is alpha_pos = alpha_neg = 1; no ignore label is
    NaN, which equals no label. ``terms`` (3 x cols, in the scores' dtype) takes a row's
    exp(-|s|) and log(1 + exp(-|s|)), made in a loop of their own in the scores'
    precision: on SIMD units, and apart from the long loop below; for focus 3, also its
    powers (1 - p_t)^(gamma - 1), in a loop of their own for the same reason (an exp and
    a log in the element loop kept it off the SIMD units)."""
    rows, cols = x.shape
    per_element, per_row = w.shape[1] > 1, w.shape[0] > 1
    total = valid = positives = 0.0
    bad = False
    te, tl, tp = terms[0], terms[1], terms[2]
    for n in range(rows):
        xr = x[n]
        for c in range(cols):
            v = _exp_as(-abs(xr[c]))
            te[c] = v
            tl[c] = _log1p_as(v)
        if focus == 3:
            for c in range(cols):
                tp[c] = _focal_power(xr[c], te[c], y[n, c], ignore, gamma)
        # two copies of the row loop, so that neither indexes the weights through a
        # run-time switch (which kept it off the SIMD units)
        if per_element:
            for c in range(cols):
                loss, grad, counted, pos, wrong = _element(
                    focus, xr[c], te[c], tl[c], tp[c], y[n, c], w[n, c], r[c], a[c], gamma,
                    poly, alpha_pos, alpha_neg, ignore)
                total += loss
                g[n, c] = grad
                valid += counted
                positives += pos
                bad |= wrong
        else:
            wn = w[n, 0] if per_row else w[0, 0]
            for c in range(cols):
                loss, grad, counted, pos, wrong = _element(
                    focus, xr[c], te[c], tl[c], tp[c], y[n, c], wn, r[c], a[c], gamma,
                    poly, alpha_pos, alpha_neg, ignore)
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


@jit.kernel
def _rows_no_focus(x, y, w, r, a, gamma, poly, alpha_pos, alpha_neg, ignore, terms, g):
    """:func:`_rows` for gamma = 0 (no focal term)."""
    return _rows(0, x, y, w, r, a, gamma, poly, alpha_pos, alpha_neg, ignore, terms, g)


@jit.kernel
def _rows_gamma1(x, y, w, r, a, gamma, poly, alpha_pos, alpha_neg, ignore, terms, g):
    """:func:`_rows` for gamma = 1."""
    return _rows(1, x, y, w, r, a, gamma, poly, alpha_pos, alpha_neg, ignore, terms, g)


@jit.kernel
def _rows_gamma2(x, y, w, r, a, gamma, poly, alpha_pos, alpha_neg, ignore, terms, g):
    """:func:`_rows` for gamma = 2."""
    return _rows(2, x, y, w, r, a, gamma, poly, alpha_pos, alpha_neg, ignore, terms, g)


@jit.kernel
def _rows_any_gamma(x, y, w, r, a, gamma, poly, alpha_pos, alpha_neg, ignore, terms, g):
    """:func:`_rows` for any other gamma (a power by exp and log)."""
    return _rows(3, x, y, w, r, a, gamma, poly, alpha_pos, alpha_neg, ignore, terms, g)


KERNELS = [_rows_no_focus, _rows_gamma1, _rows_gamma2, _rows_any_gamma]


# -- the layers ---------------------------------------------------------------------

POS_WEIGHT = per_class_param("weight of the positive term")
CLASS_WEIGHT = per_class_param("weight of every term of a class")
POLY_EPS = Param(0.0, number(), "Poly-1 epsilon: weight of the added (1 - p_t)^(gamma + 1)")

LAYERS = [
    Layer("SigmoidCrossEntropyLoss", SigmoidCrossEntropy, labels="dense", deploy="Sigmoid",
          counted="element", per_element_weights=True, params={
              "axis": AXIS,
              "ignore_label": IGNORE_LABEL,
              "pos_weight": POS_WEIGHT,
              "class_weight": CLASS_WEIGHT,
              "normalization": normalization("batch_size"),
              "poly_eps": POLY_EPS,
          }),
    Layer("SigmoidFocalLoss", SigmoidFocal, labels="dense", deploy="Sigmoid",
          counted="element", per_element_weights=True, params={
              "axis": AXIS,
              "gamma": GAMMA,
              "alpha": Param(0.25, number(minimum=0, maximum=1, allow_none=True),
                             "weight of the positive class in [0, 1], or None for none"),
              "ignore_label": IGNORE_LABEL,
              "pos_weight": POS_WEIGHT,
              "class_weight": CLASS_WEIGHT,
              "normalization": normalization("batch_size", extra=("positive",)),
              "poly_eps": POLY_EPS,
          }),
]
