"""Worker threads in the layer's own process (the ``threads`` key): the loop of
:mod:`.workers` with a queue each way per worker.

They make the same batches as worker processes, with no extra process or memory, but
Caffe holds Python's lock while its C++ layers run, so they decode only while the net
waits in Python (docs/data.md).
"""
import queue
import threading

from .workers import NAME, WorkerPool, serve


class WorkerThreads(WorkerPool):
    """``count`` daemon threads making batches with ``fill(b, *slot)`` into ``slots``
    (a list of tuples of arrays: the buffers they fill, each used again and again)."""

    MEMBERS = "worker threads"

    def __init__(self, fill, slots, count, alive=None, on_stop=None):
        self.tasks = [queue.SimpleQueue() for _ in range(count)]
        self.answers = [queue.SimpleQueue() for _ in range(count)]
        threads = [threading.Thread(target=self._run, args=(fill, slots, k), daemon=True,
                                    name="%s-worker-%d" % (NAME, k)) for k in range(count)]
        for thread in threads:
            thread.start()
        WorkerPool.__init__(self, slots, threads, alive=alive, on_stop=on_stop)

    def _run(self, fill, slots, k):
        try:
            serve(fill, slots, self.tasks[k].get, self.answers[k].put)
        finally:
            self.answers[k].put(None)  # ended: take() says so instead of waiting

    def describe(self, k):
        return "worker thread %d of %d" % (k, len(self.workers))

    def send(self, k, b):
        self.tasks[k].put(b)

    def receive(self, k, b):
        answer = self.answers[k].get()
        if answer is None:
            raise RuntimeError("%s: %s ended before making batch %d" % (NAME, self.describe(k), b))
        return answer

    def end(self, timeout=10.0):
        for tasks in self.tasks:
            tasks.put(None)
        for thread in self.workers:
            if thread is not threading.current_thread():
                thread.join(timeout)
