"""The losses as plain functions and classes, no Caffe needed.

Each function returns ``(loss, grad)`` for a top diff of 1; each class keeps its
buffers from one call to the next (``forward`` then ``backward``), as the layers use
it. The definitions, with their formulas, live in :mod:`caffe_losses.losses`.
"""
from .losses.asymmetric import Asymmetric, asymmetric_loss
from .losses.cross_entropy import CrossEntropy, cross_entropy
from .losses.distillation import Distillation, distillation_loss
from .losses.multilabel_softmax import MultiLabelSoftmax, multilabel_softmax_loss
from .losses.sigmoid import (SigmoidCrossEntropy, SigmoidFocal, sigmoid_cross_entropy,
                             sigmoid_focal_loss)
from .losses.softmax import (SoftmaxCrossEntropy, SoftmaxFocal, softmax_cross_entropy,
                             softmax_focal_loss)
from .losses.zlpr import ZLPR, zlpr_loss

__all__ = ["Asymmetric", "CrossEntropy", "Distillation", "MultiLabelSoftmax",
           "SigmoidCrossEntropy", "SigmoidFocal", "SoftmaxCrossEntropy", "SoftmaxFocal", "ZLPR",
           "asymmetric_loss", "cross_entropy", "distillation_loss", "multilabel_softmax_loss",
           "sigmoid_cross_entropy", "sigmoid_focal_loss", "softmax_cross_entropy",
           "softmax_focal_loss", "zlpr_loss"]
