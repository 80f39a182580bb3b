"""train.py --gpus (caffe_losses.gpus): what it says, in one line, when the build or the
machine cannot train on the GPUs asked for (a CPU-only Caffe, no NCCL for more than one GPU,
no GPU, a missing id) and the warning for GPUs newer than NCCL's kernels, decided before any
GPU call; and the calls each GPU process makes. Caffe is faked here; tests/in_caffe/test_gpus_in_image.py runs
the real thing in the images, tests/in_caffe/test_training_gpus.py trains on two fake GPUs."""
import os
import signal
import sys
import types

import pytest

from caffe_losses import gpus, preflight, train

CUDART = "/usr/lib/x86_64-linux-gnu/libcudart.so.11.0"


@pytest.mark.parametrize("text,ids", [("0", [0]), ("0,1", [0, 1]), ("3", [3]), (" 1, 2", [1, 2])])
def test_gpu_ids(text, ids):
    assert gpus.gpu_ids(text) == ids


@pytest.mark.parametrize("text,message", [
    ("", "takes GPU ids separated by commas (0 or 0,1), got ''"),
    ("0,", "takes GPU ids separated by commas (0 or 0,1), got '0,'"),
    ("all", "takes GPU ids separated by commas (0 or 0,1), got 'all'"),
    ("-1", "-1 is not a GPU id (CUDA numbers them from 0), in '-1'"),
    ("0,-2", "-2 is not a GPU id (CUDA numbers them from 0), in '0,-2'"),
    ("1,0,1", "names GPU 1 twice, in '1,0,1': one process trains on each GPU, so give each id once"),
])
def test_gpu_ids_refuses(text, message):
    with pytest.raises(Exception) as refused:
        gpus.gpu_ids(text)
    assert str(refused.value) == message


@pytest.mark.parametrize("option,line", [
    ("0,0", "argument --gpus: names GPU 0 twice, in '0,0': one process trains on each GPU, so give "
            "each id once (see --help)"),
    ("-1", "argument --gpus: -1 is not a GPU id (CUDA numbers them from 0), in '-1' (see --help)"),
])
def test_a_repeated_or_negative_id_stops_the_script_with_one_line(capsys, option, line):
    with pytest.raises(SystemExit) as stop:
        train.main(["--solver", "s.prototxt", "--gpus", option])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "caffe_losses.train: %s\n" % line


def test_a_cpu_only_caffe_says_so_and_names_nccl_for_several_gpus():
    one = gpus.gpu_problem([0], None, False)
    two = gpus.gpu_problem([0, 1], None, False)
    assert one == ("--gpus needs a CUDA build of Caffe, but this Caffe is a CPU-only build (Debian's "
                   "is): use docker/Dockerfile.gpu on a machine with a GPU, or drop --gpus to train "
                   "on the CPU")
    assert two == ("--gpus needs a CUDA build of Caffe with NCCL, but this Caffe is a CPU-only build "
                   "(Debian's is): use docker/Dockerfile.gpu (CUDA and NCCL) on a machine with GPUs, "
                   "or drop --gpus to train on the CPU")


def test_several_gpus_without_nccl_says_so_before_counting():
    # count=None would run the probe: the NCCL answer must not need it
    assert gpus.gpu_problem([1, 0], CUDART, False) == (
        "--gpus needs a CUDA build of Caffe with NCCL, but this Caffe was built without NCCL "
        "(docker/Dockerfile.gpu's has it): train on one GPU, --gpus 1")


def test_no_gpu():
    message = gpus.gpu_problem([0], CUDART, False, count=0, why="CUDA says: no CUDA-capable device")
    assert message == ("--gpus 0: no GPU is present: CUDA says: no CUDA-capable device; or drop "
                       "--gpus to train on the CPU")


def test_a_missing_id_and_a_fine_request():
    assert gpus.gpu_problem([1], CUDART, False, count=1) == \
        "--gpus 1: there is no GPU 1 here: CUDA sees 1 (ids 0 to 0)"
    assert gpus.gpu_problem([0, 2], CUDART, True, count=2).startswith("--gpus 0,2: there is no GPU 2")
    assert gpus.gpu_problem([0], CUDART, False, count=1) is None
    assert gpus.gpu_problem([1, 0], CUDART, True, count=2) is None


