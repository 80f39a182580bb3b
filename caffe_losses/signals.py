"""How a training run takes SIGINT, SIGTERM and SIGHUP, as ``caffe train`` takes them
(``-sigint_effect stop -sighup_effect snapshot``), in one process or in one per GPU.

pycaffe's ``solver.step`` runs in C++ holding Python's lock, so a Python signal handler runs
only inside a Python layer or between steps: the handler only takes note, and the training
loop, which steps one iteration at a time, acts between two iterations.

On several GPUs (one process per GPU, :mod:`caffe_losses.ranks`) every rank must stop after
the same iteration: one that stepped once more than the others would wait in NCCL's
all-reduce forever. The notes are in shared memory, made before the ranks are forked, so
that a signal to any process of the run (the parent, a rank, or all of them: Ctrl-C signals
the whole process group) counts. Rank 0 alone reads them, between two of its iterations,
and fixes the iteration every rank stops after (``stop_at``); each rank reads it before each
step. The all-reduce lets no rank finish iteration k + 1 before every rank has begun it, so
while rank 0 stands between iterations k and k + 1, no rank has begun k + 2: rank 0 fixes
k + 1, which every rank reaches, and none passes. So a run on several GPUs stops one
iteration later than a run in one process, whose single rank fixes k.
"""
import os
import signal
from multiprocessing.sharedctypes import RawValue


class Signals(object):
    """The handler of SIGINT, SIGTERM and SIGHUP for a run to ``max_iter`` on ``ranks``
    processes, installed from its creation to :meth:`restore`: ``stop``, the signal that asked
    to stop, and whether to go on, snapshot, and with what exit status to end."""

    STOP = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, max_iter, ranks=1):
        self.request = RawValue("i", 0)  # the signal that asked to stop first; 0: none
        self.hangups = RawValue("i", 0)  # SIGHUPs so far: snapshots asked for
        self.stop_at = RawValue("i", max_iter)  # the iteration every rank stops after
        self.ahead = 1 if ranks > 1 else 0
        self.leader, self.snapshots = True, 0
        self.owner = os.getpid()
        self.previous = {s: signal.signal(s, self.note) for s in self.STOP + (signal.SIGHUP,)}

    def note(self, number, frame):
        """The handler, in whichever process of the run gets the signal."""
        if number == signal.SIGHUP:
            self.hangups.value += 1
            return
        if not self.request.value:
            self.request.value = number
        for s in self.STOP:  # a second one ends the process at once
            signal.signal(s, signal.SIG_DFL)

    @property
    def stop(self):
        return self.request.value or None

    def follow(self):
        """In a rank but 0: read the iteration to stop after; rank 0 fixes it."""
        self.leader = False

    def go_on(self, iteration):
        """Whether to run the iteration after ``iteration``."""
        if self.leader and self.request.value and self.stop_at.value > iteration + self.ahead:
            self.stop_at.value = iteration + self.ahead
        return iteration < self.stop_at.value

    def take_snapshot(self):
        """Whether a SIGHUP asked for a snapshot since the last call."""
        asked, self.snapshots = self.hangups.value > self.snapshots, self.hangups.value
        return asked

    def restore(self):
        """The handlers as they were (in the process that installed these)."""
        if os.getpid() == self.owner:
            for number, handler in self.previous.items():
                signal.signal(number, handler)

    def exit_status(self):
        """``caffe train`` ends with 0 after SIGINT; after SIGTERM, the shell's 128 + 15."""
        return 128 + signal.SIGTERM if self.stop == signal.SIGTERM else 0
