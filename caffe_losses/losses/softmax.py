r"""Softmax losses with sparse labels: softmax cross-entropy and the softmax focal loss.

Each counted location has one class index :math:`y` (labels of shape ``N`` or
``N x 1 x H x W``, as Caffe's ``SoftmaxWithLoss``), :math:`p = \mathrm{softmax}(s)`.

**Softmax cross-entropy**, with class weights :math:`a_c` (default 1) and label
smoothing :math:`\varepsilon`, as PyTorch's ``CrossEntropyLoss(weight=a,
label_smoothing=eps)``:

.. math:: \ell = -\sum_c q_c \log p_c, \qquad
          q_c = \frac{\varepsilon}{C} a_c + (1-\varepsilon)\, a_y [c = y], \qquad
          \frac{\partial \ell}{\partial s_c} = Q p_c - q_c, \quad Q = \sum_c q_c

``"valid"`` normalization (the default, as ``SoftmaxWithLoss``) divides by the sum of
:math:`a_y` over the counted locations (times their weights): PyTorch's weighted mean.

**Softmax focal loss** (Lin et al., 2017, on a softmax), with ``alpha`` None (off), one
number or one per class:

.. math:: \ell = -\alpha_y (1 - p_y)^\gamma \log p_y, \qquad
          \frac{\partial \ell}{\partial s_c} = \alpha_y \left[(1-p_y)^\gamma
          - \gamma\, p_y (1-p_y)^{\gamma-1} \log p_y\right] (p_c - [c = y])

With ``gamma=0`` and ``alpha=None`` it is softmax cross-entropy.

**Poly-1** (Leng et al., ICLR 2022), ``poly_eps`` :math:`\varepsilon` (default 0), adds per
location :math:`\varepsilon a_y (1 - p_t)` to cross-entropy, with :math:`p_t = \sum_c q_c p_c`
for the label-smoothed target :math:`q` (:math:`p_y` without smoothing), and
:math:`\varepsilon \alpha_y (1 - p_y)^{\gamma+1}` to the focal loss. ``"valid"`` (default)
divides by the number of counted locations (or the sum of their weights); alpha does
not enter it. Locations whose label is ``ignore_label`` contribute nothing.
"""
import math

import numpy as np

from .. import jit
from ..core import (EXP_SUM_MAX, EXP_SUM_MIN, Loss, broadcast_weights,
                    check_nonnegative, kernel_per_class, location_shape, log_softmax,
                    masked_weights, per_class, sparse_index, times)
from ..jit import (PLANE_BLOCK, PLANE_CLASSES, _class_index, _exp_as, _log_as, _row_softmax,
                   _skip_row, _status, _weight)
from ..params import AXIS, GAMMA, IGNORE_LABEL, Layer, Param, normalization, number, per_class_param


def softmax_cross_entropy_reference(s, index, a=None, label_smoothing=0.0, poly_eps=0.0):
    """Cross-entropy in numpy on ``(outer, C[, inner])`` scores and per-location class
    indices ``index`` (shaped ``(outer, 1[, inner])``); ``a``: None or C class weights.
    Returns the loss per location, the gradient, and :math:`a_y` (None without ``a``)."""
    classes = s.shape[1]
    class_shape = (1, classes) + (1,) * (s.ndim - 2)
    a_c = np.ones(class_shape) if a is None else np.reshape(a, class_shape)
    a_y = None if a is None else np.take(np.reshape(a, -1), index)
    onehot = np.arange(classes).reshape(class_shape) == index
    q = label_smoothing / classes * a_c + onehot * ((1 - label_smoothing) * times(1.0, a_y))
    log_p = log_softmax(s)
    loss = -(q * log_p).sum(axis=1, keepdims=True)
    grad = q.sum(axis=1, keepdims=True) * np.exp(log_p) - q
    if poly_eps:  # + eps a_y (1 - p_t), p_t = sum_c q_c p_c = (1 - ls) p_y + ls / C
        p_y = np.exp(np.take_along_axis(log_p, index, axis=1))
        scale = poly_eps * times(1.0, a_y)
        loss = loss + scale * (1 - ((1 - label_smoothing) * p_y + label_smoothing / classes))
        grad = grad + scale * (1 - label_smoothing) * p_y * (np.exp(log_p) - onehot)
    return loss, grad, a_y


