"""One process per GPU, as Caffe's own ``python/train.py`` trains on several GPUs, and the
child processes a run needs besides: one that answers a question (how many GPUs; whether
the nets build and fit) so that the parent itself never starts CUDA.

The processes are forked, as python/train.py's: CUDA does not survive a fork, so the parent
builds no net and makes no GPU call; what needs one runs in a child
(:func:`call_in_child`). Each child dies with its parent (``PR_SET_PDEATHSIG``): a parent
killed by a second Ctrl-C leaves no rank behind.

:func:`run` starts the ranks and watches them. A rank that ends before its work is done (an
exception in a layer; a signal, such as the kernel's out-of-memory killer's SIGKILL) would
leave the others waiting in NCCL's all-reduce forever: the parent kills them and says which
rank, on which GPU, ended and how, in one line (:class:`RankFailure`).
"""
import ctypes
import multiprocessing
import os
import signal
import sys
import traceback
from multiprocessing.connection import wait

FORK = multiprocessing.get_context("fork")
PR_SET_PDEATHSIG = 1  # prctl: the signal this process gets when its parent ends


class ChildFailed(Exception):
    """A child process that gave no answer: ``how`` it ended, in words."""

    def __init__(self, how):
        super(ChildFailed, self).__init__(how)
        self.how = how


class RankFailure(Exception):
    """A rank that ended before its work was done, in one line."""


def ended(status):
    """How a process that ended with ``status`` (multiprocessing's exitcode) ended, in words."""
    if status is None or status >= 0:
        return "ended with exit status %s" % status
    number = -status
    name = signal.Signals(number).name if number in signal.valid_signals() else "a signal"
    how = "was killed by %s (signal %d)" % (name, number)
    if number == signal.SIGKILL:
        how += ", which the kernel's out-of-memory killer sends (dmesg tells whether it did)"
    return how


def child(function, args, parent, answer, expected):
    """In a forked child: die with ``parent``, then send what ``function(*args)`` returned, or
    what it raised (with a traceback on stderr unless it is one of the ``expected``)."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before prctl
        os._exit(1)
    try:
        result = ("returned", function(*args))
    except BaseException as exc:  # noqa: B902 (the parent decides what an exception means)
        if not isinstance(exc, expected):
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        result = ("raised", type(exc).__name__, first)
    answer.send(result)


def start(function, args=(), expected=()):
    """``function(*args)`` in a forked child: ``(process, connection its answer comes on)``."""
    for stream in (sys.stdout, sys.stderr):  # else the child would write this process's rest
        stream.flush()
    receive, send = FORK.Pipe(duplex=False)
    process = FORK.Process(target=child, args=(function, tuple(args), os.getpid(), send, expected))
    process.start()
    send.close()
    return process, receive


def answer_of(process, receive):
    """The answer of a child that has ended, or has sent it: ``("returned", value)``,
    ``("raised", type name, message)``, or None."""
    try:
        return receive.recv() if receive.poll() else None
    except (EOFError, OSError):
        return None


def call_in_child(function, *args, expected=()):
    """What ``function(*args)`` returns, called in a forked child. An exception of a class in
    ``expected`` is raised again here (with its message); another, or a child that ends with no
    answer, is a :class:`ChildFailed`."""
    process, receive = start(function, args, expected)
    receive.poll(None)  # until the answer, or the child's end
    result = answer_of(process, receive)
    process.join()
    if result is not None and result[0] == "returned":
        return result[1]
    if result is None:
        raise ChildFailed(ended(process.exitcode))
    for kind in expected:
        if kind.__name__ == result[1]:
            raise kind(result[2])
    raise ChildFailed("failed: %s: %s" % result[1:])


def run(target, gpus):
    """``target(rank)`` in one process per GPU of ``gpus``; rank 0's return value (its exit
    status) once every rank has ended. RankFailure if one ends without returning."""
    children = [start(target, (rank,)) for rank in range(len(gpus))]
    try:
        return watch(children, gpus)
    finally:
        for process, _ in children:
            if process.exitcode is None:
                process.kill()
            process.join()


def watch(children, gpus):
    """Until every rank of ``children`` (``(process, answer connection)`` in rank order) has
    ended: rank 0's return value, or the RankFailure of the first to fail."""
    running, status = set(range(len(children))), None
    while running:
        ready = wait([children[r][0].sentinel for r in running])
        done = sorted(r for r in running if children[r][0].sentinel in ready)
        results = {r: answer_of(*children[r]) for r in done}
        failed = [r for r in done if results[r] is None or results[r][0] != "returned"]
        if failed:  # one that raised says why; the others may have ended because of it
            rank = min(failed, key=lambda r: (results[r] is None, r))
            process = children[rank][0]
            process.join()
            how = ("failed: %s: %s" % results[rank][1:] if results[rank] is not None
                   else ended(process.exitcode))
            raise RankFailure("rank %d (GPU %d) %s; the other ranks were stopped"
                              % (rank, gpus[rank], how))
        running -= set(done)
        if 0 in done:
            status = results[0][1]
    return status