@pytest.mark.parametrize("probe,expected", [
    (lambda runtime: (2, "", [(8, 0), (8, 6)]), (2, "", [(8, 0), (8, 6)])),
    (lambda runtime: (0, "nodriver", []),
     (0, "this machine or container has no NVIDIA driver (libcuda.so.1)", [])),
    (lambda runtime: (0, "no CUDA-capable device is detected", []),
     (0, "CUDA says: no CUDA-capable device is detected", [])),
    (lambda runtime: os._exit(3), (0, "the CUDA runtime failed: ended with exit status 3", [])),
    (lambda runtime: os.kill(os.getpid(), signal.SIGUSR1),
     (0, "the CUDA runtime failed: was killed by SIGUSR1 (signal 10)", [])),
])
def test_count_gpus_reads_its_probe(monkeypatch, probe, expected):
    monkeypatch.setattr(gpus, "probe", probe)  # it runs in the forked child
    count, why, capabilities = gpus.count_gpus(CUDART)
    assert (count, capabilities) == (expected[0], expected[2]) and why.startswith(expected[1])


def test_the_probe_without_a_driver_says_so():
    # The real probe, on a machine without libcuda.so.1 (this one, unless it has a GPU):
    # it must say so before it touches the runtime, which is never loaded then.
    count, why, capabilities = gpus.count_gpus("/nonexistent/libcudart.so")
    assert count == 0 and capabilities == []
    assert "no NVIDIA driver" in why or why.startswith("the CUDA runtime failed")


@pytest.mark.parametrize("option,runtime,count,start", [
    ("0", None, None, "caffe_losses.train: --gpus needs a CUDA build of Caffe, but this Caffe is a CPU-only"),
    ("0,1", CUDART, None, "caffe_losses.train: --gpus needs a CUDA build of Caffe with NCCL, but this "
                          "Caffe was built without NCCL"),
    ("0", CUDART, 0, "caffe_losses.train: --gpus 0: no GPU is present: "),
    ("3", CUDART, 2, "caffe_losses.train: --gpus 3: there is no GPU 3 here: CUDA sees 2 (ids 0 to 1)"),
])
def test_main_stops_with_one_line(monkeypatch, option, runtime, count, start):
    fake = types.ModuleType("caffe")  # any GPU call would fail the test
    fake.NCCL = type("NCCL", (), {})  # pycaffe built without NCCL: a stub
    monkeypatch.setitem(sys.modules, "caffe", fake)
    monkeypatch.setattr(train, "read_solver", lambda path: object())
    monkeypatch.setattr(preflight, "Plan", lambda args, solver: solver)
    monkeypatch.setattr(gpus, "cuda_runtime", lambda: runtime)
    monkeypatch.setattr(gpus, "count_gpus", lambda path: (count, "CUDA says: none", [(8, 0)] * (count or 0)))
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as stop:
        train.main(["--solver", "s.prototxt", "--gpus", option])
    message = stop.value.code
    assert isinstance(message, str) and message.startswith(start) and "\n" not in message


NCCL_CU11 = ("2.21.5", (11, 0))  # docker/Dockerfile.gpu's NCCL: kernels up to 8.x, no PTX


