"""``caffe-losses`` (or ``python3 -m caffe_losses``): work on existing prototxt files.

    caffe-losses swap net.prototxt --to SigmoidFocalLoss [--layer loss] [--param gamma=1] [-o out]
    caffe-losses deploy train_val.prototxt --input-shape 1,3,224,224 [-o deploy.prototxt]
    caffe-losses check net.prototxt [more.prototxt ...]

Everything goes through Caffe's own protobuf messages (``caffe.proto.caffe_pb2`` and
``google.protobuf.text_format``), never through regular expressions over text.
"""
import argparse
import ast
import re
import sys

from . import table
from .params import ParamError, parse_literal

CPP_LOSSES = {"SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "MultinomialLogisticLoss",
              "EuclideanLoss", "HingeLoss", "InfogainLoss", "ContrastiveLoss"}
# the probability layer that a deploy net gets in place of each loss: Caffe's losses
# here, ours from the table
ACTIVATION = {"SoftmaxWithLoss": "Softmax", "SigmoidCrossEntropyLoss": "Sigmoid"}
ACTIVATION.update({row.name: row.deploy for row in table.LOSSES if row.deploy})
DATA_LAYERS = {"Data", "ImageData", "HDF5Data", "WindowData", "MemoryData", "DummyData", "Input",
               "AnnotatedData"}


def _pb():
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    return caffe_pb2, text_format


class PrototxtError(Exception):
    """A prototxt that is missing or does not parse; the message is one line naming the file."""


def read_prototxt(path, message):
    """Merge the text-format file ``path`` into ``message`` and return it; raises PrototxtError."""
    _, text_format = _pb()
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
    caffe_pb2, _ = _pb()
    return read_prototxt(path, caffe_pb2.NetParameter())


def net_text(net):
    _, text_format = _pb()
    return text_format.MessageToString(net)


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


# -- swap ---------------------------------------------------------------------------

def carried_params(old, target_params):
    """The ``loss_param`` fields of a C++ loss (or the params of one of ours) that ``target`` takes."""
    if old.type == "Python":
        given = parse_literal(old.python_param.param_str)
    else:
        given = {}
        caffe_pb2, _ = _pb()
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


def swap(net, to, layer_name=None, params=None):
    """Replace a loss layer of ``net`` by the caffe_losses layer ``to``; returns notes for the user."""
    ours = {row.name: row for row in table.LOSSES}
    if to not in ours:
        raise SystemExit("caffe-losses swap: --to must be one of %s" % ", ".join(ours))
    losses = [l for l in net.layer if is_loss(l)]
    if layer_name:
        losses = [l for l in losses if l.name == layer_name]
    if len(losses) != 1:
        names = ", ".join(l.name for l in net.layer if is_loss(l)) or "none"
        raise SystemExit("caffe-losses swap: found %s loss layer(s) (%s); name one with --layer"
                         % (len(losses), names))
    old = losses[0]
    row = ours[to]
    carried, dropped = carried_params(old, row.params)
    carried.update(params or {})
    row.parse(repr(carried))  # validate now, not when Caffe loads the net
    notes = ["dropped %s: %s has no such parameter" % (k, to) for k in dropped]
    old_labels = "sparse" if kind(old) in ("SoftmaxWithLoss", "MultinomialLogisticLoss") else (
        ours[kind(old)].labels if kind(old) in ours else "dense")
    if old_labels != row.labels:
        notes.append("%s takes %s labels (%s) but %s took %s ones: change the label data" % (
            to, row.labels, "one class index per location" if row.labels == "sparse"
            else "one label per score", kind(old), old_labels))
    weights = list(old.loss_weight) or [1.0]  # Caffe's C++ losses weigh their top 1 by default
    old.type = "Python"
    old.python_param.module = "caffe_losses"
    old.python_param.layer = to
    old.python_param.param_str = repr(carried) if carried else ""
    old.ClearField("loss_param")
    old.ClearField("softmax_param")
    del old.loss_weight[:]
    old.loss_weight.extend(weights)
    return notes


