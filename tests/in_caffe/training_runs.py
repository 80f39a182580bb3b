"""Small nets, solvers and Python layers for the tests of ``python3 -m caffe_losses.train``.

``Pace`` and ``ListData`` are Python layers these nets name (``module: "training_runs"``):
Pace sleeps in its forward (a run that a test can signal mid-iteration), counts its forwards
in a file, one line each naming the solver rank and process, and can fail on purpose; ListData is a data layer that knows the length of its list, as
MultiLabelImageData does (its ``images`` and ``batch_size`` attributes).
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
ROWS, FEATURES, CLASSES = 64, 8, 3

try:
    import caffe
except ImportError:  # imported by a layer's module search only where pycaffe is
    caffe = None


if caffe is not None:
    class Pace(caffe.Layer):
        """``param_str`` {"seconds": s, "log": path, "fail": [rank, n]}: sleeps s in each
        forward and appends a line "forward RANK PID" to the file at path (if given); raises
        a ValueError at the n-th forward in solver rank ``rank`` (if given). No tops."""

        def setup(self, bottom, top):
            params = json.loads(self.param_str or "{}")
            self.seconds, self.log = params.get("seconds", 0), params.get("log")
            self.fail, self.forwards = params.get("fail"), 0

        def reshape(self, bottom, top):
            pass

        def forward(self, bottom, top):
            self.forwards += 1
            if self.log:
                with open(self.log, "a") as f:
                    f.write("forward %d %d\n" % (caffe.solver_rank(), os.getpid()))
            if self.fail and self.fail == [caffe.solver_rank(), self.forwards]:
                raise ValueError("Pace: failing on purpose at forward %d of rank %d"
                                 % (self.forwards, self.fail[0]))
            time.sleep(self.seconds)

        def backward(self, top, propagate_down, bottom):
            pass

    class ListData(caffe.Layer):
        """``param_str`` {"images": n, "batch_size": b}: tops data (b x FEATURES) and label
        (b x CLASSES), zeros, from a list of n images."""

        def setup(self, bottom, top):
            params = json.loads(self.param_str)
            self.images, self.batch_size = params["images"], params["batch_size"]
            top[0].reshape(self.batch_size, FEATURES)
            top[1].reshape(self.batch_size, CLASSES)

        def reshape(self, bottom, top):
            pass

        def forward(self, bottom, top):
            top[0].data[...] = 0
            top[1].data[...] = 0

        def backward(self, top, propagate_down, bottom):
            pass


def write_data(folder, rows=ROWS, name="data", features=FEATURES):
    """An HDF5 file of ``rows`` samples (data: ``features``, label: CLASSES 0/1) and its list."""
    import h5py
    rng = np.random.default_rng(7)
    labels = (rng.random((rows, CLASSES)) < 0.4).astype(np.float32)
    data = (labels @ rng.normal(size=(CLASSES, features)) + rng.normal(0, 0.3, (rows, features)))
    path = os.path.join(str(folder), "%s.h5" % name)
    with h5py.File(path, "w") as f:
        f["data"], f["label"] = data.astype(np.float32), labels
    listing = os.path.join(str(folder), "%s.txt" % name)
    with open(listing, "w") as f:
        f.write(path + "\n")
    return listing


def write_images(folder, count, name="images"):
    """``count`` 8 x 8 PNG images in ``folder/name/`` and their list, one class index each."""
    import cv2
    rng = np.random.default_rng(3)
    where = os.path.join(str(folder), name)
    os.makedirs(where, exist_ok=True)
    lines = []
    for i in range(count):
        cv2.imwrite(os.path.join(where, "%d.png" % i), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        lines.append("%s/%d.png %d\n" % (where, i, i % CLASSES))
    listing = where + ".txt"
    with open(listing, "w") as f:
        f.write("".join(lines))
    return listing


def image_data(listing, batch_size=4, phase=None, tops=("data", "label"), **params):
    """A MultiLabelImageData layer reading ``listing``; ``params``: more param_str keys."""
    include = " include { phase: %s }" % phase if phase else ""
    params = dict(dict(source=listing, num_classes=CLASSES, batch_size=batch_size), **params)
    return ('layer { name: "images" type: "Python" top: "%s" top: "%s"%s\n'
            '  python_param { module: "caffe_losses" layer: "MultiLabelImageData" param_str: "%s" } }\n'
            % (tops + (include, repr(params))))


def hdf5_data(listing, batch_size=16, phase=None):
    include = " include { phase: %s }" % phase if phase else ""
    return ('layer { name: "data" type: "HDF5Data" top: "data" top: "label"%s\n'
            '  hdf5_data_param { source: "%s" batch_size: %d } }\n' % (include, listing, batch_size))


def scores_and_loss(score="score", outputs=CLASSES, extra=""):
    """An InnerProduct to ``score`` and a SigmoidCrossEntropyLoss on it, then ``extra``."""
    return ('layer { name: "%s" type: "InnerProduct" bottom: "data" top: "%s"\n'
            '  inner_product_param { num_output: %d weight_filler { type: "xavier" } } }\n'
            'layer { name: "loss" type: "Python" bottom: "%s" bottom: "label" top: "loss"\n'
            '  loss_weight: 1 python_param { module: "caffe_losses" layer: "SigmoidCrossEntropyLoss" } }\n'
            % (score, score, outputs, score)) + extra


def pace(seconds=0.0, log=None, bottom="score", phase=None, fail=None):
    include = " include { phase: %s }" % phase if phase else ""
    params = json.dumps({"seconds": seconds, "log": log, "fail": fail}).replace('"', '\\"')
    return ('layer { name: "pace_%s" type: "Python" bottom: "%s"%s\n'
            '  python_param { module: "training_runs" layer: "Pace" param_str: "%s" } }\n'
            % (phase or "all", bottom, include, params))


def write_net(folder, text, name="net"):
    path = os.path.join(str(folder), "%s.prototxt" % name)
    with open(path, "w") as f:
        f.write(text)
    return path


def write_solver(folder, net_path, name="solver", **settings):
    """A solver for the net file ``net_path``; ``settings`` add to or replace the defaults
    (None: left out)."""
    lines = dict(net='"%s"' % net_path, base_lr=0.05, lr_policy='"fixed"', max_iter=40, display=10,
                 snapshot=0, random_seed=1, solver_mode="CPU")
    lines.update(settings)
    path = os.path.join(str(folder), "%s.prototxt" % name)
    with open(path, "w") as f:
        f.write("".join("%s: %s\n" % (k, v) for k, v in lines.items() if v is not None))
    return path


def environment():
    """The environment of a training process: this checkout and these layers importable."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, HERE]), GLOG_minloglevel="2")


