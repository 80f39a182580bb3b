"""``caffe-losses`` (or ``python3 -m caffe_losses``): work on existing prototxt files.

    caffe-losses swap net.prototxt --to SigmoidFocalLoss [--layer NAME_OR_TOP | --all]
                      [--param gamma=1] [-o out]
    caffe-losses deploy train_val.prototxt [--input-shape [NAME=]1,3,224,224 ...]
                        [--input-name A[,B]] [--outputs A[,B]] [-o deploy.prototxt]
    caffe-losses check net.prototxt [more.prototxt ...]
    caffe-losses class-weights LABELS.h5 [--dataset label] [--beta 0.999] [--kind pos_weight]

Everything goes through Caffe's own protobuf messages (``caffe.proto.caffe_pb2`` and
``google.protobuf.text_format``), never through regular expressions over text.
"""
import argparse
import ast
import re
import sys

from . import table
from .params import ParamError, parse_literal

# the C++ cross-entropy losses, with the labels they take and what bottom[0] holds
CPP_CROSS_ENTROPY = {"SoftmaxWithLoss": ("sparse", "scores"),
                     "SigmoidCrossEntropyLoss": ("dense", "scores"),
                     "MultinomialLogisticLoss": ("sparse", "probabilities")}
CPP_LOSSES = set(CPP_CROSS_ENTROPY) | {"EuclideanLoss", "HingeLoss", "InfogainLoss", "ContrastiveLoss"}
# the probability layer that a deploy net gets in place of each loss: Caffe's losses
# here, ours from the table
ACTIVATION = {"SoftmaxWithLoss": "Softmax", "SigmoidCrossEntropyLoss": "Sigmoid"}
ACTIVATION.update({row.name: row.deploy for row in table.LOSSES if row.deploy})
DATA_LAYERS = {"Data", "ImageData", "HDF5Data", "WindowData", "MemoryData", "DummyData", "Input",
               "AnnotatedData"}
TRAIN, TEST = 0, 1  # caffe_pb2.Phase


def caffe_proto():
    """pycaffe's ``caffe_pb2`` and protobuf's ``text_format``; PrototxtError without pycaffe."""
    try:
        from caffe.proto import caffe_pb2
        from google.protobuf import text_format
    except ImportError as exc:
        raise PrototxtError("reading prototxt files needs pycaffe (%s): install Debian's "
                            "python3-caffe, or run this in tools/caffe-env" % exc) from None
    return caffe_pb2, text_format


class PrototxtError(Exception):
    """A prototxt that is missing or does not parse (or no pycaffe to parse it with); the
    message is one line naming the file."""


def read_prototxt(path, message):
    """Merge the text-format file ``path`` into ``message`` and return it; raises PrototxtError."""
    _, text_format = caffe_proto()
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise PrototxtError("no such file: %s" % path) from None
    except UnicodeDecodeError:
        raise PrototxtError("%s: not a text file (a binary .caffemodel or .solverstate?)" % path) from None
    except OSError as exc:
        raise PrototxtError("%s: %s" % (path, exc.strerror or exc)) from None
    try:
        text_format.Merge(text, message)
    except text_format.ParseError as exc:
        raise PrototxtError(parse_error_text(path, exc)) from None
    return message


def parse_error_text(path, exc):
    """``PATH:LINE:COL: message`` on one line, from a text_format.ParseError (``LINE:COL : message``)."""
    # Every protobuf version puts the location in the message; GetLine() is only in newer ones.
    text = re.sub(r"\s*\n\s*", " ", str(exc).strip())
    found = re.match(r"(\d+(?::\d+)?) : (.*)", text)
    return "%s:%s: %s" % ((path,) + found.groups()) if found else "%s: %s" % (path, text)


def read_net(path):
    caffe_pb2, _ = caffe_proto()
    return read_prototxt(path, caffe_pb2.NetParameter())


def net_text(net):
    _, text_format = caffe_proto()
    return text_format.MessageToString(net)


# -- what a layer is ----------------------------------------------------------------

def kind(layer):
    """The loss (or metric) a layer is: a C++ type, a caffe_losses class name, or None."""
    if layer.type == "Python":
        if layer.python_param.module == "caffe_losses":
            return layer.python_param.layer
        return None
    return layer.type if layer.type in CPP_LOSSES else None


