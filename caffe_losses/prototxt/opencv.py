"""What OpenCV's DNN module cannot take from a deploy net (``cv2.dnn.readNetFromCaffe``,
OpenCV 4.x; OpenCV 5 has no Caffe importer). Found by loading one-layer nets in OpenCV
4.5.1 (Debian 11's python3-opencv) and comparing their outputs with Caffe's:
tests/in_caffe/test_opencv_deploy.py checks every entry against OpenCV."""
from .deploy import plan
from .io import PrototxtError
from .net import describe
from .upgrade import current

# the layer types of Caffe (and of the Caffe forks that OpenCV follows: SSD, MobileNet,
# YOLO, R-FCN) that OpenCV 4.5's DNN module creates
OPENCV_TYPES = frozenset("""
AbsVal Axpy BNLL BatchNorm Concat Convolution ConvolutionDepthwise Crop Deconvolution
DetectionOutput Dropout ELU Eltwise Flatten Identity InnerProduct Input Interp LRN LSTM MVN
MaxUnpool Mish Normalize NormalizeBBox PReLU PSROIPooling Padding Permute Pooling Power
PriorBox Proposal ROIPooling ReLU ReLU6 Region Reorg Reshape Resize Scale Shift
ShuffleChannel Sigmoid Silence Slice Softmax Split Swish TanH""".split())
# parameters that OpenCV's copy of caffe.proto lacks: readNetFromCaffe cannot parse the file
UNKNOWN_FIELDS = (("clip_param", None), ("swish_param", None), ("pooling_param", "round_mode"))


def opencv_problem(layer):
    """Why OpenCV 4.x cannot run ``layer`` of a deploy net as Caffe does, or None."""
    for field, inner in UNKNOWN_FIELDS:
        if layer.HasField(field) and (inner is None or getattr(layer, field).HasField(inner)):
            return ("OpenCV's caffe.proto has no %s, so readNetFromCaffe cannot parse the file"
                    % (field if inner is None else field + "." + inner))
    if layer.type not in OPENCV_TYPES:
        return "OpenCV's Caffe importer has no %s layer" % layer.type
    if layer.type == "LSTM":
        return ("OpenCV's LSTM layer does not take Caffe's (its weights' layout and the sequence "
                "continuation input)")
    if layer.type == "InnerProduct" and layer.inner_product_param.transpose:
        return "OpenCV ignores inner_product_param.transpose and computes wrong outputs"
    if layer.type == "BatchNorm" and layer.batch_norm_param.HasField("use_global_stats") \
            and not layer.batch_norm_param.use_global_stats:
        return ("with use_global_stats: false OpenCV computes batch statistics only for a batch "
                "of 1 (Caffe for any batch)")
    if layer.type == "Input" and any(len(s.dim) in (1, 3) for s in layer.input_param.shape):
        return ("OpenCV's Python binding turns a %s numpy array into a 2-D image with channels, so "
                "cv2's setInput cannot feed this input (C++ can)" % " or ".join(
                    sorted({"%d-D" % len(s.dim) for s in layer.input_param.shape if len(s.dim) in (1, 3)})))
    return None


def opencv_warnings(net, stages=None, level=None):
    """One sentence per layer of ``net``'s deploy net (``net`` itself if it has no losses and
    no data layers other than Inputs) that OpenCV 4.x cannot run as Caffe does; none when no
    deploy net can be made without more options (deploy says why)."""
    net = current(net)
    try:
        inputs, items = plan(net, stages=stages, level=level)
    except PrototxtError:
        return []
    layers = [l for l in net.layer if l.type == "Input" and set(l.top) & set(inputs)]
    layers += [item for what, item in items if what == "layer"]
    return ["layer %s: %s" % (describe(l), reason) for l in layers for reason in [opencv_problem(l)] if reason]
