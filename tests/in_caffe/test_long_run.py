"""10,000 training iterations with each layer: no NaN, no warning spam, and resident memory
that stays flat (the layers reuse their buffers instead of allocating per call).

Marked slow; `make test` runs it (about half a minute for all layers)."""
import os
import warnings

import caffe
import numpy as np
import pytest

from test_training import LOSSES, net_text, write_data

ITERATIONS = 10000
CHUNK = 1000


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.parametrize("layer", sorted(LOSSES))
def test_ten_thousand_iterations_stay_finite_quiet_and_flat(layer, tmp_path):
    directory = str(tmp_path)
    write_data(directory)
    label, param_str, activation = LOSSES[layer]
    net_path = os.path.join(directory, "net.prototxt")
    with open(net_path, "w") as f:
        f.write(net_text(directory, layer, label, param_str, activation))
    solver_path = os.path.join(directory, "solver.prototxt")
    with open(solver_path, "w") as f:
        f.write('net: "%s"\nbase_lr: 0.02\nmomentum: 0.9\nlr_policy: "fixed"\ndisplay: 0\n'
                'max_iter: %d\nsnapshot: 0\nsnapshot_after_train: false\nrandom_seed: 3\n'
                'solver_mode: CPU\n' % (net_path, ITERATIONS))
    caffe.set_random_seed(3)
    solver = caffe.get_solver(solver_path)
    resident = []
    losses = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(ITERATIONS // CHUNK):
            solver.step(CHUNK)
            losses.append(float(solver.net.blobs["loss"].data))
            resident.append(resident_bytes())
    assert np.isfinite(losses).all()
    assert solver.iter == ITERATIONS
    assert not caught, [str(w.message) for w in caught][:3]
    # after the first chunk (allocator and caches warm), memory must not grow
    growth = max(resident[1:]) - resident[0]
    print("%s: resident %.1f MB after %d iterations, %+.2f MB over the next %d"
          % (layer, resident[0] / 2 ** 20, CHUNK, growth / 2 ** 20, ITERATIONS - CHUNK))
    assert growth < 2 * 2 ** 20