@pytest.mark.parametrize("capabilities,built,expected", [
    ([(8, 0), (8, 6)], NCCL_CU11, None),
    ([(8, 9), (9, 0)], NCCL_CU11,
     "--gpus 0,1: GPU 1 has compute capability 9.0, and this Caffe's NCCL 2.21.5 was built with CUDA "
     "11.0, which has no kernels for it: NCCL may fail at its first call; if it does, train on one "
     "GPU, --gpus 1, or use an image whose NCCL is built with CUDA 11.8 or newer"),
    ([(9, 0), (9, 0)], ("2.19.3", (12, 2)), None),
    ([(10, 0), (10, 0)], ("2.19.3", (12, 2)),
     "--gpus 0,1: GPU 0 has compute capability 10.0, and this Caffe's NCCL 2.19.3 was built with CUDA "
     "12.2, which has no kernels for it: NCCL may fail at its first call; if it does, train on one "
     "GPU, --gpus 0, or use an image whose NCCL is built with CUDA 12.8 or newer"),
    ([(9, 0), (9, 0)], None,
     "--gpus 0,1: GPU 0 has compute capability 9.0, and this Caffe's NCCL (of a build not known "
     "here) may have no kernels for it: NCCL may fail at its first call; if it does, train on one "
     "GPU, --gpus 0, or use an image whose NCCL is built with CUDA 11.8 or newer"),
    ([(8, 6), (8, 6)], None, None),
])
def test_several_gpus_newer_than_nccl_get_a_warning_and_train(monkeypatch, capabilities, built, expected):
    monkeypatch.setattr(gpus, "nccl_build", lambda: built)
    found = []
    assert gpus.gpu_problem([0, 1], CUDART, True, count=2, capabilities=capabilities,
                            warnings=found) is None
    assert found == ([expected] if expected else [])
    del found[:]
    assert gpus.gpu_problem([1], CUDART, True, count=2, capabilities=capabilities, warnings=found) is None
    assert found == []  # one GPU: no NCCL


def test_main_prints_the_gpu_warning_then_trains(monkeypatch, capfd):
    monkeypatch.setitem(sys.modules, "caffe", fake_caffe([]))
    monkeypatch.setattr(train, "read_solver", lambda path: "solver")
    monkeypatch.setattr(preflight, "Plan", lambda args, solver: solver)
    monkeypatch.setattr(gpus, "cuda_runtime", lambda: CUDART)
    monkeypatch.setattr(gpus, "count_gpus", lambda path: (2, "", [(9, 0), (9, 0)]))
    monkeypatch.setattr(gpus, "nccl_build", lambda: NCCL_CU11)
    monkeypatch.setattr(train, "train_on_gpus", lambda args, plan: 0)
    train.main(["--solver", "s.prototxt", "--gpus", "0,1"])
    assert capfd.readouterr().err == (
        "caffe_losses.train: warning: --gpus 0,1: GPU 0 has compute capability 9.0, and this Caffe's "
        "NCCL 2.21.5 was built with CUDA 11.0, which has no kernels for it: NCCL may fail at its first "
        "call; if it does, train on one GPU, --gpus 0, or use an image whose NCCL is built with CUDA "
        "11.8 or newer\n")


def test_nccl_build_is_read_from_the_loaded_library(monkeypatch, tmp_path):
    library = tmp_path / "libnccl.so.2"
    library.write_bytes(b"\x7fELF" + b"\0" * 5000 + b"NCCL version %s+cuda%d.%d\0" + b"\0" * 300
                        + b"NCCL version 2.21.5+cuda11.0\0" + b"\1" * 5000)
    monkeypatch.setattr(gpus, "loaded_library", lambda name: str(library) if name == "/libnccl.so" else None)
    assert gpus.nccl_build() == ("2.21.5", (11, 0))
    monkeypatch.setattr(gpus, "loaded_library", lambda name: None)
    assert gpus.nccl_build() is None


def test_nccl_is_new_uid_not_the_class():
    # pycaffe always has caffe.NCCL; built without NCCL it is a stub with no methods
    stub, built = types.ModuleType("caffe"), types.ModuleType("caffe")
    stub.NCCL = type("NCCL", (), {})
    built.NCCL = type("NCCL", (), {"new_uid": staticmethod(lambda: b"")})
    assert not gpus.has_nccl(stub) and gpus.has_nccl(built)
    assert not gpus.has_nccl(types.ModuleType("caffe"))


def test_main_trains_on_one_gpu_in_this_process(monkeypatch):
    fake = types.ModuleType("caffe")
    monkeypatch.setitem(sys.modules, "caffe", fake)
    monkeypatch.setattr(train, "read_solver", lambda path: "solver")
    monkeypatch.setattr(preflight, "Plan", lambda args, solver: solver)  # the plan main trains by
    monkeypatch.setattr(gpus, "cuda_runtime", lambda: CUDART)
    monkeypatch.setattr(gpus, "count_gpus", lambda path: (1, "", [(8, 0)]))
    calls = []
    monkeypatch.setattr(train, "train", lambda *a, **k: calls.append((a[1], k)))
    train.main(["--solver", "s.prototxt", "--gpus", "0"])
    assert calls == [("solver", {"gpus": [0]})]


