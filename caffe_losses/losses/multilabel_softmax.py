r"""Multi-label softmax cross-entropy: a softmax against multi-hot or real-valued labels.

Per location, with non-negative labels :math:`y_c` over the :math:`C` classes, the target
distribution is

* ``target="sum"`` (default): :math:`t_c = y_c / \sum_k y_k`
* ``target="count"``: :math:`t_c = y_c / M`, :math:`M` the number of non-zero labels
  (the 1/M scaling of Mahajan et al., 2018)

and the loss is :math:`\ell = -\sum_c t_c \log \mathrm{softmax}(s)_c`. A location with no
positive label has no target: it contributes nothing and is not counted as valid. With
location weights :math:`w` and the normalizer :math:`Z`,

.. math:: L = \frac{1}{Z} \sum_{\text{locations}} w\, \ell, \qquad
          \frac{\partial L}{\partial s_c} = \frac{w}{Z}\,(T p_c - t_c),
          \quad T = \sum_k t_k,\; p = \mathrm{softmax}(s)

(:math:`T` is 1 for ``target="sum"``, but not, with real-valued labels, for
``"count"``). ``"batch_size"`` (default) is the mean over the batch; ``"valid"`` counts
the locations with a positive label, or sums their weights. The kernels are in
:mod:`caffe_losses.kernels.multilabel_softmax`.
"""
import numpy as np

from .. import inputs
from ..core import Loss, call, log_softmax
from ..kernels import multilabel_softmax as kernels
from ..params import AXIS, Layer, Param, normalization, one_of

TARGETS = ("sum", "count")


def targets(y, target):
    """Per location, for dense labels: 1 / (the label sum, or the number of non-zero
    labels for ``target="count"``), 0 where that is 0 (no target); the label sum; and
    whether the location has a target."""
    label_sum = y.sum(axis=1, keepdims=True, dtype=np.float64)
    if target == "sum":
        denom = label_sum
    else:
        denom = np.count_nonzero(y, axis=1).reshape(label_sum.shape).astype(np.float64)
    has_target = denom > 0
    return np.divide(1.0, denom, out=np.zeros(denom.shape), where=has_target), label_sum, has_target


def multilabel_softmax_reference(s, y, target="sum"):
    """The formula above in numpy on ``(outer, C[, inner])`` arrays: the loss per
    location, the gradient (before weights and normalization) and whether each location
    has a target (what it counts in ``"valid"``)."""
    coef, label_sum, has_target = targets(y, target)      # coef = 1 / (sum or count)
    log_p = log_softmax(s)
    t = coef * y                                           # t_c
    loss = -(t * log_p).sum(axis=1, keepdims=True)
    grad = coef * label_sum * np.exp(log_p) - t            # T p_c - t_c
    return loss, grad, has_target


class MultiLabelSoftmax(Loss):
    """Multi-label softmax cross-entropy (see the module docstring).

    On large blobs the kernels keep two factors per location, and backward makes the
    gradient from them, making exp(s) again; so ``backward`` reads the scores and labels
    given to ``forward`` again, as Caffe's own layers read their bottoms in backward.
    """

    prepare_labels = staticmethod(inputs.dense_labels)

    def reference(self, s, y):
        return multilabel_softmax_reference(s, y, self.target)

    def make_plan(self):
        return kernels.plan(self.ws, self.dtype, count_target=self.target == "count")


def multilabel_softmax_loss(scores, labels, weights=None, **params):
    """Multi-label softmax cross-entropy (see the module docstring); returns ``(loss, grad)``.

    Args:
        scores: float array, ``(N, C)`` or ``(N, C, H, W)``; class axis ``axis``.
        labels: non-negative array with one label per score.
        weights: optional, one value per sample or per location.
        params: the ``param_str`` keys of MultiLabelSoftmaxLoss: ``axis`` (1), ``target``
            (``"sum"`` or ``"count"``), ``normalization`` (``"batch_size"``, ``"valid"``,
            ``"full"`` or ``"none"``).
    """
    return call(MultiLabelSoftmax, params, scores, labels, weights)


# -- the layer ----------------------------------------------------------------------

LAYERS = [
    Layer("MultiLabelSoftmaxLoss", MultiLabelSoftmax, labels="dense", deploy="Softmax", params={
        "axis": AXIS,
        "target": Param("sum", one_of(*TARGETS),
                        "labels divided by their sum, or by the number of non-zero labels"),
        "normalization": normalization("batch_size"),
    }),
]
