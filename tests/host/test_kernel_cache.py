"""The kernels load from numba's disk cache in a new process: a process that compiles
them again pays seconds per kernel, and the compile moves C's rand(), which Caffe's
HDF5Data shuffles with, so that two trainings with the same seed differ.
Needs numba (skipped without it, as on a numpy-only host; `make test` runs it in the
image)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from caffe_losses import jit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# each script calls every kernel of a module once, then prints each kernel's cache hits
# and misses in this process
REPORT = """
    print(json.dumps([[sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values())]
                      for k in kernels]))
"""

# gamma 0, 1, 2 and another: one kernel each
SIGMOID = textwrap.dedent("""
    import json
    import numpy as np
    from caffe_losses.losses import sigmoid

    scores = np.linspace(-3, 3, 20, dtype=np.float32).reshape(4, 5)
    labels = (scores > 0.5).astype(np.float32)
    for gamma in (0.0, 1.0, 2.0, 0.5):
        sigmoid.sigmoid_focal_loss(scores, labels, gamma=gamma)
    kernels = sigmoid.KERNELS
""" + REPORT)

# each loss on N x C scores (the rows kernel) and on N x C x H x W scores (the planes
# kernel, and _planes_grad in backward), with and without label smoothing, and with
# gamma 2 and another
SOFTMAX = textwrap.dedent("""
    import json
    import numpy as np
    from caffe_losses.losses import softmax

    for shape in ((4, 5), (2, 5, 3, 4)):
        scores = np.linspace(-3, 3, int(np.prod(shape)), dtype=np.float32).reshape(shape)
        labels = (np.arange(scores.size // 5) % 5).astype(np.float32)
        labels = labels.reshape((shape[0], 1) + shape[2:])
        for smoothing in (0.0, 0.1):
            softmax.softmax_cross_entropy(scores, labels, label_smoothing=smoothing)
        for gamma in (2.0, 0.5):
            softmax.softmax_focal_loss(scores, labels, gamma=gamma)
    kernels = (tuple(softmax.SoftmaxCrossEntropy.KERNELS) + tuple(softmax.SoftmaxFocal.KERNELS)
               + (softmax._planes_grad,))
""" + REPORT)


def run_in_new_process(script, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir),
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not jit.ENABLED, reason="needs numba")
def test_sigmoid_kernels_load_from_the_cache_in_a_new_process(tmp_path):
    first = run_in_new_process(SIGMOID, tmp_path)
    assert first == [[0, 1]] * 4  # compiled, once each, into the empty cache
    second = run_in_new_process(SIGMOID, tmp_path)
    assert second == [[1, 0]] * 4  # loaded, none compiled again


@pytest.mark.skipif(not jit.ENABLED, reason="needs numba")
def test_softmax_kernels_load_from_the_cache_in_a_new_process(tmp_path):
    first = run_in_new_process(SOFTMAX, tmp_path)
    assert first == [[0, 1]] * 5  # rows and planes of each loss, and _planes_grad
    second = run_in_new_process(SOFTMAX, tmp_path)
    assert second == [[1, 0]] * 5
