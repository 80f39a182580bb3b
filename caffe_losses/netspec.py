"""NetSpec helpers: one function per layer, emitting the ``Python`` layer with its ``param_str``.

    from caffe import layers as L, NetSpec
    from caffe_losses import netspec as CL

    n = NetSpec()
    n.data, n.label = L.HDF5Data(hdf5_data_param=dict(source="train.txt", batch_size=64), ntop=2)
    n.score = L.InnerProduct(n.data, num_output=10)
    n.loss = CL.multilabel_softmax_loss(n.score, n.label, normalization="valid")
    print(n.to_proto())

Parameters are the layer's ``param_str`` keys; they are checked when the net is written
(a typo raises :class:`~caffe_losses.params.ParamError` here, not when Caffe loads the
net). ``loss_weight`` defaults to 1, which Python layers otherwise lack.
"""
from .params import parse_params


def _python_layer(layer, bottoms, loss_weight, params, ntop=1, **extra):
    from caffe import layers as L
    from . import layers
    cls = getattr(layers, layer)
    parse_params(layer, repr(params), cls.PARAMS)
    python_param = dict(module="caffe_losses", layer=layer)
    if params:
        python_param["param_str"] = repr(params)
    if loss_weight is not None:
        extra["loss_weight"] = loss_weight
    return L.Python(*bottoms, python_param=python_param, ntop=ntop, **extra)


def _bottoms(scores, labels, weights):
    return (scores, labels) if weights is None else (scores, labels, weights)


def multilabel_softmax_loss(scores, labels, weights=None, loss_weight=1, **params):
    """MultiLabelSoftmaxLoss; params: axis, target, normalization."""
    return _python_layer("MultiLabelSoftmaxLoss", _bottoms(scores, labels, weights), loss_weight, params)


def sigmoid_cross_entropy_loss(scores, labels, weights=None, loss_weight=1, **params):
    """SigmoidCrossEntropyLoss; params: axis, ignore_label, pos_weight, class_weight, normalization."""
    return _python_layer("SigmoidCrossEntropyLoss", _bottoms(scores, labels, weights), loss_weight, params)


def sigmoid_focal_loss(scores, labels, weights=None, loss_weight=1, **params):
    """SigmoidFocalLoss; params: axis, gamma, alpha, ignore_label, normalization."""
    return _python_layer("SigmoidFocalLoss", _bottoms(scores, labels, weights), loss_weight, params)


def softmax_cross_entropy_loss(scores, labels, weights=None, loss_weight=1, **params):
    """SoftmaxCrossEntropyLoss; params: axis, ignore_label, class_weight, label_smoothing, normalization."""
    return _python_layer("SoftmaxCrossEntropyLoss", _bottoms(scores, labels, weights), loss_weight, params)


def softmax_focal_loss(scores, labels, weights=None, loss_weight=1, **params):
    """SoftmaxFocalLoss; params: axis, gamma, alpha, ignore_label, normalization."""
    return _python_layer("SoftmaxFocalLoss", _bottoms(scores, labels, weights), loss_weight, params)


def cross_entropy_loss(probs, labels, weights=None, loss_weight=1, **params):
    """CrossEntropyLoss on probabilities; params: axis, mode, target, eps, ignore_label, normalization."""
    return _python_layer("CrossEntropyLoss", _bottoms(probs, labels, weights), loss_weight, params)


def multilabel_accuracy(scores, labels, ntop=4, phase="TEST", **params):
    """MultiLabelAccuracy (TEST phase by default); tops precision@k, recall@k, F1@k, mAP."""
    import caffe
    extra = {} if phase is None else {"include": dict(phase=getattr(caffe, phase))}
    return _python_layer("MultiLabelAccuracy", (scores, labels), None, params, ntop=ntop, **extra)
