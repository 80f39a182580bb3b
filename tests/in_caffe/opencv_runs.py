"""Run a deploy net in OpenCV's DNN module (cv2.dnn.readNetFromCaffe, Debian 11's OpenCV 4.5)
with the weights of a Caffe net, for the tests that compare the two."""
import os
import tempfile

import cv2
import numpy as np
import pytest
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from caffe_losses import prototxt


def opencv_name(net_param, blob, opencv):
    """The name OpenCV gives the layer that last writes ``blob``: its own, with "_1", "_2"
    added to the second and third layer of one name, as OpenCV's Caffe importer does; OpenCV
    4.5 names a Convolution after its top instead. Only a layer's first top is compared."""
    names = [l.name for l in net_param.layer]
    last = max(i for i, l in enumerate(net_param.layer) if blob in l.top)
    assert net_param.layer[last].top[0] == blob, "%s is not the first top of its layer" % blob
    repeats = names[:last].count(names[last])
    for name in (names[last] if not repeats else "%s_%d" % (names[last], repeats), blob):
        if opencv.getLayerId(name) >= 0:
            return name
    raise AssertionError("OpenCV has no layer for the blob %s" % blob)


def opencv_outputs(text, caffe_net, feeds):
    """The outputs of the deploy net ``text`` run by OpenCV on ``feeds`` ({input: array}), with
    ``caffe_net``'s weights (saved to a caffemodel), as {Caffe output blob: array}."""
    folder = tempfile.mkdtemp()
    proto, model = os.path.join(folder, "deploy.prototxt"), os.path.join(folder, "weights.caffemodel")
    with open(proto, "w") as f:
        f.write(text)
    caffe_net.save(model)
    try:
        net = cv2.dnn.readNetFromCaffe(proto, model)
        for name, value in feeds.items():
            net.setInput(np.ascontiguousarray(value, dtype=np.float32), name)
        param = text_format.Merge(text, caffe_pb2.NetParameter())
        results = net.forward([opencv_name(param, blob, net) for blob in caffe_net.outputs])
    finally:
        for path in (proto, model):
            os.remove(path)
        os.rmdir(folder)
    return dict(zip(caffe_net.outputs, results))


def assert_opencv_agrees(text, caffe_net, feeds, atol=1e-5):
    """OpenCV gives ``caffe_net``'s outputs (after its forward on ``feeds``) within ``atol``;
    or, where the tool warns that OpenCV cannot run the net, OpenCV fails on it."""
    warnings = prototxt.opencv_warnings(text_format.Merge(text, caffe_pb2.NetParameter()))
    if warnings:
        with pytest.raises(cv2.error):
            opencv_outputs(text, caffe_net, feeds)
        return warnings
    got = opencv_outputs(text, caffe_net, feeds)
    for name in caffe_net.outputs:
        expected = caffe_net.blobs[name].data
        assert np.asarray(got[name]).size == expected.size, (name, np.asarray(got[name]).shape, expected.shape)
        np.testing.assert_allclose(np.asarray(got[name]).reshape(expected.shape), expected, rtol=1e-5,
                                   atol=atol, err_msg="OpenCV's %s" % name)
    return warnings