def softmax_focal_reference(s, index, alpha=None, gamma=2.0, poly_eps=0.0):
    """The focal loss in numpy, as :func:`softmax_cross_entropy_reference`; ``alpha``:
    None, a number, or C numbers. Returns the loss per location and the gradient."""
    log_p = log_softmax(s)
    log_p_y = np.minimum(np.take_along_axis(log_p, index, axis=1), 0)
    p_y = np.exp(log_p_y)
    rest = 1 - p_y
    # gamma p (1 - p)^(gamma - 1) log p = (1 - p)^gamma gamma p log(p) / (1 - p), and
    # log(p) / (1 - p) -> -1 as p -> 1: no infinite power where 1 - p rounds to 0
    ratio = np.divide(log_p_y, rest, out=np.full(rest.shape, -1.0, rest.dtype), where=rest > 0)
    modulation = rest ** gamma
    alpha_y = np.take(np.reshape(alpha, -1), index) if np.ndim(alpha) else alpha
    onehot = np.arange(s.shape[1]).reshape((1, -1) + (1,) * (s.ndim - 2)) == index
    loss = -modulation * log_p_y + poly_eps * modulation * rest          # + eps (1 - p_y)^(gamma+1)
    factor = modulation * (1 - gamma * p_y * ratio) + poly_eps * (gamma + 1) * modulation * p_y
    return times(loss, alpha_y), times(factor, alpha_y) * (np.exp(log_p) - onehot)


class SparseSoftmax(Loss):
    """What the two losses share: labels, weights, the reference's bookkeeping, and the
    kernels' buffers. A subclass sets ``KERNELS`` (its rows and planes kernels) and defines
    ``terms(x, index)``, its reference, returning the loss and gradient per location and
    what a location counts in ``"valid"`` (None: 1); and ``on_new_shape``, which sets
    ``kernel_a`` and ``kernel_param`` (the per-class array and the parameter of the
    kernels) and ``smoothing`` (whether they need sum_c a_c log p_c) before calling
    this class's."""

    def __init__(self, axis, ignore_label, normalization, poly_eps):
        Loss.__init__(self, axis, normalization)
        self.ignore_label = ignore_label
        self.poly_eps = poly_eps

    def on_new_shape(self):
        ws = self.ws
        self.typed_a = self.kernel_a.astype(self.dtype)
        if len(ws) == 3:
            self.part = self.work.get("part", (4 * PLANE_BLOCK,), self.dtype)
            self.acc = self.work.get("acc", (8 * PLANE_BLOCK,), np.float64)
            self.coefs = self.work.get("coefs", (3, ws[0], ws[2]), self.dtype)

    def reference(self, x, labels, weights):
        index, mask = sparse_index(labels, self.ws, self.ignore_label)
        w = broadcast_weights(weights, self.shape, self.axis)
        check_nonnegative("weights", w)
        w = masked_weights(w, mask, np.float64)
        loss, grad, counts = self.terms(x, index)
        self.grad[...] = times(grad, w)
        counts = np.ones(location_shape(self.ws)) if counts is None else counts
        valid = times(counts, w).sum(dtype=np.float64)
        return times(loss, w).sum(dtype=np.float64), self.locations, valid

    def kernel(self, x, labels, weights):
        w = broadcast_weights(weights, self.shape, self.axis)
        rows, planes = self.KERNELS
        args = (self.kernel_a, self.kernel_param, float(self.poly_eps), self.smoothing,
                jit.ignore_value(self.ignore_label))
        labels = np.asarray(labels).reshape(self.ws[0], -1)
        if x.ndim == 2:
            w_rows = self.no_weights[0] if w is None else w.reshape(-1)
            out = self.run_kernel(rows, x, labels.reshape(-1), w_rows, *args, self.grad)
        else:
            out = self.run_kernel(planes, x, labels, self.no_weights[2] if w is None else w,
                                  *args, self.part, self.acc, self.coefs)
            if out is not None:
                self.make_grad = lambda grad, k: _planes_grad(
                    x, labels, args[4], self.typed_a, self.coefs, k, grad, self.part)
        return None if out is None else (out[0], self.locations, out[1])


class SoftmaxCrossEntropy(SparseSoftmax):
    """Softmax cross-entropy with sparse labels (see the module docstring)."""

    def __init__(self, *, axis=1, ignore_label=None, class_weight=None, label_smoothing=0.0,
                 normalization="valid", poly_eps=0.0):
        SparseSoftmax.__init__(self, axis, ignore_label, normalization, poly_eps)
        self.class_weight = class_weight
        self.label_smoothing = label_smoothing

    def on_new_shape(self):
        self.a = per_class(self.class_weight, self.ws, "class_weight")
        self.kernel_a = kernel_per_class(self.a, self.ws[1])
        self.kernel_param = float(self.label_smoothing)
        self.smoothing = self.label_smoothing != 0
        SparseSoftmax.on_new_shape(self)

    def terms(self, x, index):
        a = None if self.a is None else self.kernel_a
        return softmax_cross_entropy_reference(x, index, a, self.label_smoothing, self.poly_eps)