# -- deploy --------------------------------------------------------------------------

def deploy(net, input_shape, input_name=None):
    """A deploy net: data layers become one Input, losses their probability layer, labels go."""
    caffe_pb2, _ = _pb()
    out = caffe_pb2.NetParameter()
    out.name = net.name
    label_blobs = set()
    data_top = input_name
    for layer in net.layer:
        if any(rule.phase == caffe_pb2.TRAIN for rule in layer.include):
            continue
        if layer.type in DATA_LAYERS:
            data_top = data_top or layer.top[0]
            label_blobs.update(layer.top[1:])
            continue
        k = kind(layer)
        if k is not None:
            if k in ACTIVATION:
                act = out.layer.add()
                act.name = "prob" if not any(l.name == "prob" for l in net.layer) else layer.name + "_prob"
                act.type = ACTIVATION[k]
                act.bottom.append(layer.bottom[0])
                act.top.append(act.name)
                axis = parse_literal(layer.python_param.param_str).get("axis", 1) if layer.type == "Python" \
                    else (layer.softmax_param.axis if layer.HasField("softmax_param") else 1)
                if act.type == "Softmax" and axis != 1:
                    act.softmax_param.axis = axis
            continue
        if label_blobs.intersection(layer.bottom):
            label_blobs.update(layer.top)
            continue
        copy = out.layer.add()
        copy.CopyFrom(layer)
        copy.ClearField("include")
        copy.ClearField("exclude")
        if copy.HasField("inner_product_param"):
            copy.inner_product_param.ClearField("weight_filler")
            copy.inner_product_param.ClearField("bias_filler")
        if copy.HasField("convolution_param"):
            copy.convolution_param.ClearField("weight_filler")
            copy.convolution_param.ClearField("bias_filler")
    if data_top is None:
        raise SystemExit("caffe-losses deploy: no data layer found; give --input-name")
    inp = caffe_pb2.LayerParameter(name=data_top, type="Input")
    inp.top.append(data_top)
    inp.input_param.shape.add().dim.extend(input_shape)
    layers = list(out.layer)
    del out.layer[:]
    out.layer.extend([inp] + layers)
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
        if row.kind == "metric":
            if len(layer.bottom) != 2:
                problems.append("%s: takes 2 bottoms (scores, labels), has %d" % (where, len(layer.bottom)))
            continue
        if not 2 <= len(layer.bottom) <= 3:
            problems.append("%s: takes 2 or 3 bottoms (scores, labels, [weights]), has %d"
                            % (where, len(layer.bottom)))
        if not any(w != 0 for w in layer.loss_weight):
            problems.append("%s: no loss_weight, so Caffe never calls its backward and the net does "
                            "not learn from it: add 'loss_weight: 1'" % where)
    return problems


# -- command line -----------------------------------------------------------------------

def parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv=None):
    parser = argparse.ArgumentParser(prog="caffe-losses", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("swap", help="replace a loss layer by one of caffe_losses")
    p.add_argument("net")
    p.add_argument("--to", required=True, help="the caffe_losses layer to put in")
    p.add_argument("--layer", help="name of the loss layer to replace (needed if there are several)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the new layer (repeatable), e.g. gamma=1.5")
    p.add_argument("-o", "--output", help="write here instead of standard output")
    p = sub.add_parser("deploy", help="derive a deploy net: Input instead of data, probabilities instead of losses")
    p.add_argument("net")
    p.add_argument("--input-shape", required=True, help="comma-separated, e.g. 1,3,224,224")
    p.add_argument("--input-name", help="name of the input blob (default: the data layer's first top)")
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
            notes = swap(net, args.to, args.layer, params)
        except ParamError as exc:
            raise SystemExit("caffe-losses swap: %s" % exc)
        for note in notes:
            sys.stderr.write("caffe-losses swap: note: %s\n" % note)
        write(net_text(net), args.output)
    elif args.command == "deploy":
        shape = [int(d) for d in args.input_shape.split(",")]
        write(net_text(deploy(read_net(args.net), shape, args.input_name)), args.output)
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
