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
"""
import functools
import sys
import warnings

import caffe
import numpy as np

from . import functional as F
from .params import Param, integer, one_of, parse_params

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
            sys.stderr.write("caffe_losses: %s: %s\n" % (type(exc).__name__, exc))
            sys.stderr.flush()
            raise
    return wrapper


class LossLayer(caffe.Layer):
    """What every loss layer shares: parameters, bottom checks, top-diff scaling.

    A subclass declares ``PARAMS`` ({key: Param}), ``BOTTOMS`` (names of the
    required bottoms, then the optional ones in ``OPTIONAL_BOTTOMS``) and
    implements ``check_shapes(shapes)`` and ``loss(bottom_arrays)``, which
    returns ``(loss, grad)`` for a top diff of 1.
    """

    PARAMS = {}
    BOTTOMS = ("scores", "labels")
    OPTIONAL_BOTTOMS = ("weights",)

    def error(self, message):
        return ValueError("%s: %s" % (type(self).__name__, message))

    @reported
    def setup(self, bottom, top):
        self.params = parse_params(type(self).__name__, self.param_str, self.PARAMS)
        lo = len(self.BOTTOMS)
        hi = lo + len(self.OPTIONAL_BOTTOMS)
        if not lo <= len(bottom) <= hi:
            names = ", ".join(self.BOTTOMS + tuple("[%s]" % n for n in self.OPTIONAL_BOTTOMS))
            raise self.error("takes %d to %d bottoms (%s), got %d; fix the layer's bottom lines"
                             % (lo, hi, names, len(bottom)))
        if len(top) != 1:
            raise self.error("has one top (the loss), got %d" % len(top))
        self._checked_loss_weight = False
        self._grad = None

    @reported
    def reshape(self, bottom, top):
        shapes = [tuple(bottom[i].data.shape) for i in range(len(bottom))]
        self.check_shapes(shapes)
        top[0].reshape()  # a scalar, as Caffe's own loss layers
        if self._grad is None or self._grad.shape != shapes[0]:
            self._grad = np.zeros(shapes[0], dtype=np.float32)

    @reported
    def forward(self, bottom, top):
        arrays = [bottom[i].data for i in range(len(bottom))]
        try:
            loss, grad = self.loss(arrays)
        except ValueError as exc:
            raise self.error(str(exc)) from None
        top[0].data[...] = loss
        self._grad[...] = grad
        if not self._checked_loss_weight and self.phase == TRAIN:
            self._checked_loss_weight = True
            if top[0].diff.flat[0] == 0:
                warnings.warn(
                    "%s: the top has loss weight 0, so Caffe never calls backward and the net "
                    "does not learn from this loss. Python layers get no default loss weight: "
                    "add 'loss_weight: 1' to the layer in the prototxt." % type(self).__name__,
                    stacklevel=2)

    @reported
    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.multiply(self._grad, top[0].diff.flat[0], out=bottom[0].diff)
        # Labels and weights get no gradient; with force_backward Caffe still
        # asks for one, so leave their diff at zero.
        for i in range(1, len(bottom)):
            if propagate_down[i]:
                bottom[i].diff[...] = 0

    # -- helpers for check_shapes ---------------------------------------------
    def check_class_axis(self, shape):
        try:
            return F.split_axis(shape, self.params["axis"])
        except ValueError as exc:
            raise self.error("%s; set 'axis' to the class axis of the scores" % exc)

    def check_weights_shape(self, shapes):
        if len(shapes) <= len(self.BOTTOMS):
            return
        scores, weights = shapes[0], shapes[len(self.BOTTOMS)]
        outer, _, inner = F.split_axis(scores, self.params["axis"])
        count = int(np.prod(weights, dtype=np.int64))
        if count not in (scores[0], outer * inner):
            raise self.error(
                "bottom[%d] (weights) has shape %s (%d values) but scores have shape %s: give one "
                "weight per sample (%d values) or per location (%d values, e.g. N x 1 x H x W)"
                % (len(self.BOTTOMS), weights, count, scores, scores[0], outer * inner))


class MultiLabelSoftmaxLoss(LossLayer):
    """Softmax cross-entropy with multi-hot or real-valued labels.

    Bottoms: scores, labels of the same shape, optional weights (per sample or
    per location). See :func:`caffe_losses.functional.multilabel_softmax_loss`.
    """

    PARAMS = {
        "axis": Param(1, integer(), "class axis of scores and labels"),
        "target": Param("sum", one_of(*F.TARGETS),
                        "labels divided by their sum, or by the number of non-zero labels"),
        "normalization": Param("batch_size", one_of(*F.NORMALIZATIONS),
                               "divisor of the summed loss, as Caffe's LossParameter"),
    }

    def check_shapes(self, shapes):
        self.check_class_axis(shapes[0])
        if shapes[1] != shapes[0]:
            raise self.error("bottom[1] (labels) has shape %s but bottom[0] (scores) has shape %s; "
                             "multi-label targets need one label per score" % (shapes[1], shapes[0]))
        self.check_weights_shape(shapes)

    def loss(self, arrays):
        weights = arrays[2] if len(arrays) > 2 else None
        p = self.params
        return F.multilabel_softmax_loss(arrays[0], arrays[1], weights, axis=p["axis"],
                                         target=p["target"], normalization=p["normalization"])
