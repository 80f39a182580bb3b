"""The GPUs of ``python3 -m caffe_losses.train --gpus``: what the build and the machine allow,
and how a training process takes its GPU.

Before any GPU call (a failed one aborts Caffe with a C++ stack dump) :func:`gpu_problem`
says in one line what is missing: a CUDA build of Caffe (Debian's ``caffe`` package is
CPU-only), NCCL for more than one GPU, or a GPU. Training on several GPUs follows Caffe's
own ``python/train.py``: one process per GPU (:func:`run_ranks`), each telling Caffe the
number of solvers and its rank (:func:`use_device`), the solvers sharing their gradients
through ``caffe.NCCL`` (:func:`share_gradients`).
"""
import argparse
import ctypes
import multiprocessing


def gpu_ids(text):
    """``--gpus``: comma-separated GPU ids, as a list of ints."""
    try:
        ids = [int(g) for g in text.split(",")]
    except ValueError:
        ids = []
    if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError("takes distinct GPU ids separated by commas (0 or 0,1), "
                                         "got %r" % text)
    return ids


def cuda_runtime():
    """The path of the CUDA runtime library the loaded pycaffe uses, or None: a CPU-only Caffe
    (Caffe's CMake files and Makefile both link a CUDA build with the shared runtime)."""
    import caffe  # noqa: F401 (loads libcaffe and with it the CUDA runtime, if it has one)
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                if len(fields) >= 6 and "/libcudart.so" in fields[5]:
                    return fields[5]
    except OSError:
        pass
    return None


def probe(runtime, answer):
    """In a child process: send ``(number of GPUs, CUDA's error or "nodriver")`` to the
    connection ``answer``. libcuda.so.1 is the driver's library: a container gets it from the
    host (``docker run --gpus all``), or has none."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        answer.send((0, "nodriver"))
        return
    library = ctypes.CDLL(runtime)
    library.cudaGetErrorString.restype = ctypes.c_char_p
    count = ctypes.c_int(0)
    error = library.cudaGetDeviceCount(ctypes.byref(count))
    answer.send((count.value if error == 0 else 0,
                 library.cudaGetErrorString(error).decode() if error else ""))


def count_gpus(runtime):
    """``(number of GPUs, why there are none)`` as the CUDA runtime at ``runtime`` sees them.

    :func:`probe` runs in a forked child: CUDA initialised in this process would break the
    processes forked later, one per GPU."""
    fork = multiprocessing.get_context("fork")
    receive, send = fork.Pipe(duplex=False)
    child = fork.Process(target=probe, args=(runtime, send))
    child.start()
    send.close()
    try:
        number, why = receive.recv()
    except EOFError:
        number = None
    child.join()
    receive.close()
    if number is None or child.exitcode:
        status = child.exitcode
        return 0, "the CUDA runtime failed: %s" % (
            "exit status %d" % status if status >= 0 else "killed by signal %d" % -status)
    if why == "nodriver":
        why = ("this machine or container has no NVIDIA driver (libcuda.so.1); on a machine "
               "with an NVIDIA GPU, start the container with `docker run --gpus all ...`")
    elif why:
        why = "CUDA says: %s" % why
    return int(number), why


def has_nccl(caffe):
    """Whether this pycaffe was built with NCCL: without it, caffe.NCCL is there too, but an
    empty stub (no new_uid, no bcast)."""
    return hasattr(getattr(caffe, "NCCL", None), "new_uid")


def gpu_problem(gpus, runtime, nccl, count=None, why=""):
    """Why ``--gpus`` cannot run, or None. ``runtime``: the CUDA runtime pycaffe uses (None for a
    CPU-only Caffe); ``nccl``: whether Caffe has NCCL; ``count``: the number of GPUs (None: ask
    the runtime) and ``why`` there are none."""
    need = "a CUDA build of Caffe with NCCL" if len(gpus) > 1 else "a CUDA build of Caffe"
    if runtime is None:
        return ("--gpus needs %s, but this Caffe is a CPU-only build (Debian's is): %s, or drop "
                "--gpus to train on the CPU" % (need, "use docker/Dockerfile.gpu on a machine with "
                "a GPU" if len(gpus) == 1 else "docker/Dockerfile.gpu's CUDA build trains on one "
                "GPU (Debian has no NCCL)"))
    if len(gpus) > 1 and not nccl:
        return ("--gpus needs %s, but this Caffe was built without NCCL (Debian has none, so "
                "docker/Dockerfile.gpu's Caffe neither): train on one GPU, --gpus %d"
                % (need, gpus[0]))
    if count is None:
        count, why = count_gpus(runtime)
    if count == 0:
        return ("--gpus %s: no GPU is present: %s; or drop --gpus to train on the CPU"
                % (",".join(map(str, gpus)), why or "CUDA sees none"))
    missing = [g for g in gpus if g >= count]
    if missing:
        return ("--gpus %s: there is no GPU %d here: CUDA sees %d (ids 0 to %d)"
                % (",".join(map(str, gpus)), missing[0], count, count - 1))
    return None


def use_device(gpus=None, rank=0):
    """Put this process on GPU ``gpus[rank]``, one of ``len(gpus)`` solvers, or on the CPU
    (``gpus`` None or empty). Before the solver is made."""
    import caffe
    if not gpus:
        caffe.set_mode_cpu()
        return
    caffe.set_device(gpus[rank])
    caffe.set_mode_gpu()
    if len(gpus) > 1:
        caffe.set_solver_count(len(gpus))
        caffe.set_solver_rank(rank)
        caffe.set_multiprocess(True)


def share_gradients(solver, uid):
    """Join the solvers of the other GPUs through NCCL (``uid`` from ``caffe.NCCL.new_uid()``):
    the weights of rank 0 go to every GPU, and each iteration's gradients are summed over them
    (layer by layer during backward with the solver's ``layer_wise_reduce``)."""
    import caffe
    nccl = caffe.NCCL(solver, uid)
    nccl.bcast()
    solver.add_callback(nccl)
    if solver.param.layer_wise_reduce:
        solver.net.after_backward(nccl)


def run_ranks(target, args, gpus):
    """``target(*args, rank, gpus, uid)`` in one process per GPU, rank 0 first; returns when
    all have ended."""
    import caffe
    uid = caffe.NCCL.new_uid()
    caffe.init_log()
    workers = [multiprocessing.Process(target=target, args=tuple(args) + (rank, gpus, uid))
               for rank in range(len(gpus))]
    for worker in workers:
        worker.daemon = True
        worker.start()
    for worker in workers:
        worker.join()
