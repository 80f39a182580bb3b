r"""ZLPR loss, the multi-label categorical cross-entropy (Su et al., arXiv 2208.02955).

Per location, with scores :math:`s_c` and labels :math:`y_c \in \{0, 1\}` over the
:math:`C` classes, :math:`\Omega_- = \{c : y_c = 0\}` and :math:`\Omega_+ = \{c : y_c =
1\}` (a class whose label is ``ignore_label`` is in neither):

.. math::

    \ell = \log\Bigl(1 + \sum_{c \in \Omega_-} e^{s_c}\Bigr)
         + \log\Bigl(1 + \sum_{c \in \Omega_+} e^{-s_c}\Bigr)

It pushes every positive score above 0 and every negative one below, so a class is
predicted where :math:`s > 0` (:math:`\sigma(s) > 0.5`: ``deploy`` puts a Sigmoid in its
place). Each term is a log-sum-exp with an implicit 0 term,
:math:`\log(1 + \sum e^{t}) = \mathrm{logsumexp}([0, t_1, \dots])`, taken with the
largest of them subtracted, so every finite score gives a finite loss. The gradient is
a softmax over that list:

.. math::

    \frac{\partial \ell}{\partial s_c} = \frac{e^{s_c}}{1 + \sum_{k \in \Omega_-} e^{s_k}}
    \;(c \in \Omega_-), \qquad
    -\frac{e^{-s_c}}{1 + \sum_{k \in \Omega_+} e^{-s_k}} \;(c \in \Omega_+)

Weights (a third bottom) hold one value per sample or per location. Normalization
defaults to ``"batch_size"``; ``"full"`` counts the locations, ``"valid"`` the locations
with at least one label not ignored (times their weights), ``"none"`` is the plain sum.
The kernels are in :mod:`caffe_losses.kernels.zlpr`.
"""
import numpy as np

from .. import inputs
from ..core import Loss, call
from ..kernels import zlpr as kernels
from ..params import AXIS, IGNORE_LABEL, Layer, normalization


def log1p_sum_exp(t):
    """``log(1 + sum_c exp(t_c))`` per location (class axis 1; -inf for a class left out),
    as logsumexp([0, t...]) with the largest term subtracted, and its gradient."""
    m = np.maximum(t.max(axis=1, keepdims=True), 0)
    e = np.exp(t - m)
    z = np.exp(-m) + e.sum(axis=1, keepdims=True)
    return m + np.log(z), e / z


def zlpr_reference(s, y):
    """The formula above in numpy on ``(outer, C[, inner])`` arrays with labels 0 or 1 (or
    -1 for an ignored one, in neither sum): the loss per location, the gradient (before
    weights and normalization), and whether a location has a label not ignored (what it
    counts in ``"valid"``)."""
    negative, positive = y == 0, y == 1
    loss_neg, grad_neg = log1p_sum_exp(np.where(negative, s, -np.inf))
    loss_pos, grad_pos = log1p_sum_exp(np.where(positive, -s, -np.inf))
    return loss_neg + loss_pos, grad_neg - grad_pos, (negative | positive).any(axis=1, keepdims=True)


class ZLPR(Loss):
    """ZLPR loss (see the module docstring). The kernels cover ``(N, C)`` blobs (rows) and
    ``N x C x H x W`` ones (planes); a plane whose sums of exponentials overflow without a
    shift takes the reference."""

    prepare_labels = staticmethod(inputs.zero_one_labels)

    def reference(self, s, y):
        return zlpr_reference(s, y)

    def make_plan(self):
        return kernels.plan(self.ws, self.dtype, ignore_label=self.ignore_label)


def zlpr_loss(scores, labels, weights=None, **params):
    """ZLPR loss (see the module docstring); returns ``(loss, grad)``.
    ``params``: the ``param_str`` keys of ZLPRLoss."""
    return call(ZLPR, params, scores, labels, weights)


# -- the layer ----------------------------------------------------------------------

LAYERS = [
    Layer("ZLPRLoss", ZLPR, labels="dense", deploy="Sigmoid", counted="location", params={
        "axis": AXIS,
        "ignore_label": IGNORE_LABEL,
        "normalization": normalization("batch_size"),
    }),
]