def is_loss(layer):
    k = kind(layer)
    return k is not None and not (k in table.BY_NAME and table.BY_NAME[k].kind != "loss")


def is_data_layer(layer):
    """A layer that reads data: Caffe's, a custom C++ one (HED's ImageLabelmapData) or a
    Python one (FCN's); none of them has bottoms."""
    return not layer.bottom and (layer.type in DATA_LAYERS or layer.type.endswith("Data")
                                 or layer.type == "Python")


def _meets(rule, phase):
    # Caffe's Net::StateMeetsRule for a NetState of this phase, level 0 and no stages
    return ((not rule.HasField("phase") or rule.phase == phase)
            and (not rule.HasField("min_level") or rule.min_level <= 0)
            and (not rule.HasField("max_level") or rule.max_level >= 0)
            and not rule.stage)


def in_phase(layer, phase):
    """Whether Caffe builds ``layer`` into the net of ``phase`` (TRAIN or TEST)."""
    if layer.include:
        return any(_meets(rule, phase) for rule in layer.include)
    return not any(_meets(rule, phase) for rule in layer.exclude)


def describe(layer):
    """``'name' (Type, top 't')``; an unnamed layer (Caffe names it "") is told by its top."""
    what = "%s, top %s" % (kind(layer) or layer.type, ", ".join(repr(t) for t in layer.top) or "none")
    return "%s (%s)" % (repr(layer.name) if layer.name else "unnamed", what)


def share_a_phase(layers):
    """Whether two of ``layers`` are in the net of one phase (a TRAIN and a TEST copy are not)."""
    seen = set()
    for layer in layers:
        phases = {p for p in (TRAIN, TEST) if in_phase(layer, p)}
        if seen & phases:
            return True
        seen |= phases
    return False


# -- swap ---------------------------------------------------------------------------

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
    k = kind(layer)
    if k in CPP_CROSS_ENTROPY:
        return CPP_CROSS_ENTROPY[k]
    return table.BY_NAME[k].labels, table.BY_NAME[k].inputs


def why_not(layer, row, same_data):
    """Why ``row`` cannot replace the loss ``layer`` (None if it can). With ``same_data``,
    only a loss that reads the same labels and inputs (what --all swaps)."""
    k = kind(layer)
    if layer.type == "Python" and k not in table.BY_NAME:
        return "caffe_losses has no layer %r" % k
    if k not in CPP_CROSS_ENTROPY and k not in table.BY_NAME:
        return "a %s is not a cross-entropy loss" % k
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


def choose(net, row, layer_name=None, every=False):
    """The loss layers to replace by ``row`` and notes on the losses left; SystemExit if none."""
    losses = [l for l in net.layer if is_loss(l)]
    if layer_name is not None:
        chosen = [l for l in losses if l.name == layer_name or layer_name in l.top]
        if not chosen:
            others = [l for l in net.layer if l.name == layer_name or layer_name in l.top]
            if others:
                raise SystemExit("caffe-losses swap: --layer %s: %s is not a loss layer"
                                 % (layer_name, describe(others[0])))
            raise SystemExit("caffe-losses swap: --layer %s: no loss layer has that name or top; "
                             "the loss layers: %s" % (layer_name, ", ".join(map(describe, losses)) or "none"))
        if share_a_phase(chosen):
            raise SystemExit("caffe-losses swap: --layer %s is ambiguous: it matches %s; give the "
                             "top of the one to swap" % (layer_name, ", ".join(map(describe, chosen))))
        for layer in chosen:
            reason = why_not(layer, row, same_data=False)
            if reason:
                raise SystemExit("caffe-losses swap: %s cannot replace %s: %s"
                                 % (row.name, describe(layer), reason))
        return chosen, []
    reasons = [(l, why_not(l, row, same_data=every)) for l in losses]
    chosen = [l for l, reason in reasons if reason is None]
    left = ["%s: %s" % (describe(l), reason) for l, reason in reasons if reason is not None]
    if not chosen:
        raise SystemExit("caffe-losses swap: nothing to swap: %s" % (
            "the net has no loss layer" if not losses else
            "no loss here that %s can replace (%s)" % (row.name, "; ".join(left))))
    if not every and share_a_phase(chosen):
        raise SystemExit("caffe-losses swap: %d losses that %s can replace: %s; name one with --layer "
                         "(a layer name or a loss's top), or swap them all with --all"
                         % (len(chosen), row.name, ", ".join(map(describe, chosen))))
    return chosen, ["left " + text for text in left]


