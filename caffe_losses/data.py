"""MultiLabelImageData: image files and their labels from a list file, pixel for pixel as
Caffe's ImageData, with worker processes that make the next batches while the net runs.

The list file (``source``) has one image per line, fields separated by white space; the
path is the first field (so it has no spaces), read as ``root_folder + path`` (joined as
written, as ImageData does: end ``root_folder`` with ``/``). Blank lines are skipped.

* ``labels: "sparse"`` (default): the class indices present, each in ``[0, num_classes)``,
  any number of them (none: an image with every label 0). ``a.png 3 7`` gives the label
  row ``[0 0 0 1 0 0 0 1 0 0]``.
* ``labels: "dense"``: one number per class, ``num_classes`` of them, copied as written:
  0/1, soft targets, or a value the loss's ``ignore_label`` skips.

Each image goes through the steps of ImageData and its DataTransformer, in their order:

1. decode with OpenCV (``cv2.imread``): 3 channels BGR, or 1 gray channel when
   ``is_color`` is false;
2. resize to ``new_width`` x ``new_height`` (``cv2.resize``, bilinear) when both are set;
3. crop ``crop_size`` x ``crop_size``: at a random offset in TRAIN, centred
   (``(H - crop_size) // 2``) in TEST;
4. mirror (flip left-right) with probability 1/2, in TRAIN only;
5. ``(pixel - mean_value[c]) * scale`` in float32, into the N x C x H x W data top.

Batches walk the list in order and wrap to its start, as ImageData; with ``shuffle`` the
order of each pass (epoch) is a new permutation drawn from ``seed``. Batch ``b`` is a
function of ``b`` and ``seed`` alone (order, crops, flips), so any number of worker
``processes`` or ``threads`` gives the same batches. The shape of the data top is set
from the first image of the list; every image must give that shape (set
``new_height``/``new_width`` or ``crop_size`` for images of several sizes).

A bad line or image raises ValueError naming the list file and line: at setup for the
list itself, at the ``forward`` that would hold the image for an image (the worker's
exception itself, raised there, and again at every later ``forward``).
"""
import atexit
import math
import mmap
import os
import pickle
import signal
import subprocess
import sys
import threading
import weakref
from multiprocessing.connection import Connection

import numpy as np

from .params import Layer, Param, boolean, integer, number, one_of, string

NAME = "MultiLabelImageData"
IDLE_SECONDS = 0.5  # how often an idle worker thread (or the watch thread of worker processes)
#                     checks that its layer is still in a net
DEFAULT_WORKERS = 2  # worker processes (or threads) when the param_str sets neither
# glibc's malloc in a new worker process gives each decoded image's memory back to the system
# and faults it in again for the next (about 130 page faults an image, a third of its time);
# these keep freed memory in the process (set them in the environment to override)
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


def error(message):
    return ValueError("%s: %s" % (NAME, message))


def load_cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError("%s needs OpenCV's Python module, cv2: install Debian's python3-opencv "
                          "(the OpenCV that Caffe uses, so the pixels match ImageData's)" % NAME)
    return cv2


# -- the list file -----------------------------------------------------------------------

