"""distill: a student's training net with a frozen teacher beside it and a DistillationLoss
between their scores (knowledge distillation: Hinton, Vinyals and Dean, 2015), and a weights
file with the teacher's trained blobs under the names its layers have there.

The teacher's layers keep their computation and get a prefix on every name (layers, blobs,
shared parameters); its parameters get ``lr_mult: 0 decay_mult: 0``, its BatchNorm layers
``use_global_stats: true``, its Dropout layers go, its Input layers give way to the
student's data tops, and a Softmax or Sigmoid after its scores goes (the loss takes scores).
Teacher and loss are in the TRAIN net only: the TEST net is the student alone, as a PyTorch
evaluation loop runs the student alone.
"""
from .. import table
from ..params import ParamError
from .deploy import known_shapes, names
from .heads import ACTIVATION, loss_axis, needed
from .io import PrototxtError, caffe_proto
from .net import TRAIN, describe, is_data_layer, is_loss, known_type, state_of, unique
from .shapes import dims, net_shapes
from .swap import carried_params, labels_and_inputs
from .teacher import freeze, prefixed, renamed_weights, teacher_part
from .upgrade import current

LOSS = "DistillationLoss"
# the normalization of Caffe's losses that set none (their LossParameter defaults)
CPP_NORMALIZATION = {"SoftmaxWithLoss": "valid", "SigmoidCrossEntropyLoss": "batch_size",
                     "MultinomialLogisticLoss": "batch_size"}


class Head(object):
    """The student's scores: the blob, how they become probabilities (``"softmax"`` or
    ``"sigmoid"``), the class axis, and the loss layer that reads them (or None)."""

    def __init__(self, score, activation, axis=1, loss=None):
        self.score, self.activation, self.axis, self.loss = score, activation, axis, loss


def distill(student, teacher, teacher_weights, prefix="teacher_", student_scores=None,
            teacher_scores=None, data_top=None, temperature=None, loss_weight=1.0,
            activation=None, axis=None, stages=None, level=None, student_weights=None):
    """The distillation net and its weights: ``(net, weights, notes)``, two NetParameters and
    notes for the user. ``student``: a training net; ``teacher``: a deploy net (or a training
    net: its scores are found the same way); ``teacher_weights``: its caffemodel, a path or
    a NetParameter. ``student_scores``/``teacher_scores``: the score blobs (default: the
    student's loss head, the teacher's output before its Softmax or Sigmoid); ``data_top``:
    the student's blobs that feed the teacher's inputs, in their order (default: the blob of
    the same name, or the one data top the student's scores read); ``activation``:
    ``"softmax"`` or ``"sigmoid"``, and ``axis``, the class axis (default: the student's
    loss's; a Softmax or Sigmoid for a loss on probabilities). ``stages``/``level``: the
    net state whose TRAIN net has the student's loss, as ``caffe train -stage -level``.
    ``student_weights``: a caffemodel whose layers the weights file also gets. Raises
    PrototxtError; ``student`` and ``teacher`` are left as they are."""
    notes = []
    if not prefix:
        raise PrototxtError("--prefix must not be empty: the teacher's names would be the student's")
    student, teacher = current(student), current(teacher)
    train = state_of(student, TRAIN, stages or (), level or 0)
    head = student_head(student, train, student_scores, activation, axis)
    part = teacher_part(teacher, teacher_scores, notes)
    feeds = data_feeds(student, train, head, part, names(data_top))
    layers = prefixed(part, prefix, feeds)
    check_names(student, layers, prefix)
    params = checked_shapes(student, train, head, part, feeds, layers, prefix)
    if part.activation and part.activation.lower() != head.activation:
        notes.append("the teacher's net ends in %s but the distillation uses a %s, as the student's "
                     "loss does (--activation to choose)" % (part.activation, head.activation))
    weights = renamed_weights(teacher_weights, layers, params, prefix, notes, student_weights)
    rule = train_rule(stages, level)
    freeze(layers, params, rule)
    net = type(student)()
    net.CopyFrom(student)
    insert_after(net, set(feeds.values()), layers)
    loss = loss_layer(head, prefix + part.score, temperature, loss_weight, rule, net, notes)
    insert_after(net, {head.score, prefix + part.score}, [loss], head.loss)
    return net, weights, notes


