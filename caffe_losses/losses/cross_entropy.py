r"""Cross-entropy on probabilities, for nets that end in a Softmax or Sigmoid layer.

``mode="categorical"``: per location, targets :math:`t` from non-negative labels as for
the multi-label softmax (``target="sum"``: :math:`t_c = y_c / \sum_k y_k`; ``"count"``:
:math:`y_c / M`; one-hot labels give :math:`t = y`), and

.. math:: \ell = -\sum_c t_c \log \hat p_c, \qquad \hat p = \max(p, \varepsilon),
          \qquad \frac{\partial \ell}{\partial p_c} = -\frac{t_c}{\hat p_c}

Caffe's ``MultinomialLogisticLoss`` is the one-hot case. A location with no positive
label contributes nothing.

``mode="binary"``: element-wise, labels in [0, 1] (``ignore_label`` skips one):

.. math:: \ell = -y \log \hat p - (1-y) \log(1-\hat p), \qquad
          \hat p = \mathrm{clip}(p, \varepsilon, 1-\varepsilon), \qquad
          \frac{\partial \ell}{\partial p} = \frac{\hat p - y}{\hat p (1 - \hat p)}

The clip keeps the loss finite. ``eps=None`` takes :data:`CATEGORICAL_EPS` or
:data:`BINARY_EPS`. As in Caffe the gradient uses the clipped value, so a probability
below :math:`\varepsilon` still gets a (bounded) push instead of none; it is exact
wherever the clip does not act.
"""
import math

import numpy as np

from .. import jit
from ..core import (Loss, binary_labels, broadcast_weights, check_nonnegative, check_range,
                    dense_targets, masked_weights, row_dot, times)
from ..jit import _log, _row_targets, _weight
from ..params import AXIS, IGNORE_LABEL, Layer, Param, normalization, number, one_of
from .multilabel_softmax import TARGETS

MODES = ("categorical", "binary")
# Caffe's MultinomialLogisticLoss clamps at 1e-20, so one-hot results match it
CATEGORICAL_EPS = 1e-20
# 1 - eps must differ from 1 in float32 (its spacing below 1 is 6e-8)
BINARY_EPS = 1e-7
# the kernel's log takes normal numbers only (above 2.2e-308)
KERNEL_EPS_MIN = 1e-300


def categorical_reference(p, y, w=None, target="sum", eps=CATEGORICAL_EPS, buffers=(None, None)):
    """Categorical cross-entropy in numpy on ``(outer, C[, inner])`` arrays: the loss
    per location (times ``w``), the valid count, and a function ``grad(out, k)`` that
    writes the gradient times ``w k`` into ``out``. ``buffers``: two arrays shaped like
    ``p`` to reuse for the clipped p and its log (a large blob's fresh arrays cost more
    than the arithmetic)."""
    coef, _, valid = dense_targets(y, w, target)   # coef = w / (sum or count)
    clipped = np.maximum(p, eps, out=buffers[0])
    loss = -coef * row_dot(y, np.log(clipped, out=buffers[1]))

    def grad(out, k):                               # -w t / p (t first: labels may be huge)
        np.multiply(y, (-k * coef).astype(out.dtype), out=out)
        out /= clipped
    return loss, valid, grad


def binary_reference(p, y, eps=BINARY_EPS):
    """Binary cross-entropy in numpy, element-wise: loss and gradient."""
    clipped = np.clip(p, eps, 1 - eps)
    loss = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
    return loss, (clipped - y) / (clipped * (1 - clipped))


