r"""Knowledge distillation (Hinton, Vinyals and Dean, 2015): the student's scores
:math:`s` against a teacher's scores :math:`t` of the same shape, both softened by the
temperature :math:`T`. The teacher's scores are a target: they get no gradient.

**Softmax form** (``activation="softmax"``, the default), per location over the
:math:`C` classes, with :math:`q = \mathrm{softmax}(t/T)` and
:math:`p = \mathrm{softmax}(s/T)`:

.. math:: \ell = T^2\, \mathrm{KL}(q \,\|\, p) = T^2 \sum_c q_c (\log q_c - \log p_c),
          \qquad \frac{\partial \ell}{\partial s_c} = T\, (p_c - q_c)

PyTorch: ``KLDivLoss(reduction="batchmean")(log_softmax(s/T), softmax(t/T)) * T**2`` on
``(N, C)`` scores, which is ``normalization: "valid"`` (the default) here.

**Sigmoid form** (``activation="sigmoid"``, multi-label), per location, with
:math:`q_c = \sigma(t_c/T)` and :math:`p_c = \sigma(s_c/T)`: the binary cross-entropy of
:math:`p` against the soft targets :math:`q` minus the teacher's entropy (so that it is 0
where the two agree), that is the binary KL divergence summed over the classes:

.. math:: \ell = T^2 \sum_c \bigl[\mathrm{BCE}(q_c, p_c) - H(q_c)\bigr]
          = T^2 \sum_c \bigl[\mathrm{softplus}(s'_c) - \mathrm{softplus}(t'_c)
          - q_c (s'_c - t'_c)\bigr], \qquad
          \frac{\partial \ell}{\partial s_c} = T\, (p_c - q_c)

with :math:`s' = s/T`, :math:`t' = t/T` (softplus(x) = log(1 + e^x), finite for every
finite x). :math:`T^2` keeps the gradient's size from shrinking as :math:`1/T^2`, so
that a loss weight need not change with the temperature.

**Labels** (an optional third input) only mark what to skip: with the softmax form one
class index per location (as ``SoftmaxWithLoss``), and a location whose label is
``ignore_label`` is skipped; with the sigmoid form one label per score (as
``SigmoidCrossEntropyLoss``), and an element whose label is ``ignore_label`` leaves its
location's sum. They are checked as those layers' labels are; labels without an
``ignore_label`` are an error (they would do nothing).

The loss is one number per location in both forms. ``"valid"`` (default) counts the
locations counted (sigmoid: with at least one element not ignored), ``"full"`` every
location, ``"batch_size"`` outer_num, ``"none"`` 1. The kernels are in
:mod:`caffe_losses.kernels.distillation`.
"""
import numpy as np

from .. import inputs
from ..core import Loss, call, log_softmax
from ..kernels import distillation as kernels
from ..params import AXIS, IGNORE_LABEL, Layer, Param, normalization, number, one_of

UNUSED_LABELS = ("labels are given but ignore_label is not set: the labels only mark what to "
                 "skip. Set ignore_label, or drop the labels (the loss on the labels is the "
                 "student's own loss layer)")


def softmax_distillation_reference(s, t, temperature):
    """The softmax form in numpy on ``(outer, C[, inner])`` arrays: the loss per location,
    the gradient (before ignored locations and normalization) and None (each counts 1)."""
    log_p = log_softmax(s / temperature)
    log_q = log_softmax(t / temperature)
    q = np.exp(log_q)
    loss = temperature ** 2 * (q * (log_q - log_p)).sum(axis=1, keepdims=True)
    return loss, temperature * (np.exp(log_p) - q), None


def sigmoid_distillation_reference(s, t, temperature):
    """The sigmoid form in numpy: the loss per element (its sum over the classes is the
    location's), the gradient (before ignored elements and normalization) and None."""
    s, t = s / temperature, t / temperature
    softplus_s, softplus_t = np.logaddexp(0, s), np.logaddexp(0, t)
    q = np.exp(t - softplus_t)                                    # sigma(t / T)
    loss = temperature ** 2 * (softplus_s - softplus_t - q * (s - t))
    return loss, temperature * (np.exp(s - softplus_s) - q), None


class Distillation(Loss):
    """Distillation loss (see the module docstring): ``forward(student, teacher,
    labels=None)``; ``backward`` gives the gradient with respect to the student's scores.
    The labels become the core's weights: 1 where counted, 0 where ignored."""

    prepare_labels = staticmethod(inputs.teacher_scores)

    def __call__(self, student, teacher, labels=None):
        return Loss.__call__(self, student, teacher, labels)

    def check_shapes(self, student, teacher, labels=None, bottoms=False):
        inputs.split_axis(student, self.axis)
        error = inputs.teacher_shape_error(teacher, student)
        if error is None and labels is not None:
            if self.ignore_label is None:
                raise ValueError(UNUSED_LABELS)
            error = inputs.label_shape_error(labels, student, self.axis,
                                             self.activation == "softmax", "student scores")
        if error:
            raise ValueError(error)
        self.checked = (student, teacher, labels)

    def weights_in_work_shape(self, labels):
        """The labels as weights: per location (softmax form) or element (sigmoid form),
        checked as SoftmaxWithLoss's or SigmoidCrossEntropyLoss's labels; None where
        nothing is ignored."""
        prepare = inputs.sparse_labels if self.activation == "softmax" else inputs.binary_labels
        mask = prepare(labels, self.ws, self.ignore_label)[1]
        return None if mask is None else mask.astype(self.dtype)

    def reference(self, s, t):
        if self.activation == "softmax":
            return softmax_distillation_reference(s, t, self.temperature)
        return sigmoid_distillation_reference(s, t, self.temperature)

    def reference_sums(self, s, teacher, w):
        total, valid, positives = Loss.reference_sums(self, s, teacher, w)
        if self.activation == "sigmoid" and w is not None:  # locations with anything counted
            valid = np.count_nonzero(w.any(axis=1))
        elif self.activation == "sigmoid":
            valid = self.locations
        return total, valid, positives

    def make_plan(self):
        return kernels.plan(self.ws, self.dtype, self.temperature,
                            softmax=self.activation == "softmax")


def distillation_loss(student, teacher, labels=None, **params):
    """Distillation loss (see the module docstring); returns ``(loss, grad)``, the gradient
    with respect to the student's scores. ``params``: the ``param_str`` keys of
    DistillationLoss."""
    return call(Distillation, params, student, teacher, labels)


# -- the layer ------------------------------------------------------------------------

LAYERS = [
    Layer("DistillationLoss", Distillation, labels="scores", deploy=None, counted="location",
          bottoms=("student scores", "teacher scores", "labels"), params={
              "axis": AXIS,
              "temperature": Param(4.0, number(minimum=0, maximum=100, exclusive_minimum=True),
                                   "softening temperature T, in (0, 100]"),
              "activation": Param("softmax", one_of("softmax", "sigmoid"),
                                  "softmax (one class per location) or sigmoid (multi-label)"),
              "ignore_label": IGNORE_LABEL,
              "normalization": normalization("valid"),
          }),
]
