"""The teacher's side of distill: the layers its scores need, renamed and frozen, and the
blobs of its caffemodel under the new names, checked against the shapes Caffe gives them."""
from .deploy import known_shapes
from .heads import needed
from .io import PrototxtError, caffe_proto
from .net import TEST, describe, is_data_layer, known_type, state_of, without_fillers
from .shapes import dims

# what a deploy net ends in after its scores; the distillation takes the scores
ACTIVATIONS = ("Softmax", "Sigmoid")


class Part(object):
    """What of the teacher goes into the distill net. ``layers``: copies of its layers that
    the scores need, in order, without Dropout and without the final activation; ``score``:
    the scores' blob; ``inputs``: the blobs those layers read from the teacher's Input (or
    data) layers, in order; ``input_shapes``: {input: dims} as its Input layers state them;
    ``activation``: the type of the Softmax or Sigmoid it ended in, or None."""

    def __init__(self, layers, score, inputs, input_shapes, activation):
        self.layers, self.score, self.inputs = layers, score, inputs
        self.input_shapes, self.activation = input_shapes, activation


def teacher_part(teacher, scores=None, notes=None):
    """The :class:`Part` of ``teacher`` (a current NetParameter) for its scores: ``scores``
    (a blob; a Softmax's or Sigmoid's output means its input), or its one output, read
    before a final Softmax or Sigmoid."""
    state = state_of(teacher, TEST)
    layers = [l for l in teacher.layer if state.has(l)]
    body, aliases = without_dropout([l for l in layers if not is_data_layer(l)])
    score, dropped = teacher_score(body, aliases.get(scores, scores), notes)
    kept, read = needed([("layer", l) for l in body if l is not dropped], [], [score])
    tops = [t for l in layers if is_data_layer(l) for t in l.top]
    inputs = [t for i, t in enumerate(tops) if t in read and t not in tops[:i]]
    missing = sorted(read.difference(inputs))
    if missing:
        raise PrototxtError("the teacher's layers read %s, which no layer or input of its net makes"
                            % ", ".join(missing))
    return Part([l for _, l in kept], score, inputs, known_shapes(teacher),
                dropped.type if dropped is not None else None)


def without_dropout(layers):
    """Copies of ``layers`` without their Dropout layers (the identity at test time), and
    {a removed Dropout's top: the blob it stands for}; later layers read that blob."""
    aliases, out = {}, []
    for layer in layers:
        if layer.type == "Dropout":
            if layer.top[0] != layer.bottom[0]:
                aliases[layer.top[0]] = aliases.get(layer.bottom[0], layer.bottom[0])
            continue
        copy = type(layer)()
        copy.CopyFrom(layer)
        del copy.bottom[:]
        copy.bottom.extend(aliases.get(b, b) for b in layer.bottom)
        for top in layer.top:
            aliases.pop(top, None)  # made anew: no longer the Dropout's
        out.append(copy)
    return out, aliases


def computing(layer):
    """A layer that computes (not a loss or a metric)."""
    return known_type(layer) is None and not layer.type.endswith(("Loss", "Accuracy"))


def outputs(layers):
    """The blobs that computing layers make and no other computing layer reads."""
    work = [l for l in layers if computing(l)]
    read = {b for l in work for b in l.bottom if b not in l.top}  # in place is no reader
    tops = [t for l in work for t in l.top if t not in read]
    return [t for i, t in enumerate(tops) if t not in tops[:i]]


def teacher_score(layers, given, notes):
    """The teacher's scores, and the Softmax or Sigmoid among ``layers`` after them (or None)."""
    makers = {t: l for l in layers for t in l.top}  # the last maker of each blob
    ends = outputs(layers)
    if given is not None and given not in makers:
        raise PrototxtError("--teacher-scores %s: the teacher's net makes no such blob; its outputs: %s"
                            % (given, ", ".join(ends) or "none"))
    found = []
    for blob in [given] if given is not None else ends:
        maker = makers[blob]
        pair = (maker.bottom[0], maker) if maker.type in ACTIVATIONS and maker.bottom else (blob, None)
        if pair[0] not in [f[0] for f in found]:
            found.append(pair)
    if len(found) != 1:
        raise PrototxtError("the teacher's net has %s (%s): name its scores with --teacher-scores"
                            % ("%d outputs" % len(found) if found else "no output",
                               ", ".join(ends) or "none"))
    if given is not None and found[0][1] is not None and notes is not None:
        notes.append("--teacher-scores %s is the output of %s: distilling from its input %s"
                     % (given, describe(found[0][1]), found[0][0]))
    return found[0]