class SoftmaxFocal(SparseSoftmax):
    """Softmax focal loss with sparse labels (see the module docstring)."""

    def __init__(self, *, axis=1, ignore_label=None, gamma=2.0, alpha=None, normalization="valid",
                 poly_eps=0.0):
        SparseSoftmax.__init__(self, axis, ignore_label, normalization, poly_eps)
        self.gamma = gamma
        self.alpha = alpha

    def on_new_shape(self):
        self.alpha_c = per_class(self.alpha, self.ws, "alpha")
        self.kernel_a = kernel_per_class(self.alpha_c, self.ws[1])
        self.kernel_param = float(self.gamma)
        self.smoothing = False
        SparseSoftmax.on_new_shape(self)

    def terms(self, x, index):
        alpha = self.kernel_a if isinstance(self.alpha_c, np.ndarray) else self.alpha_c
        loss, grad = softmax_focal_reference(x, index, alpha, self.gamma, self.poly_eps)
        return loss, grad, None


def softmax_cross_entropy(scores, labels, weights=None, **params):
    """Softmax cross-entropy (see the module docstring); returns ``(loss, grad)``.
    ``params``: the keyword arguments of :class:`SoftmaxCrossEntropy`."""
    return SoftmaxCrossEntropy(**params)(scores, labels, weights)


def softmax_focal_loss(scores, labels, weights=None, **params):
    """Softmax focal loss (see the module docstring); returns ``(loss, grad)``.
    ``params``: the keyword arguments of :class:`SoftmaxFocal`."""
    return SoftmaxFocal(**params)(scores, labels, weights)


# -- the kernel family --------------------------------------------------------------
# One loop over rows ((N, C) blobs), _rows, and one over planes (N x C x H x W), _planes,
# shared by the two losses; each loss gives the per-location step, a function
#   (log p_y, p_y, w, a_y, sum_c a_c, sum_c a_c log p_c, param, poly_eps, C)
#   -> (loss, valid, coef_exp, coef_smooth, at_label)
# such that the gradient is coef_exp p_c - coef_smooth a_c, and at_label at c = y.
# Each loss's two kernels are module-level functions that call the shared loops with its
# kind (CROSS_ENTROPY or FOCAL) as a constant: numba compiles a loop once per constant
# (the constant is its argument's type), so the other loss's step is gone from the code.
# Module-level functions rather than closures made by a factory: numba loads them from
# its disk cache in a new process, whereas it compiles a closure again in every process
# (seconds per kernel; the compile also moves C's rand(), which Caffe's HDF5Data
# shuffles with, so two trainings with the same seed would differ).

CROSS_ENTROPY, FOCAL = 0, 1


@jit.inline
def _cross_entropy_location(log_p, p, wn, a_y, a_sum, a_logp, eps, poly, classes):
    smooth = eps / classes
    picked = (1.0 - eps) * a_y
    mass = picked + smooth * a_sum                   # Q
    loss = -(picked * log_p + smooth * a_logp)
    coef_exp = mass
    at_label = mass * p - picked - smooth * a_y
    if poly != 0.0:  # (the same for every location: the compiler takes it out of the loop)
        # Poly-1: + poly a_y (1 - p_t), p_t = (1 - eps) p_y + eps / C; its gradient is
        # poly a_y (1 - eps) p_y (p_c - [c = y])
        loss += poly * a_y * (1.0 - ((1.0 - eps) * p + smooth))
        extra = poly * a_y * (1.0 - eps) * p
        coef_exp += extra
        at_label += extra * (p - 1.0)
    return wn * loss, wn * a_y, wn * coef_exp, wn * smooth, wn * at_label


@jit.inline
def _focal_location(log_p, p, wn, alpha_y, a_sum, a_logp, gamma, poly, classes):
    # (selects, not branches, so that a loop over locations runs on SIMD units)
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
def _location(kind, log_p, p, wn, a_y, a_sum, a_logp, param, poly, classes):
    """The per-location step of the loss ``kind``, a constant of each kernel, so the
    branch on it is gone once it is compiled."""
    if kind == CROSS_ENTROPY:
        return _cross_entropy_location(log_p, p, wn, a_y, a_sum, a_logp, param, poly, classes)
    return _focal_location(log_p, p, wn, a_y, a_sum, a_logp, param, poly, classes)


