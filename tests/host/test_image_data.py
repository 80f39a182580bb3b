"""MultiLabelImageData without Caffe or OpenCV: the list file, the parameters, the pixel
transform against Caffe's formula written out, and the worker threads on a fake loader.
(Decoding, resizing and the comparison with Caffe's ImageData: tests/in_caffe/test_image_data_layer.py.)"""
import threading
import time

import numpy as np
import pytest

from caffe_losses import table
from caffe_losses.data.listfile import ImageList
from caffe_losses.data.threads import WorkerThreads
from caffe_losses.data.transform import transform
from caffe_losses.params import ParamError

ROW = table.get("MultiLabelImageData")


def write_list(tmp_path, text):
    path = tmp_path / "list.txt"
    path.write_text(text)
    return str(path)


# -- the list file ------------------------------------------------------------------------

def test_sparse_lines_give_multi_hot_rows(tmp_path):
    source = write_list(tmp_path, "a.png 3 1\n\nb.png\nc.png 0 0 4\n")
    images = ImageList(source, num_classes=5)
    assert images.paths == ["a.png", "b.png", "c.png"] and images.lines == [1, 3, 4]
    out = np.full((4, 5), 7, np.float32)
    images.fill_labels(np.array([0, 1, 2, 0]), out)
    np.testing.assert_array_equal(out, [[0, 1, 0, 1, 0], [0] * 5, [1, 0, 0, 0, 1], [0, 1, 0, 1, 0]])


def test_dense_lines_are_copied_as_written_ignore_values_too(tmp_path):
    source = write_list(tmp_path, "a.png 0 1 0.25\nb.png -1 255 1e-3\n")
    images = ImageList(source, num_classes=3, labels="dense")
    out = np.empty((2, 3), np.float32)
    images.fill_labels(np.array([1, 0]), out)
    np.testing.assert_array_equal(out, np.float32([[-1, 255, 1e-3], [0, 1, 0.25]]))


@pytest.mark.parametrize("text,labels,message", [
    ("a.png 1\nb.png 2 5\n", "sparse",
     r"MultiLabelImageData: .*list.txt line 2: label 5 is outside \[0, 5\); fix the line or num_classes"),
    ("a.png -1\n", "sparse", r"list.txt line 1: label -1 is outside \[0, 5\)"),
    ("a.png 1 2.0\n", "sparse",
     r"list.txt line 1: the labels 1 2.0 are not all class indices \(integers\); for one number "
     r"per class set labels: 'dense'"),
    ("a.png 0 1 0 0 1\n\nb.png 0 1\n", "dense",
     r"list.txt line 3 has 2 labels; with labels 'dense' give one number per class, num_classes = 5"),
    ("a.png 0 1 0 x 1\n", "dense", r"list.txt line 1: the labels 0 1 0 x 1 are not all numbers"),
    ("a.png 0 1 0 nan 1\n", "dense", r"line 1: the labels 0 1 0 nan 1 are not all finite numbers"),
    ("\n  \n", "sparse", r"list.txt' \(source\) has no image lines; give one 'path label \.\.\.' line"),
])
def test_a_bad_list_names_the_file_and_line(tmp_path, text, labels, message):
    with pytest.raises(ValueError, match=message):
        ImageList(write_list(tmp_path, text), num_classes=5, labels=labels)


def test_a_missing_list_file_names_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"MultiLabelImageData: cannot read the list file '.*nope.txt' "
                                         r"\(source\): No such file or directory; set 'source'"):
        ImageList(str(tmp_path / "nope.txt"), num_classes=2)


# -- the parameters -----------------------------------------------------------------------

def test_source_and_num_classes_are_needed_the_rest_has_defaults():
    with pytest.raises(ParamError, match="MultiLabelImageData: param_str has no key 'source', which it "
                                         "needs: the list file"):
        ROW.parse("{'num_classes': 3}")
    with pytest.raises(ParamError, match="has no key 'num_classes'"):
        ROW.parse("{'source': 'a.txt'}")
    params = ROW.parse("{'source': 'a.txt', 'num_classes': 3}")
    assert params["batch_size"] == 1 and params["seed"] is None
    assert params["processes"] is None and params["threads"] is None  # 2 processes (DEFAULT_WORKERS)
    assert params["mean_value"] is None and params["scale"] == 1.0 and params["is_color"] is True


@pytest.mark.parametrize("extra,message", [
    ("'new_height': 32", "set new_height and new_width together .* got 32 and 0"),
    ("'new_height': 32, 'new_width': 20, 'crop_size': 24",
     r"crop_size 24 is larger than the resized image, 32 x 20 \(new_height x new_width\)"),
    ("'mean_value': [1, 2]", r"mean_value has 2 values; give one, or one per channel \(3: B, G, R\)"),
    ("'mean_value': [1, 2, 3], 'is_color': False", r"mean_value has 3 values; .* \(1: gray\)"),
    ("'mean_value': []", "'mean_value' must be None, a number or a list of numbers, one per channel; "
                         "got an empty list"),
    ("'mirror': 1", "'mirror' must be true or false, got 1"),
    ("'source': ''", "'source' must be a non-empty string"),
    ("'labels': 'multi-hot'", "'labels' must be one of 'sparse', 'dense'"),
    ("'threads': 0", "'threads' must be >= 1, got 0"),
    ("'processes': 0", "'processes' must be >= 1, got 0"),
    ("'processes': 2, 'threads': 2", r"set processes or threads, not both \(threads run in this "
                                     r"process; processes go on while Caffe's C\+\+ layers run\)"),
    ("'crop': 3", "unknown param_str key 'crop'. Did you mean 'crop_size'?"),
])
def test_bad_parameters_are_named(extra, message):
    with pytest.raises(ParamError, match="MultiLabelImageData: .*" + message):
        ROW.parse("{'source': 'a.txt', 'num_classes': 3, %s}" % extra)


