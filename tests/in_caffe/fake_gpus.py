"""Two GPUs that are not there, for the tests of ``train.py --gpus 0,1`` on machines without
any: the ranks run in CPU mode, and a fake NCCL averages their gradients.

What is fake, and only that: the machine's answer (a CUDA runtime, the number of GPUs and
their compute capability: :func:`caffe_losses.gpus.cuda_runtime` and ``count_gpus``),
``caffe.set_device`` (nothing) and ``caffe.set_mode_gpu`` (CPU mode), and ``caffe.NCCL``:
``new_uid``, ``NCCL(solver, uid)``, ``bcast`` and the gradients' all-reduce, which
:class:`FakeNCCL` does as Caffe's NCCL class does it (``src/caffe/parallel.cpp``): the sum
over the ranks times 1 / solver_count, of every learnable blob at ``on_gradients_ready``, or
of each layer's blobs as the backward pass leaves it with ``layer_wise_reduce``, through
shared memory in pycaffe's Python callbacks (``solver.add_callback(on_start,
on_gradients_ready)``, ``net.after_backward(run)``). ``solver.add_callback(nccl)`` and
``net.after_backward(nccl)``, which take Caffe's C++ NCCL object, are routed to those
callbacks when given a FakeNCCL. Everything else is caffe_losses' own code, as it runs on
GPUs: the options, the checks, the processes, the signals, the training loop.

Run as a module, it is the training script with these fakes::

    python3 -m fake_gpus --solver S --gpus 0,1
"""
import mmap
import multiprocessing
import os

import caffe
import numpy as np

from caffe_losses import gpus, train

FORK = multiprocessing.get_context("fork")
CAPACITY = 1 << 26  # bytes of shared memory per run: the tests' nets are small
RUNS = {}  # uid: (shared memory, barrier), made by new_uid in the parent before the ranks fork


class Barrier(object):
    """Every rank waits here until all ``caffe.solver_count()`` of them have come."""

    def __init__(self):
        self.condition = FORK.Condition()
        self.arrived, self.generation = FORK.RawValue("i", 0), FORK.RawValue("i", 0)

    def wait(self):
        with self.condition:
            generation = self.generation.value
            self.arrived.value += 1
            if self.arrived.value == caffe.solver_count():
                self.arrived.value = 0
                self.generation.value += 1
                self.condition.notify_all()
            while self.generation.value == generation:
                self.condition.wait()


def learnable(net):
    """The net's learnable blobs, each once (a blob shared by name is one)."""
    seen, blobs = set(), []
    for layer in net.layers:
        for blob in layer.blobs:
            address = blob.data.__array_interface__["data"][0]
            if address not in seen:
                seen.add(address)
                blobs.append(blob)
    return blobs


class FakeNCCL(object):
    """What caffe.NCCL does for training, between processes of one machine, on the CPU."""

    @staticmethod
    def new_uid():
        uid = os.urandom(16)
        RUNS[uid] = (mmap.mmap(-1, CAPACITY), Barrier())
        return uid

    def __init__(self, solver, uid):
        self.solver = solver
        memory, self.barrier = RUNS[uid]
        self.rank, self.count = caffe.solver_rank(), caffe.solver_count()
        self.blobs = learnable(solver.net)
        size = sum(blob.count for blob in self.blobs)
        assert self.count * size * 4 <= CAPACITY, "a net too large for fake_gpus"
        self.slots = np.frombuffer(memory, np.float32, self.count * size).reshape(self.count, size)

    def bcast(self):
        """Rank 0's weights to every rank."""
        if self.rank == 0:
            self.slots[0] = np.concatenate([blob.data.ravel() for blob in self.blobs])
        self.barrier.wait()
        offset = 0
        for blob in self.blobs:
            blob.data.flat[:] = self.slots[0, offset:offset + blob.count]
            offset += blob.count
        self.barrier.wait()

    def all_reduce(self, blobs):
        """Each blob's gradient: the sum over the ranks, times 1 / their number."""
        size = sum(blob.count for blob in blobs)
        self.slots[self.rank, :size] = np.concatenate([blob.diff.ravel() for blob in blobs])
        self.barrier.wait()
        mean = self.slots[:, :size].sum(axis=0) * np.float32(1.0 / self.count)
        self.barrier.wait()  # every rank has read the slots before any writes them again
        offset = 0
        for blob in blobs:
            blob.diff.flat[:] = mean[offset:offset + blob.count]
            offset += blob.count

    def on_start(self):
        pass

    def on_gradients_ready(self):
        if not self.solver.param.layer_wise_reduce:
            self.all_reduce(self.blobs)

    def run(self, layer):
        """After the backward pass of layer ``layer``, with layer_wise_reduce."""
        blobs = list(self.solver.net.layers[layer].blobs)
        if blobs:
            self.all_reduce(blobs)


def install(count=2, capability=(8, 0), setattr=setattr):
    """Fake ``count`` GPUs of compute ``capability`` in this process (and those it forks);
    ``setattr``: how to set each attribute (a test's ``monkeypatch.setattr`` undoes them)."""
    setattr(gpus, "cuda_runtime", lambda: "libcudart.so.11.0 (fake_gpus)")
    setattr(gpus, "count_gpus", lambda runtime: (count, "", [capability] * count))
    setattr(caffe, "set_device", lambda device: None)
    setattr(caffe, "set_mode_gpu", caffe.set_mode_cpu)
    setattr(caffe, "NCCL", FakeNCCL)
    solver, net = caffe._caffe.Solver, caffe.Net
    add_callback, after_backward = solver.add_callback, net.after_backward

    def routed_add_callback(self, *callbacks):
        if len(callbacks) == 1 and isinstance(callbacks[0], FakeNCCL):
            callbacks = (callbacks[0].on_start, callbacks[0].on_gradients_ready)
        return add_callback(self, *callbacks)

    def routed_after_backward(self, callback):
        return after_backward(self, callback.run if isinstance(callback, FakeNCCL) else callback)

    setattr(solver, "add_callback", routed_add_callback)
    setattr(net, "after_backward", routed_after_backward)


if __name__ == "__main__":
    install()
    train.main()