def prefixed(part, prefix, feeds):
    """Copies of the teacher's layers with every name (layer, blob, shared parameter)
    prefixed, its inputs read from the student's blobs ``feeds`` ({input: blob}), no rules
    and no fillers, BatchNorm on its stored statistics."""
    current, out = dict(feeds), []
    for layer in part.layers:
        copy = type(layer)()
        copy.CopyFrom(layer)
        copy.name = prefix + layer.name
        del copy.bottom[:], copy.top[:]
        copy.bottom.extend(current.get(b, prefix + b) for b in layer.bottom)
        copy.top.extend(prefix + t for t in layer.top)
        current.update((t, prefix + t) for t in layer.top)  # an input written in place: the teacher's copy
        for spec in copy.param:
            if spec.name:
                spec.name = prefix + spec.name
        copy.ClearField("include")
        copy.ClearField("exclude")
        if copy.type == "BatchNorm":
            copy.batch_norm_param.use_global_stats = True
        without_fillers(copy)
        out.append(copy)
    return out


def freeze(layers, params, rule):
    """Give each layer ``lr_mult: 0 decay_mult: 0`` for each of its parameter blobs
    (``params``: {layer name: [shapes]}) and the include rule ``rule``."""
    for layer in layers:
        while len(layer.param) < len(params.get(layer.name, ())):
            layer.param.add()
        for spec in layer.param:
            spec.lr_mult = spec.decay_mult = 0
        layer.include.add().CopyFrom(rule)


def renamed_weights(source, layers, params, prefix, notes, student_weights=None):
    """A weights NetParameter: for each of ``layers`` with parameters, the blobs of the
    layer of its name less ``prefix`` in the caffemodel ``source`` (a path or a
    NetParameter), checked against ``params`` ({layer name: [shapes]}); then the layers of
    ``student_weights``, if given."""
    caffe_pb2, _ = caffe_proto()
    where = source if isinstance(source, str) else "the teacher's caffemodel"
    stored = stored_layers(source)
    out = caffe_pb2.NetParameter(name="distill")
    for layer in layers:
        if params.get(layer.name):
            name = layer.name[len(prefix):]
            check_fits(where, layer, stored.get(name), params[layer.name], prefix)
            out.layer.add(name=layer.name, type=layer.type).blobs.extend(stored.pop(name).blobs)
    if stored and notes is not None:
        notes.append("%s also holds weights for %s, which the teacher's scores do not need: left out"
                     % (where, ", ".join(sorted(stored))))
    if student_weights is not None:
        names = {l.name for l in out.layer}
        for name, layer in stored_layers(student_weights).items():
            if name in names:
                raise PrototxtError("%s has a layer %r, as the renamed teacher has: choose another --prefix"
                                    % (student_weights if isinstance(student_weights, str)
                                       else "the student's caffemodel", name))
            out.layer.add(name=name).blobs.extend(layer.blobs)
    return out


def check_fits(where, layer, stored, shapes, prefix):
    """PrototxtError unless ``stored`` (a caffemodel layer, or None) has blobs of ``shapes``."""
    from .. import snapshots  # it imports this package
    what = "layer %r (%s)" % (layer.name[len(prefix):], layer.type)
    if stored is None:
        raise PrototxtError("%s does not fit the teacher's net: it has no weights for %s, which Caffe "
                            "would leave at random values" % (where, what))
    got = [snapshots.blob_shape(b) for b in stored.blobs]
    if len(got) != len(shapes):
        raise PrototxtError("%s does not fit the teacher's net: %s has %d blobs there, %d in the net"
                            % (where, what, len(got), len(shapes)))
    for i, (shape, there) in enumerate(zip(shapes, got)):
        if not snapshots.same_shape(shape, there):
            raise PrototxtError("%s does not fit the teacher's net: %s blob %d is %s there, %s in the net"
                                % (where, what, i, dims(there), dims(shape)))


def stored_layers(source):
    """{layer name: layer} of the layers with blobs of a caffemodel (a path or a NetParameter;
    V1 ``layers`` entries too, as Caffe reads them)."""
    net = read_caffemodel(source) if isinstance(source, str) else source
    return {l.name: l for l in list(net.layer) + list(net.layers) if len(l.blobs)}


def read_caffemodel(path):
    """The NetParameter of a binary caffemodel; PrototxtError saying what the file is otherwise."""
    from .. import snapshots  # it imports this package
    if path.endswith(".h5"):
        raise PrototxtError("%s: HDF5 weights; distill reads a binary .caffemodel (snapshot with "
                            "snapshot_format: BINARYPROTO, or net.save() in pycaffe)" % path)
    try:
        snapshots.read_weights(path)  # says what the file is, if it holds no weights
        with open(path, "rb") as f:
            data = f.read()
    except snapshots.SnapshotError as exc:
        raise PrototxtError(str(exc)) from None
    except FileNotFoundError:
        raise PrototxtError("no such file: %s" % path) from None
    except OSError as exc:
        raise PrototxtError("%s: %s" % (path, exc.strerror or exc)) from None
    caffe_pb2, _ = caffe_proto()
    net = caffe_pb2.NetParameter()
    net.ParseFromString(data)
    return net
