"""--gpus and -gpu in the image this runs in: the CPU image (Debian's CPU-only Caffe) or the GPU
image (docker/Dockerfile.gpu: CUDA, no NCCL), usually on a machine without a GPU. Whatever
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
        assert_one_line(rc, out, "caffe: -gpu 0,1: training on more than one GPU needs NCCL")