def replace(old, row, params, blobs):
    """Make the loss layer ``old`` a ``row`` layer in place; returns notes for the user.
    ``blobs``: the net's blob names (a new top's name is added to it)."""
    carried, dropped = carried_params(old, row.params)
    carried.update(params or {})
    row.parse(repr(carried))  # validate now, not when Caffe loads the net
    notes = ["dropped %s: %s has no such parameter" % (k, row.name) for k in dropped]
    if not old.top:
        # Caffe makes a C++ loss's missing top itself; a Python layer needs one written
        top = unique(old.name or "loss", blobs)
        old.top.append(top)
        notes.append("gave it the top %r (it had none, which only Caffe's own losses may)" % top)
    labels, inputs = labels_and_inputs(old)
    if labels != row.labels:
        notes.append("%s takes %s labels (%s) but %s took %s ones: change the label data" % (
            row.name, row.labels, "one class index per location" if row.labels == "sparse"
            else "one label per score", kind(old), labels))
    if inputs != row.inputs:
        notes.append("%s takes %s but %s took %s: change what feeds it" % (row.name, row.inputs, kind(old), inputs))
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


def swap(net, to, layer_name=None, params=None, every=False):
    """Replace loss layers of ``net`` by the caffe_losses layer ``to``: the one named (by name or
    top) ``layer_name``, every one it can replace (``every``), or the only one; returns notes."""
    ours = {row.name: row for row in table.LOSSES}
    if to not in ours:
        raise SystemExit("caffe-losses swap: --to must be one of %s" % ", ".join(ours))
    chosen, notes = choose(net, ours[to], layer_name, every)
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
    return notes


def unique(base, taken):
    """``base``, or ``base_2``, ``base_3``, ... if taken; added to ``taken``."""
    name, n = base, 1
    while name in taken:
        n += 1
        name = "%s_%d" % (base, n)
    taken.add(name)
    return name


# -- deploy --------------------------------------------------------------------------

class Head(object):
    """A loss's head: the blob a deploy net puts out for it (``score``, or the ``activation``
    of it) and the loss layers that read it. ``existing``: the top of a probability layer the
    TEST net already has for it (as BVLC's nets that feed Accuracy from a Softmax), if any."""

    def __init__(self, score, activation, axis):
        self.score, self.activation, self.axis = score, activation, axis
        self.losses = []
        self.existing = None

    def key(self):
        return self.score, self.activation, self.axis


def loss_axis(layer):
    if layer.type == "Python":
        try:
            return parse_literal(layer.python_param.param_str).get("axis", 1)
        except ParamError as exc:
            raise SystemExit("caffe-losses deploy: layer %s: param_str %s" % (describe(layer), exc))
    return layer.softmax_param.axis if layer.HasField("softmax_param") else 1


def walk(net, available):
    """The TEST net computable from the blobs ``available``: its layers and the heads of the losses
    (of either phase) whose scores it computes, in order, as ("layer", l) and ("head", h) items."""
    available, computed = set(available), set()
    items, heads = [], {}
    for layer in net.layer:
        if is_data_layer(layer):
            continue
        if kind(layer) is not None:  # a loss or a metric: never in a deploy net
            if is_loss(layer) and layer.bottom and layer.bottom[0] in computed and (
                    in_phase(layer, TRAIN) or in_phase(layer, TEST)):
                act = ACTIVATION.get(kind(layer))
                head = Head(layer.bottom[0], act, loss_axis(layer) if act == "Softmax" else None)
                if head.key() not in heads:
                    heads[head.key()] = head
                    items.append(("head", head))
                heads[head.key()].losses.append(layer)
            continue
        if in_phase(layer, TEST) and all(b in available for b in layer.bottom):
            items.append(("layer", layer))
            available.update(layer.top)
            computed.update(layer.top)
    for head in heads.values():
        for what, layer in items:
            if (what == "layer" and layer.type == head.activation and list(layer.bottom) == [head.score]
                    and layer.top[0] != head.score and (head.activation != "Softmax" or head.axis == (
                        layer.softmax_param.axis if layer.HasField("softmax_param") else 1))):
                head.existing = layer.top[0]
                break
    return items, computed


