"""Cross-entropy losses for Caffe: pure numpy math and pycaffe Python layers.

``caffe_losses.functional`` works anywhere numpy does. The layer classes are
exported here when pycaffe can be imported, so that a prototxt can say::

    python_param { module: "caffe_losses" layer: "MultiLabelSoftmaxLoss" }
"""
__version__ = "0.1.0"

from . import functional  # noqa: F401
from .functional import (cross_entropy, multilabel_softmax_loss, sigmoid_cross_entropy,  # noqa: F401
                         sigmoid_focal_loss, softmax_cross_entropy, softmax_focal_loss)
from . import metrics  # noqa: F401
from .params import ParamError  # noqa: F401

LAYERS = ("MultiLabelSoftmaxLoss", "SigmoidCrossEntropyLoss", "SigmoidFocalLoss",
          "SoftmaxCrossEntropyLoss", "SoftmaxFocalLoss", "CrossEntropyLoss")
METRICS = ("MultiLabelAccuracy",)

try:
    import caffe  # noqa: F401
except ImportError:
    HAVE_CAFFE = False
else:
    HAVE_CAFFE = True
    from .layers import (CrossEntropyLoss, MultiLabelAccuracy, MultiLabelSoftmaxLoss,  # noqa: F401
                         SigmoidCrossEntropyLoss, SigmoidFocalLoss, SoftmaxCrossEntropyLoss,
                         SoftmaxFocalLoss)
