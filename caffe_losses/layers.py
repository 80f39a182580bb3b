"""Thin ``caffe.Layer`` adapters around the functions of :mod:`caffe_losses.functional`.

Use from prototxt (the top is a loss only with an explicit ``loss_weight``:
Caffe gives Python layers none by default)::

    layer {
      name: "loss" type: "Python"
      bottom: "score" bottom: "label"
      top: "loss"
      loss_weight: 1
      python_param { module: "caffe_losses" layer: "MultiLabelSoftmaxLoss"
                     param_str: "{'normalization': 'valid'}" }
    }

Every layer takes ``scores`` (or probabilities), ``labels`` and an optional
``weights`` bottom; its ``param_str`` keys are exactly the keyword arguments
of its loss class in :mod:`caffe_losses.functional`, whose ``forward`` runs
in the layer's forward and ``backward`` in the layer's backward.
"""
import functools
import sys
import warnings

import caffe
import numpy as np

from . import functional as F
from . import metrics
from .params import Param, ParamError, integer, number, one_of, parse_params, per_class_numbers

TRAIN = 0


def reported(method):
    """Write a layer's exception to stderr before it propagates.

    Under the ``caffe`` CLI a Python exception becomes a C++
    ``error_already_set`` that aborts the process without printing it; this
    keeps the reason in the training log. (pycaffe shows it again as usual.)
    """
    @functools.wraps(method)
    def wrapper(self, *args):
        try:
            return method(self, *args)
        except Exception as exc:
            report(exc)
            raise
    return wrapper


def report(exc):
    sys.stderr.write("caffe_losses: %s: %s\n" % (type(exc).__name__, exc))
    sys.stderr.flush()


# -- parameters shared by the layers -------------------------------------------
AXIS = Param(1, integer(), "class axis of the scores")
IGNORE_LABEL = Param(None, integer(allow_none=True), "label value to skip, or None")
GAMMA = Param(2.0, number(minimum=0), "focusing exponent")


def normalization(default, extra=()):
    return Param(default, one_of(*(F.NORMALIZATIONS + tuple(extra))),
                 "divisor of the summed loss, as Caffe's LossParameter")


class LossLayer(caffe.Layer):
    """What every loss layer shares: parameters, bottom checks, top-diff scaling.

    A subclass sets ``LOSS`` (a :class:`functional.Loss` made as
    ``LOSS(**params)``), ``PARAMS``
    ({key: Param}), ``LABELS`` (``"dense"``: one label per score, or
    ``"sparse"``: one class index per location), ``PER_ELEMENT_WEIGHTS`` and
    ``PER_CLASS`` (the parameters that hold one value per class).
    """

    LOSS = None
    PARAMS = {}
    LABELS = "dense"
    COUNTED = "location"  # what normalization "valid" counts, for messages
    PER_ELEMENT_WEIGHTS = False
    PER_CLASS = ()
    BOTTOMS = ("scores", "labels", "[weights]")

    def error(self, message):
        return ValueError("%s: %s" % (type(self).__name__, message))

    @reported
    def setup(self, bottom, top):
        self.params = parse_params(type(self).__name__, self.param_str, self.PARAMS)
        self.check_params(self.params)
        if not 2 <= len(bottom) <= 3:
            raise self.error("takes 2 or 3 bottoms (%s), got %d; fix the layer's bottom lines"
                             % (", ".join(self.BOTTOMS), len(bottom)))
        if len(top) != 1:
            raise self.error("has one top (the loss), got %d" % len(top))
        self.loss = self.LOSS(**self.params)
        self._checked_loss_weight = False
        self._warned_empty = False
        self._shapes = None

    def check_params(self, params):
        """Checks across parameters; raise ParamError."""

    def reshape(self, bottom, top):
        # Caffe calls reshape right before every forward, with the same blobs: the arrays are
        # read once here for both. (reshape, forward and backward report as @reported does,
        # without its extra call: on small blobs each microsecond shows.)
        try:
            arrays = self._bottoms = [bottom[i].data for i in range(len(bottom))]
            shapes = [a.shape for a in arrays]
            if shapes != self._shapes:
                self.check_shapes(shapes)
                self._shapes = shapes
                top[0].reshape()  # a scalar, as Caffe's own loss layers
        except Exception as exc:
            report(exc)
            raise

    def forward(self, bottom, top):
        try:
            arrays = self._bottoms
            try:
                top[0].data[...] = self.loss.forward(arrays[0], arrays[1],
                                                     arrays[2] if len(arrays) > 2 else None)
            except ValueError as exc:
                raise self.error(str(exc)) from None
            if self.loss.empty and not self._warned_empty:
                self._warned_empty = True
                warnings.warn(
                    "%s: nothing in this batch counts (every %s is ignored, has no target or has "
                    "weight 0): the loss is 0 and the gradient zero. Shown once per layer; check "
                    "the labels if it is not expected." % (type(self).__name__, self.COUNTED))
            if not self._checked_loss_weight and self.phase == TRAIN:
                self._checked_loss_weight = True
                if top[0].diff.flat[0] == 0:
                    warnings.warn(
                        "%s: the top has loss weight 0, so Caffe never calls backward and the net "
                        "does not learn from this loss. Python layers get no default loss weight: "
                        "add 'loss_weight: 1' to the layer in the prototxt." % type(self).__name__)
        except Exception as exc:
            report(exc)
            raise

    def backward(self, top, propagate_down, bottom):
        try:
            if propagate_down[0]:
                diff, ws = bottom[0].diff, self.loss.ws
                self.loss.backward(diff if diff.shape == ws else diff.reshape(ws),
                                   top[0].diff.item())
            # Labels and weights get no gradient; with force_backward Caffe still
            # asks for one, so leave their diff at zero.
            for i in range(1, len(bottom)):
                if propagate_down[i]:
                    bottom[i].diff[...] = 0
        except Exception as exc:
            report(exc)
            raise

    # -- shape checks, once per new input shape ----------------------------------
    def check_shapes(self, shapes):
        scores = shapes[0]
        try:
            outer, classes, inner = F.split_axis(scores, self.params["axis"])
        except ValueError as exc:
            raise self.error("%s; set 'axis' to the class axis of the scores" % exc)
        labels = shapes[1]
        count = int(np.prod(labels, dtype=np.int64))
        if self.LABELS == "dense" and count != outer * classes * inner:
            raise self.error(
                "bottom[1] (labels) has shape %s but bottom[0] (scores) has shape %s; this loss "
                "needs one label per score (the same number of values)" % (labels, scores))
        if self.LABELS == "sparse" and count != outer * inner:
            raise self.error(
                "bottom[1] (labels) has shape %s (%d values) but bottom[0] (scores) has shape %s: "
                "give one class index per location, %d values (N x 1 x H x W, or N)"
                % (labels, count, scores, outer * inner))
        if len(shapes) > 2:
            weights = shapes[2]
            count = int(np.prod(weights, dtype=np.int64))
            accepted = [scores[0], outer * inner]
            text = "one weight per sample (%d values) or per location (%d values, N x 1 x H x W)" % (
                accepted[0], accepted[1])
            if self.PER_ELEMENT_WEIGHTS:
                accepted.append(outer * classes * inner)
                text += " or per element (%d values)" % accepted[2]
            if count not in accepted or (count == scores[0] and outer % scores[0]):
                raise self.error("bottom[2] (weights) has shape %s (%d values) but scores have "
                                 "shape %s: give %s" % (weights, count, scores, text))
        for key in self.PER_CLASS:
            value = self.params[key]
            if isinstance(value, tuple) and len(value) != classes:
                raise ParamError("%s: param_str key %r has %d values but the scores have %d "
                                 "classes (axis %d); give one number or one per class"
                                 % (type(self).__name__, key, len(value), classes,
                                    self.params["axis"]))


