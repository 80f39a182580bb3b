"""Build small real Caffe nets from prototxt text for the tests."""
import os
import tempfile

import caffe
import numpy as np

caffe.set_mode_cpu()


def input_layer(name, shape):
    dims = " ".join("dim: %d" % d for d in shape)
    return 'layer { name: "%s" type: "Input" top: "%s" input_param { shape { %s } } }\n' % (
        name, name, dims)


def python_loss(layer, bottoms, param_str="", loss_weight=1.0, top="loss"):
    lines = ['layer { name: "%s" type: "Python"' % top]
    lines += ['  bottom: "%s"' % b for b in bottoms]
    lines.append('  top: "%s"' % top)
    if loss_weight is not None:
        lines.append("  loss_weight: %r" % loss_weight)
    lines.append('  python_param { module: "caffe_losses" layer: "%s" param_str: "%s" } }'
                 % (layer, param_str.replace('"', '\\"')))
    return "\n".join(lines) + "\n"


def make_net(text, phase=caffe.TRAIN):
    """A caffe.Net from prototxt text (written to a temporary file)."""
    fd, path = tempfile.mkstemp(suffix=".prototxt")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    try:
        return caffe.Net(path, phase)
    finally:
        os.remove(path)


def loss_net(layer, inputs, param_str="", loss_weight=1.0, extra="", force_backward=True):
    """A net of Input layers named after ``inputs`` ({name: array}) feeding one Python loss."""
    text = "force_backward: %s\n" % ("true" if force_backward else "false")
    text += "".join(input_layer(name, array.shape) for name, array in inputs.items())
    text += python_loss(layer, list(inputs), param_str, loss_weight)
    text += extra
    net = make_net(text)
    for name, array in inputs.items():
        net.blobs[name].data[...] = array
    return net


def run(net, blob="loss"):
    """Forward and backward once; return the float loss value of ``blob``."""
    out = net.forward()
    net.backward()
    return float(out[blob])


def numeric_net_gradient(net, blob, top="loss", step=1e-2):
    """Central finite differences of the top's value with respect to ``net.blobs[blob].data``."""
    data = net.blobs[blob].data
    grad = np.zeros(data.shape, dtype=np.float64)
    for i in np.ndindex(*data.shape):
        old = float(data[i])
        data[i] = old + step
        up = float(net.forward()[top])
        data[i] = old - step
        down = float(net.forward()[top])
        data[i] = old
        grad[i] = (up - down) / (2 * step)
    net.forward()
    return grad
