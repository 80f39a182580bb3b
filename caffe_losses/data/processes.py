"""Worker processes (the default): the loop of :mod:`.workers` over pipes, the slots in
one shared memory file.

Each worker is a ``python3`` process started with :mod:`subprocess` (not
:mod:`multiprocessing`, which would run a training script again in each worker when it
has no ``if __name__ == "__main__"`` guard) from the entry file ``worker_main.py``,
which imports neither pycaffe nor the losses (docs/data.md says how). It gets the
:class:`~caffe_losses.data.recipe.BatchRecipe` whole, pickled, and reads nothing but
the images of its batches. The slots, two per worker, are float32 arrays in one
``os.memfd_create`` file that every worker maps; a pipe per worker carries batch numbers
one way and answers the other. Nothing else runs in Caffe's process, so nothing there
needs Python's lock while the net runs.

A worker ignores SIGINT, SIGTERM and SIGHUP (``worker_main.py`` says so before anything
else): Ctrl-C or a scheduler's signal to the process group is the training's to handle
(it finishes its iteration and snapshots). A worker stays in the training's session and
process group, so that Linux shares the CPU with the training as one (autogroup) and
job control stops it with the training. It ends when its task pipe closes: when the
layer ends the workers, or when Caffe's process ends, however it ends.
"""
import mmap
import os
import pickle
import signal
import subprocess
import sys
from multiprocessing.connection import Connection

import numpy as np

from .workers import NAME, WorkerPool, serve

ENTRY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_main.py")
# glibc's malloc in a new worker process gives each decoded image's memory back to the system
# and faults it in again for the next (about 130 page faults an image, a third of its time);
# these keep freed memory in the process (set them in the environment to override)
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}
SLOTS_PER_WORKER = 2  # as ImageData keeps prefetched batches


def slot_arrays(memory, shapes, count):
    """``count`` slots of float32 arrays of ``shapes``, one after another in ``memory``."""
    slots, offset = [], 0
    for _ in range(count):
        slot = []
        for shape in shapes:
            slot.append(np.frombuffer(memory, np.float32, int(np.prod(shape)), offset).reshape(shape))
            offset += slot[-1].nbytes
        slots.append(tuple(slot))
    return slots


class WorkerProcesses(WorkerPool):
    """``count`` worker processes making the batches of ``recipe`` (tops of ``shapes``)."""

    MEMBERS = "worker processes"

    def __init__(self, recipe, shapes, count, alive=None, on_stop=None):
        size = sum(int(np.prod(shape)) * 4 for shape in shapes) * SLOTS_PER_WORKER * count
        self.tasks, self.answers, self.memory, processes = [], [], None, []
        fd = os.memfd_create(NAME)
        try:
            os.ftruncate(fd, size)
            self.memory = mmap.mmap(fd, size)
            for _ in range(count):
                processes.append(self._start(fd))
            payload = pickle.dumps((recipe, shapes, SLOTS_PER_WORKER * count))
            for tasks in self.tasks:
                tasks.send_bytes(payload)
        except BaseException:
            self.workers = processes
            self.end()
            raise
        finally:
            os.close(fd)
        slots = slot_arrays(self.memory, shapes, SLOTS_PER_WORKER * count)
        WorkerPool.__init__(self, slots, processes, alive=alive, on_stop=on_stop)

    def _start(self, memory_fd):
        task_out, task_in = os.pipe()
        answer_out, answer_in = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable or "python3", ENTRY, str(task_out), str(answer_in), str(memory_fd)],
                pass_fds=(task_out, answer_in, memory_fd), env=dict(WORKER_MALLOC, **os.environ),
                stdin=subprocess.DEVNULL)
        except BaseException:
            os.close(task_in)
            os.close(answer_out)
            raise
        finally:
            os.close(task_out)
            os.close(answer_in)
        self.tasks.append(Connection(task_in, readable=False))
        self.answers.append(Connection(answer_out, writable=False))
        return process

    def describe(self, k):
        return "worker process %d of %d (PID %d)" % (k, len(self.workers), self.workers[k].pid)

    def send(self, k, b):
        try:
            self.tasks[k].send(b)
        except OSError:  # the worker has ended: receive() says how, at its next batch
            pass

    def receive(self, k, b):
        try:
            return self.answers[k].recv()
        except (EOFError, OSError):
            raise self.ended(k, b)

    def ended(self, k, b):
        """The error of worker ``k``, which ended before making batch ``b``."""
        process = self.workers[k]
        try:
            status = process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            status = process.wait()
        if status < 0:
            name = signal.Signals(-status).name if -status in signal.valid_signals() else "a signal"
            how = "killed by %s (signal %d)" % (name, -status)
            if -status == signal.SIGKILL:
                how += ", which the kernel's out-of-memory killer sends (dmesg tells whether it did)"
        else:
            how = "exited with status %d (its own message, if any, is above)" % status
        return RuntimeError(
            "%s: worker process %d ended (exit status %d) before making batch %d: worker %d of %d, "
            "%s. Try 'threads': 2 instead of processes (the batches made in Caffe's process), "
            "fewer 'processes', a smaller batch_size, or more free memory"
            % (NAME, process.pid, status, b, k, len(self.workers), how))

    def end(self, timeout=10.0):
        for tasks in self.tasks:
            tasks.close()  # the worker reads the end of its tasks and returns
        for process in self.workers:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for answers in self.answers:
            answers.close()
        try:
            if self.memory is not None:
                self.memory.close()
        except BufferError:  # an array still views it: freed with the last one
            pass


def portable(exc):
    """``exc`` if it survives pickling to the layer's process, else a RuntimeError saying it."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError("%s: %s: %s" % (NAME, type(exc).__name__, exc))
    return exc


def run(tasks_fd, answers_fd, memory_fd):
    """A worker process, on the file descriptors of its task pipe, its answer pipe and
    the shared memory (``worker_main.py`` calls it, SIGINT, SIGTERM and SIGHUP ignored)."""
    tasks = Connection(tasks_fd, writable=False)
    answers = Connection(answers_fd, readable=False)
    try:
        recipe, shapes, count = pickle.loads(tasks.recv_bytes())
    except EOFError:
        return
    slots = slot_arrays(mmap.mmap(memory_fd, 0), shapes, count)

    def next_task():
        try:
            return tasks.recv()
        except EOFError:  # closed by the layer, or the layer's process has ended
            return None

    def answer(result):
        b, exc, text = result
        try:
            answers.send((b, None if exc is None else portable(exc), text))
        except OSError:  # the layer's process has ended: next_task() sees it too
            pass

    serve(recipe.fill, slots, next_task, answer)
