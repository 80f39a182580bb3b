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
case (``MultiLabel`` is one word, and so is an acronym: ``multilabel_softmax_loss``,
``zlpr_loss``). Parameters are the layer's ``param_str`` keys, numbers and lists or numpy
values; they are checked when the net is written (a typo raises
:class:`~caffe_losses.params.ParamError` here, with the nearest key, not when Caffe loads
the net). ``loss_weight`` defaults to 1, which Python layers otherwise lack. ``phase``
(``caffe.TRAIN``, ``caffe.TEST`` or their names, in any case) adds an ``include`` rule.
"""
import re

from . import table
from .params import ParamError, plain

PHASES = ("TRAIN", "TEST")  # caffe.TRAIN is 0, caffe.TEST 1


def helper_name(layer):
    """The helper's name for a layer name: ``SigmoidFocalLoss`` -> ``sigmoid_focal_loss``;
    an acronym is one word (``ZLPRLoss`` -> ``zlpr_loss``), and so is ``MultiLabel``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", layer).lower()
    return words.replace("multi_label", "multilabel")


def include(row, phase):
    """The ``include`` rule of a phase given as ``caffe.TRAIN``/``caffe.TEST`` or by name
    (any case); none for None (both phases)."""
    if phase is None:
        return {}
    value = plain(phase)
    name = value.upper() if isinstance(value, str) else (
        PHASES[value] if value in (0, 1) and not isinstance(value, bool) else None)
    if name not in PHASES:
        raise ParamError("%s: phase must be 'TRAIN' or 'TEST' (or caffe.TRAIN, caffe.TEST), or "
                         "None for both phases; got %r" % (row.name, phase))
    import caffe
    return {"include": dict(phase=getattr(caffe, name))}


def python_layer(row, bottoms, params, keywords, ntop=1, **extra):
    """A ``Python`` layer of this package for ``row``, its ``param_str`` checked now.
    ``keywords``: the helper's own, suggested for a misspelled one."""
    from caffe import layers as L
    params = {key: plain(value) for key, value in params.items()}
    row.validate(params, also=keywords)
    python_param = dict(module="caffe_losses", layer=row.name)
    if params:
        python_param["param_str"] = repr(params)
    return L.Python(*bottoms, python_param=python_param, ntop=plain(ntop), **extra)


def _loss_helper(row):
    def helper(scores, labels, weights=None, loss_weight=1, phase=None, **params):
        bottoms = (scores, labels) if weights is None else (scores, labels, weights)
        extra = include(row, phase)
        if loss_weight is not None:
            extra["loss_weight"] = plain(loss_weight)
        return python_layer(row, bottoms, params, ("weights", "loss_weight", "phase"), **extra)
    helper.__doc__ = "%s (both phases unless phase is 'TRAIN' or 'TEST'); params: %s." % (
        row.name, ", ".join(row.params))
    return helper


def _metric_helper(row):
    def helper(scores, labels, ntop=None, phase="TEST", **params):
        extra = include(row, phase)
        if ntop is None:  # a top per metric named in params, else per default metric
            checked = row.validate({key: plain(value) for key, value in params.items()},
                                   also=("ntop", "phase"))
            ntop = len(row.cls(**checked).TOPS)
        return python_layer(row, (scores, labels), params, ("ntop", "phase"), ntop=ntop, **extra)
    helper.__doc__ = "%s (TEST phase by default); tops %s by default; params: %s." % (
        row.name, ", ".join(row.cls.TOPS), ", ".join(row.params))
    return helper


def _data_helper(row):
    def helper(ntop=len(row.cls.TOPS), phase=None, **params):
        return python_layer(row, (), params, ("ntop", "phase"), ntop=ntop, **include(row, phase))
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