# the rows of the planes kernel's per-location numbers in ``acc``
SUMS, DOTS, SCORE_Y, EXP_Y, A_Y, LOG_Z, WEIGHT = (np.uint64(k * PLANE_BLOCK) for k in range(7))
# and of ``part``, for the sums and the labelled scores in the scores' dtype
PART_S, PART_SY = np.uint64(2 * PLANE_BLOCK), np.uint64(3 * PLANE_BLOCK)


@jit.kernel
def _rows(kind, x, labels, w, a, param, poly, smoothing, ignore, g):
    """On (N, C) scores: status, loss sum, valid sum; the gradient into g. ``kind`` is the
    loss, a constant of each kernel below. ``a``: one value per class; no ignore label is
    NaN, which equals no label."""
    n_rows, classes = x.shape
    a_sum = 0.0
    for c in range(classes):
        a_sum += a[c]
    total = valid = 0.0
    for n in range(n_rows):
        wn = _weight(w, n)
        if not wn >= 0:
            return jit.BAD_WEIGHT, 0.0, 0.0
        label = labels[n]
        if label == ignore:
            if not _skip_row(x, n, g):
                return jit.NOT_FINITE, 0.0, 0.0
            continue
        k = _class_index(label, classes)
        if k < 0:
            return jit.BAD_LABEL, 0.0, 0.0
        m, s = _row_softmax(x, n, g)
        log_z = m + math.log(s)
        a_logp = 0.0
        if smoothing:
            dot = 0.0
            for c in range(classes):
                dot += a[c] * x[n, c]
            a_logp = dot - a_sum * log_z
        loss, counted, coef_exp, coef_smooth, at_label = _location(
            kind, x[n, k] - log_z, g[n, k] / s, wn, a[k], a_sum, a_logp, param, poly, classes)
        total += loss
        valid += counted
        f = coef_exp / s
        for c in range(classes):
            g[n, c] = g[n, c] * f - coef_smooth * a[c]
        g[n, k] = at_label
    if not math.isfinite(total):
        return jit.NOT_FINITE, 0.0, 0.0
    return jit.OK, total, valid


@jit.kernel
def _planes(kind, x, labels, w, a, param, poly, smoothing, ignore, part, acc, coefs):
    """On (outer, C, inner) scores: status, loss sum, valid sum; per location the
    gradient's coefficients into ``coefs`` (coef_exp / sum exp(s), coef_smooth,
    at_label), for :func:`_planes_grad`. ``kind`` as in :func:`_rows`. Reads the scores once, along the contiguous
    inner axis, with an unshifted exp: a location whose sum of exp(s) leaves
    [EXP_SUM_MIN, EXP_SUM_MAX] hands the call to the reference, which shifts."""
    outer, classes, inner = x.shape
    per_outer, per_inner = w.shape[0] > 1, w.shape[2] > 1
    blk = part.shape[0] // 4  # the same number, as a run-time bound (SIMD)
    a_sum = 0.0
    for c in range(classes):
        a_sum += a[c]
    total = valid = 0.0
    bad_label = bad_weight = out_of_range = False
    for n in range(outer):
        for i0 in range(0, inner, blk):
            m = min(blk, inner - i0)
            mu = np.uint64(m)  # unsigned indices: no negative-index fix (SIMD)
            lab = labels[n, i0:i0 + m]
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
            if smoothing:  # sum_c a_c s_c
                for c in range(classes):
                    xc, ac = x[n, c, i0:i0 + m], a[c]
                    for i in range(mu):
                        acc[DOTS + i] += ac * xc[i]
            # the labelled class (a scalar pass: a gather), checks and weights; an
            # ignored location gets weight 0, so it adds nothing
            for i in range(mu):
                s = acc[SUMS + i]
                out_of_range |= (s < EXP_SUM_MIN) | (s > EXP_SUM_MAX) | (s != s)
                label = lab[i]
                ignored = label == ignore
                k = _class_index(label, classes)
                bad_label |= (k < 0) & (not ignored)
                k = 0 if k < 0 else k
                wv = np.float64(w[n if per_outer else 0, 0, i0 + i if per_inner else 0])
                bad_weight |= not wv >= 0
                acc[WEIGHT + i] = 0.0 if ignored else wv
                acc[A_Y + i] = a[k]
                acc[SCORE_Y + i] = x[n, k, i0 + i]
                part[PART_S + i] = s  # in the scores' dtype, for the precision of the
                part[PART_SY + i] = x[n, k, i0 + i]  # log and exp below (SIMD)
            for i in range(mu):
                acc[LOG_Z + i] = _log_as(part[PART_S + i])
                acc[EXP_Y + i] = _exp_as(part[PART_SY + i])
            cf0, cf1 = coefs[0, n, i0:i0 + m], coefs[1, n, i0:i0 + m]
            cf2 = coefs[2, n, i0:i0 + m]
            for i in range(mu):
                s = acc[SUMS + i]
                log_z = acc[LOG_Z + i]
                loss, counted, coef_exp, coef_smooth, at_label = _location(
                    kind, acc[SCORE_Y + i] - log_z, acc[EXP_Y + i] / s, acc[WEIGHT + i],
                    acc[A_Y + i], a_sum, acc[DOTS + i] - a_sum * log_z, param, poly,
                    classes)
                total += loss
                valid += counted
                cf0[i] = coef_exp / s
                cf1[i] = coef_smooth
                cf2[i] = at_label
        status = _status(bad_label, bad_weight, out_of_range)
        if status != jit.OK:
            return status, 0.0, 0.0
    return _status(False, False, not math.isfinite(total)), total, valid