class ImageList(object):
    """A parsed list file: ``paths``, the ``lines`` they are on, and their labels.

    Sparse labels are kept as one array of class indices with each image's slice
    (``starts``), dense labels as an ``(images, num_classes)`` float32 array.
    """

    def __init__(self, source, num_classes, labels="sparse"):
        self.source = source
        self.num_classes = num_classes
        self.dense = labels == "dense"
        self.paths, self.lines, values, counts = [], [], [], []
        try:
            with open(source) as f:
                for number_, line in enumerate(f, 1):
                    fields = line.split()
                    if fields:
                        self.paths.append(fields[0])
                        self.lines.append(number_)
                        values.extend(self._labels(fields[1:], number_))
                        counts.append(len(fields) - 1)
        except OSError as exc:
            raise error("cannot read the list file %r (source): %s; set 'source' to a file with "
                        "one 'path label ...' line per image" % (source, exc.strerror or exc))
        except UnicodeDecodeError as exc:
            raise error("the list file %r (source) is not text (%s); give a file with one "
                        "'path label ...' line per image" % (source, exc))
        if not self.paths:
            raise error("the list file %r (source) has no image lines; give one 'path label ...' "
                        "line per image" % source)
        if self.dense:
            self.values = np.array(values, dtype=np.float32).reshape(len(self.paths), num_classes)
        else:
            self.values = np.array(values, dtype=np.int32)
            self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def where(self, i):
        return "%s line %d" % (self.source, self.lines[i])

    def _labels(self, fields, line):
        where = "%s line %d" % (self.source, line)
        if self.dense:
            if len(fields) != self.num_classes:
                raise error("%s has %d labels; with labels 'dense' give one number per class, "
                            "num_classes = %d" % (where, len(fields), self.num_classes))
            try:
                values = [float(v) for v in fields]
            except ValueError:
                raise error("%s: the labels %s are not all numbers" % (where, " ".join(fields)))
            if not all(map(math.isfinite, values)):
                raise error("%s: the labels %s are not all finite numbers" % (where, " ".join(fields)))
            return values
        try:
            values = [int(v) for v in fields]
        except ValueError:
            raise error("%s: the labels %s are not all class indices (integers); for one number "
                        "per class set labels: 'dense'" % (where, " ".join(fields)))
        bad = [v for v in values if not 0 <= v < self.num_classes]
        if bad:
            raise error("%s: label %d is outside [0, %d); fix the line or num_classes"
                        % (where, bad[0], self.num_classes))
        return values

    def __len__(self):
        return len(self.paths)

    def fill_labels(self, items, out):
        """The label rows of the images ``items`` into ``out`` (items x num_classes)."""
        if self.dense:
            np.take(self.values, items, axis=0, out=out)
            return
        out[...] = 0
        for row, i in zip(out, items):
            row[self.values[self.starts[i]:self.starts[i + 1]]] = 1


# -- one image -----------------------------------------------------------------------------

def crop_mirror(image, out, crop_size=0, h_off=0, w_off=0, mirror=False):
    """Steps 3 and 4 on a decoded ``H x W x C`` uint8 image: the crop at ``(h_off,
    w_off)`` (none for ``crop_size`` 0), flipped left-right if ``mirror``, into ``out``
    (``h x w x C`` uint8)."""
    if crop_size:
        image = image[h_off:h_off + crop_size, w_off:w_off + crop_size]
    np.copyto(out, image[:, ::-1] if mirror else image)


def normalize(images, out, mean=None, scale=None):
    """Step 5 on ``N x h x w x C`` uint8 images, into ``out`` (``N x C x h x w`` float32):
    ``(pixel - mean[c]) * scale`` in float32, each operation rounded as in Caffe's
    DataTransformer (``mean`` a float32 ``C x 1 x 1`` array or None, ``scale`` a float32
    or None for 1). One call for a whole batch: fewer hand-overs of Python's lock."""
    chw = images.transpose(0, 3, 1, 2)
    if mean is None:
        np.copyto(out, chw)
    else:
        np.subtract(chw, mean, out=out)
    if scale is not None:
        np.multiply(out, scale, out=out)


def transform(image, out, crop_size=0, h_off=0, w_off=0, mirror=False, mean=None, scale=None):
    """Caffe's DataTransformer on one decoded image, into ``out`` (``C x h x w`` float32):
    ``out[c, y, x] = (image[h_off + y, w_off + x', c] - mean[c]) * scale``, with ``x' = w -
    1 - x`` when mirrored."""
    staged = np.empty(out.shape[1:] + out.shape[:1], np.uint8)
    crop_mirror(image, staged, crop_size, h_off, w_off, mirror)
    normalize(staged[None], out[None], mean, scale)


