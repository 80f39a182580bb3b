"""Cross-entropy losses for Caffe: numpy losses and pycaffe Python layers.

``caffe_losses.functional`` works anywhere numpy does. The layer classes, one per row
of :mod:`caffe_losses.table`, are exported here when pycaffe can be imported, so that
a prototxt can say::

    python_param { module: "caffe_losses" layer: "MultiLabelSoftmaxLoss" }
"""
__version__ = "0.1.0"

from . import functional, metrics, table  # noqa: F401
from .functional import (cross_entropy, multilabel_softmax_loss, sigmoid_cross_entropy,  # noqa: F401
                         sigmoid_focal_loss, softmax_cross_entropy, softmax_focal_loss)
from .params import ParamError  # noqa: F401

# the names of the layers, as the table's rows (table.LAYERS, LOSSES, METRICS, DATA)
LAYERS = tuple(row.name for row in table.LAYERS)
LOSSES = tuple(row.name for row in table.LOSSES)
METRICS = tuple(row.name for row in table.METRICS)
DATA = tuple(row.name for row in table.DATA)

__all__ = ["functional", "metrics", "table", "ParamError", "cross_entropy",
           "multilabel_softmax_loss", "sigmoid_cross_entropy", "sigmoid_focal_loss",
           "softmax_cross_entropy", "softmax_focal_loss"]

try:
    import caffe  # noqa: F401
except ImportError:
    HAVE_CAFFE = False
else:
    HAVE_CAFFE = True
    from .layers import CLASSES as _CLASSES
    globals().update(_CLASSES)
    __all__ += sorted(_CLASSES)