def needed(items, heads, blobs):
    """The items that ``heads`` and the blobs ``blobs`` need, and the blobs read from outside them."""
    want, kept = set(blobs) | {h.existing for h in heads if h.existing}, []
    for what, item in reversed(items):
        if what == "head":
            if item in heads and not item.existing:
                kept.append((what, item))
                want.add(item.score)
        elif want.intersection(item.top):
            kept.append((what, item))
            want.difference_update(item.top)  # an earlier maker of the blob is needed only if read
            want.update(item.bottom)
    return kept[::-1], want


def select(items, computed, outputs):
    """The heads and plain blobs that ``outputs`` (score blobs, loss names or tops, blobs) name."""
    heads = [h for what, h in items if what == "head"]
    listing = ", ".join("%s (%s)" % (h.score, ", ".join(map(describe, h.losses))) for h in heads) or "none"
    chosen, blobs = [], []
    for name in outputs:
        found = [h for h in heads if h.score == name] or \
                [h for h in heads if any(name in l.top for l in h.losses)]
        if not found:
            by_name = [(h, l) for h in heads for l in h.losses if l.name == name]
            if len({id(h) for h, _ in by_name}) > 1:
                raise SystemExit("caffe-losses deploy: --outputs %s is ambiguous: it names %s; give "
                                 "the loss's top or score blob" % (name, ", ".join(describe(l) for _, l in by_name)))
            found = [h for h, _ in by_name[:1]]
        if found:
            chosen += [h for h in found if h not in chosen]
        elif name in computed:
            blobs.append(name)
        else:
            raise SystemExit("caffe-losses deploy: --outputs %s: no head has that score blob, loss "
                             "name or loss top, and the TEST net makes no such blob; the heads: %s"
                             % (name, listing))
    return chosen, blobs


def known_shapes(net):
    """{blob: dims} from the net's Input layers and legacy ``input`` fields."""
    shapes = {}
    for layer in net.layer:
        if layer.type == "Input":
            given = layer.input_param.shape
            for i, top in enumerate(layer.top):
                if len(given) == 1 or i < len(given):
                    shapes.setdefault(top, list(given[0 if len(given) == 1 else i].dim))
    for i, name in enumerate(net.input):
        if i < len(net.input_shape):
            shapes.setdefault(name, list(net.input_shape[i].dim))
        elif len(net.input_dim) >= 4 * (i + 1):
            shapes.setdefault(name, list(net.input_dim[4 * i:4 * i + 4]))
    return shapes


def input_shapes(net, inputs, given):
    """The dims of each input: ``given`` items ``(name or None, dims)`` by name, then in order,
    then the shapes the net states."""
    shapes, unnamed = {}, []
    for name, dims in given:
        if name is None:
            unnamed.append(dims)
        elif name not in inputs:
            raise SystemExit("caffe-losses deploy: --input-shape %s=...: %s is not an input; the inputs: %s"
                             % (name, name, ", ".join(inputs)))
        else:
            shapes[name] = dims
    rest = [name for name in inputs if name not in shapes]
    if len(unnamed) > len(rest):
        raise SystemExit("caffe-losses deploy: %d --input-shape for %d input(s) (%s)"
                         % (len(given), len(inputs), ", ".join(inputs)))
    shapes.update(zip(rest, unnamed))
    stated = known_shapes(net)
    missing = [name for name in inputs if name not in shapes and name not in stated]
    if missing:
        raise SystemExit("caffe-losses deploy: no shape for input(s) %s: give --input-shape "
                         "[NAME=]N,C,H,W once per input (the inputs, in order: %s)"
                         % (", ".join(missing), ", ".join(inputs)))
    return [shapes.get(name) or stated[name] for name in inputs]


def prob_names(heads, taken):
    """The top (and name) of each head's probability layer: "prob" for one, else SCORE_prob;
    "_2", "_3", ... added to a name already taken."""
    probs = [h for h in heads if h.activation and not h.existing]
    return {id(head): unique("prob" if len(probs) == 1 and "prob" not in taken else head.score + "_prob", taken)
            for head in probs}


def _names(text):
    if text is None:
        return None
    items = text if isinstance(text, (list, tuple)) else text.split(",")
    return [item.strip() for item in items if item.strip()]


def _shapes(input_shape):
    """``input_shape`` as ``[(name or None, dims)]``: from dims, or a list of dims or of such pairs."""
    if not input_shape:
        return []
    if all(isinstance(d, int) for d in input_shape):
        return [(None, list(input_shape))]
    return [item if isinstance(item, tuple) else (None, list(item)) for item in input_shape]


