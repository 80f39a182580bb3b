"""What a call of a plain function (caffe_losses.functional) costs against a loss object
kept by the caller, and against a new object at every call (what the functions did
before they kept theirs): forward+backward, median microseconds.

Run inside the Caffe image:  tools/caffe-env python3 benchmarks/functional_calls.py
(or anywhere the package imports; numba decides whether the kernels run).
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from caffe_losses import functional as F  # noqa: E402
from caffe_losses.kernels import jit  # noqa: E402

CASES = [("multilabel_softmax_loss", F.MultiLabelSoftmax, "dense"),
         ("softmax_cross_entropy", F.SoftmaxCrossEntropy, "sparse"),
         ("sigmoid_focal_loss", F.SigmoidFocal, "dense")]
SHAPES = [(32, 20), (256, 1000), (8, 21, 64, 64)]


def median_times(fns, rounds=5, budget=0.3):
    """Median seconds per call, in rounds that visit every function in turn (as bench.py)."""
    import time
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()
            end = time.perf_counter() + budget / rounds
            while True:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
                if start > end:
                    break
    return {name: float(np.median(t)) for name, t in times.items()}


def main():
    rng = np.random.default_rng(0)
    print("Forward+backward, median us (numba %s)\n" % (jit.numba.__version__ if jit.ENABLED
                                                          else "off"))
    print("| function | shape | new object per call | plain function | kept object | "
          "function / kept |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, cls, kind in CASES:
        function = getattr(F, name)
        for shape in SHAPES:
            scores = rng.normal(0, 2, shape).astype(np.float32)
            if kind == "sparse":
                labels = rng.integers(0, shape[1], (shape[0],) + shape[2:]).astype(np.float32)
            else:
                labels = (rng.random(shape) < 0.1).astype(np.float32)
            kept = cls()
            t = median_times({"new": lambda: cls()(scores, labels),
                              "function": lambda: function(scores, labels),
                              "kept": lambda: kept(scores, labels)})
            print("| %s | %s | %.1f | %.1f | %.1f | %.2f |" % (
                name, "x".join(map(str, shape)), t["new"] * 1e6, t["function"] * 1e6,
                t["kept"] * 1e6, t["function"] / t["kept"]))


if __name__ == "__main__":
    main()
