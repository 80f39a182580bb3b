"""The processes of a run on several GPUs (caffe_losses.ranks) and how its signals are shared
(caffe_losses.signals), without Caffe: a rank that dies ends the others with one line naming
it and its GPU; a child dies with its parent; every rank stops after the iteration rank 0
fixes. tests/in_caffe/test_training_gpus.py runs them under the training script."""
import copy
import os
import signal
import subprocess
import sys
import time

import pytest

from caffe_losses import ranks
from caffe_losses.signals import Signals


def test_run_returns_rank_0s_status_once_every_rank_has_ended():
    assert ranks.run(lambda rank: 7 if rank == 0 else 0, [2, 5]) == 7


def stuck_unless(rank, dies, folder):
    """Rank ``dies`` ends as the test says; the others write their PID and wait forever, as
    ranks left in NCCL's all-reduce."""
    if rank == dies[0]:
        time.sleep(0.5)
        if dies[1] == "raises":
            raise ValueError("a layer broke\nsecond line")
        os.kill(os.getpid(), signal.SIGKILL)
    with open(os.path.join(folder, str(rank)), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)


@pytest.mark.parametrize("how,said", [
    ("raises", "failed: ValueError: a layer broke"),
    ("killed", "was killed by SIGKILL (signal 9), which the kernel's out-of-memory killer sends "
               "(dmesg tells whether it did)"),
])
def test_a_rank_that_dies_ends_the_others_with_one_line(tmp_path, capfd, how, said):
    began = time.time()
    with pytest.raises(ranks.RankFailure) as failure:
        ranks.run(lambda rank: stuck_unless(rank, (1, how), str(tmp_path)), [0, 3, 4])
    assert str(failure.value) == "rank 1 (GPU 3) %s; the other ranks were stopped" % said
    assert time.time() - began < 20
    for rank in (0, 2):
        with open(str(tmp_path / str(rank))) as f:
            pid = int(f.read())
        with pytest.raises(ProcessLookupError):  # ended, and reaped
            os.kill(pid, 0)
    if how == "raises":  # the rank's own traceback, for whoever debugs the layer
        assert "ValueError: a layer broke" in capfd.readouterr().err


def test_call_in_child_raises_the_expected_exceptions_again_and_names_the_others():
    class Refused(Exception):
        pass

    def refuse():
        raise Refused("one line")
    with pytest.raises(Refused, match="^one line$"):
        ranks.call_in_child(refuse, expected=(Refused,))
    with pytest.raises(ranks.ChildFailed, match="^failed: Refused: one line$"):
        ranks.call_in_child(refuse)
    assert ranks.call_in_child(os.getpid) != os.getpid()


def test_a_child_dies_with_its_parent():
    parent = subprocess.Popen(
        [sys.executable, "-c", "import time; from caffe_losses import ranks; "
         "process, _ = ranks.start(time.sleep, (60,)); print(process.pid, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, universal_newlines=True,
        env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))))
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.time() + 5
    while time.time() < deadline and os.path.exists("/proc/%d" % child):
        time.sleep(0.02)
    assert not os.path.exists("/proc/%d" % child)


@pytest.fixture
def signals():
    made = []
    yield lambda *args: made.append(Signals(*args)) or made[-1]
    for s in made:
        s.restore()


def test_one_process_stops_after_the_iteration_it_is_in(signals):
    s = signals(10)
    assert s.go_on(3) and s.stop is None
    s.note(signal.SIGINT, None)
    assert not s.go_on(3) and s.stop == signal.SIGINT and s.exit_status() == 0
    assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL  # a second one ends it at once
    assert not s.go_on(10)


def test_on_several_gpus_rank_0_fixes_the_next_iteration_for_every_rank(signals):
    leader = signals(10, 2)
    follower = copy.copy(leader)  # what a forked rank holds: the same shared values
    follower.follow()
    ranks.call_in_child(leader.note, signal.SIGTERM, None)  # any process of the run
    assert leader.stop == signal.SIGTERM and leader.exit_status() == 128 + signal.SIGTERM
    assert follower.go_on(4)  # rank 1 may begin iteration 5 before rank 0 has looked
    assert leader.go_on(4)  # rank 0, between 4 and 5: every rank runs 5, then stops
    assert not follower.go_on(5) and not leader.go_on(5)
    assert not leader.go_on(9) and leader.stop_at.value == 5


def test_rank_0_never_fixes_an_iteration_past_max_iter(signals):
    leader = signals(10, 2)
    leader.note(signal.SIGINT, None)
    assert not leader.go_on(10) and leader.stop_at.value == 10


def test_each_sighup_asks_for_one_snapshot(signals):
    s = signals(10, 2)
    assert not s.take_snapshot()
    s.note(signal.SIGHUP, None)
    s.note(signal.SIGHUP, None)
    assert s.take_snapshot() and not s.take_snapshot()
    assert s.stop is None and s.go_on(5)