def check_params(params):
    """The rules across keys, as ImageData and the DataTransformer have them."""
    height, width, crop = params["new_height"], params["new_width"], params["crop_size"]
    if (height > 0) != (width > 0):
        raise ValueError("set new_height and new_width together (both 0: no resize), got %d and %d"
                         % (height, width))
    if crop and height and crop > min(height, width):
        raise ValueError("crop_size %d is larger than the resized image, %d x %d (new_height x "
                         "new_width)" % (crop, height, width))
    if params["processes"] and params["threads"]:
        raise ValueError("set processes or threads, not both (threads run in this process; "
                         "processes go on while Caffe's C++ layers run)")
    mean = params["mean_value"]
    if isinstance(mean, tuple) and len(mean) not in (1, 3 if params["is_color"] else 1):
        raise ValueError("mean_value has %d values; give one, or one per channel (%s)"
                         % (len(mean), "3: B, G, R" if params["is_color"] else "1: gray"))


def mean_values(value):
    """``mean_value``: None, one number, or a list of numbers (one per channel)."""
    one = number()
    try:
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("got an empty list")
            return tuple(one(v) for v in value)
        return one(value)
    except ValueError as exc:
        raise ValueError("must be None, a number or a list of numbers, one per channel; %s" % exc)


# -- the batches -------------------------------------------------------------------------

