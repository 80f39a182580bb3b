"""The shapes Caffe gives the blobs and parameters of a net, found by building the net.

Caffe computes a parameter's shape from its bottom's (an InnerProduct's weights from the
number of inputs), so only Caffe can say them. It is asked in a child process: on a net
whose shapes do not fit, Caffe aborts the whole process (a failed CHECK), which would end
the command with a C++ stack trace instead of one line.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

from .io import PrototxtError, net_text

# what the child runs: build each net (TEST phase), print its shapes as a line of JSON
CHILD = "\n".join([
    "import json, sys",
    "import caffe",
    "for path in sys.argv[1:]:",
    "    net = caffe.Net(path, caffe.TEST)",
    "    print(json.dumps({'blobs': {k: b.data.shape for k, b in net.blobs.items()},",
    "                      'params': {n: [b.data.shape for b in l.blobs]",
    "                                 for n, l in zip(net._layer_names, net.layers) if len(l.blobs)}}))",
    "    sys.stdout.flush()",
])


class Shapes(object):
    """``blobs``: {blob: shape}; ``params``: {layer name: [shape of each parameter blob]}."""

    def __init__(self, blobs, params):
        self.blobs = {k: tuple(v) for k, v in blobs.items()}
        self.params = {k: [tuple(s) for s in v] for k, v in params.items()}


def net_shapes(nets, names):
    """The :class:`Shapes` of each of ``nets`` (NetParameters whose data come from Input
    layers) as Caffe builds them in the TEST phase; PrototxtError with Caffe's reason for
    the first it cannot build (``names``: how the messages call each net)."""
    paths = []
    try:
        for net in nets:
            fd, path = tempfile.mkstemp(suffix=".prototxt")
            paths.append(path)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(net_text(net))
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1",  # to name the layer that fails
                   PYTHONPATH=os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p))
        done = subprocess.run([sys.executable, "-c", CHILD] + paths, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, env=env)
    finally:
        for path in paths:
            os.remove(path)
    built = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or len(built) != len(nets):
        raise PrototxtError("Caffe cannot build %s: %s" % (names[min(len(built), len(nets) - 1)],
                                                           reason(done.stderr)))
    return [Shapes(found["blobs"], found["params"]) for found in built]


def dims(shape):
    return " x ".join(map(str, shape)) or "a scalar"


def reason(stderr):
    """Why Caffe stopped, in one line: the layer it was setting up (the last one its log
    names) and the failed check, or Python's exception."""
    layers = re.findall(r"\] Creating Layer (.*)$", stderr, re.M)
    fatal = re.findall(r"^F\d{4} [^\]]*\] (.*)$", stderr, re.M)
    lines = [line.strip() for line in stderr.splitlines()
             if line.strip() and not re.match(r"[IWE]\d{4} \d", line)]  # not glog's own lines
    why = fatal[0] if fatal else lines[-1] if lines else "it stopped without a message"
    return "layer %r: %s" % (layers[-1], why) if layers else why