# -- one image: Caffe's DataTransformer, written out -------------------------------------

def caffe_transform(image, crop, h_off, w_off, mirror, mean, scale):
    """DataTransformer::Transform(cv::Mat) as its loop reads, one float32 operation at a time."""
    height, width, channels = image.shape
    h, w = (crop, crop) if crop else (height, width)
    out = np.zeros((channels, h, w), np.float32)
    for y in range(h):
        for x in range(w):
            for c in range(channels):
                top_x = w - 1 - x if mirror else x
                pixel = np.float32(image[h_off + y, w_off + x, c])
                value = pixel - np.float32(mean[c]) if mean is not None else pixel
                out[c, y, top_x] = value * np.float32(scale)
    return out


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("crop,h_off,w_off,mirror", [(0, 0, 0, False), (4, 1, 3, False), (4, 2, 0, True),
                                                     (0, 0, 0, True)])
def test_transform_is_caffe_formula_bit_for_bit(channels, crop, h_off, w_off, mirror):
    rng = np.random.default_rng(channels + crop)
    image = rng.integers(0, 256, size=(6, 7, channels), dtype=np.uint8)
    mean = [104.01, 116.7, 122.68][:channels]
    scale = 0.017
    out = np.empty((channels,) + ((crop, crop) if crop else (6, 7)), np.float32)
    transform(image, out, crop, h_off, w_off, mirror, np.float32(mean).reshape(-1, 1, 1),
              np.float32(scale))
    expected = caffe_transform(image, crop, h_off, w_off, mirror, mean, scale)
    assert out.tobytes() == expected.tobytes()
    # the mean comes off before the scale: (p - m) s, not p s - m
    assert not np.array_equal(out, caffe_transform(image, crop, h_off, w_off, mirror, [0] * channels,
                                                   scale) - np.float32(mean).reshape(-1, 1, 1))
    plain = np.empty_like(out)
    transform(image, plain, crop, h_off, w_off, mirror)
    assert plain.tobytes() == caffe_transform(image, crop, h_off, w_off, mirror, None, 1).tobytes()


# -- the worker threads, on a fake loader -------------------------------------------------

def fake_buffers(count):
    return [(np.zeros((2, 3), np.float32), np.zeros(2, np.float32)) for _ in range(count)]


def take(pool):
    data, label = np.empty((2, 3), np.float32), np.empty(2, np.float32)
    pool.take([data, label])
    return data, label


def wait_until(condition, seconds=5.0):
    end = time.time() + seconds
    while not condition() and time.time() < end:
        time.sleep(0.02)
    return condition()


def test_batches_arrive_in_order_into_the_same_buffers_whatever_the_threads():
    buffers = fake_buffers(5)
    seen = set()
    rng = np.random.default_rng(0)
    delays = rng.random(40) * 0.004  # batches finish out of order

    def fill(b, data, label):
        time.sleep(delays[b])
        seen.add(id(data))
        data[...] = b
        label[...] = -b

    pool = WorkerThreads(fill, buffers, 3)
    for b in range(40):
        data, label = take(pool)
        assert (data == b).all() and (label == -b).all()
    assert seen <= {id(d) for d, _ in buffers}  # no batch is made into a new array
    pool.close()
    assert not any(w.is_alive() for w in pool.workers)


def test_an_error_in_a_worker_is_raised_by_take_at_its_batch_and_after():
    failure = ValueError("MultiLabelImageData: list.txt line 9: no image file")

    def fill(b, data, label):
        if b == 4:
            raise failure
        data[...] = b

    pool = WorkerThreads(fill, fake_buffers(3), 2)
    for b in range(4):
        assert (take(pool)[0] == b).all()
    for _ in range(2):
        with pytest.raises(ValueError) as info:
            take(pool)
        assert info.value is failure
    time.sleep(0.1)
    assert pool.started <= 4 + 3  # nothing started once the failure was known, but in flight
    pool.close()


def test_workers_stop_when_their_owner_is_gone_and_let_the_buffers_go():
    alive, stopped = [True], []
    pool = WorkerThreads(lambda b, data, label: None, fake_buffers(3), 2,
                               alive=lambda: alive[0], on_stop=lambda: stopped.append(1))
    take(pool)
    assert all(w.is_alive() for w in pool.workers)
    alive[0] = False
    assert wait_until(lambda: not any(w.is_alive() for w in pool.workers), 3.0)
    assert stopped == [1] and pool.slots is None
    with pytest.raises(RuntimeError, match="the worker threads have stopped"):
        take(pool)


def test_close_ends_the_threads_even_mid_batch():
    started = threading.Event()

    def fill(b, data, label):
        started.set()
        time.sleep(0.2)

    pool = WorkerThreads(fill, fake_buffers(2), 2)
    started.wait(2)
    begin = time.time()
    pool.close()
    assert time.time() - begin < 2 and not any(w.is_alive() for w in pool.workers)
