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

The ``param_str`` key ``alpha`` is :math:`\alpha` above, one number: the share of the
positive term (SoftmaxFocalLoss's ``alpha`` is a weight per class instead). Inside, it
is ``balance``, and ``poly_eps`` is ``poly``. The kernels are in
:mod:`caffe_losses.kernels.sigmoid`.
"""
import numpy as np

from .. import inputs
from ..core import FOCAL_BASE_MIN, Loss, call, times
from ..kernels import sigmoid as kernels
from ..params import AXIS, GAMMA, IGNORE_LABEL, Layer, Param, normalization, number, per_class_param


def sigmoid_focal_reference(s, y, gamma=2.0, balance=0.25, pos_weight=None, class_weight=None,
                            poly=0.0):
    """The formula above in numpy: per-element loss and gradient (before weights and
    normalization), and None (each element counts 1). ``pos_weight`` (r) and
    ``class_weight`` (a) broadcast against the scores, or are None; ``balance`` is
    alpha, or None."""
    # softplus(s) = -log(1 - p) = max(s, 0) + log(1 + exp(-|s|)), finite for every finite s;
    # log(1 + e) rather than log1p(e): they differ by one rounding of 1 + e, below the
    # dtype's epsilon per element, and numpy's log1p has no SIMD loop
    softplus = np.maximum(s, 0) + np.log(1 + np.exp(-np.abs(s)))
    p = np.exp(s - softplus)
    ry = times(y, pos_weight)
    ce = ry * (softplus - s) + (1 - y) * softplus
    d_ce = p * (1 - y + ry) - ry
    if gamma:
        rest = p + y * (1 - 2 * p)          # 1 - p_t
        power = np.maximum(rest, FOCAL_BASE_MIN) ** (gamma - 1)
        d_ce = power * (rest * d_ce + gamma * (1 - 2 * y) * p * (1 - p) * ce)
        ce = power * rest * ce
    if poly:                                # + poly (1 - p_t)^(gamma + 1)
        rest = p + y * (1 - 2 * p)
        ce = ce + poly * rest ** (gamma + 1)
        d_ce = d_ce + poly * (gamma + 1) * rest ** gamma * (1 - 2 * y) * p * (1 - p)
    if balance is not None:
        alpha_t = balance * y + (1 - balance) * (1 - y)
        ce, d_ce = ce * alpha_t, d_ce * alpha_t
    return times(ce, class_weight), times(d_ce, class_weight), None


class SigmoidFocal(Loss):
    """Sigmoid focal loss; with ``gamma=0``, ``alpha=None``: binary cross-entropy with
    logits. Per-class parameters: ``pos_weight`` and ``class_weight``."""

    per_element = True

    def reference(self, s, y):
        return sigmoid_focal_reference(
            s, y, gamma=self.gamma, balance=self.alpha, poly=self.poly_eps,
            pos_weight=inputs.per_class(self.pos_weight, self.ws, self.dtype),
            class_weight=inputs.per_class(self.class_weight, self.ws, self.dtype))

    def make_plan(self):
        return kernels.plan(self.ws, self.dtype, gamma=self.gamma, balance=self.alpha,
                            pos_weight=self.pos_weight, class_weight=self.class_weight,
                            poly=self.poly_eps, ignore_label=self.ignore_label)


class SigmoidCrossEntropy(SigmoidFocal):
    """Binary cross-entropy with logits: :class:`SigmoidFocal` without the focal terms."""

    gamma = 0.0
    alpha = None


def sigmoid_cross_entropy(scores, labels, weights=None, **params):
    """Binary cross-entropy with logits (see the module docstring); returns ``(loss, grad)``.
    ``params``: the ``param_str`` keys of SigmoidCrossEntropyLoss."""
    return call(SigmoidCrossEntropy, params, scores, labels, weights)


def sigmoid_focal_loss(scores, labels, weights=None, **params):
    """Sigmoid focal loss (see the module docstring); returns ``(loss, grad)``.
    ``params``: the ``param_str`` keys of SigmoidFocalLoss."""
    return call(SigmoidFocal, params, scores, labels, weights)


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
