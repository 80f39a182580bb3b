"""The training script under signals, as `caffe train` takes them: SIGINT and SIGTERM stop
after the current iteration with a snapshot, the curves and the command that resumes; a
second one stops at once; SIGHUP snapshots and goes on; no worker is left. Real runs,
signalled as a user (Ctrl-C: the whole process group) or a scheduler would."""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from training_runs import (environment, hdf5_data, image_data, pace, read_until, scores_and_loss,
                           start, stop, wait_for_empty_group, wait_for_forwards, write_data,
                           write_images, write_net, write_solver)

STARTED = "training iterations"


def endless_run(tmp_path, seconds=0.005, data=None):
    """A solver of 100,000 iterations of a small net, each at least ``seconds`` long, whose
    forwards are counted in ``tmp_path/forwards``."""
    data = data or hdf5_data(write_data(tmp_path))
    net = write_net(tmp_path, data + scores_and_loss() + pace(seconds, str(tmp_path / "forwards")))
    return write_solver(tmp_path, net, max_iter=100000, snapshot_prefix='"%s/out/run"' % tmp_path)


def started(process, tmp_path, iterations=20):
    """Until ``process`` has trained ``iterations``; the lines it printed."""
    seen = []
    read_until(process, STARTED, seen)
    wait_for_forwards(str(tmp_path / "forwards"), iterations)
    return seen


def stopped_at(output, name):
    found = re.search(r"stopped by %s after iteration (\d+) of 100000 \(" % name, output)
    assert found, output[-3000:]
    return int(found.group(1))


def test_sigint_stops_after_the_iteration_with_a_snapshot_and_the_resume_command_continues(tmp_path):
    solver = endless_run(tmp_path)
    process = start("--solver", solver, "--test-interval", "0")
    seen = started(process, tmp_path)
    stop(process, signal.SIGINT)
    output = "".join(seen) + process.communicate(timeout=60)[0]
    assert process.returncode == 0, output[-3000:]
    n = stopped_at(output, "SIGINT")
    state = "%s/out/run_iter_%d.solverstate" % (tmp_path, n)
    assert os.path.exists(state) and os.path.exists(state.replace(".solverstate", ".caffemodel"))
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    curves = json.load(open(str(tmp_path / "out" / "curves.json")))
    assert curves["train"][-1][0] == n
    command = re.search(r"^to resume: (.*)$", output, re.M).group(1)
    assert command == "python3 -m caffe_losses.train --solver %s --test-interval 0 --resume %s" % (
        solver, state)
    # the printed command continues the run: from iteration n to the (now nearer) end
    with open(solver) as f:
        text = f.read()
    with open(solver, "w") as f:
        f.write(text.replace("max_iter: 100000", "max_iter: %d" % (n + 5)))
    resumed = subprocess.run([sys.executable] + shlex.split(command)[1:], env=environment(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "training iterations %d to %d" % (n + 1, n + 5) in resumed.stdout
    assert "trained %d iterations" % (n + 5) in resumed.stdout
    continued = json.load(open(str(tmp_path / "out" / "curves.json")))
    assert continued["train"][:len(curves["train"])] == curves["train"]  # the first run's curve kept
    assert continued["train"][-1][0] == n + 5


def test_sighup_snapshots_and_goes_on_and_sigterm_to_the_group_stops_with_143(tmp_path):
    process = start("--solver", endless_run(tmp_path), "--test-interval", "0")
    seen = started(process, tmp_path)
    stop(process, signal.SIGHUP)
    line = read_until(process, "snapshot (SIGHUP)", seen)
    n = int(re.search(r"iteration (\d+): snapshot \(SIGHUP\): ", line).group(1))
    assert line.rstrip().endswith("%s/out/run_iter_%d.caffemodel, %s/out/run_iter_%d.solverstate"
                                  % (tmp_path, n, tmp_path, n))
    assert os.path.exists(str(tmp_path / "out" / ("run_iter_%d.solverstate" % n)))
    wait_for_forwards(str(tmp_path / "forwards"), n + 20)
    assert process.poll() is None  # still training
    stop(process, signal.SIGTERM, group=True)
    output = "".join(seen) + process.communicate(timeout=60)[0]
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    m = stopped_at(output, "SIGTERM")
    assert m > n and os.path.exists(str(tmp_path / "out" / ("run_iter_%d.solverstate" % m)))
    assert "to resume: " in output
    assert wait_for_empty_group(process.pid) == []


def test_a_second_sigint_stops_at_once(tmp_path):
    # each iteration sleeps 20 s: the run can only end quickly if the second signal ends it
    process = start("--solver", endless_run(tmp_path, seconds=20), "--test-interval", "0")
    started(process, tmp_path, iterations=1)  # in the first iteration's sleep
    began = time.time()
    stop(process, signal.SIGINT, group=True)
    time.sleep(0.3)
    stop(process, signal.SIGINT, group=True)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGINT
    assert time.time() - began < 10
    assert not os.path.exists(str(tmp_path / "out"))  # stopped mid-iteration: nothing written


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_to_the_group_with_image_data_workers_stops_cleanly_and_leaves_none(tmp_path, name):
    # MultiLabelImageData's worker processes are in the group too: they leave the signal to
    # the training process, which finishes its iteration and ends them
    number = getattr(signal, name)
    solver = endless_run(tmp_path, data=image_data(write_images(tmp_path, 12), processes=2))
    process = start("--solver", solver, "--test-interval", "0")
    seen = started(process, tmp_path)
    stop(process, number, group=True)
    output = "".join(seen) + process.communicate(timeout=60)[0]
    assert process.returncode == (0 if number == signal.SIGINT else 128 + number), output[-3000:]
    n = stopped_at(output, name)
    assert os.path.exists(str(tmp_path / "out" / ("run_iter_%d.solverstate" % n)))
    assert "Traceback" not in output
    assert wait_for_empty_group(process.pid) == []
