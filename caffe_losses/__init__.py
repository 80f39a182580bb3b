"""Cross-entropy losses for Caffe: pure numpy math and pycaffe Python layers.

``caffe_losses.functional`` works anywhere numpy does. The layer classes are
exported here when pycaffe can be imported, so that a prototxt can say::

    python_param { module: "caffe_losses" layer: "MultiLabelSoftmaxLoss" }
"""
__version__ = "0.1.0"

from . import functional  # noqa: F401
from .functional import multilabel_softmax_loss  # noqa: F401
from .params import ParamError  # noqa: F401

LAYERS = ("MultiLabelSoftmaxLoss",)

try:
    import caffe  # noqa: F401
except ImportError:
    HAVE_CAFFE = False
else:
    HAVE_CAFFE = True
    from .layers import MultiLabelSoftmaxLoss  # noqa: F401