class MultiLabelSoftmaxLoss(LossLayer):
    """Softmax cross-entropy against multi-hot or real-valued labels.

    See :class:`caffe_losses.functional.MultiLabelSoftmax`.
    """

    LOSS = F.MultiLabelSoftmax
    PARAMS = {
        "axis": AXIS,
        "target": Param("sum", one_of(*F.TARGETS),
                        "labels divided by their sum, or by the number of non-zero labels"),
        "normalization": normalization("batch_size"),
    }


class SigmoidCrossEntropyLoss(LossLayer):
    """Binary cross-entropy with logits, element-wise; Caffe's layer plus weights.

    See :func:`caffe_losses.functional.sigmoid_cross_entropy`.
    """

    LOSS = F.SigmoidCrossEntropy
    COUNTED = "element"
    PER_ELEMENT_WEIGHTS = True
    PER_CLASS = ("pos_weight", "class_weight")
    PARAMS = {
        "axis": AXIS,
        "ignore_label": IGNORE_LABEL,
        "pos_weight": Param(None, per_class_numbers(), "weight of the positive term"),
        "class_weight": Param(None, per_class_numbers(), "weight of every term of a class"),
        "normalization": normalization("batch_size"),
    }


class SigmoidFocalLoss(LossLayer):
    """Sigmoid focal loss (RetinaNet); torchvision's convention.

    See :func:`caffe_losses.functional.sigmoid_focal_loss`.
    """

    LOSS = F.SigmoidFocal
    COUNTED = "element"
    PER_ELEMENT_WEIGHTS = True
    PARAMS = {
        "axis": AXIS,
        "gamma": GAMMA,
        "alpha": Param(0.25, number(minimum=0, maximum=1, allow_none=True),
                       "weight of the positive class in [0, 1], or None for none"),
        "ignore_label": IGNORE_LABEL,
        "normalization": normalization("batch_size", extra=("positive",)),
    }


class SoftmaxCrossEntropyLoss(LossLayer):
    """Softmax cross-entropy with sparse labels; Caffe's SoftmaxWithLoss plus weights and smoothing.

    See :func:`caffe_losses.functional.softmax_cross_entropy`.
    """

    LOSS = F.SoftmaxCrossEntropy
    LABELS = "sparse"
    PER_CLASS = ("class_weight",)
    PARAMS = {
        "axis": AXIS,
        "ignore_label": IGNORE_LABEL,
        "class_weight": Param(None, per_class_numbers(), "one weight per class"),
        "label_smoothing": Param(0.0, number(minimum=0, maximum=1), "epsilon spread over the classes"),
        "normalization": normalization("valid"),
    }


