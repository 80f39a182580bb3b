"""The table of layers: the one list of every layer this package provides.

Each row (a :class:`caffe_losses.params.Layer`) comes from the module that defines the
layer: the loss modules in :mod:`caffe_losses.losses`, :mod:`caffe_losses.metrics` and
:mod:`caffe_losses.data`.
The Caffe adapters (:mod:`caffe_losses.layers`), the NetSpec helpers, the prototxt
tool, ``caffe_losses.__all__``, the tests and the benchmarks all read it.
"""
from . import data, metrics
from .losses import layer_rows

LAYERS = tuple(layer_rows()) + tuple(metrics.LAYERS) + tuple(data.LAYERS)
BY_NAME = {row.name: row for row in LAYERS}
LOSSES = tuple(row for row in LAYERS if row.kind == "loss")
METRICS = tuple(row for row in LAYERS if row.kind == "metric")
DATA = tuple(row for row in LAYERS if row.kind == "data")


def get(name):
    """The row of a layer name; KeyError naming the layers that exist."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError("no layer %r in caffe_losses; the layers are %s"
                       % (name, ", ".join(sorted(BY_NAME))))
