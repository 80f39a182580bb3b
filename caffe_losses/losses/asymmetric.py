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

The ``param_str`` key ``clip`` is the margin :math:`m` (inside: ``margin``). The kernel is
in :mod:`caffe_losses.kernels.asymmetric`.
"""
import numpy as np

from .. import inputs
from ..core import Loss, call, times
from ..kernels import asymmetric as kernels
from ..params import (AXIS, IGNORE_LABEL, Layer, Param, boolean, normalization, number,
                      per_class_param)


def asymmetric_reference(s, y, gamma_pos=0.0, gamma_neg=4.0, margin=0.05, focal_grad=True,
                         class_weight=None):
    """The formula above in numpy: per-element loss and gradient (before weights and
    normalization), and None (each element counts 1). ``class_weight`` broadcasts against
    the scores, or is None."""
    softplus_pos = np.maximum(s, 0) + np.log(1 + np.exp(-np.abs(s)))  # -log(1 - p)
    softplus_neg = softplus_pos - s                                     # -log p
    p, q = np.exp(-softplus_neg), np.exp(-softplus_pos)
    p_m = np.maximum(p - margin, 0)
    shifted = p_m > 0
    if margin:
        log_1m_pm = np.where(shifted, np.log(q + margin), 0)  # 1 - p_m = q + margin
        q_share = q / (q + margin)                             # q / (1 - p_m) where p_m > 0
    else:
        log_1m_pm, q_share = -softplus_pos, 1.0
    focus_pos, focus_neg = q ** gamma_pos, p_m ** gamma_neg
    loss = y * focus_pos * softplus_neg - (1 - y) * focus_neg * log_1m_pm
    r = np.divide(-log_1m_pm, p_m, out=np.ones_like(p_m), where=shifted)
    g_pos = -q - (gamma_pos * p * softplus_neg if focal_grad else 0)
    g_neg = p * (q_share + (gamma_neg * q * r if focal_grad else 0))
    grad = y * focus_pos * g_pos + (1 - y) * np.where(shifted, focus_neg * g_neg, 0)
    return times(loss, class_weight), times(grad, class_weight), None


class Asymmetric(Loss):
    """Asymmetric loss (see the module docstring). Per-class parameter: ``class_weight``."""

    per_element = True

    def reference(self, s, y):
        return asymmetric_reference(
            s, y, self.gamma_pos, self.gamma_neg, self.clip, self.focal_grad,
            inputs.per_class(self.class_weight, self.ws, self.dtype))

    def make_plan(self):
        return kernels.plan(self.ws, self.dtype, gamma_pos=self.gamma_pos,
                            gamma_neg=self.gamma_neg, margin=self.clip,
                            focal_grad=self.focal_grad, class_weight=self.class_weight,
                            ignore_label=self.ignore_label)


def asymmetric_loss(scores, labels, weights=None, **params):
    """Asymmetric loss (see the module docstring); returns ``(loss, grad)``.
    ``params``: the ``param_str`` keys of AsymmetricLoss."""
    return call(Asymmetric, params, scores, labels, weights)


# -- the layer ----------------------------------------------------------------------

LAYERS = [
    Layer("AsymmetricLoss", Asymmetric, labels="dense", deploy="Sigmoid",
          counted="element", per_element_weights=True, params={
              "axis": AXIS,
              "gamma_pos": Param(0.0, number(minimum=0), "focusing exponent of the positives"),
              "gamma_neg": Param(4.0, number(minimum=0), "focusing exponent of the negatives"),
              "clip": Param(0.05, number(minimum=0, maximum=1),
                            "probability margin m of the negatives, p_m = max(p - m, 0); 0: off"),
              "focal_grad": Param(True, boolean(),
                                  "false: the focusing weights are constants in backward"),
              "ignore_label": IGNORE_LABEL,
              "class_weight": per_class_param("weight of every term of a class"),
              "normalization": normalization("batch_size", extra=("positive",)),
          }),
]
