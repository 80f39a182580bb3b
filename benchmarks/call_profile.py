"""Where the time of one layer call goes on a small blob (32x20 by default): the whole
call in a caffe.Net, a Python layer doing nothing and the C++ counterpart, then the loss
object alone and its steps.

Run inside the Caffe image:  tools/caffe-env python3 benchmarks/call_profile.py
(``--baseline`` adds the layers of the package that ``make bench BASELINE=REV``
extracted, whole calls only; ``--shape 256x1000`` another shape.)

Every time is the median of repeated calls, in rounds that visit every measurement in
turn (benchmarks/bench.py's ``median_times``), in microseconds. The rows of a layer:

* ``layer``: ``net._forward(i, i)`` and ``net._backward(i, i)`` of the loss layer, what
  ``make bench`` times; ``adapter``: that minus the loss object's forward and backward
  (Caffe calling into Python, pycaffe's blob arrays, the layer's own code);
* ``loss``: ``loss.forward(scores, labels)`` and ``loss.backward(out, 1)`` on the same
  arrays, no Caffe; then its steps, each timed alone: ``prepare`` (the scores in the work
  shape), ``plan.forward`` (labels and weights as the kernel takes them, and the kernel),
  ``kernel`` (the kernel call alone: numba's dispatch and the loop), ``normalize``,
  ``backward``; ``rest of forward`` is forward minus those (the shape check, the calls).
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402  (puts the checkout first on the path, sets caffe to CPU)
from caffe_losses import table  # noqa: E402


def loss_steps(row, arrays):
    """Functions that run the loss object's forward+backward and each of its steps."""
    scores = arrays["probs" if row.inputs == "probabilities" else "scores"]
    labels = arrays["teacher" if row.labels == "scores" else row.labels]
    loss = row.cls()
    out = np.empty(scores.shape, np.float32)
    loss.forward(scores, labels)
    x = loss.prepare(scores)
    plan = loss.plan
    result = plan.forward(x, labels, None)
    steps = {"loss": lambda: (loss.forward(scores, labels), loss.backward(out, 1.0)),
             "forward": lambda: loss.forward(scores, labels),
             "prepare": lambda: loss.prepare(scores),
             "plan.forward": lambda: plan.forward(x, labels, None),
             "kernel": lambda: plan.kernel(plan.x, plan.y, plan.no_weights, *plan.arguments),
             "normalize": lambda: loss.normalize(result),
             "backward": lambda: loss.backward(out, 1.0)}
    return steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="32x20")
    parser.add_argument("--baseline", action="store_true",
                        help="also the layers of .scratch/baseline (whole calls)")
    args = parser.parse_args()
    shape = tuple(int(d) for d in args.shape.split("x"))
    if args.baseline:
        bench.add_baseline("baseline")
    arrays = bench.make_arrays(shape)
    fns = {}
    for name, module, param_str, labels_kind, input_kind, _ in bench.IMPLEMENTATIONS:
        if module == "naive" and "nothing" not in name:
            continue
        net = bench.build_net(name, module, param_str, labels_kind, input_kind, arrays)
        fns[name] = bench.layer_fn(net)
    for row in table.LOSSES:
        for step, fn in loss_steps(row, arrays).items():
            fns["%s %s" % (row.name, step)] = fn
    times = {name: t * 1e6 for name, (t, _) in bench.median_times(fns, budget=0.3).items()}
    noop = times["Python layer doing nothing"]
    print("Per call at %s, median us (numba %s)\n" % (args.shape, bench.jit.numba.__version__
                                                       if bench.jit.ENABLED else "off"))
    print("| layer | layer | C++ | adapter | loss | prepare | plan.forward | kernel | "
          "normalize | backward | rest of forward |")
    print("| --- |" + " ---: |" * 10)
    for row in table.LOSSES:
        t = {step: times["%s %s" % (row.name, step)] for step in
             ("loss", "forward", "prepare", "plan.forward", "kernel", "normalize", "backward")}
        cpp = times["C++ " + bench.counterpart(row)]
        rest = t["forward"] - t["prepare"] - t["plan.forward"] - t["normalize"]
        cells = [times[row.name], cpp, times[row.name] - t["loss"], t["loss"], t["prepare"],
                 t["plan.forward"], t["kernel"], t["normalize"], t["backward"], rest]
        print("| %s | %s |" % (row.name, " | ".join("%.2f" % v for v in cells)))
    print("\nPython layer doing nothing: %.2f us" % noop)
    for name in sorted(times):
        if name.startswith(bench.BASELINE):
            print("%s: %.2f us" % (name, times[name]))


if __name__ == "__main__":
    main()
