"""Caffe's pixel pipeline for one image, as ImageData and its DataTransformer run it:

1. decode with OpenCV (``cv2.imread``): 3 channels BGR, or 1 gray channel when
   ``is_color`` is false (:mod:`caffe_losses.data.imagefile`);
2. resize to ``new_width`` x ``new_height`` (``cv2.resize``, bilinear) when both are set;
3. crop ``crop_size`` x ``crop_size``: at a random offset in TRAIN, centred
   (``(H - crop_size) // 2``) in TEST;
4. mirror (flip left-right) with probability 1/2, in TRAIN only;
5. ``(pixel - mean_value[c]) * scale`` in float32, into the C x H x W data top.
"""
import numpy as np

from .imagefile import load_cv2, read_image


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


class Transform(object):
    """Steps 1 to 5 for the data layer's keys; ``train`` turns on the random crop and the
    mirror. Holds no OpenCV object, so that it pickles to worker processes."""

    def __init__(self, new_height=0, new_width=0, crop_size=0, mirror=False, mean_value=None,
                 scale=1.0, is_color=True, train=False):
        self.resize = (new_width, new_height) if new_height else None
        self.crop_size = crop_size
        self.mirror = mirror and train
        self.random_crop = bool(crop_size) and train
        self.is_color = is_color
        self.channels = 3 if is_color else 1
        self.mean = None if mean_value is None else np.broadcast_to(
            np.float32(mean_value), (self.channels,)).reshape(self.channels, 1, 1).copy()
        self.scale = None if scale == 1 else np.float32(scale)

    def decode(self, path):
        """Steps 1 and 2: the image at ``path``, H x W x C uint8 (ImageError if unusable)."""
        cv2 = load_cv2()
        image = read_image(cv2, path, cv2.IMREAD_COLOR if self.is_color else cv2.IMREAD_GRAYSCALE)
        if self.resize:
            image = cv2.resize(image, self.resize)
        return image[:, :, None] if image.ndim == 2 else image

    def side(self, image_shape):
        """The data top's height and width for images of ``image_shape`` (H, W)."""
        return (self.crop_size, self.crop_size) if self.crop_size else tuple(image_shape)

    def place(self, image, out, draws):
        """Steps 3 and 4 into ``out`` (h x w x C uint8); ``draws``: three numbers in [0,
        1) for the flip, the crop's row and its column (read in TRAIN only)."""
        crop, h_off, w_off = self.crop_size, 0, 0
        if crop:
            height, width = image.shape[:2]
            if self.random_crop:
                h_off = int(draws[1] * (height - crop + 1))
                w_off = int(draws[2] * (width - crop + 1))
            else:
                h_off, w_off = (height - crop) // 2, (width - crop) // 2
        crop_mirror(image, out, crop, h_off, w_off, self.mirror and draws[0] < 0.5)

    def normalize(self, images, out):
        """Step 5 on a batch of placed images."""
        normalize(images, out, self.mean, self.scale)