def student_head(student, train, scores=None, activation=None, axis=None):
    """The :class:`Head` of the student's TRAIN net (``train``, a NetState): the scores of its
    cross-entropy loss, or ``scores``; ``activation`` and ``axis`` override the loss's."""
    losses = [l for l in student.layer if train.has(l) and is_loss(l) and known_type(l) != LOSS]
    heads = [h for h in (loss_head(student, train, l) for l in losses) if h is not None]
    if scores is not None:
        made = {t for l in student.layer if train.has(l) for t in l.top}
        if scores not in made:
            raise PrototxtError("--student-scores %s: the student's TRAIN net%s makes no such blob"
                                % (scores, state_text(train)))
        heads = [h for h in heads if h.score == scores] or [Head(scores, activation)]
    distinct = {(h.score, h.activation, h.axis) for h in heads}
    if not heads:
        raise PrototxtError("no cross-entropy loss in the student's TRAIN net%s: give --student-scores "
                            "and --activation (or --stage/--level, as caffe train's)" % state_text(train))
    if len(distinct) > 1:
        raise PrototxtError("the student has %d loss heads (%s): name one with --student-scores"
                            % (len(distinct), ", ".join("%s (%s)" % (h.score, describe(h.loss)) for h in heads)))
    head = heads[0]
    head.activation = activation or head.activation
    head.axis = head.axis if axis is None else axis
    if head.activation is None:
        raise PrototxtError("--student-scores %s: no cross-entropy loss of the student reads it; give "
                            "--activation softmax or sigmoid" % head.score)
    if head.activation not in ("softmax", "sigmoid"):
        raise PrototxtError("--activation must be softmax or sigmoid, got %r" % head.activation)
    return head


def loss_head(net, train, loss):
    """The Head of a cross-entropy ``loss``; a loss on probabilities reads the scores through
    the Softmax or Sigmoid that makes them. None for other losses."""
    try:
        _, inputs = labels_and_inputs(loss)
    except KeyError:  # EuclideanLoss, HingeLoss, ...: no probabilities to distill
        return None
    if inputs == "scores":
        act = ACTIVATION.get(known_type(loss))
        return Head(loss.bottom[0], act.lower(), loss_axis(loss), loss) if act else None
    makers = [l for l in net.layer if train.has(l) and loss.bottom[0] in l.top]
    if makers and makers[-1].type in ("Softmax", "Sigmoid"):
        maker = makers[-1]
        axis = maker.softmax_param.axis if maker.HasField("softmax_param") else 1
        return Head(maker.bottom[0], maker.type.lower(), axis, loss)
    return None


def data_feeds(student, train, head, part, given):
    """{teacher input: the student's blob that feeds it}: ``given`` in the order of the
    teacher's inputs, else a data top of the same name, else the only data top the
    student's scores read."""
    data_tops = unique_list(t for l in student.layer if train.has(l) and is_data_layer(l) for t in l.top)
    body = [("layer", l) for l in student.layer if train.has(l) and not is_data_layer(l)]
    _, read = needed(body, [], [head.score])
    scores_read = [t for t in data_tops if t in read]
    if given:
        if len(given) != len(part.inputs):
            raise PrototxtError("--data-top gives %d blob(s) for the teacher's %d input(s) (%s)"
                                % (len(given), len(part.inputs), ", ".join(part.inputs)))
        made = {t for l in student.layer if train.has(l) for t in l.top}
        for blob in given:
            if blob not in made:
                raise PrototxtError("--data-top %s: the student's TRAIN net has no such blob; its data "
                                    "tops: %s" % (blob, ", ".join(data_tops) or "none"))
        return dict(zip(part.inputs, given))
    feeds = {}
    for name in part.inputs:
        if name in data_tops:
            feeds[name] = name
        elif len(part.inputs) == 1 and len(scores_read) == 1:
            feeds[name] = scores_read[0]
        else:
            raise PrototxtError("no matching data top: the teacher's input %r is no data top of the "
                                "student (%s); give --data-top, one student blob per teacher input (%s)"
                                % (name, ", ".join(data_tops) or "none", ", ".join(part.inputs)))
    return feeds