def deploy(net, input_shape=None, input_name=None, outputs=None):
    """A deploy net: Input layers in place of data layers, a probability layer for each loss head,
    no labels or what needs them; ``outputs`` keeps those heads (or blobs) and what they need."""
    caffe_pb2, _ = caffe_proto()
    data_tops = list(net.input)
    for layer in net.layer:
        if is_data_layer(layer):
            data_tops += [t for t in layer.top if t not in data_tops]
    # first as if every data top were an input, to learn which ones the heads need
    items, computed = walk(net, data_tops)
    heads = [h for what, h in items if what == "head"]
    outputs = _names(outputs)
    blobs = []
    if outputs:
        heads, blobs = select(items, computed, outputs)
    inputs = _names(input_name)
    if inputs:
        for name in inputs:
            makers = [l for l in net.layer if name in l.top and name not in l.bottom
                      and not is_data_layer(l) and in_phase(l, TEST)]
            if makers:
                raise SystemExit("caffe-losses deploy: --input-name %s: layer %s computes it; the inputs "
                                 "are blobs that data layers make (%s)"
                                 % (name, describe(makers[0]), ", ".join(data_tops) or "none"))
    elif heads or blobs:
        _, read = needed(items, heads, blobs)
        inputs = [t for t in data_tops if t in read]
    else:
        firsts = [l.top[0] for l in net.layer if is_data_layer(l) and l.top] + list(net.input)
        inputs = [t for i, t in enumerate(firsts) if t not in firsts[:i]]
    if not inputs:
        raise SystemExit("caffe-losses deploy: no data layer found; give --input-name")
    shapes = input_shapes(net, inputs, _shapes(input_shape))

    items, computed = walk(net, inputs)
    found = {h.key(): h for what, h in items if what == "head"}
    if outputs:
        missing = [n for n in blobs if n not in computed] + [h.score for h in heads if h.key() not in found]
        if missing:
            raise SystemExit("caffe-losses deploy: --outputs: %s needs blobs that are not inputs (%s)"
                             % (", ".join(missing), ", ".join(inputs)))
        heads = [found[h.key()] for h in heads]
        items, _ = needed(items, heads, blobs)
    else:
        heads = list(found.values())

    out = caffe_pb2.NetParameter()
    out.name = net.name
    for name, dims in zip(inputs, shapes):
        inp = out.layer.add(name=name, type="Input")
        inp.top.append(name)
        inp.input_param.shape.add().dim.extend(dims)
    layers = [item for what, item in items if what == "layer"]
    taken = set(inputs) | {l.name for l in layers} | {t for l in layers for t in l.top}
    names = prob_names(heads, taken)
    for what, item in items:
        if what == "head":
            if item.activation and not item.existing:
                act = out.layer.add(name=names[id(item)], type=item.activation)
                act.bottom.append(item.score)
                act.top.append(act.name)
                if item.activation == "Softmax" and item.axis != 1:
                    act.softmax_param.axis = item.axis
            continue
        copy = out.layer.add()
        copy.CopyFrom(item)
        copy.ClearField("include")
        copy.ClearField("exclude")
        for field in ("inner_product_param", "convolution_param"):
            if copy.HasField(field):
                getattr(copy, field).ClearField("weight_filler")
                getattr(copy, field).ClearField("bias_filler")
    return out


# -- check ---------------------------------------------------------------------------

def check(net):
    """Problems this project knows about, one sentence each."""
    problems = []
    for layer in net.layer:
        k = kind(layer)
        if layer.type != "Python" or layer.python_param.module != "caffe_losses":
            continue
        where = "layer %r (%s)" % (layer.name, k)
        if k not in table.BY_NAME:
            problems.append("%s: caffe_losses has no layer %r; it has %s"
                            % (where, k, ", ".join(sorted(table.BY_NAME))))
            continue
        row = table.BY_NAME[k]
        try:
            row.parse(layer.python_param.param_str)
        except ParamError as exc:
            problems.append("%s: %s" % (where, exc))
        if row.kind == "data":
            if layer.bottom:
                problems.append("%s: takes no bottoms, has %d" % (where, len(layer.bottom)))
            continue
        if row.kind == "metric":
            if len(layer.bottom) != 2:
                problems.append("%s: takes 2 bottoms (scores, labels), has %d" % (where, len(layer.bottom)))
            continue
        if not 2 <= len(layer.bottom) <= 3:
            problems.append("%s: takes 2 or 3 bottoms (scores, labels, [weights]), has %d"
                            % (where, len(layer.bottom)))
        # an explicit 'loss_weight: 0' is a loss kept for display, as Caffe's nets have them
        if not layer.loss_weight:
            problems.append("%s: no loss_weight, so Caffe never calls its backward and the net does "
                            "not learn from it: add 'loss_weight: 1'" % where)
    return problems


