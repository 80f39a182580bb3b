"""MultiLabelImageData in real Caffe: the same pixels as ImageData, shuffling, errors that
name the list file and line, worker processes and threads that end, and `caffe train` with
the layer.
The images are written here, with OpenCV, into temporary folders."""
import gc
import os
import re
import signal
import subprocess
import sys
import threading
import time

import caffe
import cv2
import numpy as np
import pytest
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from caffe_losses.data.transform import transform
from nets import make_net

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_images(folder, sizes, seed=0):
    """Smooth random BGR images of the given (height, width), PNG and JPEG in turn; the list
    file (one class index per line, the image's number: valid for ImageData too)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    lines = []
    for i, (h, w) in enumerate(sizes):
        small = rng.integers(0, 256, size=(max(h // 4, 2), max(w // 4, 2), 3), dtype=np.uint8)
        image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        name = "%d.%s" % (i, "jpg" if i % 2 else "png")
        cv2.imwrite(str(folder / name), image)
        lines.append("%s %d\n" % (name, i))
    (folder / "list.txt").write_text("".join(lines))
    return str(folder / "list.txt")


def ours(folder, phase=None, **params):
    params = dict(dict(source=str(folder / "list.txt"), root_folder=str(folder) + "/",
                       num_classes=12), **params)
    include = "" if phase is None else " include { phase: %s }" % phase
    return ('layer { name: "ours" type: "Python" top: "data" top: "label"%s\n'
            '  python_param { module: "caffe_losses" layer: "MultiLabelImageData" param_str: "%s" } }\n'
            % (include, repr(params)))


def image_data(folder, batch_size, crop_size=0, mean_value=(), scale=1.0, new_height=0, new_width=0,
               is_color=True):
    transform_param = "crop_size: %d scale: %r" % (crop_size, scale)
    transform_param += "".join(" mean_value: %r" % m for m in mean_value)
    return ('layer { name: "caffe" type: "ImageData" top: "data" top: "label"\n'
            '  transform_param { %s }\n'
            '  image_data_param { source: "%s" root_folder: "%s/" batch_size: %d new_height: %d '
            'new_width: %d is_color: %s } }\n'
            % (transform_param, folder / "list.txt", folder, batch_size, new_height, new_width,
               "true" if is_color else "false"))


# the two kinds of workers; the default (neither key) is 2 processes
WORKERS = {"processes": {}, "threads": {"threads": 2}}


def our_threads():
    return [t for t in threading.enumerate() if t.name.startswith("MultiLabelImageData")
            and not t.name.endswith("watch")]


def worker_processes(parent=None):
    """The pids of the worker processes of ``parent`` (this process by default)."""
    parent = os.getpid() if parent is None else parent
    pids = []
    for name in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % name) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open("/proc/%s/cmdline" % name) as f:
                command = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and "caffe_losses/data/worker_main.py" in command:
            pids.append(int(name))
    return pids


def running(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def wait_until(condition, seconds=5.0):
    end = time.time() + seconds
    while not condition() and time.time() < end:
        time.sleep(0.05)
    return condition()


# -- the same pixels as ImageData -----------------------------------------------------------

SIZES = [(40, 52), (33, 30), (61, 45), (36, 36), (50, 41), (45, 64), (38, 47)]
SETTINGS = {
    "colour, resize, centre crop, mean per channel, scale": (
        SIZES, dict(new_height=40, new_width=36, crop_size=32, mean_value=[104.0, 116.7, 122.68],
                    scale=0.017)),
    "gray, resize, centre crop, one mean, scale": (
        SIZES, dict(new_height=33, new_width=29, crop_size=21, mean_value=[127.5], scale=0.0078125,
                    is_color=False)),
    "colour, as decoded (one size), no mean": ([(23, 31)] * 7, dict(scale=0.00390625)),
    "gray, crop without resize": (SIZES, dict(crop_size=27, is_color=False)),
}


@pytest.mark.parametrize("workers", list(WORKERS))
@pytest.mark.parametrize("name", list(SETTINGS))
def test_data_top_equals_image_data_in_the_test_phase(tmp_path, name, workers):
    sizes, settings = SETTINGS[name]
    write_images(tmp_path, sizes)
    net = make_net(ours(tmp_path, batch_size=3, **dict(settings, **WORKERS[workers])), caffe.TEST)
    cpp = make_net(image_data(tmp_path, 3, **settings), caffe.TEST)
    for _ in range(5):  # 15 images from a list of 7: wraps twice, mid-batch
        a, b = net.forward(), cpp.forward()
        assert a["data"].shape == b["data"].shape
        assert a["data"].tobytes() == b["data"].tobytes()
        np.testing.assert_array_equal(a["label"].argmax(axis=1), b["label"])
        assert (a["label"].sum(axis=1) == 1).all()


def exif_oriented(jpeg, orientation):
    """``jpeg`` (bytes) with an Exif segment whose Orientation tag is ``orientation``."""
    tiff = (b"MM\x00\x2a\x00\x00\x00\x08\x00\x01" + (0x0112).to_bytes(2, "big") + b"\x00\x03"
            + b"\x00\x00\x00\x01" + orientation.to_bytes(2, "big") + b"\x00\x00" + bytes(4))
    return jpeg[:2] + b"\xff\xe1" + (len(tiff) + 8).to_bytes(2, "big") + b"Exif\x00\x00" + tiff + jpeg[2:]


def test_jpegs_turned_by_their_exif_orientation_give_image_data_pixels(tmp_path):
    write_images(tmp_path, [(24, 40)] * 4)
    for i, orientation in ((1, 6), (3, 3)):
        path = tmp_path / ("%d.jpg" % i)
        path.write_bytes(exif_oriented(path.read_bytes(), orientation))
    net = make_net(ours(tmp_path, batch_size=4, new_height=30, new_width=30), caffe.TEST)
    cpp = make_net(image_data(tmp_path, 4, new_height=30, new_width=30), caffe.TEST)
    a, b = net.forward()["data"], cpp.forward()["data"]
    assert a.tobytes() == b.tobytes()
    assert cv2.imread(str(tmp_path / "1.jpg")).shape == (40, 24, 3)  # turned: the tag is read


def test_train_phase_crops_at_random_offsets_and_mirrors_half_the_images(tmp_path):
    sizes = [(30, 34)] * 6
    write_images(tmp_path, sizes)
    net = make_net(ours(tmp_path, batch_size=6, crop_size=24, mirror=True, seed=3), caffe.TRAIN)
    images = [cv2.imread(str(tmp_path / ("%d.%s" % (i, "jpg" if i % 2 else "png")))) for i in range(6)]
    offsets, flips = set(), []
    for _ in range(4):
        data = net.forward()["data"]
        for i, image in enumerate(images):
            found = []
            for h in range(7):
                for w in range(11):
                    for flip in (False, True):
                        out = np.empty((3, 24, 24), np.float32)
                        transform(image, out, 24, h, w, flip)
                        if np.array_equal(out, data[i]):
                            found.append((h, w, flip))
            assert found, "image %d is no crop of its file" % i
            offsets.add(found[0][:2])
            flips.append(found[0][2])
    assert len(offsets) > 10 and 4 <= sum(flips) <= 20


# -- shuffling -----------------------------------------------------------------------------

def order(folder, batches, **params):
    net = make_net(ours(folder, batch_size=4, **params), caffe.TRAIN)
    return np.concatenate([net.forward()["label"].argmax(axis=1) for _ in range(batches)])


def test_shuffle_is_a_new_permutation_each_epoch_fixed_by_the_seed(tmp_path):
    write_images(tmp_path, [(8, 8)] * 12)
    seen = order(tmp_path, 9, shuffle=True, seed=5)  # 3 passes over the 12 images
    epochs = seen.reshape(3, 12)
    for epoch in epochs:
        assert sorted(epoch) == list(range(12))
    assert len({tuple(e) for e in epochs}) == 3 and list(epochs[0]) != list(range(12))
    for workers in ({"processes": 1}, {"processes": 3}, {"threads": 1}, {"threads": 3}):
        np.testing.assert_array_equal(order(tmp_path, 9, shuffle=True, seed=5, **workers), seen)
    assert list(order(tmp_path, 9, shuffle=True, seed=6)) != list(seen)
    np.testing.assert_array_equal(order(tmp_path, 6, seed=5), np.arange(24) % 12)


def test_random_crops_do_not_depend_on_the_workers(tmp_path):
    write_images(tmp_path, SIZES)
    runs = []
    for workers in ({"processes": 1}, {"processes": 3}, {"threads": 1}, {"threads": 3}):
        net = make_net(ours(tmp_path, batch_size=5, new_height=30, new_width=30, crop_size=20,
                            mirror=True, shuffle=True, seed=11, **workers), caffe.TRAIN)
        runs.append(np.concatenate([net.forward()["data"].copy() for _ in range(4)]))
    assert all(run.tobytes() == runs[0].tobytes() for run in runs)


# -- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", list(WORKERS))
def test_a_missing_image_is_raised_at_its_batch_naming_the_line_and_again_after(tmp_path, workers):
    write_images(tmp_path, [(10, 10)] * 6)
    os.remove(str(tmp_path / "4.png"))
    net = make_net(ours(tmp_path, batch_size=2, **WORKERS[workers]), caffe.TEST)
    net.forward()
    net.forward()  # images 0 to 3
    for _ in range(2):
        with pytest.raises(ValueError, match=r"^MultiLabelImageData: .*list.txt line 5: no image file "
                                             r"'.*/4.png' \(root_folder \+ path; relative to .*\); "
                                             r"fix the line or root_folder$"):
            net.forward()


@pytest.mark.parametrize("case,message", [
    ("undecodable", r"list.txt line 3: OpenCV cannot decode '.*/2.png' \(not an image file, or a "
                    r"damaged one\); remove the line or replace the file"),
    ("small", r"list.txt line 3: image '.*/2.png' is 10 x 14 \(height x width\), smaller than "
              r"crop_size 12; set new_height and new_width, or a smaller crop_size"),
    ("other size", r"list.txt line 3: image '.*/2.png' is 10 x 14 \(height x width\) but the first "
                   r"image is 16 x 16, and the data top has one shape; set new_height and new_width"),
])
def test_a_bad_image_names_its_line_at_forward(tmp_path, case, message):
    write_images(tmp_path, [(16, 16)] * 4)
    if case == "undecodable":
        (tmp_path / "2.png").write_text("not a picture")
    else:
        cv2.imwrite(str(tmp_path / "2.png"), np.zeros((10, 14, 3), np.uint8))
    net = make_net(ours(tmp_path, batch_size=2, crop_size=12 if case == "small" else 0), caffe.TEST)
    net.forward()
    with pytest.raises(ValueError, match=message):
        net.forward()


@pytest.mark.parametrize("lines,params,message", [
    ("0.png 1\n1.png 12\n", {}, r"list.txt line 2: label 12 is outside \[0, 12\)"),
    ("0.png 0 1\n", {"labels": "dense"}, r"list.txt line 1 has 2 labels; with labels 'dense' give one "
                                         r"number per class, num_classes = 12"),
    ("\n", {}, r"list.txt' \(source\) has no image lines"),
    ("9.png 1\n", {}, r"list.txt line 1: no image file '.*/9.png'"),
])
def test_a_bad_list_fails_the_net_at_setup_naming_the_line(tmp_path, lines, params, message):
    write_images(tmp_path, [(8, 8)] * 2)
    (tmp_path / "list.txt").write_text(lines)
    with pytest.raises(ValueError, match="MultiLabelImageData: .*" + message):
        make_net(ours(tmp_path, **params), caffe.TEST)


def test_the_layer_in_net_layers_tells_its_images_and_batch_size(tmp_path):
    # what the training script reads to compare test_iter x batch_size with the test list
    write_images(tmp_path, [(8, 8)] * 5)
    (tmp_path / "list.txt").write_text("# five images\n0.png 0\n\n1.jpg 1\n2.png 2\n3.jpg 3\n4.png 4\n")
    net = make_net(ours(tmp_path, batch_size=3), caffe.TEST)
    (layer,) = [l for l, name in zip(net.layers, net._layer_names) if name == "ours"]
    assert (layer.images, layer.batch_size) == (5, 3)


# -- workers and memory ---------------------------------------------------------------------

@pytest.mark.parametrize("workers", ["processes", "threads"])
def test_workers_end_when_the_net_is_deleted(tmp_path, workers):
    find, alive = {"processes": (worker_processes, running),
                   "threads": (our_threads, threading.Thread.is_alive)}[workers]
    write_images(tmp_path, [(8, 8)] * 4)
    # this net's workers, by identity: an earlier test's may still be ending meanwhile
    before = set(find())
    net = make_net(ours(tmp_path, batch_size=2, **{workers: 3}), caffe.TEST)
    net.forward()
    mine = set(find()) - before
    assert len(mine) == 3
    del net
    gc.collect()
    # noticed within IDLE_SECONDS; the margin is for a loaded machine
    assert wait_until(lambda: not any(alive(worker) for worker in mine), 20.0)


def test_without_memfd_the_default_is_threads_and_processes_an_error(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "memfd_create")  # as on Python 3.7 or off Linux
    write_images(tmp_path, [(8, 8)] * 4)
    before_processes, before_threads = set(worker_processes()), set(our_threads())
    net = make_net(ours(tmp_path, batch_size=2), caffe.TEST)
    net.forward()
    assert set(worker_processes()) == before_processes
    assert len(set(our_threads()) - before_threads) == 2
    with pytest.raises(ValueError, match=r"MultiLabelImageData: worker processes need Linux and Python "
                                         r"3.8 or later \(os.memfd_create\); set threads instead"):
        make_net(ours(tmp_path, processes=2), caffe.TEST)


def run_script(body, timeout=60):
    """``body`` in a new Python process with this folder's modules importable; its output."""
    script = ("import os, sys; sys.path.insert(0, %r); sys.path.insert(0, %r)\n"
              "import caffe\nfrom nets import make_net\nfrom test_image_data_layer import "
              "worker_processes\n" % (REPO, os.path.dirname(os.path.abspath(__file__))) + body)
    result = subprocess.run([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=timeout,
                            env=dict(os.environ, GLOG_minloglevel="2"))
    return result


@pytest.mark.parametrize("workers", list(WORKERS))
def test_the_interpreter_exits_with_workers_mid_batch(tmp_path, workers):
    write_images(tmp_path, [(300, 400)] * 8)
    layer = ours(tmp_path, batch_size=8, new_height=600, new_width=800, mirror=True, **WORKERS[workers])
    start = time.time()
    result = run_script("net = make_net(%r, caffe.TRAIN)\nnet.forward()\n"
                        "print('workers', *worker_processes())\nprint('done')\n" % layer)
    assert result.returncode == 0 and result.stdout.strip().endswith("done"), result.stdout[-2000:]
    assert time.time() - start < 30
    pids = [int(p) for p in re.search(r"workers(.*)", result.stdout).group(1).split()]
    assert len(pids) == (2 if workers == "processes" else 0)
    assert wait_until(lambda: not any(running(pid) for pid in pids), 20.0)


def test_worker_processes_end_when_their_process_ends_without_cleaning_up(tmp_path):
    # as under the caffe CLI, which never finalizes Python: no atexit, no close()
    write_images(tmp_path, [(300, 400)] * 8)
    layer = ours(tmp_path, batch_size=8, new_height=600, new_width=800)
    result = run_script("net = make_net(%r, caffe.TRAIN)\nnet.forward()\n"
                        "print('workers', *worker_processes(), flush=True)\nos._exit(0)\n" % layer)
    assert result.returncode == 0, result.stdout[-2000:]
    pids = [int(p) for p in re.search(r"workers(.*)", result.stdout).group(1).split()]
    assert len(pids) == 2
    assert wait_until(lambda: not any(running(pid) for pid in pids), 20.0)


def test_a_worker_process_that_dies_is_an_error_at_forward_not_a_hang(tmp_path):
    write_images(tmp_path, [(20, 20)] * 6)
    before = set(worker_processes())
    net = make_net(ours(tmp_path, batch_size=2, processes=1), caffe.TEST)
    net.forward()
    (pid,) = set(worker_processes()) - before
    os.kill(pid, signal.SIGKILL)
    message = r"^MultiLabelImageData: worker process %d ended \(exit status -9\) before making batch \d" % pid
    with pytest.raises(RuntimeError, match=message):
        for _ in range(3):  # the batch it made before it was killed may come first
            net.forward()
    with pytest.raises(RuntimeError, match=message):
        net.forward()


def resident_mb(pid="self"):
    with open("/proc/%s/statm" % pid) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def test_memory_stays_flat_over_many_epochs(tmp_path):
    write_images(tmp_path, [(20, 24)] * 10)
    before = set(worker_processes())
    net = make_net(ours(tmp_path, batch_size=4, shuffle=True, seed=1, crop_size=16, mirror=True),
                   caffe.TRAIN)
    for _ in range(100):
        net.forward()
    workers = set(worker_processes()) - before
    start = [resident_mb()] + [resident_mb(pid) for pid in workers]
    for _ in range(1000):  # 400 passes over the list
        net.forward()
    end = [resident_mb()] + [resident_mb(pid) for pid in workers]
    assert len(workers) == 2 and all(b - a < 2.0 for a, b in zip(start, end)), (start, end)


# -- the caffe command-line tool -------------------------------------------------------------

def caffe_train(tmp_path, data_layers, iterations=30):
    net = tmp_path / "net.prototxt"
    net.write_text(data_layers + """
layer { name: "score" type: "InnerProduct" bottom: "data" top: "score"
  inner_product_param { num_output: 12 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "score" bottom: "label" top: "loss" }
""")
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s"\ntest_iter: 2\ntest_interval: 10\nbase_lr: 0.01\nlr_policy: "fixed"\n'
                      'display: 10\nmax_iter: %d\nsnapshot_after_train: false\nsolver_mode: CPU\n'
                      % (net, iterations))
    env = dict(os.environ, PYTHONPATH=REPO, GLOG_minloglevel="0", GLOG_logtostderr="1")
    return subprocess.run(["caffe", "train", "-solver", str(solver)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)


def test_caffe_train_with_the_layer_runs_and_exits_cleanly(tmp_path):
    images = tmp_path / "images"
    write_images(images, SIZES)
    start = time.time()
    result = caffe_train(tmp_path, ours(images, "TRAIN", batch_size=4, new_height=24, new_width=24,
                                        crop_size=20, mirror=True, shuffle=True, mean_value=[128.0],
                                        scale=0.0078125)
                         + ours(images, "TEST", batch_size=4, new_height=24, new_width=24, crop_size=20,
                                mean_value=[128.0], scale=0.0078125))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Optimization Done." in result.stdout
    assert len(re.findall(r"Test net output #0: loss = ", result.stdout)) == 4  # iterations 0 to 30
    assert time.time() - start < 60


def test_caffe_train_log_names_a_bad_line(tmp_path):
    images = tmp_path / "images"
    write_images(images, SIZES)
    (images / "list.txt").write_text("0.png 3\n1.jpg 30\n")
    result = caffe_train(tmp_path, ours(images, "TRAIN", batch_size=2))
    assert result.returncode != 0
    assert re.search(r"caffe_losses: ValueError: MultiLabelImageData: .*list.txt line 2: label 30 is "
                     r"outside \[0, 12\); fix the line or num_classes", result.stdout)


# -- the digits example on image files ----------------------------------------------------------

def test_the_image_form_of_the_digits_net_is_the_hdf5_net_after_its_data_layers():
    def layers(name):
        path = os.path.join(REPO, "prototxt", "digits_multilabel", name)
        net = text_format.Merge(open(path).read(), caffe_pb2.NetParameter())
        return [l for l in net.layer if l.type not in ("HDF5Data", "Python") or l.bottom]

    assert layers("train_val_images.prototxt") == layers("train_val.prototxt")
