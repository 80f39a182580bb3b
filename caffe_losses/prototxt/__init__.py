"""The prototxt tool as a library: read, upgrade, swap, deploy and check Caffe nets through
pycaffe's protobuf messages (``caffe.proto.caffe_pb2``), never regular expressions.

    from caffe_losses import prototxt

    notes = []
    net = prototxt.read_net("train_val.prototxt", notes)       # V1 nets upgraded
    notes += prototxt.swap(net, "SoftmaxFocalLoss", params={"gamma": 2})
    out = prototxt.deploy(net, input_shape=[1, 3, 224, 224])   # a new NetParameter
    prototxt.write_text(prototxt.net_text(out), "deploy.prototxt")

Every function raises :class:`PrototxtError` (one line naming the file, layer or option);
nothing here prints or exits: ``caffe_losses.cli`` is the command line.
"""
from .check import check, python_layer_problem  # noqa: F401
from .deploy import deploy  # noqa: F401
from .distill import distill  # noqa: F401
from .io import (PrototxtError, caffe_proto, net_text, output_problem, read_prototxt, write_bytes,  # noqa: F401
                 write_text)
from .teacher import read_caffemodel  # noqa: F401
from .net import TEST, TRAIN, NetState, describe, is_data_layer, is_loss, known_type  # noqa: F401
from .opencv import opencv_problem, opencv_warnings  # noqa: F401
from .swap import swap  # noqa: F401
from .upgrade import current, read_net, upgrade  # noqa: F401