def start(*args, cwd=None, module="caffe_losses.train"):
    """The training script (``module``: or fake_gpus, the script on fake GPUs) in a process
    group of its own, its output one pipe."""
    return subprocess.Popen([sys.executable, "-m", module] + [str(a) for a in args],
                            cwd=cwd, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, start_new_session=True)


def read_until(process, text, seen, timeout=120):
    """Lines of ``process`` into ``seen`` until one holds ``text``; that line."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return line
    raise AssertionError("no line with %r in:\n%s" % (text, "".join(seen)))


def wait_for_forwards(log, count, timeout=120):
    """Until a Pace layer has written ``count`` lines to ``log``: as many iterations ran."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(log):
            with open(log) as f:
                if sum(1 for _ in f) >= count:
                    return
        time.sleep(0.02)
    raise AssertionError("fewer than %d forwards in %s" % (count, log))


def group_members(group):
    """The processes still in process group ``group``."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                members.append(int(entry))
    return members


def wait_for_empty_group(group, timeout=5.0):
    deadline = time.time() + timeout
    while group_members(group) and time.time() < deadline:
        time.sleep(0.05)
    return group_members(group)


def stop(process, number, group=False):
    """Send signal ``number`` to the process (or its group)."""
    if group:
        os.killpg(process.pid, number)
    else:
        process.send_signal(number)

