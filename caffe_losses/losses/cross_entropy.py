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

The ``param_str`` key ``eps`` is this clip, :math:`\varepsilon`; inside it is ``p_min``,
the smallest probability taken (``eps`` elsewhere is ``poly_eps``, Poly-1's
coefficient). The kernels (categorical mode) are in :mod:`caffe_losses.kernels.cross_entropy`.
"""
import numpy as np

from .. import inputs
from ..core import Loss, call
from ..kernels import cross_entropy as kernels
from ..params import AXIS, IGNORE_LABEL, Layer, Param, normalization, number, one_of
from .multilabel_softmax import TARGETS, targets

MODES = ("categorical", "binary")
# Caffe's MultinomialLogisticLoss clamps at 1e-20, so one-hot results match it
CATEGORICAL_EPS = 1e-20
# 1 - eps must differ from 1 in float32 (its spacing below 1 is 6e-8)
BINARY_EPS = 1e-7


def categorical_reference(p, y, target="sum", p_min=CATEGORICAL_EPS):
    """Categorical cross-entropy in numpy on ``(outer, C[, inner])`` arrays: the loss per
    location, the gradient (before weights and normalization) and whether each location
    has a target (what it counts in ``"valid"``)."""
    coef, _, has_target = targets(y, target)       # coef = 1 / (sum or count)
    clipped = np.maximum(p, p_min)
    loss = -coef * (y * np.log(clipped)).sum(axis=1, keepdims=True)
    return loss, -coef * y / clipped, has_target    # -t / p (t first: labels may be huge)


def binary_reference(p, y, p_min=BINARY_EPS):
    """Binary cross-entropy in numpy, element-wise: loss, gradient, and None (each element
    counts 1)."""
    clipped = np.clip(p, p_min, 1 - p_min)
    loss = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
    return loss, (clipped - y) / (clipped * (1 - clipped)), None


class CrossEntropy(Loss):
    """Cross-entropy on probabilities, categorical or binary (see the module docstring):
    in binary mode one term (and weight) per element, labels in [0, 1]."""

    def __init__(self, **params):
        Loss.__init__(self, **params)
        binary = self.mode == "binary"
        self.per_element = binary
        self.prepare_labels = inputs.binary_labels if binary else inputs.dense_labels
        self.p_min = (BINARY_EPS if binary else CATEGORICAL_EPS) if self.eps is None else self.eps

    def check_scores(self, p):
        inputs.check_range("probabilities", p, 0, 1,
                           "; feed the output of a Softmax (categorical) or Sigmoid (binary) layer")

    def reference(self, p, y):
        if self.per_element:
            return binary_reference(p, y, self.p_min)
        return categorical_reference(p, y, self.target, self.p_min)

    def make_plan(self):
        if self.per_element:
            return None
        return kernels.plan(self.ws, self.dtype, p_min=self.p_min,
                            count_target=self.target == "count")


def cross_entropy(probs, labels, weights=None, **params):
    """Cross-entropy on probabilities (see the module docstring); returns ``(loss, grad)``.
    ``params``: the ``param_str`` keys of CrossEntropyLoss."""
    return call(CrossEntropy, params, probs, labels, weights)


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