@jit.kernel
def _rows_cross_entropy(x, labels, w, a, param, poly, smoothing, ignore, g):
    """:func:`_rows` for softmax cross-entropy."""
    return _rows(CROSS_ENTROPY, x, labels, w, a, param, poly, smoothing, ignore, g)


@jit.kernel
def _planes_cross_entropy(x, labels, w, a, param, poly, smoothing, ignore, part, acc, coefs):
    """:func:`_planes` for softmax cross-entropy."""
    return _planes(CROSS_ENTROPY, x, labels, w, a, param, poly, smoothing, ignore, part, acc,
                   coefs)


@jit.kernel
def _rows_focal(x, labels, w, a, param, poly, smoothing, ignore, g):
    """:func:`_rows` for the softmax focal loss."""
    return _rows(FOCAL, x, labels, w, a, param, poly, smoothing, ignore, g)


@jit.kernel
def _planes_focal(x, labels, w, a, param, poly, smoothing, ignore, part, acc, coefs):
    """:func:`_planes` for the softmax focal loss."""
    return _planes(FOCAL, x, labels, w, a, param, poly, smoothing, ignore, part, acc, coefs)


@jit.kernel
def _planes_grad(x, labels, ignore, a, coefs, k, out, typed):
    """The gradient times ``k`` into ``out`` from what the planes kernel kept: k (coef_exp
    exp(s) - coef_smooth a_c), and k at_label at the labelled class; exp(s) made again
    (reading the scores costs what reading kept exponentials would). ``a``, ``coefs`` and
    ``typed`` (which takes k) are in the scores' dtype, so that the loop runs in it."""
    outer, classes, inner = x.shape
    typed[0] = k
    kt = typed[0]
    for n in range(outer):
        f, sm = coefs[0, n], coefs[1, n]
        for c in range(classes):
            ac = a[c]
            xc, oc = x[n, c], out[n, c]
            for i in range(inner):
                oc[i] = (_exp_as(xc[i]) * f[i] - sm[i] * ac) * kt
        at, lab = coefs[2, n], labels[n]
        for i in range(inner):
            if lab[i] != ignore:  # (forward checked that it is a class index)
                out[n, int(lab[i]), i] = at[i] * kt


SoftmaxCrossEntropy.KERNELS = (_rows_cross_entropy, _planes_cross_entropy)
SoftmaxFocal.KERNELS = (_rows_focal, _planes_focal)


# -- the layers ---------------------------------------------------------------------

POLY_EPS = Param(0.0, number(), "Poly-1 epsilon: weight of the added 1 - p_t term")

LAYERS = [
    Layer("SoftmaxCrossEntropyLoss", SoftmaxCrossEntropy, labels="sparse", deploy="Softmax",
          params={
              "axis": AXIS,
              "ignore_label": IGNORE_LABEL,
              "class_weight": per_class_param("one weight per class"),
              "label_smoothing": Param(0.0, number(minimum=0, maximum=1),
                                       "epsilon spread over the classes"),
              "normalization": normalization("valid"),
              "poly_eps": POLY_EPS,
          }),
    Layer("SoftmaxFocalLoss", SoftmaxFocal, labels="sparse", deploy="Softmax", params={
        "axis": AXIS,
        "gamma": GAMMA,
        "alpha": per_class_param("a weight, or one per class; None for none"),
        "ignore_label": IGNORE_LABEL,
        "normalization": normalization("valid"),
        "poly_eps": POLY_EPS,
    }),
]
