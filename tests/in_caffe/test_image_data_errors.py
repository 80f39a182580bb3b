"""MultiLabelImageData in real Caffe, when things go wrong: a worker killed by the system,
nets deleted after an error, list files as editors write them, folders and files cut
short, signals to the workers, and what a worker process loads and reads."""
import gc
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import caffe
import numpy as np
import pytest

from nets import make_net
from test_image_data_layer import REPO, SIZES, ours, running, wait_until, worker_processes, write_images

WORKERS = {"processes": {"processes": 2}, "threads": {"threads": 2}}


def our_threads():
    """Every thread of the layer's in this process: workers and watch threads."""
    return [t for t in threading.enumerate() if t.name.startswith("MultiLabelImageData")]


def forward_until_error(net, error, forwards=8):
    with pytest.raises(error) as info:
        for _ in range(forwards):
            net.forward()
    return info.value


# -- a worker that dies ----------------------------------------------------------------------

KILLED = (r"^MultiLabelImageData: worker process {pid} ended \(exit status -9\) before making batch "
          r"(\d+): worker ([01]) of {n}, killed by SIGKILL \(signal 9\), which the kernel's "
          r"out-of-memory killer sends \(dmesg tells whether it did\)\. Try 'threads': 2 instead of "
          r"processes \(the batches made in Caffe's process\), fewer 'processes', a smaller "
          r"batch_size, or more free memory$")


def test_a_killed_worker_is_named_with_its_number_pid_signal_and_what_to_try(tmp_path):
    write_images(tmp_path, [(20, 20)] * 8)
    before = set(worker_processes())
    net = make_net(ours(tmp_path, batch_size=2, processes=2), caffe.TEST)
    net.forward()
    pid = max(set(worker_processes()) - before)
    os.kill(pid, signal.SIGKILL)
    # a RuntimeError within the batches already made; a BrokenPipeError would fail the test
    exc = forward_until_error(net, RuntimeError)
    found = re.match(KILLED.format(pid=pid, n=2), str(exc))
    assert found, str(exc)
    assert int(found.group(1)) % 2 == int(found.group(2))  # worker k makes batches k, k + 2, ...
    assert not any(running(p) for p in set(worker_processes()) - before)  # the other one ended too


def test_caffe_train_log_names_a_killed_worker(tmp_path):
    images = tmp_path / "images"
    write_images(images, SIZES)
    net = tmp_path / "net.prototxt"
    net.write_text(ours(images, "TRAIN", batch_size=4, new_height=16, new_width=16, processes=1) + """
layer { name: "score" type: "InnerProduct" bottom: "data" top: "score"
  inner_product_param { num_output: 12 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "score" bottom: "label" top: "loss" }
""")
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 1000000\n'
                      'snapshot_after_train: false\nsolver_mode: CPU\n' % net)
    log = tmp_path / "log.txt"
    with open(str(log), "w") as out:
        caffe_train = subprocess.Popen(["caffe", "train", "-solver", str(solver)], stdout=out,
                                       stderr=subprocess.STDOUT,
                                       env=dict(os.environ, PYTHONPATH=REPO, GLOG_logtostderr="1"))
    try:
        assert wait_until(lambda: worker_processes(caffe_train.pid), 60.0)
        (pid,) = worker_processes(caffe_train.pid)
        time.sleep(1.0)  # training
        os.kill(pid, signal.SIGKILL)
        assert caffe_train.wait(60) != 0
    finally:
        if caffe_train.poll() is None:
            caffe_train.kill()
    text = log.read_text()
    assert re.search(r"caffe_losses: RuntimeError: " + KILLED.format(pid=pid, n=1)[1:-1].replace(
        "([01])", "0"), text), text[-3000:]


# -- nothing left after an error ----------------------------------------------------------------

def spoil(folder, how):
    """Make image 3 of ``folder`` unusable ``how``; the error it gives at forward."""
    path = folder / "3.jpg"
    if how == "missing":
        path.unlink()
        return r"list.txt line 4: no image file '.*/3.jpg'"
    if how == "too small":
        subprocess.run(["python3", "-c", "import cv2, numpy; cv2.imwrite(%r, numpy.zeros((9, 9, 3), "
                        "numpy.uint8))" % str(path)], check=True)
        return r"list.txt line 4: image '.*/3.jpg' is 9 x 9 \(height x width\), smaller than crop_size"
    path.write_bytes(path.read_bytes()[:-100])
    return r"list.txt line 4: '.*/3.jpg' is cut short"


@pytest.mark.parametrize("workers", list(WORKERS))
def test_after_errors_nothing_is_left_within_a_second_of_del_net(tmp_path, workers):
    before_processes, before_threads = set(worker_processes()), set(our_threads())
    nets = []
    for how in ("missing", "too small", "cut short"):
        folder = tmp_path / how.replace(" ", "_")
        write_images(folder, [(16, 16)] * 6)
        message = spoil(folder, how)
        nets.append(make_net(ours(folder, batch_size=2, crop_size=12, **WORKERS[workers]), caffe.TEST))
        with pytest.raises(ValueError, match=message):  # kept: its traceback holds the layer
            for _ in range(3):
                nets[-1].forward()
    assert len(set(worker_processes()) - before_processes) <= 6
    del nets
    gc.collect()
    start = time.time()
    assert wait_until(lambda: not (set(worker_processes()) - before_processes)
                      and not (set(our_threads()) - before_threads), 1.0)
    assert time.time() - start < 1.0


