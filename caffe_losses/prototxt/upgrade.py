"""Old net formats upgraded as Caffe upgrades them when it loads a net (the rules of
src/caffe/util/upgrade_proto.cpp, which ``upgrade_net_proto_text`` applies too): V1
``layers { type: SOFTMAX_LOSS ... }``, transformation fields inside data parameters, the
net's ``input`` fields, BatchNorm layers with three learned parameters. pycaffe has no call
for it. V0 nets (``layers { layer { ... } }``, from 2014) are refused with the tool to use."""
from .io import PrototxtError, caffe_proto, read_prototxt

# Caffe's V1 layer type enum and the type name each became
V1_TYPES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN", "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold"}
# the data layers whose parameters once held the transformation fields, and those fields
OLD_TRANSFORM = {"DATA": "data_param", "IMAGE_DATA": "image_data_param", "WINDOW_DATA": "window_data_param"}
TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def read_net(path, notes=None):
    """The NetParameter of the prototxt file ``path``, upgraded as Caffe upgrades it when it
    loads it; ``notes``, a list, receives one note per upgrade, naming the file."""
    caffe_pb2, _ = caffe_proto()
    net = read_prototxt(path, caffe_pb2.NetParameter())
    done = upgrade(net)
    if notes is not None:
        notes += ["%s: %s" % (path, note) for note in done]
    return net


def needs_upgrade(net):
    return bool(len(net.layers) or len(net.input) or old_batch_norms(net))


def current(net):
    """``net`` itself if it is in the current format, else an upgraded copy."""
    if not needs_upgrade(net):
        return net
    copy = type(net)()
    copy.CopyFrom(net)
    upgrade(copy)
    return copy


def upgrade(net):
    """Upgrade ``net`` in place, in the order Caffe's UpgradeNetAsNeeded does; returns one note
    per upgrade made (none for a current net). PrototxtError for a V0 net or one that mixes
    ``layer`` and ``layers``."""
    notes = []
    if any(v1.HasField("layer") for v1 in net.layers):
        raise PrototxtError("a V0 net (layers { layer { ... } }): convert it with Caffe's "
                            "upgrade_net_proto_text first")
    if len(net.layers):
        if len(net.layer):
            raise PrototxtError("the net has both 'layer' and V1 'layers' entries, which Caffe "
                                "refuses to upgrade: write every layer in one format")
        example = v1_type(net.layers[0])
        move_transform_fields(net)
        upgrade_v1(net)
        notes.append("a V1 net (layers { type: %s ... }): upgraded to the current format as Caffe "
                     "does when it loads it (upgrade_net_proto_text)" % example)
    if len(net.input):
        notes.append(upgrade_input_fields(net))
    if old_batch_norms(net):
        for layer in old_batch_norms(net):
            for spec in layer.param:
                spec.lr_mult = spec.decay_mult = 0
        notes.append("BatchNorm layers with three param { } entries: their lr_mult and decay_mult "
                     "set to 0, as Caffe does")
    return notes


def move_transform_fields(net):
    """Caffe's UpgradeNetDataTransformation: scale, mean_file, crop_size and mirror move from
    a V1 data layer's parameters to its transform_param."""
    for v1 in net.layers:
        if v1_type(v1) not in OLD_TRANSFORM:
            continue
        param = getattr(v1, OLD_TRANSFORM[v1_type(v1)])
        for field in TRANSFORM_FIELDS:
            if param.HasField(field):
                setattr(v1.transform_param, field, getattr(param, field))
                param.ClearField(field)


def upgrade_v1(net):
    """Caffe's UpgradeV1Net: each V1 ``layers`` entry becomes a ``layer``."""
    old = list(net.layers)
    net.ClearField("layers")
    for v1 in old:
        layer = net.layer.add()
        layer.bottom.extend(v1.bottom)
        layer.top.extend(v1.top)
        if v1.HasField("name"):
            layer.name = v1.name
        layer.include.extend(v1.include)
        layer.exclude.extend(v1.exclude)
        if v1.HasField("type"):
            layer.type = V1_TYPES[v1_type(v1)]
        layer.blobs.extend(v1.blobs)
        for values, field in ((v1.param, "name"), (v1.blob_share_mode, "share_mode"),
                              (v1.blobs_lr, "lr_mult"), (v1.weight_decay, "decay_mult")):
            for i, value in enumerate(values):
                while len(layer.param) <= i:
                    layer.param.add()
                setattr(layer.param[i], field, value)  # V1's DimCheckMode numbers are ParamSpec's
        layer.loss_weight.extend(v1.loss_weight)
        for field, value in v1.ListFields():
            if field.name.endswith("_param"):
                getattr(layer, field.name).CopyFrom(value)


def v1_type(v1):
    """The enum name of a V1 layer's type (SOFTMAX_LOSS)."""
    return type(v1).LayerType.Name(v1.type)


def upgrade_input_fields(net):
    """Caffe's UpgradeNetInput: the net's ``input`` fields become an Input layer named "input",
    first in the net (without shapes, as in a legacy caffemodel, they are dropped)."""
    inputs = list(net.input)
    if len(net.input_shape) not in (0, len(inputs)) or len(net.input_dim) not in (0, 4 * len(inputs)):
        raise PrototxtError("the net has %d input fields but %d input_shape and %d input_dim entries; "
                            "give one input_shape (or 4 input_dim) per input"
                            % (len(inputs), len(net.input_shape), len(net.input_dim)))
    if len(net.input_shape) or len(net.input_dim):
        layer = net.layer.add(name="input", type="Input")
        for i, name in enumerate(inputs):
            layer.top.append(name)
            shape = layer.input_param.shape.add()
            if len(net.input_shape):
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        layers = list(net.layer)
        net.ClearField("layer")
        net.layer.extend(layers[-1:] + layers[:-1])
        note = "the net's input fields (%s) became an Input layer named 'input', as Caffe upgrades them"
    else:
        note = "the net's input fields (%s) had no shape and were dropped, as Caffe drops them"
    for field in ("input", "input_shape", "input_dim"):
        net.ClearField(field)
    return note % ", ".join(inputs)


def old_batch_norms(net):
    return [l for l in net.layer if l.type == "BatchNorm" and len(l.param) == 3]
