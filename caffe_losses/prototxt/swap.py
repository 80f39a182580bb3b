"""swap: replace loss layers of a net (Caffe's cross-entropy losses or ours) by a caffe_losses
loss, carrying over what the new layer takes."""
from .. import table
from ..params import ParamError, parse_literal
from .io import PrototxtError, caffe_proto
from .net import CPP_CROSS_ENTROPY, TEST, TRAIN, describe, is_loss, known_type, named_states, share_a_net, unique
from .upgrade import upgrade


def swap(net, to, layer_name=None, params=None, every=False, stages=None, level=None):
    """Replace loss layers of ``net`` (a NetParameter, changed in place) by the caffe_losses
    loss ``to``: the one named (by name or top) ``layer_name``, every one it can replace
    (``every``), or the only one. ``params``: the new layer's param_str keys, on top of those
    carried over. ``stages``/``level``: only the losses of the nets of that state. A net in
    an old format is upgraded first, as Caffe would. Returns notes for the user; raises
    PrototxtError."""
    # (not a loss that reads a second blob of scores, as DistillationLoss: it replaces none)
    ours = {row.name: row for row in table.LOSSES if row.labels != "scores"}
    if to not in ours:
        raise PrototxtError("--to must be one of %s" % ", ".join(ours))
    upgraded = upgrade(net)
    states = [s for phase in (TRAIN, TEST) for s in named_states(net, phase, stages, level)]
    losses = [l for l in net.layer if is_loss(l)]
    if stages or level is not None:
        losses = [l for l in losses if any(state.has(l) for state in states)]
    chosen, notes = choose(losses, net, ours[to], states, layer_name, every)
    blobs = {t for l in net.layer for t in l.top}
    where = {}
    for layer in chosen:
        label = describe(layer)
        for note in replace(layer, ours[to], params, blobs):
            where.setdefault(note, []).append(label)
    if len(chosen) == 1:
        notes += list(where)
    else:
        notes += ["%s: %s" % (", ".join(labels), note) for note, labels in where.items()]
        notes.insert(0, "swapped %d layers: %s" % (len(chosen), ", ".join(map(describe, chosen))))
    return upgraded + notes


def choose(losses, net, row, states, layer_name=None, every=False):
    """The loss layers to replace by ``row`` and notes on the losses left."""
    if layer_name is not None:
        return choose_named(losses, net, row, states, layer_name), []
    reasons = [(l, why_not(l, row, same_data=every)) for l in losses]
    chosen = [l for l, reason in reasons if reason is None]
    left = ["%s: %s" % (describe(l), reason) for l, reason in reasons if reason is not None]
    if not chosen:
        raise PrototxtError("nothing to swap: %s" % (
            "the net has no loss layer" if not losses else
            "no loss here that %s can replace (%s)" % (row.name, "; ".join(left))))
    if not every and share_a_net(chosen, states):
        raise PrototxtError("%d losses that %s can replace: %s; name one with --layer (a layer "
                            "name or a loss's top), or swap them all with --all"
                            % (len(chosen), row.name, ", ".join(map(describe, chosen))))
    return chosen, ["left " + text for text in left]


def choose_named(losses, net, row, states, layer_name):
    """The losses that ``layer_name`` names (their copies for other phases or stages with them)."""
    chosen = [l for l in losses if l.name == layer_name or layer_name in l.top]
    if not chosen:
        others = [l for l in net.layer if l.name == layer_name or layer_name in l.top]
        if others:
            raise PrototxtError("--layer %s: %s is not a loss layer" % (layer_name, describe(others[0])))
        raise PrototxtError("--layer %s: no loss layer has that name or top; the loss layers: %s"
                            % (layer_name, ", ".join(map(describe, losses)) or "none"))
    if share_a_net(chosen, states):
        raise PrototxtError("--layer %s is ambiguous: it matches %s; give the top of the one to swap"
                            % (layer_name, ", ".join(map(describe, chosen))))
    for layer in chosen:
        reason = why_not(layer, row, same_data=False)
        if reason:
            raise PrototxtError("%s cannot replace %s: %s" % (row.name, describe(layer), reason))
    return chosen


