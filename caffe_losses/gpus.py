"""The GPUs of ``python3 -m caffe_losses.train --gpus``: what the build and the machine allow,
and how a training process takes its GPU and shares its gradients.

Before any GPU call (a failed one aborts Caffe with a C++ stack dump) :func:`problem_here`
says in one line what is missing: a CUDA build of Caffe (Debian's ``caffe`` package is
CPU-only), NCCL for more than one GPU, or a GPU; it warns where several GPUs are newer
than NCCL's kernels (Hopper under the GPU image's NCCL). Training on several GPUs follows
Caffe's own ``python/train.py`` (:mod:`caffe_losses.ranks` runs one process per GPU): each
process tells Caffe its device, the number of solvers and its rank (:func:`use_device`), and
the solvers share their weights and gradients through ``caffe.NCCL`` (:func:`share_gradients`).
"""
import argparse
import ctypes
import mmap
import re

from .ranks import ChildFailed, call_in_child

# cudaDeviceGetAttribute's attributes: a device's compute capability, major and minor
CAPABILITY_MAJOR, CAPABILITY_MINOR = 75, 76
# the first CUDA release that compiles for each compute capability from Hopper (9.0) on: an
# NCCL built with an older CUDA has no kernel for such a GPU (the wheels carry no PTX)
CUDA_FOR = {9: (11, 8), 10: (12, 8)}