class SoftmaxFocalLoss(LossLayer):
    """Multi-class focal loss on a softmax, sparse labels.

    See :func:`caffe_losses.functional.softmax_focal_loss`.
    """

    LOSS = F.SoftmaxFocal
    LABELS = "sparse"
    PER_CLASS = ("alpha",)
    PARAMS = {
        "axis": AXIS,
        "gamma": GAMMA,
        "alpha": Param(None, per_class_numbers(), "a weight, or one per class; None for none"),
        "ignore_label": IGNORE_LABEL,
        "normalization": normalization("valid"),
    }


class CrossEntropyLoss(LossLayer):
    """Cross-entropy on probabilities (after a Softmax or Sigmoid layer).

    See :func:`caffe_losses.functional.cross_entropy`.
    """

    LOSS = F.CrossEntropy
    PER_ELEMENT_WEIGHTS = True
    BOTTOMS = ("probabilities", "labels", "[weights]")
    PARAMS = {
        "axis": AXIS,
        "mode": Param("categorical", one_of(*F.MODES), "softmax-style or element-wise"),
        "target": Param("sum", one_of(*F.TARGETS), "categorical: how labels become a distribution"),
        "eps": Param(None, number(minimum=0, maximum=0.1, exclusive_minimum=True, allow_none=True),
                     "clip of the probabilities; None: 1e-20 categorical, 1e-7 binary"),
        "ignore_label": IGNORE_LABEL,
        "normalization": normalization("batch_size"),
    }

    def check_params(self, params):
        if params["mode"] == "categorical" and params["ignore_label"] is not None:
            raise ParamError("%s: param_str key 'ignore_label' applies to mode 'binary' only; in "
                             "categorical mode give a location all-zero labels to skip it"
                             % type(self).__name__)

    def check_shapes(self, shapes):
        if self.params["mode"] == "categorical" and len(shapes) > 2:
            scores, weights = shapes[0], shapes[2]
            outer, classes, inner = F.split_axis(scores, self.params["axis"])
            if int(np.prod(weights, dtype=np.int64)) == outer * classes * inner != outer * inner:
                raise self.error("categorical mode takes one weight per sample or per location, "
                                 "not per element; weights have shape %s" % (weights,))
        LossLayer.check_shapes(self, shapes)




class MultiLabelAccuracy(caffe.Layer):
    """Multi-label metrics for the TEST phase: precision@k, recall@k, F1@k, mean AP.

    Bottoms: scores and 0/1 labels of the same shape (class axis ``axis``;
    N x C x H x W counts every location as a sample). Tops, in this order and
    as many as given (1 to 4): precision@k, recall@k, F1@k, mAP. See
    :mod:`caffe_losses.metrics` for the definitions (scikit-learn's). No
    backward: give it no ``loss_weight``.
    """

    PARAMS = {
        "axis": AXIS,
        "k": Param(None, integer(minimum=1, allow_none=True),
                   "predictions per sample; None: the sample's number of positives"),
        "ignore_label": IGNORE_LABEL,
    }
    TOPS = ("precision", "recall", "f1", "map")

    def error(self, message):
        return ValueError("%s: %s" % (type(self).__name__, message))

    @reported
    def setup(self, bottom, top):
        self.params = parse_params(type(self).__name__, self.param_str, self.PARAMS)
        if len(bottom) != 2:
            raise self.error("takes 2 bottoms (scores, labels), got %d" % len(bottom))
        if not 1 <= len(top) <= 4:
            raise self.error("has 1 to 4 tops (precision@k, recall@k, F1@k, mAP), got %d" % len(top))

    @reported
    def reshape(self, bottom, top):
        scores, labels = bottom[0].data.shape, bottom[1].data.shape
        try:
            F.split_axis(scores, self.params["axis"])
        except ValueError as exc:
            raise self.error("%s; set 'axis' to the class axis of the scores" % exc)
        if scores != labels:
            raise self.error("bottom[1] (labels) has shape %s but bottom[0] (scores) has shape %s"
                             % (labels, scores))
        for i in range(len(top)):
            top[i].reshape()

    @reported
    def forward(self, bottom, top):
        axis = self.params["axis"] % bottom[0].data.ndim
        scores = np.moveaxis(bottom[0].data, axis, -1).reshape(-1, bottom[0].data.shape[axis])
        labels = np.moveaxis(bottom[1].data, axis, -1).reshape(scores.shape)
        values = metrics.topk_scores(scores, labels, self.params["k"], self.params["ignore_label"])
        if len(top) > 3:
            values += (metrics.mean_average_precision(scores, labels, self.params["ignore_label"]),)
        for i in range(len(top)):
            top[i].data[...] = values[i]

    def backward(self, top, propagate_down, bottom):
        pass  # a metric: nothing to propagate