class ImageBatches(object):
    """The batches of MultiLabelImageData for its ``param_str`` keys and phase (``train``).

    ``shapes`` are the tops' shapes; ``fill(b, data, label)`` makes batch ``b`` (in any
    thread or process); ``start()`` starts the workers and ``next(tops)`` copies the next
    batch into the tops' arrays (data, and label if given).
    """

    TOPS = ("data", "label")

    def __init__(self, source, num_classes, root_folder="", batch_size=1, labels="sparse",
                 new_height=0, new_width=0, crop_size=0, mirror=False, mean_value=None,
                 scale=1.0, is_color=True, shuffle=False, seed=None, threads=None,
                 processes=None, train=False):
        config = dict(locals())  # the arguments, for worker processes to make the same batches
        del config["self"]
        self.cv2 = load_cv2()
        self.list = ImageList(source, num_classes, labels)
        self.root_folder = root_folder
        self.batch_size = batch_size
        self.resize = (new_width, new_height) if new_height else None
        self.crop_size = crop_size
        self.mirror = mirror and train
        self.random_crop = bool(crop_size) and train
        self.flags = self.cv2.IMREAD_COLOR if is_color else self.cv2.IMREAD_GRAYSCALE
        channels = 3 if is_color else 1
        self.mean = None if mean_value is None else (
            np.broadcast_to(np.float32(mean_value), (channels,)).reshape(channels, 1, 1).copy())
        self.scale = None if scale == 1 else np.float32(scale)
        self.shuffle = shuffle
        self.seed = np.random.SeedSequence().entropy if seed is None else seed
        self.config = dict(config, seed=self.seed)
        # worker processes unless threads are asked for, or the platform has no memfd
        self.in_processes = not threads and hasattr(os, "memfd_create")
        if processes and not self.in_processes:
            raise error("worker processes need Linux and Python 3.8 or later (os.memfd_create); "
                        "set threads instead of processes")
        self.workers = processes or threads or DEFAULT_WORKERS
        self.orders, self.orders_lock = {}, threading.Lock()
        self.staging = threading.local()  # each thread's uint8 batch before normalize()
        first = self.read(0)  # the data top's shape, from the first image (as ImageData)
        self.image_shape = first.shape[:2]
        side = (crop_size, crop_size) if crop_size else self.image_shape
        self.shapes = ((batch_size, channels) + tuple(side), (batch_size, num_classes))
        self.prefetcher = None

    def read(self, i):
        """Image ``i`` of the list, decoded and resized: H x W x C uint8."""
        path = self.root_folder + self.list.paths[i]
        image = self.cv2.imread(path, self.flags)
        if image is None:
            if not os.path.isfile(path):
                raise error("%s: no image file %r (root_folder + path; relative to %s); fix the "
                            "line or root_folder" % (self.list.where(i), path, os.getcwd()))
            raise error("%s: OpenCV cannot decode %r (not an image file, or a damaged one); "
                        "remove the line or replace the file" % (self.list.where(i), path))
        if self.resize:
            image = self.cv2.resize(image, self.resize)
        if image.ndim == 2:
            image = image[:, :, None]
        crop = self.crop_size
        if crop and (image.shape[0] < crop or image.shape[1] < crop):
            raise error("%s: image %r is %d x %d (height x width), smaller than crop_size %d; "
                        "set new_height and new_width, or a smaller crop_size"
                        % (self.list.where(i), path, image.shape[0], image.shape[1], crop))
        if not crop and self.resize is None and i and image.shape[:2] != self.image_shape:
            raise error("%s: image %r is %d x %d (height x width) but the first image is %d x %d, "
                        "and the data top has one shape; set new_height and new_width, or "
                        "crop_size" % ((self.list.where(i), path) + image.shape[:2] + self.image_shape))
        return image

    def order(self, epoch):
        """The images of pass ``epoch`` over the list, in order (kept for two passes)."""
        if not self.shuffle:
            return None
        with self.orders_lock:
            if epoch not in self.orders:
                for old in [e for e in self.orders if e < epoch - 1]:
                    del self.orders[old]
                rng = np.random.default_rng([self.seed, 0, epoch])
                self.orders[epoch] = rng.permutation(len(self.list))
            return self.orders[epoch]

    def items(self, b):
        """The list indices of batch ``b``: from position ``b * batch_size`` on, wrapping."""
        n = len(self.list)
        positions = b * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        items = positions % n
        if self.shuffle:
            epochs = positions // n
            for epoch in np.unique(epochs):
                part = epochs == epoch
                items[part] = self.order(int(epoch))[items[part]]
        return items

    def fill(self, b, data, label):
        """Batch ``b`` into ``data`` (N x C x H x W float32) and ``label`` (N x classes)."""
        items = self.items(b)
        # one row of draws per image: flip, crop row, crop column (used in TRAIN only)
        draws = np.random.default_rng([self.seed, 1, b]).random((len(items), 3))
        staged = getattr(self.staging, "images", None)
        if staged is None:
            n, c, h, w = data.shape
            staged = self.staging.images = np.empty((n, h, w, c), np.uint8)
        crop = self.crop_size
        for k, i in enumerate(items):
            image = self.read(i)
            h_off = w_off = 0
            if crop:
                height, width = image.shape[:2]
                if self.random_crop:
                    h_off = int(draws[k, 1] * (height - crop + 1))
                    w_off = int(draws[k, 2] * (width - crop + 1))
                else:
                    h_off, w_off = (height - crop) // 2, (width - crop) // 2
            crop_mirror(image, staged[k], crop, h_off, w_off, self.mirror and draws[k, 0] < 0.5)
        normalize(staged, data, self.mean, self.scale)
        self.list.fill_labels(items, label)

    def start(self, alive=None):
        """Start the workers; ``alive()`` False stops them (see :class:`WorkerProcesses` and
        :class:`Prefetcher`). Processes unless ``threads`` is set (or the platform has no
        ``os.memfd_create``): Caffe holds Python's lock while its C++ layers run, and only
        other processes go on decoding then."""
        if self.in_processes:
            self.prefetcher = WorkerProcesses(self.config, self.shapes, self.workers,
                                              alive=alive, on_stop=self.release)
        else:
            buffers = [tuple(np.empty(shape, dtype=np.float32) for shape in self.shapes)
                       for _ in range(self.workers + 2)]
            self.prefetcher = Prefetcher(self.fill, buffers, self.workers, alive=alive,
                                         on_stop=self.release)

    def next(self, tops):
        """Copy the next batch into ``tops`` (the data array, and the label array if given)."""
        if self.prefetcher is None:
            self.start()
        self.prefetcher.take(tops)

    def release(self):
        """Let the list go (the layer object itself is never freed: see layers.DataLayer)."""
        self.list = None

    def close(self):
        if self.prefetcher is not None:
            self.prefetcher.close()