# -- command line -----------------------------------------------------------------------

def parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_shape(text):
    """``[NAME=]D1,D2,...`` as ``(name or None, [dims])``."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = [int(d) for d in dims.split(",")]
    except ValueError:
        raise SystemExit("caffe-losses deploy: --input-shape takes [NAME=]N,C,H,W (integers), got %r" % text)
    return (name if sep else None), shape


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["class-weights"]:  # its own parser: caffe_losses/class_weights.py
        from . import class_weights
        return class_weights.main(argv[1:], prog="caffe-losses class-weights")
    if argv[:1] == ["check-list"]:  # its own parser: caffe_losses/data/check_list.py
        from .data import check_list
        return check_list.main(argv[1:], prog="caffe-losses check-list")
    parser = argparse.ArgumentParser(prog="caffe-losses", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("class-weights", help="per-class weights (class_weight or pos_weight) from the "
                                         "label counts of an HDF5 file; see --help")
    sub.add_parser("check-list", help="check every line and image of a MultiLabelImageData list "
                                      "file before training; see --help")
    p = sub.add_parser("swap", help="replace loss layers by one of caffe_losses")
    p.add_argument("net")
    p.add_argument("--to", required=True, help="the caffe_losses layer to put in")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--layer", help="name or top of the loss layer to replace (needed if there are several)")
    which.add_argument("--all", action="store_true",
                       help="replace every loss that takes the labels and inputs the new layer takes")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the new layer (repeatable), e.g. gamma=1.5")
    p.add_argument("-o", "--output", help="write here instead of standard output")
    p = sub.add_parser("deploy", help="derive a deploy net: Input instead of data, probabilities instead of losses")
    p.add_argument("net")
    p.add_argument("--input-shape", action="append", default=[], metavar="[NAME=]N,C,H,W",
                   help="the shape of an input (repeatable: once per input, in order or by name); "
                        "default: the shape the net's Input layer gives")
    p.add_argument("--input-name", metavar="A[,B...]",
                   help="the input blobs (default: the data-layer tops the outputs need)")
    p.add_argument("--outputs", metavar="A[,B...]",
                   help="keep only these heads (score blobs, loss names or loss tops) or blobs, and "
                        "the layers they need (default: every head, every layer)")
    p.add_argument("-o", "--output")
    p = sub.add_parser("check", help="report problems caffe_losses knows about")
    p.add_argument("nets", nargs="+")
    args = parser.parse_args(argv)
    try:
        return run(parser, args)
    except PrototxtError as exc:
        sys.stderr.write("caffe-losses: %s\n" % exc)
        return 2


def run(parser, args):
    """Carry out the parsed command; returns the exit code."""
    if args.command == "swap":
        net = read_net(args.net)
        params = {}
        for item in args.param:
            key, sep, value = item.partition("=")
            if not sep:
                parser.error("--param takes KEY=VALUE, got %r" % item)
            params[key] = parse_value(value)
        try:
            notes = swap(net, args.to, args.layer, params, every=args.all)
        except ParamError as exc:
            raise SystemExit("caffe-losses swap: %s" % exc)
        for note in notes:
            sys.stderr.write("caffe-losses swap: note: %s\n" % note)
        write(net_text(net), args.output)
    elif args.command == "deploy":
        shapes = [parse_shape(text) for text in args.input_shape]
        write(net_text(deploy(read_net(args.net), shapes, args.input_name, args.outputs)), args.output)
    elif args.command == "check":
        found = 0
        for path in args.nets:
            for problem in check(read_net(path)):
                print("%s: %s" % (path, problem))
                found += 1
        if found:
            return 1
        print("no problems found in %d file(s)" % len(args.nets))
    else:
        parser.print_help()
        return 2
    return 0


def write(text, path):
    if path:
        with open(path, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    sys.exit(main())
