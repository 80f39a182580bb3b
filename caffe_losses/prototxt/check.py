"""check: the problems this project knows about in a net, one sentence each."""
import difflib
import importlib

from .. import table
from ..params import ParamError
from .net import known_type
from .upgrade import current


def check(net):
    """Problems of ``net`` (a NetParameter), one sentence each: no layers, a Python layer whose
    module does not import or lacks the layer, a caffe_losses layer with unknown or invalid
    ``param_str`` keys, a wrong bottom count or no ``loss_weight``."""
    net = current(net)
    if not net.layer:
        return ["the net has no layers"]
    problems = []
    for layer in net.layer:
        if layer.type != "Python":
            continue
        where = "layer %r (%s)" % (layer.name, known_type(layer) or "Python")
        if layer.python_param.module == "caffe_losses":
            problems += ["%s: %s" % (where, p) for p in our_layer_problems(layer)]
        else:
            problem = python_layer_problem(layer.python_param)
            if problem:
                problems.append("%s: %s" % (where, problem))
    return problems


def python_layer_problem(param):
    """Why Caffe could not make the Python layer of ``param`` (a python_param), or None: its
    module does not import here, or has no such layer."""
    if not param.module:
        return "python_param has no module"
    try:
        module = importlib.import_module(param.module)
    except (Exception, SystemExit) as exc:
        close = difflib.get_close_matches(param.module, ["caffe_losses"], n=1)
        return ("module %r does not import (%s: %s)%s" % (
            param.module, type(exc).__name__, exc,
            "; did you mean 'caffe_losses'?" if close else "; put its folder on PYTHONPATH"))
    if not hasattr(module, param.layer):
        return "module %r has no layer %r" % (param.module, param.layer)
    return None


def our_layer_problems(layer):
    """The problems of a caffe_losses layer: its name, param_str, bottoms, loss_weight."""
    name = layer.python_param.layer
    if name not in table.BY_NAME:
        return ["caffe_losses has no layer %r; it has %s" % (name, ", ".join(sorted(table.BY_NAME)))]
    row, problems = table.BY_NAME[name], []
    try:
        row.parse(layer.python_param.param_str)
    except ParamError as exc:
        problems.append(str(exc))
    if row.kind == "data":
        if layer.bottom:
            problems.append("takes no bottoms, has %d" % len(layer.bottom))
        return problems
    if row.kind == "metric":
        if len(layer.bottom) != 2:
            problems.append("takes 2 bottoms (scores, labels), has %d" % len(layer.bottom))
        return problems
    if not 2 <= len(layer.bottom) <= 3:
        problems.append("takes 2 or 3 bottoms (%s, %s, [%s]), has %d"
                        % (row.bottoms + (len(layer.bottom),)))
    # an explicit 'loss_weight: 0' is a loss kept for display, as Caffe's nets have them
    if not layer.loss_weight:
        problems.append("no loss_weight, so Caffe never calls its backward and the net does not "
                        "learn from it: add 'loss_weight: 1'")
    return problems
