"""Every kernel compiles without a warning, and loads from numba's disk cache in a new
process: a process that compiles them again pays seconds per kernel, and the compile
moves C's rand(), which Caffe's HDF5Data shuffles with, so that two trainings with the
same seed would differ.

Both in fresh processes with a cache that holds no kernel, so that the kernels really
compile: the session's own cache where it holds none yet (a fresh `make test`:
conftest.py runs this test first, and the tests after it load the kernels compiled
here), else a new folder. Needs numba: `make test` runs it with today's numba on the
host and with Debian's in the image."""
import glob
import json
import os
import subprocess
import sys

import pytest

from caffe_losses import jit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Calls every loss on the blobs that take each of its kernels, in float32 and float64,
# with warnings as errors (numba's included: a kernel that compiles with a warning stops
# the script); then prints, per kernel of jit.KERNELS, its compiled signatures and this
# process's cache hits and misses.
EVERY_KERNEL = """
import json
import warnings

warnings.simplefilter("error")

import numpy as np
from caffe_losses import functional as F
from caffe_losses import jit

rng = np.random.default_rng(0)
for dtype in (np.float32, np.float64):
    # rows of a small blob, rows of a large one (multi-label: above GRAD_IN_FORWARD_MAX),
    # planes
    for shape in ((4, 5), (20, 600), (2, 5, 3, 4)):
        scores = rng.normal(size=shape).astype(dtype)
        dense = (rng.random(shape) < 0.4).astype(dtype)
        sparse = rng.integers(0, 5, (shape[0], 1) + shape[2:]).astype(dtype)
        if shape[1] != 5:
            sparse = rng.integers(0, shape[1], shape[0]).astype(dtype)
        probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
        calls = [(F.SoftmaxCrossEntropy(), scores, sparse), (F.SoftmaxFocal(), scores, sparse),
                 (F.MultiLabelSoftmax(), scores, dense), (F.ZLPR(), scores, dense),
                 (F.Asymmetric(), scores, dense), (F.CrossEntropy(), probs, dense)]
        calls += [(F.SigmoidFocal(gamma=gamma), scores, dense) for gamma in (0.0, 1.0, 2.0, 0.5)]
        teacher = rng.normal(size=shape).astype(dtype)  # (a distillation loss's second input)
        calls += [(F.Distillation(activation=a), scores, teacher) for a in ("softmax", "sigmoid")]
        for loss, inputs, labels in calls:
            loss.forward(inputs, labels)
            loss.backward(np.empty(loss.ws, dtype), 1.0)
assert not jit._FAILED, jit._FAILED
print(json.dumps({"%s.%s" % (k.py_func.__module__, k.py_func.__name__):
                  [len(k.signatures), sum(k.stats.cache_hits.values()),
                   sum(k.stats.cache_misses.values())] for k in jit.KERNELS}))
"""


def session_cache_is_empty():
    """Whether numba's cache for this session holds no kernel: the NUMBA_CACHE_DIR folder,
    or without it the __pycache__ folders next to the modules."""
    folder = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(ROOT, "caffe_losses")
    return not glob.glob(os.path.join(folder, "**", "*.nbi"), recursive=True)


def run_in_new_process(script, cache_dir):
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not jit.ENABLED, reason="needs numba")
def test_every_kernel_compiles_without_a_warning_then_loads_from_the_cache(tmp_path):
    cache = None if session_cache_is_empty() else tmp_path
    first = run_in_new_process(EVERY_KERNEL, cache)
    assert len(first) == len(jit.KERNELS) >= 18
    # each compiled for float32 and float64 (a kernel shared by several, once per caller's
    # constant too), none found in the fresh cache
    assert {name: counts for name, counts in first.items()
            if counts[0] < 2 or counts[1] != 0 or counts[2] != counts[0]} == {}
    second = run_in_new_process(EVERY_KERNEL, cache)
    # none compiled again; each kernel called from Python loaded once per dtype (those
    # only called by another kernel come compiled into it)
    assert sum(counts[2] for counts in second.values()) == 0
    assert {name: counts for name, counts in second.items() if counts[1] != counts[0]} == {}
    assert len([name for name, counts in second.items() if counts[1]]) >= 18