def check_names(student, layers, prefix):
    """PrototxtError if a teacher layer's name, top or shared parameter, prefixed, is one of
    the student's."""
    taken = ({l.name for l in student.layer} | {t for l in student.layer for t in l.top}
             | {p.name for l in student.layer for p in l.param if p.name})
    for layer in layers:
        for name in [layer.name] + list(layer.top) + [p.name for p in layer.param if p.name]:
            if name in taken:
                raise PrototxtError("the teacher's %r becomes %r, which the student has too: choose "
                                    "another --prefix (now %r)" % (name[len(prefix):], name, prefix))


def checked_shapes(student, train, head, part, feeds, layers, prefix):
    """{teacher layer: [parameter shapes]} as the teacher's own inputs give them, once Caffe
    has built the teacher alone and beside the student's scores on the student's data;
    PrototxtError if those data give the teacher other parameter shapes, or the two scores
    differ in shape."""
    alone, both = net_shapes(probes(student, train, head, part, feeds, layers),
                             ["the teacher's net", "the teacher's net beside the student's"])
    for layer in layers:
        if alone.params.get(layer.name) != both.params.get(layer.name):
            raise PrototxtError("the student's data (%s) give the teacher's layer %r parameters of %s, "
                                "its own inputs (%s) %s: feed it data of its inputs' shapes" % (
                                    shapes_text(both, feeds.values()), layer.name[len(prefix):],
                                    ", ".join(map(dims, both.params[layer.name])), shapes_text(alone, feeds.values()),
                                    ", ".join(map(dims, alone.params[layer.name]))))
    mine, theirs = both.blobs[head.score], both.blobs[prefix + part.score]
    if mine != theirs:
        raise PrototxtError("the student's scores %r are %s but the teacher's %r are %s: distillation "
                            "needs one shape; name others with --student-scores/--teacher-scores"
                            % (head.score, dims(mine), part.score, dims(theirs)))
    return alone.params


def probes(student, train, head, part, feeds, layers):
    """Two nets for net_shapes, without rules: the teacher's layers on Inputs of the shapes
    its net states, and the same beside the student's layers to its scores on the student's
    data (the shapes the student's net states, else the teacher's)."""
    kept, read = needed([("layer", l) for l in student.layer if train.has(l) and not is_data_layer(l)],
                        [], [head.score])
    stated = known_shapes(student)
    theirs = {feeds[n]: part.input_shapes.get(n) for n in part.inputs}
    mine = {b: stated.get(b) or theirs.get(b) for b in unique_list(list(feeds.values()) + sorted(read))}
    theirs = {b: shape or stated.get(b) for b, shape in theirs.items()}
    missing = [b for b, shape in list(mine.items()) + list(theirs.items()) if shape is None]
    if missing:
        raise PrototxtError("no shape for %s: neither the student's net nor the teacher's Input "
                            "states it; give the student an Input or DummyData layer for it" % missing[0])
    return inputs_net(theirs, layers), inputs_net(mine, [l for _, l in kept] + layers)


