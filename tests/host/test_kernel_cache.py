"""The sigmoid kernels load from numba's disk cache in a new process: a process that
compiles them again pays seconds per kernel, and the compile moves C's rand(), which
Caffe's HDF5Data shuffles with, so that two trainings with the same seed differ.
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

# one call of each kernel (gamma 0, 1, 2 and another), then each kernel's cache hits and
# misses in this process
SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    from caffe_losses.losses import sigmoid

    scores = np.linspace(-3, 3, 20, dtype=np.float32).reshape(4, 5)
    labels = (scores > 0.5).astype(np.float32)
    for gamma in (0.0, 1.0, 2.0, 0.5):
        sigmoid.sigmoid_focal_loss(scores, labels, gamma=gamma)
    print(json.dumps([[sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values())]
                      for k in sigmoid.KERNELS]))
""")


def run_in_new_process(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir),
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not jit.ENABLED, reason="needs numba")
def test_sigmoid_kernels_load_from_the_cache_in_a_new_process(tmp_path):
    first = run_in_new_process(tmp_path)
    assert first == [[0, 1]] * 4  # compiled, once each, into the empty cache
    second = run_in_new_process(tmp_path)
    assert second == [[1, 0]] * 4  # loaded, none compiled again