# -- the worker threads --------------------------------------------------------------------

_RUNNING = weakref.WeakSet()


@atexit.register
def _stop_all():
    """At interpreter exit, stop every prefetcher's threads (none is left mid-image)."""
    for prefetcher in list(_RUNNING):
        prefetcher.close()


class Prefetcher(object):
    """Worker threads that make batches 0, 1, 2, ... ahead of ``take``, into a fixed set
    of buffers (so memory stays as it was after the first batches).

    ``fill(b, *buffer)`` makes batch ``b`` into one buffer (a tuple of arrays); each
    worker takes the next batch number and a free buffer, fills it, and hands it over;
    ``take(outs)`` waits for the next batch in order, copies it into ``outs`` and frees
    its buffer. An exception in ``fill`` is raised by the ``take`` of that batch and of
    every later one; the workers start no batch after it. They stop when ``close`` is
    called, at interpreter exit, or when ``alive()`` returns False (checked before each
    batch and every ``IDLE_SECONDS`` when idle); then ``on_stop()`` runs and the buffers
    are let go.
    """

    def __init__(self, fill, buffers, threads, alive=None, on_stop=None):
        self.fill = fill
        self.free = list(buffers)
        self.ready = {}
        self.started = self.taken = 0
        self.alive = alive
        self.on_stop = on_stop
        self.stopped = self.failed = False
        self.error = None
        self.cond = threading.Condition()
        self.workers = [threading.Thread(target=self._work, name="%s-%d" % (NAME, k), daemon=True)
                        for k in range(threads)]
        self.running = threads
        _RUNNING.add(self)
        for worker in self.workers:
            worker.start()

    def _owner_gone(self):
        return self.alive is not None and not self.alive()

    def _work(self):
        try:
            while True:
                with self.cond:
                    while not self.stopped and (self.failed or not self.free):
                        if not self.cond.wait(IDLE_SECONDS) and self._owner_gone():
                            self.stopped = True
                    if self.stopped or self._owner_gone():
                        self.stopped = True
                        return
                    b, buffer = self.started, self.free.pop()
                    self.started += 1
                try:
                    self.fill(b, *buffer)
                    result = buffer
                except BaseException as exc:  # handed to take(), which raises it
                    result = exc
                with self.cond:
                    self.ready[b] = result
                    self.failed = self.failed or isinstance(result, BaseException)
                    self.cond.notify_all()
        finally:
            with self.cond:
                self.running -= 1
                last = self.running == 0
                self.cond.notify_all()
            if last:
                self._release()

    def _release(self):
        with self.cond:
            self.free, self.ready = [], {}
        if self.on_stop is not None:
            self.on_stop()
        _RUNNING.discard(self)

    def take(self, outs):
        if self.error is not None:
            raise self.error
        with self.cond:
            while self.taken not in self.ready:
                if self.stopped or not self.running:
                    raise RuntimeError("%s: the worker threads have stopped (the layer was closed)"
                                       % NAME)
                self.cond.wait(IDLE_SECONDS)
            result = self.ready.pop(self.taken)
        if isinstance(result, BaseException):
            self.error = result
            raise result
        for out, array in zip(outs, result):
            np.copyto(out, array)
        with self.cond:
            self.free.append(result)
            self.taken += 1
            self.cond.notify_all()

    def close(self, timeout=10.0):
        """Stop the workers (each finishes the image it is on) and wait for them."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        for worker in self.workers:
            if worker is not threading.current_thread():
                worker.join(timeout)


# -- the worker processes --------------------------------------------------------------------

class WorkerProcesses(object):
    """Worker processes that make batches ahead of ``take``, in shared memory.

    Worker ``k`` of ``n`` makes batches ``k, k + n, k + 2n, ...``, each into slot ``b % 2n``
    of one shared memory file (a memfd: two slots per worker, each a float32 array per
    top), so two batches per worker are ready or in the making at any time. ``take`` is
    all the main process does: it waits for the next batch's worker to say it is done,
    copies the slot into the tops and sends that worker the batch that reuses the slot.
    Nothing here needs Python's lock while the net runs, so the workers decode beside
    Caffe's C++ layers.

    Each worker (:func:`work`) builds its own :class:`ImageBatches` from ``config`` and
    makes the same pixels as a thread would: batch ``b`` depends on ``b`` and the seed
    alone. An exception in a worker is raised by ``take`` at its batch and at every later
    one; a worker that dies raises a RuntimeError there. The workers end when ``close`` is
    called, at interpreter exit, when ``alive()`` returns False (a watch thread checks
    every ``IDLE_SECONDS``), and when this process ends (their task pipe closes).
    """

    def __init__(self, config, shapes, processes, alive=None, on_stop=None):
        self.n = processes
        self.on_stop = on_stop
        sizes = [int(np.prod(shape)) * 4 for shape in shapes]
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(WORKER_MALLOC, **os.environ)
        env.update(CAFFE_LOSSES_DATA_WORKER="1", PYTHONPATH=os.pathsep.join(
            [here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        self.workers = []
        fd = os.memfd_create(NAME)
        try:
            os.ftruncate(fd, sum(sizes) * 2 * processes)
            self.memory = mmap.mmap(fd, sum(sizes) * 2 * processes)
            self.slots = slot_arrays(self.memory, shapes, 2 * processes)
            for _ in range(processes):
                task_out, task_in = os.pipe()
                result_out, result_in = os.pipe()
                process = subprocess.Popen(
                    [sys.executable or "python3", "-c", "from caffe_losses.data import work; work()",
                     str(task_out), str(result_in), str(fd)],
                    pass_fds=(task_out, result_in, fd), env=env, stdin=subprocess.DEVNULL)
                os.close(task_out)
                os.close(result_in)
                self.workers.append((process, Connection(task_in, readable=False),
                                     Connection(result_out, writable=False)))
                self.workers[-1][1].send((config, shapes, 2 * processes))
        finally:
            os.close(fd)
        for b in range(2 * processes):
            self.workers[b % processes][1].send(b)
        self.taken = 0
        self.error = None
        self.stopped, self.closing = threading.Event(), threading.Lock()
        self.alive = alive
        _RUNNING.add(self)
        if alive is not None:
            threading.Thread(target=self._watch, name="%s-watch" % NAME, daemon=True).start()

    def _watch(self):
        while not self.stopped.wait(IDLE_SECONDS):
            if not self.alive():
                self.close()

    def take(self, outs):
        if self.error is not None:
            raise self.error
        if self.stopped.is_set():
            raise RuntimeError("%s: the worker processes have stopped (the layer was closed)" % NAME)
        b = self.taken
        process, tasks, results = self.workers[b % self.n]
        try:
            _, exc = results.recv()
        except (EOFError, OSError):
            process.wait()
            exc = RuntimeError("%s: worker process %d ended (exit status %s) before making batch "
                               "%d; its own message, if any, is above" % (NAME, process.pid,
                                                                         process.returncode, b))
        if exc is not None:
            self.error = exc
            raise exc
        for out, array in zip(outs, self.slots[b % (2 * self.n)]):
            np.copyto(out, array)
        self.taken += 1
        tasks.send(b + 2 * self.n)

    def close(self, timeout=10.0):
        """End the workers (each finishes the batch it is on) and let the memory go."""
        with self.closing:
            if self.stopped.is_set():
                return
            self.stopped.set()
        for process, tasks, results in self.workers:
            tasks.close()  # the worker reads the end of its tasks and returns
        for process, tasks, results in self.workers:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            results.close()
        self.slots = None
        try:
            self.memory.close()
        except BufferError:  # an array still views it: freed with the last one
            pass
        _RUNNING.discard(self)
        if self.on_stop is not None:
            self.on_stop()


def slot_arrays(memory, shapes, count):
    """``count`` slots of float32 arrays of ``shapes``, one after another in ``memory``."""
    slots, offset = [], 0
    for _ in range(count):
        slot = []
        for shape in shapes:
            slot.append(np.frombuffer(memory, np.float32, int(np.prod(shape)), offset).reshape(shape))
            offset += slot[-1].nbytes
        slots.append(tuple(slot))
    return slots


def work():
    """A worker process (:class:`WorkerProcesses`): ``python3 -c ... TASKS RESULTS MEMORY``,
    the file descriptors of its task pipe, its result pipe and the shared memory."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    tasks_fd, results_fd, memory_fd = (int(a) for a in sys.argv[1:4])
    tasks = Connection(tasks_fd, writable=False)
    results = Connection(results_fd, readable=False)
    try:
        config, shapes, count = tasks.recv()
    except EOFError:
        return
    memory = mmap.mmap(memory_fd, 0)
    slots = slot_arrays(memory, shapes, count)
    try:
        batches, failed = ImageBatches(**config), None
    except Exception as exc:  # raised by take() at the first batch
        batches, failed = None, exc
    while True:
        try:
            b = tasks.recv()
        except EOFError:  # closed, or the main process has ended
            return
        try:
            if failed is not None:
                raise failed
            batches.fill(b, *slots[b % count])
            exc = None
        except Exception as error_:
            exc = error_
        try:
            try:
                results.send((b, exc))
            except (pickle.PicklingError, TypeError, AttributeError):
                results.send((b, RuntimeError("%s: %s: %s" % (NAME, type(exc).__name__, exc))))
        except OSError:  # the main process has ended
            return