def inputs_net(shapes, layers):
    """A NetParameter: an Input per item of ``shapes`` ({blob: dims}), then copies of
    ``layers`` without their rules."""
    caffe_pb2, _ = caffe_proto()
    net = caffe_pb2.NetParameter()
    for blob, shape in shapes.items():
        net.layer.add(name=blob, type="Input", top=[blob]).input_param.shape.add().dim.extend(shape)
    for layer in layers:
        copy = net.layer.add()
        copy.CopyFrom(layer)
        copy.ClearField("include")
        copy.ClearField("exclude")
    return net


def shapes_text(shapes, blobs):
    return ", ".join("%s %s" % (b, dims(shapes.blobs[b])) for b in blobs)


def train_rule(stages, level):
    """The include rule of the layers distill adds: the TRAIN phase of the net state asked for."""
    caffe_pb2, _ = caffe_proto()
    rule = caffe_pb2.NetStateRule(phase=TRAIN, stage=list(stages or ()))
    if level is not None:
        rule.min_level = rule.max_level = level
    return rule


def loss_layer(head, teacher_score, temperature, loss_weight, rule, net, notes):
    """The DistillationLoss layer: the student's loss's normalization, and its ignore_label
    with its labels."""
    caffe_pb2, _ = caffe_proto()
    row = table.BY_NAME[LOSS]
    params = {"temperature": row.params["temperature"].default if temperature is None else temperature,
              "activation": head.activation}
    if head.axis != 1:
        params["axis"] = head.axis
    params.update(student_params(head, row, notes))
    taken = {l.name for l in net.layer} | {t for l in net.layer for t in l.top}
    name = unique("distill_loss", taken)
    layer = caffe_pb2.LayerParameter(name=name, type="Python", bottom=[head.score, teacher_score],
                                     top=[name], loss_weight=[loss_weight], include=[rule])
    if "ignore_label" in params:
        layer.bottom.append(head.loss.bottom[1])
    layer.python_param.module = "caffe_losses"
    layer.python_param.layer = LOSS
    layer.python_param.param_str = repr(params)
    try:
        row.parse(layer.python_param.param_str)
    except ParamError as exc:
        raise PrototxtError(str(exc)) from None
    return layer


def student_params(head, row, notes):
    """normalization and ignore_label of the student's loss, where the DistillationLoss takes
    them: its loss then weighs each sample as the student's own loss does."""
    if head.loss is None:
        return {}
    carried, _ = carried_params(head.loss, {"normalization", "ignore_label"})
    name = known_type(head.loss)
    carried.setdefault("normalization", CPP_NORMALIZATION.get(name) or table.BY_NAME[name].params[
        "normalization"].default)
    try:
        row.params["normalization"].check(carried["normalization"])
    except ValueError:
        notes.append("%s: normalization %r is not one of %s's: it keeps its default"
                     % (describe(head.loss), carried.pop("normalization"), LOSS))
    natural = loss_head_activation(head.loss)
    if "ignore_label" in carried and (natural != head.activation or len(head.loss.bottom) < 2):
        notes.append("%s ignores label %s, which the %s distillation cannot read: every location is "
                     "distilled" % (describe(head.loss), carried.pop("ignore_label"), head.activation))
    return carried


def loss_head_activation(loss):
    act = ACTIVATION.get(known_type(loss))
    return act.lower() if act else None


def insert_after(net, blobs, layers, after=None):
    """Put ``layers`` into ``net`` after the last data layer that makes one of ``blobs`` (the
    teacher reads the data as the data layer gives them, before any in-place layer of the
    student), or if none does, after the last layer that does; and after the layer equal to
    ``after``, if given."""
    old = list(net.layer)
    makers = [i for i, l in enumerate(old) if blobs.intersection(l.top)]
    data = [i for i in makers if is_data_layer(old[i])]
    places = (data or makers) + [i for i, l in enumerate(old) if after is not None and l == after]
    at = max(places) + 1 if places else 0
    net.ClearField("layer")
    net.layer.extend(old[:at] + list(layers) + old[at:])


def state_text(state):
    options = state.options()
    return " (%s)" % options if options else ""


def unique_list(items):
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out
