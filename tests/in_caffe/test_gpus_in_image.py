"""--gpus and -gpu in the image this runs in: the CPU image (Debian's CPU-only Caffe) or the GPU
image (docker/Dockerfile.gpu: CUDA and NCCL), usually on a machine without a GPU. Whatever
cannot run ends with one line saying why, never a C++ stack dump or a Python traceback; on a
machine with a GPU the tests ask for a GPU id that does not exist instead."""
import os
import subprocess
import sys

import caffe
import pytest

from caffe_losses import gpus

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNTIME = gpus.cuda_runtime()  # None: a CPU-only Caffe
GPUS = gpus.count_gpus(RUNTIME)[0] if RUNTIME else 0


def run(*args):
    result = subprocess.run(list(args), cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    return result.returncode, result.stdout.strip()


def train_gpus(gpus):
    return run(sys.executable, "-m", "caffe_losses.train", "--solver",
               "prototxt/digits_multilabel/solver.prototxt", "--gpus", gpus)


def assert_one_line(rc, out, start):
    assert rc != 0, out
    assert out.startswith(start), out
    assert "\n" not in out, out


def test_one_gpu():
    gpus = "0" if GPUS == 0 else str(GPUS)  # with GPUs: the first id past them
    rc, out = train_gpus(gpus)
    if RUNTIME is None:
        assert_one_line(rc, out, "caffe_losses.train: --gpus needs a CUDA build of Caffe, but this "
                                 "Caffe is a CPU-only build")
    elif GPUS == 0:
        assert_one_line(rc, out, "caffe_losses.train: --gpus 0: no GPU is present: ")
    else:
        assert_one_line(rc, out, "caffe_losses.train: --gpus %s: there is no GPU %s here" % (gpus, gpus))


def test_more_than_one_gpu():
    rc, out = train_gpus("0,1")
    if RUNTIME is None:
        assert_one_line(rc, out, "caffe_losses.train: --gpus needs a CUDA build of Caffe with NCCL, "
                                 "but this Caffe is a CPU-only build")
    elif not gpus.has_nccl(caffe):
        assert_one_line(rc, out, "caffe_losses.train: --gpus needs a CUDA build of Caffe with NCCL, "
                                 "but this Caffe was built without NCCL")
    elif GPUS < 2:
        assert_one_line(rc, out, "caffe_losses.train: --gpus 0,1: ")
    else:
        pytest.fail("this test needs a machine with fewer than two GPUs, or a Caffe without NCCL")


def test_caffe_cli_gpu():
    gpu = "0" if GPUS == 0 else str(GPUS)
    rc, out = run("caffe", "device_query", "-gpu", gpu)
    assert rc != 0, out
    if RUNTIME is None:
        # Debian's CPU-only caffe: its own fatal error, which at least says why
        assert "Cannot use GPU in CPU-only Caffe" in out, out
    elif GPUS == 0:
        # the GPU image's caffe (tools/gpu-caffe in front of Caffe's binary)
        assert_one_line(rc, out, "caffe: -gpu 0: no GPU is present: ")
    else:
        assert_one_line(rc, out, "caffe: -gpu %s: there is no GPU %s here" % (gpu, gpu))


def test_caffe_cli_train_on_two_gpus():
    rc, out = run("caffe", "train", "--solver", "prototxt/digits_multilabel/solver.prototxt",
                  "-gpu", "0,1")
    assert rc != 0, out
    if RUNTIME is None:
        assert "Cannot use GPU in CPU-only Caffe" in out or "CPU-only" in out, out
    else:
        # the net's loss is a Python layer: Caffe's CLI would abort (its threads cannot run them)
        assert_one_line(rc, out, "caffe: -gpu 0,1: Caffe's CLI trains several GPUs in threads of "
                                 "one process, where Python layers cannot run, and the TRAIN net "
                                 "of prototxt/digits_multilabel/solver.prototxt has Python layers "
                                 "('loss'): train it with python3 -m caffe_losses.train")


PYTHON_LOSS = """layer { name: "%s" type: "Python" bottom: "fc" bottom: "label" top: "%s"
  python_param { module: "caffe_losses" layer: "MultiLabelSoftmaxLoss" } %s }"""
NETS = {
    # solver-inline net, sequence-shaped scores (T x N x C), the Python loss in TRAIN
    "inline": ("""net_param { layer { name: "data" type: "Input" top: "fc" top: "label"
      input_param { shape { dim: 5 dim: 2 dim: 4 } shape { dim: 5 dim: 2 dim: 4 } } }
    %s }""" % (PYTHON_LOSS % ("seq_loss", "seq_loss", "")), None),
    # the Python loss only in the TEST net; TRAIN has Caffe's own
    "test only": ("""net: "{dir}/net.prototxt" """, """
    layer { name: "data" type: "Input" top: "fc" top: "label"
      input_param { shape { dim: 2 dim: 4 } shape { dim: 2 dim: 4 } } }
    layer { name: "train_loss" type: "SigmoidCrossEntropyLoss" bottom: "fc" bottom: "label"
      top: "train_loss" include { phase: TRAIN } }
    """ + PYTHON_LOSS % ("test_loss", "test_loss", "include { phase: TEST }")),
    # a V1 file (`layers {`): V1 has no Python layers
    "v1": ("""train_net: "{dir}/net.prototxt" """, """
    input: "fc" input_shape { dim: 2 dim: 4 } input: "label" input_shape { dim: 2 dim: 4 }
    layers { name: "loss" type: SIGMOID_CROSS_ENTROPY_LOSS bottom: "fc" bottom: "label" }"""),
}


@pytest.mark.parametrize("case", sorted(NETS))
def test_caffe_cli_on_two_gpus_refuses_python_layers_of_the_train_net_only(tmp_path, case):
    solver, net = NETS[case]
    solver = solver.replace("{dir}", str(tmp_path))
    if net:
        (tmp_path / "net.prototxt").write_text(net)
    (tmp_path / "solver.prototxt").write_text(solver + "\nbase_lr: 0.1 max_iter: 1\n")
    gpus = "0,1" if GPUS == 0 else "0,%d" % GPUS  # with GPUs: an id past them
    # the GPU image's `caffe` is this script; run as a file, it does the same in either image
    rc, out = run(sys.executable, os.path.join(REPO, "tools", "gpu-caffe"), "train",
                  "-solver", str(tmp_path / "solver.prototxt"), "-gpu", gpus)
    if case == "inline":
        assert_one_line(rc, out, "caffe: -gpu %s: Caffe's CLI trains several GPUs in threads" % gpus)
        assert "has Python layers ('seq_loss')" in out, out
    elif GPUS == 0:  # past the Python layer check, to the GPUs
        assert_one_line(rc, out, "caffe: -gpu %s: no GPU is present: " % gpus)
    else:
        assert_one_line(rc, out, "caffe: -gpu %s: there is no GPU %d here" % (gpus, GPUS))


def test_nccl_is_built_into_the_cuda_build_and_new_uid_keeps_all_128_bytes():
    if RUNTIME is None:  # Debian's CPU-only Caffe: no NCCL (pycaffe's NCCL is an empty stub)
        assert not gpus.has_nccl(caffe) and not caffe.has_nccl()
        return
    assert gpus.has_nccl(caffe) and caffe.has_nccl()
    # a process of its own: NCCL may abort it. An unpatched pycaffe cut the id at its first
    # zero byte (NCCL's id has several), and the other ranks read past its end.
    rc, out = run(sys.executable, "-c", "import caffe; u = caffe.NCCL.new_uid(); "
                  "print(type(u).__name__, len(u), u.count(0) > 0)")
    assert rc == 0, out
    assert out.splitlines()[-1] == "bytes 128 True", out


def test_the_nccl_build_is_read_from_the_library_pycaffe_loaded():
    # what the check for GPUs newer than NCCL's kernels reads (gpus.nccl_problem)
    if not gpus.has_nccl(caffe):
        assert gpus.nccl_build() is None
    else:  # docker/Dockerfile.gpu's NCCL
        assert gpus.nccl_build() == ("2.21.5", (11, 0))
