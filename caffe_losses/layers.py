"""Thin ``caffe.Layer`` adapters: one class per row of the table of layers.

Use from prototxt (the top is a loss only with an explicit ``loss_weight``: Caffe gives
Python layers none by default)::

    layer {
      name: "loss" type: "Python"
      bottom: "score" bottom: "label"
      top: "loss"
      loss_weight: 1
      python_param { module: "caffe_losses" layer: "MultiLabelSoftmaxLoss"
                     param_str: "{'normalization': 'valid'}" }
    }

A loss layer takes scores (or probabilities), labels and an optional weights bottom;
its ``param_str`` keys are its row's ``params``, which are exactly the keyword
arguments of its loss class. ``setup`` parses them once, ``reshape`` checks the bottom
shapes when they change, ``forward`` and ``backward`` call the loss class's. A metric
layer (``MetricLayer``) has no backward; a data layer (``DataLayer``, e.g.
MultiLabelImageData) has no bottoms, and its ``forward`` copies a batch that worker
processes (or threads) made.
"""
import functools
import sys
import warnings
import weakref

import caffe
import numpy as np

from . import table
from .core import label_shape_error, split_axis
from .params import ParamError

TRAIN = 0


def report(exc):
    """Write a layer's exception to stderr before it propagates.

    Under the ``caffe`` CLI a Python exception becomes a C++ ``error_already_set`` that
    aborts the process without printing it; this keeps the reason in the training log.
    (pycaffe shows it again as usual.)
    """
    sys.stderr.write("caffe_losses: %s: %s\n" % (type(exc).__name__, exc))
    sys.stderr.flush()


class Adapter(caffe.Layer):
    """A layer of the table: a subclass sets ``ROW``, its row."""

    ROW = None

    def error(self, message):
        return ValueError("%s: %s" % (self.ROW.name, message))


class LossLayer(Adapter):
    """What every loss layer shares: parameters, bottom checks, top-diff scaling."""

    def setup(self, bottom, top):
        try:
            self.params = self.ROW.parse(self.param_str)
            if not 2 <= len(bottom) <= 3:
                raise self.error("takes 2 or 3 bottoms (%s, %s, [%s]), got %d; fix the layer's "
                                 "bottom lines" % (self.ROW.bottoms + (len(bottom),)))
            if len(top) != 1:
                raise self.error("has one top (the loss), got %d" % len(top))
            self.loss = self.ROW.cls(**self.params)
            self._checked_loss_weight = False
            self._warned_empty = False
            self._shapes = None
        except Exception as exc:
            report(exc)
            raise

    # reshape, forward and backward catch and report inline rather than through a shared
    # wrapper: on small blobs each extra Python call shows
    def reshape(self, bottom, top):
        # Caffe calls reshape right before every forward, with the same blobs: the arrays
        # are read once here for both
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
                    "the labels if it is not expected." % (self.ROW.name, self.ROW.counted))
            if not self._checked_loss_weight and self.phase == TRAIN:
                self._checked_loss_weight = True
                if top[0].diff.flat[0] == 0:
                    warnings.warn(
                        "%s: the top has loss weight 0, so Caffe never calls backward and the net "
                        "does not learn from this loss. Python layers get no default loss weight: "
                        "add 'loss_weight: 1' to the layer in the prototxt." % self.ROW.name)
        except Exception as exc:
            report(exc)
            raise

    def backward(self, top, propagate_down, bottom):
        try:
            if propagate_down[0]:
                diff, ws = bottom[0].diff, self.loss.ws
                self.loss.backward(diff if diff.shape == ws else diff.reshape(ws),
                                   top[0].diff.item())
            # Labels, weights and a teacher's scores get no gradient; with force_backward
            # Caffe still asks for one, so leave their diff at zero
            for i in range(1, len(bottom)):
                if propagate_down[i]:
                    bottom[i].diff[...] = 0
        except Exception as exc:
            report(exc)
            raise

    def check_shapes(self, shapes):
        """Bottom shapes against the row's label kind and weights; once per new shape."""
        row, scores = self.ROW, shapes[0]
        try:
            outer, classes, inner = split_axis(scores, self.params["axis"])
        except ValueError as exc:
            raise self.error("%s; set 'axis' to the class axis of the scores" % exc)
        if row.labels == "scores":
            # bottom[1] holds a second blob of scores, bottom[2] labels whose kind the loss's
            # parameters choose: the loss checks them, with the messages of its forward
            try:
                return self.loss.check_inputs(shapes)
            except ValueError as exc:
                raise self.error(str(exc)) from None
        error = label_shape_error(shapes[1], scores, self.params["axis"], row.labels == "sparse",
                                  row.inputs)
        if error:
            raise self.error(error)
        if len(shapes) > 2:
            weights = shapes[2]
            count = int(np.prod(weights, dtype=np.int64))
            accepted = [scores[0], outer * inner]
            text = "one weight per sample (%d values) or per location (%d values, N x 1 x H x W)" % (
                accepted[0], accepted[1])
            if row.per_element_weights:
                accepted.append(outer * classes * inner)
                text += " or per element (%d values)" % accepted[2]
            if count not in accepted or (count == scores[0] != 0 and outer % scores[0]):
                raise self.error("bottom[2] (weights) has shape %s (%d values) but %s have "
                                 "shape %s: give %s" % (weights, count, row.inputs, scores, text))
        for key in row.per_class:
            value = self.params[key]
            if isinstance(value, tuple) and len(value) != classes:
                raise ParamError("%s: param_str key %r has %d values but the scores have %d "
                                 "classes (axis %d); give one number or one per class"
                                 % (row.name, key, len(value), classes, self.params["axis"]))


