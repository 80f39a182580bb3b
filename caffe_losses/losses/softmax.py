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

The ``param_str`` key ``alpha`` of the focal loss is :math:`\alpha_y`, a weight per class
(SigmoidFocalLoss's ``alpha`` is one number, the positive term's share): inside, both
losses' per-class weights are ``class_weight`` (:math:`a_c`), and ``poly_eps`` is
``poly``. The kernels are in :mod:`caffe_losses.kernels.softmax`.
"""
import numpy as np

from .. import inputs
from ..core import Loss, call, log_softmax, times
from ..kernels import softmax as kernels
from ..params import AXIS, GAMMA, IGNORE_LABEL, Layer, Param, normalization, number, per_class_param


def softmax_cross_entropy_reference(s, index, class_weight=None, label_smoothing=0.0, poly=0.0):
    """Cross-entropy in numpy on ``(outer, C[, inner])`` scores and per-location class
    indices ``index`` (shaped ``(outer, 1[, inner])``); ``class_weight``: the weights
    a_c, None, one number or one per class. Returns the loss per location, the gradient,
    and :math:`a_y`, what a location counts in ``"valid"`` (None without weights)."""
    classes = s.shape[1]
    class_shape = (1, classes) + (1,) * (s.ndim - 2)
    a = None if class_weight is None else np.broadcast_to(np.reshape(class_weight, -1), (classes,))
    a_c = np.ones(class_shape) if a is None else a.reshape(class_shape)
    a_y = None if a is None else np.take(a, index)
    onehot = np.arange(classes).reshape(class_shape) == index
    q = label_smoothing / classes * a_c + onehot * ((1 - label_smoothing) * times(1.0, a_y))
    log_p = log_softmax(s)
    loss = -(q * log_p).sum(axis=1, keepdims=True)
    grad = q.sum(axis=1, keepdims=True) * np.exp(log_p) - q
    if poly:  # + poly a_y (1 - p_t), p_t = sum_c q_c p_c = (1 - ls) p_y + ls / C
        p_y = np.exp(np.take_along_axis(log_p, index, axis=1))
        scale = poly * times(1.0, a_y)
        loss = loss + scale * (1 - ((1 - label_smoothing) * p_y + label_smoothing / classes))
        grad = grad + scale * (1 - label_smoothing) * p_y * (np.exp(log_p) - onehot)
    return loss, grad, a_y


def softmax_focal_reference(s, index, class_weight=None, gamma=2.0, poly=0.0):
    """The focal loss in numpy, as :func:`softmax_cross_entropy_reference`;
    ``class_weight``: alpha, None, one number or one per class.
    Returns the loss per location, the gradient and None (each location counts 1)."""
    log_p = log_softmax(s)
    log_p_y = np.minimum(np.take_along_axis(log_p, index, axis=1), 0)
    p_y = np.exp(log_p_y)
    rest = 1 - p_y
    # gamma p (1 - p)^(gamma - 1) log p = (1 - p)^gamma gamma p log(p) / (1 - p), and
    # log(p) / (1 - p) -> -1 as p -> 1: no infinite power where 1 - p rounds to 0
    ratio = np.divide(log_p_y, rest, out=np.full(rest.shape, -1.0, rest.dtype), where=rest > 0)
    modulation = rest ** gamma
    alpha_y = (np.take(np.reshape(class_weight, -1), index) if np.ndim(class_weight)
               else class_weight)
    onehot = np.arange(s.shape[1]).reshape((1, -1) + (1,) * (s.ndim - 2)) == index
    loss = -modulation * log_p_y + poly * modulation * rest          # + poly (1 - p_y)^(gamma+1)
    factor = modulation * (1 - gamma * p_y * ratio) + poly * (gamma + 1) * modulation * p_y
    return times(loss, alpha_y), times(factor, alpha_y) * (np.exp(log_p) - onehot), None


class SoftmaxCrossEntropy(Loss):
    """Softmax cross-entropy with sparse labels (see the module docstring)."""

    prepare_labels = staticmethod(inputs.sparse_labels)

    def reference(self, s, index):
        return softmax_cross_entropy_reference(
            s, index, self.class_weight, self.label_smoothing, self.poly_eps)

    def make_plan(self):
        return kernels.plan(self.ws, self.dtype, kernels.CROSS_ENTROPY,
                            class_weight=self.class_weight, label_smoothing=self.label_smoothing,
                            gamma=0.0, poly=self.poly_eps, ignore_label=self.ignore_label)


class SoftmaxFocal(Loss):
    """Softmax focal loss with sparse labels (see the module docstring)."""

    prepare_labels = staticmethod(inputs.sparse_labels)

    def reference(self, s, index):
        return softmax_focal_reference(s, index, self.alpha, self.gamma, self.poly_eps)

    def make_plan(self):
        return kernels.plan(self.ws, self.dtype, kernels.FOCAL, class_weight=self.alpha,
                            label_smoothing=0.0, gamma=self.gamma, poly=self.poly_eps,
                            ignore_label=self.ignore_label)


def softmax_cross_entropy(scores, labels, weights=None, **params):
    """Softmax cross-entropy (see the module docstring); returns ``(loss, grad)``.
    ``params``: the ``param_str`` keys of SoftmaxCrossEntropyLoss."""
    return call(SoftmaxCrossEntropy, params, scores, labels, weights)


def softmax_focal_loss(scores, labels, weights=None, **params):
    """Softmax focal loss (see the module docstring); returns ``(loss, grad)``.
    ``params``: the ``param_str`` keys of SoftmaxFocalLoss."""
    return call(SoftmaxFocal, params, scores, labels, weights)


# -- the layers ---------------------------------------------------------------------

POLY_EPS = Param(0.0, number(), "Poly-1 epsilon: weight of the added 1 - p_t term")

LAYERS = [
    Layer("SoftmaxCrossEntropyLoss", SoftmaxCrossEntropy, labels="sparse", deploy="Softmax",
          params={
              "axis": AXIS,
              "label_smoothing": Param(0.0, number(minimum=0, maximum=1),
                                       "epsilon spread over the classes"),
              "ignore_label": IGNORE_LABEL,
              "class_weight": per_class_param("one weight per class"),
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