class CrossEntropy(Loss):
    """Cross-entropy on probabilities, categorical or binary (see the module docstring).

    The kernel covers categorical mode on ``(N, C)`` blobs; the rest takes the reference.
    """

    def __init__(self, *, axis=1, mode="categorical", target="sum", eps=None, ignore_label=None,
                 normalization="batch_size"):
        Loss.__init__(self, axis, normalization)
        self.mode = mode
        self.target = target
        self.eps = (CATEGORICAL_EPS if mode == "categorical" else BINARY_EPS) if eps is None else eps
        self.ignore_label = ignore_label

    def on_new_shape(self):
        self.use_jit = (self.use_jit and len(self.ws) == 2 and self.mode == "categorical"
                        and self.eps >= KERNEL_EPS_MIN)

    def reference(self, p, labels, weights):
        check_range("probabilities", p, 0, 1,
                    "; feed the output of a Softmax (categorical) or Sigmoid (binary) layer")
        if self.mode == "categorical":
            y = np.asarray(labels).reshape(self.ws)
            w = broadcast_weights(weights, self.shape, self.axis)
            buffers = [self.work.get(name, self.ws, self.dtype) for name in ("clipped", "log")]
            loss, valid, self.make_grad = categorical_reference(p, y, w, self.target, self.eps,
                                                                buffers)
            return loss.sum(dtype=np.float64), self.locations, valid
        y, mask = binary_labels(labels, self.ws, self.ignore_label)
        w = broadcast_weights(weights, self.shape, self.axis, per_element=True)
        check_nonnegative("weights", w)
        w = masked_weights(w, mask, self.dtype)
        loss, grad = binary_reference(p, y, self.eps)
        self.grad[...] = times(grad, w)
        valid = p.size if w is None else np.broadcast_to(w, self.ws).sum(dtype=np.float64)
        return times(loss, w).sum(dtype=np.float64), p.size, valid

    def kernel(self, p, labels, weights):
        w = broadcast_weights(weights, self.shape, self.axis)
        out = self.run_kernel(_categorical, p, np.asarray(labels).reshape(self.ws),
                              self.no_weights[0] if w is None else w.reshape(-1), float(self.eps),
                              self.target == "count", self.grad)
        return None if out is None else (out[0], self.locations, out[1])


def cross_entropy(probs, labels, weights=None, **params):
    """Cross-entropy on probabilities (see the module docstring); returns ``(loss, grad)``.
    ``params``: the keyword arguments of :class:`CrossEntropy`."""
    return CrossEntropy(**params)(probs, labels, weights)


# -- the kernel ---------------------------------------------------------------------

@jit.kernel
def _categorical(p, y, w, eps, count_target, g):
    """Categorical cross-entropy on (N, C) arrays: status, loss sum, valid sum; the
    gradient into g."""
    rows, classes = p.shape
    total = 0.0
    valid = 0.0
    for n in range(rows):
        wn = _weight(w, n)
        if not wn >= 0:
            return jit.BAD_WEIGHT, 0.0, 0.0
        wrong, _, denom = _row_targets(y, n, count_target)
        for c in range(classes):
            wrong |= not (p[n, c] >= 0 and p[n, c] <= 1)
        if wrong:
            return jit.BAD_LABEL, 0.0, 0.0
        coef = wn / denom if denom > 0 else 0.0
        if denom > 0:
            valid += wn
        for c in range(classes):
            q = np.float64(p[n, c])
            q = eps if q < eps else q
            total -= coef * y[n, c] * _log(q)  # q >= eps: a label of 0 adds 0
            g[n, c] = -coef * y[n, c] / q
    if not math.isfinite(total):
        return jit.NOT_FINITE, 0.0, 0.0
    return jit.OK, total, valid


# -- the layer ----------------------------------------------------------------------

def check_params(params):
    if params["mode"] == "categorical" and params["ignore_label"] is not None:
        raise ValueError("param_str key 'ignore_label' applies to mode 'binary' only; in "
                         "categorical mode give a location all-zero labels to skip it")


LAYERS = [
    Layer("CrossEntropyLoss", CrossEntropy, labels="dense", inputs="probabilities",
          per_element_weights=True, check=check_params, params={
              "axis": AXIS,
              "mode": Param("categorical", one_of(*MODES), "softmax-style or element-wise"),
              "target": Param("sum", one_of(*TARGETS),
                              "categorical: how labels become a distribution"),
              "eps": Param(None, number(minimum=0, maximum=0.1, exclusive_minimum=True,
                                        allow_none=True),
                           "clip of the probabilities; None: 1e-20 categorical, 1e-7 binary"),
              "ignore_label": IGNORE_LABEL,
              "normalization": normalization("batch_size"),
          }),
]