class MetricLayer(Adapter):
    """A metric for the TEST phase: bottoms scores and labels of the same shape; 1 to
    len(TOPS) tops, the metric's ``TOPS`` (its instance's, which a ``metrics`` key may
    set) filled in that order. No backward: give it no ``loss_weight``."""

    def setup(self, bottom, top):
        try:
            self.params = self.ROW.parse(self.param_str)
            self.metric = self.ROW.cls(**self.params)
            tops = self.metric.TOPS
            if len(bottom) != 2:
                raise self.error("takes 2 bottoms (scores, labels), got %d" % len(bottom))
            if not 1 <= len(top) <= len(tops):
                raise self.error("has 1 to %d tops (%s), got %d"
                                 % (len(tops), ", ".join(tops), len(top)))
        except Exception as exc:
            report(exc)
            raise

    def reshape(self, bottom, top):
        try:
            scores, labels = bottom[0].data.shape, bottom[1].data.shape
            try:
                split_axis(scores, self.params["axis"])
            except ValueError as exc:
                raise self.error("%s; set 'axis' to the class axis of the scores" % exc)
            if scores != labels:
                raise self.error("bottom[1] (labels) has shape %s but bottom[0] (scores) has "
                                 "shape %s" % (labels, scores))
            for i in range(len(top)):
                top[i].reshape()
        except Exception as exc:
            report(exc)
            raise

    def forward(self, bottom, top):
        try:
            values = self.metric(bottom[0].data, bottom[1].data, len(top))
            for i, value in enumerate(values):
                top[i].data[...] = value
        except Exception as exc:
            report(exc)
            raise

    def backward(self, top, propagate_down, bottom):
        pass  # a metric: nothing to propagate


class DataLayer(Adapter):
    """A data layer: no bottoms; the row's class (``ROW.cls``, e.g.
    :class:`caffe_losses.data.ImageBatches`) makes the batches in worker processes that
    ``setup`` starts, and ``forward`` only copies the next one into the tops (1 to
    ``len(cls.TOPS)`` of them: data, then labels).

    Two attributes stay, for code that finds the layer in ``net.layers`` (the training
    script): ``images``, the number of images in its list, and ``batch_size``. In TRAIN
    under several solvers (``caffe.set_solver_count``) it reads its rank's share of the
    list (docs/data.md)."""

    def setup(self, bottom, top):
        try:
            self.params = self.ROW.parse(self.param_str)
            tops = self.ROW.cls.TOPS
            if len(bottom):
                raise self.error("takes no bottoms, got %d; remove the layer's bottom lines"
                                 % len(bottom))
            if not 1 <= len(top) <= len(tops):
                raise self.error("has 1 to %d tops (%s), got %d"
                                 % (len(tops), ", ".join(tops), len(top)))
            train = self.phase == TRAIN
            shard = (caffe.solver_rank(), caffe.solver_count()) if train else (0, 1)
            self.batches = self.ROW.cls(train=train, shard=shard, **self.params)
            self.images, self.batch_size = self.batches.images, self.batches.batch_size
            for i in range(len(top)):
                top[i].reshape(*self.batches.shapes[i])
            self.batches.start(alive=functools.partial(in_a_net, weakref.ref(self)))
        except Exception as exc:
            report(exc)
            raise

    def reshape(self, bottom, top):
        pass  # the tops' shapes are set once, in setup

    def forward(self, bottom, top):
        try:
            self.batches.next([top[i].data for i in range(len(top))])
        except Exception as exc:
            report(exc)
            raise

    def backward(self, top, propagate_down, bottom):
        pass  # no bottoms


def in_a_net(ref):
    """Whether the Python layer ``ref`` refers to is still held by a net.

    Caffe's ``PythonLayer`` and its Python object hold each other, so the object is never
    freed (nor its ``__del__`` called), even when its net is gone: a data layer's workers
    would run on. A net holds one reference; once it lets go, the cycle's own
    reference is the only one left besides the two made here. (A traceback that holds
    a frame of the layer's methods counts too; an error in ``forward`` ends the workers
    itself.)
    """
    layer = ref()
    return layer is not None and sys.getrefcount(layer) > 3  # `layer`, the argument, the cycle


def adapter(row):
    """The ``caffe.Layer`` class of a row of the table, named as the layer."""
    base = {"loss": LossLayer, "metric": MetricLayer, "data": DataLayer}[row.kind]
    doc = "The %s layer: see :class:`%s.%s`." % (row.name, row.cls.__module__, row.cls.__name__)
    # PARAMS and LABELS: the row's, for code that inspects a layer class
    return type(row.name, (base,), {"ROW": row, "PARAMS": row.params, "LABELS": row.labels,
                                    "__doc__": doc, "__module__": __name__})


CLASSES = {row.name: adapter(row) for row in table.LAYERS}
globals().update(CLASSES)
