"""Each loss's compiled kernels against its numpy reference, side by side.

    tools/caffe-env python3 benchmarks/jit_vs_numpy.py      (or: make bench-jit)
    tools/caffe-env python3 benchmarks/jit_vs_numpy.py --calls

Times forward+backward of each loss of caffe_losses.functional (no Caffe net), once
with its kernel and once with its numpy reference alone, on the same arrays, in rounds
that alternate the two; prints the medians and their ratio as a markdown table. With
--calls, a function call (a new object each call) against a kept object's instead.
Needs numba (the image has it).
"""
import os
import sys
import timeit

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffe_losses import functional as F  # noqa: E402
from caffe_losses.inputs import work_shape  # noqa: E402
from caffe_losses.kernels import jit  # noqa: E402

SHAPES = [(32, 20), (64, 128), (128, 256), (256, 1000), (8, 21, 128, 128)]
# (name, loss, labels kind, input kind, whether a kernel takes N x C x H x W blobs)
LOSSES = [
    ("SoftmaxCrossEntropy", F.SoftmaxCrossEntropy, "sparse", "scores", True),
    ("SoftmaxFocal", F.SoftmaxFocal, "sparse", "scores", True),
    ("MultiLabelSoftmax", F.MultiLabelSoftmax, "dense", "scores", True),
    ("CrossEntropy", F.CrossEntropy, "dense", "probs", False),
    ("SigmoidCrossEntropy", F.SigmoidCrossEntropy, "binary", "scores", True),
    ("SigmoidFocal", F.SigmoidFocal, "binary", "scores", True),
]


def arrays(shape, rng):
    n, c = shape[:2]
    scores = rng.normal(0, 2, shape).astype(np.float32)
    classes = rng.integers(0, c, (n,) + shape[2:])
    dense = np.moveaxis(np.eye(c, dtype=np.float32)[classes], -1, 1)
    dense = np.maximum(dense, (rng.random(shape) < 2.0 / c).astype(np.float32))
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return {"scores": scores, "probs": (e / e.sum(axis=1, keepdims=True)).astype(np.float32),
            "dense": dense, "binary": (rng.random(shape) < 2.0 / c).astype(np.float32),
            "sparse": classes.reshape((n, 1) + shape[2:] if len(shape) > 2 else (n,))
            .astype(np.float32)}


def call(loss, inputs, labels, out, use_jit):
    def run():
        loss.prepare(inputs)
        loss.use_jit = use_jit
        loss.forward(inputs, labels)
        loss.backward(out, 1.0)
        assert loss.jitted == use_jit
    return run


def medians(runs, rounds=7):
    """Median ms of each of ``runs`` ({name: function}), in rounds that alternate them."""
    for run in runs.values():
        run()  # compiles the loop, allocates the buffers
    number = max(1, int(0.02 / max(timeit.timeit(run, number=1) for run in runs.values())))
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(timeit.timeit(run, number=number) / number)
    return {name: float(np.median(values)) * 1e3 for name, values in times.items()}


def kernels_against_numpy(rng):
    print("| loss | shape | kernel ms | numpy ms | kernel / numpy |")
    print("| --- | --- | ---: | ---: | ---: |")
    for shape in SHAPES:
        data = arrays(shape, rng)
        out = np.empty(work_shape(shape, 1), np.float32)
        for name, make, labels, inputs, planes in LOSSES:
            if len(shape) > 2 and not planes:
                continue
            times = medians({flag: call(make(), data[inputs], data[labels], out, flag)
                             for flag in (True, False)})
            print("| %s | %s | %.3f | %.3f | %.2f |" % (name, "x".join(map(str, shape)),
                                                       times[True], times[False],
                                                       times[True] / times[False]), flush=True)


def calls(rng):
    """What a function call costs (a new object each time: ``caffe_losses.functional``'s
    functions) against a kept object's call, and its forward and backward into a kept
    gradient array."""
    print("| loss | shape | function ms | kept object ms | kept object, kept gradient ms "
          "| function / kept object |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for shape in ((32, 20), (256, 1000), (8, 21, 128, 128)):
        data = arrays(shape, rng)
        out = np.empty(shape, np.float32)
        for name, make, labels, inputs, planes in LOSSES:
            if len(shape) > 2 and not planes:
                continue
            x, y, kept = data[inputs], data[labels], make()

            def into_kept_gradient():
                kept.forward(x, y)
                kept.backward(out.reshape(kept.ws), 1.0)
            times = medians({"function": lambda: make()(x, y), "kept": lambda: kept(x, y),
                             "kept gradient": into_kept_gradient})
            print("| %s | %s | %.3f | %.3f | %.3f | %.2f |" % (
                name, "x".join(map(str, shape)), times["function"], times["kept"],
                times["kept gradient"], times["function"] / times["kept"]), flush=True)


def main():
    if not jit.ENABLED:
        sys.exit("numba is not installed (or CAFFE_LOSSES_JIT=0): nothing to compare")
    rng = np.random.default_rng(0)
    if "--calls" in sys.argv[1:]:
        calls(rng)
    else:
        kernels_against_numpy(rng)


if __name__ == "__main__":
    main()
