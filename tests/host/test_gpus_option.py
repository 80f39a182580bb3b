"""train.py --gpus (caffe_losses.gpus): what it says, in one line, when the build or the
machine cannot train on the GPUs asked for (a CPU-only Caffe, no NCCL for more than one GPU,
no GPU, a missing id), decided before any GPU call. Caffe is faked here;
tests/in_caffe/test_gpus_in_image.py runs the real thing in the images."""
import sys
import types

import pytest

from caffe_losses import gpus, preflight, train

CUDART = "/usr/lib/x86_64-linux-gnu/libcudart.so.11.0"


@pytest.mark.parametrize("text,ids", [("0", [0]), ("0,1", [0, 1]), ("3", [3]), (" 1, 2", [1, 2])])
def test_gpu_ids(text, ids):
    assert gpus.gpu_ids(text) == ids


@pytest.mark.parametrize("text", ["", "a", "0,", "-1", "0,0", "all"])
def test_gpu_ids_refuses(text):
    with pytest.raises(Exception, match="distinct GPU ids separated by commas"):
        gpus.gpu_ids(text)


def test_a_cpu_only_caffe_says_so_and_names_nccl_for_several_gpus():
    one = gpus.gpu_problem([0], None, False)
    two = gpus.gpu_problem([0, 1], None, False)
    assert one.startswith("--gpus needs a CUDA build of Caffe, but this Caffe is a CPU-only build")
    assert two.startswith("--gpus needs a CUDA build of Caffe with NCCL, but this Caffe is a CPU-only")
    assert "docker/Dockerfile.gpu" in one and "drop --gpus" in one


def test_several_gpus_without_nccl_says_so_before_counting():
    # count=None would run the probe: the NCCL answer must not need it
    message = gpus.gpu_problem([0, 1], CUDART, False)
    assert message.startswith("--gpus needs a CUDA build of Caffe with NCCL, but this Caffe was built "
                              "without NCCL (Debian has none")
    assert message.endswith("train on one GPU, --gpus 0")


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
    (lambda runtime, answer: answer.send((2, "")), (2, "")),
    (lambda runtime, answer: answer.send((0, "nodriver")),
     (0, "this machine or container has no NVIDIA driver (libcuda.so.1)")),
    (lambda runtime, answer: answer.send((0, "no CUDA-capable device is detected")),
     (0, "CUDA says: no CUDA-capable device is detected")),
    (lambda runtime, answer: sys.exit(3), (0, "the CUDA runtime failed: exit status 3")),
])
def test_count_gpus_reads_its_probe(monkeypatch, probe, expected):
    monkeypatch.setattr(gpus, "probe", probe)  # it runs in the forked child
    count, why = gpus.count_gpus(CUDART)
    assert count == expected[0] and why.startswith(expected[1])


def test_the_probe_without_a_driver_says_so():
    # The real probe, on a machine without libcuda.so.1 (this one, unless it has a GPU):
    # it must say so before it touches the runtime, which is never loaded then.
    count, why = gpus.count_gpus("/nonexistent/libcudart.so")
    assert count == 0
    assert "no NVIDIA driver" in why or why.startswith("the CUDA runtime failed")


@pytest.mark.parametrize("option,runtime,count,start", [
    ("0", None, None, "caffe_losses.train: --gpus needs a CUDA build of Caffe, but this Caffe is a CPU-only"),
    ("0,1", CUDART, None, "caffe_losses.train: --gpus needs a CUDA build of Caffe with NCCL, but this "
                          "Caffe was built without NCCL"),
    ("0", CUDART, 0, "caffe_losses.train: --gpus 0: no GPU is present: "),
])
def test_main_stops_with_one_line(monkeypatch, option, runtime, count, start):
    fake = types.ModuleType("caffe")  # any GPU call would fail the test
    fake.NCCL = type("NCCL", (), {})  # pycaffe built without NCCL: a stub
    monkeypatch.setitem(sys.modules, "caffe", fake)
    monkeypatch.setattr(train, "read_solver", lambda path: object())
    monkeypatch.setattr(preflight, "Plan", lambda args, solver: solver)
    monkeypatch.setattr(train, "cuda_runtime", lambda: runtime)
    monkeypatch.setattr(gpus, "count_gpus", lambda path: (count, "CUDA says: none"))
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as stop:
        train.main(["--solver", "s.prototxt", "--gpus", option])
    message = stop.value.code
    assert isinstance(message, str) and message.startswith(start) and "\n" not in message


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
    monkeypatch.setattr(train, "cuda_runtime", lambda: CUDART)
    monkeypatch.setattr(gpus, "count_gpus", lambda path: (1, ""))
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


def test_main_trains_on_several_gpus_one_process_each(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "caffe", fake_caffe([]))
    monkeypatch.setattr(train, "read_solver", lambda path: "solver")
    monkeypatch.setattr(preflight, "Plan", lambda args, solver: solver)
    monkeypatch.setattr(train, "cuda_runtime", lambda: CUDART)
    monkeypatch.setattr(gpus, "count_gpus", lambda path: (2, ""))
    record = tmp_path / "ranks"

    def rank(args, plan, rank, ids, uid):  # in each forked process
        with open(str(record), "a") as f:
            f.write("%s %d %s %s\n" % (plan, rank, ids, uid))
    monkeypatch.setattr(train, "train", rank)
    train.main(["--solver", "s.prototxt", "--gpus", "0,1"])
    assert sorted(record.read_text().splitlines()) == ["solver 0 [0, 1] b'uid'", "solver 1 [0, 1] b'uid'"]
