"""What batch ``b`` of MultiLabelImageData holds: which images, their pixels, their labels.

**The stream.** The list repeated end to end, each pass (epoch) ``e`` in its own order:
the list's order, or with ``shuffle`` a permutation drawn from ``(seed, e)``. A single
process's batch ``b`` is positions ``b * N`` to ``b * N + N - 1`` of the stream (N the
batch size), so a batch that runs past the end of the list wraps to its start, as
ImageData's does.

**Shards.** Under ``solver_count`` n > 1 (Caffe's multi-GPU training, one process per
GPU) rank ``r`` keeps the positions ``q`` with ``q % n == r``, as Caffe's DataLayer
(``Skip()``: its ``offset_`` counts every item read, across passes): its batch ``b`` is
positions ``(b * N + t) * n + r``, t < N. The n ranks' batches ``b`` are together the
single process's batches ``n b`` to ``n b + n - 1``, image for image.

**Random draws.** The crop offsets and the flip of position ``q`` are row ``q % N`` of
the draws of single-process batch ``q // N``, made from ``(seed, 1, q // N)``: a rank
gets, for each image, the pixels the single process gives it.

So a batch depends on its number, the seed and the shard alone: any number of worker
processes or threads makes the same batches.
"""
import threading

import numpy as np

from .imagefile import ImageError


class BatchRecipe(object):
    """The batches of a parsed list (:class:`~caffe_losses.data.listfile.ImageList`)
    through a :class:`~caffe_losses.data.transform.Transform`. ``image_shape`` (H, W of
    the first image, which fixes the data top's shape as in ImageData) is None until
    :meth:`set_shape`; ``fill(b, data, label)`` makes batch ``b`` in any thread or process
    (the recipe pickles: a worker process gets it whole and reads nothing but images)."""

    def __init__(self, images, transform, root_folder="", batch_size=1, shuffle=False,
                 seed=None, shard=(0, 1)):
        self.images = images
        self.transform = transform
        self.root_folder = root_folder
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = np.random.SeedSequence().entropy if seed is None else seed
        self.rank, self.solver_count = shard
        self.image_shape = None
        self.__setstate__(self.__dict__)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("orders", "lock", "staging")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.orders, self.lock = {}, threading.Lock()
        self.staging = threading.local()  # each thread's uint8 batch before normalize()

    def set_shape(self):
        """Read the first image: its size fixes the data top's (as ImageData's)."""
        self.image_shape = self.read(0).shape[:2]

    @property
    def shapes(self):
        """The tops' shapes: data (N x C x H x W) and label (N x num_classes)."""
        side = self.transform.side(self.image_shape)
        return ((self.batch_size, self.transform.channels) + side,
                (self.batch_size, self.images.num_classes))

    def read(self, i):
        """Image ``i`` of the list, decoded and resized (H x W x C uint8), checked against
        the crop and the data top's size; a ValueError naming its line if it is unusable."""
        path = self.root_folder + self.images.paths[i]
        try:
            image = self.transform.decode(path)
        except ImageError as exc:
            raise self.images.line_error(i, str(exc))
        crop, size = self.transform.crop_size, image.shape[:2]
        if crop and (size[0] < crop or size[1] < crop):
            raise self.images.line_error(i, "image %r is %d x %d (height x width), smaller than "
                                            "crop_size %d; set new_height and new_width, or a "
                                            "smaller crop_size" % ((path,) + size + (crop,)))
        if (not crop and self.transform.resize is None and self.image_shape is not None
                and size != self.image_shape):
            raise self.images.line_error(i, "image %r is %d x %d (height x width) but the first "
                                            "image is %d x %d, and the data top has one shape; "
                                            "set new_height and new_width, or crop_size"
                                            % ((path,) + size + self.image_shape))
        return image

    def order(self, epoch):
        """The list indices of pass ``epoch``, shuffled (kept for two passes)."""
        with self.lock:
            if epoch not in self.orders:
                for old in [e for e in self.orders if e < epoch - 1]:
                    del self.orders[old]
                rng = np.random.default_rng([self.seed, 0, epoch])
                self.orders[epoch] = rng.permutation(len(self.images))
            return self.orders[epoch]

    def positions(self, b):
        """The stream positions of batch ``b`` (this rank's)."""
        first = b * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        return first * self.solver_count + self.rank

    def items(self, positions):
        """The list indices at ``positions`` of the stream."""
        epochs, items = np.divmod(positions, len(self.images))
        if self.shuffle:
            for epoch in np.unique(epochs):
                part = epochs == epoch
                items[part] = self.order(int(epoch))[items[part]]
        return items

    def draws(self, positions):
        """Three numbers in [0, 1) per position: flip, crop row, crop column."""
        batches, rows = np.divmod(positions, self.batch_size)
        draws = np.empty((len(positions), 3))
        for batch in np.unique(batches):
            part = batches == batch
            rng = np.random.default_rng([self.seed, 1, int(batch)])
            draws[part] = rng.random((self.batch_size, 3))[rows[part]]
        return draws

    def fill(self, b, data, label):
        """Batch ``b`` into ``data`` (N x C x H x W float32) and ``label`` (N x classes)."""
        positions = self.positions(b)
        items, draws = self.items(positions), self.draws(positions)
        staged = getattr(self.staging, "images", None)
        if staged is None:
            n, c, h, w = data.shape
            staged = self.staging.images = np.empty((n, h, w, c), np.uint8)
        for k, i in enumerate(items):
            self.transform.place(self.read(i), staged[k], draws[k])
        self.transform.normalize(staged, data)
        self.images.fill_labels(items, label)
