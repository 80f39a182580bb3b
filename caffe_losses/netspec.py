"""NetSpec helpers: one function per layer, emitting the ``Python`` layer with its ``param_str``.

    from caffe import layers as L, NetSpec
    from caffe_losses import netspec as CL

    n = NetSpec()
    n.data, n.label = L.HDF5Data(hdf5_data_param=dict(source="train.txt", batch_size=64), ntop=2)
    n.score = L.InnerProduct(n.data, num_output=10)
    n.loss = CL.multilabel_softmax_loss(n.score, n.label, normalization="valid")
    print(n.to_proto())

    # or images from a list file: n.data, n.label = CL.multilabel_image_data(
    #     source="train.txt", num_classes=10, batch_size=64, phase="TRAIN")

There is one helper per row of :mod:`caffe_losses.table`, named as the layer in snake
case (``MultiLabel`` is one word: ``multilabel_softmax_loss``). Parameters are the
layer's ``param_str`` keys; they are checked when the net is written (a typo raises
:class:`~caffe_losses.params.ParamError` here, not when Caffe loads the net).
``loss_weight`` defaults to 1, which Python layers otherwise lack.
"""
import re

from . import table


def helper_name(layer):
    """The helper's name for a layer name: ``SigmoidFocalLoss`` -> ``sigmoid_focal_loss``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", layer).lower().replace("multi_label", "multilabel")


def python_layer(row, bottoms, params, ntop=1, **extra):
    """A ``Python`` layer of this package for ``row``, its ``param_str`` checked now."""
    from caffe import layers as L
    row.parse(repr(params))
    python_param = dict(module="caffe_losses", layer=row.name)
    if params:
        python_param["param_str"] = repr(params)
    return L.Python(*bottoms, python_param=python_param, ntop=ntop, **extra)


def _loss_helper(row):
    def helper(scores, labels, weights=None, loss_weight=1, **params):
        bottoms = (scores, labels) if weights is None else (scores, labels, weights)
        extra = {} if loss_weight is None else {"loss_weight": loss_weight}
        return python_layer(row, bottoms, params, **extra)
    helper.__doc__ = "%s; params: %s." % (row.name, ", ".join(row.params))
    return helper


def _metric_helper(row):
    def helper(scores, labels, ntop=None, phase="TEST", **params):
        import caffe
        extra = {} if phase is None else {"include": dict(phase=getattr(caffe, phase))}
        if ntop is None:  # a top per metric named in params, else per default metric
            ntop = len(row.cls(**row.parse(repr(params))).TOPS)
        return python_layer(row, (scores, labels), params, ntop=ntop, **extra)
    helper.__doc__ = "%s (TEST phase by default); tops %s by default; params: %s." % (
        row.name, ", ".join(row.cls.TOPS), ", ".join(row.params))
    return helper


def _data_helper(row):
    def helper(ntop=len(row.cls.TOPS), phase=None, **params):
        import caffe
        extra = {} if phase is None else {"include": dict(phase=getattr(caffe, phase))}
        return python_layer(row, (), params, ntop=ntop, **extra)
    helper.__doc__ = "%s (both phases unless phase is 'TRAIN' or 'TEST'); tops %s; params: %s." % (
        row.name, ", ".join(row.cls.TOPS), ", ".join(row.params))
    return helper


MAKERS = {"loss": _loss_helper, "metric": _metric_helper, "data": _data_helper}
HELPERS = {}
for _row in table.LAYERS:
    _helper = MAKERS[_row.kind](_row)
    _helper.__name__ = helper_name(_row.name)
    HELPERS[_helper.__name__] = _helper
globals().update(HELPERS)
__all__ = sorted(HELPERS)