def carried_params(old, target_params):
    """The ``loss_param`` fields of a C++ loss (or the params of one of ours) that ``target`` takes."""
    if old.type == "Python":
        given = parse_literal(old.python_param.param_str)
    else:
        given = {}
        caffe_pb2, _ = caffe_proto()
        lp = old.loss_param
        if lp.HasField("ignore_label"):
            given["ignore_label"] = lp.ignore_label
        if lp.HasField("normalization"):
            given["normalization"] = caffe_pb2.LossParameter.NormalizationMode.Name(lp.normalization).lower()
        elif lp.HasField("normalize"):
            given["normalization"] = "valid" if lp.normalize else "batch_size"
        if old.HasField("softmax_param") and old.softmax_param.HasField("axis"):
            given["axis"] = old.softmax_param.axis
    carried = {k: v for k, v in given.items() if k in target_params}
    dropped = [k for k in given if k not in target_params]
    return carried, dropped


def labels_and_inputs(layer):
    """What a cross-entropy loss takes: ("sparse" or "dense" labels, "scores" or "probabilities")."""
    name = known_type(layer)
    if name in CPP_CROSS_ENTROPY:
        return CPP_CROSS_ENTROPY[name]
    return table.BY_NAME[name].labels, table.BY_NAME[name].inputs


def why_not(layer, row, same_data):
    """Why ``row`` cannot replace the loss ``layer`` (None if it can). With ``same_data``,
    only a loss that reads the same labels and inputs (what --all swaps)."""
    name = known_type(layer)
    if layer.type == "Python" and name not in table.BY_NAME:
        return "caffe_losses has no layer %r" % name
    if name not in CPP_CROSS_ENTROPY and name not in table.BY_NAME:
        return "a %s is not a cross-entropy loss" % name
    if name in table.BY_NAME and table.BY_NAME[name].labels == "scores":
        return "it reads a teacher's scores, not labels"
    if len(layer.top) > 1:
        return ("it has %d tops (a SoftmaxWithLoss's second is its probabilities) and %s makes "
                "only the loss" % (len(layer.top), row.name))
    if same_data:
        labels, inputs = labels_and_inputs(layer)
        if labels != row.labels:
            return "it takes %s labels and %s %s ones" % (labels, row.name, row.labels)
        if inputs != row.inputs:
            return "it takes %s and %s %s" % (inputs, row.name, row.inputs)
    return None


def replace(old, row, params, blobs):
    """Make the loss layer ``old`` a ``row`` layer in place; returns notes for the user.
    ``blobs``: the net's blob names (a new top's name is added to it)."""
    try:
        carried, dropped = carried_params(old, row.params)
        carried.update(params or {})
        row.parse(repr(carried))  # validate now, not when Caffe loads the net
    except ParamError as exc:
        raise PrototxtError(str(exc)) from None
    notes = ["dropped %s: %s has no such parameter" % (k, row.name) for k in dropped]
    if not old.top:
        # Caffe makes a C++ loss's missing top itself; a Python layer needs one written
        top = unique(old.name or "loss", blobs)
        old.top.append(top)
        notes.append("gave it the top %r (it had none, which only Caffe's own losses may)" % top)
    notes += data_notes(old, row)
    weights = list(old.loss_weight) or [1.0]  # Caffe's C++ losses weigh their top 1 by default
    old.type = "Python"
    old.python_param.module = "caffe_losses"
    old.python_param.layer = row.name
    old.python_param.param_str = repr(carried) if carried else ""
    old.ClearField("loss_param")
    old.ClearField("softmax_param")
    del old.loss_weight[:]
    old.loss_weight.extend(weights)
    return notes


def data_notes(old, row):
    """Notes on a change of labels or inputs between the loss ``old`` and ``row``."""
    labels, inputs = labels_and_inputs(old)
    notes = []
    if labels != row.labels:
        notes.append("%s takes %s labels (%s) but %s took %s ones: change the label data" % (
            row.name, row.labels, "one class index per location" if row.labels == "sparse"
            else "one label per score", known_type(old), labels))
    if inputs != row.inputs:
        notes.append("%s takes %s but %s took %s: change what feeds it" % (row.name, row.inputs,
                                                                          known_type(old), inputs))
    return notes