LAYERS = [
    Layer(NAME, ImageBatches, kind="data", check=check_params, params={
        "source": Param(None, string(allow_empty=False),
                        "the list file: one 'path label ...' line per image", required=True),
        "num_classes": Param(None, integer(minimum=1), "classes: the label top's width",
                             required=True),
        "root_folder": Param("", string(), "prefix of every path (joined as written)"),
        "batch_size": Param(1, integer(minimum=1), "images per batch"),
        "labels": Param("sparse", one_of("sparse", "dense"),
                        "the labels of a line: class indices, or one number per class"),
        "new_height": Param(0, integer(minimum=0), "resize to this height (0: no resize)"),
        "new_width": Param(0, integer(minimum=0), "resize to this width (0: no resize)"),
        "crop_size": Param(0, integer(minimum=0), "square crop side (0: no crop)"),
        "mirror": Param(False, boolean(), "flip left-right at random in TRAIN"),
        "mean_value": Param(None, mean_values, "subtracted: one number or one per channel"),
        "scale": Param(1.0, number(), "multiplies the pixel after the mean"),
        "is_color": Param(True, boolean(), "3 channels BGR, or 1 gray"),
        "shuffle": Param(False, boolean(), "a new order each pass over the list"),
        "seed": Param(None, integer(minimum=0, allow_none=True),
                      "seed of the order, crops and flips (None: a new one each run)"),
        "processes": Param(None, integer(minimum=1, allow_none=True),
                           "worker processes (None: %d, unless threads is set)" % DEFAULT_WORKERS),
        "threads": Param(None, integer(minimum=1, allow_none=True),
                         "worker threads in this process instead of processes"),
    }),
]