# -- list files and image files as people have them ------------------------------------------------

def test_a_list_as_editors_write_it_gives_the_batches_of_a_plain_list(tmp_path):
    write_images(tmp_path, SIZES[:5])
    shutil.copy(str(tmp_path / "2.png"), str(tmp_path / "my image 2.png"))
    (tmp_path / "plain.txt").write_text("0.png 0\n1.jpg 1\n2.png 2\n3.jpg 3\n4.png 4 7\n")
    (tmp_path / "list.txt").write_bytes(  # Notepad: a BOM, CRLF; a comment, a blank line, a space
        b"\xef\xbb\xbf# exported list\r\n0.png 0\r\n1.jpg 1\r\n\r\nmy image 2.png 2\r\n3.jpg 3\r\n"
        b"4.png 4 7\r\n")
    settings = dict(batch_size=3, new_height=20, new_width=20)
    editor = make_net(ours(tmp_path, **settings), caffe.TEST)
    plain = make_net(ours(tmp_path, source=str(tmp_path / "plain.txt"), **settings), caffe.TEST)
    for _ in range(4):  # 12 images from a list of 5: wraps
        a, b = editor.forward(), plain.forward()
        assert a["data"].tobytes() == b["data"].tobytes()
        np.testing.assert_array_equal(a["label"], b["label"])
    assert a["label"].sum() == 4  # a line with two labels came through


@pytest.mark.parametrize("case,message", [
    ("folder", r"list.txt line 3: '.*/2.png' is a folder, not an image file; fix the line or "
               r"root_folder$"),
    ("JPEG cut short", r"list.txt line 4: '.*/3.jpg' is cut short: a JPEG without its end-of-image "
                       r"marker \(the file was not copied or downloaded whole\); replace the file or "
                       r"remove the line$"),
    ("PNG cut short", r"list.txt line 3: '.*/2.png' is cut short: a PNG without its IEND chunk"),
])
def test_a_folder_or_a_file_cut_short_is_named_with_its_line(tmp_path, case, message):
    write_images(tmp_path, [(16, 16)] * 4)
    if case == "folder":
        (tmp_path / "2.png").unlink()
        (tmp_path / "2.png").mkdir()
    else:
        path = tmp_path / ("3.jpg" if "JPEG" in case else "2.png")
        path.write_bytes(path.read_bytes()[:-60])
    net = make_net(ours(tmp_path, batch_size=2), caffe.TEST)
    net.forward()
    with pytest.raises(ValueError, match="^MultiLabelImageData: .*" + message):
        net.forward()


# -- the worker processes ----------------------------------------------------------------------

def test_worker_processes_ignore_sigint_sigterm_and_sighup(tmp_path):
    write_images(tmp_path, [(16, 16)] * 6)
    before = set(worker_processes())
    net = make_net(ours(tmp_path, batch_size=2, processes=2), caffe.TEST)
    first = net.forward()["label"].copy()
    pids = set(worker_processes()) - before
    assert len(pids) == 2
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        for pid in pids:
            os.kill(pid, number)
    time.sleep(0.5)
    assert all(running(pid) for pid in pids)
    for _ in range(3):  # batches 1 to 3: a list of 6, so batch 3 holds the images of batch 0
        labels = net.forward()["label"]
    np.testing.assert_array_equal(labels, first)


@pytest.mark.parametrize("workers,where", [("processes", r"worker process 0 of 2 \(PID \d+\)"),
                                           ("threads", "worker thread 0 of 2")])
def test_a_worker_error_reaches_forward_with_its_traceback_and_worker_number(tmp_path, workers,
                                                                            where):
    write_images(tmp_path, [(10, 10)] * 6)
    os.remove(str(tmp_path / "4.png"))
    net = make_net(ours(tmp_path, batch_size=2, **WORKERS[workers]), caffe.TEST)
    exc = forward_until_error(net, ValueError)
    assert re.match(r"MultiLabelImageData: .*list.txt line 5: no image file", str(exc))
    cause = str(exc.__cause__)
    assert type(exc.__cause__).__name__ == "WorkerTraceback"
    assert re.match(r"in %s, making batch 2:\nTraceback \(most recent call last\):\n" % where, cause)
    assert re.search(r'recipe.py", line \d+, in read\n', cause), cause
    assert cause.rstrip().endswith(str(exc))


def test_a_worker_process_loads_neither_pycaffe_nor_the_losses_and_reads_no_list(tmp_path):
    write_images(tmp_path, [(10, 10)] * 6)
    before = set(worker_processes())
    net = make_net(ours(tmp_path, batch_size=2, processes=1), caffe.TEST)
    os.remove(str(tmp_path / "list.txt"))  # the workers have it from the layer, parsed
    labels = [net.forward()["label"].argmax(axis=1).tolist() for _ in range(4)]
    assert labels == [[0, 1], [2, 3], [4, 5], [0, 1]]
    (pid,) = set(worker_processes()) - before

    def loaded(pid):
        with open("/proc/%s/maps" % pid) as f:
            text = f.read()
        return {"pycaffe": "/_caffe." in text, "numba (the losses' kernels)": "llvmlite" in text,
                "OpenCV": "/cv2" in text}

    assert loaded("self") == {"pycaffe": True, "numba (the losses' kernels)": True, "OpenCV": True}
    assert loaded(pid) == {"pycaffe": False, "numba (the losses' kernels)": False, "OpenCV": True}
