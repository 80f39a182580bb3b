"""The workers that make MultiLabelImageData's batches ahead of ``forward``: one
scheduling loop (:class:`WorkerPool`, here) and two back-ends, :class:`WorkerThreads`
(:mod:`.threads`) and :class:`WorkerProcesses` (:mod:`.processes`).

The loop: ``n`` workers (worker ``k``, 0 to n - 1) and ``S`` slots, each a float32
array per top. Batch ``b`` is made by worker ``b % n`` into slot ``b % S``; batches 0 to
S - 1 are handed out at start, and ``take`` waits for batch ``b`` from its worker,
copies its slot into the tops and hands batch ``b + S``, which reuses the slot, to its
worker. A worker makes its batches in the order it gets them, so the next result from
worker ``b % n`` is batch ``b``. In a worker, :func:`serve` runs the same loop for both
back-ends: it makes each batch number it is given and answers ``(b, None, None)`` or
``(b, exception, traceback text)``.

An error (a worker's exception, or a worker that ended) is raised by the ``take`` of
its batch and by every later one, with the worker's traceback and number as its
``__cause__``; the workers are ended at once, since no batch after it will be used.
Otherwise they end when :meth:`WorkerPool.close` is called, at interpreter exit, and when
``alive()`` returns False (a watch thread asks every ``IDLE_SECONDS``: see
``layers.in_a_net``, the net let go of the layer).
"""
import atexit
import threading
import traceback
import weakref

import numpy as np

NAME = "MultiLabelImageData"
IDLE_SECONDS = 0.5  # how often the watch thread asks whether the layer is still in a net

_RUNNING = weakref.WeakSet()


@atexit.register
def _stop_all():
    """At interpreter exit, end every set of workers (none is left mid-batch)."""
    for workers in list(_RUNNING):
        workers.close()


class WorkerTraceback(Exception):
    """Where a worker's exception came from: the worker and its traceback (the
    ``__cause__`` of the exception that ``take`` raises)."""


def serve(fill, slots, next_task, answer):
    """A worker's loop, thread or process: ``next_task()`` gives a batch number (None:
    stop), ``fill(b, *slots[b % len(slots)])`` makes it, ``answer(result)`` reports it."""
    while True:
        b = next_task()
        if b is None:
            return
        try:
            fill(b, *slots[b % len(slots)])
            result = (b, None, None)
        except Exception as exc:  # raised by take() in the layer's process
            result = (b, exc, traceback.format_exc())
        answer(result)


class WorkerPool(object):
    """The scheduling loop over ``len(workers)`` workers and the ``slots``; a back-end
    (subclass) starts the workers and gives ``send(k, b)``, ``receive(k, b)`` (worker
    ``k``'s next answer: ``(b, exception or None, traceback text)``; an exception of its
    own if the worker ended), ``describe(k)`` and ``end()`` (end the workers and let
    their memory go)."""

    MEMBERS = "workers"  # the back-end's, for messages

    def __init__(self, slots, workers, alive=None, on_stop=None):
        self.slots = slots
        self.workers = workers
        self.on_stop = on_stop
        self.taken = self.started = 0
        self.error = None
        self.stopped, self.closing = threading.Event(), threading.Lock()
        _RUNNING.add(self)
        for b in range(len(slots)):
            self.hand_out(b)
        self.alive = alive
        if alive is not None:
            threading.Thread(target=self._watch, name="%s-watch" % NAME, daemon=True).start()

    def hand_out(self, b):
        self.send(b % len(self.workers), b)
        self.started += 1

    def _watch(self):
        while not self.stopped.wait(IDLE_SECONDS):
            if not self.alive():
                self.close()

    def take(self, outs):
        """Copy the next batch into ``outs`` (the data array, and the label array if given)."""
        if self.error is not None:
            raise self.error
        if self.stopped.is_set():
            raise RuntimeError("%s: the %s have stopped (the layer was closed)"
                               % (NAME, self.MEMBERS))
        b = self.taken
        k = b % len(self.workers)
        try:
            answered, exc, text = self.receive(k, b)
            if answered != b:  # cannot happen: each worker makes its batches in order
                raise RuntimeError("%s: %s answered batch %d, not %d"
                                   % (NAME, self.describe(k), answered, b))
            if exc is not None:
                exc.__cause__ = WorkerTraceback("in %s, making batch %d:\n%s"
                                                % (self.describe(k), b, text))
                raise exc
        except Exception as exc:
            self.error = exc
            self.close()
            raise
        for out, array in zip(outs, self.slots[b % len(self.slots)]):
            np.copyto(out, array)
        self.taken += 1
        self.hand_out(b + len(self.slots))

    def close(self):
        """End the workers (each finishes the batch it is on) and let the slots go."""
        with self.closing:
            if self.stopped.is_set():
                return
            self.stopped.set()
        self.end()
        self.slots = None
        _RUNNING.discard(self)
        if self.on_stop is not None:
            self.on_stop()