def fake_caffe(calls):
    """A pycaffe with NCCL whose calls are recorded in ``calls``."""
    fake = types.ModuleType("caffe")
    for name in ("set_device", "set_mode_gpu", "set_mode_cpu", "set_solver_count", "set_solver_rank",
                 "set_multiprocess", "init_log"):
        setattr(fake, name, lambda *a, name=name: calls.append((name,) + a))

    class NCCL(object):
        new_uid = staticmethod(lambda: b"uid")

        def __init__(self, solver, uid):
            calls.append(("NCCL", solver.name, uid))

        def bcast(self):
            calls.append(("bcast",))

    fake.NCCL = NCCL
    return fake


def test_each_gpu_process_tells_caffe_its_device_rank_and_the_solver_count(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "caffe", fake_caffe(calls))
    gpus.use_device([3, 5], 1)
    assert calls == [("set_device", 5), ("set_mode_gpu",), ("set_solver_count", 2),
                     ("set_solver_rank", 1), ("set_multiprocess", True)]
    del calls[:]
    gpus.use_device([2])
    assert calls == [("set_device", 2), ("set_mode_gpu",)]
    del calls[:]
    gpus.use_device(None)
    assert calls == [("set_mode_cpu",)]
    del calls[:]
    gpus.use_device([3, 5], 0, gpu_mode=False)  # the nets checked before the ranks start
    assert calls == [("set_mode_cpu",), ("set_solver_count", 2), ("set_solver_rank", 0),
                     ("set_multiprocess", True)]


@pytest.mark.parametrize("layer_wise", [True, False])
def test_the_solvers_share_weights_and_gradients_through_nccl(monkeypatch, layer_wise):
    calls = []
    monkeypatch.setitem(sys.modules, "caffe", fake_caffe(calls))
    solver = types.SimpleNamespace(name="solver", param=types.SimpleNamespace(layer_wise_reduce=layer_wise))
    solver.add_callback = lambda nccl: calls.append(("add_callback", type(nccl).__name__))
    solver.net = types.SimpleNamespace(after_backward=lambda nccl: calls.append(("after_backward",)))
    gpus.share_gradients(solver, b"uid")
    assert calls == [("NCCL", "solver", b"uid"), ("bcast",), ("add_callback", "NCCL")] + (
        [("after_backward",)] if layer_wise else [])


def test_main_checks_the_nets_in_a_child_then_trains_one_process_per_gpu(monkeypatch, tmp_path, capfd):
    monkeypatch.setitem(sys.modules, "caffe", fake_caffe([]))
    monkeypatch.setattr(train, "read_solver", lambda path: "solver")
    plan = types.SimpleNamespace(max_iter=10)
    monkeypatch.setattr(preflight, "Plan", lambda args, solver: plan)
    monkeypatch.setattr(gpus, "cuda_runtime", lambda: CUDART)
    monkeypatch.setattr(gpus, "count_gpus", lambda path: (2, "", [(8, 0), (8, 0)]))
    record = tmp_path / "processes"

    def checked(args, plan):  # in a child process
        with open(str(record), "a") as f:
            f.write("check %d\n" % os.getpid())
        return ["look out"]

    def rank(args, plan, rank, gpus, uid, signals):  # in each rank's process
        with open(str(record), "a") as f:
            f.write("rank %d %s %s %s %d\n" % (rank, gpus, uid, type(signals).__name__, os.getpid()))
        return 0
    monkeypatch.setattr(train, "checked_warnings", checked)
    monkeypatch.setattr(train, "train", rank)
    train.main(["--solver", "s.prototxt", "--gpus", "0,1"])
    lines = [line.rsplit(" ", 1) for line in record.read_text().splitlines()]
    assert lines[0][0] == "check"  # before any rank starts
    assert sorted(line for line, _ in lines[1:]) == ["rank 0 [0, 1] b'uid' Signals",
                                                     "rank 1 [0, 1] b'uid' Signals"]
    assert len({pid for _, pid in lines} | {str(os.getpid())}) == 4  # each a process of its own
    assert capfd.readouterr().err == "caffe_losses.train: warning: look out\n"