def gpu_ids(text):
    """``--gpus``: GPU ids separated by commas, each once, as a list of ints."""
    try:
        ids = [int(g) for g in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("takes GPU ids separated by commas (0 or 0,1), got %r" % text)
    negative = [g for g in ids if g < 0]
    if negative:
        raise argparse.ArgumentTypeError("%d is not a GPU id (CUDA numbers them from 0), in %r"
                                         % (negative[0], text))
    twice = [g for i, g in enumerate(ids) if g in ids[:i]]
    if twice:
        raise argparse.ArgumentTypeError("names GPU %d twice, in %r: one process trains on each "
                                         "GPU, so give each id once" % (twice[0], text))
    return ids


def loaded_library(name):
    """The path of the loaded shared library whose path holds ``name``, or None."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                if len(fields) >= 6 and name in fields[5]:
                    return fields[5]
    except OSError:
        pass
    return None


def cuda_runtime():
    """The path of the CUDA runtime library the loaded pycaffe uses, or None: a CPU-only Caffe
    (Caffe's CMake files and Makefile both link a CUDA build with the shared runtime)."""
    import caffe  # noqa: F401 (loads libcaffe and with it the CUDA runtime, if it has one)
    return loaded_library("/libcudart.so")


def nccl_build():
    """``(NCCL's version, (CUDA major, minor))`` of the NCCL library pycaffe loaded, read from
    the version string NCCL carries (``NCCL version 2.21.5+cuda11.0``), or None."""
    path = loaded_library("/libnccl.so")
    if path is None:
        return None
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            at = data.find(b"NCCL version ")
            while at >= 0:
                found = re.match(rb"NCCL version ([0-9.]+)\+cuda([0-9]+)\.([0-9]+)", data[at:at + 40])
                if found:
                    return found.group(1).decode(), (int(found.group(2)), int(found.group(3)))
                at = data.find(b"NCCL version ", at + 1)
    except (OSError, ValueError):
        pass
    return None


def probe(runtime):
    """In a child process: ``(number of GPUs, CUDA's error or "nodriver", [(major, minor)
    compute capability of each GPU])``. libcuda.so.1 is the driver's library: a container
    gets it from the host (``docker run --gpus all``), or has none."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0, "nodriver", []
    library = ctypes.CDLL(runtime)
    library.cudaGetErrorString.restype = ctypes.c_char_p
    count = ctypes.c_int(0)
    error = library.cudaGetDeviceCount(ctypes.byref(count))
    if error:
        return 0, library.cudaGetErrorString(error).decode(), []
    capabilities = []
    for device in range(count.value):
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        library.cudaDeviceGetAttribute(ctypes.byref(major), CAPABILITY_MAJOR, device)
        library.cudaDeviceGetAttribute(ctypes.byref(minor), CAPABILITY_MINOR, device)
        capabilities.append((major.value, minor.value))
    return count.value, "", capabilities


def count_gpus(runtime):
    """``(number of GPUs, why there are none, their compute capabilities)`` as the CUDA runtime
    at ``runtime`` sees them.

    :func:`probe` runs in a forked child: CUDA initialised in this process would break the
    processes forked later, one per GPU."""
    try:
        number, why, capabilities = call_in_child(probe, runtime)
    except ChildFailed as exc:
        return 0, "the CUDA runtime failed: %s" % exc.how, []
    if why == "nodriver":
        why = ("this machine or container has no NVIDIA driver (libcuda.so.1); on a machine "
               "with an NVIDIA GPU, start the container with `docker run --gpus all ...`")
    elif why:
        why = "CUDA says: %s" % why
    return int(number), why, [tuple(c) for c in capabilities]


def has_nccl(caffe):
    """Whether this pycaffe was built with NCCL: without it, caffe.NCCL is there too, but an
    empty stub (no new_uid, no bcast)."""
    return hasattr(getattr(caffe, "NCCL", None), "new_uid")


def problem_here(gpus, warnings):
    """Why ``--gpus`` cannot run with this pycaffe on this machine, or None; ``warnings``, a
    list, receives what may fail later."""
    import caffe
    return gpu_problem(gpus, cuda_runtime(), has_nccl(caffe), warnings=warnings)


def gpu_problem(gpus, runtime, nccl, count=None, why="", capabilities=(), warnings=None):
    """Why ``--gpus`` cannot run, or None. ``runtime``: the CUDA runtime pycaffe uses (None for a
    CPU-only Caffe); ``nccl``: whether Caffe has NCCL; ``count``: the number of GPUs (None: ask
    the runtime), ``why`` there are none, and their compute ``capabilities``; ``warnings``, a
    list, receives :func:`nccl_warning`'s."""
    option = "--gpus %s" % ",".join(map(str, gpus))
    if runtime is None:
        return ("--gpus needs a CUDA build of Caffe%s, but this Caffe is a CPU-only build (Debian's "
                "is): use docker/Dockerfile.gpu %s, or drop --gpus to train on the CPU"
                % (" with NCCL" if len(gpus) > 1 else "", "on a machine with a GPU" if len(gpus) == 1
                   else "(CUDA and NCCL) on a machine with GPUs"))
    if len(gpus) > 1 and not nccl:
        return ("--gpus needs a CUDA build of Caffe with NCCL, but this Caffe was built without NCCL "
                "(docker/Dockerfile.gpu's has it): train on one GPU, --gpus %d" % gpus[0])
    if count is None:
        count, why, capabilities = count_gpus(runtime)
    if count == 0:
        return ("%s: no GPU is present: %s; or drop --gpus to train on the CPU"
                % (option, why or "CUDA sees none"))
    missing = [g for g in gpus if g >= count]
    if missing:
        return ("%s: there is no GPU %d here: CUDA sees %d (ids 0 to %d)"
                % (option, missing[0], count, count - 1))
    warning = nccl_warning(option, gpus, capabilities) if len(gpus) > 1 else None
    if warning and warnings is not None:
        warnings.append(warning)
    return None


def nccl_warning(option, gpus, capabilities):
    """A warning where a GPU of ``gpus`` (of these compute ``capabilities``) is newer than the
    CUDA that NCCL was built with, or than NCCL's build where it is not known; or None.

    A warning, not a refusal: no such run was tried here (no Hopper GPU), and an NCCL built
    elsewhere may carry code for it that its version string does not show."""
    built = nccl_build()
    for gpu in gpus:
        major, minor = capabilities[gpu] if gpu < len(capabilities) else (0, 0)
        need = CUDA_FOR.get(min(major, max(CUDA_FOR)), (0, 0))
        if need == (0, 0) or (built is not None and built[1] >= need):
            continue
        nccl = ("this Caffe's NCCL %s was built with CUDA %d.%d, which has no kernels for it"
                % (built[0], built[1][0], built[1][1]) if built is not None else
                "this Caffe's NCCL (of a build not known here) may have no kernels for it")
        return ("%s: GPU %d has compute capability %d.%d, and %s: NCCL may fail at its first call; "
                "if it does, train on one GPU, --gpus %d, or use an image whose NCCL is built with "
                "CUDA %d.%d or newer" % (option, gpu, major, minor, nccl, gpu, need[0], need[1]))
    return None


def use_device(gpus=None, rank=0, gpu_mode=True):
    """Put this process on GPU ``gpus[rank]`` (on the CPU where ``gpus`` is None or empty, or
    ``gpu_mode`` is False), as solver ``rank`` of ``len(gpus)``. Before the solver is made."""
    import caffe
    if gpus and gpu_mode:
        caffe.set_device(gpus[rank])
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    if gpus and len(gpus) > 1:
        caffe.set_solver_count(len(gpus))
        caffe.set_solver_rank(rank)
        caffe.set_multiprocess(True)


def share_gradients(solver, uid):
    """Join the solvers of the other GPUs through NCCL (``uid`` from ``caffe.NCCL.new_uid()``):
    rank 0's weights go to every GPU (``bcast``), and each iteration's gradients are averaged
    over them before the update (``add_callback``), layer by layer during the backward pass
    with the solver's ``layer_wise_reduce`` (``after_backward``)."""
    import caffe
    nccl = caffe.NCCL(solver, uid)
    nccl.bcast()
    solver.add_callback(nccl)
    if solver.param.layer_wise_reduce:
        solver.net.after_backward(nccl)
