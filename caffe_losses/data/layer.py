"""MultiLabelImageData's row of the table of layers, and :class:`ImageBatches`, what its
Caffe layer (``layers.DataLayer``) holds: the list parsed, the first image read for the
tops' shapes, the workers started, one batch handed over per ``forward``.
"""
import os

import numpy as np

from ..params import Layer, Param, boolean, integer, number, one_of, per_class_numbers, string
from .listfile import NAME, ImageList, error
from .processes import WorkerProcesses
from .recipe import BatchRecipe
from .threads import WorkerThreads
from .transform import Transform

DEFAULT_WORKERS = 2  # worker processes (or threads) when the param_str sets neither
NUMBERS = per_class_numbers(minimum=None)


class ImageBatches(object):
    """The batches of MultiLabelImageData for its ``param_str`` keys, its phase
    (``train``) and, in TRAIN, its ``shard`` (solver rank, solver count).

    ``shapes`` are the tops' shapes, ``images`` the list's length; ``start()`` starts the
    workers and ``next(tops)`` copies the next batch into the tops' arrays (data, and
    label if given).
    """

    TOPS = ("data", "label")

    def __init__(self, source, num_classes, root_folder="", batch_size=1, labels="sparse",
                 new_height=0, new_width=0, crop_size=0, mirror=False, mean_value=None,
                 scale=1.0, is_color=True, shuffle=False, seed=None, threads=None,
                 processes=None, train=False, shard=(0, 1)):
        # worker processes unless threads are asked for, or the platform has no memfd
        self.in_processes = not threads and hasattr(os, "memfd_create")
        if processes and not self.in_processes:
            raise error("worker processes need Linux and Python 3.8 or later (os.memfd_create); "
                        "set threads instead of processes")
        self.worker_count = processes or threads or DEFAULT_WORKERS
        if shard[1] > 1 and shuffle and seed is None:
            raise error("shuffle under solver_count %d (one process per GPU) needs a 'seed', the "
                        "same in every rank, so that the ranks share one order and read disjoint "
                        "images; set 'seed' in param_str" % shard[1])
        images = ImageList(source, num_classes, labels)
        if shard[1] > 1 and len(images) < shard[1] * batch_size:
            raise error("the list file %r (source) has %d images, fewer than solver_count %d x "
                        "batch_size %d = %d: the ranks would read the same images in one step; "
                        "give a longer list or a smaller batch_size"
                        % (source, len(images), shard[1], batch_size, shard[1] * batch_size))
        transform = Transform(new_height, new_width, crop_size, mirror, mean_value, scale,
                              is_color, train)
        self.recipe = BatchRecipe(images, transform, root_folder, batch_size, shuffle, seed, shard)
        self.recipe.set_shape()
        self.shapes = self.recipe.shapes
        self.images, self.batch_size = len(images), batch_size
        self.pool = None

    def start(self, alive=None):
        """Start the workers; ``alive()`` False ends them (:class:`.workers.WorkerPool`).
        Processes unless ``threads`` is set (or the platform has no ``os.memfd_create``):
        Caffe holds Python's lock while its C++ layers run, and only other processes go
        on decoding then."""
        if self.in_processes:
            self.pool = WorkerProcesses(self.recipe, self.shapes, self.worker_count, alive=alive,
                                        on_stop=self.release)
        else:
            slots = [tuple(np.empty(shape, dtype=np.float32) for shape in self.shapes)
                     for _ in range(self.worker_count + 2)]
            self.pool = WorkerThreads(self.recipe.fill, slots, self.worker_count, alive=alive,
                                      on_stop=self.release)

    def next(self, tops):
        """Copy the next batch into ``tops`` (the data array, and the label array if given)."""
        if self.pool is None:
            self.start()
        self.pool.take(tops)

    def release(self):
        """Let the list go (the layer object itself is never freed: see layers.DataLayer)."""
        self.recipe = None

    def close(self):
        if self.pool is not None:
            self.pool.close()


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
    """``mean_value``: None, one number, or one per channel: params.per_class_numbers'
    rule, told in channels."""
    if isinstance(value, (list, tuple)) and not value:
        problem = "got an empty list"
    else:
        try:
            return NUMBERS(value)
        except ValueError as exc:  # "must be ..., one per class; <the problem>"
            problem = str(exc).split("; ", 1)[-1]
    raise ValueError("must be None, a number or a list of numbers, one per channel; %s" % problem)


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
